"""Paper trading end to end in the real graph, on the embedded defaults (execution on): a minute
of event time of simulated WDO with the HMARL decisions made into orders. Orders, fills and the
position reach Valkey and ZeroMQ 5561; the day's P&L equals a recomputation from the fills
stream; a SIGKILL of the execution actor mid-run sends no order twice and loses no fill; the kill
switch halts new orders, holds across a SIGKILL, and the flatten closes the position."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import uuid
from collections import Counter

import orjson
import pytest

from pipelines.execution.config import ExecutionConfig
from pipelines.model.instruments import point_value_for
from pipelines.persistence.connection import connect
from pipelines.persistence.risk_store import read_state, send_command
from pipelines.persistence.trading_store import ORDERS_STREAM, TradingStore
from tests.helpers import FAST_RECONNECT, ZmqCollector, graph_for, make_cfg, ping_new, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

S = 1_000_000_000


def test_a_minute_of_paper_trading_with_a_crash_a_halt_and_a_flatten(ray_session, valkey_server, tmp_path,
                                                                   model_dir):
    import ray

    _, url = valkey_server
    account = f"e{uuid.uuid4().hex[:12]}"
    cfg = make_cfg(tmp_path, features={"enabled": True},
                   hmarl={"enabled": True, "model_dir": str(model_dir), "horizon_s": 5, "decision_every_ms": 250,
                          "threshold": 0.05},
                   simulator={"rate": 2000, "speed": 3})
    cfg = dataclasses.replace(cfg, execution=dataclasses.replace(ExecutionConfig(), account=account),
                              risk=dataclasses.replace(cfg.risk, account=account))
    assert cfg.execution.enabled  # the default
    (sym,) = cfg.symbols
    g = graph_for(cfg, url)
    client = connect(url)
    store = TradingStore(url, **FAST_RECONNECT)
    sub = ZmqCollector(g.zmq_endpoints["decision"], prefix=b"")
    ex = g.handle(f"execution:{account}")

    def stats() -> dict:
        return ray.get(ex.stats.remote(), timeout=10)

    try:
        first = wait_for(lambda: (s := stats())["counts"].get("fills", 0) >= 2 and s, timeout=60,
                         what="two fills of the execution actor")
        start_ns = first["now"]
        # SIGKILL mid-run; Ray restarts it, it continues from Valkey and the feed's resend window
        info = ray.get(ex.ping.remote(), timeout=10)
        os.kill(info["pid"], signal.SIGKILL)
        wait_for(lambda: ping_new(ex, info["incarnation"]), timeout=60, what="the restarted execution actor")
        after = wait_for(lambda: (s := stats())["restored"] and s["counts"].get("fills", 0) > first["counts"]["fills"]
                         and s, timeout=60, retry_on=(ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError),
                         what="a fill after the restart")
        assert after["restore_error"] is None
        # the kill switch: halted, decisions keep coming and are denied, no order is sent
        wait_for(lambda: stats()["now"] - start_ns >= 45 * S, timeout=60, what="45 s of event time")
        t = time.monotonic()
        cid = send_command(client, account, "halt", "tester", "e2e")
        wait_for(lambda: (read_state(client, account) or {}).get("command_cursor") == cid, timeout=10, every=0.01,
                 what="the halt applied")
        halt_ack_s = time.monotonic() - t
        halted = stats()
        assert halted["trading_state"] == "HALTED"
        wait_for(lambda: stats()["decisions"] >= halted["decisions"] + 4, timeout=30, what="decisions while halted")
        assert stats()["counts"]["orders"] == halted["counts"]["orders"]  # only cancels pass
        # the kill switch holds across a SIGKILL of the actor that holds it
        info = ray.get(ex.ping.remote(), timeout=10)
        os.kill(info["pid"], signal.SIGKILL)
        wait_for(lambda: ping_new(ex, info["incarnation"]), timeout=60, what="the execution actor restarted again")
        again = stats()
        assert again["trading_state"] == "HALTED" and again["counts"]["orders"] == halted["counts"]["orders"]
        # flatten: every working order cancelled, the position closed at market
        send_command(client, account, "flatten", "tester", "e2e")
        wait_for(lambda: not (s := stats())["positions"] and not s["working_orders"] and s, timeout=30,
                 what="a flat account after the flatten")
        wait_for(lambda: stats()["now"] - start_ns >= 60 * S, timeout=60, what="a minute of event time")
        final = g.shutdown()
        fills = store.fills_since(0, account=account)
        (position,) = [p for p in store.load_positions(account) if p.symbol == sym]
        events = [orjson.loads(f[b"json"]) for _i, f in client.xrange(ORDERS_STREAM)]
    finally:
        sub.close()
        if g.actors:
            g.shutdown()
        store.close()
        client.close()
    ex_final = final[f"execution:{account}"]
    print(f"halt acknowledged {halt_ack_s * 1000:.0f} ms after it was sent; {len(fills)} fills")

    # No order sent twice, no fill lost: each order submitted once, each fill stored once, and
    # the fills in Valkey are the engine's (its counts survive the restart in its saved state).
    submitted = Counter(e["client_order_id"] for e in events if e["account"] == account and e["status"] == "SUBMITTED")
    assert submitted and max(submitted.values()) == 1
    assert len(submitted) == ex_final["counts"]["orders"]
    assert len({f.fill_id for f in fills}) == len(fills) == ex_final["counts"]["fills"]
    assert {f.client_order_id for f in fills} <= set(submitted)
    # Flat at the end: the day's gross P&L is what the sells brought in minus what the buys cost,
    # in R$ (WDO: R$10 per point), and the net takes every fill's B3 fees off.
    pv = point_value_for(sym)
    assert sum(f.quantity if f.side == "BUY" else -f.quantity for f in fills) == 0 == position.quantity
    gross = sum((f.price if f.side == "SELL" else -f.price) * f.quantity for f in fills) * pv
    fees = sum(f.fees for f in fills)
    assert position.realized_pnl == pytest.approx(gross, abs=1e-6)
    assert position.fees == pytest.approx(fees, abs=1e-6)
    day = ex_final["account_summary"]
    assert day["day_pnl_net"] == pytest.approx(gross - fees, abs=1e-6)
    assert ex_final["trading_state"] == "HALTED"
    # ZeroMQ 5561 carried them beside the decisions
    topics = Counter(t.split(b".", 1)[0] for t, _ in sub.items)
    assert topics[b"decision"] and topics[b"order"] and topics[b"fill"] and topics[b"position"]
    zmq_fills = {m["fill_id"] for t, m in sub.items if t.startswith(b"fill.") and m["account"] == account}
    assert zmq_fills and zmq_fills <= {f.fill_id for f in fills}
