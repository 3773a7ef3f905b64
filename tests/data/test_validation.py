"""Validation: each bad-input kind is rejected with its reason counted; good events flow; nothing raises."""

import math
import time
from decimal import Decimal

import numpy as np
import orjson
import pytest

from pipelines.data import validation as V
from pipelines.adapters.bridge import protocol as P
from pipelines.model.messages import BookAction, BookSnapshot, BookUpdate, Side, Trade, TradeType
from tests.helpers import T0

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
    assert v.stats() == {"accepted": 1, "rejected": {V.BAD_PRICE: 10_000}, "held": 0}


# -- every field, every type: a bad value is a counted rejection, never an exception -------------

DAY = 86_400 * 1_000_000_000
S = 1_000_000_000
I64 = 2**63


def update(i, side=0, action=0, position=0, price=5400.0, qty=5, agent=85, oid=1, ts=None, recv=T0):
    return BookUpdate("WDOZ26", T0 + i * MS if ts is None else ts, recv, 0, side, action, position, price, qty, agent, oid)


def counted(v):
    """Every input is accepted, rejected (under one reason) or held."""
    st = v.stats()
    return st["accepted"] + sum(st["rejected"].values()) + st["held"]


def test_a_none_price_in_a_book_or_a_str_qty_in_an_update_is_counted_not_raised():
    # Both raised TypeError inside filter() and killed the feed loop in production.
    v = V.Validator(tolerance_ns=1000 * MS)
    good = [trade(0), book(1), update(2), trade(3)]
    evs = [good[0], book(1, bids=(None, 5399.5)), good[1], update(2, qty="5"), good[2], good[3]]
    assert v.filter(evs) == good
    assert v.rejected == {"bad_price": 1, "bad_qty": 1}
    assert counted(v) == len(evs)


