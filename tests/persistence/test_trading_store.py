"""pipelines.persistence.trading_store against a real embedded valkey-server.

No mocks. Tests that only read and write share the session server and use accounts, symbols
and ids of their own (the orders and fills streams are shared, so they are filtered by
account); tests that stop a server, or count a stream exactly, run their own. Expected values
are the inputs written out here, or ids and times worked out by hand in the comments, never
read back from the store.
"""

from __future__ import annotations

import math
import time

import orjson
import pytest

from pipelines.model.orders import (ACCEPTED, BUY, CANCELLED, EXPIRED, FILLED, IOC, LIMIT, MAKER, MARKET,
                                     PARTIALLY_FILLED, REJECTED, SELL, STOP_LIMIT, SUBMITTED, TAKER, DecisionOutcome,
                                     Fill, Order, OrderEvent, Position, RiskEvent, client_order_id)
from pipelines.persistence.connection import connect
from pipelines.persistence.server import free_port
from pipelines.persistence.trading_store import (FILLS_STREAM, ORDERS_STREAM, OUTCOMES_STREAM, BadKeyPart, TradingStore,
                                                 TradingTTL, open_orders_key, order_key, outcome_key, position_key,
                                                 positions_key, trading_from_dict)
from tests.helpers import FAST_RECONNECT, T0, unique_name, wait_for

MS = 1_000_000
SEC = 1_000 * MS
NAN = math.nan
T0_MS = 1_767_225_600_000  # T0 // 1_000_000: T0 is 2026-01-01T00:00:00Z in ns


@pytest.fixture(scope="module")
def valkey_server(tmp_path_factory):
    """This module's own Valkey (``client`` and ``store`` use it too). The orders, fills and
    outcomes streams are one per Valkey for every account, their ids follow event time and never
    go back, and these tests assert exact ids: the graph tests' trading, at later event times on
    the session Valkey, would raise them."""
    from pipelines.persistence.server import EmbeddedValkey

    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey-trading"))
    url = server.start()
    yield server, url
    server.stop()


@pytest.fixture()
def store(valkey_server):
    s = TradingStore(valkey_server[1], **FAST_RECONNECT)
    yield s
    s.close()


