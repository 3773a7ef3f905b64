"""The model alone as a strategy: each CV fold's model backtested on its own test window.

A model's scores (AUC, log loss) say whether it ranks moves; whether it pays for its trades is
the backtest engine's to say, with the same fills, fees and risk limits as any strategy. The
training pipeline does this per fold: the fold's model, served by the ML voter as the only
voter (``hmarl.agents`` empty, ``ml_weight`` 1), on the fold's test window of event time.

A simulator session cannot be cut into windows by restarting the simulator: its path depends
on its start, so a session started at the window's start is another market than the one the
model was trained and scored on. :func:`record_input` therefore first writes the session's
events with the project's recorder (``<root>/<kind>/symbol=<SYM>/date=YYYY-MM-DD/``), and the
folds replay windows of that recording (the replay reads the same events, in the same order, with
the same event times). An ES tape or Profit CSV is imported into ``root`` the way
:func:`actors.backtest_run.backtest_config` imports it; recordings are used as they are.

Windows are int64 ns, start inclusive, end exclusive. A backtest input's bounds are ISO times
with microsecond resolution, so a bound that is not a whole microsecond is rounded inwards
(start up, end down): a fold never replays an event outside its window.

``hmarl.agents: []`` is refused by the config loader (its lists must not be empty), so the
agents are removed from the loaded config instead; with no agent the coordinator's only voter
is ``ml`` and its weight is 1 whatever ``ml_weight`` says.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from actors.backtest_run import (BacktestError, BacktestInput, BacktestRun, backtest_config, input_batches,
                                 run_backtest)
from actors.hmarl import ml_name
from pipelines.adapters.config import RecorderConfig
from pipelines.adapters.files.recorder import ParquetRecorder
from pipelines.adapters.files.replay import parse_bound
from pipelines.alpha.ml import REGISTRY_FILE
from pipelines.backtest.sweep import merge_overrides
from pipelines.config import AppConfig
from pipelines.model.clock import NS_PER_US, from_ns

RECORD_FLUSH_EVENTS = 200_000  # rows per Parquet file while recording: bounds memory on a long session


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text if isinstance(e, ValueError) and text else f"{type(e).__name__}: {text}".rstrip(": ")


# -- recording an input -------------------------------------------------------------------


def _empty_or_new(root: Path) -> None:
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"record into {root}: must be a new or empty folder (recordings there would mix)")


def record_input(source: BacktestInput, root: str | Path, *, config_path: str | None = None,
                 overrides: dict | None = None) -> BacktestInput:
    """``source`` as a recordings input that replays the same events: a simulator session is run
    from its start to its end and written under ``root`` (new or empty); an ES tape or Profit CSV
    is imported there; recordings are returned as they are. Raises ValueError (BacktestError,
    ConfigError) in one line."""
    if source.kind == "recordings":
        return source
    root = Path(root)
    _empty_or_new(root)
    root.mkdir(parents=True, exist_ok=True)
    # A file input is imported into root by backtest_config itself, exactly as a backtest would.
    cfg, _ = backtest_config(source, config_path, overrides, workdir=root)
    symbols = tuple(cfg.symbols)
    if source.kind == "simulator":
        _record_feed(cfg, source, root)
    return BacktestInput("recordings", path=str(root), start=source.start, end=source.end, symbols=symbols)


def _record_feed(cfg: AppConfig, source: BacktestInput, root: Path) -> None:
    """The feed's events in [start, end), as the backtest reads them, written under ``root``."""
    # One flush per RECORD_FLUSH_EVENTS rows, never on wall-clock age.
    recorder = ParquetRecorder(RecorderConfig(path=str(root), flush_events=RECORD_FLUSH_EVENTS,
                                              flush_seconds=86_400.0))
    # The replay orders a day's rows by (ts_event, seq) and merges symbols by the same key: one
    # counter over all symbols in feed order gives back the feed's own order.
    seq = 0
    try:
        for batch in input_batches(cfg, source):
            recorder.on_batch([e._replace(seq=seq + i + 1) for i, e in enumerate(batch)])
            seq += len(batch)
    finally:
        recorder.close()
    written = seq
    if not written:
        raise BacktestError(f"no market data in the simulator session from {source.start} to {source.end}")


# -- the folds' backtests -------------------------------------------------------------------


