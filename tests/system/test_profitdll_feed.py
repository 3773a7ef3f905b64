"""``feed.source: profitdll`` on real Ray with the native fake ProfitDLL (tests/fake_profitdll).

The FeedActor hosts the DLL in a supervised child process (scripts/feed_bridge.py through
pipelines.adapters.bridge.host.HostedBridge). Everything is real: Ray actors, the embedded Valkey, ZeroMQ
between the child and the actor, the compiled fake firing callbacks from its own native thread.
The reference is what the fake wrote to its sent log (FAKE_PROFITDLL_SENT_LOG) before each
callback, compared with what reached Valkey and the TradeBuffer.

How the settings reach the DLL: ``dll_path`` and ``credentials_file`` (a file in tmp_path,
outside the repo) come from the config. The fake's own switches (FAKE_PROFITDLL_*) are
environment variables of the DLL host process, which inherits the FeedActor's environment; a
Ray worker's environment is its node's (fixed when the session's Ray started), so the graph
here gives the feed actor a ``runtime_env`` with them, as ``ray start`` on the Windows node
would. The multi-node placement test runs a ``ray.cluster_utils.Cluster`` in a child process
(tests/cluster_profitdll.py), where credentials and PROFITDLL_PATH come from the nodes'
environment instead.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from actors.wiring import MarketDataGraph, PlacementError, check_feed_placement
from pipelines.config import config_from_dict
from pipelines.model.messages import BookSnapshot, Trade
from pipelines.persistence.connection import connect
from pipelines.persistence.events import EventStore
from tests.helpers import EPHEMERAL_PORTS, REPO, run_launch, wait_for
from tests.profitdll_fake import B3, CREDENTIALS, fake_env, fresh_copy, levels_of, ns_of, ns_of_ddmm, read_sent_log

pytestmark = [pytest.mark.ray, pytest.mark.slow]

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux
# WIN contracts far in the future: no other test module streams them into the session Valkey.
_symbols = iter(f"WIN{m}{y}" for y in range(80, 99) for m in "FGHJKMNQUVXZ")


# -- references from the fake's sent log -----------------------------------------------------------


def processes(rows: list[dict]) -> list[list[dict]]:
    """The sent log split per DLL process: every process's counter ``n`` starts again at 1."""
    out: list[list[dict]] = []
    for r in rows:
        if r["n"] == "1":
            out.append([])
        out[-1].append(r)
    return out


def expected_stream(rows: list[dict], symbol: str) -> list[tuple]:
    """What the pipeline must carry for one DLL process: each non-edit trade and a book snapshot
    per offer-book callback (edits are audit-only), as comparable tuples. A snapshot's event time
    is the newest exchange time seen so far (trade times, add dates); before any there is no
    snapshot (the session keeps the book and sends it with the first exchange time)."""
    out = []
    newest = None
    for r in rows:
        if r.get("ticker") != symbol:
            continue
        if r["kind"] == "trade" and r["flags"] == "0":
            ts = ns_of(r["date"])
            newest = ts if newest is None else max(newest, ts)
            out.append(("tick", ts, float(r["price"]), int(r["qty"]), int(r["type"]), int(r["buy"]), int(r["sell"]),
                        int(r["number"])))
        elif r["kind"] == "book":
            if r["action"] == "0" and r["date"] not in ("", "-"):
                ts = ns_of_ddmm(r["date"])
                newest = ts if newest is None else max(newest, ts)
            if newest is not None:  # no snapshot leaves before the first exchange time
                out.append(("book", newest, *levels_of(r["bids"]), *levels_of(r["asks"])))
    return out


def as_tuple(ev) -> tuple:
    if isinstance(ev, Trade):
        return ("tick", ev.ts_event, ev.price, ev.qty, ev.trade_type, ev.buyer, ev.seller, ev.trade_id)
    assert isinstance(ev, BookSnapshot), ev
    return ("book", ev.ts_event, ev.bid_px, ev.bid_qty, ev.ask_px, ev.ask_qty)


