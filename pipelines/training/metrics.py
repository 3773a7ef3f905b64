"""Scores of a direction model's out-of-sample probabilities, with their uncertainty and the
baselines it must beat.

``y`` is the label (1 up, 0 down; unlabelled samples are dropped before), ``p`` the predicted
probability of up, both in time order. AUC says whether the model ranks ups above downs, log
loss and Brier whether its probabilities are right, the hit rate whether acting only on
confident predictions (``p >= threshold`` up, ``p <= 1 - threshold`` down) would be right, and
the coverage how often it would act.

Samples overlap in time (a label window spans several samples) and the market has regimes, so
resampling samples independently understates how much a score could change on another stretch
of tape. The confidence intervals come from a moving-block bootstrap in time order: blocks of
``ceil(sqrt(n))`` consecutive samples keep that dependence inside each block.

A model is only worth something against the baselines of :func:`baselines`: the training fold's
up rate as a constant (what the label distribution alone gives) and the sign of the last move
(what the simplest momentum rule gives). Everything returned is plain floats, ready for JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def _yp(y, p, *, probability: bool = True) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"y and p must be 1-d of the same length, got {y.shape} and {p.shape}")
    if not len(y):
        raise ValueError("no samples to score")
    bad = np.flatnonzero((y != 0) & (y != 1))
    if len(bad):
        raise ValueError(f"y must be 0 or 1, got {y[bad[0]]!r} at row {bad[0]}")
    bad = np.flatnonzero(~np.isfinite(p) | ((p < 0) | (p > 1) if probability else False))
    if len(bad):
        what = "a probability in [0, 1]" if probability else "a finite score"
        raise ValueError(f"p must be {what}, got {p[bad[0]]!r} at row {bad[0]}")
    return y, p


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of each distinct value's last copy
    return (last - (counts - 1) / 2.0)[inverse]


def auc(y, p) -> float:
    """ROC AUC: the chance a random up scores above a random down, ties counted half; NaN with
    one class. ``p`` may be any finite score (a raw feature too)."""
    y, p = _yp(y, p, probability=False)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    r = _average_ranks(p)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def log_loss(y, p, eps: float = 1e-12) -> float:
    """Mean negative log likelihood, with ``p`` clipped to [eps, 1 - eps] so a certain miss is finite."""
    y, p = _yp(y, p)
    q = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def brier(y, p) -> float:
    """Mean squared error of the probability."""
    y, p = _yp(y, p)
    return float(np.mean((p - y) ** 2))


def hit_rate(y, p, p_threshold: float) -> tuple[float, float]:
    """(hit rate, coverage): of the samples predicted up (``p >= p_threshold``) or down
    (``p <= 1 - p_threshold``), the fraction right (NaN when none), and their fraction of all.

    A prediction of exactly 0.5 has no direction and is never acted on.
    """
    y, p = _yp(y, p)
    if not 0.5 <= p_threshold <= 1:
        raise ValueError(f"p_threshold must be in [0.5, 1], got {p_threshold!r}")
    up = (p >= p_threshold) & (p > 0.5)
    down = (p <= 1 - p_threshold) & (p < 0.5)
    acted = int(up.sum() + down.sum())
    if acted == 0:
        return math.nan, 0.0
    right = int((up & (y == 1)).sum() + (down & (y == 0)).sum())
    return right / acted, acted / len(y)


def block_bootstrap_ci(y, p, metric: Callable[[np.ndarray, np.ndarray], float], n_boot: int = 1000,
                       block: int | None = None, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """(low, high): the ``alpha`` two-sided percentile interval of ``metric(y, p)`` over
    ``n_boot`` moving-block resamples in time order.

    Each resample joins blocks of ``block`` consecutive samples (default ceil(sqrt(n))) starting
    at uniform random positions, cut to n. Resamples where the metric is undefined (NaN, e.g.
    one class only) are skipped; fewer than 100 valid ones (or ``n_boot`` < 100, e.g. 0 while
    tuning) give (nan, nan).
    """
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or y.shape != p.shape or not len(y):
        raise ValueError(f"y and p must be 1-d of the same non-zero length, got {y.shape} and {p.shape}")
    n = len(y)
    block = math.ceil(math.sqrt(n)) if block is None else block
    if not block >= 1:
        raise ValueError(f"block must be >= 1, got {block!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not n_boot >= 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot!r}")
    if n_boot < 100:  # too few resamples for a 95 % interval (0: none asked, e.g. while tuning)
        return math.nan, math.nan
    block = min(int(block), n)
    n_blocks = math.ceil(n / block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - block + 1, size=(int(n_boot), n_blocks))
    values = []
    for row in starts:
        idx = (row[:, None] + np.arange(block)).ravel()[:n]
        v = metric(y[idx], p[idx])
        if v is not None and math.isfinite(v):
            values.append(v)
    if len(values) < 100:
        return math.nan, math.nan
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def score_table(y, p, p_threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> dict:
    """auc, log_loss, brier, hit_rate, coverage, n, up_rate, and ``<metric>_ci`` [low, high]
    for auc, log_loss, brier and hit_rate (the same resamples for each: same seed)."""
    y, p = _yp(y, p)
    hit, coverage = hit_rate(y, p, p_threshold)
    metrics: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "auc": auc, "log_loss": log_loss, "brier": brier,
        "hit_rate": lambda yy, pp: hit_rate(yy, pp, p_threshold)[0]}
    out: dict = {"auc": auc(y, p), "log_loss": log_loss(y, p), "brier": brier(y, p), "hit_rate": float(hit),
                 "coverage": float(coverage), "n": len(y), "up_rate": float(y.mean())}
    for name, fn in metrics.items():
        out[f"{name}_ci"] = list(block_bootstrap_ci(y, p, fn, n_boot=n_boot, seed=seed))
    return out


def calibration_curve(y, p, n_bins: int = 10) -> list[dict]:
    """Per uniform bin of ``p`` on [0, 1] (p = 1 in the last): bin_low, bin_high, mean_p, frac_up,
    n; empty bins left out."""
    y, p = _yp(y, p)
    if not (isinstance(n_bins, (int, np.integer)) and n_bins >= 1):
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    out = []
    for k in np.unique(b):
        m = b == k
        out.append({"bin_low": float(k / n_bins), "bin_high": float((k + 1) / n_bins),
                    "mean_p": float(p[m].mean()), "frac_up": float(y[m].mean()), "n": int(m.sum())})
    return out


def baselines(y_train, y_test, last_return_test, *, p_threshold: float = 0.5, n_boot: int = 200,
              seed: int = 0) -> dict:
    """Score tables of the two predictions a model must beat on a test fold.

    "majority": the training fold's up rate as a constant probability (fitted in the training
    fold; it ranks nothing, so its AUC is 0.5). "last_return_sign": 1 after an up move, 0 after a
    down move, 0.5 after none (log loss clips the certain ones).
    """
    y_train = np.asarray(y_train, dtype=np.float64)
    if y_train.ndim != 1 or not len(y_train) or ((y_train != 0) & (y_train != 1)).any():
        raise ValueError("y_train must be a non-empty 1-d array of 0 and 1")
    r = np.asarray(last_return_test, dtype=np.float64)
    if r.shape != np.shape(y_test):
        raise ValueError(f"last_return_test and y_test must have the same shape, got {r.shape} "
                         f"and {np.shape(y_test)}")
    bad = np.flatnonzero(~np.isfinite(r))
    if len(bad):
        raise ValueError(f"last_return_test has a NaN or infinite value at row {bad[0]}")
    majority = np.full(r.shape, y_train.mean())
    sign = np.where(r > 0, 1.0, np.where(r < 0, 0.0, 0.5))
    return {"majority": score_table(y_test, majority, p_threshold, n_boot, seed),
            "last_return_sign": score_table(y_test, sign, p_threshold, n_boot, seed)}
