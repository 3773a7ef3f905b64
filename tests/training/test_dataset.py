"""The training samples: the vectors the live ML voter gets, features that never see later events,
labels recomputed here from the trade tape, a dead zone of at least the round trip's cost."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipelines.alpha.ml import ENGINE_FEATURE_HASH
from pipelines.features.engine import VECTOR_NAMES, SymbolAnalytics
from pipelines.model.messages import FeatureVector, Trade
from pipelines.training.config import LabelConfig
from pipelines.training.dataset import Dataset, build_dataset, cost_ticks
from tests.helpers import simulated_events

NS = 1_000_000_000
SYM = "WDOZ26"
EVERY = NS  # the default decision clock: 1 s


@pytest.fixture(scope="module")
def events():
    return simulated_events(seed=21, rate=200, max_events=40_000)


@pytest.fixture(scope="module")
def ds(events):
    return build_dataset(events, SYM, 0.5, LabelConfig(horizon_s=5.0, price="trade"), decision_every_ns=EVERY)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


def test_samples_are_the_vectors_the_live_ml_voter_gets(events, ds):
    """Every trade's vector from the engine, then the rounds' rule (actors.rounds.DecisionRounds.on_output):
    a round ends at the first vector at or after the next boundary of the decision clock."""
    out: list = []
    SymbolAnalytics(SYM, 0.5, vector_every_ns=0).on_events(events, out)
    vectors = [m for m in out if type(m) is FeatureVector]
    picked, next_ns = [], 0
    for v in vectors:
        if v.ts_event >= next_ns:
            picked.append(v)
            next_ns = (v.ts_event // EVERY + 1) * EVERY
    assert ds.frame["t0"].tolist() == [v.ts_event for v in picked]
    assert ds.feature_names == VECTOR_NAMES and ds.meta["feature_hash"] == ENGINE_FEATURE_HASH
    assert _same(ds.frame[list(VECTOR_NAMES)].to_numpy(), np.array([v.values for v in picked]))


def test_features_never_see_events_after_the_sample(events, ds):
    cut = events[len(events) // 2].ts_event
    early = build_dataset([e for e in events if e.ts_event < cut], SYM, 0.5, LabelConfig(horizon_s=5.0, price="trade"),
                          decision_every_ns=EVERY)
    n = len(early.frame)
    assert n > 50 and early.frame["t0"].tolist() == ds.frame["t0"].iloc[:n].tolist()
    assert _same(early.frame[list(VECTOR_NAMES)].to_numpy(), ds.frame[list(VECTOR_NAMES)].iloc[:n].to_numpy())
    # Labels are unknown (not guessed) where the shortened tape ends inside their window.
    tail = early.frame[early.frame["t0"] + 5 * NS > max(e.ts_event for e in events if e.ts_event < cut)]
    assert len(tail) and tail["label"].isna().all() and (tail["barrier"] == "open").all()


def test_fixed_horizon_labels_recomputed_from_the_tape(events, ds):
    trades = [(e.ts_event, e.price) for e in events if isinstance(e, Trade)]
    last_ts = trades[-1][0]
    dead = 1 + 2 * 0.97 * 0.25 * 0.84 * 5.40 / (0.5 * 10.0)  # spread + B3 fee both ways, in WDO ticks
    assert ds.meta["label"]["dead_zone_ticks"] == pytest.approx(dead)
    rows = ds.frame.iloc[::37]
    for t0, p0, label, t1 in zip(rows["t0"], rows["price"], rows["label"], rows["t1"]):
        assert t1 == t0 + 5 * NS
        if t0 + 5 * NS > last_ts:
            assert np.isnan(label)
            continue
        after = [p for ts, p in trades if t0 < ts <= t0 + 5 * NS]  # strictly after the sample
        move = (after[-1] - p0) / 0.5 if after else 0.0
        want = 1.0 if move > dead else 0.0 if move < -dead else np.nan
        assert _same(np.array([label]), np.array([want])), (t0, move)


def test_triple_barrier_labels_recomputed_from_the_tape(events):
    cfg = LabelConfig(kind="triple_barrier", horizon_s=2.0, tp_ticks=3, sl_ticks=2, price="trade")
    tb = build_dataset(events, SYM, 0.5, cfg, decision_every_ns=EVERY)
    trades = [(e.ts_event, e.price) for e in events if isinstance(e, Trade)]
    dead = tb.meta["label"]["dead_zone_ticks"] * 0.5
    seen = set()
    for _, r in tb.frame.iterrows():
        window = [(ts, p) for ts, p in trades if r.t0 < ts <= r.t0 + 2 * NS]
        hit = next(((ts, "tp" if p >= r.price + 1.5 else "sl") for ts, p in window
                    if p >= r.price + 1.5 or p <= r.price - 1.0), None)
        if hit:
            assert (r.barrier, r.t1, r.label) == (hit[1], hit[0], 1.0 if hit[1] == "tp" else 0.0)
        elif r.t0 + 2 * NS > trades[-1][0]:
            assert r.barrier == "open" and np.isnan(r.label)
        else:
            move = window[-1][1] - r.price if window else 0.0
            want = 1.0 if move > dead else 0.0 if move < -dead else np.nan
            assert r.barrier == "time" and r.t1 == r.t0 + 2 * NS and _same(np.array([r.label]), np.array([want]))
        seen.add(r.barrier)
    assert {"tp", "sl", "time"} <= seen


def test_the_dead_zone_is_at_least_the_round_trip_cost():
    # WIN: R$0.20/point, tick 5 points = R$1 a tick; B3 day-trade fee 1.97 x 0.2 x 0.65 = R$0.2561 a side.
    assert cost_ticks("WINZ26", 5.0, 1.0) == pytest.approx(1 + 2 * 1.97 * 0.2 * 0.65 / 1.0)
    assert cost_ticks("WDOZ26", 0.5, 2.0) == pytest.approx(2 + 2 * 0.97 * 0.25 * 0.84 * 5.40 / 5.0)
    # ES has no B3 schedule: the spread alone.
    assert cost_ticks("ESH22", 0.25, 1.0) == pytest.approx(1.0)
    trades = [Trade(SYM, i * NS, i * NS, i + 1, 5000.0 + (i % 7) * 0.5, 1, 1) for i in range(1, 400)]
    wide = build_dataset(trades, SYM, 0.5, LabelConfig(horizon_s=3.0, dead_zone_ticks=4.0, price="trade"), decision_every_ns=NS)
    narrow = build_dataset(trades, SYM, 0.5, LabelConfig(horizon_s=3.0, dead_zone_ticks=0.5, price="trade"), decision_every_ns=NS)
    assert wide.meta["label"]["dead_zone_ticks"] == 4.0
    assert narrow.meta["label"]["dead_zone_ticks"] == pytest.approx(cost_ticks(SYM, 0.5, 1.0))


def test_save_and_load_round_trip_and_refuse_other_features(ds, tmp_path):
    ds.save(tmp_path / "d.parquet")
    back = Dataset.load(tmp_path / "d.parquet")
    assert back.feature_names == ds.feature_names and back.meta == ds.meta
    assert _same(back.X, ds.X) and back.y.tolist() == pytest.approx(ds.y.tolist(), nan_ok=True)
    other = dataclasses.replace(ds, meta={**ds.meta, "feature_hash": "abc"})
    other.save(tmp_path / "o.parquet")
    with pytest.raises(ValueError, match=r"feature_hash abc but the engine's is .*rebuild it"):
        Dataset.load(tmp_path / "o.parquet")
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        Dataset.load(tmp_path / "x.parquet")


def test_no_trades_is_one_line():
    with pytest.raises(ValueError, match=r"^no trades of WDOZ26 in the input$"):
        build_dataset([], SYM, 0.5, LabelConfig(), decision_every_ns=NS)


def test_mid_price_labels_recomputed_from_the_book(events):
    """The default: moves of the best bid/ask mid, without the bounce of last-trade prices."""
    mid = build_dataset(events, SYM, 0.5, LabelConfig(horizon_s=5.0), decision_every_ns=EVERY)
    books = [(e.ts_event, (e.bid_px[0] + e.ask_px[0]) / 2) for e in events
             if type(e).__name__ == "BookSnapshot" and e.bid_px and e.ask_px]
    dead = mid.meta["label"]["dead_zone_ticks"]
    assert mid.meta["label"]["price"] == "mid"
    checked = 0
    for t0, p0, label in zip(mid.frame["t0"], mid.frame["price"], mid.frame["label"]):
        before = [m for ts, m in books if ts <= t0]
        if not before:
            assert np.isnan(p0) and np.isnan(label)
            continue
        assert p0 == before[-1]  # the mid at the sample: the last book at or before it
        if t0 + 5 * NS > books[-1][0]:
            assert np.isnan(label)
            continue
        after = [m for ts, m in books if t0 < ts <= t0 + 5 * NS]
        move = (after[-1] - p0) / 0.5 if after else 0.0
        want = 1.0 if move > dead else 0.0 if move < -dead else np.nan
        assert _same(np.array([label]), np.array([want]))
        checked += 1
    assert checked > 100 and mid.frame["label"].notna().sum() > 20
