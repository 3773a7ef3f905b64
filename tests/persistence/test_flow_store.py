"""pipelines.persistence.flow_store against a real embedded valkey-server.

No mocks. Tests that only read and write share the session server and use a
symbol of their own; the outage test stops a server of its own.
Expected values are built here from the inputs, not read back from the code under test.
"""

from __future__ import annotations

import math
import time

import pytest

from pipelines.persistence.flow_store import FlowStateWriter, FlowStore, flow_history_key, flow_state_key
from pipelines.model.messages import FlowState
from pipelines.persistence.connection import connect
from tests.helpers import FAST_RECONNECT, T0, unique_name, wait_for

SEC = 1_000_000_000
MS = 1_000_000


def new_symbol() -> str:
    return unique_name("T")


def state(sym: str, seq: int, ts_event: int) -> FlowState:
    """Values derived from seq; every third state has a feature still warming up (NaN)."""
    return FlowState(sym, ts_event, ts_event + 150_000, seq, {
        "ofi": seq * 0.5, "vpin": seq / 1000, "warm": math.nan if seq % 3 == 0 else float(seq)})


def expected(sym: str, seq: int, ts_event: int) -> dict:
    """The dict a reader must return for ``state(sym, seq, ts_event)``, written out by hand."""
    return {"symbol": sym, "ts_event": ts_event, "ts_recv": ts_event + 150_000, "seq": seq, "kind": "flow",
            "values": {"ofi": seq * 0.5, "vpin": seq / 1000, "warm": None if seq % 3 == 0 else float(seq)}}


def seqs(entries: list[dict]) -> list[int]:
    return [e["seq"] for e in entries]


@pytest.fixture(scope="module")
def filled(valkey_server, client):
    """300 states of one symbol, seq i at T0 + i s, written in batches of 50."""
    sym = new_symbol()
    w = FlowStateWriter(valkey_server[1], None, ttl_s=600, **FAST_RECONNECT)
    for i in range(1, 301, 50):
        w.write([state(sym, s, T0 + s * SEC) for s in range(i, i + 50)])
    assert w.flush(10)
    s = w.stats()
    w.close()
    return sym, s, FlowStore(client)


# ---------------------------------------------------------------------------
# FlowStateWriter / FlowStore
# ---------------------------------------------------------------------------


