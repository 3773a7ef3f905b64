"""HMARL in the real graph: decisions on ZeroMQ 5561 and in Valkey, weights moved by
realized outcomes, and an agent SIGKILLed mid-stream that returns with its learned state."""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest

from pipelines.hmarl.store import HmarlStore
from tests.test_pipeline_ray import TickCollector, _ping_new, graph_for, make_cfg, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NS_PER_S = 1_000_000_000
START = "2026-11-23T10:00:00-03:00"


def hmarl_cfg(model_dir, **kw):
    # Event time runs 10x wall time, so 5 s horizons resolve within seconds of the test.
    return {"enabled": True, "model_dir": str(model_dir), "horizon_s": 5, "decision_every_ms": 500,
            "signal_ttl_s": 5, **kw}


def test_decisions_flow_to_zeromq_and_valkey_and_weights_learn(ray_session, valkey_server, tmp_path, model_dir):
    """Two symbols, a WDO and a WIN contract: each gets its own pipeline of actors and decisions."""
    import ray

    _, url = valkey_server
    cfg = make_cfg(tmp_path, features={"enabled": True}, hmarl=hmarl_cfg(model_dir),
                   simulator={"rate": 300, "speed": 10}, extra_symbols=("WINZ26",))
    sym, other = cfg.symbols
    g = graph_for(cfg, url)
    sub = None
    try:
        sub = TickCollector(g.zmq_endpoints["decision"], prefix=b"decision.")
        coord = g.handle(f"coordinator:{sym}")
        wait_for(lambda: ray.get(coord.stats.remote())["decisions"] > 30 and len(sub.items) > 10, timeout=90,
                 what="decisions")
        wait_for(lambda: ray.get(g.handle(f"coordinator:{other}").stats.remote())["decisions"] > 10, timeout=60,
                 what="decisions on the second symbol")
        wait_for(lambda: ray.get(coord.stats.remote()).get("feedback_applied", 0) > 20, timeout=60,
                 what="realized outcomes to reach the coordinator")
        weights = ray.get(coord.weights.remote())
        stats = g.stats()
        final = g.shutdown()
    finally:
        if sub is not None:
            sub.close()
        if g.actors:
            g.shutdown()
    # Initial weights: ML 0.40, the four agents share 0.60. Feedback (and nothing else) moved them.
    initial = {"ml": 0.40, "order_flow": 0.15, "liquidity": 0.15, "tape": 0.15, "footprint": 0.15}
    assert set(weights) == set(initial) and sum(weights.values()) == pytest.approx(1.0)
    assert max(abs(weights[v] - initial[v]) for v in initial) > 0.01
    assert min(weights.values()) >= 0.02 - 1e-12  # the floor
    assert stats[f"ml:{sym}"]["model"] == "sim-test"
    perf = stats[f"feedback:{sym}"]["performance"]
    assert any((perf.get(a) or {}).get("count", 0) > 0 for a in ("order_flow", "liquidity", "tape", "footprint"))
    assert final[f"coordinator:{sym}"]["decisions"] > 30
    assert {f"{kind}:{s}" for s in (sym, other) for kind in ("coordinator", "feedback", "ml", "features")} <= set(stats)
    assert final[f"coordinator:{other}"]["decisions"] > 10
    topics = {t for t, _p in sub.items}
    assert topics == {f"decision.{sym}".encode(), f"decision.{other}".encode()}
    # What a plain pyzmq subscriber decoded is what Valkey holds under the decision id.
    store = HmarlStore(url)
    try:
        mine = [(t, p) for t, p in sub.items if t == f"decision.{sym}".encode()]
        assert all(p["symbol"] == other for t, p in sub.items if t == f"decision.{other}".encode())
        for topic, payload in mine[:20]:
            assert payload["symbol"] == sym
            assert payload["action"] in ("BUY", "SELL", "HOLD")
            stored = store.get_decision(payload["decision_id"])
            assert orjson.loads(orjson.dumps(stored)) == {k: v for k, v in payload.items()}
        some = [p for _t, p in sub.items if p["signals"]]
        assert some and all("reasons" in s and "weight" in s for s in some[0]["signals"])
        assert len(store.get_recent_decisions(10)) == 10
    finally:
        store.close()


def test_agent_sigkilled_mid_stream_decisions_continue_and_it_returns_learned(ray_session, valkey_server, tmp_path,
                                                                              model_dir):
    import ray

    _, url = valkey_server
    cfg = make_cfg(tmp_path, features={"enabled": True}, hmarl=hmarl_cfg(model_dir),
                   simulator={"rate": 300, "speed": 10})
    sym = cfg.symbols[0]
    g = graph_for(cfg, url)
    try:
        agent = g.handle(f"agent:order_flow:{sym}")
        coord = g.handle(f"coordinator:{sym}")
        wait_for(lambda: updates(ray.get(agent.stats.remote())) > 0, timeout=90, what="the agent to learn from feedback")
        time.sleep(1.0)  # let the write-behind persist the learned state
        before = ray.get(agent.ping.remote())
        learned = ray.get(agent.stats.remote())["learning"]
        decisions_at_kill = ray.get(coord.stats.remote())["decisions"]
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(lambda: ray.get(coord.stats.remote())["decisions"] > decisions_at_kill + 5, timeout=60,
                 what="decisions while the agent is down or restarting")
        after = wait_for(lambda: _ping_new(agent, before["incarnation"]), timeout=60, what="the agent's restart")
        restarted = ray.get(agent.stats.remote())
    finally:
        g.shutdown()
    assert after["pid"] != before["pid"]
    assert restarted["restored"] is True and restarted["restore_error"] is None
    # A fresh agent starts every context at zero updates: these counts came back from Valkey.
    for ctx, info in learned["contexts"].items():
        assert restarted["learning"]["contexts"][ctx]["updates"] >= info["updates"], ctx


def updates(agent_stats: dict) -> int:
    return sum(c["updates"] for c in agent_stats["learning"]["contexts"].values())
