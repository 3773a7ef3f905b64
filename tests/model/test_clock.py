"""Event time and the Sao Paulo session (pipelines/model/clock.py), against pandas and hand values.

Brazil last observed DST in 2018-2019: clocks went from 00:00 to 01:00 on
2018-11-04 (a 23-hour day, UTC-2 after) and from 00:00 back to 23:00 on
2019-02-16 (a 25-hour day). Since then Sao Paulo is UTC-3 all year.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from pipelines.model.clock import (
    NS_PER_DAY,
    NS_PER_HOUR,
    NS_PER_MIN,
    NS_PER_MS,
    NS_PER_S,
    SESSION_CLOSE_S,
    SESSION_OPEN_S,
    SessionDay,
    day_bounds_ns,
    local_ns,
    next_session_day,
    session_bounds_ns,
    utc_offset_ns,
)


def utc_ns(text: str) -> int:
    return pd.Timestamp(text).tz_convert("UTC").value


def test_units():
    assert (NS_PER_MS, NS_PER_S, NS_PER_MIN, NS_PER_HOUR, NS_PER_DAY) == (
        10**6, 10**9, 60 * 10**9, 3600 * 10**9, 86_400 * 10**9)
    assert (SESSION_OPEN_S, SESSION_CLOSE_S) == (9 * 3600, 18 * 3600)


def test_local_ns_matches_pandas_across_the_last_dst_changes():
    # every 7 minutes from 2018-11-01 to 2019-02-20 UTC, both offset changes included
    ts = np.arange(utc_ns("2018-11-01T00:00Z"), utc_ns("2019-02-20T00:00Z"), 7 * 60 * 10**9, dtype=np.int64)
    local = pd.to_datetime(ts, utc=True).tz_convert("America/Sao_Paulo")
    want_date = np.array([(d - date(1970, 1, 1)).days for d in local.date])
    want_tod = (local.hour * 3600 + local.minute * 60 + local.second).to_numpy()
    got = local_ns(ts)
    assert (got // (86_400 * 10**9) == want_date).all()
    assert (got % (86_400 * 10**9) // 10**9 == want_tod).all()
    offsets = {utc_offset_ns(int(t // (3600 * 10**9))) for t in ts}
    assert offsets == {-3 * 3600 * 10**9, -2 * 3600 * 10**9}


def test_day_bounds_on_short_long_and_normal_days():
    assert day_bounds_ns(date(2026, 3, 2)) == (utc_ns("2026-03-02T03:00Z"), utc_ns("2026-03-03T03:00Z"))
    # DST start: midnight did not exist, the day began at 01:00 local (03:00 UTC) and lasted 23 hours
    lo, hi = day_bounds_ns(date(2018, 11, 4))
    assert lo == utc_ns("2018-11-04T03:00Z") and hi - lo == 23 * 3600 * 10**9
    # DST end: 23:00-24:00 ran twice, the day lasted 25 hours
    lo, hi = day_bounds_ns(date(2019, 2, 16))
    assert hi - lo == 25 * 3600 * 10**9


def test_session_day_reports_each_new_local_date_once():
    day = SessionDay()
    # 23:59 and 00:01 Sao Paulo (UTC-3) are 02:59 and 03:01 UTC
    seq = ["2026-03-02T13:00Z", "2026-03-03T02:59Z", "2026-03-03T03:01Z", "2026-03-03T20:00Z", "2026-03-05T12:00Z"]
    changes = [day.update(utc_ns(t)) for t in seq]
    assert changes == [False, False, True, False, True]
    assert day.day == date(2026, 3, 5)


def test_session_calendar_counts_weekdays():
    assert next_session_day(date(2026, 3, 6)) == date(2026, 3, 9)  # Friday -> Monday
    assert next_session_day(date(2026, 4, 2)) == date(2026, 4, 3)  # Good Friday is a weekday: simulated sessions run
    assert session_bounds_ns(date(2026, 11, 23)) == (utc_ns("2026-11-23T12:00Z"), utc_ns("2026-11-23T21:00Z"))
