"""The execution kernel of one account: policy, risk, venue, positions and attribution wired in one place.

:class:`ExecutionEngine` is what the live execution actor and the backtest both run, unchanged;
only the venue differs (the :class:`Venue` Protocol: the simulated exchange here, a broker
gateway later). It is told what happens (market data, decisions, kill-switch commands) and
answers each call with a :class:`Step`: what it sent, what the venue said, the fills, the
positions they changed, the risk events, the account summary and the decision outcomes, for the
caller to store and publish.

Order of work for one market event (``on_market`` takes a batch and runs each in turn):

1. the clock moves to the event's time (never back); a new Sao Paulo day expires the working
   orders at the venue and starts a new P&L day (``PositionBook.new_day``);
2. the venue applies it, then ``advance`` (market data up to now has been seen): its order
   events and fills. Each fill goes to the positions, then to the decision ledger
   (:class:`~pipelines.execution.attribution.DecisionLedger`: FIFO lots by decision; a decision
   none of whose contracts is open any more is a ``DecisionOutcome`` in the Step, net of its
   share of the fees), then to its symbol's policy (brackets follow the position); a position
   that returns to flat or flips closes a round trip, whose net P&L (gross realized minus the
   fees of its fills, the flipping fill's fee shared by quantity) goes to the risk engine's
   consecutive-loss rule. Each order event goes to the risk engine (working orders) and the
   policy (timeouts, crosses);
3. a trade marks the position, the risk engine's last price and the policy's tape;
4. the risk engine re-evaluates the account; a flatten it asks for (daily loss, drawdown, the
   kill switch) is carried out at once: every working order cancelled, and for every open
   position a reduce-only market order, sent as soon as no order on the closing side is still
   working (the risk engine counts working orders in the worst case, so a stop still working
   would make the close look like it could overshoot), and again every ``flatten_retry_s``
   while the position stays open;
5. every policy sees the time (passive timeouts, the flatten before the close).

Every order a policy makes passes :meth:`RiskEngine.check` before the venue; a denied one is
not sent, its :class:`RiskEvent` is in the Step and the policy is told it was rejected.
Cancels pass :meth:`RiskEngine.check_cancel`; one refused by the cancel rate is asked again
once the rate window (1 s of event time) has passed: by the policy that follows the order
(told with ``on_cancel_denied``), else by the engine itself. A policy sends an order that
replaces others only when the venue has ended them (see :mod:`pipelines.execution.policy`),
so every order event of an order it still expects is routed to it. Event time only: ``now`` is the highest event
time seen (market events, decisions, commands), never the wall clock.

Bad input (not a decision, another symbol, a malformed event, a bad time) is counted by
reason in ``stats()["ignored"]`` and the parts' own counters; nothing raises out of the
public methods on bad data.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Iterable, NamedTuple, Protocol, Sequence

from pipelines.execution.attribution import DecisionLedger
from pipelines.execution.config import ExecutionConfig
from pipelines.execution.exchange import SimulatedExchange
from pipelines.execution.policy import ExecutionPolicy, PolicyOutput
from pipelines.execution.positions import PositionBook
from pipelines.model.clock import NS_PER_S, SessionDay
from pipelines.model.messages import BookSnapshot, Decision, Trade
from pipelines.model.orders import (
    BUY,
    FLATTEN,
    MARKET,
    REJECTED,
    SELL,
    SUBMITTED,
    TAKER,
    TERMINAL,
    AccountSummary,
    DecisionOutcome,
    Fill,
    Order,
    OrderEvent,
    Position,
    RiskEvent,
    client_order_id,
    side_sign,
)
from pipelines.model.settings import INT64_MAX
from pipelines.risk.config import RiskConfig
from pipelines.risk.engine import REDUCING, RiskEngine

log = logging.getLogger("quantumtrader.execution")

STATE_VERSION = 1
RATE_WINDOW_NS = NS_PER_S  # the risk engine's rate limits count per second of event time
VenueResult = tuple[Sequence[OrderEvent], Sequence[Fill]]


class Venue(Protocol):
    """Where orders go: what the engine needs of a venue (the simulated exchange, or a broker's
    gateway). Every OrderEvent and Fill it returns is of this engine's orders."""

    def submit(self, order: Order, now_ns: int) -> list[OrderEvent]:
        """[SUBMITTED], or [REJECTED] with the gateway's reason."""
        ...

    def cancel(self, client_order_id: str, now_ns: int) -> list[OrderEvent]:
        """Ask to cancel; the CANCELLED event may come now or from a later call."""
        ...

    def on_trade(self, trade: Trade) -> VenueResult: ...

    def on_book(self, snap: BookSnapshot) -> VenueResult: ...

    def advance(self, now_ns: int) -> VenueResult:
        """Market data up to ``now_ns`` has been seen: what the venue did by then."""
        ...

    def expire(self, now_ns: int, symbol: str | None = None) -> list[OrderEvent]: ...

    def state(self) -> dict: ...

    def load_state(self, d: dict) -> None: ...

    def stats(self) -> dict: ...


