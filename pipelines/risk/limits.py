"""Pre-trade risk: how much of a proposed trade may go through.

A risk check is any callable ``(proposal, account) -> (size, reason)``
(:class:`pipelines.portfolio.interfaces.RiskCheck`): it sees the proposed
Decision and the account's position and P&L, and returns the size it allows,
with a reason when that is less than proposed. The coordinator never lets a
check enlarge a trade, and size 0 turns the decision into a HOLD carrying the
reason.

The default, :class:`PositionAndLossLimits`, enforces a position limit and a
realized-loss limit (:class:`RiskLimits`, config ``hmarl.max_position`` and
``hmarl.max_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.model.messages import Decision
from pipelines.portfolio.interfaces import AccountView


@dataclass(frozen=True)
class RiskLimits:
    max_position: int = 5  # contracts, either side
    max_loss: float = 2000.0  # realized loss (currency) after which only reducing trades pass

    def __post_init__(self) -> None:
        if not self.max_position >= 0:
            raise ValueError(f"RiskLimits.max_position: must be >= 0, got {self.max_position!r}")
        if not self.max_loss >= 0:
            raise ValueError(f"RiskLimits.max_loss: must be >= 0, got {self.max_loss!r}")

    @classmethod
    def from_hmarl(cls, hmarl: Any) -> RiskLimits:
        """The limits of the ``hmarl`` config section (``pipelines.config.HmarlConfig``)."""
        return cls(max_position=hmarl.max_position, max_loss=hmarl.max_loss)


@dataclass(frozen=True)
class PositionAndLossLimits:
    """The default risk check (a :class:`~pipelines.portfolio.interfaces.RiskCheck`).

    Loss limit: once ``realized_pnl <= -max_loss`` only trades that reduce the
    open position pass, cut to its size (no flip). Position limit: a trade that
    would take ``|position|`` past ``max_position`` is cut to the room left, or
    blocked when there is none."""

    limits: RiskLimits = RiskLimits()

    def __call__(self, proposal: Decision, account: AccountView) -> tuple[int, str]:
        max_position, max_loss = self.limits.max_position, self.limits.max_loss
        side = 1 if proposal.action == "BUY" else -1
        size, position, realized = proposal.size, account.position, account.realized_pnl
        if realized <= -max_loss:
            reducing = position * side < 0
            if not reducing:
                return 0, f"loss limit: realized {realized:.2f} <= -{max_loss:.2f}, only reducing trades"
            if size > abs(position):
                return abs(position), f"loss limit: size {size} -> {abs(position)}, reduce only"
            return size, ""
        room = max_position - side * position
        if size <= room:
            return size, ""
        if room <= 0:
            return 0, f"position limit: position {position:+d}, max {max_position}"
        return room, f"position limit: size {size} -> {room} (position {position:+d}, max {max_position})"
