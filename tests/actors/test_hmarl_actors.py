"""HMARL in the real graph: decisions on ZeroMQ 5561 and in Valkey, weights moved by
realized outcomes, and an agent SIGKILLed mid-stream that returns with its learned state."""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest

from pipelines.persistence.events import EventStore
from pipelines.persistence.hmarl_store import HmarlStore
from tests.helpers import ZmqCollector, graph_for, make_cfg, ping_new, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NS_PER_S = 1_000_000_000


def hmarl_cfg(model_dir, **kw):
    # Event time runs 10x wall time, so 5 s horizons resolve within seconds of the test.
    return {"enabled": True, "model_dir": str(model_dir), "horizon_s": 5, "decision_every_ms": 500,
            "signal_ttl_s": 5, **kw}


def test_decisions_flow_to_zeromq_and_valkey_and_weights_learn(ray_session, valkey_server, tmp_path, model_dir):
    """Two symbols, a WDO and a WIN contract: each gets its own pipeline of actors and decisions."""
    import ray

    _, url = valkey_server
    cfg = make_cfg(tmp_path, features={"enabled": True}, hmarl=hmarl_cfg(model_dir, metrics_every_s=2),
                   simulator={"rate": 300, "speed": 10}, extra_symbols=("WINZ26",))
    sym, other = cfg.symbols
    g = graph_for(cfg, url)
    sub = None
    try:
        sub = ZmqCollector(g.zmq_endpoints["decision"], prefix=b"decision.")
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
        # Each HMARL actor wrote its stats on the event-time metrics clock.
        for owner in (f"coordinator:{sym}", f"feedback:{sym}", f"order_flow:{sym}", f"ml:{sym}"):
            m = store.get_metrics(owner)
            assert m is not None and m["ts_event"] > 0 and m["run_id"] == g.run_id, owner
        assert store.get_metrics(f"coordinator:{sym}")["decisions"] > 0
        # Detected patterns are stored with their outcome: the last trade at or before the horizon,
        # checked here against the tick stream in Valkey.
        patterns = [p for kind in ("sweep", "iceberg", "absorption", "unfinished_auction", "p_profile", "b_profile")
                    for p in store.get_patterns_by_type(kind) if p["symbol"] == sym]
        assert patterns, "no pattern with its outcome in Valkey"
        ticks = EventStore.from_url(url).since(sym, "tick", 0)
        for p in patterns[:10]:
            due = p["ts_event"] + 5 * NS_PER_S
            before = [tk.price for tk in ticks if tk.ts_event <= due]
            assert p["outcome"]["exit_ts"] == due
            assert p["outcome"]["exit_price"] == before[-1]
            assert p["outcome"]["points"] == pytest.approx(before[-1] - p["price"])
    finally:
        store.close()