def ns_iso(ns: int, *, up: bool) -> str:
    """ISO time with its UTC offset (Sao Paulo) of ``ns`` at microsecond resolution, rounded up
    (a start) or down (an end), so the bound lies inside the window."""
    us = -(-ns // NS_PER_US) if up else ns // NS_PER_US
    return from_ns(us * NS_PER_US).isoformat(timespec="microseconds")


def _fold_input(source: BacktestInput, start_ns: int, end_ns: int) -> BacktestInput | None:
    """``source`` cut to [start_ns, end_ns) within its own bounds; None when nothing is left."""
    lo, hi = parse_bound(source.start, is_end=False), parse_bound(source.end, is_end=True)
    start = max(start_ns, lo) if lo is not None else start_ns
    end = min(end_ns, hi) if hi is not None else end_ns
    first, last = -(-start // NS_PER_US), end // NS_PER_US
    if last <= first:
        return None
    return replace(source, start=ns_iso(start, up=True), end=ns_iso(end, up=False))


def model_alone_overrides(model_dir: str | Path, overrides: dict | None = None) -> dict[str, Any]:
    """The caller's overrides, then the ML voter alone serving ``model_dir`` (these win)."""
    ml = {"hmarl": {"enabled": True, "ml_enabled": True, "model_dir": str(Path(model_dir).resolve()),
                    "ml_weight": 1.0, "ml_allow_other_market": True}}
    return merge_overrides(overrides or {}, ml)


def _check_windows(windows: Sequence[tuple[int, int]], model_dirs: Sequence[str | Path]) -> None:
    if len(windows) != len(model_dirs):
        raise ValueError(f"fold_backtests: {len(windows)} windows but {len(model_dirs)} model folders")
    for k, w in enumerate(windows):
        if len(w) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in w):
            raise ValueError(f"windows[{k}]: expected (start_ns, end_ns) integers, got {w!r}")
        if w[1] <= w[0]:
            raise ValueError(f"windows[{k}]: end {int(w[1])} must be after start {int(w[0])}")


def fold_backtests(source: BacktestInput, windows: Sequence[tuple[int, int]], model_dirs: Sequence[str | Path], *,
                   config_path: str | None = None, overrides: dict | None = None, run_id_prefix: str = "fold",
                   progress: bool = False, keep_runs: bool = False) -> list[dict[str, Any]]:
    """Fold k: ``source`` over ``windows[k]`` with the model of ``model_dirs[k]`` as the only voter.

    Per fold a dict: fold, start_ns, end_ns (the window asked for), run_id, net_pnl, gross_pnl and
    fees (R$, as stats.json defines them: the open position marked to the last trade),
    round_trips, decisions ({BUY, SELL}), win_rate, max_drawdown, ml_signals, ml_error (why the ML
    voter had no model, if it had none), decision_hash; ``run`` (the BacktestRun) with
    ``keep_runs``. A fold that cannot run has ``error`` (one line) and the others still run.
    A simulator session must be recorded first (:func:`record_input`); ValueError otherwise and
    for windows that do not match the model folders."""
    if source.kind == "simulator":
        raise ValueError("fold_backtests: a simulator session cannot be cut into windows; record it first "
                         "(record_input) and pass the recordings")
    _check_windows(windows, model_dirs)
    width = max(2, len(str(len(windows) - 1)))
    out = []
    for k, (window, model_dir) in enumerate(zip(windows, model_dirs)):
        start_ns, end_ns = int(window[0]), int(window[1])
        row: dict[str, Any] = {"fold": k, "start_ns": start_ns, "end_ns": end_ns,
                               "run_id": f"{run_id_prefix}{k:0{width}d}"}
        try:
            fold_source = _fold_input(source, start_ns, end_ns)
            if fold_source is None:
                raise BacktestError(f"window {start_ns}..{end_ns} ns lies outside the input")
            if not (Path(model_dir) / REGISTRY_FILE).is_file():
                raise BacktestError(f"model folder {model_dir} has no {REGISTRY_FILE}: no model to serve")
            run = _run_fold(fold_source, model_dir, config_path, overrides, row["run_id"], progress)
        except Exception as e:  # noqa: BLE001 - one fold's failure is that fold's result
            row["error"] = _first_line(e)
        else:
            row.update(_fold_figures(run))
            if keep_runs:
                row["run"] = run
        out.append(row)
    return out


def _run_fold(source: BacktestInput, model_dir: str | Path, config_path: str | None, overrides: dict | None,
              run_id: str, progress: bool) -> BacktestRun:
    with tempfile.TemporaryDirectory(prefix="qt-fold-") as tmp:
        cfg, imported = backtest_config(source, config_path, model_alone_overrides(model_dir, overrides),
                                        workdir=Path(tmp))
        cfg = replace(cfg, hmarl=replace(cfg.hmarl, agents=()))
        return run_backtest(cfg, source, run_id=run_id, progress=progress, config_path=config_path,
                            imported=imported)


def _fold_figures(run: BacktestRun) -> dict[str, Any]:
    s = run.stats["statistics"]
    ml = [run.final.get(ml_name(sym)) or {} for sym in run.stats["run"]["symbols"]]
    return {"net_pnl": s["net_pnl"], "gross_pnl": s["gross_pnl"], "fees": s["costs"], "round_trips": s["trades"],
            "decisions": {a: run.stats["decisions"].get(a, 0) for a in ("BUY", "SELL")},
            "win_rate": s["win_rate"], "max_drawdown": s["max_drawdown"],
            "ml_signals": sum(int(m.get("signals_sent", 0)) for m in ml),
            "ml_error": next((m["error"] for m in ml if m.get("error")), None),
            "decision_hash": run.decision_hash}
