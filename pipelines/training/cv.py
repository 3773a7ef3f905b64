"""Purged walk-forward and combinatorial purged cross-validation on event time (Lopez de Prado,
AFML ch. 7 and 12), on the purgedcv library.

Samples overlap in time: sample ``i`` is taken at ``t0[i]`` and its label is decided at ``t1[i]``
(:mod:`pipelines.training.labels`). purgedcv's splitters take exactly these per-sample times
(``prediction_times`` = t0, ``evaluation_times`` = t1, the label end), cut the samples into
contiguous groups, and purge and embargo each fold's training set; this module converts our int64
ns to datetime64[ns], counts what was removed and checks the fold sizes.

Purge: a training sample whose label window ``[t0_i, t1_i]`` intersects a test sample's
``[t0_j, t1_j]`` is dropped. Our windows are closed (a label decided at ``t1`` uses the trade at
``t1``, and a trade at a test sample's ``t0`` may be in its features), while purgedcv compares
half-open ``[t0, t1)`` windows; ``purge_horizon = 1 ns`` widens each test window to
``[t0_j - 1 ns, t1_j + 1 ns)``, which on integer ns is the closed overlap ``t0_j <= t1_i and
t0_i <= t1_j``. That is exact only for non-empty windows, so ``t1 > t0`` is required (every label
is decided by a trade strictly after its sample).

Embargo: features of the samples just after a test block are built from prices inside it, so
purgedcv drops training samples whose ``t0`` lies in the closed window ``[t1_j, t1_j + embargo]``
of any test sample ``j``. A sample starting at ``t1_j`` is already purged, so for the samples
after a test block this is ``t0`` in ``(max t1, max t1 + embargo_ns]`` of the block. Samples
before a block are covered by the purge.

Walk-forward (purgedcv.WalkForwardSplit, expanding window): the last ``n_splits * (n //
(n_splits + 1))`` samples form ``n_splits`` equal test blocks, the first block (plus the
remainder of the division) is only trained on, and each block is tested on everything before it:
the honest backtest of a model refitted as data arrives. CPCV (purgedcv.CombinatorialPurgedCV)
cuts the samples into ``n_groups`` groups (the first ``n % n_groups`` one longer), tests every
choice of ``n_test_groups`` of them and trains on the rest; its folds recombine into
:func:`cpcv_paths` full backtest paths, a distribution instead of one number.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import purgedcv

# Pads each test window so purgedcv's half-open overlap becomes our closed one (module docstring).
_CLOSED = pd.Timedelta(1, "ns")


@dataclass(frozen=True)
class Fold:
    index: int
    train: np.ndarray  # sample positions, ascending
    test: np.ndarray  # sample positions, ascending
    test_start_ns: int  # min t0 of the test samples
    test_end_ns: int  # max t1 of the test samples
    purged: int  # training samples removed because their label window overlaps a test sample's
    embargoed: int  # training samples removed because they start within the embargo after a test sample's t1
    groups: tuple[int, ...]  # the contiguous groups tested


def _times(t0, t1) -> tuple[np.ndarray, np.ndarray]:
    t0, t1 = np.asarray(t0), np.asarray(t1)
    for name, a in (("t0", t0), ("t1", t1)):
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ValueError(f"{name} must be a 1-d array of integer ns, got dtype {a.dtype} shape {a.shape}")
    if len(t0) != len(t1):
        raise ValueError(f"t0 and t1 must have the same length, got {len(t0)} and {len(t1)}")
    t0, t1 = t0.astype(np.int64, copy=False), t1.astype(np.int64, copy=False)
    bad = np.flatnonzero(t1 <= t0)
    if len(bad):
        raise ValueError(f"t1 must be > t0 (a label is decided after its sample): sample {bad[0]} has "
                         f"t1 {t1[bad[0]]} <= t0 {t0[bad[0]]}")
    if len(t0) > 1 and (np.diff(t0) < 0).any():
        i = int(np.flatnonzero(np.diff(t0) < 0)[0]) + 1
        raise ValueError(f"samples must be sorted by t0: sample {i} is before sample {i - 1}")
    return t0, t1


def _check_embargo(embargo_ns) -> int:
    if not embargo_ns >= 0:
        raise ValueError(f"embargo_ns must be >= 0, got {embargo_ns!r}")
    return int(embargo_ns)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _folds(splitter, t0: np.ndarray, t1: np.ndarray, groups: list[tuple[int, ...]], min_train: int) -> list[Fold]:
    """Each split of ``splitter`` as a Fold; the purge is rerun on the fold's candidates (what the
    splitter trains on before purge and embargo) to tell purged from embargoed samples."""
    pred, evalu = t0.astype("datetime64[ns]"), t1.astype("datetime64[ns]")
    walk_forward = isinstance(splitter, purgedcv.WalkForwardSplit)
    folds = []
    for k, ((train, test), g) in enumerate(zip(splitter.split(t0), groups)):
        if walk_forward:
            candidates = np.arange(test.min(), dtype=np.int64)
        else:
            candidates = np.setdiff1d(np.arange(len(t0), dtype=np.int64), test)
        n_after_purge = len(purgedcv.purge(candidates, test, pred, evalu, purge_horizon=_CLOSED))
        if len(train) < min_train:
            raise ValueError(f"too few samples: fold {k} (test groups {list(g)}) keeps {len(train)} "
                             f"training samples after purge and embargo, need {min_train}")
        folds.append(Fold(k, train, test, int(t0[test].min()), int(t1[test].max()),
                          len(candidates) - n_after_purge, n_after_purge - len(train), g))
    return folds


def purged_walk_forward(t0, t1, n_splits: int, embargo_ns: int = 0, min_train: int = 50) -> list[Fold]:
    """Fold k tests block k + 1 (``n // (n_splits + 1)`` samples; block 0 is the rest at the
    start) and trains on everything before it (an expanding window), purged. The embargo is
    checked but removes nothing: no training sample comes after its test block."""
    t0, t1 = _times(t0, t1)
    _check_embargo(embargo_ns)
    n_splits = _check_int("n_splits", n_splits, 2)
    test_size = len(t0) // (n_splits + 1)
    if test_size == 0:
        raise ValueError(f"too few samples: {len(t0)} for {n_splits + 1} groups")
    splitter = purgedcv.WalkForwardSplit(n_splits, test_size, prediction_times=t0.astype("datetime64[ns]"),
                                         evaluation_times=t1.astype("datetime64[ns]"), purge_horizon=_CLOSED)
    return _folds(splitter, t0, t1, [(k + 1,) for k in range(n_splits)], min_train)


def combinatorial_purged(t0, t1, n_groups: int = 6, n_test_groups: int = 2, embargo_ns: int = 0,
                         min_train: int = 50) -> list[Fold]:
    """One fold per combination of ``n_test_groups`` of ``n_groups`` contiguous groups (in
    itertools order): those groups are the test set, the others, purged and embargoed, the
    training set."""
    t0, t1 = _times(t0, t1)
    embargo = _check_embargo(embargo_ns)
    n_groups, n_test_groups = _check_int("n_groups", n_groups, 2), _check_int("n_test_groups", n_test_groups, 1)
    if not n_test_groups < n_groups:
        raise ValueError(f"need 1 <= n_test_groups < n_groups, got n_test_groups={n_test_groups!r} "
                         f"n_groups={n_groups!r}")
    if len(t0) < n_groups:
        raise ValueError(f"too few samples: {len(t0)} for {n_groups} groups")
    splitter = purgedcv.CombinatorialPurgedCV(
        n_splits=n_groups, n_test_groups=n_test_groups, prediction_times=t0.astype("datetime64[ns]"),
        evaluation_times=t1.astype("datetime64[ns]"), purge_horizon=_CLOSED, embargo=pd.Timedelta(embargo, "ns"))
    return _folds(splitter, t0, t1, list(itertools.combinations(range(n_groups), n_test_groups)), min_train)


def cpcv_paths(n_groups: int, n_test_groups: int) -> int:
    """How many full backtest paths the CPCV folds make: each group is tested in
    C(N-1, k-1) folds, so the C(N, k) folds' test groups recombine into C(N, k) * k / N paths."""
    if not 1 <= n_test_groups < n_groups:
        raise ValueError(f"need 1 <= n_test_groups < n_groups, got n_test_groups={n_test_groups!r} "
                         f"n_groups={n_groups!r}")
    return math.comb(n_groups, n_test_groups) * n_test_groups // n_groups
