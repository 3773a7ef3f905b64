"""What the tests share: paths, event-time constants, one ``wait_for``, seeded simulator days,
builders of records several test modules write, and the pieces of a real graph run (config,
graph, ZeroMQ collector).

Fixtures live in ``tests/conftest.py``; this module holds plain functions and classes, so the
cluster scripts (``tests/cluster_*.py``, run as their own processes with the repository on
``sys.path``) can import it too.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import orjson
import zmq

from pipelines.data.sequencing import BatchReply, SeqGate
from pipelines.model.messages import Decision, Signal, Trade
from pipelines.persistence.config import ValkeyConfig

REPO = Path(__file__).resolve().parent.parent
# The real CME ES tape lives beside the repository; tests that need it skip when it is absent.
SHARED_DATA = REPO.parent / "shared" / "data"
ES_FILE = SHARED_DATA / "cme_es_20220124_tbt.csv"

# An event-time origin for tests where the instant itself does not matter, only differences
# from it: 2026-01-01T00:00:00Z. A whole minute (candles and footprint bars open on it), and
# before the simulated days, so records stamped from it never run ahead of theirs in a stream
# the session's Valkey shares (stream ids follow event time and never go back).
T0 = 1_767_225_600_000_000_000

# A Monday, 10:00 in Sao Paulo (13:00 UTC, no DST since 2019): inside the B3 session. The
# simulated days of the tests start here; tests of session-aware code build their events here.
SESSION_START = "2026-11-23T10:00:00-03:00"
SESSION_T0 = int(datetime(2026, 11, 23, 13, 0, tzinfo=timezone.utc).timestamp()) * 1_000_000_000

# Every ZeroMQ publisher on a port the OS picks: tests run side by side in one session.
EPHEMERAL_PORTS = {f"{k}_port": 0 for k in ("tick", "book", "flow", "footprint", "liquidity", "tape", "decision")}

# wait_for's settings while an actor may be restarting: a failed call to it means "not yet".
WHILE_RESTARTING = dict(every=0.2, retry_on=(Exception,))

# Writers that give up and reconnect quickly: outage tests then take a second, not a minute.
FAST_RECONNECT = dict(reconnect_initial_s=0.02, reconnect_max_s=0.2, socket_timeout_s=1.0)


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, every: float = 0.1,
             what: str | Callable[[], str] = "condition", *, poll: Callable[[], Any] | None = None,
             retry_on: tuple[type[BaseException], ...] = ()) -> Any:
    """Call ``pred`` until it returns something true, and return that.

    Between two tries ``poll`` runs (to pump what the condition depends on: a socket, a
    session) and then the caller sleeps ``every`` seconds. After ``timeout`` seconds it fails
    with an AssertionError naming ``what`` (a callable is asked then, so the message can show
    the state at that moment). Exceptions of the types in ``retry_on`` count as "not yet" (an
    actor that is restarting).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = pred()
        except retry_on:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        if poll is not None:
            poll()
        if every:
            time.sleep(every)


def unique_name(prefix: str) -> str:
    """``prefix`` and 8 random hex digits: a symbol, voter or key no other test uses on the shared Valkey."""
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (the scripts are not a package), to call its functions."""
    spec = importlib.util.spec_from_file_location(f"qt_script_{name}", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_launch(*args: str, cwd=None, timeout: float = 60.0, env: dict | None = None) -> subprocess.CompletedProcess:
    """``scripts/launch.py *args`` run to its end: exit code, stdout and stderr (text)."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / "launch.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


# -- a 2-node Ray cluster in a child process ---------------------------------------------------


def on_two_nodes(work: Callable[[], dict]) -> None:
    """In a child process: ``work()`` on a ``ray.cluster_utils.Cluster`` of a head and one worker
    (1 CPU, 150 MB each), its result printed as ``RESULT <json>`` with the two node ids added."""
    import json

    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 150 * 2**20})
    worker = cluster.add_node(num_cpus=1, object_store_memory=150 * 2**20)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        out = {"head": cluster.head_node.node_id, "worker": worker.node_id, **work()}
    finally:
        ray.shutdown()
        cluster.shutdown()
    print("RESULT " + json.dumps(out), flush=True)


def child_result(module: str, *args: str, timeout: float) -> dict:
    """Run ``python -m module cluster args...`` (without RAY_ADDRESS) and return its RESULT json."""
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", module, "cluster", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


# -- market data --------------------------------------------------------------------------------


def simulated_events(seed: int, rate: float, max_events: int, symbol: str = "WDOZ26",
                     start: str = SESSION_START) -> list:
    """A seeded simulator day as fast as possible, seq-stamped per symbol as the feed does."""
    from pipelines.adapters.config import SimulatorConfig
    from pipelines.adapters.simulator import MarketSimulator

    sim = MarketSimulator(SimulatorConfig(seed=seed, rate=rate, speed=0.0, start=start, max_events=max_events), [symbol])
    events: list = []
    while not sim.exhausted:
        events.extend(sim.poll(5000))
    return [e._replace(seq=i + 1) for i, e in enumerate(events)]


