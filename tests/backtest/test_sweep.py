"""Sweeps and walk-forward: parameter sets, combining and ranking, the deflated Sharpe ratio
(pipelines/backtest/sweep.py), and running them in process, on the session's Ray and on a
2-node ``ray.cluster_utils.Cluster`` (actors/sweep.py).

The cluster is a separate Ray, so it runs in a child process: this module run as a script
(``python -m tests.backtest.test_sweep cluster MODEL_DIR``) never touches the session's Ray.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from actors.backtest_run import BacktestError, BacktestInput, backtest
from pipelines.backtest import sweep as ps
from pipelines.backtest.stats import EQUITY_COLUMNS
from pipelines.config import ConfigError, load_config
from pipelines.model.clock import parse_time, to_ns
from tests.helpers import child_result, on_two_nodes

# Short simulator sessions (2 min at 40 events/s, ~4,700 events each, well under a second a run).
SIM = dict(rate=40.0)
INPUTS = [BacktestInput("simulator", start="2026-12-01T10:00:00", end="2026-12-01T10:02:00", seed=s, **SIM)
          for s in (1, 2)]
PARAMS = ["hmarl.threshold=0.05,0.15", "execution.policy.hold_flattens=true,false"]
COMMON = {"hmarl": {"decision_every_ms": 500}}


def common(model_dir) -> dict:
    return {"hmarl": {**COMMON["hmarl"], "model_dir": str(model_dir)}}


def ns(text: str) -> int:
    return to_ns(parse_time(text))


# -- parameter sets -----------------------------------------------------------------------


def test_grid_is_the_cartesian_product_with_yaml_scalars_ids_and_labels():
    sets = ps.grid(["hmarl.threshold=0.1,0.2", "execution.policy.hold_flattens=true,false",
                    "execution.policy.style=market"])
    assert [s.set_id for s in sets] == ["p000", "p001", "p002", "p003"]
    # The first key varies slowest; YAML scalars: floats, booleans, strings.
    assert [s.as_dict() for s in sets] == [
        {"hmarl.threshold": 0.1, "execution.policy.hold_flattens": True, "execution.policy.style": "market"},
        {"hmarl.threshold": 0.1, "execution.policy.hold_flattens": False, "execution.policy.style": "market"},
        {"hmarl.threshold": 0.2, "execution.policy.hold_flattens": True, "execution.policy.style": "market"},
        {"hmarl.threshold": 0.2, "execution.policy.hold_flattens": False, "execution.policy.style": "market"}]
    assert sets[1].label == "hmarl.threshold=0.1, execution.policy.hold_flattens=false, execution.policy.style=market"
    assert sets[3].overrides() == {"hmarl": {"threshold": 0.2},
                                   "execution": {"policy": {"hold_flattens": False, "style": "market"}}}
    assert type(ps.grid(["risk.max_position=2"])[0].as_dict()["risk.max_position"]) is int
    # No parameter: one set, the config as it is (a "many days" run).
    assert [(s.set_id, s.params, s.label) for s in ps.grid([])] == [("p000", (), "(the config as it is)")]
    # Ids widen past 1,000 sets.
    assert ps.grid(["a.b=" + ",".join(map(str, range(1001)))])[-1].set_id == "p1000"


@pytest.mark.parametrize("specs, message", [
    (["hmarl.threshold"], "expected key=values"),
    (["=1"], "expected key=values"),
    (["hmarl..threshold=1"], "is not a dotted config key"),
    (["feed.simulator.rate=10,20"], "feed is set by the inputs"),
    (["symbols=WDOZ26"], "symbols is set by the inputs"),
    (["hmarl.threshold=0.1", "hmarl.threshold=0.2"], "hmarl.threshold: given twice"),
    (["hmarl=1", "hmarl.threshold=0.2"], "overlaps hmarl"),
    (["hmarl.threshold=0.1,0.1"], "a value is given twice"),
    (["hmarl.threshold=[1,2]"], "is not a YAML scalar"),
    (["hmarl.threshold=uniform:0.1:0.2"], "a distribution needs --random N"),
    (["hmarl.threshold="], "no values"),
    (["a.b=" + ",".join(map(str, range(101))), "c.d=" + ",".join(map(str, range(100)))], "10,100 sets"),
])
def test_bad_grid_specs_are_one_line_errors(specs, message):
    with pytest.raises(ps.SweepError, match=message.replace("[", r"\[")) as e:
        ps.grid(specs)
    assert "\n" not in str(e.value)


def test_random_sets_are_seeded_within_bounds_and_distinct():
    specs = ["hmarl.threshold=uniform:0.05:0.3", "risk.max_position=int:1:3",
             "execution.policy.style=choice:market,limit"]
    a, b = ps.random_sets(specs, 40, seed=7), ps.random_sets(specs, 40, seed=7)
    assert a == b and a != ps.random_sets(specs, 40, seed=8)
    values = [s.as_dict() for s in a]
    assert len({tuple(sorted(v.items())) for v in values}) == len(values)  # distinct
    th = np.array([v["hmarl.threshold"] for v in values])
    assert ((th >= 0.05) & (th <= 0.3)).all()
    assert all(float(f"{x:.6g}") == x for x in th)  # kept to 6 significant digits
    assert {v["risk.max_position"] for v in values} == {1, 2, 3}  # both ends included
    assert {v["execution.policy.style"] for v in values} == {"market", "limit"}
    # The draws are numpy's default_rng(seed), axis by axis, set by set.
    rng = np.random.default_rng(7)
    first = (float(f"{rng.uniform(0.05, 0.3):.6g}"), int(rng.integers(1, 3, endpoint=True)),
             ["market", "limit"][int(rng.integers(2))])
    assert tuple(values[0].values()) == first
    # Only 2 distinct sets exist: 50 draws keep 2, ids in order.
    few = ps.random_sets(["risk.max_position=int:1:2"], 50, seed=0)
    assert sorted(s.as_dict()["risk.max_position"] for s in few) == [1, 2]
    assert [s.set_id for s in few] == ["p000", "p001"]
    # A plain list is a choice; a single value is fixed.
    fixed = ps.random_sets(["hmarl.threshold=0.1,0.2", "risk.max_position=3"], 10, seed=1)
    assert {s.as_dict()["risk.max_position"] for s in fixed} == {3}
    assert {s.as_dict()["hmarl.threshold"] for s in fixed} <= {0.1, 0.2}


@pytest.mark.parametrize("specs, n, message", [
    (["a.b=uniform:1"], 3, "expected uniform:lo:hi"),
    (["a.b=uniform:2:1"], 3, "hi must be above lo"),
    (["a.b=uniform:1:1"], 3, "hi must be above lo"),
    (["a.b=int:1.5:3"], 3, "is not an integer"),
    (["a.b=uniform:x:3"], 3, "is not a number"),
    (["a.b=uniform:0:inf"], 3, "is not a finite number"),
    ([], 3, "needs at least one --param"),
    (["a.b=1,2"], 0, "expected a number of sets"),
])
def test_bad_random_specs_are_one_line_errors(specs, n, message):
    with pytest.raises(ps.SweepError, match=message):
        ps.random_sets(specs, n)


def test_every_set_is_validated_by_the_config_loader_naming_key_and_set():
    sets = ps.grid(["hmarl.threshold=0.1,2"])
    with pytest.raises(ConfigError) as e:
        ps.validate_sets(sets, lambda o: load_config(None, overrides=o))
    assert str(e.value).startswith("hmarl.threshold: ") and "(set p001: hmarl.threshold=2)" in str(e.value)
    assert e.value.key == "hmarl.threshold"
    with pytest.raises(ConfigError, match=r"^hmarl\.thresold: .*\(set p000: hmarl\.thresold=0\.1\)$"):
        ps.validate_sets(ps.grid(["hmarl.thresold=0.1"]), lambda o: load_config(None, overrides=o))
    seen = []
    ps.validate_sets(ps.grid(["hmarl.threshold=0.1,0.2"]), seen.append)
    assert seen == [{"hmarl": {"threshold": 0.1}}, {"hmarl": {"threshold": 0.2}}]


def test_nested_and_merged_overrides():
    assert ps.nested({"a.b": 1, "a.c.d": 2, "e": 3}) == {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    with pytest.raises(ps.SweepError, match="a.b.c: sets a key inside b"):
        ps.nested({"a.b": 1, "a.b.c": 2})
    with pytest.raises(ps.SweepError, match="a.b: is a section"):
        ps.nested({"a.b.c": 1, "a.b": 2})
    base = {"hmarl": {"threshold": 0.1, "eta": 0.2}, "risk": {"max_position": 1}}
    assert ps.merge_overrides(base, {"hmarl": {"threshold": 0.3}, "x": 1}) == {
        "hmarl": {"threshold": 0.3, "eta": 0.2}, "risk": {"max_position": 1}, "x": 1}
    assert base["hmarl"]["threshold"] == 0.1  # not changed in place


# -- the deflated Sharpe ratio --------------------------------------------------------------


def test_deflated_sharpe_reproduces_the_papers_worked_example():
    # Bailey and Lopez de Prado (2014), section "A numerical example": N = 100 trials, the
    # variance of their annualized Sharpe ratios 1/2, the selected one 2.5 annualized over
    # T = 1,250 daily returns (5 years of 250 days), skewness -3, kurtosis 10. Per day:
    # V = 0.5 / 250, SR = 2.5 / sqrt(250). The paper gives SR0 = 0.1132 and DSR = 0.9004.
    sr0 = ps.expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = ps.probabilistic_sharpe_ratio(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_deflated_sharpe_step_by_step():
    rng = np.random.default_rng(3)
    r = rng.standard_t(4, 60) * 10 + 2.0  # trips' P&L in R$, heavy tailed
    trials = [0.05, -0.1, 0.2, None, 0.12, 0.3]  # None: a set without a Sharpe ratio
    got = ps.deflated_sharpe(r, trials, n_trials=7)
    # By hand: the moments about the mean, the sample variance of the 5 defined trial Sharpes.
    m, sd = r.mean(), r.std(ddof=1)
    sr = m / sd
    c = r - m
    skew = (c ** 3).mean() / (c ** 2).mean() ** 1.5
    kurt = (c ** 4).mean() / (c ** 2).mean() ** 2
    x = np.array([0.05, -0.1, 0.2, 0.12, 0.3])
    v = ((x - x.mean()) ** 2).sum() / (len(x) - 1)
    g = 0.5772156649015329
    sr0 = math.sqrt(v) * ((1 - g) * norm.ppf(1 - 1 / 7) + g * norm.ppf(1 - 1 / (7 * math.e)))
    dsr = norm.cdf((sr - sr0) * math.sqrt(len(r) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr ** 2))
    assert got["trials"] == 7 and got["trials_with_sharpe"] == 5 and got["observations"] == 60
    assert got["sharpe"] == pytest.approx(sr, rel=1e-12)
    assert got["skewness"] == pytest.approx(skew, rel=1e-9) and got["kurtosis"] == pytest.approx(kurt, rel=1e-9)
    assert got["sharpe_variance"] == pytest.approx(v, rel=1e-12)
    assert got["expected_max_sharpe"] == pytest.approx(sr0, rel=1e-12)
    assert got["deflated_sharpe_ratio"] == pytest.approx(dsr, rel=1e-9)
    assert got["note"] is None
    # More trials with the same spread raise the bar and lower the DSR.
    assert ps.deflated_sharpe(r, trials, n_trials=70)["deflated_sharpe_ratio"] < dsr


def test_deflated_sharpe_edge_cases():
    r = np.array([3.0, -1.0, 2.0, 0.5, -0.5])
    m, sd = r.mean(), r.std(ddof=1)
    c = r - m
    skew, kurt = (c ** 3).mean() / (c ** 2).mean() ** 1.5, (c ** 4).mean() / (c ** 2).mean() ** 2
    psr0 = norm.cdf((m / sd) * math.sqrt(4) / math.sqrt(1 - skew * m / sd + (kurt - 1) / 4 * (m / sd) ** 2))
    # One trial: nothing to deflate, SR0 = 0, the DSR is the probabilistic Sharpe ratio against 0.
    one = ps.deflated_sharpe(r, [m / sd], n_trials=1)
    assert one["expected_max_sharpe"] == 0.0 and one["deflated_sharpe_ratio"] == pytest.approx(psr0, rel=1e-12)
    # Many trials of the same Sharpe ratio: zero variance, SR0 = 0 as well.
    same = ps.deflated_sharpe(r, [0.4, 0.4, 0.4], n_trials=3)
    assert same["sharpe_variance"] == 0.0 and same["deflated_sharpe_ratio"] == pytest.approx(psr0, rel=1e-12)
    # Several trials, only one with a Sharpe: variance unknown, said so.
    assert "variance is unknown" in ps.deflated_sharpe(r, [0.4, None], n_trials=2)["note"]
    # Fewer than 2 returns, or returns without dispersion: undefined.
    for bad in (np.array([1.0]), np.array([]), np.array([2.0, 2.0, 2.0])):
        d = ps.deflated_sharpe(bad, [0.1, 0.3], n_trials=2)
        assert d["sharpe"] is None and d["deflated_sharpe_ratio"] is None and "undefined" in d["note"]
    assert ps.probabilistic_sharpe_ratio(0.5, 0.0, 1, 0.0, 3.0) is None
    assert ps.probabilistic_sharpe_ratio(2.0, 0.0, 10, 1.0, 1.0) is None  # 1 - 2 + 0 < 0
    with pytest.raises(ps.SweepError):
        ps.expected_max_sharpe(0, 1.0)


# -- combining and ranking -----------------------------------------------------------------


def equity_table(start: str, values: list[float]) -> pd.DataFrame:
    """An equity table with rows one minute apart from ``start`` (Sao Paulo)."""
    t0 = ns(start)
    n = len(values)
    return pd.DataFrame({"ts_event": np.arange(n, dtype=np.int64) * 60_000_000_000 + t0, "gross_pnl": values,
                         "fees": np.zeros(n), "equity": values, "contracts_traded": np.zeros(n, np.int64),
                         "notional_traded": np.zeros(n)}, columns=list(EQUITY_COLUMNS))


def run_summary(start: str, equity: list[float], trips: list[float], stats: dict) -> ps.RunSummary:
    eq = np.array(equity)
    md = float(np.max(np.maximum.accumulate(np.concatenate([[0.0], eq]))[1:] - eq))
    statistics = {"net_pnl": equity[-1], "max_drawdown": md, **stats}
    return ps.summarize(statistics, pd.DataFrame({"net_pnl": trips}), equity_table(start, equity), 100)


def test_one_sets_runs_combined():
    a = run_summary("2026-12-01T10:00", [10.0, 30.0, -5.0, 20.0], [30.0, -35.0, 25.0],
                    {"gross_pnl": 26.0, "costs": 6.0})
    b = run_summary("2026-12-02T10:00", [-10.0, 15.0, 5.0], [-10.0, 15.0], {"gross_pnl": 9.0, "costs": 4.0})
    c = run_summary("2026-12-03T10:00", [-40.0, -30.0], [-30.0], {"gross_pnl": -28.0, "costs": 2.0})
    got = ps.combine([a, b, c], capital=1000.0)
    trips = np.array([30.0, -35.0, 25.0, -10.0, 15.0, -30.0])
    days = np.array([20.0, 5.0, -30.0]) / 1000.0  # one session per input
    # Chained: 10 30 -5 20 | 10 35 25 | -15 -5: the peak 35, the low -15 after it.
    assert got == {
        "inputs": 3, "events": 300, "net_pnl": -5.0, "gross_pnl": 7.0, "costs": 12.0,
        "mean_net_pnl": pytest.approx(-5.0 / 3), "worst_input_pnl": -30.0, "inputs_positive": 2,
        "trades": 6, "wins": 3, "losses": 3, "win_rate": 0.5, "profit_factor": pytest.approx(70.0 / 75.0),
        "expectancy": pytest.approx(-5.0 / 6), "sharpe_per_trade": pytest.approx(trips.mean() / trips.std(ddof=1)),
        "sessions": 3, "sharpe_daily": pytest.approx(days.mean() / days.std(ddof=1) * math.sqrt(252)),
        "max_drawdown": 50.0}
    assert ps.combine([a], 1000.0)["sharpe_daily"] is None  # one session
    empty = ps.combine([run_summary("2026-12-01T10:00", [0.0], [], {})], 1000.0)
    assert (empty["trades"], empty["win_rate"], empty["profit_factor"], empty["expectancy"],
            empty["sharpe_per_trade"]) == (0, None, None, None, None)


def test_chained_drawdown_equals_the_drawdown_of_the_concatenated_curves():
    rng = np.random.default_rng(11)
    for _ in range(50):
        curves = [np.cumsum(rng.normal(0, 10, rng.integers(1, 30))) for _ in range(rng.integers(1, 6))]
        runs = [run_summary(f"2026-12-0{k + 1}T10:00", list(c), [], {}) for k, c in enumerate(curves)]
        offsets = np.concatenate([[0.0], np.cumsum([c[-1] for c in curves])[:-1]])
        chained = np.concatenate([[0.0]] + [c + o for c, o in zip(curves, offsets)])
        want = float(np.max(np.maximum.accumulate(chained) - chained))
        assert ps.chained_drawdown(runs) == pytest.approx(want, abs=1e-9)


def test_rank_orders_by_the_figure_undefined_last_ties_in_order():
    figures = {"p000": {"net_pnl": 5.0, "max_drawdown": 30.0, "sharpe_per_trade": None},
               "p001": {"net_pnl": 9.0, "max_drawdown": 10.0, "sharpe_per_trade": 0.2},
               "p002": {"net_pnl": 5.0, "max_drawdown": 10.0, "sharpe_per_trade": -0.1}}
    assert ps.rank(figures, "net_pnl") == ["p001", "p000", "p002"]
    assert ps.rank(figures, "max_drawdown") == ["p001", "p002", "p000"]  # lower is better
    assert ps.rank(figures, "sharpe_per_trade") == ["p001", "p002", "p000"]
    with pytest.raises(ps.SweepError, match="--rank-by must be one of"):
        ps.rank(figures, "luck")


def test_walk_forward_plan_and_chronology():
    plan = ps.walk_forward_plan(5, 2)
    assert [(s.index, s.train, s.test) for s in plan] == [(0, (0, 1), 2), (1, (1, 2), 3), (2, (2, 3), 4)]
    with pytest.raises(ps.SweepError, match="needs at least 3 inputs, got 2"):
        ps.walk_forward_plan(2, 2)
    with pytest.raises(ps.SweepError, match="--train-window"):
        ps.walk_forward_plan(5, 0)
    ok = [(0, 10), (10, 20), (20, 30)]
    ps.check_chronology(ok, ps.walk_forward_plan(3, 1))
    ps.check_chronology([(None, None)] * 3, ps.walk_forward_plan(3, 1))  # unknown bounds: checked on the events
    with pytest.raises(ps.SweepError, match="step 1: training input 1 ends after test input 2 starts"):
        ps.check_chronology([(0, 10), (10, 25), (20, 30)], ps.walk_forward_plan(3, 1))


# -- sweeps that run ------------------------------------------------------------------------


def test_sweep_in_process_matches_single_backtests_and_writes_its_result(tmp_path):
    from actors.sweep import run_sweep, write_sweep

    sets = ps.grid(PARAMS)
    result = run_sweep(sets, INPUTS, sweep_id="s1", overrides=common(tmp_path / "no-model"), use_ray=False,
                       keep_tables=True)
    assert [(r.set_id, r.input_index) for r in result.results] == [(s.set_id, k) for s in sets for k in range(2)]
    for r in result.results:
        alone = backtest(INPUTS[r.input_index], overrides=ps.merge_overrides(common(tmp_path / "no-model"),
                                                                           sets[int(r.set_id[1:])].overrides()),
                         run_id=r.run_id)
        assert (r.decision_hash, r.fill_hash) == (alone.decision_hash, alone.fill_hash)
        assert r.stats["statistics"] == alone.stats["statistics"]
    # The ranking: by net P&L (sum over the inputs), highest first.
    net = {s.set_id: sum(r.stats["statistics"]["net_pnl"] for r in result.results if r.set_id == s.set_id)
           for s in sets}
    assert list(result.ranking["set_id"]) == sorted(net, key=lambda k: -net[k])
    assert result.ranking["net_pnl"].tolist() == pytest.approx(sorted(net.values(), reverse=True))
    assert list(result.ranking["hmarl.threshold"]) == [sets[int(i[1:])].as_dict()["hmarl.threshold"]
                                                      for i in result.ranking["set_id"]]
    d = result.deflated
    assert d["set_id"] == result.ranking["set_id"][0] and d["trials"] == 4 and d["basis"] == "trade"
    out = write_sweep(result, tmp_path / "reports")
    assert sorted(p.name for p in out.iterdir()) == ["runs", "sweep.html", "sweep.json", "sweep.parquet"]
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["sweep"]["sets_tried"] == 4 and saved["sweep"]["runs"] == 8 and saved["sweep"]["failed"] == 0
    assert saved["deflated_sharpe"]["trials"] == 4
    assert pd.read_parquet(out / "sweep.parquet")["set_id"].tolist() == list(result.ranking["set_id"])
    assert "4 parameter sets tried" in (out / "sweep.html").read_text()
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(r.run_id for r in result.results)
    with pytest.raises(BacktestError, match="exists"):
        write_sweep(result, tmp_path / "reports")
    assert not [p for p in (tmp_path / "reports").iterdir() if p.name.startswith(".")]  # nothing half-written


def test_sweep_refuses_a_bad_set_or_input_before_running(tmp_path):
    from actors.sweep import run_sweep

    ran = []
    stop = lambda: ran.append(1) or True  # noqa: E731 (would be asked before the first task)
    with pytest.raises(ConfigError, match=r"^risk\.max_positon: .*\(set p000"):
        run_sweep(ps.grid(["risk.max_positon=1,2"]), INPUTS, sweep_id="x", use_ray=False, stop=stop)
    with pytest.raises(BacktestError, match="input 1 .*recordings folder not found"):
        run_sweep(ps.grid([]), [INPUTS[0], BacktestInput("recordings", path=str(tmp_path / "nope"))],
                  sweep_id="x", use_ray=False, stop=stop)
    with pytest.raises(BacktestError, match="input file not found"):
        run_sweep(ps.grid([]), [BacktestInput("es", path=str(tmp_path / "nope.csv"))], sweep_id="x",
                  use_ray=False, stop=stop)
    with pytest.raises(ps.SweepError, match="Sharpe basis must be one of trade, daily"):
        run_sweep(ps.grid([]), INPUTS, sweep_id="x", use_ray=False, basis="hourly", stop=stop)
    assert ran == []


def test_a_failing_input_is_listed_and_the_others_still_rank(tmp_path):
    from actors.sweep import run_sweep

    # A file that exists but is no ES tape passes the check before running (importing is the
    # run's work) and fails in its task.
    bad = tmp_path / "bad.csv"
    bad.write_text("not,an,es,tape\n1,2,3,4\n")
    empty = BacktestInput("es", path=str(bad))
    result = run_sweep(ps.grid(["hmarl.threshold=0.05,0.15"]), [INPUTS[0], empty], sweep_id="x",
                       overrides=common(tmp_path / "no-model"), use_ray=False)
    errors = [r for r in result.results if r.error]
    assert [(r.set_id, r.input_index) for r in errors] == [("p000", 1), ("p001", 1)]
    assert all("\n" not in r.error for r in errors)
    assert result.ranking["inputs"].tolist() == [1, 1]


@pytest.mark.ray
def test_sweep_on_the_session_ray_equals_in_process(ray_session, tmp_path):
    from actors.sweep import run_sweep

    sets = ps.random_sets(["hmarl.threshold=uniform:0.05:0.2", "execution.policy.hold_flattens=true,false"], 3, seed=5)
    kw = dict(sweep_id="r", overrides=common(tmp_path / "no-model"))
    on_ray = run_sweep(sets, INPUTS[:1], use_ray=True, **kw)
    local = run_sweep(sets, INPUTS[:1], use_ray=False, **kw)
    assert [(r.set_id, r.decision_hash, r.fill_hash, r.stats["statistics"]) for r in on_ray.results] == \
           [(r.set_id, r.decision_hash, r.fill_hash, r.stats["statistics"]) for r in local.results]
    pd.testing.assert_frame_equal(on_ray.ranking, local.ranking)


# -- the 2-node cluster -----------------------------------------------------------------------


def _cluster_main(model_dir: str) -> None:
    """In the child process: the sweep on a head (1 CPU) and one worker node (1 CPU)."""
    from actors.sweep import run_sweep

    def work() -> dict:
        result = run_sweep(ps.grid(PARAMS), INPUTS, sweep_id="c", overrides=common(model_dir), use_ray=True)
        return {"runs": [{"set_id": r.set_id, "input": r.input_index, "node": r.node, "error": r.error,
                          "decision_hash": r.decision_hash, "fill_hash": r.fill_hash,
                          "statistics": r.stats["statistics"] if r.stats else None} for r in result.results],
                "ranking": result.ranking["set_id"].tolist(), "deflated": result.deflated}

    on_two_nodes(work)


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_on_a_two_node_cluster_runs_every_set_once_with_in_process_results(tmp_path):
    from actors.sweep import run_sweep

    r = child_result("tests.backtest.test_sweep", str(tmp_path / "no-model"), timeout=400)
    sets = ps.grid(PARAMS)
    # Every (set, input) ran exactly once, without error, and both nodes did work.
    assert sorted((x["set_id"], x["input"]) for x in r["runs"]) == [(s.set_id, k) for s in sets for k in range(2)]
    assert all(x["error"] is None for x in r["runs"])
    assert {x["node"] for x in r["runs"]} == {r["head"], r["worker"]}
    # The same sets run one by one in this process: identical hashes and statistics.
    local = run_sweep(sets, INPUTS, sweep_id="c", overrides=common(tmp_path / "no-model"), use_ray=False)
    want = {(x.set_id, x.input_index): (x.decision_hash, x.fill_hash, json.loads(json.dumps(x.stats["statistics"])))
            for x in local.results}
    assert {(x["set_id"], x["input"]): (x["decision_hash"], x["fill_hash"], x["statistics"]) for x in r["runs"]} == want
    assert r["ranking"] == local.ranking["set_id"].tolist()
    assert r["deflated"] == json.loads(json.dumps(local.deflated))


# -- walk-forward ------------------------------------------------------------------------------


WF_INPUTS = [BacktestInput("simulator", start=f"2026-12-01T10:{m:02d}:00", end=f"2026-12-01T10:{m + 2:02d}:00",
                           seed=seed, **SIM) for m, seed in ((0, 21), (2, 22), (4, 23))]
WF_COMMON = {"hmarl": {"decision_every_ms": 500, "horizon_s": 5}}


def test_walk_forward_trains_strictly_before_each_test_window_and_uses_that_model(tmp_path):
    from actors.sweep import run_walk_forward, write_walk_forward

    result = run_walk_forward(WF_INPUTS, 1, wf_id="wf", overrides=WF_COMMON, use_ray=False, keep_tables=True)
    steps = result.steps
    assert steps[["step", "train_inputs", "test_input"]].values.tolist() == [[0, "0", 1], [1, "1", 2]]
    assert steps["error"].isna().all()
    for k, row in steps.iterrows():
        test_start = ns(WF_INPUTS[row["test_input"]].start)
        train_start = ns(WF_INPUTS[int(row["train_inputs"])].start)
        model = result.results[k].model
        # Training data: inside its own input's window, ending before the test window starts.
        assert train_start <= model["training_window"]["start_ns"]
        assert model["test_window"]["end_ns"] <= row["train_last_ns"] < test_start
        assert row["test_start_ns"] == test_start
        assert row["ml_signals"] > 0  # the step's model voted in its test run
    out = write_walk_forward(result, tmp_path / "reports")
    saved = json.loads((out / "walk_forward.json").read_text())
    assert saved["walk_forward"]["steps"] == 2 and saved["out_of_sample"]["inputs"] == 2
    # The registered model, backtested alone on the test input, gives the step's decisions and fills.
    for k, r in enumerate(result.results):
        model_dir = out / "models" / r.set_id
        with_model = ps.merge_overrides(WF_COMMON, {"hmarl": {"model_dir": str(model_dir)}})
        alone = backtest(WF_INPUTS[k + 1], overrides=with_model, run_id=r.run_id)
        assert (alone.decision_hash, alone.fill_hash) == (r.decision_hash, r.fill_hash)
    # Out of sample: the test runs combined.
    assert result.combined["net_pnl"] == pytest.approx(sum(r.stats["statistics"]["net_pnl"] for r in result.results))
    assert result.combined["trades"] == sum(r.stats["statistics"]["trades"] for r in result.results)


def test_walk_forward_refuses_overlapping_or_too_few_inputs():
    from actors.sweep import run_walk_forward

    overlapping = [WF_INPUTS[0], BacktestInput("simulator", start="2026-12-01T10:01:00", end="2026-12-01T10:03:00",
                                               seed=1, **SIM)]
    with pytest.raises(ps.SweepError, match="training input 0 ends after test input 1 starts"):
        run_walk_forward(overlapping, 1, wf_id="x", use_ray=False)
    with pytest.raises(ps.SweepError, match="needs at least 3 inputs"):
        run_walk_forward(WF_INPUTS[:2], 2, wf_id="x", use_ray=False)


@pytest.mark.ray
def test_walk_forward_on_the_session_ray_equals_in_process(ray_session):
    from actors.sweep import run_walk_forward

    kw = dict(wf_id="w", overrides=WF_COMMON)
    on_ray = run_walk_forward(WF_INPUTS, 1, use_ray=True, **kw)
    local = run_walk_forward(WF_INPUTS, 1, use_ray=False, **kw)
    # The models trained on the workers are the same trees (their metadata differs only in the
    # wall-clock registered_at).
    assert [(r.decision_hash, r.fill_hash, r.model_files["walk-forward.ubj"]) for r in on_ray.results] == \
           [(r.decision_hash, r.fill_hash, r.model_files["walk-forward.ubj"]) for r in local.results]
    assert on_ray.combined == local.combined


def test_many_days_inputs(tmp_path):
    from actors.sweep import recording_days, simulator_sessions

    for kind, day in (("trades", "2026-12-02"), ("trades", "2026-12-01"), ("book", "2026-12-01")):
        (tmp_path / kind / "symbol=WDOZ26" / f"date={day}").mkdir(parents=True)
    assert recording_days(str(tmp_path)) == [
        BacktestInput("recordings", path=str(tmp_path), start=d, end=d) for d in ("2026-12-01", "2026-12-02")]
    with pytest.raises(BacktestError, match="holds no recordings"):
        recording_days(str(tmp_path / "trades" / "symbol=WDOZ26"))
    with pytest.raises(BacktestError, match="not found"):
        recording_days(str(tmp_path / "nope"))
    got = simulator_sessions(["2026-12-01", "2026-12-02"], [1, 2], start="10:00", end="11:00", rate=40.0)
    assert [(b.start, b.end, b.seed) for b in got] == [
        ("2026-12-01T10:00", "2026-12-01T11:00", 1), ("2026-12-01T10:00", "2026-12-01T11:00", 2),
        ("2026-12-02T10:00", "2026-12-02T11:00", 1), ("2026-12-02T10:00", "2026-12-02T11:00", 2)]


if __name__ == "__main__" and sys.argv[1:2] == ["cluster"]:
    _cluster_main(sys.argv[2])
