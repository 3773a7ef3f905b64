"""Input validation at the pipeline's entrance.

Bad input never raises into the pipeline: each rejected event is counted by
reason and logged (rate-limited, so a flood of bad ticks cannot flood the log),
and the good events around it flow on untouched.

**Content.** Every field of every event is checked for type and range: a
symbol is a non-empty ``str`` (and one of the configured symbols, when the
Validator has a set); integers are ``int`` or numpy integers, never ``bool``,
within int64 (the recorder's and Valkey's column type), timestamps and
quantities positive (a BookUpdate's qty may be 0: a delete); prices are finite
and positive ``float``/``int``/numpy floats; book arrays are tuples or lists of
equal length per side, strictly ordered away from the touch, not crossed or
locked. The first bad field, in field order (a book: bid side, then ask side,
then the crossing), names the reason. An accepted event comes out with exact
builtin types (plain ``int``/``float``, tuple arrays, the exact NamedTuple
class): an event that already has them passes as the same object, others are
rebuilt. Well-typed events take a fast path of C-level passes (map/min/all:
books dominated the feed's cost); anything it cannot vouch for, including
junk that makes it raise, is classified again field by field. A
:class:`Malformed` (what the bridge's decoder puts in place of a row it could
not decode) is rejected as ``bad_row``. A bug inside validation costs only the
event it hit (``validation_error``, logged with its traceback).

**Event time**, per symbol, against its high-water mark (the latest accepted
``ts_event``):

- clock bound (``max_ahead_ns``, optional): ``ts_event > ts_recv + max_ahead_ns``
  is ``future_time``. For live sources, where ts_recv is the wall clock at
  receive. None for the simulator or a replay at full speed, whose event time
  legitimately runs ahead of the wall clock.
- back in time by more than ``tolerance_ns`` (feeds reorder slightly across
  channels): ``time_backwards``.
- a forward jump of more than ``max_forward_gap_ns`` (default 7 days: longer
  than any B3 weekend + holiday gap, Carnival included) is not accepted at
  once: a stamp a year ahead would otherwise make every later good event
  ``time_backwards``. Such events are *held*. When ``confirm_events`` valid
  events of the symbol in a row (the first held one included) lie beyond the
  gap and agree with each other (each within ``tolerance_ns`` back and
  ``max_forward_gap_ns`` forward of the held ones' latest time), the jump is
  real (e.g. a replay spanning two recordings weeks apart): the held events
  are released in order, accepted, and the high-water mark moves. If an event
  within the normal range arrives first, or one beyond the gap that disagrees
  with them, the held events are rejected as ``time_jump`` (a disagreeing one
  starts a new run). Events rejected for their content, their symbol, the
  clock bound or ``time_backwards`` neither confirm nor break a run.
  Released events come out when the jump is confirmed, so they follow events
  of *other* symbols that arrived meanwhile; per symbol the order is kept.
  ``flush()`` decides what is still held at the end of input (unconfirmed:
  ``time_jump``).
- the first event of a symbol has no high-water mark: only the clock bound applies.

Every input ends up accepted, rejected (counted under one reason) or held:
``stats()`` shows all three.
"""

from __future__ import annotations

import logging
import math
import numbers
import operator
import reprlib
import time
from collections import Counter
from typing import Iterable, NamedTuple

from pipelines.model.clock import NS_PER_DAY
from pipelines.model.messages import TRADE_TYPE_CODES, BookSnapshot, BookUpdate, Event, Trade

log = logging.getLogger("quantumtrader.validation")

