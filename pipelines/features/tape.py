"""Tape patterns: sweeps and icebergs, as typed records with a stated confidence.

Definitions and the rules fixed here:

Aggression
    Consecutive aggressive fills (``TradeType`` 2/3) with the same side and the
    same ``ts_event // aggression_resolution_ns`` are one aggressor order (1 ns
    = identical ``ts_event``; 1 ms for Sierra Chart tapes). Prints without an
    aggressor (auction, cross, ...) are not aggressions and are ignored. An
    order is complete, and evaluated, when the next aggressive fill starts
    another order, when a book snapshot with a later ``ts_event`` arrives, or
    on :meth:`flush`.

Sweep, "levels" method
    One aggressor order that fills at >= ``min_levels`` (2) distinct prices with
    monotone prices (buy: non-decreasing, sell: non-increasing, in fill order).
    ``price`` = the last (deepest) fill price.
    Confidence = ``min(1, levels / 4)``: 2 levels 0.5, 3 levels 0.75, >= 4 levels 1.

Sweep, "run" method
    >= ``run_length`` (5) consecutive aggressor orders on one side, each
    strictly larger than the one before, at a rate above ``min_rate`` (5)
    orders/s, rate = ``(run_length - 1) / (t_last - t_first)`` over the last
    ``run_length`` orders. Reported once per run, when it first qualifies.
    Confidence = ``min(1, rate / (2 * min_rate))``: just over 0.5 at the
    threshold, 1 at twice the threshold rate.

Iceberg, "executed" method
    Against one resting level (side, price) the episode starts at the first
    aggressive fill there, with ``displayed`` = that level's size in the last
    book snapshot (no snapshot or price not shown: no episode). Fills at that
    price accumulate while the level stays the best of its side in later
    snapshots; the episode ends when the best price of that side changes or a
    fill hits another price on that side. Detected once per episode when
    ``fills >= min_fills`` (2) and ``executed > min_excess_ratio * displayed``
    (ratio 1 = anything beyond the displayed size).
    Confidence = ``1 - displayed / executed`` (the hidden share of what traded).

Iceberg, "refill" method
    At each snapshot during an episode with fills since the previous snapshot,
    the level's replenishment is ``refill = size_now - size_before + filled``;
    positive refills are recorded (last 20). Detected once per episode when
    >= ``min_refills`` (3) refills have a coefficient of variation
    (population std / mean) below ``max_cv`` (0.2): same-size clips are the
    signature of an iceberg's peak size.
    Confidence = ``(1 - cv / max_cv) * min(1, refills / 5)``.

``side``: for a sweep the aggressor (+1 buyer, -1 seller); for an iceberg the
hidden resting order (+1 on the bid = hidden buyer, -1 on the ask = hidden seller).
Crossed or locked snapshots are ignored (they are not a usable displayed book).
"""

from __future__ import annotations

from collections import deque
from statistics import fmean, pstdev
from typing import NamedTuple

from pipelines.model.clock import NS_PER_S
from pipelines.model.messages import BookSnapshot, Trade, TradeType

_BUY = int(TradeType.BUY_AGGRESSOR)
_SELL = int(TradeType.SELL_AGGRESSOR)
_NONE: tuple = ()


class TapePattern(NamedTuple):
    kind: str  # "sweep" | "iceberg"
    symbol: str
    ts_event: int
    side: int
    price: float
    confidence: float  # in [0, 1], rule per kind/method in the module docstring
    details: dict


