"""Purged walk-forward and combinatorial purged CV (pipelines/training/cv.py), checked by brute force.

Every fold is re-derived here with plain loops: the groups from np.array_split's documented sizes
(the first n % k groups one longer), the test blocks as runs of consecutive sample positions, and
for each candidate training sample whether its label window [t0, t1] touches a block's span
[min t0, max t1] (purged) or, if not, whether its t0 falls in (end, end + embargo] (embargoed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.training.cv import cpcv_paths, combinatorial_purged, purge, purged_walk_forward


def samples(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted t0 with ties; label windows mostly short, a few long enough to reach over a group."""
    rng = np.random.default_rng(seed)
    t0 = np.cumsum(rng.integers(0, 5, n)).astype(np.int64)
    length = np.where(rng.random(n) < 0.05, rng.integers(50, 150, n), rng.integers(0, 40, n))
    return t0, (t0 + length).astype(np.int64)


def group_ranges(n: int, k: int) -> list[range]:
    q, r = divmod(n, k)
    sizes = [q + 1] * r + [q] * (k - r)
    starts = [sum(sizes[:g]) for g in range(k)]
    return [range(s, s + size) for s, size in zip(starts, sizes)]


def expected_split(t0, t1, test: list[int], candidates: list[int], embargo: int):
    spans, run = [], [test[0]]
    for j in test[1:]:
        if j == run[-1] + 1:
            run.append(j)
        else:
            spans.append(run)
            run = [j]
    spans.append(run)
    spans = [(min(t0[j] for j in r), max(t1[j] for j in r)) for r in spans]
    kept, purged, embargoed = [], 0, 0
    for i in candidates:
        if any(t0[i] <= e and t1[i] >= s for s, e in spans):
            purged += 1
        elif any(e < t0[i] <= e + embargo for _, e in spans):
            embargoed += 1
        else:
            kept.append(i)
    return kept, purged, embargoed


def check_fold(fold, t0, t1, test: list[int], candidates: list[int], embargo: int) -> None:
    assert fold.test.tolist() == test
    assert fold.test_start_ns == min(t0[j] for j in test)
    assert fold.test_end_ns == max(t1[j] for j in test)
    kept, purged, embargoed = expected_split(t0.tolist(), t1.tolist(), test, candidates, embargo)
    assert fold.train.tolist() == kept
    assert (fold.purged, fold.embargoed) == (purged, embargoed)
    # No kept training label window overlaps any test sample's own label window.
    a, b = t0[fold.train][:, None], t1[fold.train][:, None]
    assert not ((a <= t1[fold.test][None, :]) & (b >= t0[fold.test][None, :])).any()


def test_purge_hand_case():
    t0 = np.array([0, 10, 20, 25, 40, 50], np.int64)
    t1 = np.array([20, 12, 25, 35, 41, 60], np.int64)
    # test span (20, 25) = sample 2. Sample 0 [0, 20] touches it at 20 -> purged; sample 3 [25, 35]
    # touches it at 25 -> purged; sample 4 starts at 40 in (25, 25 + 15] -> embargoed; 1 and 5 kept.
    kept, n_purged, n_embargoed = purge([0, 1, 3, 4, 5], t0, t1, [(20, 25)], 15)
    assert kept.tolist() == [1, 5] and (n_purged, n_embargoed) == (2, 1)
    # Without embargo sample 4 stays; a sample both purged (span 2) and after span 1 counts as purged.
    kept, n_purged, n_embargoed = purge([0, 1, 3, 4, 5], t0, t1, [(20, 25)], 0)
    assert kept.tolist() == [1, 4, 5] and (n_purged, n_embargoed) == (2, 0)
    kept, n_purged, n_embargoed = purge([1, 3, 4, 5], t0, t1, [(0, 5), (40, 41)], 40)
    # span (0, 5): 1 [10, 12] and 3 [25, 35] start in its embargo (5, 45] -> embargoed; 4 [40, 41]
    # starts there too but touches span (40, 41) -> purged; 5 [50, 60] starts in (41, 81] -> embargoed.
    assert kept.tolist() == [] and (n_purged, n_embargoed) == (1, 3)


@pytest.mark.parametrize("seed, n, n_splits, embargo", [(0, 400, 3, 0), (1, 401, 4, 25), (2, 333, 5, 80)])
def test_walk_forward_folds_are_purged_and_before_the_test(seed, n, n_splits, embargo):
    t0, t1 = samples(n, seed)
    folds = purged_walk_forward(t0, t1, n_splits, embargo_ns=embargo, min_train=10)
    groups = group_ranges(n, n_splits + 1)
    assert len(folds) == n_splits
    for k, fold in enumerate(folds):
        assert fold.index == k and fold.groups == (k + 1,)
        test = list(groups[k + 1])
        check_fold(fold, t0, t1, test, list(range(test[0])), embargo)
        assert fold.train.max() < test[0]
        assert t1[fold.train].max() < fold.test_start_ns  # every kept label is known before the test starts
        assert fold.embargoed == 0  # nothing of the training set comes after the test block
    assert sum(f.purged for f in folds) > 0  # the long windows did reach over a boundary


@pytest.mark.parametrize("seed, n, n_groups, k, embargo", [(3, 400, 6, 2, 0), (4, 397, 6, 2, 30), (5, 600, 5, 3, 60),
                                                           (6, 300, 4, 1, 15)])
