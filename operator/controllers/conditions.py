"""Status conditions, written the way kubectl and GitOps tools read them."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any


def condition(
    type_: str, ok: bool, reason: str, message: str = "", generation: int | None = None
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "observedGeneration": generation,
    }


def merged(
    existing: Iterable[Mapping[str, Any]] | None, *updates: dict[str, Any]
) -> list[dict[str, Any]]:
    """``existing`` with each update in place of the condition of its type, the others kept
    (a merge patch replaces the whole list, and each writer owns only some types).

    lastTransitionTime says when the status last changed: an update that keeps the status
    keeps the time, so writing the same conditions again gives an equal list, and callers
    can skip the write (each write wakes every watcher of the object)."""
    out = [dict(c) for c in existing or []]
    for update in updates:
        for i, old in enumerate(out):
            if old.get("type") == update["type"]:
                if old.get("status") == update["status"] and old.get("lastTransitionTime"):
                    update = {**update, "lastTransitionTime": old["lastTransitionTime"]}
                out[i] = update
                break
        else:
            out.append(update)
    return out
