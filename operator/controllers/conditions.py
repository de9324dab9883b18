"""Status conditions, written the way kubectl and GitOps tools read them."""

from __future__ import annotations

import datetime
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
