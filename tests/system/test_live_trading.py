"""Live trading end to end in the real graph, on the native fake ProfitDLL: one DLL host
(scripts/feed_bridge.py --source profitdll --routing, a child process, as on the Windows node)
gives the market data (``feed.source: bridge``) and routes the orders
(``execution.venue: profitdll``, ``routing="live"`` as ``launch.py --live`` sets it).

Decision -> risk -> execution actor -> host -> fake DLL -> order callbacks -> fills -> position ->
Valkey and ZeroMQ, compared with the fake broker's own log (its fills, written before each
callback) and its position (GetPositionV2 through the host). The scripted broker book is fixed
(WDOZ26 bid 5399.5 x 3 / ask 5400.0 x 2, a level every tick, where the fake's market data
trades): market orders fill there.
"""

from __future__ import annotations

import dataclasses
import uuid

import orjson
import pytest

from actors.wiring import MarketDataGraph
from pipelines.config import config_from_dict
from pipelines.execution.config import ProfitDLLVenueConfig
from pipelines.persistence.connection import connect
from pipelines.persistence.risk_store import send_command
from pipelines.persistence.trading_store import ORDERS_STREAM, TradingStore
from tests.order_host import ACCOUNT, ROUTING_PASSWORD, SYMBOL, TOKEN, broker_rows
from tests.helpers import EPHEMERAL_PORTS, FAST_RECONNECT, ZmqCollector, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def live_cfg(tmp_path, host, account: str, model_dir):
    cfg = config_from_dict({
        "namespace": f"t{uuid.uuid4().hex[:8]}",
        "symbols": [SYMBOL],
        "feed": {"source": "bridge", "batch_max_ms": 5,
                 "bridge": {"pub": host.info["pub"], "rep": host.info["rep"]}},
        "zmq": EPHEMERAL_PORTS,
        "recorder": {"enabled": False},
        "supervisor": {"ping_timeout_s": 5.0},
        "features": {"enabled": True},
        "hmarl": {"enabled": True, "model_dir": str(model_dir), "horizon_s": 5, "decision_every_ms": 250,
                  "threshold": 0.05},
    })
    ex = cfg.execution
    ex = dataclasses.replace(ex, account=account, venue="profitdll",
                             # the fake prints auction trades now and then: no 30 s pause after each
                             policy=dataclasses.replace(ex.policy, style="market", auction_quiet_s=0),
                             profitdll=ProfitDLLVenueConfig(orders=host.info["orders"], updates=host.info["order_pub"],
                                                            broker_account=ACCOUNT))
    # every round trip on the fixed broker book loses the spread: no cooldown after three of them
    return dataclasses.replace(cfg, execution=ex,
                               risk=dataclasses.replace(cfg.risk, account=account, max_consecutive_losses=0))