# Reasons, as counted in stats() and shown in logs.
BAD_PRICE = "bad_price"  # not a real number, NaN, inf, zero or negative
BAD_QTY = "bad_qty"  # not an integer, zero (BookUpdate: allowed) or negative, beyond int64
UNKNOWN_TRADE_TYPE = "unknown_trade_type"  # not an integer TTradeType code
CROSSED_BOOK = "crossed_book"  # best bid > best ask
LOCKED_BOOK = "locked_book"  # best bid == best ask
UNSORTED_BOOK = "unsorted_book"  # levels not strictly ordered away from the touch
BAD_BOOK_SHAPE = "bad_book_shape"  # an array not a tuple/list, or price and size arrays of different length
TIME_BACKWARDS = "time_backwards"  # event time went back more than the tolerance
BAD_TIMESTAMP = "bad_timestamp"  # ts_event not a positive int64 integer
UNKNOWN_EVENT = "unknown_event"  # not a Trade, BookSnapshot or BookUpdate
BAD_SYMBOL = "bad_symbol"  # symbol not a non-empty str
UNKNOWN_SYMBOL = "unknown_symbol"  # a symbol outside the configured set
BAD_FIELD = "bad_field"  # ts_recv, seq, position, broker/order ids: wrong type or range; wrong field count
BAD_SIDE = "bad_side"  # BookUpdate side not 0 (bid) or 1 (ask)
BAD_ACTION = "bad_action"  # BookUpdate action not a BookAction code (0-4)
FUTURE_TIME = "future_time"  # ts_event beyond ts_recv + max_ahead_ns
TIME_JUMP = "time_jump"  # a forward jump past max_forward_gap_ns that was never confirmed
BAD_ROW = "bad_row"  # a Malformed placeholder: input that could not be decoded into an event
VALIDATION_ERROR = "validation_error"  # validation itself failed on this input (a bug: see the log)

_I64 = 1 << 63  # ints must fit int64: the recorder's and Valkey's column type
_I32 = 1 << 31
_INF = math.inf
_gt = operator.gt
_lt = operator.lt
_new = tuple.__new__
_CODES = TRADE_TYPE_CODES
_reprlib = reprlib.Repr()  # bounded: a rejected input can be huge (keyword arguments need Python 3.12)
_reprlib.maxlevel, _reprlib.maxstring, _reprlib.maxother = 3, 60, 60
_repr = _reprlib.repr

_MAX_FAST_LEVELS = 128  # both sides together (book_depth is at most 50 a side); deeper books take the slow path
_FLOATS = [(float,) * n for n in range(_MAX_FAST_LEVELS + 1)]
_INTS = [(int,) * n for n in range(_MAX_FAST_LEVELS + 1)]


class Malformed(NamedTuple):
    """Stands in for an input that could not be decoded into an event (a bad wire row).

    It keeps the input's place (a bridge batch's i-th row has seq first_seq + i),
    so the Validator rejects it as ``bad_row`` in order with the events around it.
    ``ts_recv`` is when it was received, like an event's."""

    symbol: str
    ts_event: int
    ts_recv: int
    seq: int
    detail: str

    KIND = "malformed"


def _safe_repr(x: object) -> str:
    try:
        return _repr(x)
    except Exception:  # a __repr__ that raises
        return f"<{type(x).__name__}>"


# -- the fast path: well-typed events only; False (or an exception) means "look closer" --------


def _book_ok(bp: tuple, bq: tuple, ap: tuple, aq: tuple, good_bp: tuple = (), good_ap: tuple = ()) -> bool:
    """``good_bp`` / ``good_ap``: price sides of a book that passed. A side equal to one of them
    (floats, once the types pass) holds the same values, already strictly ordered, positive and
    finite, so those checks are skipped for it: between snapshots most sides keep their prices."""
    n, m = len(bp), len(ap)
    if len(bq) != n or len(aq) != m or n + m > _MAX_FAST_LEVELS:
        return False
    px, qty = bp + ap, bq + aq
    if tuple(map(type, px)) != _FLOATS[n + m] or tuple(map(type, qty)) != _INTS[n + m]:
        return False
    # Strict order on each side (no price twice). A NaN fails every comparison, so once this
    # holds the ends of each side are its extremes and no NaN hides in the middle.
    if bp != good_bp and not (all(map(_gt, bp, bp[1:])) and (not n or 0.0 < bp[-1] and bp[0] < _INF)):
        return False
    if ap != good_ap and not (all(map(_lt, ap, ap[1:])) and (not m or 0.0 < ap[0] and ap[-1] < _INF)):
        return False
    if n and m and not bp[0] < ap[0]:  # crossed or locked
        return False
    return not qty or (min(qty) > 0 and sum(qty) < _I64)  # all positive, so the sum bounds each


# -- the slow path: field by field, with the reason and a normalized value ---------------------


