"""pipelines.persistence.hmarl_store against a real embedded valkey-server.

No mocks. Tests that only read and write share the session server and use ids,
symbols and voters of their own; tests that stop a server or need an exact key
census (outage, health check, cleanup) run their own. Expected values are written
out here or computed with numpy from the inputs, never read back from the store.
"""

from __future__ import annotations

import math
import time

import numpy as np
import orjson
import pytest

from pipelines.persistence.hmarl_store import (
    DECISIONS_STREAM,
    FEEDBACK_STREAM,
    HmarlStore,
    HmarlTTL,
    agent_state_key,
    decision_key,
    feedback_key,
    metrics_key,
    pattern_key,
    performance_key,
    signal_key,
)
from pipelines.model.messages import Feedback, FlowState, Signal
from pipelines.persistence.connection import connect
from pipelines.persistence.server import free_port
from tests.helpers import FAST_RECONNECT, T0, hmarl_decision, unique_name, wait_for

SEC = 1_000_000_000
MS = 1_000_000
DAY = 86_400 * SEC


def expected_decision(sym: str, seq: int, ts: int) -> dict:
    """hmarl_decision(sym, seq, ts) as JSON gives it back: tuples as lists, NaN as null."""
    return {"decision_id": f"{sym}-{seq}", "symbol": sym, "ts_event": ts, "seq": seq, "action": "BUY", "size": 2,
            "score": 0.42, "confidence": 0.7, "price": 5000.5, "horizon_ns": 60 * SEC,
            "signals": [{"agent": "order_flow", "direction": 1.0, "confidence": 0.8, "weight": 0.6,
                         "reasons": ["ofi_5m>0", "vpin<0.4"]},
                        {"agent": "ml", "direction": -0.25, "confidence": 0.5, "weight": 0.4, "reasons": []}],
            "weights": {"order_flow": 0.6, "ml": 0.4}, "market": {"spread_ticks": 1.0, "vpin": None},
            "risk": "", "ts_recv": 0, "kind": "decision"}


def feedbacks(voter: str, sym: str, n: int, seed: int, start_seq: int = 1, t0: int = T0) -> list[Feedback]:
    """Random outcomes: reward in [-1, 1], hit True/False/None, pnl in R$."""
    rng = np.random.default_rng(seed)
    out = []
    for seq in range(start_seq, start_seq + n):
        reward, pnl = float(rng.uniform(-1, 1)), float(rng.normal(0, 50))
        hit = [True, False, None][int(rng.integers(0, 3))]
        ts = t0 + seq * SEC
        out.append(Feedback(voter, sym, ts, ts - 60 * SEC, seq, 1.0, 0.8, 5000.0, 5001.5, 1.5, pnl, reward, hit))
    return out


def signal(agent: str, sym: str, seq: int, ts: int) -> Signal:
    return Signal(agent, sym, ts, seq, -0.5, 0.9, 60 * SEC, 5000.5, ("sweep",), "trend", "act", -0.5)


def expected_signal(agent: str, sym: str, seq: int, ts: int) -> dict:
    return {"agent": agent, "symbol": sym, "ts_event": ts, "seq": seq, "direction": -0.5, "confidence": 0.9,
            "horizon_ns": 60 * SEC, "price": 5000.5, "reasons": ["sweep"], "context": "trend", "action": "act",
            "raw_direction": -0.5, "valid_ns": 0, "kind": "signal"}


def stream_records(client, stream: str) -> list[tuple[bytes, dict]]:
    return [(i, orjson.loads(f[b"json"])) for i, f in client.xrange(stream)]


@pytest.fixture(scope="module")
def store(valkey_server):
    s = HmarlStore(valkey_server[1], **FAST_RECONNECT)
    yield s
    s.close()


# ---------------------------------------------------------------------------
# Round trips and TTLs
# ---------------------------------------------------------------------------


