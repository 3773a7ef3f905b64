"""The feed bridge end to end: real ZeroMQ sockets on ephemeral ports, the real simulator.

References are independent of the bridge code: what the producer actually
emitted (recorded by a tee around the simulator), a second simulator with the
same seed, what the server's test-only drop hook withheld, and hand-written
wire rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import zmq

from pipelines.adapters.bridge import protocol as P
from pipelines.adapters.bridge.client import BridgeClient
from pipelines.adapters.bridge.host import BridgeStartError, HostedBridge
from pipelines.adapters.bridge.server import BridgeServer
from pipelines.adapters.config import SimulatorConfig
from pipelines.model.messages import BookSnapshot, BookUpdate, Trade
from pipelines.adapters.simulator import MarketSimulator
from tests.helpers import REPO, wait_for

START = "2026-11-23T09:00:00"
LOCAL = "tcp://127.0.0.1:0"


class Tee:
    """A real producer, recording every event it hands out; polls nothing until ``gate`` is set."""

    def __init__(self, producer, gate: threading.Event | None = None):
        self.producer = producer
        self.symbols = producer.symbols
        self.gate = gate
        self.seen: list = []

    def poll(self, max_events):
        if self.gate is not None and not self.gate.is_set():
            return []
        events = self.producer.poll(max_events)
        self.seen.extend(events)
        return events

    @property
    def exhausted(self):
        return self.producer.exhausted

    def close(self):
        self.producer.close()


class ServerThread:
    """BridgeServer.run in a thread; stop() and start() again to pause it."""

    def __init__(self, server: BridgeServer):
        self.server = server
        self.start()

    def start(self):
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.server.run, args=(self.stop_event,), daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_event.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


def simulator(symbols, seed=5, max_events=0, speed=0.0, rate=2000.0):
    return MarketSimulator(SimulatorConfig(seed=seed, speed=speed, rate=rate, start=START, max_events=max_events), symbols)


def by_symbol(events, symbol):
    return [e for e in events if e.symbol == symbol]


def without_recv(events):
    return [e._replace(ts_recv=0) for e in events]


def poll_until(client, predicate, timeout_s=30.0, out=None):
    """Poll ``client`` into ``out`` until ``predicate(out)``; returns ``out``."""
    out = [] if out is None else out

    def pump():
        got = client.poll(1000)
        out.extend(got)
        if not got:
            time.sleep(0.001)

    wait_for(lambda: predicate(out), timeout_s, 0, lambda: f"the condition; client stats: {client.stats()}", poll=pump)
    return out


@pytest.fixture()
def cleanup():
    things = []
    yield things
    for t in reversed(things):
        if isinstance(t, ServerThread):
            t.stop_event.set()
            t.thread.join(5)
        else:
            t.close()


def start_bridge(cleanup, producer, **server_kw):
    server = BridgeServer(producer, LOCAL, LOCAL, **server_kw)
    cleanup.append(server)
    thread = ServerThread(server)
    cleanup.append(thread)
    return server, thread


def make_client(cleanup, server, symbols, **kw):
    client = BridgeClient(server.pub_endpoint, server.rep_endpoint, symbols, **kw)
    cleanup.append(client)
    return client


# -- the wire format ------------------------------------------------------------------


def test_rows_are_compact_field_lists_and_decode_to_equal_events():
    t = Trade("WDOZ26", 1_000, 2_000, 77, 5401.5, 3, 2, 85, 3, 1234)
    b = BookSnapshot("WDOZ26", 1_001, 2_001, 78, (5401.0, 5400.5), (4, 9), (5401.5,), (2,))
    u = BookUpdate("WDOZ26", 1_002, 2_002, 79, 1, 0, 2, 5402.0, 7, 308, 99)
    frames = P.encode_batch("inc-1", "WDOZ26", 41, P.encode_rows([t, b, u]))
    assert frames[0] == b"ev.WDOZ26|"
    # hand-written: symbol and seq are implied by the header, kind codes 0/1/2
    assert orjson.loads(frames[1]) == [1, "b", "inc-1", "WDOZ26", 41, [
        [0, 1_000, 2_000, 5401.5, 3, 2, 85, 3, 1234],
        [1, 1_001, 2_001, [5401.0, 5400.5], [4, 9], [5401.5], [2]],
        [2, 1_002, 2_002, 1, 0, 2, 5402.0, 7, 308, 99],
    ]]
    msg = P.decode_message(frames)
    assert (msg.incarnation, msg.stream, msg.first_seq) == ("inc-1", "WDOZ26", 41)
    assert P.decode_rows(msg.stream, msg.rows) == [t._replace(seq=0), b._replace(seq=0), u._replace(seq=0)]


def test_malformed_messages_and_other_versions_are_clear_errors():
    with pytest.raises(P.ProtocolError, match="kind 0 with 4 values"):
        P.decode_rows("WDOZ26", [[0, 1, 2, 3]])
    with pytest.raises(P.ProtocolError, match="kind 9"):
        P.decode_rows("WDOZ26", [[9, 1, 2, 3, 4, 5, 6, 7, 8]])
    with pytest.raises(P.ProtocolError, match="bad event row"):
        P.decode_rows("WDOZ26", [[1, 1, 2, 5, [1], [2], [3]]])  # bid_px not a list
    with pytest.raises(P.ProtocolError, match="not JSON"):
        P.decode_message([b"hb", b"\xff{"])
    with pytest.raises(P.ProtocolError, match="2 frames"):
        P.decode_message([b"hb"])
    with pytest.raises(P.VersionMismatch, match="speaks 1, the peer sent 2"):
        P.decode_message([b"hb", orjson.dumps([2, "h", "x", 1, {}, False, {}])])
    with pytest.raises(P.VersionMismatch, match="peer sent 7"):
        P.decode_request(orjson.dumps({"v": 7, "cmd": "status"}))


# -- server -> client -------------------------------------------------------------------


def test_every_event_arrives_once_in_order_as_produced(cleanup):
    symbols = ["WDOZ26", "WINZ26"]
    gate = threading.Event()
    tee = Tee(simulator(symbols, max_events=20_000), gate)
    server, _ = start_bridge(cleanup, tee, heartbeat_s=0.05, batch_max_events=300)
    client = make_client(cleanup, server, symbols)
    poll_until(client, lambda _: client.connected)  # heartbeats flow before any event is produced
    gate.set()
    got = poll_until(client, lambda _: client.exhausted)

    assert len(tee.seen) == 20_000
    reference = simulator(symbols, max_events=20_000).poll(20_000)  # same seed, independent run
    for s in symbols:
        assert by_symbol(got, s) == by_symbol(tee.seen, s)  # exactly once, in order, ts_recv as produced
        assert without_recv(by_symbol(got, s)) == without_recv(by_symbol(reference, s))
    assert all(e.seq == 0 for e in got)
    st = client.stats()
    assert st["events_delivered"] == 20_000
    assert (st["gaps"], st["lost_events"], st["duplicates"], st["bad_messages"]) == (0, 0, 0, 0)
    assert server.stats()["events_published"] == 20_000
    assert server.stats()["last_seq"] == {s: len(by_symbol(tee.seen, s)) for s in symbols}


def test_wait_sleeps_until_the_bridge_sends_and_wakes_when_it_does(cleanup):
    gate = threading.Event()
    tee = Tee(simulator(["WDOZ26"], max_events=500), gate)
    server, _ = start_bridge(cleanup, tee, heartbeat_s=2.0)  # quiet for 2 s after each heartbeat
    client = make_client(cleanup, server, ["WDOZ26"])
    poll_until(client, lambda _: client.connected)  # a heartbeat just came: the next is 2 s away

    t0 = time.monotonic()
    client.wait(0.3)  # nothing is sent: the whole timeout
    assert 0.25 <= time.monotonic() - t0 < 2.0

    threading.Timer(0.2, gate.set).start()
    t0 = time.monotonic()
    client.wait(10.0)  # the first batch ends it
    assert 0.15 <= time.monotonic() - t0 < 5.0
    got = poll_until(client, lambda out: len(out) == 500)
    assert got == tee.seen


def test_injected_gaps_are_counted_resynced_and_delivered_in_order(cleanup):
    symbols = ["WDOZ26", "WINZ26"]
    n = 12_000
    reference = simulator(symbols, max_events=n).poll(n)
    last_win = len(by_symbol(reference, "WINZ26"))
    dropped: list[tuple[str, int, int]] = []
    batches_seen = {s: 0 for s in symbols}

    def drop(stream, first, count):
        batches_seen[stream] += 1
        # WDOZ26: its 3rd and 5th batches (mid-stream gaps); WINZ26: its final batch (a tail
        # gap that only the heartbeat reveals).
        if (stream == "WDOZ26" and batches_seen[stream] in (3, 5)) or (stream == "WINZ26" and first + count - 1 == last_win):
            dropped.append((stream, first, count))
            return True
        return False

    gate = threading.Event()
    tee = Tee(simulator(symbols, max_events=n), gate)
    server, _ = start_bridge(cleanup, tee, heartbeat_s=0.05, batch_max_events=200, drop_filter=drop)
    client = make_client(cleanup, server, symbols)
    poll_until(client, lambda _: client.connected)
    gate.set()
    got = poll_until(client, lambda _: client.exhausted)

    assert len(dropped) == 3 and dropped[-1][0] == "WINZ26"
    missing = sum(c for _, _, c in dropped)
    for s in symbols:
        assert by_symbol(got, s) == by_symbol(tee.seen, s)
    st = client.stats()
    assert (st["gaps"], st["missing_events"], st["recovered_events"], st["lost_events"]) == (3, missing, missing, 0)
    assert st["resyncs_requested"] == 3 and st["duplicates"] == 0
    assert server.stats()["resync_events_served"] == missing
    assert server.stats()["events_published"] == n - missing


def test_resync_beyond_the_ring_is_counted_lost_and_the_stream_continues(cleanup):
    symbols = ["WDOZ26"]
    n = 6_000
    dropped: list[tuple[int, int]] = []

    def drop(stream, first, count):
        if 1_000 < first <= 2_500:  # ~1500 events withheld; the ring keeps only ~300
            dropped.append((first, count))
            return True
        return False

    gate = threading.Event()
    tee = Tee(simulator(symbols, max_events=n), gate)
    server, _ = start_bridge(cleanup, tee, heartbeat_s=0.05, batch_max_events=50, ring_events=300, drop_filter=drop)
    client = make_client(cleanup, server, symbols)
    poll_until(client, lambda _: client.connected)
    gate.set()
    got = poll_until(client, lambda _: client.exhausted)

    a = dropped[0][0]
    n_dropped = sum(c for _, c in dropped)
    assert a + n_dropped == dropped[-1][0] + dropped[-1][1]  # one contiguous range: seqs a .. a+n_dropped-1
    st = client.stats()
    lost, recovered = st["lost_events"], st["recovered_events"]
    # A heartbeat sent while the range was being withheld splits it into two gaps; either way
    # every withheld event is counted once.
    assert st["gaps"] >= 1 and st["missing_events"] == n_dropped
    assert lost > 0 and lost + recovered == n_dropped
    assert st["resyncs_gone"] >= 1 and server.stats()["resyncs_gone"] >= 1
    # What arrived is what was produced, in order, minus `lost` events from inside the withheld range.
    skipped, j = [], 0
    for seq, ev in enumerate(tee.seen, 1):
        if j < len(got) and got[j] == ev:
            j += 1
        else:
            skipped.append(seq)
    assert j == len(got) == n - lost
    assert len(skipped) == lost and a <= skipped[0] and skipped[-1] < a + n_dropped
    assert got[: a - 1] == tee.seen[: a - 1]
    assert got[len(got) - (n - (a - 1 + n_dropped)):] == tee.seen[a - 1 + n_dropped:]  # the stream continued


def test_lost_heartbeats_report_disconnected_then_recover_without_loss(cleanup):
    symbols = ["WDOZ26"]
    tee = Tee(simulator(symbols, speed=1.0, rate=3000))  # paced, endless
    server, thread = start_bridge(cleanup, tee, heartbeat_s=0.05)
    client = make_client(cleanup, server, symbols, heartbeat_timeout_s=0.3, catch_up=True)
    got = poll_until(client, lambda g: len(g) >= 300 and client.connected)

    thread.stop()  # the bridge freezes: no batches, no heartbeats
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.7:
        got.extend(client.poll(1000))
        time.sleep(0.005)
    st = client.stats()
    assert st["connected"] is False and st["heartbeat_losses"] == 1 and st["reconnects"] >= 1
    assert st["heartbeat_age_s"] > 0.3

    thread.start()
    seen = len(got)
    poll_until(client, lambda g: client.connected and len(g) >= seen + 300, out=got)
    thread.stop()
    poll_until(client, lambda g: len(g) == len(tee.seen), out=got)
    assert got == tee.seen  # nothing lost or repeated across the outage
    st = client.stats()
    assert st["connected"] is True and st["heartbeat_losses"] == 1 and st["lost_events"] == 0
    assert st["feed_lag_ms"] is not None and st["feed_lag_ms"] >= 0


class LossyRepProxy:
    """A REP endpoint in front of the server's that ignores the first resync request it sees
    (as if the reply was lost) and forwards everything else."""

    def __init__(self, target: str):
        ctx = zmq.Context.instance()
        self.front = ctx.socket(zmq.ROUTER)
        self.front.bind(LOCAL)
        self.endpoint = self.front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.back = ctx.socket(zmq.REQ)
        self.back.connect(target)
        self.ignored = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            if not self.front.poll(20):
                continue
            ident, empty, payload = self.front.recv_multipart()
            if b'"resync"' in payload and not self.ignored:
                self.ignored += 1
                continue
            self.back.send(payload)
            self.front.send_multipart([ident, empty, self.back.recv()])

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.front.close(0)
        self.back.close(0)


def test_an_unanswered_resync_is_retried_on_a_fresh_req_socket(cleanup):
    symbols = ["WDOZ26"]
    n = 4_000
    dropped = []

    def drop(stream, first, count):
        if not dropped and first > 1_000:
            dropped.append(count)
            return True
        return False

    gate = threading.Event()
    tee = Tee(simulator(symbols, max_events=n), gate)
    server, _ = start_bridge(cleanup, tee, heartbeat_s=0.05, batch_max_events=100, drop_filter=drop)
    proxy = LossyRepProxy(server.rep_endpoint)
    cleanup.append(proxy)
    client = BridgeClient(server.pub_endpoint, proxy.endpoint, symbols, request_timeout_s=0.3, request_retries=2)
    cleanup.append(client)
    poll_until(client, lambda _: client.connected)
    gate.set()
    got = poll_until(client, lambda _: client.exhausted)
    assert proxy.ignored == 1
    st = client.stats()
    # a REQ socket whose reply never came cannot send again: only a fresh socket gets the retry out
    assert st["request_timeouts"] == 1
    assert (st["missing_events"], st["recovered_events"], st["lost_events"]) == (dropped[0], dropped[0], 0)
    assert got == tee.seen


def test_bad_commands_get_error_replies_and_never_stop_the_bridge(cleanup):
    symbols = ["WDOZ26"]
    tee = Tee(simulator(symbols, max_events=500))
    server, thread = start_bridge(cleanup, tee, heartbeat_s=0.05)
    wait_for(lambda: server.stats()["last_seq"]["WDOZ26"] >= 500, 5, 0.01, "the server to send all 500 events")
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 3000)
    req.connect(server.rep_endpoint)
    cleanup.append(type("S", (), {"close": lambda self: req.close(0)})())

    def ask(*frames):
        req.send_multipart(list(frames))
        return orjson.loads(req.recv())

    def cmd(**fields):
        return orjson.dumps(fields)

    bad = [
        ((b"not json",), "not JSON"),
        ((b"[1, 2]",), "not a JSON object"),
        ((cmd(cmd="status"),), "no protocol version"),
        ((cmd(v=99, cmd="status"),), "speaks 1, the peer sent 99"),
        ((cmd(v=1, cmd="launch"),), "unknown command 'launch'"),
        ((cmd(v=1, cmd="resync", stream="WDOZ26", from_seq="x"),), "'from_seq' must be int"),
        ((cmd(v=1, cmd="resync", stream="WDOZ26"),), "missing argument 'from_seq'"),
        ((cmd(v=1, cmd="resync", stream="NOPE1", from_seq=1),), "unknown stream"),
        ((cmd(v=1, cmd="resync", stream="WDOZ26", from_seq=5, to_seq=2),), "bad range"),
        ((cmd(v=1, cmd="subscribe", symbol="bad sym"),), "bad symbol"),
        ((cmd(v=1, cmd="subscribe", symbol="PETR4"),), "cannot add symbols"),
        ((cmd(v=1, cmd="status", extra=1),), "bad arguments"),
        ((b"two", b"frames"), "expected one frame"),
    ]
    for frames, problem in bad:
        rep = ask(*frames)
        assert rep["ok"] is False and problem in rep["error"], (frames, rep)

    rep = ask(cmd(v=1, cmd="resync", stream="WDOZ26", from_seq=2, to_seq=4))
    assert rep["ok"] is True and rep["gone"] is False and rep["first_seq"] == 2
    assert P.decode_rows("WDOZ26", rep["rows"]) == [e._replace(seq=0) for e in tee.seen[1:4]]
    rep = ask(cmd(v=1, cmd="subscribe", symbol="WDOZ26"))
    assert rep["ok"] is True and rep["stream"] == "WDOZ26" and rep["last_seq"] == 500
    rep = ask(cmd(v=1, cmd="status"))
    assert rep["ok"] is True and rep["streams"]["WDOZ26"]["last_seq"] == 500
    assert thread.thread.is_alive()
    thread.stop()
    st = server.stats()
    assert st["bad_commands"] == len(bad)
    assert st["commands"] == len(bad) + 3


def test_client_counts_bad_messages_and_a_foreign_version_as_no_sign_of_life(cleanup):
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(LOCAL)
    cleanup.append(type("S", (), {"close": lambda self: pub.close(0)})())
    client = BridgeClient(pub.getsockopt_string(zmq.LAST_ENDPOINT), "tcp://127.0.0.1:9", ["WDOZ26"],
                          heartbeat_timeout_s=5.0)
    cleanup.append(client)

    def send_junk():
        pub.send_multipart([b"hb", orjson.dumps([2, "h", "x", 1, {}, False, {}])])
        pub.send_multipart([b"hb", b"garbage"])
        pub.send_multipart([b"ev.WDOZ26|", orjson.dumps([1, "b", "x", "WDOZ26", "one", []])])
        client.poll(100)

    wait_for(lambda: client.version_errors and client.bad_messages, 5, 0.01, "both kinds of bad message counted",
             poll=send_junk)
    assert client.connected is False  # none of that was a valid message
    pub.send_multipart(P.encode_heartbeat("x", time.time_ns(), {"WDOZ26": 0}, False, {}))
    poll_until(client, lambda _: client.connected)
    assert client.poll(10) == []


# -- the hosted bridge process -----------------------------------------------------------


def children_running_feed_bridge() -> list[int]:
    """Live processes whose parent is this test process and that run feed_bridge.py."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"feed_bridge.py" in cmdline:
            found.append(int(pid))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SIGKILL")
