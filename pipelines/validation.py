"""Input validation at the pipeline's entrance.

Bad input never raises into the pipeline: each rejected event is counted by
reason and logged (rate-limited, so a flood of bad ticks cannot flood the log),
and the good events around it flow on untouched.
"""

from __future__ import annotations

import logging
import math
import operator
import time
from collections import Counter
from typing import Iterable

from pipelines.messages import TRADE_TYPE_CODES, BookSnapshot, BookUpdate, Event, Trade

log = logging.getLogger("quantumtrader.validation")

# Reasons, as counted in stats() and shown in logs.
BAD_PRICE = "bad_price"  # NaN, inf, zero or negative
BAD_QTY = "bad_qty"  # zero, negative or non-integer quantity
UNKNOWN_TRADE_TYPE = "unknown_trade_type"
CROSSED_BOOK = "crossed_book"  # best bid > best ask
LOCKED_BOOK = "locked_book"  # best bid == best ask
UNSORTED_BOOK = "unsorted_book"  # levels not strictly ordered away from the touch
BAD_BOOK_SHAPE = "bad_book_shape"  # price and size arrays of different length
TIME_BACKWARDS = "time_backwards"  # event time went back more than the tolerance
BAD_TIMESTAMP = "bad_timestamp"  # not a positive integer
UNKNOWN_EVENT = "unknown_event"


def _bad_price(p: object) -> bool:
    return not isinstance(p, (int, float)) or isinstance(p, bool) or not math.isfinite(p) or p <= 0


def _bad_qty(q: object) -> bool:
    return not isinstance(q, int) or isinstance(q, bool) or q <= 0


_INF = math.inf
_gt = operator.gt
_lt = operator.lt
_isnan = math.isnan


def _side_problem(px: tuple, qty: tuple, descending: bool) -> str | None:
    # C-level checks (map/sorted/set/min) instead of per-level Python loops:
    # book validation runs on every snapshot and dominated the feed's cost.
    if len(px) != len(qty):
        return BAD_BOOK_SHAPE
    if not px:
        return None
    if any(map(_isnan, px)) or not (min(px) > 0 and max(px) < _INF):
        return BAD_PRICE
    if not set(map(type, qty)) <= {int} or min(qty) <= 0:
        return BAD_QTY
    # Strictly ordered (sorted and no price twice) in one C-level pass, no sort or set built.
    if not all(map(_gt if descending else _lt, px, px[1:])):
        return UNSORTED_BOOK
    return None


def _book_problem(b: BookSnapshot) -> str | None:
    reason = _side_problem(b.bid_px, b.bid_qty, True) or _side_problem(b.ask_px, b.ask_qty, False)
    if reason:
        return reason
    if b.bid_px and b.ask_px:
        if b.bid_px[0] > b.ask_px[0]:
            return CROSSED_BOOK
        if b.bid_px[0] == b.ask_px[0]:
            return LOCKED_BOOK
    return None


class Validator:
    """Checks events and keeps the per-symbol event-time high-water mark.

    ``tolerance_ns``: event time may step back this much (exchange feeds
    reorder slightly across channels); beyond it the event is rejected.
    """

    def __init__(self, tolerance_ns: int, log_every_s: float = 5.0):
        self.tolerance_ns = int(tolerance_ns)
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self._max_ts: dict[str, int] = {}
        self._log_every_s = log_every_s
        self._last_log = 0.0
        self._unlogged = 0

    def problem(self, ev: Event) -> str | None:
        """The rejection reason for ``ev``, or None if it is good. Does not count."""
        if isinstance(ev, Trade):
            if _bad_price(ev.price):
                return BAD_PRICE
            if _bad_qty(ev.qty):
                return BAD_QTY
            if ev.trade_type not in TRADE_TYPE_CODES:
                return UNKNOWN_TRADE_TYPE
        elif isinstance(ev, BookSnapshot):
            reason = _book_problem(ev)
            if reason:
                return reason
        elif isinstance(ev, BookUpdate):
            if _bad_price(ev.price):
                return BAD_PRICE
            if ev.qty < 0 or not isinstance(ev.qty, int):
                return BAD_QTY
        else:
            return UNKNOWN_EVENT
        ts = ev.ts_event
        if not isinstance(ts, int) or isinstance(ts, bool) or ts <= 0:
            return BAD_TIMESTAMP
        hwm = self._max_ts.get(ev.symbol)
        if hwm is not None and ts < hwm - self.tolerance_ns:
            return TIME_BACKWARDS
        return None

    def filter(self, events: Iterable[Event]) -> list[Event]:
        """The good events, in order; bad ones are counted and logged."""
        good = []
        max_ts = self._max_ts
        for ev in events:
            reason = self.problem(ev)
            if reason is None:
                good.append(ev)
                if ev.ts_event > max_ts.get(ev.symbol, 0):
                    max_ts[ev.symbol] = ev.ts_event
            else:
                self._reject(reason, ev)
        self.accepted += len(good)
        return good

    def _reject(self, reason: str, ev: object) -> None:
        self.rejected[reason] += 1
        now = time.monotonic()
        if now - self._last_log >= self._log_every_s:
            extra = f" (+{self._unlogged} more rejections since last report)" if self._unlogged else ""
            log.warning("rejected event: %s: %r%s", reason, ev, extra)
            self._last_log = now
            self._unlogged = 0
        else:
            self._unlogged += 1

    def stats(self) -> dict:
        return {"accepted": self.accepted, "rejected": dict(self.rejected)}
