"""What the coordinator asks of the risk check and of the account it is composed with.

The coordinator proposes a trade, lets a risk check cut it and hands the
decision to an account that fills it. Portfolio declares those two roles here
and the risk and execution packages implement them, so they depend on
portfolio and portfolio on neither: a simulated exchange or another risk
engine takes its place without a change here.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Protocol

from pipelines.model.messages import Decision

# What became of a decision handed to an account.
Fill = Literal["filled", "not_traded", "duplicate", "other_symbol"]


class AccountView(NamedTuple):
    """The account as a risk check sees it: a copy, so a check cannot change the account."""

    position: int  # signed contracts
    avg_price: float  # average entry price of the open position (0 when flat)
    realized_pnl: float  # currency


class RiskCheck(Protocol):
    def __call__(self, proposal: Decision, account: AccountView) -> tuple[int, str]:
        """The size allowed for ``proposal`` (at most ``proposal.size``) and why it is less ("" when not)."""
        ...


class Account(Protocol):
    """Whatever fills the coordinator's decisions; its state is saved with the coordinator's."""

    @property
    def position(self) -> int:
        """Signed contracts."""
        ...

    @property
    def avg_price(self) -> float:
        """Average entry price of the open position (0 when flat)."""
        ...

    @property
    def realized_pnl(self) -> float:
        """Currency."""
        ...

    def apply(self, decision: Decision) -> Fill:
        """Trade ``decision``; one that was already applied (by seq) must change nothing."""
        ...

    def reset(self) -> None:
        """Flat, no P&L, no decision seen."""
        ...

    def state(self) -> dict:
        """JSON-able; :meth:`load_state` restores it."""
        ...

    def load_state(self, d: dict) -> None: ...
