"""The training pipeline end to end on data whose answer is known: shuffled labels have no skill,
a planted signal has; everything fitted stays inside the training folds; the registry promotes only
a challenger that beats the champion on the same folds, and the running ML actor serves it."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from pipelines.alpha.ml import ENGINE_FEATURE_HASH, read_registry
from pipelines.features.engine import VECTOR_NAMES
from pipelines.training import registry as reg
from pipelines.training.config import CVConfig, FitConfig, TrainingConfig
from pipelines.training.dataset import check_trainable
from pipelines.training.evaluate import compare, cross_validate, make_folds, p_threshold
from pipelines.training.fit import apply_calibration, fit_model, split_training
from tests.helpers import REPO
from tests.training.test_tune import NS, planted_dataset

CV = CVConfig(n_splits=4, embargo_s=20.0, min_train=200)
FIT = FitConfig(num_boost_round=80, early_stopping_rounds=15, seed=1)


def mw_auc(y, p) -> float:
    """AUC as the Mann-Whitney U statistic over n_up x n_down (scipy), independent of our metrics."""
    y, p = np.asarray(y), np.asarray(p)
    return mannwhitneyu(p[y == 1], p[y == 0]).statistic / ((y == 1).sum() * (y == 0).sum())


def test_a_planted_signal_is_found_and_shuffled_labels_are_not():
    ds = planted_dataset(2400, seed=5)
    r = cross_validate(ds, FIT, CV, n_boot=400, seed=0)
    s = r.overall["scores"]
    # Pooled out-of-sample predictions, scored here with scipy: the signal 0.8 x N(0,1) + N(0,1) has a
    # population AUC near 0.75; the model must be clearly above chance and its interval above 0.5.
    assert mw_auc(r.predictions["y"], r.predictions["p"]) == pytest.approx(s["auc"], abs=1e-9)
    assert s["auc"] > 0.68 and s["auc_ci"][0] > 0.6
    assert s["log_loss"] < r.overall["baselines"]["majority"]["log_loss"]

    shuffled = dataclasses.replace(ds, frame=ds.frame.copy())
    rng = np.random.default_rng(9)
    shuffled.frame["label"] = rng.permutation(shuffled.frame["label"].to_numpy())
    r0 = cross_validate(shuffled, FIT, CV, n_boot=400, seed=0)
    s0 = r0.overall["scores"]
    assert s0["auc_ci"][0] < 0.5 < s0["auc_ci"][1]
    assert abs(mw_auc(r0.predictions["y"], r0.predictions["p"]) - 0.5) < 0.06


def test_every_fitted_part_lies_inside_the_training_fold_and_is_purged():
    ds = planted_dataset(1600, seed=2)
    t0, t1 = ds.t0, ds.t1
    for fold in make_folds(t0, t1, CV):
        tr, te = fold.train, fold.test
        fit, val, cal = split_training(t0[tr], t1[tr], FIT)
        used = np.concatenate([tr[fit], tr[val], tr[cal]])
        assert not set(used) & set(te)  # nothing fitted sees a test sample
        # Each earlier part's label windows end before the next part starts (checked pairwise here).
        assert t1[tr[fit]].max() < t0[tr[val]].min()
        assert t1[tr[val]].max() < t0[tr[cal]].min()
        # The training fold itself ends before the test block: walk-forward, purged by label end.
        assert t1[tr].max() < t0[te].min()


def test_calibration_maps_probabilities_as_fitted():
    iso = {"kind": "isotonic", "x": [0.1, 0.5, 0.9], "y": [0.2, 0.4, 0.8]}
    assert apply_calibration(iso, np.array([0.0, 0.3, 0.7, 1.0])).tolist() == pytest.approx([0.2, 0.3, 0.6, 0.8])
    platt = {"kind": "platt", "a": 2.0, "b": -0.5}
    p = np.array([0.25, 0.5, 0.8])
    z = np.log(p / (1 - p))
    assert apply_calibration(platt, p) == pytest.approx(1 / (1 + np.exp(-(2.0 * z - 0.5))))
    assert apply_calibration({"kind": "none"}, p).tolist() == p.tolist()


@pytest.mark.parametrize("kind", ["platt", "isotonic"])
def test_calibration_repairs_an_overconfident_model(kind):
    """Raw P(up) three times too sure of itself (logit x 3): fitted on one half, the calibration brings
    the other half's Brier score close to the true probabilities' own."""
    from pipelines.training.fit import _fit_calibration

    rng = np.random.default_rng(3)
    logit = rng.normal(0, 1, 8000)
    truth = 1 / (1 + np.exp(-logit))
    y = (rng.random(8000) < truth).astype(float)
    raw = 1 / (1 + np.exp(-3 * logit))
    cal = _fit_calibration(kind, raw[:4000], y[:4000])
    brier = lambda p: float(np.mean((p - y[4000:]) ** 2))  # noqa: E731
    fixed = apply_calibration(cal, raw[4000:])
    assert brier(fixed) < brier(raw[4000:]) - 0.02
    assert brier(fixed) < brier(truth[4000:]) + 0.003
    if kind == "platt":  # the map that undoes x3 on the logit is a = 1/3, b = 0
        assert cal["a"] == pytest.approx(1 / 3, abs=0.05) and abs(cal["b"]) < 0.1


def test_the_decision_threshold_is_the_consensus_threshold_of_the_model_alone():
    # Alone, the coordinator's score is (2p - 1)|2p - 1|: at p_threshold it equals the threshold.
    for thr in (0.05, 0.15, 0.5):
        p = p_threshold(thr)
        assert (2 * p - 1) * abs(2 * p - 1) == pytest.approx(thr)


def test_the_promotion_rule():
    champ = [0.69, 0.68, 0.70, 0.69]
    assert compare(champ, [0.68, 0.67, 0.69, 0.68], min_improvement=0.005, min_fold_wins=0.6)["promote"]
    # Better on average, but on 2 of 4 folds only.
    r = compare(champ, [0.60, 0.69, 0.71, 0.68], min_improvement=0.005, min_fold_wins=0.6)
    assert not r["promote"] and r["fold_wins"] == 2 and r["improvement"] == pytest.approx(np.mean(champ) - 0.67)
    assert not compare(champ, [0.689, 0.679, 0.699, 0.689], min_improvement=0.005, min_fold_wins=0.6)["promote"]
    with pytest.raises(ValueError, match="same folds"):
        compare(champ, champ[:3], min_improvement=0, min_fold_wins=0.5)


def test_refusals_are_one_line_and_name_the_problem():
    ds = planted_dataset(300)
    with pytest.raises(ValueError, match=r"^300 labelled samples of 300: too few for the folds \(need 500\)"):
        check_trainable(ds, leak_auc=0.98, min_samples=500)
    one = planted_dataset(600)
    one.frame["label"] = 1.0
    with pytest.raises(ValueError, match=r"^all 600 labelled samples are up: one label class only"):
        check_trainable(one, leak_auc=0.98, min_samples=100)
    other = dataclasses.replace(ds, meta={**ds.meta, "feature_hash": "0123456789abcdef"})
    with pytest.raises(ValueError, match=r"features \(hash 0123456789abcdef\) are not the engine's"):
        check_trainable(other, leak_auc=0.98, min_samples=100)
    # A feature equal to the label: it sees the future.
    leak = planted_dataset(600)
    leak.frame[VECTOR_NAMES[3]] = leak.frame["label"] * 2 - 1 + np.random.default_rng(0).normal(0, 0.1, 600)
    with pytest.raises(ValueError, match=rf"^feature '{VECTOR_NAMES[3]}' alone predicts the label with AUC 1.000"):
        check_trainable(leak, leak_auc=0.98, min_samples=100)


def test_a_future_feature_scores_high_only_when_it_sees_the_future():
    """The feature 'the label itself' wins the CV; the same quantity computed causally (the label of a
    sample whose window has closed by now: 10 samples back) is worth nothing on independent labels."""
    ds = planted_dataset(2000, seed=4)
    ds.frame["label"] = np.random.default_rng(1).integers(0, 2, len(ds.frame)).astype(float)  # no signal anywhere
    name = VECTOR_NAMES[0]
    future = dataclasses.replace(ds, frame=ds.frame.copy())
    future.frame[name] = future.frame["label"]
    causal = dataclasses.replace(ds, frame=ds.frame.copy())
    causal.frame[name] = causal.frame["label"].shift(10)  # samples are 1 s apart, label windows 10 s long
    assert (causal.frame["t1"].shift(10).dropna() <= causal.frame["t0"].iloc[10:]).all()  # known by t0
    a_future = cross_validate(future, FIT, CV, n_boot=0).overall["scores"]["auc"]
    r_causal = cross_validate(causal, FIT, CV, n_boot=400).overall["scores"]
    assert a_future > 0.99
    assert r_causal["auc_ci"][0] < 0.5 < r_causal["auc_ci"][1]


# -- the registry --------------------------------------------------------------------------


def _meta(ds, horizon_ns: int = 10 * NS) -> dict:
    return {"feature_names": list(VECTOR_NAMES), "feature_hash": ENGINE_FEATURE_HASH, "horizon_ns": horizon_ns,
            "instrument_root": "WDO", "data_source": "simulator", "symbols": ["WDOZ26"],
            "created_ts": int(ds.t0.max())}


def _train(ds, model_dir, name, fit_cfg, cfg):
    """What actors.training.train does after the dataset: CV, final fit, save, decide."""
    from actors.training import _card, decide

    folds = make_folds(ds.t0, ds.t1, cfg.training.cv)
    cv = cross_validate(ds, fit_cfg, cfg.training.cv, n_boot=0, folds=folds)
    final = fit_model(ds.X, ds.y, ds.t0, ds.t1, fit_cfg, ds.feature_names)
    meta = {**_meta(ds), "card": _card(ds, cfg.training, fit_cfg, cv, 1.0, None, [])}
    champion = reg.champion(model_dir)
    reg.save_model(model_dir, name, final, meta)
    return decide(model_dir, name, champion, ds, cv, folds, cfg), cv, final


@pytest.fixture(scope="module")
def app_cfg():
    from pipelines.config import config_from_dict

    return config_from_dict({"training": {"cv": dataclasses.asdict(CV), "promotion": {"min_improvement": 0.001,
                                                                                       "min_fold_wins": 0.6}}})


def test_a_worse_challenger_is_not_promoted_and_a_better_one_is(tmp_path, app_cfg):
    ds = planted_dataset(2400, seed=6)
    weak = dataclasses.replace(FIT, num_boost_round=2, eta=0.01, max_depth=1)  # barely moves off the base rate
    d1, cv1, _ = _train(ds, tmp_path, "weak", weak, app_cfg)
    assert d1["promote"] and read_registry(tmp_path)["current"] == "weak"
    worse = dataclasses.replace(FIT, num_boost_round=1, eta=0.001, max_depth=1)
    d2, cv2, _ = _train(ds, tmp_path, "worse", worse, app_cfg)
    assert not d2["promote"] and read_registry(tmp_path)["current"] == "weak"
    # The decision is the rule applied to the champion's recipe refitted on the same folds.
    assert d2["champion_mean"] == pytest.approx(np.mean(cv1.fold_log_loss))
    assert d2["challenger_mean"] == pytest.approx(np.mean(cv2.fold_log_loss))
    d3, cv3, _ = _train(ds, tmp_path, "strong", FIT, app_cfg)
    assert d3["promote"] and d3["champion_mean"] - d3["challenger_mean"] > 0.001
    registry = read_registry(tmp_path)
    assert registry["current"] == "strong"
    assert {v["name"]: v["status"] for v in registry["versions"]} == {"weak": "retired", "worse": "rejected",
                                                                      "strong": "champion"}
    card = (tmp_path / "worse.card.md").read_text()
    assert "Not promoted" in card and "lower on" in card


def test_the_launcher_line_says_what_the_champion_is_worth(tmp_path, app_cfg):
    assert reg.champion_line(tmp_path) == (f"ml model: none in {tmp_path}; the ML voter abstains (train one: "
                                           "scripts/train_model.py train)")
    ds = planted_dataset(1200, seed=2)
    _train(ds, tmp_path, "m1", FIT, app_cfg)
    card = json.loads((tmp_path / "m1.json").read_text())["card"]
    assert reg.champion_line(tmp_path) == f"ml model: m1 v1 (champion): {card['verdict']}"
    assert card["verdict"].startswith("out-of-sample AUC ")


@pytest.mark.ray
def test_the_running_ml_actor_serves_the_new_champion_within_its_reload_interval(ray_session, tmp_path, app_cfg):
    import ray

    from actors.config import ActorConfig
    from actors.hmarl import MODEL_CHECK_S, MLActor
    from pipelines.config import HmarlConfig
    from pipelines.model.messages import FeatureVector

    ds = planted_dataset(2400, seed=6)
    _train(ds, tmp_path, "first", dataclasses.replace(FIT, num_boost_round=2, eta=0.01, max_depth=1), app_cfg)
    actor = ray.remote(MLActor).options(num_cpus=0).remote(
        ActorConfig(HmarlConfig(), symbol="WDOZ26"), model_dir=str(tmp_path), feed_source="simulator")
    row = ds.frame.iloc[100]
    values = tuple(float(row[n]) for n in VECTOR_NAMES)
    vector = FeatureVector("WDOZ26", int(row["t0"]), int(row["t0"]), 1, 5000.0, 1, 1, tuple(VECTOR_NAMES), values)

    def served():
        signals = ray.get(actor.on_round.remote(pickle.dumps([vector])))
        reason = signals[0].reasons[0]
        return reason.split("model=")[1], float(reason.split("p_up=")[1].split()[0])

    assert served()[0] == "first"
    decision, _cv, final = _train(ds, tmp_path, "second", FIT, app_cfg)
    assert decision["promote"]
    promoted_at = time.monotonic()
    while served()[0] != "second":
        assert time.monotonic() - promoted_at < MODEL_CHECK_S + 5, "the new champion was not served in time"
        time.sleep(0.2)
    # The P(up) it serves is the new champion's calibrated prediction, computed here from its parts.
    raw = final.booster.inplace_predict(np.array([values]))
    assert served()[1] == pytest.approx(float(apply_calibration(final.calibration, raw)[0]), abs=5e-4)
    ray.kill(actor)


# -- the command line -------------------------------------------------------------------------


@pytest.fixture()
def run_cli(capsys):
    """scripts/train_model.py's main() in this process (the script's own start-up is tested once below):
    (exit code, stdout, stderr)."""
    from types import SimpleNamespace

    from tests.helpers import load_script

    script = load_script("train_model")

    def run(*args):
        rc = script.main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=rc, stdout=out, stderr=err)

    return run


@pytest.mark.slow
def test_train_validate_list_and_card_on_a_simulated_session(tmp_path, run_cli):
    common = ["--sim", "--date", "2026-11-24", "--start", "09:00", "--end", "09:50", "--seed", "5",
              "--set", "training.cv.n_splits=3", "--set", "training.bootstrap=200", "--quiet"]
    p = run_cli("train", *common, "--out", str(tmp_path), "--name", "sim-a")
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    meta = json.loads((tmp_path / "sim-a.json").read_text())
    card = meta["card"]
    assert out["promoted"] and read_registry(tmp_path)["current"] == "sim-a"
    assert len(card["cv"]["folds"]) == 3 and len(card["backtest"]) == 3
    assert all("error" not in b for b in card["backtest"]), card["backtest"]
    assert meta["calibration"]["kind"] == "platt" and meta["data_source"] == "simulator"
    assert card["label"]["dead_zone_ticks"] == pytest.approx(1 + 2 * 0.97 * 0.25 * 0.84 * 5.40 / 5.0, abs=1e-6)
    # The pooled out-of-sample figures, recomputed here from the per-fold sizes: every test sample once.
    assert card["cv"]["overall"]["tested_samples"] == sum(f["test"] for f in card["cv"]["folds"])
    md = (tmp_path / "sim-a.card.md").read_text()
    assert "Worth out of sample" in md and card["verdict"] in md
    assert "(sim-a.reliability.png)" in md
    png = (tmp_path / "sim-a.reliability.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 900  # 9 in at 100 dpi
    v = run_cli("validate", *common, "--no-backtest")
    assert v.returncode == 0, v.stderr[-2000:]
    assert json.loads(v.stdout.strip().splitlines()[-1])["auc"] == pytest.approx(out["auc"])  # deterministic
    lst = run_cli("list", "--out", str(tmp_path))
    assert lst.returncode == 0 and "sim-a" in lst.stdout and "champion" in lst.stdout


def test_bad_input_is_one_line_exit_2_and_writes_no_model(tmp_path, run_cli):
    cases = [
        (["train", "--sim", "--date", "2026-11-24", "--start", "10:00", "--end", "10:02", "--quiet"], "too few"),
        (["train", "--recordings", str(tmp_path / "none"), "--quiet"], "recordings folder not found"),
        (["train", "--sim", "--set", "training.cv.n_test_groups=9", "--quiet"], "training.cv.n_test_groups"),
        (["train", "--quiet"], "say what to train on"),
        (["promote", "nope"], "no model 'nope'"),
    ]
    for args, message in cases:
        p = run_cli(*args, "--out", str(tmp_path / "models"))
        assert p.returncode == 2, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, p.stderr)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").glob("*.ubj"))


def test_a_dataset_of_other_features_is_refused_by_the_script(tmp_path):
    ds = planted_dataset(400)
    ds.meta["feature_hash"] = "ffffffffffffffff"
    ds.save(tmp_path / "old.parquet")
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "train_model.py"), "train", "--dataset",
                        str(tmp_path / "old.parquet"), "--out", str(tmp_path / "m"), "--quiet"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [f"train_model: dataset {tmp_path / 'old.parquet'}: feature_hash "
                                             f"ffffffffffffffff but the engine's is {ENGINE_FEATURE_HASH}: the features "
                                             f"were defined differently when it was built; rebuild it"]
    assert not (tmp_path / "m").exists()


def test_next_retrain_slot_is_the_next_weekday_after_the_close():
    from tests.helpers import load_script

    tm = load_script("train_model")
    from pipelines.model.clock import SAO_PAULO
    import datetime as dt

    fri = dt.datetime(2026, 12, 4, 19, 0, tzinfo=SAO_PAULO)  # a Friday, after 18:45
    assert tm.next_slot(fri, "18:45") == dt.datetime(2026, 12, 7, 18, 45, tzinfo=SAO_PAULO)  # Monday
    thu = dt.datetime(2026, 12, 3, 17, 0, tzinfo=SAO_PAULO)
    assert tm.next_slot(thu, "18:45") == dt.datetime(2026, 12, 3, 18, 45, tzinfo=SAO_PAULO)
    utc = dt.datetime(2026, 12, 3, 21, 0, tzinfo=dt.timezone.utc)  # 18:00 in Sao Paulo
    assert tm.next_slot(utc, "18:45") == dt.datetime(2026, 12, 3, 18, 45, tzinfo=SAO_PAULO)


def test_training_config_defaults_match_the_yaml():
    from pipelines.config import load_config

    assert load_config().training == TrainingConfig()


@pytest.fixture(scope="module")
def three_days(tmp_path_factory):
    """Three simulated mornings recorded into one recordings root, as a running system leaves them."""
    import shutil

    from actors.backtest_run import BacktestInput
    from actors.model_backtest import record_input

    base = tmp_path_factory.mktemp("rec")
    root = base / "recordings"
    for i, day in enumerate(("2026-11-23", "2026-11-24", "2026-11-25")):
        part = base / f"part-{i}"
        record_input(BacktestInput("simulator", start=f"{day}T09:00", end=f"{day}T09:40", seed=11 + i, rate=40,
                                   profile="day"), part)
        for d in part.glob("*/symbol=*/date=*"):
            target = root / d.relative_to(part)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(d), str(target))
    return root


@pytest.mark.slow
def test_retrain_uses_the_last_n_days_and_proposes_a_challenger(tmp_path, three_days, run_cli):
    sets = ["--set", f"training.retrain.recordings={three_days}", "--set", "training.retrain.trials=0",
            "--set", "training.cv.n_splits=3", "--set", "training.bootstrap=0", "--set", "training.backtest=false",
            "--quiet"]
    first = run_cli("--retrain", *sets, "--set", "training.retrain.days=1", "--name", "r1",
                    "--out", str(tmp_path), "--data-source", "simulator")
    assert first.returncode == 0, first.stderr[-2000:]
    card = json.loads((tmp_path / "r1.json").read_text())["card"]
    assert card["data"]["start"].startswith("2026-11-25T09:00") and card["data"]["end"].startswith("2026-11-25T09:39")
    second = run_cli("--retrain", *sets, "--set", "training.retrain.days=2", "--name", "r2",
                     "--out", str(tmp_path), "--data-source", "simulator")
    assert second.returncode == 0, second.stderr[-2000:]
    meta = json.loads((tmp_path / "r2.json").read_text())
    assert meta["card"]["data"]["start"].startswith("2026-11-24T09:00")
    assert meta["data_source"] == "simulator"
    # r2 was compared with the champion r1's recipe on r2's folds; the registry records the outcome.
    promo = meta["card"]["promotion"]
    assert promo["champion"] == "r1" and promo["folds"] == 3
    status = {v["name"]: v["status"] for v in read_registry(tmp_path)["versions"]}
    assert status["r2"] == ("champion" if promo["promote"] else "rejected")
    # The schedule runs the same retrain at its slot (here: a time already past).
    sched = run_cli("schedule", *sets, "--set", "training.retrain.days=1", "--once-at", "2026-01-01T00:00:00-03:00",
                    "--out", str(tmp_path), "--data-source", "simulator")
    assert sched.returncode == 0, sched.stderr[-2000:]
    assert len(read_registry(tmp_path)["versions"]) == 3
