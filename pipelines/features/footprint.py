"""Footprint per one-minute event-time candle: bid/ask volume per price, delta,
cumulative delta, point of control, value area, imbalances, unfinished auctions
and absorption.

Rules fixed here:

Rows and sides
    One row per tick (``tick_size``; prices are keyed by ``round(price / tick)``
    so float noise never splits a row). ``ask_vol`` = buyer-initiated volume
    (``TradeType`` 2), ``bid_vol`` = seller-initiated (3); other prints
    (auction, cross, ...) count in the row's ``volume`` but in no side and no
    delta. ``delta = ask_vol - bid_vol`` per row and per bar; ``cum_delta`` is
    the session CVD (reset on a new America/Sao_Paulo day); ``delta_min`` /
    ``delta_max`` are the extremes of the running intrabar delta, starting at 0.

Bars
    A bar is the event-time minute ``minute_floor_ns(ts_event)``; it closes when
    a trade (or :meth:`advance`) reaches a later minute, or on :meth:`flush`.
    Minutes without trades produce no bar (gaps just skip). A trade stamped
    before the open bar's minute is folded into the open bar.

POC
    The row with the most volume; ties go to the row nearest the bar's
    mid-range ``(high + low) / 2``, then to the lower price.

Value area (70%, CBOT two-row rule)
    Rows are every tick from low to high (untraded rows count as 0). Start at
    the POC; while covered volume < 70% of the bar's volume, compare the sum of
    the next two rows above with the next two below (fewer if the range ends)
    and add the larger pair; equal pairs add both; an exhausted side is never
    chosen. ``value_area_high/low`` = the highest/lowest row added.

Diagonal imbalance (ratio ``r`` = 3, ``min_volume``)
    Buy imbalance at p: ``ask_vol(p) >= r * bid_vol(p - tick)`` and
    ``ask_vol(p) >= min_volume``; sell imbalance at p:
    ``bid_vol(p) >= r * ask_vol(p + tick)`` and ``bid_vol(p) >= min_volume``.
    The compared row must lie inside the bar's range (so the low has no buy
    and the high no sell imbalance); an untraded row inside the range is 0,
    which makes the ratio infinite: it counts when the minimum volume is met.
    Stacked imbalance: >= ``stack`` (3) consecutive rows with same-direction
    imbalance, reported as (lowest price, highest price) runs.

Unfinished auction
    At the bar high both ``ask_vol`` and ``bid_vol`` > 0 (likewise the low).

Absorption (practitioner rule, parameters in ``AbsorptionRule``)
    Candidate at the low of bar k: seller-initiated volume on the
    ``near_ticks`` lowest rows ``S >= min_volume`` and ``S >= min_share`` x
    the bar's volume. It is confirmed when each of the next ``hold_bars`` bars
    has ``low >= low_k`` (the low held: aggressive selling made no progress),
    and dropped as soon as one bar trades below it. Mirror at the high with
    buyer-initiated volume and ``high <= high_k``. A confirmed event is
    reported in the ``absorption`` field of the bar that confirms it; "next
    bars" are the next bars that traded, and candidates never cross a session
    day.
"""

from __future__ import annotations

from typing import NamedTuple

from pipelines.model.clock import SessionDay, minute_floor_ns
from pipelines.model.messages import BAR_HEAD, Trade, TradeType

_BUY = int(TradeType.BUY_AGGRESSOR)
_SELL = int(TradeType.SELL_AGGRESSOR)


class AbsorptionRule(NamedTuple):
    near_ticks: int = 2
    min_share: float = 0.3
    min_volume: int = 10
    hold_bars: int = 2


class Absorption(NamedTuple):
    at: str  # "low": sellers absorbed (bullish); "high": buyers absorbed (bearish)
    ts_open: int  # the bar where the aggressive volume traded
    price: float  # that bar's low (or high)
    volume: int  # S, the aggressive volume near the extreme


class FootprintBar(NamedTuple("FootprintBar", [
    *BAR_HEAD,  # symbol, ts_open, open, high, low, close, volume: the head of every bar
    ("ask_volume", int),
    ("bid_volume", int),
    ("delta", int),
    ("cum_delta", int),
    ("delta_min", int),
    ("delta_max", int),
    ("levels", tuple),  # ((price, bid_vol, ask_vol, volume), ...) traded rows, ascending price
    ("poc", float),
    ("value_area_high", float),
    ("value_area_low", float),
    ("buy_imbalances", tuple),  # prices
    ("sell_imbalances", tuple),
    ("stacked_buy", tuple),  # ((low price, high price), ...)
    ("stacked_sell", tuple),
    ("unfinished_high", bool),
    ("unfinished_low", bool),
    ("absorption", tuple),  # Absorption events confirmed at this bar's close
])):
    """One minute's footprint (rules in the module docstring)."""

    __slots__ = ()


