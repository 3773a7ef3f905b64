"""Live routing in one process, the way the execution actor runs it: decision -> risk ->
ExecutionEngine -> ProfitDLLVenue -> OrderClient -> the DLL host (scripts/feed_bridge.py --routing,
a child process) -> the native fake broker -> order callbacks -> updates -> fills -> positions.

The reference is the fake broker's sent log (its fills, written before each callback) and the
scripted book: WDOZ26 best ask 5000.5 x 2, then a level every tick (0.5) with the same quantity;
best bid 5000.0 x 3 likewise. Averages and positions are worked out by hand in the comments.
"""

from __future__ import annotations

import signal
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pipelines.execution.config import ExecutionConfig
from pipelines.execution.costs import CostModel
from pipelines.execution.engine import ExecutionEngine
from pipelines.execution.profitdll_venue import ProfitDLLVenue
from pipelines.model.messages import BookSnapshot, Decision, Trade
from pipelines.risk.config import RiskConfig
from tests.order_host import SYMBOL, broker_rows
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

S = 1_000_000_000
T0 = int(datetime(2026, 12, 1, 11, 0, tzinfo=ZoneInfo("America/Sao_Paulo")).timestamp()) * S  # a Tuesday, in session
ACCOUNT = "live-test"


def engine_for(client) -> ExecutionEngine:
    cfg = ExecutionConfig(account=ACCOUNT, venue="profitdll")
    cfg = replace(cfg, policy=replace(cfg.policy, style="market", hold_flattens=True))
    venue = ProfitDLLVenue(client, ACCOUNT, costs=CostModel(cfg.exchange.costs), tick_sizes={SYMBOL: 0.5})
    engine = ExecutionEngine(cfg, RiskConfig(account=ACCOUNT), (SYMBOL,), tick_sizes={SYMBOL: 0.5}, venue=venue)
    # the market as the feed would show it (the risk engine prices orders from it)
    engine.on_market([BookSnapshot(SYMBOL, T0, T0, 1, (5000.0,), (3,), (5000.5,), (2,)),
                      Trade(SYMBOL, T0 + 1, T0 + 1, 2, 5000.5, 1, "BUY")])
    return engine


def decide(action: str, size: int, ts: int, seq: int) -> Decision:
    return Decision(f"{SYMBOL}:{seq}", SYMBOL, ts, seq, action, size, 0.6, 0.6, 5000.5, 10 * S, (), {}, {})


def pump(engine: ExecutionEngine, into: list, until, timeout: float = 15.0):
    """Poll the venue (as the actor's timer does) into ``into`` until ``until(into)``."""
    def step():
        s = engine.poll_venue()
        into.extend(s.fills)
    return wait_for(lambda: until(into), timeout, 0.01, lambda: f"fills; have {into}", poll=step)


def test_decisions_become_broker_orders_and_fills_and_a_killed_host_loses_nothing(dll_host, tmp_path):
    state, broker = tmp_path / "state", tmp_path / "broker.state"
    logs = [tmp_path / "sent-1.log", tmp_path / "sent-2.log"]
    common = ["--routing", "--state-dir", str(state), "--recover-settle-s", "0.3"]
    # fills come 1.5 s after acceptance: time to kill the host between an order and its fill
    first = dll_host.host("host-1", *common, fake={"sent_log": logs[0], "broker_state": broker, "fill_delay_ms": 1500})
    client = dll_host.client(first)
    engine = engine_for(client)

    # BUY 3 at market: 2 at the best ask 5000.5, 1 at the next level 5001.0 (avg 15002 / 3)
    step = engine.on_decision(decide("BUY", 3, T0 + 2 * S, 3))
    assert [(o.side, o.quantity, o.order_type) for o in step.orders] == [("BUY", 3, "MARKET")]
    assert [e.status for e in step.order_events] == ["SUBMITTED"]
    fills = list(step.fills)
    pump(engine, fills, lambda f: sum(x.quantity for x in f) == 3)
    logged = [r for r in broker_rows(logs[0]) if r["kind"] == "fill"]
    assert [(f.quantity, f.price) for f in fills] == [(int(r["qty"]), float(r["price"])) for r in logged] \
        == [(2, 5000.5), (1, 5001.0)]
    fee = CostModel().fees(SYMBOL, 1)
    assert [f.fees for f in fills] == [2 * fee, fee]
    pos = engine.positions.position(SYMBOL)
    assert (pos.quantity, pos.avg_price) == (3, pytest.approx(15002.0 / 3))
    broker_pos = dll_host.ask(client, "positions", {"symbols": [SYMBOL]})["positions"][SYMBOL]
    assert (broker_pos["quantity"], broker_pos["avg_price"]) == (3, pytest.approx(15002.0 / 3))

    # HOLD closes the position (hold_flattens): SELL 3 at market; the host dies before the fill
    # (1.5 s later at the broker)
    step = engine.on_decision(decide("HOLD", 0, T0 + 5 * S, 5))
    assert [(o.side, o.quantity) for o in step.orders] == [("SELL", 3)] and not step.fills
    sell_coid = step.orders[0].client_order_id
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    second = dll_host.host("host-2", *common, fake={"sent_log": logs[1], "broker_state": broker})
    client.retarget(second.info["orders"], second.info["order_pub"])
    # What the execution actor does on its timer: poll the venue, and reconcile with the broker (the
    # truth) once the client has seen the new host incarnation.
    later = []

    def actor_tick():
        later.extend(engine.poll_venue().fills)
        if client.take_reconnected():
            later.extend(engine.reconcile(T0 + 9 * S).fills)

    wait_for(lambda: engine.venue.count["reconciles"] and engine.positions.position(SYMBOL).quantity == 0, 20, 0.01,
             lambda: f"the sell's fill after the restart; have {later} {engine.venue.stats()}", poll=actor_tick)
    # the broker filled the sell while no host was there: 3 at the best bid 5000.0 (its level holds 3)
    assert [(f.client_order_id, f.side, f.quantity, f.price) for f in later] == [(sell_coid, "SELL", 3, 5000.0)]
    broker_pos = dll_host.ask(client, "positions", {"symbols": [SYMBOL]})["positions"][SYMBOL]
    assert broker_pos["quantity"] == 0
    assert engine.positions.position(SYMBOL).quantity == 0
    assert engine.counts["reconcile_adjustments"] == 0  # nothing left to adjust: the fills explain the position
    assert not engine.working()
    rows = [r for log in logs for r in broker_rows(log)]
    assert len([r for r in rows if r["kind"] == "send_order"]) == 2  # each order sent once, across both hosts
    # realized P&L, by hand: bought 15002 (3 contracts), sold 15000: -2 points x R$10
    assert engine.positions.position(SYMBOL).realized_pnl == pytest.approx(-20.0)
    dll_host.assert_no_secrets()


