"""The backtest report (pipelines/backtest/report.py): a hand-made run rendered and opened in
headless Chromium (Debian's ``chromium``), its figures read back from the page.

The run: WDOZ26 (R$10 per point), a flat R$1.10 fee per contract, two Sao Paulo sessions
(2026-12-01 and 2026-12-02, UTC-3), four closed round trips and one trip open at the end.

  day 1 10:01 BUY  1 @ 5400.0 } trip A long 1:  (5402.5 - 5400.0) x 10 = +25.00, fees 2.20, net +22.80
        10:03 SELL 1 @ 5402.5 }
        10:05 SELL 2 @ 5403.0 } trip B short 2: (5403.0 - 5405.0) x 2 x 10 = -40.00, fees 4.40, net -44.40
        10:09 BUY  2 @ 5405.0 }
  day 2 10:12 BUY  1 @ 5404.0 } trip C long 1:  +5.00, fees 2.20, net +2.80
        10:20 SELL 1 @ 5404.5 }
        10:22 SELL 1 @ 5404.0 } trip D short 1: (5404.0 - 5401.0) x 10 = +30.00, fees 2.20, net +27.80
        10:25 BUY  1 @ 5401.0 }
        10:28 BUY  1 @ 5401.5   open at the end, marked at 5403.0: +15.00 gross, fee 1.10

Marks (the market's last trade): 10:00 5400.0, 10:07 5406.0 and 10:30 5405.0 on day 1;
10:00 5404.0 and 10:30 5403.0 on day 2, plus each fill's price at its time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.backtest.report import (SessionClock, downsample, format_duration, format_value, load_run,
                                       write_report)
from pipelines.backtest.stats import DEFINITIONS, TRIP_COLUMNS
from pipelines.model.clock import NS_PER_DAY, NS_PER_HOUR, NS_PER_MIN, NS_PER_S, parse_time, to_ns
from pipelines.model.orders import Fill, Order

SYM = "WDOZ26"
PV = 10.0  # R$ per point
FEE = 1.10  # R$ per contract
CAPITAL = 100_000.0
DAY1 = to_ns(parse_time("2026-12-01T00:00:00"))  # Sao Paulo midnight
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
PLOTS = ("equity", "underwater", "daily_pnl", "trade_pnl", "prices", "position", "weights")


def at(day: int, hh: int, mm: int) -> int:
    """hh:mm Sao Paulo on day 1 or 2 (UTC-3 all year since 2019)."""
    return DAY1 + (day - 1) * NS_PER_DAY + hh * NS_PER_HOUR + mm * NS_PER_MIN


FILLS = [  # (day, hh, mm, side, quantity, price)
    (1, 10, 1, "BUY", 1, 5400.0), (1, 10, 3, "SELL", 1, 5402.5),
    (1, 10, 5, "SELL", 2, 5403.0), (1, 10, 9, "BUY", 2, 5405.0),
    (2, 10, 12, "BUY", 1, 5404.0), (2, 10, 20, "SELL", 1, 5404.5),
    (2, 10, 22, "SELL", 1, 5404.0), (2, 10, 25, "BUY", 1, 5401.0),
    (2, 10, 28, "BUY", 1, 5401.5),
]
TRIPS = [  # (side, open (day, hh, mm), close, quantity, entry, exit, gross, fees)
    ("BUY", (1, 10, 1), (1, 10, 3), 1, 5400.0, 5402.5, 25.0, 2.2),
    ("SELL", (1, 10, 5), (1, 10, 9), 2, 5403.0, 5405.0, -40.0, 4.4),
    ("BUY", (2, 10, 12), (2, 10, 20), 1, 5404.0, 5404.5, 5.0, 2.2),
    ("SELL", (2, 10, 22), (2, 10, 25), 1, 5404.0, 5401.0, 30.0, 2.2),
]
# Equity after each event time: (day, hh, mm, position, gross, fees); equity = gross - fees.
EQUITY = [
    (1, 10, 0, 0, 0.0, 0.0),
    (1, 10, 1, 1, 0.0, 1.1),  # bought at the mark: nothing gained yet, one fee
    (1, 10, 3, 0, 25.0, 2.2),  # trip A closed
    (1, 10, 5, -2, 25.0, 4.4),
    (1, 10, 7, -2, -35.0, 4.4),  # marked at 5406: 25 - 2 x (5406 - 5403) x 10 = -35
    (1, 10, 9, 0, -15.0, 6.6),  # trip B closed: 25 - 40
    (1, 10, 30, 0, -15.0, 6.6),
    (2, 10, 0, 0, -15.0, 6.6),
    (2, 10, 12, 1, -15.0, 7.7),
    (2, 10, 20, 0, -10.0, 8.8),  # trip C: +5
    (2, 10, 22, -1, -10.0, 9.9),
    (2, 10, 25, 0, 20.0, 11.0),  # trip D: +30
    (2, 10, 28, 1, 20.0, 12.1),
    (2, 10, 30, 1, 35.0, 12.1),  # the open long marked at 5403: 20 + (5403 - 5401.5) x 10
]
MARKS = [(1, 10, 0, 5400.0), (1, 10, 7, 5406.0), (1, 10, 30, 5405.0), (2, 10, 0, 5404.0), (2, 10, 30, 5403.0)]


# -- the hand-made run directory ------------------------------------------------------------


def fills_table() -> pd.DataFrame:
    rows = []
    for n, (d, hh, mm, side, qty, price) in enumerate(FILLS):
        coid = f"paper/t/{SYM}-{n}:entry"
        rows.append(Fill(f"{coid}#1", coid, "paper", SYM, at(d, hh, mm), side, qty, price, "taker", FEE * qty,
                         f"{SYM}-{n}"))
    return pd.DataFrame(rows, columns=Fill._fields)


def orders_table() -> pd.DataFrame:
    rows = [Order(f"paper/t/{SYM}-{n}:entry", "paper", SYM, at(d, hh, mm), side, qty, "MARKET",
                  decision_id=f"{SYM}-{n}") for n, (d, hh, mm, side, qty, _) in enumerate(FILLS)]
    df = pd.DataFrame(rows, columns=Order._fields)
    df["status"] = "FILLED"
    df["filled_quantity"] = df["quantity"]
    return df


def trades_table() -> pd.DataFrame:
    rows = []
    for side, o, c, qty, entry, exit_, gross, fees in TRIPS:
        rows.append({"symbol": SYM, "side": side, "ts_open": at(*o), "ts_close": at(*c), "quantity": qty,
                     "entry_vwap": entry, "exit_vwap": exit_, "gross_pnl": gross, "fees": fees,
                     "net_pnl": gross - fees, "duration_ns": at(*c) - at(*o)})
    return pd.DataFrame(rows, columns=list(TRIP_COLUMNS))


def equity_table() -> pd.DataFrame:
    ts = np.array([at(d, hh, mm) for d, hh, mm, *_ in EQUITY], dtype=np.int64)
    f = fills_table()
    fill_ts = f["ts_event"].to_numpy()
    # contracts and notional traded, cumulative over the fills at or before each row
    idx = np.searchsorted(fill_ts, ts, side="right")
    contracts = np.concatenate([[0], np.cumsum(f["quantity"])])[idx]
    notional = np.concatenate([[0.0], np.cumsum(f["quantity"] * f["price"] * PV)])[idx]
    gross = np.array([g for *_, g, _ in EQUITY])
    fees = np.array([x for *_, x in EQUITY])
    return pd.DataFrame({"ts_event": ts, "gross_pnl": gross, "fees": fees, "equity": gross - fees,
                         "contracts_traded": contracts.astype(np.int64), "notional_traded": notional,
                         f"position_{SYM}": np.array([p for *_, p, _, _ in EQUITY], dtype=np.int64)})


def prices_table() -> pd.DataFrame:
    rows = [(at(d, hh, mm), SYM, p) for d, hh, mm, p in MARKS]
    rows += [(at(d, hh, mm), SYM, price) for d, hh, mm, _, _, price in FILLS]
    return pd.DataFrame(sorted(rows), columns=["ts_event", "symbol", "price"])


def decisions_table() -> pd.DataFrame:
    rows = []
    for n, (d, hh, mm, side, qty, price) in enumerate(FILLS):
        rows.append({"decision_id": f"{SYM}-{n}", "symbol": SYM, "ts_event": at(d, hh, mm) - NS_PER_S, "seq": n,
                     "action": side, "size": qty, "score": 0.5 if side == "BUY" else -0.5, "confidence": 0.5,
                     "price": price, "risk": "ok", "reason": f"{side} {qty} @ {price} <- order_flow",
                     "weight_order_flow": 0.15 + 0.01 * n, "weight_ml": 0.4 - 0.01 * n})
    return pd.DataFrame(rows)


def expected_statistics() -> dict:
    """Every figure, from the tables above with numpy (the arithmetic of the docstring)."""
    trades, equity = trades_table(), equity_table()
    pnl = trades["net_pnl"].to_numpy()
    eq = equity["equity"].to_numpy()
    ts = equity["ts_event"].to_numpy()
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    peak = np.maximum.accumulate(np.concatenate([[0.0], eq]))[1:]
    day = (ts - DAY1) // NS_PER_DAY
    daily = np.diff(np.concatenate([[0.0], [eq[day == d][-1] for d in (0, 1)]]))
    r = daily / CAPITAL
    cum = np.concatenate([[1.0], np.cumprod(1 + r)])
    dd_fraction = float(np.max(1 - cum / np.maximum.accumulate(cum)))
    annual = float(np.prod(1 + r) ** (252 / r.size) - 1)
    held = equity[f"position_{SYM}"].to_numpy()[:-1] != 0
    same_day = day[1:] == day[:-1]
    span = np.diff(ts)
    notional = float((fills_table()["quantity"] * fills_table()["price"] * PV).sum())
    buy_and_hold = (5403.0 - 5400.0) * PV - 2 * FEE
    return {
        "start_ns": int(ts[0]), "end_ns": int(ts[-1]), "sessions": 2, "capital": CAPITAL,
        "net_pnl": float(eq[-1]), "gross_pnl": float(equity["gross_pnl"].iloc[-1]),
        "costs": float(equity["fees"].iloc[-1]), "open_pnl": float(eq[-1] - pnl.sum()),
        "trades": int(pnl.size), "wins": int(wins.size), "losses": int(losses.size),
        "win_rate": wins.size / pnl.size, "profit_factor": float(wins.sum() / -losses.sum()),
        "expectancy": float(pnl.mean()), "average_win": float(wins.mean()), "average_loss": float(losses.mean()),
        "largest_win": float(wins.max()), "largest_loss": float(losses.min()), "max_consecutive_losses": 1,
        "max_drawdown": float(np.max(peak - eq)),
        "max_drawdown_duration_ns": at(2, 10, 30) - at(1, 10, 3),  # the 22.80 peak, back above it at the end
        "max_drawdown_recovered": True,
        "annual_return": annual, "max_drawdown_fraction": dd_fraction, "calmar": annual / dd_fraction,
        "sharpe_daily": float(r.mean() / r.std(ddof=1) * math.sqrt(252)),
        "sortino_daily": float(r.mean() / math.sqrt(np.mean(np.minimum(r, 0) ** 2)) * math.sqrt(252)),
        "sharpe_per_trade": float(pnl.mean() / pnl.std(ddof=1)),
        "sortino_per_trade": float(pnl.mean() / math.sqrt(np.mean(np.minimum(pnl, 0) ** 2))),
        "time_in_market": float(span[same_day & held].sum() / span[same_day].sum()),
        "contracts_traded": 11, "notional_traded": notional, "turnover": notional / CAPITAL,
        "vs_doing_nothing": float(eq[-1]), "buy_and_hold": buy_and_hold,
        "vs_buy_and_hold": float(eq[-1]) - buy_and_hold,
    }


AGENTS = {
    # 100 outcomes: 44 hits and 36 misses (0.55 = 44 / 80); 20 abstentions or unchanged prices
    "order_flow": {"signals": 120, "outcomes": 100, "hits": 44, "misses": 36, "hit_rate": 0.55, "mean_reward": 0.0012,
                   "weight_first": 0.15, "weight_last": 0.23},
    "ml": {"signals": 0, "outcomes": 0, "hit_rate": None, "mean_reward": None, "weight_first": 0.4,
           "weight_last": 0.32},
}


def stats_doc(statistics: dict, *, interrupted: bool = False, decisions: dict | None = None) -> dict:
    return {
        "run": {"run_id": "hand-1", "created": "2026-12-03T12:00:00+00:00",
                "input": {"kind": "recordings", "path": "data/rec", "start": "2026-12-01"},
                "symbols": [SYM], "config": None, "currency": {SYM: "BRL"}, "events": 123456,
                "rejected": {"crossed_book": 3, "stale": 1}, "interrupted": interrupted, "elapsed_s": 2.5,
                "code_version": "abc1234"},
        "statistics": statistics,
        "definitions": DEFINITIONS,
        "agents": AGENTS,
        "decisions": decisions or {"count": 9, "BUY": 5, "SELL": 4, "HOLD": 0},
    }


def write_run(d: Path, stats: dict, **tables: pd.DataFrame) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_parquet(d / f"{name}.parquet", index=False)
    (d / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    return d


def hand_run(d: Path, *, interrupted: bool = False) -> Path:
    return write_run(d, stats_doc(expected_statistics(), interrupted=interrupted), decisions=decisions_table(),
                     orders=orders_table(), fills=fills_table(), trades=trades_table(), equity=equity_table(),
                     prices=prices_table())


def zero_trade_run(d: Path) -> Path:
    """A session the strategy sat out: prices and HOLD decisions, no order, no fill, no trade."""
    empty_fills = fills_table().iloc[:0]
    prices = pd.DataFrame({"ts_event": np.array([at(1, 10, m) for m in range(0, 31)], dtype=np.int64),
                           "symbol": SYM, "price": 5400.0 + 0.5 * (np.arange(31) % 4)})
    equity = pd.DataFrame({"ts_event": prices["ts_event"], "gross_pnl": 0.0, "fees": 0.0, "equity": 0.0,
                           "contracts_traded": np.int64(0), "notional_traded": 0.0, f"position_{SYM}": np.int64(0)})
    decisions = decisions_table().assign(action="HOLD", size=0, score=0.0)
    statistics = {k: None for k in DEFINITIONS}
    statistics.update(start_ns=at(1, 10, 0), end_ns=at(1, 10, 30), sessions=1, capital=CAPITAL, net_pnl=0.0,
                      gross_pnl=0.0, costs=0.0, open_pnl=0.0, trades=0, wins=0, losses=0, max_consecutive_losses=0,
                      max_drawdown=0.0, max_drawdown_duration_ns=0, max_drawdown_recovered=True,
                      time_in_market=0.0, contracts_traded=0, notional_traded=0.0, turnover=0.0,
                      vs_doing_nothing=0.0, buy_and_hold=10.0 - 2 * FEE, vs_buy_and_hold=-(10.0 - 2 * FEE))
    return write_run(d, stats_doc(statistics, decisions={"count": 9, "BUY": 0, "SELL": 0, "HOLD": 9}),
                     decisions=decisions, orders=orders_table().iloc[:0], fills=empty_fills,
                     trades=trades_table().iloc[:0], equity=equity, prices=prices)


# -- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements.lock)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A report opened from its file, with every request the page made."""

    def __init__(self, browser, path: Path, width: int = 1200):
        self.url = path.resolve().as_uri()
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": width, "height": 900})
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.route("**/*", self._route)
        self.page.goto(self.url, wait_until="load")

    def _route(self, route) -> None:
        if route.request.url == self.url:
            route.continue_()
        else:
            route.abort()  # counted in self.requests all the same

    def figure(self, key: str) -> str:
        return self.page.inner_text(f'[data-figure="{key}"] .value').strip()

    def note(self, key: str) -> str:
        return self.page.inner_text(f'[data-figure="{key}"] .note').strip()

    def plots(self) -> dict[str, dict]:
        """Per plot: whether it is marked empty, and each image's loaded size and each svg's box."""
        return dict(self.page.eval_on_selector_all("figure[data-plot]", """els => els.map(f => [f.dataset.plot, {
            empty: f.dataset.empty === 'true',
            imgs: [...f.querySelectorAll('img')].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
            svgs: [...f.querySelectorAll('svg')].map(s => [s.getBBox().width, s.getBBox().height]),
            text: f.innerText}])"""))


