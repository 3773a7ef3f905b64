"""Import the CME E-mini S&P 500 (ES) Sierra Chart tape into the recorder layout.

Input: ``cme_es_20220124_tbt.csv``: ``;``-separated, 95 columns,
``Date;Time;Sequence;DepthSequence;Price;Volume;TradeType;AskPrice;BidPrice;
AskSize;BidSize;TotalAskDepth;TotalBidDepth;AskDOMPrice;BidDOMPrice;
AskDOM_0;BidDOM_0;...;AskDOM_39;BidDOM_39``. It is the closest real analog we
have to a WDO/WIN tape with the true aggressor, so importing it lets the
replay path and the feature engine run on real microstructure.

Decisions, and why:

- **Time format.** ``Time`` is ``HH:MM:SS.<ms><ccc>``: milliseconds *without*
  zero padding followed by a 3-digit sub-millisecond counter (``.5000`` = 5 ms
  + 000, ``.47000`` = 47 ms, ``.509003`` = 509 ms + 3). In the file every row
  has a fraction of 4, 5 or 6 digits (19, 204 and 1,803 rows; counter 0..128).
  :func:`parse_es_time` maps it to ``second + ms*1e6 + counter*1e3`` ns: the
  counter becomes microseconds, which keeps the order of trades sharing one
  millisecond stamp and never spills into the next millisecond (counter <= 999).
  A time without a fraction is accepted as the whole second. A naive decimal
  parse (".5000" = 500 ms) reorders rows, hence this parser.
- **Timezone.** The source does not state it. ``tz`` defaults to ``"UTC"``;
  pass another IANA name (e.g. ``"America/Chicago"``) if you know better. The
  choice shifts every timestamp by a constant and can move the Sao Paulo
  partition date, nothing else.
- **Order.** Rows are processed in ``Sequence`` order (strictly increasing in
  the file), the documented safe order key. Output ``seq`` numbers are 1, 2, ...
  in emission order, so replay's ``(ts_event, seq)`` order equals file order.
- **Trades.** ``TradeType`` uses Sierra Chart's convention: 2 = buyer
  aggressor -> ``TradeType.BUY_AGGRESSOR`` (2); 1 = *seller* aggressor ->
  ``TradeType.SELL_AGGRESSOR`` (3). Anything else -> ``UNKNOWN`` (counted).
  ``qty`` = Volume, ``trade_id`` = Sequence, buyer/seller unknown (0).
  ``ts_recv`` = ``ts_event``: there is no receive time in a historical file
  (replay overwrites it anyway).
- **Book snapshots.** One ``BookSnapshot`` whenever ``DepthSequence`` changes
  (first row included), built from the DOM block: ask level i at
  ``AskDOMPrice + i*0.25`` with size ``AskDOM_i``, bid level i at
  ``BidDOMPrice - i*0.25`` with size ``BidDOM_i`` (ES tick 0.25), zero sizes
  skipped. **This interpretation of the DOM block is unverified** (the file has
  no documentation; the DOM block is also not synchronous with the L1 quote
  fields). A snapshot that would be crossed/locked (best bid
  >= best ask) or has no level on either side is skipped and counted by reason.
  A one-sided book is kept (``BookSnapshot`` allows an empty side).
- **Snapshot after the trade of the same row.** The row's quotes are
  post-trade (the trade price equals the same-side quote in only 78.5 % of
  rows), so the book state describes the market after that print.
"""

from __future__ import annotations

import csv
import os
from datetime import date, datetime, time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipelines.model.messages import BookSnapshot, Event, Trade, TradeType
from pipelines.adapters.files.recorder import write_events
from pipelines.model.clock import NS_PER_MS, NS_PER_US, to_ns

ES_TICK = 0.25
DOM_LEVELS = 40
REQUIRED_COLUMNS = (
    "Date", "Time", "Sequence", "DepthSequence", "Price", "Volume", "TradeType", "AskDOMPrice", "BidDOMPrice",
)
# Sierra Chart TradeType -> ProfitDLL TTradeType.
SIERRA_TRADE_TYPES = {2: TradeType.BUY_AGGRESSOR, 1: TradeType.SELL_AGGRESSOR}


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {tz!r}: expected an IANA name such as UTC or America/Chicago") from None


