"""Detected order-flow patterns and their realized outcomes (pipelines/feedback/patterns.py).

Every expected value is worked out by hand from the bars, signals and prices built here."""

from __future__ import annotations

import pytest

from pipelines.features.footprint import ProfileRule, profile_shape
from pipelines.feedback.patterns import PatternOutcomes, patterns_in
from pipelines.model.messages import FootprintState, TapeSignal
from tests.helpers import T0

SYM = "WDOZ26"
TICK = 0.5
S = 1_000_000_000
HORIZON = 10 * S


def bar(levels, *, poc, high, low, close, unfinished_high=False, unfinished_low=False, absorption=()) -> dict:
    """A closed bar as the engine emits it (only the fields the patterns read)."""
    return {"ts_open": T0 - 60 * S, "high": high, "low": low, "close": close, "poc": poc, "levels": tuple(levels),
            "unfinished_high": unfinished_high, "unfinished_low": unfinished_low, "absorption": list(absorption)}


def closed(b: dict, seq: int = 1, ts: int = T0) -> FootprintState:
    return FootprintState(SYM, ts, ts, seq, True, b)


# Range 5400-5403 (6 ticks), mid 5401.5. Volume 10 + 10 + 20 + 60 = 100, POC 5403 at 3/3 of the range,
# 80 % of the volume above mid: a P. The mirror (volume at the low) is a b.
P_LEVELS = [(5400.0, 5, 5, 10), (5401.0, 5, 5, 10), (5402.0, 10, 10, 20), (5403.0, 30, 30, 60)]
B_LEVELS = [(5400.0, 30, 30, 60), (5401.0, 10, 10, 20), (5402.0, 5, 5, 10), (5403.0, 5, 5, 10)]


def test_profile_shape_p_b_and_none():
    p = profile_shape(bar(P_LEVELS, poc=5403.0, high=5403.0, low=5400.0, close=5403.0), TICK)
    assert (p.name, p.direction, p.poc_position, p.volume_share) == ("p", 1, 1.0, 0.8)
    b = profile_shape(bar(B_LEVELS, poc=5400.0, high=5403.0, low=5400.0, close=5400.0), TICK)
    assert (b.name, b.direction, b.poc_position, b.volume_share) == ("b", -1, 0.0, 0.8)
    # 6 ticks of range: below a 7-tick minimum there is no shape.
    assert profile_shape(bar(P_LEVELS, poc=5403.0, high=5403.0, low=5400.0, close=5403.0), TICK,
                         ProfileRule(min_ticks=7)) is None
    # 80 % above mid is not enough when 85 % is required.
    assert profile_shape(bar(P_LEVELS, poc=5403.0, high=5403.0, low=5400.0, close=5403.0), TICK,
                         ProfileRule(volume_share=0.85)) is None


def test_patterns_in_bars_and_tape():
    b = bar(P_LEVELS, poc=5403.0, high=5403.0, low=5400.0, close=5402.5, unfinished_high=True, unfinished_low=True,
            absorption=[{"at": "low", "ts_open": T0 - 180 * S, "price": 5399.0, "volume": 40}])
    sweep = TapeSignal(SYM, T0 + 1, T0 + 1, 2, "sweep", -1, 5402.0, 0.75, {"levels": 3})
    forming = FootprintState(SYM, T0, T0, 3, False, b)  # a forming bar holds no pattern yet
    found = patterns_in([closed(b), sweep, forming], TICK)
    got = sorted((p.kind, p.direction, p.price, p.seq) for p in found)
    assert got == sorted([
        ("absorption", 1, 5402.5, 1),  # sellers absorbed at the low: up; entry = the bar's close
        ("unfinished_auction", 1, 5402.5, 1),
        ("unfinished_auction", -1, 5402.5, 1),
        ("p_profile", 1, 5402.5, 1),
        ("sweep", -1, 5402.0, 2),
    ])
    sweep_p = next(p for p in found if p.kind == "sweep")
    assert sweep_p.details == {"confidence": 0.75, "levels": 3}
    assert sweep_p.pattern_id == f"{SYM}-{T0 + 1}-2-sell"


def test_outcomes_after_the_horizon_with_the_last_price_at_or_before_it():
    tracker = PatternOutcomes(SYM, TICK, HORIZON)
    b = bar(B_LEVELS, poc=5400.0, high=5403.0, low=5400.0, close=5400.5)
    tracker.track([closed(b, seq=7), TapeSignal(SYM, T0, T0, 8, "iceberg", 1, 5400.0, 0.6, {})])
    assert tracker.stats()["patterns_detected"] == 2
    # Before the horizon nothing resolves; the last price at or before T0 + 10 s is 5398.0.
    assert tracker.on_prices([(T0 + 2 * S, 5401.0), (T0 + 9 * S, 5399.0)]) == []
    done = tracker.on_prices([(T0 + 10 * S, 5398.0), (T0 + 11 * S, 5410.0)])
    by_kind = {p.kind: rec for p, rec in done}
    assert set(by_kind) == {"b_profile", "iceberg"}
    b_out = by_kind["b_profile"]["outcome"]
    assert b_out == {"horizon_ns": HORIZON, "exit_ts": T0 + HORIZON, "exit_price": 5398.0,
                     "points": pytest.approx(5398.0 - 5400.5), "hit": True}  # pointed down, price fell
    ice = by_kind["iceberg"]
    assert ice["direction"] == 1 and ice["price"] == 5400.0
    assert ice["outcome"]["points"] == pytest.approx(-2.0) and ice["outcome"]["hit"] is False
    assert tracker.stats()["patterns_open"] == 0


def test_a_pattern_seen_twice_is_tracked_once():
    tracker = PatternOutcomes(SYM, TICK, HORIZON)
    sweep = TapeSignal(SYM, T0, T0, 5, "sweep", 1, 5400.0, 1.0, {})
    tracker.track([sweep])
    tracker.track([sweep])
    done = tracker.on_prices([(T0 + HORIZON, 5401.0)])
    assert [(p.kind, rec["outcome"]["points"], rec["outcome"]["hit"]) for p, rec in done] == [("sweep", 1.0, True)]


def test_a_malformed_bar_is_counted_and_a_pattern_without_a_price_is_not_kept_forever():
    tracker = PatternOutcomes(SYM, TICK, HORIZON)
    broken = FootprintState(SYM, T0, T0, 1, True, {"high": 5401.0})  # no levels, no absorption field
    tracker.track([broken, TapeSignal(SYM, T0, T0, 2, "sweep", 1, 5400.0, 1.0, {})])
    assert tracker.stats()["patterns_malformed"] == 1 and tracker.stats()["patterns_detected"] == 1
    # The first price comes after the horizon: no trade at or before it, so no outcome (the
    # feedback system counts a missing price) and the pattern is not kept open either.
    assert tracker.on_prices([(T0 + HORIZON + 1, 5401.0)]) == []
    assert tracker.stats()["patterns_open"] == 0 and tracker.stats()["patterns_missing_price"] == 1
