"""Recorder -> Parquet -> replay (pipelines/adapters/files/recorder.py, replay.py).

No mocks: events are written to real files under tmp_path and read back with
pandas/pyarrow directly; expected values are hand values, computed independently.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.adapters.config import RecorderConfig, ReplayConfig
from pipelines.adapters.files.recorder import ParquetRecorder, write_events
from pipelines.adapters.files.replay import ReplayError, ReplaySource
from pipelines.model.messages import BookSnapshot, BookUpdate, Trade, TradeType
from tests.helpers import drain

PART_RE = re.compile(r"^part-(\d+)-[0-9a-f]{8}\.parquet$")


def ns(y, mo, d, h, mi, s=0, us=0) -> int:
    """UTC wall time -> ns (independent of pipelines.model.clock)."""
    return int(datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc).timestamp()) * 1_000_000_000 + us * 1_000


def sample_events() -> list:
    """Three kinds, two symbols, straddling UTC midnight (Sao Paulo is UTC-3 in Nov 2026, no DST)."""
    t0 = ns(2026, 11, 23, 13, 0)  # 10:00 SP, 2026-11-23
    late = ns(2026, 11, 24, 2, 30)  # 23:30 SP, still 2026-11-23
    next_day = ns(2026, 11, 24, 3, 30)  # 00:30 SP, 2026-11-24
    ev = [
        Trade("WDOZ26", t0, t0 + 5, 1, 5400.5, 3, int(TradeType.BUY_AGGRESSOR), 8, 72, 1001),
        BookSnapshot("WDOZ26", t0, t0 + 6, 2, (5400.0, 5399.5), (10, 4), (5400.5, 5401.0), (7, 2)),
        BookUpdate("WDOZ26", t0 + 1, t0 + 7, 3, 0, 1, 0, 5400.0, 9, 3, 77),
        # same ts_event as the update above, later seq, but its kind (tick) is read first by replay
        Trade("WDOZ26", t0 + 1, t0 + 9, 4, 5400.0, 1, int(TradeType.SELL_AGGRESSOR), 0, 0, 1004),
        Trade("WINZ26", t0 + 2, t0 + 8, 1, 130_250.0, 1, int(TradeType.SELL_AGGRESSOR), 0, 0, 5),
        BookSnapshot("WDOZ26", late, late + 1, 5, (), (), (5402.0,), (1,)),  # empty bid side
        Trade("WDOZ26", late, late + 2, 6, 5401.0, 2, int(TradeType.AUCTION), 0, 0, 1002),
        Trade("WDOZ26", next_day, next_day + 1, 7, 5403.5, 1, int(TradeType.SELL_AGGRESSOR), 1, 2, 1003),
        BookUpdate("WDOZ26", next_day, next_day + 3, 8, 1, 2, 300, 5404.0, 0, 0, 0),
    ]
    return ev


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- recorder -----------------------------------------------------------------


def test_recorder_round_trip_paths_and_fields(tmp_path):
    events = sample_events()
    stats = write_events(events, tmp_path)
    assert stats["rows_written"] == len(events) and stats["rows_buffered"] == 0

    files = files_under(tmp_path)
    dirs = {str(p.parent.relative_to(tmp_path)) for p in files}
    assert dirs == {
        "tick/symbol=WDOZ26/date=2026-11-23",  # 13:00 UTC and 02:30 UTC (next UTC day) both fall on 23 Nov SP
        "tick/symbol=WDOZ26/date=2026-11-24",
        "tick/symbol=WINZ26/date=2026-11-23",
        "book/symbol=WDOZ26/date=2026-11-23",
        "book_update/symbol=WDOZ26/date=2026-11-23",
        "book_update/symbol=WDOZ26/date=2026-11-24",
    }
    assert len(files) == len(dirs)  # one flush -> one file per partition
    for p in files:
        m = PART_RE.match(p.name)
        assert m, p.name
        assert int(m.group(1)) == pq.read_table(p).column("seq")[0].as_py()

    # The 02:30 UTC trade on 24 Nov lands in the 23 Nov Sao Paulo folder.
    late = pd.read_parquet(tmp_path / "tick/symbol=WDOZ26/date=2026-11-23")
    assert ns(2026, 11, 24, 2, 30) in set(late["ts_event"])

    by_kind = {"tick": Trade, "book": BookSnapshot, "book_update": BookUpdate}
    for kind, cls in by_kind.items():
        df = pd.read_parquet(tmp_path / kind, partitioning=None)
        got = []
        for rec in df.to_dict("records"):
            vals = []
            for f in cls._fields:
                v = rec[f]
                if hasattr(v, "tolist"):
                    v = tuple(v.tolist())
                vals.append(v)
            got.append(cls(*vals))
        want = [e for e in events if isinstance(e, cls)]
        assert sorted(got) == sorted(want)


def test_recorder_schema_is_explicit(tmp_path):
    write_events(sample_events(), tmp_path)
    tick = pq.read_schema(next((tmp_path / "tick").rglob("*.parquet")))
    assert tick.field("ts_event").type == pa.int64()
    assert tick.field("price").type == pa.float64()
    assert tick.field("trade_type").type == pa.int8()
    assert tick.field("symbol").type == pa.string()
    book = pq.read_schema(next((tmp_path / "book").rglob("*.parquet")))
    assert book.field("bid_px").type == pa.list_(pa.float64())
    assert book.field("ask_qty").type == pa.list_(pa.int64())
    upd = pq.read_schema(next((tmp_path / "book_update").rglob("*.parquet")))
    assert upd.field("side").type == pa.int8() and upd.field("action").type == pa.int8()


def test_recorder_flush_thresholds_and_no_temp_files(tmp_path):
    events = sample_events()
    rec = ParquetRecorder(RecorderConfig(path=str(tmp_path), flush_events=3, flush_seconds=3600))
    rec.on_batch(events[:2])
    assert files_under(tmp_path) == [] and rec.stats()["rows_buffered"] == 2
    rec.on_batch(events[2:3])  # reaches 3 rows
    assert rec.stats()["rows_written"] == 3 and rec.stats()["rows_buffered"] == 0
    rec.close()

    root2 = tmp_path / "age"
    rec = ParquetRecorder(RecorderConfig(path=str(root2), flush_events=1000, flush_seconds=0.05))
    rec.on_batch(events[:1])
    assert not root2.exists()
    time.sleep(0.08)
    rec.on_batch(events[1:2])  # age threshold passed: both rows go out
    assert rec.stats()["rows_written"] == 2
    rec.on_batch(events[2:4])
    assert rec.flush() == 2
    assert rec.flush() == 0
    rec.on_batch(events[4:])
    rec.close()
    assert rec.stats()["rows_written"] == len(events)
    with pytest.raises(RuntimeError):
        rec.on_batch(events[:1])

    all_files = files_under(tmp_path)
    assert all_files and not [p for p in all_files if p.name.startswith(".") or not PART_RE.match(p.name)]
    assert sum(pq.read_metadata(p).num_rows for p in all_files) == 3 + len(events)


# -- replay -------------------------------------------------------------------


def test_replay_merges_kinds_in_event_time_order(tmp_path):
    events = sample_events()
    # Two flushes so one partition has two files, and an exact ts tie between kinds (t0: trade seq1, book seq2).
    write_events(events[:4], tmp_path)
    write_events(events[4:], tmp_path)
    src = ReplaySource(ReplayConfig(path=str(tmp_path), speed=0), ["WDOZ26", "WINZ26"])
    before = time.time_ns()
    got = drain(src)
    after = time.time_ns()
    assert src.exhausted and src.stats()["files_failed"] == 0

    sym_rank = {"WDOZ26": 0, "WINZ26": 1}
    want = sorted(events, key=lambda e: (e.ts_event, e.seq, sym_rank[e.symbol]))
    assert [type(e) for e in got] == [type(e) for e in want]
    for g, w in zip(got, want):
        assert g.seq == 0 and before <= g.ts_recv <= after
        assert g._replace(seq=w.seq, ts_recv=w.ts_recv) == w
    assert [e.ts_event for e in got] == sorted(e.ts_event for e in got)
    # Only the requested symbol comes out.
    only = drain(ReplaySource(ReplayConfig(path=str(tmp_path), speed=0), ["WINZ26"]))
    assert [e.symbol for e in only] == ["WINZ26"]


def test_replay_time_filters(tmp_path):
    events = sample_events()
    write_events(events, tmp_path)
    day23 = drain(ReplaySource(ReplayConfig(path=str(tmp_path), speed=0, start="2026-11-23", end="2026-11-23"), ["WDOZ26"]))
    assert len(day23) == 6  # Sao Paulo day 23 Nov includes the 02:30 UTC events of 24 Nov
    day24 = drain(ReplaySource(ReplayConfig(path=str(tmp_path), speed=0, start="2026-11-24"), ["WDOZ26"]))
    assert len(day24) == 2
    # Datetime end is exclusive: stop exactly at the 02:30 UTC (23:30 SP) events.
    early = drain(ReplaySource(ReplayConfig(path=str(tmp_path), speed=0, end="2026-11-23T23:30:00-03:00"), ["WDOZ26"]))
    assert len(early) == 4


def test_replay_pacing_speed_zero_vs_ten(tmp_path):
    t0 = ns(2026, 11, 23, 13, 0)
    step = 100_000_000  # 0.1 s
    events = [Trade("WDOZ26", t0 + i * step, 0, i + 1, 5400.0 + i * 0.5, 1, 2) for i in range(21)]  # 2.0 s span
    write_events(events, tmp_path)

    start = time.monotonic()
    fast = drain(ReplaySource(ReplayConfig(path=str(tmp_path), speed=0), ["WDOZ26"]))
    fast_wall = time.monotonic() - start
    assert len(fast) == 21 and fast_wall < 0.15

    src = ReplaySource(ReplayConfig(path=str(tmp_path), speed=10), ["WDOZ26"])
    start = time.monotonic()
    paced = drain(src)
    paced_wall = time.monotonic() - start
    assert len(paced) == 21
    assert 0.18 <= paced_wall <= 0.6, paced_wall
    # No event released early: its wall offset is >= its event-time offset / 10.
    for e in paced:
        assert e.ts_recv - paced[0].ts_recv >= (e.ts_event - t0) / 10 - 3_000_000
    assert [e.price for e in paced] == [e.price for e in events]


def test_replay_wait_sleeps_until_the_next_recorded_event_is_due(tmp_path):
    t0 = ns(2026, 11, 23, 13, 0)
    step = 500_000_000  # 0.5 s of event time, 50 ms of wall time at speed 10
    events = [Trade("WDOZ26", t0 + i * step, 0, i + 1, 5400.0 + i * 0.5, 1, 2) for i in range(6)]
    write_events(events, tmp_path)
    src = ReplaySource(ReplayConfig(path=str(tmp_path), speed=10), ["WDOZ26"])
    got = src.poll(100)  # the first event anchors the clock
    wakeups = 0
    start = time.monotonic()
    while not src.exhausted:
        src.wait(5.0)
        wakeups += 1
        got.extend(src.poll(100))
        assert time.monotonic() - start < 3.0, "replay did not finish"
    assert [e.price for e in got] == [e.price for e in events]
    assert 1 <= wakeups <= 5  # a sleep per event until it was due (a late wake may find two), no spinning
    assert 0.2 <= time.monotonic() - start <= 1.0  # 5 x 50 ms, not 5 x the 5 s timeout


def test_replay_missing_symbol_and_missing_path(tmp_path):
    write_events(sample_events(), tmp_path)
    with pytest.raises(ReplayError, match="no recordings for symbol 'WDOF27'"):
        ReplaySource(ReplayConfig(path=str(tmp_path), speed=0), ["WDOZ26", "WDOF27"])
    with pytest.raises(ReplayError, match="no recordings"):
        ReplaySource(ReplayConfig(path=str(tmp_path / "nowhere"), speed=0), ["WDOZ26"])
    assert issubclass(ReplayError, ValueError)


def test_replay_skips_corrupt_and_temp_files(tmp_path):
    events = sample_events()
    write_events(events, tmp_path)
    part = tmp_path / "tick/symbol=WDOZ26/date=2026-11-24"
    (part / "part-99-deadbeef.parquet").write_bytes(b"PAR1 this is not parquet")
    (part / ".tmp-part-98-cafebabe.parquet").write_bytes(b"half a file")  # a crashed writer's leftover
    src = ReplaySource(ReplayConfig(path=str(tmp_path), speed=0), ["WDOZ26"])
    got = drain(src)
    st = src.stats()
    assert st["files_failed"] == 1 and "part-99-deadbeef.parquet" in st["errors"][0]
    assert len(got) == sum(1 for e in events if e.symbol == "WDOZ26")
