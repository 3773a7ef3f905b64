"""The Binance BTCUSDT capture importer (pipelines/adapters/files/binance.py): the book rebuild,
gaps and bad lines on hand-made captures, the real capture's counts, the rebuilt book against
the exchange's own bookTicker quotes, and the recorder layout it writes read back by replay.

Expected values are computed independently: by hand (arithmetic in the comments), from the raw
lines with json/Decimal in the test, and from the totals published with the capture (README of
shared/data: 41,249 lines, 9,757 trades, 3,451 diffs, 28,040 bookTicker, one snapshot with
lastUpdateId 50093239218). Tests that need the real file skip when it is absent.
"""

from __future__ import annotations

import bisect
import gzip
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from pipelines.adapters.config import ReplayConfig
from pipelines.adapters.files.binance import LOTS_PER_BTC, import_binance, read_binance
from pipelines.adapters.files.replay import ReplaySource
from pipelines.data.validation import Validator
from pipelines.model.messages import BookSnapshot, Trade, TradeType
from tests.helpers import REPO, SHARED_DATA, drain

CAPTURE = SHARED_DATA / "binance_btcusdt_20240808.jsonl.gz"
SNAPSHOT_ID = 50093239218  # lastUpdateId of the capture's REST snapshot (shared/data README)
MS = 1_000_000  # ns per ms, spelled out rather than imported from the code under test


def _line(local_ns: int, obj: object) -> str:
    return f"{local_ns} {json.dumps(obj)}"


def _diff(first: int, last: int, e_ms: int, bids=(), asks=()) -> dict:
    return {"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate", "E": e_ms, "s": "BTCUSDT", "U": first,
                                                      "u": last, "b": [list(x) for x in bids], "a": [list(x) for x in asks]}}


def _trade(t: int, t_ms: int, price: str, qty: str, maker_buyer: bool) -> dict:
    return {"stream": "btcusdt@trade", "data": {"e": "trade", "E": t_ms + 1, "s": "BTCUSDT", "t": t, "p": price, "q": qty,
                                                "T": t_ms, "m": maker_buyer, "M": True}}


def _snapshot(last_id: int, bids, asks) -> dict:
    return {"lastUpdateId": last_id, "bids": [list(x) for x in bids], "asks": [list(x) for x in asks]}


def _write(path: Path, lines: list[str], gz: bool) -> Path:
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


# The hand-made capture, in file (local receive) order.
MINI = [
    _line(1, _diff(1, 5, 900, bids=[("100.00", "9")])),  # before the snapshot, all <= 10: stale
    _line(2, _diff(8, 12, 1000, bids=[("99.98", "0.3")], asks=[("100.01", "1.5")])),  # straddles 11: first applied
    _line(3, _snapshot(10, bids=[("100.00", "1.0"), ("99.99", "0.5")], asks=[("100.01", "2.0"), ("100.02", "0.00001")])),
    _line(4, _trade(71, 999, "100.00", "0.02", True)),  # later in the file than the diff at E=1000, earlier in time
    _line(5, _trade(72, 1005, "100.01", "0.00150", False)),
    _line(6, _diff(13, 15, 1100, bids=[("100.00", "0.000004")], asks=[("100.01", "0")])),
    _line(7, _trade(73, 1100, "100.02", "0.00001", False)),  # same time as the diff before it: stays after it
    _line(8, {"stream": "btcusdt@bookTicker", "data": {"u": 15, "s": "BTCUSDT", "b": "100.00", "B": "0.00001",
                                                       "a": "100.02", "A": "0.00001"}}),
    _line(9, _diff(17, 18, 1200, bids=[("100.00", "5")])),  # 16 is missing: a gap
    _line(10, _diff(19, 20, 1300, bids=[("50.5", "0.00002")])),  # buffered until the next snapshot
    _line(11, _snapshot(18, bids=[("50.00", "1")], asks=[("60.00", "1")])),
    _line(12, _diff(21, 21, 1400, bids=[("61.00", "1")])),  # bid 61 >= ask 60: crossed, not emitted
    _line(13, _diff(22, 22, 1500, bids=[("61.00", "0")])),
    # bad lines, one per reason
    "garbage-without-a-space",
    "12ab {}",
    "14 {not json",
    "15 [1, 2]",
    _line(16, {"stream": "btcusdt@kline_1m", "data": {}}),
    _line(17, {"stream": "btcusdt@trade", "data": {"p": "1.0", "q": "1.0", "t": 1, "m": True}}),  # no T
    _line(18, _trade(74, 1600, "100.00", "-1", True)),
    _line(19, _trade(75, 1600, "NaN", "1", True)),
    _line(20, _trade(76, 1600, "100.00", "1", "yes")),
    _line(21, _diff(23, 23, 1600, bids=[("abc", "1")])),
]


