"""End to end on real Ray, a real embedded Valkey and real ZeroMQ sockets.

Each test builds its own graph in its own namespace with its own symbol, so
streams and actor names never collide inside the one session cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import orjson
import pytest
import zmq

from pipelines.config import config_from_dict
from pipelines.model.messages import Trade
from pipelines.persistence.connection import connect
from pipelines.persistence.events import EventStore
from pipelines.persistence.server import EmbeddedValkey
from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EPHEMERAL_PORTS = {f"{k}_port": 0 for k in ("tick", "book", "flow", "footprint", "liquidity", "tape", "decision")}
_symbols = iter(f"WDO{m}{y}" for y in range(30, 99) for m in "FGHJKMNQUVXZ")


def make_cfg(tmp_path, features=None, hmarl=None, extra_symbols=(), **feed):
    """A one-symbol graph (plus ``extra_symbols``) on ephemeral ports. The FeatureEngine is
    off unless ``features`` is given: these tests are about the market-data path."""
    sym = next(_symbols)
    sim = {"seed": 11, "rate": 2000, "speed": 1.0, "start": "2026-11-23T10:00:00-03:00", **feed.pop("simulator", {})}
    return config_from_dict({
        "namespace": f"t{uuid.uuid4().hex[:8]}",
        "symbols": [sym, *extra_symbols],
        "feed": {"batch_max_ms": 5, "simulator": sim, **feed},
        "zmq": EPHEMERAL_PORTS,
        "recorder": {"enabled": True, "path": str(tmp_path / "rec"), "flush_seconds": 0.5},
        "supervisor": {"ping_timeout_s": 5.0},
        "features": features or {"enabled": False},
        "hmarl": hmarl or {"enabled": False},
    })


class TickCollector:
    """A subscriber that knows only pyzmq: receives two-frame messages and decodes the JSON."""

    def __init__(self, endpoint: str, prefix: bytes = b"tick."):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(endpoint)
        self.sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self.items: list[tuple[bytes, dict]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            if self.sock.poll(50):
                topic, payload = self.sock.recv_multipart()
                self.items.append((topic, orjson.loads(payload)))

    def close(self):
        self._stop.set()
        self._t.join(2)
        self.sock.close(linger=0)
        self.ctx.term()


def wait_for(pred, timeout=30.0, every=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def graph_for(cfg, url):
    from actors.wiring import MarketDataGraph

    g = MarketDataGraph(cfg, url)
    g.start()
    return g


def trade_dicts(events):
    return [e._asdict() for e in events if isinstance(e, Trade)]


def test_events_reach_valkey_and_zeromq_identically(ray_session, valkey_server, tmp_path):
    _, url = valkey_server
    cfg = make_cfg(tmp_path)
    sym = cfg.symbols[0]
    g = graph_for(cfg, url)
    try:
        sub = TickCollector(g.zmq_endpoints["tick"])
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
        after = wait_for(lambda: _ping_new(buf, before["incarnation"]), timeout=60, what="the buffer's restart")
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


def _ping_new(handle, old_incarnation):
    import ray
    from ray.exceptions import RayActorError

    try:
        info = ray.get(handle.ping.remote(), timeout=5)
    except RayActorError:
        return None
    return info if info["incarnation"] != old_incarnation else None


def test_valkey_stopped_and_restarted_mid_run_loses_nothing(ray_session, tmp_path):
    server = EmbeddedValkey(tmp_path / "valkey")
    url = server.start()
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
    server.stop()


def test_launch_streams_prints_ready_and_stops_cleanly_on_sigint(valkey_server, tmp_path):
    """The user's path: scripts/launch.py on its own Ray, Ctrl-C, exit 0."""
    _, url = valkey_server
    sym = next(_symbols)
    cfg_file = tmp_path / "launch.yaml"
    cfg_file.write_text(
        f"symbols: [{sym}]\n"
        "feed: {simulator: {rate: 1000, start: '2026-11-23T10:00:00-03:00'}}\n"
        f"valkey: {{url: '{url}'}}\n"
        "zmq: {tick_port: 0, book_port: 0, flow_port: 0, footprint_port: 0, liquidity_port: 0, tape_port: 0}\n"
        f"recorder: {{path: '{tmp_path / 'rec'}'}}\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "launch.py"), "--config", str(cfg_file), "--address", "local",
         "--no-dashboard", "--object-store-mb", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )
    lines = []
    try:
        ready = None
        deadline = time.monotonic() + 120
        while ready is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("READY "):
                ready = orjson.loads(line[len("READY "):])
        assert ready is not None, "".join(lines[-30:])
        assert ready["symbols"] == [sym] and ready["namespace"] == "quantumtrader"
        assert {"feed", "valkey_writer", "zmq_publisher", "recorder", f"trades:{sym}", f"book:{sym}", f"candles:{sym}"} <= set(ready["actors"])
        assert ready["valkey_url"] == url and ready["zmq"]["tick"].startswith("tcp://127.0.0.1:")
        sub = TickCollector(ready["zmq"]["tick"])
        wait_for(lambda: len(sub.items) >= 200, what="ticks from the launched system")
        sub.close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
        lines.append(out)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    assert proc.returncode == 0, text[-3000:]
    stopped = [l for l in text.splitlines() if l.startswith("STOPPED ")]
    assert stopped, text[-3000:]
    summary = orjson.loads(stopped[0][len("STOPPED "):])
    store = EventStore(connect(url))
    assert store.last_seq(sym) == summary["events"]  # drained: everything the feed made is in Valkey
    received = sub.items[0][1]
    stored = {t.seq: t for t in store.tail(sym, "tick", 100_000)}
    assert stored[received["seq"]].price == received["price"]


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
