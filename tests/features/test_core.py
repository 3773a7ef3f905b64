"""The 65 trade features (pipelines/features/core.py, batch.py): formulas, parity, warm-up, memory.

Every formula is checked against an independent computation written here with
pandas/numpy (rolling windows over a DataFrame of the trades, brute force where
that is clearer), on a seeded synthetic WDO-like tape and on the real CME ES
tape (skipped when the file is absent). RSI is checked against TA-Lib (test-only
dependency, skipped if missing) and a hand-coded Wilder; Garman-Klass against the
textbook formula. Streaming (trade by trade) and batch (vectorized)
must agree to 1e-9 relative with NaN where NaN.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines.features import core
from pipelines.features.batch import compute_batch, compute_streaming, garman_klass_sigma, garman_klass_terms
from pipelines.features.core import FEATURE_NAMES, FEATURE_SPECS, FeatureEngineCore
from pipelines.features.synthetic import make_synthetic_trades
from pipelines.model.messages import Trade
from pipelines.model.clock import SAO_PAULO, parse_time, to_ns
from tests.helpers import REPO, load_script

SPEC = {s.name: s for s in FEATURE_SPECS}


def assert_close(actual, expected, rtol=1e-9, atol=0.0, what=""):
    """Same NaN pattern, and |a - e| <= atol + rtol * max(|a|, |e|) elsewhere."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    na, ne = np.isnan(a), np.isnan(e)
    bad = np.flatnonzero(na != ne)
    assert len(bad) == 0, f"{what}: NaN pattern differs at rows {bad[:8].tolist()}: got {a[bad[:8]]}, expected {e[bad[:8]]}"
    m = ~na
    err = np.abs(a[m] - e[m])
    tol = atol + rtol * np.maximum(np.abs(a[m]), np.abs(e[m]))
    if not (err <= tol).all():
        rows = np.flatnonzero(m)[err > tol]
        j = rows[0]
        raise AssertionError(f"{what}: {len(rows)} rows differ, first row {j}: got {a[j]!r}, expected {e[j]!r}")


# ---------------------------------------------------------------- data sets
@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    # mean gap 1.5 s: 30k trades span ~12.5 session hours, so the tape crosses into a second day
    return make_synthetic_trades(30_000, seed=5, mean_gap_ms=1500.0)


@pytest.fixture(scope="module")
def es_trades(es_file) -> pd.DataFrame:
    return load_script("features").read_es_csv(es_file)


def get_tape(name: str, request) -> pd.DataFrame:
    return request.getfixturevalue("synthetic" if name == "synthetic" else "es_trades")


_BATCH_CACHE: dict[str, pd.DataFrame] = {}
_REF_CACHE: dict[str, dict[str, np.ndarray]] = {}


def batch_of(name: str, request) -> pd.DataFrame:
    if name not in _BATCH_CACHE:
        _BATCH_CACHE[name] = compute_batch(get_tape(name, request))
    return _BATCH_CACHE[name]


def reference_of(name: str, request) -> dict[str, np.ndarray]:
    if name not in _REF_CACHE:
        _REF_CACHE[name] = reference_features(get_tape(name, request))
    return _REF_CACHE[name]


# ---------------------------------------------------------------- independent reference
def rolling_std0(x: pd.Series, w: int) -> np.ndarray:
    """Population std of each window of w values (two-pass over a sliding view); exactly 0 when the
    window is constant, NaN when it holds a NaN or is incomplete."""
    arr = x.to_numpy(dtype=np.float64)
    out = np.full(len(arr), np.nan)
    if len(arr) >= w:
        win = np.lib.stride_tricks.sliding_window_view(arr, w)
        sd = win.std(axis=1)
        sd[np.ptp(win, axis=1) == 0] = 0.0
        out[w - 1:] = sd
    return out


