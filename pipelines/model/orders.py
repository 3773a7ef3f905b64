"""The trading messages: orders, their lifecycle, fills, positions, the account and decision outcomes.

This module owns them, as :mod:`pipelines.model.messages` owns market data and decisions.
Each is an immutable ``NamedTuple`` with a ``KIND`` (the ``kind`` of its JSON form), stamped
with event time; they are what the execution and risk actors exchange, what Valkey keeps
(``hmarl:order:<id>``, ``hmarl:orders:stream``, ``hmarl:fills:stream``,
``hmarl:position:<account>:<SYM>``, ``hmarl:outcomes:stream``) and what ZeroMQ 5561 carries beside decisions.

A client order id is derived from the decision that caused the order and the order's role
(:func:`client_order_id`), never drawn at random: a decision re-sent after a restart makes
the same id, and the venue refuses an id it has seen, so nothing is ever sent twice.

Lifecycle (``OrderEvent.status``)::

    SUBMITTED -> ACCEPTED -> PARTIALLY_FILLED* -> FILLED
                        \\-> CANCELLED | EXPIRED      (what was not filled)
    SUBMITTED -> REJECTED                           (with the reason)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

BUY, SELL = "BUY", "SELL"
SIDES = (BUY, SELL)
MARKET, LIMIT, STOP_LIMIT = "MARKET", "LIMIT", "STOP_LIMIT"
ORDER_TYPES = (MARKET, LIMIT, STOP_LIMIT)
DAY, IOC, FOK = "DAY", "IOC", "FOK"
TIMES_IN_FORCE = (DAY, IOC, FOK)

SUBMITTED, ACCEPTED, PARTIALLY_FILLED, FILLED = "SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED", "FILLED"
CANCELLED, REJECTED, EXPIRED = "CANCELLED", "REJECTED", "EXPIRED"
STATUSES = (SUBMITTED, ACCEPTED, PARTIALLY_FILLED, FILLED, CANCELLED, REJECTED, EXPIRED)
TERMINAL = frozenset({FILLED, CANCELLED, REJECTED, EXPIRED})

MAKER, TAKER = "maker", "taker"

# Roles of an order within what one decision causes (part of the client order id).
ENTRY, STOP_LOSS, TAKE_PROFIT, FLATTEN, CROSS = "entry", "sl", "tp", "flat", "cross"


def client_order_id(decision_id: str, role: str = ENTRY, scope: str = "") -> str:
    """The id of the order a decision causes in ``role``: the same decision, the same id.
    ``scope`` (the account and the run, ``<account>/<run>/``) keeps the ids of two accounts
    trading the same decisions, or of two runs numbering their decisions from 1 again, apart."""
    return f"{scope}{decision_id}:{role}"


def side_sign(side: str) -> int:
    return 1 if side == BUY else -1


class Order(NamedTuple):
    """What to trade. ``price`` is the limit (NaN for a market order); ``stop_price`` the
    trigger of a stop-limit (NaN otherwise). ``reduce_only``: it may only bring the position
    toward zero (brackets, flattening, and every order while risk is REDUCING). Orders sharing
    an ``oco_group`` are one-cancels-the-other: limits count the group once."""

    client_order_id: str
    account: str
    symbol: str
    ts_event: int  # when it was decided (event time)
    side: str  # BUY | SELL
    quantity: int
    order_type: str = MARKET
    price: float = math.nan
    stop_price: float = math.nan
    time_in_force: str = DAY
    decision_id: str = ""
    reduce_only: bool = False
    oco_group: str = ""  # orders of one group cancel each other (a bracket): at most one of them can fill

    KIND = "order"


class OrderEvent(NamedTuple):
    """One step of an order's life, with the event time it happened and why."""

    client_order_id: str
    account: str
    symbol: str
    ts_event: int
    status: str
    filled_qty: int  # cumulative
    leaves_qty: int  # still working (0 once terminal)
    avg_fill_price: float  # NaN before the first fill
    reason: str = ""  # why rejected, cancelled or expired; the venue's text is kept as it is

    KIND = "order_event"


