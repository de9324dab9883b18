"""Kopf peering for several operator replicas: one works, the others stand by.

Kept apart from main.py: importing main imports every controller, and some read the
settings from the environment as they are imported.
"""

from __future__ import annotations

PEERING_LIFETIME_S = 30
"""How long a replica that died without a word counts as alive: the longest a standby
waits before it takes over (a replica that stops cleanly leaves at once)."""


def peering_priority(started_s: float, tiebreak: int) -> int:
    """Kopf runs only the replica of highest priority and freezes every replica when two
    share one, so each gets its own: the earlier started wins (a new pod of a rolling
    update waits instead of taking over mid-work), ties broken at random."""
    return (10**10 - int(started_s)) * 10**6 + tiebreak % 10**6