@pytest.fixture(scope="module")
def hand(tmp_path_factory, browser):
    path = write_report(hand_run(tmp_path_factory.mktemp("hand") / "hand-1"))
    page = Page(browser, path)
    yield page
    page.page.close()


# -- the page --------------------------------------------------------------------------------


def test_every_headline_figure_shows_the_hand_made_value(hand):
    s = expected_statistics()
    expected = {
        # money: R$, sign on P&L figures, 2 decimals, thousands separated
        "net_pnl": "R$ +22.90",  # 35.00 gross - 12.10 fees (11 contracts x 1.10)
        "gross_pnl": "R$ +35.00",  # 25 - 40 + 5 + 30 closed, +15 open
        "costs": "R$ 12.10",
        "open_pnl": "R$ +13.90",  # 22.90 - (22.80 - 44.40 + 2.80 + 27.80)
        "trades": "4",
        "win_rate": "75.0%",  # 3 of 4
        "profit_factor": "1.20",  # (22.80 + 2.80 + 27.80) / 44.40 = 1.2027
        "expectancy": "R$ +2.25",  # 9.00 / 4
        "average_win": "R$ +17.80",  # 53.40 / 3
        "average_loss": "R$ -44.40",
        "largest_win": "R$ +27.80",
        "largest_loss": "R$ -44.40",
        "max_consecutive_losses": "1",
        "max_drawdown": "R$ 62.20",  # from 22.80 (day 1 10:03) to -39.40 (10:07)
        "max_drawdown_duration_ns": "1 d 00 h 27 min",  # day 1 10:03 to day 2 10:30
        "time_in_market": "31.7%",  # (2 + 2 + 2) + (8 + 3 + 2) minutes of 30 + 30
        "contracts_traded": "11",
        "notional_traded": f"R$ {s['notional_traded']:,.2f}",
        "turnover": f"{s['notional_traded'] / CAPITAL:.2f}x",
        "vs_doing_nothing": "R$ +22.90",
        "buy_and_hold": "R$ +27.80",  # (5403 - 5400) x 10 - 2 x 1.10
        "vs_buy_and_hold": "R$ -4.90",
        "sessions": "2",
        "capital": "R$ 100,000.00",
        "sharpe_daily": f"{s['sharpe_daily']:.2f}",
        "sortino_daily": f"{s['sortino_daily']:.2f}",
        "sharpe_per_trade": f"{s['sharpe_per_trade']:.2f}",
        "sortino_per_trade": f"{s['sortino_per_trade']:.2f}",
        "calmar": f"{s['calmar']:.2f}",
        "annual_return": f"{s['annual_return'] * 100:.1f}%",
        "max_drawdown_fraction": f"{s['max_drawdown_fraction'] * 100:.1f}%",
    }
    assert math.isclose(s["net_pnl"], 22.90) and math.isclose(s["max_drawdown"], 62.20)
    assert math.isclose(s["time_in_market"], 19 / 60)
    shown = {k: hand.figure(k) for k in expected}
    assert shown == expected
    assert hand.note("trades") == "3 won, 1 lost"
    assert hand.note("max_drawdown_duration_ns") == "recovered"


