"""Hyper-parameter tuning on Ray Tune (actors/tune.py): every trial's reported score is the purged CV
score of its parameters recomputed here, in this process; the best is the lowest; trials spread
over the nodes of a 2-node cluster."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines.alpha.ml import ENGINE_FEATURE_HASH
from pipelines.features.engine import VECTOR_NAMES
from pipelines.training.config import CVConfig, FitConfig
from pipelines.training.dataset import Dataset
from pipelines.training.evaluate import cross_validate
from tests.helpers import child_result, on_two_nodes

NS = 1_000_000_000
T_START = 1_796_000_000 * NS  # 2026-11-30
BASE = FitConfig(num_boost_round=60, early_stopping_rounds=10, seed=7)  # small: each CV well under a second
CV = CVConfig(n_splits=4, embargo_s=20.0, min_train=200)
# On the cluster, trials of 1-4 s (no early stopping), longer than starting a trial actor, as real
# trials are: Tune gives a finished actor the next trial rather than wait for one still starting,
# so much shorter trials could all run on whichever node's actor came up first.
CLUSTER_BASE = FitConfig(num_boost_round=1500, early_stopping_rounds=1500, seed=7)


def planted_dataset(n: int = 1500, seed: int = 3, up_from: int | None = None) -> Dataset:
    """Samples 1 s apart, label window 10 s; the label is up when 0.8 x feature 0 + N(0, 1) > 0.
    ``up_from``: every sample before it is labelled up (a training fold of one class)."""
    rng = np.random.default_rng(seed)
    t0 = T_START + np.arange(n, dtype=np.int64) * NS
    X = rng.normal(size=(n, len(VECTOR_NAMES)))
    y = (0.8 * X[:, 0] + rng.normal(size=n) > 0).astype(np.float64)
    if up_from is not None:
        y[:up_from] = 1.0
    key = pd.DataFrame({"t0": t0, "t1": t0 + 10 * NS, "symbol": "WDOZ26", "price": 5000.0, "label": y,
                        "move_ticks": 0.0, "last_return_ticks": rng.choice([-1.0, 0.0, 1.0], n),
                        "barrier": "time", "input": "0"})
    frame = pd.concat([key, pd.DataFrame(X, columns=list(VECTOR_NAMES))], axis=1)
    return Dataset(frame, tuple(VECTOR_NAMES), {"symbol": "WDOZ26", "feature_hash": ENGINE_FEATURE_HASH})


def recomputed(ds: Dataset, base: FitConfig, params: dict) -> tuple[float, list[float]]:
    """The trial's score computed in this process, without Ray: the mean of the fold losses."""
    r = cross_validate(ds, dataclasses.replace(base, **params), CV, n_boot=0, seed=0)
    return float(np.mean(r.fold_log_loss)), [float(x) for x in r.fold_log_loss]


def check_trials(ds: Dataset, base: FitConfig, trials: list[dict], space: dict) -> None:
    """Each trial: params inside the space, scores equal to a recompute here."""
    for t in trials:
        assert t["error"] is None, t
        assert set(t["params"]) == set(space)
        for k, (kind, lo, hi) in space.items():
            assert lo <= t["params"][k] <= hi
            assert isinstance(t["params"][k], int if kind == "int" else float)
        mean, folds = recomputed(ds, base, t["params"])
        assert t["fold_log_loss"] == pytest.approx(folds, rel=1e-9, abs=1e-12)
        assert t["cv_log_loss"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
        assert len(folds) == CV.n_splits


def test_bad_arguments_are_refused_in_one_line():
    from actors.tune import tune_model

    ds = planted_dataset(300)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"^n_trials must be an integer >= 1, got"):
            tune_model(ds, BASE, CV, bad, progress=False)
    with pytest.raises(ValueError, match=r"^search space: 'depth' is not a numeric FitConfig field"):
        tune_model(ds, BASE, CV, 2, search_space={"depth": ("int", 2, 4)}, progress=False)
    with pytest.raises(ValueError, match=r"^search space: eta range \[0, 0.3\] must have low < high, low > 0"):
        tune_model(ds, BASE, CV, 2, search_space={"eta": ("loguniform", 0.0, 0.3)}, progress=False)
    with pytest.raises(ValueError, match=r"^search space: max_depth is an integer field"):
        tune_model(ds, BASE, CV, 2, search_space={"max_depth": ("uniform", 2, 4)}, progress=False)
    with pytest.raises(ValueError, match=r"^search space: subsample range \[0.5, 1.5\] .* lie in \[0.05, 1\]"):
        tune_model(ds, BASE, CV, 2, search_space={"subsample": ("uniform", 0.5, 1.5)}, progress=False)


