"""The execution actor as a plain object on the session Valkey: a decision and market data in,
the order, its events, the fill and the position in Valkey; the kill switch through the risk
command stream; a restart on the same Valkey."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import orjson
import pytest

from actors.config import ActorConfig, ValkeyLink
from actors.execution import ExecutionActor
from pipelines.execution.config import ExecutionConfig
from pipelines.execution.policy_config import PolicyConfig
from pipelines.model.messages import BookSnapshot, Decision, Trade
from pipelines.model.orders import client_order_id
from pipelines.persistence.connection import connect
from pipelines.persistence.risk_store import read_state, send_command
from pipelines.persistence.trading_store import (FILLS_STREAM, ORDERS_STREAM, TradingStore, engine_state_key,
                                                 open_orders_key, order_key, position_key)
from pipelines.risk.config import RiskConfig
from tests.helpers import FAST_RECONNECT

SYM = "WDOZ26"  # a known contract: tick 0.5, R$10 per point
MS = 1_000_000
# Monday 2025-11-24 10:01 Sao Paulo (13:01 UTC): inside the session, past the opening auction.
T = int(datetime(2025, 11, 24, 13, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000_000
# B3's WDO fee per contract (pipelines/execution/costs.py defaults): US$0.97 x 0.25 (mini) x
# (1 - 0.16 day-trade reduction) = US$0.2037, at R$5.40 per US$ = R$1.09998
FEE = 0.97 * 0.25 * (1 - 0.16) * 5.40


def book(seq: int, ts: int, asks=((5400.0, 3), (5400.5, 10))) -> BookSnapshot:
    return BookSnapshot(SYM, ts, ts, seq, (5399.5, 5399.0), (10, 10), tuple(p for p, _ in asks),
                        tuple(q for _, q in asks))


def trade(seq: int, ts: int, price: float, qty: int = 1, aggressor: int = 2) -> Trade:
    return Trade(SYM, ts, ts, seq, price, qty, aggressor)


# The actor scopes client order ids by its account (and run: none here): ``<account>/<decision id>:<role>``.
def decision(did: str, ts: int, action: str = "BUY", size: int = 2) -> Decision:
    return Decision(did, SYM, ts, 1, action, size, 0.5, 0.5, 5400.0, 10 * 1_000_000_000, (), {}, {})


@pytest.fixture()
def account():
    return f"x{uuid.uuid4().hex[:12]}"


def make(url: str | None, account: str, style: str = "marketable_limit") -> ExecutionActor:
    cfg = ActorConfig(ExecutionConfig(account=account, policy=PolicyConfig(style=style)), symbols=(SYM,),
                      valkey=ValkeyLink(url))
    return ExecutionActor(cfg, risk=RiskConfig(account=account), symbols=(SYM,), tick_sizes={SYM: 0.5})


def feed(actor: ExecutionActor, events: list) -> None:
    """The feed's side: each batch with the seq before it."""
    for ev in events:
        r = actor.on_batch([ev], {SYM: ev.seq - 1})
        assert r.accepted == 1 and r.resync_from is None


def opening(actor: ExecutionActor) -> None:
    feed(actor, [book(1, T), trade(2, T + 1 * MS, 5400.0)])


def test_decision_to_order_fill_and_position_in_valkey(valkey_server, account):
    url = valkey_server[1]
    actor = make(url, account)
    opening(actor)
    # BUY 2: a marketable limit one tick through the best ask (5400.0 + 0.5 = 5400.5), IOC
    assert actor.on_decisions([decision(f"{account}.d1", T + 2 * MS)]) == 1
    # it reaches the exchange after 5 ms of entry latency and takes 2 of the 3 lots at 5400.0
    feed(actor, [book(3, T + 10 * MS), trade(4, T + 20 * MS, 5401.0)])
    actor.close()

    coid = client_order_id(f"{account}.d1", "entry", f"{account}/")
    client = connect(url)
    try:
        h = client.hgetall(order_key(coid))
        order = orjson.loads(h[b"order"])
        assert (order["side"], order["quantity"], order["price"], order["decision_id"]) == ("BUY", 2, 5400.5, f"{account}.d1")
        event = orjson.loads(h[b"event"])
        assert (event["status"], event["filled_qty"], event["leaves_qty"], event["avg_fill_price"]) == \
            ("FILLED", 2, 0, 5400.0)
        statuses = [orjson.loads(f[b"json"])["status"] for _i, f in client.xrange(ORDERS_STREAM)
                    if orjson.loads(f[b"json"])["client_order_id"] == coid]
        assert statuses[0] == "SUBMITTED" and statuses[-1] == "FILLED"
        fills = [orjson.loads(f[b"json"]) for _i, f in client.xrange(FILLS_STREAM)]
        fills = [f for f in fills if f["account"] == account]
        assert [(f["quantity"], f["price"], f["liquidity"]) for f in fills] == [(2, 5400.0, "taker")]
        assert fills[0]["fees"] == pytest.approx(2 * FEE)  # R$2.19996
        pos = orjson.loads(client.get(position_key(account, SYM)))
        # marked to the last trade: (5401.0 - 5400.0) points x 2 contracts x R$10 = R$20.00
        assert (pos["quantity"], pos["avg_price"], pos["last_price"]) == (2, 5400.0, 5401.0)
        assert pos["unrealized_pnl"] == pytest.approx(20.0)
        assert pos["realized_pnl"] == 0.0 and pos["fees"] == pytest.approx(2 * FEE)
        assert not client.smembers(open_orders_key(account))  # filled: no open order left
        assert client.exists(engine_state_key(account))
    finally:
        client.close()


