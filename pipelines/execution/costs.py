"""What a fill costs in R$: B3's fees per contract and the broker's.

B3 charges mini contracts one "single fee" (emolumentos and registration together) per
contract traded, taken from the full contract's table by volume tier, scaled by the mini
contract's factor, and reduced for day trades by the day-trade table. Defaults are the
first tiers (a retail account trades far below the next ones), as B3's fee schedules
publish them:

- WDO ("Tarifas de dólar dos Estados Unidos - futuros de dólar"): DOL single fee US$0.97
  (ADV 1-250), WDO factor 0.25, day-trade reduction 16 % (day-trade ADV 1-20), charged in
  R$ at the day's dollar rate (``usd_brl``): 0.97 x 0.25 x 0.84 = US$0.2037 per contract.
- WIN ("Ibovespa and IBrX-50 fees - futures"): IND single fee R$1.97 (ADV 1-50), WIN
  factor 0.2, day-trade reduction 35 % (day-trade ADV 1-5): 1.97 x 0.2 x 0.65 = R$0.2561.

Both include PIS/COFINS, as B3 states beside the tables. A trader on a higher tier, or
holding overnight (no day-trade reduction), sets the numbers in ``execution.costs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.model.settings import bounded


@dataclass(frozen=True)
class FeeSchedule:
    """One instrument root's fee per contract: ``single_fee`` of the full contract (in
    ``currency``) x ``contract_factor`` x (1 - ``day_trade_reduction``)."""

    single_fee: float = field(metadata=bounded(0, 1000))
    currency: str = "BRL"  # BRL, or USD converted at CostsConfig.usd_brl
    contract_factor: float = field(default=1.0, metadata=bounded(0, 100))
    day_trade_reduction: float = field(default=0.0, metadata=bounded(0, 1))


@dataclass(frozen=True)
class CostsConfig:
    usd_brl: float = field(default=5.40, metadata=bounded(0.01, 1000))  # R$ per US$ for USD-priced fees
    broker_fee_per_contract: float = field(default=0.0, metadata=bounded(0, 1000))  # R$; many brokers charge 0 on minis
    day_trade: bool = True  # positions are closed within the session (the policy flattens before the close)
    wdo: FeeSchedule = field(default_factory=lambda: FeeSchedule(0.97, "USD", 0.25, 0.16))
    win: FeeSchedule = field(default_factory=lambda: FeeSchedule(1.97, "BRL", 0.2, 0.35))


class CostModel:
    """R$ per contract by symbol, computed once per root."""

    def __init__(self, cfg: CostsConfig = CostsConfig()):
        self.cfg = cfg
        self._schedules = {"WDO": cfg.wdo, "WIN": cfg.win}
        self._per_contract: dict[str, float] = {}

    def exchange_fee(self, symbol: str) -> float:
        """B3's fee per contract in R$ (0 for a symbol without a schedule, e.g. simulated or ES data)."""
        root = symbol[:3]
        if root not in self._per_contract:
            s = self._schedules.get(root)
            if s is None:
                fee = 0.0
            else:
                reduction = s.day_trade_reduction if self.cfg.day_trade else 0.0
                fx = self.cfg.usd_brl if s.currency == "USD" else 1.0
                fee = s.single_fee * s.contract_factor * (1.0 - reduction) * fx
            self._per_contract[root] = fee
        return self._per_contract[root]

    def fees(self, symbol: str, quantity: int) -> float:
        """What a fill of ``quantity`` contracts costs in R$, exchange and broker together."""
        return abs(quantity) * (self.exchange_fee(symbol) + self.cfg.broker_fee_per_contract)
