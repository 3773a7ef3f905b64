"""The risk engine: one per account, in front of every order, with a manual kill switch.

Trading states (the most severe cause wins)::

    ACTIVE    every check applies
    REDUCING  only orders that reduce a position pass (daily loss near its limit, cooldown)
    HALTED    only cancels pass (manual halt, daily loss limit, drawdown); while a flatten
              is in progress, orders that reduce a position pass too, so it can complete

Pre-trade checks (:meth:`RiskEngine.check`; None = allowed, else a denial
``RiskEvent(action="denied")`` whose reason starts with its code, counted by code):

- shape (:func:`pipelines.model.orders.order_problem`), account, known symbol, duplicate id;
- the state gate above; a ``reduce_only`` order that would not reduce;
- new entries only: inside the session (B3 calendar, 09:00-18:00 Sao Paulo, 13:00 open on
  Ash Wednesday), a trade seen in the symbol, and not stale (``stale_after_s``);
- every order: tick multiple and price band around the last trade for its limit and stop
  prices; orders that do not reduce: maximum order size, notional (R$), position per symbol
  and in total after the order *and the account's other working orders on the same side*
  fill (worst case, so two orders in flight cannot pass one by one);
- rates per second of event time, sliding window: new orders (:meth:`check`) and
  modifies + cancels (:meth:`check_modify`, :meth:`check_cancel`), counting only what passed.

An order is *reducing* when it is on the other side of the position and, with the working
orders on its side, does not take the position through zero.

Account limits (:meth:`RiskEngine.on_account`, on every mark and fill), latched until the
next session day so that unrealized P&L swinging around a threshold does not flap the
state: day P&L net at ``-max_daily_loss * reducing_at`` -> REDUCING; at
``-max_daily_loss`` -> HALTED and flatten; ``peak - pnl >= max_drawdown`` (peak: the day's
highest net P&L, at least 0) -> HALTED and flatten. ``max_consecutive_losses`` losing round
trips in a row (:meth:`RiskEngine.on_trade_closed`) -> REDUCING for ``cooldown_min`` of
event time, then back. A new session day (event time) clears these, never a manual halt.
The account's own day P&L must restart at the new day too (``PositionBook.new_day``).

Kill switch: :meth:`halt`, :meth:`resume`, :meth:`flatten` (HALTED plus ``flatten_requested``,
which the execution side takes with :meth:`acknowledge_flatten`), or :meth:`apply_command`
for a command read from a channel; ``command_cursor`` and ``last_command`` tell the sender it
was applied. A resume is refused while the daily loss or drawdown limit holds the account
HALTED (the day's loss stays the day's loss). :meth:`state` / :meth:`load_state` persist all
of it: a restarted engine that was HALTED comes back HALTED; a stored state that cannot be
read halts it.

Event time only: the engine's clock is the highest event time it was given. Bad input of
any shape is refused and counted (``stats()["rejected"]``, denials by code); nothing raises.
"""

from __future__ import annotations

import math
import re
from collections import deque
from datetime import date
from typing import Any, Mapping, NamedTuple

from pipelines.model.clock import NS_PER_MIN, NS_PER_S, SessionDay, from_ns
from pipelines.model.contracts import CalendarError, trading_session
from pipelines.model.instruments import UnknownInstrument, instrument_for
from pipelines.model.orders import TERMINAL, Order, OrderEvent, RiskEvent, order_problem, side_sign
from pipelines.risk.account import RiskAccount
from pipelines.risk.config import RiskConfig, account_problem

ACTIVE, REDUCING, HALTED = "ACTIVE", "REDUCING", "HALTED"
STATES = (ACTIVE, REDUCING, HALTED)
HALT, RESUME, FLATTEN = "halt", "resume", "flatten"
COMMANDS = (HALT, RESUME, FLATTEN)
DENIED, STATE = "denied", "state"  # RiskEvent.action

STATE_VERSION = 1
_CODE = re.compile(r"[a-z_]+")


def reason_code(reason: str) -> str:
    """The code a denial is counted under: the reason's first word (``"max_position: ..."``)."""
    m = _CODE.match(reason)
    return m.group(0) if m else "other"


