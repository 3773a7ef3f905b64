"""Hyper-parameter search of the ML model: Ray Tune runs the trials, Optuna proposes the parameters.

A trial is one set of the XGBoost recipe's hyper-parameters (fields of
:class:`~pipelines.training.config.FitConfig`, the rest taken from ``base``), scored by the purged
cross-validation of :func:`pipelines.training.evaluate.cross_validate`: the mean test log loss over
the folds, lower is better. That score is the only objective; there is no held-out test set here,
so the winner's score is optimistic by the number of sets tried, which is why every trial is kept,
in the order Optuna proposed them, for the model card (:func:`tune_summary`).

On Ray: each trial asks for 1 CPU, so a cluster runs as many trials at once as it has CPUs, on any
node; the dataset and the folds (made once, here, so a bad CV setting fails before any trial)
reach the trials through the object store (``tune.with_parameters``), not pickled per trial.
Trial actors are reused: a fresh worker process per trial would spend longer starting and
importing XGBoost than a small dataset's whole cross-validation takes. (Tune then gives the next
trial to an actor that just finished rather than wait for one still starting, so trials shorter
than an actor's start may run on fewer actors than there are CPUs.) A trial's score depends
on its parameters only (XGBoost on one thread, ``base.seed``); which parameters Optuna proposes
after its first random ones depends on which trials finished first when several run at once,
so the sets tried are reproducible with ``max_concurrent=1`` only.

Ray is used as found: a running session; else ``address``; else a local one, shut down after.
Tune's experiment state goes to a temporary directory removed after the run (nothing in the
repository or ``~/ray_results``), its console output is off, and a tqdm bar counts the trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from pipelines.training.config import CVConfig, FitConfig
from pipelines.training.dataset import Dataset
from pipelines.training.evaluate import cross_validate, make_folds

METRIC = "cv_log_loss"
# name -> (kind, low, high), both ends included; kind: int | uniform | loguniform
DEFAULT_SPACE: dict[str, tuple[str, float, float]] = {
    "max_depth": ("int", 2, 6),
    "eta": ("loguniform", 0.01, 0.3),
    "min_child_weight": ("loguniform", 1.0, 200.0),
    "subsample": ("uniform", 0.5, 1.0),
    "colsample_bytree": ("uniform", 0.5, 1.0),
    "reg_lambda": ("loguniform", 0.1, 10.0),
}
_KINDS = ("int", "uniform", "loguniform")


@dataclass
class TuneResult:
    best: FitConfig  # base with the best trial's parameters
    best_score: float  # its mean fold test log loss
    best_trial: int
    trials: list[dict[str, Any]]  # {trial, params, cv_log_loss, fold_log_loss, node, error}, in trial order
    search_space: dict[str, tuple[str, float, float]]
    seed: int


def check_space(space: dict[str, tuple[str, float, float]]) -> dict[str, tuple[str, float, float]]:
    """The search space, checked: numeric FitConfig fields, a known kind, low < high inside the
    field's bounds (low > 0 for loguniform). ValueError naming the first bad entry."""
    if not space:
        raise ValueError("search space is empty")
    fields = {f.name: f for f in dataclasses.fields(FitConfig)}
    types = {n: f.type if isinstance(f.type, str) else f.type.__name__ for n, f in fields.items()}
    out = {}
    for name, spec in space.items():
        f = fields.get(name)
        if f is None or types[name] not in ("int", "float"):
            raise ValueError(f"search space: {name!r} is not a numeric FitConfig field "
                             f"({', '.join(n for n, t in types.items() if t in ('int', 'float'))})")
        try:
            kind, lo, hi = spec
            lo, hi = float(lo), float(hi)
        except (TypeError, ValueError):
            raise ValueError(f"search space: {name} must be (kind, low, high), got {spec!r}") from None
        if kind not in _KINDS:
            raise ValueError(f"search space: {name} kind must be one of {', '.join(_KINDS)}, got {kind!r}")
        if kind == "int" and not (lo.is_integer() and hi.is_integer()):
            raise ValueError(f"search space: {name} is an integer field, its range must be whole numbers, "
                             f"got [{lo:g}, {hi:g}]")
        if (kind == "int") != (types[name] == "int"):
            raise ValueError(f"search space: {name} is {'an integer' if types[name] == 'int' else 'a float'} field, "
                             f"kind {kind!r} does not fit")
        bound_lo, bound_hi = f.metadata.get("lo"), f.metadata.get("hi")
        if not (lo < hi) or (kind == "loguniform" and lo <= 0) or (bound_lo is not None and lo < bound_lo) \
                or (bound_hi is not None and hi > bound_hi):
            raise ValueError(f"search space: {name} range [{lo:g}, {hi:g}] must have low < high"
                             f"{', low > 0' if kind == 'loguniform' else ''} and lie in [{bound_lo}, {bound_hi}]")
        out[name] = (kind, int(lo), int(hi)) if kind == "int" else (kind, lo, hi)
    return out


