"""Event-time helpers: nanosecond timestamps and the Sao Paulo session calendar."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
NS_PER_MIN = 60 * NS_PER_S
SESSION_OPEN = time(9, 0)
SESSION_CLOSE = time(18, 0)


def parse_time(text: str) -> datetime:
    """Parse an ISO date or datetime. Naive values are taken as Sao Paulo local time."""
    try:
        dt = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"expected an ISO date or datetime like 2026-11-23T09:00:00-03:00, got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=SAO_PAULO)
    return dt


def to_ns(dt: datetime) -> int:
    """Aware datetime -> integer ns since the epoch (exact, no float rounding)."""
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1_000


def from_ns(ns: int, tz: ZoneInfo | timezone = SAO_PAULO) -> datetime:
    """Integer ns -> aware datetime in ``tz`` (microsecond resolution)."""
    return datetime(1970, 1, 1, tzinfo=timezone.utc).astimezone(tz) + timedelta(microseconds=ns // 1_000)


def session_bounds_ns(day: date) -> tuple[int, int]:
    """The 09:00-18:00 Sao Paulo session of ``day`` as (open_ns, close_ns)."""
    open_dt = datetime.combine(day, SESSION_OPEN, tzinfo=SAO_PAULO)
    close_dt = datetime.combine(day, SESSION_CLOSE, tzinfo=SAO_PAULO)
    return to_ns(open_dt), to_ns(close_dt)


def next_session_day(day: date) -> date:
    """The next weekday after ``day`` (exchange holidays are not modelled here)."""
    d = day + timedelta(days=1)
    while d.weekday() >= 5:
        d += timedelta(days=1)
    return d


def minute_floor_ns(ns: int) -> int:
    """Start of the minute containing ``ns``. Sao Paulo is a whole-hour offset from UTC,
    so UTC minute boundaries are Sao Paulo minute boundaries."""
    return ns - ns % NS_PER_MIN