def test_decision_round_trip_ttl_stream_and_recent(store, valkey_server, client):
    sym = unique_name("D")
    plan = [(1, T0 + 10 * SEC), (2, T0 + 11 * SEC), (3, T0 + 10 * SEC + 500 * MS)]
    for seq, ts in plan:
        store.store_decision(hmarl_decision(sym, seq, ts))
    as_dict = {**expected_decision(sym, 4, T0 + 12 * SEC), "extra": {"nested": [1, {"x": 2}]}}
    store.store_decision(as_dict)  # a dict is stored as is
    assert store.flush(10)

    fresh = HmarlStore(valkey_server[1], cache_size=0, **FAST_RECONNECT)  # nothing cached: reads Valkey
    try:
        for seq, ts in plan:
            assert store.get_decision(f"{sym}-{seq}") == expected_decision(sym, seq, ts)
            assert fresh.get_decision(f"{sym}-{seq}") == expected_decision(sym, seq, ts)
            assert 0 < client.ttl(decision_key(f"{sym}-{seq}")) <= 86_400
        assert fresh.get_decision(f"{sym}-4") == as_dict
        assert fresh.get_decision(unique_name("nope")) is None

        mine = [r for _i, r in stream_records(client, DECISIONS_STREAM) if r["symbol"] == sym]
        assert mine == [expected_decision(sym, s, t) for s, t in plan] + [as_dict]

        # newest first, from the stream
        assert [d["decision_id"] for d in fresh.get_recent_decisions(3)] == [f"{sym}-4", f"{sym}-3", f"{sym}-2"]
        assert fresh.get_recent_decisions(0) == []
    finally:
        fresh.close()

    # the same decision again: no second stream entry
    n = client.xlen(DECISIONS_STREAM)
    store.store_decision(hmarl_decision(sym, 1, T0 + 10 * SEC))
    assert store.flush(10) and client.xlen(DECISIONS_STREAM) == n


def test_ttls_patterns_agent_state_metrics_flow(store, client):
    sym, agent, voter = unique_name("S"), unique_name("agent_"), unique_name("voter_")
    store.store_signal(signal(agent, sym, 7, T0))
    store.store_feedback(feedbacks(voter, sym, 1, seed=1)[0])
    store.store_metrics(f"{agent}_latency", {"p50_ms": 1.5, "p99_ms": 7.0})
    store.store_agent_state(agent, "learning", {"q": [[0.1, 0.2]], "n": 3})
    ptype, other = unique_name("absorption_"), unique_name("sweep_")
    patterns = {f"p{i}": {"ts_event": T0 + i * SEC, "price": 5000.0 + i} for i in range(3)}
    for pid, data in patterns.items():
        store.store_pattern(ptype, pid, data)
    store.store_pattern(other, "q0", {"ts_event": T0, "price": 1.0})
    store.store_flow_state(FlowState(sym, T0, T0 + 1, 5, {"ofi_1m": 2.0, "vpin": math.nan}))
    assert store.flush(10)

    assert 7_100 < client.ttl(signal_key(agent, sym, 7)) <= 7_200
    assert 604_700 < client.ttl(feedback_key(voter, sym, 1)) <= 604_800
    assert 86_300 < client.ttl(metrics_key(f"{agent}_latency")) <= 86_400
    assert client.ttl(pattern_key(ptype, "p0")) == -1
    assert client.ttl(agent_state_key(agent, "learning")) == -1
    assert client.ttl(performance_key(voter)) == -1
    assert orjson.loads(client.get(signal_key(agent, sym, 7))) == expected_signal(agent, sym, 7, T0)

    assert store.get_patterns_by_type(ptype) == [patterns["p2"], patterns["p1"], patterns["p0"]]  # newest first
    assert store.get_patterns_by_type(ptype, limit=2) == [patterns["p2"], patterns["p1"]]
    assert store.get_patterns_by_type(other) == [{"ts_event": T0, "price": 1.0}]
    assert store.get_patterns_by_type(unique_name("none_")) == []

    assert store.load_agent_state(agent, "learning") == {"q": [[0.1, 0.2]], "n": 3}
    assert store.load_agent_state(agent, "missing") is None
    assert store.get_metrics(f"{agent}_latency") == {"p50_ms": 1.5, "p99_ms": 7.0}
    assert store.get_flow_state(sym) == {"symbol": sym, "ts_event": T0, "ts_recv": T0 + 1, "seq": 5, "kind": "flow",
                                         "values": {"ofi_1m": 2.0, "vpin": None}}
    assert 0 < client.ttl(f"hmarl:flow_state:{sym}") <= 3_600


