"""Each decision's realized outcome, from its fills and its exit, net of costs.

A :class:`DecisionLedger` follows one account's fills as first-in first-out lots per symbol,
each lot tagged with the decision whose fill opened it (``Fill.decision_id``; a fill without
one is tagged with its client order id, so the lots always add up to the position):

- a fill on the side of the open position, or from flat, opens a lot;
- a fill against it closes lots oldest first; what is left of it once the position is flat
  (a flip) opens a lot of the flipping fill's decision;
- once none of a decision's lots is open any more, its :class:`DecisionOutcome` is emitted. A
  decision that opens again later (the same id) makes a further outcome for that part.

Money is the instrument's (:func:`pipelines.model.instruments.point_value_for`). Fees are
shared by contract: an opening fill's fee goes to the lot it opened in proportion to the
contracts it opened, a closing fill's fee to each decision in proportion to the contracts of it
that it closed (so the fee of a flipping fill is split between the decisions it closed and the
lot it opened).

FIFO and :class:`pipelines.execution.positions.PositionBook`'s average cost realize the same
P&L over a position that returns to flat (both are the fills' cash flows then); between, they
split it differently over time. Whenever a symbol is flat, or has just flipped, the gross P&L of
the outcomes emitted equals the book's realized P&L of the same fills.

Fills are applied as given: the caller feeds each fill once (the execution engine feeds the
fills its PositionBook accepted, after that book's dedupe by ``fill_id``).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any, NamedTuple

from pipelines.model.instruments import point_value_for
from pipelines.model.orders import BUY, SELL, SIDES, DecisionOutcome, Fill, side_sign
from pipelines.model.settings import INT64_MAX

STATE_VERSION = 1


class Lot(NamedTuple):
    """An open lot: contracts one decision's fill opened and that are not closed yet."""

    decision_id: str
    side: str  # BUY: long, SELL: short
    quantity: int
    price: float
    ts_event: int  # of the fill that opened it


class _Lot:
    __slots__ = ("decision_id", "quantity", "price", "ts")

    def __init__(self, decision_id: str, quantity: int, price: float, ts: int):
        self.decision_id, self.quantity, self.price, self.ts = decision_id, quantity, price, ts


class _Tally:
    """What one decision opened in one symbol, and what of it has been closed, so far."""

    __slots__ = ("sign", "ts_open", "opened", "open_qty", "open_value", "close_value", "fees", "closed_by")

    def __init__(self, sign: int, ts_open: int):
        self.sign, self.ts_open = sign, ts_open
        self.opened = 0  # contracts opened
        self.open_qty = 0  # of them, still open
        self.open_value = 0.0  # sum of price x contracts opened
        self.close_value = 0.0  # sum of price x contracts closed
        self.fees = 0.0
        self.closed_by: list[str] = []