class SweepDetector:
    def __init__(
        self,
        aggression_resolution_ns: int = 1,
        min_levels: int = 2,
        run_length: int = 5,
        min_rate: float = 5.0,
    ):
        self.resolution = aggression_resolution_ns
        self.min_levels = min_levels
        self.run_length = run_length
        self.min_rate = min_rate
        # Open aggressor order: [ts, key, side, qty, fills, first_px, last_px, levels, monotone, symbol]
        self._open: list | None = None
        self._run_side = 0
        self._run_last_qty = 0
        self._run_ts: deque[int] = deque(maxlen=run_length)
        self._run_len = 0
        self._run_reported = False
        self.detected = 0

    def on_trade(self, t: Trade) -> tuple[TapePattern, ...]:
        tt = t.trade_type
        s = 1 if tt == _BUY else -1 if tt == _SELL else 0
        if s == 0:
            return _NONE
        key = t.ts_event // self.resolution
        o = self._open
        if o is not None and o[1] == key and o[2] == s:
            px = t.price
            if px != o[6]:
                o[7] += 1
                if (px - o[6]) * s < 0:
                    o[8] = False
                o[6] = px
            o[3] += t.qty
            o[4] += 1
            return _NONE
        out = self._close()
        self._open = [t.ts_event, key, s, t.qty, 1, t.price, t.price, 1, True, t.symbol]
        return out

    def on_book(self, snap: BookSnapshot) -> tuple[TapePattern, ...]:
        o = self._open
        if o is not None and snap.ts_event // self.resolution > o[1]:
            return self._close()
        return _NONE

    def flush(self) -> tuple[TapePattern, ...]:
        return self._close()

    def _close(self) -> tuple[TapePattern, ...]:
        o = self._open
        if o is None:
            return _NONE
        self._open = None
        ts, _, side, qty, fills, first_px, last_px, levels, monotone, symbol = o
        found = []
        if monotone and levels >= self.min_levels:
            found.append(
                TapePattern("sweep", symbol, ts, side, last_px, min(1.0, levels / 4),
                            {"method": "levels", "levels": levels, "qty": qty, "fills": fills,
                             "first_price": first_px, "last_price": last_px})
            )
        run = self._run_ts
        if side == self._run_side and qty > self._run_last_qty:
            self._run_len += 1
        else:
            self._run_side = side
            self._run_len = 1
            self._run_reported = False
            run.clear()
        run.append(ts)
        self._run_last_qty = qty
        if self._run_len >= self.run_length and not self._run_reported:
            span_s = (run[-1] - run[0]) / NS_PER_S
            rate = (self.run_length - 1) / span_s if span_s > 0 else float("inf")
            if rate > self.min_rate:
                self._run_reported = True
                found.append(
                    TapePattern("sweep", symbol, ts, side, last_px, min(1.0, rate / (2 * self.min_rate)),
                                {"method": "run", "orders": self._run_len, "rate": rate, "last_qty": qty})
                )
        self.detected += len(found)
        return tuple(found)


class _Episode:
    """Fills against one resting level while it stays the best of its side."""

    __slots__ = ("price", "displayed", "executed", "fills", "last_size", "filled_since",
                 "refills", "reported_executed", "reported_refill")

    def __init__(self, price: float, displayed: int):
        self.price = price
        self.displayed = displayed
        self.executed = 0
        self.fills = 0
        self.last_size = displayed
        self.filled_since = 0
        self.refills: deque[int] = deque(maxlen=20)
        self.reported_executed = False
        self.reported_refill = False


def _best(px: tuple, qty: tuple) -> tuple[float | None, int]:
    for p, q in zip(px, qty):
        if q > 0:
            return p, q
    return None, 0


