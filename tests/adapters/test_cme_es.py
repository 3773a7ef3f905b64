"""The CME ES tape importer (pipelines/adapters/files/cme_es.py): parsing, snapshots, the
recorder layout it writes and what replay gives back.

Expected values are computed independently: hand values, pandas on the raw CSV, and the
totals published with the tape (2,026 trades: 1,016 buys for 1,432 contracts, 1,010 sells for
1,414). Tests that need the real file skip when it is absent (see ``tests/helpers.ES_FILE``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from pipelines.adapters.config import ReplayConfig
from pipelines.adapters.files.cme_es import import_cme_es, parse_es_time, read_cme_es
from pipelines.adapters.files.replay import ReplaySource
from pipelines.model.messages import Trade, TradeType
from tests.helpers import ES_FILE, REPO, drain


def ns(y, mo, d, h, mi, s=0, us=0) -> int:
    """UTC wall time -> ns (independent of pipelines.model.clock)."""
    return int(datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc).timestamp()) * 1_000_000_000 + us * 1_000


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
def es_frame(es_file):
    return pd.read_csv(es_file, sep=";", dtype={"Time": str, "Date": str})


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
    counts = import_cme_es(ES_FILE, tmp_path, symbol="ESH22", tz="UTC")

    # The totals published with the tape and pandas on the raw CSV agree with the import.
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
    if not ES_FILE.is_file():
        pytest.skip(f"shared data absent: {ES_FILE}")
    r = subprocess.run([sys.executable, str(script), "--input", str(ES_FILE), "--output", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["trades"] == 2026 and summary["buy_volume"] == 1432 and summary["sell_volume"] == 1414
    assert any((tmp_path / "o" / "tick" / "symbol=ESH22").rglob("part-*.parquet"))
