"""Train, validate, compare and promote the ML voter's model: the steps ``scripts/train_model.py`` runs.

    inputs -> recordings -> events -> dataset (features at the decision cadence, labels after it)
           -> checks (enough samples, two classes, the engine's features, no feature that sees the future)
           -> [Ray Tune: the fit's hyper-parameters by purged CV score]
           -> purged CV of the recipe (metrics with intervals, baselines, calibration curve)
           -> the model alone through the backtest engine on each walk-forward test fold (R$ after costs)
           -> the final fit on every sample -> model files + card, registered as a challenger
           -> the champion's recipe refitted on the same folds -> promote only if the challenger beats it

Inputs are :class:`actors.backtest_run.BacktestInput` (simulator sessions, recordings, the ES
tape, Profit CSV exports); each is first materialised as recordings
(:func:`actors.model_backtest.record_input`) so a fold's window can be backtested on exactly the
events the model was scored on.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import xgboost as xgb

from actors.backtest_run import BacktestInput, backtest_config
from actors.sweep import read_events
from pipelines.config import AppConfig
from pipelines.model.clock import NS_PER_MS, NS_PER_S, from_ns
from pipelines.model.instruments import tick_size_for
from pipelines.training import registry as reg
from pipelines.training.config import FitConfig, TrainingConfig
from pipelines.training.dataset import Dataset, build_dataset, check_trainable, concat
from pipelines.training.evaluate import CVResult, compare, cross_validate, make_folds
from pipelines.training.fit import fit_model

log = logging.getLogger("quantumtrader.training")
INNER_SPLITS = 3  # walk-forward folds of the CV that tunes one outer fold's recipe


class TrainingError(ValueError):
    """One line for the user: what is wrong with the input or the data."""


@dataclass
class TrainReport:
    name: str | None
    meta: dict[str, Any] | None  # the written model's metadata (None: validate only)
    cv: CVResult
    dataset: Dataset
    decision: dict[str, Any] | None = None  # promotion
    tuning: dict[str, Any] | None = None
    backtest: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _iso(ns: int) -> str:
    return from_ns(ns).isoformat(timespec="seconds")


def _symbol(cfg: AppConfig, wanted: str | None) -> str:
    if wanted:
        if wanted not in cfg.symbols:
            raise TrainingError(f"--symbol {wanted} is not in the input (it holds {', '.join(cfg.symbols)})")
        return wanted
    if len(cfg.symbols) != 1:
        raise TrainingError(f"the input holds {', '.join(cfg.symbols)}: say which with --symbol (one model per market)")
    return cfg.symbols[0]


def load_dataset(inputs: Sequence[BacktestInput], workdir: Path, *, config_path: str | None = None,
                 overrides: dict | None = None, symbol: str | None = None, data_source: str | None = None,
                 progress: Callable[[str], None] | None = None) -> tuple[Dataset, list[BacktestInput], AppConfig]:
    """The inputs' samples as one dataset, and each input as recordings in ``workdir`` (for backtests)."""
    from actors.model_backtest import record_input

    parts, recorded, cfg = [], [], None
    for i, source in enumerate(inputs):
        if progress:
            progress(f"input {i + 1}/{len(inputs)}: reading {source.kind} {source.path or source.start or ''}")
        rec = record_input(source, workdir / f"input-{i}", config_path=config_path, overrides=overrides)
        cfg, _ = backtest_config(rec, config_path, overrides, workdir=workdir / f"import-{i}")
        events = read_events(cfg, rec)
        sym = _symbol(cfg, symbol)
        tick = cfg.feed.simulator.tick_size if source.kind == "simulator" else tick_size_for(sym, cfg.feed.simulator.tick_size)
        kind = {"simulator": "simulator", "es": "cme_es", "profit_csv": "profit_csv"}.get(source.kind, "replay")
        try:
            parts.append(build_dataset(events, sym, tick, cfg.training.label,
                                       decision_every_ns=int(cfg.hmarl.decision_every_ms * NS_PER_MS),
                                       vector_every_ns=int(cfg.features.vector_every_ms * NS_PER_MS),
                                       costs=cfg.execution.exchange.costs, source=data_source or kind, input_name=str(i)))
        except ValueError as e:
            raise TrainingError(f"input {i + 1} ({source.kind}): {e}") from None
        recorded.append(rec)
    try:
        return concat(parts), recorded, cfg
    except ValueError as e:
        raise TrainingError(str(e)) from None