def test_each_figure_carries_its_definition(hand):
    cards = dict(hand.page.eval_on_selector_all("[data-figure]", "els => els.map(e => [e.dataset.figure, e.title])"))
    assert len(cards) == 31
    for key, title in cards.items():
        assert title == DEFINITIONS[key]
    defined = hand.page.eval_on_selector_all("#definitions dd", "els => els.map(e => e.innerText)")
    assert defined == list(DEFINITIONS.values())


def test_header_names_the_run(hand):
    run = hand.page.inner_text("#run")
    assert hand.page.inner_text("#run-id") == "hand-1"
    assert "kind recordings" in run and "path data/rec" in run
    # 13:00 UTC on day 1 to 13:30 UTC on day 2, shown on the Sao Paulo clock
    assert "2026-12-01 10:00:00 to 2026-12-02 10:30:00 Sao Paulo (UTC-03:00), 1 d 00 h 30 min" in run
    assert "123,456" in run and "crossed_book 3, stale 1" in run and "abc1234" in run
    assert "9 (BUY 5, SELL 4, HOLD 0)" in run
    assert hand.page.query_selector("#interrupted") is None
    assert hand.page.title() == "Backtest hand-1"


def test_agents_table(hand):
    rows = hand.page.eval_on_selector_all(
        "#agents tr[data-agent]", "els => els.map(r => [...r.cells].map(c => c.innerText.trim()))")
    assert rows == [
        ["order_flow", "120", "100", "44 / 36", "55.0%", "+0.0012", "0.150 → 0.230 ↗"],
        ["ml", "0", "0", "n/a", "n/a", "n/a", "0.400 → 0.320 ↘"],
    ]


