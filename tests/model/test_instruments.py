"""Contract specifications: the money constants, checked against B3's published sizes."""

import pytest

from pipelines.model.instruments import UnknownInstrument, instrument_for, tick_size_for


def test_b3_minis_tick_and_point_value():
    wdo, win = instrument_for("WDOZ26"), instrument_for("WINZ26")
    assert (wdo.tick_size, wdo.point_value, wdo.currency) == (0.5, 10.0, "BRL")
    assert (win.tick_size, win.point_value) == (5.0, 0.20)
    # One tick: WDO 0.5 pt x R$10 = R$5; WIN 5 pts x R$0.20 = R$1.
    assert (wdo.tick_value, win.tick_value) == (5.0, 1.0)
    # 3 contracts long WDO from 5400.0 to 5412.5: 12.5 pts x 10 x 3 = R$375.
    assert wdo.pnl(5412.5 - 5400.0, 3) == 375.0
    # 2 contracts short WIN from 130000 to 130250: -250 pts x 0.20 x 2 = -R$100.
    assert win.pnl(-(130250 - 130000), 2) == pytest.approx(-100.0)


def test_roots_resolve_and_unknown_is_clear():
    assert instrument_for("ESZ5").root == "ES" and instrument_for("WDOFUT").root == "WDO"
    with pytest.raises(UnknownInstrument, match="no contract specification for 'PETR4'"):
        instrument_for("PETR4")
    assert tick_size_for("PETR4", 0.01) == 0.01 and tick_size_for("WINV26", 0.5) == 5.0
