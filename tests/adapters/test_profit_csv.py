"""Profit "Times & Trades" CSV -> recorder Parquet -> replay (pipelines/adapters/files/profit_csv.py).

Small export files are written to tmp_path in both dialects, imported, and the
Parquet files read back with pyarrow. Expected rows are written out by hand;
ts_event is computed here from the Sao Paulo wall time with zoneinfo and
``datetime.timestamp`` (not pipelines.model.clock); contract symbols are the
hand-known front contracts (WINFUT on 2024-01-08 -> WING24, which expired on
Ash Wednesday 2024-02-14; WDOFUT on 2026-11-30 -> WDOZ26, on 2026-12-01 -> WDOF27).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest

from pipelines.adapters.config import ReplayConfig
from pipelines.adapters.files.profit_csv import ProfitCsvError, import_profit_csv, read_profit_csv
from pipelines.adapters.files.replay import ReplaySource
from tests.helpers import REPO, drain

SP = ZoneInfo("America/Sao_Paulo")
HEADER = "<ticker>,<date>,<time>,<trade_number>,<price>,<qty>,<vol>,<buy_agent>,<sell_agent>,<trade_type>,<aft>"
FIELDS = ("symbol", "ts_event", "ts_recv", "seq", "price", "qty", "trade_type", "buyer", "seller", "trade_id")


def sp_ns(y, mo, d, h, mi, s, ms=0) -> int:
    """Sao Paulo wall time -> ns since the epoch, independently of the code under test."""
    return int(datetime(y, mo, d, h, mi, s, tzinfo=SP).timestamp()) * 1_000_000_000 + ms * 1_000_000


def read_back(root: Path, symbol: str | None = None) -> list[dict]:
    """Every tick row under ``root`` (optionally one symbol), ordered like replay: (ts_event, seq)."""
    files = sorted((root / "tick").glob(f"symbol={symbol or '*'}/date=*/*.parquet"))
    rows = []
    for f in files:
        assert not f.name.startswith(".")
        rows.extend(pq.read_table(f).to_pylist())
    return sorted(rows, key=lambda r: (r["ts_event"], r["seq"]))


COMMA_LINES = [
    HEADER,  # line 1
    "WINFUT,20240108,090038,10,132840.00000000,25,664200.0000,Capital,Capital,Auction,N",  # 2
    "WINFUT,20240108,090038,11,132845.00000000,2,53138.0000,XP,BTG Pactual,AggressorBuyer,N",  # 3
    "WINFUT,20240108,090038,12,132840.00000000,1,26568.0000,308,Genial,AggressorSeller,N",  # 4 numeric agent id
    "WINFUT,20240108,90039,13,132850.00000000,5,0,Rico,Inter,RLP,N",  # 5 leading zero dropped from the time
    "WINFUT,20240108,090040,14,132855.00000000,1,0,UBS,Santander,Cross,S",  # 6 after-market flag
    "WINFUT,20240108,090040,15,132860.00000000,3,0,Capital,Modal,SomethingNew,N",  # 7 unknown type text
    "WINFUT,2024-01-8x,090041,16,132860.0,1,0,XP,XP,AggressorBuyer,N",  # 8 bad date
    "WINFUT,20240108,250000,17,132860.0,1,0,XP,XP,AggressorBuyer,N",  # 9 hour 25
    "WINFUT,20240108,090041,18,abc,1,0,XP,XP,AggressorBuyer,N",  # 10 bad price
    "WINFUT,20240108,090041,19,132860.0,0,0,XP,XP,AggressorBuyer,N",  # 11 zero qty
    "WINFUT,20240108,090041,20,132860.0,-2,0,XP,XP,AggressorBuyer,N",  # 12 negative qty
    "WINFUT,20240108,090041,21,132860",  # 13 truncated line
    HEADER,  # 14 header repeated (concatenated exports)
    "WINFUT,20240108,090038,11,132845.0,2,0,XP,XP,AggressorBuyer,N",  # 15 trade 11 again
    "WINFUT,20240108,090042,x,132870.0,1,0,XP,XP,AggressorBuyer,N",  # 16 bad trade number
    "",  # 17 blank
    "WINFUT,20240108,090042,22,132870.5,4,0,,Clear,AggressorBuyer,N",  # 18 empty buyer
    "WINFUT,20240108,090042,23,inf,1,0,XP,XP,AggressorBuyer,N",  # 19 infinite price
]


def expected_comma() -> list[tuple]:
    """(symbol, ts_event, ts_recv, seq, price, qty, trade_type, buyer, seller, trade_id) in exchange order."""
    t38, t39, t40, t42 = (sp_ns(2024, 1, 8, 9, 0, s) for s in (38, 39, 40, 42))
    rows = [
        (t38, 132840.0, 25, 4, 0, 0, 10),  # Auction, Capital unmapped
        (t38, 132845.0, 2, 2, 3, 85, 11),  # XP 3, BTG Pactual 85
        (t38, 132840.0, 1, 3, 308, 120, 12),
        (t39, 132850.0, 5, 13, 386, 1099, 13),
        (t40, 132855.0, 1, 1, 8, 27, 14),  # Cross -> 1
        (t40, 132860.0, 3, 32, 0, 0, 15),  # unknown text -> TradeType.UNKNOWN (32)
        (t42, 132870.5, 4, 2, 0, 308, 22),
    ]
    return [("WING24", ts, ts, i + 1, px, q, tt, b, s, tid) for i, (ts, px, q, tt, b, s, tid) in enumerate(rows)]


def test_comma_export_every_field_and_counts(tmp_path):
    src = tmp_path / "WINFUT_trades.csv"
    src.write_text("\n".join(COMMA_LINES) + "\n", encoding="utf-8")
    out = tmp_path / "rec"
    counts = import_profit_csv(src, out)

    got = [tuple(r[f] for f in FIELDS) for r in read_back(out)]
    assert got == expected_comma()
    assert sorted(p.parent.name for p in (out / "tick").glob("symbol=*/date=*/*.parquet")) == ["date=2024-01-08"]
    assert counts["symbols"] == {"WING24": 7} and counts["trades"] == counts["rows_written"] == 7
    assert counts["dialect"] == "comma"
    assert counts["rows"] == 16  # data lines: not the headers, not the blank line
    assert counts["skipped"] == {
        "bad_date": 1, "bad_time": 1, "bad_price": 2, "bad_qty": 2, "bad_field_count": 1,
        "duplicate_trade_number": 1, "bad_trade_number": 1,
    }
    assert counts["skipped_lines"] == {
        "bad_date": [8], "bad_time": [9], "bad_price": [10, 19], "bad_qty": [11, 12], "bad_field_count": [13],
        "duplicate_trade_number": [15], "bad_trade_number": [16],
    }
    assert counts["skipped_rows"] == 9 and counts["rows"] == counts["trades"] + counts["skipped_rows"]
    assert counts["repeated_headers"] == 1
    assert counts["trade_types"] == {"AUCTION": 1, "BUY_AGGRESSOR": 2, "SELL_AGGRESSOR": 1, "RLP": 1, "CROSS": 1, "UNKNOWN": 1}
    assert counts["unknown_trade_types"] == {"SomethingNew": 1} and counts["unknown_trade_type_rows"] == 1
    assert counts["unmapped_agents"] == {"Capital": 3, "Modal": 1} and counts["unmapped_agent_fields"] == 4
    assert counts["after_market_rows"] == 1
    assert counts["first_ts_event"] == sp_ns(2024, 1, 8, 9, 0, 38) and counts["last_ts_event"] == sp_ns(2024, 1, 8, 9, 0, 42)
    assert counts["symbol_unresolved"] == {}


def test_replay_plays_imported_trades_in_order(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("\n".join(COMMA_LINES) + "\n", encoding="utf-8")
    import_profit_csv(src, tmp_path / "rec")
    played = drain(ReplaySource(ReplayConfig(path=str(tmp_path / "rec"), speed=0), ["WING24"]))
    # Replay re-stamps seq (0) and ts_recv (wall clock); every other field as imported, same order.
    want = [(e[0], e[1]) + e[4:] for e in expected_comma()]
    assert [(t.symbol, t.ts_event) + tuple(t)[4:] for t in played] == want
    assert all(t.seq == 0 for t in played)


def test_semicolon_ptbr_export_and_roll_split(tmp_path):
    lines = [
        HEADER.replace(",", ";"),
        "WDOFUT;30/11/2026;09:00:01.250;1;5.412,50;3;162.375,00;Agora;Genial;AggressorBuyer;N",
        "WDOFUT;30/11/2026;09:00:01.250;2;5.412,00;1;54.120,00;Genial;Agora;AggressorSeller;N",
        "WDOFUT;30/11/2026;17:59:59;3;5413,5;1.000;0;XP;XP;Auction;N",  # qty with a thousands dot
        "WDOFUT;01/12/2026;09:00:00.5;1;5.420,0;10;0;BTG;Clear;AggressorBuyer;N",  # next contract, numbers restart
        "WDOFUT;01/12/2026;09:00:00,750;2;5.421;2;0;Clear;BTG;AggressorSeller;N",  # 5.421 = 5421 (thousands)
        "WDOFUT;01/12/2026;09:00:01;3;5420.5;1;0;XP;XP;AggressorBuyer;N",  # '.' decimal in a ',' file: ambiguous
        "WDOFUT;2026-12-01;09:00:02;4;5.421,5;1;0;XP;XP;RLP;N",  # ISO date accepted too
    ]
    src = tmp_path / "wdo.csv"
    src.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8-sig")  # Windows line ends + BOM
    out = tmp_path / "rec"
    counts = import_profit_csv(src, out)
    assert counts["dialect"] == "semicolon"
    z = [tuple(r[f] for f in FIELDS) for r in read_back(out, "WDOZ26")]
    f27 = [tuple(r[f] for f in FIELDS) for r in read_back(out, "WDOF27")]
    t1 = sp_ns(2026, 11, 30, 9, 0, 1, 250)
    tc = sp_ns(2026, 11, 30, 17, 59, 59)
    assert z == [
        ("WDOZ26", t1, t1, 1, 5412.5, 3, 2, 39, 120, 1),
        ("WDOZ26", t1, t1, 2, 5412.0, 1, 3, 120, 39, 2),
        ("WDOZ26", tc, tc, 3, 5413.5, 1000, 4, 3, 3, 3),
    ]
    a, b, c = sp_ns(2026, 12, 1, 9, 0, 0, 500), sp_ns(2026, 12, 1, 9, 0, 0, 750), sp_ns(2026, 12, 1, 9, 0, 2)
    assert f27 == [
        ("WDOF27", a, a, 4, 5420.0, 10, 2, 85, 308, 1),
        ("WDOF27", b, b, 5, 5421.0, 2, 3, 308, 85, 2),
        ("WDOF27", c, c, 6, 5421.5, 1, 13, 3, 3, 4),
    ]
    assert counts["skipped"] == {"bad_price": 1} and counts["skipped_lines"] == {"bad_price": [7]}
    assert counts["symbols"] == {"WDOZ26": 3, "WDOF27": 3}
    dirs = sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in (out / "tick").rglob("*.parquet"))
    assert dirs == ["symbol=WDOF27/date=2026-12-01", "symbol=WDOZ26/date=2026-11-30"]


def test_newest_first_export_comes_out_in_trade_number_order(tmp_path):
    lines = [HEADER] + [
        "WDOZ26,20261127,100002,5,5400.0,1,0,XP,XP,AggressorBuyer,N",
        "WDOZ26,20261127,100001,4,5399.5,1,0,XP,XP,AggressorSeller,N",
        "WDOZ26,20261127,100001,3,5399.0,1,0,XP,XP,AggressorSeller,N",
        "WDOZ26,20261127,100001,2,5399.5,1,0,XP,XP,AggressorBuyer,N",
        "WDOZ26,20261127,100000,1,5400.0,1,0,XP,XP,Auction,N",
    ]
    src = tmp_path / "desc.csv"
    src.write_text("\n".join(lines), encoding="utf-8")  # no final newline
    events, counts = read_profit_csv(src)
    assert [(e.trade_id, e.seq, e.price) for e in events] == [
        (1, 1, 5400.0), (2, 2, 5399.5), (3, 3, 5399.0), (4, 4, 5399.5), (5, 5, 5400.0)
    ]
    assert [e.ts_event for e in events] == [sp_ns(2026, 11, 27, 10, 0, s) for s in (0, 1, 1, 1, 2)]
    assert counts["out_of_order_rows"] == 4 and counts["symbols"] == {"WDOZ26": 5}


def test_day_by_day_flush_and_a_day_that_reappears(tmp_path):
    lines = [HEADER] + [
        "WDOFUT,20261130,100000,1,5400.0,1,0,XP,XP,AggressorBuyer,N",
        "WDOFUT,20261130,100001,2,5400.5,1,0,XP,XP,AggressorBuyer,N",
        "WDOFUT,20261201,100000,1,5410.0,2,0,XP,XP,AggressorSeller,N",
        "WDOFUT,20261130,100001,3,5401.0,1,0,XP,XP,AggressorBuyer,N",  # Nov 30 again, after it was written
    ]
    src = tmp_path / "days.csv"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "rec"
    counts = import_profit_csv(src, out, flush_rows=1)
    assert counts["days_split"] == 1 and counts["trades"] == 4
    assert len(list((out / "tick" / "symbol=WDOZ26" / "date=2026-11-30").glob("*.parquet"))) == 2
    played = drain(ReplaySource(ReplayConfig(path=str(out), speed=0), ["WDOZ26", "WDOF27"]))
    assert [(t.symbol, t.trade_id) for t in played] == [("WDOZ26", 1), ("WDOZ26", 2), ("WDOZ26", 3), ("WDOF27", 1)]


def test_windows_1252_file_and_symbol_handling(tmp_path):
    body = HEADER + "\r\n" + "WDOFUT,20190102,090000,1,3870.5,1,0,Ágora,Órama,AggressorBuyer,N\r\n"
    src = tmp_path / "old.csv"
    src.write_bytes(body.encode("cp1252"))
    events, counts = read_profit_csv(src)
    assert counts["encoding"] == "cp1252"
    (t,) = events
    assert (t.buyer, t.seller) == (39, 0)  # accents folded: Ágora -> agora -> 39
    assert counts["unmapped_agents"] == {"Órama": 1}
    # 2019 is outside the known B3 calendar: the row is kept under the raw ticker, and counted.
    assert t.symbol == "WDOFUT" and counts["symbol_unresolved"] == {"WDOFUT": 1}
    events, counts = read_profit_csv(src, symbol="WDOG19")
    assert [e.symbol for e in events] == ["WDOG19"] and counts["symbol_unresolved"] == {}


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Profit CSV not found"):
        import_profit_csv(tmp_path / "absent.csv", tmp_path / "rec")
    bad = tmp_path / "bad.csv"
    bad.write_text("ticker,date,price\nWDOFUT,20261130,5400\n", encoding="utf-8")
    with pytest.raises(ProfitCsvError, match="header lacks time, trade_number, qty, buy_agent, sell_agent, trade_type"):
        import_profit_csv(bad, tmp_path / "rec")
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ProfitCsvError, match="empty file"):
        import_profit_csv(empty, tmp_path / "rec")
    assert not (tmp_path / "rec").exists()


def test_script_summary_and_exit_codes(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("\n".join(COMMA_LINES) + "\n", encoding="utf-8")
    script = str(REPO / "scripts" / "import_profit.py")
    ok = subprocess.run([sys.executable, script, "--input", str(src), "--output", str(tmp_path / "rec"),
                         "--symbol", "WINJ24"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    (line,) = ok.stdout.strip().splitlines()
    summary = json.loads(line)
    assert summary["trades"] == 7 and summary["symbols"] == {"WINJ24": 7} and summary["skipped_rows"] == 9
    assert len(list((tmp_path / "rec" / "tick" / "symbol=WINJ24").rglob("*.parquet"))) == 1

    missing = subprocess.run([sys.executable, script, "--input", str(tmp_path / "nope.csv")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip().count("\n") == 0 and "input file not found" in missing.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("a;b;c\n1;2;3\n", encoding="utf-8")
    header = subprocess.run([sys.executable, script, "--input", str(bad), "--output", str(tmp_path / "rec2")],
                            capture_output=True, text=True, timeout=60)
    assert header.returncode == 2 and header.stderr.strip().count("\n") == 0
    assert "not a Profit Times & Trades export" in header.stderr


def test_a_malformed_csv_line_is_skipped_not_fatal(tmp_path):
    lines = [HEADER,
             "WDOZ26,20261127,100000,1,5400.0,1,0,XP,XP,Auction,N",
             "WDOZ26,20261127,100001,2," + "9" * 200_000 + ",1,0,XP,XP,Auction,N",  # over csv's field limit
             "WDOZ26,20261127,100002,3,5400.5,1,0,XP,XP,AggressorBuyer,N"]
    src = tmp_path / "big.csv"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    events, counts = read_profit_csv(src)
    assert [e.trade_id for e in events] == [1, 3]
    assert counts["skipped"] == {"malformed_csv": 1} and counts["skipped_lines"] == {"malformed_csv": [3]}


def test_one_big_day_is_written_in_parts(tmp_path):
    lines = [HEADER] + [f"WDOZ26,20261127,1000{i:02d},{i + 1},{5400 + i * 0.5},1,0,XP,XP,AggressorBuyer,N" for i in range(10)]
    src = tmp_path / "day.csv"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "rec"
    counts = import_profit_csv(src, out, flush_rows=1)  # parts of at most 4 rows
    assert counts["mid_day_flushes"] == 2 and counts["trades"] == 10
    assert len(list(out.rglob("*.parquet"))) == 3
    played = drain(ReplaySource(ReplayConfig(path=str(out), speed=0), ["WDOZ26"]))
    assert [t.trade_id for t in played] == list(range(1, 11))
    assert [t.ts_event for t in played] == [sp_ns(2026, 11, 27, 10, 0, s) for s in range(10)]