def test_every_plot_is_drawn(hand):
    plots = hand.plots()
    assert list(plots) == list(PLOTS)
    for name, p in plots.items():
        assert not p["empty"], name
        drawn = [w > 0 and h > 0 for done, w, h in p["imgs"] if done] + [w > 0 and h > 0 for w, h in p["svgs"]]
        assert drawn and all(drawn), (name, p)


def test_the_page_fetches_nothing(hand):
    assert hand.requests == [hand.url]
    # and has nothing it could fetch: every source is embedded, no stylesheet or script is linked
    links = hand.page.eval_on_selector_all("[src], [href]",
                                           "els => els.map(e => e.getAttribute('src') || e.getAttribute('href'))")
    assert len(links) == len(PLOTS) and all(u.startswith("data:image/png;base64,") for u in links)
    assert hand.page.eval_on_selector_all("script, link, iframe, object, embed", "els => els.length") == 0


def test_trades_and_decisions_tables(hand):
    trades = hand.page.eval_on_selector_all("#trades tr", "els => els.map(r => [...r.cells].map(c => c.innerText))")
    assert len(trades) == 1 + 4
    assert trades[2] == ["2", SYM, "short", "2026-12-01 10:05:00", "4 min 00 s", "2", "5,403.00 → 5,405.00", "4.40",
                         "-44.40"]
    decisions = hand.page.inner_text("#decisions")
    assert "Last 9 of 9 BUY and SELL decisions" in decisions
    assert "2026-12-02 10:27:59" in decisions  # the last decision, a second before its fill