def stored_in_seq_order(url: str, symbol: str) -> list:
    events = EventStore(connect(url)).events_between(symbol, 0, 2**63 - 1, kinds=("tick", "book"))
    return sorted(events, key=lambda e: e.seq)


# -- credential leaks -------------------------------------------------------------------------------


def files_containing(roots, secrets) -> dict[str, list[str]]:
    """Regular files under ``roots`` holding any of ``secrets`` (UTF-8 bytes) -> which ones (names only)."""
    needles = {name: v.encode("utf-8") for name, v in secrets.items()}
    hits: dict[str, list[str]] = {}
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                p = Path(dirpath) / f
                try:
                    if not p.is_file() or p.is_symlink():
                        continue
                    data = p.read_bytes()
                except OSError:
                    continue
                found = [name for name, b in needles.items() if b in data]
                if found:
                    hits[str(p)] = found
    return hits


class SentLogPipe:
    """The fake's sent log through a named pipe, gathered by a thread.

    Each DLL process opens the log path with O_TRUNC, so after a host restart a plain file
    would hold only the last process's lines. A pipe cannot be truncated: every process's lines
    arrive here, in order (the fake blocks on a full pipe rather than lose a line)."""

    def __init__(self, path: Path):
        self.path = path
        os.mkfifo(path, 0o600)
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # open before any writer: theirs never blocks
        try:
            fcntl.fcntl(self._fd, F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass  # a smaller pipe only slows the fake's thread down
        self._data = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sent-log-pipe", daemon=True)
        self._thread.start()

    def _read_available(self) -> int:
        """Bytes read now; 0 when no DLL process has the pipe open (between two of them)."""
        try:
            chunk = os.read(self._fd, 1 << 20)
        except BlockingIOError:  # a writer, nothing written yet
            return -1
        with self._lock:
            self._data += chunk
        return len(chunk)

    def _run(self) -> None:
        while not self._stop.is_set():
            select.select([self._fd], [], [], 0.05)
            if self._read_available() == 0:
                time.sleep(0.01)

    def rows(self) -> list[dict]:
        """The complete lines so far, parsed like :func:`read_sent_log`."""
        with self._lock:
            data = bytes(self._data)
        text = data[:data.rfind(b"\n") + 1].decode("ascii")
        return [dict(f.split("=", 1) for f in line.split("\t")) for line in text.splitlines() if line]

    def close(self) -> list[dict]:
        self._stop.set()
        self._thread.join(5)
        while self._read_available() > 0:
            pass
        os.close(self._fd)
        return self.rows()


def valkey_values_containing(url: str, secrets) -> list[str]:
    """Keys of the Valkey at ``url`` whose content (any type) holds one of ``secrets``."""
    client = connect(url)
    needles = [v.encode("utf-8") for v in secrets.values()]
    hits = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"stream":
            items = [b"".join(k + v for k, v in fields.items()) for _id, fields in client.xrange(key)]
        elif kind == b"string":
            items = [client.get(key) or b""]
        elif kind == b"hash":
            items = [k + v for k, v in client.hgetall(key).items()]
        elif kind == b"list":
            items = client.lrange(key, 0, -1)
        elif kind in (b"set", b"zset"):
            items = list(client.smembers(key)) if kind == b"set" else client.zrange(key, 0, -1)
        else:
            items = []
        if any(n in key or any(n in item for item in items) for n in needles):
            hits.append(key.decode("utf-8", "replace"))
    client.close()
    return hits


def session_dir() -> Path:
    import ray

    return Path(ray._private.worker._global_node.get_session_dir_path())


def log_text(root: Path) -> str:
    parts = []
    for p in sorted((root / "logs").rglob("*")):
        if p.is_file() and p.suffix in (".out", ".err", ".log"):
            parts.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


# -- set-up -----------------------------------------------------------------------------------------


@pytest.fixture()
def creds_file(tmp_path) -> Path:
    p = tmp_path / "profit.env"
    p.write_text("".join(f"{k}={v}\n" for k, v in CREDENTIALS.items()), encoding="utf-8")
    p.chmod(0o600)
    return p


def profitdll_cfg(tmp_path, dll: Path | None, creds: Path | None, **profitdll):
    """A one-symbol market-data graph fed by the DLL host, without features or agents.

    The fake's market clock starts now (:func:`fake_settings`), like a live session's; every DLL
    process replays it from that start, so after a host restart event time steps back: the
    validator's tolerance is widened to an hour to keep that ordering check out of these tests."""
    pd = {"resource": None, "ready_timeout_s": 30, "heartbeat_timeout_s": 3.0, "backoff_initial_s": 0.2,
          "backoff_max_s": 1.0, **profitdll}
    if dll is not None:
        pd["dll_path"] = str(dll)
    if creds is not None:
        pd["credentials_file"] = str(creds)
    return config_from_dict({
        "namespace": f"p{uuid.uuid4().hex[:8]}",
        "symbols": [next(_symbols)],
        "feed": {"source": "profitdll", "batch_max_ms": 5, "time_tolerance_ms": 3_600_000, "profitdll": pd},
        "buffers": {"trades": 100_000},
        "zmq": EPHEMERAL_PORTS,
        "recorder": {"enabled": False},
        "supervisor": {"ping_timeout_s": 5.0},
        "features": {"enabled": False},
        "hmarl": {"enabled": False},
    })


def fake_settings(**settings) -> dict[str, str]:
    """FAKE_PROFITDLL_* variables, with the market clock starting now in B3 local time (the
    fake's default day, 2025-08-04, is far behind the clock the rest of the run uses)."""
    start = datetime.now(B3).strftime("%Y-%m-%d %H:%M:%S")
    return fake_env(start=start, state_delay_us=20, **settings)


class NodeEnvGraph(MarketDataGraph):
    """The graph, with ``node_env`` in the feed actor's environment (what the node's environment
    gives it in production: the session's Ray was started before this test chose its settings)."""

    def __init__(self, cfg, valkey_url, node_env: dict[str, str]):
        super().__init__(cfg, valkey_url)
        self.node_env = node_env

    def _feed_spec(self):
        spec = super()._feed_spec()
        spec.options = {**spec.options, "runtime_env": {"env_vars": dict(self.node_env)}}
        return spec


def market_rows(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for r in read_sent_log(path) if r["kind"] in ("trade", "book", "daily"))


# -- tests ------------------------------------------------------------------------------------------


def test_every_event_the_dll_sent_reaches_valkey_once_in_order(ray_session, valkey_server, fake_so, tmp_path,
                                                               creds_file):
    import ray

    _, url = valkey_server
    sent_log = tmp_path / "sent.log"
    total = 4000  # market callbacks (trades, book, daily) for the one ticker, then the fake stops
    cfg = profitdll_cfg(tmp_path, fresh_copy(fake_so, tmp_path), creds_file)
    sym = cfg.symbols[0]
    env = fake_settings(rate=5000, events=total, seed=23, sent_log=sent_log, log_depth=10)
    g = NodeEnvGraph(cfg, url, env)
    g.start(timeout_s=60)
    try:
        feed = g.handle("feed")
        wait_for(lambda: market_rows(sent_log) >= total, timeout=30, what="the fake to send everything")
        expected = expected_stream(read_sent_log(sent_log), sym)
        wait_for(lambda: ray.get(feed.stats.remote())["events_out"] >= len(expected), timeout=30,
                 what="the feed to stamp every event")
        n_trades = sum(w[0] == "tick" for w in expected)
        buf = g.handle("trades:" + sym)
        wait_for(lambda: ray.get(buf.ping.remote())["size"] >= n_trades, timeout=30, what="the trade buffer")
        buffered = ray.get(buf.snapshot.remote())
        final = g.shutdown()
    finally:
        if g.actors:
            g.shutdown()
    feed_stats = final["feed"]
    assert feed_stats["error"] is None
    assert feed_stats["validation"]["rejected"] == {}
    src = feed_stats["source"]
    assert (src["gaps"], src["lost_events"], src["duplicates"], src["restarts"], src["incarnation_changes"]) == (0, 0, 0, 0, 0)
    assert src["exit_codes"] == [] and src["last_exit"] == "exit code 0"  # SIGTERM -> DLLFinalize -> clean exit

    rows = read_sent_log(sent_log)
    assert len(processes(rows)) == 1  # one DLL process, never restarted
    assert sum(r["kind"] == "trade" and r["flags"] == "1" for r in rows) > 0  # edits were sent (and not re-emitted)
    stored = stored_in_seq_order(url, sym)
    # Exactly once, in order: seq 1..N without holes, one stored event per sent callback.
    assert [e.seq for e in stored] == list(range(1, len(expected) + 1))
    assert feed_stats["seq"][sym] == len(expected)
    for i, (ev, want) in enumerate(zip(stored, expected)):
        assert as_tuple(ev) == want, (i, ev, want)
    trades = [e for e in stored if isinstance(e, Trade)]
    assert len(trades) == sum(w[0] == "tick" for w in expected) > 1000
    assert any(t.qty > 2**31 for t in trades)  # int64 quantities survive the whole path
    # The TradeBuffer holds the same trades with the same seqs (it is sized to keep them all).
    assert buffered == trades
    # Finalize ran in the child: its last states are the connection-ending ones.
    assert [(r["type"], r["result"]) for r in rows[-3:]] == [("2", "0"), ("1", "0"), ("0", "1")]
    assert files_containing([session_dir()], CREDENTIALS) == {}
    assert valkey_values_containing(url, CREDENTIALS) == []


def test_host_segfault_is_survived_with_a_counted_gap(ray_session, valkey_server, fake_so, tmp_path, creds_file):
    import ray

    _, url = valkey_server
    sent_log = SentLogPipe(tmp_path / "sent.log")
    crash_after = 2500  # every DLL process segfaults after this many market callbacks
    cfg = profitdll_cfg(tmp_path, fresh_copy(fake_so, tmp_path), creds_file)
    sym = cfg.symbols[0]
    env = fake_settings(rate=5000, seed=31, sent_log=sent_log.path, crash_after=crash_after)
    g = NodeEnvGraph(cfg, url, env)
    g.start(timeout_s=60)
    try:
        feed = g.handle("feed")

        def resumed():
            src = ray.get(feed.stats.remote())["source"]
            # The restarted host's stream is being read: events after the first incarnation's.
            return src["history"] and src["events_delivered"] > src["history"][0]["delivered"] + 300 and src

        wait_for(resumed, timeout=40, what="the stream to resume after the crash")
        final = g.shutdown()
        log_lines = log_text(session_dir())
    finally:
        if g.actors:
            g.shutdown()
        rows = sent_log.close()
    feed_stats = final["feed"]
    src = feed_stats["source"]
    assert feed_stats["error"] is None and feed_stats["validation"]["rejected"] == {}
    procs = processes(rows)
    crashed = [p for p in procs if p[-1]["kind"] == "crash"]
    assert len(crashed) >= 1
    for p in crashed:
        assert p[-1]["reason"] == "crash_after"
        assert sum(r["kind"] in ("trade", "book", "daily") for r in p) == crash_after
    # Each crash was seen as a SIGSEGV exit and followed by a restart.
    # (a crash in the last moments before the stop may not have been seen yet)
    assert src["exit_codes"] == [-11] * len(src["exit_codes"]) and len(crashed) - 1 <= len(src["exit_codes"]) <= len(crashed)
    assert src["exit_codes"] and src["restarts"] >= 1
    assert src["restarts"] in (len(procs) - 1, len(procs))  # the last child may not have reached the DLL yet
    assert src["incarnation_changes"] == len(src["history"]) >= 1

    # Valkey: seq 1..N once each; the events of each DLL process in the order it sent them, from
    # its first callback; what the crash swallowed is missing, never duplicated.
    stored = stored_in_seq_order(url, sym)
    assert [e.seq for e in stored] == list(range(1, feed_stats["seq"][sym] + 1))
    delivered = [h["delivered"] for h in src["history"]]
    pos = 0
    for i, p in enumerate(procs):
        want = expected_stream(p, sym)
        n = delivered[i] if i < len(delivered) else (len(stored) - pos if i == len(delivered) else 0)
        part = stored[pos:pos + n]
        assert len(part) == n
        for ev, w in zip(part, want):
            assert as_tuple(ev) == w, (i, ev, w)
        assert n <= len(want)
        if i < len(src["history"]):
            h = src["history"][i]
            # announced = delivered + counted lost; the counted gap never exceeds what the DLL really sent
            assert h["announced"] == h["delivered"] + h["lost"]
            assert h["lost"] <= len(want) - n
        pos += n
    assert pos == len(stored)
    assert delivered[0] > 0 and len(stored) - delivered[0] > 300  # the stream resumed after the crash
    assert src["lost_events"] == sum(h["lost"] for h in src["history"])
    # The supervisor's log lines reach Ray's worker logs (so the scan below reads the right files),
    # and no credential value is in any of them.
    assert "killed by SIGSEGV" in log_lines
    assert files_containing([session_dir()], CREDENTIALS) == {}


def test_bridge_child_output_never_shows_the_credentials(fake_so, tmp_path):
    """The DLL host as HostedBridge runs it (credentials in its environment, stdin held open),
    at DEBUG: login, stream, stop. Its whole stdout and stderr hold no credential value."""
    sent_log = tmp_path / "sent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_PROFITDLL_", "PROFIT_"))}
    env.update(CREDENTIALS)
    # The fake refuses the login unless each value arrives intact.
    env.update(fake_settings(rate=5000, events=1500, sent_log=sent_log, expect_key=CREDENTIALS["PROFIT_KEY"],
                             expect_user=CREDENTIALS["PROFIT_USER"], expect_password=CREDENTIALS["PROFIT_PASSWORD"]))
    out_path, err_path = tmp_path / "bridge.out", tmp_path / "bridge.err"
    with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:
        proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "feed_bridge.py"), "--source", "profitdll",
                                 "--symbols", "WINZ98", "--pub", "tcp://127.0.0.1:0", "--rep", "tcp://127.0.0.1:0",
                                 "--dll-path", str(fresh_copy(fake_so, tmp_path)), "--exit-with-parent",
                                 "--log-level", "DEBUG"],
                                stdin=subprocess.PIPE, stdout=out_f, stderr=err_f, env=env, cwd=REPO)
    try:
        wait_for(lambda: market_rows(sent_log) >= 1500 or proc.poll() is not None, timeout=30, what="the stream")
        proc.send_signal(signal.SIGTERM)  # HostedBridge.stop: SIGTERM, then stdin EOF
        proc.stdin.close()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = out_path.read_bytes(), err_path.read_bytes()
    text = (out + err).decode("utf-8", "replace")
    assert proc.returncode == 0, text[-3000:]  # a clean stop: DLLFinalize, then exit 0
    assert market_rows(sent_log) == 1500 and "READY " in text and "DLLFinalize" in text
    for value in CREDENTIALS.values():
        assert value.encode() not in out + err


