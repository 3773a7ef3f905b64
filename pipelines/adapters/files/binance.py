"""Import the Binance spot BTCUSDT websocket capture into the recorder layout.

Input: ``binance_btcusdt_20240808.jsonl.gz`` (gzip or plain text). Each line is
``<local_ns> <json>``: the local receive time in ns, one space, one JSON object.
The objects are ``btcusdt@trade`` and ``btcusdt@depth@100ms`` stream messages
(``{"stream": ..., "data": {...}}``), ``btcusdt@bookTicker`` messages and one
REST depth snapshot (``{"lastUpdateId", "bids", "asks"}``). A second real
market, continuous and with a full L2 book, next to the ES tape.

Decisions, and why:

- **Event time.** Trades use the trade time ``T``, book states the diff's event
  time ``E`` (both ms -> ns). The local clock of the capture runs about 1.27 s
  behind the exchange, so it is only ``ts_recv`` (the line's local ns), never
  event time. ``bookTicker`` carries no time at all: it is counted, not
  imported (it duplicates the top of the rebuilt book).
- **Quantities in lots of 0.00001 BTC.** ``Trade.qty`` and the book sizes are
  integers everywhere downstream (validator, recorder schema, feature engine),
  and BTC sizes are fractional. 0.00001 BTC is Binance's BTCUSDT order step
  (``LOT_SIZE``), so every trade is a whole number of lots; ``qty = 2000``
  means 0.02 BTC. A few aggregated book levels far from the touch carry sizes
  finer than a lot (three in the capture, at 74,000-200,000 USDT): they are
  rounded to the nearest lot, at least one (a resting level must not vanish),
  and counted (``qty_rounded``). Prices stay floats in USDT.
- **The book, per Binance's documented procedure.** Diffs are buffered until a
  REST snapshot arrives (in the capture three diffs precede it); then diffs
  with ``u <= lastUpdateId`` are dropped, the first one applied must straddle
  ``lastUpdateId + 1`` (``U <= lastUpdateId + 1 <= u``), and each next one must
  start where the last ended (``U == previous u + 1``). A quantity of 0 deletes
  the level. Any other ``U`` is a gap: counted, the book is discarded and
  nothing is emitted until a later snapshot re-syncs it (diffs are buffered
  again meanwhile). A diff entirely at or before the book's last update id is
  a stale duplicate: counted and ignored. A snapshot arriving while the book
  is in sync is counted as unused: the live book is already exact.
- **Emission.** One ``BookSnapshot`` of the top ``levels`` per side after each
  applied diff; a crossed/locked or empty top is skipped and counted by reason.
  Trades: ``m: true`` (buyer is the maker) -> ``SELL_AGGRESSOR``, else
  ``BUY_AGGRESSOR``; ``trade_id`` = ``t``; buyer/seller unknown (0).
- **Order.** Events are merged by event time, stably (ties keep the file's
  order), then numbered ``seq`` 1, 2, ... so replay's ``(ts_event, seq)``
  order equals this order.
- **Bad lines** never raise: each is counted under one reason in
  ``counts["bad_lines"]`` and the rest of the file is imported. An unreadable
  file (missing, corrupt gzip) raises, as for the ES importer.
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
import os
import zlib
from decimal import ROUND_HALF_EVEN, Decimal, DecimalException
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from pipelines.adapters.files.recorder import write_events
from pipelines.model.clock import NS_PER_MS
from pipelines.model.messages import BookSnapshot, Event, Trade, TradeType

LOTS_PER_BTC = 100_000  # one lot = 0.00001 BTC, Binance's BTCUSDT order step
DEFAULT_LEVELS = 10
GZIP_MAGIC = b"\x1f\x8b"

_LOT = Decimal(LOTS_PER_BTC)
_I64 = 2**63  # every integer column of the recorder is int64


class _BadMessage(ValueError):
    """A line that cannot be imported; ``args[0]`` is the counted reason."""


def _to_lots(text: object, counts: dict[str, Any]) -> int:
    """A quantity string in BTC -> whole lots (>= 0); sub-lot sizes rounded and counted."""
    if not isinstance(text, str):
        raise _BadMessage("bad_qty")
    try:
        qty = Decimal(text)
        if not qty.is_finite() or qty < 0:
            raise _BadMessage("bad_qty")
        scaled = qty * _LOT
        lots = int(scaled.to_integral_value(ROUND_HALF_EVEN))
    except DecimalException:  # not a number, or an exponent beyond the decimal context
        raise _BadMessage("bad_qty") from None
    if lots >= _I64:
        raise _BadMessage("bad_qty")
    if lots != scaled:
        counts["qty_rounded"] += 1
        lots = max(lots, 1) if qty > 0 else 0
    return lots


def _to_price(text: object) -> float:
    if not isinstance(text, str):
        raise _BadMessage("bad_price")
    try:
        price = float(text)
    except ValueError:
        raise _BadMessage("bad_price") from None
    if not (0.0 < price < math.inf):
        raise _BadMessage("bad_price")
    return price


def _to_int(value: object, reason: str, scale: int = 1) -> int:
    """A non-negative JSON integer times ``scale``, within int64."""
    if type(value) is not int or not 0 <= value * scale < _I64:
        raise _BadMessage(reason)
    return value * scale


def _to_time(value: object) -> int:
    """An exchange time in ms -> ns; positive (the validator's rule for timestamps)."""
    ts = _to_int(value, "bad_time", NS_PER_MS)
    if ts == 0:
        raise _BadMessage("bad_time")
    return ts


def _levels(raw: object, counts: dict[str, Any]) -> list[tuple[float, int]]:
    """``[["price", "qty"], ...]`` -> [(price, lots)]."""
    if not isinstance(raw, list):
        raise _BadMessage("bad_levels")
    out = []
    for level in raw:
        if not isinstance(level, list) or len(level) < 2:
            raise _BadMessage("bad_levels")
        out.append((_to_price(level[0]), _to_lots(level[1], counts)))
    return out


class _Side:
    """One side of the L2 book: price -> lots, plus its prices kept sorted from the touch."""

    def __init__(self, descending: bool):
        self._sign = -1.0 if descending else 1.0
        self._qty: dict[float, int] = {}
        self._keys: list[float] = []  # sign * price, ascending: the best level first

    def set(self, price: float, lots: int) -> None:
        key = self._sign * price
        if lots == 0:
            if self._qty.pop(price, None) is not None:
                del self._keys[bisect.bisect_left(self._keys, key)]
        else:
            if price not in self._qty:
                bisect.insort(self._keys, key)
            self._qty[price] = lots

    def top(self, n: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
        prices = tuple(self._sign * k for k in self._keys[:n])
        return prices, tuple(self._qty[p] for p in prices)


class _Book:
    """The L2 book rebuilt from one REST snapshot and the diffs that follow it."""

    def __init__(self, last_update_id: int, bids: list[tuple[float, int]], asks: list[tuple[float, int]]):
        self.last_id = last_update_id
        self.live = False  # True once the first diff straddling last_update_id + 1 is applied
        self.bids, self.asks = _Side(descending=True), _Side(descending=False)
        self.apply(bids, asks)

    def apply(self, bids: list[tuple[float, int]], asks: list[tuple[float, int]]) -> None:
        for price, lots in bids:
            self.bids.set(price, lots)
        for price, lots in asks:
            self.asks.set(price, lots)


class _Diff(NamedTuple):
    """One depth diff: update ids ``U``..``u``, its times and its levels."""

    first: int
    last: int
    ts_event: int
    ts_recv: int
    bids: list[tuple[float, int]]
    asks: list[tuple[float, int]]


class _Importer:
    """File-order state machine: buffers, syncs and applies diffs; collects the events."""

    def __init__(self, symbol: str, levels: int):
        self.symbol, self.levels = symbol, levels
        self.book: _Book | None = None
        self.pending: list[_Diff] = []  # diffs received while no snapshot is loaded
        self.out: list[Event] = []  # file order; merged by event time at the end
        self.counts: dict[str, Any] = {
            "lines": 0, "trades": 0, "buy_trades": 0, "buy_lots": 0, "sell_trades": 0, "sell_lots": 0,
            "depth_diffs": 0, "diffs_applied": 0, "diffs_stale": 0, "diffs_unapplied": 0, "gaps": 0,
            "rest_snapshots": 0, "rest_snapshots_unused": 0, "book_tickers": 0, "snapshots": 0,
            "snapshots_skipped": {}, "bad_lines": {}, "qty_rounded": 0,
        }

    def line(self, raw: bytes) -> None:
        self.counts["lines"] += 1
        rounded = self.counts["qty_rounded"]
        try:
            self._line(raw)
        except _BadMessage as e:
            self.counts["qty_rounded"] = rounded  # only imported quantities count as rounded
            bad = self.counts["bad_lines"]
            bad[e.args[0]] = bad.get(e.args[0], 0) + 1

    def _line(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadMessage("bad_encoding") from None
        stamp, sep, body = text.partition(" ")
        if not sep:
            raise _BadMessage("no_local_time")
        # ASCII digits only (no sign, no other Unicode digits), and few enough for int64.
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 19) or not 0 < int(stamp) < _I64:
            raise _BadMessage("bad_local_time")
        ts_recv = int(stamp)
        try:
            msg = json.loads(body)
        except (ValueError, RecursionError):  # JSONDecodeError; a nesting too deep for the parser
            raise _BadMessage("bad_json") from None
        if not isinstance(msg, dict):
            raise _BadMessage("unknown_message")
        if "lastUpdateId" in msg:
            self._rest_snapshot(msg)
            return
        stream, data = msg.get("stream"), msg.get("data")
        if not isinstance(stream, str) or not isinstance(data, dict):
            raise _BadMessage("unknown_message")
        if stream.endswith("@trade"):
            self._trade(data, ts_recv)
        elif "@depth" in stream:
            self._diff(data, ts_recv)
        elif stream.endswith("@bookTicker"):
            self.counts["book_tickers"] += 1
        else:
            raise _BadMessage("unknown_stream")

    def _trade(self, data: dict, ts_recv: int) -> None:
        try:
            price, lots = _to_price(data["p"]), _to_lots(data["q"], self.counts)
            ts = _to_time(data["T"])
            trade_id, maker_buyer = _to_int(data["t"], "bad_trade_id"), data["m"]
        except KeyError:
            raise _BadMessage("trade_field_missing") from None
        if type(maker_buyer) is not bool:
            raise _BadMessage("bad_maker_flag")
        if lots == 0:
            raise _BadMessage("bad_qty")
        ttype = TradeType.SELL_AGGRESSOR if maker_buyer else TradeType.BUY_AGGRESSOR
        self.out.append(Trade(self.symbol, ts, ts_recv, 0, price, lots, int(ttype), 0, 0, trade_id))
        side = "sell" if maker_buyer else "buy"
        self.counts["trades"] += 1
        self.counts[f"{side}_trades"] += 1
        self.counts[f"{side}_lots"] += lots

    def _diff(self, data: dict, ts_recv: int) -> None:
        try:
            first, last = _to_int(data["U"], "bad_update_id"), _to_int(data["u"], "bad_update_id")
            ts = _to_time(data["E"])
            bids, asks = _levels(data["b"], self.counts), _levels(data["a"], self.counts)
        except KeyError:
            raise _BadMessage("depth_field_missing") from None
        if first > last:
            raise _BadMessage("bad_update_id")
        self.counts["depth_diffs"] += 1
        self._on_diff(_Diff(first, last, ts, ts_recv, bids, asks))

    def _rest_snapshot(self, msg: dict) -> None:
        try:
            last_id = _to_int(msg["lastUpdateId"], "bad_update_id")
            bids, asks = _levels(msg["bids"], self.counts), _levels(msg["asks"], self.counts)
        except KeyError:
            raise _BadMessage("snapshot_field_missing") from None
        self.counts["rest_snapshots"] += 1
        if self.book is not None and self.book.live:
            self.counts["rest_snapshots_unused"] += 1
            return
        self.book = _Book(last_id, bids, asks)
        buffered, self.pending = self.pending, []
        for diff in buffered:
            self._on_diff(diff)

    def _on_diff(self, diff: _Diff) -> None:
        book = self.book
        if book is None:
            self.pending.append(diff)
            return
        if diff.last <= book.last_id:
            self.counts["diffs_stale"] += 1
            return
        expected = book.last_id + 1
        if (diff.first <= expected) if not book.live else (diff.first == expected):
            book.apply(diff.bids, diff.asks)
            book.last_id, book.live = diff.last, True
            self.counts["diffs_applied"] += 1
            self._emit(diff.ts_event, diff.ts_recv)
            return
        # A gap: updates between the book and this diff are missing. Wait for a new snapshot.
        self.counts["gaps"] += 1
        self.book = None
        self.pending = [diff]

    def _emit(self, ts: int, ts_recv: int) -> None:
        bid_px, bid_qty = self.book.bids.top(self.levels)
        ask_px, ask_qty = self.book.asks.top(self.levels)
        reason = None
        if not bid_px and not ask_px:
            reason = "empty"
        elif bid_px and ask_px and bid_px[0] >= ask_px[0]:
            reason = "crossed_or_locked"
        if reason is not None:
            skipped = self.counts["snapshots_skipped"]
            skipped[reason] = skipped.get(reason, 0) + 1
            return
        self.out.append(BookSnapshot(self.symbol, ts, ts_recv, 0, bid_px, bid_qty, ask_px, ask_qty))
        self.counts["snapshots"] += 1

    def finish(self) -> tuple[list[Event], dict[str, Any]]:
        self.counts["diffs_unapplied"] = len(self.pending)
        ordered = sorted(self.out, key=lambda e: e.ts_event)  # stable: ties keep the file order
        events = [e._replace(seq=i) for i, e in enumerate(ordered, 1)]
        if events:
            self.counts["first_ts_event"], self.counts["last_ts_event"] = events[0].ts_event, events[-1].ts_event
        return events, self.counts


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as f:
            for raw in f:
                raw = raw.rstrip(b"\r\n")
                if raw:
                    yield raw
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"{path}: unreadable gzip ({type(e).__name__}: {e})") from None


def read_binance(
    path: str | os.PathLike, symbol: str = "BTCUSDT", levels: int = DEFAULT_LEVELS
) -> tuple[list[Event], dict[str, Any]]:
    """Parse the capture into Trade and BookSnapshot events (seq 1..N) plus counts."""
    if type(levels) is not int or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"symbol must be a non-empty string, got {symbol!r}")
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(
            f"Binance capture not found: {src} (expected shared/data/binance_btcusdt_20240808.jsonl.gz)"
        )
    importer = _Importer(symbol, levels)
    for raw in _lines(src):
        importer.line(raw)
    return importer.finish()


def import_binance(
    path: str | os.PathLike, out_root: str | os.PathLike, symbol: str = "BTCUSDT", levels: int = DEFAULT_LEVELS
) -> dict[str, Any]:
    """Import the capture and write it through the recorder layout under ``out_root``; return counts."""
    events, counts = read_binance(path, symbol=symbol, levels=levels)
    rec = write_events(events, out_root)
    counts.update(symbol=symbol, levels=levels, lots_per_btc=LOTS_PER_BTC, output=str(out_root),
                  rows_written=rec["rows_written"], files_written=rec["files_written"])
    return counts
