"""What the risk engine reads of the account: signed quantities and the day's net P&L.

Declared here, as a Protocol, so that risk depends on no other domain: the execution side
owns the positions (:class:`pipelines.execution.positions.PositionBook`) and hands the
engine anything with these two methods. :class:`AccountSnapshot` is the plain
implementation for a risk engine that learns the account from messages (the execution
actor's positions and account summaries) instead of holding the book itself.
"""

from __future__ import annotations

import math
from typing import Mapping, Protocol

from pipelines.model.orders import AccountSummary, Position


class RiskAccount(Protocol):
    def quantities(self) -> Mapping[str, int]:
        """Signed contracts per symbol (flat symbols may be absent)."""
        ...

    def day_pnl_net(self) -> float:
        """Realized + unrealized P&L of the session day, net of fees, in R$."""
        ...


class AccountSnapshot:
    """A :class:`RiskAccount` kept up to date from Position and AccountSummary messages.
    Messages of another account, or not of these types, are counted in ``ignored``."""

    def __init__(self, account: str):
        self.account = account
        self._quantities: dict[str, int] = {}
        self._pnl = 0.0
        self.ignored = 0

    def apply(self, msg: Position | AccountSummary) -> None:
        if isinstance(msg, Position) and msg.account == self.account and isinstance(msg.quantity, int):
            self._quantities[msg.symbol] = msg.quantity
        elif (isinstance(msg, AccountSummary) and msg.account == self.account
              and isinstance(msg.day_pnl_net, (int, float)) and math.isfinite(msg.day_pnl_net)):
            self._pnl = float(msg.day_pnl_net)
        else:
            self.ignored += 1

    def quantities(self) -> Mapping[str, int]:
        return self._quantities

    def day_pnl_net(self) -> float:
        return self._pnl