def _fill_problem(fill: Any, account: str) -> str | None:
    """Why ``fill`` cannot be attributed (a reason word), or None."""
    if not isinstance(fill, Fill):
        return "not_a_fill"
    if fill.account != account:
        return "other_account"
    if not isinstance(fill.symbol, str) or not fill.symbol:
        return "bad_symbol"
    if fill.side not in SIDES:
        return "bad_side"
    if type(fill.quantity) is not int or fill.quantity <= 0:
        return "bad_quantity"
    if not _number(fill.price) or not (math.isfinite(fill.price) and fill.price > 0):
        return "bad_price"
    if not _number(fill.fees) or not math.isfinite(fill.fees):
        return "bad_fees"
    if type(fill.ts_event) is not int or not 0 <= fill.ts_event <= INT64_MAX:
        return "bad_time"
    if not isinstance(fill.decision_id, str) or not isinstance(fill.client_order_id, str) \
            or not (fill.decision_id or fill.client_order_id):
        return "bad_decision_id"
    return None


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class DecisionLedger:
    """One account's FIFO lots per symbol and the outcome of each decision (module doc)."""

    def __init__(self, account: str):
        self.account = account
        self._lots: dict[str, deque[_Lot]] = {}  # symbol -> open lots, oldest first (all on one side)
        self._sign: dict[str, int] = {}  # symbol -> +1 long, -1 short (absent when flat)
        self._tallies: dict[tuple[str, str], _Tally] = {}  # (symbol, decision id) -> its open part
        self._point_values: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()

    def on_fill(self, fill: Fill) -> list[DecisionOutcome]:
        """The outcomes ``fill`` completes (oldest decision first); a bad fill is counted and ignored."""
        problem = _fill_problem(fill, self.account)
        if problem is not None:
            self.rejected[problem] += 1
            return []
        self.counts["fills"] += 1
        sym, sign, price = fill.symbol, side_sign(fill.side), float(fill.price)
        did = fill.decision_id or fill.client_order_id
        fee_each = fill.fees / fill.quantity
        left = fill.quantity
        lots = self._lots.setdefault(sym, deque())
        closed: dict[str, None] = {}  # decisions this fill closed contracts of, in order
        if lots and self._sign[sym] != sign:
            while left and lots:
                lot = lots[0]
                n = min(lot.quantity, left)
                t = self._tallies[(sym, lot.decision_id)]
                t.open_qty -= n
                t.close_value += n * price
                t.fees += n * fee_each
                if did not in t.closed_by:
                    t.closed_by.append(did)
                closed[lot.decision_id] = None
                lot.quantity -= n
                left -= n
                if lot.quantity == 0:
                    lots.popleft()
        out = [self._outcome(sym, d, fill.ts_event) for d in closed if self._tallies[(sym, d)].open_qty == 0]
        if left:
            lots.append(_Lot(did, left, price, fill.ts_event))
            self._sign[sym] = sign
            t = self._tallies.setdefault((sym, did), _Tally(sign, fill.ts_event))
            t.opened += left
            t.open_qty += left
            t.open_value += left * price
            t.fees += left * fee_each
        elif not lots:
            self._sign.pop(sym, None)
        return out

    def _outcome(self, symbol: str, decision_id: str, ts: int) -> DecisionOutcome:
        t = self._tallies.pop((symbol, decision_id))
        self.counts["outcomes"] += 1
        gross = t.sign * (t.close_value - t.open_value) * self._point_value(symbol)
        return DecisionOutcome(self.account, symbol, decision_id, ts, t.ts_open, BUY if t.sign > 0 else SELL,
                               t.opened, t.open_value / t.opened, t.close_value / t.opened, gross, t.fees,
                               gross - t.fees, ",".join(t.closed_by))

    def _point_value(self, symbol: str) -> float:
        if symbol not in self._point_values:
            self._point_values[symbol] = point_value_for(symbol)
        return self._point_values[symbol]

    # -- views ------------------------------------------------------------------------------

    def open_lots(self, symbol: str) -> list[Lot]:
        """The open lots of ``symbol``, oldest first ([] when flat)."""
        side = BUY if self._sign.get(symbol, 0) > 0 else SELL
        return [Lot(x.decision_id, side, x.quantity, x.price, x.ts) for x in self._lots.get(symbol, ())]

    def stats(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "rejected": dict(self.rejected),
                "open_lots": {s: len(q) for s, q in self._lots.items() if q},
                "open_decisions": len(self._tallies)}

    # -- restart ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-able: the open lots and the open part of each decision."""
        return {
            "version": STATE_VERSION, "account": self.account,
            "lots": {s: [self._sign[s], [[x.decision_id, x.quantity, x.price, x.ts] for x in q]]
                     for s, q in self._lots.items() if q},
            "tallies": [[s, d, {k: getattr(t, k) for k in _Tally.__slots__}] for (s, d), t in self._tallies.items()],
            "counts": dict(self.counts), "rejected": dict(self.rejected),
        }

    def load_state(self, d: dict[str, Any]) -> None:
        """Continue from :meth:`state`; ValueError for another account or a state it cannot read
        (nothing is changed then)."""
        if not isinstance(d, dict) or d.get("version") != STATE_VERSION:
            raise ValueError(f"unknown ledger state version {d.get('version') if isinstance(d, dict) else d!r}")
        if d.get("account") != self.account:
            raise ValueError(f"ledger state is for account {d.get('account')!r}, not {self.account!r}")
        try:
            lots, signs, tallies = {}, {}, {}
            for s, (sign, rows) in d["lots"].items():
                signs[s] = int(sign)
                lots[s] = deque(_Lot(str(did), int(q), float(px), int(ts)) for did, q, px, ts in rows)
            for s, did, v in d["tallies"]:
                t = _Tally(int(v["sign"]), int(v["ts_open"]))
                t.opened, t.open_qty = int(v["opened"]), int(v["open_qty"])
                t.open_value, t.close_value, t.fees = float(v["open_value"]), float(v["close_value"]), float(v["fees"])
                t.closed_by = [str(x) for x in v["closed_by"]]
                tallies[(s, did)] = t
            counts, rejected = Counter(d["counts"]), Counter(d["rejected"])
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"unreadable ledger state: {type(e).__name__}: {e}") from None
        # every open lot belongs to its decision's tally and nothing else is open: on_fill relies on it
        held: Counter[tuple[str, str]] = Counter()
        for s, q in lots.items():
            if signs[s] not in (1, -1) or not all(x.quantity > 0 for x in q):
                raise ValueError(f"inconsistent ledger state: lots of {s!r}")
            for x in q:
                held[(s, x.decision_id)] += x.quantity
        if held != Counter({k: t.open_qty for k, t in tallies.items()}) \
                or any(t.open_qty <= 0 or t.sign != signs.get(s) for (s, _d), t in tallies.items()):
            raise ValueError("inconsistent ledger state: the open lots and the decisions' tallies differ")
        self._lots, self._sign, self._tallies = lots, signs, tallies
        self.counts, self.rejected = counts, rejected
