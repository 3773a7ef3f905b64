"""The 65 per-trade features: their definitions (the catalog specs) and the live engine.

:class:`FeatureEngineCore` is the live path: ``on_trade`` folds one trade into
fixed-size state in O(1) amortized time; ``vector()`` returns the 65 features
(``FEATURE_NAMES`` order) as of the last trade. :mod:`pipelines.features.batch`
computes the same numbers for every trade of a tape with vectorized numpy (the
training/backtest path). A parity test pins the two together (relative
difference <= 1e-9, NaN where NaN).

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
  them. Local time is America/Sao_Paulo (:mod:`pipelines.model.clock`;
  historical DST included, a constant UTC-3 since 2019).
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
from collections import deque

import numpy as np

from pipelines.features.catalog import FeatureSpec
from pipelines.model.clock import NS_PER_DAY, NS_PER_HOUR, NS_PER_S, SESSION_CLOSE_S, SESSION_OPEN_S, utc_offset_ns
from pipelines.model.messages import BookSnapshot, Trade, TradeType

NAN = math.nan

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
OPENING_END_S = SESSION_OPEN_S + 1800  # [09:00, 09:30) of the 09:00-18:00 session
CLOSING_START_S = SESSION_CLOSE_S - 1800  # [17:30, 18:00)
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
def _back(k: int) -> str:
    return f"{k} trade{'s' if k > 1 else ''} back"


def _build_specs() -> tuple[FeatureSpec, ...]:
    s: list[FeatureSpec] = []
    dp = "dp_i = p_i - p_(i-1) (trade-to-trade price change)"
    for w in VOL_WINDOWS:
        s.append(FeatureSpec(f"volatility_{w}", "volatility",
                             f"population std (ddof=0) of the last {w} {dp}, divided by the current price p_t; "
                             "equals the std of simple returns to within the window's relative price range",
                             f"{w} price changes", "fraction of price per trade", w + 1))
    for a, b in VOL_RATIO_PAIRS:
        s.append(FeatureSpec(f"volatility_ratio_{a}_{b}", "volatility",
                             f"volatility_{a} / volatility_{b} (volatility_200 is computed internally); "
                             f"NaN if volatility_{b} = 0",
                             f"{a} and {b} price changes", "ratio", b + 1))
    s.append(FeatureSpec("volatility_gk", "volatility",
                         f"Garman-Klass: sqrt(mean over the last {GK_BLOCKS} completed blocks of "
                         "[0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2]); bars are consecutive blocks of "
                         f"{GK_BLOCK_TRADES} trades counted from the first trade; "
                         "NaN if the window sum is negative (never clamped)",
                         f"{GK_BLOCKS} blocks x {GK_BLOCK_TRADES} trades", "fraction of price per block",
                         GK_BLOCKS * GK_BLOCK_TRADES))
    s.append(FeatureSpec("bb_position", "volatility",
                         f"(p_t - MA{BB_WINDOW}) / (2 * std{BB_WINDOW}) over the last {BB_WINDOW} trade prices "
                         "(population std); +-1 at the Bollinger(20, 2) bands; NaN if std = 0",
                         f"{BB_WINDOW} trades", "band half-widths", BB_WINDOW))
    for k in RETURN_LAGS:
        s.append(FeatureSpec(f"returns_{k}", "returns", f"p_t / p_(t-{k}) - 1", _back(k), "fraction", k + 1))
    for k in LOG_RETURN_LAGS:
        s.append(FeatureSpec(f"log_returns_{k}", "returns", f"ln(p_t / p_(t-{k}))", _back(k), "log return", k + 1))
    for w in OFI_WINDOWS:
        s.append(FeatureSpec(f"order_flow_imbalance_{w}", "order_flow",
                             f"sum(s_i v_i) / sum(v_i) over the last {w} trades; s = +1 buyer aggressor (type 2), "
                             "-1 seller aggressor (type 3), 0 auction/cross/other (kept in the volume); "
                             "NaN if volume = 0",
                             f"{w} trades", "fraction in [-1, 1]", w))
    s.append(FeatureSpec("cumulative_signed_volume", "order_flow",
                         "sum(s_i v_i) since the first trade of the current Sao Paulo date (cumulative delta)",
                         "session (resets at each new Sao Paulo date)", "contracts", 1))
    s.append(FeatureSpec("signed_volume", "order_flow", f"sum(s_i v_i) over the last {FLOW_WINDOW} trades",
                         f"{FLOW_WINDOW} trades", "contracts", FLOW_WINDOW))
    s.append(FeatureSpec("volume_weighted_return", "order_flow",
                         f"p_t / VWAP_{FLOW_WINDOW} - 1, VWAP over the last {FLOW_WINDOW} trades; NaN if volume = 0",
                         f"{FLOW_WINDOW} trades", "fraction", FLOW_WINDOW))
    s.append(FeatureSpec("agent_turnover", "order_flow",
                         f"number of distinct known broker ids (buyers and sellers) in the last {FLOW_WINDOW} trades; "
                         "NaN if no broker id is known (e.g. CME data)",
                         f"{FLOW_WINDOW} trades", "brokers", FLOW_WINDOW))
    for w in VOLUME_WINDOWS:
        s.append(FeatureSpec(f"volume_ratio_{w}", "volume",
                             f"mean qty of the last {VOLUME_SHORT} trades / mean qty of the last {w} trades",
                             f"{VOLUME_SHORT} and {w} trades", "ratio", w))
    for w in VOLUME_WINDOWS:
        s.append(FeatureSpec(f"volume_zscore_{w}", "volume",
                             f"(v_t - mean_{w}) / std_{w} of trade qty over the last {w} trades (population std); "
                             "NaN if std = 0",
                             f"{w} trades", "std devs", w))
    s.append(FeatureSpec("trade_intensity", "volume",
                         f"trades in (t - {INTENSITY_SHORT_S} s, t] / {INTENSITY_SHORT_S}; event-time clock",
                         f"{INTENSITY_SHORT_S} s event time", "trades per second", 1, INTENSITY_SHORT_S))
    s.append(FeatureSpec("trade_intensity_ratio", "volume",
                         f"trade rate over {INTENSITY_SHORT_S} s / trade rate over {INTENSITY_LONG_S} s",
                         f"{INTENSITY_SHORT_S} s and {INTENSITY_LONG_S} s event time", "ratio", 1, INTENSITY_LONG_S))
    for a, b in MA_PAIRS:
        s.append(FeatureSpec(f"ma_{a}_{b}_ratio", "technical", f"MA{a} / MA{b} - 1 of trade prices",
                             f"{a} and {b} trades", "fraction", b))
    for a, b in MOMENTUM_PAIRS:
        s.append(FeatureSpec(f"momentum_{a}_{b}", "technical",
                             f"returns_{a} / returns_{b}: share of the {b}-trade return earned in the last {a} trades; "
                             f"NaN if returns_{b} = 0",
                             f"{b} trades back", "ratio", b + 1))
    for w in SHARPE_WINDOWS:
        s.append(FeatureSpec(f"sharpe_{w}", "technical",
                             f"mean / std (population) of the last {w} {dp}; not annualized; NaN if std = 0",
                             f"{w} price changes", "ratio", w + 1))
    s.append(FeatureSpec("time_normalized", "technical",
                         "(t - 09:00) / (18:00 - 09:00) in Sao Paulo local time of ts_event; NaN outside the session",
                         "09:00-18:00 session", "fraction in [0, 1]", 1))
    s.append(FeatureSpec("rsi_14", "technical",
                         f"Wilder RSI({RSI_PERIOD}) of trade prices, TA-Lib seeding: averages seeded with the simple "
                         f"mean of the first {RSI_PERIOD} changes, then avg = (13 avg + x) / 14; 100 G / (G + L); "
                         "NaN if G + L = 0 (TA-Lib prints 0 there)",
                         f"{RSI_PERIOD} price changes (recursive)", "0-100", RSI_PERIOD + 1))
    broker_window = (f"ranked over {BROKER_WINDOW} trades every {BROKER_RERANK}; "
                     f"active = last {BROKER_ACTIVE} trades")
    for side, role in (("buyer", "buying"), ("seller", "selling")):
        for k in range(TOP_N):
            s.append(FeatureSpec(f"top_{side}_{k}_active", "microstructure",
                                 f"1 if the rank-{k} {side} (by {role} volume over the last {BROKER_WINDOW} "
                                 f"trades at the latest re-rank; ties -> lower id) was the {side} in any of the "
                                 f"last {BROKER_ACTIVE} trades, else 0; NaN if fewer than {k + 1} known {side}s",
                                 broker_window, "flag", BROKER_WINDOW))
    for side in ("buyer", "seller"):
        s.append(FeatureSpec(f"top_{side}s_count", "microstructure",
                             f"number of the top-{TOP_N} {side}s that are active "
                             f"(sum of the top_{side}_k_active flags); NaN if no known {side}",
                             broker_window, f"{side}s (0-{TOP_N})", BROKER_WINDOW))
    for side in ("buyer", "seller"):
        s.append(FeatureSpec(f"{side}_changed", "microstructure",
                             f"1 if the rank-0 {side} differs from the one of the previous re-rank, else 0; held until "
                             "the next re-rank; NaN if either ranking has no known broker",
                             broker_window, "flag", BROKER_WINDOW + BROKER_RERANK))
    s.append(FeatureSpec("is_buyer_aggressor", "microstructure",
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
                self._gk = math.sqrt(total / GK_BLOCKS) if total >= 0.0 else NAN  # never clamped: < 0 = corrupt bars
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
                _drop_volume(buy_key, ob, drop)
            if os_:
                _drop_volume(sell_key, os_, drop)
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

    def vector_tuple(self) -> tuple[float, ...]:
        """:meth:`vector` as a tuple of Python floats, without the array in between (the live
        engine's every feature vector)."""
        return tuple(map(float, self._values_list()))

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

        # A sum over the last w trades from prefix sums P: P[nxt] - P[(n - w) % RING], written out
        # where it is needed (about 30 a vector: a helper's calls cost more than the sums).
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
            s1 = self._cP[nxt] - self._cP[(n - BB_WINDOW) % RING]
            num = BB_WINDOW * (self._cP2[nxt] - self._cP2[(n - BB_WINDOW) % RING]) - s1 * s1
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
                v = cV[nxt] - cV[(n - w) % RING]
                app((cSV[nxt] - cSV[(n - w) % RING]) / v if v else NAN)
            else:
                app(NAN)
        app(float(self._cvd))
        if n >= FLOW_WINDOW:
            app(float(cSV[nxt] - cSV[(n - FLOW_WINDOW) % RING]))
            v = cV[nxt] - cV[(n - FLOW_WINDOW) % RING]
            vp = self._cVP[nxt] - self._cVP[(n - FLOW_WINDOW) % RING]
            app((P * v - vp) / vp if vp else NAN)
            app(float(len(self._agents)) if self._agents else NAN)
        else:
            app(NAN); app(NAN); app(NAN)

        # volume
        cV2 = self._cV2
        for w in VOLUME_WINDOWS:
            if n >= w:
                v = cV[nxt] - cV[(n - w) % RING]
                app(w * (cV[nxt] - cV[(n - VOLUME_SHORT) % RING]) / (VOLUME_SHORT * v) if v else NAN)
            else:
                app(NAN)
        for w in VOLUME_WINDOWS:
            if n >= w:
                s1 = cV[nxt] - cV[(n - w) % RING]
                num = w * (cV2[nxt] - cV2[(n - w) % RING]) - s1 * s1
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
                sa, sb = cP[nxt] - cP[(n - a) % RING], cP[nxt] - cP[(n - b) % RING]
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


def _drop_volume(rank_key: dict[int, int], broker: int, packed: int) -> None:
    """Take ``packed`` (volume x ID_SPAN) off a broker's rank key; a broker left with no volume
    leaves the ranking, so the dict stays bounded by the brokers in the window."""
    key = rank_key[broker] - packed
    if key < ID_SPAN:
        del rank_key[broker]
    else:
        rank_key[broker] = key


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
