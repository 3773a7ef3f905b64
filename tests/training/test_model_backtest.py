"""actors/model_backtest.py: a simulator session recorded and replayed event for event, and each
fold's model backtested alone on its window.

One 15-minute simulator session (seed 1, 40 events/s) is recorded; a model is fitted on the
samples of its first 7 minutes whose labels are known before the split (LabelConfig defaults),
then backtested alone on two later 4-minute windows. The seed is pinned because its model both
buys and sells and closes round trips in both windows (the P&L check below is then not about an
empty table); the test says so when that stops being true. The P&L is recomputed here from the
fills and the market's trades; the recording is compared with the simulator field by field.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from actors.backtest_run import BacktestInput, backtest, backtest_config
from actors.model_backtest import fold_backtests, ns_iso, record_input
from actors.sweep import read_events
from pipelines.adapters.files.replay import parse_bound
from pipelines.alpha.ml import ENGINE_FEATURE_HASH
from pipelines.model.clock import NS_PER_S
from pipelines.model.instruments import tick_size_for
from pipelines.model.messages import BookSnapshot, BookUpdate, Trade
from pipelines.training.config import FitConfig, LabelConfig
from pipelines.training.dataset import build_dataset
from pipelines.training.fit import fit_model
from pipelines.training.registry import save_model

SYM = "WDOZ26"
POINT_VALUE = 10.0  # R$ per WDO point
SESSION = BacktestInput("simulator", start="2026-11-23T10:00:00", end="2026-11-23T10:15:00", seed=1, rate=40)
START_NS = parse_bound(SESSION.start, is_end=False)
SPLIT_NS = START_NS + 7 * 60 * NS_PER_S  # training samples end (label windows included) before this
WINDOWS = [(SPLIT_NS, SPLIT_NS + 4 * 60 * NS_PER_S), (SPLIT_NS + 4 * 60 * NS_PER_S, SPLIT_NS + 8 * 60 * NS_PER_S)]
# The caller's overrides: a threshold the calibrated P(up) of a weak model can reach, no cooldown.
OVERRIDES = {"hmarl": {"threshold": 0.01}, "risk": {"max_consecutive_losses": 0}}
COMPARED = {Trade: ("symbol", "ts_event", "price", "qty", "trade_type", "buyer", "seller", "trade_id"),
            BookSnapshot: ("symbol", "ts_event", "bid_px", "bid_qty", "ask_px", "ask_qty"),
            BookUpdate: ("symbol", "ts_event", "side", "action", "position", "price", "qty", "agent", "offer_id")}
# (not seq, which the replay leaves 0 for the feed to stamp, nor ts_recv, the reader's wall clock)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("model-backtest") / "recordings"
    rec = record_input(SESSION, root)
    cfg, _ = backtest_config(rec)
    return root, rec, read_events(cfg, rec)


@pytest.fixture(scope="module")
def models(recorded, tmp_path_factory):
    """Two model folders with the fitted model, and one whose metadata names other features."""
    _, _, events = recorded
    ds = build_dataset(events, SYM, tick_size_for(SYM, 0.5), LabelConfig(price="trade"), decision_every_ns=250_000_000,
                       source="simulator")
    t0, t1 = ds.t0, ds.t1
    train = t1 < SPLIT_NS  # t1 >= t0: the whole label window lies before the split
    model = fit_model(ds.X[train], ds.y[train], t0[train], t1[train], FitConfig(min_child_weight=2, eta=0.3),
                      list(ds.feature_names))
    meta = {"feature_names": list(ds.feature_names), "feature_hash": ENGINE_FEATURE_HASH,
            "horizon_ns": 10 * NS_PER_S, "instrument_root": "WDO", "data_source": "simulator",
            "created_ts": int(t0[train].max())}
    base = tmp_path_factory.mktemp("models")
    for name in ("fold0", "fold1"):
        save_model(base / name, "m", model, meta)
    save_model(base / "refused", "m", model, {**meta, "feature_hash": "0" * 16})
    return base


@pytest.fixture(scope="module")
def folds(recorded, models):
    _, rec, _ = recorded
    return fold_backtests(rec, [*WINDOWS, WINDOWS[1]], [models / "fold0", models / "fold1", models / "refused"],
                          overrides=OVERRIDES, keep_runs=True)


# -- recording --------------------------------------------------------------------------


def test_the_recording_replays_the_simulators_events_field_by_field(recorded):
    root, rec, replayed = recorded
    assert rec.kind == "recordings" and rec.path == str(root) and rec.symbols == (SYM,)
    assert (rec.start, rec.end) == (SESSION.start, SESSION.end)
    assert {p.parent.parent.name for p in root.glob("*/symbol=*/date=*/*.parquet")} == {f"symbol={SYM}"}
    assert {p.parent.name for p in root.glob("*/symbol=*/date=*/*.parquet")} == {"date=2026-11-23"}
    cfg, _ = backtest_config(SESSION)
    simulated = read_events(cfg, SESSION)
    assert len(simulated) > 30_000 and len(replayed) == len(simulated)
    for i, (a, b) in enumerate(zip(simulated, replayed)):
        assert type(a) is type(b), i
        for f in COMPARED[type(a)]:
            assert getattr(a, f) == getattr(b, f), (i, f)
    ts = np.array([e.ts_event for e in replayed])
    assert ts.min() >= START_NS and ts.max() < parse_bound(SESSION.end, is_end=True)


def test_a_backtest_of_the_recording_decides_and_fills_as_the_simulator(recorded):
    _, rec, _ = recorded
    end = "2026-11-23T10:05:00"
    no_ml = {"hmarl": {"ml_enabled": False}}  # the ML voter checks the feed's market; the agents do not
    a = backtest(replace(SESSION, end=end), run_id="same", overrides=no_ml)
    b = backtest(replace(rec, end=end), run_id="same", overrides=no_ml)
    assert a.stats["run"]["events"] == b.stats["run"]["events"] > 10_000
    assert len(a.tables["fills"]) > 0
    assert (a.decision_hash, a.fill_hash) == (b.decision_hash, b.fill_hash)


def test_recordings_pass_through_and_a_used_folder_is_refused(recorded, tmp_path):
    root, rec, _ = recorded
    assert record_input(rec, tmp_path / "unused") is rec
    with pytest.raises(ValueError, match="new or empty folder"):
        record_input(SESSION, root)


def test_a_file_input_is_imported_into_the_folder_as_a_backtest_reads_it(es_file, tmp_path):
    source = BacktestInput("es", path=str(es_file))
    rec = record_input(source, tmp_path / "es")
    assert rec.kind == "recordings" and rec.symbols == ("ESH22",)
    assert {p.parent.name for p in (tmp_path / "es").glob("tick/symbol=ESH22/*/*.parquet")} == {"date=2022-01-24"}
    cfg, _ = backtest_config(source, workdir=tmp_path / "direct")  # the backtest's own import
    direct = read_events(cfg, source)
    cfg, _ = backtest_config(rec)
    replayed = read_events(cfg, rec)
    assert len(direct) > 1000 and len(replayed) == len(direct)
    assert all(type(a) is type(b) and all(getattr(a, f) == getattr(b, f) for f in COMPARED[type(a)])
               for a, b in zip(direct, replayed))


# -- the folds ----------------------------------------------------------------------------


def _recomputed_net(fills, marks) -> float:
    """Cash flows of the fills plus the open position at the last trade, times R$10, minus fees."""
    sign = np.where(fills["side"] == "BUY", 1, -1)
    qty = fills["quantity"].to_numpy()
    cash = float(np.sum(-sign * qty * fills["price"].to_numpy()))
    position = int(np.sum(sign * qty))
    return (cash + position * marks[-1]) * POINT_VALUE - float(fills["fees"].sum())


def _closed_trips(fills) -> int:
    """Fills after which the position is flat or on the other side."""
    pos = np.cumsum(np.where(fills["side"] == "BUY", 1, -1) * fills["quantity"].to_numpy())
    before = np.concatenate([[0], pos[:-1]])
    return int(np.sum((before != 0) & (np.sign(pos) != np.sign(before))))


@pytest.mark.parametrize("k", [0, 1])
def test_a_fold_backtests_the_model_alone_inside_its_window(folds, recorded, k):
    _, _, events = recorded
    fold = folds[k]
    assert "error" not in fold, fold.get("error")
    start, end = WINDOWS[k]
    assert (fold["fold"], fold["start_ns"], fold["end_ns"], fold["run_id"]) == (k, start, end, f"fold{k:02d}")
    run = fold["run"]
    fills, decisions = run.tables["fills"], run.tables["decisions"]
    assert _closed_trips(fills) > 0 and {"BUY", "SELL"} <= set(decisions["action"]), \
        "seed 1 no longer trades both ways: pick a session whose model closes round trips"
    # No fill, decision or mark outside the window.
    for table in (fills, decisions, run.tables["prices"]):
        assert table["ts_event"].between(start, end - 1).all()
    # P&L from the fills and the market's last trade in the window, as stats.json defines it.
    marks = [e.price for e in events if type(e) is Trade and start <= e.ts_event < end]
    assert fold["net_pnl"] == pytest.approx(_recomputed_net(fills, marks), abs=1e-6)
    assert fold["fees"] == pytest.approx(float(fills["fees"].sum()), abs=1e-9) and fold["fees"] > 0
    assert fold["gross_pnl"] - fold["fees"] == pytest.approx(fold["net_pnl"], abs=1e-6)
    assert fold["round_trips"] == _closed_trips(fills)
    assert fold["decisions"] == {a: int((decisions["action"] == a).sum()) for a in ("BUY", "SELL")}
    # The ML voter was the only voter, with all of the weight, and voted.
    assert [c for c in decisions.columns if c.startswith("weight_")] == ["weight_ml"]
    assert (decisions["weight_ml"] == 1.0).all()
    assert list(run.stats["agents"]) == ["ml"] and fold["ml_signals"] > 0
    assert fold["ml_error"] is None and fold["decision_hash"] == run.decision_hash
    wr = fold["win_rate"]
    assert wr is None or 0.0 <= wr <= 1.0
    assert fold["max_drawdown"] >= 0 and math.isfinite(fold["max_drawdown"])


def test_a_refused_model_abstains_and_the_fold_trades_nothing(folds):
    fold = folds[2]
    assert "error" not in fold
    assert fold["ml_signals"] == 0 and fold["decisions"] == {"BUY": 0, "SELL": 0}
    assert len(fold["run"].tables["fills"]) == 0 and fold["net_pnl"] == 0 and fold["round_trips"] == 0
    assert "feature_hash 0000000000000000" in fold["ml_error"]


def test_a_fold_that_cannot_run_is_an_error_line_and_the_others_run(recorded, models, tmp_path):
    _, rec, _ = recorded
    short = (SPLIT_NS, SPLIT_NS + 20 * NS_PER_S)
    after = (START_NS + 3600 * NS_PER_S, START_NS + 3660 * NS_PER_S)  # beyond the recording's end
    out = fold_backtests(rec, [short, short, after], [tmp_path / "nothing", models / "fold0", models / "fold0"],
                         overrides=OVERRIDES)
    assert [("error" in f) for f in out] == [True, False, True]
    assert "has no registry.json" in out[0]["error"] and "\n" not in out[0]["error"]
    assert "outside the input" in out[2]["error"]
    assert out[1]["ml_signals"] > 0


@pytest.mark.parametrize("windows, dirs, match", [
    ([(2, 1)], ["m"], "must be after start"),
    ([(1, 2)], [], "1 windows but 0 model folders"),
    ([(1.0, 2)], ["m"], "integers"),
])
def test_bad_windows_are_one_line_errors(recorded, windows, dirs, match):
    _, rec, _ = recorded
    with pytest.raises(ValueError, match=match):
        fold_backtests(rec, windows, dirs)


def test_a_simulator_session_must_be_recorded_first():
    with pytest.raises(ValueError, match="record it first"):
        fold_backtests(SESSION, WINDOWS, ["a", "b"])


def test_window_bounds_are_rounded_inwards_to_microseconds():
    ns = START_NS + 1_234_567_891
    up, down = parse_bound(ns_iso(ns, up=True), is_end=False), parse_bound(ns_iso(ns, up=False), is_end=True)
    assert (up, down) == (START_NS + 1_234_568_000, START_NS + 1_234_567_000)
    assert parse_bound(ns_iso(START_NS, up=True), is_end=False) == START_NS
    assert ns_iso(START_NS, up=False).endswith("-03:00")