def _domains(space: dict[str, tuple[str, float, float]]) -> dict[str, Any]:
    from ray import tune

    make = {"int": lambda lo, hi: tune.randint(lo, hi + 1),  # randint excludes its upper end
            "uniform": tune.uniform, "loguniform": tune.loguniform}
    return {name: make[kind](lo, hi) for name, (kind, lo, hi) in space.items()}


def _trial(config: dict[str, Any], *, ds: Dataset, base: FitConfig, cv: CVConfig, folds: list,
           consensus_threshold: float, seed: int) -> None:
    """One Tune trial, on whichever node Ray put it: the purged CV of ``base`` with ``config``."""
    import ray
    from ray import tune

    result = cross_validate(ds, dataclasses.replace(base, **config), cv, consensus_threshold=consensus_threshold,
                            n_boot=0, seed=seed, folds=folds)
    tune.report({METRIC: result.score, "fold_log_loss": [float(x) for x in result.fold_log_loss],
                 "node": ray.get_runtime_context().get_node_id()})


def _first_line(e: BaseException) -> str:
    # A failed trial's error is Ray's wrapper (with the remote traceback); its cause is what was raised.
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


@contextlib.contextmanager
def _quiet_tune():
    """Tune's console tables, INFO lines and automatic CSV/TensorBoard loggers off, Optuna's INFO
    lines off, for this run only (the JSON logger is added explicitly: the result grid reads it).
    Warnings and failed trials' errors still show."""
    import optuna

    saved = {k: os.environ.get(k) for k in ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "RAY_AIR_NEW_OUTPUT")}
    level = optuna.logging.get_verbosity()
    tune_log = logging.getLogger("ray.tune")
    tune_level = tune_log.level
    os.environ.update({"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tune_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        tune_log.setLevel(tune_level)
        optuna.logging.set_verbosity(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _progress_callback(total: int):
    from ray import tune

    class Bar(tune.Callback):
        """tqdm over finished trials (made at the experiment's start: Tune pickles its config first)."""

        def setup(self, **info):
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="trial", desc="tuning", dynamic_ncols=True)
            self.best = math.inf

        def on_trial_complete(self, iteration, trials, trial, **info):
            score = (trial.last_result or {}).get(METRIC)
            if score is not None and score < self.best:
                self.best = score
                self.bar.set_postfix_str(f"best log loss {score:.5f}", refresh=False)
            self._step()

        def on_trial_error(self, iteration, trials, trial, **info):
            self._step()

        def _step(self):
            self.bar.update(1)
            if self.bar.n >= total:  # closed before Tune's closing messages
                self.bar.close()

        def on_experiment_end(self, trials, **info):
            self.bar.close()

    return Bar()


def tune_model(ds: Dataset, base: FitConfig, cv: CVConfig, n_trials: int, *, seed: int = 0,
               consensus_threshold: float = 0.15, address: str | None = None, max_concurrent: int | None = None,
               progress: bool = True, search_space: dict[str, tuple[str, float, float]] | None = None) -> TuneResult:
    """``n_trials`` parameter sets proposed by Optuna (seeded), each scored by purged CV on Ray Tune,
    ``max_concurrent`` at once (None: the cluster's CPUs when the run starts). ValueError (one
    line) for bad arguments, folds that cannot be made, or when every trial failed."""
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials!r}")
    if max_concurrent is not None and (isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int)
                                       or max_concurrent < 1):
        raise ValueError(f"max_concurrent must be an integer >= 1 or None, got {max_concurrent!r}")
    space = check_space(DEFAULT_SPACE if search_space is None else search_space)
    folds = make_folds(ds.t0, ds.t1, cv)

    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        started = True
    try:
        if max_concurrent is None:
            # As many trials at once as the cluster has CPUs, asked for from the start: Tune then starts
            # that many trial actors together, one per CPU, so every node gets trials even when a trial is
            # shorter than starting an actor (else the first actor, reused, would take them all).
            max_concurrent = max(1, min(n_trials, int(ray.cluster_resources().get("CPU", 1))))
        trainable = tune.with_resources(
            tune.with_parameters(_trial, ds=ds, base=base, cv=cv, folds=folds,
                                 consensus_threshold=consensus_threshold, seed=seed),
            {"cpu": 1})
        callbacks = [JsonLoggerCallback()] + ([_progress_callback(n_trials)] if progress else [])
        with _quiet_tune(), tempfile.TemporaryDirectory(prefix="qt-tune-") as storage:
            tuner = tune.Tuner(
                trainable, param_space=_domains(space),
                tune_config=tune.TuneConfig(search_alg=OptunaSearch(seed=seed, metric=METRIC, mode="min"),
                                            num_samples=n_trials, max_concurrent_trials=max_concurrent,
                                            reuse_actors=True),
                run_config=tune.RunConfig(name="tune", storage_path=storage, verbose=0, callbacks=callbacks,
                                          failure_config=tune.FailureConfig(max_failures=0)))
            grid = tuner.fit()
            results = [grid[i] for i in range(len(grid))]  # in trial creation order
    finally:
        if started:
            ray.shutdown()
    return _collect(results, base, space, seed)


