"""ProfitDLLVenue: the live venue, a broker reached through ProfitDLL in the isolated DLL host.

It implements :class:`pipelines.execution.engine.Venue`, the interface of the simulated exchange,
so the execution engine, its policies and the risk engine are the same code in paper and live
trading; only this class differs (NautilusTrader's lesson: one kernel, a venue client per venue).

How it talks to the broker: through an :class:`OrderLink` (the bridge's order client:
commands to the host, order updates back with sequence numbers; the host dedupes commands by
our client order id, so a command re-sent after a time-out is not sent twice).

What it makes of the broker's answers:

- ``submit``: the host's reply. Accepted by the host -> SUBMITTED (the broker's own acceptance
  comes later as an update); refused (rate cap, a DLL error code, a bad token) -> REJECTED with
  the host's or the DLL's text; no answer in time, or "unknown" (the host died inside the DLL
  call) -> SUBMITTED and *unconfirmed*: the next :meth:`reconcile` settles it from the broker's
  order list (at the broker: followed; not there: REJECTED "not at the broker").
- updates are cumulative, as the DLL reports an order (traded quantity and average price so
  far), so fills are the differences: filled ``f0 -> f1`` at average ``a1`` is one fill of
  ``f1 - f0`` at ``(a1 * f1 - a0 * f0) / (f1 - f0)``, snapped to the tick when it is within
  1e-6 of one (two executions between updates make one fill at their average). Fill ids are
  ``<client order id>#<n>``, numbered by the cumulative quantity they end at
  (``#<filled after>``), so the same broker state always gives the same ids, whoever derives
  them and however often: nothing lost or doubled across a restart of the host or of the actor.
  A snapshot behind what is known (fewer contracts filled) is counted and ignored.
- time: events and fills are stamped with the engine's event time when it learns of them (the
  market data's clock), not the broker's: the broker's clock is another clock, and one ahead of
  the market data would make the risk engine see the market as stale. The broker's own time is
  used only before any market data has been seen.
- liquidity: the DLL does not say. A MARKET order's fills are TAKER; a limit's fills are MAKER
  once the broker has acknowledged it as working, TAKER before. Fees: the B3 cost model, per
  contract, as in the simulated exchange.
- ``expire``: DAY orders end at the broker, which reports them: nothing is ended locally.
- :meth:`reconcile` (at start and after the host restarted or was unreachable): the broker's
  orders and positions are read; each of our orders takes the broker's state (fills derived as
  above); the broker's orders we do not know are counted (``foreign_orders``) and left alone;
  positions are returned for the engine to compare (the broker is the truth; see
  ``ExecutionEngine.reconcile``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any, Iterable, Protocol

from pipelines.execution.costs import CostModel
from pipelines.model.orders import (ACCEPTED, FILLED, MAKER, MARKET, PARTIALLY_FILLED, REJECTED,
                                    STATUSES, SUBMITTED, TAKER, TERMINAL, Fill, Order, OrderEvent)

log = logging.getLogger("quantumtrader.execution.profitdll")

STATE_VERSION = 1
SNAP = 1e-6  # a derived fill price this close to a tick is that tick
POLL_EVERY_S = 0.001


class LinkError(RuntimeError):
    """The host did not answer in time (or the link is down)."""


# What "no answer" looks like: ours, or the order client's RequestTimeout (a TimeoutError).
NO_ANSWER = (LinkError, TimeoutError)


class OrderLink(Protocol):
    """What the venue needs of the bridge's order client."""

    def request(self, cmd: str, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The host's reply (``ok`` and the command's fields); raises one of :data:`NO_ANSWER` on no answer."""
        ...

    def poll_updates(self, max_updates: int) -> list[Any]:
        """Order updates since the last call (dicts or NamedTuples with the fields of
        ``pipelines.adapters.bridge.orders.OrderUpdate``), in the host's sequence, gaps resynced."""
        ...

    def take_reconnected(self) -> bool:
        """True once after the host restarted or the link came back: time to reconcile."""
        ...