def test_round_trip_state_ttl_and_history(filled, client):
    sym, s, store = filled
    assert store.get_flow_state(sym) == expected(sym, 300, T0 + 300 * SEC)  # 300 % 3 == 0: warm is None
    assert 0 < client.ttl(flow_state_key(sym)) <= 600
    assert client.xlen(flow_history_key(sym)) == 300
    # 300 XADDs + one SET per batch of 50
    assert (s["written"], s["duplicates"], s["dropped"], s["errors"], s["skipped"]) == (306, 0, 0, {}, 0)
    first_id, fields = client.xrange(flow_history_key(sym), count=1)[0]
    assert first_id == b"%d-1" % ((T0 + SEC) // MS) and list(fields) == [b"json"]
    assert store.get_flow_state(new_symbol()) is None


def test_history_window(filled):
    sym, _s, store = filled
    last = T0 + 300 * SEC
    got = store.get_flow_history(sym, 2)  # until = newest ts_event: (last - 120 s, last]
    assert seqs(got) == [s for s in range(1, 301) if last - 120 * SEC < T0 + s * SEC <= last]
    assert got[0] == expected(sym, 181, T0 + 181 * SEC)

    until = T0 + 150 * SEC + SEC // 2  # between seq 150 and 151
    assert seqs(store.get_flow_history(sym, 0.5, until_ns=until)) == list(range(121, 151))
    assert seqs(store.get_flow_history(sym, 0.5, until_ns=T0 + 150 * SEC)) == list(range(121, 151))  # inclusive end
    assert store.get_flow_history(sym, 10) == [expected(sym, s, T0 + s * SEC) for s in range(1, 301)]
    assert store.get_flow_history(sym, 1, until_ns=T0) == []
    assert store.get_flow_history(new_symbol(), 5) == []


def test_state_as_of_time(filled):
    sym, _s, store = filled
    assert store.get_flow_state(sym, timestamp_ns=T0 + 150 * SEC + SEC // 2) == expected(sym, 150, T0 + 150 * SEC)
    assert store.get_flow_state(sym, timestamp_ns=T0 + 150 * SEC)["seq"] == 150  # exactly at an entry
    assert store.get_flow_state(sym, timestamp_ns=T0 + 150 * SEC - 1)["seq"] == 149
    assert store.get_flow_state(sym, timestamp_ns=T0 + SEC // 2) is None  # before the first
    assert store.get_flow_state(sym, timestamp_ns=T0 + 10_000 * SEC)["seq"] == 300


@pytest.mark.parametrize("bad", [0, -1, -0.5, math.nan, math.inf])
def test_minutes_back_must_be_positive(client, bad):
    with pytest.raises(ValueError, match="minutes_back must be > 0, got"):
        FlowStore(client).get_flow_history("ANY", bad)


def test_ids_never_go_backwards_and_retries_write_once(valkey_server, client):
    sym = new_symbol()
    key = flow_history_key(sym)
    # event time: 10 s, then back to 9 s and 9.5 s (clamped to 10 s), then 11 s; plus two states
    # within one ms, told apart by their ns.
    plan = [(1, 10 * SEC), (2, 9 * SEC), (3, 9 * SEC + SEC // 2), (4, 11 * SEC),
            (5, 11 * SEC + 300), (6, 11 * SEC + 700)]
    states = [state(sym, seq, T0 + dt) for seq, dt in plan]
    w = FlowStateWriter(valkey_server[1], None, **FAST_RECONNECT)
    w.write(states)
    assert w.flush(10)
    t0_ms = T0 // MS
    ids = [i for i, _f in client.xrange(key)]
    id_plan = [(10_000, 1), (10_000, 2), (10_000, 3), (11_000, 4), (11_000, 5), (11_000, 6)]
    assert ids == [b"%d-%d" % (t0_ms + ms, seq) for ms, seq in id_plan]

    store = FlowStore(client)
    assert store.get_flow_history(sym, 1, until_ns=T0 + 12 * SEC) == [expected(sym, seq, T0 + dt) for seq, dt in plan]
    assert store.get_flow_state(sym) == expected(sym, 6, T0 + 11 * SEC + 700)
    # as of 9.7 s: seq 2 (9 s) and 3 (9.5 s) qualify, both stored under id ms 10 000; the later one wins
    assert store.get_flow_state(sym, timestamp_ns=T0 + 9_700 * MS)["seq"] == 3
    assert store.get_flow_state(sym, timestamp_ns=T0 + 9_200 * MS)["seq"] == 2
    assert store.get_flow_state(sym, timestamp_ns=T0 + 11 * SEC + 500)["seq"] == 5  # between two states of one ms
    assert store.get_flow_state(sym, timestamp_ns=T0 + 8 * SEC) is None
    assert seqs(store.get_flow_history(sym, 0.7 / 60, until_ns=T0 + 9_600 * MS)) == [2, 3]  # (8.9 s, 9.6 s]

    # retry through the same writer: skipped before reaching the queue
    w.write(states)
    assert w.flush(10)
    assert w.stats()["skipped"] == len(states) and client.xlen(key) == len(states)
    w.close()
    # retry through a fresh writer (a restarted process): Valkey rejects every id
    w2 = FlowStateWriter(valkey_server[1], None, **FAST_RECONNECT)
    w2.write(states)
    assert w2.flush(10)
    s2 = w2.stats()
    w2.close()
    assert (s2["duplicates"], s2["written"], s2["errors"]) == (len(states), 1, {})  # the one SET
    assert client.xlen(key) == len(states)
    assert store.get_flow_state(sym)["seq"] == 6


def test_outage_writes_never_block_and_nothing_is_lost(own_valkey):
    srv = own_valkey()
    url = srv.url
    sym = new_symbol()
    w = FlowStateWriter(url, None, **FAST_RECONNECT)
    slowest = 0.0

    def write(seq: int) -> None:
        nonlocal slowest
        t = time.perf_counter()
        w.write([state(sym, seq, T0 + seq * SEC)])
        slowest = max(slowest, time.perf_counter() - t)

    for seq in range(1, 101):
        write(seq)
    srv.stop()
    for seq in range(101, 201):
        write(seq)
    wait_for(lambda: w.stats()["connection_errors"], 10, 0.01, "the writer to see the outage")
    assert not w.connected
    srv.start()
    for seq in range(201, 301):
        write(seq)
    assert w.flush(30)
    s = w.stats()
    w.close()
    assert slowest < 0.05, f"write blocked for {slowest * 1000:.1f} ms"
    assert s["connection_errors"] >= 1 and s["reconnects"] >= 1
    assert s["dropped"] == 0 and s["errors"] == {}
    assert s["written"] + s["duplicates"] == 600  # 300 XADDs + 300 SETs, each landed once
    c = connect(url)
    assert c.xlen(flow_history_key(sym)) == 300
    assert seqs(FlowStore(c).get_flow_history(sym, 60)) == list(range(1, 301))
    c.close()