def live_actor(host, routing: str):
    """The execution actor as the graph builds it for execution.venue: profitdll (no Valkey, no Ray peers)."""
    from actors.config import ActorConfig
    from actors.execution import ExecutionActor
    from pipelines.execution.config import ProfitDLLVenueConfig

    cfg = ExecutionConfig(account=ACCOUNT, venue="profitdll",
                          profitdll=ProfitDLLVenueConfig(orders=host.info["orders"], updates=host.info["order_pub"],
                                                         broker_account="308:1234567"))
    cfg = replace(cfg, policy=replace(cfg.policy, style="market"))
    return ExecutionActor(ActorConfig(cfg, symbols=(SYMBOL,)), risk=RiskConfig(account=ACCOUNT), symbols=(SYMBOL,),
                          tick_sizes={SYMBOL: 0.5}, routing=routing)


def test_a_shadow_run_never_trades_through_a_live_host_and_flatten_closes_through_the_dll(dll_host, tmp_path):
    sent = tmp_path / "sent.log"
    host = dll_host.host("live-host", "--routing", fake={"sent_log": sent})
    # --shadow meeting a host that routes live: halted at start, with the reason, and nothing sent
    shadow = live_actor(host, "shadow")
    try:
        st = shadow.stats()
        assert st["trading_state"] == "HALTED" and "routes LIVE" in st["venue_error"] and "--shadow" in st["venue_error"]
        shadow.on_batch([BookSnapshot(SYMBOL, T0, T0, 1, (5000.0,), (3,), (5000.5,), (2,)),
                         Trade(SYMBOL, T0 + 1, T0 + 1, 2, 5000.5, 1, "BUY")], {SYMBOL: 0})
        shadow.on_decisions([decide("BUY", 1, T0 + 1, 2)])
        assert shadow.stats()["counts"].get("orders", 0) == 0
    finally:
        shadow.close()
    assert not [r for r in broker_rows(sent) if r["kind"] == "send_order"]

    # --live on the same host: a BUY 2 fills at the broker; the kill switch's flatten closes it there
    live = live_actor(host, "live")
    try:
        assert live.stats()["venue_error"] is None and live.stats()["trading_state"] == "ACTIVE"
        live.on_batch([BookSnapshot(SYMBOL, T0, T0, 1, (5000.0,), (3,), (5000.5,), (2,)),
                       Trade(SYMBOL, T0 + 1, T0 + 1, 2, 5000.5, 1, "BUY")], {SYMBOL: 0})
        assert live.on_decisions([decide("BUY", 2, T0 + 1, 2)]) == 1
        wait_for(lambda: live.ping() and live.engine.positions.position(SYMBOL).quantity == 2, 10, 0.01,
                 "the buy filled at the broker")
        live.command("flatten", "tester", "kill switch test")
        wait_for(lambda: live.ping() and live.engine.positions.position(SYMBOL).quantity == 0, 10, 0.01,
                 "the flatten filled at the broker")
        assert live.stats()["trading_state"] == "HALTED"  # flatten halts, as on paper
    finally:
        live.close()
    sends = [r for r in broker_rows(sent) if r["kind"] == "send_order"]
    # the buy, then the close: a market sell of 2 (type 1 market, side 2 sell, price -1)
    assert [(r["side"], r["type"], int(r["qty"]), float(r["price"])) for r in sends] == [
        ("1", "1", 2, -1.0), ("2", "1", 2, -1.0)]
    broker = dll_host.ask(dll_host.client(host), "positions", {"symbols": [SYMBOL]})["positions"][SYMBOL]
    assert broker["quantity"] == 0
    dll_host.assert_no_secrets()
