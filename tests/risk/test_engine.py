"""The risk engine (pipelines/risk/engine.py) on hand-made cases: every pre-trade check, the
state transitions, the cooldown, the kill switch, persistence of its state, and bad input.

Event time starts at SESSION_T0, Monday 2026-11-23 10:00 in Sao Paulo (inside the session).
WDO: tick 0.5, R$10 per point; WIN: tick 5, R$0.20 per point."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from pipelines.model.orders import (CANCELLED, FILLED, LIMIT, MARKET, PARTIALLY_FILLED, STOP_LIMIT, Order,
                                    OrderEvent, RiskEvent)
from pipelines.risk.account import AccountSnapshot
from pipelines.risk.config import RiskConfig
from pipelines.risk.engine import ACTIVE, HALTED, REDUCING, RiskEngine, reason_code
from tests.helpers import SESSION_T0

T = SESSION_T0
S = 1_000_000_000
MIN = 60 * S
DAY = 24 * 3600 * S
WDO, WIN = "WDOZ26", "WINZ26"
BRT = timezone(timedelta(hours=-3))  # Sao Paulo has had no DST since 2019


def at(*args: int) -> int:
    """ns of a Sao Paulo wall time, computed without the code under test."""
    return int(datetime(*args, tzinfo=BRT).timestamp()) * S


class Account:
    """The two things risk reads, set directly by the test."""

    def __init__(self, **quantities: int):
        self.q = dict(quantities)
        self.pnl = 0.0

    def quantities(self):
        return self.q

    def day_pnl_net(self):
        return self.pnl


_ids = iter(range(1, 10**9))


def order(side: str, qty: int, price: float = math.nan, *, symbol: str = WDO, coid: str | None = None,
          reduce_only: bool = False, order_type: str | None = None, stop: float = math.nan,
          account: str = "paper") -> Order:
    kind = order_type or (MARKET if math.isnan(price) else LIMIT)
    return Order(f"d{next(_ids)}:entry" if coid is None else coid, account, symbol, T, side, qty, kind, price, stop,
                 reduce_only=reduce_only)


def engine(account: Account | None = None, now: int = T, **cfg) -> tuple[RiskEngine, Account]:
    """An engine with a WDO trade at 5400.0 at ``now``."""
    account = account or Account()
    eng = RiskEngine(account, RiskConfig(**cfg))
    eng.on_trade(WDO, 5400.0, now)
    return eng, account


def denied(ev: RiskEvent | None, code: str) -> str:
    assert ev is not None, f"expected a denial {code!r}, the order was allowed"
    assert ev.action == "denied" and reason_code(ev.reason) == code, ev
    return ev.reason


# -- pre-trade checks ----------------------------------------------------------------------


def test_a_plain_entry_passes():
    eng, _ = engine()
    assert eng.check(order("BUY", 1, 5400.0), T) is None
    assert eng.stats()["allowed"] == 1 and eng.drain_events() == []


def test_max_order_qty():
    eng, _ = engine(max_order_qty=5, max_position=10, max_total_position=10)
    assert denied(eng.check(order("BUY", 6, 5400.0), T), "max_order_qty") == "max_order_qty: 6 contracts (max 5)"
    assert eng.check(order("BUY", 5, 5400.0), T) is None


def test_max_position_counts_working_orders():
    eng, acct = engine(Account(WDOZ26=3), max_position=5, max_order_qty=20, max_notional=0.0)
    first = order("BUY", 2, 5400.0)
    assert eng.check(first, T) is None  # 3 + 2 = 5: at the limit
    # 3 held + 2 working + 1 = 6 > 5
    assert "would reach +6" in denied(eng.check(order("BUY", 1, 5400.0), T), "max_position")
    # the first one fills: the position is 5, nothing working; 5 + 1 = 6 still
    acct.q[WDO] = 5
    eng.on_order_event(OrderEvent(first.client_order_id, "paper", WDO, T, FILLED, 2, 0, 5400.0))
    denied(eng.check(order("BUY", 1, 5400.0), T), "max_position")
    # the other way: from +5, selling 10 ends at -5, within the limit; selling 11 at -6 is not
    denied(eng.check(order("SELL", 11, 5400.0), T), "max_position")
    assert eng.check(order("SELL", 10, 5400.0), T) is None


def test_max_position_after_a_partial_fill():
    eng, acct = engine(max_position=5)
    o = order("BUY", 4, 5400.0)
    assert eng.check(o, T) is None
    acct.q[WDO] = 1  # one lot filled, three still working: worst case 1 + 3 = 4
    eng.on_order_event(OrderEvent(o.client_order_id, "paper", WDO, T, PARTIALLY_FILLED, 1, 3, 5400.0))
    assert eng.check(order("BUY", 1, 5400.0), T) is None  # 4 + 1 = 5
    denied(eng.check(order("BUY", 1, 5400.0), T), "max_position")  # 4 + 1 working + 1 = 6
    eng.on_order_event(OrderEvent(o.client_order_id, "paper", WDO, T, CANCELLED, 1, 0, 5400.0))
    assert eng.check(order("BUY", 1, 5400.0), T) is None  # 1 + 1 working + 1 = 3


def test_max_total_position():
    eng, _ = engine(Account(WDOZ26=3, WINZ26=-2), max_position=10, max_total_position=6)
    eng.on_trade(WIN, 130_000.0, T)
    # |3 + 2| + |-2| = 7 > 6
    assert "would hold 7 contracts" in denied(eng.check(order("BUY", 2, 5400.0), T), "max_total_position")
    assert eng.check(order("BUY", 1, 5400.0), T) is None  # |3 + 1| + |-2| = 6


def test_max_notional():
    eng, _ = engine(max_notional=120_000.0)
    eng.on_trade(WIN, 130_000.0, T)
    assert eng.check(order("BUY", 2, 5400.0), T) is None  # 2 x 5400 x 10 = 108,000
    reason = denied(eng.check(order("BUY", 3, 5400.0), T), "max_notional")  # 3 x 5400 x 10 = 162,000
    assert "R$ 162000.00" in reason
    denied(eng.check(order("SELL", 3), T), "max_notional")  # market: priced at the last trade, 162,000
    denied(eng.check(order("BUY", 5, 130_000.0, symbol=WIN), T), "max_notional")  # 5 x 130000 x 0.2 = 130,000
    assert eng.check(order("BUY", 4, 130_000.0, symbol=WIN), T) is None  # 104,000


def test_price_band():
    eng, _ = engine(price_band_pct=1.0)  # last 5400.0: 1 % is 54 points
    assert eng.check(order("BUY", 1, 5454.0), T) is None  # 54 / 5400 = 1.00 %: at the edge
    assert "1.01 %" in denied(eng.check(order("BUY", 1, 5454.5), T), "price_band")  # 54.5 / 5400 = 1.009 %
    denied(eng.check(order("SELL", 1, 5345.5), T), "price_band")
    assert eng.check(order("SELL", 1, 5346.0), T) is None


def test_tick_multiple():
    eng, _ = engine()
    eng.on_trade(WIN, 130_000.0, T)
    assert "5400.25" in denied(eng.check(order("BUY", 1, 5400.25), T), "off_tick")
    denied(eng.check(order("BUY", 1, 130_002.0, symbol=WIN), T), "off_tick")  # WIN tick 5
    assert eng.check(order("BUY", 1, 130_005.0, symbol=WIN), T) is None
    stop_limit = order("BUY", 1, 5401.0, order_type=STOP_LIMIT, stop=5400.3)
    assert "stop price" in denied(eng.check(stop_limit, T), "off_tick")


@pytest.mark.parametrize("when, calendar, allowed, why", [
    (at(2026, 11, 23, 8, 59, 59), "b3", False, "before the 09:00 open"),
    (at(2026, 11, 23, 9, 0, 0), "b3", True, ""),
    (at(2026, 11, 23, 17, 59, 59), "b3", True, ""),
    (at(2026, 11, 23, 18, 0, 0), "b3", False, "after the session's close"),
    (at(2026, 11, 28, 12, 0, 0), "b3", False, "Saturday 2026-11-28"),
    (at(2026, 11, 20, 12, 0, 0), "b3", False, "2026-11-20 is a B3 holiday"),  # Black Consciousness Day
    (at(2026, 11, 20, 12, 0, 0), "weekdays", True, ""),  # a simulated session on any weekday
    (at(2026, 2, 18, 12, 0, 0), "b3", False, "before the 13:00 open"),  # Ash Wednesday opens late
    (at(2026, 2, 18, 13, 0, 0), "b3", True, ""),
    (at(2031, 3, 3, 12, 0, 0), "b3", False, "no B3 calendar for 2031"),
])
def test_session_hours(when, calendar, allowed, why):
    eng, _ = engine(Account(WDOZ26=1), now=when, calendar=calendar)
    ev = eng.check(order("BUY", 1, 5400.0), when)
    if allowed:
        assert ev is None
    else:
        assert why in denied(ev, "outside_session")
        assert eng.check(order("SELL", 1, 5400.0), when) is None  # reducing the +1: allowed


def test_session_hours_off():
    when = at(2026, 11, 28, 12, 0, 0)  # a Saturday
    eng, _ = engine(now=when, session_hours=False)
    assert eng.check(order("BUY", 1, 5400.0), when) is None


def test_stale_and_missing_market_data():
    eng, _ = engine(Account(WDOZ26=2), stale_after_s=10.0)
    assert eng.check(order("BUY", 1, 5400.0), T + 10 * S) is None  # 10.0 s is not more than 10
    reason = denied(eng.check(order("BUY", 1, 5400.0), T + 10 * S + 1), "stale_market_data")
    assert "for 10.0 s" in reason
    assert eng.check(order("SELL", 1), T + 60 * S) is None  # reducing passes on stale data
    assert "WINZ26" in denied(eng.check(order("BUY", 1, 130_000.0, symbol=WIN), T + 60 * S), "no_market_data")
    eng.on_trade(WDO, 5400.5, T + 61 * S)  # fresh again
    assert eng.check(order("BUY", 1, 5400.0), T + 61 * S) is None


def test_order_rate_sliding_window():
    eng, _ = engine(max_orders_per_s=3, max_position=100, max_total_position=100)
    for ms in (0, 100, 200):
        eng.on_trade(WDO, 5400.0, T + ms * 1_000_000)
        assert eng.check(order("BUY", 1, 5400.0), T + ms * 1_000_000) is None
    reason = denied(eng.check(order("BUY", 1, 5400.0), T + 300_000_000), "order_rate")
    assert reason == "order_rate: 3 orders in the last second (max 3)"
    # at T + 1 s the order of T has left the window (now - 1 s, now]; the denied one never counted
    assert eng.check(order("BUY", 1, 5400.0), T + S) is None
    denied(eng.check(order("BUY", 1, 5400.0), T + S), "order_rate")  # 100, 200 and 1000 ms


def test_cancel_and_modify_rate():
    eng, _ = engine(max_cancels_per_s=2)
    o = order("BUY", 1, 5400.0)
    assert eng.check(o, T) is None
    assert eng.check_cancel(WDO, "x:entry", T) is None
    assert eng.check_modify(o._replace(price=5399.5), T + 500_000_000) is None  # a modify counts as well
    assert "2 modifies and cancels" in denied(eng.check_cancel(WDO, o.client_order_id, T + 900_000_000),
                                               "cancel_rate")
    assert eng.check_cancel(WDO, o.client_order_id, T + S) is None  # the cancel of T has aged out
    denied(eng.check_modify(order("BUY", 1, 5400.0, coid="never-sent"), T + 2 * S), "unknown_order")


def test_reduce_only_that_would_not_reduce():
    eng, _ = engine(Account(WDOZ26=1))
    assert "position +1" in denied(eng.check(order("SELL", 2, reduce_only=True), T), "not_reducing")
    assert eng.check(order("SELL", 1, reduce_only=True), T) is None


def test_a_brackets_stop_and_target_count_once():
    """Long 2: a stop-loss and a take-profit of 2 each, one OCO group, are both reducing (only one
    can fill); a third reduce-only sell of 1 would make 2 + 1 > 2 and is not."""
    eng, _ = engine(Account(WDOZ26=2))
    stop = order("SELL", 2, 5390.0, order_type=STOP_LIMIT, stop=5391.0, reduce_only=True)._replace(oco_group="d1:oco")
    target = order("SELL", 2, 5410.0, reduce_only=True)._replace(oco_group="d1:oco")
    assert eng.check(stop, T) is None and eng.check(target, T) is None
    assert "position +2" in denied(eng.check(order("SELL", 1, reduce_only=True), T), "not_reducing")
    # Another group is another possible fill: it counts on top.
    other = order("SELL", 1, 5411.0, reduce_only=True)._replace(oco_group="d2:oco")
    denied(eng.check(other, T), "not_reducing")


# -- account limits and states ---------------------------------------------------------------


def test_daily_loss_active_reducing_halted_and_flatten():
    eng, acct = engine(Account(WDOZ26=2), max_daily_loss=1000.0, reducing_at=0.8, max_drawdown=0.0)
    acct.pnl = -799.99
    assert eng.on_account(T) == [] and eng.trading_state == ACTIVE
    acct.pnl = -800.0  # 1000 x 0.8
    [ev] = eng.on_account(T)
    assert (ev.action, ev.state, ev.who) == ("state", REDUCING, "daily_loss")
    assert ev.reason == "daily loss: day P&L -800.00 reached 80% of the limit -1000.00"
    # REDUCING: only orders that reduce the +2
    assert denied(eng.check(order("BUY", 1, 5400.0), T), "reducing").startswith("reducing: daily loss")
    denied(eng.check(order("SELL", 3), T), "reducing")  # would flip to -1
    assert eng.check(order("SELL", 2, coid="s2"), T) is None
    eng.on_order_event(OrderEvent("s2", "paper", WDO, T, CANCELLED, 0, 0, math.nan))
    acct.pnl = -1000.0
    [ev] = eng.on_account(T + S)
    assert (ev.state, ev.who) == (HALTED, "daily_loss") and ev.reason.endswith("flatten requested")
    assert eng.flatten_requested and eng.status().flattening
    # HALTED while flattening: reducing orders still pass, entries do not, cancels do
    assert eng.check(order("SELL", 2, reduce_only=True), T + S) is None
    denied(eng.check(order("BUY", 1, 5400.0), T + S), "halted")
    assert eng.check_cancel(WDO, "any:entry", T + S) is None
    assert eng.acknowledge_flatten() is True and not eng.flatten_requested and eng.status().flattening
    assert eng.acknowledge_flatten() is False
    acct.q[WDO] = 0
    [ev] = eng.on_account(T + 2 * S)
    assert (ev.state, ev.who, ev.reason) == (HALTED, "flatten", "flatten complete: every position is flat")
    assert not eng.status().flattening
    denied(eng.check(order("SELL", 1), T + 2 * S), "halted")  # flat: a sell would open a short
    acct.pnl = -5000.0
    assert eng.on_account(T + 3 * S) == []  # latched: no second event


def test_drawdown_from_the_intraday_peak():
    eng, acct = engine(Account(WDOZ26=1), max_daily_loss=1000.0, max_drawdown=1500.0)
    for pnl, want in ((2000.0, ACTIVE), (600.0, ACTIVE), (500.0, HALTED)):  # 2000 - 600 = 1400; - 500 = 1500
        acct.pnl = pnl
        events = eng.on_account(T)
        assert eng.trading_state == want
    [ev] = events
    assert ev.who == "drawdown"
    assert ev.reason == ("drawdown: day P&L 500.00 is 1500.00 below its peak 2000.00 (max 1500.00); "
                         "flatten requested")
    assert eng.flatten_requested


def test_drawdown_peak_starts_at_zero():
    eng, acct = engine(Account(WDOZ26=1), max_daily_loss=0.0, max_drawdown=1500.0)  # daily loss off
    acct.pnl = -1499.0
    assert eng.on_account(T) == []
    acct.pnl = -1500.0
    assert [e.who for e in eng.on_account(T)] == ["drawdown"] and eng.trading_state == HALTED


def test_cooldown_starts_and_ends_on_event_time():
    eng, _ = engine(Account(WDOZ26=1), max_consecutive_losses=3, cooldown_min=30.0)
    assert eng.on_trade_closed(-10.0, T) == []
    assert eng.on_trade_closed(0.0, T + MIN) == []  # a break-even trade ends the streak
    assert eng.on_trade_closed(-1.0, T + 2 * MIN) == []
    assert eng.on_trade_closed(-2.0, T + 3 * MIN) == []
    [ev] = eng.on_trade_closed(-3.0, T + 4 * MIN)  # third loss in a row at 10:04: until 10:34
    assert (ev.state, ev.who) == (REDUCING, "cooldown")
    assert ev.reason == "cooldown until 2026-11-23T10:34:00-03:00 (3 consecutive losing trades)"
    eng.on_trade(WDO, 5400.0, T + 34 * MIN - 1)
    reason = denied(eng.check(order("BUY", 1, 5400.0), T + 34 * MIN - 1), "cooldown")
    assert reason.startswith("cooldown until 2026-11-23T10:34:00-03:00")
    assert eng.check(order("SELL", 1), T + 34 * MIN - 1) is None  # reducing passes
    [ev] = eng.on_trade(WDO, 5400.0, T + 34 * MIN)
    assert (ev.state, ev.reason) == (ACTIVE, "cooldown over")
    assert eng.check(order("BUY", 1, 5400.0), T + 34 * MIN) is None


def test_new_session_day_resets_daily_limits_not_a_manual_halt():
    eng, acct = engine(max_daily_loss=1000.0)
    acct.pnl = -1000.0
    eng.on_account(T)
    assert eng.trading_state == HALTED
    acct.pnl = 0.0  # the account's day restarts with the day (PositionBook.new_day)
    [ev] = eng.on_trade(WDO, 5400.0, T + DAY)
    assert (ev.state, ev.who, ev.reason) == (ACTIVE, "session_day", "new session day 2026-11-24: daily limits reset")
    assert eng.check(order("BUY", 1, 5400.0), T + DAY) is None
    eng.halt("ana@box", "news", T + DAY)
    assert eng.on_trade(WDO, 5400.0, T + 2 * DAY) == [] and eng.trading_state == HALTED


# -- kill switch -----------------------------------------------------------------------------


def test_halt_only_cancels_pass_then_resume():
    eng, _ = engine(Account(WDOZ26=1))
    ev = eng.halt("ana@box", "news at 10:30", T)
    assert ev == RiskEvent("paper", "", T, "state", HALTED, "halt: news at 10:30", "", "ana@box")
    assert denied(eng.check(order("BUY", 1, 5400.0), T), "halted") == "halted: halt by ana@box: news at 10:30"
    denied(eng.check(order("SELL", 1), T), "halted")  # reducing, but no flatten under way
    assert eng.check_cancel(WDO, "a:entry", T) is None
    assert not eng.flatten_requested
    ev = eng.resume("bob@box", T + S)
    assert (ev.action, ev.state, ev.who, ev.reason) == ("state", ACTIVE, "bob@box", "resume")
    assert eng.check(order("BUY", 1, 5400.0), T + S) is None


def test_flatten_halts_and_lets_reducing_orders_through():
    eng, acct = engine(Account(WDOZ26=-3))
    ev = eng.flatten("ana@box", T, "too volatile")
    assert (ev.state, ev.reason) == (HALTED, "flatten: too volatile")
    assert eng.flatten_requested and eng.status().reason == "flatten by ana@box: too volatile"
    assert eng.check(order("BUY", 3, reduce_only=True), T) is None  # closes the -3
    denied(eng.check(order("BUY", 1, 5400.0), T), "halted")  # -3 + 3 working + 1 would open a long
    eng.resume("ana@box", T + S)
    assert not eng.flatten_requested and not eng.status().flattening and eng.trading_state == ACTIVE


def test_resume_refused_while_the_daily_loss_halts():
    eng, acct = engine(max_daily_loss=1000.0)
    acct.pnl = -1200.0
    eng.on_account(T)
    ev = eng.resume("ana@box", T)
    assert (ev.action, ev.state, ev.who) == ("denied", HALTED, "ana@box")
    assert ev.reason.startswith("resume_refused: daily loss: day P&L -1200.00 reached the limit -1000.00")
    assert eng.trading_state == HALTED


def test_resume_to_reducing_when_the_loss_is_at_its_reducing_level():
    eng, acct = engine(max_daily_loss=1000.0, reducing_at=0.8)
    acct.pnl = -900.0
    eng.on_account(T)
    eng.halt("ana@box", "", T)
    assert eng.trading_state == HALTED
    ev = eng.resume("ana@box", T)
    assert ev.state == REDUCING and ev.reason.startswith("resume; still reducing: daily loss")


def test_apply_command_moves_the_cursor_and_records_the_outcome():
    eng, _ = engine()
    ev = eng.apply_command("1700000000000-0", {"command": "halt", "who": "ana@box", "reason": "r",
                                               "sent_at": "2026-11-23T10:00:01-03:00"})
    assert ev.state == HALTED and eng.command_cursor == "1700000000000-0"
    assert eng.last_command == {"id": "1700000000000-0", "command": "halt", "who": "ana@box",
                                "sent_at": "2026-11-23T10:00:01-03:00", "result": "done", "state": HALTED,
                                "reason": "halt: r", "ts": T}
    ev = eng.apply_command("1700000000001-0", {"command": "explode", "who": "ana@box"})
    assert ev.action == "denied" and reason_code(ev.reason) == "unknown_command"
    assert eng.last_command["result"] == "refused" and eng.command_cursor == "1700000000001-0"
    ev = eng.apply_command("1700000000002-0", {})  # an unreadable entry: refused, and moved past
    assert ev.action == "denied" and eng.command_cursor == "1700000000002-0"
    assert eng.trading_state == HALTED


# -- persistence -----------------------------------------------------------------------------


def test_state_round_trip_keeps_halted():
    eng, acct = engine(Account(WDOZ26=1), max_daily_loss=1000.0, reducing_at=0.8)
    acct.pnl = -850.0
    eng.on_account(T)
    eng.check(order("BUY", 0, 5400.0), T)  # one denial, counted
    eng.flatten("ana@box", T, "x")
    eng.apply_command("5-0", {"command": "halt", "who": "bob@box", "reason": "y"})
    blob = orjson.dumps(eng.state())  # what Valkey holds
    again = RiskEngine(Account(WDOZ26=1), RiskConfig(max_daily_loss=1000.0, reducing_at=0.8))
    assert again.load_state(orjson.loads(blob)) is True
    assert (again.trading_state, again.status().reason) == (HALTED, "halt by bob@box: y")
    assert again.flatten_requested and again.command_cursor == "5-0"
    assert again.state() == eng.state()
    # before any market data its clock is at 0, behind the stored day: that is no new day
    again.apply_command("6-0", {"command": "resume", "who": "bob@box"})
    assert again.trading_state == REDUCING  # the day's loss latch came back too
    fresh = RiskEngine(Account(), RiskConfig())
    fresh.load_state(orjson.loads(blob), daily=False)  # a new run: only the kill switch
    assert fresh.trading_state == HALTED
    fresh.resume("bob@box", T)
    assert fresh.trading_state == ACTIVE


@pytest.mark.parametrize("bad", [None, [], {"account": "paper"}, {"account": "other", "version": 1},
                                 "not json"])
def test_unreadable_state_halts(bad):
    eng = RiskEngine(Account(), RiskConfig())
    assert eng.load_state(bad) is False
    assert eng.trading_state == HALTED
    assert eng.status().reason.startswith("halt by risk_store: stored risk state unreadable")
    assert eng.stats()["rejected"] == {"bad_state": 1}


def test_unreadable_field_halts():
    good = RiskEngine(Account(), RiskConfig()).state()
    eng = RiskEngine(Account(), RiskConfig())
    assert eng.load_state({**good, "loss_level": 7}) is False and eng.trading_state == HALTED


# -- bad input ---------------------------------------------------------------------------------


def test_malformed_orders_are_denied_and_counted():
    eng, _ = engine()
    cases = [
        (order("BUY", 0, 5400.0), "bad_quantity"),
        (order("BUY", -1, 5400.0), "bad_quantity"),
        (order("BUY", True, 5400.0), "bad_quantity"),
        (order("BUY", 1, order_type=LIMIT), "bad_price"),  # a limit with a NaN price
        (order("BUY", 1, math.inf), "bad_price"),
        (order("HOLD", 1, 5400.0), "bad_side"),
        (order("BUY", 1, 5400.0, coid=""), "bad_client_order_id"),
        ({"side": "BUY"}, "not_an_order"),
        (None, "not_an_order"),
        (order("BUY", 1, 5400.0, symbol="XYZ9"), "unknown_symbol"),
        (order("BUY", 1, 5400.0, account="other"), "wrong_account"),
    ]
    for o, code in cases:
        denied(eng.check(o, T), code)
    dup = order("BUY", 1, 5400.0, coid="same:entry")
    assert eng.check(dup, T) is None
    denied(eng.check(dup, T), "duplicate_client_order_id")
    for now in (None, 1.5, -1, True):
        denied(eng.check(order("BUY", 1, 5400.0), now), "bad_time")
    assert eng.stats()["denied"] == {"bad_quantity": 3, "bad_price": 2, "bad_side": 1, "bad_client_order_id": 1,
                                     "not_an_order": 2, "unknown_symbol": 1, "wrong_account": 1,
                                     "duplicate_client_order_id": 1, "bad_time": 4}
    assert len(eng.drain_events()) == 16  # 11 cases, the duplicate, 4 bad times


def test_bad_market_account_and_command_input_is_counted_not_raised():
    class Broken:
        def quantities(self):
            raise RuntimeError("gone")

        def day_pnl_net(self):
            return float("nan")

    eng = RiskEngine(Broken(), RiskConfig())
    assert eng.on_trade(WDO, float("nan"), T) == [] and eng.on_trade(None, 5400.0, T) == []
    assert eng.on_trade(WDO, 5400.0, "T") == [] and eng.on_trade(WDO, -1.0, T) == []
    assert eng.on_trade_closed(float("nan"), T) == [] and eng.on_trade_closed(-1.0, None) == []
    assert eng.on_account(T) == [] and eng.on_account("now") == []
    eng.on_trade(WDO, 5400.0, T)
    denied(eng.check(order("BUY", 1, 5400.0), T), "bad_account")
    eng.on_order_event(None)
    denied(eng.check_cancel(None, "x", T), "bad_cancel")
    denied(eng.halt("", "r", T), "bad_command")
    denied(eng.halt("ana@box", None, T), "bad_command")
    denied(eng.flatten("ana@box", -5), "bad_time")
    assert eng.trading_state == ACTIVE
    assert eng.stats()["rejected"] == {"bad_trade": 4, "bad_trade_closed": 2, "bad_account": 2, "bad_time": 1,
                                       "bad_order_event": 1, "bad_command": 3}


def test_disabled_engine_still_obeys_the_kill_switch():
    eng, acct = engine(enabled=False, max_order_qty=1)
    assert eng.check(order("BUY", 50, 5400.25), T) is None  # no pre-trade checks at all
    acct.pnl = -10**6
    assert eng.on_account(T) == [] and eng.trading_state == ACTIVE  # nor account limits
    eng.halt("ana@box", "", T)
    denied(eng.check(order("BUY", 1, 5400.0), T), "halted")


def test_events_are_bounded():
    eng, _ = engine(max_events=2)
    for _ in range(3):
        eng.check(order("BUY", 0, 5400.0), T)
    assert len(eng.drain_events()) == 2 and eng.events_dropped == 1
    assert eng.drain_events() == []


def test_account_snapshot_reads_positions_and_summaries():
    from pipelines.model.orders import AccountSummary, Position

    snap = AccountSnapshot("paper")
    snap.apply(Position("paper", WDO, T, -2, 5400.0, 5401.0, 0.0, -20.0, 1.1))
    snap.apply(AccountSummary("paper", T, -20.0, 1.1, -21.1, 108_020.0, 1))
    snap.apply(Position("other", WDO, T, 7, 5400.0, 5401.0, 0.0, 0.0, 0.0))
    snap.apply("junk")
    assert snap.quantities() == {WDO: -2} and snap.day_pnl_net() == -21.1 and snap.ignored == 2
    eng = RiskEngine(snap, RiskConfig())
    eng.on_trade(WDO, 5400.0, T)
    assert eng.check(order("BUY", 2, reduce_only=True), T) is None
