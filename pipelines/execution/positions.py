"""Positions and P&L from fills, in the instrument's currency, marked to the last trade.

For each (account, symbol): the signed quantity, the average price of what is open, the
realized P&L of what was closed (average-cost method: closing trades realize against the
average entry price), the unrealized P&L of what is open at the last trade price, and the
fees of every fill. All gross figures times the contract's point value (WDO R$10, WIN
R$0.20 per point); net = realized + unrealized - fees.

The day (Sao Paulo session) P&L of the account is the sum over its symbols since the
book was created or :meth:`PositionBook.new_day` was called.
"""

from __future__ import annotations

import math

from pipelines.model.instruments import point_value_for
from pipelines.model.orders import AccountSummary, Fill, Position, side_sign


class _Open:
    __slots__ = ("quantity", "avg_price", "last_price", "realized", "fees", "ts")

    def __init__(self) -> None:
        self.quantity = 0
        self.avg_price = 0.0
        self.last_price = math.nan
        self.realized = 0.0
        self.fees = 0.0
        self.ts = 0


class PositionBook:
    """One account's positions. Fills are applied once (by ``fill_id``)."""

    def __init__(self, account: str, point_values: dict[str, float] | None = None):
        self.account = account
        self._point_values = dict(point_values or {})
        self._open: dict[str, _Open] = {}
        self._seen: set[str] = set()
        self.duplicate_fills = 0
        # day_pnl_net() as last computed; None once a fill, a mark or a new day may have changed it
        # (the risk engine asks on every market event, and most events are books that change none)
        self._pnl: float | None = None

    def point_value(self, symbol: str) -> float:
        if symbol not in self._point_values:
            self._point_values[symbol] = point_value_for(symbol)
        return self._point_values[symbol]

    def apply(self, fill: Fill) -> Position:
        """The position after ``fill``; a fill already applied changes nothing."""
        p = self._open.setdefault(fill.symbol, _Open())
        if fill.fill_id in self._seen:
            self.duplicate_fills += 1
            return self.position(fill.symbol)
        self._seen.add(fill.fill_id)
        self._pnl = None
        qty = side_sign(fill.side) * fill.quantity
        pos, price = p.quantity, float(fill.price)
        if pos == 0 or (pos > 0) == (qty > 0):  # opening or adding: a new average price
            p.avg_price = (p.avg_price * abs(pos) + price * abs(qty)) / abs(pos + qty)
        else:  # reducing, closing or flipping: realize the closed part against the average
            closed = min(abs(qty), abs(pos))
            p.realized += closed * (price - p.avg_price) * (1 if pos > 0 else -1) * self.point_value(fill.symbol)
            if pos + qty == 0:
                p.avg_price = 0.0
            elif (pos + qty > 0) != (pos > 0):
                p.avg_price = price  # flipped: the remainder opened at this price
        p.quantity = pos + qty
        p.fees += fill.fees
        p.last_price = price if math.isnan(p.last_price) else p.last_price
        p.ts = max(p.ts, fill.ts_event)
        return self.position(fill.symbol)

    def mark(self, symbol: str, price: float, ts_event: int) -> None:
        """The last trade of ``symbol``: what the open quantity is worth now."""
        if not (math.isfinite(price) and price > 0):
            return
        p = self._open.setdefault(symbol, _Open())
        self._pnl = None
        p.last_price = float(price)
        p.ts = max(p.ts, ts_event)

    def position(self, symbol: str) -> Position:
        p = self._open.get(symbol) or _Open()
        return Position(self.account, symbol, p.ts, p.quantity, p.avg_price, p.last_price, p.realized,
                        self._unrealized(symbol, p), p.fees)

    def quantity(self, symbol: str) -> int:
        """``position(symbol).quantity``, without building the Position (asked on every market event)."""
        p = self._open.get(symbol)
        return 0 if p is None else p.quantity

    def _unrealized(self, symbol: str, p: _Open) -> float:
        if p.quantity and math.isfinite(p.last_price):
            return p.quantity * (p.last_price - p.avg_price) * self.point_value(symbol)
        return 0.0

    def positions(self) -> list[Position]:
        return [self.position(s) for s in sorted(self._open)]

    # What the risk engine reads of the account (pipelines.risk.account.RiskAccount).

    def quantities(self) -> dict[str, int]:
        return {s: p.quantity for s, p in self._open.items() if p.quantity}

    def day_pnl_net(self) -> float:
        # Position.net_pnl of each symbol in positions()' order, without building the Positions,
        # computed again only after something it reads changed: the risk engine asks on every
        # market event.
        if self._pnl is None:
            self._pnl = sum(p.realized + self._unrealized(s, p) - p.fees for s, p in sorted(self._open.items()))
        return self._pnl

    def summary(self, ts_event: int) -> AccountSummary:
        ps = self.positions()
        gross = sum(p.realized_pnl + p.unrealized_pnl for p in ps)
        fees = sum(p.fees for p in ps)
        exposure = sum(abs(p.quantity) * p.last_price * self.point_value(p.symbol)
                       for p in ps if p.quantity and math.isfinite(p.last_price))
        return AccountSummary(self.account, ts_event, gross, fees, gross - fees, exposure,
                              sum(1 for p in ps if p.quantity))

    def new_day(self) -> None:
        """A new session: realized P&L and fees start from zero; open positions carry over."""
        self._pnl = None
        for p in self._open.values():
            p.realized = 0.0
            p.fees = 0.0

    def state(self) -> dict:
        """JSON-able, for Valkey (``hmarl:position:<account>:<SYM>`` holds the per-symbol view)."""
        return {"account": self.account,
                "open": {s: {k: getattr(p, k) for k in _Open.__slots__} for s, p in self._open.items()}}

    def load_state(self, d: dict) -> None:
        if d.get("account") != self.account:
            raise ValueError(f"state is for account {d.get('account')!r}, not {self.account!r}")
        self._open = {}
        self._pnl = None
        for s, v in d.get("open", {}).items():
            p = _Open()
            for k in _Open.__slots__:
                setattr(p, k, v[k])
            self._open[s] = p
