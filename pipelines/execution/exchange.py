"""The simulated exchange: the venue paper trading and backtests fill against, on our trades
and L2 book snapshots.

**Event time.** An order submitted at ``now_ns`` arrives at the venue ``entry`` latency later
(:mod:`pipelines.execution.latency`); messages of the one session to the venue arrive in the
order they were sent (a cancel never overtakes its order), and the venue's answers come back in
the order it sent them. An order arriving at ``A`` meets
the book after every market event stamped ``<= A`` and before any later one: arrivals are
processed when a market event stamped after them comes in, or by :meth:`advance` (the driver's
word that no more market data up to then is coming). Nothing is ever filled against a book the
order could not have seen. An order whose arrival would lie before market data already applied
arrives at the latest market time instead (counted ``late_arrivals``). Everything the venue
tells the client (ACCEPTED, fills, CANCELLED, REJECTED at the venue) is stamped with the venue's
time plus the ``ack`` latency; the lists returned carry those stamps, so a driver in event time
delivers each at its ``ts_event``.

**Gateway and venue checks.** Refused at :meth:`submit`, stamped ``now_ns`` (they depend on no
market state): a malformed order (:func:`pipelines.model.orders.order_problem`), a bad time or
symbol, a client order id already used (``duplicate_client_order_id``: every id that passed the
shape check is used up, rejected or not), an unknown symbol (``unknown_symbol``: neither a
contract of :mod:`pipelines.model.instruments` nor in ``simulated_symbols``, which trade on
``simulated_tick_size``), a price or stop price off the tick grid (``off_tick``). Refused at
arrival: no book and trade seen yet for the symbol (``no_market_data``), a limit or stop price
farther from the last trade than the band (``price_band``). Every rejection is an OrderEvent
REJECTED with its reason, counted in :meth:`stats`; nothing raises out of a public method.

**Taking.** A market order walks the visible opposite side level by level (within the price
band), taking what each level shows less what our own orders already took there; a marketable
limit does the same up to its price; fills are taker fills at each level's price. What the
visible depth cannot fill: IOC cancels it (``ioc_remainder``); FOK fills all or nothing
(``fok_not_fillable``); a DAY limit rests at its price; a DAY market order's remainder is
cancelled (``no_liquidity``) or, with ``market_remainder: rest``, rests as a limit at the last
price it filled at (the touch if it filled nothing, within the band).

**Own liquidity.** What our orders take from a displayed level is remembered per symbol, side
and price: the next order sees the displayed quantity less it. The real feed never shows our
takes, so the memory lasts while the price stays on that side of the visible book (each later
snapshot's quantity there is reduced by it) and is forgotten when a snapshot no longer shows it.

**Queue.** A resting order joins behind the quantity displayed at its price when it arrives (0
if the level is empty or better than the touch; unknown, hence endless, beyond the visible depth
until a snapshot shows the level) and behind our earlier orders there. A trade at its price whose
aggressor hits its side consumes the queue in order: with ``r`` the trade's quantity left after
our earlier orders at that price took theirs, an order with ``a`` ahead fills ``min(leaves,
r - a)`` if ``r > a`` (maker, at its price), and otherwise has ``a - r`` left ahead. A snapshot
showing less at the price than an order has ahead brings it to what is shown (the queue cannot
be longer than the level); more queues behind it (risk-averse, as hftbacktest's
``RiskAverseQueueModel``). With ``queue_model: probabilistic``, a drop of the displayed quantity
that trades at the price since the previous snapshot do not explain (``c`` contracts cancelled)
also advances an order by ``c`` with probability ``a^n / (a^n + b^n)`` (``a`` ahead of it,
``b`` behind it, ``n`` = ``cancel_power``; 1 is the share ahead): one uniform draw ``u`` per
such drop and level, from ``random.Random(f"{seed}:queue")``, and every order whose probability
exceeds ``u`` advances, so the orders of a level stay in order. A trade through an order's price
(below a buy, above a sell) fills it fully at its price (maker): the level was swept. A snapshot
whose opposite side reaches a resting order's price fills it at its price (maker) against what
that side shows at or through it, less our takes.

**Stop-limit.** Triggers when a trade prints at or through its stop (at arrival, when the last
trade already has), then works as a limit. Fees on every fill from
:class:`pipelines.execution.costs.CostModel`.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections import Counter
from itertools import compress
from operator import gt, lt, ne
from typing import Any, Iterable, NamedTuple, Sequence

from pipelines.execution.config import PROBABILISTIC, REST_REMAINDER, ExchangeConfig
from pipelines.execution.costs import CostModel
from pipelines.execution.latency import LatencyModel
from pipelines.model.instruments import UnknownInstrument, instrument_for
from pipelines.model.messages import BookSnapshot, Trade, TradeType
from pipelines.model.orders import (ACCEPTED, BUY, CANCELLED, DAY, EXPIRED, FILLED, FOK, MAKER, MARKET,
                                    PARTIALLY_FILLED, REJECTED, STOP_LIMIT, SUBMITTED, TAKER, Fill, Order,
                                    OrderEvent, order_problem)

log = logging.getLogger("quantumtrader.exchange")

Result = tuple[Sequence[OrderEvent], Sequence[Fill]]
NO_EVENTS: Result = ((), ())  # what a market event returns when nothing happened (no allocation)

_INF = math.inf
_NAN = math.nan
_UNKNOWN = 1 << 62  # queue ahead of an order priced beyond the visible depth, until a snapshot shows its level
_BUY_AGGRESSOR = int(TradeType.BUY_AGGRESSOR)
_SELL_AGGRESSOR = int(TradeType.SELL_AGGRESSOR)
_GRID_TOLERANCE = 1e-6  # in ticks: a float price like 5400.499999999 is still on the grid

_PENDING, _STOP, _RESTING, _DONE = 0, 1, 2, 3
_STATE_NAMES = ("pending", "stop", "resting", "done")
_ORDER, _CANCEL = 0, 1  # what arrives: an order or its cancel
_TRADE_FIELDS, _BOOK_FIELDS, _ORDER_FIELDS = len(Trade._fields), len(BookSnapshot._fields), len(Order._fields)


class OpenOrder(NamedTuple):
    """A working order as the venue sees it."""

    order: Order
    state: str  # pending (not yet at the venue) | stop (waiting for its trigger) | resting (in the book)
    filled_qty: int
    leaves_qty: int
    price: float  # where it rests (a market remainder's price is the one it was given)
    queue_ahead: int  # others' quantity ahead of it at its price; -1 when unknown or not resting


class _Order:
    __slots__ = ("order", "coid", "symbol", "sign", "otype", "tif", "price", "stop", "leaves", "filled",
                 "notional", "ahead", "n_fills", "state", "seq")

    def __init__(self, order: Order, seq: int):
        self.order = order
        self.coid = order.client_order_id
        self.symbol = order.symbol
        self.sign = 1 if order.side == BUY else -1
        self.otype = order.order_type
        self.tif = order.time_in_force
        self.price = float(order.price) if order.order_type != MARKET else _NAN
        self.stop = float(order.stop_price) if order.order_type == STOP_LIMIT else _NAN
        self.leaves = order.quantity
        self.filled = 0
        self.notional = 0.0
        self.ahead = 0
        self.n_fills = 0
        self.state = _PENDING
        self.seq = seq


class _Level:
    """Our resting orders at one price of one side, in time priority, and what the book showed there."""

    __slots__ = ("price", "orders", "shown", "traded", "seen")

    def __init__(self, price: float, shown: int):
        self.price = price
        self.orders: list[_Order] = []
        self.shown = shown  # displayed quantity at the last snapshot; -1 unknown (beyond the visible depth)
        self.traded = 0  # quantity traded at this price against this side since that snapshot
        self.seen = -1  # the snapshot that last showed the price


class _Market:
    __slots__ = ("symbol", "tick", "bid_px", "bid_qty", "ask_px", "ask_qty", "has_book", "last", "time",
                 "taken_bid", "taken_ask", "buys", "sells", "best_buy", "best_sell", "stops", "buy_stop",
                 "sell_stop", "pending", "stamp", "touched")

    def __init__(self, symbol: str, tick: float):
        self.symbol = symbol
        self.tick = tick
        self.bid_px: tuple = ()
        self.bid_qty: tuple = ()
        self.ask_px: tuple = ()
        self.ask_qty: tuple = ()
        self.has_book = False
        self.last = _NAN  # the last trade price
        self.time = 0  # the venue's time: the latest market event or arrival
        self.taken_bid: dict[float, int] = {}  # what our orders took from displayed bids, by price
        self.taken_ask: dict[float, int] = {}
        self.buys: dict[float, _Level] = {}  # our resting orders by price
        self.sells: dict[float, _Level] = {}
        self.best_buy = -_INF  # our highest resting buy (-inf: none)
        self.best_sell = _INF
        self.stops: list[_Order] = []  # untriggered stop-limits, in submission order
        self.buy_stop = _INF  # the lowest buy stop: a trade at or above it triggers
        self.sell_stop = -_INF
        self.pending: list[tuple] = []  # heap of (arrival, seq, what, order)
        self.stamp = 0  # snapshots applied
        self.touched: list[_Level] = []  # our levels that traded since the last snapshot


def _side_problem(px: Any, qty: Any, old_px: tuple, old_qty: tuple, bids: bool) -> str | None:
    """Why one side of a snapshot cannot be used, or None. C-level passes, and only over what
    changed since the side the market holds (already checked): books are the bulk of the feed."""
    if type(px) is not tuple or type(qty) is not tuple or len(px) != len(qty):
        return "bad_book_shape"
    if not px:
        return None
    try:
        # Strictly ordered away from the touch; a NaN fails every comparison, so the ends bound the rest.
        lo, hi = (px[-1], px[0]) if bids else (px[0], px[-1])
        if px != old_px and not (all(map(gt if bids else lt, px, px[1:])) and 0.0 < lo and hi < _INF):
            return "bad_book_price"
        # Positive integers: a float or numpy quantity anywhere changes the type of the sum.
        if qty != old_qty and (min(qty) <= 0 or type(sum(qty)) is not int):
            return "bad_book_qty"
    except TypeError:  # a price or quantity that is not a number
        return "bad_book_shape"
    return None


def _clean(x: Any) -> str:
    return x if type(x) is str else ""


def _out(x: float) -> float | None:
    return None if x != x else x


def _in(x: float | None) -> float:
    return _NAN if x is None else float(x)


class SimulatedExchange:
    """The venue for any number of symbols (see the module doc for the rules)."""

    def __init__(self, cfg: ExchangeConfig = ExchangeConfig()):
        self.cfg = cfg
        self._costs = CostModel(cfg.costs)
        self._entry = LatencyModel(cfg.entry_latency, cfg.seed, "entry")
        self._ack = LatencyModel(cfg.ack_latency, cfg.seed, "ack")
        self._md = LatencyModel(cfg.market_data_latency, cfg.seed, "market_data")
        self._rng = random.Random(f"{cfg.seed}:queue")
        self._probabilistic = cfg.queue_model == PROBABILISTIC
        self._rest_remainder = cfg.market_remainder == REST_REMAINDER
        self._simulated = frozenset(cfg.simulated_symbols)
        self._markets: dict[str, _Market] = {}
        self._live: dict[str, _Order] = {}  # orders not yet terminal, by client order id
        self._ids: set[str] = set()  # every client order id used
        self._seq = 0
        self._last_arrival = 0  # one session to the venue: messages arrive in the order they were sent
        self._last_ack = 0  # ... and come back in the order the venue sent them
        self._ev: list[OrderEvent] = []  # what the current call produced
        self._fl: list[Fill] = []
        self._market_events = 0
        self._count: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._cancel_rejected: Counter[str] = Counter()
        self._bad_market_data: Counter[str] = Counter()
        self._fees = 0.0

    # -- orders ------------------------------------------------------------------------

    def submit(self, order: Order, now_ns: int) -> list[OrderEvent]:
        """Send ``order`` at ``now_ns``: [SUBMITTED], or [REJECTED] with the gateway's reason."""
        try:
            ok = isinstance(order, Order) and len(order) == _ORDER_FIELDS
            reason = order_problem(order) if ok else "not_an_order"
            if reason is None:
                if type(now_ns) is not int:
                    reason = "bad_time"
                elif type(order.symbol) is not str or not order.symbol:
                    reason = "bad_symbol"
                elif order.client_order_id in self._ids:
                    reason = "duplicate_client_order_id"
            if reason is None:
                self._ids.add(order.client_order_id)
                m = self._market(order.symbol)
                if m is None:
                    reason = "unknown_symbol"
                elif self._off_grid(order, m.tick):
                    reason = "off_tick"
            if reason is not None:
                return [self._gateway_reject(order, now_ns, reason)]
            arrival = now_ns + self._entry.draw_ns()
            if arrival < m.time:
                arrival = m.time
                self._count["late_arrivals"] += 1
            if arrival < self._last_arrival:
                arrival = self._last_arrival
            self._last_arrival = arrival
            self._seq += 1
            o = _Order(order, self._seq)
            heapq.heappush(m.pending, (arrival, self._seq, _ORDER, o))
            self._live[o.coid] = o
            self._count["submitted"] += 1
            return [OrderEvent(o.coid, order.account, o.symbol, now_ns, SUBMITTED, 0, o.leaves, _NAN)]
        except Exception:  # a bug, not bad input: the order is refused rather than half-placed
            log.exception("submit failed")
            return [self._gateway_reject(order, now_ns, "internal_error")]

    def cancel(self, client_order_id: str, now_ns: int) -> list[OrderEvent]:
        """Ask to cancel a working order. The CANCELLED event comes when the request reaches the
        venue (from the market-event call that processes it); a request the venue will not act
        on is counted in ``stats()["cancel_rejected"]`` by reason. Returns [] (no event yet)."""
        if type(client_order_id) is not str or type(now_ns) is not int:
            self._cancel_rejected["bad_request"] += 1
            return []
        o = self._live.get(client_order_id)
        if o is None:
            self._cancel_rejected["too_late" if client_order_id in self._ids else "unknown_order"] += 1
            return []
        m = self._markets[o.symbol]
        arrival = max(now_ns + self._entry.draw_ns(), m.time, self._last_arrival)
        self._last_arrival = arrival
        self._seq += 1
        heapq.heappush(m.pending, (arrival, self._seq, _CANCEL, o))
        return []

    def expire(self, now_ns: int, symbol: str | None = None) -> list[OrderEvent]:
        """End of the trading day: every working order (of ``symbol``, or all) is EXPIRED."""
        if type(now_ns) is not int:
            self._count["bad_requests"] += 1
            return []
        for o in sorted(self._live.values(), key=lambda x: x.seq):
            if symbol is None or o.symbol == symbol:
                self._unlink(self._markets[o.symbol], o)
                self._finish(o, EXPIRED, self._stamp(now_ns), "end_of_day")
        return self._flush()[0]

    # -- market data -------------------------------------------------------------------

    def on_trade(self, trade: Trade) -> Result:
        """Apply one trade: arrivals before it, queue consumption, sweeps, stop triggers."""
        m = self._event_market(trade, Trade, _TRADE_FIELDS, "not_a_trade")
        if m is None:
            return NO_EVENTS
        ts, p, q = trade[1], trade[4], trade[5]
        if not ((type(p) is float or type(p) is int) and 0.0 < p < _INF):
            return self._bad("bad_price")
        if type(q) is not int or q <= 0:
            return self._bad("bad_qty")
        try:
            t = self._reach(m, ts)
            m.last = p
            if p < m.best_buy or p > m.best_sell:
                self._swept(m, p, t)
            tt = trade[6]
            if tt == _SELL_AGGRESSOR:
                lvl = m.buys.get(p)
                if lvl is not None:
                    self._consume(m, m.buys, lvl, q, t)
            elif tt == _BUY_AGGRESSOR:
                lvl = m.sells.get(p)
                if lvl is not None:
                    self._consume(m, m.sells, lvl, q, t)
            if p >= m.buy_stop or p <= m.sell_stop:
                self._trigger(m, p, t)
        except Exception:
            log.exception("trade processing failed")
            self._bad_market_data["internal_error"] += 1
        return self._flush()

    def on_book(self, snap: BookSnapshot) -> Result:
        """Apply one L2 snapshot: arrivals before it, queue positions, resting orders it crosses."""
        # _event_market's answer for a well-formed snapshot of a known symbol without the call
        # (books are the bulk of the feed); anything else is looked at there
        if not (type(snap) is BookSnapshot and len(snap) == _BOOK_FIELDS and type(snap[1]) is int
                and type(snap[0]) is str and (m := self._markets.get(snap[0])) is not None):
            m = self._event_market(snap, BookSnapshot, _BOOK_FIELDS, "not_a_book")
            if m is None:
                return NO_EVENTS
        bp, bq, ap, aq = snap[4], snap[5], snap[6], snap[7]
        obp, obq, oap, oaq = m.bid_px, m.bid_qty, m.ask_px, m.ask_qty
        problem = _side_problem(bp, bq, obp, obq, True) or _side_problem(ap, aq, oap, oaq, False)
        if problem is None and bp and ap and bp[0] >= ap[0]:
            problem = "crossed_book"
        if problem is not None:
            return self._bad(problem)
        try:
            # _reach, inline
            ts = snap[1]
            self._market_events += 1
            if m.pending and m.pending[0][0] < ts:
                self._arrivals(m, ts, True)
            t = ts if ts > m.time else m.time
            m.time = t
            m.stamp += 1
            # A side the snapshot did not change leaves our queues there as they are; one whose
            # prices stayed put is looked at only where its quantities changed.
            if m.buys and (bq != obq or bp != obp):
                if bp == obp:
                    self._requeue_changed(m.buys, bp, bq, obq)
                else:
                    self._requeue_side(m.buys, bp, bq, True, m.stamp)
            if m.sells and (aq != oaq or ap != oap):
                if ap == oap:
                    self._requeue_changed(m.sells, ap, aq, oaq)
                else:
                    self._requeue_side(m.sells, ap, aq, False, m.stamp)
            if m.touched:
                for lvl in m.touched:
                    lvl.traded = 0
                m.touched.clear()
            m.bid_px, m.bid_qty, m.ask_px, m.ask_qty = bp, bq, ap, aq
            m.has_book = True
            if m.taken_bid and bp != obp:
                m.taken_bid = {p: v for p, v in m.taken_bid.items() if p in bp}
            if m.taken_ask and ap != oap:
                m.taken_ask = {p: v for p, v in m.taken_ask.items() if p in ap}
            if ap and ap[0] <= m.best_buy:
                self._cross(m, 1, t)
            if bp and bp[0] >= m.best_sell:
                self._cross(m, -1, t)
        except Exception:
            log.exception("book processing failed")
            self._bad_market_data["internal_error"] += 1
        return self._flush() if self._ev else NO_EVENTS

    def on_market(self, events: Iterable[Any]) -> tuple[list[OrderEvent], list[Fill]]:
        """Apply trades and snapshots in order; what they caused, together."""
        evs: list[OrderEvent] = []
        fills: list[Fill] = []
        try:
            for e in events:
                t = type(e)
                if t is Trade:
                    r = self.on_trade(e)
                else:
                    r = self.on_book(e) if t is BookSnapshot else self._bad("unknown_event")
                if r[0]:
                    evs.extend(r[0])
                    fills.extend(r[1])
        except Exception:  # not iterable, or an iterator that fails: what came before it stands
            self._bad_market_data["bad_batch"] += 1
        return evs, fills

    def advance(self, now_ns: int) -> Result:
        """No more market data stamped up to ``now_ns`` is coming: process what arrives by then."""
        if type(now_ns) is not int:
            return self._bad("bad_timestamp")
        for m in self._markets.values():
            if m.pending and m.pending[0][0] <= now_ns:
                self._arrivals(m, now_ns, False)
            if m.time < now_ns:
                m.time = now_ns
        return self._flush() if self._ev else NO_EVENTS

    # -- views -------------------------------------------------------------------------

    def open_orders(self) -> list[OpenOrder]:
        out = []
        for o in sorted(self._live.values(), key=lambda x: x.seq):
            ahead = o.ahead if o.state == _RESTING and o.ahead < _UNKNOWN else -1
            out.append(OpenOrder(o.order, _STATE_NAMES[o.state], o.filled, o.leaves, o.price, ahead))
        return out

    def stats(self) -> dict:
        c = self._count
        return {"market_events": self._market_events, "submitted": c["submitted"], "accepted": c["accepted"],
                "fills": c["fills"], "filled_qty": c["filled_qty"], "fees": self._fees,
                "cancelled": c["cancelled"], "expired": c["expired"], "stops_triggered": c["stops_triggered"],
                "late_arrivals": c["late_arrivals"], "bad_requests": c["bad_requests"], "open_orders": len(self._live),
                "rejected": dict(self._rejected), "cancel_rejected": dict(self._cancel_rejected),
                "bad_market_data": dict(self._bad_market_data)}

    def market_data_delay_ns(self) -> int:
        """How long after its ts_event the strategy sees a market event (for a backtest's driver)."""
        return self._md.draw_ns()

    # -- internals: symbols, stamps, outcomes -----------------------------------------------

    def _market(self, symbol: str) -> _Market | None:
        m = self._markets.get(symbol)
        if m is None:
            try:
                tick = instrument_for(symbol).tick_size
            except UnknownInstrument:
                if symbol not in self._simulated:
                    return None
                tick = self.cfg.simulated_tick_size
            m = self._markets[symbol] = _Market(symbol, tick)
        return m

    def _event_market(self, ev: Any, cls: type, n_fields: int, not_one: str) -> _Market | None:
        """The market of a trade or snapshot whose type (with its field count: a tuple can be built
        past ``__new__``), symbol and time are good; None, counted by reason, otherwise."""
        if type(ev) is not cls or len(ev) != n_fields:
            reason = not_one
        else:
            sym = ev[0]
            m = self._markets.get(sym) if type(sym) is str else None
            if m is None and (type(sym) is not str or not sym):
                reason = "bad_symbol"
            elif m is None and (m := self._market(sym)) is None:
                reason = "unknown_symbol"
            elif type(ev[1]) is not int:
                reason = "bad_timestamp"
            else:
                return m
        self._bad_market_data[reason] += 1
        return None

    def _reach(self, m: _Market, ts: int) -> int:
        """A market event at ``ts``: what arrives before it goes first; the venue's time after it."""
        self._market_events += 1
        if m.pending and m.pending[0][0] < ts:
            self._arrivals(m, ts, True)
        t = ts if ts > m.time else m.time
        m.time = t
        return t

    @staticmethod
    def _off_grid(order: Order, tick: float) -> bool:
        prices = () if order.order_type == MARKET else \
            (order.price,) if order.order_type != STOP_LIMIT else (order.price, order.stop_price)
        return any(abs(p / tick - round(p / tick)) > _GRID_TOLERANCE for p in prices)

    def _gateway_reject(self, order: Any, now_ns: Any, reason: str) -> OrderEvent:
        self._rejected[reason] += 1
        ok = isinstance(order, Order) and len(order) == _ORDER_FIELDS
        return OrderEvent(_clean(order.client_order_id) if ok else "", _clean(order.account) if ok else "",
                          _clean(order.symbol) if ok else "", now_ns if type(now_ns) is int else 0, REJECTED, 0, 0,
                          _NAN, reason)

    def _bad(self, reason: str) -> Result:
        self._bad_market_data[reason] += 1
        return NO_EVENTS

    def _flush(self) -> Result:
        if not self._ev:  # every fill comes with its order event
            return NO_EVENTS
        out = (self._ev, self._fl)
        self._ev, self._fl = [], []
        return out

    def _stamp(self, t: int) -> int:
        """When the client learns of what the venue did at ``t``: the ack latency later, and never
        before an earlier message of the session (it comes back in order, as it went)."""
        ts = t + self._ack.draw_ns()
        if ts < self._last_ack:
            ts = self._last_ack
        self._last_ack = ts
        return ts

    def _event(self, o: _Order, ts: int, status: str, reason: str = "") -> None:
        avg = o.notional / o.filled if o.filled else _NAN
        self._ev.append(OrderEvent(o.coid, o.order.account, o.symbol, ts, status, o.filled,
                                   0 if status not in (ACCEPTED, PARTIALLY_FILLED) else o.leaves, avg, reason))

    def _finish(self, o: _Order, status: str, ts: int, reason: str) -> None:
        """``o`` ends with what it did not fill (CANCELLED, EXPIRED, REJECTED)."""
        o.state = _DONE
        self._live.pop(o.coid, None)
        self._count[status.lower()] += 1
        if status == REJECTED:
            self._rejected[reason] += 1
        self._event(o, ts, status, reason)

    def _fill(self, o: _Order, qty: int, price: float, liquidity: str, ts: int) -> None:
        o.leaves -= qty
        o.filled += qty
        o.notional += qty * price
        o.n_fills += 1
        fee = self._costs.fees(o.symbol, qty)
        self._fees += fee
        od = o.order
        self._fl.append(Fill(f"{o.coid}#{o.n_fills}", o.coid, od.account, o.symbol, ts, od.side, qty, price,
                             liquidity, fee, od.decision_id))
        self._count["fills"] += 1
        self._count["filled_qty"] += qty
        if o.leaves == 0:
            o.state = _DONE
            self._live.pop(o.coid, None)
            self._event(o, ts, FILLED)
        else:
            self._event(o, ts, PARTIALLY_FILLED)

    # -- internals: arrivals ------------------------------------------------------------

    def _arrivals(self, m: _Market, ts: int, strict: bool) -> None:
        """Process what reaches the venue before ``ts`` (strict) or by ``ts``."""
        pend = m.pending
        while pend and (pend[0][0] < ts if strict else pend[0][0] <= ts):
            arrival, _, what, o = heapq.heappop(pend)
            if arrival > m.time:
                m.time = arrival
            if what == _ORDER:
                self._arrive(m, o, arrival)
            elif o.state == _DONE:
                self._cancel_rejected["too_late"] += 1
            else:
                self._unlink(m, o)
                self._finish(o, CANCELLED, self._stamp(arrival), "client_cancel")

    def _band(self, m: _Market) -> float:
        """Half-width of the price band around the last trade (inf when off)."""
        cfg = self.cfg
        w = m.last * cfg.price_band_pct / 100.0 if cfg.price_band_pct > 0 else _INF
        if cfg.price_band_ticks > 0:
            w = min(w, cfg.price_band_ticks * m.tick)
        return w + 1e-9 * m.last  # a price exactly on the edge is inside

    def _arrive(self, m: _Market, o: _Order, arrival: int) -> None:
        if o.state == _DONE:  # expired on its way
            return
        ts = self._stamp(arrival)
        if not m.has_book or m.last != m.last:
            self._finish(o, REJECTED, ts, "no_market_data")
            return
        w = self._band(m)
        if o.otype != MARKET and (abs(o.price - m.last) > w or (o.otype == STOP_LIMIT and abs(o.stop - m.last) > w)):
            self._finish(o, REJECTED, ts, "price_band")
            return
        self._count["accepted"] += 1
        self._event(o, ts, ACCEPTED)
        if o.otype == STOP_LIMIT:
            if not (m.last >= o.stop if o.sign > 0 else m.last <= o.stop):
                o.state = _STOP
                m.stops.append(o)
                self._stop_bounds(m)
                return
            self._count["stops_triggered"] += 1
        self._execute(m, o, ts, w)

    def _execute(self, m: _Market, o: _Order, ts: int, band: float) -> None:
        """Take what the order's price reaches, then rest or cancel the remainder by its type and time in force."""
        sign = o.sign
        limit = m.last + sign * band if o.otype == MARKET else o.price
        if o.tif == FOK and self._available(m, sign, limit) < o.leaves:
            self._finish(o, CANCELLED, ts, "fok_not_fillable")
            return
        last = self._walk(m, o, limit, ts, False)
        if o.leaves == 0:
            return
        if o.tif != DAY:
            self._finish(o, CANCELLED, ts, "ioc_remainder")
            return
        if o.otype == MARKET:
            price = last
            if price != price:  # it took nothing: the touch, if the band reaches it
                px = m.ask_px if sign > 0 else m.bid_px
                price = px[0] if px and sign * (limit - px[0]) >= 0 else _NAN
            if not self._rest_remainder or price != price:
                self._finish(o, CANCELLED, ts, "no_liquidity")
                return
            o.price = price
        self._rest(m, o)

    def _opposite(self, m: _Market, sign: int) -> tuple[tuple, tuple, dict[float, int]]:
        return (m.ask_px, m.ask_qty, m.taken_ask) if sign > 0 else (m.bid_px, m.bid_qty, m.taken_bid)

    def _available(self, m: _Market, sign: int, limit: float) -> int:
        px, qty, taken = self._opposite(m, sign)
        total = 0
        for p, q in zip(px, qty):
            if sign * (p - limit) > 0:
                break
            total += max(0, q - taken.get(p, 0))
        return total

    def _walk(self, m: _Market, o: _Order, limit: float, ts: int, maker: bool) -> float:
        """Fill ``o`` from the opposite side's levels up to ``limit``, less our own takes: taker
        fills at each level's price, or (a resting order the book crossed) maker fills at its own.
        Returns the last price it took from (NaN: none)."""
        px, qty, taken = self._opposite(m, o.sign)
        sign = o.sign
        last = _NAN
        for p, q in zip(px, qty):
            if sign * (p - limit) > 0:
                break
            avail = q - taken.get(p, 0)
            if avail <= 0:
                continue
            f = int(avail if avail < o.leaves else o.leaves)  # int: a quantity 5.0 equal to 5 passed the check
            taken[p] = taken.get(p, 0) + f
            self._fill(o, f, o.price if maker else p, MAKER if maker else TAKER, ts)
            last = p
            if o.leaves == 0:
                break
        return last

    # -- internals: resting orders ------------------------------------------------------

    def _rest(self, m: _Market, o: _Order) -> None:
        """Queue ``o`` at its price behind what the book shows there and behind our earlier orders."""
        sign, price = o.sign, o.price
        px, qty = (m.bid_px, m.bid_qty) if sign > 0 else (m.ask_px, m.ask_qty)
        shown = -1 if px else 0  # beyond the visible depth unless the loop finds or passes the price
        for p, q in zip(px, qty):
            if p == price:
                shown = q
                break
            if sign * (p - price) < 0:  # passed it: the level is empty (or better than the touch)
                shown = 0
                break
        levels = m.buys if sign > 0 else m.sells
        lvl = levels.get(price)
        if lvl is None:
            lvl = levels[price] = _Level(price, shown)
        ahead = _UNKNOWN if shown < 0 else shown
        if lvl.orders and lvl.orders[-1].ahead > ahead:
            ahead = lvl.orders[-1].ahead
        o.ahead = ahead
        o.state = _RESTING
        lvl.orders.append(o)
        if sign > 0:
            m.best_buy = max(m.best_buy, price)
        else:
            m.best_sell = min(m.best_sell, price)

    def _unlink(self, m: _Market, o: _Order) -> None:
        """Take a working order out of the book or the stop list."""
        if o.state == _RESTING:
            levels = m.buys if o.sign > 0 else m.sells
            lvl = levels[o.price]
            lvl.orders.remove(o)
            if not lvl.orders:
                del levels[o.price]
                self._best(m)
        elif o.state == _STOP:
            m.stops.remove(o)
            self._stop_bounds(m)

    def _prune(self, m: _Market, levels: dict[float, _Level], lvl: _Level) -> None:
        """Drop the orders of ``lvl`` that are done (and the level once empty)."""
        lvl.orders = [o for o in lvl.orders if o.state == _RESTING]
        if not lvl.orders:
            del levels[lvl.price]
            self._best(m)

    @staticmethod
    def _best(m: _Market) -> None:
        m.best_buy = max(m.buys, default=-_INF)
        m.best_sell = min(m.sells, default=_INF)

    @staticmethod
    def _stop_bounds(m: _Market) -> None:
        m.buy_stop = min((o.stop for o in m.stops if o.sign > 0), default=_INF)
        m.sell_stop = max((o.stop for o in m.stops if o.sign < 0), default=-_INF)

    def _consume(self, m: _Market, levels: dict[float, _Level], lvl: _Level, q: int, t: int) -> None:
        """A trade of ``q`` at ``lvl``'s price against its side: the queue ahead first, then ours in order."""
        if not lvl.traded:
            m.touched.append(lvl)
        lvl.traded += q
        r = q
        ts = 0
        for o in lvl.orders:
            a = o.ahead
            if r > a:
                f = r - a if r - a < o.leaves else o.leaves
                o.ahead = 0
                ts = ts or self._stamp(t)
                self._fill(o, f, lvl.price, MAKER, ts)
                r -= f
                if r <= 0:
                    break
            else:
                o.ahead = a - r
        if ts:
            self._prune(m, levels, lvl)

    def _swept(self, m: _Market, p: float, t: int) -> None:
        """A trade through our prices: every order there fills in full at its price."""
        ts = self._stamp(t)
        hit = []
        if p < m.best_buy:
            hit += [(m.buys, x) for x in sorted((x for x in m.buys if x > p), reverse=True)]
        if p > m.best_sell:
            hit += [(m.sells, x) for x in sorted(x for x in m.sells if x < p)]
        for levels, price in hit:
            for o in levels.pop(price).orders:
                o.ahead = 0
                self._fill(o, o.leaves, price, MAKER, ts)
        self._best(m)

    def _cross(self, m: _Market, sign: int, t: int) -> None:
        """The opposite side of a new snapshot reaches our resting prices: fill them, best price first."""
        levels = m.buys if sign > 0 else m.sells
        touch = m.ask_px[0] if sign > 0 else m.bid_px[0]
        ts = self._stamp(t)
        for price in sorted((x for x in levels if sign * (x - touch) >= 0), reverse=sign > 0):
            lvl = levels[price]
            for o in lvl.orders:
                self._walk(m, o, price, ts, True)
                if o.leaves:  # the crossing side is used up at this price
                    break
            self._prune(m, levels, lvl)

    def _trigger(self, m: _Market, p: float, t: int) -> None:
        fired = [o for o in m.stops if (p >= o.stop if o.sign > 0 else p <= o.stop)]
        m.stops = [o for o in m.stops if o not in fired]
        self._stop_bounds(m)
        ts = self._stamp(t)
        band = self._band(m)
        for o in fired:
            self._count["stops_triggered"] += 1
            self._execute(m, o, ts, band)

    def _requeue_side(self, levels: dict[float, _Level], px: tuple, qty: tuple, bids: bool, stamp: int) -> None:
        """Bring our levels of one side to what the new snapshot shows there."""
        seen = 0
        get = levels.get
        for p, q in zip(px, qty):
            lvl = get(p)
            if lvl is not None:
                lvl.seen = stamp
                seen += 1
                if q != lvl.shown:
                    self._requeue(lvl, q)
        if seen < len(levels):  # our prices the snapshot skipped: empty if inside the visible range
            edge = px[-1] if px else None
            for lvl in levels.values():
                if lvl.seen != stamp and (edge is None or (lvl.price > edge if bids else lvl.price < edge)):
                    if lvl.shown:
                        self._requeue(lvl, 0)

    def _requeue_changed(self, levels: dict[float, _Level], px: tuple, qty: tuple, old_qty: tuple) -> None:
        """The same prices as before: only the levels whose quantity changed (found by C-level passes)."""
        get = levels.get
        for i in compress(range(len(px)), map(ne, qty, old_qty)):
            lvl = get(px[i])
            if lvl is not None:
                self._requeue(lvl, qty[i])

    def _requeue(self, lvl: _Level, q: int) -> None:
        old = lvl.shown
        if self._probabilistic and old > 0 and q < old - lvl.traded:
            self._cancels_ahead(lvl, old - lvl.traded, q)
        if old < 0 or q < old:
            for o in lvl.orders:
                if o.ahead > q:
                    o.ahead = int(q)
        lvl.shown = q

    def _cancels_ahead(self, lvl: _Level, before: int, after: int) -> None:
        """``before - after`` contracts left the level without trading: each order advances by
        them with probability a^n / (a^n + b^n); one draw for the level keeps the orders in order."""
        c = before - after
        n = self.cfg.cancel_power
        u = -1.0
        floor = 0
        for o in lvl.orders:
            a = o.ahead
            if 0 < a < _UNKNOWN:
                b = before - a if before > a else 0
                an, bn = (a, b) if n == 1.0 else (a ** n, b ** n)
                if u < 0.0:
                    u = self._rng.random()
                if u < an / (an + bn):
                    a = a - c if a > c else 0
            if a < floor:
                a = floor
            o.ahead = floor = a

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict:
        """JSON-able: books, working orders with their queue positions, ids used, counters, generators."""
        orders = []
        for o in sorted(self._live.values(), key=lambda x: x.seq):
            d = o.order._asdict()
            d["price"], d["stop_price"] = _out(d["price"]), _out(d["stop_price"])
            orders.append({"order": d, "price": _out(o.price), "leaves": o.leaves, "filled": o.filled,
                           "notional": o.notional, "ahead": o.ahead, "n_fills": o.n_fills, "state": o.state,
                           "seq": o.seq})
        markets = {}
        for s, m in self._markets.items():
            markets[s] = {"book": [list(m.bid_px), list(m.bid_qty), list(m.ask_px), list(m.ask_qty)],
                          "has_book": m.has_book, "last": _out(m.last), "time": m.time,
                          "taken_bid": list(m.taken_bid.items()), "taken_ask": list(m.taken_ask.items()),
                          "levels": [[sign, lv.price, lv.shown, lv.traded]
                                     for sign, levels in ((1, m.buys), (-1, m.sells)) for lv in levels.values()],
                          "pending": [[a, seq, what, o.coid] for a, seq, what, o in m.pending if o.state != _DONE]}
        return {"version": 1, "seq": self._seq, "last_arrival": self._last_arrival, "last_ack": self._last_ack,
                "ids": sorted(self._ids),
                "orders": orders, "markets": markets, "market_events": self._market_events, "fees": self._fees,
                "count": dict(self._count), "rejected": dict(self._rejected),
                "cancel_rejected": dict(self._cancel_rejected), "bad_market_data": dict(self._bad_market_data),
                "rng": {"queue": list(self._rng.getstate()), "entry": self._entry.state(), "ack": self._ack.state(),
                        "market_data": self._md.state()}}

    def load_state(self, d: dict) -> None:
        """Restore what :meth:`state` returned (the config is this instance's own)."""
        if d.get("version") != 1:
            raise ValueError(f"unknown exchange state version {d.get('version')!r}")
        self._seq, self._last_arrival, self._last_ack = int(d["seq"]), int(d["last_arrival"]), int(d["last_ack"])
        self._ids = set(d["ids"])
        self._market_events, self._fees = int(d["market_events"]), float(d["fees"])
        self._count, self._rejected = Counter(d["count"]), Counter(d["rejected"])
        self._cancel_rejected, self._bad_market_data = Counter(d["cancel_rejected"]), Counter(d["bad_market_data"])
        version, internal, gauss = d["rng"]["queue"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._entry.load_state(d["rng"]["entry"])
        self._ack.load_state(d["rng"]["ack"])
        self._md.load_state(d["rng"]["market_data"])
        self._live = {}
        for r in d["orders"]:
            od = dict(r["order"])
            od["price"], od["stop_price"] = _in(od["price"]), _in(od["stop_price"])
            o = _Order(Order(**od), int(r["seq"]))
            o.price, o.leaves, o.filled, o.notional = _in(r["price"]), r["leaves"], r["filled"], r["notional"]
            o.ahead, o.n_fills, o.state = r["ahead"], r["n_fills"], r["state"]
            self._live[o.coid] = o
        self._markets = {}
        for s, r in d["markets"].items():
            m = self._market(s)
            if m is None:
                raise ValueError(f"state holds symbol {s!r}, which this exchange does not trade")
            bp, bq, ap, aq = r["book"]
            m.bid_px, m.bid_qty, m.ask_px, m.ask_qty = tuple(bp), tuple(bq), tuple(ap), tuple(aq)
            m.has_book, m.last, m.time = r["has_book"], _in(r["last"]), int(r["time"])
            m.taken_bid = {float(p): int(q) for p, q in r["taken_bid"]}
            m.taken_ask = {float(p): int(q) for p, q in r["taken_ask"]}
            for sign, price, shown, traded in r["levels"]:
                lvl = _Level(float(price), int(shown))
                lvl.traded = int(traded)
                (m.buys if sign > 0 else m.sells)[lvl.price] = lvl
                if lvl.traded:
                    m.touched.append(lvl)
            m.pending = [(a, seq, what, self._live[coid]) for a, seq, what, coid in r["pending"]]
            heapq.heapify(m.pending)
        for o in sorted(self._live.values(), key=lambda x: x.seq):
            m = self._markets[o.symbol]
            if o.state == _RESTING:
                (m.buys if o.sign > 0 else m.sells)[o.price].orders.append(o)
            elif o.state == _STOP:
                m.stops.append(o)
        for m in self._markets.values():
            self._best(m)
            self._stop_bounds(m)