class ProfileRule(NamedTuple):
    min_ticks: float = 4.0  # a narrower bar has no P or b shape
    volume_share: float = 0.6  # least share of the volume on the POC's side of mid-range


class ProfileShape(NamedTuple):
    name: str  # "p": POC high, volume above mid (shorts covering); "b": the mirror (longs liquidating)
    direction: int  # +1 for P, -1 for b
    poc_position: float  # (poc - low) / (high - low)
    volume_share: float  # of the bar's volume on the POC's side of mid-range


def profile_shape(bar: dict, tick_size: float, rule: ProfileRule = ProfileRule()) -> ProfileShape | None:
    """P or b shape of a closed bar (as a dict), or None: the POC in the upper third with at
    least ``volume_share`` of the volume above mid-range is a P; the mirror is a b."""
    high, low = float(bar["high"]), float(bar["low"])
    if (high - low) / tick_size < rule.min_ticks:
        return None
    pos = (float(bar["poc"]) - low) / (high - low)
    mid = (high + low) / 2
    total = sum(lv[3] for lv in bar["levels"])
    upper = sum(lv[3] for lv in bar["levels"] if lv[0] > mid) / total
    lower = sum(lv[3] for lv in bar["levels"] if lv[0] < mid) / total
    if pos >= 2 / 3 and upper >= rule.volume_share:
        return ProfileShape("p", 1, pos, upper)
    if pos <= 1 / 3 and lower >= rule.volume_share:
        return ProfileShape("b", -1, pos, lower)
    return None


def value_area(vol: list[int], poc: int, share_num: int = 7, share_den: int = 10) -> tuple[int, int]:
    """Row indices (low, high) of the value area over contiguous rows ``vol``."""
    total = sum(vol)
    lo = hi = poc
    covered = vol[poc]
    last = len(vol) - 1
    while covered * share_den < share_num * total and (lo > 0 or hi < last):
        up = sum(vol[hi + 1 : hi + 3]) if hi < last else None
        down = sum(vol[max(0, lo - 2) : lo]) if lo > 0 else None
        take_up = down is None or (up is not None and up >= down)
        take_down = up is None or (down is not None and down >= up)
        if take_up:
            covered += up
            hi = min(last, hi + 2)
        if take_down:
            covered += down
            lo = max(0, lo - 2)
    return lo, hi


