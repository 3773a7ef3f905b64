"""Positions, P&L and B3 costs in R$ (pipelines/execution/positions.py, costs.py), by hand.

B3 fee per contract, first tiers, day trade:
  WDO: US$0.97 x 0.25 (contract factor) x (1 - 0.16) x R$5.40 = R$1.09998
  WIN: R$1.97 x 0.2 x (1 - 0.35)                               = R$0.2561
"""

from __future__ import annotations

import math

import pytest

from pipelines.execution.costs import CostModel, CostsConfig, FeeSchedule
from pipelines.execution.positions import PositionBook
from pipelines.model.orders import Fill

WDO_FEE = 0.97 * 0.25 * 0.84 * 5.40
WIN_FEE = 1.97 * 0.2 * 0.65
T = 1_800_000_000_000_000_000
costs = CostModel()
_n = iter(range(1, 10**6))


def fill(symbol: str, side: str, qty: int, price: float, ts: int = T) -> Fill:
    n = next(_n)
    return Fill(f"o{n}#1", f"o{n}", "paper", symbol, ts, side, qty, price, "taker", costs.fees(symbol, qty))


def test_fee_per_contract_from_the_published_tables():
    assert costs.exchange_fee("WDOZ26") == pytest.approx(1.09998)
    assert costs.exchange_fee("WINZ26") == pytest.approx(0.2561)
    assert costs.exchange_fee("SIM") == 0.0  # simulated or foreign data: no B3 fee
    assert costs.fees("WDOZ26", -3) == pytest.approx(3 * 1.09998)
    # Held overnight (no day-trade reduction) and a broker fee of R$0.50.
    swing = CostModel(CostsConfig(day_trade=False, broker_fee_per_contract=0.5))
    assert swing.fees("WINZ26", 2) == pytest.approx(2 * (1.97 * 0.2 + 0.5))
    custom = CostModel(CostsConfig(usd_brl=5.0, wdo=FeeSchedule(0.33, "USD", 0.25, 0.65)))
    assert custom.exchange_fee("WDOF27") == pytest.approx(0.33 * 0.25 * 0.35 * 5.0)


def test_wdo_round_trip_net_of_fees():
    book = PositionBook("paper")
    book.apply(fill("WDOZ26", "BUY", 2, 5400.0))
    p = book.apply(fill("WDOZ26", "SELL", 2, 5403.5))
    # 2 contracts x 3.5 points x R$10 = R$70 gross; 4 contracts traded x R$1.09998 in fees.
    assert (p.quantity, p.avg_price, p.unrealized_pnl) == (0, 0.0, 0.0)
    assert p.realized_pnl == pytest.approx(70.0)
    assert p.fees == pytest.approx(4 * WDO_FEE)
    assert p.net_pnl == pytest.approx(70.0 - 4 * 1.09998)


def test_win_partial_close_and_unrealized_marked_to_the_last_trade():
    book = PositionBook("paper")
    book.apply(fill("WINZ26", "BUY", 3, 130000.0))
    book.apply(fill("WINZ26", "SELL", 1, 130100.0))  # realizes 1 x 100 points x R$0.20 = R$20
    book.mark("WINZ26", 130050.0, T + 1)
    p = book.position("WINZ26")
    assert (p.quantity, p.avg_price, p.last_price) == (2, 130000.0, 130050.0)
    assert p.realized_pnl == pytest.approx(20.0)
    assert p.unrealized_pnl == pytest.approx(2 * 50 * 0.20)  # R$20 open
    assert p.fees == pytest.approx(4 * 0.2561)
    assert book.day_pnl_net() == pytest.approx(20.0 + 20.0 - 4 * WIN_FEE)
    s = book.summary(T + 1)
    assert (s.positions, s.open_exposure) == (1, pytest.approx(2 * 130050.0 * 0.20))
    assert s.day_pnl_net == pytest.approx(s.day_pnl_gross - s.fees)


def test_a_flip_realizes_the_closed_part_and_opens_the_rest_at_the_fill_price():
    book = PositionBook("paper")
    book.apply(fill("WDOZ26", "SELL", 1, 5400.0))
    p = book.apply(fill("WDOZ26", "BUY", 3, 5398.0))  # closes the short (+2 points) and goes long 2
    assert (p.quantity, p.avg_price) == (2, 5398.0)
    assert p.realized_pnl == pytest.approx(1 * 2.0 * 10)
    book.mark("WDOZ26", 5399.0, T + 5)
    assert book.position("WDOZ26").unrealized_pnl == pytest.approx(2 * 1.0 * 10)
    assert book.quantities() == {"WDOZ26": 2}


def test_a_fill_applied_twice_counts_once_and_state_round_trips():
    book = PositionBook("paper")
    f = fill("WDOZ26", "BUY", 1, 5400.0)
    book.apply(f)
    book.apply(f)
    assert book.position("WDOZ26").quantity == 1 and book.duplicate_fills == 1
    book.mark("WDOZ26", math.nan, T)  # a bad mark changes nothing
    assert book.position("WDOZ26").last_price == 5400.0
    again = PositionBook("paper")
    again.load_state(book.state())
    assert again.position("WDOZ26") == book.position("WDOZ26")
    with pytest.raises(ValueError, match="account"):
        PositionBook("other").load_state(book.state())