def test_halt_through_the_command_stream_denies_the_next_decision(valkey_server, account):
    url = valkey_server[1]
    actor = make(url, account)
    opening(actor)
    client = connect(url)
    try:
        cid = send_command(client, account, "halt", "tester", "news")
        feed(actor, [book(3, T + 5 * MS)])  # commands are served before every batch
        state = read_state(client, account)
        assert state["state"] == "HALTED" and state["command_cursor"] == cid
        assert actor.on_decisions([decision(f"{account}.d2", T + 6 * MS)]) == 0
        assert actor.stats()["counts"]["denied"] == 1
        assert not client.exists(order_key(client_order_id(f"{account}.d2", "entry", f"{account}/")))
        actor.close()
        # a restarted actor comes back HALTED; a resume sent meanwhile is served by the next ping
        again = make(url, account)
        assert again.stats()["trading_state"] == "HALTED"
        rid = send_command(client, account, "resume", "tester")
        again.ping()
        state = read_state(client, account)
        assert state["state"] == "ACTIVE" and state["command_cursor"] == rid
        # the kill switch by an actor call too
        assert again.command("halt", "tester", "by call")["state"] == "HALTED"
        assert read_state(client, account)["state"] == "HALTED"
        again.close()
    finally:
        actor.close()
        client.close()


def test_restart_restores_open_orders_and_position_and_sends_nothing_twice(valkey_server, account):
    url = valkey_server[1]
    first = make(url, account, style="passive")
    opening(first)
    # BUY 2 passive: a DAY limit at the best bid 5399.5, behind the 10 lots displayed there
    assert first.on_decisions([decision(f"{account}.d1", T + 2 * MS)]) == 1
    feed(first, [book(3, T + 10 * MS)])  # arrived (5 ms), queued behind 10
    # a sell of 11 at 5399.5: 10 take the queue ahead, 1 fills ours -> 1 filled, 1 still working
    feed(first, [trade(4, T + 20 * MS, 5399.5, qty=11, aggressor=3)])
    coid = client_order_id(f"{account}.d1", "entry", f"{account}/")
    assert [o.client_order_id for o in first.engine.working()] == [coid]
    assert first.engine.positions.position(SYM).quantity == 1
    first.close()  # every step was committed as it happened: what a crash would leave too

    again = make(url, account, style="passive")
    assert again.restored and again.position() == {SYM: 4}
    assert [o.client_order_id for o in again.engine.working()] == [coid]
    pos = again.engine.positions.position(SYM)
    assert (pos.quantity, pos.avg_price) == (1, 5399.5)
    assert again.on_decisions([decision(f"{account}.d1", T + 2 * MS)]) == 0  # the same decision: nothing sent
    assert again.stats()["counts"]["orders"] == 1  # the one order of the first life
    r = again.on_batch([trade(4, T + 20 * MS, 5399.5, qty=11, aggressor=3)], {SYM: 3})  # re-sent: a duplicate
    assert (r.accepted, r.duplicates) == (0, 1)
    # the rest of the order fills after the restart: a sell of 1 more at 5399.5
    feed(again, [trade(5, T + 30 * MS, 5399.5, qty=1, aggressor=3)])
    assert again.engine.positions.position(SYM).quantity == 2 and not again.engine.working()
    again.close()
    store = TradingStore(url, **FAST_RECONNECT)
    try:
        fills = store.fills_since(0, account=account)
        assert [(f.quantity, f.price) for f in fills] == [(1, 5399.5), (1, 5399.5)]
        assert store.load_open_orders(account) == []
        (p,) = store.load_positions(account)
        assert (p.quantity, p.avg_price) == (2, 5399.5)
    finally:
        store.close()