@pytest.mark.ray
def test_trials_on_the_session_ray_report_their_purged_cv_score(ray_session):
    from actors.tune import DEFAULT_SPACE, tune_model, tune_summary

    ds = planted_dataset()
    result = tune_model(ds, BASE, CV, 4, seed=11, progress=False)
    assert [t["trial"] for t in result.trials] == [0, 1, 2, 3]
    check_trials(ds, BASE, result.trials, DEFAULT_SPACE)
    assert len({json.dumps(t["params"], sort_keys=True) for t in result.trials}) == 4  # four different sets
    scores = [t["cv_log_loss"] for t in result.trials]
    assert result.best_trial == int(np.argmin(scores)) and result.best_score == min(scores)
    # The best config: the base with the winner's parameters, nothing else changed.
    assert result.best == dataclasses.replace(BASE, **result.trials[result.best_trial]["params"])
    assert (result.best.num_boost_round, result.best.seed) == (60, 7)
    summary = json.loads(json.dumps(tune_summary(result)))
    assert summary["n_trials"] == 4 and summary["failed"] == 0 and summary["best_trial"] == result.best_trial
    assert summary["best_params"] == result.trials[result.best_trial]["params"]
    assert [t["cv_log_loss"] for t in summary["trials"]] == scores


@pytest.mark.ray
def test_every_trial_failing_is_one_line_naming_the_first_error(ray_session):
    from actors.tune import tune_model

    # The first fold trains on samples 0-299 only, all up: every trial's CV fails there.
    ds = planted_dataset(1500, up_from=300)
    with pytest.raises(ValueError, match=r"^all 2 tuning trials failed; the first: fold 0: its training samples "
                                         r"hold one label class only$"):
        tune_model(ds, BASE, CV, 2, progress=False)


# -- the 2-node cluster -----------------------------------------------------------------------


def _cluster_main() -> None:
    """In the child process: 6 trials on a head (1 CPU) and one worker node (1 CPU)."""
    import ray

    from actors.tune import tune_model

    def work() -> dict:
        result = tune_model(planted_dataset(), CLUSTER_BASE, CV, 6, seed=5, progress=False)
        return {"trials": result.trials, "best_trial": result.best_trial, "best_score": result.best_score,
                "ray_still_up": ray.is_initialized()}

    on_two_nodes(work)


@pytest.mark.ray
@pytest.mark.slow
def test_tuning_on_a_two_node_cluster_spreads_trials_and_scores_them_as_in_process():
    from actors.tune import DEFAULT_SPACE

    r = child_result("tests.training.test_tune", timeout=120)
    assert [t["trial"] for t in r["trials"]] == list(range(6))
    assert {t["node"] for t in r["trials"]} == {r["head"], r["worker"]}  # both nodes ran trials
    assert r["ray_still_up"]  # a Ray session it found is left running
    check_trials(planted_dataset(), CLUSTER_BASE, r["trials"], DEFAULT_SPACE)
    scores = [t["cv_log_loss"] for t in r["trials"]]
    assert r["best_trial"] == int(np.argmin(scores)) and r["best_score"] == min(scores)


if __name__ == "__main__" and sys.argv[1:2] == ["cluster"]:
    _cluster_main()
