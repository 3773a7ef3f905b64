"""The edges without Ray: the Valkey writer on the session Valkey, the ZeroMQ publishers to a
real SUB socket, the recorder to Parquet files read back with pandas."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pandas as pd
import pytest
import zmq

from actors.config import ActorConfig, ValkeyLink
from actors.edges import AnalyticsPublisher, MarketDataPublisher, Recorder, ValkeyWriter
from pipelines.adapters.config import RecorderConfig
from pipelines.edges.config import ZmqConfig
from pipelines.model.messages import Decision, FlowState, Trade
from pipelines.persistence.config import ValkeyConfig
from pipelines.persistence.connection import connect
from pipelines.persistence.events import EventStore
from tests.helpers import EPHEMERAL_PORTS, SESSION_START, simulated_events, unique_name, wait_for

EPHEMERAL = ZmqConfig(**EPHEMERAL_PORTS)


def day(symbol: str, n: int = 400) -> list:
    return [e._replace(symbol=symbol) for e in simulated_events(seed=3, rate=500, max_events=n, symbol="WDOZ26",
                                                               start=SESSION_START)]


# -- Valkey ---------------------------------------------------------------------


def test_valkey_writer_stores_each_event_once_in_its_stream_and_resumes_from_there(valkey_server):
    _, url = valkey_server
    sym = unique_name("E")
    events = day(sym)
    ticks = [e for e in events if e.KIND == "tick"]
    books = [e for e in events if e.KIND == "book"]
    cfg = ActorConfig(ValkeyConfig(), symbols=(sym,), valkey=ValkeyLink(url))
    writer = ValkeyWriter(cfg)
    assert writer.position() == {sym: 0}
    half = len(events) // 2
    first = writer.on_batch(events[:half], {sym: 0})
    assert (first.accepted, first.duplicates, first.resync_from) == (half, 0, None)
    again = writer.on_batch(events[:half], {sym: 0})  # the feed re-sent it (a reply was lost)
    assert (again.accepted, again.duplicates) == (0, half)
    gap = writer.on_batch(events[half + 10:], {sym: events[half + 9].seq})  # ten events went missing
    assert (gap.accepted, gap.resync_from) == (0, {sym: half})
    rest = writer.on_batch(events[half:], {sym: half})
    assert rest.accepted == len(events) - half and writer.position() == {sym: len(events)}
    assert writer.flush(10.0)
    stats = writer.close(10.0)
    assert stats["gaps"] == 1 and stats["position"] == {sym: len(events)}

    client = connect(url)
    try:
        # The stream keys are part of the system's contract (subscribers read them directly).
        assert client.xlen(f"stream:ticks:{sym}") == len(ticks)
        assert client.xlen(f"stream:book:{sym}") == len(books)
        store = EventStore(client)
        assert store.since(sym, "tick", 0) == ticks
        assert store.since(sym, "book", 0) == books
        assert store.last_seq(sym) == len(events)
    finally:
        client.close()
    # A restarted writer starts where Valkey is: the feed re-sends only what is newer.
    restarted = ValkeyWriter(cfg)
    assert restarted.position() == {sym: len(events)}
    assert restarted.on_batch(events[-5:], {sym: len(events) - 5}).duplicates == 5
    restarted.close(10.0)


# -- ZeroMQ ---------------------------------------------------------------------


class Subscriber:
    def __init__(self, endpoints: dict[str, str]):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        for ep in endpoints.values():
            self.sock.connect(ep)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")

    def wait_live(self, publisher, probe) -> None:
        """Publish ``probe`` until it arrives (a SUB socket misses what is sent before it joined)."""
        def arrived() -> bool:
            publisher.publish([probe])
            return bool(self.sock.poll(50))

        wait_for(arrived, 10, 0, "the subscription to come up")
        self.receive(0.2)  # the probes still on their way

    def receive(self, quiet_s: float = 0.3) -> list[tuple[str, dict]]:
        """Everything but probes until the socket stays quiet for ``quiet_s``."""
        out = []
        while self.sock.poll(int(quiet_s * 1000)):
            topic, payload = self.sock.recv_multipart()
            if not topic.endswith(b".PROBE"):
                out.append((topic.decode(), orjson.loads(payload)))
        return out

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture()
def market_publisher():
    pub = MarketDataPublisher(ActorConfig(EPHEMERAL))
    yield pub
    pub.close()


def test_market_data_publisher_sends_each_event_once_on_its_socket(market_publisher):
    pub = market_publisher
    eps = pub.endpoints()
    assert set(eps) == {"tick", "book"}
    ports = {int(ep.rsplit(":", 1)[1]) for ep in eps.values()}
    assert len(ports) == 2 and not ports & {5555, 5556}  # port 0 in the config: ephemeral ports
    sym = unique_name("E")
    events = day(sym, 300)
    sub = Subscriber(eps)
    try:
        sub.wait_live(pub, Trade("PROBE", 0, 0, 1, 1.0, 1, 2))
        reply = pub.on_batch(events, {})
        assert (reply.accepted, reply.duplicates, reply.resync_from) == (len(events), 0, None)
        got = sub.receive()
        assert pub.on_batch(events[-20:], {}).duplicates == 20  # a re-send is not published twice
        assert sub.receive() == []
    finally:
        sub.close()
    by_kind = {"tick": [], "book": []}
    for topic, msg in got:
        kind, _, symbol = topic.partition(".")
        assert (symbol, msg["symbol"], msg["kind"]) == (sym, sym, kind)
        by_kind[kind].append(msg)
    for kind in ("tick", "book"):
        want = [e for e in events if e.KIND == kind]
        assert [m["seq"] for m in by_kind[kind]] == [e.seq for e in want]  # one socket keeps its order
    tick0 = next(e for e in events if e.KIND == "tick")
    assert by_kind["tick"][0] == {"kind": "tick", "symbol": sym, "ts_event": tick0.ts_event, "ts_recv": tick0.ts_recv,
                                  "seq": tick0.seq, "price": tick0.price, "qty": tick0.qty,
                                  "trade_type": tick0.trade_type, "buyer": tick0.buyer, "seller": tick0.seller,
                                  "trade_id": tick0.trade_id}
    book0 = next(e for e in events if e.KIND == "book")
    assert by_kind["book"][0]["bid_px"] == list(book0.bid_px) and by_kind["book"][0]["ask_qty"] == list(book0.ask_qty)
    assert pub.position() == {sym: len(events)}
    assert pub.stats()["sent"] >= len(events)  # plus the probes


def test_analytics_publisher_routes_each_kind_to_its_own_port():
    pub = AnalyticsPublisher(ActorConfig(EPHEMERAL))
    try:
        eps = pub.endpoints()
        assert set(eps) == {"flow", "footprint", "liquidity", "tape", "decision"}
        sym = unique_name("E")
        flow = FlowState(sym, 1_000, 2_000, 7, {"ofi_ratio_5m": 0.25, "vpin": 0.5})
        decision = Decision(f"{sym}-8", sym, 1_000, 8, "BUY", 2, 0.4, 0.7, 5400.5, 10_000_000_000,
                            ({"agent": "order_flow", "direction": 1.0},), {"order_flow": 1.0}, {"vpin": 0.5})
        only_decisions = Subscriber({"decision": eps["decision"]})
        only_flow = Subscriber({"flow": eps["flow"]})
        try:
            only_decisions.wait_live(pub, decision._replace(symbol="PROBE"))
            only_flow.wait_live(pub, flow._replace(symbol="PROBE"))
            assert pub.publish([flow, decision]) == 2
            got_decisions, got_flow = only_decisions.receive(), only_flow.receive()
        finally:
            only_decisions.close()
            only_flow.close()
        assert got_flow == [(f"flow.{sym}", {"kind": "flow", "symbol": sym, "ts_event": 1_000, "ts_recv": 2_000,
                                             "seq": 7, "values": {"ofi_ratio_5m": 0.25, "vpin": 0.5}})]
        assert [(t, m["decision_id"], m["action"], m["size"], m["price"]) for t, m in got_decisions] == [
            (f"decision.{sym}", f"{sym}-8", "BUY", 2, 5400.5)]
    finally:
        pub.close()


# -- Parquet --------------------------------------------------------------------


def test_recorder_writes_parquet_partitioned_by_kind_symbol_and_local_date(tmp_path):
    sym = unique_name("E")
    events = day(sym, 600)
    rcfg = RecorderConfig(path=str(tmp_path), flush_events=250, flush_seconds=3600)
    cfg = ActorConfig(rcfg, symbols=(sym,), run_id="run-a")
    rec = Recorder(cfg)
    assert rec.position() == {sym: 0}
    for i in range(0, len(events), 100):
        reply = rec.on_batch(events[i:i + 100], {sym: i})
        assert reply.accepted == len(events[i:i + 100])
    assert rec.on_batch(events[:100], {sym: 0}).duplicates == 100
    stats = rec.close()
    assert stats["rows_written"] == len(events) and stats["rows_buffered"] == 0

    local_day = datetime.fromtimestamp(events[0].ts_event / 1e9, ZoneInfo("America/Sao_Paulo")).date().isoformat()
    assert local_day == "2026-11-23"
    for kind in ("tick", "book"):
        want = [e for e in events if e.KIND == kind]
        folder = tmp_path / kind / f"symbol={sym}" / f"date={local_day}"
        files = sorted(folder.glob("part-*.parquet"))
        assert files and all("-run-a-" in f.name for f in files)
        df = pd.read_parquet(tmp_path / kind, partitioning=None).sort_values("seq")
        assert list(df["seq"]) == [e.seq for e in want]
        assert set(df["symbol"]) == {sym}
        assert list(df["ts_event"]) == [e.ts_event for e in want]
        if kind == "tick":
            assert list(df["price"]) == [e.price for e in want] and list(df["qty"]) == [e.qty for e in want]
        else:
            assert [tuple(v) for v in df["bid_px"]] == [e.bid_px for e in want]
            assert [tuple(v) for v in df["ask_qty"]] == [e.ask_qty for e in want]

    # A restarted recorder of the same run resumes after what is on disk; another run starts at 0.
    assert Recorder(cfg).position() == {sym: len(events)}
    assert Recorder(ActorConfig(rcfg, symbols=(sym,), run_id="run-b")).position() == {sym: 0}