def test_without_valkey_it_runs_in_memory(account):
    actor = make(None, account)
    opening(actor)
    assert actor.on_decisions([decision(f"{account}.d1", T + 2 * MS)]) == 1
    feed(actor, [book(3, T + 10 * MS)])
    assert actor.engine.positions.position(SYM).quantity == 2
    assert actor.on_decisions("not a list") == 0 and actor.stats()["bad_calls"] == {"decisions_not_a_list": 1}
    assert actor.on_decisions([object()]) == 0 and actor.stats()["ignored"]["not_a_decision"] == 1
    for batch, prev in (([object()], {SYM: 3}), (b"not a pickle", {SYM: 3}), ([book(4, T + 11 * MS)], None)):
        assert actor.on_batch(batch, prev).accepted == 0
    assert actor.stats()["bad_calls"]["bad_batch"] == 3
    assert actor.engine.positions.position(SYM).quantity == 2  # nothing changed
    actor.close()



# -- decisions sequenced with market data ------------------------------------------------


def sequenced(url: str | None, account: str, **cfg) -> ExecutionActor:
    """An execution actor whose symbol has a coordinator: its market data waits for the decisions."""
    config = ActorConfig(ExecutionConfig(account=account, **cfg), symbols=(SYM,), valkey=ValkeyLink(url),
                         run_id="run-1")
    return ExecutionActor(config, risk=RiskConfig(account=account), symbols=(SYM,), tick_sizes={SYM: 0.5},
                          decided=(SYM,))


def on_trade(did: str, seq: int, ts: int) -> Decision:
    """BUY 2, made on the trade with ``seq`` (a decision's seq is its feature vector's, the trade's)."""
    return Decision(did, SYM, ts, seq, "BUY", 2, 0.5, 0.5, 5400.0, 10 * 1_000_000_000, (), {}, {})


def session(actor: ExecutionActor) -> None:
    # book 1: asks 5400.0 x 3; trade 2 (the decision is made on it); book 3, 9 ms later: the asks
    # moved up to 5401.0; trade 4
    feed(actor, [book(1, T), trade(2, T + 1 * MS, 5400.0),
                 book(3, T + 10 * MS, asks=((5401.0, 3), (5401.5, 10))), trade(4, T + 20 * MS, 5401.0)])


def test_a_decision_meets_the_book_it_was_made_on_whatever_arrives_first(account):
    d = on_trade(f"{account}.d1", 2, T + 1 * MS)
    # Market data first: all of it is held until the coordinator says what it decided up to seq 2.
    late = sequenced(None, account)
    session(late)
    assert late.stats()["held"] == 4 and not late.engine.positions.quantities()
    assert late.on_decisions([d], {SYM: 2}) == 1
    assert late.stats()["held"] == 2  # book 3 and trade 4 wait for the next round
    late.on_decisions([], {SYM: 4})
    # Decision first: it waits for the trade it was made on.
    early = sequenced(None, account)
    assert early.on_decisions([d], {SYM: 2}) == 0 and early.stats()["waiting_decisions"] == 1
    session(early)
    early.on_decisions([], {SYM: 4})
    # Both: a marketable limit at 5400.0 + 1 tick, sent at T+1ms, at the exchange 5 ms later,
    # before book 3 moved the asks: 2 lots at 5400.0.
    for actor in (late, early):
        pos = actor.engine.positions.position(SYM)
        assert (pos.quantity, pos.avg_price) == (2, 5400.0)
        s = actor.stats()
        assert (s["held"], s["waiting_decisions"], s["late_decisions"], s["overrun"]) == (0, 0, 0, 0)
    # Without sequencing the same decision, coming after book 3, buys at the asks of book 3.
    unsequenced = make(None, account)
    session(unsequenced)
    unsequenced.on_decisions([d])
    feed(unsequenced, [book(5, T + 30 * MS, asks=((5401.0, 3), (5401.5, 10)))])
    pos = unsequenced.engine.positions.position(SYM)
    assert (pos.quantity, pos.avg_price) == (2, 5401.0)


def test_market_data_before_the_next_decision_boundary_does_not_wait(account):
    actor = sequenced(None, account)
    session(actor)
    # decided up to trade 2; the next decision is on the first vector at or after T + 15 ms: book 3
    # (T + 10 ms) goes on at once, trade 4 (T + 20 ms) waits for the next round
    actor.on_decisions([on_trade(f"{account}.d1", 2, T + 1 * MS)], {SYM: 2}, {SYM: T + 15 * MS})
    s = actor.stats()
    assert (s["held"], s["feed_position"]) == (1, {SYM: 3})
    assert actor.engine.positions.position(SYM).avg_price == 5400.0  # the decision met book 1, as before
    actor.on_decisions([], {SYM: 4}, {SYM: T + 1000 * MS})
    assert actor.stats()["held"] == 0


