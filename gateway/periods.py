"""Calendar windows in UTC: the minute, the day, the month a moment falls in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import lru_cache


class Window(Enum):
    MINUTE = "minute"
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Period:
    id: str
    """``202611241355`` for a minute, ``2026-11-24`` for a day, ``2026-11`` for a month."""
    ends_at: float
    """Epoch seconds when the next period starts."""


def period(window: Window, now: float) -> Period:
    # Windows start on whole seconds, so the period of the whole second is exact; every
    # request asks for several periods, and most requests share their second.
    return _period(window, int(now // 1))


@lru_cache(maxsize=64)
def _period(window: Window, second: int) -> Period:
    t = datetime.fromtimestamp(second, UTC)
    if window is Window.MINUTE:
        start = t.replace(second=0, microsecond=0)
        return Period(start.strftime("%Y%m%d%H%M"), (start + timedelta(minutes=1)).timestamp())
    if window is Window.DAY:
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return Period(start.strftime("%Y-%m-%d"), (start + timedelta(days=1)).timestamp())
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (start + timedelta(days=32)).replace(day=1)
    return Period(start.strftime("%Y-%m"), next_month.timestamp())


def day_id(now: float) -> str:
    return period(Window.DAY, now).id


def month_id(now: float) -> str:
    return period(Window.MONTH, now).id
