"""Parameter sweeps and walk-forward, the parts that need no Ray and no graph: parameter sets
over named config keys, one set's figures combined across many inputs, the ranking, the
deflated Sharpe ratio of the best set, and the walk-forward plan. ``actors/sweep.py`` runs them.

**Parameter sets.** A parameter is ``key=spec`` with a dotted config key (``hmarl.threshold``,
``risk.max_position``, ``execution.policy.style``). A grid takes ``key=v1,v2,...`` per key (values
are YAML scalars: ``0.1``, ``2``, ``true``, ``market``) and runs the cartesian product, the first
key varying slowest. Random sets (``n`` draws from a seeded generator: the same seed gives the
same sets) take ``key=uniform:lo:hi`` (a float in [lo, hi), kept to 6 significant digits so a
set can be typed back with ``--set``), ``key=int:lo:hi`` (an integer in [lo, hi], both
included), ``key=choice:a,b`` or ``key=a,b`` (one of the values) or ``key=v`` (always v); a draw
equal to an earlier one is dropped, so every set tried is distinct. Sets get ids ``p000``,
``p001``, ... in order, and a label ``key=value, ...``. ``feed.*`` and ``symbols`` are not
parameters: the inputs decide them (sweep inputs instead).

**Combining one set's runs** (one run per input), :data:`COMBINED_DEFINITIONS` says how: money
is summed, the closed trips of all inputs are pooled (win rate, profit factor, expectancy and
the per-trade Sharpe ratio are those of the pooled trips), each input's session days are
separate observations of the daily Sharpe ratio, and the maximum drawdown is that of the
inputs' equity curves chained in the order given (as if traded back to back).

**Deflated Sharpe ratio** (Bailey and Lopez de Prado, "The Deflated Sharpe Ratio: Correcting for
Selection Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management, 2014):
the probability that the selected set's true Sharpe ratio is above the highest one that N
trials of no skill would be expected to show, given the variance of the trials' Sharpe ratios
and the skewness and kurtosis of the selected set's returns. Sharpe ratios here are per
observation (a closed trip, or a session day), not annualized.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats as sps

from pipelines.backtest.stats import SESSIONS_PER_YEAR, daily_pnl
from pipelines.config import ConfigError

MAX_SETS = 10_000  # a grid larger than this is refused: narrow it or draw at random
EULER_GAMMA = 0.5772156649015329  # the Euler-Mascheroni constant of the expected maximum
RESERVED = ("feed", "symbols")  # set by the inputs, not by a parameter
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_DISTRIBUTIONS = ("uniform", "int", "choice")


class SweepError(ValueError):
    """A parameter spec, a plan or a combination that cannot be used: one line."""


# -- parameter sets -------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSet:
    """One parameter set: ``params`` are (dotted key, value) in the order the keys were given."""

    set_id: str
    params: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={value_text(v)}" for k, v in self.params) or "(the config as it is)"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def overrides(self) -> dict[str, Any]:
        """The set as a nested dict, the way ``load_config(overrides=...)`` takes it."""
        return nested(self.as_dict())


@dataclass(frozen=True)
class _Axis:
    key: str
    kind: str  # "values" (a grid axis or a choice), "uniform", "int"
    values: tuple[Any, ...] = ()
    lo: float = 0.0
    hi: float = 0.0


def value_text(v: Any) -> str:
    """A value as YAML would read it back (``True`` -> ``true``, ``None`` -> ``null``)."""
    if isinstance(v, str):
        return v
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def _scalar(text: str, spec: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise SweepError(f"--param {spec}: {text!r} is not a YAML scalar") from None
    if isinstance(value, (dict, list)):
        raise SweepError(f"--param {spec}: {text!r} is not a scalar (lists and mappings cannot be swept)")
    return value


def _number(text: str, spec: str, integer: bool) -> float:
    try:
        v = float(text)
    except ValueError:
        raise SweepError(f"--param {spec}: {text!r} is not a number") from None
    if not math.isfinite(v) or (integer and not v.is_integer()):
        raise SweepError(f"--param {spec}: {text!r} is not a{'n integer' if integer else ' finite number'}")
    return v


def parse_param(spec: str) -> _Axis:
    """``key=spec`` as one axis of a grid or one distribution of a random draw."""
    key, sep, body = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SweepError(f"--param {spec!r}: expected key=values (e.g. hmarl.threshold=0.1,0.2)")
    if not _KEY_RE.match(key):
        raise SweepError(f"--param {spec!r}: {key!r} is not a dotted config key like hmarl.threshold")
    if key.split(".")[0] in RESERVED:
        raise SweepError(f"--param {spec!r}: {key.split('.')[0]} is set by the inputs, not a parameter "
                         "(give several inputs instead)")
    body = body.strip()
    kind, colon, rest = body.partition(":")
    if colon and kind in ("uniform", "int"):
        parts = rest.split(":")
        if len(parts) != 2:
            raise SweepError(f"--param {spec}: expected {kind}:lo:hi")
        lo, hi = (_number(p.strip(), spec, kind == "int") for p in parts)
        if hi < lo or (kind == "uniform" and hi == lo):
            raise SweepError(f"--param {spec}: hi must be above lo")
        return _Axis(key, kind, lo=lo, hi=hi)
    if colon and kind == "choice":
        body = rest
    if not body:
        raise SweepError(f"--param {spec}: no values")
    values = tuple(_scalar(t.strip(), spec) for t in body.split(","))
    if len(set(map(repr, values))) != len(values):
        raise SweepError(f"--param {spec}: a value is given twice")
    return _Axis(key, "values", values=values)


def _axes(specs: Sequence[str]) -> list[_Axis]:
    axes = [parse_param(s) for s in specs]
    keys = [a.key for a in axes]
    for i, k in enumerate(keys):
        if k in keys[:i]:
            raise SweepError(f"--param {k}: given twice")
        for other in keys[:i]:
            if other.startswith(k + ".") or k.startswith(other + "."):
                raise SweepError(f"--param {k}: overlaps {other} (one is inside the other)")
    return axes


def _ids(rows: list[tuple[tuple[str, Any], ...]]) -> list[ParamSet]:
    width = max(3, len(str(len(rows) - 1)))
    return [ParamSet(f"p{i:0{width}d}", row) for i, row in enumerate(rows)]


def grid(specs: Sequence[str]) -> list[ParamSet]:
    """The cartesian product of ``key=v1,v2,...`` specs (no spec: one set, the config as it is)."""
    axes = _axes(specs)
    for a in axes:
        if a.kind != "values":
            raise SweepError(f"--param {a.key}={a.kind}:...: a distribution needs --random N")
    size = math.prod(len(a.values) for a in axes)
    if size > MAX_SETS:
        raise SweepError(f"the grid has {size:,} sets, more than {MAX_SETS:,}: narrow it or use --random N")
    rows = [tuple(zip((a.key for a in axes), combo)) for combo in itertools.product(*(a.values for a in axes))]
    return _ids(rows)


def random_sets(specs: Sequence[str], n: int, seed: int = 0) -> list[ParamSet]:
    """``n`` draws (the same ``seed`` gives the same draws), duplicates dropped."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SETS:
        raise SweepError(f"--random: expected a number of sets from 1 to {MAX_SETS:,}, got {n!r}")
    axes = _axes(specs)
    if not axes:
        raise SweepError("--random needs at least one --param")
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    rows = []
    for _ in range(n):
        row = []
        for a in axes:
            if a.kind == "uniform":
                v: Any = float(f"{rng.uniform(a.lo, a.hi):.6g}")
            elif a.kind == "int":
                v = int(rng.integers(int(a.lo), int(a.hi), endpoint=True))
            else:
                v = a.values[int(rng.integers(len(a.values)))]
            row.append((a.key, v))
        mark = repr(row)
        if mark not in seen:
            seen.add(mark)
            rows.append(tuple(row))
    return _ids(rows)