def _is_ns(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _local(ns: int) -> str:
    return from_ns(ns).isoformat(timespec="seconds")


class RiskStatus(NamedTuple):
    state: str  # ACTIVE | REDUCING | HALTED
    reason: str  # why ("" when ACTIVE)
    flatten_requested: bool  # not acknowledged yet by the execution side
    flattening: bool  # under way: reducing orders pass while HALTED until every position is flat
    now: int  # the engine's clock: the highest event time it has been given


class _SessionHours:
    """Why event time is outside the session ("" inside); each day's bounds computed once."""

    def __init__(self, calendar: str):
        self._calendar = calendar
        self._day: date | None = None
        self._closed = ""  # why the whole day has no session
        self._bounds = (0, 0)
        self._open_text = ""

    def why_closed(self, ts: int, day: date) -> str:
        if day != self._day:
            self._load(day)
        if self._closed:
            return self._closed
        if ts < self._bounds[0]:
            return f"outside_session: {_local(ts)} is before the {self._open_text} open"
        if ts >= self._bounds[1]:
            return f"outside_session: {_local(ts)} is after the session's close"
        return ""

    def _load(self, day: date) -> None:
        self._day, self._closed = day, ""
        try:
            bounds = trading_session(day, self._calendar)
        except CalendarError:
            bounds, self._closed = None, f"outside_session: no B3 calendar for {day.year}"
        if bounds is None:
            self._closed = self._closed or (f"outside_session: {day:%A} {day}" if day.weekday() >= 5
                                            else f"outside_session: {day} is a B3 holiday")
            return
        self._bounds = bounds
        self._open_text = f"{from_ns(bounds[0]):%H:%M}"


class RiskEngine:
    """Pre-trade checks, account limits and the kill switch of one account (module docstring)."""

    def __init__(self, account: RiskAccount, cfg: RiskConfig = RiskConfig(), *, account_id: str | None = None):
        self.cfg = cfg
        self.account_id = cfg.account if account_id is None else account_id
        problem = account_problem(self.account_id)
        if problem is not None:
            raise ValueError(f"account: {problem}")
        self._account = account
        self._hours = _SessionHours(cfg.calendar)
        self._clock = SessionDay()
        self._now = 0
        self._today: date | None = None
        # causes of the state
        self._manual: dict[str, Any] | None = None  # who, reason, ts, sent_at
        self._loss_level = 0  # 1 reducing, 2 halted: latched for the session day
        self._loss_reason = ""
        self._drawdown_reason = ""  # latched for the session day
        self._cooldown_until: int | None = None
        self._cooldown_reason = ""
        self._streak = 0
        self._peak = 0.0
        self._limits_pnl = math.nan  # the day P&L on_account last evaluated (NaN: none since the day began)
        self._flatten_requested = False  # until the execution side acknowledges it
        self._flattening = False  # until every position is flat
        # the state they make, and its last change
        self._state, self._reason, self._deny_text = ACTIVE, "", ""
        self._change_info = {"who": "", "reason": "", "ts": 0}
        # market and orders
        self._last: dict[str, tuple[float, int]] = {}  # symbol -> (price, ts) of the last trade
        self._working: dict[str, tuple[str, int]] = {}  # client order id -> (symbol, signed leaves)
        self._orders_window: deque[int] = deque()
        self._cancels_window: deque[int] = deque()
        # commands
        self.command_cursor = "0-0"  # the id of the last command applied (a Valkey stream id)
        self._last_command: dict[str, Any] | None = None
        # what the caller drains, and counters
        self._events: deque[RiskEvent] = deque(maxlen=cfg.max_events)
        self.events_dropped = 0
        self._checked = self._allowed = 0
        self._denied: dict[str, int] = {}
        self._rejected: dict[str, int] = {}

    # -- state -----------------------------------------------------------------------------

    @property
    def trading_state(self) -> str:
        return self._state

    @property
    def flatten_requested(self) -> bool:
        """A flatten the execution side has not acknowledged yet (:meth:`acknowledge_flatten`)."""
        return self._flatten_requested

    def status(self) -> RiskStatus:
        return RiskStatus(self._state, self._reason, self._flatten_requested, self._flattening, self._now)

    def drain_events(self) -> list[RiskEvent]:
        """Denials and state changes since the last call (at most ``max_events``; older ones
        are counted in ``events_dropped``), for the caller to store and publish."""
        out = list(self._events)
        self._events.clear()
        return out

    def stats(self) -> dict[str, Any]:
        return {"account": self.account_id, "state": self._state, "reason": self._reason,
                "flatten_requested": self._flatten_requested, "flattening": self._flattening,
                "checked": self._checked, "allowed": self._allowed, "denied": dict(self._denied),
                "rejected": dict(self._rejected), "working_orders": len(self._working),
                "losing_streak": self._streak, "peak_pnl": self._peak, "cooldown_until": self._cooldown_until,
                "events_dropped": self.events_dropped}

    # -- pre-trade -----------------------------------------------------------------------------

    def check(self, order: Order, now_ns: int) -> RiskEvent | None:
        """None when ``order`` may be sent (it then counts as working until a terminal
        :meth:`on_order_event`), else the denial. State changes the clock brings (a cooldown
        over, a new day) go to :meth:`drain_events`."""
        return self._check_order(order, now_ns, modify=False)

    def check_modify(self, order: Order, now_ns: int) -> RiskEvent | None:
        """A working order replaced by ``order`` (same client order id, new price or quantity):
        the order checks with the old version left out, and the modify/cancel rate."""
        return self._check_order(order, now_ns, modify=True)

    def _check_order(self, order: Order, now_ns: int, modify: bool) -> RiskEvent | None:
        reason = self._intake(order, now_ns)
        if reason is None and (order.client_order_id in self._working) != modify:
            reason = (f"unknown_order: {order.client_order_id} is not working" if modify else
                      f"duplicate_client_order_id: {order.client_order_id} is already working")
        if modify:
            window, rate = self._cancels_window, (self.cfg.max_cancels_per_s, "cancel_rate", "modifies and cancels")
        else:
            window, rate = self._orders_window, (self.cfg.max_orders_per_s, "order_rate", "orders")
        if reason is None:
            replacing = order.client_order_id if modify else None
            reason = self._order_reason(order, replacing) or self._rate_reason(window, *rate)
        if reason is not None:
            return self._deny(order, reason)
        window.append(self._now)
        self._working[order.client_order_id] = (order.symbol, side_sign(order.side) * order.quantity, order.oco_group)
        self._allowed += 1
        return None

    def check_cancel(self, symbol: str, client_order_id: str, now_ns: int) -> RiskEvent | None:
        """Cancels pass in every state; only the modify/cancel rate limits them."""
        self._checked += 1
        if not (isinstance(symbol, str) and isinstance(client_order_id, str) and client_order_id):
            return self._deny(None, f"bad_cancel: symbol {symbol!r}, client order id {client_order_id!r}")
        if not _is_ns(now_ns):
            return self._deny(None, f"bad_time: now_ns must be an integer >= 0, got {now_ns!r}")
        self._advance(now_ns)
        reason = self._rate_reason(self._cancels_window, self.cfg.max_cancels_per_s, "cancel_rate",
                                   "modifies and cancels")
        if reason is not None:
            return self._emit_denial(symbol, client_order_id, reason)
        self._cancels_window.append(self._now)
        self._allowed += 1
        return None

    def on_order_event(self, event: OrderEvent) -> None:
        """Keeps the working orders (their leaves quantity) up to date; feed every OrderEvent
        of the account, or orders never finished keep counting against the position limits."""
        if not (isinstance(event, OrderEvent) and isinstance(event.client_order_id, str)):
            self._reject("bad_order_event")
            return
        working = self._working.get(event.client_order_id)
        if working is None:
            return
        if event.status in TERMINAL:
            del self._working[event.client_order_id]
        elif isinstance(event.leaves_qty, int) and not isinstance(event.leaves_qty, bool) and event.leaves_qty >= 0:
            self._working[event.client_order_id] = (working[0], event.leaves_qty * (1 if working[1] > 0 else -1),
                                                    working[2])
        else:
            self._reject("bad_order_event")

    def _intake(self, order: Any, now_ns: Any) -> str | None:
        """Shape, time and account of an order; advances the clock when they are good."""
        self._checked += 1
        problem = order_problem(order)
        if problem is not None:
            return f"{problem}: malformed order"
        if not _is_ns(now_ns):
            return f"bad_time: now_ns must be an integer >= 0, got {now_ns!r}"
        if order.account != self.account_id:
            return f"wrong_account: order for {order.account!r}, this engine guards {self.account_id!r}"
        if not isinstance(order.symbol, str):
            return f"unknown_symbol: {order.symbol!r}"
        self._advance(now_ns)
        return None

    def _order_reason(self, order: Order, replacing: str | None) -> str | None:
        sym, qty, sign = order.symbol, order.quantity, side_sign(order.side)
        try:
            inst = instrument_for(sym)
        except UnknownInstrument:
            return f"unknown_symbol: no contract specification for {sym!r}"
        quantities = self._quantities()
        if quantities is None:
            return "bad_account: the account's positions cannot be read"
        pos = quantities.get(sym, 0)
        buys, sells = self._working_sides(sym, exclude=replacing, skip_group=order.oco_group)
        same = buys if sign > 0 else sells
        if order.oco_group:  # the order joins its group, which counts once, as its largest order
            qty = max(qty, self._group_size(sym, order.oco_group, sign > 0, exclude=replacing))
        reducing = pos != 0 and (pos > 0) != (sign > 0) and abs(same) + qty <= abs(pos)
        if self._state == HALTED and not (self._flattening and reducing):
            return self._deny_text
        if self._state == REDUCING and not reducing:
            return self._deny_text
        if order.reduce_only and not reducing:
            return f"not_reducing: a reduce-only {order.side} of {qty} against position {pos:+d} in {sym}"
        if not self.cfg.enabled:
            return None
        last = self._last.get(sym)
        if not reducing:
            why = self._entry_reason(sym, last)
            if why:
                return why
        for name, price in (("price", order.price), ("stop price", order.stop_price)):
            if _is_number(price):
                why = self._price_reason(sym, name, price, inst.tick_size, last)
                if why:
                    return why
        if reducing:  # bounded by the position: size, notional and position limits cannot grow it
            return None
        if qty > self.cfg.max_order_qty:
            return f"max_order_qty: {qty} contracts (max {self.cfg.max_order_qty})"
        ref = order.price if _is_number(order.price) else (last[0] if last else math.nan)
        notional = qty * ref * inst.point_value
        if self.cfg.max_notional > 0 and notional > self.cfg.max_notional:
            return (f"max_notional: {qty} x {ref:g} x {inst.point_value:g} = R$ {notional:.2f} "
                    f"(max R$ {self.cfg.max_notional:.2f})")
        after = pos + same + sign * qty
        if abs(after) > self.cfg.max_position:
            return f"max_position: {sym} would reach {after:+d} with working orders (max {self.cfg.max_position})"
        others = set(quantities) | {w[0] for w in self._working.values()}
        others.discard(sym)
        total = abs(after) + sum(self._exposure(s, quantities.get(s, 0)) for s in others)
        if total > self.cfg.max_total_position:
            return (f"max_total_position: the account would hold {total} contracts with working orders "
                    f"(max {self.cfg.max_total_position})")
        return None

    def _entry_reason(self, sym: str, last: tuple[float, int] | None) -> str:
        if self.cfg.session_hours:
            why = self._hours.why_closed(self._now, self._clock.day)
            if why:
                return why
        if last is None:
            return f"no_market_data: no trade seen in {sym}"
        age = self._now - last[1]
        if self.cfg.stale_after_s > 0 and age > self.cfg.stale_after_s * NS_PER_S:
            return f"stale_market_data: no trade in {sym} for {age / NS_PER_S:.1f} s (max {self.cfg.stale_after_s:g} s)"
        return ""

    def _price_reason(self, sym: str, name: str, price: float, tick: float,
                      last: tuple[float, int] | None) -> str:
        steps = price / tick
        if abs(steps - round(steps)) > 1e-6:
            return f"off_tick: {name} {price:g} is not a multiple of {sym}'s tick {tick:g}"
        band = self.cfg.price_band_pct
        if band > 0 and last is not None:
            away = abs(price - last[0]) / last[0] * 100.0
            if away > band:
                return f"price_band: {name} {price:g} is {away:.2f} % from the last trade {last[0]:g} (max {band:g} %)"
        return ""

    def _rate_reason(self, window: deque[int], limit: int, code: str, noun: str) -> str | None:
        if not self.cfg.enabled:
            return None
        while window and window[0] <= self._now - NS_PER_S:
            window.popleft()
        if len(window) >= limit:
            return f"{code}: {len(window)} {noun} in the last second (max {limit})"
        return None

    def _group_size(self, sym: str, oco: str, buy: bool, exclude: str | None = None) -> int:
        return max((abs(q) for coid, (s, q, g) in self._working.items()
                    if s == sym and g == oco and (q > 0) == buy and coid != exclude), default=0)

    def _working_sides(self, sym: str, exclude: str | None = None, skip_group: str = "") -> tuple[int, int]:
        """(buys, sells) still working in ``sym``; sells negative. The orders of one OCO group
        (a bracket's stop and target) count once, as the largest of them: only one can fill."""
        buys = sells = 0
        groups: dict[tuple[str, bool], int] = {}
        for coid, (s, q, oco) in self._working.items():
            if s != sym or coid == exclude or (oco and oco == skip_group):
                continue
            if oco:
                key = (oco, q > 0)
                groups[key] = max(groups.get(key, 0), abs(q))
            elif q > 0:
                buys += q
            else:
                sells += q
        for (_oco, buy), q in groups.items():
            if buy:
                buys += q
            else:
                sells -= q
        return buys, sells

    def _exposure(self, sym: str, pos: int) -> int:
        buys, sells = self._working_sides(sym)
        return max(abs(pos + buys), abs(pos + sells))

    # -- market and account ------------------------------------------------------------------

    def on_trade(self, symbol: str, price: float, ts: int) -> list[RiskEvent]:
        """The symbol's last trade (band and staleness); moves the clock. Returns state changes."""
        if not (isinstance(symbol, str) and symbol and _is_number(price) and price > 0 and _is_ns(ts)):
            self._reject("bad_trade")
            return []
        events = self._advance(ts)
        prev = self._last.get(symbol)
        if prev is None or ts >= prev[1]:
            self._last[symbol] = (float(price), ts)
        return events

    def on_trade_closed(self, pnl_net: float, ts: int) -> list[RiskEvent]:
        """A round trip closed with ``pnl_net`` (R$, after fees): the consecutive-loss rule."""
        if not (_is_number(pnl_net) and _is_ns(ts)):
            self._reject("bad_trade_closed")
            return []
        events = self._advance(ts)
        n = self.cfg.max_consecutive_losses
        if not self.cfg.enabled or n == 0:
            return events
        self._streak = self._streak + 1 if pnl_net < 0 else 0
        if self._streak >= n:
            self._streak = 0
            self._cooldown_until = self._now + int(self.cfg.cooldown_min * NS_PER_MIN)
            self._cooldown_reason = f"cooldown until {_local(self._cooldown_until)} ({n} consecutive losing trades)"
            events.append(self._change("cooldown", self._cooldown_reason))
            events.extend(self._advance(self._now))  # a cooldown of 0 minutes is over at once
        return events

    def on_account(self, now_ns: int) -> list[RiskEvent]:
        """Re-evaluate the account limits (call on every mark and fill). Returns state changes."""
        if not (type(now_ns) is int and now_ns >= 0 or _is_ns(now_ns)):  # the exact type first: every market event
            self._reject("bad_time")
            return []
        events = self._advance(now_ns)
        try:
            pnl = self._account.day_pnl_net()
        except Exception:  # an account that cannot answer must not take the engine down
            pnl = None
        # What follows reads only the P&L, the peak and the day's latches; with the same P&L as the
        # last evaluation (and no flatten to watch) it would change nothing: most calls are books
        # that move no price the account is marked at. A new day and a loaded state forget it.
        if type(pnl) is float and pnl == self._limits_pnl and not self._flattening:
            return events
        if not _is_number(pnl):
            self._reject("bad_account")
            return events
        self._peak = max(self._peak, float(pnl))
        if self.cfg.enabled:
            events.extend(self._account_limits(float(pnl)))
        if self._flattening:
            quantities = self._quantities()
            if quantities is not None and not any(quantities.values()):
                self._flattening = False
                events.append(self._change("flatten", "flatten complete: every position is flat"))
        self._limits_pnl = float(pnl)
        return events

    def _account_limits(self, pnl: float) -> list[RiskEvent]:
        out = []
        limit = self.cfg.max_daily_loss
        if limit > 0 and self._loss_level < 2 and pnl <= -limit:
            self._loss_level = 2
            self._loss_reason = f"daily loss: day P&L {pnl:.2f} reached the limit -{limit:.2f}"
            self._request_flatten()
            out.append(self._change("daily_loss", self._loss_reason + "; flatten requested"))
        elif limit > 0 and self._loss_level < 1 and pnl <= -limit * self.cfg.reducing_at:
            self._loss_level = 1
            self._loss_reason = (f"daily loss: day P&L {pnl:.2f} reached {self.cfg.reducing_at:.0%} "
                                 f"of the limit -{limit:.2f}")
            out.append(self._change("daily_loss", self._loss_reason))
        dd = self.cfg.max_drawdown
        if dd > 0 and not self._drawdown_reason and self._peak - pnl >= dd:
            self._drawdown_reason = (f"drawdown: day P&L {pnl:.2f} is {self._peak - pnl:.2f} below "
                                     f"its peak {self._peak:.2f} (max {dd:.2f})")
            self._request_flatten()
            out.append(self._change("drawdown", self._drawdown_reason + "; flatten requested"))
        return out

    def _quantities(self) -> Mapping[str, int] | None:
        try:
            q = self._account.quantities()
            if all(isinstance(s, str) and isinstance(v, int) and not isinstance(v, bool) for s, v in q.items()):
                return q
        except Exception:  # as in on_account: a broken account is counted, not raised
            pass
        self._reject("bad_account")
        return None

    # -- kill switch ---------------------------------------------------------------------------

    def halt(self, who: str, reason: str, now: int) -> RiskEvent:
        """HALTED until :meth:`resume`: only cancels pass."""
        bad = self._command_problem(who, reason, now)
        if bad is not None:
            return bad
        self._advance(now)
        self._manual = {"kind": HALT, "who": who, "reason": reason, "ts": self._now}
        return self._change(who, f"halt: {reason}" if reason else "halt")

    def flatten(self, who: str, now: int, reason: str = "") -> RiskEvent:
        """HALTED, and every position closed: ``flatten_requested`` until acknowledged."""
        bad = self._command_problem(who, reason, now)
        if bad is not None:
            return bad
        self._advance(now)
        self._manual = {"kind": FLATTEN, "who": who, "reason": reason, "ts": self._now}
        self._request_flatten()
        return self._change(who, f"flatten: {reason}" if reason else "flatten")

    def resume(self, who: str, now: int) -> RiskEvent:
        """Back to trading: clears a manual halt, a flatten and a cooldown. Refused (a denial)
        while the daily loss or drawdown limit holds the account HALTED: that holds until the
        next session day. With the daily loss at its reducing level the account resumes to REDUCING."""
        bad = self._command_problem(who, "", now)
        if bad is not None:
            return bad
        self._advance(now)
        halting = self._drawdown_reason or (self._loss_reason if self._loss_level == 2 else "")
        if halting:
            return self._emit_denial("", "", f"resume_refused: {halting} (holds until the next session day)", who)
        self._manual = None
        self._cooldown_until, self._cooldown_reason, self._streak = None, "", 0
        self._flatten_requested = self._flattening = False
        still = f"; still reducing: {self._loss_reason} (until the next session day)" if self._loss_level else ""
        return self._change(who, "resume" + still)

    def acknowledge_flatten(self) -> bool:
        """The execution side took the flatten request; False when there was none."""
        pending, self._flatten_requested = self._flatten_requested, False
        return pending

    def apply_command(self, command_id: str, fields: Mapping[str, Any], now: int | None = None) -> RiskEvent:
        """A command read from a channel: ``fields`` ``command`` (halt | resume | flatten),
        ``who``, ``reason``, ``sent_at`` (the sender's wall time, kept as text). Moves
        ``command_cursor`` to ``command_id`` and records the outcome in ``last_command``.
        ``now`` defaults to the engine's clock."""
        now = self._now if now is None else now
        fields = fields if isinstance(fields, Mapping) else {}
        cmd, who, reason = fields.get("command"), fields.get("who"), fields.get("reason") or ""
        if cmd == HALT:
            ev = self.halt(who, reason, now)
        elif cmd == RESUME:
            ev = self.resume(who, now)
        elif cmd == FLATTEN:
            ev = self.flatten(who, now, reason)
        else:
            self._reject("bad_command")
            ev = self._emit_denial("", "", f"unknown_command: {cmd!r} (known: {', '.join(COMMANDS)})",
                                   who if isinstance(who, str) else "")
        if isinstance(command_id, str) and command_id:
            self.command_cursor = command_id
        sent_at = fields.get("sent_at")
        self._last_command = {"id": command_id if isinstance(command_id, str) else repr(command_id),
                              "command": cmd if isinstance(cmd, str) else repr(cmd), "who": ev.who,
                              "sent_at": sent_at if isinstance(sent_at, str) else "",
                              "result": "done" if ev.action == STATE else "refused",
                              "state": ev.state, "reason": ev.reason, "ts": self._now}
        return ev

    @property
    def last_command(self) -> dict[str, Any] | None:
        return None if self._last_command is None else dict(self._last_command)

    def _command_problem(self, who: Any, reason: Any, now: Any) -> RiskEvent | None:
        if not (isinstance(who, str) and who.strip()):
            self._reject("bad_command")
            return self._emit_denial("", "", f"bad_command: who must be a non-empty string, got {who!r}")
        if not isinstance(reason, str):
            self._reject("bad_command")
            return self._emit_denial("", "", f"bad_command: reason must be a string, got {reason!r}", who)
        if not _is_ns(now):
            self._reject("bad_command")
            return self._emit_denial("", "", f"bad_time: now must be an integer >= 0, got {now!r}", who)
        return None

    def _request_flatten(self) -> None:
        self._flatten_requested = self._flattening = True

    # -- clock, state and events ---------------------------------------------------------

    def _advance(self, ts: int) -> list[RiskEvent]:
        """Move the clock to ``ts`` (never back): a new session day, a cooldown running out."""
        if ts > self._now:
            self._now = ts
        events = []
        self._clock.update(self._now)
        day = self._clock.day
        if self._today is None or day > self._today:  # a restored engine's clock starts behind its day
            if self._today is not None:
                events.extend(self._new_day(day))
            self._today = day
        if self._cooldown_until is not None and self._now >= self._cooldown_until:
            self._cooldown_until, self._cooldown_reason = None, ""
            events.append(self._change("cooldown", "cooldown over"))
        return events

    def _new_day(self, day: date) -> list[RiskEvent]:
        self._loss_level, self._loss_reason, self._drawdown_reason = 0, "", ""
        self._cooldown_until, self._cooldown_reason = None, ""
        self._streak, self._peak = 0, 0.0
        self._limits_pnl = math.nan
        before = self._state
        ev = self._change("session_day", f"new session day {day}: daily limits reset", quiet=True)
        return [ev] if ev is not None and before != self._state else []

    def _effective(self) -> tuple[str, str, str]:
        """(state, why, denial text) from the causes, the most severe first."""
        if self._manual is not None:
            m = self._manual
            why = f"{m['kind']} by {m['who']}" + (f": {m['reason']}" if m["reason"] else "")
            return HALTED, why, f"halted: {why}"
        if self._drawdown_reason:
            return HALTED, self._drawdown_reason, f"halted: {self._drawdown_reason}"
        if self._loss_level:
            state = HALTED if self._loss_level == 2 else REDUCING
            return state, self._loss_reason, f"{state.lower()}: {self._loss_reason}"
        if self._cooldown_until is not None:
            return REDUCING, self._cooldown_reason, self._cooldown_reason
        return ACTIVE, "", ""

    def _change(self, who: str, what: str, quiet: bool = False) -> RiskEvent | None:
        """Recompute the state after a cause changed; one state event (``quiet``: only when the
        state itself changed)."""
        state, self._reason, self._deny_text = self._effective()
        if quiet and state == self._state:
            return None
        self._state = state
        self._change_info = {"who": who, "reason": what, "ts": self._now}
        ev = RiskEvent(self.account_id, "", self._now, STATE, state, what, "", who)
        self._emit(ev)
        return ev

    def _deny(self, order: Any, reason: str) -> RiskEvent:
        ok = isinstance(order, Order)
        symbol = order.symbol if ok and isinstance(order.symbol, str) else ""
        coid = order.client_order_id if ok and isinstance(order.client_order_id, str) else ""
        return self._emit_denial(symbol, coid, reason)

    def _emit_denial(self, symbol: str, coid: str, reason: str, who: str = "") -> RiskEvent:
        code = reason_code(reason)
        self._denied[code] = self._denied.get(code, 0) + 1
        ev = RiskEvent(self.account_id, symbol, self._now, DENIED, self._state, reason, coid, who or code)
        self._emit(ev)
        return ev

    def _emit(self, ev: RiskEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self.events_dropped += 1
        self._events.append(ev)

    def _reject(self, reason: str) -> None:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1

    # -- persistence ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything a restarted engine needs, JSON-able (``hmarl:risk:<account>``). ``state``,
        ``reason``, ``changed_by``, ``changed_ts``, ``change`` and ``last_command`` are what an
        operator reads (``scripts/ctl.py status``)."""
        return {
            "version": STATE_VERSION, "account": self.account_id,
            "state": self._state, "reason": self._reason,
            "changed_by": self._change_info["who"], "changed_ts": self._change_info["ts"],
            "change": self._change_info["reason"],
            "flatten_requested": self._flatten_requested, "flattening": self._flattening,
            "manual": self._manual, "command_cursor": self.command_cursor, "last_command": self._last_command,
            "day": self._today.isoformat() if self._today else None,
            "loss_level": self._loss_level, "loss_reason": self._loss_reason,
            "drawdown_reason": self._drawdown_reason,
            "cooldown_until": self._cooldown_until, "cooldown_reason": self._cooldown_reason,
            "losing_streak": self._streak, "peak_pnl": self._peak,
            "working": {k: list(v) for k, v in self._working.items()},
            "denied": dict(self._denied),
        }

    def load_state(self, d: Any, daily: bool = True) -> bool:
        """Continue from a stored :meth:`state`. ``daily`` False (a new run on a fresh
        account) restores only the kill switch: manual halt, flatten and the command cursor.
        A state that cannot be read halts the engine (who ``risk_store``) and returns False:
        a kill switch that may have been on must not come back off."""
        try:
            loaded = _parse_state(d, self.account_id)
        except (KeyError, TypeError, ValueError) as e:
            self._reject("bad_state")
            self.halt("risk_store", f"stored risk state unreadable ({type(e).__name__}: {e})", self._now)
            return False
        self._manual = loaded["manual"]
        self._flatten_requested, self._flattening = loaded["flatten_requested"], loaded["flattening"]
        self.command_cursor, self._last_command = loaded["command_cursor"], loaded["last_command"]
        if daily:
            self._today = loaded["day"]
            self._loss_level, self._loss_reason = loaded["loss_level"], loaded["loss_reason"]
            self._drawdown_reason = loaded["drawdown_reason"]
            self._cooldown_until, self._cooldown_reason = loaded["cooldown_until"], loaded["cooldown_reason"]
            self._streak, self._peak = loaded["losing_streak"], loaded["peak_pnl"]
            self._limits_pnl = math.nan
            self._working, self._denied = loaded["working"], loaded["denied"]
        self._state, self._reason, self._deny_text = self._effective()
        self._change_info = loaded["change"]
        return True


def _parse_state(d: Any, account: str) -> dict[str, Any]:
    """The fields of a stored state, type-checked; raises KeyError, TypeError or ValueError."""
    if not isinstance(d, dict):
        raise TypeError(f"expected a JSON object, got {type(d).__name__}")
    if d.get("account") != account:
        raise ValueError(f"state of account {d.get('account')!r}, not {account!r}")
    if d.get("version") != STATE_VERSION:
        raise ValueError(f"state version {d.get('version')!r}, this engine reads {STATE_VERSION}")

    def typed(key: str, *types: type) -> Any:
        v = d[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise TypeError(f"{key}: expected {' or '.join(t.__name__ for t in types)}, got {v!r}")
        return v

    manual = typed("manual", dict, type(None))
    if manual is not None and not (manual.get("kind") in (HALT, FLATTEN) and isinstance(manual.get("who"), str)
                                   and isinstance(manual.get("reason"), str) and _is_ns(manual.get("ts"))):
        raise ValueError(f"manual: expected kind, who, reason and ts, got {manual!r}")
    if typed("loss_level", int) not in (0, 1, 2):
        raise ValueError(f"loss_level: expected 0, 1 or 2, got {d['loss_level']!r}")
    working = {}
    for coid, v in typed("working", dict).items():
        if not (isinstance(v, list) and len(v) == 3 and isinstance(v[0], str) and isinstance(v[1], int)
                and isinstance(v[2], str)):
            raise ValueError(f"working[{coid!r}]: expected [symbol, signed quantity, oco group], got {v!r}")
        working[coid] = (v[0], v[1], v[2])
    denied = typed("denied", dict)
    if not all(isinstance(v, int) for v in denied.values()):
        raise ValueError(f"denied: expected counts, got {denied!r}")
    day = typed("day", str, type(None))
    cooldown_until = typed("cooldown_until", int, type(None))
    return {
        "manual": manual, "flatten_requested": typed("flatten_requested", bool),
        "flattening": typed("flattening", bool), "command_cursor": typed("command_cursor", str),
        "last_command": typed("last_command", dict, type(None)),
        "day": date.fromisoformat(day) if day else None,
        "loss_level": d["loss_level"], "loss_reason": typed("loss_reason", str),
        "drawdown_reason": typed("drawdown_reason", str),
        "cooldown_until": cooldown_until, "cooldown_reason": typed("cooldown_reason", str),
        "losing_streak": typed("losing_streak", int), "peak_pnl": float(typed("peak_pnl", int, float)),
        "working": working, "denied": dict(denied),
        "change": {"who": typed("changed_by", str), "reason": typed("change", str), "ts": typed("changed_ts", int)},
    }
