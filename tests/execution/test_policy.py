"""The execution policy (pipelines/execution/policy.py): decisions to orders, on hand-made cases.

Prices, quantities and times are worked out in the comments; WDO's tick is 0.5 point, WIN's 5.
Sao Paulo is UTC-3 all of 2026, and the session runs 09:00-18:00 local time.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import pytest

from pipelines.execution.policy import ExecutionPolicy
from pipelines.execution.policy_config import PolicyConfig
from pipelines.model.contracts import trading_session
from pipelines.model.clock import SAO_PAULO, to_ns
from pipelines.model.messages import BookSnapshot, Decision, Trade, TradeType
from pipelines.model.orders import (
    CANCELLED, DAY, FILLED, IOC, LIMIT, MARKET, REJECTED, STOP_LIMIT, Fill, Order, OrderEvent, Position,
)

ACC, WDO, WIN = "acc", "WDOZ26", "WINZ26"
S = 1_000_000_000


def at(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> int:
    return to_ns(datetime(y, mo, d, h, mi, s, tzinfo=SAO_PAULO))


T0 = at(2026, 3, 10, 10)  # Tuesday 2026-03-10, 10:00: an ordinary session, well after the opening auction


def book(bid: float = 5400.0, ask: float = 5400.5, symbol: str = WDO, ts: int = T0) -> BookSnapshot:
    return BookSnapshot(symbol, ts, ts, 1, (bid,) if bid else (), (5,) if bid else (), (ask,) if ask else (),
                        (5,) if ask else ())


def decision(did: str, action: str, size: int = 1, price: float = 5400.0, symbol: str = WDO,
             ts: int = T0) -> Decision:
    return Decision(did, symbol, ts, 1, action, size, 0.5, 0.5, price, 10 * S, (), {}, {})


def fill(order: Order, qty: int, price: float, n: int = 1, ts: int = T0) -> Fill:
    return Fill(f"{order.client_order_id}#{n}", order.client_order_id, ACC, order.symbol, ts, order.side, qty, price,
                "taker", 0.0, order.decision_id)


def event(order: Order, status: str, filled: int, ts: int = T0) -> OrderEvent:
    return OrderEvent(order.client_order_id, ACC, order.symbol, ts, status, filled, 0, math.nan)


def position(qty: int, avg: float, symbol: str = WDO) -> Position:
    return Position(ACC, symbol, T0, qty, avg, avg, 0.0, 0.0, 0.0)


def policy(symbol: str = WDO, **cfg) -> ExecutionPolicy:
    return ExecutionPolicy(ACC, symbol, PolicyConfig(**cfg))


def shape(o: Order) -> tuple:
    return o.side, o.quantity, o.order_type, o.reduce_only


# -- the target --------------------------------------------------------------------------


@pytest.mark.parametrize("pos, action, size, want", [
    (0, "BUY", 2, ("BUY", 2, False)),  # 0 -> +2: buy 2
    (2, "SELL", 1, ("SELL", 3, False)),  # +2 -> -1: sell 2 + 1 = 3, a flip, so not reduce-only
    (3, "BUY", 1, ("SELL", 2, True)),  # +3 -> +1: sell 3 - 1 = 2, only reduces
    (-3, "SELL", 1, ("BUY", 2, True)),  # -3 -> -1: buy 2, only reduces
    (2, "BUY", 3, ("BUY", 1, False)),  # +2 -> +3: buy 1 more
    (-1, "BUY", 1, ("BUY", 2, False)),  # -1 -> +1: buy 2, a flip
])
def test_order_quantity_is_target_minus_position(pos, action, size, want):
    p = policy(style="market")
    out = p.on_decision(decision("d1", action, size), pos, book(), T0)
    assert [(o.side, o.quantity, o.reduce_only) for o in out.orders] == [want]
    o = out.orders[0]
    assert (o.client_order_id, o.order_type, o.decision_id, o.account, o.ts_event) == \
        ("d1:entry", MARKET, "d1", ACC, T0)


def test_position_at_target_and_hold():
    p = policy(style="market")
    assert p.on_decision(decision("d1", "SELL", 1), -1, book(), T0).orders == []  # already -1
    assert p.on_decision(decision("d2", "HOLD", 0), 2, book(), T0).orders == []  # HOLD keeps +2
    assert (p.rejected["no_change"], p.rejected["hold"]) == (1, 1)
    q = policy(style="market", hold_flattens=True)
    (o,) = q.on_decision(decision("d1", "HOLD", 0), -2, book(), T0).orders  # HOLD -> 0: buy 2
    assert shape(o) == ("BUY", 2, MARKET, True)
    # a Position is read for its signed quantity
    (o,) = policy(style="market").on_decision(decision("d1", "SELL", 2), position(1, 5400.0), book(), T0).orders
    assert shape(o) == ("SELL", 3, MARKET, False)  # +1 -> -2


# -- order styles ------------------------------------------------------------------------


def test_marketable_limit_is_n_ticks_through_the_touch_ioc():
    p = policy()  # the default style, 1 tick through
    (buy,) = p.on_decision(decision("d1", "BUY"), 0, book(5400.0, 5400.5), T0).orders
    assert (buy.order_type, buy.price, buy.time_in_force) == (LIMIT, 5401.0, IOC)  # 5400.5 + 1 x 0.5
    p.on_fill(fill(buy, 1, 5400.5), 1)
    p.on_order_event(event(buy, FILLED, 1))
    (sell,) = p.on_decision(decision("d2", "SELL"), 1, book(), T0).orders  # +1 -> -1: sell 2
    assert (sell.side, sell.quantity, sell.price) == ("SELL", 2, 5399.5)  # 5400.0 - 0.5
    w = policy(WIN, marketable_ticks=2)
    (o,) = w.on_decision(decision("w1", "BUY", symbol=WIN), 0, book(130000.0, 130005.0, WIN), T0).orders
    assert o.price == 130015.0  # 130005 + 2 x 5


def test_passive_joins_the_own_side_best_day():
    p = policy(style="passive")
    (buy,) = p.on_decision(decision("d1", "BUY"), 0, book(5400.0, 5400.5), T0).orders
    assert (buy.price, buy.time_in_force) == (5400.0, DAY)  # best bid
    (sell,) = policy(style="passive").on_decision(decision("d2", "SELL"), 0, book(5400.0, 5400.5), T0).orders
    assert (sell.price, sell.time_in_force) == (5400.5, DAY)  # best ask


def test_without_a_book_entries_wait_and_reductions_go_at_market():
    p = policy()
    assert p.on_decision(decision("d1", "BUY"), 0, None, T0).orders == []
    assert p.rejected["no_book"] == 1
    crossed = book(5401.0, 5400.5)  # bid above ask: no price to enter at
    assert p.on_decision(decision("d2", "BUY"), 0, crossed, T0).orders == []
    one_sided = book(5400.0, 0)
    assert p.on_decision(decision("d3", "BUY"), 0, one_sided, T0).orders == []
    assert p.rejected["no_book"] == 3
    (o,) = p.on_decision(decision("d4", "BUY", 1), 3, None, T0).orders  # +3 -> +1: sell 2, reduce-only
    assert shape(o) == ("SELL", 2, MARKET, True)


def test_a_flip_without_a_book_is_not_sent():
    p = policy()
    assert p.on_decision(decision("d1", "SELL", 1), 3, None, T0).orders == []  # +3 -> -1 opens 1 short: an entry
    assert p.rejected["no_book"] == 1


# -- passive timeout -----------------------------------------------------------------------


def test_passive_timeout_cancels_at_the_right_time_then_crosses_the_rest():
    p = policy(style="passive", passive_timeout_s=5.0)
    (o,) = p.on_decision(decision("d1", "BUY", 3), 0, book(), T0).orders  # buy 3 @ 5400.0
    assert p.on_fill(fill(o, 1, 5400.0, ts=T0 + 2 * S), 1).orders == []  # 1 of 3 filled at 10:00:02
    assert p.on_time(T0 + 5 * S - 1) == ([], [])  # 1 ns before 10:00:05: still waiting
    out = p.on_time(T0 + 5 * S, book(5401.0, 5401.5))
    assert out == ([], ["d1:entry"])  # cancelled at 10:00:00 + 5 s, not before
    assert p.on_time(T0 + 5 * S + 500) == ([], [])  # cancelled once
    (x,) = p.on_order_event(event(o, CANCELLED, 1, T0 + 5 * S + 1000)).orders  # confirmed with 1 filled
    # the rest, 3 - 1 = 2, as a marketable limit on the book of 10:00:05: 5401.5 + 0.5
    assert (x.client_order_id, x.side, x.quantity, x.order_type, x.price, x.time_in_force) == \
        ("d1:cross", "BUY", 2, LIMIT, 5402.0, IOC)
    assert x.ts_event == T0 + 5 * S + 1000


def test_passive_timeout_cancel_only_and_the_fill_that_wins_the_race():
    p = policy(style="passive", on_timeout="cancel")
    (o,) = p.on_decision(decision("d1", "BUY", 2), 0, book(), T0).orders
    assert p.on_time(T0 + 5 * S).cancels == ["d1:entry"]
    assert p.on_order_event(event(o, CANCELLED, 0, T0 + 5 * S)).orders == []  # no cross
    q = policy(style="passive")
    (o,) = q.on_decision(decision("d1", "BUY", 2), 0, book(), T0).orders
    assert q.on_time(T0 + 5 * S).cancels == ["d1:entry"]
    q.on_fill(fill(o, 2, 5400.0, ts=T0 + 5 * S), 2)  # filled before the cancel arrived
    assert q.on_order_event(event(o, FILLED, 2, T0 + 5 * S)).orders == []  # nothing left to cross
    assert q.working() == []


# -- idempotence ---------------------------------------------------------------------------


def test_a_resent_decision_makes_no_new_order():
    p = policy(style="market")
    assert len(p.on_decision(decision("d1", "BUY"), 0, book(), T0).orders) == 1
    assert p.on_decision(decision("d1", "BUY"), 0, book(), T0 + S) == ([], [])
    assert p.rejected["duplicate_decision"] == 1


def test_same_target_keeps_the_working_order_another_target_replaces_it():
    p = policy(style="passive")
    (o,) = p.on_decision(decision("d1", "BUY", 2), 0, book(), T0).orders
    assert p.on_decision(decision("d2", "BUY", 2), 0, book(), T0 + S) == ([], [])  # same target, keeps its place
    assert p.rejected["target_working"] == 1
    out = p.on_decision(decision("d3", "SELL", 1), 0, book(), T0 + 2 * S)  # target -1: cancel, then sell 1
    assert out == ([], ["d1:entry"])  # the sell waits for the venue to confirm the cancel
    # confirmed with nothing filled: sell -1 - 0 = 1 at the ask 5400.5; the cancelled order does
    # not cross (it was replaced, not timed out)
    out = p.on_order_event(event(o, CANCELLED, 0, T0 + 2 * S))
    assert [(x.client_order_id, x.side, x.quantity, x.price) for x in out.orders] == [("d3:entry", "SELL", 1, 5400.5)]
    assert out.cancels == [] and p.counts["crossed"] == 0


# -- brackets ------------------------------------------------------------------------------


def test_brackets_after_an_entry_fill_and_take_profit_cancels_stop():
    p = policy(style="market", brackets=True, stop_loss_ticks=10, stop_limit_offset_ticks=2, take_profit_ticks=20)
    (o,) = p.on_decision(decision("d1", "BUY"), 0, book(), T0).orders
    out = p.on_fill(fill(o, 1, 5400.0), position(1, 5400.0))
    sl, tp = out.orders
    # long at 5400.0: stop 5400 - 10 x 0.5 = 5395.0, its limit 2 ticks lower 5394.0; target 5400 + 20 x 0.5 = 5410.0
    assert (sl.client_order_id, sl.side, sl.quantity, sl.order_type, sl.stop_price, sl.price, sl.reduce_only) == \
        ("d1:sl", "SELL", 1, STOP_LIMIT, 5395.0, 5394.0, True)
    assert (tp.client_order_id, tp.side, tp.quantity, tp.order_type, tp.price, tp.reduce_only) == \
        ("d1:tp", "SELL", 1, LIMIT, 5410.0, True)
    assert p.on_fill(fill(tp, 1, 5410.0, ts=T0 + S), position(0, 0.0)) == ([], ["d1:sl"])  # OCO


def test_brackets_follow_partial_fills_and_a_partial_leg_fill_reduces_the_other():
    p = policy(style="passive", brackets=True)  # 10 / 2 / 20 ticks by default
    (o,) = p.on_decision(decision("d1", "BUY", 2), 0, book(), T0).orders
    first = p.on_fill(fill(o, 1, 5400.0, 1), position(1, 5400.0))
    assert [(x.client_order_id, x.quantity) for x in first.orders] == [("d1:sl", 1), ("d1:tp", 1)]
    # the second contract at 5400.5: average (5400.0 + 5400.5) / 2 = 5400.25
    out = p.on_fill(fill(o, 1, 5400.5, 2), position(2, 5400.25))
    # the pair is re-sent for 2 once the venue confirms both cancels (until then the risk engine
    # counts the old pair with the new one)
    assert out == ([], ["d1:sl", "d1:tp"])
    sl1, tp1 = first.orders
    assert p.on_order_event(event(sl1, CANCELLED, 0)) == ([], [])
    out = p.on_order_event(event(tp1, CANCELLED, 0))
    # stop 5400.25 - 5 = 5395.25, down to the grid 5395.0 (limit 5394.0); target 5410.25, up to 5410.5
    assert [(x.client_order_id, x.quantity, x.stop_price, x.price) for x in out.orders][0] == \
        ("d1:sl.2", 2, 5395.0, 5394.0)
    assert (out.orders[1].client_order_id, out.orders[1].quantity, out.orders[1].price) == ("d1:tp.2", 2, 5410.5)
    sl, tp = out.orders
    # the stop fills 1 of 2: the take-profit is re-sent for the 1 left, the stop keeps working for 1
    out = p.on_fill(fill(sl, 1, 5394.5), position(1, 5400.25))
    assert out == ([], ["d1:tp.2"])
    out = p.on_order_event(event(tp, CANCELLED, 0))
    assert [(x.client_order_id, x.quantity, x.price) for x in out.orders] == [("d1:tp.3", 1, 5410.5)]


def test_short_brackets_mirror_and_a_flip_cancels_them():
    p = policy(style="market", brackets=True)
    (o,) = p.on_decision(decision("d1", "SELL"), 0, book(), T0).orders
    sl, tp = p.on_fill(fill(o, 1, 5400.0), 1 * -1).orders  # a number: the fill's price is the reference
    assert (sl.side, sl.stop_price, sl.price, tp.side, tp.price) == ("BUY", 5405.0, 5406.0, "BUY", 5390.0)
    out = p.on_decision(decision("d2", "BUY"), -1, book(), T0 + S)  # -1 -> +1: buy 2 once both are gone
    assert sorted(out.cancels) == ["d1:sl", "d1:tp"] and out.orders == []
    assert p.on_order_event(event(sl, CANCELLED, 0, T0 + S)) == ([], [])
    (o,) = p.on_order_event(event(tp, CANCELLED, 0, T0 + S)).orders
    assert shape(o) == ("BUY", 2, MARKET, False)


# -- session: auctions, weekends, holidays -------------------------------------------------


@pytest.mark.parametrize("when, reason", [
    (at(2026, 3, 10, 8, 59, 59), "outside_session"),  # before 09:00
    (at(2026, 3, 10, 9, 4, 59), "opening_auction"),  # within 09:00-09:05
    (at(2026, 3, 10, 18, 0), "outside_session"),  # at the close
    (at(2026, 3, 14, 10), "no_session"),  # Saturday
    (at(2026, 4, 21, 10), "no_session"),  # Tiradentes, a B3 holiday (Tuesday)
    (at(2026, 2, 18, 12, 59), "outside_session"),  # Ash Wednesday opens at 13:00
    (at(2026, 2, 18, 13, 4), "opening_auction"),  # and its auction window ends at 13:05
    (at(2035, 3, 6, 10), "calendar_unknown"),  # a Tuesday in a year the B3 calendar does not know
])
def test_no_entries_outside_the_session_or_in_auctions(when, reason):
    p = policy(style="market")
    assert p.on_decision(decision("d1", "BUY", ts=when), 0, book(ts=when), when).orders == []
    assert p.rejected == {f"no_entry_{reason}": 1}


@pytest.mark.parametrize("when", [at(2026, 3, 10, 9, 5), at(2026, 2, 18, 13, 5), at(2026, 3, 10, 17, 54, 59)])
def test_entries_from_the_end_of_the_auction_window_to_the_flatten_time(when):
    p = policy(style="market")
    assert len(p.on_decision(decision("d1", "BUY", ts=when), 0, book(ts=when), when).orders) == 1


def test_weekdays_calendar_ignores_holidays():
    p = policy(style="market", calendar="weekdays")
    when = at(2026, 4, 21, 10)
    assert len(p.on_decision(decision("d1", "BUY"), 0, book(), when).orders) == 1
    assert trading_session(at_day(2026, 3, 14)) is None and trading_session(at_day(2026, 4, 21)) is None
    assert trading_session(at_day(2026, 4, 21), "weekdays") == (at(2026, 4, 21, 9), at(2026, 4, 21, 18))


def at_day(y, m, d):
    return datetime(y, m, d).date()


def test_auction_prints_hold_entries_back_and_reductions_still_go():
    p = policy(style="market", auction_quiet_s=30)
    p.on_trade(Trade(WDO, T0, T0, 1, 5400.0, 10, TradeType.AUCTION))
    p.on_trade(Trade(WDO, T0 - S, T0, 2, 5400.0, 1, TradeType.BUY_AGGRESSOR))  # a normal print does not end it
    assert p.on_decision(decision("d1", "BUY"), 0, book(), T0 + 30 * S - 1).orders == []  # 29.999... s later
    assert p.rejected["no_entry_auction_print"] == 1
    # +2 -> -1 while held back: the flip is cut to closing the 2
    (o,) = p.on_decision(decision("d2", "SELL", 1), 2, book(), T0 + 10 * S).orders
    assert shape(o) == ("SELL", 2, MARKET, True) and p.rejected["no_entry_auction_print"] == 2
    p.on_fill(fill(o, 2, 5400.0, ts=T0 + 10 * S), 0)
    assert len(p.on_decision(decision("d3", "BUY"), 0, book(), T0 + 30 * S).orders) == 1  # 30 s on: entries again


# -- flatten before the close --------------------------------------------------------------


def test_flatten_five_minutes_before_the_close():
    p = policy(style="passive", passive_timeout_s=3600)  # still working at the flatten time
    day = (2026, 3, 10)
    p.on_decision(decision("d1", "SELL", 1), 2, book(), at(*day, 17, 50))  # passive sell 3 working
    assert p.on_time(at(*day, 17, 55) - 1, position=2) == ([], [])
    (entry,) = p.working()
    assert p.on_time(at(*day, 17, 55)) == ([], ["d1:entry"])  # the close waits for the sell's cancel
    # 1 of the sell 3 fills before the cancel is confirmed: +2 - 1 = +1 left to close
    assert p.on_fill(fill(entry, 1, 5400.5, ts=at(*day, 17, 55)), 1) == ([], [])
    out = p.on_order_event(event(entry, CANCELLED, 1, at(*day, 17, 55)))
    (f,) = out.orders
    assert (f.client_order_id, f.side, f.quantity, f.order_type, f.reduce_only, f.ts_event) == \
        ("acc:WDOZ26:2026-03-10:flat", "SELL", 1, MARKET, True, at(*day, 17, 55))
    assert p.on_time(at(*day, 17, 56)) == ([], [])  # once
    assert p.on_decision(decision("d2", "BUY"), 0, book(), at(*day, 17, 56)).orders == []
    assert p.rejected["no_entry_closing"] == 1
    # the flatten order rejected and the position still open 5 s later: again
    p.on_order_event(event(f, REJECTED, 0, at(*day, 17, 56)))
    (again,) = p.on_time(at(*day, 17, 56, 1), position=1).orders  # 17:55:00 + 5 s has passed
    assert (again.client_order_id, again.quantity) == ("acc:WDOZ26:2026-03-10:flat.2", 1)


def test_the_flatten_without_working_orders_goes_at_once():
    p = policy(style="market")
    (f,) = p.on_time(at(2026, 3, 10, 17, 55), position=-3).orders
    assert (f.side, f.quantity, f.ts_event) == ("BUY", 3, at(2026, 3, 10, 17, 55))


def test_flatten_around_a_holiday_and_entries_resume_next_session():
    p = policy(style="market")
    # Thursday 2026-04-02, the day before Good Friday
    (f,) = p.on_time(at(2026, 4, 2, 17, 55), position=-1).orders
    assert (f.client_order_id, f.side, f.quantity) == ("acc:WDOZ26:2026-04-02:flat", "BUY", 1)
    assert p.on_decision(decision("g", "BUY"), 0, book(), at(2026, 4, 3, 10)).orders == []  # Good Friday
    assert p.on_time(at(2026, 4, 3, 17, 55), position=1) == ([], [])  # no session, nothing to flatten into
    p.on_order_event(event(f, "EXPIRED", 0, at(2026, 4, 3, 10)))  # Thursday's flatten ended with its day
    # Monday 2026-04-06, the session after the holiday: entries from 09:05, flatten at 17:55 again
    (m,) = p.on_decision(decision("m", "BUY"), 0, book(), at(2026, 4, 6, 9, 5)).orders
    # no venue answered Monday's entry: it is cancelled, and the close sent once that is confirmed
    assert p.on_time(at(2026, 4, 6, 17, 55), position=1) == ([], ["m:entry"])
    (f,) = p.on_order_event(event(m, CANCELLED, 0, at(2026, 4, 6, 17, 55))).orders
    assert (f.client_order_id, f.side, f.quantity) == ("acc:WDOZ26:2026-04-06:flat", "SELL", 1)
    p.on_order_event(event(f, "EXPIRED", 0, at(2026, 4, 7, 10)))
    # Wednesday 2026-04-22, the day after Tiradentes (Tuesday)
    assert p.on_time(at(2026, 4, 21, 17, 55), position=1) == ([], [])
    (f,) = p.on_time(at(2026, 4, 22, 17, 55), position=1).orders
    assert f.client_order_id == "acc:WDOZ26:2026-04-22:flat"


def test_flatten_off_and_a_decision_past_the_flatten_time_flattens_first():
    p = policy(style="market", flatten_before_close_min=0)
    assert len(p.on_decision(decision("d1", "BUY"), 0, book(), at(2026, 3, 10, 17, 59)).orders) == 1
    q = policy(style="market")
    out = q.on_decision(decision("d1", "SELL", 1), 2, book(), at(2026, 3, 10, 17, 57))
    # the time runs first and flattens the 2; the decision (+2 -> -1, cut to a close) adds nothing to it
    assert [(o.client_order_id, o.quantity) for o in out.orders] == [("acc:WDOZ26:2026-03-10:flat", 2)]
    assert q.rejected == {"no_entry_closing": 1, "flattening": 1}


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_is_counted_and_nothing_raises():
    p = policy(style="market")
    cases = [
        (decision("d1", "SHORT"), "bad_action"),
        (decision("d2", "BUY", price=math.nan), "bad_price"),
        (decision("d3", "BUY", size=0), "bad_size"),
        (decision("d4", "BUY", size=-1), "bad_size"),
        (decision("d5", "BUY", symbol=WIN), "other_symbol"),
        (decision("", "BUY"), "bad_decision_id"),
        (None, "not_a_decision"),
        (decision("d6", None), "bad_action"),
    ]
    for d, reason in cases:
        assert p.on_decision(d, 0, book(), T0) == ([], []), reason
    assert p.rejected == {r: sum(1 for _, x in cases if x == r) for _, r in cases}
    p.rejected.clear()
    assert p.on_decision(decision("e1", "BUY"), 0, book(), 1.5) == ([], [])  # float time
    assert p.on_decision(decision("e2", "BUY"), "2", book(), T0) == ([], [])
    assert p.on_decision(decision("e3", "BUY"), position(1, 1.0, WIN), book(), T0) == ([], [])
    assert p.on_fill("fill", 1) == ([], []) and p.on_fill(fill(Order("x", ACC, WDO, T0, "BUY", 1), 0, 1.0), 1) \
        == ([], [])
    assert p.on_order_event(None) == ([], []) and p.on_order_event(
        event(Order("unknown", ACC, WDO, T0, "BUY", 1), CANCELLED, 0)) == ([], [])
    p.on_trade("tick")
    assert p.on_time(T0, book=book(symbol=WIN)) == ([], [])  # another symbol's book: ignored
    assert p.rejected == {"bad_time": 1, "bad_position": 2, "bad_fill": 2, "bad_order_event": 1,
                          "event_unknown_order": 1, "bad_trade": 1, "bad_book": 1}
    assert p.working() == []


def test_malformed_values_of_any_shape():
    p = policy()
    garbage_book = BookSnapshot(WDO, T0, T0, 1, 5400.0, None, "x", ())  # levels that are not sequences
    assert p.on_decision(decision("d1", "BUY"), 0, garbage_book, T0) == ([], [])
    assert p.rejected == {"no_book": 1}  # a book with no usable top: nothing to price an entry at
    for now in (10**30, -1, True, math.nan):  # beyond int64, before the epoch, not an integer
        assert p.on_time(now) == ([], [])
    assert p.on_decision(decision("d2", "BUY", price=10**400), 0, book(), T0) == ([], [])  # too large for a float
    assert p.on_decision(decision("d3", "BUY", ts=2**70), 0, book(), T0) == ([], [])
    assert p.on_decision(decision(["d4"], "BUY"), 0, book(), T0) == ([], [])  # unhashable id
    assert p.on_order_event(OrderEvent(["x"], ACC, WDO, T0, CANCELLED, 0, 0, math.nan)) == ([], [])
    assert p.on_fill(Fill("f", "x", ACC, WDO, T0, "BUY", True, 5400.0, "taker", 0.0), 1) == ([], [])  # bool qty
    assert p.rejected == {"no_book": 1, "bad_time": 5, "bad_price": 1, "bad_decision_id": 1, "bad_order_event": 1,
                          "bad_fill": 1}


def test_duplicate_fills_and_unknown_tick_sizes():
    p = policy(style="market")
    (o,) = p.on_decision(decision("d1", "BUY", 2), 0, book(), T0).orders
    f = fill(o, 1, 5400.0)
    p.on_fill(f, 1)
    p.on_fill(f, 1)
    assert p.rejected["duplicate_fill"] == 1 and [w.quantity for w in p.working()] == [2]
    with pytest.raises(KeyError):
        ExecutionPolicy(ACC, "XYZ1")
    assert ExecutionPolicy(ACC, "XYZ1", tick_size=0.25).tick == 0.25


# -- restart -------------------------------------------------------------------------------


def test_state_round_trip_sends_nothing_twice():
    p = policy(style="passive", brackets=True)
    (o,) = p.on_decision(decision("d1", "BUY", 2), 0, book(), T0).orders
    p.on_fill(fill(o, 1, 5400.0), position(1, 5400.0))
    saved = json.loads(json.dumps(p.state(), allow_nan=False))  # plain JSON, no NaN
    q = policy(style="passive", brackets=True)
    q.load_state(saved)
    assert q.on_decision(decision("d1", "BUY", 2), 1, book(), T0 + S) == ([], [])  # re-sent after the restart
    assert sorted(x.client_order_id for x in q.working()) == ["d1:entry", "d1:sl", "d1:tp"]
    assert q.on_time(T0 + 5 * S).cancels == ["d1:entry"]  # its timeout survived
    out = q.on_fill(fill(o, 1, 5400.5, 2), position(2, 5400.25))
    assert out.cancels == ["d1:sl", "d1:tp"]
    q.on_order_event(OrderEvent("d1:sl", ACC, WDO, T0 + 5 * S, CANCELLED, 0, 0, math.nan))
    out = q.on_order_event(OrderEvent("d1:tp", ACC, WDO, T0 + 5 * S, CANCELLED, 0, 0, math.nan))
    assert [x.client_order_id for x in out.orders] == ["d1:sl.2", "d1:tp.2"]  # versions continue
    with pytest.raises(ValueError):
        policy(WIN).load_state(saved)


def test_random_sessions_never_raise_nor_repeat_an_order_id():
    # a seeded random walk over every input, good and bad, across days, styles and brackets
    import random

    rng = random.Random(13)
    for style in ("market", "marketable_limit", "passive"):
        p = policy(style=style, brackets=True, passive_timeout_s=2.0)
        now, pos, sent, n, orders = at(2026, 4, 2, 8, 50), 0, set(), 0, []
        for _ in range(3000):
            now += rng.choice((S // 10, S, 20 * S, 600 * S))
            mid = 5400.0 + 0.5 * rng.randrange(-20, 20)
            b = book(mid, mid + 0.5, ts=now) if rng.random() > 0.05 else book(mid, mid - 0.5, ts=now)
            k = rng.random()
            if k < 0.4:
                d = decision(f"d{rng.randrange(200)}", rng.choice(("BUY", "SELL", "HOLD", "X")), rng.randrange(-1, 4),
                             rng.choice((mid, math.nan)), ts=now)
                out = p.on_decision(d, pos, b, now)
            elif k < 0.7 and p.working():
                o = rng.choice(p.working())
                q = rng.randrange(1, o.quantity + 1)
                n += 1
                pos += q if o.side == "BUY" else -q
                out = p.on_fill(fill(o, q, mid, n, now), position(pos, mid))
            elif k < 0.85 and any(p.expects(x.client_order_id) for x in orders):
                o = rng.choice([x for x in orders if p.expects(x.client_order_id)])
                out = p.on_order_event(event(o, rng.choice((CANCELLED, REJECTED, FILLED, "ACCEPTED")), 0, now))
            else:
                if rng.random() < 0.1:
                    p.on_trade(Trade(WDO, now, now, 1, mid, 1, TradeType.AUCTION))
                out = p.on_time(now, b)
            for o in out.orders:
                assert o.client_order_id not in sent
                sent.add(o.client_order_id)
                orders.append(o)
        assert len(sent) > 50


# -- replacements wait for the cancels they depend on -----------------------------------------
# The risk engine counts an order as working until the venue ends it, so an order sent with the
# cancel of the one it replaces could be refused; it is sent on the terminal event instead.


def test_a_flip_of_a_working_entry_is_sent_on_the_cancelled_event_sized_by_the_racing_fill():
    p = policy(style="passive")
    (o,) = p.on_decision(decision("d1", "BUY", 4), 0, book(), T0).orders  # buy 4 @ 5400.0
    assert p.on_decision(decision("d2", "SELL", 1), 0, book(), T0 + S) == ([], ["d1:entry"])
    assert p.on_decision(decision("d3", "SELL", 1), 0, book(), T0 + S) == ([], [])  # the same target: waits once
    assert p.rejected["target_working"] == 1
    assert p.on_fill(fill(o, 1, 5400.0, ts=T0 + S + 1), 1) == ([], [])  # 1 filled before the cancel arrived
    out = p.on_order_event(event(o, CANCELLED, 1, T0 + S + 2))
    # position +1, target -1: sell -1 - 1 = 2 at the ask 5400.5, sent at the CANCELLED's time
    assert [(x.client_order_id, x.side, x.quantity, x.price, x.ts_event) for x in out.orders] == \
        [("d2:entry", "SELL", 2, 5400.5, T0 + S + 2)]
    assert p.on_order_event(event(o, CANCELLED, 1, T0 + S + 3)) == ([], [])  # a repeat sends nothing
    assert p.on_time(T0 + 2 * S) == ([], [])


def test_a_close_with_brackets_working_waits_for_their_cancels_and_they_come_back_for_the_rest():
    p = policy(style="market", brackets=True)
    (o,) = p.on_decision(decision("d1", "BUY", 2), 0, book(), T0).orders
    sl, tp = p.on_fill(fill(o, 2, 5400.0), position(2, 5400.0)).orders
    p.on_order_event(event(o, FILLED, 2))
    out = p.on_decision(decision("d2", "BUY", 1), 2, book(), T0 + S)  # +2 -> +1: sell 1, reduce-only
    assert out == ([], ["d1:sl", "d1:tp"])
    assert p.on_order_event(event(sl, CANCELLED, 0, T0 + S)) == ([], [])
    (c,) = p.on_order_event(event(tp, CANCELLED, 0, T0 + S)).orders
    assert (c.client_order_id, c.side, c.quantity, c.reduce_only) == ("d2:entry", "SELL", 1, True)
    # filled: the legs return for the +1 left once the sell has ended (its FILLED)
    assert p.on_fill(fill(c, 1, 5400.0, ts=T0 + S), position(1, 5400.0)) == ([], [])
    out = p.on_order_event(event(c, FILLED, 1, T0 + S))
    # same prices as before (the fill reduced): stop 5395.0 / 5394.0, target 5410.0, for 1
    assert [(x.client_order_id, x.quantity, x.stop_price, x.price) for x in out.orders][0] == \
        ("d1:sl.2", 1, 5395.0, 5394.0)
    assert (out.orders[1].client_order_id, out.orders[1].quantity, out.orders[1].price) == ("d1:tp.2", 1, 5410.0)


def test_a_close_that_does_not_fill_puts_the_brackets_back():
    p = policy(brackets=True)  # marketable limit, IOC
    (o,) = p.on_decision(decision("d1", "BUY", 1), 0, book(), T0).orders
    sl, tp = p.on_fill(fill(o, 1, 5400.5), position(1, 5400.5)).orders
    p.on_order_event(event(o, FILLED, 1))
    assert p.on_decision(decision("d2", "SELL", 1), 1, book(), T0 + S).cancels == ["d1:sl", "d1:tp"]
    p.on_order_event(event(sl, CANCELLED, 0, T0 + S))
    (c,) = p.on_order_event(event(tp, CANCELLED, 0, T0 + S)).orders  # +1 -> -1: sell 2 at 5400.0 - 0.5
    assert (c.side, c.quantity, c.price) == ("SELL", 2, 5399.5)
    out = p.on_order_event(event(c, CANCELLED, 0, T0 + S))  # the IOC missed: still +1, protected again
    assert [(x.client_order_id, x.side, x.quantity) for x in out.orders] == [("d1:sl.2", "SELL", 1),
                                                                           ("d1:tp.2", "SELL", 1)]


def test_a_refused_cancel_is_asked_again_after_the_retry_time_and_once():
    p = policy(style="passive")
    (o,) = p.on_decision(decision("d1", "BUY", 1), 0, book(), T0).orders
    assert p.on_time(T0 + 5 * S).cancels == ["d1:entry"]  # the passive timeout
    assert p.on_cancel_denied("d1:entry", T0 + 6 * S) is True  # refused by the cancel rate
    assert p.on_time(T0 + 6 * S - 1) == ([], [])
    assert p.on_time(T0 + 6 * S) == ([], ["d1:entry"])  # 1 s on: asked again
    assert p.on_time(T0 + 7 * S) == ([], [])  # once
    (x,) = p.on_order_event(event(o, CANCELLED, 0, T0 + 7 * S)).orders  # then it crosses as before
    assert (x.client_order_id, x.quantity) == ("d1:cross", 1)
    assert p.on_cancel_denied("nope", T0) is False and p.on_cancel_denied("d1:cross", -1) is False
    assert p.rejected["cancel_denied_unknown"] == 2 and p.counts["cancel_retry"] == 1


def test_a_pending_order_survives_a_restart():
    p = policy(style="passive")
    (o,) = p.on_decision(decision("d1", "BUY", 2), 0, book(), T0).orders
    p.on_decision(decision("d2", "SELL", 2), 0, book(), T0 + S)  # waits for d1:entry's cancel
    q = policy(style="passive")
    q.load_state(json.loads(json.dumps(p.state(), allow_nan=False)))
    assert q.on_time(T0 + S, book()) == ([], [])  # the book is not state: the next one comes with the time
    (x,) = q.on_order_event(event(o, CANCELLED, 0, T0 + S)).orders
    assert (x.client_order_id, x.side, x.quantity) == ("d2:entry", "SELL", 2)
