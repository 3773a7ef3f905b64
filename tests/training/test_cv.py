"""Purged walk-forward and combinatorial purged CV (pipelines/training/cv.py, on purgedcv), checked by brute force.

Every fold is re-derived here with plain loops over samples, from the rules the module documents:
- groups: CPCV cuts n samples into k groups, the first n % k one longer; walk-forward makes
  n_splits test blocks of n // (n_splits + 1) samples at the end, the rest before them is block 0;
- purge: a candidate training sample is purged if its closed window [t0, t1] meets a test
  sample's closed window (t0_j <= t1_i and t0_i <= t1_j);
- embargo: a candidate not purged is embargoed if its t0 lies in [t1_j, t1_j + embargo] for a
  test sample j (purgedcv's closed rule, measured from each test sample's label end).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.training.cv import cpcv_paths, combinatorial_purged, purged_walk_forward


def samples(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted t0 with ties; label windows mostly short (from 1 ns), a few long enough to reach over a group."""
    rng = np.random.default_rng(seed)
    t0 = np.cumsum(rng.integers(0, 5, n)).astype(np.int64)
    length = np.where(rng.random(n) < 0.05, rng.integers(50, 150, n), rng.integers(1, 40, n))
    return t0, (t0 + length).astype(np.int64)


def cpcv_groups(n: int, k: int) -> list[range]:
    q, r = divmod(n, k)
    sizes = [q + 1] * r + [q] * (k - r)
    starts = [sum(sizes[:g]) for g in range(k)]
    return [range(s, s + size) for s, size in zip(starts, sizes)]


def walk_forward_blocks(n: int, n_splits: int) -> list[range]:
    size = n // (n_splits + 1)
    first = n - n_splits * size
    return [range(0, first)] + [range(first + k * size, first + (k + 1) * size) for k in range(n_splits)]


def expected_split(t0, t1, test: list[int], candidates: list[int], embargo: int):
    kept, purged, embargoed = [], 0, 0
    for i in candidates:
        if any(t0[j] <= t1[i] and t0[i] <= t1[j] for j in test):
            purged += 1
        elif any(t1[j] <= t0[i] <= t1[j] + embargo for j in test):
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


def test_closed_windows_and_the_embargo_by_hand():
    # Groups of 2 (n_groups=3, one test group): [0, 1] [2, 3] [4, 5]; test group 1 = samples 2, 3.
    t0 = np.array([0, 10, 20, 25, 40, 50], np.int64)
    t1 = np.array([20, 12, 25, 35, 41, 60], np.int64)
    folds = {f.groups: f for f in combinatorial_purged(t0, t1, 3, 1, embargo_ns=5, min_train=0)}
    # Sample 0 [0, 20] ends exactly at test sample 2's t0: its label used the trade at 20 -> purged.
    # Sample 4 starts at 40, in [t1_3, t1_3 + 5] = [35, 40] -> embargoed. 1 and 5 kept.
    f = folds[(1,)]
    assert f.train.tolist() == [1, 5] and (f.purged, f.embargoed) == (1, 1)
    assert (f.test_start_ns, f.test_end_ns) == (20, 35)
    # One ns less embargo and sample 4 (t0 = 40 > 35 + 4) stays.
    f = {g.groups: g for g in combinatorial_purged(t0, t1, 3, 1, embargo_ns=4, min_train=0)}[(1,)]
    assert f.train.tolist() == [1, 4, 5] and (f.purged, f.embargoed) == (1, 0)
    # Test group 0 = samples 0, 1: sample 2 starts at 20 == t1_0 -> purged (closed); sample 3 starts
    # at 25 in [20, 25] -> embargoed; 4 and 5 kept.
    f = folds[(0,)]
    assert f.train.tolist() == [4, 5] and (f.purged, f.embargoed) == (1, 1)


@pytest.mark.parametrize("seed, n, n_splits, embargo", [(0, 400, 3, 0), (1, 401, 4, 25), (2, 333, 5, 80)])
def test_walk_forward_folds_are_purged_and_before_the_test(seed, n, n_splits, embargo):
    t0, t1 = samples(n, seed)
    folds = purged_walk_forward(t0, t1, n_splits, embargo_ns=embargo, min_train=10)
    blocks = walk_forward_blocks(n, n_splits)
    assert len(folds) == n_splits
    for k, fold in enumerate(folds):
        assert fold.index == k and fold.groups == (k + 1,)
        test = list(blocks[k + 1])
        assert len(test) == n // (n_splits + 1)
        check_fold(fold, t0, t1, test, list(range(test[0])), embargo)
        assert fold.train.max() < test[0]
        assert t1[fold.train].max() < fold.test_start_ns  # every kept label is known before the test starts
        assert fold.embargoed == 0  # nothing of the training set comes after the test block
    assert sum(f.purged for f in folds) > 0  # the long windows did reach over a boundary


def test_walk_forward_remainder_goes_to_the_first_training_block():
    # 333 samples, 5 splits: 5 test blocks of 55 at the end, 58 samples before them.
    t0 = np.arange(333, dtype=np.int64) * 10
    folds = purged_walk_forward(t0, t0 + 1, 5, min_train=0)
    assert [(f.test[0], len(f.test)) for f in folds] == [(58, 55), (113, 55), (168, 55), (223, 55), (278, 55)]
    assert [len(f.train) for f in folds] == [58, 113, 168, 223, 278]  # nothing overlaps: windows 1 ns, 10 ns apart


@pytest.mark.parametrize("seed, n, n_groups, k, embargo", [(3, 400, 6, 2, 0), (4, 397, 6, 2, 30), (5, 600, 5, 3, 60),
                                                           (6, 300, 4, 1, 15)])
