"""A synthetic B3 mini-dollar (WDO) feed: an L2 price book driven by order flow.

The goal is a tape that *looks like* WDO to the rest of the pipeline (candles,
order-flow features, book features) and that has the stylized facts of real
futures order flow, so that no rule can read the future off it: a strategy that
wins here must win for reasons a real market also allows. The model:

- **Book.** Each symbol keeps a real aggregated L2 book on an integer tick grid
  (``price = tick * cfg.tick_size``): ``{tick: size}`` per side plus a sorted
  list of the occupied ticks. At least ``book_depth + 5`` levels per side always
  exist, the nearest of them within ``2 * (book_depth + 5)`` ticks of the touch,
  so every ``BookSnapshot`` shows ``book_depth`` levels and the book is never
  crossed or locked: limit orders are only placed strictly inside the spread or
  behind the touch on their own side.
- **Events.** Each step is one of: a market order (10 %), a limit add (55 %)
  or a cancel (35 %). Adds land at a geometric distance from the touch, or into
  a spread left open by a sweep; a new price level gets a queue at once (a
  large-tick book). Cancels take part of a level, sometimes all of it, mostly
  behind the touch. A market order walks the opposite side level by level and
  prints one ``Trade`` per price filled, then one ``BookSnapshot`` (same
  ``ts_event``), so large orders *sweep*.
- **Flow with memory, prices without.** The aggressor side is persistent, as
  in real markets (order splitting, long memory of signs): a hidden 3-state
  regime (buy share 0.65, 0.35, 0.5, lasting minutes) and a 0.3 chance that a
  market order repeats the previous side. Liquidity providers know the expected
  sign of the next market order as well as the simulator does, so (the
  efficient price of Lillo and Farmer, Bouchaud's propagator picture) a *fair
  price* moves only by the unexpected part of each market order,
  ``IMPACT * sqrt(volatility state x size) * (sign - expected sign)``, and is
  therefore a martingale. The book follows it in the same action: when the fair price leaves
  the touch, providers pull the stale best level or quote into the open spread
  until the touch brackets it again; limit adds lean towards the side the
  expected flow will hit. Past flow then predicts future flow but not returns,
  while the price still moves only through book events, so order-flow imbalance
  explains the contemporaneous price change (Cont, Kukanov and Stoikov).
- **Volatility clustering.** A slowly varying log-normal volatility state (mean
  1, an AR(1) over ~5 minutes of events at the calibration rate) scales the
  variance each unexpected contract adds: calm and agitated spells alternate,
  which clusters volatility and, with the size mixture, fattens the tails. The
  mix of events stays the same, so a short run trades as much as a long one.
- **Icebergs.** When a level is emptied it may turn out to hold hidden size
  (probability ``P_ICEBERG``): it is refilled at the same price in small peaks
  until the hidden quantity is gone, so fills at one price exceed what showed.
- **Sizes.** Market-order sizes are a mixture: geometric body (mostly 1-5
  contracts), a 6-49 "mid" component, and a rare log-uniform 50-300 block
  component. No trade is larger than ``MAX_ORDER`` (300) contracts.
- **Far-off pull.** The fair price is pulled back towards ``base_price`` by a
  drift that is negligible near it and firm beyond ~3 % (linear plus cubic in
  the distance): long runs stay in 5000-6000 for WDO.
- **Clock.** Inter-arrival times are exponential with mean ``1/rate`` per
  emitted event (an action emitting k events advances the clock by k draws).
  ``profile: day`` multiplies the rate by the hour's entry of ``DAY_PROFILE``
  (they average 1: ``rate`` is then the session's mean). Events happen only
  09:00-18:00 Sao Paulo on weekdays; at 18:00 the clock jumps to 09:00 of the
  next weekday, where an opening ``AUCTION`` print is emitted. ``end`` stops
  the feed at that event time.

Calibration: the dynamics are per event (regime and volatility durations are
counted in events, as seconds at ``CALIBRATION_RATE`` = 40 events/s), tuned so
that at ~40 events/s (~4 market orders/s) the mid moves ~0.9 points (sd) in 10 s,
the median 1-minute range is ~3 points, and a 09:00-18:00 day with ``profile:
day`` ranges over some 40-110 points (~1 % of 5400) with ~470k contracts traded.
The touch is one tick wide ~95 % of the time, so the mid differs from the fair
price by up to half a tick: a small negative lag-1 autocorrelation of very short
returns, as in real large-tick markets. At higher rates (the default 2000/s is a
throughput setting) event time is effectively fast-forwarded: more flow, and
more price movement, per minute.

Speed: random numbers are drawn from a numpy ``Generator`` in blocks of
``BLOCK`` and consumed as Python scalars, so generation costs a few µs per
event. Determinism: each symbol has its own generator seeded from a stable
hash of ``(seed, symbol, resume time)``; polled at speed 0, two simulators with
the same config give the same events (``ts_recv`` aside).

Pacing (speed > 0) runs on *session* time: the overnight 18:00 -> 09:00 jump
costs no wall time. A restarted feed (``resume_after_ns``) continues strictly
after the last time it delivered, with a fresh book at ``base_price``.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import time
from datetime import datetime
from typing import Callable, Iterator, Sequence

import numpy as np

from pipelines.adapters.config import SimulatorConfig
from pipelines.model.messages import BookSnapshot, Event, Trade, TradeType
from pipelines.adapters.base import MIN_WAIT_S
from pipelines.model.clock import (NS_PER_HOUR, NS_PER_S, SAO_PAULO, SESSION_OPEN, from_ns, next_session_day, parse_time,
                                   session_bounds_ns, to_ns)

# B3 broker (agent) codes, most active first; popularity is Zipf-like.
# 3 XP, 308 Clear, 386 Rico, 85 BTG, 120 Genial, 72 Bradesco, 27 Santander,
# 8 UBS, 1099 Inter, 39 Agora, then a few institutional desks.
BROKERS = (3, 308, 386, 85, 120, 72, 27, 8, 1099, 39, 114, 40, 13, 45, 16, 238)
_BROKER_P = np.array([1.0 / (i + 1) ** 1.1 for i in range(len(BROKERS))])
_BROKER_P /= _BROKER_P.sum()

BLOCK = 4096  # random numbers drawn per vectorized refill
MAX_ORDER = 300  # largest market order (and so largest trade), contracts
CALIBRATION_RATE = 40.0  # events/s at which the per-event dynamics below look like WDO (see the module doc)
P_MARKET = 0.10  # share of actions that are market orders
ADD_SHARE = 0.55 / 0.90  # of the other actions, limit adds; the rest are cancels
P_ICEBERG = 0.12  # chance an emptied level turns out to hold hidden size
P_REPEAT = 0.3  # order splitting: next market order repeats the previous side
REGIMES = ((0.65, 120.0), (0.35, 120.0), (0.50, 180.0))  # (buy share, mean seconds at CALIBRATION_RATE)
IMPACT = 0.15  # ticks the fair price moves per unexpected sqrt(contract), at the mean volatility state
ANTICIPATION = 0.5  # how far limit adds lean to the side the expected flow will hit
MAX_REQUOTES = 16  # one-tick requotes per action at most (a block's jump; any rest follows next action)
VOL_SD = 0.7  # log-sd of the volatility state (the variance each unexpected contract adds)
VOL_EVENTS = 300 * CALIBRATION_RATE  # its correlation length, events (5 minutes at the calibration rate)
REVERSION = 0.0005  # ticks per market order the fair price is pulled back at one `band` from base_price
_BUY, _SELL, _AUCTION = int(TradeType.BUY_AGGRESSOR), int(TradeType.SELL_AGGRESSOR), int(TradeType.AUCTION)

# Events/s by hour of the session (09:00 .. 17:00 Sao Paulo), as multipliers of `rate` that average
# 1 over the day: a stylized U-shape (busy open, quiet lunch, busier close), not measured WDO data.
_DAY_SHAPE = (1.7, 1.3, 1.0, 0.75, 0.55, 0.6, 0.8, 1.0, 1.3)
DAY_PROFILE = tuple(m * len(_DAY_SHAPE) / sum(_DAY_SHAPE) for m in _DAY_SHAPE)
DAY_OPEN_HOUR = SESSION_OPEN.hour


def _stream(draw: Callable[[], np.ndarray]) -> Iterator:
    """Endless iterator of Python scalars, refilled a block at a time."""
    while True:
        yield from draw().tolist()


def _stable_seed(*parts: object) -> int:
    """Seed from a stable hash (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def _volatility(rng: np.random.Generator) -> Iterator[float]:
    """Endless per-event impact multiplier ``sqrt(v)``, where ``v`` is a log-normal volatility state
    with mean 1, an AR(1) in log space over ``VOL_EVENTS`` events (a block at a time: within a
    block the recursion is a cumulative sum, exact while phi**-BLOCK stays small)."""
    phi = math.exp(-1.0 / VOL_EVENTS)
    scale = math.sqrt(1.0 - phi * phi)
    decay = phi ** np.arange(1, BLOCK + 1)
    z = float(rng.standard_normal())
    while True:
        zs = decay * (z + scale * np.cumsum(rng.standard_normal(BLOCK) / decay))
        z = float(zs[-1])
        yield from np.exp(0.5 * VOL_SD * zs - 0.25 * VOL_SD ** 2).tolist()


def _order_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Market-order sizes: 95 % geometric(0.5) body, 4 % 6-49, 1 % log-uniform 50-300."""
    u = rng.random(n)
    body = np.minimum(rng.geometric(0.5, n), 49)
    mid = np.minimum(5 + rng.geometric(0.08, n), 49)
    block = np.floor(np.exp(rng.uniform(math.log(50), math.log(MAX_ORDER + 1), n))).clip(50, MAX_ORDER)
    return np.where(u < 0.95, body, np.where(u < 0.99, mid, block)).astype(np.int64)


def _session_at(t: int) -> tuple[int, int]:
    """Move ``t`` into a session (09:00-18:00 on a weekday); returns (t, that session's close)."""
    day = from_ns(t).date()
    while day.weekday() >= 5:
        day = next_session_day(day)
    open_ns, close_ns = session_bounds_ns(day)
    if t >= close_ns:
        open_ns, close_ns = session_bounds_ns(next_session_day(day))
    return max(t, open_ns), close_ns


DEFAULT_START = 10  # hour (Sao Paulo) of the default first event: past the opening auction, so orders flow at once


def default_start_ns() -> int:
    """10:00 Sao Paulo today, or of the next weekday when today is a weekend. An hour into the
    session: the execution policy makes no entries in the opening auction, and a first run
    should show trading from its first minute (``start`` at 09:00 shows the open)."""
    return _session_at(to_ns(datetime.now(SAO_PAULO).replace(hour=DEFAULT_START, minute=0, second=0,
                                                            microsecond=0)))[0]


class _Prices(dict):
    """tick -> float price, rounded once per tick (keeps e.g. 0.1 grids exact)."""

    def __init__(self, tick_size: float):
        super().__init__()
        self.tick_size = tick_size

    def __missing__(self, k: int) -> float:
        v = self[k] = round(k * self.tick_size, 9)
        return v


class _SymbolSim:
    """One symbol's book, fair price, flow and clock. ``step`` performs one action."""

    def __init__(self, cfg: SimulatorConfig, symbol: str, start_ns: int, resume_after: int | None):
        self.symbol = symbol
        self.depth = d = cfg.book_depth
        self.min_levels, self.max_levels = d + 5, 3 * d + 10
        self.span = 2 * self.min_levels  # ticks the nearest min_levels levels may spread over
        self.px = _Prices(cfg.tick_size)
        self.base = round(cfg.base_price / cfg.tick_size)
        self.band = max(4.0, 0.03 * cfg.base_price / cfg.tick_size)  # ticks per unit of reversion
        rng = np.random.default_rng(_stable_seed(cfg.seed, symbol, resume_after))
        mean_gap = NS_PER_S / cfg.rate
        self.u = _stream(lambda: rng.random(BLOCK))
        self.gap = _stream(lambda: np.rint(rng.exponential(mean_gap, BLOCK)).astype(np.int64))
        self.order = _stream(lambda: _order_sizes(rng, BLOCK))
        # resting size of a fresh level: lognormal, median ~60 contracts
        self.level = _stream(lambda: np.minimum(rng.lognormal(math.log(60), 0.7, BLOCK), 400).astype(np.int64) + 1)
        self.add = _stream(lambda: rng.geometric(0.1, BLOCK))  # limit order size, mean 10
        self.dist = _stream(lambda: rng.geometric(0.4, BLOCK) - 1)  # levels from the touch, 0-based
        self.hidden = _stream(lambda: rng.integers(30, 400, BLOCK))
        # levels from the touch of a cancel: mostly behind it, so a queue at the touch is worked off
        # by trades and the price moves with order flow, not with random cancels
        self.cancel_dist = _stream(lambda: rng.geometric(0.15, BLOCK) - 1)
        self.broker = _stream(lambda: rng.choice(np.array(BROKERS), BLOCK, p=_BROKER_P))
        self.vol = _volatility(rng)

        if resume_after is not None:
            start_ns = resume_after + 1 + next(self.gap)
        self.t, self.close = _session_at(start_ns)
        self.open_print = self.t == session_bounds_ns(from_ns(self.t).date())[0]
        self.active = 0  # session (non-overnight) ns elapsed: the pacing clock
        self.events = 0  # events emitted: the clock of the flow regimes
        self.profile = DAY_PROFILE if cfg.profile == "day" else None
        self.inv_mult, self.mult_until = 1.0, 0  # the day profile's current hour: 1 / multiplier, until when
        self.trade_id = self.t // 1000  # µs-based start keeps ids increasing across restarts
        self.ice: dict[int, int] = {}  # tick -> hidden size still to show
        self.bids = {self.base - i: next(self.level) for i in range(d + 10)}
        self.asks = {self.base + 1 + i: next(self.level) for i in range(d + 10)}
        self.bk, self.ak = sorted(self.bids), sorted(self.asks)  # ascending: best bid last, best ask first
        self.fair = self.base + 0.5  # the efficient price, ticks (a martingale but for a far-off pull to base)
        self.last_buy = True
        self.regime, self.regime_end, self.share = int(next(self.u) * 3), 0, 0.5
        self._switch_regime(self.regime)

    def _switch_regime(self, to: int | None = None) -> None:
        if to is None:  # jump to one of the two other states
            to = (self.regime + 1 + (next(self.u) < 0.5)) % 3
        self.regime = to
        self.share, mean_s = REGIMES[to]
        self.regime_end = self.events + int(-mean_s * CALIBRATION_RATE * math.log(1.0 - next(self.u)))

    def _trade(self, out: list, now: int, k: int, qty: int, code: int) -> None:
        self.trade_id += 1
        brk = self.broker
        out.append(Trade(self.symbol, self.t, now, 0, self.px[k], qty, code, next(brk), next(brk), self.trade_id))

    def step(self, out: list, now: int) -> None:
        """One action at ``self.t``: append its events to ``out``, advance the clock."""
        first = len(out)
        if self.open_print:  # opening auction print, no book change
            self.open_print = False
            self._trade(out, now, self.bk[-1], min(next(self.hidden), MAX_ORDER), _AUCTION)
        if self.events >= self.regime_end:
            self._switch_regime()
        bk, ak = self.bk, self.ak
        # The next market order's expected sign, which liquidity providers know as well as the
        # simulator does: order splitting plus the regime's buy share.
        expected = (1.0 - P_REPEAT) * (2.0 * self.share - 1.0) + (P_REPEAT if self.last_buy else -P_REPEAT)
        vol = next(self.vol)
        u = next(self.u)
        if u < P_MARKET:
            self._market(out, now, vol, expected)
        elif u < P_MARKET + (1.0 - P_MARKET) * ADD_SHARE:
            self._limit_add(expected)
        else:
            self._cancel()
        if not bk[-1] <= self.fair <= ak[0]:
            self._requote()
        lo, hi, span = self.min_levels, self.max_levels, self.span
        if not (lo <= len(bk) <= hi and lo <= len(ak) <= hi) or bk[-1] - bk[-lo] > span or ak[lo - 1] - ak[0] > span:
            self._maintain()
        d, bids, asks, px = self.depth, self.bids, self.asks, self.px.__getitem__
        bt, at = bk[: -d - 1 : -1], ak[:d]
        out.append(BookSnapshot(self.symbol, self.t, now, 0, tuple(map(px, bt)), tuple(map(bids.__getitem__, bt)),
                                tuple(map(px, at)), tuple(map(asks.__getitem__, at))))
        n = len(out) - first
        self.events += n
        gap = 0  # one exponential inter-arrival per emitted event
        for _ in range(n):
            gap += next(self.gap)
        if self.profile is not None:
            if self.t >= self.mult_until:
                self._hour()
            gap = int(gap * self.inv_mult + 0.5)
        self.active += gap
        self.t += gap
        if self.t >= self.close:  # 18:00: jump to the next weekday's 09:00, carrying the overshoot
            over = self.t - self.close
            open_ns, self.close = session_bounds_ns(next_session_day(from_ns(self.close).date()))
            self.t = open_ns + over
            self.open_print = True

    def _hour(self) -> None:
        """The day profile's multiplier for the hour of ``self.t``, and when that hour ends."""
        local = from_ns(self.t)
        hour = local.replace(minute=0, second=0, microsecond=0)
        i = min(max(hour.hour - DAY_OPEN_HOUR, 0), len(DAY_PROFILE) - 1)
        self.inv_mult = 1.0 / DAY_PROFILE[i]
        self.mult_until = to_ns(hour) + NS_PER_HOUR

    def _market(self, out: list, now: int, vol: float, expected: float) -> None:
        """A market order walks the opposite side, printing one Trade per price it fills; only its
        unexpected part moves the fair price."""
        buy = self.last_buy if next(self.u) < P_REPEAT else next(self.u) < self.share
        self.last_buy = buy
        levels, keys, pos = (self.asks, self.ak, 0) if buy else (self.bids, self.bk, -1)
        code = _BUY if buy else _SELL
        q, ice = next(self.order), self.ice
        x = (self.fair - self.base) / self.band
        self.fair += (IMPACT * vol * math.sqrt(q) * ((1.0 if buy else -1.0) - expected)
                      - REVERSION * x * (1.0 + x * x))
        while q:
            if len(keys) < 2:
                self._maintain()
            k = keys[pos]
            size, filled = levels[k], 0
            while True:
                take = q if q < size else size
                filled += take
                q -= take
                size -= take
                if not size:  # emptied: was there hidden size behind it?
                    h = ice.get(k)
                    if h is None:
                        h = next(self.hidden) if next(self.u) < P_ICEBERG else 0
                    if h:
                        size = min(h, 5 + next(self.add))
                        ice[k] = h - size
                if not size or not q:
                    break
            self._trade(out, now, k, filled, code)
            if size:
                levels[k] = size
            else:
                del levels[k]
                keys.pop(pos)
                ice.pop(k, None)

    def _requote(self) -> None:
        """Liquidity providers requote at once (in this action's snapshot) until the touch brackets
        the fair price again: the book never lags it, so no move is left for a later event to make
        and nobody can trade on it. Each requote moves one side of the touch one tick: a quote
        into an open spread, else the stale best level of the other side pulled."""
        bk, ak, fair = self.bk, self.ak, self.fair
        for _ in range(MAX_REQUOTES):
            up = fair > ak[0]
            if not up and fair >= bk[-1]:
                return
            if ak[0] - bk[-1] > 1:
                if up:
                    k = bk[-1] + 1
                    self.bids[k] = next(self.level)
                    bk.append(k)
                else:
                    k = ak[0] - 1
                    self.asks[k] = next(self.level)
                    ak.insert(0, k)
                continue
            k = ak.pop(0) if up else bk.pop()
            del (self.asks if up else self.bids)[k]
            self.ice.pop(k, None)
            if len(ak) < 2 or len(bk) < 2:
                self._maintain()

    def _limit_add(self, expected: float) -> None:
        """Adds lean to the side the expected flow will hit, so predictable flow finds the
        liquidity it consumes (and does not move the price by itself)."""
        bb, ba = self.bk[-1], self.ak[0]
        if ba - bb > 1 and next(self.u) < 0.8:  # step into an open spread, on the side that quotes nearer value
            bid = bb + ba < 2.0 * self.fair
            k = bb + 1 if bid else ba - 1
        else:
            bid = next(self.u) < 0.5 - 0.5 * ANTICIPATION * expected
            k = bb - next(self.dist) if bid else ba + next(self.dist)
        levels, keys = (self.bids, self.bk) if bid else (self.asks, self.ak)
        if k in levels:
            levels[k] += next(self.add)
        else:  # a new price level: in a large-tick book a queue forms at once
            levels[k] = next(self.level)
            bisect.insort(keys, k)

    def _cancel(self) -> None:
        bid = next(self.u) < 0.5
        levels, keys = (self.bids, self.bk) if bid else (self.asks, self.ak)
        d = min(next(self.cancel_dist), len(keys) - 1)
        k = keys[-1 - d] if bid else keys[d]
        v = next(self.u)
        left = 0 if v < 0.1 else levels[k] - max(1, int(levels[k] * v * 0.5))
        if left > 0:
            levels[k] = left
        else:
            del levels[k]
            keys.remove(k)
            self.ice.pop(k, None)

    def _maintain(self) -> None:
        """Keep min_levels..max_levels per side, the nearest min_levels within ``span`` ticks of the
        touch (a book that drifted leaves holes behind; filling them keeps a sweep from jumping a
        chasm), new levels behind the worst, prune the far end."""
        bids, asks, bk, ak, lo, level = self.bids, self.asks, self.bk, self.ak, self.min_levels, self.level
        if len(bk) >= lo and bk[-1] - bk[-lo] > self.span:
            for k in range(bk[-1] - 1, bk[-1] - lo, -1):
                if k not in bids:
                    bids[k] = next(level)
                    bisect.insort(bk, k)
        if len(ak) >= lo and ak[lo - 1] - ak[0] > self.span:
            for k in range(ak[0] + 1, ak[0] + lo):
                if k not in asks:
                    asks[k] = next(level)
                    bisect.insort(ak, k)
        while len(bk) < lo:
            k = (bk[0] if bk else ak[0]) - 1
            bids[k] = next(level)
            bk.insert(0, k)
        while len(ak) < lo:
            k = (ak[-1] if ak else bk[-1]) + 1
            asks[k] = next(level)
            ak.append(k)
        while len(bk) > self.max_levels:
            k = bk.pop(0)
            del bids[k]
            self.ice.pop(k, None)
        while len(ak) > self.max_levels:
            k = ak.pop()
            del asks[k]
            self.ice.pop(k, None)


class MarketSimulator:
    """FeedSource: independent per-symbol simulations merged in event-time order.

    ``poll`` generates on demand. With ``speed > 0`` it releases only actions
    whose session time is at most ``(wall time since the first poll) * speed``
    from the first event; the target is computed from the start every call, so
    pacing does not drift. ``speed == 0`` returns ``max_events`` at once.
    """

    def __init__(self, cfg: SimulatorConfig, symbols: Sequence[str], resume_after_ns: dict[str, int] | None = None):
        if not symbols:
            raise ValueError("MarketSimulator needs at least one symbol")
        self.symbols = tuple(symbols)
        start = _time_key("start", cfg.start) if cfg.start is not None else default_start_ns()
        self._end = math.inf
        if cfg.end is not None:
            self._end = _time_key("end", cfg.end)
            if self._end <= start:
                raise ValueError(f"feed.simulator.end: must be after feed.simulator.start ({from_ns(start).isoformat()}),"
                                 f" got {cfg.end}")
            if self._end <= _session_at(start)[0]:  # e.g. a Saturday afternoon: a run without a single event
                raise ValueError(f"feed.simulator.end: no session time (09:00-18:00 Sao Paulo, weekdays) between "
                                 f"feed.simulator.start ({from_ns(start).isoformat()}) and {cfg.end}")
        resume = resume_after_ns or {}
        self._sims = [_SymbolSim(cfg, s, start, resume.get(s)) for s in self.symbols]
        self._speed = cfg.speed
        self._max = cfg.max_events
        self._produced = 0  # events generated and kept (delivered + pending)
        self._pending: list[Event] = []  # tail of an action cut by max_events of a poll
        self._wall0: int | None = None
        self._closed = False

    @property
    def exhausted(self) -> bool:
        if self._pending:
            return self._closed
        return self._closed or 0 < self._max <= self._produced or min(map(_clock, self._sims)) >= self._end

    def poll(self, max_events: int) -> list[Event]:
        if self._closed or max_events <= 0:
            return []
        out: list[Event] = []
        if self._pending:  # already stamped with their due time
            out = self._pending[:max_events]
            del self._pending[:max_events]
            if len(out) >= max_events:
                return out
        budget = max_events - len(out)
        if self._max:
            budget = min(budget, self._max - self._produced)
        if budget <= 0:
            return out
        speed = self._speed
        if speed > 0:
            wall = time.monotonic_ns()
            if self._wall0 is None:
                self._wall0 = wall
                self._epoch0 = time.time_ns()
            horizon = (wall - self._wall0) * speed
            epoch0 = self._epoch0
        else:
            horizon = math.inf
        # ts_recv is the wall instant the event was due ("arrived"), not when it was
        # polled: if the feed falls behind, the lag shows up as latency downstream.
        new: list[Event] = []
        sims, end = self._sims, self._end
        if len(sims) == 1:
            sim = sims[0]
            step = sim.step
            while len(new) < budget and sim.active <= horizon and sim.t < end:
                step(new, epoch0 + int(sim.active / speed) if speed > 0 else time.time_ns())
        else:
            while len(new) < budget:
                sim = min(sims, key=_clock)
                if sim.active > horizon or sim.t >= end:
                    break
                sim.step(new, epoch0 + int(sim.active / speed) if speed > 0 else time.time_ns())
        if self._max and len(new) > self._max - self._produced:
            del new[self._max - self._produced :]
        self._produced += len(new)
        if len(new) > budget:
            self._pending = new[budget:]
            del new[budget:]
        out.extend(new)
        return out

    def wait(self, timeout_s: float) -> None:
        """Sleep until the next action is due (paced), at most ``timeout_s``, at least
        :data:`MIN_WAIT_S` (events come in micro-batches anyway: waking for each one
        would only cost CPU)."""
        if self._closed or self._pending or self._speed <= 0 or self._wall0 is None:
            return
        due_ns = self._wall0 + min(sim.active for sim in self._sims) / self._speed - time.monotonic_ns()
        time.sleep(max(MIN_WAIT_S, min(timeout_s, due_ns / NS_PER_S)))

    def close(self) -> None:
        self._closed = True
        self._pending = []


def _clock(sim: _SymbolSim) -> int:
    return sim.t


def _time_key(name: str, text: str) -> int:
    """``feed.simulator.<name>`` in ns, or a ValueError naming the key."""
    try:
        return to_ns(parse_time(text))
    except (ValueError, OverflowError) as e:
        raise ValueError(f"feed.simulator.{name}: {e}") from None
