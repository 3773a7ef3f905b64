"""scripts/backtest.py and actors/backtest_run.py: a run's files, its statistics recomputed here
from its own trades and equity files with pandas/numpy, determinism of the written files, bad
input (one line, exit 2, nothing written) and Ctrl-C (the partial run is written, marked).

The statistics run spans two Sao Paulo sessions (17:40-18:00 on Monday, then 09:00-09:25 on
Tuesday: the simulator jumps the night), so the daily ratios are defined."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from actors.backtest_run import DEFAULT_CAPITAL, BacktestInput, backtest, write_run
from pipelines.adapters.config import SimulatorConfig
from pipelines.adapters.simulator import MarketSimulator
from pipelines.execution.costs import CostModel
from pipelines.model.clock import SAO_PAULO
from pipelines.model.messages import Trade
from tests.helpers import ES_FILE, REPO

SYM = "WDOZ26"
TWO_SESSIONS = BacktestInput("simulator", start="2026-11-23T17:40:00", end="2026-11-24T09:25:00", seed=7, rate=60)
SHORT = BacktestInput("simulator", start="2026-11-23T10:00:00", end="2026-11-23T10:03:00", seed=3, rate=300)
HMARL = {"hmarl": {"threshold": 0.05, "decision_every_ms": 500, "horizon_s": 5}}
SCRIPT = str(REPO / "scripts" / "backtest.py")


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory, model_dir):
    run = backtest(TWO_SESSIONS, run_id="two-sessions",
                   overrides={**HMARL, "hmarl": {**HMARL["hmarl"], "model_dir": str(model_dir)}})
    path = write_run(run, tmp_path_factory.mktemp("reports"), report=False)
    return run, path


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_run_directory_holds_every_table_and_the_stats(two_sessions):
    run, path = two_sessions
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["stats.json", *(f"{t}.parquet" for t in ("decisions", "orders", "fills", "trades", "equity", "prices"))])
    assert not any(p.name.startswith(".") for p in path.parent.iterdir()), "no partial directory left behind"
    stats = json.loads((path / "stats.json").read_text())
    assert stats["run"]["interrupted"] is False and stats["run"]["symbols"] == [SYM]
    decisions = pd.read_parquet(path / "decisions.parquet")
    assert stats["decisions"]["count"] == len(decisions)
    assert {a: stats["decisions"][a] for a in ("BUY", "SELL", "HOLD")} == {
        a: int((decisions["action"] == a).sum()) for a in ("BUY", "SELL", "HOLD")}
    weights = [c for c in decisions.columns if c.startswith("weight_")]
    assert sorted(weights) == sorted(f"weight_{v}" for v in ("order_flow", "liquidity", "tape", "footprint", "ml"))
    assert np.allclose(decisions[weights].sum(axis=1), 1.0)  # the weights of one decision are a distribution
    orders, fills = pd.read_parquet(path / "orders.parquet"), pd.read_parquet(path / "fills.parquet")
    assert len(fills) >= 4 and set(fills["client_order_id"]) <= set(orders["client_order_id"])
    filled = fills.groupby("client_order_id")["quantity"].sum()
    assert (orders.set_index("client_order_id")["filled_quantity"].reindex(filled.index) == filled).all()
    # every voter's entry: signals and outcomes counted, first and last weights from the decisions
    for voter, a in stats["agents"].items():
        assert a["weight_first"] == pytest.approx(decisions[f"weight_{voter}"].iloc[0])
        assert a["weight_last"] == pytest.approx(decisions[f"weight_{voter}"].iloc[-1])
    assert sum(a["signals"] for a in stats["agents"].values()) > 0


def _sortino(x: np.ndarray, scale: float) -> float | None:
    down = math.sqrt(float(np.mean(np.minimum(x, 0.0) ** 2)))
    return None if down == 0 else float(np.mean(x)) / down * scale


def test_every_statistic_equals_a_recomputation_from_the_trades_and_equity_files(two_sessions):
    run, path = two_sessions
    s = json.loads((path / "stats.json").read_text())["statistics"]
    trades = pd.read_parquet(path / "trades.parquet").sort_values("ts_close", kind="stable")
    eq = pd.read_parquet(path / "equity.parquet")
    fills = pd.read_parquet(path / "fills.parquet")
    pnl = trades["net_pnl"].to_numpy()
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    assert len(pnl) >= 2 and len(losses) >= 1, "the run must trade for this test to mean anything"
    equity = eq["equity"].to_numpy()
    ts = eq["ts_event"].to_numpy()
    expected: dict = {
        "start_ns": int(ts[0]), "end_ns": int(ts[-1]), "capital": DEFAULT_CAPITAL,
        "net_pnl": equity[-1], "gross_pnl": eq["gross_pnl"].iloc[-1], "costs": fills["fees"].sum(),
        "open_pnl": equity[-1] - pnl.sum(), "trades": len(pnl), "wins": len(wins), "losses": len(losses),
        "win_rate": len(wins) / len(pnl), "profit_factor": wins.sum() / -losses.sum(),
        "expectancy": pnl.mean(), "average_win": wins.mean() if len(wins) else None,
        "average_loss": losses.mean(), "largest_win": wins.max() if len(wins) else None,
        "largest_loss": losses.min(),
        "sharpe_per_trade": pnl.mean() / pnl.std(ddof=1), "sortino_per_trade": _sortino(pnl, 1.0),
        "contracts_traded": int(fills["quantity"].sum()),
    }
    # B3 fees: every fill's fees are its contracts times the WDO fee per contract
    assert np.allclose(fills["fees"], fills["quantity"] * CostModel().fees(SYM, 1))
    # the notional: contracts x price x R$10 a point
    expected["notional_traded"] = float((fills["quantity"] * fills["price"] * 10.0).sum())
    expected["turnover"] = expected["notional_traded"] / DEFAULT_CAPITAL
    # the longest run of losing trips, in closing order
    run_, best = 0, 0
    for p in pnl:
        run_ = run_ + 1 if p < 0 else 0
        best = max(best, run_)
    expected["max_consecutive_losses"] = best
    # drawdown in R$ from the running peak, which starts at the run's zero
    peak = np.maximum.accumulate(np.maximum(equity, 0.0))
    depth = peak - equity
    k = int(np.argmax(depth))
    expected["max_drawdown"] = float(depth[k])
    before = np.flatnonzero(equity[:k] >= peak[k])
    after = np.flatnonzero(equity[k:] >= peak[k])
    start = ts[before[-1]] if before.size else ts[0]
    expected["max_drawdown_duration_ns"] = int((ts[k + after[0]] if after.size else ts[-1]) - start)
    expected["max_drawdown_recovered"] = bool(after.size)
    # daily: the last equity of each Sao Paulo day, differenced from zero
    day = pd.to_datetime(ts, utc=True).tz_convert(SAO_PAULO).date
    last = pd.Series(equity, index=day).groupby(level=0).last()
    daily = last.diff().fillna(last.iloc[0]).to_numpy()
    assert len(daily) == 2
    r = daily / DEFAULT_CAPITAL
    expected["sessions"] = 2
    expected["sharpe_daily"] = r.mean() / r.std(ddof=1) * math.sqrt(252)
    expected["sortino_daily"] = _sortino(r, math.sqrt(252))
    growth = np.prod(1 + r)
    expected["annual_return"] = growth ** (252 / len(r)) - 1
    cum = np.concatenate([[1.0], np.cumprod(1 + r)])
    mdd = float(np.max(1 - cum / np.maximum.accumulate(cum)))
    expected["max_drawdown_fraction"] = mdd if mdd > 0 else None
    expected["calmar"] = expected["annual_return"] / mdd if mdd > 0 else None
    # time in market: spans between rows of one day, held where any position is non-zero
    held = (eq.filter(like="position_") != 0).any(axis=1).to_numpy()[:-1]
    same_day = day[1:] == day[:-1]
    span = np.diff(ts)
    expected["time_in_market"] = span[same_day & held].sum() / span[same_day].sum()
    # buy and hold: one contract from the session's first trade to its last, after two fees
    prices = session_trades(TWO_SESSIONS)
    bh = (prices[-1] - prices[0]) * 10.0 - 2 * CostModel().fees(SYM, 1)
    expected.update(buy_and_hold=bh, vs_doing_nothing=equity[-1], vs_buy_and_hold=equity[-1] - bh)
    assert set(expected) == set(s), set(expected) ^ set(s)
    for key, want in expected.items():
        if want is None:
            assert s[key] is None, key
        else:
            assert s[key] == pytest.approx(want, rel=1e-9, abs=1e-9), key


def session_trades(source: BacktestInput) -> np.ndarray:
    """The input's trade prices, straight from the simulator (not from the run)."""
    end = pd.Timestamp(source.end, tz=SAO_PAULO).value
    sim = MarketSimulator(SimulatorConfig(seed=source.seed, rate=source.rate, speed=0.0, start=source.start), [SYM])
    out: list[float] = []
    while True:
        batch = sim.poll(10_000)
        out.extend(e.price for e in batch if type(e) is Trade and e.ts_event < end)
        if batch and batch[-1].ts_event >= end:
            return np.asarray(out)