class _Tracked:
    """One of our orders as the broker last described it."""

    __slots__ = ("order", "status", "filled", "avg", "confirmed", "working", "local_id")

    def __init__(self, order: Order):
        self.order = order
        self.status = SUBMITTED
        self.filled = 0
        self.avg = math.nan
        self.confirmed = False  # the host said it sent the order to the DLL
        self.working = False  # the broker acknowledged it (a limit's later fills are MAKER)
        self.local_id = 0


class ProfitDLLVenue:
    """The :class:`~pipelines.execution.engine.Venue` of a ProfitDLL broker account (module doc)."""

    def __init__(self, link: OrderLink, account: str, *, costs: CostModel | None = None,
                 tick_sizes: dict[str, float] | None = None, request_timeout_s: float = 2.0,
                 max_updates: int = 10_000):
        self.link = link
        self.account = account
        self.costs = costs or CostModel()
        self.ticks = dict(tick_sizes or {})
        self.timeout_s = request_timeout_s
        self.max_updates = max_updates
        self._orders: dict[str, _Tracked] = {}
        self.count: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.last_reconcile: dict[str, Any] | None = None
        self._polled = -math.inf

    # -- the Venue interface ------------------------------------------------------------

    def submit(self, order: Order, now_ns: int) -> list[OrderEvent]:
        t = self._orders.get(order.client_order_id)
        if t is not None:  # the engine never sends an id twice; a replay after a restart may
            self.count["submit_again"] += 1
            return []
        t = self._orders[order.client_order_id] = _Tracked(order)
        self.count["submitted"] += 1
        args = {"coid": order.client_order_id, "symbol": order.symbol, "side": order.side,
                "type": order.order_type, "quantity": order.quantity,
                "price": None if math.isnan(order.price) else order.price,
                "stop_price": None if math.isnan(order.stop_price) else order.stop_price}
        try:
            reply = self.link.request("send", args, self.timeout_s)
        except NO_ANSWER as e:
            self.count["send_unanswered"] += 1
            log.warning("order %s: no answer from the DLL host (%s); the next reconcile settles it",
                        order.client_order_id, e)
            return [self._event(t, now_ns, SUBMITTED)]
        if reply.get("ok"):
            t.confirmed = True
            t.local_id = int(reply.get("local_id") or 0)
            return [self._event(t, now_ns, SUBMITTED)]
        if reply.get("unknown"):
            self.count["send_unknown"] += 1
            return [self._event(t, now_ns, SUBMITTED)]
        reason = str(reply.get("error") or "refused by the DLL host")
        self.rejected[reason.split(":")[0][:60]] += 1
        t.status = REJECTED
        del self._orders[order.client_order_id]
        return [self._event(t, now_ns, REJECTED, reason)]

    def cancel(self, client_order_id: str, now_ns: int) -> list[OrderEvent]:
        t = self._orders.get(client_order_id)
        if t is None:
            self.count["cancel_unknown"] += 1
            return []
        try:
            reply = self.link.request("cancel", {"coid": client_order_id}, self.timeout_s)
        except NO_ANSWER:
            self.count["cancel_unanswered"] += 1  # the engine asks again (its cancel retry)
            return []
        if not reply.get("ok"):
            self.count["cancel_refused"] += 1
        return []  # CANCELLED comes as the broker's update

    def on_trade(self, trade: Any) -> tuple[list[OrderEvent], list[Fill]]:
        return [], []

    def on_book(self, snap: Any) -> tuple[list[OrderEvent], list[Fill]]:
        return [], []

    def advance(self, now_ns: int) -> tuple[list[OrderEvent], list[Fill]]:
        """The broker's updates that arrived since the last call (the link is read at most every
        ``POLL_EVERY_S`` of wall time: the engine calls this after every market event)."""
        events: list[OrderEvent] = []
        fills: list[Fill] = []
        t = time.monotonic()
        if t - self._polled < POLL_EVERY_S:
            return events, fills
        self._polled = t
        for u in self.link.poll_updates(self.max_updates):
            self.apply_update(u, events, fills, now_ns)
        return events, fills

    def expire(self, now_ns: int, symbol: str | None = None) -> list[OrderEvent]:
        return []

    # -- broker state -> events and fills ----------------------------------------------

    def apply_update(self, u: Any, events: list[OrderEvent], fills: list[Fill], now_ns: int = 0) -> None:
        """One cumulative order snapshot from the broker (module doc): appends what changed,
        stamped ``now_ns`` (the engine's event time when it learns of it; the broker's own time
        when that is 0, before any market data)."""
        if hasattr(u, "_asdict"):
            u = u._asdict()
        if not isinstance(u, dict) or u.get("kind", "order") != "order":
            self.count["updates_other"] += 1
            return
        coid = u.get("coid")
        t = self._orders.get(coid) if isinstance(coid, str) else None
        if t is None:
            self.count["updates_not_ours"] += 1
            return
        try:
            status, filled = str(u["status"]), int(u["filled"])
            avg = float(u["avg_price"]) if u.get("avg_price") is not None else math.nan
            leaves = int(u.get("leaves") or 0)
            ts = now_ns or int(u["ts_event"])
            if status not in STATUSES or filled < 0 or filled > t.order.quantity:
                raise ValueError(status)
        except (KeyError, TypeError, ValueError):
            self.count["updates_bad"] += 1
            return
        if filled < t.filled:
            self.count["updates_behind"] += 1
            return
        t.confirmed = True
        t.local_id = int(u.get("local_id") or t.local_id or 0)
        new_fill = filled > t.filled
        if new_fill:
            if not math.isfinite(avg) or avg <= 0:
                self.count["updates_bad"] += 1
                return
            q = filled - t.filled
            done = 0.0 if t.filled == 0 else t.avg * t.filled
            price = self._snap(t.order.symbol, (avg * filled - done) / q)
            liquidity = TAKER if t.order.order_type == MARKET or not t.working else MAKER
            fills.append(Fill(f"{t.order.client_order_id}#{filled}", t.order.client_order_id, self.account,
                              t.order.symbol, ts, t.order.side, q, price, liquidity,
                              self.costs.fees(t.order.symbol, q), t.order.decision_id))
            t.filled, t.avg = filled, avg
            self.count["fills"] += 1
        if status == SUBMITTED and t.status != SUBMITTED:
            status = t.status  # a late "received" after the broker's acceptance does not move the order back
        if status in (SUBMITTED, ACCEPTED) and t.filled:
            status = PARTIALLY_FILLED
        elif status == FILLED and t.filled < t.order.quantity:
            status = PARTIALLY_FILLED  # FILLED waits for the fills that make it
        if status in (ACCEPTED, PARTIALLY_FILLED):
            t.working = True
        if status != t.status or new_fill:
            t.status = status
            leaves = 0 if status in TERMINAL else max(0, min(leaves, t.order.quantity - t.filled))
            reason = str(u.get("text") or "") if status in TERMINAL and status != FILLED else ""
            events.append(OrderEvent(coid, self.account, t.order.symbol, ts, status, t.filled, leaves,
                                     t.avg, reason))
        if status in TERMINAL:
            del self._orders[coid]

    def reconcile(self, now_ns: int) -> tuple[list[OrderEvent], list[Fill], dict[str, Any]]:
        """The broker's orders and positions read and applied (module doc). Returns the events and
        fills that brings, and a report: the broker's positions by symbol, counts of what differed.
        Raises one of :data:`NO_ANSWER` when the host does not answer (the caller tries again later)."""
        reply = self.link.request("orders", {}, self.timeout_s)
        if not reply.get("ok"):
            raise LinkError(f"orders refused by the DLL host: {reply.get('error')}")
        events: list[OrderEvent] = []
        fills: list[Fill] = []
        seen = set()
        foreign = 0
        orders = reply.get("orders")
        if not isinstance(orders, list):
            raise LinkError(f"orders reply without an order list: {type(orders).__name__}")
        for u in orders:
            coid = u.get("coid") if isinstance(u, dict) else None
            if coid in self._orders:
                seen.add(coid)
                self.apply_update(u, events, fills, now_ns)
            else:
                foreign += 1
        missing = [coid for coid in self._orders if coid not in seen]
        for coid in missing:  # ours, not at the broker: never sent (or sent and unknown to it)
            t = self._orders.pop(coid)
            events.append(OrderEvent(coid, self.account, t.order.symbol, now_ns, REJECTED, t.filled, 0, t.avg,
                                     "not at the broker (reconcile)"))
        symbols = sorted({*self.ticks})
        pos_reply = self.link.request("positions", {"symbols": symbols}, self.timeout_s)
        if not pos_reply.get("ok"):
            raise LinkError(f"positions refused by the DLL host: {pos_reply.get('error')}")
        positions = {}
        for sym, p in (pos_reply.get("positions") or {}).items() if isinstance(pos_reply.get("positions"), dict) else ():
            try:  # a position the engine can compare: an integer quantity and a finite average price
                q, avg = p["quantity"], float(p.get("avg_price") or 0.0)
                if type(q) is not int or not math.isfinite(avg):
                    raise TypeError
                positions[sym] = {"quantity": q, "avg_price": avg}
            except (KeyError, TypeError, ValueError, AttributeError):
                self.count["positions_bad"] += 1
        report = {"ts": now_ns, "foreign_orders": foreign, "missing_orders": len(missing),
                  "fills": len(fills), "positions": positions}
        self.count["reconciles"] += 1
        self.count["foreign_orders"] += foreign
        self.count["missing_orders"] += len(missing)
        self.last_reconcile = report
        return events, fills, report

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict:
        return {"version": STATE_VERSION, "orders": [
            {"order": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in t.order._asdict().items()},
             "status": t.status, "filled": t.filled, "avg": None if math.isnan(t.avg) else t.avg,
             "confirmed": t.confirmed, "working": t.working, "local_id": t.local_id}
            for t in self._orders.values()], "count": dict(self.count), "rejected": dict(self.rejected)}

    def load_state(self, d: dict) -> None:
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"unknown ProfitDLL venue state version {d.get('version')!r}")
        self._orders = {}
        for r in d["orders"]:
            od = {k: (math.nan if v is None and k in ("price", "stop_price") else v) for k, v in r["order"].items()}
            t = _Tracked(Order(**od))
            t.status, t.filled = r["status"], int(r["filled"])
            t.avg = math.nan if r["avg"] is None else float(r["avg"])
            t.confirmed, t.working, t.local_id = bool(r["confirmed"]), bool(r["working"]), int(r["local_id"])
            self._orders[t.order.client_order_id] = t
        self.count, self.rejected = Counter(d["count"]), Counter(d["rejected"])

    def stats(self) -> dict:
        return {"venue": "profitdll", "working": len(self._orders), **self.count,
                "rejected": dict(self.rejected), "last_reconcile": self.last_reconcile}

    def working(self) -> Iterable[str]:
        return tuple(self._orders)

    # -- helpers -------------------------------------------------------------------------

    def _snap(self, symbol: str, price: float) -> float:
        tick = self.ticks.get(symbol)
        if tick:
            k = round(price / tick)
            if abs(k * tick - price) <= SNAP:
                return round(k * tick, 10)
        return price

    def _event(self, t: _Tracked, now_ns: int, status: str, reason: str = "") -> OrderEvent:
        leaves = 0 if status in TERMINAL else t.order.quantity - t.filled
        return OrderEvent(t.order.client_order_id, self.account, t.order.symbol, now_ns, status, t.filled, leaves,
                          t.avg, reason)
