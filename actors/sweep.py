"""Sweeps and walk-forward: many backtests as Ray tasks, one combined result.

A sweep runs every parameter set (:mod:`pipelines.backtest.sweep`) on every input (a day of
recordings, a simulator session, ...): one task per (set, input), each a whole backtest in one
process (:func:`actors.backtest_run.backtest`), ``num_cpus=1`` so a node runs as many at once as
it has CPUs. The caller initializes Ray (``ray.init(address=...)``); without Ray the same tasks
run one after the other in this process, and give the same results (event time drives every
run). Every set is checked by the config loader before anything runs.

A task returns what the combined result needs (the run's statistics, hashes and a
:class:`~pipelines.backtest.sweep.RunSummary`; its tables when the run directories are wanted):
a task on another node cannot write the driver's disk, so the driver writes everything. The
config file travels as text (written to a temporary file where the task runs); input files,
the code and relative paths inside the config must be the same on every node.

Walk-forward: for each step, a task trains the ML voter's model on the previous ``window``
inputs' feature vectors (:func:`pipelines.alpha.ml.train_model`, one vector per trade as
``scripts/train_model.py`` makes them), registers it in a fresh model folder and backtests the
next input with ``hmarl.model_dir`` pointing there. Training data ends strictly before the
test input starts (checked on the inputs' bounds before, and on the events after).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actors.backtest_run import (DEFAULT_CAPITAL, BacktestError, BacktestInput, backtest, backtest_config,
                                 input_batches, staged_dir, write_run)
from actors.feed import feed_validator
from pipelines.adapters.files.replay import parse_bound
from pipelines.alpha.ml import train_model
from pipelines.backtest import sweep as psweep
from pipelines.backtest.sweep import ParamSet, RunSummary, SweepError
from pipelines.config import AppConfig, ConfigError, load_config
from pipelines.features.engine import SymbolAnalytics
from pipelines.model.clock import NS_PER_S
from pipelines.model.instruments import tick_size_for
from pipelines.model.messages import FeatureVector

SWEEP_COLUMNS = ("rank", "set_id", "label")  # then one column per parameter, then the combined figures
RUN_FIGURES = ("net_pnl", "trades", "win_rate", "sharpe_per_trade", "max_drawdown")


# -- one task ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepTask:
    """One backtest of a sweep or a walk-forward step. ``overrides``: the config overrides the run
    takes (the common ones and the set's, merged); ``train``: walk-forward inputs to train the ML
    model on first (empty: no training)."""

    set_id: str
    input_index: int
    source: BacktestInput
    run_id: str
    overrides: dict[str, Any]
    config_path: str | None = None  # as the user gave it (recorded in stats.json)
    config_text: str | None = None  # its content, for nodes that do not have the file
    capital: float = DEFAULT_CAPITAL
    keep_tables: bool = False
    train: tuple[BacktestInput, ...] = ()
    horizon_s: float | None = None  # the ML label horizon (None: hmarl.horizon_s)


@dataclass
class TaskResult:
    set_id: str
    input_index: int
    run_id: str
    node: str  # the Ray node it ran on ("local" without Ray)
    stats: dict[str, Any] | None = None
    decision_hash: str | None = None
    fill_hash: str | None = None
    summary: RunSummary | None = None
    tables: dict[str, pd.DataFrame] | None = None
    error: str | None = None  # one line: why this input could not be run
    model: dict[str, Any] | None = None  # walk-forward: the trained model's metadata
    model_files: dict[str, bytes] = field(default_factory=dict)
    train_last_ns: int | None = None  # walk-forward: event time of the last training event


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def run_task(task: SweepTask) -> TaskResult:
    """One task, wherever it runs. A bad input is the result's ``error``, not an exception."""
    out = TaskResult(task.set_id, task.input_index, task.run_id, _node())
    with tempfile.TemporaryDirectory(prefix="qt-sweep-") as tmp:
        config_path = task.config_path
        if task.config_text is not None:
            config_path = str(Path(tmp) / Path(task.config_path or "config.yaml").name)
            Path(config_path).write_text(task.config_text, encoding="utf-8")
        overrides = task.overrides
        try:
            if task.train:
                model_dir = Path(tmp) / "model"
                out.model, out.train_last_ns = train_step_model(task.train, model_dir, config_path=config_path,
                                                                overrides=overrides, horizon_s=task.horizon_s)
                out.model_files = {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}
                overrides = psweep.merge_overrides(overrides, {"hmarl": {"model_dir": str(model_dir)}})
            run = backtest(task.source, config_path=config_path, overrides=overrides, run_id=task.run_id,
                           capital=task.capital)
        except (BacktestError, ConfigError, SweepError) as e:
            out.error = _first_line(e)
            return out
    run.stats["run"]["config"] = task.config_path
    out.stats, out.decision_hash, out.fill_hash = run.stats, run.decision_hash, run.fill_hash
    out.summary = psweep.summarize(run.stats["statistics"], run.tables["trades"], run.tables["equity"],
                                   run.stats["run"]["events"])
    if task.keep_tables:
        out.tables = run.tables
    return out


# -- walk-forward training ----------------------------------------------------------------


def read_events(cfg: AppConfig, source: BacktestInput) -> list:
    """The input's events in [start, end), validated as the feed validates them (``cfg`` as
    :func:`backtest_config` made it for ``source``)."""
    start = parse_bound(source.start, is_end=False)
    validator = feed_validator(cfg.feed, cfg.symbols, live=False)
    events: list = []
    for batch in input_batches(cfg, source):
        events.extend(e for e in validator.filter(batch) if start is None or e.ts_event >= start)
    return events + validator.flush()


def feature_vectors(cfg: AppConfig, events: list) -> list[FeatureVector]:
    """One feature vector per trade of each symbol (``SymbolAnalytics`` with the tick size the
    live graph gives it), events numbered per symbol as the feed numbers them."""
    sim_tick = cfg.feed.simulator.tick_size
    out: list = []
    for sym in cfg.symbols:
        mine = [e._replace(seq=i + 1) for i, e in enumerate(e for e in events if e.symbol == sym)]
        tick = sim_tick if cfg.feed.source == "simulator" else tick_size_for(sym, sim_tick)
        SymbolAnalytics(sym, tick, vector_every_ns=0).on_events(mine, out)
    return sorted((m for m in out if isinstance(m, FeatureVector)), key=lambda v: v.ts_event)


def train_step_model(train: Sequence[BacktestInput], model_dir: Path, *, config_path: str | None = None,
                     overrides: dict | None = None, horizon_s: float | None = None,
                     name: str = "walk-forward") -> tuple[dict[str, Any], int]:
    """Train and register a model in ``model_dir`` on the inputs ``train``; returns its metadata
    and the event time of the last training event. Raises SweepError (one line) when the inputs
    give too little data."""
    vectors: list[FeatureVector] = []
    last_ns = None
    horizon = horizon_s
    kinds = set()
    for source in train:
        with tempfile.TemporaryDirectory(prefix="qt-train-") as tmp:
            cfg, _ = backtest_config(source, config_path, overrides, workdir=Path(tmp))
            events = read_events(cfg, source)
        if events:
            top = max(e.ts_event for e in events)
            last_ns = top if last_ns is None else max(last_ns, top)
        vectors.extend(feature_vectors(cfg, events))
        horizon = horizon if horizon is not None else cfg.hmarl.horizon_s
        kinds.add(cfg.feed.source)
    if not vectors or last_ns is None:
        raise SweepError("walk-forward: the training inputs hold no trades")
    try:
        meta = train_model(vectors, int(horizon * NS_PER_S), model_dir, name,
                           data_source="simulator" if kinds == {"simulator"} else "replay")
    except ValueError as e:
        raise SweepError(f"walk-forward training: {_first_line(e)}") from None
    return meta, last_ns


# -- running many tasks -------------------------------------------------------------------


class _Progress:
    """tqdm over finished tasks; postfix: the best set so far by its summed net P&L."""

    def __init__(self, total: int, what: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="run", desc=what, dynamic_ncols=True, mininterval=0.5)
        self.net: dict[str, float] = {}
        self.done: dict[str, int] = {}

    def add(self, r: TaskResult) -> None:
        if r.summary is not None:
            self.net[r.set_id] = self.net.get(r.set_id, 0.0) + float(r.summary.statistics.get("net_pnl") or 0.0)
            self.done[r.set_id] = self.done.get(r.set_id, 0) + 1
        if self.net:
            best = max(self.net, key=lambda k: self.net[k])
            self.bar.set_postfix_str(f"best {best} net {self.net[best]:+,.2f} over {self.done[best]} input(s)",
                                     refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def execute(tasks: Sequence[SweepTask], *, use_ray: bool, progress: bool = False, what: str = "sweep",
            stop: Callable[[], bool] | None = None) -> tuple[list[TaskResult], bool]:
    """Run ``tasks`` as Ray tasks (``use_ray``: Ray must be initialized) or one by one here.
    Returns the results in the tasks' order (only those that finished) and whether ``stop()``
    or Ctrl-C ended it early (what was still running is cancelled)."""
    bar = _Progress(len(tasks), what) if progress else None
    done: dict[int, TaskResult] = {}
    interrupted = False
    try:
        if use_ray:
            interrupted = _on_ray(tasks, done, bar, stop)
        else:
            for i, t in enumerate(tasks):
                if stop is not None and stop():
                    interrupted = True
                    break
                done[i] = run_task(t)
                if bar is not None:
                    bar.add(done[i])
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    return [done[i] for i in sorted(done)], interrupted


def _on_ray(tasks: Sequence[SweepTask], done: dict[int, TaskResult], bar: _Progress | None,
            stop: Callable[[], bool] | None) -> bool:
    import ray

    if not ray.is_initialized():
        raise SweepError("--ray: Ray is not initialized (ray.init first)")
    remote = ray.remote(num_cpus=1)(run_task)
    index = {remote.remote(t): i for i, t in enumerate(tasks)}
    pending = list(index)
    try:
        while pending:
            if stop is not None and stop():
                return True
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in ready:
                done[index[ref]] = ray.get(ref)
                if bar is not None:
                    bar.add(done[index[ref]])
        return False
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


# -- a sweep --------------------------------------------------------------------------------


@dataclass
class SweepResult:
    sweep_id: str
    sets: list[ParamSet]
    inputs: list[BacktestInput]
    results: list[TaskResult]  # per (set, input) that ran, sets slowest
    ranking: pd.DataFrame  # one row per set with a finished run, best first
    figures: dict[str, dict[str, Any]]  # set id -> combined figures
    deflated: dict[str, Any] | None  # the best set's deflated Sharpe ratio (None: no set ran)
    rank_by: str
    basis: str
    interrupted: bool
    meta: dict[str, Any]  # config, common overrides, capital, how the sets were made


def _config_text(config_path: str | None) -> str | None:
    if config_path is None:
        return None
    try:
        return Path(config_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("--config", f"cannot read {config_path}: {_first_line(e)}") from None


def check_inputs(inputs: Sequence[BacktestInput], config_path: str | None, overrides: dict | None) -> None:
    """Each input is usable before anything runs: a simulator session or recordings folder is
    configured (as the run will), a file exists and is not empty. Raises BacktestError naming it."""
    if not inputs:
        raise BacktestError("no inputs to run")
    for k, source in enumerate(inputs):
        try:
            if source.kind in ("es", "profit_csv"):
                p = Path(source.path or "")
                if not p.is_file() or p.stat().st_size == 0:
                    raise BacktestError(f"input file {'is empty' if p.is_file() else 'not found'}: {source.path}")
            else:
                backtest_config(source, config_path, overrides)
        except (BacktestError, ConfigError) as e:
            raise BacktestError(f"input {k} ({source.kind} {source.path or source.start}): {e}") from None


def run_sweep(sets: Sequence[ParamSet], inputs: Sequence[BacktestInput], *, sweep_id: str,
              config_path: str | None = None, overrides: dict | None = None, use_ray: bool = True,
              rank_by: str = "net_pnl", basis: str = "trade", capital: float = DEFAULT_CAPITAL,
              keep_tables: bool = False, progress: bool = False, stop: Callable[[], bool] | None = None,
              meta: dict | None = None) -> SweepResult:
    """Every set on every input, ranked. Raises ConfigError (a set's key or value, before
    anything runs), BacktestError (an input), SweepError (nothing could run)."""
    if not sets:
        raise SweepError("no parameter sets")
    if rank_by not in psweep.RANK_ORDER:
        raise SweepError(f"--rank-by must be one of {', '.join(psweep.RANK_ORDER)}, got {rank_by!r}")
    psweep.check_basis(basis)
    base = overrides or {}
    psweep.validate_sets(sets, lambda o: load_config(config_path, overrides=psweep.merge_overrides(base, o)))
    check_inputs(inputs, config_path, base)
    text = _config_text(config_path)
    width = max(2, len(str(len(inputs) - 1)))
    tasks = [SweepTask(s.set_id, k, src, f"{s.set_id}-in{k:0{width}d}", psweep.merge_overrides(base, s.overrides()),
                       config_path, text, capital, keep_tables)
             for s in sets for k, src in enumerate(inputs)]
    results, interrupted = execute(tasks, use_ray=use_ray, progress=progress, what="sweep", stop=stop)
    ran = [r for r in results if r.summary is not None]
    if not ran and not interrupted:
        first = next((r for r in results if r.error), None)
        raise SweepError(f"no run finished: {first.error if first else 'nothing ran'}")
    by_set: dict[str, list[RunSummary]] = {}
    for r in ran:
        by_set.setdefault(r.set_id, []).append(r.summary)
    figures = {s.set_id: psweep.combine(by_set[s.set_id], capital) for s in sets if s.set_id in by_set}
    order = psweep.rank(figures, rank_by) if figures else []
    deflated = None
    if order:
        trial = [psweep.per_observation_sharpe(psweep.returns_of(by_set[i], basis, capital)) for i in figures]
        deflated = {"set_id": order[0], "basis": basis,
                    **psweep.deflated_sharpe(psweep.returns_of(by_set[order[0]], basis, capital), trial, len(sets))}
    info = {"config": config_path, "overrides": base, "capital": capital, **(meta or {})}
    return SweepResult(sweep_id, list(sets), list(inputs), results, _ranking(sets, figures, order), figures,
                       deflated, rank_by, basis, interrupted, info)


def _ranking(sets: Sequence[ParamSet], figures: dict[str, dict], order: list[str]) -> pd.DataFrame:
    by_id = {s.set_id: s for s in sets}
    keys = list(dict.fromkeys(k for s in sets for k, _ in s.params))
    rows = []
    for n, set_id in enumerate(order, 1):
        s = by_id[set_id]
        rows.append({"rank": n, "set_id": set_id, "label": s.label, **{k: s.as_dict().get(k) for k in keys},
                     **figures[set_id]})
    figure_names = list(psweep.COMBINED_DEFINITIONS)
    df = pd.DataFrame(rows, columns=[*SWEEP_COLUMNS, *keys, *figure_names])
    for k in keys:  # a parameter column of mixed types is written as text
        values = [v for v in df[k] if v is not None]
        if len({type(v) for v in values}) > 1 and not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          for v in values):
            df[k] = [psweep.value_text(v) for v in df[k]]
    return df


def _run_row(r: TaskResult) -> dict[str, Any]:
    s = r.stats["statistics"] if r.stats else {}
    return {"set_id": r.set_id, "input": r.input_index, "run_id": r.run_id, "node": r.node,
            "decision_hash": r.decision_hash, "fill_hash": r.fill_hash, "error": r.error,
            **{k: s.get(k) for k in RUN_FIGURES}}


def _clean(v: Any) -> Any:
    """JSON-safe: numpy scalars as Python numbers, NaN and infinities as null."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def sweep_summary(result: SweepResult) -> dict[str, Any]:
    """sweep.json's content."""
    failed = [_run_row(r) for r in result.results if r.error]
    return _clean({
        "sweep": {"sweep_id": result.sweep_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "sets_tried": len(result.sets), "sets_ranked": len(result.ranking), "inputs": len(result.inputs),
                  "runs": len(result.results), "failed": len(failed),
                  "expected_runs": len(result.sets) * len(result.inputs), "interrupted": result.interrupted,
                  "rank_by": result.rank_by, "sharpe_basis": result.basis, **result.meta,
                  "input_list": [s.describe() for s in result.inputs]},
        "deflated_sharpe": result.deflated,
        "ranking": result.ranking.to_dict(orient="records"),
        "runs": [_run_row(r) for r in result.results],
        "definitions": {**psweep.COMBINED_DEFINITIONS, "deflated_sharpe": psweep.DSR_DEFINITION},
    })


def _write_runs(results: Sequence[TaskResult], into: Path, report: bool) -> None:
    from actors.backtest_run import BacktestRun

    for r in results:
        if r.tables is not None and r.stats is not None:
            write_run(BacktestRun(r.run_id, r.stats, r.tables, r.decision_hash or "", r.fill_hash or ""),
                      into, report=report)


def write_sweep(result: SweepResult, out_dir: str | os.PathLike, *, force: bool = False,
                run_reports: bool = False) -> Path:
    """``out_dir/<sweep-id>/``: sweep.json, sweep.parquet (the ranking), sweep.html, and
    ``runs/<run-id>/`` for every run whose tables were kept."""
    summary = sweep_summary(result)
    with staged_dir(out_dir, result.sweep_id, force) as stage:
        (stage / "sweep.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        result.ranking.to_parquet(stage / "sweep.parquet", index=False)
        (stage / "sweep.html").write_text(sweep_html(summary, result.ranking), encoding="utf-8")
        _write_runs(result.results, stage / "runs", run_reports)
    return Path(out_dir) / result.sweep_id


def sweep_html(summary: dict[str, Any], ranking: pd.DataFrame) -> str:
    """A small self-contained page: what was tried, the deflated Sharpe ratio, the ranking."""
    import html

    s = summary["sweep"]
    d = summary.get("deflated_sharpe") or {}
    dsr = d.get("deflated_sharpe_ratio")
    head = (f"{s['sets_tried']} parameter sets tried on {s['inputs']} input(s): {s['runs']} of "
            f"{s['expected_runs']} runs finished, {s['failed']} failed{', interrupted' if s['interrupted'] else ''}. "
            f"Ranked by {s['rank_by']}.")
    dsr_text = (f"Deflated Sharpe ratio of the best set ({d.get('set_id')}, Sharpe per {d.get('basis')} "
                f"{_num(d.get('sharpe'))} over {d.get('observations')} observations; the best of {d.get('trials')} "
                f"trials of no skill would show {_num(d.get('expected_max_sharpe'))}): "
                f"{_num(dsr)}{' (' + d['note'] + ')' if d.get('note') else ''}. "
                "Below 0.95 the best set's edge is not distinguishable from the luck of trying many.") if d else ""
    table = ranking.to_html(index=False, float_format=lambda x: f"{x:,.4g}", na_rep="", border=0)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>sweep "
            f"{html.escape(s['sweep_id'])}</title><style>body{{font-family:sans-serif;margin:1.5em}}"
            "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;"
            "text-align:right}th{background:#f3f3f3}</style></head><body>"
            f"<h1>Sweep {html.escape(s['sweep_id'])}</h1><p>{html.escape(head)}</p><p>{html.escape(dsr_text)}</p>"
            f"{table}</body></html>\n")


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}"


# -- walk-forward ---------------------------------------------------------------------------


@dataclass
class WalkForwardResult:
    wf_id: str
    inputs: list[BacktestInput]
    plan: list[psweep.WalkStep]
    results: list[TaskResult]  # one per step that ran, in step order
    steps: pd.DataFrame  # per step: train and test inputs, the model's window and metrics, the test figures
    combined: dict[str, Any] | None  # the out-of-sample figures over every test input
    interrupted: bool
    meta: dict[str, Any]


def _bounds(source: BacktestInput) -> tuple[int | None, int | None]:
    try:
        return parse_bound(source.start, is_end=False), parse_bound(source.end, is_end=True)
    except ValueError as e:
        raise BacktestError(f"{source.kind} input: {_first_line(e)}") from None


def run_walk_forward(inputs: Sequence[BacktestInput], window: int, *, wf_id: str, config_path: str | None = None,
                     overrides: dict | None = None, use_ray: bool = True, horizon_s: float | None = None,
                     capital: float = DEFAULT_CAPITAL, keep_tables: bool = False, progress: bool = False,
                     stop: Callable[[], bool] | None = None) -> WalkForwardResult:
    """Train on ``window`` inputs, test on the next, roll by one (inputs oldest first). Raises
    ConfigError, BacktestError, SweepError (one line) for bad input or a step that cheats time."""
    base = overrides or {}
    plan = psweep.walk_forward_plan(len(inputs), window)
    load_config(config_path, overrides=base)
    check_inputs(inputs, config_path, base)
    psweep.check_chronology([_bounds(s) for s in inputs], plan)
    text = _config_text(config_path)
    width = max(2, len(str(len(plan) - 1)))
    tasks = [SweepTask(f"step{st.index:0{width}d}", st.test, inputs[st.test], f"step{st.index:0{width}d}", base,
                       config_path, text, capital, keep_tables, tuple(inputs[i] for i in st.train), horizon_s)
             for st in plan]
    results, interrupted = execute(tasks, use_ray=use_ray, progress=progress, what="walk-forward", stop=stop)
    rows = []
    for st, r in zip(plan, _aligned(plan, results, width)):
        if r is None:
            continue
        test_start = r.summary.statistics.get("start_ns") if r.summary else None
        if r.train_last_ns is not None and test_start is not None and r.train_last_ns >= test_start:
            raise SweepError(f"walk-forward step {st.index}: training data reaches {r.train_last_ns} ns, at or after "
                             f"the test input's start {test_start} ns")
        rows.append(_step_row(st, r, inputs))
    ran = [r.summary for r in results if r.summary is not None]
    combined = psweep.combine(ran, capital) if ran else None
    if not ran and not interrupted:
        first = next((r for r in results if r.error), None)
        raise SweepError(f"no walk-forward step finished: {first.error if first else 'nothing ran'}")
    meta = {"config": config_path, "overrides": base, "capital": capital, "train_window": window,
            "horizon_s": horizon_s}
    return WalkForwardResult(wf_id, list(inputs), plan, results, pd.DataFrame(rows), combined, interrupted, meta)


def _aligned(plan: Sequence[psweep.WalkStep], results: Sequence[TaskResult], width: int) -> list[TaskResult | None]:
    by_id = {r.set_id: r for r in results}
    return [by_id.get(f"step{st.index:0{width}d}") for st in plan]


def _step_row(st: psweep.WalkStep, r: TaskResult, inputs: Sequence[BacktestInput]) -> dict[str, Any]:
    m = r.model or {}
    s = r.summary.statistics if r.summary else {}
    ml = {}
    if r.stats:
        agents = r.stats.get("agents", {})
        ml = next((v for k, v in agents.items() if k == "ml" or k.startswith("ml@")), {})
    return {"step": st.index, "train_inputs": ",".join(map(str, st.train)), "test_input": st.test,
            "test_start": inputs[st.test].start, "test_end": inputs[st.test].end,
            "train_last_ns": r.train_last_ns, "test_start_ns": s.get("start_ns"),
            "model_train_end_ns": (m.get("training_window") or {}).get("end_ns"),
            "model_auc": (m.get("metrics") or {}).get("auc"), "ml_signals": ml.get("signals"),
            "ml_hit_rate": ml.get("hit_rate"), "error": r.error, **{k: s.get(k) for k in RUN_FIGURES}}


def write_walk_forward(result: WalkForwardResult, out_dir: str | os.PathLike, *, force: bool = False,
                       run_reports: bool = False) -> Path:
    """``out_dir/<wf-id>/``: walk_forward.json, walk_forward.parquet (per step), ``models/<step>/``
    (each step's model as it was registered) and ``runs/`` when tables were kept."""
    summary = _clean({
        "walk_forward": {"wf_id": result.wf_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "steps": len(result.plan), "finished": len(result.steps), "interrupted": result.interrupted,
                         **result.meta, "input_list": [s.describe() for s in result.inputs]},
        "out_of_sample": result.combined,
        "steps": result.steps.to_dict(orient="records"),
        "models": {r.set_id: r.model for r in result.results if r.model},
        "runs": [_run_row(r) for r in result.results],
        "definitions": psweep.COMBINED_DEFINITIONS,
    })
    with staged_dir(out_dir, result.wf_id, force) as stage:
        (stage / "walk_forward.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n",
                                                 encoding="utf-8")
        result.steps.to_parquet(stage / "walk_forward.parquet", index=False)
        for r in result.results:
            if r.model_files:
                d = stage / "models" / r.set_id
                d.mkdir(parents=True)
                for name, data in r.model_files.items():
                    (d / name).write_bytes(data)
        _write_runs(result.results, stage / "runs", run_reports)
    return Path(out_dir) / result.wf_id


# -- inputs for "many days" -----------------------------------------------------------------


def recording_days(path: str, *, symbols: tuple[str, ...] | None = None) -> list[BacktestInput]:
    """One input per session date of a recordings folder (``<kind>/symbol=<SYM>/date=YYYY-MM-DD/``),
    oldest first."""
    root = Path(path)
    if not root.is_dir():
        raise BacktestError(f"recordings folder not found: {path}")
    dates = sorted({d.name[len("date="):] for d in root.glob("*/symbol=*/date=*") if d.is_dir()})
    if not dates:
        raise BacktestError(f"{path} holds no recordings (<kind>/symbol=<SYM>/date=YYYY-MM-DD/*.parquet)")
    return [BacktestInput("recordings", path=str(root), start=d, end=d, symbols=symbols) for d in dates]


def simulator_sessions(dates: Sequence[str], seeds: Sequence[int | None], *, start: str = "10:00",
                       end: str = "18:00", rate: float | None = None, profile: str | None = None,
                       symbols: tuple[str, ...] | None = None) -> list[BacktestInput]:
    """A simulator session per (date, seed), dates slowest, from ``start`` to ``end`` Sao Paulo time."""
    out = []
    for d in dates:
        for seed in seeds:
            out.append(BacktestInput("simulator", start=f"{d}T{start}", end=f"{d}T{end}", seed=seed, rate=rate,
                                     profile=profile, symbols=symbols))
    return out