def same(a, b) -> bool:
    """Field by field, NaN equal to NaN, and of one type (a NamedTuple's == would call NaN != NaN)."""
    return type(a) is type(b) and len(a) == len(b) and all(
        (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        or (x == y and type(x) is type(y)) for x, y in zip(a, b))


def names() -> tuple[str, str]:
    """An account and a symbol no other test uses."""
    return unique_name("acct"), unique_name("WDO")


def order(acct: str, sym: str, decision: str, ts: int, **kw) -> Order:
    """A market buy of 2 by default (price and stop price NaN)."""
    return Order(client_order_id(decision), acct, sym, ts, kw.pop("side", BUY), kw.pop("quantity", 2), **kw)


def event(o: Order, ts: int, status: str, filled: int, avg: float = NAN, reason: str = "") -> OrderEvent:
    return OrderEvent(o.client_order_id, o.account, o.symbol, ts, status, filled, o.quantity - filled
                      if status not in (FILLED, CANCELLED, REJECTED, EXPIRED) else 0, avg, reason)


def fill(o: Order, n: int, ts: int, qty: int, price: float, fees: float = 1.25) -> Fill:
    return Fill(f"{o.client_order_id}#{n}", o.client_order_id, o.account, o.symbol, ts, o.side, qty, price,
                TAKER, fees, o.decision_id)


def stream_of(client, stream: str, acct: str) -> list[tuple[str, dict]]:
    return [(i.decode(), d) for i, d in ((i, orjson.loads(f[b"json"])) for i, f in client.xrange(stream))
            if d["account"] == acct]


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


def test_orders_and_events_round_trip_field_by_field_with_nan(store, client):
    acct, sym = names()
    market = order(acct, sym, f"{sym}-1", T0)  # price and stop price NaN
    limit = Order(client_order_id(f"{sym}-2", "tp"), acct, sym, T0 + SEC, SELL, 3, LIMIT, 5401.5, NAN, IOC,
                  f"{sym}-2", True, "oco-1")
    stop = Order(client_order_id(f"{sym}-2", "sl"), acct, sym, T0 + SEC, SELL, 3, STOP_LIMIT, 5398.0, 5398.5,
                 decision_id=f"{sym}-2", reduce_only=True, oco_group="oco-1")
    for o in (market, limit, stop):
        store.store_order(o)
    e_sub = event(market, T0 + 1, SUBMITTED, 0)  # avg fill price NaN before the first fill
    e_part = OrderEvent(market.client_order_id, acct, sym, T0 + 2 * MS, PARTIALLY_FILLED, 1, 1, 5400.5)
    e_acc = event(limit, T0 + SEC + 1, ACCEPTED, 0)
    for e in (e_sub, e_part, e_acc):
        store.store_order_event(e)
    assert store.flush(10)

    loaded = store.load_open_orders(acct)
    # oldest order first; ties (limit and stop at T0 + 1 s) by client order id: ":sl" < ":tp"
    assert [o.client_order_id for o, _e in loaded] == [market.client_order_id, stop.client_order_id,
                                                      limit.client_order_id]
    (o1, ev1), (o2, ev2), (o3, ev3) = loaded
    assert same(o1, market) and same(ev1, e_part)  # the partial fill is the latest event
    assert same(o2, stop) and ev2 is None  # no event stored yet
    assert same(o3, limit) and same(ev3, e_acc)
    assert math.isnan(o1.price) and math.isnan(o1.stop_price) and math.isnan(o3.stop_price)

    # NaN is JSON null in Valkey, and the latest event is the one the partial fill made
    raw_order = orjson.loads(client.hget(order_key(market.client_order_id), "order"))
    assert raw_order["price"] is None and raw_order["stop_price"] is None and raw_order["kind"] == "order"
    assert store.order(market.client_order_id) == {
        "order": {"client_order_id": f"{sym}-1:entry", "account": acct, "symbol": sym, "ts_event": T0, "side": BUY,
                  "quantity": 2, "order_type": MARKET, "price": None, "stop_price": None, "time_in_force": "DAY",
                  "decision_id": "", "reduce_only": False, "oco_group": "", "kind": "order"},
        "event": {"client_order_id": f"{sym}-1:entry", "account": acct, "symbol": sym, "ts_event": T0 + 2 * MS,
                  "status": PARTIALLY_FILLED, "filled_qty": 1, "leaves_qty": 1, "avg_fill_price": 5400.5,
                  "reason": "", "kind": "order_event"},
        "fills": []}
    # both events on the stream, in order; SUBMITTED's avg fill price is null there
    assert [(d["status"], d["avg_fill_price"]) for _i, d in stream_of(client, ORDERS_STREAM, acct)] == [
        (SUBMITTED, None), (PARTIALLY_FILLED, 5400.5), (ACCEPTED, None)]
    assert 0 < client.ttl(order_key(market.client_order_id)) <= 7 * 86_400  # default TTL: 7 days
    assert client.ttl(open_orders_key(acct)) == -1
    assert store.order(unique_name("none:entry")) is None and store.order("has space") is None


def test_fill_round_trip_stream_ids_follow_event_time(store, client):
    acct, sym = names()
    o = order(acct, sym, f"{sym}-1", T0, quantity=3)
    f1 = fill(o, 1, T0 + 1_500_000, 1, 5400.5, 0.87)  # 1.5 ms after T0: stream ms T0_MS + 1
    f2 = fill(o, 2, T0 + 250_000, 1, 5401.0)  # event time steps back to ms T0_MS + 0: the id stays at + 1
    f3 = Fill(f"{o.client_order_id}#3", o.client_order_id, acct, sym, T0 + 7 * SEC, BUY, 1, 5399.5, MAKER, -0.1)
    store.store_order(o)
    for f in (f1, f2, f3):
        store.store_fill(f)
    assert store.flush(10)

    entries = store.fill_entries_since(T0, account=acct)
    assert [i for i, _f in entries] == [f"{T0_MS + 1}-0", f"{T0_MS + 1}-1", f"{T0_MS + 7000}-0"]
    assert all(same(a, b) for (_i, a), b in zip(entries, (f1, f2, f3))) and len(entries) == 3
    # by event time: ts_event >= T0 + 1 ms leaves out f2 (T0 + 0.25 ms) though its id sorts after f1's
    assert [f.fill_id for f in store.fills_since(T0 + MS, account=acct)] == [f1.fill_id, f3.fill_id]
    # by stream id: what came after f1's entry
    assert [f.fill_id for f in store.fills_since(f"{T0_MS + 1}-0", account=acct)] == [f2.fill_id, f3.fill_id]
    assert store.fills_since(f"{T0_MS + 7000}-0", account=acct) == []
    assert store.fills_since(T0, account=acct, symbol=unique_name("WIN")) == []
    # newest first (nobody else writes fills meanwhile)
    assert [f.fill_id for f in store.recent_fills(2)] == [f3.fill_id, f2.fill_id]
    assert store.recent_fills(0) == [] and store.recent_fills(True) == []

    rec = store.order(o.client_order_id)
    assert [f["fill_id"] for f in rec["fills"]] == [f2.fill_id, f1.fill_id, f3.fill_id]  # by event time
    assert rec["fills"][0] == {"fill_id": f2.fill_id, "client_order_id": o.client_order_id, "account": acct,
                               "symbol": sym, "ts_event": T0 + 250_000, "side": BUY, "quantity": 1, "price": 5401.0,
                               "liquidity": TAKER, "fees": 1.25, "decision_id": "", "kind": "fill"}


def test_a_transaction_stores_its_writes_together_when_the_block_ends(store, client):
    """What the execution actor relies on across a SIGKILL: a call's fills and the engine state
    after them reach Valkey together or not at all; nothing inside the block is sent before it ends."""
    acct, sym = names()
    o = order(acct, sym, f"{sym}-1", T0)
    f1 = fill(o, 1, T0 + SEC, 2, 5400.5)
    with store.transaction():
        store.store_order(o)
        store.store_fill(f1)
        store.store_position(Position(acct, sym, T0 + SEC, 2, 5400.5, 5400.5, 0.0, 0.0, 1.25))
        store.save_engine_state(acct, {"version": 1, "at": T0 + SEC})
        with store.transaction():  # nested: sent with the outer block
            store.store_order_event(event(o, T0 + SEC, FILLED, 2, 5400.5))
        assert store.flush(10)  # the writer has nothing yet
        assert store.fills_since(T0, account=acct) == [] and store.load_engine_state(acct) == {}
        assert client.get(position_key(acct, sym)) is None
    assert store.flush(10)
    assert [f.fill_id for f in store.fills_since(T0, account=acct)] == [f1.fill_id]
    assert store.load_engine_state(acct) == {"version": 1, "at": T0 + SEC}
    assert store.order(o.client_order_id)["event"]["status"] == FILLED
    assert store.load_positions(acct)[0].quantity == 2
    assert store.stats()["write_behind"]["written"] >= 1 and not store.stats()["write_behind"]["errors"]


# ---------------------------------------------------------------------------
# Idempotency and the open-orders index
# ---------------------------------------------------------------------------


def test_same_event_and_fill_twice_are_stored_once(store, client):
    acct, sym = names()
    o = order(acct, sym, f"{sym}-1", T0)
    e1, e2 = event(o, T0 + 1, SUBMITTED, 0), event(o, T0 + 2, ACCEPTED, 0)
    f1 = fill(o, 1, T0 + 3, 2, 5400.0)
    e3 = event(o, T0 + 3, FILLED, 2, 5400.0)
    for _ in range(2):
        store.store_order(o)
        for x in (e1, e2):
            store.store_order_event(x)
        store.store_fill(f1)
        store.store_order_event(e3)
    # the same (order, status, filled) with another time: a re-sent event, not a new one
    store.store_order_event(e1._replace(ts_event=T0 + 99))
    assert store.flush(10)
    assert [d["status"] for _i, d in stream_of(client, ORDERS_STREAM, acct)] == [SUBMITTED, ACCEPTED, FILLED]
    assert [d["fill_id"] for _i, d in stream_of(client, FILLS_STREAM, acct)] == [f1.fill_id]
    h = client.hgetall(order_key(o.client_order_id))
    # order, event, progress, terminal, three markers, one fill
    assert set(h) == {b"order", b"event", b"progress", b"terminal", b"ev:SUBMITTED:0", b"ev:ACCEPTED:0",
                      b"ev:FILLED:2", b"fill:" + f1.fill_id.encode()}
    assert h[b"progress"] == b"11" and h[b"terminal"] == b"1"  # FILLED at 2: 4 x 2 + 3
    # each marker holds its event's stream id
    assert [h[b"ev:" + s.encode()].decode() for s in ("SUBMITTED:0", "ACCEPTED:0", "FILLED:2")] == [
        i for i, _d in stream_of(client, ORDERS_STREAM, acct)]
    assert store.load_open_orders(acct) == []


@pytest.mark.parametrize("terminal", [FILLED, CANCELLED, REJECTED, EXPIRED])
def test_an_order_leaves_the_open_index_on_each_terminal_status(store, client, terminal):
    acct, sym = names()
    o = order(acct, sym, f"{sym}-1", T0, quantity=4)
    other = order(acct, sym, f"{sym}-2", T0 + 1)
    for x in (o, other):
        store.store_order(x)
    store.store_order_event(event(o, T0 + 10, SUBMITTED, 0))
    assert store.flush(10)
    assert set(client.smembers(open_orders_key(acct))) == {o.client_order_id.encode(), other.client_order_id.encode()}

    filled = 4 if terminal == FILLED else (0 if terminal == REJECTED else 1)
    if filled == 1:
        store.store_order_event(event(o, T0 + 20, PARTIALLY_FILLED, 1, 5400.0))
    end = event(o, T0 + 30, terminal, filled, 5400.0 if filled else NAN, "why" if terminal != FILLED else "")
    store.store_order_event(end)
    assert store.flush(10)
    assert [x.client_order_id for x, _e in store.load_open_orders(acct)] == [other.client_order_id]

    # replays cannot bring it back: the order again, an earlier event again, an earlier one never seen
    store.store_order(o)
    store.store_order_event(event(o, T0 + 10, SUBMITTED, 0))
    store.store_order_event(event(o, T0 + 11, ACCEPTED, 0))
    assert store.flush(10)
    assert [x.client_order_id for x, _e in store.load_open_orders(acct)] == [other.client_order_id]
    latest = trading_from_dict(orjson.loads(client.hget(order_key(o.client_order_id), "event")))
    assert same(latest, end)
    # the late ACCEPTED is on the stream all the same: it is an event that happened
    assert [d["status"] for _i, d in stream_of(client, ORDERS_STREAM, acct)][-1] == ACCEPTED


def test_a_late_event_does_not_move_an_open_order_back(store):
    acct, sym = names()
    o = order(acct, sym, f"{sym}-1", T0, quantity=5)
    store.store_order(o)
    part3 = event(o, T0 + 30, PARTIALLY_FILLED, 3, 5400.5)
    for e in (event(o, T0 + 10, SUBMITTED, 0), part3, event(o, T0 + 20, PARTIALLY_FILLED, 1, 5400.0),
              event(o, T0 + 15, ACCEPTED, 0)):
        store.store_order_event(e)
    assert store.flush(10)
    [(got, latest)] = store.load_open_orders(acct)
    # progress = 4 x filled + rank: PARTIALLY_FILLED 3 -> 14 beats PARTIALLY_FILLED 1 -> 6 and ACCEPTED 0 -> 1
    assert same(got, o) and same(latest, part3)


def test_an_event_before_its_order_and_an_expired_order(valkey_server, client):
    acct, sym = names()
    short = TradingStore(valkey_server[1], ttl=TradingTTL(order_s=1), **FAST_RECONNECT)
    try:
        o = order(acct, sym, f"{sym}-1", T0)
        store_ev = event(o, T0 + 1, ACCEPTED, 0)
        short.store_order_event(store_ev)  # no order stored: not indexed, nothing to rebuild it from
        assert short.flush(10) and set(client.smembers(open_orders_key(acct))) == set()
        short.store_order(o)  # the order comes after all: now it is open
        assert short.flush(10)
        [(got, ev)] = short.load_open_orders(acct)
        assert same(got, o) and same(ev, store_ev)
        # the order key expires (TTL 1 s); the index keeps the id until a read finds it gone
        wait_for(lambda: client.exists(order_key(o.client_order_id)) == 0, 5, 0.05, "the order key to expire")
        assert short.load_open_orders(acct) == []
        assert set(client.smembers(open_orders_key(acct))) == set()
    finally:
        short.close()


# ---------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------


def test_positions_per_account_latest_wins(store, client):
    a1, a2 = unique_name("acct"), unique_name("acct")
    wdo, win = unique_name("WDO"), unique_name("WIN")
    first = Position(a1, wdo, T0, 2, 5400.25, 5401.0, 0.0, 15.0, 2.5)  # (5401.0 - 5400.25) x 2 x R$10 = 15
    latest = Position(a1, wdo, T0 + SEC, 0, 0.0, 5402.0, 35.0, 0.0, 5.0)  # closed at 5402.0: 1.75 x 2 x 10 = 35
    p_win = Position(a1, win, T0, -1, 130_000.0, NAN, 0.0, 0.0, 0.5)  # no trade seen yet: last price NaN
    p_a2 = Position(a2, wdo, T0, 1, 5399.5, 5399.5, 0.0, 0.0, 1.0)
    for p in (first, p_win, p_a2, latest):
        store.store_position(p)
    assert store.flush(10)
    got = store.load_positions(a1)
    # by symbol: "WDO..." < "WIN..."
    assert len(got) == 2 and same(got[0], latest) and same(got[1], p_win) and math.isnan(got[1].last_price)
    assert got[0].net_pnl == 35.0 + 0.0 - 5.0
    [only] = store.load_positions(a2)
    assert same(only, p_a2)
    assert store.load_positions(unique_name("acct")) == []
    assert client.ttl(position_key(a1, wdo)) == -1  # no TTL by default
    assert set(client.smembers(positions_key(a1))) == {wdo.encode(), win.encode()}
    assert orjson.loads(client.get(position_key(a1, win)))["last_price"] is None


def test_ttls_come_from_the_config(valkey_server, client):
    acct, sym = names()
    s = TradingStore(valkey_server[1], ttl=TradingTTL(order_s=120, position_s=60), **FAST_RECONNECT)
    try:
        o = order(acct, sym, f"{sym}-1", T0)
        s.store_order(o)
        s.store_position(Position(acct, sym, T0, 1, 5400.0, 5400.0, 0.0, 0.0, 0.0))
        assert s.flush(10)
        assert 110 < client.ttl(order_key(o.client_order_id)) <= 120
        assert 50 < client.ttl(position_key(acct, sym)) <= 60
    finally:
        s.close()
    for bad in (TradingTTL(order_s=0), TradingTTL(position_s=-5), TradingTTL(order_s=1.5)):
        with pytest.raises(ValueError, match="ttl"):
            TradingStore(valkey_server[1], ttl=bad)
    with pytest.raises(ValueError, match="stream_maxlen"):
        TradingStore(valkey_server[1], stream_maxlen=0)


# ---------------------------------------------------------------------------
# Decision outcomes
# ---------------------------------------------------------------------------


def outcomes(acct: str, sym: str) -> tuple[DecisionOutcome, DecisionOutcome]:
    """Two parts of one decision: a long of 2 closed 1.5 ms after T0, then a short of 1 it opened later."""
    # 2 x (5002.0 - 5000.0) x R$10 = 40.00 gross, fees 4.40, net 35.60
    first = DecisionOutcome(acct, sym, f"{sym}-1", T0 + 1_500_000, T0, BUY, 2, 5000.0, 5002.0, 40.0, 4.4, 35.6,
                            f"{sym}-2")
    # -1 x (5001.0 - 5002.0) x R$10 = 10.00 gross, fees 2.20, net 7.80
    again = DecisionOutcome(acct, sym, f"{sym}-1", T0 + 7 * SEC, T0 + 2 * SEC, SELL, 1, 5002.0, 5001.0, 10.0, 2.2,
                            7.8, f"{sym}-3,{sym}-1")
    return first, again


def test_outcomes_are_stored_once_each_with_event_time_ids(own_valkey):
    srv = own_valkey()  # ids and counts of a stream nobody else writes
    acct, sym = names()
    first, again = outcomes(acct, sym)
    other = first._replace(account=unique_name("acct"))
    s = TradingStore(srv.url, **FAST_RECONNECT)
    try:
        for o in (first, again, other, first, again):  # the second time: a replayed chunk
            s.store_outcome(o)
        assert s.flush(10)
    finally:
        s.close()
    again_store = TradingStore(srv.url, ttl=TradingTTL(order_s=None), **FAST_RECONNECT)  # a restarted actor
    try:
        again_store.store_outcome(first)
        assert again_store.flush(10)
        # first: ms T0_MS + 1 (1.5 ms after T0); again: 7 s later; other, stored after it at 1.5 ms,
        # is raised to the stream's last ms
        entries = again_store.outcome_entries_since(T0)
        assert [i for i, _o in entries] == [f"{T0_MS + 1}-0", f"{T0_MS + 7000}-0", f"{T0_MS + 7000}-1"]
        assert all(same(a, b) for (_i, a), b in zip(entries, (first, again, other))) and len(entries) == 3
        assert [o.ts_open for o in again_store.outcomes_since(T0, account=acct)] == [T0, T0 + 2 * SEC]
        assert [o.account for o in again_store.outcomes_since(T0 + 2 * MS)] == [acct]  # only `again`, at 7 s
        assert again_store.outcomes_since(f"{T0_MS + 7000}-0") == [other]
        assert again_store.outcomes_since(T0, account=acct, symbol=unique_name("WIN")) == []
        with connect(srv.url) as c:
            assert c.xlen(OUTCOMES_STREAM) == 3
            key = outcome_key(acct, sym, f"{sym}-1", T0)
            assert key == f"hmarl:outcome:{acct}:{sym}:{sym}-1:{T0}"
            assert same(trading_from_dict(orjson.loads(c.get(key))), first)
            assert 7 * 86_400 - 10 < c.ttl(key) <= 7 * 86_400  # the orders' TTL (the first store's)
            c.xadd(OUTCOMES_STREAM, {"json": b"not json"}, id=f"{T0_MS + 8000}-0")
        assert len(again_store.outcomes_since(T0)) == 3
        assert again_store.stats()["bad_records"] == {"outcome": 1}
        assert again_store.outcomes_since("12") == [] and again_store.stats()["rejected"] == {"read: bad cursor": 1}
        later = again._replace(ts_open=T0 + 8 * SEC, ts_event=T0 + 9 * SEC)
        again_store.store_outcome(later)  # a new one, stored by the store without TTLs: kept
        assert again_store.flush(10)
        assert client_ttl(srv.url, outcome_key(acct, sym, f"{sym}-1", T0 + 8 * SEC)) == -1
    finally:
        again_store.close()


def client_ttl(url: str, key: str) -> int:
    with connect(url) as c:
        return c.ttl(key)


def test_bad_outcomes_are_counted_and_rejected_never_raised(store, client):
    acct, sym = names()
    good, _ = outcomes(acct, sym)
    cases = [
        (None, "wrong_type"),
        (Fill("f#1", "c", acct, sym, T0, BUY, 1, 1.0, TAKER, 0.0), "wrong_type"),
        (good._replace(quantity=0), "bad_quantity"),
        (good._replace(quantity=True), "bad_quantity"),
        (good._replace(side="LONG"), "bad_side"),
        (good._replace(entry_price=NAN), "bad_entry_price"),
        (good._replace(exit_price=0.0), "bad_exit_price"),
        (good._replace(gross_pnl=math.inf), "bad_gross_pnl"),
        (good._replace(fees=NAN), "bad_fees"),
        (good._replace(net_pnl=NAN), "bad_net_pnl"),
        (good._replace(decision_id=""), "bad_decision_id"),
        (good._replace(decision_id="two words"), "bad_decision_id"),
        (good._replace(ts_open=-1), "bad_ts_open"),
        (good._replace(ts_event=1.5), "bad_ts_event"),
        (good._replace(account="a:b"), "bad_account"),
        (good._replace(closed_by="\ud800"), "not_json"),
    ]
    for o, _reason in cases:
        assert store.store_outcome(o) is None
    expected: dict[str, int] = {}
    for _o, reason in cases:
        expected[f"outcome: {reason}"] = expected.get(f"outcome: {reason}", 0) + 1
    assert store.stats()["rejected"] == expected
    assert store.flush(10) and store.stats()["write_behind"]["submitted"] == 0  # nothing was queued
    assert store.outcomes_since(T0, account=acct) == []
    with pytest.raises(BadKeyPart, match="bad ts_open"):
        outcome_key(acct, sym, "d", -1)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def test_bad_input_is_counted_and_rejected_never_raised(store, client):
    acct, sym = names()
    good = order(acct, sym, f"{sym}-1", T0)
    ev = event(good, T0, SUBMITTED, 0)
    fl = fill(good, 1, T0, 1, 5400.0)
    pos = Position(acct, sym, T0, 1, 5400.0, 5400.0, 0.0, 0.0, 0.0)
    cases = [
        (store.store_order, None, "order: not_an_order"),
        (store.store_order, good._replace(quantity=0), "order: bad_quantity"),
        (store.store_order, good._replace(quantity=-2), "order: bad_quantity"),
        (store.store_order, good._replace(order_type=LIMIT, price=NAN), "order: bad_price"),
        (store.store_order, good._replace(client_order_id=""), "order: bad_client_order_id"),
        (store.store_order, good._replace(client_order_id="two words"), "order: bad_client_order_id"),
        (store.store_order, good._replace(client_order_id="x" * 201), "order: bad_client_order_id"),
        (store.store_order, good._replace(client_order_id="id\n"), "order: bad_client_order_id"),
        (store.store_order, good._replace(account="a:b"), "order: bad_account"),
        (store.store_order, good._replace(symbol="wdoz26"), "order: bad_symbol"),
        (store.store_order, good._replace(ts_event=-1), "order: bad_ts_event"),
        (store.store_order, good._replace(price=math.inf), "order: bad_price"),
        (store.store_order, good._replace(decision_id="\ud800"), "order: not_json"),
        (store.store_order_event, good, "order event: wrong_type"),
        (store.store_order_event, ev._replace(status="DONE"), "order event: bad_status"),
        (store.store_order_event, ev._replace(filled_qty=-1), "order event: bad_quantity"),
        (store.store_order_event, ev._replace(filled_qty=2**64), "order event: bad_filled_qty"),
        (store.store_order_event, ev._replace(client_order_id=""), "order event: bad_client_order_id"),
        (store.store_order_event, ev._replace(ts_event=1.5), "order event: bad_ts_event"),
        (store.store_fill, {"fill_id": "x"}, "fill: wrong_type"),
        (store.store_fill, fl._replace(price=NAN), "fill: bad_price"),
        (store.store_fill, fl._replace(quantity=0), "fill: bad_quantity"),
        (store.store_fill, fl._replace(quantity=True), "fill: bad_quantity"),
        (store.store_fill, fl._replace(side="LONG"), "fill: bad_side"),
        (store.store_fill, fl._replace(liquidity="x"), "fill: bad_liquidity"),
        (store.store_fill, fl._replace(fees=NAN), "fill: bad_fees"),
        (store.store_fill, fl._replace(fill_id=""), "fill: bad_fill_id"),
        (store.store_position, pos._replace(quantity=1.0), "position: bad_quantity"),
        (store.store_position, pos._replace(unrealized_pnl=-math.inf), "position: bad_unrealized_pnl"),
        (store.store_position, RiskEvent(acct, sym, T0, "denied", "ACTIVE", "x"), "position: wrong_type"),
    ]
    for method, arg, _reason in cases:
        assert method(arg) is None
    expected: dict[str, int] = {}
    for _m, _a, reason in cases:
        expected[reason] = expected.get(reason, 0) + 1
    assert store.stats()["rejected"] == expected
    assert store.flush(10) and store.stats()["write_behind"]["submitted"] == 0  # nothing was queued
    assert client.exists(order_key(good.client_order_id), positions_key(acct), open_orders_key(acct)) == 0

    # reads with a bad name or cursor: nothing can be stored under it
    assert store.load_open_orders("a b") == [] and store.load_positions(None) == []
    for cursor in (-1, "12", 1.5, True, "1-2-3", "\u0661-\u0660", "1" * 20 + "-0"):
        assert store.fills_since(cursor) == []
    assert store.stats()["rejected"]["read: bad account"] == 2
    assert store.stats()["rejected"]["read: bad cursor"] == 7


def test_records_that_do_not_decode_are_skipped_and_counted(store, client):
    acct, sym = names()
    o = order(acct, sym, f"{sym}-1", T0)
    store.store_order(o)
    store.store_position(Position(acct, sym, T0, 1, 5400.0, 5400.0, 0.0, 0.0, 0.0))
    assert store.flush(10)
    other = unique_name("WIN")
    client.set(position_key(acct, other), b"not json")
    client.sadd(positions_key(acct), other, "bad symbol")
    client.sadd(open_orders_key(acct), "has space")
    client.hset(order_key(o.client_order_id), "event", orjson.dumps({"kind": "order_event", "status": "X"}))
    assert [p.symbol for p in store.load_positions(acct)] == [sym]
    [(got, ev)] = store.load_open_orders(acct)
    assert same(got, o) and ev is None
    assert store.stats()["bad_records"] == {"position": 1, "key part": 2, "order event": 1}
    # a key of another type: it cannot be read, which is not "nothing there"
    taken = unique_name("acct")
    client.set(open_orders_key(taken), b"x")
    assert store.load_open_orders(taken) is None and store.stats()["read_errors"] == {"open orders": 1}


def test_trading_from_dict():
    o = Order("d-1:entry", "acct", "WDOZ26", T0, BUY, 1)
    d = orjson.loads(orjson.dumps({**o._asdict(), "kind": "order"}))
    assert same(trading_from_dict(d), o)
    short = {k: v for k, v in d.items() if k not in ("oco_group", "reduce_only", "stop_price")}
    assert same(trading_from_dict(short), o)  # missing fields with defaults take them
    for bad in (None, [], {}, {"kind": "tick"}, {**d, "quantity": "1"}, {**d, "reduce_only": 1},
                {**d, "price": "nan"}, {k: v for k, v in d.items() if k != "symbol"}):
        with pytest.raises(ValueError):
            trading_from_dict(bad)
    with pytest.raises(BadKeyPart, match="bad account"):
        position_key("no:colons", "WDOZ26")
    assert order_key("WDOZ26-7:entry") == "hmarl:order:WDOZ26-7:entry"
    assert position_key("acct", "WDOZ26") == "hmarl:position:acct:WDOZ26"


# ---------------------------------------------------------------------------
# Restart, outage, unreachable
# ---------------------------------------------------------------------------


def test_a_restarted_store_rebuilds_and_a_resent_decision_adds_nothing(valkey_server, client):
    """What the execution actor does after a restart: load its open orders and positions, then
    (a decision re-sent by the coordinator) store the same order and events again."""
    acct, sym = names()
    first = TradingStore(valkey_server[1], **FAST_RECONNECT)
    o1, o2 = order(acct, sym, f"{sym}-1", T0), order(acct, sym, f"{sym}-2", T0 + SEC, order_type=LIMIT,
                                                       price=5399.5)
    pos = Position(acct, sym, T0 + 2, 2, 5400.0, 5400.0, 0.0, 0.0, 1.7)
    f1 = fill(o1, 1, T0 + 2, 2, 5400.0, 1.7)
    first.store_order(o1)
    first.store_order_event(event(o1, T0 + 1, SUBMITTED, 0))
    first.store_fill(f1)
    first.store_order_event(event(o1, T0 + 2, FILLED, 2, 5400.0))
    first.store_position(pos)
    first.store_order(o2)
    first.store_order_event(event(o2, T0 + SEC + 1, ACCEPTED, 0))
    # commit waits only while the writer is connected: a store made a moment ago may not be yet
    wait_for(lambda: first.stats()["write_behind"]["connected"], 10, 0.01, "the writer to connect")
    assert first.commit(5)
    first.close()  # the actor dies

    again = TradingStore(valkey_server[1], **FAST_RECONNECT)
    wait_for(lambda: again.stats()["write_behind"]["connected"], 10, 0.01, "the writer to connect")
    try:
        [(o, ev)] = again.load_open_orders(acct)
        assert same(o, o2) and ev.status == ACCEPTED
        [p] = again.load_positions(acct)
        assert same(p, pos)
        assert [f.fill_id for f in again.fills_since(T0, account=acct)] == [f1.fill_id]
        n_orders, n_fills = len(stream_of(client, ORDERS_STREAM, acct)), len(stream_of(client, FILLS_STREAM, acct))
        again.store_order(o1)
        again.store_order_event(event(o1, T0 + 5, SUBMITTED, 0))
        again.store_fill(f1)
        assert again.commit(5)
        assert (len(stream_of(client, ORDERS_STREAM, acct)), len(stream_of(client, FILLS_STREAM, acct))) == (
            n_orders, n_fills) == (3, 1)
        assert [x.client_order_id for x, _e in again.load_open_orders(acct)] == [o2.client_order_id]
    finally:
        again.close()


def test_reads_return_none_when_valkey_is_unreachable(own_valkey):
    srv = own_valkey()
    store = TradingStore(srv.url, **FAST_RECONNECT)
    acct, sym = names()
    try:
        store.store_order(order(acct, sym, f"{sym}-1", T0))
        assert store.flush(10) and len(store.load_open_orders(acct)) == 1
        srv.stop()
        t = time.perf_counter()
        assert store.load_open_orders(acct) is None  # unreachable, not "no open orders"
        assert store.load_positions(acct) is None
        assert store.fills_since(T0) is None and store.fill_entries_since("0-0") is None
        assert store.recent_fills(5) is None and store.order(f"{sym}-1:entry") is None
        assert store.outcomes_since(T0) is None
        assert time.perf_counter() - t < 10
        assert store.stats()["read_errors"] == {"open orders": 1, "positions": 1, "fills": 3, "order": 1,
                                                "outcomes": 1}
    finally:
        store.close(0.5)

    nobody = TradingStore(f"redis://127.0.0.1:{free_port('127.0.0.1')}/0", **FAST_RECONNECT)
    try:
        assert nobody.load_positions("acct") is None and nobody.load_open_orders("acct") is None
        assert nobody.commit(0.5) is False
    finally:
        nobody.close(0.2)


def test_writes_during_an_outage_are_flushed_after_it(own_valkey):
    srv = own_valkey()
    url = srv.url
    store = TradingStore(url, chunk=7, **FAST_RECONNECT)  # small chunks: an outage cuts between them
    acct, sym = names()
    orders = [order(acct, sym, f"{sym}-{k}", T0 + k * SEC) for k in range(1, 41)]
    slowest = 0.0

    def write(k: int, o: Order) -> None:
        """Order k filled at once: the order, two events, a fill, the position after it (2k contracts)."""
        nonlocal slowest
        t = time.perf_counter()
        store.store_order(o)
        store.store_order_event(event(o, o.ts_event + 1, SUBMITTED, 0))
        store.store_fill(fill(o, 1, o.ts_event + 2, 2, 5400.0))
        store.store_order_event(event(o, o.ts_event + 2, FILLED, 2, 5400.0))
        store.store_position(Position(acct, sym, o.ts_event + 2, 2 * k, 5400.0, 5400.0, 0.0, 0.0, 1.0 * k))
        slowest = max(slowest, time.perf_counter() - t)

    try:
        for k, o in enumerate(orders[:20], 1):
            write(k, o)
        srv.stop()  # no flush first: a chunk may be cut mid-way and re-sent
        wait_for(lambda: not store.stats()["write_behind"]["connected"], 10, 0.01, "the store to see the outage")
        for k, o in enumerate(orders[20:], 21):
            write(k, o)
        assert store.commit(5) is False  # does not wait out the outage
        assert slowest < 0.05, f"a write blocked for {slowest * 1000:.1f} ms"
        assert store.stats()["write_behind"]["queued"] > 0

        srv.start()
        assert store.flush(30)
        wb = store.stats()["write_behind"]
        assert (wb["reconnects"] > 0, wb["dropped"], wb["errors"]) == (True, 0, {})
        with connect(url) as c:
            # 40 orders x (SUBMITTED, FILLED) and 40 fills, each once, however often a chunk went out
            assert (c.xlen(ORDERS_STREAM), c.xlen(FILLS_STREAM), c.exists(open_orders_key(acct))) == (80, 40, 0)
            in_order = [d["client_order_id"] for _i, d in stream_of(c, FILLS_STREAM, acct)]
        assert in_order == [o.client_order_id for o in orders]
        [p] = store.load_positions(acct)
        assert same(p, Position(acct, sym, T0 + 40 * SEC + 2, 80, 5400.0, 5400.0, 0.0, 0.0, 40.0))
    finally:
        store.close(1)
