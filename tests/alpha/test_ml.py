"""The ML voter (pipelines/alpha/ml.py): training, the model registry, refusal and reload.

Real XGBoost on simulator feature vectors. Labels, metrics and predictions are
recomputed here independently: labels by a per-row scan of the price path,
AUC from average ranks (Mann-Whitney) and by counting pairs, predictions by a
Booster loaded from the saved file.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from pipelines.features.catalog import catalog_entries
from pipelines.features.engine import VECTOR_NAMES, SymbolAnalytics
from pipelines.alpha.ml import (
    ENGINE_FEATURE_HASH,
    MLModel,
    data_kind,
    feature_hash,
    instrument_root,
    label_vectors,
    read_registry,
    register_model,
    train_model,
)
from pipelines.model.messages import FeatureVector, FlowState, LiquidityState
from tests.helpers import simulated_events

SYM = "WDOZ26"
NS_PER_S = 1_000_000_000
HORIZON = 5 * NS_PER_S


@pytest.fixture(scope="module")
def vectors() -> list[FeatureVector]:
    events = simulated_events(seed=5, rate=60.0, max_events=20_000, symbol=SYM)
    out: list = []
    SymbolAnalytics(SYM, 0.5).on_events(events, out)
    return [m for m in out if type(m) is FeatureVector]


@pytest.fixture(scope="module")
def model_a(vectors, tmp_path_factory) -> Path:
    """A trained, registered model; tests copy it into their own directories."""
    out = tmp_path_factory.mktemp("models_a")
    train_model(vectors, HORIZON, out, "model-a", seed=0)
    return out


def install(src_dir: Path, name: str, dst_dir: Path, new_name: str | None = None, **meta_changes) -> None:
    """Copy a model's files into dst_dir (optionally renamed, metadata edited) and register it."""
    new_name = new_name or name
    dst_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(src_dir / f"{name}.ubj", dst_dir / f"{new_name}.ubj")
    meta = json.loads((src_dir / f"{name}.json").read_text())
    meta.update(name=new_name, **meta_changes)
    (dst_dir / f"{new_name}.json").write_text(json.dumps(meta))
    register_model(dst_dir, new_name)


def booster_predict(path: Path, X: np.ndarray) -> np.ndarray:
    b = xgb.Booster()
    b.load_model(str(path))
    return b.predict(xgb.DMatrix(X, missing=np.nan, feature_names=list(VECTOR_NAMES)))


def scan_labels(symbols, ts, prices, horizon) -> list[float]:
    """Row by row: the last price of the same symbol at or before ts + horizon vs the row's price."""
    out = []
    for i in range(len(ts)):
        own = [k for k in range(len(ts)) if symbols[k] == symbols[i]]
        own_ts = [ts[k] for k in own]
        if ts[i] + horizon > max(own_ts):
            out.append(math.nan)
            continue
        j = own[bisect.bisect_right(own_ts, ts[i] + horizon) - 1]
        out.append(1.0 if prices[j] > prices[i] else 0.0 if prices[j] < prices[i] else math.nan)
    return out


