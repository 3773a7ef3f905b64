"""What a model recipe is worth out of sample: purged cross-validation with metrics, intervals and baselines.

:func:`cross_validate` fits the recipe (:func:`pipelines.training.fit.fit_model`) on each fold's
purged training samples only and scores it on the fold's test samples: AUC, log loss, Brier, the
hit rate where the model alone would trade, each with a moving-block bootstrap interval, beside two
baselines fitted the same way (the training fold's up rate; the sign of the last move). The fold
scores are what tuning minimises (:attr:`CVResult.score`, the mean test log loss) and what a
challenger is compared on (:func:`compare`), fold by fold on the same folds.

Overall figures pool the test predictions: in walk-forward each sample is tested once; in CPCV a
sample is tested in several folds and its pooled prediction is their mean.

The decision threshold: the model alone, as the only voter, gives a consensus score of
``(2p - 1)|2p - 1|``, so it trades when ``|2p - 1| > sqrt(hmarl.threshold)``: the hit rate is
measured at ``p_threshold = (1 + sqrt(threshold)) / 2`` (0.694 at the default 0.15).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from pipelines.training import metrics as tm
from pipelines.training.config import CVConfig, FitConfig
from pipelines.training.cv import Fold, combinatorial_purged, purged_walk_forward
from pipelines.training.dataset import Dataset
from pipelines.training.fit import fit_model

NS_PER_S = 1_000_000_000


def p_threshold(consensus_threshold: float) -> float:
    return (1.0 + math.sqrt(consensus_threshold)) / 2.0


def make_folds(t0: np.ndarray, t1: np.ndarray, cv: CVConfig) -> list[Fold]:
    embargo = int(cv.embargo_s * NS_PER_S)
    if cv.scheme == "cpcv":
        return combinatorial_purged(t0, t1, cv.n_groups, cv.n_test_groups, embargo, min_train=cv.min_train)
    return purged_walk_forward(t0, t1, cv.n_splits, embargo, min_train=cv.min_train)


@dataclass
class CVResult:
    scheme: dict[str, Any]
    folds: list[dict[str, Any]]  # per fold: window, sizes, purged, scores, baselines, trees
    overall: dict[str, Any]  # pooled test predictions: scores with intervals, baselines, calibration curve
    fold_log_loss: list[float]
    predictions: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # t0, y, p (pooled)
    models: list = field(repr=False, default_factory=list)  # each fold's FittedModel (keep_models)

    @property
    def score(self) -> float:
        """Mean test log loss over the folds: lower is better (tuning's objective)."""
        return float(np.mean(self.fold_log_loss))


def cross_validate(ds: Dataset, fit_cfg: FitConfig, cv: CVConfig, *, consensus_threshold: float = 0.15,
                   n_boot: int = 500, seed: int = 0, folds: list[Fold] | None = None,
                   on_fold: Callable[[int, int], None] | None = None, keep_models: bool = False,
                   fold_cfgs: Sequence[FitConfig] | None = None) -> CVResult:
    """Fit ``fit_cfg`` on every fold of ``ds`` (``folds``: given, else :func:`make_folds`);
    ``fold_cfgs``: a recipe per fold instead (each tuned on its fold's training samples only)."""
    X, y, t0, t1 = ds.X, ds.y, ds.t0, ds.t1
    last = ds.labelled()["last_return_ticks"].to_numpy(np.float64)
    folds = make_folds(t0, t1, cv) if folds is None else folds
    thr = p_threshold(consensus_threshold)
    rows, losses, models = [], [], []
    sums, counts = np.zeros(len(y)), np.zeros(len(y))
    for k, fold in enumerate(folds):
        tr, te = fold.train, fold.test
        if len(np.unique(y[tr])) < 2:
            raise ValueError(f"fold {k}: its training samples hold one label class only")
        recipe = fit_cfg if fold_cfgs is None else fold_cfgs[k]
        model = fit_model(X[tr], y[tr], t0[tr], t1[tr], recipe, ds.feature_names)
        p = model.predict(X[te])
        if keep_models:
            models.append(model)
        sums[te] += p
        counts[te] += 1
        scores = tm.score_table(y[te], p, thr, n_boot=n_boot, seed=seed + k)
        losses.append(scores["log_loss"])
        rows.append({"fold": k, "groups": list(fold.groups), "train": len(tr), "test": len(te),
                     "purged": fold.purged, "embargoed": fold.embargoed,
                     "test_start_ns": int(fold.test_start_ns), "test_end_ns": int(fold.test_end_ns),
                     "test_last_ns": int(t0[te].max()),  # the last test sample (test_end_ns: its label's end)
                     "train_end_ns": int(t0[tr].max()), "trees": model.best_iteration, "parts": model.sizes,
                     "scores": scores, "raw_brier": tm.brier(y[te], model.predict_raw(X[te])),
                     "baselines": tm.baselines(y[tr], y[te], last[te], p_threshold=thr, n_boot=n_boot, seed=seed + k)})
        if on_fold is not None:
            on_fold(k + 1, len(folds))
    tested = counts > 0
    pooled = sums[tested] / counts[tested]
    yt, lt = y[tested], last[tested]
    overall = {"scores": tm.score_table(yt, pooled, thr, n_boot=n_boot, seed=seed),
               "baselines": tm.baselines(y[~tested] if (~tested).any() else y, yt, lt, p_threshold=thr, n_boot=n_boot, seed=seed),
               "calibration_curve": tm.calibration_curve(yt, pooled),
               "p_threshold": thr, "tested_samples": int(tested.sum()),
               "mean_fold_log_loss": float(np.mean(losses)),
               "fold_log_loss_sd": float(np.std(losses, ddof=1)) if len(losses) > 1 else 0.0}
    scheme = {"scheme": cv.scheme, "n_splits": cv.n_splits, "n_groups": cv.n_groups,
              "n_test_groups": cv.n_test_groups, "embargo_s": cv.embargo_s, "folds": len(folds),
              "purge": "training samples whose label window [t0, t1] touches a test sample's (purgedcv, "
                       "closed windows); embargo: those starting within embargo_s after a test sample's t1"}
    return CVResult(scheme, rows, overall, losses, {"t0": t0[tested], "y": yt, "p": pooled}, models)


def compare(champion: list[float], challenger: list[float], *, min_improvement: float,
            min_fold_wins: float) -> dict[str, Any]:
    """The promotion rule on per-fold test log losses of the same folds: the challenger wins when
    its mean is lower by at least ``min_improvement`` and it is lower on at least
    ``min_fold_wins`` of the folds."""
    a, b = np.asarray(champion, float), np.asarray(challenger, float)
    if len(a) != len(b) or not len(a):
        raise ValueError(f"fold scores must be of the same folds: {len(a)} vs {len(b)}")
    improvement = float(a.mean() - b.mean())
    wins = int((b < a).sum())
    promote = improvement >= min_improvement and wins >= math.ceil(min_fold_wins * len(a) - 1e-9)
    rule = (f"mean fold log loss lower by >= {min_improvement:g} and lower on >= {min_fold_wins:.0%} of "
            f"{len(a)} folds")
    return {"promote": bool(promote), "improvement": improvement, "fold_wins": wins, "folds": len(a),
            "champion_mean": float(a.mean()), "challenger_mean": float(b.mean()), "rule": rule}