def test_the_same_input_writes_identical_decision_and_fill_files(tmp_path, model_dir):
    overrides = {"hmarl": {**HMARL["hmarl"], "model_dir": str(model_dir)}}
    # one run id (the order ids carry it), two runs, two folders
    paths = [write_run(backtest(SHORT, run_id="same", overrides=overrides), tmp_path / f"r{i}", report=False)
             for i in (1, 2)]
    fills = pd.read_parquet(paths[0] / "fills.parquet")
    assert len(fills) >= 2
    for name in ("decisions", "orders", "fills", "trades", "equity"):
        assert sha(paths[0] / f"{name}.parquet") == sha(paths[1] / f"{name}.parquet"), name


def cli(*args, timeout=120, **kw):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, **kw)


@pytest.mark.slow
def test_bad_input_says_one_line_and_exits_2_with_nothing_written(tmp_path):
    out = tmp_path / "reports"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    no_price = tmp_path / "profit.csv"  # a Profit export without its price column
    no_price.write_text("Ativo;Data;Hora;Quantidade;Agressor\nWDOZ26;24/11/2026;10:00:00.000;1;Comprador\n")
    no_time = tmp_path / "es.csv"  # the ES tape without its Time column
    no_time.write_text("Date,Open,High,Low,Last,Volume\n2022/1/24,4347.75,4347.75,4347.75,4347.75,1\n")
    cases = [
        (("es", str(tmp_path / "absent.csv")), "not found"),
        (("profit", str(empty)), "empty"),
        (("profit", str(no_price)), "header lacks trade_number, price"),
        (("es", str(no_time)), "time"),
        (("replay", str(tmp_path / "no-such-folder")), "not found"),
        (("sim", "--duration", "1m", "--set", "hmarl.no_such_key=1"), "hmarl.no_such_key: unknown key"),
        (("sim", "--duration", "1m", "--set", "risk.max_position=-1"), "risk.max_position"),
        (("sim", "--duration", "tomorrow"), "--duration"),
    ]
    if ES_FILE.is_file():
        cases.append((("es", str(ES_FILE), "--start", "2023-01-01"), "none from start 2023-01-01"))
    for args, words in cases:
        r = cli(*args, "--out", str(out), "--quiet")
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("backtest: "), (args, r.stderr)
        assert words.lower() in lines[0].lower(), (args, lines[0])
        assert not out.exists() or not any(out.iterdir()), (args, list(out.iterdir()))


@pytest.mark.slow
def test_ctrl_c_stops_the_input_and_still_writes_the_run_marked_interrupted(tmp_path, model_dir):
    out = tmp_path / "reports"
    p = subprocess.Popen([sys.executable, SCRIPT, "sim", "--date", "2026-11-23", "--start", "09:00", "--end", "18:00",
                          "--rate", "200", "--seed", "3", "--set", f"hmarl.model_dir={model_dir}", "--out", str(out),
                          "--run-id", "stopped", "--no-report"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    buf = ""
    while "events" not in buf and time.monotonic() < deadline:  # the progress bar has shown events
        buf += os.read(p.stderr.fileno(), 4096).decode(errors="replace")
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    stats = json.loads((out / "stopped" / "stats.json").read_text())
    assert stats["run"]["interrupted"] is True and summary["interrupted"] is True
    # stopped early: far fewer events than the 9 hours at 200/s (6.5 million) it was asked for
    assert 0 < stats["run"]["events"] < 1_000_000
    eq = pd.read_parquet(out / "stopped" / "equity.parquet")
    assert eq["ts_event"].iloc[-1] < pd.Timestamp("2026-11-23T18:00", tz=SAO_PAULO).value