def test_bad_input_is_counted_not_raised(store):
    before = store.stats()["rejected"]
    store.store_decision({"symbol": "X", "ts_event": T0})  # no decision_id
    store.store_decision({"decision_id": "x", "ts_event": -5})
    store.store_decision(["not", "a", "record"])
    store.store_feedback({**feedbacks("v", "S", 1, seed=2)[0]._asdict(), "reward": math.nan})
    store.store_feedback({**feedbacks("v", "S", 1, seed=2)[0]._asdict(), "hit": 1})
    store.store_signal({"agent": "a", "symbol": "S", "seq": 1, "ts_event": T0, "bad": object()})
    store.store_pattern("", "id", {})
    store.store_agent_state("a", "n", [1, 2])
    store.store_flow_state({"symbol": "S"})
    after = store.stats()["rejected"]
    grew = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert grew == {"decision: bad decision_id": 1, "decision: bad ts_event": 1, "decision: wrong type": 1,
                    "feedback: bad reward": 1, "feedback: bad hit": 1, "signal: not JSON-serializable": 1,
                    "pattern: bad pattern_type": 1, "agent state: wrong type": 1, "flow state: wrong type": 1}


# ---------------------------------------------------------------------------
# Performance counters
# ---------------------------------------------------------------------------


def test_feedback_updates_performance_exactly_and_idempotently(store, valkey_server, client):
    voter, sym = unique_name("voter_"), unique_name("F")
    fbs = feedbacks(voter, sym, 40, seed=11)
    for fb in fbs:
        store.store_feedback(fb)
    assert store.flush(10)

    rewards = np.array([fb.reward for fb in fbs])
    hits = sum(fb.hit is True for fb in fbs)
    misses = sum(fb.hit is False for fb in fbs)
    mean, std = rewards.mean(), rewards.std()

    def check(perf: dict) -> None:
        assert (perf["count"], perf["hits"], perf["misses"]) == (40, hits, misses)
        assert perf["hit_rate"] == pytest.approx(hits / (hits + misses), rel=1e-12)
        assert perf["mean_reward"] == pytest.approx(mean, rel=1e-9)
        assert perf["reward_std"] == pytest.approx(std, rel=1e-9)
        assert perf["sharpe_like"] == pytest.approx(mean / std, rel=1e-9)
        assert perf["pnl_sum"] == pytest.approx(sum(fb.pnl for fb in fbs), rel=1e-9)
        assert perf["updated_ts"] == max(fb.ts_event for fb in fbs)

    check(store.get_agent_performance(voter))
    assert store.get_agent_performance(unique_name("nobody_")) is None
    published = [r for _i, r in stream_records(client, FEEDBACK_STREAM) if r["voter"] == voter]
    assert [r["seq"] for r in published] == list(range(1, 41))
    assert published[0]["hit"] is fbs[0].hit and published[0]["reward"] == fbs[0].reward

    # replays, through this store and through a fresh one (a restarted process), change nothing;
    # a changed record under the same (voter, symbol, seq) is a replay too: the first one wins
    for fb in fbs:
        store.store_feedback(fb)
    store.store_feedback(fbs[0]._replace(reward=0.999, hit=True))
    assert store.flush(10)
    again = HmarlStore(valkey_server[1], **FAST_RECONNECT)
    try:
        for fb in reversed(fbs):
            again.store_feedback(fb)
        assert again.flush(10)
        check(again.get_agent_performance(voter))
    finally:
        again.close()
    assert len([1 for _i, r in stream_records(client, FEEDBACK_STREAM) if r["voter"] == voter]) == 40