class Step(NamedTuple):
    """What one call did, in order: what the actor stores and publishes."""

    orders: list[Order]  # sent to the venue (its answer is in order_events)
    order_events: list[OrderEvent]
    fills: list[Fill]
    positions: list[Position]  # one per symbol a fill or a mark of an open position changed
    risk_events: list[RiskEvent]  # denials and trading-state changes
    account: AccountSummary | None  # when a position changed or a new P&L day began
    outcomes: list[DecisionOutcome]  # decisions whose every contract the fills closed, in order


class _Work:
    """What the current call collects."""

    __slots__ = ("orders", "events", "fills", "outcomes", "touched", "new_day")

    def __init__(self) -> None:
        self.orders: list[Order] = []
        self.events: list[OrderEvent] = []
        self.fills: list[Fill] = []
        self.outcomes: list[DecisionOutcome] = []
        self.touched: set[str] = set()
        self.new_day = False


def _is_ns(x: Any) -> bool:
    return type(x) is int and 0 <= x <= INT64_MAX


def _none(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def _nan(x: Any) -> Any:
    return math.nan if x is None else x


class ExecutionEngine:
    """One account on several symbols: policies, risk engine, venue and positions (module doc)."""

    def __init__(self, cfg: ExecutionConfig, risk: RiskConfig, symbols: tuple[str, ...], *,
                 tick_sizes: dict[str, float] | None = None, venue: Venue | None = None, id_scope: str = ""):
        """``id_scope``: the prefix of every client order id (``pipelines.model.orders.client_order_id``)."""
        symbols = tuple(symbols)
        if not symbols or not all(isinstance(s, str) and s for s in symbols) or len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be distinct non-empty strings, got {symbols!r}")
        self.cfg = cfg
        self.account = cfg.account
        self.symbols = symbols
        self.venue: Venue = SimulatedExchange(cfg.exchange) if venue is None else venue
        self.positions = PositionBook(cfg.account)
        self.ledger = DecisionLedger(cfg.account)
        self.risk = RiskEngine(self.positions, risk, account_id=cfg.account)
        ticks = tick_sizes or {}
        self.id_scope = id_scope
        self.policies = {s: ExecutionPolicy(cfg.account, s, cfg.policy, tick_size=ticks.get(s), id_scope=id_scope,
                                            entry_gate=self._risk_gate)
                         for s in symbols}
        self._retry_ns = round(cfg.policy.flatten_retry_s * NS_PER_S)
        self._now = 0
        self._clock = SessionDay()
        self._books: dict[str, BookSnapshot] = {}
        self._working: dict[str, Order] = {}  # sent and not terminal, by client order id
        self._cancelling: set[str] = set()
        self._cancel_retry: dict[str, int] = {}  # the engine's own refused cancels -> when to ask again
        self._trips: dict[str, float] = {}  # symbol -> net P&L of the open round trip so far
        self._flatten: dict[str, int] = {}  # symbol waiting to be closed -> when its last close was sent
        self._flatten_n = 0  # the engine's own flatten orders, for their ids
        self.counts: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()

    # -- inputs ---------------------------------------------------------------------------

    def on_market(self, events: Iterable[Any]) -> Step:
        """Trades and book snapshots, in order (other kinds counted and ignored)."""
        w = _Work()
        try:
            it = iter(events)
        except TypeError:
            self.ignored["bad_batch"] += 1
            return self._finish(w)
        for ev in it:
            self._on_event(ev, w)
        return self._finish(w)

    def _risk_gate(self) -> str | None:
        """What the policy reads before an entry: REDUCING (a cooldown, the daily loss near its
        limit) lets only orders that reduce pass, so a flip goes out as a close."""
        return "risk_reducing" if self.risk.trading_state == REDUCING else None

    def on_decision(self, decision: Decision) -> Step:
        """The orders ``decision`` causes, each through the risk engine to the venue."""
        w = _Work()
        if not isinstance(decision, Decision):
            self.ignored["not_a_decision"] += 1
            return self._finish(w)
        policy = self.policies.get(decision.symbol) if isinstance(decision.symbol, str) else None
        if policy is None:
            self.ignored["other_symbol"] += 1
            return self._finish(w)
        if _is_ns(decision.ts_event):
            self._tick(decision.ts_event, w)
        self.counts["decisions"] += 1
        sym = decision.symbol
        out = policy.on_decision(decision, self.positions.position(sym), self._books.get(sym), self._now)
        self._route(out, w)
        self._account_step(w)
        return self._finish(w)

    def command(self, kind: str, who: str, reason: str, now: int, command_id: str = "") -> Step:
        """The kill switch: ``halt`` | ``resume`` | ``flatten`` (a flatten acts at once).
        ``command_id``: the channel's id of the command (moves the risk engine's cursor)."""
        w = _Work()
        if _is_ns(now):
            self._tick(now, w)
        self.counts[f"command_{kind}" if kind in ("halt", "resume", "flatten") else "command_other"] += 1
        self.risk.apply_command(command_id if isinstance(command_id, str) else "",
                                {"command": kind, "who": who, "reason": reason if isinstance(reason, str) else ""},
                                now if _is_ns(now) else self._now)
        self._account_step(w)
        return self._finish(w)

    # -- views ----------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return self._now

    def poll_venue(self) -> Step:
        """What a live venue reported without market data (its fills and order events arrive on
        their own; the actor calls this on its timer). The simulated exchange has nothing then."""
        w = _Work()
        r = self.venue.advance(self._now)
        if r[0] or r[1]:
            self._venue_result(r, w)
            self._account_step(w)
        return self._finish(w)

    def reconcile(self, now_ns: int) -> Step:
        """A live venue's broker read and applied (at start and after the link came back): our
        orders take the broker's state, and a position that still differs from the broker's is
        set to it by an adjusting fill (the broker is the truth): ``reconcile:<SYM>:<n>``, at the
        broker's average price when it holds a position, else at our last price, without fees,
        decision id ``reconcile``. Each adjustment is counted and logged. The simulated exchange
        has no broker: nothing happens. Raises what the venue raises when the broker does not answer."""
        w = _Work()
        read = getattr(self.venue, "reconcile", None)
        if read is None:
            return self._finish(w)
        if now_ns > self._now:
            self._tick(now_ns, w)
        events, fills, report = read(self._now)
        self._venue_result((events, fills), w)
        for sym, broker in sorted(report.get("positions", {}).items()):
            if sym not in self.policies or not isinstance(broker, dict):
                continue
            ours = self.positions.position(sym)
            diff = int(broker.get("quantity", 0)) - ours.quantity
            if not diff:
                continue
            avg = broker.get("avg_price")
            price = float(avg) if broker.get("quantity") and avg else ours.last_price
            self.counts["reconcile_adjustments"] += 1
            n = self.counts["reconcile_adjustments"]
            log.warning("reconcile %s %s: broker holds %s, we held %d: adjusting by %+d at %s",
                        self.account, sym, broker.get("quantity"), ours.quantity, diff, price)
            fill = Fill(f"reconcile:{sym}:{n}", f"reconcile:{sym}:{n}", self.account, sym, self._now,
                        BUY if diff > 0 else SELL, abs(diff), price, TAKER, 0.0, "reconcile")
            self.positions.apply(fill)
            w.fills.append(fill)
            w.touched.add(sym)
        self._account_step(w)
        return self._finish(w)

    def working(self) -> list[Order]:
        """Orders sent to the venue and not finished."""
        return list(self._working.values())

    def stats(self) -> dict[str, Any]:
        return {"account": self.account, "now": self._now, "counts": dict(self.counts),
                "ignored": dict(self.ignored), "working_orders": len(self._working),
                "positions": dict(self.positions.quantities()), "day_pnl_net": self.positions.day_pnl_net(),
                "risk": self.risk.stats(), "exchange": self.venue.stats(), "attribution": self.ledger.stats(),
                "policies": {s: {"rejected": dict(p.rejected), "counts": dict(p.counts)}
                             for s, p in self.policies.items()}}

    # -- the work ---------------------------------------------------------------------------

    def _on_event(self, ev: Any, w: _Work) -> None:
        kind = type(ev)
        if kind is not Trade and kind is not BookSnapshot:
            self.ignored["not_market_data"] += 1
            return
        sym, ts = ev.symbol, ev.ts_event
        if not isinstance(sym, str) or sym not in self.policies:
            self.ignored["other_symbol"] += 1
            return
        if not (type(ts) is int and 0 <= ts <= INT64_MAX):  # _is_ns, inline: this runs on every market event
            self.ignored["bad_time"] += 1
            return
        if ts > self._now:
            self._tick(ts, w)
        # a venue result with nothing in it (the usual case) is not handed on
        venue = self.venue
        r = venue.on_trade(ev) if kind is Trade else venue.on_book(ev)
        if r[0] or r[1]:
            self._venue_result(r, w)
        r = venue.advance(self._now)
        if r[0] or r[1]:
            self._venue_result(r, w)
        if kind is Trade:
            if self.positions.quantity(sym):
                w.touched.add(sym)
            self.positions.mark(sym, ev.price, ts)
            self.risk.on_trade(sym, ev.price, ts)
            self.policies[sym].on_trade(ev)
        elif ev.bid_px and ev.ask_px:
            self._books[sym] = ev
        self._account_step(w)
        quantity = self.positions.quantity
        for s, p in self.policies.items():
            out = p.on_time(self._now, ev if s == sym and kind is BookSnapshot else None, quantity(s))
            if out.orders or out.cancels:
                self._route(out, w)

    def _tick(self, ts: int, w: _Work) -> None:
        """The clock moves to ``ts`` (never back); a new Sao Paulo day is a new P&L day."""
        if ts <= self._now:
            return
        self._now = ts
        if self._clock.update(ts):
            # DAY orders end with their session; the venue says so before anything of the new day
            self._venue_result((self.venue.expire(ts), ()), w)
            self.positions.new_day()
            w.new_day = True
            self.counts["new_day"] += 1

    def _account_step(self, w: _Work) -> None:
        """The account limits, and a flatten the risk engine asks for."""
        self.risk.on_account(self._now)
        if self.risk.flatten_requested:
            self.counts["flatten"] += 1
            for coid in list(self._working):
                self._cancel(self._working[coid].symbol, coid, w)
            for sym, qty in self.positions.quantities().items():
                if qty and sym in self.policies:
                    self._flatten.setdefault(sym, -INT64_MAX)
            self.risk.acknowledge_flatten()
        if self._cancel_retry:  # checked here: this runs on every market event
            self._retry_cancels(w)
        if self._flatten:
            self._close_positions(w)

    def _retry_cancels(self, w: _Work) -> None:
        for coid, at in list(self._cancel_retry.items()):
            order = self._working.get(coid)
            if order is None:
                del self._cancel_retry[coid]  # ended meanwhile
            elif self._now >= at:
                del self._cancel_retry[coid]
                self.counts["cancel_retries"] += 1
                self._cancel(order.symbol, coid, w)

    def _close_positions(self, w: _Work) -> None:
        for sym in list(self._flatten):
            qty = self.positions.position(sym).quantity
            if qty == 0:
                del self._flatten[sym]
                continue
            closing = SELL if qty > 0 else BUY
            if any(o.symbol == sym and o.side == closing for o in self._working.values()):
                continue  # a close or a stop is still working (or its cancel is on its way)
            if self._now - self._flatten[sym] < self._retry_ns:
                continue
            self._flatten[sym] = self._now
            self._flatten_n += 1
            did = f"{self.account}:{sym}:risk.{self._flatten_n}"
            order = Order(client_order_id(did, FLATTEN, self.id_scope), self.account, sym, self._now, closing, abs(qty), MARKET,
                          decision_id=did, reduce_only=True)
            self._send(order, w, None)

    def _route(self, out: PolicyOutput, w: _Work) -> None:
        """A policy's answer: cancels first (the venue then meets them before the new orders)."""
        for coid in out.cancels:
            order = self._working.get(coid)
            if order is not None:
                self._cancel(order.symbol, coid, w)
            else:
                self.counts["cancel_not_working"] += 1  # not sent (denied) or already finished
        for order in out.orders:
            self._send(order, w, self.policies.get(order.symbol))

    def _send(self, order: Order, w: _Work, policy: ExecutionPolicy | None) -> None:
        denial = self.risk.check(order, self._now)
        if denial is not None:
            self.counts["denied"] += 1
            if policy is not None:  # it was never sent: the policy must not wait for it
                self._route(policy.on_order_event(OrderEvent(
                    order.client_order_id, order.account, order.symbol, self._now, REJECTED, 0, 0, math.nan,
                    f"risk: {denial.reason}")), w)
            return
        self.counts["orders"] += 1
        w.orders.append(order)
        self._working[order.client_order_id] = order
        self._venue_result((self.venue.submit(order, self._now), ()), w)

    def _cancel(self, symbol: str, coid: str, w: _Work) -> None:
        if coid in self._cancelling:
            return
        if self.risk.check_cancel(symbol, coid, self._now) is not None:
            # refused by the cancel rate: asked again once the rate window has passed, by the
            # policy that follows the order, else by the engine (its own closes)
            self.counts["cancel_denied"] += 1
            retry = self._now + RATE_WINDOW_NS
            policy = self.policies.get(symbol)
            if policy is None or not policy.on_cancel_denied(coid, retry):
                self._cancel_retry[coid] = retry
            return
        self._cancel_retry.pop(coid, None)
        self._cancelling.add(coid)
        self.counts["cancels"] += 1
        self._venue_result((self.venue.cancel(coid, self._now), ()), w)

    def _venue_result(self, result: VenueResult, w: _Work) -> None:
        # Fills before events: the policy learns a fill before the FILLED that ends the order.
        events, fills = result
        for f in fills:
            self._on_fill(f, w)
        for e in events:
            self._on_order_event(e, w)

    def _on_fill(self, fill: Fill, w: _Work) -> None:
        sym = fill.symbol
        if fill.account != self.account or sym not in self.policies:
            self.ignored["other_fill"] += 1
            return
        before = self.positions.position(sym)
        dupes = self.positions.duplicate_fills
        after = self.positions.apply(fill)
        if self.positions.duplicate_fills != dupes:
            return
        w.fills.append(fill)
        w.touched.add(sym)
        self.counts["fills"] += 1
        outcomes = self.ledger.on_fill(fill)
        self.counts["outcomes"] += len(outcomes)
        w.outcomes.extend(outcomes)
        self._round_trip(before, after, fill)
        self._route(self.policies[sym].on_fill(fill, after), w)

    def _round_trip(self, before: Position, after: Position, fill: Fill) -> None:
        """Net P&L per round trip (flat -> open -> flat, a flip closing one and opening the next)."""
        sym, was, now = fill.symbol, before.quantity, after.quantity
        realized = after.realized_pnl - before.realized_pnl
        closing = min(fill.quantity, abs(was)) if was and (was > 0) != (side_sign(fill.side) > 0) else 0
        closed_fee = fill.fees * closing / fill.quantity
        trip = self._trips.get(sym, 0.0) + realized - (closed_fee if closing else fill.fees)
        if was != 0 and (now == 0 or (now > 0) != (was > 0)):
            self.counts["round_trips"] += 1
            self.risk.on_trade_closed(trip, fill.ts_event)
            trip = -(fill.fees - closed_fee) if now else 0.0
        self._trips[sym] = trip

    def _on_order_event(self, e: OrderEvent, w: _Work) -> None:
        order = self._working.get(e.client_order_id)
        if order is None:
            self.ignored["event_unknown_order"] += 1
            return
        w.events.append(e)
        if e.status in TERMINAL:
            del self._working[e.client_order_id]
            self._cancelling.discard(e.client_order_id)
        elif e.status != SUBMITTED:
            self.counts[f"event_{e.status.lower()}"] += 1
        self.risk.on_order_event(e)
        policy = self.policies[order.symbol]
        # Only orders the policy follows (not the engine's own closes): an order its fills
        # completed still ends with this event, which may release an order waiting for it.
        if policy.expects(e.client_order_id):
            self._route(policy.on_order_event(e), w)

    def _finish(self, w: _Work) -> Step:
        positions = [self.positions.position(s) for s in sorted(w.touched)]
        account = self.positions.summary(self._now) if positions or w.new_day else None
        return Step(w.orders, w.events, w.fills, positions, self.risk.drain_events(), account, w.outcomes)

    # -- restart ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-able (NaN as None): everything a restarted engine needs to continue."""
        return {
            "version": STATE_VERSION, "account": self.account, "symbols": list(self.symbols), "now": self._now,
            "venue": self.venue.state(), "positions": self.positions.state(), "ledger": self.ledger.state(),
            "risk": self.risk.state(),
            "policies": {s: p.state() for s, p in self.policies.items()},
            "books": {s: [b.symbol, b.ts_event, b.ts_recv, b.seq, list(b.bid_px), list(b.bid_qty), list(b.ask_px),
                          list(b.ask_qty)] for s, b in self._books.items()},
            "working": [{k: _none(v) for k, v in o._asdict().items()} for o in self._working.values()],
            "cancelling": sorted(self._cancelling), "cancel_retry": dict(self._cancel_retry),
            "trips": dict(self._trips),
            "flatten": dict(self._flatten), "flatten_n": self._flatten_n,
            "counts": dict(self.counts), "ignored": dict(self.ignored),
        }

    def load_state(self, d: dict[str, Any]) -> None:
        """Continue from :meth:`state`. Raises ValueError for another account or symbol set (a
        wiring error); a risk state that cannot be read halts the risk engine (its own rule)."""
        if not isinstance(d, dict) or d.get("version") != STATE_VERSION:
            raise ValueError(f"unknown execution state version {d.get('version') if isinstance(d, dict) else d!r}")
        if d.get("account") != self.account or tuple(d.get("symbols", ())) != self.symbols:
            raise ValueError(f"state is for {d.get('account')!r} {d.get('symbols')!r}, "
                             f"not {self.account!r} {list(self.symbols)!r}")
        self.venue.load_state(d["venue"])
        self.positions.load_state(d["positions"])
        self.ledger = DecisionLedger(self.account)  # a state saved before the ledger existed: no open lots
        if "ledger" in d:
            self.ledger.load_state(d["ledger"])
        self.risk.load_state(d["risk"])
        for s, p in self.policies.items():
            p.load_state(d["policies"][s])
        self._now = int(d["now"])
        self._clock = SessionDay()
        if self._now:
            self._clock.update(self._now)
        self._books = {s: BookSnapshot(b[0], b[1], b[2], b[3], *map(tuple, b[4:])) for s, b in d["books"].items()}
        self._working = {}
        for o in d["working"]:
            order = Order(**{**o, "price": _nan(o["price"]), "stop_price": _nan(o["stop_price"])})
            self._working[order.client_order_id] = order
        self._cancelling = set(d["cancelling"])
        self._cancel_retry = {k: int(v) for k, v in d.get("cancel_retry", {}).items()}
        self._trips = {s: float(v) for s, v in d["trips"].items()}
        self._flatten = {s: int(v) for s, v in d["flatten"].items()}
        self._flatten_n = int(d["flatten_n"])
        self.counts, self.ignored = Counter(d["counts"]), Counter(d["ignored"])