class Fill(NamedTuple):
    """One execution: ``fees`` in R$ for this fill (exchange, registration and broker)."""

    fill_id: str  # "<client order id>#<n>": one per fill of an order
    client_order_id: str
    account: str
    symbol: str
    ts_event: int
    side: str
    quantity: int
    price: float
    liquidity: str  # maker | taker
    fees: float
    decision_id: str = ""

    KIND = "fill"


class Position(NamedTuple):
    """One account's position in one symbol, marked to ``last_price`` (the last trade).
    P&L in the instrument's currency: ``realized_pnl`` and ``unrealized_pnl`` are gross;
    ``fees`` are what its fills cost; net = realized + unrealized - fees."""

    account: str
    symbol: str
    ts_event: int
    quantity: int  # signed contracts
    avg_price: float  # of the open quantity (0 when flat)
    last_price: float
    realized_pnl: float
    unrealized_pnl: float
    fees: float

    KIND = "position"

    @property
    def net_pnl(self) -> float:
        return self.realized_pnl + self.unrealized_pnl - self.fees


class AccountSummary(NamedTuple):
    """The account across its symbols for the trading day (Sao Paulo session)."""

    account: str
    ts_event: int
    day_pnl_gross: float  # realized + unrealized
    fees: float
    day_pnl_net: float
    open_exposure: float  # sum of |quantity| x last price x point value
    positions: int  # symbols with an open position

    KIND = "account"


class RiskEvent(NamedTuple):
    """A denial or a change of trading state, with its reason: counted, stored, published."""

    account: str
    symbol: str  # "" for the account as a whole
    ts_event: int
    action: str  # "denied" | "state"
    state: str  # ACTIVE | REDUCING | HALTED after it
    reason: str
    client_order_id: str = ""
    who: str = ""  # for a manual change: who asked (ctl.py user@host), else the rule's name

    KIND = "risk"


class DecisionOutcome(NamedTuple):
    """What one decision earned, once every contract it opened is closed again (FIFO lots, see
    :mod:`pipelines.execution.attribution`). Money in the instrument's currency (R$ on B3):
    ``gross_pnl`` is ``quantity x (exit_price - entry_price) x point value``, negated for a short;
    ``fees`` are its opening fills' fees pro rata to the contracts it opened plus, pro rata, the
    closing fills' fees for the contracts of this decision they closed."""

    account: str
    symbol: str
    decision_id: str
    ts_event: int  # when its last open contract was closed
    ts_open: int  # its first opening fill
    side: str  # BUY: it opened a long; SELL: a short
    quantity: int  # contracts it opened, all closed now
    entry_price: float  # volume-weighted open price
    exit_price: float  # volume-weighted close price
    gross_pnl: float
    fees: float
    net_pnl: float  # gross_pnl - fees
    closed_by: str  # the decision ids of the closing fills, comma-joined, first seen first

    KIND = "outcome"


TRADING_TYPES: dict[str, type] = {t.KIND: t for t in (Order, OrderEvent, Fill, Position, AccountSummary, RiskEvent,
                                                      DecisionOutcome)}


def order_problem(order: Any) -> str | None:
    """Why ``order`` is malformed (a reason word), or None. Checks the shape only: the tick
    grid, bands, symbols and limits are the venue's and the risk engine's business."""
    if not isinstance(order, Order):
        return "not_an_order"
    if not isinstance(order.client_order_id, str) or not order.client_order_id:
        return "bad_client_order_id"
    if order.side not in SIDES:
        return "bad_side"
    if isinstance(order.quantity, bool) or not isinstance(order.quantity, int) or order.quantity <= 0:
        return "bad_quantity"
    if order.order_type not in ORDER_TYPES:
        return "bad_order_type"
    if order.time_in_force not in TIMES_IN_FORCE:
        return "bad_time_in_force"
    if not isinstance(order.ts_event, int) or isinstance(order.ts_event, bool):
        return "bad_time"
    needs_price = order.order_type in (LIMIT, STOP_LIMIT)
    if needs_price and not _positive(order.price):
        return "bad_price"
    if order.order_type == STOP_LIMIT and not _positive(order.stop_price):
        return "bad_stop_price"
    return None


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