def test_interrupted_run_says_partial(tmp_path, browser):
    page = Page(browser, write_report(hand_run(tmp_path / "cut", interrupted=True)))
    try:
        banner = page.page.inner_text("#interrupted")
        assert "partial result" in banner
        assert page.page.is_visible("#interrupted")
    finally:
        page.page.close()


def test_zero_trade_run_says_so(tmp_path, browser):
    page = Page(browser, write_report(zero_trade_run(tmp_path / "flat")))
    try:
        assert page.requests == [page.url]
        plots = page.plots()
        assert list(plots) == list(PLOTS)
        assert {n for n, p in plots.items() if p["empty"]} == {"trade_pnl", "position"}
        assert "No closed round trips" in plots["trade_pnl"]["text"]
        assert "No position was ever held" in plots["position"]["text"]
        for name in ("equity", "underwater", "daily_pnl", "prices", "weights"):
            (done, w, h), = plots[name]["imgs"]
            assert done and w > 0 and h > 0, name
        assert page.figure("trades") == "0"
        assert page.figure("net_pnl") == "R$ +0.00"
        # undefined figures: n/a and the reason from their definition
        assert page.figure("win_rate") == "n/a"
        assert page.note("win_rate") == "n/a: without trades"
        assert page.note("profit_factor") == "n/a: without a losing trip"
        assert page.note("sharpe_daily") == "n/a: with fewer than 2 sessions or zero std"
        assert "No closed round trips" in page.page.inner_text("#trades")
        assert "No BUY or SELL among 9 decisions" in page.page.inner_text("#decisions")
    finally:
        page.page.close()