# ---------------------------------------------------------------------------
# Pub/sub
# ---------------------------------------------------------------------------


def test_pubsub_channels(store):
    sym, agent, voter = unique_name("P"), unique_name("agent_"), unique_name("voter_")
    with store.subscribe("hmarl:feedback:*") as fb_sub, store.subscribe("hmarl:signals:*") as sig_sub, \
            store.subscribe("hmarl:decisions:stream") as dec_sub:
        fb = feedbacks(voter, sym, 1, seed=3)[0]
        store.store_feedback(fb)
        store.store_signal(signal(agent, sym, 3, T0))
        store.store_decision(hmarl_decision(sym, 4, T0))
        assert store.flush(10)

        channel, got = fb_sub.get(5)
        assert channel == f"hmarl:feedback:{voter}"
        assert got == {"voter": voter, "symbol": sym, "ts_event": fb.ts_event, "signal_ts": fb.signal_ts,
                       "seq": 1, "direction": 1.0, "confidence": 0.8, "entry_price": 5000.0, "exit_price": 5001.5,
                       "points": 1.5, "pnl": fb.pnl, "reward": fb.reward, "hit": fb.hit, "decision_id": "",
                       "kind": "feedback"}
        assert sig_sub.get(5) == (f"hmarl:signals:{agent}", expected_signal(agent, sym, 3, T0))
        assert dec_sub.get(5) == ("hmarl:decisions:stream", expected_decision(sym, 4, T0))
        for sub in (fb_sub, sig_sub, dec_sub):  # one message each: nothing crossed over
            assert sub.get(0.1) is None


# ---------------------------------------------------------------------------
# Outage, health, cleanup (own servers)
# ---------------------------------------------------------------------------


def test_outage_never_blocks_and_loses_nothing(own_valkey):
    srv = own_valkey()
    url = srv.url
    store = HmarlStore(url, **FAST_RECONNECT)
    sym, voter = unique_name("O"), unique_name("voter_")
    fbs = feedbacks(voter, sym, 100, seed=5)
    slowest = 0.0

    def timed(fn, *args):
        nonlocal slowest
        t = time.perf_counter()
        out = fn(*args)
        slowest = max(slowest, time.perf_counter() - t)
        return out

    sub = store.subscribe("hmarl:signals:*")
    try:
        for seq in range(1, 51):
            timed(store.store_decision, hmarl_decision(sym, seq, T0 + seq * SEC))
            timed(store.store_feedback, fbs[seq - 1])
        srv.stop()  # no flush first: chunks may be cut mid-way and re-sent
        for seq in range(51, 101):
            timed(store.store_decision, hmarl_decision(sym, seq, T0 + seq * SEC))
            timed(store.store_feedback, fbs[seq - 1])
        assert timed(store.get_decision, f"{sym}-77") == expected_decision(sym, 77, T0 + 77 * SEC)
        wait_for(lambda: not store.stats()["write_behind"]["connected"], 10, 0.01, "the store to see the outage")
        recent = store.get_recent_decisions(3)  # the stream is unreachable: from the local cache
        assert [d["decision_id"] for d in recent] == [f"{sym}-100", f"{sym}-99", f"{sym}-98"]
        health = store.health_check()
        assert health["connected"] is False and health["write_behind"]["queued"] > 0
        assert store.get_agent_performance(voter) is None and store.stats()["read_errors"]["performance"] == 1
        assert slowest < 0.05, f"a call blocked for {slowest * 1000:.1f} ms"

        srv.start()
        assert store.flush(30)
        s = store.stats()["write_behind"]
        assert s["reconnects"] >= 1 and s["dropped"] == 0 and s["errors"] == {}
        c = connect(url)
        try:
            assert c.xlen(DECISIONS_STREAM) == 100 and c.xlen(FEEDBACK_STREAM) == 100
            assert sum(c.exists(decision_key(f"{sym}-{q}")) for q in range(1, 101)) == 100
            assert sum(c.exists(feedback_key(voter, sym, q)) for q in range(1, 101)) == 100
            assert [r["seq"] for _i, r in stream_records(c, FEEDBACK_STREAM)] == list(range(1, 101))
        finally:
            c.close()
        perf = store.get_agent_performance(voter)
        assert perf["count"] == 100 and perf["hits"] == sum(fb.hit is True for fb in fbs)
        assert perf["mean_reward"] == pytest.approx(np.mean([fb.reward for fb in fbs]), rel=1e-9)

        # the subscriber reconnects and re-subscribes on its next get (what was published meanwhile is gone)
        assert sub.get(0.2) is None
        store.store_signal(signal("order_flow", sym, 1, T0))
        assert store.flush(10)
        assert sub.get(5) == ("hmarl:signals:order_flow", expected_signal("order_flow", sym, 1, T0))
    finally:
        sub.close()
        store.close(1)


