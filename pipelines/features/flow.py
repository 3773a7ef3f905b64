"""Order-flow analytics on event time: OFI, multi-level OFI, trade-flow imbalance,
aggression, trade-size categories, tape speed and VPIN.

Plain incremental classes (no Ray, no I/O). Every update is O(1) amortized and
every window is on **event time** (``ts_event``, ns), never the wall clock.
Where the published definitions (cited per block) leave a choice open, it is
fixed here:

Windows
    ``WINDOWS_NS``: 1, 5, 15, 30 and 60 minutes. A window read at clock ``t``
    holds the events with ``t - W < ts_event <= t`` (pandas ``rolling('5min')``
    semantics). The clock is the latest ``ts_event`` seen, moved by events or by
    :meth:`advance`; it never runs backwards (an out-of-order event is filed
    at the current clock).

Missing data
    A ratio over a window with a zero denominator (no volume, no orders, no
    book states) is NaN, never 0, and ``empty_windows`` counts every NaN handed
    out for that reason; ``values()`` also reports the event count of each
    window (``*_n_<w>``) so "flat" and "no information" stay distinct.

Sessions and gaps
    A window spanning a gap simply holds fewer events. A new America/Sao_Paulo
    calendar day resets the OFI reference state (the first book of the day only
    seeds, ``e = 0``: an overnight change is not order flow), closes the open
    aggressor order and restarts the tape-speed warm-up. B3 has no overnight
    session, so the 1-60 minute windows never hold two days of events anyway.
    VPIN buckets carry across days (the volume clock runs on, as in ELO 2012).

OFI (Cont, Kukanov & Stoikov 2014)
    ``e_n`` from consecutive accepted book states with **non-strict**
    inequalities; an empty side is price -inf (bid) / +inf (ask) with size 0;
    a crossed (``bid > ask``) or locked (``bid == ask``) snapshot is skipped,
    the previous reference kept, and counted. Normalized OFI = OFI / AD with
    AD = mean over the window's accepted states of ``(Q^B + Q^A) / 2``.
    Multi-level OFI (Kolm-Turiel-Westray / Xu-Gould-Howison): the same formula
    at each of 5 levels, level m = the m-th **non-empty** level (size > 0) of
    each side; each level normalized by the window mean of the average
    per-level depth of the first 5 levels, ``sum_m (q^b_m + q^a_m) / (2*5)``.

Trade flow
    Aggressor sign ``s`` = +1 (``TradeType.BUY_AGGRESSOR``), -1
    (``SELL_AGGRESSOR``), 0 otherwise. Prints with ``s = 0`` (auction, cross,
    RLP, ...) count in ``volume`` and tape speed only, never in signed flow,
    TFI, counts, orders or VPIN. TFI = ``sum(s*v) / sum(|s|*v)``; count
    imbalance = ``(N_buy - N_sell) / (N_buy + N_sell)`` over fills.

Aggressor orders
    Consecutive aggressive fills with the same side and the same
    ``ts_event // aggression_resolution_ns`` form one aggressor order (default
    resolution 1 ns = identical ``ts_event``; use 1 ms for Sierra Chart tapes
    whose sub-millisecond counter splits one aggression). Prints with ``s = 0``
    neither join nor break an order. The order still open (the last one) is
    counted provisionally with its size so far. Size categories per order:
    small <= 5 < medium <= 20 < large <= 50 < whale (``SizeThresholds``,
    configurable per instrument). Aggression ratio = buyer-initiated orders /
    all orders (0.5 = balanced; the original system's buy-aggressor share,
    but per order, so a sweep counts once). Large-trade ratio = (large + whale)
    orders / all orders.

Tape speed
    All prints in (t - W, t] divided by W seconds, W = 60/300/900 s; NaN until
    the clock has run W past the first print of the session day (warm-up).
    After warm-up an empty window is a measured 0 trades/s.

VPIN (Easley, Lopez de Prado & O'Hara 2012) with the native aggressor
    Aggressive volume fills buckets of ``V`` contracts in order; a trade that
    crosses a boundary is split (all of it is one side, so the split is by
    volume). ``VPIN = sum over the last n buckets |V^S - V^B| / (n*V)``, NaN
    until n buckets are complete.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import deque
from operator import add, sub
from typing import NamedTuple

import numpy as np

from pipelines.model.clock import NS_PER_MIN, NS_PER_S, SessionDay
from pipelines.model.messages import BookSnapshot, Trade, TradeType

NAN = float("nan")
INF = float("inf")
WINDOWS_NS: dict[str, int] = {
    "1m": NS_PER_MIN,
    "5m": 5 * NS_PER_MIN,
    "15m": 15 * NS_PER_MIN,
    "30m": 30 * NS_PER_MIN,
    "60m": 60 * NS_PER_MIN,
}
TAPE_SPEED_WINDOWS_S = (60, 300, 900)
OFI_LEVELS = 5
_BUY = int(TradeType.BUY_AGGRESSOR)
_SELL = int(TradeType.SELL_AGGRESSOR)


def aggressor_sign(trade_type: int) -> int:
    """+1 buyer aggressor, -1 seller aggressor, 0 for every other print."""
    return 1 if trade_type == _BUY else -1 if trade_type == _SELL else 0


class EventTimeWindows:
    """Sums of per-event value vectors over trailing event-time windows ``(t - W, t]``.

    One row per event holds its time and the running totals (prefix sums) of
    its values, so adding is O(1) and a window sum is "totals now minus totals
    just before the window" found by binary search (O(log n) per read). Rows
    live in one typed ``array`` (8 bytes per value: ``typecode`` ``"q"`` for
    integer sums, exact; ``"d"`` for floats), not in tuples (~340 bytes per
    row), because a 60-minute window at thousands of events/s holds millions
    of rows. Rows older than the widest
    window are dropped in batches and the totals rebased to zero, so memory
    stays proportional to the events inside ``max_width_ns``.
    """

    __slots__ = ("_width", "_max_width", "_code", "_dtype", "_ts", "_rows", "_tot", "_zero",
                 "_next_compact", "now")

    def __init__(self, width: int, max_width_ns: int, typecode: str = "q"):
        self._width = width
        self._max_width = max_width_ns
        self._code = typecode
        self._dtype = np.int64 if typecode == "q" else np.float64
        self._zero = (0,) * width if typecode == "q" else (0.0,) * width
        self._ts = array("q")
        self._rows = array(typecode)  # row r = running totals after event r, at [r*width, (r+1)*width)
        self._tot = list(self._zero)
        self._next_compact = 4096
        self.now: int | None = None

    def advance(self, ts: int) -> int:
        """Move the clock to ``ts`` (never backwards); returns the clock."""
        if self.now is None or ts > self.now:
            self.now = ts
        return self.now

    def add(self, ts: int, values: tuple) -> None:
        now = self.now  # advance(ts), inline: this runs on every book snapshot, twice
        if now is None or ts > now:
            self.now = now = ts
        self._ts.append(now)
        tot = self._tot = list(map(add, self._tot, values))
        self._rows.extend(tot)
        if len(self._ts) >= self._next_compact:
            self._compact()

    def _compact(self) -> None:
        head = bisect_right(self._ts, self.now - self._max_width)
        if head:
            w = self._width
            base = self._rows[(head - 1) * w : head * w].tolist()
            kept = np.frombuffer(self._rows, dtype=self._dtype)[head * w :].reshape(-1, w) - base
            self._rows = array(self._code)
            self._rows.frombytes(kept.tobytes())
            self._tot = list(map(sub, self._tot, base))
            self._ts = self._ts[head:]
        # Next check after the store has doubled: the rebase above costs O(rows
        # kept), paid for by at least as many appends before the next one.
        self._next_compact = 2 * len(self._ts) + 4096

    def window(self, width_ns: int) -> tuple[int, tuple]:
        """(number of events, per-value sums) over ``(now - width_ns, now]``."""
        if width_ns > self._max_width:
            raise ValueError(f"window {width_ns} ns is wider than the {self._max_width} ns kept")
        ts = self._ts
        if not ts:
            return 0, self._zero
        i = bisect_right(ts, self.now - width_ns)
        n = len(ts) - i
        if n == 0:
            return 0, self._zero
        if i == 0:
            return n, tuple(self._tot)
        w = self._width
        return n, tuple(map(sub, self._tot, self._rows[(i - 1) * w : i * w]))

    def count(self, width_ns: int) -> int:
        """``window(width_ns)[0]`` without the sums."""
        if width_ns > self._max_width:
            raise ValueError(f"window {width_ns} ns is wider than the {self._max_width} ns kept")
        ts = self._ts
        return len(ts) - bisect_right(ts, self.now - width_ns) if ts else 0

    def __len__(self) -> int:
        return len(self._ts)


def book_levels(px: tuple, qty: tuple, m: int, empty_price: float) -> tuple[tuple, tuple]:
    """The first ``m`` non-empty levels (size > 0) of one book side, padded with
    ``(empty_price, 0)``: level m is the m-th non-empty level, not a tick distance."""
    head = qty[:m]
    if 0 not in head:  # the usual case: no empty level among the first m
        if len(head) == m:
            return px[:m], head
        pad = m - len(head)
        return px + (empty_price,) * pad, qty + (0,) * pad
    pairs = [(p, q) for p, q in zip(px, qty) if q > 0][:m]
    pad = m - len(pairs)
    return (tuple(p for p, _ in pairs) + (empty_price,) * pad, tuple(q for _, q in pairs) + (0,) * pad)


class OrderFlowImbalance:
    """CKS best-level OFI and multi-level OFI over event-time windows.

    ``on_book`` returns the best-level ``e_n`` of an accepted snapshot (0 for a
    seed) or ``None`` when the snapshot was skipped (crossed or locked).
    """

    def __init__(self, levels: int = OFI_LEVELS, windows_ns: dict[str, int] | None = None):
        self.levels = levels
        self.windows_ns = dict(WINDOWS_NS if windows_ns is None else windows_ns)
        # Row per accepted state: e_1..e_M, best-level depth Q^B+Q^A, M-level depth, |e_1|.
        self._store = EventTimeWindows(levels + 3, max(self.windows_ns.values()))
        self._day = SessionDay()
        self._ref: tuple | None = None  # (bid_px, bid_qty, ask_px, ask_qty), each padded to M
        self.snapshots = 0
        self.accepted = 0
        self.skipped_crossed = 0
        self.skipped_locked = 0
        self.session_resets = 0
        self.empty_windows = 0

    @property
    def skipped(self) -> int:
        return self.skipped_crossed + self.skipped_locked

    def advance(self, ts: int) -> None:
        self._store.advance(ts)

    def on_book(self, snap: BookSnapshot) -> int | None:
        m = self.levels
        return self.on_levels(snap.ts_event, *book_levels(snap.bid_px, snap.bid_qty, m, -INF),
                              *book_levels(snap.ask_px, snap.ask_qty, m, INF))

    def on_levels(self, ts: int, bp: tuple, bq: tuple, ap: tuple, aq: tuple) -> int | None:
        """:meth:`on_book` on a snapshot's first ``levels`` non-empty levels of each side, as
        :func:`book_levels` gives them (bids padded with -inf, asks with +inf)."""
        self.snapshots += 1
        m = self.levels
        if self._day.update(ts):
            self._ref = None
            self.session_resets += 1
        if bp[0] >= ap[0]:
            # Pre-open/closing call or a bad state: not order flow. Keep the reference.
            if bp[0] == ap[0]:
                self.skipped_locked += 1
            else:
                self.skipped_crossed += 1
            self._store.advance(ts)
            return None
        self.accepted += 1
        ref = self._ref
        self._ref = (bp, bq, ap, aq)
        if ref is None:
            row = [0] * m
        else:
            # Per level: bid term 1{b >= b0} q - 1{b <= b0} q0, ask term
            # -1{a <= a0} r + 1{a >= a0} r0 (CKS, non-strict on purpose).
            row = [
                (q if b >= b0 else 0) - (q0 if b <= b0 else 0) - (r if a <= a0 else 0) + (r0 if a >= a0 else 0)
                for b, q, b0, q0, a, r, a0, r0 in zip(bp, bq, ref[0], ref[1], ap, aq, ref[2], ref[3])
            ]
        e1 = row[0]
        row += (bq[0] + aq[0], sum(bq) + sum(aq), abs(e1))  # e_1..e_M, then the depths and |e_1|
        self._store.add(ts, row)
        return e1

    # -- reads (as of the clock) ------------------------------------------------

    def _window(self, window: str) -> tuple[int, tuple]:
        return self._store.window(self.windows_ns[window])

    def ofi(self, window: str) -> float:
        """Sum of best-level e_n over the window; NaN when it holds no book state."""
        n, s = self._window(window)
        if n == 0:
            self.empty_windows += 1
            return NAN
        return s[0]

    def ofi_normalized(self, window: str) -> float:
        """OFI / mean((Q^B + Q^A)/2) over the window's accepted states."""
        n, s = self._window(window)
        depth = s[self.levels]
        if n == 0 or depth == 0:
            self.empty_windows += 1
            return NAN
        return s[0] / (depth / (2 * n))

    def ofi_ratio(self, window: str) -> float:
        """sum(e_n) / sum(|e_n|) over the window, in [-1, 1]: the net share of the
        best-level order flow. NaN when the window holds no flow (no state, or
        every e_n = 0). Bounded, unlike the depth-normalized OFI, so a fixed
        alert threshold means the same thing on every instrument and day."""
        n, s = self._window(window)
        gross = s[self.levels + 2]
        if n == 0 or gross == 0:
            self.empty_windows += 1
            return NAN
        return s[0] / gross

    def mlofi(self, window: str) -> tuple[float, ...]:
        """Per-level OFI sums (level 1 = best) over the window."""
        n, s = self._window(window)
        if n == 0:
            self.empty_windows += 1
            return (NAN,) * self.levels
        return s[: self.levels]

    def mlofi_normalized(self, window: str) -> tuple[float, ...]:
        """Per-level OFI / mean of the average per-level depth of the first M levels."""
        n, s = self._window(window)
        depth = s[self.levels + 1]
        if n == 0 or depth == 0:
            self.empty_windows += 1
            return (NAN,) * self.levels
        scale = depth / (2 * self.levels * n)
        return tuple(x / scale for x in s[: self.levels])

    def values(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for w in self.windows_ns:
            out[f"ofi_{w}"] = self.ofi(w)
            out[f"ofi_norm_{w}"] = self.ofi_normalized(w)
            out[f"ofi_ratio_{w}"] = self.ofi_ratio(w)
            out[f"ofi_n_{w}"] = self._window(w)[0]
            for m, (raw, norm) in enumerate(zip(self.mlofi(w), self.mlofi_normalized(w)), start=1):
                out[f"mlofi{m}_{w}"] = raw
                out[f"mlofi{m}_norm_{w}"] = norm
        out["ofi_skipped_crossed"] = self.skipped_crossed
        out["ofi_skipped_locked"] = self.skipped_locked
        return out

    def state_sizes(self) -> dict[str, int]:
        return {"ofi_rows": len(self._store)}


class SizeThresholds(NamedTuple):
    """Aggressor-order size categories in contracts: small <= small < medium <= medium
    < large <= large < whale."""

    small: int = 5
    medium: int = 20
    large: int = 50


SIZE_CATEGORIES = ("small", "medium", "large", "whale")
# Per-instrument thresholds, keyed by exact symbol or by its 3-letter root.
DEFAULT_SIZE_THRESHOLDS: dict[str, SizeThresholds] = {"WDO": SizeThresholds(), "WIN": SizeThresholds()}


def size_thresholds_for(symbol: str, table: dict[str, SizeThresholds] | None = None) -> SizeThresholds:
    table = DEFAULT_SIZE_THRESHOLDS if table is None else table
    return table.get(symbol) or table.get(symbol[:3]) or SizeThresholds()


def size_category(qty: int, th: SizeThresholds) -> int:
    """Index into ``SIZE_CATEGORIES``."""
    return 0 if qty <= th.small else 1 if qty <= th.medium else 2 if qty <= th.large else 3


def _order_row(side: int, qty: int, th: SizeThresholds) -> tuple:
    """(orders, buy orders, small, medium, large, whale) for one aggressor order."""
    row = [1, 1 if side > 0 else 0, 0, 0, 0, 0]
    row[2 + size_category(qty, th)] = 1
    return tuple(row)


class TradeFlow:
    """Signed volume, TFI, count imbalance, aggressor orders and tape speed."""

    def __init__(
        self,
        thresholds: SizeThresholds = SizeThresholds(),
        aggression_resolution_ns: int = 1,
        windows_ns: dict[str, int] | None = None,
    ):
        self.thresholds = thresholds
        self.resolution = aggression_resolution_ns
        self.windows_ns = dict(WINDOWS_NS if windows_ns is None else windows_ns)
        widest = max(max(self.windows_ns.values()), max(TAPE_SPEED_WINDOWS_S) * NS_PER_S)
        # Per print: signed volume, aggressive volume, all volume, buy fills, sell fills.
        self._trades = EventTimeWindows(5, widest)
        # Per closed aggressor order: see _order_row.
        self._orders = EventTimeWindows(6, widest)
        self._day = SessionDay()
        self._open: list | None = None  # [ts, key, side, qty] of the aggressor order still open
        self._session_first_ts: int | None = None
        self.trades = 0
        self.empty_windows = 0

    def advance(self, ts: int) -> None:
        self._trades.advance(ts)
        self._orders.advance(ts)

    def on_trade(self, t: Trade) -> None:
        self.trades += 1
        ts = t.ts_event
        if self._day.update(ts) or self._session_first_ts is None:
            self._close_order()
            self._session_first_ts = ts
        tt = t.trade_type
        s = 1 if tt == _BUY else -1 if tt == _SELL else 0
        v = t.qty
        if s > 0:
            self._trades.add(ts, (v, v, v, 1, 0))
        elif s < 0:
            self._trades.add(ts, (-v, v, v, 0, 1))
        else:
            self._trades.add(ts, (0, 0, v, 0, 0))
            return
        key = ts // self.resolution
        o = self._open
        if o is not None and o[1] == key and o[2] == s:
            o[3] += v
            return
        self._close_order()
        self._open = [self._trades.now, key, s, v]

    def _close_order(self) -> None:
        o = self._open
        if o is not None:
            self._orders.add(o[0], _order_row(o[2], o[3], self.thresholds))
            self._open = None

    # -- reads ------------------------------------------------------------------

    def trade_sums(self, window: str) -> tuple[int, tuple]:
        """(prints, (signed vol, aggressive vol, volume, buy fills, sell fills))."""
        return self._trades.window(self.windows_ns[window])

    def order_sums(self, window: str) -> tuple:
        """(orders, buy orders, small, medium, large, whale), the open order included."""
        width = self.windows_ns[window]
        now = self._orders.advance(self._trades.now)  # one clock for prints and orders
        _, s = self._orders.window(width)
        o = self._open
        if o is not None and o[0] > now - width:
            s = tuple(map(add, s, _order_row(o[2], o[3], self.thresholds)))
        return s

    def _ratio(self, num: float, den: float) -> float:
        if den == 0:
            self.empty_windows += 1
            return NAN
        return num / den

    def delta(self, window: str) -> int:
        return self.trade_sums(window)[1][0]

    def volume(self, window: str) -> int:
        return self.trade_sums(window)[1][2]

    def tfi(self, window: str) -> float:
        s = self.trade_sums(window)[1]
        return self._ratio(s[0], s[1])

    def count_imbalance(self, window: str) -> float:
        s = self.trade_sums(window)[1]
        return self._ratio(s[3] - s[4], s[3] + s[4])

    def aggression_ratio(self, window: str) -> float:
        s = self.order_sums(window)
        return self._ratio(s[1], s[0])

    def large_trade_ratio(self, window: str) -> float:
        s = self.order_sums(window)
        return self._ratio(s[4] + s[5], s[0])

    def order_ratios(self, window: str) -> tuple[float, float]:
        """``(aggression_ratio(window), large_trade_ratio(window))`` from one read of the window."""
        s = self.order_sums(window)
        return self._ratio(s[1], s[0]), self._ratio(s[4] + s[5], s[0])

    def tape_speed(self, seconds: int) -> float:
        """Prints per second over the last ``seconds`` of event time (NaN during warm-up)."""
        now = self._trades.now
        width = seconds * NS_PER_S
        if self._session_first_ts is None or now - self._session_first_ts < width:
            return NAN
        return self._trades.count(width) / seconds

    def values(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for w in self.windows_ns:
            n, (delta, aggr, vol, nb, ns) = self.trade_sums(w)
            orders = self.order_sums(w)
            out[f"delta_{w}"] = delta
            out[f"volume_{w}"] = vol
            out[f"tfi_{w}"] = self._ratio(delta, aggr)
            out[f"count_imbalance_{w}"] = self._ratio(nb - ns, nb + ns)
            out[f"aggression_ratio_{w}"] = self._ratio(orders[1], orders[0])
            out[f"large_trade_ratio_{w}"] = self._ratio(orders[4] + orders[5], orders[0])
            for name, count in zip(SIZE_CATEGORIES, orders[2:]):
                out[f"orders_{name}_{w}"] = count
            out[f"trades_n_{w}"] = n
            out[f"orders_n_{w}"] = orders[0]
        for sec in TAPE_SPEED_WINDOWS_S:
            out[f"tape_speed_{sec}s"] = self.tape_speed(sec)
        return out

    def state_sizes(self) -> dict[str, int]:
        return {"trade_rows": len(self._trades), "order_rows": len(self._orders)}


class VPIN:
    """Volume-synchronized probability of informed trading on native aggressor volume."""

    def __init__(self, bucket_volume: int, n_buckets: int = 50):
        if not isinstance(bucket_volume, int) or bucket_volume <= 0:
            raise ValueError(f"bucket_volume must be a positive integer (contracts), got {bucket_volume!r}")
        self.bucket_volume = bucket_volume
        self.n_buckets = n_buckets
        self._imbalances: deque[int] = deque()
        self._imbalance_sum = 0
        self._buy = 0
        self._sell = 0
        self.buckets_completed = 0
        self.excluded_volume = 0  # prints without an aggressor (auction, cross, ...)

    def on_trade(self, t: Trade) -> None:
        tt = t.trade_type
        if tt == _BUY:
            buy = True
        elif tt == _SELL:
            buy = False
        else:
            self.excluded_volume += t.qty
            return
        big_v = self.bucket_volume
        v = t.qty
        take = min(v, big_v - self._buy - self._sell)
        if buy:
            self._buy += take
        else:
            self._sell += take
        v -= take
        if self._buy + self._sell < big_v:
            return
        self._close_bucket(abs(self._buy - self._sell))
        # The rest of a big print fills whole one-sided buckets (imbalance V each),
        # then starts the next bucket; at most n of those whole buckets can matter.
        full, v = divmod(v, big_v)
        for _ in range(min(full, self.n_buckets)):
            self._close_bucket(big_v)
        self.buckets_completed += max(0, full - self.n_buckets)
        self._buy, self._sell = (v, 0) if buy else (0, v)

    def _close_bucket(self, imbalance: int) -> None:
        d = self._imbalances
        if len(d) == self.n_buckets:
            self._imbalance_sum -= d.popleft()
        d.append(imbalance)
        self._imbalance_sum += imbalance
        self.buckets_completed += 1
        self._buy = self._sell = 0

    def value(self) -> float:
        if len(self._imbalances) < self.n_buckets:
            return NAN
        return self._imbalance_sum / (self.n_buckets * self.bucket_volume)

    def state_sizes(self) -> dict[str, int]:
        return {"vpin_buckets": len(self._imbalances)}