def test_empty_run_renders(tmp_path, browser):
    """Every table empty (a range the input had nothing in): the page still opens and says so."""
    statistics = {k: None for k in DEFINITIONS}
    statistics.update(sessions=0, capital=CAPITAL, net_pnl=0.0, gross_pnl=0.0, costs=0.0, open_pnl=0.0, trades=0,
                      wins=0, losses=0, max_consecutive_losses=0, max_drawdown=0.0, max_drawdown_duration_ns=0,
                      max_drawdown_recovered=True, contracts_traded=0, notional_traded=0.0, turnover=0.0,
                      vs_doing_nothing=0.0)
    d = write_run(tmp_path / "empty", stats_doc(statistics, decisions={"count": 0, "BUY": 0, "SELL": 0, "HOLD": 0}),
                  decisions=decisions_table().iloc[:0], orders=orders_table().iloc[:0], fills=fills_table().iloc[:0],
                  trades=trades_table().iloc[:0], equity=equity_table().iloc[:0], prices=prices_table().iloc[:0])
    page = Page(browser, write_report(d))
    try:
        plots = page.plots()
        assert list(plots) == list(PLOTS) and all(p["empty"] for p in plots.values())
        assert "no events" in page.page.inner_text("#run")
        assert page.note("buy_and_hold") == "n/a: when not given"
    finally:
        page.page.close()