JUNK_CASES = [
    # Trade: symbol, times, seq
    (trade(1)._replace(symbol=None), "bad_symbol"),
    (trade(1)._replace(symbol=5), "bad_symbol"),
    (trade(1)._replace(symbol=""), "bad_symbol"),
    (trade(1)._replace(symbol=b"WDOZ26"), "bad_symbol"),
    (trade(1, ts=float(T0 + MS)), "bad_timestamp"),
    (trade(1)._replace(ts_event=None), "bad_timestamp"),
    (trade(1, ts=str(T0 + MS)), "bad_timestamp"),
    (trade(1, ts=True), "bad_timestamp"),
    (trade(1, ts=-5), "bad_timestamp"),
    (trade(1, ts=I64), "bad_timestamp"),
    (trade(1)._replace(ts_recv="now"), "bad_field"),
    (trade(1)._replace(ts_recv=None), "bad_field"),
    (trade(1)._replace(ts_recv=1.5), "bad_field"),
    (trade(1)._replace(ts_recv=-1), "bad_field"),
    (trade(1)._replace(ts_recv=True), "bad_field"),
    (trade(1)._replace(seq=None), "bad_field"),
    (trade(1)._replace(seq=-1), "bad_field"),
    # Trade: price, qty, trade type, broker and trade ids
    (trade(1, price=None), "bad_price"),
    (trade(1, price="5400.0"), "bad_price"),
    (trade(1, price=True), "bad_price"),
    (trade(1, price=-math.inf), "bad_price"),
    (trade(1, price=5400 + 0j), "bad_price"),
    (trade(1, price=10**400), "bad_price"),  # an int no float can hold
    (trade(1, price=Decimal("5400")), "bad_price"),
    (trade(1, price=[5400.0]), "bad_price"),
    (trade(1, price=np.float64("nan")), "bad_price"),
    (trade(1, qty=None), "bad_qty"),
    (trade(1, qty="2"), "bad_qty"),
    (trade(1, qty=True), "bad_qty"),
    (trade(1, qty=np.bool_(True)), "bad_qty"),
    (trade(1, qty=np.float64(2.0)), "bad_qty"),
    (trade(1, qty=I64), "bad_qty"),
    (trade(1, qty=np.int64(0)), "bad_qty"),
    (trade(1, tt="2"), "unknown_trade_type"),
    (trade(1, tt=2.0), "unknown_trade_type"),
    (trade(1, tt=None), "unknown_trade_type"),
    (trade(1, tt=True), "unknown_trade_type"),
    (trade(1)._replace(buyer="85"), "bad_field"),
    (trade(1)._replace(seller=None), "bad_field"),
    (trade(1)._replace(trade_id=1.5), "bad_field"),
    (trade(1)._replace(buyer=True), "bad_field"),
    (trade(1)._replace(trade_id=I64), "bad_field"),
    # BookSnapshot: arrays that are not arrays, junk levels, shapes
    (book(1, bids=None), "bad_book_shape"),
    (book(1, bids="5400.0"), "bad_book_shape"),
    (book(1, bids={5400.0: 5, 5399.5: 7}), "bad_book_shape"),
    (book(1, bids=5400.0), "bad_book_shape"),
    (book(1, aq=None), "bad_book_shape"),
    (book(1, asks=np.array([5400.5, 5401.0])), "bad_book_shape"),
    (book(1, bids=(5400.0, 5399.5, 5399.0)), "bad_book_shape"),
    (book(1, bids=((5400.0,), 5399.5)), "bad_price"),
    (book(1, bids=("5400.0", "5399.5")), "bad_price"),
    (book(1, bids=(True, 5399.5)), "bad_price"),
    (book(1, bids=(math.inf, 5399.5)), "bad_price"),
    (book(1, bids=(5400.0, 0.0)), "bad_price"),
    (book(1, asks=(5400.5, None)), "bad_price"),
    (book(1, bq=(5, None)), "bad_qty"),
    (book(1, bq=("5", 7)), "bad_qty"),
    (book(1, bq=(5, True)), "bad_qty"),
    (book(1, bq=(5, -7)), "bad_qty"),
    (book(1, aq=(4, 9.0)), "bad_qty"),
    (book(1, aq=(4, I64)), "bad_qty"),
    (book(1, bids=(5400.0, 5400.0)), "unsorted_book"),  # the same level twice
    (book(1)._replace(ts_recv=None), "bad_field"),
    # BookUpdate: side, action, position, price, qty, ids
    (update(1, side=2), "bad_side"),
    (update(1, side=-1), "bad_side"),
    (update(1, side="0"), "bad_side"),
    (update(1, side=None), "bad_side"),
    (update(1, side=True), "bad_side"),
    (update(1, side=0.0), "bad_side"),
    (update(1, action=5), "bad_action"),
    (update(1, action=-1), "bad_action"),
    (update(1, action=None), "bad_action"),
    (update(1, action="1"), "bad_action"),
    (update(1, action=1.0), "bad_action"),
    (update(1, position=-1), "bad_field"),
    (update(1, position="0"), "bad_field"),
    (update(1, position=None), "bad_field"),
    (update(1, position=2**31), "bad_field"),
    (update(1, position=0.5), "bad_field"),
    (update(1, price=None), "bad_price"),
    (update(1, price="5400"), "bad_price"),
    (update(1, price=math.nan), "bad_price"),
    (update(1, qty=None), "bad_qty"),
    (update(1, qty=-1), "bad_qty"),
    (update(1, qty=2.5), "bad_qty"),
    (update(1, qty=True), "bad_qty"),
    (update(1, agent="85"), "bad_field"),
    (update(1, oid=None), "bad_field"),
    (update(1, recv=1.5), "bad_field"),
    # not an event at all, or one built past its NamedTuple's __new__
    (None, "unknown_event"),
    (42, "unknown_event"),
    (("WDOZ26", T0, T0, 0, 5400.0, 2, 2), "unknown_event"),
    ({"kind": "tick", "symbol": "WDOZ26"}, "unknown_event"),
    (object(), "unknown_event"),
    (tuple.__new__(Trade, ("WDOZ26", T0 + MS)), "bad_field"),
]


@pytest.mark.parametrize("bad,reason", JUNK_CASES, ids=[f"{r}-{i}" for i, (_, r) in enumerate(JUNK_CASES)])
def test_junk_in_any_field_is_counted_with_its_reason_and_never_raises(bad, reason):
    v = V.Validator(tolerance_ns=1000 * MS)
    good_before, good_after = trade(0), book(2)
    assert v.filter([good_before, bad, good_after]) == [good_before, good_after]
    assert v.rejected == {reason: 1}
    assert v.accepted == 2


