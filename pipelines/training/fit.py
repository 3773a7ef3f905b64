"""Fit one model on one training set: XGBoost with early stopping, then a calibration of P(up).

Everything fitted is fitted on the training samples handed in, never on what the model is scored
on: the training set is split in time into three consecutive parts,

    fit (the trees) | validation (early stopping) | calibration (isotonic or Platt)

and each earlier part is purged of samples whose label window reaches into a later part (their
labels were made from prices the later part already holds). Trees need no scaling and the model
uses every feature of the engine, so there is nothing else to fit. The calibrated P(up) is what
the coordinator weighs, so it has to mean what it says: 0.6 should come true 60 % of the time.

A :class:`FittedModel` serialises to the model's metadata (``calibration`` as numbers, no pickle)
and the booster's own file; :func:`apply_calibration` is the same mapping the ML voter applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

from pipelines.training.config import FitConfig

_EPS = 1e-6


def xgb_params(cfg: FitConfig) -> dict[str, Any]:
    return {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
            "max_depth": cfg.max_depth, "eta": cfg.eta, "min_child_weight": cfg.min_child_weight,
            "subsample": cfg.subsample, "colsample_bytree": cfg.colsample_bytree, "lambda": cfg.reg_lambda,
            "seed": cfg.seed, "nthread": 1}  # one thread: the same data and seed give the same trees


def _logit(p: np.ndarray) -> np.ndarray:
    """The booster's margin back from its probability (kept finite at 0 and 1)."""
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def apply_calibration(calibration: dict[str, Any] | None, p: np.ndarray) -> np.ndarray:
    """Calibrated P(up) from the booster's raw probabilities (the ML voter calls this too)."""
    p = np.asarray(p, np.float64)
    if not calibration or calibration.get("kind") == "none":
        return p
    if calibration["kind"] == "isotonic":
        return np.interp(p, calibration["x"], calibration["y"])
    if calibration["kind"] == "platt":
        return 1.0 / (1.0 + np.exp(-(calibration["a"] * _logit(p) + calibration["b"])))
    raise ValueError(f"unknown calibration kind {calibration.get('kind')!r}")


def _fit_calibration(kind: str, p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    if kind == "none":
        return {"kind": "none"}
    if kind == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        # Kept off 0 and 1 by half a sample: a step fitted on a few hundred samples says "certain" in its
        # tails, and one wrong certainty costs the log loss without bound.
        floor = 0.5 / (len(y) + 1)
        iso = IsotonicRegression(y_min=floor, y_max=1.0 - floor, out_of_bounds="clip").fit(p, y)
        return {"kind": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6).fit(_logit(p).reshape(-1, 1), y)  # Platt: a logistic map of the margin, unregularised
    return {"kind": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


def _before(t1: np.ndarray, idx: np.ndarray, start_ns: int) -> np.ndarray:
    """``idx`` without the samples whose label window reaches ``start_ns`` (purge)."""
    return idx[t1[idx] < start_ns]


def split_training(t0: np.ndarray, t1: np.ndarray, cfg: FitConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit, validation, calibration) index arrays of a time-sorted training set, each earlier part
    purged against the next one."""
    n = len(t0)
    n_cal = int(round(n * cfg.calibration_fraction)) if cfg.calibration != "none" else 0
    rest = np.arange(n - n_cal)
    cal = np.arange(n - n_cal, n)
    if n_cal:
        rest = _before(t1, rest, int(t0[cal[0]]))
    n_val = int(round(len(rest) * cfg.validation_fraction))
    val = rest[len(rest) - n_val:]
    fit = _before(t1, rest[:len(rest) - n_val], int(t0[val[0]])) if n_val else rest
    return fit, val, cal


@dataclass
class FittedModel:
    booster: xgb.Booster
    calibration: dict[str, Any]
    best_iteration: int  # trees kept (early stopping)
    sizes: dict[str, int]  # samples in fit / validation / calibration

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        return self.booster.inplace_predict(X, missing=np.nan, iteration_range=(0, self.best_iteration))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Calibrated P(up)."""
        return apply_calibration(self.calibration, self.predict_raw(X))


def fit_model(X: np.ndarray, y: np.ndarray, t0: np.ndarray, t1: np.ndarray, cfg: FitConfig,
              feature_names: list[str] | tuple[str, ...] | None = None) -> FittedModel:
    """Fit on one training set (rows sorted by ``t0``). ValueError (one line) when a part is too
    small or holds one class only."""
    fit, val, cal = split_training(t0, t1, cfg)
    for part, idx in (("fit", fit), ("validation", val), ("calibration", cal)):
        if part == "calibration" and cfg.calibration == "none":
            continue
        if len(idx) < 10 or len(np.unique(y[idx])) < 2:
            raise ValueError(f"the training fold's {part} part has {len(idx)} samples "
                             f"({len(np.unique(y[idx])) if len(idx) else 0} classes): too few to fit; use more data")
    names = list(feature_names) if feature_names is not None else None
    dfit = xgb.DMatrix(X[fit], label=y[fit], feature_names=names, missing=np.nan)
    dval = xgb.DMatrix(X[val], label=y[val], feature_names=names, missing=np.nan)
    booster = xgb.train(xgb_params(cfg), dfit, num_boost_round=cfg.num_boost_round, evals=[(dval, "validation")],
                        early_stopping_rounds=cfg.early_stopping_rounds, verbose_eval=False)
    best = int(booster.best_iteration) + 1
    booster = booster[:best]  # only the trees early stopping kept
    model = FittedModel(booster, {"kind": "none"}, best, {"fit": len(fit), "validation": len(val), "calibration": len(cal)})
    if cfg.calibration != "none":
        model.calibration = _fit_calibration(cfg.calibration, model.predict_raw(X[cal]), y[cal])
    return model