def test_hosted_bridge_survives_kill_9_with_backoff_and_leaves_no_process(cleanup):
    sim_args = ["--sim-rate", "3000", "--sim-speed", "1", "--sim-seed", "7", "--sim-start", START, "--book-depth", "5"]
    host = HostedBridge(["WDOZ26"], source="simulator", bridge_args=sim_args, heartbeat_s=0.05,
                        heartbeat_timeout_s=1.0, backoff_initial_s=0.4, ready_timeout_s=30)
    cleanup.append(host)
    got = poll_until(host, lambda g: len(g) >= 600, timeout_s=20)
    first_pid = host.child_pid
    assert children_running_feed_bridge() == [first_pid]

    os.kill(first_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    respawned_at = None

    def pump():
        nonlocal respawned_at
        got.extend(host.poll(1000))
        if respawned_at is None and host.child_pid not in (None, first_pid):
            respawned_at = time.monotonic()

    wait_for(lambda: host.stats()["incarnation_changes"] >= 1 and len(got) >= 1_500, 20, 0.002,
             lambda: f"the restarted host's events; host stats: {host.stats()}", poll=pump)
    st = host.stats()
    assert st["restarts"] == 1 and st["exit_codes"] == [-signal.SIGKILL]
    assert st["last_exit"] == "killed by SIGKILL"
    assert respawned_at - killed_at >= 0.4  # the backoff
    assert st["next_backoff_s"] == 0.8  # doubled for the next failure

    # The restarted simulator starts again at the same first event, so the stream's event
    # time jumps back exactly where the new incarnation begins.
    k = next(i for i in range(1, len(got)) if got[i].ts_event < got[i - 1].ts_event)
    reference = simulator(["WDOZ26"], seed=7, rate=3000).poll(len(got))
    assert without_recv(got[:k]) == without_recv(reference[:k])
    assert without_recv(got[k:]) == without_recv(reference[: len(got) - k])  # resumed from its seq 1, no loss
    old = st["history"][0]
    assert old["delivered"] == k
    assert old["delivered"] + old["lost"] == old["announced"]  # the gap: announced but never delivered
    assert st["lost_events"] == old["lost"]

    second_pid = host.child_pid
    host.close()
    assert host.stats()["last_exit"] == "exit code 0"  # SIGTERM -> clean shutdown
    with pytest.raises(ProcessLookupError):
        os.kill(second_pid, 0)  # gone and reaped
    assert children_running_feed_bridge() == []


def test_hosted_bridge_that_cannot_start_says_why(cleanup):
    t0 = time.monotonic()
    with pytest.raises(BridgeStartError, match="exit code 2.*bad symbol 'wdo!'"):
        HostedBridge(["wdo!"], source="simulator", ready_timeout_s=20)
    assert time.monotonic() - t0 < 20
    assert not sys.platform.startswith("linux") or children_running_feed_bridge() == []


def test_feed_bridge_never_prints_credential_values(tmp_path):
    pytest.importorskip("pipelines.adapters.profitdll.session")
    env = {**os.environ, "PROFIT_KEY": "KEY-s3cr3t-4242", "PROFIT_USER": "user-zq9", "PROFIT_PASSWORD": "pw-Xy7-!!"}
    env.pop("PROFIT_CREDENTIALS_FILE", None)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "feed_bridge.py"), "--source", "profitdll",
                           "--symbols", "WDOZ26", "--pub", LOCAL, "--rep", LOCAL, "--log-level", "DEBUG",
                           "--dll-path", str(tmp_path / "missing" / "ProfitDLL.dll")],
                          env=env, capture_output=True, timeout=60)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 2, out  # a DLL that is not there: a config error, not retried
    assert "ProfitDLLLoadError" in out
    assert "READY" not in out
    for secret in ("KEY-s3cr3t-4242", "user-zq9", "pw-Xy7-!!"):
        assert secret not in out


def test_feed_bridge_without_credentials_is_a_one_line_config_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROFIT_")}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "feed_bridge.py"), "--source", "profitdll",
                           "--symbols", "WDOZ26", "--pub", LOCAL, "--rep", LOCAL],
                          env=env, capture_output=True, timeout=60)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2
    assert len(err.splitlines()) == 1 and "PROFIT_KEY" in err and "PROFIT_PASSWORD" in err
