"""The FeatureEngine actor in the real graph: ZeroMQ 5557-5560 to a plain pyzmq
subscriber, flow state in Valkey, and a SIGKILL mid-stream.

The reference is an offline SymbolAnalytics fed the events Valkey holds (the
same ticks and book snapshots, in seq order): what the actor published, stored
and holds must equal it exactly, so nothing was lost, duplicated or reordered.
"""

from __future__ import annotations

import heapq
import os
import signal
import time

import orjson
import pytest

from pipelines.features.engine import VECTOR_NAMES, SymbolAnalytics
from pipelines.persistence.flow_store import FlowStore, flow_state_key
from pipelines.model.messages import FeatureVector, FlowState, to_dict
from pipelines.persistence.connection import connect
from pipelines.persistence.events import EventStore
from tests.helpers import ZmqCollector, graph_for, make_cfg, ping_new, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NS_PER_S = 1_000_000_000
FEATURES = {"enabled": True, "state_every_ms": 500}


def stored_events(url, sym):
    store = EventStore(connect(url))
    ticks = store.since(sym, "tick", 0)
    books = store.since(sym, "book", 0)
    return list(heapq.merge(ticks, books, key=lambda e: e.seq))


def offline(events, state_every_ms=500) -> tuple[SymbolAnalytics, list]:
    a = SymbolAnalytics(events[0].symbol, 0.5, state_every_ns=int(state_every_ms * 1e6))
    out: list = []
    a.on_events(events, out)
    return a, out


def wire(msg) -> dict:
    """A message as a subscriber decodes it (NaN -> None)."""
    return orjson.loads(orjson.dumps(to_dict(msg)))


def test_engine_publishes_analytics_and_keeps_flow_state(ray_session, valkey_server, tmp_path):
    _, url = valkey_server
    cfg = make_cfg(tmp_path, features=FEATURES, simulator={"rate": 3000, "max_events": 15_000})
    sym = cfg.symbols[0]
    g = graph_for(cfg, url)
    subs = {}
    try:
        ends = g.zmq_endpoints
        assert set(ends) >= {"flow", "footprint", "liquidity", "tape"}
        subs = {name: ZmqCollector(ends[name], prefix=b"") for name in ("flow", "footprint", "liquidity", "tape")}
        wait_for(lambda: g.feed_finished()[0], timeout=60, what="the simulator to finish")
        time.sleep(0.5)
        final = g.shutdown()
    finally:
        for s in subs.values():
            s.close()
        if g.actors:
            g.shutdown()
    engine = final[f"features:{sym}"]
    assert engine["accepted"] == 15_000 and engine["gaps"] == 0
    events = stored_events(url, sym)
    assert [e.seq for e in events] == list(range(1, 15_001))
    _, ref = offline(events)
    ref_by_key = {(m.KIND, m.seq, m.closed if m.KIND == "footprint" else None): wire(m) for m in ref}

    topics = {name: {t for t, _ in s.items} for name, s in subs.items()}
    assert topics["flow"] == {f"flow.{sym}".encode(), f"features.{sym}".encode()}
    for name in ("footprint", "liquidity", "tape"):
        assert topics[name] == {f"{name}.{sym}".encode()}
    # Everything decoded equals the offline engine's message with the same key.
    for name, s in subs.items():
        assert len(s.items) > 0, name
        for _topic, p in s.items:
            key = (p["kind"], p["seq"], p.get("closed") if p["kind"] == "footprint" else None)
            if p["kind"] == "tape":  # several patterns can share a seq
                assert p in [wire(m) for m in ref if m.KIND == "tape" and m.seq == p["seq"]]
            else:
                assert p == ref_by_key[key], key
    # Once the subscription was live, a vector per trade, in order, none missing.
    vec_seqs = [p["seq"] for _t, p in subs["flow"].items if p["kind"] == "features"]
    trade_seqs = [m.seq for m in ref if type(m) is FeatureVector]
    assert vec_seqs == [q for q in trade_seqs if q >= vec_seqs[0]]

    # Valkey: the latest flow state (TTL 1 h) and the history, by event time.
    client = connect(url)
    states = [m for m in ref if type(m) is FlowState]
    fs = FlowStore(client)
    assert fs.get_flow_state(sym) == wire(states[-1])
    assert 0 < client.ttl(flow_state_key(sym)) <= 3600
    last_ts = states[-1].ts_event
    want = [wire(m) for m in states if m.ts_event > last_ts - 2 * NS_PER_S]
    assert fs.get_flow_history(sym, 2 / 60) == want
    assert len(want) >= 3


def test_engine_sigkilled_mid_stream_restores_its_windows(ray_session, valkey_server, tmp_path):
    import ray

    _, url = valkey_server
    cfg = make_cfg(tmp_path, features=FEATURES, simulator={"rate": 3000, "max_events": 15_000})
    sym = cfg.symbols[0]
    g = graph_for(cfg, url)
    try:
        eng = g.handle(f"features:{sym}")
        wait_for(lambda: ray.get(eng.stats.remote())["accepted"] > 5000, what="the engine to be busy")
        before = ray.get(eng.ping.remote())
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(lambda: ping_new(eng, before["incarnation"]), timeout=60, what="the engine's restart")
        wait_for(lambda: g.feed_finished()[0], timeout=60, what="the simulator to finish")
        ray.get(g.handle("feed").stop.remote())
        ray.get(g.handle("valkey_writer").flush.remote())
        stats = ray.get(eng.stats.remote())
        vector = ray.get(eng.latest_vector.remote())
        flow = ray.get(eng.flow_values.remote())
    finally:
        g.shutdown()
    assert stats["restored"] > 0 and stats["restore_error"] is None
    assert stats["position"] == 15_000
    events = stored_events(url, sym)
    a, _ = offline(events)
    # Warm windows: the restarted actor's state equals an engine that saw every event once.
    assert orjson.dumps(flow) == orjson.dumps(a.flow_values())
    assert orjson.dumps(vector) == orjson.dumps(dict(zip(VECTOR_NAMES, a.vector_values())))
