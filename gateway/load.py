"""What one gateway process is doing: requests in flight, its cap on them, and whether it
is draining (shutting down: no longer ready, finishing what it has)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Load:
    max_in_flight: int
    """Requests this process serves at once; one more is refused with 503 ``overloaded``."""
    in_flight: int = 0
    """API requests being served now (probes are not counted)."""
    draining: bool = False
    """Set on SIGTERM: readiness fails and every answer closes its connection."""
