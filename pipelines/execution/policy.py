"""The execution policy: how one account's decisions on one symbol become orders.

:class:`ExecutionPolicy` is a plain, deterministic state machine on event time. It is told
what happens (a decision, a book, a trade, a fill, an order's event, the time) and answers
with the orders to submit and the client order ids to cancel (:class:`PolicyOutput`); it
sends nothing itself.

Rules
-----
- **Target.** BUY size -> +size contracts, SELL size -> -size, HOLD keeps the position (or,
  with ``hold_flattens``, targets 0). The order is for ``target - position``: position +2
  and SELL 1 sell 3. It is ``reduce_only`` when it only brings the position toward zero.
  ``position`` is what is filled; a decision with another target cancels the working entry
  orders of earlier decisions first, and one with the same target as the working (or
  waiting) entry leaves it alone (a passive order keeps its place in the queue).
- **Replacements wait for their cancels.** Until the venue ends an order the risk engine
  counts it as working (worst case, so two orders in flight can't pass one at a time), and
  until then it may still fill. So an order that replaces others (a decision's entry while
  earlier entries are being cancelled, a close while the brackets rest, the flatten) is held
  back until the venue has ended every order it waits for (CANCELLED, or FILLED / EXPIRED /
  REJECTED) and no order of ours on its side is working: such orders (the stop-loss and
  take-profit of a close) are cancelled first. It is then sized from the position as filled
  meanwhile, once, under the decision's client order id; a newer decision replaces a waiting
  one, and the flatten replaces both.
- **Refused cancels are asked again.** A cancel the caller could not send (the risk engine's
  cancel rate) is reported with :meth:`ExecutionPolicy.on_cancel_denied` and re-requested at
  the first call at or after the time given there.
- **Idempotent.** Client order ids come from the decision id and the order's role
  (:func:`pipelines.model.orders.client_order_id`); a decision id already seen, or an order
  id already sent, makes nothing; :meth:`ExecutionPolicy.state` and ``load_state`` carry
  that memory (and the working orders) across a restart.
- **Style** (``style``): ``market``; ``marketable_limit``, a limit ``marketable_ticks``
  through the touch (best ask + N ticks for a buy, best bid - N ticks for a sell), IOC;
  ``passive``, a limit at the own side's best (best bid for a buy, best ask for a sell),
  DAY, cancelled ``passive_timeout_s`` of event time after it was sent. On ``cross`` the
  rest is then sent as a marketable limit (role ``cross``) once the venue confirms the
  cancel: only then is the filled part known, so a fill racing the cancel can't be bought
  twice. An entry needs the top of book (a valid two-sided, uncrossed book) unless it is a
  market order; an order that only reduces goes at market when there is none.
- **Brackets** (``brackets``): while a position is open it is protected by a stop-loss and
  a take-profit for its whole size, both reduce-only and OCO. For a long at average entry
  ``P``: the stop triggers at ``P - stop_loss_ticks`` ticks (rounded down to the tick grid)
  and is a stop-limit whose limit is ``stop_limit_offset_ticks`` ticks below the trigger
  (so it fills through a fast market but never at any price); the take-profit is a limit at
  ``P + take_profit_ticks`` ticks (rounded up). A short mirrors it. ``P`` is the average
  price of the :class:`Position` given with the fill (or the entry order's average fill
  when only a number is given). Every fill re-sizes the pair to the position: a fill that
  adds re-prices it; a fill of one leg, even partial, cancels the other and re-sends it for
  what is left; a flat position cancels both. The pair is re-sent (cancel and a new order;
  roles ``sl`` and ``tp`` the first time, then ``sl.<n>``, ``tp.<n>`` with n counting the
  policy's placements, so no id is used twice) because orders are not modified in place; the
  new legs go once the old ones are ended and no other order on their side is working (a
  close that did not fill puts them back).
- **Session** (Sao Paulo, :mod:`pipelines.model.clock` and :mod:`pipelines.model.contracts`):
  a session runs 09:00-18:00 on B3 business days (13:00-18:00 on Ash Wednesday, B3's late
  open); weekends and B3 holidays have none (``calendar: weekdays`` ignores holidays, for the
  simulator). No new entries before the open, in the first ``opening_auction_min`` (the
  opening auction's uncross: 09:00-09:05 by default), within ``auction_quiet_s`` after an
  auction print (``TradeType.AUCTION``, e.g. a volatility auction), from the flatten time on,
  or after the close. Orders that only reduce are still sent; a flip is cut to a close.
- **Flatten** at ``flatten_before_close_min`` before the close (17:55 by default): working
  orders are cancelled and the position is closed by a reduce-only market order (role
  ``flat``, decision id ``<account>:<symbol>:<date>``), at once when nothing was working, else
  when the venue has confirmed those cancels; if a position is still open ``flatten_retry_s``
  later, again (``flat.2`` ...). Entries resume at the next session.

Time moves only with the event time the calls carry (``now_ns``, and the times of fills and
order events), never the wall clock: the caller calls ``on_time`` on every book or trade, so
a timeout or the flatten time fires at the first event at or after it (live, a feed heartbeat
in exchange time keeps it punctual when the market is quiet).

Every input that can't be used is counted in :attr:`ExecutionPolicy.rejected` by reason
(bad shapes, another symbol, a repeated decision, an entry refused and why); nothing raises
out of the public methods on bad data. What the policy did is counted in ``counts``.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from datetime import date
from typing import Any, Callable, NamedTuple

from pipelines.execution.policy_config import (
    MARKET_STYLE,
    MARKETABLE_LIMIT_STYLE,
    ON_TIMEOUT_CROSS,
    PASSIVE_STYLE,
    PolicyConfig,
)
from pipelines.model.clock import NS_PER_MIN, NS_PER_S, SessionDay, day_bounds_ns
from pipelines.model.contracts import CalendarError, trading_session
from pipelines.model.instruments import instrument_for
from pipelines.model.messages import BookSnapshot, Decision, Trade, TradeType
from pipelines.model.settings import INT64_MAX
from pipelines.model.orders import (
    BUY,
    CANCELLED,
    CROSS,
    DAY,
    ENTRY,
    EXPIRED,
    FLATTEN,
    IOC,
    LIMIT,
    MARKET,
    REJECTED,
    SELL,
    SIDES,
    STATUSES,
    STOP_LIMIT,
    STOP_LOSS,
    TAKE_PROFIT,
    TERMINAL,
    Fill,
    Order,
    OrderEvent,
    Position,
    client_order_id,
    order_problem,
    side_sign,
)

HOLD = "HOLD"
_new = tuple.__new__


class PolicyOutput(NamedTuple):
    """What to do now: orders to submit, then client order ids to cancel."""

    orders: list[Order]
    cancels: list[str]


class _Window(NamedTuple):
    open_ns: int
    entries_ns: int  # the opening auction window is over
    flatten_ns: int  # == close_ns when flattening is off
    close_ns: int


class _Recent:
    """The last ``size`` ids seen, the oldest forgotten first (bounded memory over weeks)."""

    def __init__(self, size: int, ids: list[str] = ()) -> None:
        self.size = size
        self._ids: dict[str, None] = {}
        for i in ids:
            self.add(i)

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def add(self, key: str) -> None:
        self._ids[key] = None
        if len(self._ids) > self.size:
            del self._ids[next(iter(self._ids))]

    def ids(self) -> list[str]:
        return list(self._ids)


class _Working:
    """One of our orders the venue may still fill."""

    __slots__ = ("order", "role", "target", "deadline", "filled", "value", "reported", "cancelling",
                 "cross_on_cancel", "retry_at")

    def __init__(self, order: Order, role: str, target: int, deadline: int | None) -> None:
        self.order = order
        self.role = role
        self.target = target  # the position the order works toward
        self.deadline = deadline  # event time a passive entry is cancelled at
        self.filled = 0  # from fills
        self.value = 0.0  # sum of price x quantity of its fills
        self.reported = 0  # cumulative filled quantity the venue reported in events
        self.cancelling = False
        self.cross_on_cancel = False
        self.retry_at: int | None = None  # a refused cancel is asked again from this event time

    @property
    def leaves(self) -> int:
        # fills and events may arrive in either order; each counts what it knows
        return self.order.quantity - max(self.filled, self.reported)


class _Pending:
    """An order held back until the venue has ended the orders in ``waits`` (a cancel confirmed,
    or the terminal event of an order its fills completed): until then the risk engine still
    counts them as working, and their fills still move the position the order is sized from."""

    __slots__ = ("role", "target", "decision_id", "style", "cap", "waits")

    def __init__(self, role: str, target: int, decision_id: str, style: str, cap: int | None,
                 waits: set[str]) -> None:
        self.role, self.target, self.decision_id, self.style, self.cap = role, target, decision_id, style, cap
        self.waits = waits

    def state(self) -> dict:
        return {"role": self.role, "target": self.target, "decision_id": self.decision_id, "style": self.style,
                "cap": self.cap, "waits": sorted(self.waits)}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _time_ok(x: Any) -> bool:
    # ns since the epoch as int64: beyond it the calendar's datetimes overflow
    return _is_int(x) and 0 <= x <= INT64_MAX


_FLOAT_MAX = sys.float_info.max


def _price_ok(x: Any) -> bool:
    # compared, not math.isfinite(): an int too large for a float must be refused, not raise
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= _FLOAT_MAX


def _best(levels: Any) -> Any:
    return levels[0] if isinstance(levels, (tuple, list)) and levels else None


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


class ExecutionPolicy:
    """One account's execution policy on one symbol (see the module docstring for the rules)."""

    def __init__(self, account: str, symbol: str, cfg: PolicyConfig = PolicyConfig(), *,
                 tick_size: float | None = None, id_scope: str = "",
                 entry_gate: Callable[[], str | None] | None = None) -> None:
        """``id_scope``: the prefix of every client order id it makes (see ``client_order_id``).
        ``entry_gate``: why the account takes no new entry now (e.g. its risk engine reduces only),
        or None; while it says so a flip is cut to a close, as outside the session, instead of
        going out whole to be denied and leave the position open."""
        if tick_size is None:
            tick_size = instrument_for(symbol).tick_size  # unknown contract: a wiring error, raised here
        if not _price_ok(tick_size):
            raise ValueError(f"tick_size must be a positive number, got {tick_size!r}")
        self.account, self.symbol, self.cfg, self.tick = account, symbol, cfg, float(tick_size)
        self.id_scope = id_scope
        self._entry_gate = entry_gate
        self.position = 0  # signed contracts filled, as last told
        self.rejected: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._timeout_ns = round(cfg.passive_timeout_s * NS_PER_S)
        self._quiet_ns = round(cfg.auction_quiet_s * NS_PER_S)
        self._retry_ns = round(cfg.flatten_retry_s * NS_PER_S)
        self._top: tuple[float, float] | None = None  # best bid, best ask of the last valid book
        self._working: dict[str, _Working] = {}
        self._decisions = _Recent(cfg.remember_ids)
        self._orders = _Recent(cfg.remember_ids)
        self._fills = _Recent(cfg.remember_ids)
        self._now = 0
        self._auction_ns: int | None = None
        self._day = SessionDay()
        self._window_day: date | None = None
        self._window: _Window | None = None
        self._no_window = "no_session"
        self._day_end = 0  # the end of the window's Sao Paulo day
        self._quiet_until = 0  # before this event time the flatten step has nothing to do (see _advance)
        self._flattened: date | None = None  # the session already flattened
        self._flatten_v = 0
        self._flatten_ns = 0
        self._bracket_decision = ""
        self._bracket_v = 0
        self._bracket_long = True
        self._sl = (math.nan, math.nan)  # stop trigger, limit
        self._tp = math.nan
        self._legs_due = False  # the stop-loss and take-profit are to be (re)placed when nothing is in their way
        self._pending: _Pending | None = None  # the order waiting for the venue to end others first
        self._unsettled: dict[str, str] = {}  # completed by fills, no terminal event yet: id -> side

    # -- inputs ---------------------------------------------------------------------------

    def on_decision(self, decision: Decision, position: int | Position, book: BookSnapshot | None,
                    now_ns: int) -> PolicyOutput:
        """The orders ``decision`` causes at event time ``now_ns`` given the filled
        ``position`` and the latest ``book`` (None: keep the last one)."""
        out = PolicyOutput([], [])
        if not self._advance(now_ns, position, book, out):
            return out
        problem = self._decision_problem(decision)
        if problem:
            self.rejected[problem] += 1
            return out
        self._decisions.add(decision.decision_id)
        if decision.action == HOLD and not self.cfg.hold_flattens:
            self.rejected["hold"] += 1
            return out
        target = {BUY: decision.size, SELL: -decision.size}.get(decision.action, 0)
        p = self._pending
        if p is not None and p.role == FLATTEN:
            self.rejected["flattening"] += 1  # the flatten closes the position once its cancels are confirmed
            return out
        toward = [w for w in self._working.values()
                  if w.role in (ENTRY, CROSS) and (not w.cancelling or w.cross_on_cancel)]
        if any(w.target == target for w in toward) or (p is not None and p.target == target):
            self.rejected["target_working"] += 1
            return out
        for w in toward:
            w.cross_on_cancel = False
            self._cancel(w, out)
        # every earlier entry must be over (cancelled now or before) before this one is sized
        waits = {cid for cid, w in self._working.items() if w.role in (ENTRY, CROSS)}
        if p is not None:
            self.counts["superseded"] += 1
            waits |= p.waits
        self._pending = _Pending(ENTRY, target, decision.decision_id, self.cfg.style, None, waits)
        self._release(out)
        return out

    def on_time(self, now_ns: int, book: BookSnapshot | None = None,
                position: int | Position | None = None) -> PolicyOutput:
        """Event time has reached ``now_ns``: passive timeouts and the flatten time."""
        out = _new(PolicyOutput, ([], []))  # PolicyOutput([], []) without its __new__ (every market event)
        self._advance(now_ns, position, book, out)
        return out

    def on_trade(self, trade: Trade) -> None:
        """A print on the tape: auction prints hold entries back for ``auction_quiet_s``."""
        if not isinstance(trade, Trade) or trade.symbol != self.symbol or not _time_ok(trade.ts_event):
            self.rejected["bad_trade"] += 1
            return
        if trade.trade_type == TradeType.AUCTION:
            self._auction_ns = max(self._auction_ns or trade.ts_event, trade.ts_event)

    def on_fill(self, fill: Fill, position: int | Position) -> PolicyOutput:
        """One of the account's fills on this symbol and the ``position`` after it:
        brackets follow the position."""
        out = PolicyOutput([], [])
        problem = self._fill_problem(fill)
        pos = self._position_of(position)
        if problem or pos is None:
            self.rejected[problem or "bad_position"] += 1
            return out
        if fill.fill_id in self._fills:
            self.rejected["duplicate_fill"] += 1
            return out
        self._fills.add(fill.fill_id)
        self._now = max(self._now, fill.ts_event)
        w = self._working.get(fill.client_order_id)
        if w is None:
            self.rejected["fill_unknown_order"] += 1  # not ours (or forgotten): the position still counts
        else:
            w.filled += fill.quantity
            w.value += fill.quantity * fill.price
            if w.leaves <= 0:
                del self._working[fill.client_order_id]
                self._unsettle(fill.client_order_id, w.order.side)
        self.position = pos
        if pos == 0:
            for leg in self._legs():
                self._cancel(leg, out)
        elif self.cfg.brackets and not self._flattening():
            self._bracket(fill, w, position)
        self._retry_cancels(out)
        self._release(out)
        return out

    def on_order_event(self, event: OrderEvent) -> PolicyOutput:
        """A step in the life of one of our orders; a cancelled passive entry may cross."""
        out = PolicyOutput([], [])
        if not isinstance(event, OrderEvent) or event.symbol != self.symbol or event.status not in STATUSES \
                or not isinstance(event.client_order_id, str) or not _is_int(event.filled_qty) \
                or event.filled_qty < 0 or not _time_ok(event.ts_event):
            self.rejected["bad_order_event"] += 1
            return out
        cid = event.client_order_id
        w = self._working.get(cid)
        if w is None and cid not in self._unsettled:
            self.rejected["event_unknown_order"] += 1
            return out
        self._now = max(self._now, event.ts_event)
        if w is None:  # the end of an order its fills completed: the venue no longer counts it
            if event.status in TERMINAL:
                del self._unsettled[cid]
                self._settled(cid)
        else:
            w.reported = max(w.reported, event.filled_qty)
            if event.status == REJECTED:
                self.counts[f"venue_rejected_{w.role}"] += 1
            if event.status in TERMINAL or w.leaves <= 0:
                del self._working[cid]
                if event.status in TERMINAL:
                    self._settled(cid)
                else:
                    self._unsettle(cid, w.order.side)
                if event.status in (CANCELLED, EXPIRED) and w.cross_on_cancel and w.leaves > 0:
                    if self._pending is None:
                        self.counts["crossed"] += 1
                        self._pending = _Pending(CROSS, w.target, w.order.decision_id, MARKETABLE_LIMIT_STYLE,
                                                 w.leaves, set())
                    else:
                        self.rejected["cross_superseded"] += 1
        self._retry_cancels(out)
        self._release(out)
        return out

    def on_cancel_denied(self, client_order_id: str, retry_ns: int) -> bool:
        """The cancel of ``client_order_id`` was refused (the risk engine's cancel rate): it is
        asked again at the first call at or after event time ``retry_ns``. False: not ours."""
        w = self._working.get(client_order_id) if isinstance(client_order_id, str) else None
        if w is None or not _time_ok(retry_ns):
            self.rejected["cancel_denied_unknown"] += 1
            return False
        if not w.cancelling:  # a cancel the policy did not ask for (a flatten of the risk engine's)
            w.cross_on_cancel = False
        w.cancelling = True
        w.retry_at = retry_ns
        self.counts["cancel_denied"] += 1
        return True

    def working(self) -> list[Order]:
        """Our orders the venue may still fill (cancels pending included)."""
        return [w.order for w in self._working.values()]

    def expects(self, client_order_id: str) -> bool:
        """Whether the venue's events for ``client_order_id`` are of use here: the order is
        working, or its fills completed it and its terminal event has not come yet."""
        return client_order_id in self._working or client_order_id in self._unsettled

    # -- the rules ------------------------------------------------------------------------

    def _advance(self, now_ns: Any, position: Any, book: Any, out: PolicyOutput) -> bool:
        """Take the time, position and book of a call; run what time triggers."""
        # The exact types first (the engine's every market event), the general checks after.
        if not (type(now_ns) is int and 0 <= now_ns <= INT64_MAX or _time_ok(now_ns)):
            self.rejected["bad_time"] += 1
            return False
        pos = position if type(position) is int else None if position is None else self._position_of(position)
        if position is not None and pos is None:
            self.rejected["bad_position"] += 1
            return False
        if book is not None:
            self._see_book(book)
        if now_ns < self._now:
            self.counts["late_time"] += 1  # taken, but timers keep the latest time seen
        self._now = max(self._now, now_ns)
        if pos is not None:
            self.position = pos
        if self._now < self._quiet_until and not self._working and self._pending is None and not self._legs_due:
            return True  # nothing working, waiting or due: the rest would do nothing (most market events)
        self._flatten_step(out)
        if self._working:  # checked here: this runs on every market event
            for w in list(self._working.values()):
                if w.deadline is not None and not w.cancelling and self._now >= w.deadline:
                    self.counts["timeout"] += 1
                    w.cross_on_cancel = self.cfg.on_timeout == ON_TIMEOUT_CROSS
                    self._cancel(w, out)
            self._retry_cancels(out)
        self._release(out)
        return True

    def _release(self, out: PolicyOutput) -> None:
        """Send the pending order once the venue has ended what it waits for and nothing of
        ours on its side is left working; then the brackets, if due."""
        p = self._pending
        if p is not None:
            if p.waits:
                return
            qty = -self.position if p.role == FLATTEN else self._plan(p.target, p.cap)
            if qty:
                side = BUY if qty > 0 else SELL
                # the risk engine counts these with the order (worst case): cancel them, send after
                busy = {cid for cid, s in self._unsettled.items() if s == side}
                for cid, w in self._working.items():
                    if w.order.side == side:
                        busy.add(cid)
                        if w.role in (STOP_LOSS, TAKE_PROFIT):
                            self._legs_due = True  # put back for what is left once the order is done
                        self._cancel(w, out)
                if busy:
                    p.waits = busy
                    return
            self._pending = None
            if qty and p.role == FLATTEN:
                self._flatten_v += 1
                role = FLATTEN if self._flatten_v == 1 else f"{FLATTEN}.{self._flatten_v}"
                order = Order(client_order_id(p.decision_id, role, self.id_scope), self.account, self.symbol, self._now,
                              SELL if qty < 0 else BUY, abs(qty), MARKET, decision_id=p.decision_id,
                              reduce_only=True)
                self._submit(order, FLATTEN, 0, None, out)
                self._flatten_ns = self._now
            elif qty:
                self._send(qty, p, out)
        self._sync_legs(out)

    def _plan(self, target: int, cap: int | None) -> int:
        """Signed contracts toward ``target`` (at most ``cap``) within the entry rules; 0: none."""
        pos = self.position
        qty = target - pos
        if cap is not None:
            qty = max(-cap, min(cap, qty))
        if qty == 0:
            self.rejected["no_change"] += 1
            return 0
        reduces = pos != 0 and (qty > 0) != (pos > 0)
        blocked = self._entry_block()
        if blocked:
            self.rejected[f"no_entry_{blocked}"] += 1
            if not reduces:
                return 0
            if self._flattening() and any(w.role == FLATTEN and not w.cancelling for w in self._working.values()):
                self.rejected["flattening"] += 1  # the flatten order already closes the position
                return 0
            qty = max(-abs(pos), min(abs(pos), qty))  # a flip is cut to a close
        return qty

    def _send(self, qty: int, p: _Pending, out: PolicyOutput) -> None:
        pos = self.position
        reduce_only = pos != 0 and (qty > 0) != (pos > 0) and abs(qty) <= abs(pos)
        order = self._priced(client_order_id(p.decision_id, p.role, self.id_scope), qty, reduce_only, p.decision_id, p.style)
        if order is None:
            self.rejected["no_book"] += 1
            return
        passive = order.order_type == LIMIT and order.time_in_force == DAY
        self._submit(order, p.role, p.target, self._now + self._timeout_ns if passive else None, out)

    def _priced(self, cid: str, qty: int, reduce_only: bool, decision_id: str, style: str) -> Order | None:
        side = BUY if qty > 0 else SELL
        base = Order(cid, self.account, self.symbol, self._now, side, abs(qty), MARKET,
                     decision_id=decision_id, reduce_only=reduce_only)
        if style == MARKET_STYLE or self._top is None:
            return base if style == MARKET_STYLE or reduce_only else None
        bid, ask = self._top
        if style == PASSIVE_STYLE:
            price, tif = (bid if side == BUY else ask), DAY
        else:
            through = self.cfg.marketable_ticks * self.tick
            price, tif = (ask + through if side == BUY else bid - through), IOC
        price = self._grid(price, round)
        return base._replace(order_type=LIMIT, price=price, time_in_force=tif) if price > 0 else base

    def _flatten_step(self, out: PolicyOutput) -> None:
        w = self._window_now()
        if w is None or not w.flatten_ns <= self._now < w.close_ns:
            # the same until the flatten time, or else until the next day
            self._quiet_until = w.flatten_ns if w is not None and self._now < w.flatten_ns else self._day_end
            return
        first = self._flattened != self._day.day
        retry = self.position != 0 and self._now - self._flatten_ns >= self._retry_ns and self._pending is None \
            and not any(x.role == FLATTEN and not x.cancelling for x in self._working.values())
        if not (first or retry):
            return
        if first:
            self._flattened, self._flatten_v = self._day.day, 0
            self.counts["flatten"] += 1
        day_id = f"{self.account}:{self.symbol}:{self._day.day.isoformat()}"
        for x in list(self._working.values()):
            if x.role != FLATTEN or x.order.decision_id != day_id:  # an earlier session's flatten is stale
                x.cross_on_cancel = False
                self._cancel(x, out)
        # the close is sized and sent once these cancels are confirmed (_release)
        waits = {cid for cid, x in self._working.items() if x.cancelling}
        if self._pending is not None:
            self.counts["superseded"] += 1
            waits |= self._pending.waits
        self._pending = _Pending(FLATTEN, 0, day_id, MARKET_STYLE, None, waits) if self.position or waits else None
        self._legs_due = False
        self._flatten_ns = self._now

    def _window_now(self) -> _Window | None:
        """The session of the current event time's Sao Paulo day (computed once a day)."""
        self._day.update(self._now)
        if self._day.day != self._window_day:
            self._window_day = self._day.day
            self._day_end = day_bounds_ns(self._day.day)[1]
            try:
                bounds = trading_session(self._day.day, self.cfg.calendar)
                self._no_window = "no_session"
            except CalendarError:
                bounds, self._no_window = None, "calendar_unknown"  # refuse to guess: no entries
            self._window = None
            if bounds is not None:
                open_ns, close_ns = bounds
                flatten_ns = close_ns - round(self.cfg.flatten_before_close_min * NS_PER_MIN)
                self._window = _Window(open_ns, open_ns + round(self.cfg.opening_auction_min * NS_PER_MIN),
                                       max(open_ns, flatten_ns), close_ns)
        return self._window

    def _entry_block(self) -> str | None:
        """Why a new entry can't be sent now, or None."""
        gate = self._entry_gate() if self._entry_gate is not None else None
        if gate:
            return gate
        w, now = self._window_now(), self._now
        if w is None:
            return self._no_window
        if not w.open_ns <= now < w.close_ns:
            return "outside_session"
        if now < w.entries_ns:
            return "opening_auction"
        if now >= w.flatten_ns:
            return "closing"
        if self._auction_ns is not None and now - self._auction_ns < self._quiet_ns:
            return "auction_print"
        return None

    def _bracket(self, fill: Fill, w: _Working | None, position: int | Position) -> None:
        """The stop-loss and take-profit are to match the open position (re-priced on a fill that adds)."""
        long = self.position > 0
        added = (side_sign(fill.side) > 0) == long
        if added or long != self._bracket_long or math.isnan(self._tp):
            if isinstance(position, Position) and _price_ok(position.avg_price):
                ref = position.avg_price
            else:
                ref = w.value / w.filled if w is not None and w.filled else fill.price
            self._bracket_prices(ref, long)
            self._bracket_decision = (w.order.decision_id if w is not None else "") or fill.decision_id \
                or fill.client_order_id
        self._legs_due = True

    def _sync_legs(self, out: PolicyOutput) -> None:
        """Cancel the legs that no longer match the position; send the missing ones once no order
        of ours on their side is working or being cancelled (the risk engine would count it with
        them and refuse them as not reducing)."""
        pos = self.position
        if not self._legs_due or self._pending is not None:
            return  # a pending order's fill brings them back up to date
        if pos == 0 or not self.cfg.brackets or self._flattening() or math.isnan(self._tp) \
                or (pos > 0) != self._bracket_long:
            self._legs_due = False
            return
        side, qty = (SELL if pos > 0 else BUY), abs(pos)
        wanted = ((STOP_LOSS, STOP_LIMIT, self._sl[1], self._sl[0]), (TAKE_PROFIT, LIMIT, self._tp, math.nan))
        stale = []
        for role, kind, price, stop in wanted:
            leg = next((x for x in self._legs() if x.role == role), None)
            if leg is None or leg.order.side != side or leg.leaves != qty or not _same(leg.order.price, price) \
                    or not _same(leg.order.stop_price, stop):
                stale.append((leg, role, kind, price, stop))
        for leg, *_ in stale:
            if leg is not None:
                self._cancel(leg, out)
        if not stale:
            self._legs_due = False
            return
        if side in self._unsettled.values() or any(x.order.side == side and (x.cancelling or x.role not in (
                STOP_LOSS, TAKE_PROFIT)) for x in self._working.values()):
            return
        self._legs_due = False
        self._bracket_v += 1
        for leg, role, kind, price, stop in stale:
            name = role if self._bracket_v == 1 else f"{role}.{self._bracket_v}"
            order = Order(client_order_id(self._bracket_decision, name, self.id_scope), self.account, self.symbol, self._now, side,
                          qty, kind, price, stop, DAY, self._bracket_decision, reduce_only=True,
                          oco_group=client_order_id(self._bracket_decision, "oco", self.id_scope))
            self._submit(order, role, 0, None, out)

    def _bracket_prices(self, ref: float, long: bool) -> None:
        """At least the configured ticks away from ``ref``, on the tick grid."""
        c, t, sign = self.cfg, self.tick, 1 if long else -1
        away, toward = (math.floor, math.ceil) if long else (math.ceil, math.floor)
        stop = self._grid(ref - sign * c.stop_loss_ticks * t, away)
        limit = max(stop - sign * c.stop_limit_offset_ticks * t, t)
        self._sl = (stop, self._grid(limit, round))
        self._tp = self._grid(ref + sign * c.take_profit_ticks * t, toward)
        self._bracket_long = long

    # -- helpers --------------------------------------------------------------------------

    def _grid(self, price: float, rounding: Callable[[float], int]) -> float:
        # the 6-decimal round first keeps float dust (5399.9999999) from moving a price a tick
        return round(rounding(round(price / self.tick, 6)) * self.tick, 9)

    def _flattening(self) -> bool:
        """Flattened this session: brackets are not re-placed, the flatten retries instead."""
        self._window_now()
        return self._flattened is not None and self._flattened == self._day.day

    def _legs(self) -> list[_Working]:
        return [w for w in self._working.values() if w.role in (STOP_LOSS, TAKE_PROFIT) and not w.cancelling]

    def _submit(self, order: Order, role: str, target: int, deadline: int | None, out: PolicyOutput) -> None:
        problem = order_problem(order)
        if problem:  # cannot happen from valid inputs; counted rather than sent
            self.rejected[f"order_{problem}"] += 1
            return
        if order.client_order_id in self._orders:
            self.rejected["duplicate_order"] += 1
            return
        self._orders.add(order.client_order_id)
        self._working[order.client_order_id] = _Working(order, role, target, deadline)
        self.counts[f"order_{role}"] += 1
        out.orders.append(order)

    def _cancel(self, w: _Working, out: PolicyOutput) -> None:
        if not w.cancelling:
            w.cancelling = True
            self.counts["cancel"] += 1
            out.cancels.append(w.order.client_order_id)

    def _retry_cancels(self, out: PolicyOutput) -> None:
        for cid, w in self._working.items():
            if w.retry_at is not None and self._now >= w.retry_at:
                w.retry_at = None
                self.counts["cancel_retry"] += 1
                out.cancels.append(cid)

    def _unsettle(self, cid: str, side: str) -> None:
        self._unsettled[cid] = side
        if len(self._unsettled) > self.cfg.remember_ids:  # a venue that never ends them: bounded memory
            del self._unsettled[next(iter(self._unsettled))]

    def _settled(self, cid: str) -> None:
        if self._pending is not None:
            self._pending.waits.discard(cid)

    def _see_book(self, book: Any) -> None:
        if type(book) is BookSnapshot and book.symbol == self.symbol:  # the engine's every snapshot, first
            bp, ap = book.bid_px, book.ask_px
            if type(bp) is tuple and type(ap) is tuple and bp and ap:
                bid, ask = bp[0], ap[0]
                if type(bid) is float and type(ask) is float:  # what _price_ok and float() below come to
                    self._top = (bid, ask) if 0 < bid < ask <= _FLOAT_MAX else None
                    return
        if not isinstance(book, BookSnapshot) or book.symbol != self.symbol:
            self.rejected["bad_book"] += 1  # ignored: the last good book stays
            return
        bid, ask = _best(book.bid_px), _best(book.ask_px)
        # one-sided, crossed or locked (as in an auction): no price to enter at
        self._top = (float(bid), float(ask)) if _price_ok(bid) and _price_ok(ask) and bid < ask else None

    def _position_of(self, position: Any) -> int | None:
        if _is_int(position):
            return position
        if isinstance(position, Position) and position.symbol == self.symbol and position.account == self.account \
                and _is_int(position.quantity):
            return position.quantity
        return None

    def _decision_problem(self, d: Any) -> str | None:
        if not isinstance(d, Decision):
            return "not_a_decision"
        if d.symbol != self.symbol:
            return "other_symbol"
        if not isinstance(d.decision_id, str) or not d.decision_id:
            return "bad_decision_id"
        if not isinstance(d.action, str) or d.action not in (BUY, SELL, HOLD):
            return "bad_action"
        if d.action != HOLD and not (_is_int(d.size) and d.size > 0):
            return "bad_size"
        if not _price_ok(d.price):
            return "bad_price"
        if not _time_ok(d.ts_event):
            return "bad_time"
        if d.decision_id in self._decisions:
            return "duplicate_decision"
        return None

    def _fill_problem(self, f: Any) -> str | None:
        if not isinstance(f, Fill):
            return "bad_fill"
        if f.symbol != self.symbol or f.account != self.account:
            return "other_fill"
        ok = isinstance(f.fill_id, str) and f.fill_id and isinstance(f.client_order_id, str) and f.side in SIDES \
            and _is_int(f.quantity) and f.quantity > 0 and _price_ok(f.price) and _time_ok(f.ts_event)
        return None if ok else "bad_fill"

    # -- restart --------------------------------------------------------------------------

    def state(self) -> dict:
        """JSON-able (NaN as None): what a restarted policy needs to send nothing twice."""
        def order(o: Order) -> dict:
            return {k: _none(v) for k, v in o._asdict().items()}

        return {
            "account": self.account, "symbol": self.symbol, "position": self.position, "now": self._now,
            "auction_ns": self._auction_ns, "flattened": self._flattened and self._flattened.isoformat(),
            "flatten_v": self._flatten_v, "flatten_ns": self._flatten_ns,
            "bracket": [self._bracket_decision, self._bracket_v, self._bracket_long,
                        *map(_none, (*self._sl, self._tp))],
            "working": [{"order": order(w.order), **{k: getattr(w, k) for k in _Working.__slots__[1:]}}
                        for w in self._working.values()],
            "decisions": self._decisions.ids(), "orders": self._orders.ids(), "fills": self._fills.ids(),
            "pending": self._pending and self._pending.state(), "unsettled": dict(self._unsettled),
            "legs_due": self._legs_due,
        }

    def load_state(self, d: dict) -> None:
        """Restore :meth:`state`; raises ValueError for another account or symbol (a wiring error)."""
        if (d.get("account"), d.get("symbol")) != (self.account, self.symbol):
            raise ValueError(f"state is for {d.get('account')!r}/{d.get('symbol')!r}, "
                             f"not {self.account!r}/{self.symbol!r}")
        self.position, self._now, self._auction_ns = d["position"], d["now"], d["auction_ns"]
        self._quiet_until = 0  # the restored time may be on another day
        self._flattened = date.fromisoformat(d["flattened"]) if d["flattened"] else None
        self._flatten_v, self._flatten_ns = d["flatten_v"], d["flatten_ns"]
        dec, v, long, stop, limit, tp = d["bracket"]
        self._bracket_decision, self._bracket_v, self._bracket_long = dec, v, long
        self._sl, self._tp = (_nan(stop), _nan(limit)), _nan(tp)
        self._working = {}
        for w in d["working"]:
            o = w["order"]
            order = Order(**{**o, "price": _nan(o["price"]), "stop_price": _nan(o["stop_price"])})
            x = _Working(order, w["role"], w["target"], w["deadline"])
            for k in _Working.__slots__[4:]:
                setattr(x, k, w.get(k, getattr(x, k)))  # a key added later keeps its default
            self._working[order.client_order_id] = x
        p = d.get("pending")
        self._pending = p and _Pending(p["role"], p["target"], p["decision_id"], p["style"], p["cap"],
                                       set(p["waits"]))
        self._unsettled = dict(d.get("unsettled", {}))
        self._legs_due = bool(d.get("legs_due", False))
        n = self.cfg.remember_ids
        self._decisions, self._orders, self._fills = (_Recent(n, d["decisions"]), _Recent(n, d["orders"]),
                                                      _Recent(n, d["fills"]))


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def _none(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x
