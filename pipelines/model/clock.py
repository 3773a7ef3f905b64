"""Event time and the Sao Paulo session: the time constants, local time and the trading session.

Every timestamp in the pipeline is an integer count of nanoseconds since the
Unix epoch (UTC); the ``NS_PER_*`` constants below are the only unit
conversions. B3 trades on Sao Paulo local time (America/Sao_Paulo via
zoneinfo, historical DST included; a constant UTC-3 since 2019), so local
dates, times of day and the 09:00-18:00 session are computed here, once.

The exchange's holidays, business days and contract expiries build on this
module in :mod:`pipelines.model.contracts`. The session calendar here counts
weekdays only (``next_session_day``): it lays out simulated and synthetic
sessions, which must run on any date, holidays and years the B3 calendar does
not know included.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np

SAO_PAULO = ZoneInfo("America/Sao_Paulo")

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
NS_PER_HOUR = 60 * NS_PER_MIN
NS_PER_DAY = 24 * NS_PER_HOUR

SESSION_OPEN = time(9, 0)  # Sao Paulo local time
SESSION_CLOSE = time(18, 0)
# The same bounds as seconds after local midnight, for time-of-day arithmetic on integers.
SESSION_OPEN_S = SESSION_OPEN.hour * 3600 + SESSION_OPEN.minute * 60
SESSION_CLOSE_S = SESSION_CLOSE.hour * 3600 + SESSION_CLOSE.minute * 60


# -- conversions ------------------------------------------------------------------


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
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * NS_PER_US


def from_ns(ns: int, tz: ZoneInfo | timezone = SAO_PAULO) -> datetime:
    """Integer ns -> aware datetime in ``tz`` (microsecond resolution)."""
    return datetime(1970, 1, 1, tzinfo=timezone.utc).astimezone(tz) + timedelta(microseconds=ns // NS_PER_US)


def sao_paulo_date(when: date | datetime | None = None) -> date:
    """The Sao Paulo calendar date of ``when`` (aware datetime converted; naive taken as local; None = now)."""
    if when is None:
        return datetime.now(SAO_PAULO).date()
    if isinstance(when, datetime):
        return (when.astimezone(SAO_PAULO) if when.tzinfo is not None else when).date()
    return when


def minute_floor_ns(ns: int) -> int:
    """Start of the minute containing ``ns``. Sao Paulo is a whole-hour offset from UTC,
    so UTC minute boundaries are Sao Paulo minute boundaries."""
    return ns - ns % NS_PER_MIN


# -- local time on integers -------------------------------------------------------


def utc_offset_ns(hour_index: int) -> int:
    """Sao Paulo UTC offset (ns) during the UTC hour ``hour_index`` (= ts // NS_PER_HOUR).

    Brazilian offset changes happened at 00:00 local time, i.e. on whole UTC
    hours, so one offset per UTC hour is exact, and a hot path can cache it per
    hour instead of asking zoneinfo per event."""
    dt = datetime.fromtimestamp(hour_index * 3600, tz=timezone.utc).astimezone(SAO_PAULO)
    return int(dt.utcoffset().total_seconds()) * NS_PER_S


def local_ns(ts: np.ndarray) -> np.ndarray:
    """Sao Paulo local time of each UTC timestamp, as ns on the local clock: ``// NS_PER_DAY``
    gives the local date (days since 1970-01-01), ``% NS_PER_DAY`` the time of day."""
    hours = ts // NS_PER_HOUR
    uniq, inverse = np.unique(hours, return_inverse=True)
    offsets = np.array([utc_offset_ns(int(h)) for h in uniq], dtype=np.int64)
    return ts + offsets[inverse]


def day_bounds_ns(day: date) -> tuple[int, int]:
    """The Sao Paulo calendar day ``day`` as [start_ns, end_ns): local midnight to the next one."""
    start = datetime.combine(day, time(0), tzinfo=SAO_PAULO)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=SAO_PAULO)
    return to_ns(start), to_ns(end)


class SessionDay:
    """The Sao Paulo calendar day of event time, cheap on the hot path
    (the day's bounds are cached; zoneinfo is consulted once per day)."""

    __slots__ = ("_start", "_end", "day")

    def __init__(self) -> None:
        self._start: int | None = None
        self._end = 0
        self.day = None

    def update(self, ts: int) -> bool:
        """Move to the day of ``ts``; True when it differs from the previous day
        (never for the first event)."""
        if self._start is not None and self._start <= ts < self._end:
            return False
        d = from_ns(ts, SAO_PAULO).date()
        self._start, self._end = day_bounds_ns(d)
        changed = self.day is not None and d != self.day
        self.day = d
        return changed


# -- the session --------------------------------------------------------------------


def session_bounds_ns(day: date) -> tuple[int, int]:
    """The 09:00-18:00 Sao Paulo session of ``day`` as (open_ns, close_ns)."""
    open_dt = datetime.combine(day, SESSION_OPEN, tzinfo=SAO_PAULO)
    close_dt = datetime.combine(day, SESSION_CLOSE, tzinfo=SAO_PAULO)
    return to_ns(open_dt), to_ns(close_dt)


def next_session_day(day: date) -> date:
    """The next weekday after ``day``. Exchange holidays are left out on purpose (see the
    module docstring); :func:`pipelines.model.contracts.next_business_day` knows them."""
    d = day + timedelta(days=1)
    while d.weekday() >= 5:
        d += timedelta(days=1)
    return d