def verdict(cv: CVResult) -> str:
    """One sentence: what the pooled out-of-sample figures say the model is worth."""
    s = cv.overall["scores"]
    lo, hi = s.get("auc_ci") or [float("nan")] * 2
    base = cv.overall["baselines"]["majority"]["log_loss"]
    ll = s["log_loss"]
    skill = "no skill distinguishable from chance" if not lo > 0.5 else "some ranking skill"
    vs = "better" if ll < base else "no better"
    return (f"out-of-sample AUC {s['auc']:.3f} (95 % CI {lo:.3f}-{hi:.3f}): {skill}; log loss {ll:.4f}, "
            f"{vs} than always predicting the training up rate ({base:.4f})")


def _fold_windows(cv: CVResult, ds: Dataset) -> list[tuple[int, int]]:
    """Each test fold's span of sample times, end exclusive (one decision interval after the last)."""
    step = int(ds.meta.get("decision_every_ns") or NS_PER_S)
    return [(f["test_start_ns"], f["test_last_ns"] + step) for f in cv.folds]


def run_fold_backtests(cv: CVResult, ds: Dataset, recorded: Sequence[BacktestInput], workdir: Path, *,
                       config_path: str | None, overrides: dict | None, meta: dict[str, Any],
                       progress: bool = False) -> list[dict[str, Any]]:
    """The model of each walk-forward fold alone through the backtest engine on its test window."""
    from actors.model_backtest import fold_backtests

    if cv.scheme["scheme"] != "walk_forward" or len(recorded) != 1:
        return [{"fold": f["fold"], "error": "backtests per fold need walk-forward folds over one input"}
                for f in cv.folds]
    dirs = []
    fold_meta = {**meta, "data_source": "replay"}  # the backtest replays the recorded input: the same market
    for k, model in enumerate(cv.models):
        d = workdir / f"fold-model-{k}"
        reg.save_model(d, f"fold-{k}", model, fold_meta, replace=True)
        dirs.append(d)
    results = fold_backtests(recorded[0], _fold_windows(cv, ds), dirs, config_path=config_path, overrides=overrides,
                             progress=progress)
    return [{**r, "fold": k} for k, r in enumerate(results)]


def _card(ds: Dataset, cfg: TrainingConfig, fit_cfg: FitConfig, cv: CVResult, seconds: float,
          tuning: dict | None, backtest: list[dict]) -> dict[str, Any]:
    windows = _fold_windows(cv, ds)
    folds = [{**f, "test_window": f"{_iso(a)} - {_iso(b)}"} for f, (a, b) in zip(cv.folds, windows)]
    text = verdict(cv)
    nets = [b["net_pnl"] for b in backtest if b.get("error") is None and b.get("net_pnl") is not None]
    if nets:
        text += (f"; alone through the backtest engine, net R$ {sum(nets):+,.2f} after B3 fees over "
                    f"{len(nets)} test folds ({', '.join(f'{x:+,.2f}' for x in nets)})")
    return {"verdict": text, "data": {**ds.summary(), "inputs": ds.meta.get("inputs"),
                                             "events": ds.meta.get("events"), "trades": ds.meta.get("trades")},
            "label": ds.meta.get("label"), "decision_every_ns": ds.meta.get("decision_every_ns"),
            "cv": {"scheme": cv.scheme, "folds": folds, "overall": cv.overall, "fold_log_loss": cv.fold_log_loss},
            "recipe": dataclasses.asdict(fit_cfg), "tuning": tuning, "backtest": backtest,
            "training_seconds": round(seconds, 3), "code_version": reg.code_version(),
            "xgboost_version": xgb.__version__, "bootstrap": cfg.bootstrap}