def test_decisions_trade_through_the_dll_host_into_valkey_and_zeromq(ray_session, valkey_server, dll_host, tmp_path,
                                                                     model_dir):
    import ray

    _, url = valkey_server
    account = f"live{uuid.uuid4().hex[:10]}"
    sent = tmp_path / "sent.log"
    # the broker's book where the fake's WDO market data trades (around 5400.0: its center tick 10800)
    host = dll_host.host("host", "--routing", fake={"sent_log": sent, "broker_state": tmp_path / "broker.state",
                                                    "rate": 1500, "events": 0, "start": "2025-08-04 10:00:00",
                                                    "broker_book": f"{SYMBOL}:5399.5x3/5400.0x2"})
    cfg = live_cfg(tmp_path, host, account, model_dir)
    g = MarketDataGraph(cfg, url, routing="live")
    g.start()
    store = TradingStore(url, **FAST_RECONNECT)
    client = connect(url)
    sub = ZmqCollector(g.zmq_endpoints["decision"], prefix=b"")
    ex = g.handle(f"execution:{account}")
    try:
        first = ray.get(ex.stats.remote(), timeout=10)
        assert first["routing"] == "live" and first["venue_error"] is None
        assert first["trading_state"] == "ACTIVE", first["risk_reason"]
        # the subscriber is connected once it has seen a message (ZeroMQ drops what a SUB missed while
        # joining): from then on every fill published must reach it
        wait_for(lambda: sub.items, 30, 0.05, "a first message on ZeroMQ 5561")

        def stats() -> dict:
            return ray.get(ex.stats.remote(), timeout=10)

        wait_for(lambda: stats()["counts"].get("fills", 0) >= 1, 90, 0.2, lambda: f"a first fill; {stats()}")
        # How many more trades the model's decisions make is the model's business: the kill switch
        # makes one for sure (a flatten closes the position at the broker), and a flat account
        # waits for its next entry.
        now = stats()
        if now["positions"]:
            send_command(client, account, "flatten", "tester", "live e2e")
        wait_for(lambda: stats()["counts"].get("fills", 0) > now["counts"]["fills"], 90, 0.2,
                 lambda: f"a fill after ZeroMQ joined; {stats()}")
        final = g.shutdown()[f"execution:{account}"]
        fills = store.fills_since(0, account=account)
        events = [orjson.loads(f[b"json"]) for _i, f in client.xrange(ORDERS_STREAM)]
        orders = {e["client_order_id"]: store.order(e["client_order_id"]) for e in events if e["account"] == account}
        (position,) = [p for p in store.load_positions(account) if p.symbol == SYMBOL]
        broker = dll_host.ask(dll_host.client(host), "positions", {"symbols": [SYMBOL]})["positions"][SYMBOL]
    finally:
        sub.close()
        if g.actors:
            g.shutdown()
        store.close()
    rows = broker_rows(sent)
    sends = [r for r in rows if r["kind"] == "send_order"]
    logged_fills = [r for r in rows if r["kind"] == "fill"]
    # Every order the engine sent reached the DLL once, and only those.
    submitted = [e for e in events if e["account"] == account and e["status"] == "SUBMITTED"]
    assert len(sends) == len(submitted) == final["counts"]["orders"]
    ours = [orders[e["client_order_id"]]["order"] for e in submitted]
    # market orders, struct version 2: type 1, side 1 buy / 2 sell, price -1 (docs §4.2)
    assert [(r["ticker"], r["side"], r["type"], int(r["qty"]), float(r["price"]), int(r["version"])) for r in sends] == [
        (o["symbol"], {"BUY": "1", "SELL": "2"}[o["side"]], "1", o["quantity"], -1.0, 2) for o in ours]
    # Each broker fill is one fill in Valkey, in order, with its quantity and price (the derived fills
    # of the cumulative updates), and the fills published on ZeroMQ are the same.
    assert [(f.quantity, f.price) for f in fills] == [(int(r["qty"]), float(r["price"])) for r in logged_fills]
    assert [{"1": "BUY", "2": "SELL"}[r["side"]] for r in logged_fills] == [f.side for f in fills]
    published = [m["fill_id"] for topic, m in sub.items if topic.startswith(b"fill.")]
    ids = [f.fill_id for f in fills]
    assert published and published == ids[ids.index(published[0]):]
    # The position in Valkey is the broker's.
    signed = sum(f.quantity if f.side == "BUY" else -f.quantity for f in fills)
    assert position.quantity == signed == broker["quantity"]
    if signed:
        assert position.avg_price == pytest.approx(broker["avg_price"])
    # No credential anywhere: the test's files and replies, and the account's Valkey records.
    dll_host.assert_no_secrets()
    blobs = [orjson.dumps(events), orjson.dumps([f._asdict() for f in fills]),
             client.get(f"hmarl:execution:{account}") or b"", b" ".join(client.keys("*"))]
    assert not [b for b in blobs if ROUTING_PASSWORD.encode() in b or TOKEN.encode() in b]