def test_cpcv_folds_are_purged_and_embargoed_around_each_block(seed, n, n_groups, k, embargo):
    t0, t1 = samples(n, seed)
    folds = combinatorial_purged(t0, t1, n_groups, k, embargo_ns=embargo, min_train=10)
    groups = group_ranges(n, n_groups)
    assert len(folds) == math.comb(n_groups, k)
    times_tested = np.zeros(n, int)
    for fold in folds:
        test = sorted(i for g in fold.groups for i in groups[g])
        candidates = [i for i in range(n) if i not in set(test)]
        check_fold(fold, t0, t1, test, candidates, embargo)
        times_tested[fold.test] += 1
    assert (times_tested == math.comb(n_groups - 1, k - 1)).all()
    if embargo:
        assert sum(f.embargoed for f in folds) > 0


def test_cpcv_tests_every_combination_in_order():
    t0, t1 = samples(200, 7)
    folds = combinatorial_purged(t0, t1, 4, 2, min_train=10)
    assert [f.groups for f in folds] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert [f.index for f in folds] == list(range(6))


def test_cpcv_adjacent_test_groups_form_one_block():
    # Four samples per group, label windows 1 ns long, samples 10 ns apart; no embargo.
    t0 = np.arange(16, dtype=np.int64) * 10
    t1 = t0 + 1
    t1[3] = 50  # group 0's last label is decided at 50, inside group 1
    folds = {f.groups: f for f in combinatorial_purged(t0, t1, 4, 2, min_train=1)}
    # (1, 2) is one block, span [40, 111]: sample 3's window [30, 50] overlaps it -> purged.
    assert folds[(1, 2)].train.tolist() == [0, 1, 2] + list(range(12, 16))
    assert folds[(1, 2)].purged == 1
    # (0, 3) are two blocks, spans [0, 50] and [120, 151]: samples 4 [40, 41] and 5 [50, 51] touch
    # the first one's span and are purged, though no test sample's own window covers 5.
    assert folds[(0, 3)].train.tolist() == list(range(6, 12)) and folds[(0, 3)].purged == 2
    assert (folds[(0, 3)].test_start_ns, folds[(0, 3)].test_end_ns) == (0, 151)
    # (0, 1) is one block, span [0, 71]: nothing after it reaches back.
    assert folds[(0, 1)].train.tolist() == list(range(8, 16)) and folds[(0, 1)].purged == 0


@pytest.mark.parametrize("n_groups, k, paths", [(6, 2, 5), (10, 2, 9), (5, 1, 1), (6, 3, 10), (8, 4, 35)])
def test_cpcv_paths(n_groups, k, paths):
    assert cpcv_paths(n_groups, k) == paths


def test_folds_cover_every_sample_once_per_fold():
    t0, t1 = samples(300, 8)
    for fold in combinatorial_purged(t0, t1, 5, 2, embargo_ns=20, min_train=10):
        train, test = set(fold.train.tolist()), set(fold.test.tolist())
        assert not train & test
        assert len(train) + len(test) + fold.purged + fold.embargoed == 300


T0 = np.arange(100, dtype=np.int64)


@pytest.mark.parametrize("call, words", [
    (lambda: purged_walk_forward(T0[::-1].copy(), T0[::-1].copy(), 3), "sorted by t0"),
    (lambda: purged_walk_forward(T0, T0 - 1, 3), "t1 must be >= t0"),
    (lambda: purged_walk_forward(T0, T0[:50], 3), "same length"),
    (lambda: purged_walk_forward(T0.astype(float), T0, 3), "integer ns"),
    (lambda: purged_walk_forward(T0, T0, 1), "n_splits"),
    (lambda: purged_walk_forward(T0, T0, 3, embargo_ns=-1), "embargo_ns"),
    (lambda: purged_walk_forward(T0, T0, 3, min_train=30), "too few samples"),  # fold 0 trains on 25
    (lambda: purged_walk_forward(T0[:3], T0[:3], 3, min_train=0), "too few samples"),  # an empty test group
    (lambda: combinatorial_purged(T0, T0, 6, 0), "n_test_groups"),
    (lambda: combinatorial_purged(T0, T0, 6, 6), "n_test_groups"),
    (lambda: combinatorial_purged(T0, T0, 6, 2, embargo_ns=-5), "embargo_ns"),
    (lambda: combinatorial_purged(T0, T0 + 40, 6, 2, min_train=50), "too few samples"),
    (lambda: cpcv_paths(4, 4), "n_test_groups"),
])
def test_bad_input_is_one_line_value_error(call, words):
    with pytest.raises(ValueError, match=words) as e:
        call()
    assert "\n" not in str(e.value)


def test_walk_forward_min_train_counts_after_purge():
    # 100 samples, 4 groups of 25; each label window reaches 30 samples ahead, so fold 0's 25
    # training samples all overlap group 1 and are purged.
    with pytest.raises(ValueError, match="too few samples: fold 0"):
        purged_walk_forward(T0, T0 + 30, 3, min_train=1)
    folds = purged_walk_forward(T0, T0 + 30, 3, min_train=0)
    assert [len(f.train) for f in folds] == [0, 20, 45]
    assert [f.purged for f in folds] == [25, 30, 30]
