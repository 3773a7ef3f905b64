"""Contract specifications: tick size and R$ value of one point, by symbol root.

This module owns the money constants. B3 mini contracts: WDO (mini US dollar)
R$10 per point, tick 0.5 point; WIN (mini Ibovespa) R$0.20 per point, tick 5
points. ES (CME E-mini S&P 500, the recorded test data) USD 50 per point, tick
0.25. Symbols resolve by exact code first, then by their 3- or 2-letter root
(``WDOZ26`` -> ``WDO``, ``ESZ5`` -> ``ES``).
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Instrument(NamedTuple):
    root: str
    tick_size: float  # price points per tick
    point_value: float  # money per point per contract
    currency: str

    @property
    def tick_value(self) -> float:
        return self.tick_size * self.point_value

    def pnl(self, points: float, contracts: int = 1) -> float:
        """Money for a move of ``points`` on ``contracts`` (signed)."""
        return points * self.point_value * contracts


INSTRUMENTS: dict[str, Instrument] = {
    "WDO": Instrument("WDO", 0.5, 10.0, "BRL"),
    "DOL": Instrument("DOL", 0.5, 50.0, "BRL"),
    "WIN": Instrument("WIN", 5.0, 0.20, "BRL"),
    "IND": Instrument("IND", 5.0, 1.0, "BRL"),
    "ES": Instrument("ES", 0.25, 50.0, "USD"),
    # Binance spot, as imported by pipelines/adapters/files/binance.py: sizes are integer lots of
    # 0.00001 BTC, so a "contract" is one lot and a point (1 USDT of price) is worth 1e-5 USDT.
    "BTCUSDT": Instrument("BTCUSDT", 0.01, 1e-5, "USDT"),
}


class UnknownInstrument(KeyError):
    def __str__(self) -> str:
        return f"no contract specification for {self.args[0]!r} (known roots: {', '.join(INSTRUMENTS)})"


def instrument_for(symbol: str) -> Instrument:
    """The specification of ``symbol``; raises :class:`UnknownInstrument`."""
    for key in (symbol, symbol[:3], symbol[:2]):
        if key in INSTRUMENTS:
            return INSTRUMENTS[key]
    raise UnknownInstrument(symbol)


def tick_size_for(symbol: str, default: float) -> float:
    """Tick size of a known contract, else ``default`` (simulated or unknown symbols)."""
    try:
        return instrument_for(symbol).tick_size
    except UnknownInstrument:
        return default


def point_value_for(symbol: str, override: float | None = None) -> float:
    """Money per point per contract: ``override``, else the instrument's; 1.0 for an
    unknown symbol (simulated contracts), so P&L is then counted in price points."""
    if override is not None:
        if not (math.isfinite(override) and override > 0):
            raise ValueError(f"point_value must be a positive number, got {override!r}")
        return float(override)
    try:
        return instrument_for(symbol).point_value
    except UnknownInstrument:
        return 1.0