def train(inputs: Sequence[BacktestInput], *, model_dir: str | Path | None, name: str | None = None,
          config_path: str | None = None, overrides: dict | None = None, symbol: str | None = None,
          data_source: str | None = None, trials: int = 0, address: str | None = None, backtest: bool | None = None,
          replace: bool = False, dataset: Dataset | None = None, save_dataset: str | None = None,
          progress: Callable[[str], None] | None = None, bar: bool = False) -> TrainReport:
    """The whole pipeline. ``model_dir`` None: validate only (nothing written). ``backtest`` None:
    ``training.backtest``."""
    started = time.monotonic()
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="qt-train-") as tmp:
        work = Path(tmp)
        if dataset is None:
            ds, recorded, cfg = load_dataset(inputs, work, config_path=config_path, overrides=overrides,
                                             symbol=symbol, data_source=data_source, progress=say)
        else:
            from pipelines.config import load_config

            ds, recorded, cfg = dataset, [], load_config(config_path, overrides=overrides)
        tcfg = cfg.training
        backtest = tcfg.backtest if backtest is None else backtest
        if save_dataset:
            ds.save(save_dataset)
        s = ds.summary()
        say(f"dataset: {s['samples']} samples, {s['labelled']} labelled ({s['up']} up, {s['down']} down, "
            f"{s['dead_zone']} in the dead zone of {ds.meta['label']['dead_zone_ticks']:g} ticks), {s['start']} to {s['end']}")
        n_folds = tcfg.cv.n_splits + 1 if tcfg.cv.scheme == "walk_forward" else tcfg.cv.n_groups
        try:
            check_trainable(ds, leak_auc=tcfg.leak_auc, min_samples=tcfg.cv.min_train * 2 + n_folds)
            folds = make_folds(ds.t0, ds.t1, tcfg.cv)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        fit_cfg, tuning, fold_cfgs = tcfg.fit, None, None
        if trials > 0:
            fit_cfg, fold_cfgs, tuning = nested_tuning(ds, folds, cfg, trials, address=address, say=say, bar=bar)
        say(f"cross-validation: {len(folds)} {tcfg.cv.scheme} folds")
        try:
            cv = cross_validate(ds, fit_cfg, tcfg.cv, consensus_threshold=cfg.hmarl.threshold, n_boot=tcfg.bootstrap,
                                seed=tcfg.fit.seed, folds=folds, keep_models=backtest, fold_cfgs=fold_cfgs,
                                on_fold=lambda k, n: say(f"fold {k}/{n} done"))
        except ValueError as e:
            raise TrainingError(str(e)) from None
        meta = _model_meta(ds, cfg)
        backtests = []
        if backtest and recorded:
            say("backtest of the model alone on each test fold")
            backtests = run_fold_backtests(cv, ds, recorded, work, config_path=config_path, overrides=overrides,
                                           meta=meta, progress=bar)
        report = TrainReport(None, None, cv, ds, tuning=tuning, backtest=backtests)
        if model_dir is None:
            report.seconds = time.monotonic() - started
            return report
        say("final fit on every sample")
        try:
            final = fit_model(ds.X, ds.y, ds.t0, ds.t1, fit_cfg, ds.feature_names)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        seconds = time.monotonic() - started
        meta["card"] = _card(ds, tcfg, fit_cfg, cv, seconds, tuning, backtests)
        name = name or f"{ds.meta['instrument_root'].lower()}-{from_ns(int(ds.t0.max())):%Y%m%d-%H%M}"
        try:
            champion = reg.champion(model_dir)
            meta = reg.save_model(model_dir, name, final, meta, replace=replace)
        except (ValueError, FileExistsError) as e:
            raise TrainingError(str(e)) from None
        report.name, report.meta = name, meta
        report.decision = decide(model_dir, name, champion, ds, cv, folds, cfg)
        report.seconds = time.monotonic() - started
        return report


