"""The market-data graph (actors/wiring.py) on real Ray, a real embedded Valkey and real
ZeroMQ sockets: delivery, a SIGKILLed buffer, a Valkey outage, the supervisor.

Each test builds its own graph in its own namespace with its own symbol, so
streams and actor names never collide inside the one session cluster.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from pipelines.model.messages import Trade
from pipelines.persistence.connection import connect
from pipelines.persistence.events import EventStore
from tests.helpers import ZmqCollector, graph_for, make_cfg, ping_new, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def trade_dicts(events):
    return [e._asdict() for e in events if isinstance(e, Trade)]


def test_events_reach_valkey_and_zeromq_identically(ray_session, valkey_server, tmp_path):
    _, url = valkey_server
    cfg = make_cfg(tmp_path)
    sym = cfg.symbols[0]
    g = graph_for(cfg, url)
    try:
        sub = ZmqCollector(g.zmq_endpoints["tick"])
        wait_for(lambda: len(sub.items) > 500, what="ticks on ZeroMQ")
        buf = g.handle(f"trades:{sym}")
        candles = g.handle(f"candles:{sym}")
        final = g.shutdown()
        sub.close()
    finally:
        if g.actors:
            g.shutdown()
    assert final["feed"]["error"] is None
    store = EventStore(connect(url))
    stored = store.events_between(sym, 0, 2**63 - 1, kinds=("tick", "book"))
    ticks = [e for e in stored if isinstance(e, Trade)]
    # Every event the feed stamped is in Valkey, exactly once, seq 1..N without holes.
    assert [e.seq for e in stored] == list(range(1, final["feed"]["seq"][sym] + 1))
    assert final["valkey_writer"]["dropped"] == 0
    # What a subscriber decoded equals what Valkey holds for the same seq, field by field.
    by_seq = {t["seq"]: t for t in trade_dicts(ticks)}
    assert all(topic == f"tick.{sym}".encode() for topic, _ in sub.items)
    got = [p for _, p in sub.items]
    assert len(got) > 500
    for p in got:
        assert p.pop("kind") == "tick"
        assert p == by_seq[p["seq"]]
    # ZeroMQ delivered in order without loss once the subscription was live.
    seqs = [p["seq"] for p in got]
    expected_tail = [t.seq for t in ticks if t.seq >= seqs[0]]
    assert seqs == expected_tail[: len(seqs)]
    del buf, candles


def test_sigkill_a_buffer_actor_mid_stream_and_it_returns_with_its_content(ray_session, valkey_server, tmp_path):
    import ray

    _, url = valkey_server
    cfg = make_cfg(tmp_path, simulator={"rate": 3000})
    sym = cfg.symbols[0]
    g = graph_for(cfg, url)
    try:
        buf = g.handle(f"trades:{sym}")
        wait_for(lambda: ray.get(buf.ping.remote())["size"] >= 1000, what="a full trade buffer")
        before = ray.get(buf.ping.remote())
        os.kill(before["pid"], signal.SIGKILL)
        after = wait_for(lambda: ping_new(buf, before["incarnation"]), timeout=60, what="the buffer's restart")
        assert after["pid"] != before["pid"]
        stats = ray.get(buf.stats.remote())
        assert stats["restored"] == 1000  # rebuilt from stream:ticks:<SYM> in its constructor
        time.sleep(1.0)  # keep streaming through the restarted actor
        notes = g.supervise()
        assert any("trades:" in n and "restarted" in n for n in notes)
        ray.get(g.handle("feed").stop.remote())
        ray.get(g.handle("valkey_writer").flush.remote())
        content = ray.get(buf.snapshot.remote())
        feed_stats = ray.get(g.handle("feed").stats.remote())
    finally:
        g.shutdown()
    store = EventStore(connect(url))
    last_1000 = store.tail(sym, "tick", 1000)
    assert len(content) == 1000
    assert content == last_1000  # nothing lost, nothing duplicated, in order
    assert feed_stats["unrecoverable_gaps"] == 0


def test_valkey_stopped_and_restarted_mid_run_loses_nothing(ray_session, own_valkey, tmp_path):
    server = own_valkey()
    url = server.url
    cfg = make_cfg(tmp_path)
    sym = cfg.symbols[0]
    g = graph_for(cfg, url)
    try:
        store = EventStore(connect(url))
        wait_for(lambda: store.last_seq(sym) > 1000, what="events in Valkey")
        server.stop()
        time.sleep(2.0)  # the feed keeps producing; the writer queues in memory
        server.restart_same_port()
        time.sleep(1.0)
        final = g.shutdown()
    finally:
        if g.actors:
            g.shutdown()
    store = EventStore(connect(url))
    stored = store.events_between(sym, 0, 2**63 - 1, kinds=("tick", "book"))
    n = final["feed"]["seq"][sym]
    assert n > 3000
    assert [e.seq for e in stored] == list(range(1, n + 1))
    assert final["valkey_writer"]["reconnects"] >= 1
    assert final["valkey_writer"]["dropped"] == 0


def test_supervisor_recreates_an_actor_that_died_for_good(ray_session, valkey_server, tmp_path):
    """ray.kill(no_restart=True) exhausts Ray's restarts; the supervisor must recreate
    the actor under its name, re-wire the feed, and the new actor rebuilds from Valkey."""
    import ray

    _, url = valkey_server
    cfg = make_cfg(tmp_path)
    sym = cfg.symbols[0]
    g = graph_for(cfg, url)
    try:
        name = f"book:{sym}"
        old = g.handle(name)
        wait_for(lambda: ray.get(old.ping.remote())["size"] >= 100, what="a full book buffer")
        ray.kill(old, no_restart=True)
        notes = wait_for(lambda: [n for n in g.supervise() if name in n and "recreating" in n], timeout=30, what="recreation")
        assert notes
        new = g.handle(name)
        assert new != old
        assert ray.get_actor(name, namespace=cfg.namespace) == new
        assert ray.get(new.stats.remote())["restored"] == 100
        time.sleep(1.0)  # the feed streams into the new actor
        ray.get(g.handle("feed").stop.remote())
        ray.get(g.handle("valkey_writer").flush.remote())
        content = ray.get(new.snapshot.remote())
    finally:
        g.shutdown()
    assert content == EventStore(connect(url)).tail(sym, "book", 100)