def merge_overrides(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Nested overrides ``extra`` on top of ``base`` (sections merged key by key)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_overrides(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def nested(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` -> ``{"a": {"b": 1, "c": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SweepError(f"{key}: sets a key inside {part}, which has a value")
        if isinstance(node.get(parts[-1]), dict):
            raise SweepError(f"{key}: is a section with keys set inside it")
        node[parts[-1]] = value
    return out


def set_overrides(items: Sequence[str]) -> dict[str, Any]:
    """The CLIs' ``--set a.b=value`` (a YAML scalar) as overrides ``{"a": {"b": value}}``; the config
    loader checks the keys."""
    flat = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", f"expected key=value, got {item!r}")
        flat[key.strip()] = yaml.safe_load(text) if text.strip() else None
    return nested(flat)


def validate_sets(sets: Sequence[ParamSet], check: Callable[[dict[str, Any]], object]) -> None:
    """``check(overrides)`` for every set before anything runs (the caller passes the config
    loader). Its error is raised again, one line, with the set named at the end; an error with
    ``key`` and ``problem`` (the loader's ConfigError) keeps its type, so it still names the key."""
    for s in sets:
        try:
            check(s.overrides())
        except ValueError as e:
            where = f" (set {s.set_id}: {s.label})"
            key, problem = getattr(e, "key", None), getattr(e, "problem", None)
            if key is not None and problem is not None:
                raise type(e)(key, f"{problem}{where}") from None
            raise SweepError(f"{str(e).splitlines()[0] if str(e) else type(e).__name__}{where}") from None


# -- one run's summary, and one set's runs combined -----------------------------------


@dataclass(frozen=True)
class RunSummary:
    """What combining needs of one run (small, so it crosses the cluster cheaply).

    ``statistics``: the run's :func:`pipelines.backtest.stats.statistics`; ``trade_pnl``: its
    closed trips' net P&L in the order they closed; ``daily_pnl``: (session day, net P&L) per
    session; ``equity_max`` / ``equity_min``: the highest and lowest net equity, counting the
    zero it starts from; ``equity_final``: net P&L at the end."""

    statistics: dict[str, Any]
    trade_pnl: tuple[float, ...]
    daily_pnl: tuple[tuple[str, float], ...]
    equity_final: float
    equity_max: float
    equity_min: float
    max_drawdown: float
    events: int


def summarize(statistics: dict[str, Any], trades: pd.DataFrame, equity: pd.DataFrame, events: int) -> RunSummary:
    """A run's summary from its statistics and its trades and equity tables."""
    eq = equity["equity"].to_numpy(dtype=float)
    days = daily_pnl(equity)
    return RunSummary(
        statistics=dict(statistics),
        trade_pnl=tuple(float(x) for x in trades["net_pnl"].to_numpy(dtype=float)),
        daily_pnl=tuple((d.date().isoformat(), float(p)) for d, p in days.items()),
        equity_final=float(eq[-1]) if eq.size else 0.0,
        equity_max=max(0.0, float(eq.max())) if eq.size else 0.0,
        equity_min=min(0.0, float(eq.min())) if eq.size else 0.0,
        max_drawdown=float(statistics.get("max_drawdown") or 0.0),
        events=int(events))


COMBINED_DEFINITIONS: dict[str, str] = {
    "inputs": "inputs run for the set (a failed input is left out, and listed with the runs)",
    "events": "market events over all its inputs",
    "net_pnl": "R$: sum of the inputs' net P&L",
    "gross_pnl": "R$: sum of the inputs' gross P&L",
    "costs": "R$: sum of the inputs' fees",
    "mean_net_pnl": "R$: net_pnl / inputs",
    "worst_input_pnl": "R$: the lowest net P&L of one input",
    "inputs_positive": "inputs with net P&L > 0",
    "trades": "closed round trips over all inputs",
    "wins": "pooled trips with net P&L > 0",
    "losses": "pooled trips with net P&L < 0",
    "win_rate": "wins / trades over the pooled trips; None without trades",
    "profit_factor": "pooled winning trips' net P&L / -(pooled losing trips' net P&L); None without a loss",
    "expectancy": "R$: mean net P&L of the pooled trips; None without trades",
    "sharpe_per_trade": "mean / std(ddof=1) of the pooled trips' net P&L, not annualized; None with fewer than "
                        "2 trips or no dispersion",
    "sessions": "session days over all inputs (each input's days are separate observations)",
    "sharpe_daily": "mean(r) / std(r, ddof=1) x sqrt(252), r = each session day's net P&L / capital over all "
                    "inputs; None with fewer than 2 sessions or no dispersion",
    "max_drawdown": "R$ (positive): the largest fall from the running peak of the inputs' equity curves chained "
                    "in the order given (each input starting where the previous one ended)",
}

RANK_ORDER: dict[str, bool] = {  # figure -> higher is better
    "net_pnl": True, "mean_net_pnl": True, "worst_input_pnl": True, "sharpe_per_trade": True,
    "sharpe_daily": True, "profit_factor": True, "win_rate": True, "expectancy": True, "max_drawdown": False,
}


def per_observation_sharpe(x: np.ndarray) -> float | None:
    """mean / std(ddof=1): None with fewer than 2 values or no dispersion."""
    x = np.asarray(x, dtype=float)
    if x.size < 2:
        return None
    sd = float(np.std(x, ddof=1))
    return float(np.mean(x)) / sd if sd > 0 and math.isfinite(sd) else None


def chained_drawdown(runs: Sequence[RunSummary]) -> float:
    """The maximum drawdown (R$) of the runs' equity curves placed end to end. In run i, which
    starts at ``offset`` with the peak so far ``peak``, the deepest point is ``offset +
    equity_min`` and the largest fall inside it ``max_drawdown``; the run then lifts the peak to
    ``offset + equity_max``."""
    offset = peak = worst = 0.0
    for r in runs:
        worst = max(worst, r.max_drawdown, peak - (offset + r.equity_min))
        peak = max(peak, offset + r.equity_max)
        offset += r.equity_final
    return worst


def combine(runs: Sequence[RunSummary], capital: float) -> dict[str, Any]:
    """One set's figures over its runs (in input order): see :data:`COMBINED_DEFINITIONS`."""
    pnl = np.asarray([p for r in runs for p in r.trade_pnl], dtype=float)
    days = np.asarray([p for r in runs for _, p in r.daily_pnl], dtype=float)
    net = [float(r.statistics.get("net_pnl") or 0.0) for r in runs]
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    daily = per_observation_sharpe(days / capital)
    return {
        "inputs": len(runs),
        "events": sum(r.events for r in runs),
        "net_pnl": float(sum(net)),
        "gross_pnl": float(sum(float(r.statistics.get("gross_pnl") or 0.0) for r in runs)),
        "costs": float(sum(float(r.statistics.get("costs") or 0.0) for r in runs)),
        "mean_net_pnl": float(np.mean(net)) if net else None,
        "worst_input_pnl": float(min(net)) if net else None,
        "inputs_positive": sum(1 for x in net if x > 0),
        "trades": int(pnl.size),
        "wins": int(wins.size),
        "losses": int(losses.size),
        "win_rate": wins.size / pnl.size if pnl.size else None,
        "profit_factor": float(wins.sum()) / -float(losses.sum()) if losses.size else None,
        "expectancy": float(pnl.mean()) if pnl.size else None,
        "sharpe_per_trade": per_observation_sharpe(pnl),
        "sessions": int(days.size),
        "sharpe_daily": daily * math.sqrt(SESSIONS_PER_YEAR) if daily is not None else None,
        "max_drawdown": chained_drawdown(runs),
    }


BASES = ("trade", "daily")  # what the deflated Sharpe ratio's observations are


def check_basis(basis: str) -> None:
    if basis not in BASES:
        raise SweepError(f"the Sharpe basis must be one of {', '.join(BASES)}, got {basis!r}")


def returns_of(runs: Sequence[RunSummary], basis: str, capital: float) -> np.ndarray:
    """The observations a Sharpe ratio is taken over: pooled trips' net P&L (``trade``) or
    session days' net P&L / capital (``daily``)."""
    check_basis(basis)
    if basis == "trade":
        return np.asarray([p for r in runs for p in r.trade_pnl], dtype=float)
    return np.asarray([p for r in runs for _, p in r.daily_pnl], dtype=float) / capital


def rank(figures: Mapping[str, Mapping[str, Any]], by: str = "net_pnl") -> list[str]:
    """Set ids best first by the figure ``by`` (see :data:`RANK_ORDER`); an undefined figure
    ranks last; ties keep the sets' order."""
    if by not in RANK_ORDER:
        raise SweepError(f"--rank-by must be one of {', '.join(RANK_ORDER)}, got {by!r}")
    sign = -1.0 if RANK_ORDER[by] else 1.0
    ids = list(figures)

    def key(i: int) -> tuple:
        v = figures[ids[i]].get(by)
        return (v is None, sign * v if v is not None else 0.0, i)

    return [ids[i] for i in sorted(range(len(ids)), key=key)]


# -- the deflated Sharpe ratio --------------------------------------------------------


DSR_DEFINITION = (
    "Phi((SR - SR0) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2)) over the best set's T returns, "
    "SR0 = sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e))) the highest Sharpe ratio N trials of no "
    "skill would be expected to show (Phi the standard normal distribution function, g = 0.5772..., V the sample "
    "variance of the trials' Sharpe ratios); Bailey and Lopez de Prado 2014. Sharpe ratios per observation (a "
    "closed trip, or a session day's return), not annualized; None when the best set's Sharpe is undefined")


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """The expected highest of ``n_trials`` Sharpe ratios of no skill whose variance across the
    trials is ``variance`` (the paper's SR0): sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e))),
    g the Euler-Mascheroni constant, Phi^-1 the standard normal quantile. One trial, or no variance: 0."""
    if n_trials < 1:
        raise SweepError(f"the number of trials must be at least 1, got {n_trials}")
    if n_trials == 1 or variance <= 0:
        return 0.0
    z = sps.norm.ppf
    return math.sqrt(variance) * ((1 - EULER_GAMMA) * z(1 - 1 / n_trials)
                                  + EULER_GAMMA * z(1 - 1 / (n_trials * math.e)))


def probabilistic_sharpe_ratio(sharpe: float, benchmark: float, n_obs: int, skewness: float,
                               kurtosis: float) -> float | None:
    """P(true Sharpe > ``benchmark``) for an estimate ``sharpe`` over ``n_obs`` observations with
    that skewness and (non-excess) kurtosis: Phi((SR - SR0) sqrt(T - 1) / sqrt(1 - g3 SR +
    (g4 - 1) / 4 SR^2)), Phi the standard normal distribution function. None with fewer than 2
    observations or a non-positive denominator."""
    if n_obs < 2:
        return None
    var = 1 - skewness * sharpe + (kurtosis - 1) / 4 * sharpe ** 2
    if not var > 0:
        return None
    return float(sps.norm.cdf((sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var)))


def deflated_sharpe(returns: np.ndarray, trial_sharpes: Sequence[float | None], n_trials: int) -> dict[str, Any]:
    """The deflated Sharpe ratio of the selected set whose per-observation ``returns`` are given,
    after ``n_trials`` trials whose Sharpe ratios (same basis; None where undefined) are
    ``trial_sharpes``. Skewness and kurtosis are the returns' sample moments (scipy, biased);
    the trials' variance is the sample variance (ddof=1) of the defined trial Sharpe ratios
    (0 with fewer than two: then nothing is deflated, and ``note`` says so)."""
    r = np.asarray(returns, dtype=float)
    defined = np.asarray([s for s in trial_sharpes if s is not None and math.isfinite(s)], dtype=float)
    # Equal Sharpe ratios have no variance (np.var leaves a rounding residue of ~1e-33).
    variance = float(np.var(defined, ddof=1)) if defined.size >= 2 and np.ptp(defined) > 0 else 0.0
    sr = per_observation_sharpe(r)
    out: dict[str, Any] = {"trials": int(n_trials), "trials_with_sharpe": int(defined.size),
                           "sharpe_variance": variance, "expected_max_sharpe": expected_max_sharpe(n_trials, variance),
                           "sharpe": sr, "observations": int(r.size), "skewness": None, "kurtosis": None,
                           "deflated_sharpe_ratio": None, "note": None}
    if sr is None:
        out["note"] = "the selected set's Sharpe ratio is undefined (fewer than 2 observations or no dispersion)"
        return out
    skew = float(sps.skew(r, bias=True))
    kurt = float(sps.kurtosis(r, fisher=False, bias=True))
    out.update(skewness=skew, kurtosis=kurt)
    out["deflated_sharpe_ratio"] = probabilistic_sharpe_ratio(sr, out["expected_max_sharpe"], r.size, skew, kurt)
    if out["deflated_sharpe_ratio"] is None:
        out["note"] = "the Sharpe ratio's variance term is not positive for these moments"
    elif n_trials > 1 and defined.size < 2:
        out["note"] = "fewer than 2 trials had a Sharpe ratio: their variance is unknown and nothing was deflated"
    return out


# -- walk-forward ----------------------------------------------------------------------


@dataclass(frozen=True)
class WalkStep:
    """Step ``index``: train on the inputs ``train`` (indices, oldest first), test on ``test``."""

    index: int
    train: tuple[int, ...]
    test: int


def walk_forward_plan(n_inputs: int, window: int) -> list[WalkStep]:
    """Train on ``window`` consecutive inputs, test on the next, roll by one."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise SweepError(f"--train-window: expected a number of inputs >= 1, got {window!r}")
    if n_inputs < window + 1:
        raise SweepError(f"walk-forward with a training window of {window} needs at least {window + 1} inputs, "
                         f"got {n_inputs}")
    return [WalkStep(k - window, tuple(range(k - window, k)), k) for k in range(window, n_inputs)]


def check_chronology(bounds: Sequence[tuple[int | None, int | None]], plan: Sequence[WalkStep]) -> None:
    """Every training input ends (exclusive bound) at or before its test input starts, where the
    inputs state their bounds ((start_ns, end_ns), None when open)."""
    for step in plan:
        start = bounds[step.test][0]
        for i in step.train:
            end = bounds[i][1]
            if start is not None and end is not None and end > start:
                raise SweepError(f"walk-forward step {step.index}: training input {i} ends after test input "
                                 f"{step.test} starts; give the inputs oldest first, without overlap")