def test_held_market_data_is_bounded_and_a_late_decision_is_counted(account):
    actor = sequenced(None, account, max_held_events=2)
    session(actor)  # no coordinator answers: past 2 held events, the oldest go on without it
    s = actor.stats()
    assert (s["held"], s["overrun"], s["feed_position"]) == (2, 2, {SYM: 2})
    assert actor.on_decisions([on_trade(f"{account}.d1", 1, T)], {SYM: 1}) == 1  # made on book 1: trade 2 went by
    assert actor.stats()["late_decisions"] == 1
    assert actor.on_decisions("nope", [1], 5) == 0
    assert actor.stats()["bad_calls"] == {"decisions_not_a_list": 1, "bad_through": 1, "bad_until": 1}


def test_a_decision_waiting_for_its_market_data_survives_a_restart(valkey_server, account):
    url = valkey_server[1]
    first = sequenced(url, account)
    assert first.on_decisions([on_trade(f"{account}.d1", 2, T + 1 * MS)], {SYM: 2}) == 0  # waits; saved
    feed(first, [book(1, T)])  # processed (seq 1 <= 2): the saved feed position moves to 1
    assert first.trading.flush(10)  # the saves have landed (a commit waits at most 2 s: a loaded machine)
    # SIGKILL now (no close): a new incarnation on the same Valkey and run
    again = sequenced(url, account)
    assert again.restored and again.position() == {SYM: 1}
    assert again.stats()["waiting_decisions"] == 1
    feed(again, [trade(2, T + 1 * MS, 5400.0), book(3, T + 10 * MS, asks=((5401.0, 3), (5401.5, 10)))])
    again.on_decisions([], {SYM: 3})
    pos = again.engine.positions.position(SYM)
    assert (pos.quantity, pos.avg_price) == (2, 5400.0) and again.stats()["counts"]["orders"] == 1
    again.close()
    # a new run on the same account starts flat (the kill switch would carry over)
    config = ActorConfig(ExecutionConfig(account=account), symbols=(SYM,), valkey=ValkeyLink(url), run_id="run-2")
    fresh = ExecutionActor(config, risk=RiskConfig(account=account), symbols=(SYM,), tick_sizes={SYM: 0.5},
                           decided=(SYM,))
    assert not fresh.restored and fresh.position() == {} and not fresh.engine.positions.quantities()
    fresh.close()
    store = TradingStore(url, **FAST_RECONNECT)
    try:  # the stores describe the new run's account: the old position stored flat
        (p,) = store.load_positions(account)
        assert (p.quantity, p.realized_pnl, p.fees, p.last_price) == (0, 0.0, 0.0, 5400.0)
    finally:
        store.close()


def test_a_new_run_ends_the_working_orders_the_previous_one_left(valkey_server, account):
    url = valkey_server[1]
    first = make(url, account, style="passive")  # run "" (make() gives none)
    opening(first)
    assert first.on_decisions([decision(f"{account}.d1", T + 2 * MS)]) == 1  # a passive bid, resting
    feed(first, [book(3, T + 10 * MS)])
    first.close()
    store = TradingStore(url, **FAST_RECONNECT)
    try:
        assert [o.client_order_id for o, _e in store.load_open_orders(account)] == \
            [client_order_id(f"{account}.d1", "entry", f"{account}/")]
        config = ActorConfig(ExecutionConfig(account=account), symbols=(SYM,), valkey=ValkeyLink(url), run_id="r2")
        ExecutionActor(config, risk=RiskConfig(account=account), symbols=(SYM,), tick_sizes={SYM: 0.5}).close()
        assert store.load_open_orders(account) == []
        event = store.order(client_order_id(f"{account}.d1", "entry", f"{account}/"))["event"]
        assert (event["status"], event["leaves_qty"], event["reason"]) == ("CANCELLED", 0, "run ended; new run r2")
    finally:
        store.close()


def test_a_held_event_with_a_bad_time_is_counted_not_raised(account):
    actor = sequenced(None, account)
    r = actor.on_batch([Trade(SYM, "not a time", T, 1, 5400.0, 1, 2)], {SYM: 0})
    assert r.accepted == 1  # admitted by seq; its time is the engine's to judge
    assert actor.stats()["ignored"] == {"bad_time": 1} and actor.stats()["held"] == 0