def test_agent_sigkilled_mid_stream_decisions_continue_and_it_returns_learned(ray_session, valkey_server, tmp_path,
                                                                              model_dir):
    import ray

    _, url = valkey_server
    # Decisions go on without a voter that does not answer within the round timeout: the rule of a
    # live feed (round_timeout_s). On this simulated feed a round waits recorded_round_timeout_s
    # (300 s by default, so that timing cannot change a decision); the test sets it as short as live.
    cfg = make_cfg(tmp_path, features={"enabled": True}, hmarl=hmarl_cfg(model_dir, recorded_round_timeout_s=5),
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
        after = wait_for(lambda: ping_new(agent, before["incarnation"]), timeout=60, what="the agent's restart")
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


def test_feedback_sigkilled_with_outcomes_pending_resolves_them_after_restart(ray_session, valkey_server):
    """The pending outcomes are mirrored in Valkey; the restarted actor tracks them again and
    takes the trade prices it missed from the Valkey tick stream, so each gets its reward."""
    import uuid

    import ray

    from actors.config import ActorConfig, ValkeyLink
    from actors.hmarl import FeedbackActor
    from pipelines.config import HmarlConfig
    from pipelines.persistence.config import ValkeyConfig
    from pipelines.model.messages import Decision, Signal, Trade
    from pipelines.persistence.connection import connect
    from pipelines.persistence.events import StreamWriter

    _, url = valkey_server
    sym = "WDOH27"  # no other test writes this contract: its ticks and pending set are this test's
    ns = f"fbkill{uuid.uuid4().hex[:6]}"
    t0 = 1_795_500_000 * NS_PER_S
    h = 10 * NS_PER_S  # HmarlConfig's default horizon
    votes = ({"agent": "order_flow", "direction": 1.0, "confidence": 0.8, "weight": 0.6},)
    tracked = [Signal("order_flow", sym, t0, 1, 1.0, 1.0, h, 5400.0, ("r",)),
               Signal("order_flow", sym, t0 + NS_PER_S, 2, -1.0, 0.5, h, 5401.0, ("r",)),
               Decision(f"{sym}-3", sym, t0 + 2 * NS_PER_S, 3, "BUY", 2, 0.4, 0.4, 5400.5, h, votes, {}, {})]
    client = connect(url)
    pending_key = f"hmarl:agent:feedback:{sym}:pending"
    client.delete(pending_key)
    actor = ray.remote(FeedbackActor).options(name=f"feedback:{sym}", namespace=ns, num_cpus=0,
                                              max_restarts=-1).remote(
        ActorConfig(HmarlConfig(), namespace=ns, symbol=sym, valkey=ValkeyLink(url)), tick_size=0.5)
    try:
        # A round hands over the voters' and the coordinator's results as ObjectRefs.
        signals, decisions = ray.put(tracked[:2]), ray.put([tracked[2]])
        assert ray.get(actor.on_round.remote([(t0 + 3 * NS_PER_S, 5400.0)], [signals], [decisions])) == ([], [])
        wait_for(lambda: client.hlen(pending_key) == 3, timeout=30, what="the pending outcomes in Valkey")
        before = ray.get(actor.ping.remote())
        os.kill(before["pid"], signal.SIGKILL)
        # While it is down the market trades on; the feed's writer records it in Valkey.
        writer = StreamWriter(url, None, ValkeyConfig())
        writer.enqueue([Trade(sym, t0 + k * NS_PER_S, 0, k, 5400.0 + 0.5 * k, 1, 2) for k in range(4, 16)])
        assert writer.flush(10.0)
        writer.close()
        wait_for(lambda: ping_new(actor, before["incarnation"]), timeout=60, what="the feedback actor's restart")
        stats = ray.get(actor.stats.remote())
        wait_for(lambda: client.hlen(pending_key) == 0, timeout=30, what="the resolved outcomes to leave Valkey")
        stored = {seq: orjson.loads(client.get(f"hmarl:feedback:{voter}:{sym}:{seq}") or b"null")
                  for voter, seq in (("order_flow", 1), ("order_flow", 2), ("coordinator", 3))}
    finally:
        ray.kill(actor, no_restart=True)
    assert (stats["restored_pending"], stats["replayed_prices"], stats["restore_error"]) == (3, 12, None)
    assert stats["evaluated"] == 3 and stats["missing_price"] == 0
    # Exit = the last trade at or before ts + 10 s; trade k is at t0 + k s, price 5400 + 0.5 k.
    # 1: long at 5400.0, exit 5405.0 (k=10): points 5, reward min(1, 5 / 2.0) = 1, R$50
    # 2: short at 5401.0 x 0.5, exit 5405.5 (k=11): points 4.5, reward max(-1, -0.5 x 4.5 / 2) = -1, R$-45
    # 3: BUY 2 at 5400.5 x 0.4, exit 5406.0 (k=12): points 5.5, reward min(1, 0.4 x 5.5 / 2) = 1, R$110
    got = {seq: (fb["exit_price"], fb["points"], fb["reward"], fb["pnl"]) for seq, fb in stored.items()}
    assert got == {1: (5405.0, 5.0, 1.0, 50.0), 2: (5405.5, 4.5, -1.0, -45.0), 3: (5406.0, 5.5, 1.0, 110.0)}