def test_refused_login_fails_the_feed_plainly_and_never_shows_the_credentials(ray_session, valkey_server, fake_so,
                                                                              tmp_path, creds_file):
    _, url = valkey_server
    cfg = profitdll_cfg(tmp_path, fresh_copy(fake_so, tmp_path), creds_file)
    # The "server" expects another password: login result 2 (wrong password), exit code 2, no retry.
    g = NodeEnvGraph(cfg, url, fake_settings(rate=5000, expect_password="another-password"))
    t0 = time.monotonic()
    try:
        with pytest.raises(Exception) as info:
            g.start(timeout_s=60)
        took = time.monotonic() - t0
    finally:
        g.shutdown(timeout_s=10)
    msg = str(info.value)
    assert "ProfitLoginError" in msg and "exited before it was ready (exit code 2)" in msg, msg[-2000:]
    assert took < 45
    for value in CREDENTIALS.values():
        assert value not in msg and value not in repr(info.value)
    assert files_containing([session_dir()], CREDENTIALS) == {}


def test_no_node_offers_the_resource_fails_at_once_and_plainly(ray_session, valkey_server, tmp_path):
    import ray

    _, url = valkey_server
    cfg = profitdll_cfg(tmp_path, None, None, resource="profitdll")
    assert ray.cluster_resources().get("profitdll", 0) == 0
    t0 = time.monotonic()
    with pytest.raises(PlacementError) as info:
        check_feed_placement(cfg)
    g = MarketDataGraph(cfg, url)
    with pytest.raises(PlacementError):
        g.start(timeout_s=60)
    assert time.monotonic() - t0 < 5.0  # no actor pending forever
    assert g.actors == {}  # nothing was created
    msg = str(info.value)
    assert "'profitdll'" in msg and "ray start --address" in msg and "--resources" in msg
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1" in msg and "\n" not in msg