def _int(x: object, lo: int, hi: int) -> int | None:
    """``x`` as a plain int if it is an integer (numpy, IntEnum: yes; bool: no) in [lo, hi).
    Never raises (an object may raise on isinstance or int())."""
    try:
        if type(x) is not int:
            if isinstance(x, bool) or not isinstance(x, numbers.Integral):
                return None
            x = int(x)
        return x if lo <= x < hi else None
    except Exception:
        return None


def _price(x: object) -> float | None:
    """``x`` as a plain float if it is a finite positive real (int, numpy: yes; bool: no). Never raises."""
    try:
        if type(x) is not float:
            if isinstance(x, bool) or not isinstance(x, numbers.Real):
                return None
            x = float(x)  # OverflowError for a huge int
        return x if 0.0 < x < _INF else None
    except Exception:
        return None


def _ints(lo: int, hi: int):
    return lambda x: _int(x, lo, hi)


def _trade_type(x: object) -> int | None:
    v = _int(x, 0, 256)
    return v if v in _CODES else None


_HEADER = ((_ints(1, _I64), BAD_TIMESTAMP), (_ints(0, _I64), BAD_FIELD), (_ints(0, _I64), BAD_FIELD))
_ID = (_ints(-_I64, _I64), BAD_FIELD)  # broker / order / trade ids: any int64
# (check, reason) of each field after the symbol; a BookSnapshot's arrays are checked by _book_slow.
_SPECS: dict[type, tuple] = {
    Trade: (*_HEADER, (_price, BAD_PRICE), (_ints(1, _I64), BAD_QTY), (_trade_type, UNKNOWN_TRADE_TYPE), _ID, _ID, _ID),
    BookSnapshot: _HEADER,
    BookUpdate: (*_HEADER, (_ints(0, 2), BAD_SIDE), (_ints(0, 5), BAD_ACTION), (_ints(0, _I32), BAD_FIELD),
                 (_price, BAD_PRICE), (_ints(0, _I64), BAD_QTY), _ID, _ID),
}


def _side_slow(px: object, qty: object, descending: bool) -> tuple[str | None, tuple, tuple]:
    try:
        if not isinstance(px, (tuple, list)) or not isinstance(qty, (tuple, list)) or len(px) != len(qty):
            return BAD_BOOK_SHAPE, (), ()
        px, qty = tuple(px), tuple(qty)
    except Exception:  # a container that raises on inspection
        return BAD_BOOK_SHAPE, (), ()
    p = tuple(map(_price, px))
    if None in p:
        return BAD_PRICE, (), ()
    q = tuple(_int(x, 1, _I64) for x in qty)
    if None in q:
        return BAD_QTY, (), ()
    if not all(map(_gt if descending else _lt, p, p[1:])):
        return UNSORTED_BOOK, (), ()
    return None, p, q


def _book_slow(b: tuple) -> tuple[str | None, tuple]:
    reason, bp, bq = _side_slow(b[4], b[5], True)
    if reason:
        return reason, ()
    reason, ap, aq = _side_slow(b[6], b[7], False)
    if reason:
        return reason, ()
    if bp and ap:
        if bp[0] > ap[0]:
            return CROSSED_BOOK, ()
        if bp[0] == ap[0]:
            return LOCKED_BOOK, ()
    return None, (bp, bq, ap, aq)