def test_health_check_and_cleanup_by_event_time(own_valkey):
    url = own_valkey().url
    store = HmarlStore(url, **FAST_RECONNECT)
    sym, agent, voter = "WDOH26", "order_flow", "order_flow"
    try:
        for day in range(10):  # one of each per day of event time, T0 .. T0 + 9 d
            ts = T0 + day * DAY
            store.store_decision(hmarl_decision(sym, day + 1, ts))
            store.store_feedback(feedbacks(voter, sym, 1, seed=day, start_seq=day + 1, t0=ts - (day + 1) * SEC)[0])
            store.store_signal(signal(agent, sym, day + 1, ts))
            store.store_pattern("absorption", f"a{day}", {"ts_event": ts})
            if day < 3:
                store.store_pattern("sweep", f"s{day}", {"ts_event": ts})
        store.store_metrics("coordinator", {"decisions": 10})
        store.store_agent_state(agent, "learning", {"n": 1})
        store.store_flow_state(FlowState(sym, T0, T0, 1, {"vpin": 0.3}))
        assert store.flush(10)

        h = store.health_check()
        assert h["connected"] is True and h["used_memory"] > 0 and h["scan_complete"] is True
        families = {"decision": 10, "feedback": 10, "signal": 10, "performance": 1, "decisions_stream": 1,
                    "feedback_stream": 1, "pattern": 13, "pattern_index": 2, "metrics": 1, "agent": 1,
                    "flow_state": 1, "flow_history": 1}
        assert h["families"] == families and h["keyspace_keys"] == sum(families.values())
        assert h["streams"] == {"decisions": 10, "feedback": 10}
        assert h["write_behind"]["written"] > 0

        # newest at T0 + 9 d; 3.5 days back: T0 + 5.5 d. Days 0..5 go, 6..9 stay; patterns of
        # every type against the newest pattern of any type: absorption 0..5 and sweep 0..2 go.
        removed = store.cleanup_old_data(3.5)
        cutoff = T0 + 9 * DAY - int(3.5 * DAY)
        assert removed == {"decision_keys": 6, "decision_stream_entries": 6, "feedback_keys": 6,
                           "feedback_stream_entries": 6, "signal_keys": 6, "pattern_keys": 9, "complete": True,
                           "cutoff_ns": {"decision": cutoff, "feedback": cutoff, "signal": cutoff, "pattern": cutoff}}
        assert [p["ts_event"] for p in store.get_patterns_by_type("absorption")] == [T0 + d * DAY for d in (9, 8, 7, 6)]
        assert store.get_patterns_by_type("sweep") == []
        store.store_decision(hmarl_decision(sym, 11, T0 + 8 * DAY))  # event time steps back a day
        assert store.flush(10)
        c = connect(url)
        try:
            entries = stream_records(c, DECISIONS_STREAM)
            assert [r["seq"] for _i, r in entries] == [7, 8, 9, 10, 11]
            # ids follow event time; the late one is clamped to the top's ms so ids never go back
            ms = [(T0 + d * DAY) // MS for d in (6, 7, 8, 9, 9)]
            assert [int(i.split(b"-")[0]) for i, _r in entries] == ms
            assert [r["seq"] for _i, r in stream_records(c, FEEDBACK_STREAM)] == [7, 8, 9, 10]
            assert [c.exists(decision_key(f"{sym}-{q}")) for q in range(1, 12)] == [0] * 6 + [1] * 5
            assert [c.exists(signal_key(agent, sym, q)) for q in range(1, 11)] == [0] * 6 + [1] * 4
        finally:
            c.close()
        assert store.health_check()["families"] == {**families, "decision": 5, "feedback": 4, "signal": 4,
                                                     "pattern": 4, "pattern_index": 1}
        assert store.cleanup_old_data(3.5)["decision_keys"] == 0  # nothing older left
        with pytest.raises(ValueError, match="days must be > 0"):
            store.cleanup_old_data(0)
    finally:
        store.close(1)


def test_pending_set_mirrors_adds_and_resolutions_in_order(store, client):
    owner = unique_name("feedback:WDOZ26")
    key = f"hmarl:agent:{owner}:pending"
    a, b = {"voter": "a", "seq": 1, "votes": [{"agent": "x"}]}, {"voter": "b", "seq": 2}
    store.store_pending(owner, {"a:1:10": a, "b:2:20": b}, [])
    store.store_pending(owner, {"c:3:30": {"voter": "c"}}, ["a:1:10"])  # same batch: add, then resolve
    store.store_pending(owner, {}, ["c:3:30", "never:0:0"])  # resolving an unknown field is harmless
    assert store.flush(5)
    assert store.load_pending(owner) == {"b:2:20": b}
    assert client.ttl(key) == -1  # no TTL: a stopped system resolves them when it starts again
    client.hset(key, "junk", b"not json")
    assert store.load_pending(owner) == {"b:2:20": b}  # someone else's bytes are skipped
    rejected = sum(store.stats()["rejected"].values())
    store.store_pending(owner, {"": {"voter": "x"}}, [])
    store.store_pending(owner, {"d:4:40": ["not", "a", "dict"]}, [])
    assert sum(store.stats()["rejected"].values()) == rejected + 2
    assert store.load_pending(unique_name("feedback:none")) == {}


def test_load_agent_state_gives_up_when_unreachable():
    store = HmarlStore(f"redis://127.0.0.1:{free_port('127.0.0.1')}/0", **FAST_RECONNECT)  # nobody listens
    try:
        t = time.perf_counter()
        assert store.load_agent_state("order_flow", "learning", attempts=3, retry_delay_s=0.02) is None
        assert store.load_pending("feedback:WDOZ26") is None  # unreachable, not "nothing pending"
        assert time.perf_counter() - t < 1.0
        assert store.stats()["read_errors"] == {"agent state": 1, "pending": 1}
        assert store.get_decision("unknown") is None and store.get_recent_decisions(5) == []
    finally:
        store.close(0.2)


def test_ttl_config_is_used(valkey_server, client):
    store = HmarlStore(valkey_server[1], ttl=HmarlTTL(decision_s=60, signal_s=30), **FAST_RECONNECT)
    sym = unique_name("C")
    try:
        store.store_decision(hmarl_decision(sym, 1, T0))
        store.store_signal(signal("a", sym, 1, T0))
        assert store.flush(10)
        assert 50 < client.ttl(decision_key(f"{sym}-1")) <= 60
        assert 20 < client.ttl(signal_key("a", sym, 1)) <= 30
    finally:
        store.close()