def _runs(flags: list[bool], min_len: int) -> list[tuple[int, int]]:
    out, start = [], None
    for i, f in enumerate(flags + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if i - start >= min_len:
                out.append((start, i - 1))
            start = None
    return out


class FootprintBuilder:
    def __init__(self, symbol: str = "", tick_size: float = 0.5, imbalance_ratio: float = 3.0,
                 imbalance_min_volume: int = 5, stack: int = 3, absorption: AbsorptionRule = AbsorptionRule()):
        self.symbol = symbol
        self.tick = tick_size
        self.ratio = imbalance_ratio
        self.min_volume = imbalance_min_volume
        self.stack = stack
        if absorption.hold_bars < 1:
            raise ValueError("AbsorptionRule.hold_bars must be >= 1: absorption needs later bars to hold")
        self.rule = absorption
        self._day = SessionDay()
        self._cum_delta = 0
        self._pending: list[list] = []  # [Absorption, bars still to hold, extreme in ticks]
        self._minute: int | None = None
        self._reset_bar()
        self.bars = 0

    def _reset_bar(self) -> None:
        self._rows: dict[int, list[int]] = {}  # tick -> [bid_vol, ask_vol, volume]
        self._ohlc: list | None = None  # [open, high, low, close] in ticks
        self._delta = 0
        self._dmin = 0
        self._dmax = 0

    def on_trade(self, t: Trade) -> FootprintBar | None:
        if t.qty <= 0:
            return None
        minute = minute_floor_ns(t.ts_event)
        done = None
        if self._minute is None:
            self._minute = minute
        elif minute > self._minute:
            done = self._close()
            self._minute = minute
        k = round(t.price / self.tick)
        row = self._rows.get(k)
        if row is None:
            row = self._rows[k] = [0, 0, 0]
        v = t.qty
        row[2] += v
        tt = t.trade_type
        if tt == _BUY:
            row[1] += v
            self._delta += v
        elif tt == _SELL:
            row[0] += v
            self._delta -= v
        if self._delta > self._dmax:
            self._dmax = self._delta
        elif self._delta < self._dmin:
            self._dmin = self._delta
        o = self._ohlc
        if o is None:
            self._ohlc = [k, k, k, k]
        else:
            if k > o[1]:
                o[1] = k
            elif k < o[2]:
                o[2] = k
            o[3] = k
        return done

    def advance(self, ts: int) -> FootprintBar | None:
        """Close the open bar once event time has left its minute."""
        if self._ohlc is not None and minute_floor_ns(ts) > self._minute:
            bar = self._close()
            self._minute = minute_floor_ns(ts)
            return bar
        return None

    def flush(self) -> FootprintBar | None:
        return self._close() if self._ohlc is not None else None

    def current(self) -> FootprintBar | None:
        """The open bar as it stands (absorption not evaluated, CVD provisional)."""
        if self._ohlc is None:
            return None
        return self._build(self._cum_delta + self._delta, ())

    def _close(self) -> FootprintBar | None:
        if self._ohlc is None:
            return None
        if self._day.update(self._minute):
            self._cum_delta = 0
            self._pending.clear()
        self._cum_delta += self._delta
        lo_k, hi_k = self._ohlc[2], self._ohlc[1]
        confirmed = self._confirm_absorption(lo_k, hi_k)
        self._add_absorption_candidates(lo_k, hi_k)
        bar = self._build(self._cum_delta, tuple(confirmed))
        self.bars += 1
        self._reset_bar()
        return bar

    def _confirm_absorption(self, lo_k: int, hi_k: int) -> list[Absorption]:
        confirmed, keep = [], []
        for item in self._pending:
            event, left, extreme = item
            held = lo_k >= extreme if event.at == "low" else hi_k <= extreme
            if not held:
                continue
            if left == 1:
                confirmed.append(event)
            else:
                keep.append([event, left - 1, extreme])
        self._pending = keep
        return confirmed

    def _add_absorption_candidates(self, lo_k: int, hi_k: int) -> None:
        rule = self.rule
        volume = sum(r[2] for r in self._rows.values())
        near_low = sum(self._rows[k][0] for k in range(lo_k, lo_k + rule.near_ticks) if k in self._rows)
        near_high = sum(self._rows[k][1] for k in range(hi_k - rule.near_ticks + 1, hi_k + 1) if k in self._rows)
        for at, s, k in (("low", near_low, lo_k), ("high", near_high, hi_k)):
            if s >= rule.min_volume and s >= rule.min_share * volume:
                self._pending.append([Absorption(at, self._minute, k * self.tick, s), rule.hold_bars, k])

    def _build(self, cum_delta: int, absorption: tuple) -> FootprintBar:
        tick = self.tick
        o, hi_k, lo_k, c = self._ohlc
        rows = self._rows
        n = hi_k - lo_k + 1
        bid = [0] * n
        ask = [0] * n
        vol = [0] * n
        for k, (b, a, v) in rows.items():
            bid[k - lo_k], ask[k - lo_k], vol[k - lo_k] = b, a, v
        top = max(vol)
        mid2 = hi_k + lo_k  # twice the mid-range, in ticks: compare 2*k with it
        poc = min((i for i in range(n) if vol[i] == top), key=lambda i: (abs(2 * (i + lo_k) - mid2), i))
        va_lo, va_hi = value_area(vol, poc)
        r, mv = self.ratio, self.min_volume
        buy_imb = [i > 0 and ask[i] >= mv and ask[i] >= r * bid[i - 1] for i in range(n)]
        sell_imb = [i < n - 1 and bid[i] >= mv and bid[i] >= r * ask[i + 1] for i in range(n)]
        px = lambda i: (i + lo_k) * tick  # noqa: E731
        return FootprintBar(
            symbol=self.symbol,
            ts_open=self._minute,
            open=o * tick,
            high=hi_k * tick,
            low=lo_k * tick,
            close=c * tick,
            volume=sum(vol),
            ask_volume=sum(ask),
            bid_volume=sum(bid),
            delta=self._delta,
            cum_delta=cum_delta,
            delta_min=self._dmin,
            delta_max=self._dmax,
            levels=tuple((px(i), bid[i], ask[i], vol[i]) for i in range(n) if vol[i]),
            poc=px(poc),
            value_area_high=px(va_hi),
            value_area_low=px(va_lo),
            buy_imbalances=tuple(px(i) for i in range(n) if buy_imb[i]),
            sell_imbalances=tuple(px(i) for i in range(n) if sell_imb[i]),
            stacked_buy=tuple((px(a), px(b)) for a, b in _runs(buy_imb, self.stack)),
            stacked_sell=tuple((px(a), px(b)) for a, b in _runs(sell_imb, self.stack)),
            unfinished_high=bid[-1] > 0 and ask[-1] > 0,
            unfinished_low=bid[0] > 0 and ask[0] > 0,
            absorption=absorption,
        )

    def state_sizes(self) -> dict[str, int]:
        return {"footprint_rows": len(self._rows), "absorption_pending": len(self._pending)}