def rank_auc(y: np.ndarray, p: np.ndarray) -> float:
    order = np.argsort(p, kind="mergesort")
    _, first, counts = np.unique(p[order], return_index=True, return_counts=True)
    ranks = np.empty(len(p))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based, ties share their mean rank
    n1, n0 = y.sum(), len(y) - y.sum()
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def pair_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1][:, None], p[y == 0][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


# -- feature hash ---------------------------------------------------------------------


def test_feature_hash_fingerprints_definitions_in_order():
    entries = catalog_entries()
    by_name = {e["name"]: e for e in entries}
    rows = [[by_name[n][k] for k in ("name", "group", "formula", "window", "unit", "warmup")] for n in VECTOR_NAMES]
    text = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    assert ENGINE_FEATURE_HASH == hashlib.sha256(text.encode()).hexdigest()[:16]
    swapped = (VECTOR_NAMES[1], VECTOR_NAMES[0]) + VECTOR_NAMES[2:]
    assert feature_hash(swapped) != ENGINE_FEATURE_HASH
    edited = [dict(e, formula=e["formula"] + " ") if e["name"] == "tape_speed" else e for e in entries]
    assert feature_hash(VECTOR_NAMES, edited) != ENGINE_FEATURE_HASH
    with pytest.raises(ValueError, match="'no_such_feature'"):
        feature_hash(("volatility_10", "no_such_feature"))


# -- labels and training --------------------------------------------------------------


def fv(sym: str, t_s: float, price: float) -> FeatureVector:
    return FeatureVector(sym, int(t_s * NS_PER_S), 0, 0, price, 1, 1, ("x",), (0.0,))


def test_labels_on_a_hand_built_path():
    # Horizon 10 s. Row 3's future price equals its own (dropped); row 4's horizon ends exactly
    # on the last trade (kept); row 5's runs past the data. The other symbol's print at 9 s
    # (price 500) must not leak into row 0.
    path = [fv("A", 0, 100), fv("A", 3, 101), fv("B", 9, 500), fv("A", 8, 101), fv("A", 12, 99),
            fv("A", 15, 99), fv("A", 25, 102)]
    got = label_vectors(path, 10 * NS_PER_S)
    want_a = [1.0, 0.0, 0.0, math.nan, 1.0, math.nan]  # A's rows by time: 0, 3, 8, 12, 15, 25 s
    a_rows = [0, 1, 3, 4, 5, 6]
    np.testing.assert_array_equal(got[a_rows], want_a)
    assert math.isnan(got[2])  # B's only row: its horizon is past B's data
    assert np.array_equal(got, scan_labels([v.symbol for v in path], [v.ts_event for v in path],
                                           [v.price for v in path], 10 * NS_PER_S), equal_nan=True)


def test_training_metadata_and_out_of_sample_metrics(vectors, model_a):
    meta = json.loads((model_a / "model-a.json").read_text())
    for key in ("name", "version", "created_ts", "registered_at", "feature_names", "feature_hash", "training_window",
                "test_window", "label", "horizon_ns", "metrics", "xgboost_version"):
        assert key in meta, key
    assert meta["feature_hash"] == ENGINE_FEATURE_HASH and meta["feature_names"] == list(VECTOR_NAMES)
    assert (meta["name"], meta["version"], meta["horizon_ns"]) == ("model-a", 1, HORIZON)
    assert meta["xgboost_version"] == xgb.__version__
    assert meta["created_ts"] == max(v.ts_event for v in vectors)
    assert read_registry(model_a)["current"] == "model-a"

    ts = np.array([v.ts_event for v in vectors])
    y = np.array(scan_labels([SYM] * len(vectors), ts.tolist(), [v.price for v in vectors], HORIZON))
    labelled = ~np.isnan(y)
    tw, sw, m = meta["training_window"], meta["test_window"], meta["metrics"]
    train = labelled & (ts >= tw["start_ns"]) & (ts <= tw["end_ns"])
    test = labelled & (ts >= sw["start_ns"]) & (ts <= sw["end_ns"])
    # The test slice is the end of the data, about a quarter of the labelled rows; every
    # training label (ts .. ts + horizon) ends before it starts.
    assert test.sum() == m["rows_test"] == sw["rows"] and train.sum() == m["rows_train"] == tw["rows"]
    assert not (labelled & (ts > sw["end_ns"])).any()
    assert abs(test.sum() / labelled.sum() - 0.25) < 0.01
    assert (ts[train] + HORIZON < sw["start_ns"]).all()
    assert not (labelled & (ts + HORIZON < sw["start_ns"]) & ~train).any()  # and no usable row was left out

    X = np.array([v.values for v in vectors])
    p = booster_predict(model_a / "model-a.ubj", X[test])
    yt = y[test]
    assert m["auc"] == pytest.approx(rank_auc(yt, p), abs=1e-9)
    assert m["auc"] == pytest.approx(pair_auc(yt, p), abs=1e-9)
    assert m["accuracy"] == pytest.approx(np.mean((p > 0.5) == (yt == 1)), abs=1e-12)
    q = np.clip(p.astype(float), 1e-15, 1 - 1e-15)
    assert m["logloss"] == pytest.approx(-np.mean(yt * np.log(q) + (1 - yt) * np.log(1 - q)), rel=1e-6)


def test_training_refuses_bad_requests(vectors, model_a):
    with pytest.raises(FileExistsError, match="model-a"):
        train_model(vectors, HORIZON, model_a, "model-a")
    with pytest.raises(ValueError, match="too few"):
        train_model(vectors[:40], HORIZON, model_a, "tiny")
    with pytest.raises(ValueError, match="model name"):
        train_model(vectors, HORIZON, model_a, "../escape")


# -- the voter ------------------------------------------------------------------------


def test_predict_matches_an_independent_booster(vectors, model_a):
    ml = MLModel(model_a)
    assert ml.load_latest() and ml.stats()["model"] == "model-a"
    sample = vectors[:50] + vectors[::40]  # warm-up rows with NaN features included
    assert any(math.isnan(x) for x in sample[0].values)
    want = booster_predict(model_a / "model-a.ubj", np.array([v.values for v in sample]))
    np.testing.assert_allclose(ml.predict(sample), want, rtol=0, atol=1e-7)
    assert ml.stats()["predictions"] == len(sample)
    names = list(VECTOR_NAMES)
    names[3], names[7] = names[7], names[3]
    with pytest.raises(ValueError, match=rf"vector 1 .*feature 3 is '{names[3]}'.*expects '{VECTOR_NAMES[3]}'"):
        ml.predict([vectors[0], vectors[1]._replace(names=tuple(names))])


def test_on_analytics_votes_on_the_last_vector(vectors, model_a):
    ml = MLModel(model_a, agent_id="ml-test", horizon_ns=30 * NS_PER_S)
    ml.load_latest()
    v1, v2 = vectors[-2], vectors[-1]
    batch = [FlowState(SYM, v1.ts_event, 0, v1.seq, {}), v1, v2, LiquidityState(SYM, v2.ts_event, 0, v2.seq, {})]
    p = float(booster_predict(model_a / "model-a.ubj", np.array([v2.values]))[0])
    [sig] = ml.on_analytics(batch)
    assert (sig.agent, sig.symbol, sig.ts_event, sig.seq, sig.price, sig.horizon_ns) == (
        "ml-test", SYM, v2.ts_event, v2.seq, v2.price, 30 * NS_PER_S)
    assert sig.direction == pytest.approx(2 * p - 1, abs=1e-6)
    assert sig.confidence == pytest.approx(abs(2 * p - 1), abs=1e-6)
    assert sig.reasons == (f"p_up={p:.3f} model=model-a",)
    assert ml.on_analytics([batch[0]]) == []  # no vector, no vote
    picky = MLModel(model_a, min_edge=1.0)
    picky.load_latest()
    assert picky.on_analytics(batch) == [] and picky.stats()["below_edge"] == 1
    bad = v2._replace(names=v2.names[:-1], values=v2.values[:-1])
    assert ml.on_analytics([bad]) == [] and ml.stats()["bad_vectors"] == 1
    assert "feature 72 is '<end>'" in ml.stats()["error"]


def test_a_model_with_another_feature_hash_is_refused(vectors, model_a, tmp_path):
    install(model_a, "model-a", tmp_path)
    ml = MLModel(tmp_path)
    assert ml.load_latest()
    before = ml.predict(vectors[-5:])
    install(model_a, "model-a", tmp_path, "changed-defs", feature_hash="0123456789abcdef")
    assert ml.maybe_reload() is False
    assert "0123456789abcdef" in ml.error and ENGINE_FEATURE_HASH in ml.error
    s = ml.stats()
    assert (s["model"], s["version"], s["refused"]) == ("model-a", 1, 1)
    assert ml.predict(vectors[-5:]) == before
    assert ml.maybe_reload() is False and ml.stats()["refused"] == 1  # registry unchanged: not re-read


def test_a_model_with_swapped_feature_order_is_refused(vectors, model_a, tmp_path):
    swapped = list(VECTOR_NAMES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    frame = pd.DataFrame(np.array([v.values for v in vectors]), columns=list(VECTOR_NAMES))
    frame["ts_event"] = [v.ts_event for v in vectors]
    frame["price"] = [v.price for v in vectors]
    meta = train_model(frame, HORIZON, tmp_path, "swapped", feature_names=swapped)
    assert meta["feature_hash"] == feature_hash(swapped) != ENGINE_FEATURE_HASH
    ml = MLModel(tmp_path)
    assert ml.load_latest() is False
    assert meta["feature_hash"] in ml.error and ENGINE_FEATURE_HASH in ml.error
    assert ml.stats()["model"] is None and ml.on_analytics(vectors[-1:]) == []
    # The same order with a forged engine hash: caught by the names themselves.
    install(tmp_path, "swapped", tmp_path, "forged", feature_hash=ENGINE_FEATURE_HASH)
    assert ml.maybe_reload() is False
    assert f"feature 0 is '{swapped[0]}'" in ml.error and ml.stats()["refused"] == 2


def test_a_newer_registered_model_is_picked_up(vectors, model_a, tmp_path):
    install(model_a, "model-a", tmp_path)
    ml = MLModel(tmp_path)
    ml.load_latest()
    X = np.array([v.values for v in vectors[-300:]])
    p_a = ml.predict(vectors[-300:])
    assert ml.maybe_reload() is False  # nothing new
    meta_b = train_model(vectors, HORIZON, tmp_path, "model-b", params={"max_depth": 2, "num_boost_round": 20})
    assert meta_b["version"] == 2
    assert ml.maybe_reload() is True
    assert (ml.stats()["model"], ml.stats()["version"]) == ("model-b", 2)
    p_b = ml.predict(vectors[-300:])
    np.testing.assert_allclose(p_b, booster_predict(tmp_path / "model-b.ubj", X), atol=1e-7)
    assert np.abs(np.array(p_b) - np.array(p_a)).max() > 1e-3
    assert ml.maybe_reload() is False


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_no_model_abstains(vectors, tmp_path, where):
    model_dir = tmp_path / "models"
    if where == "empty":
        model_dir.mkdir()
    ml = MLModel(model_dir)
    assert ml.load_latest() is False and ml.maybe_reload() is False
    assert ml.on_analytics(vectors[-3:]) == [] and ml.on_analytics(vectors[-1:]) == []
    s = ml.stats()
    assert (s["model"], s["abstained"], s["refused"], s["error"]) == (None, 2, 0, None)
    with pytest.raises(RuntimeError, match="no ML model"):
        ml.predict(vectors[-1:])


# -- the market a model was trained on ------------------------------------------------


def test_instrument_roots_and_data_kinds():
    got = {s: instrument_root(s) for s in ("WDOZ26", "WINZ26", "WDOFUT", "WINFUT", "ESH22", "ESZ5", "DOLF27", "DI1F27",
                                           "CLF3", "WIN", "PETR4")}
    assert got == {"WDOZ26": "WDO", "WINZ26": "WIN", "WDOFUT": "WDO", "WINFUT": "WIN", "ESH22": "ES", "ESZ5": "ES",
                   "DOLF27": "DOL", "DI1F27": "DI1", "CLF3": "CL", "WIN": "WIN", "PETR4": "PETR4"}
    assert [data_kind(s) for s in ("simulator", "replay", "profitdll", "bridge", "cme_es", None)] == [
        "simulated", "real", "real", "real", "real", None]


@pytest.fixture(scope="module")
def sim_wdo(vectors, tmp_path_factory) -> Path:
    """A small real model of simulated WDO (10 trees), recorded as trained on the simulator."""
    out = tmp_path_factory.mktemp("sim_wdo")
    meta = train_model(vectors, HORIZON, out, "wdo-sim", params={"num_boost_round": 10}, data_source="simulator")
    assert (meta["instrument_root"], meta["data_source"], meta["data_kind"]) == ("WDO", "simulator", "simulated")
    return out


def batches(vectors, symbol: str, n: int = 3) -> list[list[FeatureVector]]:
    """n one-vector analytics batches of ``symbol`` (the simulator's vectors relabelled)."""
    return [[v._replace(symbol=symbol)] for v in vectors[-n:]]


def votes(ml: MLModel, vectors, symbol: str) -> int:
    return sum(len(ml.on_analytics(b)) for b in batches(vectors, symbol))


def ml_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "quantumtrader.ml" and r.levelno >= logging.WARNING]


def test_a_wdo_simulator_model_abstains_on_es_and_says_so_once(vectors, sim_wdo, caplog):
    caplog.set_level(logging.INFO, logger="quantumtrader.ml")
    ml = MLModel(sim_wdo, symbol="ESH22", feed_source="replay")
    assert ml.load_latest() is True  # loaded (it is a good model), but not for this market
    assert votes(ml, vectors, "ESH22") == 0
    s = ml.stats()
    want = ("model wdo-sim v1 was trained on WDO (simulator), ESH22 is ES from replay; retrain on this market, "
            "or set hmarl.ml_allow_other_market: true to use it anyway")
    assert (s["abstain_reason"], s["abstained"], s["signals"], s["predictions"]) == (want, 3, 0, 0)
    assert (s["model"], s["model_market"], s["symbol"], s["feed_source"]) == (
        "wdo-sim", "WDO (simulator)", "ESH22", "replay")
    assert ml_lines(caplog) == [f"ml:ESH22 abstains: {want}"]  # one line, at load, not one per batch
    assert ml.maybe_reload() is False and ml_lines(caplog) == [f"ml:ESH22 abstains: {want}"]


def test_allow_other_market_votes_anyway_and_logs_it_once(vectors, sim_wdo, caplog):
    caplog.set_level(logging.INFO, logger="quantumtrader.ml")
    ml = MLModel(sim_wdo, symbol="ESH22", feed_source="replay", allow_other_market=True)
    ml.load_latest()
    assert votes(ml, vectors, "ESH22") == 3
    assert ml.stats()["abstain_reason"] is None and ml.stats()["signals"] == 3
    [line] = ml_lines(caplog)
    assert line.startswith("ml:ESH22 votes on another market: model wdo-sim v1 was trained on WDO (simulator), "
                           "ESH22 is ES from replay") and "hmarl.ml_allow_other_market is true" in line


def test_the_same_market_votes(vectors, sim_wdo, caplog):
    caplog.set_level(logging.INFO, logger="quantumtrader.ml")
    for feed_source in ("simulator", None):  # the simulator's WDOZ26; an unknown feed compares roots only
        ml = MLModel(sim_wdo, symbol=SYM, feed_source=feed_source)
        ml.load_latest()
        assert votes(ml, vectors, SYM) == 3
        s = ml.stats()
        assert (s["abstain_reason"], s["abstained"], s["signals"]) == (None, 0, 3)
    assert ml_lines(caplog) == []
    ml = MLModel(sim_wdo, symbol="WDOF27", feed_source="simulator")  # another WDO contract: the same market
    ml.load_latest()
    assert votes(ml, vectors, "WDOF27") == 3


def test_a_simulated_model_abstains_on_real_data_of_its_instrument(vectors, sim_wdo):
    ml = MLModel(sim_wdo, symbol=SYM, feed_source="profitdll")
    ml.load_latest()
    assert votes(ml, vectors, SYM) == 0
    reason = ml.stats()["abstain_reason"]
    assert reason.startswith("model wdo-sim v1 was trained on simulated WDO data (simulator), "
                             "WDOZ26 is real WDO data from profitdll;")


def test_without_a_symbol_each_vector_says_which_market_it_is(vectors, sim_wdo):
    ml = MLModel(sim_wdo)  # the call MLActor made before markets were recorded
    ml.load_latest()
    assert votes(ml, vectors, SYM) == 3
    assert votes(ml, vectors, "ESH22") == 0
    assert "ESH22 is ES" in ml.stats()["abstain_reason"] and ml.stats()["symbol"] == "ESH22"


def test_a_registry_entry_without_a_market_abstains(vectors, sim_wdo, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="quantumtrader.ml")
    meta = json.loads((sim_wdo / "wdo-sim.json").read_text())
    for key in ("instrument_root", "data_source", "data_kind"):
        del meta[key]  # a model trained before markets were recorded
    meta["name"] = "old"
    shutil.copy(sim_wdo / "wdo-sim.ubj", tmp_path / "old.ubj")
    (tmp_path / "old.json").write_text(json.dumps(meta))
    register_model(tmp_path, "old")
    [entry] = read_registry(tmp_path)["versions"]
    assert (entry["instrument_root"], entry["data_source"]) == (None, None)

    ml = MLModel(tmp_path, symbol=SYM, feed_source="simulator")
    assert ml.load_latest()
    assert votes(ml, vectors, SYM) == 0
    reason = ml.stats()["abstain_reason"]
    assert reason.startswith("model old v1 has no market recorded") and "WDOZ26 is WDO from simulator" in reason
    assert ml_lines(caplog) == [f"ml:WDOZ26 abstains: {reason}"]
    allowed = MLModel(tmp_path, symbol=SYM, feed_source="simulator", allow_other_market=True)
    allowed.load_latest()
    assert votes(allowed, vectors, SYM) == 3
    # Registering a model of this market ends the abstention at the next reload.
    install(sim_wdo, "wdo-sim", tmp_path, "wdo-again")
    assert ml.maybe_reload() is True
    assert votes(ml, vectors, SYM) == 3 and ml.stats()["abstain_reason"] is None


def test_training_records_one_market(vectors, tmp_path):
    half = len(vectors) // 2
    mixed = vectors[:half] + [v._replace(symbol="WINZ26") for v in vectors[half:]]
    with pytest.raises(ValueError, match=r"several instruments \(WDO, WIN\)"):
        train_model(mixed, HORIZON, tmp_path, "mixed")
    meta = train_model(mixed, HORIZON, tmp_path, "mixed", market_root="wdo", data_source="replay",
                       params={"num_boost_round": 5})
    assert (meta["instrument_root"], meta["data_source"], meta["data_kind"]) == ("WDO", "replay", "real")
    with pytest.raises(ValueError, match="data_source 'sim'"):
        train_model(vectors, HORIZON, tmp_path, "typo", data_source="sim")