def test_a_bug_inside_validation_is_counted_and_the_other_events_flow(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(V.Validator, "problem", broken)
    monkeypatch.setattr(V.Validator, "_classify", broken, raising=False)
    v = V.Validator(tolerance_ns=0)
    a, bad, b = trade(0), trade(1, price=-1.0), trade(2)
    assert v.filter([a, bad, b]) == [a, b]
    assert v.rejected == {"validation_error": 1}


def test_input_that_cannot_be_iterated_is_counted_not_raised():
    v = V.Validator(tolerance_ns=0)

    def breaks_after_one():
        yield trade(0)
        raise OSError("source died")

    assert v.filter(breaks_after_one()) == [trade(0)]
    assert v.filter(None) == []
    assert v.stats() == {"accepted": 1, "rejected": {"validation_error": 2}, "held": 0}


# -- numpy numbers are today's data: accepted, and handed on as plain Python numbers ----------


def test_numpy_and_intenum_numbers_are_accepted_as_plain_python_numbers():
    v = V.Validator(tolerance_ns=0)
    t = Trade("WDOZ26", np.int64(T0 + 1), np.int64(T0), np.int64(0), np.float64(5400.5), np.int64(3),
              TradeType.BUY_AGGRESSOR, np.int32(85), np.uint16(3), np.int64(77))
    b = BookSnapshot("WDOZ26", np.int64(T0 + 2), T0, 0, (np.float64(5400.0), np.float32(5399.5)), [np.int64(5), 7],
                     [5400.5, np.float64(5401.0)], (np.int32(4), np.int64(9)))
    u = BookUpdate("WDOZ26", np.int64(T0 + 3), T0, 0, Side.ASK, BookAction.EDIT, np.int16(2), np.float64(5402.0),
                   np.int64(0), np.int64(308), np.int64(99))
    i = Trade("WDOZ26", T0 + 4, T0, 0, 5401, 2, 2)  # an int price
    expected = [
        Trade("WDOZ26", T0 + 1, T0, 0, 5400.5, 3, 2, 85, 3, 77),
        BookSnapshot("WDOZ26", T0 + 2, T0, 0, (5400.0, 5399.5), (5, 7), (5400.5, 5401.0), (4, 9)),
        BookUpdate("WDOZ26", T0 + 3, T0, 0, 1, 1, 2, 5402.0, 0, 308, 99),
        Trade("WDOZ26", T0 + 4, T0, 0, 5401.0, 2, 2),
    ]
    out = v.filter([t, b, u, i])
    assert out == expected
    assert v.rejected == {}
    for got, want in zip(out, expected):
        assert type(got) is type(want)
        assert [type(x) for x in got] == [type(x) for x in want]
        for g, w in zip(got, want):
            if type(w) is tuple:
                assert [type(x) for x in g] == [type(x) for x in w]


def test_well_typed_events_pass_as_the_same_objects():
    v = V.Validator(tolerance_ns=0)
    evs = [trade(0), book(1), update(2)]
    assert all(a is b for a, b in zip(v.filter(evs), evs))


# -- symbols --------------------------------------------------------------------------------


def test_unknown_and_missing_symbols_are_counted():
    v = V.Validator(tolerance_ns=0, symbols=["WDOZ26", "WINZ26"])
    win = Trade("WINZ26", T0, T0, 0, 125000.0, 1, 3)
    evs = [trade(0), trade(1)._replace(symbol="PETR4"), win, trade(2)._replace(symbol=""),
           trade(3)._replace(symbol=None), book(4), trade(5)._replace(symbol=b"WDOZ26"), trade(6)._replace(symbol="wdoz26")]
    assert v.filter(evs) == [trade(0), win, book(4)]
    assert v.rejected == {"unknown_symbol": 2, "bad_symbol": 3}


def test_without_a_symbol_set_any_non_empty_str_symbol_is_accepted():
    v = V.Validator(tolerance_ns=0)
    petr = Trade("PETR4", T0, T0, 0, 38.5, 100, 2)
    assert v.filter([petr, trade(1)._replace(symbol=""), trade(2)._replace(symbol=7)]) == [petr]
    assert v.rejected == {"bad_symbol": 2}


# -- event time: the clock bound and the held forward jump -------------------------------------


def test_one_event_from_the_future_no_longer_blocks_its_symbol():
    v = V.Validator(tolerance_ns=100 * MS)  # defaults: no clock bound, 7-day gap, 3 confirmations
    good = [trade(i) for i in (0, 2, 3, 4, 5)]
    evs = good[:1] + [trade(1, ts=T0 + 365 * DAY)] + good[1:]
    assert v.filter(evs) == good
    assert v.stats() == {"accepted": 5, "rejected": {"time_jump": 1}, "held": 0}


def test_the_clock_bound_rejects_events_stamped_ahead_of_their_receipt():
    v = V.Validator(tolerance_ns=100 * MS, max_ahead_ns=5 * S)
    first_from_future = Trade("WDOZ26", T0 + 60 * S, T0, 0, 5400.0, 1, 2)  # a first event: only the clock applies
    a = Trade("WDOZ26", T0, T0 + 2 * MS, 0, 5400.0, 1, 2)
    skewed = Trade("WDOZ26", T0 + 4 * S, T0 + 1 * MS, 0, 5400.0, 1, 2)  # 4 s ahead: within the bound
    ahead = Trade("WDOZ26", T0 + 14 * S, T0 + 2 * MS, 0, 5400.0, 1, 2)
    b = Trade("WDOZ26", T0 + 4 * S + MS, T0 + 4 * S + 3 * MS, 0, 5400.0, 1, 2)
    assert v.filter([first_from_future, a, skewed, ahead, b]) == [a, skewed, b]
    assert v.rejected == {"future_time": 2}
    # without the clock bound (simulator, replay at full speed) event time may run ahead
    assert V.Validator(tolerance_ns=0).filter([first_from_future]) == [first_from_future]


def test_a_real_jump_is_confirmed_and_released_in_order_across_calls():
    # a replay spanning two recordings 30 days apart
    v = V.Validator(tolerance_ns=100 * MS)
    day1 = [trade(i) for i in range(3)]
    day31 = [trade(10 + i, ts=T0 + 30 * DAY + i * MS) for i in range(4)]
    other = Trade("WINZ26", T0, T0, 0, 125000.0, 1, 3)
    assert v.filter(day1 + day31[:2] + [other]) == day1 + [other]  # held, not accepted yet; WINZ26 flows
    assert v.stats() == {"accepted": 4, "rejected": {}, "held": 2}
    assert v.filter(day31[2:] + [trade(99)]) == day31  # the third confirms; day 1 is now behind the mark
    assert v.stats() == {"accepted": 8, "rejected": {"time_backwards": 1}, "held": 0}


def test_a_weekend_or_carnival_gap_is_not_a_jump():
    v = V.Validator(tolerance_ns=0)
    friday, ash_wednesday = trade(0), trade(1, ts=T0 + 5 * DAY + 3 * 3600 * S)
    assert v.filter([friday, ash_wednesday]) == [friday, ash_wednesday]


def test_an_unconfirmed_jump_still_held_at_the_end_is_rejected_by_flush():
    v = V.Validator(tolerance_ns=100 * MS)
    a, j1, j2 = trade(0), trade(1, ts=T0 + 365 * DAY), trade(2, ts=T0 + 365 * DAY + MS)
    assert v.filter([a, j1, j2]) == [a]
    assert v.stats() == {"accepted": 1, "rejected": {}, "held": 2}
    assert v.flush() == []
    assert v.stats() == {"accepted": 1, "rejected": {"time_jump": 2}, "held": 0}


def test_a_jump_that_disagrees_starts_a_new_run_and_rejected_events_do_not_count():
    v = V.Validator(tolerance_ns=100 * MS)
    a = trade(0)
    y1 = trade(1, ts=T0 + 365 * DAY)
    y2 = [trade(2 + i, ts=T0 + 730 * DAY + i * MS) for i in range(3)]  # a year past y1: not with it
    bad = trade(9, price=-1.0, ts=T0 + 730 * DAY + 5 * MS)  # content: neither confirms nor breaks
    behind = trade(10, ts=T0 - S)  # time_backwards from the mark T0: neither confirms nor breaks
    assert v.filter([a, y1, y2[0], bad, behind, y2[1], y2[2]]) == [a, *y2]
    assert v.rejected == {"time_jump": 1, "bad_price": 1, "time_backwards": 1}
    assert counted(v) == 7


def test_confirm_events_of_one_accepts_a_jump_at_once():
    v = V.Validator(tolerance_ns=0, confirm_events=1)
    a, far = trade(0), trade(1, ts=T0 + 30 * DAY)
    assert v.filter([a, far, trade(2)]) == [a, far]
    assert v.rejected == {"time_backwards": 1}


# -- the bridge's rows: a malformed row costs only itself -----------------------------------------


def malformed_batch():
    """Good events, and wire rows with the good ones' rows among junk, as the wire carries them."""
    good = [trade(0), book(1), update(2), trade(3)]
    enc = P.encode_rows(good)
    rows = [
        enc[0],
        [0, T0, T0, 5400.0],  # too short
        enc[1],
        "not a row", None, {"kind": 0},  # not lists
        [7, T0, T0, 1, 2, 3, 4, 5, 6],  # unknown kind
        [True, *enc[0][1:]],  # a bool kind code
        [1, T0 + 5 * MS, T0, 5400.0, [5], [4.0], [3]],  # a book array that is a number
        [0, T0 + 5 * MS, "x", 5400.0, 2, 2, 0, 0, 0],  # ts_recv not an integer
        [0, T0 + 6 * MS, T0, None, 2, 2, 0, 0, 0],  # well shaped, None price: the Validator's to reject
        [0, T0 + 7 * MS, T0, 5400.0, "2", 2, 0, 0, 0],  # a str qty
        [2, T0 + 8 * MS, T0, 0, 0, 0, [[1]], 5, 0, 0],  # nested junk for a price
        enc[2],
        enc[3],
    ]
    # 8 rows of the wrong shape (bad_row), 2 bad prices, 1 bad qty
    return good, orjson.loads(orjson.dumps(rows)), {"bad_row": 8, "bad_price": 2, "bad_qty": 1}


def test_decode_rows_keeps_the_good_rows_of_a_batch_with_malformed_ones():
    good, rows, rejected = malformed_batch()
    with pytest.raises(P.ProtocolError) as err:  # its documented contract, still
        P.decode_rows("WDOZ26", rows)
    events = err.value.events
    assert len(events) == len(rows)  # one per row: the i-th still has seq first_seq + i
    v = V.Validator(tolerance_ns=0, symbols=["WDOZ26"])
    assert v.filter(events) == good
    assert v.rejected == rejected


def test_well_shaped_rows_with_junk_values_decode_and_are_rejected_by_the_validator():
    rows = [[0, T0, T0, None, 2, 2, 0, 0, 0], [0, T0, T0, 5400.0, "2", 2, 0, 0, 0],
            [1, T0, T0, ["5400"], [5], [], []], [2, T0, T0, 9, 0, 0, 5400.0, 5, 0, 0]]
    events = P.decode_rows("WDOZ26", rows)  # no ProtocolError: values are the Validator's job
    v = V.Validator(tolerance_ns=0)
    assert v.filter(events) == []
    assert v.rejected == {"bad_price": 2, "bad_qty": 1, "bad_side": 1}


def test_the_bridge_client_delivers_the_good_rows_of_a_batch_with_a_bad_one():
    from pipelines.adapters.bridge.client import BridgeClient

    good, rows, rejected = malformed_batch()
    client = BridgeClient("inproc://qt-test-validation-pub", "inproc://qt-test-validation-rep", ["WDOZ26"])
    try:
        client._on_message(P.encode_batch("inc-1", "WDOZ26", 1, rows), time.monotonic())
        got = client.poll(100)
        stats = client.stats()
    finally:
        client.close()
    assert len(got) == len(rows)
    assert (stats["batches"], stats["bad_messages"], stats["gaps"], stats["lost_events"]) == (1, 1, 0, 0)
    v = V.Validator(tolerance_ns=0, symbols=["WDOZ26"])
    assert v.filter(got) == good
    assert v.rejected == rejected