def _collect(results: list, base: FitConfig, space: dict[str, tuple[str, float, float]], seed: int) -> TuneResult:
    trials = []
    for i, r in enumerate(results):
        params = {k: (int(v) if space[k][0] == "int" else float(v)) for k, v in (r.config or {}).items() if k in space}
        metrics = r.metrics or {}
        error = _first_line(r.error) if r.error is not None else None
        if error is None and metrics.get(METRIC) is None:
            error = "the trial reported no score"
        trials.append({"trial": i, "params": params,
                       METRIC: None if error else float(metrics[METRIC]),
                       "fold_log_loss": None if error else [float(x) for x in metrics["fold_log_loss"]],
                       "node": metrics.get("node"), "error": error})
    ok = [t for t in trials if t["error"] is None]
    if not ok:
        raise ValueError(f"all {len(trials)} tuning trials failed; the first: {trials[0]['error'] if trials else '?'}")
    best = min(ok, key=lambda t: t[METRIC])  # the first of equal scores
    return TuneResult(dataclasses.replace(base, **best["params"]), best[METRIC], best["trial"], trials, space, seed)


def tune_summary(result: TuneResult) -> dict[str, Any]:
    """What the model card records of the search (JSON-ready): the space, every trial, the winner."""

    def num(x):
        return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x

    return {
        "objective": "mean test log loss of the purged cross-validation folds (lower is better)",
        "searcher": "optuna (ray tune)", "seed": result.seed, "n_trials": len(result.trials),
        "failed": sum(t["error"] is not None for t in result.trials),
        "search_space": {k: list(v) for k, v in result.search_space.items()},
        "best_trial": result.best_trial, "best_score": num(result.best_score),
        "best_params": {k: getattr(result.best, k) for k in result.search_space},
        "trials": [{"trial": t["trial"], "params": dict(t["params"]), METRIC: num(t[METRIC]),
                    "fold_log_loss": None if t["fold_log_loss"] is None else [num(x) for x in t["fold_log_loss"]],
                    "node": t["node"], "error": t["error"]} for t in result.trials],
    }
