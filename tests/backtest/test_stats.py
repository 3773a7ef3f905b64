"""Round trips, equity and the report's statistics (pipelines/backtest/stats.py), by hand.

WDO: R$10 per point, B3 fee per contract (first tier, day trade)
  US$0.97 x 0.25 x (1 - 0.16) x R$5.40 = R$1.09998.
WIN: R$0.20 per point, fee R$1.97 x 0.2 x (1 - 0.35) = R$0.2561.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pipelines.backtest.stats import (DEFINITIONS, buy_and_hold, daily_pnl, equity_curve, last_prices, open_trips,
                                      round_trips, statistics, underwater)
from pipelines.execution.positions import PositionBook
from pipelines.model.clock import NS_PER_DAY, NS_PER_MIN, parse_time, to_ns
from pipelines.model.orders import Fill

F = 0.97 * 0.25 * 0.84 * 5.40  # WDO fee per contract, R$1.09998
WIN_FEE = 1.97 * 0.2 * 0.65  # R$0.2561
WDO, WIN = "WDOZ26", "WINZ26"
PV = {WDO: 10.0, WIN: 0.2}
FEE = {WDO: F, WIN: WIN_FEE}
DAY1 = to_ns(parse_time("2026-12-01T00:00:00"))  # Sao Paulo midnight
M = NS_PER_MIN


def at(day: int, hh: int, mm: int) -> int:
    """Event time of hh:mm Sao Paulo on day 1, 2, 3 (UTC-3 all year since 2019)."""
    return DAY1 + (day - 1) * NS_PER_DAY + (hh * 60 + mm) * M


def fills(*rows: tuple) -> pd.DataFrame:
    """(symbol, ts, side, quantity, price[, fees]) -> a fills table; fees default to the B3 fee."""
    out = []
    for n, r in enumerate(rows):
        sym, ts, side, qty, price = r[:5]
        fee = r[5] if len(r) > 5 else qty * FEE[sym]
        out.append(Fill(f"o{n}#1", f"o{n}", "paper", sym, ts, side, qty, price, "taker", fee, f"d{n}"))
    return pd.DataFrame(out, columns=Fill._fields)


def marks(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["ts_event", "symbol", "price"])


def trip(df: pd.DataFrame, i: int = 0) -> dict:
    return df.iloc[i].to_dict()


# -- round trips ------------------------------------------------------------------------


def test_long_round_trip_wdo():
    t = round_trips(fills((WDO, at(1, 10, 0), "BUY", 2, 5400.0), (WDO, at(1, 10, 5), "SELL", 2, 5403.5)), PV)
    assert len(t) == 1
    r = trip(t)
    # 2 contracts x 3.5 points x R$10 = R$70; 4 contracts traded x R$1.09998 = R$4.39992.
    assert (r["symbol"], r["side"], r["quantity"]) == (WDO, "BUY", 2)
    assert (r["ts_open"], r["ts_close"], r["duration_ns"]) == (at(1, 10, 0), at(1, 10, 5), 5 * M)
    assert (r["entry_vwap"], r["exit_vwap"]) == (5400.0, 5403.5)
    assert r["gross_pnl"] == pytest.approx(70.0)
    assert r["fees"] == pytest.approx(4.39992)
    assert r["net_pnl"] == pytest.approx(65.60008)


def test_short_round_trip_win():
    t = round_trips(fills((WIN, at(1, 10, 0), "SELL", 3, 130000.0), (WIN, at(1, 10, 1), "BUY", 3, 129900.0)), PV)
    r = trip(t)
    # Sold 3 at 130000, bought back at 129900: 3 x 100 points x R$0.20 = R$60; fees 6 x 0.2561 = R$1.5366.
    assert (r["side"], r["quantity"], r["entry_vwap"], r["exit_vwap"]) == ("SELL", 3, 130000.0, 129900.0)
    assert r["gross_pnl"] == pytest.approx(60.0)
    assert r["fees"] == pytest.approx(1.5366)
    assert r["net_pnl"] == pytest.approx(58.4634)


def test_flip_in_one_fill_splits_quantity_and_fee_pro_rata():
    t = round_trips(fills((WDO, at(1, 10, 0), "BUY", 1, 5400.0, 0.5),
                          (WDO, at(1, 10, 1), "SELL", 3, 5402.0, 0.9),  # closes 1, opens 2 short
                          (WDO, at(1, 10, 2), "BUY", 2, 5405.0, 0.4)), PV)
    assert len(t) == 2
    long, short = trip(t, 0), trip(t, 1)
    # Long 1 from 5400 to 5402: 2 points x R$10 = R$20; fees 0.5 + 1/3 of 0.9 = 0.8.
    assert (long["side"], long["quantity"], long["ts_close"]) == ("BUY", 1, at(1, 10, 1))
    assert long["gross_pnl"] == pytest.approx(20.0)
    assert long["fees"] == pytest.approx(0.8)
    assert long["net_pnl"] == pytest.approx(19.2)
    # Short 2 from 5402 (opened by the flip) to 5405: -3 x 2 x R$10 = -R$60; fees 2/3 of 0.9 + 0.4 = 1.0.
    assert (short["side"], short["quantity"], short["ts_open"]) == ("SELL", 2, at(1, 10, 1))
    assert (short["entry_vwap"], short["exit_vwap"]) == (5402.0, 5405.0)
    assert short["gross_pnl"] == pytest.approx(-60.0)
    assert short["fees"] == pytest.approx(1.0)
    assert short["net_pnl"] == pytest.approx(-61.0)


def test_scaling_in_and_partial_exits_make_one_trip():
    t = round_trips(fills((WDO, at(1, 10, 0), "BUY", 3, 5400.0), (WDO, at(1, 10, 1), "BUY", 1, 5404.0),
                          (WDO, at(1, 10, 2), "SELL", 2, 5406.0), (WDO, at(1, 10, 3), "SELL", 2, 5402.0)), PV)
    r = trip(t)
    # entry VWAP (3 x 5400 + 5404) / 4 = 5401; exit VWAP (2 x 5406 + 2 x 5402) / 4 = 5404.
    # Cash flows: -16200 - 5404 + 10812 + 10804 = +12 points x R$10 = R$120; 8 contracts of fees.
    assert (r["quantity"], r["entry_vwap"], r["exit_vwap"]) == (4, 5401.0, 5404.0)
    assert r["gross_pnl"] == pytest.approx(120.0)
    assert r["fees"] == pytest.approx(8 * 1.09998)
    assert r["net_pnl"] == pytest.approx(120.0 - 8.79984)
    assert r["duration_ns"] == 3 * M


def test_symbols_are_separate_trips_in_the_order_they_close():
    t = round_trips(fills((WDO, at(1, 10, 0), "BUY", 1, 5400.0), (WIN, at(1, 10, 1), "SELL", 1, 130000.0),
                          (WIN, at(1, 10, 2), "BUY", 1, 130050.0), (WDO, at(1, 10, 3), "SELL", 1, 5401.0)), PV)
    assert list(t["symbol"]) == [WIN, WDO]
    # WIN short 1 x -50 points x R$0.20 = -R$10; WDO long 1 x 1 point x R$10 = R$10.
    assert list(t["gross_pnl"]) == pytest.approx([-10.0, 10.0])


def test_open_trip_at_the_end_is_marked_to_the_last_price():
    f = fills((WDO, at(1, 10, 0), "BUY", 2, 5400.0), (WDO, at(1, 10, 1), "SELL", 1, 5410.0))
    assert round_trips(f, PV).empty
    o = open_trips(f, {WDO: 5395.0}, PV)
    r = trip(o)
    # Realized 1 x 10 points = R$100; open 1 at 5400 marked 5395: -R$50; gross R$50; fees 3 x 1.09998.
    assert (r["side"], r["quantity"], r["position"], r["entry_vwap"], r["exit_vwap"]) == ("BUY", 2, 1, 5400.0, 5410.0)
    assert r["mark_price"] == 5395.0
    assert r["gross_pnl"] == pytest.approx(50.0)
    assert r["fees"] == pytest.approx(3.29994)
    assert r["net_pnl"] == pytest.approx(46.70006)
    # The equity curve ends at the same figure when the last mark is 5395.
    eq = equity_curve(f, marks((at(1, 10, 2), WDO, 5395.0)), PV)
    assert eq["equity"].iloc[-1] == pytest.approx(46.70006)
    assert eq[f"position_{WDO}"].tolist() == [2, 1, 1]
    # No open trip when flat, and a mark is needed for one that is open.
    assert open_trips(fills((WDO, at(1, 10, 0), "BUY", 1, 5400.0), (WDO, at(1, 10, 1), "SELL", 1, 5401.0)),
                      {}, PV).empty
    with pytest.raises(ValueError, match="last price of 'WDOZ26'"):
        open_trips(f, {}, PV)


def test_point_value_as_a_function():
    t = round_trips(fills((WIN, at(1, 10, 0), "BUY", 1, 130000.0), (WIN, at(1, 10, 1), "SELL", 1, 130010.0)),
                    lambda s: 0.2)
    assert trip(t)["gross_pnl"] == pytest.approx(2.0)  # 10 points x R$0.20


# -- equity -----------------------------------------------------------------------------


def test_equity_curve_by_hand():
    f = fills((WDO, at(1, 10, 1), "BUY", 1, 5400.0), (WDO, at(1, 10, 3), "SELL", 1, 5402.0))
    m = marks((at(1, 10, 0), WDO, 5399.0), (at(1, 10, 2), WDO, 5398.5), (at(1, 10, 3), WDO, 5402.5))
    eq = equity_curve(f, m, PV, start_ns=at(1, 9, 0))
    assert eq["ts_event"].tolist() == [at(1, 9, 0), at(1, 10, 0), at(1, 10, 1), at(1, 10, 2), at(1, 10, 3)]
    # 10:01 bought 1 at 5400 while the last trade was 5399: marked -1 point = -R$10, fee -F.
    # 10:02 trade 5398.5: -1.5 points = -R$15.  10:03 sold at 5402: realized R$20, fees 2F.
    assert eq["gross_pnl"].tolist() == pytest.approx([0.0, 0.0, -10.0, -15.0, 20.0])
    assert eq["fees"].tolist() == pytest.approx([0.0, 0.0, F, F, 2 * F])
    assert eq["equity"].tolist() == pytest.approx([0.0, 0.0, -10.0 - F, -15.0 - F, 20.0 - 2 * F])
    assert eq[f"position_{WDO}"].tolist() == [0, 0, 1, 1, 0]
    assert eq["contracts_traded"].tolist() == [0, 0, 1, 1, 2]
    assert eq["notional_traded"].tolist() == pytest.approx([0, 0, 54000.0, 54000.0, 54000.0 + 54020.0])
    # Underwater: the peak is the run's zero until the end; -(15 + F) is the deepest.
    assert underwater(eq).tolist() == pytest.approx([0.0, 0.0, -10.0 - F, -15.0 - F, 0.0])
    with pytest.raises(ValueError, match="start_ns"):
        equity_curve(f, m, PV, start_ns=at(1, 10, 2))


def test_a_position_is_valued_at_its_fill_price_before_the_first_mark():
    f = fills((WIN, at(1, 10, 0), "BUY", 2, 130000.0))
    eq = equity_curve(f, marks(), PV)
    assert eq["equity"].tolist() == pytest.approx([-2 * WIN_FEE])


def test_daily_pnl_by_sao_paulo_session_day():
    # 20:59 local on day 1 is 23:59 UTC, and 21:30 local is 00:30 UTC on day 2: still day 1 in Sao Paulo.
    f = fills((WDO, at(1, 10, 0), "BUY", 1, 5400.0), (WDO, at(1, 21, 30), "SELL", 1, 5401.0),
              (WDO, at(2, 10, 0), "SELL", 1, 5401.0), (WDO, at(2, 11, 0), "BUY", 1, 5398.0))
    d = daily_pnl(equity_curve(f, marks(), PV))
    assert [x.date().isoformat() for x in d.index] == ["2026-12-01", "2026-12-02"]
    # Day 1: +1 point = R$10 - 2F; day 2: short 3 points = R$30 - 2F.
    assert d.tolist() == pytest.approx([10 - 2 * F, 30 - 2 * F])


# -- statistics -------------------------------------------------------------------------

# Seven one-lot WDO trips over two days, a third day with a long still open at the end.
# Every fill is also a trade at its price (a mark), so a trip's open costs only its fee.
SESSIONS = [
    # day 1: long +4, short -2, long -3 points
    (WDO, at(1, 10, 0), "BUY", 1, 5400.0), (WDO, at(1, 10, 10), "SELL", 1, 5404.0),
    (WDO, at(1, 10, 20), "SELL", 1, 5405.0), (WDO, at(1, 10, 30), "BUY", 1, 5407.0),
    (WDO, at(1, 10, 40), "BUY", 1, 5406.0), (WDO, at(1, 10, 50), "SELL", 1, 5403.0),
    # day 2: long +10, short -1, short -5, long +2 points
    (WDO, at(2, 10, 0), "BUY", 1, 5410.0), (WDO, at(2, 10, 10), "SELL", 1, 5420.0),
    (WDO, at(2, 10, 20), "SELL", 1, 5420.0), (WDO, at(2, 10, 30), "BUY", 1, 5421.0),
    (WDO, at(2, 10, 40), "SELL", 1, 5421.0), (WDO, at(2, 10, 50), "BUY", 1, 5426.0),
    (WDO, at(2, 11, 0), "BUY", 1, 5425.0), (WDO, at(2, 11, 10), "SELL", 1, 5427.0),
    # day 3: long 1 at 5430, still open
    (WDO, at(3, 10, 0), "BUY", 1, 5430.0),
]
CAPITAL = 100_000.0


def hand_example():
    f = fills(*SESSIONS)
    m = marks((at(1, 9, 30), WDO, 5399.0), *[(r[1], WDO, r[4]) for r in SESSIONS], (at(3, 10, 30), WDO, 5428.0))
    return f, m


def test_every_statistic_on_a_hand_example():
    f, m = hand_example()
    trips = round_trips(f, PV)
    eq = equity_curve(f, m, PV)
    bh = buy_and_hold(m, PV, FEE)
    s = statistics(trips, eq, capital=CAPITAL, buy_and_hold=bh)
    assert set(s) == set(DEFINITIONS)
    json.dumps(s, allow_nan=False)  # stats.json: no NaN or inf

    # Trips net of 2F each: +40, -20, -30, +100, -10, -50, +20 points x R$10 gross.
    gross = [40, -20, -30, 100, -10, -50, 20]
    assert trips["net_pnl"].tolist() == pytest.approx([g - 2 * F for g in gross])
    assert s["trades"] == 7 and s["wins"] == 3 and s["losses"] == 4
    assert s["win_rate"] == pytest.approx(3 / 7)
    # Wins 160 - 6F; losses -(110 + 8F).
    assert s["profit_factor"] == pytest.approx((160 - 6 * F) / (110 + 8 * F))
    assert s["expectancy"] == pytest.approx((50 - 14 * F) / 7)
    assert s["average_win"] == pytest.approx((160 - 6 * F) / 3)
    assert s["average_loss"] == pytest.approx(-(110 + 8 * F) / 4)
    assert s["largest_win"] == pytest.approx(100 - 2 * F)
    assert s["largest_loss"] == pytest.approx(-50 - 2 * F)
    assert s["max_consecutive_losses"] == 2  # W L L W L L W

    # Closed trips +50 - 14F; the open long: 5430 -> 5428 = -R$20 and its fee F.
    assert s["net_pnl"] == pytest.approx(30 - 15 * F)
    assert s["gross_pnl"] == pytest.approx(30.0)
    assert s["costs"] == pytest.approx(15 * F)
    assert s["open_pnl"] == pytest.approx(-20 - F)
    assert s["vs_doing_nothing"] == pytest.approx(30 - 15 * F)
    # Buy and hold one contract from the first trade 5399 to the last 5428: 29 points - 2F.
    assert s["buy_and_hold"] == pytest.approx(290 - 2 * F)
    assert s["vs_buy_and_hold"] == pytest.approx((30 - 15 * F) - (290 - 2 * F))

    # Equity: peak 90 - 8F after day 2's first trip (10:10); lowest after it 30 - 15F at the last row
    # (deeper than day 1's fall from 40 - 2F to -10 - 7F, i.e. 50 + 5F): never recovered.
    assert s["max_drawdown"] == pytest.approx(60 + 7 * F)
    assert s["max_drawdown_duration_ns"] == at(3, 10, 30) - at(2, 10, 10)
    assert s["max_drawdown_recovered"] is False
    assert (s["start_ns"], s["end_ns"], s["sessions"]) == (at(1, 9, 30), at(3, 10, 30), 3)

    # Daily P&L: day 1 -10 - 6F, day 2 (50 - 14F) - (-10 - 6F) = 60 - 8F, day 3 -20 - F.
    r = np.array([-10 - 6 * F, 60 - 8 * F, -20 - F]) / CAPITAL
    assert daily_pnl(eq).to_numpy() == pytest.approx(r * CAPITAL)
    assert s["sharpe_daily"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert s["sortino_daily"] == pytest.approx(r.mean() / math.sqrt((np.minimum(r, 0) ** 2).mean()) * math.sqrt(252))
    annual = (1 + r).prod() ** (252 / 3) - 1
    assert s["annual_return"] == pytest.approx(annual)
    # Compounded: day 1 falls r1 from 1; day 3 falls r3 from the peak after day 2; (20 + F) > (10 + 6F).
    assert s["max_drawdown_fraction"] == pytest.approx((20 + F) / CAPITAL)
    assert s["calmar"] == pytest.approx(annual / ((20 + F) / CAPITAL))
    p = np.array([g - 2 * F for g in gross])
    assert s["sharpe_per_trade"] == pytest.approx(p.mean() / p.std(ddof=1))
    assert s["sortino_per_trade"] == pytest.approx(p.mean() / math.sqrt((np.minimum(p, 0) ** 2).mean()))

    # In the market 30 of day 1's 80 minutes (09:30-10:50), 40 of day 2's 70 (10:00-11:10), all 30 of day 3's.
    assert s["time_in_market"] == pytest.approx((30 + 40 + 30) / (80 + 70 + 30))
    assert s["contracts_traded"] == 15
    notional = 10.0 * sum(r[4] for r in SESSIONS)
    assert s["notional_traded"] == pytest.approx(notional)
    assert s["turnover"] == pytest.approx(notional / CAPITAL)
    assert s["capital"] == CAPITAL


def test_undefined_figures_are_none_never_nan():
    # No fills at all: a run that only watched one session.
    eq = equity_curve(fills(), marks((at(1, 10, 0), WDO, 5400.0), (at(1, 11, 0), WDO, 5401.0)), PV)
    s = statistics(round_trips(fills(), PV), eq, capital=CAPITAL)
    json.dumps(s, allow_nan=False)
    assert s["trades"] == 0 and s["net_pnl"] == 0.0 and s["max_drawdown"] == 0.0
    for k in ("win_rate", "profit_factor", "expectancy", "average_win", "average_loss", "largest_win",
              "largest_loss", "sharpe_daily", "sortino_daily", "calmar", "annual_return", "sharpe_per_trade",
              "sortino_per_trade", "buy_and_hold", "vs_buy_and_hold"):
        assert s[k] is None, k
    assert s["time_in_market"] == 0.0 and s["max_drawdown_duration_ns"] == 0
    # Only winners, over two days: no profit factor, no Sortino; Sharpe per trade of equal wins has std 0.
    f = fills((WDO, at(1, 10, 0), "BUY", 1, 5400.0), (WDO, at(1, 10, 1), "SELL", 1, 5401.0),
              (WDO, at(2, 10, 0), "BUY", 1, 5400.0), (WDO, at(2, 10, 1), "SELL", 1, 5401.0))
    s = statistics(round_trips(f, PV), equity_curve(f, marks(), PV), capital=CAPITAL)
    json.dumps(s, allow_nan=False)
    assert s["profit_factor"] is None and s["sortino_per_trade"] is None and s["sortino_daily"] is None
    assert s["sharpe_per_trade"] is None and s["sharpe_daily"] is None  # two equal days: std 0
    assert s["win_rate"] == 1.0 and s["max_consecutive_losses"] == 0
    # An empty equity curve.
    s = statistics(round_trips(fills(), PV), equity_curve(fills(), marks(), PV), capital=CAPITAL)
    assert s["sessions"] == 0 and s["time_in_market"] is None and s["start_ns"] is None


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    (lambda df: df.drop(columns="price"), "missing column price"),
    (lambda df: df.assign(side=["BUY", "HOLD"]), "row 1, column side: expected BUY or SELL"),
    (lambda df: df.assign(price=[5400.0, math.nan]), "row 1, column price: expected a positive number"),
    (lambda df: df.assign(price=[0.0, 5401.0]), "row 0, column price"),
    (lambda df: df.assign(quantity=[1, 0]), "row 1, column quantity: expected a positive quantity"),
    (lambda df: df.assign(quantity=[1, -2]), "row 1, column quantity"),
    (lambda df: df.assign(quantity=[1.5, 1]), "row 0, column quantity: expected an integer"),
    (lambda df: df.assign(ts_event=[at(1, 10, 0), None]), "row 1, column ts_event"),
    (lambda df: df.assign(fees=[math.inf, 0.0]), "row 0, column fees"),
    (lambda df: df.assign(symbol=["", WDO]), "row 0, column symbol"),
])
def test_bad_fills_are_rejected_with_the_column_and_row(change, message):
    good = fills((WDO, at(1, 10, 0), "BUY", 1, 5400.0), (WDO, at(1, 10, 1), "SELL", 1, 5401.0))
    bad = change(good)
    for call in (lambda: round_trips(bad, PV), lambda: equity_curve(bad, marks(), PV),
                 lambda: open_trips(bad, {WDO: 5400.0}, PV)):
        with pytest.raises(ValueError, match=message):
            call()


def test_other_bad_input():
    f = fills((WDO, at(1, 10, 0), "BUY", 1, 5400.0), (WDO, at(1, 10, 1), "SELL", 1, 5401.0))
    with pytest.raises(ValueError, match="point value of 'WDOZ26'"):
        round_trips(f, {WIN: 0.2})
    with pytest.raises(ValueError, match="point value of 'WDOZ26'"):
        round_trips(f, {WDO: 0.0})
    with pytest.raises(ValueError, match="expected a pandas DataFrame"):
        round_trips([], PV)
    with pytest.raises(ValueError, match="marks: row 0, column price"):
        equity_curve(f, marks((at(1, 10, 0), WDO, math.nan)), PV)
    with pytest.raises(ValueError, match="marks: missing column symbol"):
        last_prices(pd.DataFrame({"ts_event": [1], "price": [1.0]}))
    eq = equity_curve(f, marks(), PV)
    with pytest.raises(ValueError, match="capital"):
        statistics(round_trips(f, PV), eq, capital=0)
    with pytest.raises(ValueError, match="trips: missing column net_pnl"):
        statistics(round_trips(f, PV).drop(columns="net_pnl"), eq, capital=CAPITAL)
    with pytest.raises(ValueError, match="equity: row 1, column ts_event: expected rows in increasing event time"):
        statistics(round_trips(f, PV), eq.iloc[::-1], capital=CAPITAL)
    with pytest.raises(ValueError, match="fee per contract of 'WDOZ26'"):
        buy_and_hold(marks((at(1, 10, 0), WDO, 5400.0)), PV, {})


# -- against independent computations on random fills ------------------------------------


def random_run(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three days of WDO and WIN trades on their tick grids, and fills of 1-3 lots, some at
    the last trade and some a few ticks away (walking the book), both sides at random."""
    rng = np.random.default_rng(seed)
    mark_rows, fill_rows = [], []
    for sym, tick, start in ((WDO, 0.5, 5400.0), (WIN, 5.0, 130000.0)):
        price = start
        for day in (1, 2, 3):
            ts = at(day, 9, 0) + rng.integers(0, 10**9, 200).cumsum() * 100
            for t in np.sort(ts).tolist():
                price += tick * int(rng.integers(-3, 4))
                mark_rows.append((t, sym, price))
                if rng.random() < 0.15:
                    q = int(rng.integers(1, 4))
                    fill_rows.append((sym, t + 1, str(rng.choice(["BUY", "SELL"])), q,
                                      price + tick * int(rng.integers(-2, 3)), q * FEE[sym]))
    return fills(*fill_rows), marks(*sorted(mark_rows))


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_properties_on_random_fills(seed):
    f, m = random_run(seed)
    trips = round_trips(f, PV)
    eq = equity_curve(f, m, PV)
    final = eq["equity"].iloc[-1]
    # Closed trips plus the open ones marked at the last trade make the final equity.
    opened = open_trips(f, last_prices(m), PV)
    assert trips["net_pnl"].sum() + opened["net_pnl"].sum() == pytest.approx(final, abs=1e-6)
    # Every contract traded is in one trip: a closed trip opened and closed its quantity; an open
    # one opened its quantity and closed all but its position.
    closed_part = (opened["quantity"] - opened["position"].abs()).sum()
    assert trips["quantity"].sum() * 2 + opened["quantity"].sum() + closed_part == f["quantity"].sum()

    # Every row equals the average-cost position book of the execution domain, marked to the last trade.
    book = PositionBook("paper", PV)
    events = sorted([(r.ts_event, 0, r) for r in f.itertuples(index=False)]
                    + [(r.ts_event, 1, r) for r in m.itertuples(index=False)], key=lambda e: (e[0], e[1]))
    expected, i = {}, 0
    while i < len(events):
        t = events[i][0]
        while i < len(events) and events[i][0] == t:
            _, kind, r = events[i]
            if kind == 0:
                book.apply(Fill(*r))
            else:
                book.mark(r.symbol, r.price, r.ts_event)
            i += 1
        expected[t] = sum(p.net_pnl for p in book.positions())
    assert eq["ts_event"].tolist() == list(expected)
    assert eq["equity"].to_numpy() == pytest.approx(np.array(list(expected.values())), abs=1e-6)

    # Max drawdown against pandas: the running peak from the run's zero.
    equity = pd.concat([pd.Series([0.0]), eq["equity"]], ignore_index=True)
    s = statistics(trips, eq, capital=CAPITAL)
    assert s["max_drawdown"] == pytest.approx((equity.cummax() - equity).max())

    # Daily Sharpe from a daily series built here with pandas' own time zones.
    local = pd.to_datetime(eq["ts_event"], utc=True).dt.tz_convert("America/Sao_Paulo").dt.date
    end_of_day = eq["equity"].groupby(local).last()
    daily = end_of_day.diff().fillna(end_of_day.iloc[0]) / CAPITAL
    assert len(daily) == 3
    assert s["sharpe_daily"] == pytest.approx(daily.mean() / daily.std(ddof=1) * math.sqrt(252))
    assert s["contracts_traded"] == f["quantity"].sum()
    assert s["costs"] == pytest.approx(f["fees"].sum())