def drain(source, max_events: int = 1000, timeout: float = 10.0) -> list:
    """Everything a finite source (a replay) yields until it is exhausted."""
    out: list = []
    wait_for(lambda: source.exhausted, timeout, 0.0005, "the replay to finish",
             poll=lambda: out.extend(source.poll(max_events)))
    return out


def trades(symbol: str, n: int, start_seq: int = 1) -> list[Trade]:
    """``n`` buy-aggressor trades 0.25 ms apart from T0, prices cycling over nine ticks."""
    return [Trade(symbol, T0 + i * 250_000, T0 + i * 250_000 + 1, start_seq + i, 5400.0 + 0.5 * (i % 9), 1 + i % 7, 2)
            for i in range(n)]


class Sink:
    """A destination that keeps what it accepts, behind the real sequence protocol."""

    def __init__(self, positions: dict[str, int] | None = None):
        self.incarnation = uuid.uuid4().hex
        self.gate = SeqGate(positions)
        self.events: list = []
        self.batches = 0

    def on_batch(self, events, prev):
        self.batches += 1
        good, resync = self.gate.admit(events, prev)
        self.events.extend(good)
        return BatchReply(self.incarnation, len(good), self.gate.duplicates, resync)

    def position(self):
        return dict(self.gate.position)

    def received(self):
        return list(self.events)


# -- HMARL records ----------------------------------------------------------------------------------


def writer_cfg(**kw) -> ValkeyConfig:
    """A StreamWriter's config: a long stream, reconnecting quickly."""
    return ValkeyConfig(**{"maxlen": 1_000_000, "flush_max_events": 500, **FAST_RECONNECT, **kw})


def vote(agent: str, direction: float, confidence: float, ts: int = T0, seq: int = 1, price: float = 5400.0,
         symbol: str = "WDOZ26", horizon: int = 60 * 1_000_000_000, action: str = "act") -> Signal:
    """A voter's Signal, as the consensus and the feedback system take it (reason ``<agent>-reason``)."""
    return Signal(agent, symbol, ts, seq, direction, confidence, horizon, price, (f"{agent}-reason",), action=action)


def hmarl_decision(sym: str, seq: int, ts: int) -> Decision:
    """A BUY 2 of two voters, with a NaN in its features (stored as null) and nested reasons."""
    return Decision(f"{sym}-{seq}", sym, ts, seq, "BUY", 2, 0.42, 0.7, 5000.5, 60 * 1_000_000_000,
                    ({"agent": "order_flow", "direction": 1.0, "confidence": 0.8, "weight": 0.6,
                      "reasons": ("ofi_5m>0", "vpin<0.4")},
                     {"agent": "ml", "direction": -0.25, "confidence": 0.5, "weight": 0.4, "reasons": ()}),
                    {"order_flow": 0.6, "ml": 0.4}, {"spread_ticks": 1.0, "vpin": math.nan}, "")


# -- a real graph --------------------------------------------------------------------------------

# WDO contracts years ahead, one per graph: streams and actor names never collide in the session.
_graph_symbols = iter(f"WDO{m}{y}" for y in range(30, 99) for m in "FGHJKMNQUVXZ")


def graph_symbol() -> str:
    """A WDO contract no other graph of this test session uses."""
    return next(_graph_symbols)


def make_cfg(tmp_path, features=None, hmarl=None, extra_symbols=(), **feed):
    """A one-symbol graph (plus ``extra_symbols``) on ephemeral ports. The FeatureEngine is
    off unless ``features`` is given: these tests are about the market-data path."""
    from pipelines.config import config_from_dict

    sym = graph_symbol()
    sim = {"seed": 11, "rate": 2000, "speed": 1.0, "start": SESSION_START, **feed.pop("simulator", {})}
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


def graph_for(cfg, url):
    """The started MarketDataGraph of ``cfg`` on the Valkey at ``url``."""
    from actors.wiring import MarketDataGraph

    g = MarketDataGraph(cfg, url)
    g.start()
    return g


def ping_new(handle, old_incarnation):
    """The actor's ping once it answers from another incarnation than ``old_incarnation``, else None
    (also while a restarted actor is still busy with the calls Ray re-sent to it)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        info = ray.get(handle.ping.remote(), timeout=5)
    except (RayActorError, GetTimeoutError):
        return None
    return info if info["incarnation"] != old_incarnation else None


class ZmqCollector:
    """A subscriber that knows only pyzmq, in a thread: keeps each two-frame message (topic,
    decoded JSON) and its arrival time (monotonic)."""

    def __init__(self, endpoint: str, prefix: bytes = b"tick."):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(endpoint)
        self.sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self.items: list[tuple[bytes, dict]] = []
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            if self.sock.poll(50):
                topic, payload = self.sock.recv_multipart()
                self.arrivals.append(time.monotonic())
                self.items.append((topic, orjson.loads(payload)))

    def close(self):
        self._stop.set()
        self._t.join(2)
        self.sock.close(linger=0)
        self.ctx.term()