# -- bad input -------------------------------------------------------------------------------


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    return hand_run(tmp_path / "run")


def test_missing_file_names_it(run_dir):
    (run_dir / "fills.parquet").unlink()
    with pytest.raises(ValueError, match=r"fills\.parquet: no such file"):
        write_report(run_dir)
    assert not (run_dir / "report.html").exists()


def test_missing_column_names_file_and_column(run_dir):
    equity_table().drop(columns=["equity"]).to_parquet(run_dir / "equity.parquet")
    with pytest.raises(ValueError, match=r"^equity\.parquet: missing column equity$"):
        write_report(run_dir)
    assert not (run_dir / "report.html").exists()


def test_wrong_column_type_names_file_and_column(run_dir):
    trades_table().assign(net_pnl="lots").to_parquet(run_dir / "trades.parquet")
    with pytest.raises(ValueError, match=r"^trades\.parquet: column net_pnl: expected numbers"):
        write_report(run_dir)
    prices_table().assign(ts_event=1.5).to_parquet(run_dir / "prices.parquet")
    trades_table().to_parquet(run_dir / "trades.parquet")
    with pytest.raises(ValueError, match=r"^prices\.parquet: column ts_event: expected integer nanoseconds"):
        write_report(run_dir)


def test_stats_json_problems_are_named(run_dir):
    stats = json.loads((run_dir / "stats.json").read_text())
    del stats["statistics"]["sharpe_daily"]
    (run_dir / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match=r"^stats\.json: missing key statistics\.sharpe_daily$"):
        write_report(run_dir)
    del stats["run"]
    (run_dir / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match=r"^stats\.json: missing key run$"):
        write_report(run_dir)
    (run_dir / "stats.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"stats\.json: not readable JSON"):
        write_report(run_dir)
    (run_dir / "stats.json").write_text(json.dumps(stats_doc({**expected_statistics(), "net_pnl": "lots"})))
    with pytest.raises(ValueError, match=r"^stats\.json: statistics\.net_pnl: expected a number or null"):
        write_report(run_dir)


def test_not_a_directory(tmp_path):
    with pytest.raises(ValueError, match="no such run directory"):
        load_run(tmp_path / "nope")


def test_garbage_parquet_is_one_line(run_dir):
    (run_dir / "orders.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"orders\.parquet: not a readable Parquet file") as e:
        write_report(run_dir)
    assert "\n" not in str(e.value)


def test_us_dollar_run(tmp_path):
    d = hand_run(tmp_path / "es")
    stats = json.loads((d / "stats.json").read_text())
    stats["run"]["currency"] = {SYM: "USD"}
    (d / "stats.json").write_text(json.dumps(stats))
    html = write_report(d).read_text(encoding="utf-8")
    assert 'data-figure="net_pnl"' in html and "US$ +22.90" in html and "R$ +22.90" not in html


# -- helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ns, text", [
    (0, "0 ms"),
    (850 * 10**6, "850 ms"),
    (8_790 * 10**6, "8.7 s"),  # truncated, never rounded up past what happened
    (389_130_549_481, "6 min 29 s"),  # 6 x 60 + 29.13 s
    (2 * NS_PER_HOUR + 5 * NS_PER_MIN + 59 * NS_PER_S, "2 h 05 min"),
    (3 * NS_PER_DAY + 4 * NS_PER_HOUR + 10 * NS_PER_MIN, "3 d 04 h 10 min"),
])
def test_format_duration(ns, text):
    assert format_duration(ns) == text