def test_cpcv_folds_are_purged_and_embargoed_around_each_block(seed, n, n_groups, k, embargo):
    t0, t1 = samples(n, seed)
    folds = combinatorial_purged(t0, t1, n_groups, k, embargo_ns=embargo, min_train=10)
    groups = cpcv_groups(n, n_groups)
    assert len(folds) == math.comb(n_groups, k)
    times_tested = np.zeros(n, int)
    for fold in folds:
        test = sorted(i for g in fold.groups for i in groups[g])
        candidates = [i for i in range(n) if i not in set(test)]
        check_fold(fold, t0, t1, test, candidates, embargo)
        times_tested[fold.test] += 1
        if embargo:
            # After a test block the embargo is (block's max t1, max t1 + embargo]: the first kept
            # training sample after each block starts beyond it.
            for g in fold.groups:
                if g + 1 < n_groups and g + 1 not in fold.groups:
                    end = max(t1[i] for i in groups[g])
                    after = [i for i in fold.train if i > groups[g][-1]]
                    assert not after or t0[after[0]] > end + embargo
    assert (times_tested == math.comb(n_groups - 1, k - 1)).all()
    if embargo:
        assert sum(f.embargoed for f in folds) > 0
    assert sum(f.purged for f in folds) > 0


def test_cpcv_tests_every_combination_in_order():
    t0, t1 = samples(200, 7)
    folds = combinatorial_purged(t0, t1, 4, 2, min_train=10)
    assert [f.groups for f in folds] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert [f.index for f in folds] == list(range(6))


def test_cpcv_purges_against_every_test_group():
    # Four samples per group, label windows 1 ns long, samples 10 ns apart; no embargo.
    t0 = np.arange(16, dtype=np.int64) * 10
    t1 = t0 + 1
    t1[3] = 50  # group 0's last label is decided at 50, inside group 1
    t1[7] = 80  # group 1's last label is decided at 80, exactly group 2's first t0
    folds = {f.groups: f for f in combinatorial_purged(t0, t1, 4, 2, min_train=1)}
    # (1, 2): sample 3 [30, 50] overlaps test samples 4 [40, 41] and 5 [50, 51] -> purged.
    assert folds[(1, 2)].train.tolist() == [0, 1, 2] + list(range(12, 16))
    assert folds[(1, 2)].purged == 1
    # (0, 3): samples 4 [40, 41] and 5 [50, 51] start inside test sample 3's window [30, 50] -> purged;
    # sample 11 [110, 111] meets nothing of group 3 (from 120) and stays.
    assert folds[(0, 3)].train.tolist() == list(range(6, 12)) and folds[(0, 3)].purged == 2
    assert (folds[(0, 3)].test_start_ns, folds[(0, 3)].test_end_ns) == (0, 151)
    # (0, 2): 4 and 5 purged by sample 3; sample 7 [70, 80] ends at test sample 8's t0 -> purged.
    assert folds[(0, 2)].train.tolist() == [6, 12, 13, 14, 15] and folds[(0, 2)].purged == 3
    # (0, 1): sample 8 starts at 80 == t1_7: purged (closed windows); 9 to 15 kept.
    assert folds[(0, 1)].train.tolist() == list(range(9, 16)) and folds[(0, 1)].purged == 1


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
T1 = T0 + 1


@pytest.mark.parametrize("call, words", [
    (lambda: purged_walk_forward(T0[::-1].copy(), T1[::-1].copy(), 3), "sorted by t0"),
    (lambda: purged_walk_forward(T0, T0 - 1, 3), "t1 must be > t0"),
    (lambda: combinatorial_purged(T0, T0, 6, 2), "t1 must be > t0"),  # an empty label window
    (lambda: purged_walk_forward(T0, T1[:50], 3), "same length"),
    (lambda: purged_walk_forward(T0.astype(float), T1, 3), "integer ns"),
    (lambda: purged_walk_forward(T0, T1, 1), "n_splits"),
    (lambda: purged_walk_forward(T0, T1, 2.5), "n_splits"),
    (lambda: purged_walk_forward(T0, T1, 3, embargo_ns=-1), "embargo_ns"),
    (lambda: purged_walk_forward(T0, T1, 3, min_train=30), "too few samples"),  # fold 0 trains on 25
    (lambda: purged_walk_forward(T0[:3], T1[:3], 3, min_train=0), "too few samples"),  # an empty test block
    (lambda: combinatorial_purged(T0, T1, 6, 0), "n_test_groups"),
    (lambda: combinatorial_purged(T0, T1, 6, 6), "n_test_groups"),
    (lambda: combinatorial_purged(T0, T1, 6, 2, embargo_ns=-5), "embargo_ns"),
    (lambda: combinatorial_purged(T0[:5], T1[:5], 6, 2, min_train=0), "too few samples: 5 for 6 groups"),
    (lambda: combinatorial_purged(T0, T0 + 40, 6, 2, min_train=50), "too few samples"),
    (lambda: cpcv_paths(4, 4), "n_test_groups"),
])
def test_bad_input_is_one_line_value_error(call, words):
    with pytest.raises(ValueError, match=words) as e:
        call()
    assert "\n" not in str(e.value)


def test_walk_forward_min_train_counts_after_purge():
    # 100 samples, 3 test blocks of 25 after a first block of 25; each label window reaches 30
    # samples ahead, so fold 0's 25 training samples all overlap block 1 and are purged.
    with pytest.raises(ValueError, match="too few samples: fold 0"):
        purged_walk_forward(T0, T0 + 30, 3, min_train=1)
    folds = purged_walk_forward(T0, T0 + 30, 3, min_train=0)
    assert [len(f.train) for f in folds] == [0, 20, 45]
    assert [f.purged for f in folds] == [25, 30, 30]