def where_pos(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(len(num), np.nan)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def reference_brokers(ids: np.ndarray, qty: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute force: at every re-rank, volumes over the last BROKER_WINDOW trades, sorted by
    (volume desc, id asc); flags from a set of the last BROKER_ACTIVE ids."""
    n = len(ids)
    W, R, K, N = core.BROKER_WINDOW, core.BROKER_RERANK, core.BROKER_ACTIVE, core.TOP_N
    flags = np.full((n, N), np.nan)
    count = np.full(n, np.nan)
    changed = np.full(n, np.nan)
    prev_top = None
    for end in range(R, n + 1, R):  # re-rank after `end` trades
        if end < W:
            continue
        w_ids, w_qty = ids[end - W:end], qty[end - W:end]
        vol = pd.Series(w_qty[w_ids != 0]).groupby(w_ids[w_ids != 0]).sum()
        ranked = sorted(vol.items(), key=lambda kv: (-kv[1], kv[0]))[:N]
        top = [b for b, _v in ranked]
        ch = np.nan if not top or not prev_top else float(top[0] != prev_top[0])
        prev_top = top
        for t in range(end - 1, min(end - 1 + R, n)):
            recent = set(ids[max(0, t - K + 1): t + 1].tolist())
            f = [1.0 if b in recent else 0.0 for b in top]
            flags[t, : len(f)] = f
            count[t] = sum(f) if top else np.nan
            changed[t] = ch
    return flags, count, changed


def reference_features(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every feature recomputed from the definitions with pandas/numpy, no engine code."""
    with np.errstate(divide="ignore", invalid="ignore"):  # x/0 here is masked to NaN explicitly
        return _reference_features(df)


def _reference_features(df: pd.DataFrame) -> dict[str, np.ndarray]:
    df = df.reset_index(drop=True)
    n = len(df)
    p = df["price"].astype(float)
    v = df["qty"].astype(float)
    tt = df["trade_type"].to_numpy()
    s = np.select([tt == 2, tt == 3], [1.0, -1.0], 0.0)
    sv = pd.Series(s * v.to_numpy())
    dp = p.diff()
    ts = df["ts_event"].to_numpy(dtype=np.int64)
    local = pd.to_datetime(ts, utc=True).tz_convert(SAO_PAULO)
    ref: dict[str, np.ndarray] = {}

    vol = {w: rolling_std0(dp, w) / p.to_numpy() for w in (10, 20, 50, 100, 200)}
    for w in (10, 20, 50, 100):
        ref[f"volatility_{w}"] = vol[w]
    for a, b in ((10, 20), (20, 50), (50, 100), (100, 200)):
        ref[f"volatility_ratio_{a}_{b}"] = where_pos(vol[a], vol[b])
    # Garman-Klass, textbook, on OHLC of consecutive 10-trade blocks
    nb = n // 10
    bars = pd.DataFrame({"p": p.iloc[: nb * 10].to_numpy(), "b": np.arange(nb * 10) // 10})
    ohlc = bars.groupby("b")["p"].agg(["first", "max", "min", "last"])
    gk_var = 0.5 * np.log(ohlc["max"] / ohlc["min"]) ** 2 - (2 * math.log(2) - 1) * np.log(ohlc["last"] / ohlc["first"]) ** 2
    gk_block = np.sqrt(gk_var.rolling(20).mean()).to_numpy()
    done = (np.arange(n) + 1) // 10
    gk = np.full(n, np.nan)
    has = done >= 20
    gk[has] = gk_block[done[has] - 1]
    ref["volatility_gk"] = gk
    sd20 = rolling_std0(p, 20)
    bb = (p - p.rolling(20).mean()).to_numpy() / (2 * sd20)
    bb[sd20 == 0] = np.nan
    ref["bb_position"] = bb

    for k in core.RETURN_LAGS:
        ref[f"returns_{k}"] = (p / p.shift(k) - 1).to_numpy()
    for k in core.LOG_RETURN_LAGS:
        ref[f"log_returns_{k}"] = np.log(p / p.shift(k)).to_numpy()

    for w in core.OFI_WINDOWS:
        ref[f"order_flow_imbalance_{w}"] = where_pos(sv.rolling(w).sum().to_numpy(), v.rolling(w).sum().to_numpy())
    day = pd.Series(local.date)
    ref["cumulative_signed_volume"] = sv.groupby((day != day.shift()).cumsum()).cumsum().to_numpy()
    ref["signed_volume"] = sv.rolling(100).sum().to_numpy()
    vwap = (p * v).rolling(100).sum() / v.rolling(100).sum()
    ref["volume_weighted_return"] = (p / vwap - 1).to_numpy()
    buyers, sellers = df["buyer"].to_numpy(), df["seller"].to_numpy()
    turnover = np.full(n, np.nan)
    for t in range(99, n):
        ids = set(buyers[t - 99: t + 1].tolist()) | set(sellers[t - 99: t + 1].tolist())
        ids.discard(0)
        turnover[t] = len(ids) if ids else np.nan
    ref["agent_turnover"] = turnover

    for w in core.VOLUME_WINDOWS:
        ref[f"volume_ratio_{w}"] = (v.rolling(10).mean() / v.rolling(w).mean()).to_numpy()
        sd = rolling_std0(v, w)
        z = (v - v.rolling(w).mean()).to_numpy() / sd
        z[sd == 0] = np.nan
        ref[f"volume_zscore_{w}"] = z
    ones = pd.Series(1.0, index=pd.to_datetime(ts, utc=True))
    c60 = ones.rolling("60s").sum().to_numpy()
    c300 = ones.rolling("300s").sum().to_numpy()
    elapsed = ts - ts[0] if n else ts
    ti = c60 / 60
    ti[elapsed < 60 * 10**9] = np.nan
    ref["trade_intensity"] = ti
    tir = (c60 / 60) / (c300 / 300)
    tir[elapsed < 300 * 10**9] = np.nan
    ref["trade_intensity_ratio"] = tir

    for a, b in core.MA_PAIRS:
        ref[f"ma_{a}_{b}_ratio"] = (p.rolling(a).mean() / p.rolling(b).mean() - 1).to_numpy()
    for a, b in core.MOMENTUM_PAIRS:
        rb = (p / p.shift(b) - 1).to_numpy()
        m = (p / p.shift(a) - 1).to_numpy() / np.where(rb == 0, np.nan, rb)
        ref[f"momentum_{a}_{b}"] = m
    for w in core.SHARPE_WINDOWS:
        sd = rolling_std0(dp, w)
        sh = dp.rolling(w).mean().to_numpy() / sd
        sh[sd == 0] = np.nan
        ref[f"sharpe_{w}"] = sh
    sec = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6 + local.nanosecond / 1e9
    sec = np.asarray(sec, dtype=np.float64)
    tn = (sec - 9 * 3600) / (9 * 3600)
    tn[(sec < 9 * 3600) | (sec > 18 * 3600)] = np.nan
    ref["time_normalized"] = tn
    ref["rsi_14"] = wilder_rsi(p.to_numpy(), 14)

    for side, ids in (("buyer", buyers), ("seller", sellers)):
        flags, count, changed = reference_brokers(ids, df["qty"].to_numpy())
        for k in range(core.TOP_N):
            ref[f"top_{side}_{k}_active"] = flags[:, k]
        ref[f"top_{side}s_count"] = count
        ref[f"{side}_changed"] = changed
    iba = np.full(n, np.nan)
    iba[tt == 2] = 1.0
    iba[tt == 3] = 0.0
    ref["is_buyer_aggressor"] = iba

    ref["minute"] = np.asarray(local.minute, dtype=float)
    ref["hour"] = np.asarray(local.hour, dtype=float)
    ref["day_of_week"] = np.asarray(local.day_of_week, dtype=float)
    hm = np.asarray(local.hour * 60 + local.minute)
    ref["is_opening_30min"] = ((hm >= 540) & (hm < 570)).astype(float)
    ref["is_closing_30min"] = ((hm >= 1050) & (hm < 1080)).astype(float)
    ref["is_lunch_hour"] = ((hm >= 720) & (hm < 780)).astype(float)
    return ref


def wilder_rsi(price: np.ndarray, period: int) -> np.ndarray:
    """Hand-coded Wilder RSI with TA-Lib's seeding; NaN when gains + losses = 0."""
    out = np.full(len(price), np.nan)
    if len(price) <= period:
        return out
    d = np.diff(price)
    g = np.clip(d[:period], 0, None).sum() / period
    l_ = np.clip(-d[:period], 0, None).sum() / period
    for t in range(period, len(price)):
        if t > period:
            x = d[t - 1]
            g = (g * (period - 1) + max(x, 0.0)) / period
            l_ = (l_ * (period - 1) + max(-x, 0.0)) / period
        out[t] = 100.0 * g / (g + l_) if g + l_ > 0 else np.nan
    return out


# Tolerances against the reference. Our values come from exact integer sums; the references are
# float pandas/numpy computations, so features that subtract nearly equal numbers (ratios minus 1,
# p/VWAP - 1) carry the reference's own rounding (~1e-16 / 1e-4 relative) and get an absolute floor.
TOLERANCE = {name: (1e-9, 0.0) for name in FEATURE_NAMES}
for _name in ("ma_5_20_ratio", "ma_20_50_ratio", "volume_weighted_return", "bb_position", "sharpe_5", "sharpe_20",
              "momentum_5_20", "momentum_20_50"):
    TOLERANCE[_name] = (1e-9, 1e-12)
TOLERANCE["time_normalized"] = (1e-12, 1e-12)  # the reference goes through float seconds
TOLERANCE["rsi_14"] = (1e-9, 1e-9)


@pytest.mark.parametrize("tape", ["synthetic", "es"])
@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_matches_independent_reference(name, tape, request):
    got = batch_of(tape, request)[name].to_numpy()
    want = reference_of(tape, request)[name]
    rtol, atol = TOLERANCE[name]
    assert_close(got, want, rtol=rtol, atol=atol, what=f"{name} on {tape}")


def test_reference_covers_every_feature(synthetic, request):
    assert set(reference_of("synthetic", request)) == set(FEATURE_NAMES)


def test_features_are_informative_after_warmup(request):
    """Guard against placeholders: after warm-up every feature on the synthetic tape has finite
    values and (except flags that may legitimately sit still) more than one distinct value."""
    df = batch_of("synthetic", request).iloc[2000:]
    for name in FEATURE_NAMES:
        col = df[name].dropna()
        assert len(col) > 0, name
        if name not in ("day_of_week",):
            assert col.nunique() > 1, f"{name} is constant after warm-up"
    ofi = df[[f"order_flow_imbalance_{w}" for w in core.OFI_WINDOWS]].to_numpy()
    all_equal = (ofi == ofi[:, :1]).all(axis=1)
    assert all_equal.mean() < 0.01  # four windows, four different values (the original shared one)


# ---------------------------------------------------------------- RSI and Garman-Klass
def test_rsi_matches_talib(request):
    talib = pytest.importorskip("talib")
    for tape in ("synthetic", "es"):
        try:
            df = get_tape(tape, request)
        except pytest.skip.Exception:
            continue
        ours = batch_of(tape, request)["rsi_14"].to_numpy()
        ref = talib.RSI(df["price"].to_numpy(dtype=np.float64), timeperiod=14)
        assert np.isnan(ref[:14]).all() and np.isnan(ours[:14]).all()
        # TA-Lib prints 0 where gains + losses = 0 (within 1e-14); we print NaN there (no information)
        flat = np.isnan(ours[14:])
        assert (ref[14:][flat] == 0).all()
        assert_close(ours[14:][~flat], ref[14:][~flat], rtol=1e-9, atol=1e-9, what=f"rsi_14 vs TA-Lib on {tape}")


def test_rsi_flat_series_is_nan_not_zero():
    eng = FeatureEngineCore()
    for i in range(40):
        eng.update(1_772_452_800_000_000_000 + i * 10**9, 5400.0, 1, 2)
    assert math.isnan(eng.values()["rsi_14"])


def test_garman_klass_textbook_and_negative_sum():
    o, h, l_, c = 100.0, 102.0, 99.0, 101.0
    want = 0.5 * math.log(h / l_) ** 2 - (2 * math.log(2) - 1) * math.log(c / o) ** 2
    got = garman_klass_terms(np.array([o]), np.array([h]), np.array([l_]), np.array([c]))[0]
    assert got == pytest.approx(want, rel=1e-15)
    # a corrupt bar (close far outside [low, high]) makes the sum negative: NaN, never clamped to 0
    bad = garman_klass_terms(np.array([100.0]), np.array([100.1]), np.array([100.0]), np.array([120.0]))
    assert bad[0] < 0
    sigma = garman_klass_sigma(np.array([bad[0], want]), 1)
    assert math.isnan(sigma[0]) and sigma[1] == pytest.approx(math.sqrt(want))


# ---------------------------------------------------------------- parity
def assert_parity(batch: pd.DataFrame, stream: pd.DataFrame, what: str) -> None:
    assert list(batch.columns) == list(stream.columns)
    assert len(batch) == len(stream)
    for col in batch.columns:
        assert_close(batch[col].to_numpy(dtype=np.float64), stream[col].to_numpy(dtype=np.float64), rtol=1e-9,
                     what=f"{col} ({what})")


def test_parity_synthetic(request):
    df = get_tape("synthetic", request)
    assert_parity(batch_of("synthetic", request), compute_streaming(df), "synthetic")


def test_parity_es(request):
    df = get_tape("es", request)
    assert_parity(batch_of("es", request), compute_streaming(df), "CME ES")


def test_parity_simulator():
    sim_mod = pytest.importorskip("pipelines.adapters.simulator")
    from pipelines.adapters.config import SimulatorConfig

    cfg = SimulatorConfig(seed=3, rate=200.0, speed=0.0, start="2026-11-23T16:50:00", max_events=40_000)
    sim = sim_mod.MarketSimulator(cfg, ["WDOZ26"])
    events = []
    while not sim.exhausted:
        events.extend(sim.poll(5000))
    trades = [e for e in events if isinstance(e, Trade)]
    assert len(trades) > 3000
    assert_parity(compute_batch(trades), compute_streaming(trades), "simulator")


def test_on_trade_and_vector_match_batch(request):
    """The public live API (on_trade, vector, values) gives the batch row after each trade."""
    df = get_tape("synthetic", request).iloc[:3000]
    batch = compute_batch(df)[list(FEATURE_NAMES)].to_numpy()
    eng = FeatureEngineCore()
    for j, row in enumerate(df.itertuples(index=False)):
        eng.on_trade(Trade(*row))
        if j % 97 == 0 or j == len(df) - 1:
            vec = eng.vector()
            assert vec.dtype == np.float64 and vec.shape == (65,)
            assert_close(vec, batch[j], what=f"row {j}")
            assert list(eng.values()) == list(FEATURE_NAMES)
    assert eng.n_trades == len(df)


# ---------------------------------------------------------------- warm-up and edge cases
def test_nan_before_warmup_and_warm_flags(request):
    df = get_tape("synthetic", request)
    batch = batch_of("synthetic", request)
    elapsed = df["ts_event"].to_numpy() - df["ts_event"].iloc[0]
    for spec in FEATURE_SPECS:
        col = batch[spec.name].to_numpy()
        cold = np.arange(len(col)) + 1 < spec.warmup_trades
        cold |= elapsed < spec.warmup_seconds * 10**9
        assert np.isnan(col[cold]).all(), f"{spec.name} has a value before its warm-up"
        assert not np.isnan(col[~cold]).all(), f"{spec.name} never leaves NaN"
    eng = FeatureEngineCore()
    assert np.isnan(eng.vector()).all() and not eng.warm().any()
    rows = df.iloc[:1100]
    for j, row in enumerate(rows.itertuples(index=False)):
        eng.on_trade(Trade(*row))
        if j in (0, 9, 10, 99, 100, 199, 200, 999, 1000, 1019, 1020):
            warm = eng.warm()
            vec = eng.vector()
            assert np.isnan(vec[~warm]).all(), f"cold feature with a value after trade {j}"
            for spec, w in zip(FEATURE_SPECS, warm):
                want = j + 1 >= spec.warmup_trades and elapsed[j] >= spec.warmup_seconds * 10**9
                assert w == want, (spec.name, j)


def test_zero_denominators_are_nan():
    """A flat, constant-size tape: zero variance everywhere -> NaN, not 0; zero vol is a real 0."""
    eng = FeatureEngineCore()
    t0 = to_ns(parse_time("2026-03-02T10:00:00-03:00"))
    for i in range(300):
        eng.update(t0 + i * 10**9, 5400.0, 5, 2 if i % 2 else 3, 10, 20)
    v = eng.values()
    for name in ("volatility_ratio_10_20", "bb_position", "volume_zscore_20", "sharpe_20", "momentum_5_20", "rsi_14"):
        assert math.isnan(v[name]), name
    assert v["volatility_10"] == 0.0 and v["volatility_gk"] == 0.0
    assert v["volume_ratio_20"] == 1.0 and v["ma_5_20_ratio"] == 0.0


def test_auction_prints_in_volume_not_in_signed_flow():
    eng = FeatureEngineCore()
    t0 = to_ns(parse_time("2026-03-02T10:00:00-03:00"))
    types = [2] * 4 + [4] * 3 + [3] * 2 + [1]  # 4 buys, 3 auction, 2 sells, 1 cross
    for i, tt in enumerate(types):
        eng.update(t0 + i, 5400.0, 10, tt)
    v = eng.values()
    assert v["order_flow_imbalance_10"] == pytest.approx((40 - 20) / 100)
    assert v["cumulative_signed_volume"] == 20.0
    assert math.isnan(v["is_buyer_aggressor"])  # the last print is a cross


def test_invalid_trades_rejected_and_dropped():
    t0 = to_ns(parse_time("2026-03-02T10:00:00-03:00"))
    rows = [("WDOJ26", t0 + i, t0, i, px, q, 2, 1, 2, i) for i, (px, q) in
            enumerate([(5400.0, 1), (0.0, 1), (float("nan"), 1), (5400.5, 0), (5401.0, 3)])]
    eng = FeatureEngineCore()
    accepted = [eng.on_trade(Trade(*r)) for r in rows]
    assert accepted == [True, False, False, False, True] and eng.rejected == 3 and eng.n_trades == 2
    assert len(compute_batch([Trade(*r) for r in rows])) == 2
    with pytest.raises(ValueError, match="one engine per contract"):
        eng.on_trade(Trade("WINZ26", t0, t0, 9, 130000.0, 1, 2))


def test_backwards_timestamp_uses_running_max_clock():
    t0 = to_ns(parse_time("2026-03-02T10:00:00-03:00"))
    ts = [t0, t0 + 70 * 10**9, t0 + 69 * 10**9, t0 + 71 * 10**9]  # one small step back
    trades = [Trade("WDOJ26", t, t, i + 1, 5400.0 + i * 0.5, 1, 2) for i, t in enumerate(ts)]
    batch = compute_batch(trades)
    assert_parity(batch, compute_streaming(trades), "backwards step")
    assert batch["trade_intensity"].tolist()[1:] == [1 / 60, 2 / 60, 3 / 60]


# ---------------------------------------------------------------- temporal
def one_trade_features(iso_utc: str) -> dict[str, float]:
    ts = to_ns(parse_time(iso_utc))
    eng = FeatureEngineCore()
    eng.update(ts, 5400.0, 1, 2)
    batch = compute_batch([Trade("WDOJ26", ts, ts, 1, 5400.0, 1, 2)]).iloc[0]
    v = eng.values()
    for name in ("minute", "hour", "day_of_week", "time_normalized", "is_opening_30min", "is_closing_30min",
                 "is_lunch_hour"):
        assert (math.isnan(v[name]) and math.isnan(batch[name])) or v[name] == batch[name], name
    return v


def test_temporal_across_the_sao_paulo_date_line():
    # 02:30 UTC on Tuesday 2026-03-03 is 23:30 on Monday 2026-03-02 in Sao Paulo
    v = one_trade_features("2026-03-03T02:30:00+00:00")
    assert (v["hour"], v["minute"], v["day_of_week"]) == (23.0, 30.0, 0.0)
    assert math.isnan(v["time_normalized"])
    assert v["is_opening_30min"] == v["is_closing_30min"] == v["is_lunch_hour"] == 0.0
    # 03:00 UTC is local midnight of the Tuesday
    v = one_trade_features("2026-03-03T03:00:00+00:00")
    assert (v["hour"], v["minute"], v["day_of_week"]) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("iso_utc, hour, flags", [
    ("2026-01-15T12:00:00+00:00", 9.0, (1.0, 0.0, 0.0)),  # January: no DST since 2019, UTC-3
    ("2026-07-15T12:00:00+00:00", 9.0, (1.0, 0.0, 0.0)),  # July: UTC-3 as well
    ("2026-11-23T15:15:00+00:00", 12.0, (0.0, 0.0, 1.0)),
    ("2026-11-23T20:45:00+00:00", 17.0, (0.0, 1.0, 0.0)),
    ("2018-12-03T12:00:00+00:00", 10.0, (0.0, 0.0, 0.0)),  # old Brazilian DST (UTC-2): zoneinfo, not a fixed -3
])
def test_temporal_offsets(iso_utc, hour, flags):
    v = one_trade_features(iso_utc)
    assert v["hour"] == hour
    assert (v["is_opening_30min"], v["is_closing_30min"], v["is_lunch_hour"]) == flags
    assert v["time_normalized"] == pytest.approx((hour * 60 + float(v["minute"]) - 540) / 540)


def test_cumulative_signed_volume_resets_at_local_midnight():
    # 23:59 and 00:01 Sao Paulo are 02:59 and 03:01 UTC: a new session date starts in between
    t = [to_ns(parse_time(s)) for s in ("2026-03-03T02:58:00+00:00", "2026-03-03T02:59:00+00:00",
                                        "2026-03-03T03:01:00+00:00")]
    trades = [Trade("WDOJ26", x, x, i + 1, 5400.0, 5, 2) for i, x in enumerate(t)]
    assert compute_batch(trades)["cumulative_signed_volume"].tolist() == [5.0, 10.0, 5.0]
    assert compute_streaming(trades)["cumulative_signed_volume"].tolist() == [5.0, 10.0, 5.0]


# ---------------------------------------------------------------- memory
def test_memory_bounded_over_200k_events():
    df = make_synthetic_trades(200_000, seed=9, mean_gap_ms=5.0)
    eng = FeatureEngineCore()
    update = eng.update
    cols = [df[c].tolist() for c in ("ts_event", "price", "qty", "trade_type", "buyer", "seller")]
    max_sizes: dict[str, int] = {}
    for j, row in enumerate(zip(*cols)):
        update(*row)
        if j % 5000 == 4999:
            for k, size in eng.state_sizes().items():
                max_sizes[k] = max(max_sizes.get(k, 0), size)
    ts = df["ts_event"].to_numpy()
    in_300s = (ts > ts[-1] - 300 * 10**9).sum()
    sizes = eng.state_sizes()
    assert sizes["win_long"] == in_300s and sizes["win_short"] == (ts > ts[-1] - 60 * 10**9).sum()
    n_ids = len(set(df["buyer"]) | set(df["seller"]))
    assert max(max_sizes[k] for k in ("buy_rank_key", "sell_rank_key", "agents")) <= n_ids
    assert max_sizes["buy_recent"] <= core.BROKER_ACTIVE and max_sizes["gk_terms"] <= core.GK_BLOCKS
    assert max_sizes["rings"] == 3 * core.RING + core.BROKER_WINDOW  # fixed-size rings never grow
    # event-time deques never exceed the trades of one window (here 300 s at ~200 trades/s)
    assert max_sizes["win_long"] <= 300 * 1000 / 5.0 * 1.2


# ---------------------------------------------------------------- CLI and catalog
def test_catalog_generated_from_code():
    from pipelines.features.catalog import catalog_entries, render

    entries = [e for e in catalog_entries() if e["module"] == "pipelines.features.core"]
    assert [e["name"] for e in entries] == list(FEATURE_NAMES)
    for e in entries:
        assert e["group"] and e["formula"] and e["window"] and e["unit"] and e["warmup"], e["name"]
    groups = pd.Series([e["group"] for e in entries]).value_counts().to_dict()
    assert groups == {"volatility": 10, "returns": 10, "order_flow": 8, "volume": 8, "technical": 8,
                      "microstructure": 15, "temporal": 6}
    assert json.loads(render(entries, "json"))[0]["name"] == "volatility_10"
    assert render(entries, "markdown").count("\n") == 66


def test_cli_catalog_and_compute(tmp_path, request):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "features.py"), "catalog"], capture_output=True,
                         text=True, check=True).stdout
    assert "volatility_gk" in out and "flow_ofi_5m" in out
    assert "73 features: volatility 10, returns 10, order_flow 8, volume 8, technical 8, microstructure 15, " \
        "temporal 6, flow 8" in out
    # replay layout: <root>/tick/symbol=SYM/date=YYYY-MM-DD/*.parquet with the Trade columns
    df = get_tape("synthetic", request).iloc[:4000]
    part = tmp_path / "rec" / "tick" / "symbol=WDOJ26" / "date=2026-03-02"
    part.mkdir(parents=True)
    df.iloc[:2500].to_parquet(part / "part-1-aaaa.parquet", index=False)
    df.iloc[2500:].to_parquet(part / "part-2501-bbbb.parquet", index=False)
    target = tmp_path / "feats.parquet"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "features.py"), "compute", "--input",
                          str(tmp_path / "rec"), "--output", str(target)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["rows"] == 4000 and summary["symbols"] == ["WDOJ26"]
    table = pd.read_parquet(target)
    assert list(table.columns[:7]) == ["symbol", "seq", "ts_event", "price", "qty", "trade_type", "aggressor"]
    assert list(table.columns[7:]) == list(FEATURE_NAMES)
    assert_close(table["rsi_14"], compute_batch(df)["rsi_14"], what="cli rsi")
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "features.py"), "compute", "--input",
                          str(tmp_path / "missing"), "--output", str(target)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_cli_reads_es_csv(tmp_path, es_file, es_trades):
    assert len(es_trades) == 2026
    assert (np.diff(es_trades["ts_event"].to_numpy()) >= 0).all()  # quirk-aware times never step back
    assert (es_trades["trade_type"] == 2).sum() == 1016 and (es_trades["trade_type"] == 3).sum() == 1010
    assert es_trades.loc[es_trades["trade_type"] == 2, "qty"].sum() == 1432
    assert es_trades["qty"].sum() == 2846
    target = tmp_path / "es.parquet"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "features.py"), "compute", "--input", str(es_file),
                          "--output", str(target), "--engine", "streaming"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    table = pd.read_parquet(target)
    assert len(table) == 2026 and table["symbol"].iloc[0] == "ESH22"


def test_naive_reference_agrees_where_definitions_coincide(request):
    """The benchmark's naive engine computes the same definitions where 200 trades suffice."""
    from pipelines.features.naive import NaiveFeatureEngine

    df = get_tape("synthetic", request).iloc[:400]
    batch = compute_batch(df)
    naive = NaiveFeatureEngine()
    same = ["volatility_10", "volatility_100", "bb_position", "returns_100", "log_returns_20",
            "order_flow_imbalance_50", "signed_volume", "volume_weighted_return", "agent_turnover", "volume_ratio_100",
            "volume_zscore_50", "ma_20_50_ratio", "momentum_20_50", "sharpe_20", "time_normalized", "hour",
            "is_buyer_aggressor"]
    idx = [FEATURE_NAMES.index(s) for s in same]
    for j, row in enumerate(df.itertuples(index=False)):
        naive.update(row.ts_event, row.price, row.qty, row.trade_type, row.buyer, row.seller)
        if j >= 150 and j % 50 == 0:
            assert_close(naive.vector()[idx], batch[same].iloc[j].to_numpy(), rtol=1e-8, atol=1e-12, what=f"row {j}")