@pytest.mark.parametrize("value, kind, text", [
    (-1e-12, "pnl", "R$ +0.00"),  # a flat position's float residue is no loss
    (-0.004, "money", "R$ 0.00"),
    (-0.005001, "pnl", "R$ -0.01"),
    (1234.5, "pnl", "R$ +1,234.50"),
])
def test_format_value_shows_no_negative_zero(value, kind, text):
    assert format_value(value, kind) == text


def test_downsample_keeps_every_bucket_extreme():
    rng = np.random.default_rng(7)
    ts = np.cumsum(rng.integers(1, 1000, 200_000)).astype(np.int64)
    v = np.cumsum(rng.normal(0, 1, ts.size))
    v[123_456] = 1e6  # a one-row spike
    buckets = 300
    t2, v2 = downsample(ts, v, buckets)
    assert t2.size <= 4 * buckets
    assert np.all(np.diff(t2) > 0)
    pos = np.searchsorted(ts, t2)
    np.testing.assert_array_equal(ts[pos], t2)
    np.testing.assert_array_equal(v[pos], v2)  # only original rows, with their values
    assert t2[0] == ts[0] and t2[-1] == ts[-1]
    assert v2.max() == 1e6 and v2.min() == v.min()
    # each of the equal time spans keeps its own lowest and highest value
    span = ts[-1] - ts[0] + 1
    bucket = pd.Series(v).groupby((ts - ts[0]) * buckets // span)
    kept = pd.Series(v2).groupby((t2 - ts[0]) * buckets // span)
    pd.testing.assert_series_equal(kept.min(), bucket.min())
    pd.testing.assert_series_equal(kept.max(), bucket.max())


def test_downsample_leaves_short_series_alone():
    ts, v = np.arange(10, dtype=np.int64), np.arange(10.0)
    t2, v2 = downsample(ts, v, 5)
    np.testing.assert_array_equal(t2, ts)
    np.testing.assert_array_equal(v2, v)


def test_a_long_day_is_drawn_from_a_few_thousand_points(tmp_path):
    """A day of 500,000 equity rows: the page embeds images, never the rows, so it stays small."""
    d = hand_run(tmp_path / "long")
    n = 500_000
    rng = np.random.default_rng(3)
    ts = at(1, 9, 0) + np.arange(n, dtype=np.int64) * (9 * NS_PER_HOUR // n)
    eq = np.cumsum(rng.normal(0, 1, n))
    pd.DataFrame({"ts_event": ts, "gross_pnl": eq, "fees": 0.0, "equity": eq, "contracts_traded": np.int64(0),
                  "notional_traded": 0.0, f"position_{SYM}": rng.integers(-2, 3, n)}).to_parquet(d / "equity.parquet")
    html = write_report(d).read_text(encoding="utf-8")
    assert len(html) < 2_000_000
    assert html.count("data:image/png;base64,") == len(PLOTS)


def test_returns_the_page_in_the_run_directory(tmp_path):
    d = hand_run(tmp_path / "r")
    assert write_report(d) == d / "report.html"
    assert (d / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_session_clock_leaves_the_night_out():
    """Two sessions of 30 minutes: the axis runs 0..1800 s, a gap of 2.5% of the 3600 s of
    trading (90 s), then 1890..3690 s; the 23.5 hours between them are not drawn."""
    ts = np.array([at(1, 10, 0), at(1, 10, 30), at(2, 10, 0), at(2, 10, 30)], dtype=np.int64)
    clock = SessionClock(ts[:2], ts[2:])
    np.testing.assert_allclose(clock.x(ts), [0.0, 1800.0, 1890.0, 3690.0])
    np.testing.assert_allclose(clock.x(np.array([at(2, 10, 15)])), [1890.0 + 900.0])
