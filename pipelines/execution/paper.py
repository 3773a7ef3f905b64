"""Paper trading: where decisions are filled today.

:class:`PaperAccount` fills every BUY or SELL in full at the decision's price
and keeps the position, its average price and the realized P&L in the
instrument's currency (:func:`pipelines.model.instruments.point_value_for`).
It is an :class:`pipelines.portfolio.interfaces.Account`, so a simulated
exchange can take its place.

:func:`paper_coordinator` is the one place that composes the coordinator with
the default risk check and a paper account (the coordinator actor and the
tests build it so).
"""

from __future__ import annotations

from pipelines.model.instruments import point_value_for
from pipelines.model.messages import Decision
from pipelines.portfolio.consensus import ConsensusConfig, Coordinator
from pipelines.portfolio.interfaces import Fill
from pipelines.risk.limits import PositionAndLossLimits, RiskLimits


class PaperAccount:
    """One symbol's simulated account: fills at the decision price, idempotent by seq."""

    def __init__(self, symbol: str, point_value: float | None = None) -> None:
        self.symbol = symbol
        self.point_value = point_value_for(symbol, point_value)
        self.position = 0
        self.avg_price = 0.0
        self.realized_pnl = 0.0
        self.last_applied_seq: int | None = None

    def apply(self, decision: Decision) -> Fill:
        """Mark ``decision`` filled at its price: update position, average price and
        realized P&L. A decision whose seq was already applied is ignored."""
        if decision.symbol != self.symbol:
            return "other_symbol"
        if self.last_applied_seq is not None and decision.seq <= self.last_applied_seq:
            return "duplicate"
        self.last_applied_seq = decision.seq
        if decision.action not in ("BUY", "SELL") or decision.size <= 0:
            return "not_traded"
        qty = decision.size if decision.action == "BUY" else -decision.size
        pos, price = self.position, float(decision.price)
        if pos == 0 or (pos > 0) == (qty > 0):  # opening or adding: new average price
            self.avg_price = (self.avg_price * abs(pos) + price * abs(qty)) / abs(pos + qty)
        else:  # reducing, closing or flipping: realize the closed part
            closed = min(abs(qty), abs(pos))
            self.realized_pnl += closed * (price - self.avg_price) * (1 if pos > 0 else -1) * self.point_value
            if pos + qty == 0:
                self.avg_price = 0.0
            elif (pos + qty > 0) != (pos > 0):
                self.avg_price = price  # flipped: the remainder opened at this price
        self.position = pos + qty
        return "filled"

    def reset(self) -> None:
        self.position, self.avg_price, self.realized_pnl = 0, 0.0, 0.0
        self.last_applied_seq = None

    def state(self) -> dict:
        # These keys, in this order, sit in the coordinator's saved state (Valkey) between its weights and signals.
        return {"position": self.position, "avg_price": self.avg_price, "realized_pnl": self.realized_pnl,
                "last_applied_seq": self.last_applied_seq}

    def load_state(self, d: dict) -> None:
        self.position = int(d["position"])
        self.avg_price = float(d["avg_price"])
        self.realized_pnl = float(d["realized_pnl"])
        self.last_applied_seq = d["last_applied_seq"]


def paper_coordinator(symbol: str, voters: list[str], cfg: ConsensusConfig = ConsensusConfig(), *,
                      limits: RiskLimits = RiskLimits()) -> Coordinator:
    """A coordinator whose trades pass the position and loss ``limits`` and fill on a paper account."""
    return Coordinator(symbol, voters, cfg, risk_check=PositionAndLossLimits(limits), account=PaperAccount(symbol))
