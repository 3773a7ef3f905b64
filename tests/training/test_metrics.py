"""Scores, bootstrap intervals, calibration and baselines (pipelines/training/metrics.py).

AUC is checked against the Mann-Whitney U statistic (scipy): AUC = U / (n1 * n0), ties half.
Log loss and Brier against their formulas written here, the rest against hand-computed cases.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from pipelines.training.metrics import (auc, baselines, block_bootstrap_ci, brier, calibration_curve, hit_rate,
                                        log_loss, score_table)


def noisy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A weak signal: p is a logistic of x, y the sign of x plus a lot of noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = (x + 2.0 * rng.normal(size=n) > 0).astype(float)
    return y, 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("seed, n", [(0, 50), (1, 333), (2, 1000)])
def test_auc_is_mann_whitney_u_over_pairs_with_ties(seed, n):
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 10, n) / 10  # ten values only: many ties, across and within classes
    y = (rng.random(n) < 0.3 + 0.4 * p).astype(float)
    n1, n0 = int(y.sum()), int(n - y.sum())
    u = mannwhitneyu(p[y == 1], p[y == 0]).statistic
    assert auc(y, p) == pytest.approx(u / (n1 * n0), rel=1e-12)
    score = rng.normal(size=n) * 100  # any finite score, not only probabilities
    assert auc(y, score) == pytest.approx(mannwhitneyu(score[y == 1], score[y == 0]).statistic / (n1 * n0))


def test_auc_hand_cases():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all ties: half each
    assert auc([0, 1, 1], [0.2, 0.2, 0.9]) == 0.75  # one tie (1/2) and one win, over 2 pairs
    assert math.isnan(auc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert math.isnan(auc([0, 0], [0.1, 0.5]))


def test_log_loss_and_brier_by_formula():
    y = np.array([1, 0, 1, 0, 1.0])
    p = np.array([0.8, 0.4, 0.3, 0.05, 0.99])
    want = -np.mean([math.log(0.8), math.log(0.6), math.log(0.3), math.log(0.95), math.log(0.99)])
    assert log_loss(y, p) == pytest.approx(want, rel=1e-12)
    assert brier(y, p) == pytest.approx((0.2**2 + 0.4**2 + 0.7**2 + 0.05**2 + 0.01**2) / 5, rel=1e-12)
    # A certain miss is clipped to eps: finite, -log(eps) on that sample.
    assert log_loss([1, 0], [0.0, 0.0]) == pytest.approx((-math.log(1e-12) - math.log(1 - 1e-12)) / 2)
    assert brier([1, 0], [0.0, 0.0]) == 0.5


def test_hit_rate_hand_cases():
    y = [1, 0, 1, 0, 1]
    p = [0.9, 0.2, 0.3, 0.5, 0.6]
    # thr 0.6: 0.9 up right, 0.2 down right, 0.3 down wrong, 0.5 not acted, 0.6 up right
    assert hit_rate(y, p, 0.6) == (0.75, 0.8)
    # thr 0.75: 0.9 up right, 0.2 down right
    assert hit_rate(y, p, 0.75) == (1.0, 0.4)
    hit, coverage = hit_rate(y, p, 0.95)
    assert math.isnan(hit) and coverage == 0.0
    # thr 0.5: every prediction but exactly 0.5 is acted on
    assert hit_rate(y, p, 0.5) == (0.75, 0.8)
    assert hit_rate([0, 1], [0.5, 0.5], 0.5)[1] == 0.0


def test_bootstrap_ci_contains_the_full_sample_auc_and_is_deterministic():
    y, p = noisy(600, 3)
    full = auc(y, p)
    assert 0.55 < full < 0.8
    low, high = block_bootstrap_ci(y, p, auc, n_boot=400, seed=11)
    assert low < full < high and high - low < 0.25
    assert block_bootstrap_ci(y, p, auc, n_boot=400, seed=11) == (low, high)
    assert block_bootstrap_ci(y, p, auc, n_boot=400, seed=12) != (low, high)


def test_bootstrap_resamples_are_blocks_of_consecutive_samples():
    # p carries each sample's position; the metric is the fraction of neighbours in a resample
    # that were neighbours in the data. Blocks of b keep b - 1 of every b pairs.
    n = 90
    p = np.arange(n) / n
    y = np.zeros(n)

    def kept_neighbours(_y, pp):
        return float(np.mean(np.isclose(np.diff(pp * n), 1.0)))

    low, _ = block_bootstrap_ci(y, p, kept_neighbours, n_boot=200, seed=0)  # default block ceil(sqrt(90)) = 10
    assert low >= 81 / 89  # 9 blocks of 10: 81 neighbour pairs inside blocks out of 89
    _, high = block_bootstrap_ci(y, p, kept_neighbours, n_boot=200, block=1, seed=0)
    assert high < 0.2  # single samples: a neighbour only by chance
    # One block as long as the data: every resample is the data itself.
    assert block_bootstrap_ci(*noisy(200, 4), brier, n_boot=150, block=200) == (brier(*noisy(200, 4)),) * 2


def test_bootstrap_interval_is_the_two_sided_percentile():
    # The metric is where the resample's first block starts, in [0, 1): uniform over the data,
    # so its alpha / 2 and 1 - alpha / 2 quantiles are about alpha / 2 and 1 - alpha / 2.
    n = 1000
    p = np.arange(n) / n
    low, high = block_bootstrap_ci(np.zeros(n), p, lambda _y, pp: float(pp[0]), n_boot=4000, block=1, seed=2)
    assert low == pytest.approx(0.025, abs=0.01) and high == pytest.approx(0.975, abs=0.01)
    low, high = block_bootstrap_ci(np.zeros(n), p, lambda _y, pp: float(pp[0]), n_boot=4000, block=1, alpha=0.2,
                                   seed=2)
    assert low == pytest.approx(0.1, abs=0.015) and high == pytest.approx(0.9, abs=0.015)


def test_bootstrap_skips_undefined_resamples_and_needs_100_valid():
    n = 100
    p = np.arange(n) / n
    y = np.zeros(n)

    def defined_in_second_half(_y, pp):  # undefined when the resample starts in the first half
        return math.nan if pp[0] < 0.5 else 1.0

    assert block_bootstrap_ci(y, p, defined_in_second_half, n_boot=1000, seed=0) == (1.0, 1.0)
    assert all(math.isnan(v) for v in block_bootstrap_ci(y, p, defined_in_second_half, n_boot=150, seed=0))
    assert all(math.isnan(v) for v in block_bootstrap_ci(np.ones(50), np.linspace(0, 1, 50), auc))
    assert all(math.isnan(v) for v in block_bootstrap_ci(*noisy(200, 5), brier, n_boot=99))
    assert not any(math.isnan(v) for v in block_bootstrap_ci(*noisy(200, 5), brier, n_boot=100))


def test_score_table_values_and_json():
    y, p = noisy(300, 6)
    t = score_table(y, p, p_threshold=0.6, n_boot=200, seed=1)
    n1, n0 = int(y.sum()), int(300 - y.sum())
    assert t["auc"] == pytest.approx(mannwhitneyu(p[y == 1], p[y == 0]).statistic / (n1 * n0))
    assert t["log_loss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert t["brier"] == pytest.approx(np.mean((p - y) ** 2))
    acted = (p >= 0.6) | (p <= 0.4)
    right = ((p >= 0.6) & (y == 1)) | ((p <= 0.4) & (y == 0))
    assert t["hit_rate"] == pytest.approx(right.sum() / acted.sum())
    assert t["coverage"] == pytest.approx(acted.mean())
    assert t["n"] == 300 and t["up_rate"] == pytest.approx(n1 / 300)
    for name in ("auc", "log_loss", "brier", "hit_rate"):
        low, high = t[f"{name}_ci"]
        assert low <= t[name] <= high, name
    assert t["auc_ci"] == list(block_bootstrap_ci(y, p, auc, n_boot=200, seed=1))
    assert json.loads(json.dumps(t)) == t
    assert all(type(v) in (float, int, list) for v in t.values())


def test_calibration_curve_hand_case():
    y = [0, 1, 0, 1, 1]
    p = [0.05, 0.15, 0.12, 0.95, 1.0]
    got = calibration_curve(y, p, n_bins=10)
    want = [(0.0, 0.1, 0.05, 0.0, 1), (0.1, 0.2, 0.135, 0.5, 2), (0.9, 1.0, 0.975, 1.0, 2)]
    assert len(got) == len(want)
    for g, (lo, hi, mp, fu, n) in zip(got, want):
        assert g["bin_low"] == pytest.approx(lo) and g["bin_high"] == pytest.approx(hi)
        assert g["mean_p"] == pytest.approx(mp) and g["frac_up"] == fu and g["n"] == n


def test_baselines_hand_case():
    y_train = [1, 1, 1, 0]  # up rate 0.75
    y_test = [1, 0, 1, 0]
    last_return = [0.5, -1.0, -2.0, 0.0]
    b = baselines(y_train, y_test, last_return, p_threshold=0.5, n_boot=50)
    m = b["majority"]
    assert m["auc"] == 0.5
    assert m["brier"] == pytest.approx((0.25**2 + 0.75**2 + 0.25**2 + 0.75**2) / 4)
    assert m["log_loss"] == pytest.approx(-(2 * math.log(0.75) + 2 * math.log(0.25)) / 4)
    assert (m["hit_rate"], m["coverage"]) == (0.5, 1.0)  # always up, right on the two ups
    s = b["last_return_sign"]  # p = 1, 0, 0, 0.5
    # pairs (up, down): (1, 0) win, (1, .5) win, (0, 0) tie, (0, .5) loss -> 2.5 / 4
    assert s["auc"] == 0.625
    assert s["brier"] == pytest.approx((0 + 0 + 1 + 0.25) / 4)
    eps = 1e-12
    assert s["log_loss"] == pytest.approx((-2 * math.log(1 - eps) - math.log(eps) + math.log(2)) / 4)
    assert s["hit_rate"] == pytest.approx(2 / 3) and s["coverage"] == 0.75


@pytest.mark.parametrize("call, words", [
    (lambda: auc([1, 0], [0.5]), "same length"),
    (lambda: auc([1, 2], [0.5, 0.5]), "y must be 0 or 1"),
    (lambda: auc([1, np.nan], [0.5, 0.5]), "y must be 0 or 1"),
    (lambda: auc([1, 0], [0.5, np.nan]), "finite score"),
    (lambda: log_loss([1, 0], [1.5, 0.5]), r"probability in \[0, 1\]"),
    (lambda: brier([], []), "no samples"),
    (lambda: hit_rate([1], [0.7], 0.4), "p_threshold"),
    (lambda: block_bootstrap_ci([1, 0], [0.5, 0.5], auc, alpha=1.0), "alpha"),
    (lambda: block_bootstrap_ci([1, 0], [0.5, 0.5], auc, block=0), "block"),
    (lambda: calibration_curve([1], [0.5], n_bins=0), "n_bins"),
    (lambda: baselines([1, 0], [1, 0], [np.nan, 1.0]), "last_return_test"),
    (lambda: baselines([1, 0], [1, 0], [1.0]), "same shape"),
])
def test_bad_input_is_one_line_value_error(call, words):
    with pytest.raises(ValueError, match=words) as e:
        call()
    assert "\n" not in str(e.value)
