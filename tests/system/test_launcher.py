"""The user's path through scripts/launch.py: READY, streaming, Ctrl-C, STOPPED, exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from pipelines.persistence.connection import connect
from pipelines.persistence.events import EventStore
from tests.helpers import REPO, SESSION_START, ZmqCollector, graph_symbol, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_launch_streams_prints_ready_and_stops_cleanly_on_sigint(valkey_server, tmp_path):
    """The user's path: scripts/launch.py on its own Ray, Ctrl-C, exit 0."""
    _, url = valkey_server
    sym = graph_symbol()
    cfg_file = tmp_path / "launch.yaml"
    cfg_file.write_text(
        f"symbols: [{sym}]\n"
        f"feed: {{simulator: {{rate: 1000, start: '{SESSION_START}'}}}}\n"
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
        sub = ZmqCollector(ready["zmq"]["tick"])
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
    # What the ML voter serves, and what it is worth, said once at start (pipelines.training.registry).
    assert len([l for l in text.splitlines() if l.startswith("ml model: ")]) == 1, text[-3000:]
    summary = orjson.loads(stopped[0][len("STOPPED "):])
    store = EventStore(connect(url))
    assert store.last_seq(sym) == summary["events"]  # drained: everything the feed made is in Valkey
    received = sub.items[0][1]
    stored = {t.seq: t for t in store.tail(sym, "tick", 100_000)}
    assert stored[received["seq"]].price == received["price"]