def nested_tuning(ds: Dataset, folds: list, cfg: AppConfig, trials: int, *, address: str | None,
                  say: Callable[[str], None], bar: bool) -> tuple[FitConfig, list[FitConfig], dict[str, Any]]:
    """Hyper-parameters are fitted like everything else: inside each training fold only. Each
    fold's recipe is tuned by a purged walk-forward CV of that fold's training samples (``INNER_SPLITS``
    folds), so its test samples never choose it; a fold too small for that keeps ``training.fit``.
    The recipe of the final model is tuned on every sample. Returns (final recipe, per-fold recipes,
    the card's tuning record)."""
    import ray

    from actors.tune import tune_model, tune_summary

    tcfg = cfg.training
    inner = dataclasses.replace(tcfg.cv, scheme="walk_forward", n_splits=INNER_SPLITS)
    started = not ray.is_initialized()
    if started:  # one Ray session for every tuning run
        ray.init(**({"address": address} if address else {"address": "local", "include_dashboard": False}),
                 log_to_driver=False)
    try:
        fold_cfgs, per_fold = [], []
        for k, fold in enumerate(folds):
            say(f"tuning fold {k + 1}/{len(folds)}: {trials} trials on its {len(fold.train)} training samples")
            try:
                r = tune_model(ds.subset(fold.train), tcfg.fit, inner, trials, seed=tcfg.fit.seed + k,
                               consensus_threshold=cfg.hmarl.threshold, progress=bar)
            except ValueError as e:  # too few samples for the inner folds
                fold_cfgs.append(tcfg.fit)
                per_fold.append({"fold": k, "recipe": "training.fit (not tuned)", "why": str(e).splitlines()[0]})
                continue
            fold_cfgs.append(r.best)
            per_fold.append({"fold": k, "recipe": dataclasses.asdict(r.best), "inner_cv_log_loss": r.best_score})
        say(f"tuning the final recipe: {trials} trials on all {len(ds.y)} samples")
        final = tune_model(ds, tcfg.fit, tcfg.cv, trials, seed=tcfg.fit.seed, consensus_threshold=cfg.hmarl.threshold,
                           progress=bar)
    finally:
        if started:
            ray.shutdown()
    return final.best, fold_cfgs, {**tune_summary(final), "per_fold": per_fold, "inner_splits": INNER_SPLITS,
                                   "scheme": "nested: each fold's recipe tuned on its training samples only"}


def _model_meta(ds: Dataset, cfg: AppConfig) -> dict[str, Any]:
    """What the ML voter reads (pipelines.alpha.ml.MLModel)."""
    return {"feature_names": list(ds.feature_names), "feature_hash": ds.meta["feature_hash"],
            "horizon_ns": ds.meta["label"]["horizon_ns"], "label": ds.meta["label"],
            "instrument_root": ds.meta["instrument_root"], "data_source": ds.meta["data_source"],
            "symbols": sorted(set(ds.frame["symbol"])), "created_ts": int(ds.frame["t0"].max()),
            "training_window": {"start_ns": int(ds.t0.min()), "end_ns": int(ds.t0.max()), "rows": int(len(ds.y))}}


def decide(model_dir: str | Path, name: str, champion: dict | None, ds: Dataset, cv: CVResult, folds: list,
           cfg: AppConfig) -> dict[str, Any]:
    """Promote ``name`` over ``champion`` by the rule of ``training.promotion``, on the same folds."""
    rule = cfg.training.promotion
    if champion is None:
        decision = {"promote": True, "why": "there was no champion", "rule": "the first model is the champion"}
    elif not (champion.get("card") or {}).get("recipe"):
        decision = {"promote": True, "rule": "a champion without a model card has no out-of-sample record",
                    "why": f"champion {champion.get('name')} was trained before the pipeline (no card)"}
        reg.promote(model_dir, name)
    else:
        recipe = FitConfig(**champion["card"]["recipe"])
        theirs = cross_validate(ds, recipe, cfg.training.cv, consensus_threshold=cfg.hmarl.threshold, n_boot=0,
                                seed=cfg.training.fit.seed, folds=folds)
        decision = compare(theirs.fold_log_loss, cv.fold_log_loss, min_improvement=rule.min_improvement,
                           min_fold_wins=rule.min_fold_wins)
        decision["champion"] = champion.get("name")
        decision["why"] = (f"on the same {decision['folds']} folds the challenger's mean log loss is "
                           f"{decision['challenger_mean']:.5f} vs the champion's recipe {decision['champion_mean']:.5f} "
                           f"(improvement {decision['improvement']:+.5f}), lower on {decision['fold_wins']} folds")
        if decision["promote"]:
            reg.promote(model_dir, name)
    reg.set_status(model_dir, name, "champion" if decision["promote"] else "rejected", decision)
    return decision


def recent_days(root: str | Path, days: int) -> BacktestInput:
    """The last ``days`` recorded dates under ``root`` as one recordings input."""
    dates = sorted({p.name[len("date="):] for p in Path(root).glob("*/symbol=*/date=*") if p.is_dir()})
    if not dates:
        raise TrainingError(f"no recordings under {root} (<kind>/symbol=<SYM>/date=YYYY-MM-DD)")
    chosen = dates[-days:]
    return BacktestInput("recordings", path=str(root), start=chosen[0], end=chosen[-1])