def test_launch_reports_the_placement_error_and_exits_2(ray_session, valkey_server, tmp_path):
    _, url = valkey_server
    config = tmp_path / "profitdll.yaml"
    config.write_text(
        "symbols: [WDOZ26]\n"
        f"valkey: {{url: '{url}'}}\n"
        "feed: {source: profitdll}\n"
        "recorder: {enabled: false}\nfeatures: {enabled: false}\nhmarl: {enabled: false}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(CREDENTIALS)
    # Join the session's Ray (it offers no "profitdll"): quicker than starting a private one.
    address = ray_session.address_info["gcs_address"]
    t0 = time.monotonic()
    proc = run_launch("--config", str(config), "--address", address, "--no-dashboard", cwd=REPO, timeout=120, env=env)
    took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("placement error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "'profitdll'" in lines[0] and "--resources" in lines[0] and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" in lines[0]
    assert "READY" not in proc.stdout
    assert took < 60
    for value in CREDENTIALS.values():
        assert value not in proc.stdout and value not in proc.stderr


def test_feed_actor_lands_on_the_profitdll_node_and_returns_there(fake_so, tmp_path):
    """3-node Cluster in a child process (the session already has a Ray): see tests/cluster_profitdll.py."""
    dll = fresh_copy(fake_so, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("FAKE_PROFITDLL_")}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "cluster_profitdll.py"), str(dll), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = orjson.loads(lines[-1][len("RESULT "):])
    # Without the node: a plain error at once, naming the resource and how to offer it.
    assert r["placement_error_s"] < 5.0
    assert "'profitdll'" in r["placement_error"] and "--resources" in r["placement_error"]
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" in r["placement_error"]
    assert r["graph_start_error"] == r["placement_error"]
    # With it: the feed actor runs on that node and nowhere else, before and after a SIGKILL.
    assert r["feed_node"] == r["profitdll_node"]
    assert r["feed_node"] not in (r["head"], r["plain_worker"])
    assert r["events_before_kill"] > 300
    assert r["restarted_pid"] != r["killed_pid"] and r["incarnation_changed"]
    assert r["feed_node_after"] == r["profitdll_node"]
    assert r["events_after_restart"] > 300  # the restarted actor's own DLL host streams again
    assert r["stored_after"] > r["stored_at_kill"]
    assert r["old_host_exited"] is True  # the killed actor's DLL host did not linger
    assert r["seq_unique"] is True and r["feed_error"] is None
    assert files_containing(r["session_dirs"] + [str(tmp_path / "cluster")], CREDENTIALS) == {}
    assert time.monotonic() - t0 < 240