class IcebergDetector:
    def __init__(self, min_fills: int = 2, min_excess_ratio: float = 1.0,
                 min_refills: int = 3, max_cv: float = 0.2):
        self.min_fills = min_fills
        self.min_excess_ratio = min_excess_ratio
        self.min_refills = min_refills
        self.max_cv = max_cv
        self._book: BookSnapshot | None = None
        # Index 0: episode on the bid (hit by sellers), 1: on the ask (lifted by buyers).
        self._episodes: list[_Episode | None] = [None, None]
        self.detected = 0

    def on_book(self, snap: BookSnapshot) -> tuple[TapePattern, ...]:
        # _best, inline where the touch is not empty (nearly every snapshot)
        px, qty = snap.bid_px, snap.bid_qty
        bb, bq = (px[0], qty[0]) if px and qty and qty[0] > 0 else _best(px, qty)
        px, qty = snap.ask_px, snap.ask_qty
        ba, aq = (px[0], qty[0]) if px and qty and qty[0] > 0 else _best(px, qty)
        if bb is not None and ba is not None and bb >= ba:
            return _NONE
        self._book = snap
        found = _NONE
        if self._episodes[0] is None and self._episodes[1] is None:
            return found
        for idx, (best, size) in enumerate(((bb, bq), (ba, aq))):
            ep = self._episodes[idx]
            if ep is None:
                continue
            if best != ep.price:
                self._episodes[idx] = None
                continue
            if ep.filled_since > 0:
                refill = size - ep.last_size + ep.filled_since
                if refill > 0:
                    ep.refills.append(refill)
                    if not ep.reported_refill and len(ep.refills) >= self.min_refills:
                        mean = fmean(ep.refills)
                        cv = pstdev(ep.refills) / mean
                        if cv < self.max_cv:
                            ep.reported_refill = True
                            conf = (1 - cv / self.max_cv) * min(1.0, len(ep.refills) / 5)
                            found = found + (self._record(snap.symbol, snap.ts_event, idx, ep, conf,
                                                          {"method": "refill", "refills": tuple(ep.refills),
                                                           "cv": cv}),)
            ep.last_size = size
            ep.filled_since = 0
        return found

    def on_trade(self, t: Trade) -> tuple[TapePattern, ...]:
        tt = t.trade_type
        if tt == _BUY:
            idx = 1  # a buyer lifts the ask
        elif tt == _SELL:
            idx = 0
        else:
            return _NONE
        ep = self._episodes[idx]
        if ep is None or ep.price != t.price:
            ep = None
            book = self._book
            if book is not None:
                px, qty = (book.bid_px, book.bid_qty) if idx == 0 else (book.ask_px, book.ask_qty)
                for p, q in zip(px, qty):
                    if p == t.price and q > 0:
                        ep = _Episode(p, q)
                        break
            self._episodes[idx] = ep
            if ep is None:
                return _NONE
        ep.executed += t.qty
        ep.fills += 1
        ep.filled_since += t.qty
        if (not ep.reported_executed and ep.fills >= self.min_fills
                and ep.executed > self.min_excess_ratio * ep.displayed):
            ep.reported_executed = True
            conf = 1 - ep.displayed / ep.executed
            return (self._record(t.symbol, t.ts_event, idx, ep, conf,
                                 {"method": "executed", "executed": ep.executed,
                                  "displayed": ep.displayed, "fills": ep.fills}),)
        return _NONE

    def _record(self, symbol: str, ts: int, idx: int, ep: _Episode, conf: float, details: dict) -> TapePattern:
        self.detected += 1
        return TapePattern("iceberg", symbol, ts, 1 if idx == 0 else -1, ep.price, conf, details)


class TapeReader:
    """Both detectors behind one ``on_trade`` / ``on_book`` / ``flush`` interface."""

    def __init__(self, aggression_resolution_ns: int = 1, **iceberg_params):
        self.sweeps = SweepDetector(aggression_resolution_ns)
        self.icebergs = IcebergDetector(**iceberg_params)

    def on_trade(self, t: Trade) -> tuple[TapePattern, ...]:
        a = self.sweeps.on_trade(t)
        b = self.icebergs.on_trade(t)
        return a + b if b else a

    def on_book(self, snap: BookSnapshot) -> tuple[TapePattern, ...]:
        a = self.sweeps.on_book(snap)
        b = self.icebergs.on_book(snap)
        return a + b if b else a

    def flush(self) -> tuple[TapePattern, ...]:
        return self.sweeps.flush()
