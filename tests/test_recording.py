"""Recorder -> Parquet -> replay, and the CME ES tape importer.

No mocks: events are written to real files under tmp_path and read back with
pandas/pyarrow directly; expected values are computed independently (hand
values, pandas on the raw CSV, published totals in shared/data/README.md).
Tests that need the ES file skip when /work/shared/data is absent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.adapters.config import RecorderConfig, ReplayConfig
from pipelines.model.messages import BookSnapshot, BookUpdate, Trade, TradeType
from pipelines.adapters.files.cme_es import import_cme_es, parse_es_time, read_cme_es
from pipelines.adapters.files.recorder import ParquetRecorder, write_events
from pipelines.adapters.files.replay import ReplayError, ReplaySource

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ES_CSV = DATA / "cme_es_20220124_tbt.csv"
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


def drain(src: ReplaySource, max_events: int = 1000, timeout: float = 10.0) -> list:
    out, deadline = [], time.monotonic() + timeout
    while not src.exhausted:
        out.extend(src.poll(max_events))
        assert time.monotonic() < deadline, "replay did not finish"
        time.sleep(0.0005)
    return out


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


# -- CME ES importer ------------------------------------------------------------


def test_parse_es_time_hand_cases():
    sec = ns(2022, 1, 24, 13, 30, 0)
    assert parse_es_time("2022-01-24", "13:30:00.5000") == sec + 5_000_000
    assert parse_es_time("2022-01-24", "13:30:00.5001") == sec + 5_001_000
    assert parse_es_time("2022-01-24", "13:30:00.47000") == sec + 47_000_000
    assert parse_es_time("2022-01-24", "13:30:00.509003") == sec + 509_003_000
    assert parse_es_time("2022-01-24", "13:30:00.9007") == sec + 9_007_000  # 4-digit form: 9 ms + counter 7
    assert parse_es_time("2022-01-24", "13:30:01.53005") == sec + 1_053_005_000
    assert parse_es_time("2022-01-24", "13:30:00") == sec  # no fraction: the whole second
    # Unpadded ms sort wrongly as decimals: .5000 (5 ms) precedes .47000 (47 ms) precedes .107000.
    assert parse_es_time("2022-01-24", "13:30:00.5000") < parse_es_time("2022-01-24", "13:30:00.47000") < parse_es_time(
        "2022-01-24", "13:30:00.107000"
    )
    # tz: the same wall time in Chicago (CST, UTC-6) is 6 h later in UTC.
    assert parse_es_time("2022-01-24", "13:30:00.5000", tz="America/Chicago") == sec + 6 * 3600 * 10**9 + 5_000_000
    for bad in ("13:30:00.123", "13:30:00.1234567", "13:30:00.5a00", "13:30"):
        with pytest.raises(ValueError):
            parse_es_time("2022-01-24", bad)
    with pytest.raises(ValueError, match="unknown timezone"):
        parse_es_time("2022-01-24", "13:30:00.5000", tz="Mars/Olympus")


def test_import_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="CME ES tape not found"):
        import_cme_es(tmp_path / "absent.csv", tmp_path / "out")


def _synthetic_es_csv(path: Path, rows: list[dict]) -> None:
    cols = ["Date", "Time", "Sequence", "DepthSequence", "Price", "Volume", "TradeType", "AskPrice", "BidPrice",
            "AskSize", "BidSize", "TotalAskDepth", "TotalBidDepth", "AskDOMPrice", "BidDOMPrice"]
    for i in range(40):
        cols += [f"AskDOM_{i}", f"BidDOM_{i}"]
    lines = [";".join(cols)]
    for r in rows:
        full = {c: "0" for c in cols} | {"Date": "2022-01-24"} | r
        lines.append(";".join(str(full[c]) for c in cols))
    path.write_text("\n".join(lines))


def test_import_snapshot_rules_on_synthetic_tape(tmp_path):
    csv_path = tmp_path / "mini.csv"
    _synthetic_es_csv(csv_path, [
        # out of Sequence order on purpose: the importer must sort by Sequence
        {"Time": "13:30:00.12000", "Sequence": 12, "DepthSequence": 7, "Price": 100.25, "Volume": 1, "TradeType": 1,
         "AskDOMPrice": 100.5, "BidDOMPrice": 100.5, "AskDOM_0": 1, "BidDOM_0": 1},  # locked -> skipped
        {"Time": "13:30:00.5000", "Sequence": 10, "DepthSequence": 5, "Price": 100.5, "Volume": 2, "TradeType": 2,
         "AskDOMPrice": 100.5, "BidDOMPrice": 100.25, "AskDOM_0": 4, "AskDOM_1": 0, "AskDOM_2": 6, "BidDOM_0": 3, "BidDOM_1": 8},
        {"Time": "13:30:00.5001", "Sequence": 11, "DepthSequence": 5, "Price": 100.5, "Volume": 1, "TradeType": 2},
        {"Time": "13:30:00.13000", "Sequence": 13, "DepthSequence": 9, "Price": 100.25, "Volume": 5, "TradeType": 1},  # all-zero DOM
    ])
    events, counts = read_cme_es(csv_path, symbol="ESH22")
    assert counts["snapshots"] == 1 and counts["snapshots_skipped"] == {"crossed_or_locked": 1, "empty": 1}
    assert counts["buy_trades"] == 2 and counts["buy_volume"] == 3 and counts["sell_trades"] == 2 and counts["sell_volume"] == 6
    kinds = [(type(e).__name__, getattr(e, "trade_id", None)) for e in events]
    assert kinds == [("Trade", 10), ("BookSnapshot", None), ("Trade", 11), ("Trade", 12), ("Trade", 13)]  # book after its row's trade
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    snap = events[1]
    assert snap.ask_px == (100.5, 101.0) and snap.ask_qty == (4, 6)  # level 1 has size 0 -> skipped
    assert snap.bid_px == (100.25, 100.0) and snap.bid_qty == (3, 8)
    assert events[3].trade_type == TradeType.SELL_AGGRESSOR and events[0].trade_type == TradeType.BUY_AGGRESSOR


@pytest.fixture(scope="module")
def es_frame():
    if not ES_CSV.is_file():
        pytest.skip(f"shared data absent: {ES_CSV}")
    return pd.read_csv(ES_CSV, sep=";", dtype={"Time": str, "Date": str})


def test_es_time_forms_in_file(es_frame):
    forms = es_frame["Time"].str.extract(r"^\d\d:\d\d:\d\d\.(\d+)$")[0]
    assert forms.notna().all()  # every row has a fraction
    lengths = forms.str.len().value_counts().to_dict()
    assert lengths == {6: 1803, 5: 204, 4: 19}
    assert forms.str[-3:].astype(int).max() == 128  # counter never near 999
    # Each form parses to ms + counter, checked on the first row of each length.
    sec = ns(2022, 1, 24, 13, 30, 0)
    for n in (4, 5, 6):
        t = es_frame["Time"][forms.str.len() == n].iloc[0]
        frac = t.split(".")[1]
        whole = int(t[6:8])
        assert parse_es_time("2022-01-24", t) == sec + whole * 10**9 + int(frac[:-3]) * 10**6 + int(frac[-3:]) * 10**3


def test_es_import_counts_order_and_replay(es_frame, tmp_path):
    df = es_frame
    counts = import_cme_es(ES_CSV, tmp_path, symbol="ESH22", tz="UTC")

    # Published totals (shared/data/README.md) and pandas on the raw CSV agree with the import.
    assert counts["trades"] == 2026 == len(df)
    assert (counts["buy_trades"], counts["buy_volume"]) == (1016, 1432)
    assert (counts["sell_trades"], counts["sell_volume"]) == (1010, 1414)
    by_type = df.groupby("TradeType")["Volume"].agg(["count", "sum"])
    assert (counts["buy_trades"], counts["buy_volume"]) == tuple(int(x) for x in by_type.loc[2])
    assert (counts["sell_trades"], counts["sell_volume"]) == tuple(int(x) for x in by_type.loc[1])
    assert counts["other_trades"] == 0

    # Quirk-aware timestamps are non-decreasing in Sequence order; a naive decimal parse is not.
    ordered = df.sort_values("Sequence")
    assert ordered["Sequence"].is_unique
    ts = [parse_es_time(d, t) for d, t in zip(ordered["Date"], ordered["Time"])]
    assert all(b >= a for a, b in zip(ts, ts[1:]))
    naive = pd.to_datetime(ordered["Date"] + " " + ordered["Time"]).astype("int64").tolist()
    assert sum(1 for a, b in zip(naive, naive[1:]) if b < a) == 19
    assert counts["ts_backward_steps"] == 0

    # One snapshot per DepthSequence change, none crossed; first one matches the file's first row.
    changes = int((ordered["DepthSequence"] != ordered["DepthSequence"].shift()).sum())
    assert counts["snapshots"] + sum(counts["snapshots_skipped"].values()) == changes == 611
    books = pd.read_parquet(tmp_path / "book", partitioning=None)
    assert len(books) == counts["snapshots"]
    assert all(b[0] < a[0] for b, a in zip(books["bid_px"], books["ask_px"]))
    first = books.sort_values("seq").iloc[0]
    assert list(first["ask_px"][:2]) == [4347.75, 4348.0] and list(first["ask_qty"][:2]) == [11, 60]
    assert list(first["bid_px"][:2]) == [4347.5, 4347.25] and list(first["bid_qty"][:2]) == [35, 25]

    # Written where replay looks: Sao Paulo date of 13:30 UTC is the same day.
    assert (tmp_path / "tick/symbol=ESH22/date=2022-01-24").is_dir()

    # Replay gives back the same trades, in Sequence order, with snapshots interleaved after them.
    got = drain(ReplaySource(ReplayConfig(path=str(tmp_path), speed=0), ["ESH22"]), max_events=5000)
    assert len(got) == counts["trades"] + counts["snapshots"]
    assert all(b.ts_event >= a.ts_event for a, b in zip(got, got[1:]))
    trades = [e for e in got if isinstance(e, Trade)]
    type_map = {2: int(TradeType.BUY_AGGRESSOR), 1: int(TradeType.SELL_AGGRESSOR)}
    assert [e.trade_id for e in trades] == ordered["Sequence"].tolist()
    assert [e.price for e in trades] == ordered["Price"].tolist()
    assert [e.qty for e in trades] == ordered["Volume"].tolist()
    assert [e.trade_type for e in trades] == [type_map[t] for t in ordered["TradeType"]]
    assert [e.ts_event for e in trades] == ts
    assert sum(e.qty for e in trades if e.aggressor == 1) == 1432


def test_import_script_cli(tmp_path):
    script = REPO / "scripts" / "import_es.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, str(script), "--input", str(tmp_path / "absent.csv"), "--output", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and "not found" in r.stderr
    if not ES_CSV.is_file():
        pytest.skip(f"shared data absent: {ES_CSV}")
    r = subprocess.run([sys.executable, str(script), "--input", str(ES_CSV), "--output", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["trades"] == 2026 and summary["buy_volume"] == 1432 and summary["sell_volume"] == 1414
    assert any((tmp_path / "o" / "tick" / "symbol=ESH22").rglob("part-*.parquet"))