def parse_es_time(date_str: str, time_str: str, tz: str = "UTC") -> int:
    """``2022-01-24``, ``13:30:00.509003`` -> ns since the epoch (see module docstring).

    The fraction must be 4-6 digits (1-3 ms digits + 3 counter digits) or absent.
    ``tz`` is the IANA zone the file's wall times are in (unstated in the source).
    """
    zone = _zone(tz)
    hms, sep, frac = time_str.strip().partition(".")
    try:
        h, m, s = (int(x) for x in hms.split(":"))
        second = datetime.combine(date.fromisoformat(date_str.strip()), dtime(h, m, s), tzinfo=zone)
    except ValueError:
        raise ValueError(f"bad ES date/time {date_str!r} {time_str!r}: expected YYYY-MM-DD and HH:MM:SS[.fff]") from None
    if not sep:
        return to_ns(second)
    if not frac.isdigit() or not 4 <= len(frac) <= 6:
        raise ValueError(
            f"bad ES time fraction {time_str!r}: expected 4-6 digits (milliseconds unpadded + 3-digit counter)"
        )
    ms, counter = int(frac[:-3]), int(frac[-3:])
    return to_ns(second) + ms * NS_PER_MS + counter * NS_PER_US


def _dom_snapshot(symbol: str, ts: int, row: dict[str, str]) -> tuple[BookSnapshot | None, str | None]:
    """Snapshot from the row's DOM block, or (None, skip reason)."""
    ask0, bid0 = float(row["AskDOMPrice"]), float(row["BidDOMPrice"])
    ask_px: list[float] = []
    ask_qty: list[int] = []
    bid_px: list[float] = []
    bid_qty: list[int] = []
    for i in range(DOM_LEVELS):
        a, b = int(row[f"AskDOM_{i}"]), int(row[f"BidDOM_{i}"])
        if a > 0:
            ask_px.append(ask0 + i * ES_TICK)  # multiples of 0.25 are exact in binary
            ask_qty.append(a)
        if b > 0:
            bid_px.append(bid0 - i * ES_TICK)
            bid_qty.append(b)
    if not ask_px and not bid_px:
        return None, "empty"
    if ask_px and bid_px and bid_px[0] >= ask_px[0]:
        return None, "crossed_or_locked"
    snap = BookSnapshot(symbol, ts, ts, 0, tuple(bid_px), tuple(bid_qty), tuple(ask_px), tuple(ask_qty))
    return snap, None


def read_cme_es(csv_path: str | os.PathLike, symbol: str = "ESH22", tz: str = "UTC") -> tuple[list[Event], dict[str, Any]]:
    """Parse the tape into Trade and BookSnapshot events (seq 1..N) plus counts."""
    _zone(tz)  # fail before reading the file
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"CME ES tape not found: {path} (expected shared/data/cme_es_20220124_tbt.csv)")
    with open(path, newline="", encoding="ascii") as f:
        reader = csv.DictReader(f, delimiter=";")
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a Sierra Chart ES tape, missing columns {missing}")
        rows = sorted(reader, key=lambda r: int(r["Sequence"]))

    counts: dict[str, Any] = {
        "rows": len(rows), "trades": 0, "buy_trades": 0, "buy_volume": 0, "sell_trades": 0, "sell_volume": 0,
        "other_trades": 0, "snapshots": 0, "snapshots_skipped": {}, "ts_backward_steps": 0,
    }
    events: list[Event] = []
    last_depth: str | None = None
    last_ts: int | None = None
    for row in rows:
        ts = parse_es_time(row["Date"], row["Time"], tz)
        if last_ts is not None and ts < last_ts:
            counts["ts_backward_steps"] += 1
        last_ts = ts
        qty = int(row["Volume"])
        ttype = SIERRA_TRADE_TYPES.get(int(row["TradeType"]), TradeType.UNKNOWN)
        events.append(Trade(symbol, ts, ts, len(events) + 1, float(row["Price"]), qty, int(ttype), 0, 0, int(row["Sequence"])))
        counts["trades"] += 1
        if ttype == TradeType.BUY_AGGRESSOR:
            counts["buy_trades"] += 1
            counts["buy_volume"] += qty
        elif ttype == TradeType.SELL_AGGRESSOR:
            counts["sell_trades"] += 1
            counts["sell_volume"] += qty
        else:
            counts["other_trades"] += 1
        if row["DepthSequence"] != last_depth:  # new book state: emit it after the trade (post-trade quotes)
            last_depth = row["DepthSequence"]
            snap, reason = _dom_snapshot(symbol, ts, row)
            if snap is None:
                skipped = counts["snapshots_skipped"]
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                events.append(snap._replace(seq=len(events) + 1))
                counts["snapshots"] += 1
    if rows:
        counts["first_ts_event"], counts["last_ts_event"] = events[0].ts_event, events[-1].ts_event
    return events, counts


def import_cme_es(
    csv_path: str | os.PathLike, out_root: str | os.PathLike, symbol: str = "ESH22", tz: str = "UTC"
) -> dict[str, Any]:
    """Import the tape and write it through the recorder layout under ``out_root``; return counts."""
    events, counts = read_cme_es(csv_path, symbol=symbol, tz=tz)
    rec = write_events(events, out_root)
    counts.update(symbol=symbol, tz=tz, output=str(out_root), rows_written=rec["rows_written"], files_written=rec["files_written"])
    return counts
