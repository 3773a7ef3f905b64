"""Purged walk-forward and combinatorial purged cross-validation on event time (Lopez de Prado,
AFML ch. 7 and 12).

Samples overlap in time: sample ``i`` is taken at ``t0[i]`` and its label is decided at ``t1[i]``
(:mod:`pipelines.training.labels`). A training sample whose label window ``[t0_i, t1_i]``
intersects a test block's span ``[min t0, max t1]`` saw prices the test block is scored on, so
it is *purged*. Features of the samples just after a test block are built from the prices
inside it (rolling windows), so training samples starting within ``embargo_ns`` after a block's
end are *embargoed*. Only samples after a block are embargoed: those before it are covered by
the purge.

Walk-forward splits the samples (sorted by t0) into ``n_splits + 1`` contiguous groups of equal
count and tests each group after the first on everything before it: the honest backtest of a
model refitted as data arrives. CPCV tests every choice of ``n_test_groups`` of ``n_groups``
groups and trains on the rest, purged and embargoed around each contiguous test block; its
folds recombine into :func:`cpcv_paths` full backtest paths, a distribution instead of one number.

Written here rather than taken from purgedcv or skfolio: neither takes a per-sample label end
time (``t1``) with event-time spans the way the labels above need (they purge by a fixed count
of samples or by index), and the whole thing is a few dozen lines of numpy.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fold:
    index: int
    train: np.ndarray  # sample positions, ascending
    test: np.ndarray  # sample positions, ascending
    test_start_ns: int  # min t0 of the test samples
    test_end_ns: int  # max t1 of the test samples
    purged: int  # training samples removed because their label window overlaps a test block
    embargoed: int  # training samples removed because they start within the embargo after a test block
    groups: tuple[int, ...]  # the contiguous groups tested


def _times(t0, t1) -> tuple[np.ndarray, np.ndarray]:
    t0, t1 = np.asarray(t0), np.asarray(t1)
    for name, a in (("t0", t0), ("t1", t1)):
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ValueError(f"{name} must be a 1-d array of integer ns, got dtype {a.dtype} shape {a.shape}")
    if len(t0) != len(t1):
        raise ValueError(f"t0 and t1 must have the same length, got {len(t0)} and {len(t1)}")
    t0, t1 = t0.astype(np.int64, copy=False), t1.astype(np.int64, copy=False)
    bad = np.flatnonzero(t1 < t0)
    if len(bad):
        raise ValueError(f"t1 must be >= t0: sample {bad[0]} has t1 {t1[bad[0]]} < t0 {t0[bad[0]]}")
    return t0, t1


def _check_embargo(embargo_ns) -> int:
    if not embargo_ns >= 0:
        raise ValueError(f"embargo_ns must be >= 0, got {embargo_ns!r}")
    return int(embargo_ns)


def purge(train_idx, t0, t1, test_spans, embargo_ns: int):
    """(kept_idx, n_purged, n_embargoed): ``train_idx`` without the samples whose ``[t0, t1]``
    intersects a span ``(start, end)`` of ``test_spans`` (purged), nor those, not purged, whose t0
    lies in ``(end, end + embargo_ns]`` of a span (embargoed)."""
    t0, t1 = _times(t0, t1)
    embargo = _check_embargo(embargo_ns)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    a, b = t0[train_idx], t1[train_idx]
    purged = np.zeros(len(train_idx), bool)
    embargoed = np.zeros(len(train_idx), bool)
    for start, end in test_spans:
        purged |= (a <= end) & (b >= start)
        embargoed |= (a > end) & (a <= end + embargo)
    embargoed &= ~purged
    return train_idx[~(purged | embargoed)], int(purged.sum()), int(embargoed.sum())


def _groups(t0: np.ndarray, n: int) -> list[np.ndarray]:
    if len(t0) > 1 and (np.diff(t0) < 0).any():
        i = int(np.flatnonzero(np.diff(t0) < 0)[0]) + 1
        raise ValueError(f"samples must be sorted by t0: sample {i} is before sample {i - 1}")
    if len(t0) < n:
        raise ValueError(f"too few samples: {len(t0)} for {n} groups")
    return np.array_split(np.arange(len(t0)), n)


def _blocks(groups: tuple[int, ...]) -> list[list[int]]:
    """Consecutive group numbers as one block: (0, 1, 3) -> [[0, 1], [3]]."""
    out: list[list[int]] = []
    for g in groups:
        if out and out[-1][-1] == g - 1:
            out[-1].append(g)
        else:
            out.append([g])
    return out


def _fold(index: int, train: np.ndarray, test_groups: tuple[int, ...], parts: list[np.ndarray], t0: np.ndarray,
          t1: np.ndarray, embargo: int, min_train: int) -> Fold:
    test = np.concatenate([parts[g] for g in test_groups])
    spans = []
    for block in _blocks(test_groups):
        idx = np.concatenate([parts[g] for g in block])
        spans.append((int(t0[idx].min()), int(t1[idx].max())))
    kept, n_purged, n_embargoed = purge(train, t0, t1, spans, embargo)
    if len(kept) < min_train:
        raise ValueError(f"too few samples: fold {index} (test groups {list(test_groups)}) keeps {len(kept)} "
                         f"training samples after purge and embargo, need {min_train}")
    return Fold(index, kept, test, int(t0[test].min()), int(t1[test].max()), n_purged, n_embargoed, test_groups)


def purged_walk_forward(t0, t1, n_splits: int, embargo_ns: int = 0, min_train: int = 50) -> list[Fold]:
    """Fold k tests group k + 1 of ``n_splits + 1`` equal-count groups and trains on all groups
    before it (an expanding window), purged."""
    t0, t1 = _times(t0, t1)
    embargo = _check_embargo(embargo_ns)
    if not n_splits >= 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits!r}")
    parts = _groups(t0, n_splits + 1)
    return [_fold(k, np.concatenate(parts[:k + 1]), (k + 1,), parts, t0, t1, embargo, min_train)
            for k in range(n_splits)]


def combinatorial_purged(t0, t1, n_groups: int = 6, n_test_groups: int = 2, embargo_ns: int = 0,
                         min_train: int = 50) -> list[Fold]:
    """One fold per combination of ``n_test_groups`` of ``n_groups`` contiguous groups (in
    itertools order): those groups are the test set, the others, purged and embargoed around
    each contiguous test block, the training set."""
    t0, t1 = _times(t0, t1)
    embargo = _check_embargo(embargo_ns)
    if not 1 <= n_test_groups < n_groups:
        raise ValueError(f"need 1 <= n_test_groups < n_groups, got n_test_groups={n_test_groups!r} "
                         f"n_groups={n_groups!r}")
    parts = _groups(t0, n_groups)
    folds = []
    for k, test_groups in enumerate(itertools.combinations(range(n_groups), n_test_groups)):
        train = np.concatenate([parts[g] for g in range(n_groups) if g not in test_groups])
        folds.append(_fold(k, train, test_groups, parts, t0, t1, embargo, min_train))
    return folds


def cpcv_paths(n_groups: int, n_test_groups: int) -> int:
    """How many full backtest paths the CPCV folds make: each group is tested in
    C(N-1, k-1) folds, so the C(N, k) folds' test groups recombine into C(N, k) * k / N paths."""
    if not 1 <= n_test_groups < n_groups:
        raise ValueError(f"need 1 <= n_test_groups < n_groups, got n_test_groups={n_test_groups!r} "
                         f"n_groups={n_groups!r}")
    return math.comb(n_groups, n_test_groups) * n_test_groups // n_groups