@pytest.mark.parametrize("gz", [False, True])
def test_mini_capture_book_gap_and_bad_lines(tmp_path, gz):
    path = _write(tmp_path / ("mini.jsonl.gz" if gz else "mini.jsonl"), MINI, gz)
    events, counts = read_binance(path, symbol="BTCUSDT", levels=2)

    assert counts["lines"] == len(MINI) == 23  # 13 good lines + 10 bad ones
    assert counts["bad_lines"] == {"no_local_time": 1, "bad_local_time": 1, "bad_json": 1, "unknown_message": 1,
                                   "unknown_stream": 1, "trade_field_missing": 1, "bad_qty": 1, "bad_price": 2,
                                   "bad_maker_flag": 1}
    assert counts["book_tickers"] == 1 and counts["rest_snapshots"] == 2 and counts["rest_snapshots_unused"] == 0
    # 7 well-formed diffs: 1-5 and 17-18 stale against their snapshot (u <= 10, u <= 18); 16 missing: one gap.
    assert counts["depth_diffs"] == 7 and counts["diffs_stale"] == 2 and counts["gaps"] == 1
    assert counts["diffs_applied"] == 5 and counts["diffs_unapplied"] == 0
    assert counts["snapshots"] == 4 and counts["snapshots_skipped"] == {"crossed_or_locked": 1}
    assert counts["qty_rounded"] == 1  # 0.000004 BTC = 0.4 lot
    # 0.02 BTC = 2000 lots sold (maker was the buyer); 0.0015 + 0.00001 BTC = 150 + 1 lots bought.
    assert (counts["sell_trades"], counts["sell_lots"], counts["buy_trades"], counts["buy_lots"]) == (1, 2000, 2, 151)

    # Merged by event time, stably: the trade at T=999 moves before the book at E=1000; the trade at 1100
    # stays after the book at 1100 (file order). No book at 1200 (gap) nor at 1400 (crossed).
    kinds = [(type(e).__name__, e.ts_event // MS) for e in events]
    assert kinds == [("Trade", 999), ("BookSnapshot", 1000), ("Trade", 1005), ("BookSnapshot", 1100), ("Trade", 1100),
                     ("BookSnapshot", 1300), ("BookSnapshot", 1500)]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6, 7]
    assert [e.ts_recv for e in events] == [4, 2, 5, 6, 7, 10, 13]  # the line's local ns
    assert all(e.symbol == "BTCUSDT" for e in events)

    t1, t2, t3 = (e for e in events if isinstance(e, Trade))
    assert (t1.price, t1.qty, t1.trade_type, t1.trade_id) == (100.0, 2000, TradeType.SELL_AGGRESSOR, 71)
    assert (t2.price, t2.qty, t2.trade_type, t2.trade_id) == (100.01, 150, TradeType.BUY_AGGRESSOR, 72)
    assert (t3.qty, t3.aggressor) == (1, 1)

    b1, b2, b3, b4 = (e for e in events if isinstance(e, BookSnapshot))
    # Snapshot bids 100.00 x 1.0 BTC, 99.99 x 0.5; asks 100.01 x 2.0, 100.02 x 0.00001.
    # Diff 8-12 adds bid 99.98 x 0.3 (third level, cut by levels=2) and sets ask 100.01 to 1.5 BTC.
    assert (b1.bid_px, b1.bid_qty) == ((100.0, 99.99), (100_000, 50_000))
    assert (b1.ask_px, b1.ask_qty) == ((100.01, 100.02), (150_000, 1))
    # Diff 13-15 deletes ask 100.01 and sets bid 100.00 to 0.4 lot: rounded to 0, kept at 1 lot.
    assert (b2.bid_px, b2.bid_qty) == ((100.0, 99.99), (1, 50_000))
    assert (b2.ask_px, b2.ask_qty) == ((100.02,), (1,))
    # Re-synced on the second snapshot (bid 50 x 1, ask 60 x 1): diff 19-20 adds bid 50.5 x 2 lots.
    assert (b3.bid_px, b3.bid_qty, b3.ask_px, b3.ask_qty) == ((50.5, 50.0), (2, 100_000), (60.0,), (100_000,))
    # Diff 21 (bid 61, crossed) then diff 22 deletes it again: the book of b3.
    assert b4[4:] == b3[4:]


@pytest.mark.parametrize("line, reason", [
    ("0 " + json.dumps(_trade(1, 5, "1.0", "1", True)), "bad_local_time"),  # receive times are positive
    ("9" * 20 + " {}", "bad_local_time"),  # beyond int64
    ("\u00b2 {}", "bad_local_time"),  # a Unicode digit int() refuses
    ("1 " + "[" * 100_000 + "]" * 100_000, "bad_json"),  # nested too deep for the parser
    ("1 " + json.dumps(_trade(1, 5.5, "1.0", "1", True)), "bad_time"),  # T not an integer
    ("1 " + json.dumps(_trade(1, 10**17, "1.0", "1", True)), "bad_time"),  # 1e17 ms = 1e23 ns: beyond int64
    ("1 " + json.dumps(_trade(1, 0, "1.0", "1", True)), "bad_time"),
    ("1 " + json.dumps(_trade(-1, 5, "1.0", "1", True)), "bad_trade_id"),
    ("1 " + json.dumps(_trade(1, 5, "1.0", "0", True)), "bad_qty"),  # a print of nothing
    ("1 " + json.dumps(_trade(1, 5, "1.0", "1e999999", True)), "bad_qty"),  # beyond the decimal context
    ("1 " + json.dumps(_trade(1, 5, "1.0", "1e20", True)), "bad_qty"),  # 1e25 lots: beyond int64
    ("1 " + json.dumps(_trade(1, 5, 1.0, "1", True)), "bad_price"),  # a number, not Binance's string
    ("1 " + json.dumps(_trade(1, 5, "inf", "1", True)), "bad_price"),
    ("1 " + json.dumps(_diff(True, 3, 5)), "bad_update_id"),  # a bool is not an update id
    ("1 " + json.dumps(_diff(4, 3, 5)), "bad_update_id"),  # U after u
    ("1 " + json.dumps(_diff(1, 3, 5, bids=[("1.0",)])), "bad_levels"),
    ("1 " + json.dumps(_diff(1, 3, 5, bids=[("1.0", "0.000001")], asks=[("x", "1")])), "bad_price"),  # rounded, then rejected
    ("1 " + json.dumps({"stream": "btcusdt@depth@100ms", "data": {"U": 1, "u": 2}}), "depth_field_missing"),
    ("1 " + json.dumps({"lastUpdateId": 5, "bids": []}), "snapshot_field_missing"),
    ("1 " + json.dumps({"lastUpdateId": 5, "bids": "x", "asks": []}), "bad_levels"),
    ("1 " + json.dumps({"stream": 7, "data": {}}), "unknown_message"),
    (b"1 \xff\xfe", "bad_encoding"),
])
def test_bad_line_counted_under_its_reason(tmp_path, line, reason):
    path = tmp_path / "c.jsonl"
    path.write_bytes((line if isinstance(line, bytes) else line.encode()) + b"\n")
    events, counts = read_binance(path)
    assert events == [] and counts["lines"] == 1 and counts["bad_lines"] == {reason: 1}
    assert counts["qty_rounded"] == 0  # a rejected line rounds nothing


def test_gap_without_resync_emits_no_book(tmp_path):
    path = _write(tmp_path / "c.jsonl", [
        _line(1, _snapshot(10, bids=[("1.0", "1")], asks=[("2.0", "1")])),
        _line(2, _diff(12, 14, 100, bids=[("1.5", "1")])),  # U 12 > 10 + 1: the snapshot is too old
        _line(3, _diff(15, 16, 200, bids=[("1.6", "1")])),
        _line(4, _trade(1, 250, "1.5", "1", False)),
    ], gz=False)
    events, counts = read_binance(path)
    assert counts["gaps"] == 1 and counts["diffs_applied"] == 0 and counts["diffs_unapplied"] == 2
    assert [type(e).__name__ for e in events] == ["Trade"]  # trades do not need the book
    assert events[0].qty == LOTS_PER_BTC


def test_gap_while_live_then_snapshot_unused(tmp_path):
    path = _write(tmp_path / "c.jsonl", [
        _line(1, _snapshot(10, bids=[("1.0", "1")], asks=[("2.0", "1")])),
        _line(2, _diff(11, 12, 100, asks=[("1.9", "1")])),
        _line(3, _snapshot(12, bids=[("1.0", "1")], asks=[("2.0", "1")])),  # book already live: unused
        _line(4, _diff(11, 12, 150, asks=[("1.8", "1")])),  # replayed duplicate: stale, ignored
        _line(5, _diff(12, 13, 200, asks=[("1.7", "1")])),  # overlaps 12: not U == 13, a gap
        _line(6, _diff(14, 15, 300, asks=[("1.6", "1")])),  # buffered, never applied
    ], gz=False)
    events, counts = read_binance(path)
    assert counts["rest_snapshots"] == 2 and counts["rest_snapshots_unused"] == 1
    assert counts["diffs_applied"] == 1 and counts["diffs_stale"] == 1 and counts["gaps"] == 1
    assert counts["diffs_unapplied"] == 2
    assert [(e.ts_event // MS, e.ask_px) for e in events] == [(100, (1.9, 2.0))]


def test_missing_unreadable_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="Binance capture not found"):
        read_binance(tmp_path / "absent.gz")
    broken = tmp_path / "broken.gz"
    full = gzip.compress(b"".join(f"{i} {{}}\n".encode() for i in range(5000)))
    broken.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="unreadable gzip"):
        read_binance(broken)
    with pytest.raises(ValueError, match="levels"):
        read_binance(broken, levels=0)
    with pytest.raises(ValueError, match="symbol"):
        read_binance(broken, symbol="")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    events, counts = read_binance(empty)
    assert events == [] and counts["lines"] == 0


# -- the real capture -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def capture() -> Path:
    if not CAPTURE.is_file():
        pytest.skip(f"real data not available: {CAPTURE} (../shared/data is absent)")
    return CAPTURE


@pytest.fixture(scope="module")
def raw(capture) -> dict:
    """The capture's messages read with json alone, in file order."""
    out: dict = {"trades": [], "diffs": [], "tickers": [], "snapshots": [], "lines": 0}
    with gzip.open(capture, "rt") as f:
        for line in f:
            out["lines"] += 1
            msg = json.loads(line.split(" ", 1)[1])
            stream = msg.get("stream", "")
            if "lastUpdateId" in msg:
                out["snapshots"].append(msg)
            elif stream.endswith("@trade"):
                out["trades"].append(msg["data"])
            elif "@depth" in stream:
                out["diffs"].append(msg["data"])
            elif stream.endswith("@bookTicker"):
                out["tickers"].append(msg["data"])
    return out


@pytest.fixture(scope="module")
def imported(capture):
    return read_binance(capture, symbol="BTCUSDT", levels=10)


def test_capture_counts(raw, imported):
    events, counts = imported
    assert raw["lines"] == counts["lines"] == 41_249
    assert len(raw["trades"]) == counts["trades"] == 9_757
    assert len(raw["diffs"]) == counts["depth_diffs"] == 3_451
    assert len(raw["tickers"]) == counts["book_tickers"] == 28_040
    assert counts["rest_snapshots"] == len(raw["snapshots"]) == 1
    assert raw["snapshots"][0]["lastUpdateId"] == SNAPSHOT_ID
    assert counts["bad_lines"] == {} and counts["gaps"] == 0 and counts["diffs_unapplied"] == 0

    # Aggressor split: m true = seller aggressor; lots = BTC x 100,000, exact in Decimal.
    for side, maker_buyer in (("sell", True), ("buy", False)):
        mine = [t for t in raw["trades"] if t["m"] is maker_buyer]
        assert counts[f"{side}_trades"] == len(mine)
        assert counts[f"{side}_lots"] == sum(Decimal(t["q"]) * 100_000 for t in mine)
    assert counts["buy_trades"] + counts["sell_trades"] == 9_757

    # Diffs ending at or before the snapshot are dropped; the rest are contiguous and all applied.
    stale = [d for d in raw["diffs"] if d["u"] <= SNAPSHOT_ID]
    live = sorted((d for d in raw["diffs"] if d["u"] > SNAPSHOT_ID), key=lambda d: d["u"])
    assert live[0]["U"] <= SNAPSHOT_ID + 1 <= live[0]["u"]
    assert all(b["U"] == a["u"] + 1 for a, b in zip(live, live[1:]))
    assert counts["diffs_stale"] == len(stale) == 2 and counts["diffs_applied"] == len(live) == 3_449
    assert counts["snapshots"] == 3_449 and counts["snapshots_skipped"] == {}
    assert len(events) == 9_757 + 3_449


def test_capture_order_and_trades(raw, imported):
    events, _ = imported
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(b.ts_event >= a.ts_event for a, b in zip(events, events[1:]))
    trades = [e for e in events if isinstance(e, Trade)]
    # T is non-decreasing in the file, so the stable merge keeps the trades in file order.
    assert [e.trade_id for e in trades] == [t["t"] for t in raw["trades"]]
    assert [e.ts_event for e in trades] == [t["T"] * MS for t in raw["trades"]]
    assert [e.price for e in trades] == [float(t["p"]) for t in raw["trades"]]
    assert [e.qty for e in trades] == [int(Decimal(t["q"]) * 100_000) for t in raw["trades"]]
    assert [e.aggressor for e in trades] == [-1 if t["m"] else 1 for t in raw["trades"]]
    books = [e for e in events if isinstance(e, BookSnapshot)]
    assert [e.ts_event for e in books] == [d["E"] * MS for d in raw["diffs"] if d["u"] > SNAPSHOT_ID]
    # The pipeline's entrance takes every event as it is (integer lots, ordered levels, event time in order).
    validator = Validator(tolerance_ns=0)
    assert len(validator.filter(events)) == len(events) and validator.stats()["rejected"] == {}


def test_capture_book_matches_book_ticker(raw, imported):
    """The rebuilt book against Binance's own best quotes, which the book code never sees.

    bookTicker pushes every change of the best bid or ask with its update id ``u``, so the top of
    the book after the diff ending at ``u`` is the last ticker with an id <= ``u``. Tolerance:
    none. Every book must agree in both prices and both sizes (lots = BTC x 100,000).
    """
    events, _ = imported
    u_at = {d["E"] * MS: d["u"] for d in raw["diffs"]}  # E is unique per diff (100 ms cadence)
    assert len(u_at) == len(raw["diffs"])
    tickers = sorted(raw["tickers"], key=lambda t: t["u"])
    ids = [t["u"] for t in tickers]
    books = [e for e in events if isinstance(e, BookSnapshot)]
    compared = 0
    for book in books:
        assert book.bid_px[0] < book.ask_px[0]  # never crossed or locked
        assert list(book.bid_px) == sorted(book.bid_px, reverse=True) and list(book.ask_px) == sorted(book.ask_px)
        assert len(book.bid_px) == len(book.ask_px) == 10
        i = bisect.bisect_right(ids, u_at[book.ts_event]) - 1
        assert i >= 0
        t = tickers[i]
        assert (book.bid_px[0], book.ask_px[0]) == (float(t["b"]), float(t["a"]))
        assert (book.bid_qty[0], book.ask_qty[0]) == (Decimal(t["B"]) * 100_000, Decimal(t["A"]) * 100_000)
        compared += 1
    assert compared == 3_449


def test_capture_writes_recorder_layout_and_replays(capture, imported, tmp_path):
    events, _ = imported
    counts = import_binance(capture, tmp_path, symbol="BTCUSDT", levels=10)
    assert counts["rows_written"] == len(events) == 13_206
    # 2024-08-08 23:54 UTC is 20:54 in Sao Paulo (UTC-3): the same date folder.
    assert (tmp_path / "tick/symbol=BTCUSDT/date=2024-08-08").is_dir()
    assert (tmp_path / "book/symbol=BTCUSDT/date=2024-08-08").is_dir()
    books = pd.read_parquet(tmp_path / "book", partitioning=None)
    assert len(books) == 3_449

    got = drain(ReplaySource(ReplayConfig(path=str(tmp_path), speed=0), ["BTCUSDT"]), max_events=20_000)
    assert len(got) == len(events)
    assert sum(isinstance(e, Trade) for e in got) == 9_757
    assert sum(isinstance(e, BookSnapshot) for e in got) == 3_449
    assert [(type(e), e.ts_event) for e in got] == [(type(e), e.ts_event) for e in events]
    assert [e.trade_id for e in got if isinstance(e, Trade)] == [e.trade_id for e in events if isinstance(e, Trade)]


def test_import_script_cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(source: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "scripts" / "import_binance.py"), "--input", str(source),
                               "--output", str(tmp_path / "o")], capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=120)

    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"1 {}\n" * 1000)[:40])
    for source, message in ((tmp_path / "absent.gz", "not found"), (broken, "unreadable gzip")):
        r = run(source)
        assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and message in r.stderr
    if not CAPTURE.is_file():
        pytest.skip(f"shared data absent: {CAPTURE}")
    r = run(CAPTURE)
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.strip().splitlines()  # exactly one summary line
    summary = json.loads(line)
    assert summary["trades"] == 9_757 and summary["snapshots"] == 3_449 and summary["lots_per_btc"] == 100_000
    assert any((tmp_path / "o" / "tick" / "symbol=BTCUSDT").rglob("part-*.parquet"))
