"""The paper account (pipelines/execution/paper.py): fills at the decision price, R$ P&L by hand."""

from __future__ import annotations

import json

import pytest

from pipelines.execution.paper import PaperAccount
from pipelines.model.messages import Decision

WDO, WIN = "WDOZ26", "WINZ26"


def decision(seq: int, action: str, size: int, price: float, symbol: str = WDO) -> Decision:
    return Decision(f"{symbol}-{seq}", symbol, seq, seq, action, size, 0.5, 0.5, price, 10, (), {}, {})


def book(a: PaperAccount) -> tuple:
    return a.position, a.avg_price, a.realized_pnl


def test_open_add_reduce_flip_close():
    a = PaperAccount(WDO)  # R$10 per point
    assert a.apply(decision(1, "BUY", 2, 5400.0)) == "filled" and book(a) == (2, 5400.0, 0.0)
    a.apply(decision(2, "BUY", 1, 5403.0))  # avg (2 x 5400 + 5403) / 3 = 5401
    assert book(a) == (3, 5401.0, 0.0)
    a.apply(decision(3, "SELL", 1, 5405.0))  # closes 1 at +4 points: R$40; the average stays
    assert book(a) == (2, 5401.0, 40.0)
    a.apply(decision(4, "SELL", 5, 5399.0))  # closes 2 at -2 points (-R$40), opens -3 at 5399
    assert book(a) == (-3, 5399.0, 0.0)
    a.apply(decision(5, "BUY", 3, 5397.5))  # a short closed 1.5 points lower: 3 x 1.5 x R$10 = R$45
    assert book(a) == (0, 0.0, 45.0)


def test_win_point_value_and_an_override():
    a = PaperAccount(WIN)  # R$0.20 per point
    a.apply(decision(1, "SELL", 1, 130000.0, WIN))
    a.apply(decision(2, "BUY", 1, 129900.0, WIN))  # short, 100 points lower: R$20
    assert book(a) == (0, 0.0, pytest.approx(20.0))
    b = PaperAccount("XYZ1")  # unknown contract: P&L in points
    b.apply(decision(1, "BUY", 2, 10.0, "XYZ1"))
    b.apply(decision(2, "SELL", 2, 12.5, "XYZ1"))
    assert b.realized_pnl == 5.0 and PaperAccount("XYZ1", point_value=3.0).point_value == 3.0
    with pytest.raises(ValueError, match="point_value"):
        PaperAccount(WDO, point_value=0.0)


def test_what_is_not_filled():
    a = PaperAccount(WDO)
    assert a.apply(decision(1, "HOLD", 0, 5400.0)) == "not_traded"
    assert a.apply(decision(1, "BUY", 1, 5400.0)) == "duplicate"  # seq 1 already seen, HOLD or not
    assert a.apply(decision(2, "BUY", 1, 5400.0, WIN)) == "other_symbol"
    assert a.apply(decision(2, "BUY", 1, 5400.0)) == "filled"
    assert a.apply(decision(2, "BUY", 1, 5400.0)) == "duplicate"  # re-sent
    assert book(a) == (1, 5400.0, 0.0)


def test_state_reset_and_reload():
    a = PaperAccount(WDO)
    a.apply(decision(7, "BUY", 2, 5400.0))
    a.apply(decision(8, "SELL", 1, 5401.0))
    saved = json.loads(json.dumps(a.state()))
    assert saved == {"position": 1, "avg_price": 5400.0, "realized_pnl": 10.0, "last_applied_seq": 8}
    b = PaperAccount(WDO)
    b.load_state(saved)
    assert book(b) == book(a) and b.apply(decision(8, "SELL", 1, 5401.0)) == "duplicate"
    b.reset()
    assert book(b) == (0, 0.0, 0.0) and b.apply(decision(8, "SELL", 1, 5401.0)) == "filled"
