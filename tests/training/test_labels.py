"""Labels from the trade tape (pipelines/training/labels.py): hand-computed tiny tapes, and random
tapes against a brute-force loop written here.

Times are small integers (ns) so each window can be read off the tape by eye; prices are
multiples of 0.5 so every boundary comparison is exact in float.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.execution.costs import CostModel, CostsConfig
from pipelines.training.labels import (dead_zone_ticks, fixed_horizon_labels, round_trip_cost_ticks,
                                       triple_barrier_labels)

NAN = np.nan

# ts:  5     10    12     15   20   21   30
# px:  99    200   100.5  101  102  150  100
TAPE_TS = np.array([5, 10, 12, 15, 20, 21, 30], np.int64)
TAPE_PX = np.array([99, 200, 100.5, 101, 102, 150, 100], np.float64)


def fixed(t0, p0, h, dz, ts=TAPE_TS, px=TAPE_PX):
    return fixed_horizon_labels(np.array(t0, np.int64), np.array(p0, float), ts, px, h, dz)


# -- fixed horizon --------------------------------------------------------------------


def test_fixed_exit_is_last_trade_in_window_and_trade_at_t0_is_not_used():
    # t0=10, window (10, 20]: trades at 12, 15, 20 -> exit 102; the 200 at exactly t0 is not in it.
    label, t1, move = fixed([10], [100.0], 10, 0.0)
    assert move.tolist() == [2.0] and label.tolist() == [1.0] and t1.tolist() == [20]


@pytest.mark.parametrize("p0, dz, want", [
    (100.0, 2.0, NAN),  # move +2 exactly the dead zone: does not pay it
    (100.0, 1.5, 1.0),  # +2 > 1.5
    (104.0, 2.0, NAN),  # -2 exactly minus the dead zone
    (104.0, 1.5, 0.0),  # -2 < -1.5
    (102.0, 0.0, NAN),  # no move at all, no dead zone: still no direction
])
def test_fixed_dead_zone_boundaries(p0, dz, want):
    label, _, move = fixed([10], [p0], 10, dz)
    assert move.tolist() == [102.0 - p0]
    np.testing.assert_array_equal(label, [want])


def test_fixed_no_trade_in_window_is_no_move():
    # window (22, 27] holds no trade; the tape goes on to 30, so the window is complete: move 0.
    label, t1, move = fixed([22], [95.0], 5, 0.0)
    assert move.tolist() == [0.0] and np.isnan(label[0]) and t1.tolist() == [27]


def test_fixed_data_ending_before_window_closes_is_unknown():
    # t0=25: end 35 > last trade 30 -> unknown; t0=20: end 30 == last trade -> known, exit 100.
    label, t1, move = fixed([25, 20], [99.0, 99.0], 10, 0.0)
    assert np.isnan(move[0]) and np.isnan(label[0])
    assert move[1] == 1.0 and label[1] == 1.0
    assert t1.tolist() == [35, 30]


def test_fixed_ties_on_the_tape_take_the_last_print():
    ts = np.array([1, 4, 4, 4, 9], np.int64)
    px = np.array([10.0, 11.0, 12.0, 9.0, 10.0])
    label, _, move = fixed([0], [10.0], 4, 0.0, ts, px)
    assert move.tolist() == [-1.0] and label.tolist() == [0.0]
    # A tie at exactly t0: none of the three prints at 4 is after t0=4.
    _, _, move = fixed([4], [10.0], 5, 0.0, ts, px)
    assert move.tolist() == [0.0]  # exit is the print at 9: 10 - 10


def test_fixed_empty_tape_is_all_unknown():
    label, t1, move = fixed([0, 5], [1.0, 2.0], 3, 0.0, np.array([], np.int64), np.array([]))
    assert np.isnan(label).all() and np.isnan(move).all() and t1.tolist() == [3, 8]


# -- triple barrier -------------------------------------------------------------------


def barrier(ts, px, t0=0, p0=100.0, tp=2.0, sl=2.0, h=100, dz=0.0):
    label, t1, move, which = triple_barrier_labels(np.array([t0], np.int64), np.array([p0]),
                                                   np.array(ts, np.int64), np.array(px, float), tp, sl, h, dz)
    return label[0], int(t1[0]), move[0], str(which[0])


def test_take_profit_touched_first():
    # 90 at t0 itself would be a stop but is not after t0; 102 >= 100 + 2 at ts 2 is the take-profit.
    assert barrier([0, 1, 2, 3, 200], [90, 101, 102, 97, 100]) == (1.0, 2, 2.0, "tp")


def test_stop_loss_touched_first():
    assert barrier([1, 2, 3, 200], [99, 98, 103, 100]) == (0.0, 2, -2.0, "sl")


def test_barrier_beyond_the_level_gives_that_trades_price():
    # a gap through the stop: exit at 96.5, not at the level
    assert barrier([1, 2, 200], [101.5, 96.5, 100]) == (0.0, 2, -3.5, "sl")


def test_time_limit_without_and_with_dead_zone():
    # (0, 100]: max 101.5 < 102, min 99.5 > 98; exit 101.5 at ts 100; the 110 at 101 is outside.
    ts, px = [1, 5, 100, 101], [101, 99.5, 101.5, 110]
    assert barrier(ts, px, dz=1.0) == (1.0, 100, 1.5, "time")
    label, t1, move, which = barrier(ts, px, dz=1.5)
    assert np.isnan(label) and (t1, move, which) == (100, 1.5, "time")


def test_data_ending_before_horizon_without_touch_is_open():
    label, t1, move, which = barrier([1, 50], [101, 99])
    assert np.isnan(label) and np.isnan(move) and (t1, which) == (100, "open")


def test_barrier_touched_before_data_ends_is_known():
    assert barrier([1], [102.5]) == (1.0, 1, 2.5, "tp")


def test_triple_barrier_vectorised_over_samples():
    ts = np.array([1, 2, 3, 4, 5, 6], np.int64)
    px = np.array([100, 101, 102, 99, 98, 100], float)
    label, t1, move, which = triple_barrier_labels(np.array([0, 2, 3, 5], np.int64), np.array([100, 101, 102, 100.0]),
                                                   ts, px, 1.0, 2.0, 3, 0.0)
    # s0: (0,3] 100,101 -> tp at 2.  s1: (2,5] 102 -> tp at 3.  s2: (3,6] 99 <= 100 -> sl at 4.
    # s3: (5,8] ends after the tape (6) without a touch -> open.
    np.testing.assert_array_equal(label, [1.0, 1.0, 0.0, NAN])
    assert t1.tolist() == [2, 3, 4, 8] and which.tolist() == ["tp", "tp", "sl", "open"]
    np.testing.assert_array_equal(move, [1.0, 1.0, -3.0, NAN])


# -- property: random tapes against a brute-force loop --------------------------------


def brute(t0s, p0s, ts, px, h, dz, tp=None, sl=None):
    labels, t1s, moves, which = [], [], [], []
    for t0, p0 in zip(t0s, p0s):
        window = [k for k in range(len(ts)) if t0 < ts[k] <= t0 + h]
        hit = None
        if tp is not None:
            for k in window:
                if px[k] >= p0 + tp:
                    hit = (1.0, ts[k], px[k] - p0, "tp")
                    break
                if px[k] <= p0 - sl:
                    hit = (0.0, ts[k], px[k] - p0, "sl")
                    break
        if hit is None:
            if not ts or t0 + h > ts[-1]:
                hit = (NAN, t0 + h, NAN, "open")
            else:
                move = px[window[-1]] - p0 if window else 0.0
                label = 1.0 if move > dz else 0.0 if move < -dz else NAN
                hit = (label, t0 + h, move, "time")
        for out, v in zip((labels, t1s, moves, which), hit):
            out.append(v)
    return np.array(labels, float), np.array(t1s, np.int64), np.array(moves, float), which


half_ticks = st.integers(-8, 8).map(lambda k: 100.0 + 0.5 * k)


@settings(max_examples=300, deadline=None)
@given(tape=st.lists(st.tuples(st.integers(0, 3), half_ticks), max_size=30),
       samples=st.lists(st.tuples(st.integers(0, 60), half_ticks), min_size=1, max_size=15),
       h=st.integers(1, 12), dz=st.sampled_from([0.0, 0.5, 0.75, 1.0]),
       tp=st.sampled_from([0.5, 1.0, 1.5]), sl=st.sampled_from([0.5, 1.0, 2.0]))
def test_labels_match_brute_force_on_random_tapes(tape, samples, h, dz, tp, sl):
    ts = np.cumsum([g for g, _ in tape]).astype(np.int64)  # gaps of 0 make ties
    px = np.array([p for _, p in tape], float)
    t0 = np.array([t for t, _ in samples], np.int64)
    p0 = np.array([p for _, p in samples], float)
    want = brute(t0.tolist(), p0.tolist(), ts.tolist(), px.tolist(), h, dz)
    got = fixed_horizon_labels(t0, p0, ts, px, h, dz)
    for g, w in zip(got, want[:3]):
        np.testing.assert_array_equal(g, w)
    want = brute(t0.tolist(), p0.tolist(), ts.tolist(), px.tolist(), h, dz, tp, sl)
    got = triple_barrier_labels(t0, p0, ts, px, tp, sl, h, dz)
    for g, w in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(g, w)
    assert got[3].tolist() == want[3]


def test_triple_barrier_is_fast_enough_for_a_month_of_samples():
    rng = np.random.default_rng(1)
    ts = np.cumsum(rng.integers(0, 40_000_000, 1_200_000)).astype(np.int64)  # ~20 ms apart, some ties
    px = 5000 + np.cumsum(rng.choice([-0.5, 0.0, 0.5], len(ts)))
    t0 = np.sort(rng.choice(ts[:-1000], 30_000, replace=False))
    p0 = px[np.searchsorted(ts, t0, "right") - 1]
    start = time.perf_counter()
    label, *_ = triple_barrier_labels(t0, p0, ts, px, 20.0, 20.0, 60 * 10**9, 0.5)
    assert time.perf_counter() - start < 2.0
    assert len(label) == 30_000


# -- costs and dead zone --------------------------------------------------------------


def test_round_trip_cost_in_ticks():
    # WDO: tick 0.5 point x R$10 = R$5 a tick; B3 fee US$0.97 x 0.25 x (1 - 0.16) x R$5.40 each way.
    fee = 0.97 * 0.25 * 0.84 * 5.40
    assert CostModel(CostsConfig()).fees("WDOZ26", 1) == pytest.approx(fee)
    assert round_trip_cost_ticks("WDOZ26", 0.5, 10.0, fee) == pytest.approx(1.0 + 2 * 1.09998 / 5.0)
    assert round_trip_cost_ticks("WINZ26", 5.0, 0.2, 0.2561, spread_ticks=2.0) == pytest.approx(2.0 + 0.5122)
    assert round_trip_cost_ticks("ESZ5", 0.25, 50.0, 0.0, spread_ticks=0.0) == 0.0


def test_dead_zone_is_raised_to_the_cost():
    assert dead_zone_ticks(1.0, 1.44) == 1.44
    assert dead_zone_ticks(2.0, 1.44) == 2.0
    assert dead_zone_ticks(0.0, 0.0) == 0.0


# -- bad input ------------------------------------------------------------------------


T, P = np.array([1, 2], np.int64), np.array([1.0, 2.0])


@pytest.mark.parametrize("call, words", [
    (lambda: fixed_horizon_labels(T, P[:1], T, P, 5, 0.0), "same length"),
    (lambda: fixed_horizon_labels(T, P, T, P[:1], 5, 0.0), "same length"),
    (lambda: fixed_horizon_labels(T, P, T[::-1].copy(), P, 5, 0.0), "sorted"),
    (lambda: fixed_horizon_labels(T, P, T, P, 0, 0.0), "horizon_ns"),
    (lambda: fixed_horizon_labels(T, P, T, P, 5, -0.5), "dead_zone_px"),
    (lambda: fixed_horizon_labels(T.astype(float), P, T, P, 5, 0.0), "integer ns"),
    (lambda: triple_barrier_labels(T, P, T, P, -1.0, 1.0, 5, 0.0), "tp_px"),
    (lambda: triple_barrier_labels(T, P, T, P, 1.0, -1.0, 5, 0.0), "sl_px"),
    (lambda: triple_barrier_labels(T, P, T, P, 1.0, 1.0, -5, 0.0), "horizon_ns"),
    (lambda: triple_barrier_labels(T, P, T, P, 1.0, 1.0, 5, -1.0), "dead_zone_px"),
    (lambda: round_trip_cost_ticks("X", 0.0, 10.0, 1.0), "tick_size"),
    (lambda: round_trip_cost_ticks("X", 0.5, 10.0, -1.0), "fee_per_contract_rs"),
    (lambda: dead_zone_ticks(-1.0, 1.0), "dead zone"),
])
def test_bad_input_is_one_line_value_error(call, words):
    with pytest.raises(ValueError, match=words) as e:
        call()
    assert "\n" not in str(e.value)