class Validator:
    """Checks events and keeps the per-symbol event-time high-water mark (see the module doc).

    ``tolerance_ns``: event time may step back this much. ``symbols``: the
    configured symbols (None: any non-empty str). ``max_ahead_ns``: the clock
    bound (None: off). ``max_forward_gap_ns`` / ``confirm_events``: the held
    forward jump.
    """

    def __init__(self, tolerance_ns: int, log_every_s: float = 5.0, *, symbols: Iterable[str] | None = None,
                 max_ahead_ns: int | None = None, max_forward_gap_ns: int = 7 * NS_PER_DAY, confirm_events: int = 3):
        self.tolerance_ns = int(tolerance_ns)
        self.symbols = None if symbols is None else frozenset(symbols)
        self.max_ahead_ns = None if max_ahead_ns is None else int(max_ahead_ns)
        self.max_forward_gap_ns = int(max_forward_gap_ns)
        self.confirm_events = max(1, int(confirm_events))
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self._max_ts: dict[str, int] = {}
        self._held: dict[str, list] = {}  # symbol -> held candidates of a forward jump, in order
        self._held_n = 0
        self._log_every_s = log_every_s
        self._last_log = 0.0
        self._unlogged = 0
        self._good_sides: tuple[tuple, tuple] = ((), ())  # the price sides of the last book the fast path passed

    # -- checks ----------------------------------------------------------------------

    def _classify(self, ev: object) -> tuple[str | None, Event | None]:
        """(reason, None) for a bad event; (None, the event with exact builtin types) for a good one.
        Time order is not looked at here."""
        try:
            cls = next((c for c in (Malformed, Trade, BookSnapshot, BookUpdate) if isinstance(ev, c)), None)
            # The tuple's own items: a subclass's __getitem__/__iter__ are not trusted.
            fields = tuple.__getitem__(ev, slice(None)) if cls is not None else ()
        except Exception:  # not a tuple after all (a spoofed __class__), or one that raises
            cls = None
        if cls is Malformed:
            return BAD_ROW, None
        if cls is None:
            return UNKNOWN_EVENT, None
        if len(fields) != len(cls._fields):  # built past the NamedTuple's __new__ (tuple.__new__)
            return BAD_FIELD, None
        ev = fields
        sym = ev[0]
        if type(sym) is not str or not sym:
            return BAD_SYMBOL, None
        if self.symbols is not None and sym not in self.symbols:
            return UNKNOWN_SYMBOL, None
        vals = [sym]
        for x, (check, reason) in zip(ev[1:], _SPECS[cls]):
            v = check(x)
            if v is None:
                return reason, None
            vals.append(v)
        if cls is BookSnapshot:
            reason, arrays = _book_slow(ev)
            if reason:
                return reason, None
            vals.extend(arrays)
        return None, _new(cls, vals)

    def problem(self, ev: object) -> str | None:
        """The rejection reason for ``ev`` now, or None if it is good (or would be held as a
        forward jump: ``filter`` decides that). Does not count."""
        reason, ev = self._classify(ev)
        if reason:
            return reason
        ts = ev[1]
        if self.max_ahead_ns is not None and ts - ev[2] > self.max_ahead_ns:
            return FUTURE_TIME
        hwm = self._max_ts.get(ev[0])
        if hwm is not None and ts < hwm - self.tolerance_ns:
            return TIME_BACKWARDS
        return None

    # -- filtering ---------------------------------------------------------------------

    def filter(self, events: Iterable[Event]) -> list[Event]:
        """The good events, in order per symbol; bad ones are counted and logged. Never raises."""
        good: list[Event] = []
        append = good.append
        max_ts, held, known = self._max_ts, self._held, self.symbols
        tol, gap = self.tolerance_ns, self.max_forward_gap_ns
        ahead = _I64 * 4 if self.max_ahead_ns is None else self.max_ahead_ns  # None: a bound no int64 pair reaches
        I64, I32, INF, CODES = _I64, _I32, _INF, _CODES  # locals: read a dozen times per event
        good_bp, good_ap = self._good_sides
        try:
            for ev in events:
                try:
                    # Fast path: exact types and ranges (books: C-level passes). It only ever says "good";
                    # anything else, or junk that makes it raise (a wrong field count fails the unpacking),
                    # is classified field by field.
                    try:
                        t = type(ev)
                        if t is Trade:
                            sym, ts, recv, seq, price, qty, tt, b, s, tid = ev
                            ok = (type(sym) is str and type(ts) is int and type(recv) is int and type(seq) is int
                                  and type(price) is float and type(qty) is int and type(tt) is int
                                  and type(b) is int and type(s) is int and type(tid) is int
                                  and 0 < ts < I64 and 0 <= recv < I64 and 0 <= seq < I64 and 0.0 < price < INF
                                  and 0 < qty < I64 and tt in CODES
                                  and -I64 <= b < I64 and -I64 <= s < I64 and -I64 <= tid < I64)
                        elif t is BookSnapshot:
                            sym, ts, recv, seq, bp, bq, ap, aq = ev
                            ok = (type(sym) is str and type(ts) is int and type(recv) is int and type(seq) is int
                                  and type(bp) is tuple and type(bq) is tuple and type(ap) is tuple and type(aq) is tuple
                                  and 0 < ts < I64 and 0 <= recv < I64 and 0 <= seq < I64
                                  and _book_ok(bp, bq, ap, aq, good_bp, good_ap))
                            if ok:
                                good_bp, good_ap = bp, ap
                        elif t is BookUpdate:
                            sym, ts, recv, seq, side, action, pos, price, qty, agent, oid = ev
                            ok = (type(sym) is str and type(ts) is int and type(recv) is int and type(seq) is int
                                  and type(side) is int and type(action) is int and type(pos) is int
                                  and type(price) is float and type(qty) is int and type(agent) is int and type(oid) is int
                                  and 0 < ts < I64 and 0 <= recv < I64 and 0 <= seq < I64 and 0 <= side <= 1
                                  and 0 <= action <= 4 and 0 <= pos < I32 and 0.0 < price < INF
                                  and 0 <= qty < I64 and -I64 <= agent < I64 and -I64 <= oid < I64)
                        else:
                            ok = False
                        ok = ok and (sym in known if known is not None else sym != "")
                    except Exception:
                        ok = False
                    if ok:
                        hwm = max_ts.get(sym)
                        if hwm is not None and ts - recv <= ahead and hwm - tol <= ts <= hwm + gap and sym not in held:
                            append(ev)
                            if ts > hwm:
                                max_ts[sym] = ts
                            continue
                    else:
                        reason, norm = self._classify(ev)
                        if reason:
                            self._reject(reason, ev)
                            continue
                        ev = norm
                    self._place(ev, good)
                except Exception:  # a bug in validation itself: this event is counted, the rest go on
                    self._reject(VALIDATION_ERROR, ev, exc_info=True)
        except Exception:  # ``events`` itself failed to iterate: keep what was validated
            self._reject(VALIDATION_ERROR, events, exc_info=True)
        self._good_sides = (good_bp, good_ap)
        self.accepted += len(good)
        return good

    def _place(self, ev: Event, good: list) -> None:
        """Event-time decision for a content-valid event: accept, reject, or hold (module doc)."""
        sym, ts, recv = ev[0], ev[1], ev[2]
        if self.max_ahead_ns is not None and ts - recv > self.max_ahead_ns:
            return self._reject(FUTURE_TIME, ev)
        hwm = self._max_ts.get(sym)
        if hwm is None:  # first event of the symbol
            self._max_ts[sym] = ts
            good.append(ev)
            return
        tol, gap = self.tolerance_ns, self.max_forward_gap_ns
        if ts < hwm - tol:
            return self._reject(TIME_BACKWARDS, ev)
        run = self._held.get(sym)
        if ts <= hwm + gap:  # the normal range: a held jump was not real
            if run:
                self._drop(sym)
            good.append(ev)
            if ts > hwm:
                self._max_ts[sym] = ts
            return
        if run:
            top = max(e[1] for e in run)
            if not top - tol <= ts <= top + gap:  # beyond the gap but not with the held ones: a new run
                self._drop(sym)
                run = None
        if run is None:
            run = self._held[sym] = []
        run.append(ev)
        self._held_n += 1
        if len(run) >= self.confirm_events:  # confirmed: a real jump
            del self._held[sym]
            self._held_n -= len(run)
            good.extend(run)
            self._max_ts[sym] = max(e[1] for e in run)

    def _drop(self, sym: str) -> None:
        run = self._held.pop(sym)
        self._held_n -= len(run)
        for e in run:
            self._reject(TIME_JUMP, e)

    def flush(self) -> list[Event]:
        """Decide what is still held (end of input): an unconfirmed jump is rejected as ``time_jump``.
        Returns the events this accepts, like ``filter`` (none today: a confirmed run is released
        at once, so whatever is still held is unconfirmed)."""
        for sym in list(self._held):
            self._drop(sym)
        return []

    def _reject(self, reason: str, ev: object, exc_info: bool = False) -> None:
        self.rejected[reason] += 1
        now = time.monotonic()
        if now - self._last_log >= self._log_every_s:
            extra = f" (+{self._unlogged} more rejections since last report)" if self._unlogged else ""
            log.warning("rejected event: %s: %s%s", reason, _safe_repr(ev), extra, exc_info=exc_info)
            self._last_log = now
            self._unlogged = 0
        else:
            self._unlogged += 1

    def stats(self) -> dict:
        return {"accepted": self.accepted, "rejected": dict(self.rejected), "held": self._held_n}
