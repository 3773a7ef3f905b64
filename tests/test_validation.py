"""Validation: each bad-input kind is rejected with its reason counted; good events flow."""

import math

import pytest

from pipelines import validation as V
from pipelines.messages import BookSnapshot, BookUpdate, Trade

T0 = 1_763_900_000_000_000_000  # an arbitrary ns timestamp
MS = 1_000_000


def trade(i, price=5400.0, qty=2, tt=2, ts=None):
    return Trade("WDOZ26", T0 + i * MS if ts is None else ts, T0, 0, price, qty, tt, 85, 3, i)


def book(i, bids=(5400.0, 5399.5), asks=(5400.5, 5401.0), bq=(5, 7), aq=(4, 9), ts=None):
    return BookSnapshot("WDOZ26", T0 + i * MS if ts is None else ts, T0, 0, bids, bq, asks, aq)


BAD_CASES = [
    (trade(1, price=math.nan), V.BAD_PRICE),
    (trade(1, price=math.inf), V.BAD_PRICE),
    (trade(1, price=0.0), V.BAD_PRICE),
    (trade(1, price=-5.0), V.BAD_PRICE),
    (trade(1, qty=0), V.BAD_QTY),
    (trade(1, qty=-3), V.BAD_QTY),
    (trade(1, qty=2.5), V.BAD_QTY),
    (trade(1, tt=99), V.UNKNOWN_TRADE_TYPE),
    (trade(1, tt=19), V.UNKNOWN_TRADE_TYPE),
    (trade(1, ts=0), V.BAD_TIMESTAMP),
    (book(1, bids=(5401.0, 5399.5)), V.CROSSED_BOOK),
    (book(1, bids=(5400.5, 5399.5)), V.LOCKED_BOOK),
    (book(1, bids=(5399.5, 5400.0)), V.UNSORTED_BOOK),
    (book(1, asks=(5401.0, 5400.5)), V.UNSORTED_BOOK),
    (book(1, bq=(5,)), V.BAD_BOOK_SHAPE),
    (book(1, aq=(0, 9)), V.BAD_QTY),
    (book(1, asks=(math.nan, 5401.0)), V.BAD_PRICE),
    (BookUpdate("WDOZ26", T0, T0, 0, 0, 0, 0, -1.0, 5), V.BAD_PRICE),
    ("not an event", V.UNKNOWN_EVENT),
]


@pytest.mark.parametrize("bad,reason", BAD_CASES, ids=[f"{r}-{i}" for i, (_, r) in enumerate(BAD_CASES)])
def test_each_bad_kind_is_rejected_with_its_reason_and_good_events_flow(bad, reason):
    v = V.Validator(tolerance_ns=1000 * MS)
    good_before, good_after = trade(0), book(2)
    out = v.filter([good_before, bad, good_after])
    assert out == [good_before, good_after]
    assert v.rejected == {reason: 1}
    assert v.accepted == 2


def test_time_running_backwards_beyond_tolerance_is_rejected_within_tolerance_kept():
    v = V.Validator(tolerance_ns=100 * MS)
    a = trade(0, ts=T0 + 1000 * MS)
    within = trade(1, ts=T0 + 950 * MS)  # 50 ms back: allowed
    beyond = trade(2, ts=T0 + 850 * MS)  # 150 ms back from the high-water mark: rejected
    later = trade(3, ts=T0 + 1001 * MS)
    assert v.filter([a, within, beyond, later]) == [a, within, later]
    assert v.rejected == {V.TIME_BACKWARDS: 1}


def test_time_tolerance_is_per_symbol():
    v = V.Validator(tolerance_ns=0)
    a = trade(0, ts=T0 + 10 * MS)
    other = Trade("WINZ26", T0, T0, 0, 125000.0, 1, 3)  # earlier, but a different symbol
    assert v.filter([a, other]) == [a, other]


def test_a_flood_of_bad_events_never_raises_and_is_counted():
    v = V.Validator(tolerance_ns=0)
    evs = [trade(i, price=-1.0) for i in range(10_000)] + [trade(10_001)]
    assert v.filter(evs) == [evs[-1]]
    assert v.rejected[V.BAD_PRICE] == 10_000
    assert v.stats() == {"accepted": 1, "rejected": {V.BAD_PRICE: 10_000}}
