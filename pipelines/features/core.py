"""The 65 per-trade features: one implementation for live (incremental) and batch use.

Two entry points compute the same numbers:

- :class:`FeatureEngineCore` is the live path. ``on_trade`` folds one trade
  into fixed-size state in O(1) amortized time; ``vector()`` returns the 65
  features (``FEATURE_NAMES`` order) as of the last trade.
- :func:`compute_batch` is the training/backtest path. It computes every
  feature for every trade with vectorized numpy and returns one row per trade.
  The one sequential piece, the Wilder recursion of ``rsi_14``, runs through
  ``itertools.accumulate``.

Both are pinned together by a parity test (relative difference <= 1e-9, NaN
where NaN). :func:`compute_streaming` runs the live engine over a tape and
returns the same table, for that test and for anyone who wants the reference.

How parity is kept without float drift
--------------------------------------
Prices are mapped to integers of ``price_quantum`` (default 0.001, finer than
every B3/CME tick: WDO 0.5, WIN 5, ES 0.25; an off-grid price is rounded to it
for the window sums, while returns, log returns and Garman-Klass use the raw
price). Every window sum (prices,
squared prices, squared price changes, volumes, signed volumes, volume x price)
is then an *exact* integer: the live engine keeps integer prefix sums in ring
buffers (window sum = prefix[n] - prefix[n-w], no add/remove drift) and the
batch path takes the same differences of int64 cumulative sums (a wrapped
cumsum still gives the right difference, modulo 2**64). Each feature is then one
short float formula applied to exact integers in the same operation order on
both paths, and a zero variance is exactly zero on both sides (-> NaN, never a
tiny number on one side only). The float-only parts use the same operations
too: the Wilder recursion runs through ``itertools.accumulate`` in batch, and
the Garman-Klass window is summed left to right on both. On x86-64 all 65
columns come out bit-identical; the parity test allows 1e-9 relative because
``math.log`` and numpy's ``log`` may differ by one ulp on other CPUs.

Conventions
-----------
- Windows count TRADES (one row per trade, as the original model was trained),
  except ``trade_intensity*`` (event-time seconds) and the temporal group.
  "The last w trades" includes the current trade. A feature needing w price
  changes needs w+1 trades.
- Event time only: ``ts_event`` (ns, UTC). Event-time windows use the running
  maximum of ``ts_event`` as the clock, so a small backwards step cannot break
  them. Local time is America/Sao_Paulo via zoneinfo (historical DST included;
  a constant UTC-3 since 2019).
- Aggressor sign: trade type 2 (buyer lifted the offer) = +1, 3 = -1, every
  other type (auction 4, cross 1, RLP...) = 0: kept in volume, excluded from
  signed flow.
- Before its warm-up a feature is NaN and ``warm()`` says so. A zero
  denominator (zero volume, zero variance, flat RSI) is NaN, never a silent 0.
- Trades with a non-finite or non-positive price, or a non-positive quantity,
  are rejected (counted in ``rejected``) by the engine and dropped by the batch
  path. Broker ids outside [1, 2**32) are treated as unknown (0).
- State from the first trade on: RSI (Wilder recursion), the Garman-Klass
  block grid and the broker re-rank grid depend on where the tape started, so
  live and batch agree when they start on the same trade. Rolling windows do
  not reset at session boundaries; ``cumulative_signed_volume`` resets at each
  new Sao Paulo date.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import accumulate
from typing import Any

import numpy as np
import pandas as pd

from pipelines.model.messages import BookSnapshot, Trade, TradeType
from pipelines.model.clock import NS_PER_MIN, NS_PER_S, SAO_PAULO, next_session_day, parse_time, session_bounds_ns, to_ns

NAN = math.nan
NS_PER_HOUR = 60 * NS_PER_MIN
NS_PER_DAY = 24 * NS_PER_HOUR

# ---------------------------------------------------------------- parameters
DEFAULT_PRICE_QUANTUM = 0.001
RETURN_LAGS = (1, 2, 5, 10, 20, 50, 100)
LOG_RETURN_LAGS = (1, 5, 20)
VOL_WINDOWS = (10, 20, 50, 100)
VOL_RATIO_PAIRS = ((10, 20), (20, 50), (50, 100), (100, 200))
GK_BLOCK_TRADES = 10  # Garman-Klass bars: consecutive blocks of 10 trades ...
GK_BLOCKS = 20  # ... the last 20 completed blocks (200 trades)
BB_WINDOW = 20
OFI_WINDOWS = (10, 20, 50, 100)
FLOW_WINDOW = 100  # signed_volume, volume_weighted_return, agent_turnover
VOLUME_SHORT = 10
VOLUME_WINDOWS = (20, 50, 100)
INTENSITY_SHORT_S = 60
INTENSITY_LONG_S = 300
MA_PAIRS = ((5, 20), (20, 50))
MOMENTUM_PAIRS = ((5, 20), (20, 50))
SHARPE_WINDOWS = (5, 20)
RSI_PERIOD = 14
BROKER_WINDOW = 1000  # rank brokers by volume over the last 1000 trades ...
BROKER_RERANK = 20  # ... re-ranked every 20 trades (fixed grid from the first trade)
BROKER_ACTIVE = 20  # "active" = traded on that side in the last 20 trades
TOP_N = 5
SESSION_OPEN_S = 9 * 3600  # 09:00-18:00 Sao Paulo
SESSION_CLOSE_S = 18 * 3600
OPENING_END_S = 9 * 3600 + 1800  # [09:00, 09:30)
CLOSING_START_S = 17 * 3600 + 1800  # [17:30, 18:00)
LUNCH_START_S, LUNCH_END_S = 12 * 3600, 13 * 3600  # [12:00, 13:00)

RING = 256  # ring capacity; must exceed the longest trade window (200 returns = 201 prices)
ID_SPAN = 1 << 32  # broker ids live in [1, 2**32); 0 = unknown
GK_K = 2.0 * math.log(2.0) - 1.0
RSI_KEEP = (RSI_PERIOD - 1) / RSI_PERIOD  # Wilder: avg = KEEP*avg + NEW*x
RSI_NEW = 1.0 / RSI_PERIOD
_BUY = int(TradeType.BUY_AGGRESSOR)
_SELL = int(TradeType.SELL_AGGRESSOR)

assert BROKER_WINDOW % BROKER_RERANK == 0 and BROKER_ACTIVE < BROKER_WINDOW and FLOW_WINDOW < BROKER_WINDOW
assert RING > max(max(RETURN_LAGS), VOL_RATIO_PAIRS[-1][1]) + 1


# ---------------------------------------------------------------- catalog specs
@dataclass(frozen=True)
class FeatureSpec:
    """One catalog row. ``warmup_trades``: trades needed before the value can be
    non-NaN; ``warmup_seconds``: event time needed since the first trade."""

    name: str
    group: str
    formula: str
    window: str
    unit: str
    warmup_trades: int
    warmup_seconds: int = 0


def _back(k: int) -> str:
    return f"{k} trade{'s' if k > 1 else ''} back"


def _build_specs() -> tuple[FeatureSpec, ...]:
    s: list[FeatureSpec] = []
    dp = "dp_i = p_i - p_(i-1) (trade-to-trade price change)"
    for w in VOL_WINDOWS:
        s.append(FeatureSpec(
            f"volatility_{w}", "volatility",
            f"population std (ddof=0) of the last {w} {dp}, divided by the current price p_t; "
            "equals the std of simple returns to within the window's relative price range",
            f"{w} price changes", "fraction of price per trade", w + 1))
    for a, b in VOL_RATIO_PAIRS:
        s.append(FeatureSpec(
            f"volatility_ratio_{a}_{b}", "volatility",
            f"volatility_{a} / volatility_{b} (volatility_200 is computed internally); NaN if volatility_{b} = 0",
            f"{a} and {b} price changes", "ratio", b + 1))
    s.append(FeatureSpec(
        "volatility_gk", "volatility",
        f"Garman-Klass: sqrt(mean over the last {GK_BLOCKS} completed blocks of "
        "[0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2]); bars are consecutive blocks of "
        f"{GK_BLOCK_TRADES} trades counted from the first trade; NaN if the window sum is negative (never clamped)",
        f"{GK_BLOCKS} blocks x {GK_BLOCK_TRADES} trades", "fraction of price per block",
        GK_BLOCKS * GK_BLOCK_TRADES))
    s.append(FeatureSpec(
        "bb_position", "volatility",
        f"(p_t - MA{BB_WINDOW}) / (2 * std{BB_WINDOW}) over the last {BB_WINDOW} trade prices "
        "(population std); +-1 at the Bollinger(20, 2) bands; NaN if std = 0",
        f"{BB_WINDOW} trades", "band half-widths", BB_WINDOW))
    for k in RETURN_LAGS:
        s.append(FeatureSpec(f"returns_{k}", "returns", f"p_t / p_(t-{k}) - 1", _back(k), "fraction", k + 1))
    for k in LOG_RETURN_LAGS:
        s.append(FeatureSpec(f"log_returns_{k}", "returns", f"ln(p_t / p_(t-{k}))", _back(k), "log return", k + 1))
    for w in OFI_WINDOWS:
        s.append(FeatureSpec(
            f"order_flow_imbalance_{w}", "order_flow",
            f"sum(s_i v_i) / sum(v_i) over the last {w} trades; s = +1 buyer aggressor (type 2), "
            "-1 seller aggressor (type 3), 0 auction/cross/other (kept in the volume); NaN if volume = 0",
            f"{w} trades", "fraction in [-1, 1]", w))
    s.append(FeatureSpec(
        "cumulative_signed_volume", "order_flow",
        "sum(s_i v_i) since the first trade of the current Sao Paulo date (cumulative delta)",
        "session (resets at each new Sao Paulo date)", "contracts", 1))
    s.append(FeatureSpec(
        "signed_volume", "order_flow", f"sum(s_i v_i) over the last {FLOW_WINDOW} trades",
        f"{FLOW_WINDOW} trades", "contracts", FLOW_WINDOW))
    s.append(FeatureSpec(
        "volume_weighted_return", "order_flow",
        f"p_t / VWAP_{FLOW_WINDOW} - 1, VWAP over the last {FLOW_WINDOW} trades; NaN if volume = 0",
        f"{FLOW_WINDOW} trades", "fraction", FLOW_WINDOW))
    s.append(FeatureSpec(
        "agent_turnover", "order_flow",
        f"number of distinct known broker ids (buyers and sellers) in the last {FLOW_WINDOW} trades; "
        "NaN if no broker id is known (e.g. CME data)",
        f"{FLOW_WINDOW} trades", "brokers", FLOW_WINDOW))
    for w in VOLUME_WINDOWS:
        s.append(FeatureSpec(
            f"volume_ratio_{w}", "volume",
            f"mean qty of the last {VOLUME_SHORT} trades / mean qty of the last {w} trades",
            f"{VOLUME_SHORT} and {w} trades", "ratio", w))
    for w in VOLUME_WINDOWS:
        s.append(FeatureSpec(
            f"volume_zscore_{w}", "volume",
            f"(v_t - mean_{w}) / std_{w} of trade qty over the last {w} trades (population std); NaN if std = 0",
            f"{w} trades", "std devs", w))
    s.append(FeatureSpec(
        "trade_intensity", "volume",
        f"trades in (t - {INTENSITY_SHORT_S} s, t] / {INTENSITY_SHORT_S}; event-time clock",
        f"{INTENSITY_SHORT_S} s event time", "trades per second", 1, INTENSITY_SHORT_S))
    s.append(FeatureSpec(
        "trade_intensity_ratio", "volume",
        f"trade rate over {INTENSITY_SHORT_S} s / trade rate over {INTENSITY_LONG_S} s",
        f"{INTENSITY_SHORT_S} s and {INTENSITY_LONG_S} s event time", "ratio", 1, INTENSITY_LONG_S))
    for a, b in MA_PAIRS:
        s.append(FeatureSpec(
            f"ma_{a}_{b}_ratio", "technical", f"MA{a} / MA{b} - 1 of trade prices", f"{a} and {b} trades",
            "fraction", b))
    for a, b in MOMENTUM_PAIRS:
        s.append(FeatureSpec(
            f"momentum_{a}_{b}", "technical",
            f"returns_{a} / returns_{b}: share of the {b}-trade return earned in the last {a} trades; "
            f"NaN if returns_{b} = 0",
            f"{b} trades back", "ratio", b + 1))
    for w in SHARPE_WINDOWS:
        s.append(FeatureSpec(
            f"sharpe_{w}", "technical",
            f"mean / std (population) of the last {w} {dp}; not annualized; NaN if std = 0",
            f"{w} price changes", "ratio", w + 1))
    s.append(FeatureSpec(
        "time_normalized", "technical",
        "(t - 09:00) / (18:00 - 09:00) in Sao Paulo local time of ts_event; NaN outside the session",
        "09:00-18:00 session", "fraction in [0, 1]", 1))
    s.append(FeatureSpec(
        "rsi_14", "technical",
        f"Wilder RSI({RSI_PERIOD}) of trade prices, TA-Lib seeding: averages seeded with the simple "
        f"mean of the first {RSI_PERIOD} changes, then avg = (13 avg + x) / 14; 100 G / (G + L); "
        "NaN if G + L = 0 (TA-Lib prints 0 there)",
        f"{RSI_PERIOD} price changes (recursive)", "0-100", RSI_PERIOD + 1))
    broker_window = (f"ranked over {BROKER_WINDOW} trades every {BROKER_RERANK}; "
                     f"active = last {BROKER_ACTIVE} trades")
    for side, role in (("buyer", "buying"), ("seller", "selling")):
        for k in range(TOP_N):
            s.append(FeatureSpec(
                f"top_{side}_{k}_active", "microstructure",
                f"1 if the rank-{k} {side} (by {role} volume over the last {BROKER_WINDOW} trades at the "
                f"latest re-rank; ties -> lower id) was the {side} in any of the last {BROKER_ACTIVE} trades, "
                f"else 0; NaN if fewer than {k + 1} known {side}s",
                broker_window, "flag", BROKER_WINDOW))
    for side in ("buyer", "seller"):
        s.append(FeatureSpec(
            f"top_{side}s_count", "microstructure",
            f"number of the top-{TOP_N} {side}s that are active (sum of the top_{side}_k_active flags); "
            f"NaN if no known {side}",
            broker_window, f"{side}s (0-{TOP_N})", BROKER_WINDOW))
    for side in ("buyer", "seller"):
        s.append(FeatureSpec(
            f"{side}_changed", "microstructure",
            f"1 if the rank-0 {side} differs from the one of the previous re-rank, else 0; held until "
            "the next re-rank; NaN if either ranking has no known broker",
            broker_window, "flag", BROKER_WINDOW + BROKER_RERANK))
    s.append(FeatureSpec(
        "is_buyer_aggressor", "microstructure",
        "1 if the trade is type 2 (buyer aggressor), 0 if type 3 (seller aggressor), NaN otherwise",
        "current trade", "flag", 1))
    s.append(FeatureSpec("minute", "temporal", "minute of the hour of ts_event, Sao Paulo", "current trade",
                         "minute (0-59)", 1))
    s.append(FeatureSpec("hour", "temporal", "hour of ts_event, Sao Paulo", "current trade", "hour (0-23)", 1))
    s.append(FeatureSpec("day_of_week", "temporal", "weekday of ts_event, Sao Paulo; Monday = 0",
                         "current trade", "day (0-6)", 1))
    s.append(FeatureSpec("is_opening_30min", "temporal", "1 if 09:00 <= local time < 09:30, else 0",
                         "current trade", "flag", 1))
    s.append(FeatureSpec("is_closing_30min", "temporal", "1 if 17:30 <= local time < 18:00, else 0",
                         "current trade", "flag", 1))
    s.append(FeatureSpec("is_lunch_hour", "temporal", "1 if 12:00 <= local time < 13:00, else 0",
                         "current trade", "flag", 1))
    return tuple(s)


FEATURE_SPECS: tuple[FeatureSpec, ...] = _build_specs()
FEATURE_NAMES: tuple[str, ...] = tuple(spec.name for spec in FEATURE_SPECS)
N_FEATURES = len(FEATURE_NAMES)
assert N_FEATURES == 65 and len(set(FEATURE_NAMES)) == 65
_WARM_TRADES = np.array([spec.warmup_trades for spec in FEATURE_SPECS], dtype=np.int64)
_WARM_NS = np.array([spec.warmup_seconds * NS_PER_S for spec in FEATURE_SPECS], dtype=np.int64)


# ---------------------------------------------------------------- time zone
def utc_offset_ns(hour_index: int) -> int:
    """Sao Paulo UTC offset (ns) during the UTC hour ``hour_index`` (= ts // 1 h).

    Brazilian offset changes happened at 00:00 local time, i.e. on whole UTC
    hours, so one offset per UTC hour is exact."""
    dt = datetime.fromtimestamp(hour_index * 3600, tz=timezone.utc).astimezone(SAO_PAULO)
    return int(dt.utcoffset().total_seconds()) * NS_PER_S


def _local_ns(ts: np.ndarray) -> np.ndarray:
    hours = ts // NS_PER_HOUR
    uniq, inverse = np.unique(hours, return_inverse=True)
    offsets = np.array([utc_offset_ns(int(h)) for h in uniq], dtype=np.int64)
    return ts + offsets[inverse]


def _clean_broker(broker: int) -> int:
    return broker if 0 < broker < ID_SPAN else 0


# ---------------------------------------------------------------- live engine
class FeatureEngineCore:
    """Incremental state for the 65 features of one symbol.

    ``on_trade`` costs O(1) amortized: ring buffers of integer prefix sums
    (fixed size), deques bounded by the event-time windows, dictionaries bounded
    by the brokers present in the broker windows, and a top-5 re-rank every
    ``BROKER_RERANK`` trades (O(brokers), amortized). ``vector()`` evaluates the
    65 formulas from that state; nothing is rebuilt per event.
    """

    def __init__(self, price_quantum: float = DEFAULT_PRICE_QUANTUM, symbol: str | None = None):
        if not price_quantum > 0:
            raise ValueError(f"price_quantum must be > 0, got {price_quantum!r}")
        self.price_quantum = float(price_quantum)
        self.symbol = symbol
        self.rejected = 0
        self.book: BookSnapshot | None = None
        self._n = 0
        # per-trade rings, indexed by trade index % RING
        self._px = [0.0] * RING
        self._P = [0] * RING
        # integer prefix sums after n trades, indexed by n % RING (entry 0 = empty sum)
        self._cP = [0] * RING  # price units
        self._cP2 = [0] * RING  # price units squared
        self._cD2 = [0] * RING  # squared price change (first trade contributes 0)
        self._cV = [0] * RING  # qty
        self._cV2 = [0] * RING  # qty squared
        self._cSV = [0] * RING  # signed qty
        self._cVP = [0] * RING  # qty x price units
        # current trade
        self._price = NAN
        self._P_now = 0
        self._qty = 0
        self._type = 0
        self._ts = 0
        self._local = 0
        # RSI (Wilder, TA-Lib seeding)
        self._rsi_gain_sum = 0
        self._rsi_loss_sum = 0
        self._rsi_gain = 0.0
        self._rsi_loss = 0.0
        # Garman-Klass blocks
        self._blk_count = 0
        self._blk_open = self._blk_high = self._blk_low = 0.0
        self._gk_terms: deque[float] = deque(maxlen=GK_BLOCKS)
        self._gk = NAN
        # event-time windows (clock = running max of ts_event)
        self._clock = 0
        self._first_clock = 0
        self._win_short: deque[int] = deque()
        self._win_long: deque[int] = deque()
        # Sao Paulo offset cache (one UTC hour) and the cumulative delta
        self._tz_hour = None
        self._tz_offset = 0
        self._cvd = 0
        self._cvd_day = None
        # brokers: ring of the last BROKER_WINDOW trades
        self._b_ring = [0] * BROKER_WINDOW
        self._s_ring = [0] * BROKER_WINDOW
        self._q_ring = [0] * BROKER_WINDOW
        # volume per broker over BROKER_WINDOW, stored as vol * ID_SPAN + (ID_SPAN - 1 - id) so that
        # plain integer order = (volume desc, id asc) and ranking is a sort of ints, no key function
        self._buy_rank_key: dict[int, int] = {}
        self._sell_rank_key: dict[int, int] = {}
        self._buy_recent: dict[int, int] = {}  # id -> trades as buyer in the last BROKER_ACTIVE
        self._sell_recent: dict[int, int] = {}
        self._agents: dict[int, int] = {}  # id -> trades (either side) in the last FLOW_WINDOW
        self._top_buyers: tuple[int, ...] | None = None  # None until the first re-rank
        self._top_sellers: tuple[int, ...] | None = None
        self._buyer_changed = NAN
        self._seller_changed = NAN

    # ------------------------------------------------------------ input
    @property
    def n_trades(self) -> int:
        return self._n

    def on_trade(self, trade: Trade) -> bool:
        """Fold one trade in. Returns False (and counts it) when the trade is rejected."""
        if self.symbol is None:
            self.symbol = trade.symbol
        elif trade.symbol != self.symbol:
            raise ValueError(f"engine holds {self.symbol}, got a {trade.symbol} trade: one engine per contract")
        return self.update(trade.ts_event, trade.price, trade.qty, trade.trade_type, trade.buyer, trade.seller)

    def on_book(self, snapshot: BookSnapshot) -> None:
        """Keep the latest book snapshot. None of the 65 trade features reads it."""
        self.book = snapshot

    def update(self, ts: int, price: float, qty: int, trade_type: int, buyer: int = 0, seller: int = 0) -> bool:
        """The hot path of :meth:`on_trade`, on plain fields."""
        if not (0.0 < price < math.inf) or qty <= 0:
            self.rejected += 1
            return False
        ts, qty = int(ts), int(qty)  # numpy scalars would overflow the exact integer sums
        i = self._n
        n = i + 1
        slot = i % RING  # this trade's slot; also the slot of the prefix sum after i trades
        nxt = n % RING
        P = round(price / self.price_quantum)
        d = P - self._P[(i - 1) % RING] if i else 0
        a = 1 if trade_type == _BUY else (-1 if trade_type == _SELL else 0)

        self._px[slot] = price
        self._P[slot] = P
        c = self._cP; c[nxt] = c[slot] + P
        c = self._cP2; c[nxt] = c[slot] + P * P
        c = self._cD2; c[nxt] = c[slot] + d * d
        c = self._cV; c[nxt] = c[slot] + qty
        c = self._cV2; c[nxt] = c[slot] + qty * qty
        c = self._cSV; c[nxt] = c[slot] + a * qty
        c = self._cVP; c[nxt] = c[slot] + qty * P
        self._n = n
        self._price = price
        self._P_now = P
        self._qty = qty
        self._type = trade_type
        self._ts = ts

        # RSI: the first RSI_PERIOD changes seed simple means, then the Wilder recursion
        if i:
            gain = d if d > 0 else 0
            loss = -d if d < 0 else 0
            if i <= RSI_PERIOD:
                self._rsi_gain_sum += gain
                self._rsi_loss_sum += loss
                if i == RSI_PERIOD:
                    self._rsi_gain = self._rsi_gain_sum / RSI_PERIOD
                    self._rsi_loss = self._rsi_loss_sum / RSI_PERIOD
            else:
                self._rsi_gain = RSI_KEEP * self._rsi_gain + RSI_NEW * gain
                self._rsi_loss = RSI_KEEP * self._rsi_loss + RSI_NEW * loss

        # Garman-Klass block of GK_BLOCK_TRADES trades
        k = self._blk_count
        if k == 0:
            self._blk_open = self._blk_high = self._blk_low = price
        elif price > self._blk_high:
            self._blk_high = price
        elif price < self._blk_low:
            self._blk_low = price
        k += 1
        if k == GK_BLOCK_TRADES:
            hl = math.log(self._blk_high / self._blk_low)
            co = math.log(price / self._blk_open)
            self._gk_terms.append(0.5 * hl * hl - GK_K * co * co)
            if len(self._gk_terms) == GK_BLOCKS:
                # plain left-to-right sum, the batch path's order (not sum(): Python 3.12 compensates)
                total = 0.0
                for term in self._gk_terms:
                    total += term
                self._gk = math.sqrt(total / GK_BLOCKS) if total >= 0.0 else NAN  # never clamp (A.10)
            k = 0
        self._blk_count = k

        # event-time windows
        if i == 0:
            self._first_clock = self._clock = ts
        elif ts > self._clock:
            self._clock = ts
        clock = self._clock
        win = self._win_short
        win.append(clock)
        limit = clock - INTENSITY_SHORT_S * NS_PER_S
        while win[0] <= limit:
            win.popleft()
        win = self._win_long
        win.append(clock)
        limit = clock - INTENSITY_LONG_S * NS_PER_S
        while win[0] <= limit:
            win.popleft()

        # local time and the session's cumulative delta
        hour = ts // NS_PER_HOUR
        if hour != self._tz_hour:
            self._tz_hour = hour
            self._tz_offset = utc_offset_ns(hour)
        local = ts + self._tz_offset
        self._local = local
        day = local // NS_PER_DAY
        if day != self._cvd_day:
            self._cvd_day = day
            self._cvd = 0
        self._cvd += a * qty

        self._update_brokers(i, n, _clean_broker(buyer), _clean_broker(seller), qty)
        return True

    def _update_brokers(self, i: int, n: int, buyer: int, seller: int, qty: int) -> None:
        bslot = i % BROKER_WINDOW
        b_ring, s_ring, q_ring = self._b_ring, self._s_ring, self._q_ring
        buy_key, sell_key = self._buy_rank_key, self._sell_rank_key
        if n > BROKER_WINDOW:  # trade i - BROKER_WINDOW leaves the volume window (its slot is reused)
            ob, os_, oq = b_ring[bslot], s_ring[bslot], q_ring[bslot]
            drop = oq * ID_SPAN
            if ob:
                key = buy_key[ob] - drop
                if key < ID_SPAN:
                    del buy_key[ob]
                else:
                    buy_key[ob] = key
            if os_:
                key = sell_key[os_] - drop
                if key < ID_SPAN:
                    del sell_key[os_]
                else:
                    sell_key[os_] = key
        if n > BROKER_ACTIVE:  # trade i - BROKER_ACTIVE leaves the activity window
            old = (i - BROKER_ACTIVE) % BROKER_WINDOW
            _dec(self._buy_recent, b_ring[old])
            _dec(self._sell_recent, s_ring[old])
        if n > FLOW_WINDOW:  # trade i - FLOW_WINDOW leaves the turnover window
            old = (i - FLOW_WINDOW) % BROKER_WINDOW
            ob, os_ = b_ring[old], s_ring[old]
            _dec(self._agents, ob)
            if os_ != ob:
                _dec(self._agents, os_)
        b_ring[bslot], s_ring[bslot], q_ring[bslot] = buyer, seller, qty
        add = qty * ID_SPAN
        if buyer:
            buy_key[buyer] = buy_key.get(buyer, ID_SPAN - 1 - buyer) + add
            self._buy_recent[buyer] = self._buy_recent.get(buyer, 0) + 1
            self._agents[buyer] = self._agents.get(buyer, 0) + 1
        if seller:
            sell_key[seller] = sell_key.get(seller, ID_SPAN - 1 - seller) + add
            self._sell_recent[seller] = self._sell_recent.get(seller, 0) + 1
            if seller != buyer:
                self._agents[seller] = self._agents.get(seller, 0) + 1
        if n % BROKER_RERANK == 0 and n >= BROKER_WINDOW:
            top = _rank(buy_key)
            self._buyer_changed = _changed(self._top_buyers, top)
            self._top_buyers = top
            top = _rank(sell_key)
            self._seller_changed = _changed(self._top_sellers, top)
            self._top_sellers = top

    # ------------------------------------------------------------ output
    def vector(self) -> np.ndarray:
        """The 65 features as of the last trade, float64, in ``FEATURE_NAMES`` order."""
        return np.array(self._values_list(), dtype=np.float64)

    def values(self) -> dict[str, float]:
        return dict(zip(FEATURE_NAMES, self._values_list()))

    def warm(self) -> np.ndarray:
        """Per feature (``FEATURE_NAMES`` order): True once its warm-up is complete.

        A warm feature can still be NaN for a data reason (zero variance, no
        broker ids, outside the session); a cold one is always NaN."""
        elapsed = self._clock - self._first_clock if self._n else -1
        return (self._n >= _WARM_TRADES) & (elapsed >= _WARM_NS)

    def state_sizes(self) -> dict[str, int]:
        """Lengths of every growable container (the memory-bound test reads these)."""
        return {
            "win_short": len(self._win_short),
            "win_long": len(self._win_long),
            "gk_terms": len(self._gk_terms),
            "buy_rank_key": len(self._buy_rank_key),
            "sell_rank_key": len(self._sell_rank_key),
            "buy_recent": len(self._buy_recent),
            "sell_recent": len(self._sell_recent),
            "agents": len(self._agents),
            "rings": len(self._px) + len(self._P) + len(self._cP) + len(self._b_ring),
        }

    def _values_list(self) -> list[float]:
        n = self._n
        if n == 0:
            return [NAN] * N_FEATURES
        i = n - 1
        q = self.price_quantum
        p = self._price
        P = self._P_now
        px, Pr = self._px, self._P
        nxt = n % RING
        out: list[float] = []
        app = out.append

        def wsum(prefix: list, w: int) -> int:
            return prefix[nxt] - prefix[(n - w) % RING]

        # volatility: std of price changes (exact integer sums) / price
        cD2 = self._cD2
        vol = {}
        for w in (10, 20, 50, 100, 200):
            if n > w:
                s1 = P - Pr[(i - w) % RING]
                num = w * (cD2[nxt] - cD2[(n - w) % RING]) - s1 * s1
                vol[w] = math.sqrt(num) / w * q / p
            else:
                vol[w] = NAN
        for w in VOL_WINDOWS:
            app(vol[w])
        for a, b in VOL_RATIO_PAIRS:
            app(vol[a] / vol[b] if vol[b] > 0.0 else NAN)  # NaN > 0 is False
        app(self._gk)
        if n >= BB_WINDOW:
            s1 = wsum(self._cP, BB_WINDOW)
            num = BB_WINDOW * wsum(self._cP2, BB_WINDOW) - s1 * s1
            app((BB_WINDOW * P - s1) / (2.0 * math.sqrt(num)) if num else NAN)
        else:
            app(NAN)

        # returns
        for k in RETURN_LAGS:
            app(p / px[(i - k) % RING] - 1.0 if n > k else NAN)
        for k in LOG_RETURN_LAGS:
            app(math.log(p / px[(i - k) % RING]) if n > k else NAN)

        # order flow
        cV, cSV = self._cV, self._cSV
        for w in OFI_WINDOWS:
            if n >= w:
                v = wsum(cV, w)
                app(wsum(cSV, w) / v if v else NAN)
            else:
                app(NAN)
        app(float(self._cvd))
        if n >= FLOW_WINDOW:
            app(float(wsum(cSV, FLOW_WINDOW)))
            v = wsum(cV, FLOW_WINDOW)
            vp = wsum(self._cVP, FLOW_WINDOW)
            app((P * v - vp) / vp if vp else NAN)
            app(float(len(self._agents)) if self._agents else NAN)
        else:
            app(NAN); app(NAN); app(NAN)

        # volume
        cV2 = self._cV2
        for w in VOLUME_WINDOWS:
            if n >= w:
                v = wsum(cV, w)
                app(w * wsum(cV, VOLUME_SHORT) / (VOLUME_SHORT * v) if v else NAN)
            else:
                app(NAN)
        for w in VOLUME_WINDOWS:
            if n >= w:
                s1 = wsum(cV, w)
                num = w * wsum(cV2, w) - s1 * s1
                app((w * self._qty - s1) / math.sqrt(num) if num else NAN)
            else:
                app(NAN)
        elapsed = self._clock - self._first_clock
        short_rate = len(self._win_short) / INTENSITY_SHORT_S
        app(short_rate if elapsed >= INTENSITY_SHORT_S * NS_PER_S else NAN)
        app(short_rate / (len(self._win_long) / INTENSITY_LONG_S) if elapsed >= INTENSITY_LONG_S * NS_PER_S else NAN)

        # technical
        cP = self._cP
        for a, b in MA_PAIRS:
            if n >= b:
                sa, sb = wsum(cP, a), wsum(cP, b)
                app((b * sa - a * sb) / (a * sb))  # MA_a / MA_b - 1, exact in integers
            else:
                app(NAN)
        for a, b in MOMENTUM_PAIRS:
            if n > b:
                pa, pb = Pr[(i - a) % RING], Pr[(i - b) % RING]
                db = P - pb
                app((P - pa) * pb / (db * pa) if db else NAN)
            else:
                app(NAN)
        for w in SHARPE_WINDOWS:
            if n > w:
                s1 = P - Pr[(i - w) % RING]
                num = w * (cD2[nxt] - cD2[(n - w) % RING]) - s1 * s1
                app(s1 / math.sqrt(num) if num else NAN)
            else:
                app(NAN)
        local = self._local
        tod_ns = local - (local // NS_PER_DAY) * NS_PER_DAY
        tod_s = tod_ns // NS_PER_S
        if SESSION_OPEN_S * NS_PER_S <= tod_ns <= SESSION_CLOSE_S * NS_PER_S:
            app((tod_ns - SESSION_OPEN_S * NS_PER_S) / ((SESSION_CLOSE_S - SESSION_OPEN_S) * NS_PER_S))
        else:
            app(NAN)
        if n > RSI_PERIOD:
            g, l_ = self._rsi_gain, self._rsi_loss
            tot = g + l_
            app(100.0 * (g / tot) if tot > 0.0 else NAN)
        else:
            app(NAN)

        # microstructure
        for top, recent in ((self._top_buyers, self._buy_recent), (self._top_sellers, self._sell_recent)):
            for k in range(TOP_N):
                if top is not None and k < len(top):
                    app(1.0 if top[k] in recent else 0.0)
                else:
                    app(NAN)
        for top, recent in ((self._top_buyers, self._buy_recent), (self._top_sellers, self._sell_recent)):
            app(float(sum(1 for b in top if b in recent)) if top else NAN)
        app(self._buyer_changed)
        app(self._seller_changed)
        t = self._type
        app(1.0 if t == _BUY else (0.0 if t == _SELL else NAN))

        # temporal (Sao Paulo)
        app(float(tod_s // 60 % 60))
        app(float(tod_s // 3600))
        app(float((local // NS_PER_DAY + 3) % 7))  # 1970-01-01 was a Thursday; Monday = 0
        app(1.0 if SESSION_OPEN_S <= tod_s < OPENING_END_S else 0.0)
        app(1.0 if CLOSING_START_S <= tod_s < SESSION_CLOSE_S else 0.0)
        app(1.0 if LUNCH_START_S <= tod_s < LUNCH_END_S else 0.0)
        return out


def _dec(counts: dict[int, int], key: int) -> None:
    if key:
        c = counts[key] - 1
        if c:
            counts[key] = c
        else:
            del counts[key]


def _rank(rank_key: dict[int, int]) -> tuple[int, ...]:
    """Top-N broker ids by (volume desc, id asc) from the packed keys."""
    return tuple(ID_SPAN - 1 - key % ID_SPAN for key in sorted(rank_key.values(), reverse=True)[:TOP_N])


def _changed(prev: tuple[int, ...] | None, top: tuple[int, ...]) -> float:
    if not prev or not top:
        return NAN
    return 1.0 if prev[0] != top[0] else 0.0


# ---------------------------------------------------------------- batch path
_TRADE_COLUMNS = ("ts_event", "price", "qty", "trade_type", "buyer", "seller")


def _trade_arrays(trades: Any) -> dict[str, np.ndarray]:
    """Columns of a DataFrame (Trade field names; buyer/seller optional) or an iterable of Trade."""
    if isinstance(trades, pd.DataFrame):
        df = trades
    else:
        rows = list(trades)
        df = pd.DataFrame(rows, columns=list(Trade._fields)) if rows else pd.DataFrame(columns=list(Trade._fields))
    missing = [c for c in _TRADE_COLUMNS[:4] if c not in df.columns]
    if missing:
        raise ValueError(f"trades need columns {_TRADE_COLUMNS[:4]}, missing {missing}")
    n = len(df)
    cols = {
        "ts_event": df["ts_event"].to_numpy(dtype=np.int64),
        "price": df["price"].to_numpy(dtype=np.float64),
        "qty": df["qty"].to_numpy(dtype=np.int64),
        "trade_type": df["trade_type"].to_numpy(dtype=np.int64),
    }
    for side in ("buyer", "seller"):
        ids = df[side].to_numpy(dtype=np.int64) if side in df.columns else np.zeros(n, dtype=np.int64)
        cols[side] = np.where((ids > 0) & (ids < ID_SPAN), ids, 0)
    ok = np.isfinite(cols["price"]) & (cols["price"] > 0) & (cols["qty"] > 0)
    if not ok.all():
        cols = {k: v[ok] for k, v in cols.items()}
    return cols


def _prefix(x: np.ndarray) -> np.ndarray:
    """int64 prefix sums with a leading 0: prefix[n] = sum of the first n values.
    Overflow wraps modulo 2**64, which leaves every window difference exact."""
    out = np.zeros(len(x) + 1, dtype=np.int64)
    np.cumsum(x, out=out[1:])
    return out


def _wsum(prefix: np.ndarray, w: int) -> np.ndarray:
    """Sum over the last w values ending at each row (rows < w-1 hold garbage; mask them)."""
    n = len(prefix) - 1
    out = np.zeros(n, dtype=np.int64)
    if n >= w:
        out[w - 1:] = prefix[w:] - prefix[: n + 1 - w]
    return out


def _lag(x: np.ndarray, k: int) -> np.ndarray:
    """x shifted k rows down (rows < k hold x[0]; mask them)."""
    out = np.empty_like(x)
    if len(x):
        out[k:] = x[:-k] if k < len(x) else x[:0]
        out[:min(k, len(x))] = x[0]
    return out


def compute_batch(trades: Any, price_quantum: float = DEFAULT_PRICE_QUANTUM) -> pd.DataFrame:
    """Every feature for every trade of one symbol, vectorized.

    ``trades``: a DataFrame with the Trade columns (``ts_event``, ``price``,
    ``qty``, ``trade_type``; ``buyer``/``seller`` optional) or an iterable of
    :class:`Trade`, in tape order. Returns one row per valid trade: ``ts_event``,
    ``price``, ``qty``, ``aggressor`` (+1 buyer, -1 seller, 0 none) and the 65
    feature columns. Same definitions and warm-ups as :class:`FeatureEngineCore`.
    """
    cols = _trade_arrays(trades)
    ts, px, qty, ttype = cols["ts_event"], cols["price"], cols["qty"], cols["trade_type"]
    n = len(px)
    q = float(price_quantum)
    idx = np.arange(n)
    count = idx + 1  # trades seen after each row
    feats: dict[str, np.ndarray] = {}

    def full() -> np.ndarray:
        return np.full(n, np.nan)

    P = np.rint(px / q).astype(np.int64)
    X = P - P[0] if n else P  # shifted prices keep squared sums small; variances are shift-invariant
    d = np.zeros(n, dtype=np.int64)
    d[1:] = P[1:] - P[:-1]
    a = np.where(ttype == _BUY, 1, np.where(ttype == _SELL, -1, 0)).astype(np.int64)
    sv = a * qty
    cX, cX2, cD2 = _prefix(X), _prefix(X * X), _prefix(d * d)
    cV, cV2, cSV, cVP = _prefix(qty), _prefix(qty * qty), _prefix(sv), _prefix(qty * P)

    # volatility
    vol = {}
    for w in (10, 20, 50, 100, 200):
        v = full()
        ok = count > w
        s1 = P - _lag(P, w)
        num = w * _wsum(cD2, w) - s1 * s1
        v[ok] = np.sqrt(num[ok].astype(np.float64)) / w * q / px[ok]
        vol[w] = v
    for w in VOL_WINDOWS:
        feats[f"volatility_{w}"] = vol[w]
    for a_, b_ in VOL_RATIO_PAIRS:
        r = full()
        ok = vol[b_] > 0.0
        r[ok] = vol[a_][ok] / vol[b_][ok]
        feats[f"volatility_ratio_{a_}_{b_}"] = r
    feats["volatility_gk"] = _batch_gk(px)
    r = full()
    s1 = _wsum(cX, BB_WINDOW)
    num = BB_WINDOW * _wsum(cX2, BB_WINDOW) - s1 * s1
    ok = (count >= BB_WINDOW) & (num != 0)
    r[ok] = (BB_WINDOW * X[ok] - s1[ok]).astype(np.float64) / (2.0 * np.sqrt(num[ok].astype(np.float64)))
    feats["bb_position"] = r

    # returns
    for k in RETURN_LAGS:
        r = full()
        if n > k:
            r[k:] = px[k:] / px[:-k] - 1.0
        feats[f"returns_{k}"] = r
    for k in LOG_RETURN_LAGS:
        r = full()
        if n > k:
            r[k:] = np.log(px[k:] / px[:-k])
        feats[f"log_returns_{k}"] = r

    # order flow
    for w in OFI_WINDOWS:
        r = full()
        v = _wsum(cV, w)
        ok = (count >= w) & (v != 0)
        r[ok] = _wsum(cSV, w)[ok] / v[ok]
        feats[f"order_flow_imbalance_{w}"] = r
    local = _local_ns(ts)
    day = local // NS_PER_DAY
    feats["cumulative_signed_volume"] = _session_cumsum(sv, day).astype(np.float64)
    okf = count >= FLOW_WINDOW
    r = full()
    r[okf] = _wsum(cSV, FLOW_WINDOW)[okf]
    feats["signed_volume"] = r
    r = full()
    v, vp = _wsum(cV, FLOW_WINDOW), _wsum(cVP, FLOW_WINDOW)
    ok = okf & (vp != 0)
    r[ok] = (P[ok] * v[ok] - vp[ok]) / vp[ok]
    feats["volume_weighted_return"] = r
    r = _batch_distinct_agents(cols["buyer"], cols["seller"], FLOW_WINDOW).astype(np.float64)
    r[~okf | (r == 0)] = np.nan
    feats["agent_turnover"] = r

    # volume
    s10 = _wsum(cV, VOLUME_SHORT)
    for w in VOLUME_WINDOWS:
        r = full()
        v = _wsum(cV, w)
        ok = (count >= w) & (v != 0)
        r[ok] = (w * s10[ok]) / (VOLUME_SHORT * v[ok])
        feats[f"volume_ratio_{w}"] = r
    for w in VOLUME_WINDOWS:
        r = full()
        s1 = _wsum(cV, w)
        num = w * _wsum(cV2, w) - s1 * s1
        ok = (count >= w) & (num != 0)
        r[ok] = (w * qty[ok] - s1[ok]) / np.sqrt(num[ok].astype(np.float64))
        feats[f"volume_zscore_{w}"] = r
    clock = np.maximum.accumulate(ts) if n else ts
    elapsed = clock - clock[0] if n else clock
    c_short = idx - np.searchsorted(clock, clock - INTENSITY_SHORT_S * NS_PER_S, side="right") + 1
    c_long = idx - np.searchsorted(clock, clock - INTENSITY_LONG_S * NS_PER_S, side="right") + 1
    short_rate = c_short / INTENSITY_SHORT_S
    r = full()
    ok = elapsed >= INTENSITY_SHORT_S * NS_PER_S
    r[ok] = short_rate[ok]
    feats["trade_intensity"] = r
    r = full()
    ok = elapsed >= INTENSITY_LONG_S * NS_PER_S
    r[ok] = short_rate[ok] / (c_long[ok] / INTENSITY_LONG_S)
    feats["trade_intensity_ratio"] = r

    # technical
    for a_, b_ in MA_PAIRS:
        r = full()
        ok = count >= b_
        # shifted sums: sum(P) = sum(X) + w * P0, exact in integers
        sa = _wsum(cX, a_) + a_ * (P[0] if n else 0)
        sb = _wsum(cX, b_) + b_ * (P[0] if n else 0)
        r[ok] = (b_ * sa[ok] - a_ * sb[ok]) / (a_ * sb[ok])
        feats[f"ma_{a_}_{b_}_ratio"] = r
    for a_, b_ in MOMENTUM_PAIRS:
        r = full()
        pa, pb = _lag(P, a_), _lag(P, b_)
        db = P - pb
        ok = (count > b_) & (db != 0)
        r[ok] = ((P - pa) * pb)[ok] / (db * pa)[ok]
        feats[f"momentum_{a_}_{b_}"] = r
    for w in SHARPE_WINDOWS:
        r = full()
        s1 = P - _lag(P, w)
        num = w * _wsum(cD2, w) - s1 * s1
        ok = (count > w) & (num != 0)
        r[ok] = s1[ok] / np.sqrt(num[ok].astype(np.float64))
        feats[f"sharpe_{w}"] = r
    tod_ns = local - day * NS_PER_DAY
    r = full()
    ok = (tod_ns >= SESSION_OPEN_S * NS_PER_S) & (tod_ns <= SESSION_CLOSE_S * NS_PER_S)
    r[ok] = (tod_ns[ok] - SESSION_OPEN_S * NS_PER_S) / ((SESSION_CLOSE_S - SESSION_OPEN_S) * NS_PER_S)
    feats["time_normalized"] = r
    feats["rsi_14"] = _batch_rsi(d)

    # microstructure
    buy_flags, buy_count, buy_changed = _batch_top_brokers(cols["buyer"], qty)
    sell_flags, sell_count, sell_changed = _batch_top_brokers(cols["seller"], qty)
    for k in range(TOP_N):
        feats[f"top_buyer_{k}_active"] = buy_flags[:, k]
    for k in range(TOP_N):
        feats[f"top_seller_{k}_active"] = sell_flags[:, k]
    feats["top_buyers_count"] = buy_count
    feats["top_sellers_count"] = sell_count
    feats["buyer_changed"] = buy_changed
    feats["seller_changed"] = sell_changed
    r = full()
    r[ttype == _BUY] = 1.0
    r[ttype == _SELL] = 0.0
    feats["is_buyer_aggressor"] = r

    # temporal
    tod_s = tod_ns // NS_PER_S
    feats["minute"] = (tod_s // 60 % 60).astype(np.float64)
    feats["hour"] = (tod_s // 3600).astype(np.float64)
    feats["day_of_week"] = ((day + 3) % 7).astype(np.float64)
    feats["is_opening_30min"] = ((tod_s >= SESSION_OPEN_S) & (tod_s < OPENING_END_S)).astype(np.float64)
    feats["is_closing_30min"] = ((tod_s >= CLOSING_START_S) & (tod_s < SESSION_CLOSE_S)).astype(np.float64)
    feats["is_lunch_hour"] = ((tod_s >= LUNCH_START_S) & (tod_s < LUNCH_END_S)).astype(np.float64)

    data = {"ts_event": ts, "price": px, "qty": qty, "aggressor": a}
    data.update((name, feats[name]) for name in FEATURE_NAMES)
    return pd.DataFrame(data, copy=False)


def _session_cumsum(sv: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``sv`` restarting whenever ``day`` changes from the previous row."""
    n = len(sv)
    if n == 0:
        return sv.copy()
    new = np.ones(n, dtype=bool)
    new[1:] = day[1:] != day[:-1]
    cs = np.cumsum(sv)
    starts = np.flatnonzero(new)
    base = np.where(starts > 0, cs[starts - 1], 0)
    return cs - base[np.cumsum(new) - 1]


def garman_klass_terms(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Per-bar Garman-Klass variance 0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2 (textbook, A.10)."""
    hl = np.log(high / low)
    co = np.log(close / open_)
    return 0.5 * hl * hl - GK_K * co * co


def garman_klass_sigma(window_sum: np.ndarray, n_bars: int) -> np.ndarray:
    """sqrt(window_sum / n_bars); NaN where the sum is negative (bad OHLC data), never clamped to 0.

    Bars built from trades always have O and C inside [L, H], where each term is
    >= 0.11 ln(H/L)^2, so a negative sum can only come from corrupt bars."""
    window_sum = np.asarray(window_sum, dtype=np.float64)
    out = np.full(window_sum.shape, np.nan)
    ok = window_sum >= 0.0
    out[ok] = np.sqrt(window_sum[ok] / n_bars)
    return out


def _batch_gk(px: np.ndarray) -> np.ndarray:
    n = len(px)
    out = np.full(n, np.nan)
    nb = n // GK_BLOCK_TRADES
    if nb < GK_BLOCKS:
        return out
    blocks = px[: nb * GK_BLOCK_TRADES].reshape(nb, GK_BLOCK_TRADES)
    term = garman_klass_terms(blocks[:, 0], blocks.max(axis=1), blocks.min(axis=1), blocks[:, -1])
    # window ending at block j, summed left to right like the live engine (a vectorized add per position)
    view = np.lib.stride_tricks.sliding_window_view(term, GK_BLOCKS)
    total = np.zeros(len(view))
    for k in range(GK_BLOCKS):
        total += view[:, k]
    gk = np.full(nb, np.nan)
    gk[GK_BLOCKS - 1:] = garman_klass_sigma(total, GK_BLOCKS)
    done = (np.arange(n) + 1) // GK_BLOCK_TRADES  # completed blocks after each trade
    has = done >= GK_BLOCKS
    out[has] = gk[done[has] - 1]
    return out


def _batch_rsi(d: np.ndarray) -> np.ndarray:
    n = len(d)
    out = np.full(n, np.nan)
    if n <= RSI_PERIOD:
        return out
    gain = np.where(d > 0, d, 0)
    loss = np.where(d < 0, -d, 0)
    g0 = gain[1: RSI_PERIOD + 1].sum() / RSI_PERIOD
    l0 = loss[1: RSI_PERIOD + 1].sum() / RSI_PERIOD

    # The Wilder recursion is sequential; itertools.accumulate runs it at C speed with the very
    # operations of the live engine, so the two paths agree bit for bit.
    def wilder(avg: float, x: float) -> float:
        return RSI_KEEP * avg + RSI_NEW * x

    g = np.fromiter(accumulate(gain[RSI_PERIOD + 1:].tolist(), wilder, initial=float(g0)), np.float64, n - RSI_PERIOD)
    l_ = np.fromiter(accumulate(loss[RSI_PERIOD + 1:].tolist(), wilder, initial=float(l0)), np.float64, n - RSI_PERIOD)
    tot = g + l_
    r = np.full(len(g), np.nan)
    ok = tot > 0.0
    r[ok] = 100.0 * (g[ok] / tot[ok])
    out[RSI_PERIOD:] = r
    return out


def _batch_distinct_agents(buyer: np.ndarray, seller: np.ndarray, w: int) -> np.ndarray:
    """Distinct known ids among buyers and sellers of the last w trades, per row.

    A (trade j, id) pair counts for rows j .. min(next trade with that id, j + w) - 1,
    so a difference array plus a cumulative sum gives every window at once."""
    n = len(buyer)
    diff = np.zeros(n + 1, dtype=np.int64)
    rows = np.concatenate([np.arange(n), np.arange(n)])
    ids = np.concatenate([buyer, np.where(seller != buyer, seller, 0)])
    keep = ids != 0
    rows, ids = rows[keep], ids[keep]
    if len(ids):
        order = np.lexsort((rows, ids))
        rows, ids = rows[order], ids[order]
        nxt = np.full(len(rows), n, dtype=np.int64)
        same = ids[1:] == ids[:-1]
        nxt[:-1][same] = rows[1:][same]
        end = np.minimum(nxt, rows + w)
        np.add.at(diff, rows, 1)
        np.add.at(diff, end, -1)
    return np.cumsum(diff[:n])


def _batch_top_brokers(ids: np.ndarray, qty: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-N brokers of one side on the re-rank grid and their activity flags, per row."""
    n = len(ids)
    flags = np.full((n, TOP_N), np.nan)
    count = np.full(n, np.nan)
    changed = np.full(n, np.nan)
    n_grid = n // BROKER_RERANK  # re-ranks happen after trade counts R, 2R, ..., valid from BROKER_WINDOW
    first = BROKER_WINDOW // BROKER_RERANK
    known = ids != 0
    if n_grid < first or not known.any():
        return flags, count, changed
    uniq = np.unique(ids[known])  # ascending ids -> code order = tie-break order
    B = len(uniq)
    code = np.searchsorted(uniq, ids)
    per_window = BROKER_WINDOW // BROKER_RERANK  # blocks of BROKER_RERANK trades in one window
    n_rows = n_grid - first + 1  # grid m = first .. n_grid
    top_ids = np.zeros((n_rows, TOP_N), dtype=np.int64)  # 0 = no broker at that rank
    chunk = max(1, 4_000_000 // B - per_window)
    for m0 in range(first, n_grid + 1, chunk):
        m1 = min(n_grid, m0 + chunk - 1)  # inclusive
        b0 = m0 - per_window  # first block needed
        t0, t1 = b0 * BROKER_RERANK, m1 * BROKER_RERANK
        sel = np.flatnonzero(known[t0:t1]) + t0
        nb = m1 - b0
        vol = np.bincount((sel // BROKER_RERANK - b0) * B + code[sel], weights=qty[sel], minlength=nb * B)
        cum = np.zeros((nb + 1, B), dtype=np.int64)
        np.cumsum(vol.astype(np.int64).reshape(nb, B), axis=0, out=cum[1:])
        win = cum[per_window:] - cum[:-per_window]  # rows: grid m0..m1
        key = win * B + (B - 1 - np.arange(B))  # volume desc, then id asc
        k = min(TOP_N, B)
        if B > k:
            part = np.argpartition(-key, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(B), (len(key), B)).copy()
        part_key = np.take_along_axis(key, part, axis=1)
        order = np.argsort(-part_key, axis=1)
        best = np.take_along_axis(part, order, axis=1)
        best_vol = np.take_along_axis(win, best, axis=1)
        top_ids[m0 - first: m1 - first + 1, :k] = np.where(best_vol > 0, uniq[best], 0)
    # rows -> their latest re-rank
    m_of_row = (np.arange(n) + 1) // BROKER_RERANK
    has = m_of_row >= first
    grid_row = m_of_row[has] - first
    rows = np.flatnonzero(has)
    row_ids = top_ids[grid_row]  # (rows, TOP_N)
    # activity: did the id trade on this side in (t - BROKER_ACTIVE, t]?  The ids are fixed between
    # re-ranks, so per re-rank m look once at the BROKER_ACTIVE + BROKER_RERANK - 1 trades that its
    # rows can see, and count matches per row from a cumulative sum (0 pads never match).
    K, R = BROKER_ACTIVE, BROKER_RERANK
    span_len = K + R - 1
    padded = np.concatenate([np.zeros(K - 1, dtype=np.int64), ids, np.zeros(R, dtype=np.int64)])
    starts = np.arange(first, n_grid + 1) * R - 1  # first row served by each re-rank (padded start = row)
    views = np.lib.stride_tricks.sliding_window_view(padded, span_len)[starts]  # (re-ranks, span_len)
    active_grid = np.empty((n_rows, R, TOP_N), dtype=bool)
    for k in range(TOP_N):
        cs = np.zeros((n_rows, span_len + 1), dtype=np.int32)
        np.cumsum(views == top_ids[:, k: k + 1], axis=1, out=cs[:, 1:])
        active_grid[:, :, k] = (cs[:, K: K + R] - cs[:, :R]) > 0
    active = active_grid.reshape(n_rows * R, TOP_N)[: len(rows)]
    present = row_ids != 0
    f = np.where(present, active.astype(np.float64), np.nan)
    flags[rows] = f
    cnt = np.where(present, active, False).sum(axis=1).astype(np.float64)
    cnt[~present[:, 0]] = np.nan
    count[rows] = cnt
    top0 = top_ids[:, 0]
    ch = np.full(n_rows, np.nan)
    if n_rows > 1:
        both = (top0[1:] != 0) & (top0[:-1] != 0)
        ch[1:][both] = (top0[1:][both] != top0[:-1][both]).astype(np.float64)
    changed[rows] = ch[grid_row]
    return flags, count, changed


# ---------------------------------------------------------------- helpers
def compute_streaming(trades: Any, price_quantum: float = DEFAULT_PRICE_QUANTUM) -> pd.DataFrame:
    """The live engine run over a tape: same table as :func:`compute_batch` (slow; the reference)."""
    cols = _trade_arrays(trades)
    eng = FeatureEngineCore(price_quantum)
    n = len(cols["price"])
    out = np.empty((n, N_FEATURES))
    update = eng.update
    ts, px, qty, tt = (cols[k].tolist() for k in ("ts_event", "price", "qty", "trade_type"))
    buyer, seller = cols["buyer"].tolist(), cols["seller"].tolist()
    for j in range(n):
        update(ts[j], px[j], qty[j], tt[j], buyer[j], seller[j])
        out[j] = eng._values_list()
    a = np.where(cols["trade_type"] == _BUY, 1, np.where(cols["trade_type"] == _SELL, -1, 0))
    df = pd.DataFrame({"ts_event": cols["ts_event"], "price": cols["price"], "qty": cols["qty"], "aggressor": a})
    return pd.concat([df, pd.DataFrame(out, columns=list(FEATURE_NAMES))], axis=1)


def make_synthetic_trades(n: int, seed: int = 7, start: str = "2026-03-02T09:00:00-03:00",
                          mean_gap_ms: float = 20.0, symbol: str = "WDOJ26") -> pd.DataFrame:
    """A seeded WDO-like tape for tests and benchmarks (not a market model).

    Prices on a 0.5 grid near 5400 (random walk, mostly unchanged), sizes 1-300
    heavy-tailed, types 2/3 with ~1% auction (4) and ~0.5% cross (1) prints,
    ~60 broker ids with skewed popularity and ~2% unknown (0), exponential gaps
    rounded to the millisecond (so some trades share a timestamp). Trading
    stops at 18:00 Sao Paulo and resumes at 09:00 on the next weekday.
    """
    rng = np.random.default_rng(seed)
    steps = rng.choice([-2, -1, 0, 1, 2], size=n, p=[0.01, 0.14, 0.70, 0.14, 0.01])
    steps[0] = 0
    price = 5400.0 + 0.5 * np.cumsum(steps)
    qty = np.minimum(300, np.floor(rng.pareto(1.3, size=n) * 3.0).astype(np.int64) + 1)
    ttype = rng.choice([2, 3, 4, 1], size=n, p=[0.495, 0.49, 0.01, 0.005])
    popularity = 1.0 / np.arange(1, 61) ** 1.1
    popularity /= popularity.sum()
    buyer = rng.choice(np.arange(1, 61), size=n, p=popularity) * 3 + 1  # sparse ids like B3 codes
    seller = rng.choice(np.arange(1, 61), size=n, p=popularity) * 3 + 1
    buyer[rng.random(n) < 0.02] = 0
    seller[rng.random(n) < 0.02] = 0
    gaps = np.rint(rng.exponential(mean_gap_ms, size=n)).astype(np.int64) * 1_000_000
    gaps[0] = 0
    # session time (ns since the first trade), laid onto 09:00-18:00 of consecutive weekdays
    session_ns = (SESSION_CLOSE_S - SESSION_OPEN_S) * NS_PER_S
    first = parse_time(start)
    offset0 = to_ns(first) - session_bounds_ns(first.astimezone(SAO_PAULO).date())[0]
    day_k, within = np.divmod(np.cumsum(gaps) + offset0, session_ns)
    opens = []
    day = first.astimezone(SAO_PAULO).date()
    for _ in range(int(day_k[-1]) + 1 if n else 0):
        opens.append(session_bounds_ns(day)[0])
        day = next_session_day(day)
    ts = np.asarray(opens, dtype=np.int64)[day_k] + within if n else np.zeros(0, dtype=np.int64)
    return pd.DataFrame({
        "symbol": symbol, "ts_event": ts, "ts_recv": ts, "seq": np.arange(1, n + 1), "price": price,
        "qty": qty, "trade_type": ttype, "buyer": buyer, "seller": seller, "trade_id": np.arange(1, n + 1),
    })


def bench_features(n_events: int = 100_000, n_batch: int = 1_000_000, n_naive: int = 300,
                   seed: int = 11) -> dict[str, float]:
    """Measure the live engine, the batch path and the naive recompute on one synthetic tape.

    Returns ``update_p50_us``/``update_p99_us`` (one ``update`` call),
    ``vector_p50_us``/``vector_p99_us`` (one ``vector()`` call after each trade),
    ``batch_events_per_s`` (:func:`compute_batch` on ``n_batch`` trades),
    ``naive_vector_p50_us`` (one naive update + vector, :mod:`pipelines.features.naive`)
    and ``speedup_vs_naive`` = naive p50 / (update p50 + vector p50).
    """
    from pipelines.features.naive import NaiveFeatureEngine

    tape = make_synthetic_trades(max(n_events, n_batch), seed=seed)
    cols = _trade_arrays(tape.iloc[:n_events])
    ts, px, qty, tt = (cols[k].tolist() for k in ("ts_event", "price", "qty", "trade_type"))
    buyer, seller = cols["buyer"].tolist(), cols["seller"].tolist()
    eng = FeatureEngineCore()
    upd = np.empty(n_events)
    vec = np.empty(n_events)
    clock = time.perf_counter_ns
    update, vector = eng.update, eng.vector
    for j in range(n_events):
        t0 = clock()
        update(ts[j], px[j], qty[j], tt[j], buyer[j], seller[j])
        t1 = clock()
        vector()
        t2 = clock()
        upd[j] = t1 - t0
        vec[j] = t2 - t1
    warm = slice(min(BROKER_WINDOW * 2, n_events // 2), None)  # skip the warm-up branches
    upd, vec = upd[warm] / 1e3, vec[warm] / 1e3

    batch_tape = tape.iloc[:n_batch]
    compute_batch(batch_tape.iloc[:10_000])  # imports and caches outside the timing
    t0 = time.perf_counter()
    compute_batch(batch_tape)
    batch_s = time.perf_counter() - t0

    naive = NaiveFeatureEngine()
    trades = list(tape.iloc[: n_naive + 250].itertuples(index=False, name=None))
    fields = list(tape.columns)
    naive_us = []
    for j, row in enumerate(trades):
        rec = dict(zip(fields, row))
        t0 = clock()
        naive.update(rec["ts_event"], rec["price"], rec["qty"], rec["trade_type"], rec["buyer"], rec["seller"])
        naive.vector()
        if j >= 250:
            naive_us.append((clock() - t0) / 1e3)
    upd_p50, vec_p50 = float(np.percentile(upd, 50)), float(np.percentile(vec, 50))
    naive_p50 = float(np.percentile(naive_us, 50))
    return {
        "update_p50_us": upd_p50,
        "update_p99_us": float(np.percentile(upd, 99)),
        "vector_p50_us": vec_p50,
        "vector_p99_us": float(np.percentile(vec, 99)),
        "batch_events_per_s": n_batch / batch_s,
        "naive_vector_p50_us": naive_p50,
        "speedup_vs_naive": naive_p50 / (upd_p50 + vec_p50),
    }
