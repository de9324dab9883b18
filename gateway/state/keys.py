"""Names of the shared-state keys, the same in every implementation."""

from __future__ import annotations

PREFIX = "llmrouter:"
USAGE_RETENTION_S = 400 * 86400


def counter(name: str, scope: str, period: str) -> str:
    return f"{PREFIX}{name}:{scope}:{period}"


def concurrency(scope: str) -> str:
    return f"{PREFIX}inflight:{scope}"


def spend(tenant: str, month: str) -> str:
    return f"{PREFIX}spend:{tenant}:{month}"


def usage(tenant: str, day: str) -> str:
    return f"{PREFIX}usage:{tenant}:{day}"


FIELD_SEP = "\x1f"
USAGE_FIELDS = ("requests", "input_tokens", "output_tokens", "cost_nano")


def usage_field(model: str, user: str, what: str) -> str:
    return FIELD_SEP.join((model, user, what))


def reservations(tenant: str) -> tuple[str, str]:
    """A tenant's budget reservations: their leases (``request id:amount`` scored by lease
    end) and their total."""
    base = f"{PREFIX}reserved:{tenant}"
    return f"{base}:leases", f"{base}:total"


def event(name: str) -> str:
    return f"{PREFIX}event:{name}"


def replayed(request_id: str) -> str:
    """Marks a journaled settlement as applied, so a second replay adds nothing."""
    return f"{PREFIX}replayed:{request_id}"


def trial(experiment: str, epoch: str, variant: str) -> str:
    """Where an experiment variant's statistics are kept: ``{…}:units`` (per-unit sums)
    and ``{…}:sums`` (the variant's sufficient statistics)."""
    return f"{PREFIX}exp:{experiment}:{epoch}:{variant}"


def remembered(name: str) -> str:
    return f"{PREFIX}mem:{name}"
