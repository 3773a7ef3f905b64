"""Flow analytics (pipelines/features/: flow, flow_set, tape, footprint, liquidity): OFI,
trade flow, VPIN, tape patterns, footprint and liquidity.

Every expected value is computed in this file, by hand or with pandas/numpy from
the raw events, never with the code under test. Real-data tests read the CME ES
tape (``tests/helpers.ES_FILE``) and skip when it is absent.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from pipelines.features.flow import (
    VPIN,
    EventTimeWindows,
    OrderFlowImbalance,
    SizeThresholds,
    TradeFlow,
    size_thresholds_for,
)
from pipelines.features.flow_set import FLOW_FEATURE_NAMES, FlowFeatures
from pipelines.features.footprint import Absorption, FootprintBuilder
from pipelines.features.liquidity import LiquidityMonitor
from pipelines.features.tape import IcebergDetector, SweepDetector, TapeReader
from pipelines.model.messages import BookSnapshot, Trade, TradeType
from pipelines.model.clock import NS_PER_MIN, NS_PER_S, SAO_PAULO, to_ns

SYM = "WDOH26"
MONDAY_10H = to_ns(datetime(2026, 3, 2, 10, 0, tzinfo=SAO_PAULO))  # 2026-03-02, 10:00 Sao Paulo: in the B3 session
MS = 1_000_000
BUY, SELL, AUCTION, CROSS = (int(TradeType.BUY_AGGRESSOR), int(TradeType.SELL_AGGRESSOR),
                             int(TradeType.AUCTION), int(TradeType.CROSS))
WINDOWS = {"1m": "1min", "5m": "5min", "15m": "15min", "30m": "30min", "60m": "60min"}


def snap(ts: int, bids, asks, symbol: str = SYM) -> BookSnapshot:
    return BookSnapshot(symbol, ts, ts, 0, tuple(float(p) for p, _ in bids), tuple(int(q) for _, q in bids),
                        tuple(float(p) for p, _ in asks), tuple(int(q) for _, q in asks))


def trade(ts: int, price: float, qty: int, tt: int, symbol: str = SYM) -> Trade:
    return Trade(symbol, ts, ts, 0, float(price), int(qty), int(tt))


def same(a: float, b: float, rel: float = 1e-9) -> bool:
    """Equal, or both NaN."""
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(b, float) and math.isnan(b):
        return False
    return a == pytest.approx(b, rel=rel, abs=1e-12)


# --------------------------------------------------------------------------- OFI by hand

REF = ([(100.0, 10)], [(101.0, 8)])  # bid 100.0 x 10, ask 101.0 x 8


@pytest.mark.parametrize(
    "bids, asks, expected",
    [
        ([(100.5, 4)], [(101.0, 8)], +4),  # bid up: +Q^B_n
        ([(100.0, 13)], [(101.0, 8)], +3),  # bid unchanged: Q^B_n - Q^B_{n-1}
        ([(100.0, 6)], [(101.0, 8)], -4),
        ([(99.5, 7)], [(101.0, 8)], -10),  # bid down: -Q^B_{n-1}
        ([(100.0, 10)], [(100.5, 2)], -2),  # ask down: -Q^A_n
        ([(100.0, 10)], [(101.0, 11)], -3),  # ask unchanged: -(Q^A_n - Q^A_{n-1})
        ([(100.0, 10)], [(101.0, 5)], +3),
        ([(100.0, 10)], [(101.5, 5)], +8),  # ask up: +Q^A_{n-1}
        ([(100.0, 10)], [(101.0, 8)], 0),  # nothing changed
        ([(100.5, 6)], [(101.5, 9)], 6 + 8),  # bid up and ask up
        ([(99.5, 7)], [(100.5, 2)], -10 - 2),  # bid down and ask down
    ],
    ids=["bid_up", "bid_same_more", "bid_same_less", "bid_down", "ask_down", "ask_same_more",
         "ask_same_less", "ask_up", "unchanged", "both_up", "both_down"],
)
def test_ofi_best_level_cases(bids, asks, expected):
    ofi = OrderFlowImbalance()
    assert ofi.on_book(snap(MONDAY_10H, *REF)) == 0  # first state only seeds
    assert ofi.on_book(snap(MONDAY_10H + MS, bids, asks)) == expected
    assert ofi.ofi("1m") == expected


def test_ofi_side_vanishing_and_returning():
    ofi = OrderFlowImbalance()
    seq = [
        (REF, 0),
        (([], [(101.0, 8)]), -10),  # bid vanishes: -Q^B_{n-1}
        (([(99.5, 6)], [(101.0, 8)]), +6),  # bid returns: +Q^B_n
        (([(99.5, 6)], []), +8),  # ask vanishes: +Q^A_{n-1}
        (([(99.5, 6)], [(101.5, 3)]), -3),  # ask returns: -Q^A_n
        (([], []), -6 + 3),  # both vanish
        (([(99.0, 2)], [(102.0, 4)]), 2 - 4),  # both return
    ]
    for i, ((bids, asks), e) in enumerate(seq):
        assert ofi.on_book(snap(MONDAY_10H + i * MS, bids, asks)) == e, i
    assert ofi.ofi("1m") == sum(e for _, e in seq)
    assert ofi.skipped == 0


def test_ofi_crossed_and_locked_are_skipped_and_counted():
    ofi = OrderFlowImbalance()
    ofi.on_book(snap(MONDAY_10H, *REF))
    assert ofi.on_book(snap(MONDAY_10H + 1 * MS, [(101.5, 5)], [(101.0, 3)])) is None  # crossed
    assert ofi.on_book(snap(MONDAY_10H + 2 * MS, [(101.0, 5)], [(101.0, 3)])) is None  # locked
    # The reference is still the pre-skip state: bid same 10 -> 12 gives +2.
    assert ofi.on_book(snap(MONDAY_10H + 3 * MS, [(100.0, 12)], [(101.0, 8)])) == 2
    assert (ofi.skipped_crossed, ofi.skipped_locked, ofi.accepted, ofi.snapshots) == (1, 1, 2, 4)
    assert ofi.ofi("1m") == 2
    # A skipped first state seeds nothing.
    fresh = OrderFlowImbalance()
    assert fresh.on_book(snap(MONDAY_10H, [(101.0, 5)], [(101.0, 3)])) is None
    assert fresh.on_book(snap(MONDAY_10H + MS, *REF)) == 0


def test_multilevel_ofi_uses_mth_nonempty_level():
    ofi = OrderFlowImbalance(levels=5)
    ofi.on_book(snap(MONDAY_10H, [(100.0, 5), (99.5, 4), (99.0, 3)], [(101.0, 2), (101.5, 6), (102.0, 1)]))
    # 99.5 now shows size 0: bid level 2 is 99.0 x 7, level 3 is 98.5 x 2.
    ofi.on_book(snap(MONDAY_10H + MS, [(100.0, 5), (99.5, 0), (99.0, 7), (98.5, 2)],
                     [(101.0, 2), (101.5, 6), (102.0, 1), (102.5, 4)]))
    # level 1: unchanged -> 0; level 2: bid down (-4); level 3: bid down (-3);
    # level 4: ask appears (+inf -> 102.5, -4); level 5: both empty -> 0.
    assert ofi.mlofi("1m") == (0, -4, -3, -4, 0)
    # Normalized by the window mean of sum_m(q^b_m + q^a_m) / (2*5).
    depth = [(5 + 4 + 3 + 2 + 6 + 1) / 10, (5 + 7 + 2 + 2 + 6 + 1 + 4) / 10]
    scale = sum(depth) / 2
    assert ofi.mlofi_normalized("1m") == pytest.approx(tuple(x / scale for x in (0, -4, -3, -4, 0)))
    # Best level normalized by the mean of (Q^B + Q^A)/2 = 3.5 (both states): 0 / 3.5.
    assert ofi.ofi_normalized("1m") == 0.0


def test_ofi_new_session_day_reseeds_and_empty_window_is_nan():
    ofi = OrderFlowImbalance()
    ofi.on_book(snap(MONDAY_10H, *REF))
    next_day = to_ns(datetime(2026, 3, 3, 9, 0, tzinfo=SAO_PAULO))
    # Overnight change (bid down by far) is not order flow: seed only.
    assert ofi.on_book(snap(next_day, [(90.0, 3)], [(91.0, 4)])) == 0
    assert ofi.session_resets == 1
    assert ofi.on_book(snap(next_day + MS, [(90.0, 5)], [(91.0, 4)])) == 2
    ofi.advance(next_day + 2 * NS_PER_MIN)
    before = ofi.empty_windows
    assert math.isnan(ofi.ofi("1m")) and math.isnan(ofi.ofi_normalized("1m"))
    assert ofi.empty_windows == before + 2
    assert ofi.ofi("5m") == 2
    assert ofi.values()["ofi_n_1m"] == 0


# --------------------------------------------------------------------------- event-time windows


def test_event_time_windows_match_brute_force_across_compactions():
    rng = np.random.default_rng(11)
    n = 40_000
    ts = np.cumsum(rng.integers(0, 4, n))  # repeated stamps included
    vals = rng.integers(-50, 50, (n, 2))
    w = EventTimeWindows(2, max_width_ns=5_000)
    checks = set(rng.choice(n, 400, replace=False).tolist()) | {n - 1}
    for i in range(n):
        w.add(int(ts[i]), (int(vals[i, 0]), int(vals[i, 1])))
        if i in checks:
            for width in (5_000, 700, 1):
                inside = (ts[: i + 1] > ts[i] - width)
                cnt, sums = w.window(width)
                assert cnt == inside.sum()
                assert sums == tuple(vals[: i + 1][inside].sum(axis=0).tolist())
    assert len(w) < 12_000  # ~3,300 rows per 5,000 ns window: the other 28,000+ were dropped


def _synthetic_books(rng, n=8000, levels=5):
    """Book states on a 0.5 grid with repeated stamps, a 25-minute gap, crossed/locked
    and one-sided snapshots. Returns the snapshots and their raw arrays."""
    dt = (rng.exponential(0.5, n) * NS_PER_S).astype(np.int64) * (rng.random(n) > 0.05)
    ts = MONDAY_10H + np.cumsum(dt)
    ts[n // 2:] += 25 * NS_PER_MIN
    bid_t = 10_800 + np.cumsum(rng.integers(-1, 2, n))
    ask_t = bid_t + rng.integers(1, 3, n)
    bad = rng.random(n) < 0.03
    ask_t[bad] = bid_t[bad] - rng.integers(0, 2, bad.sum())  # locked (0) or crossed (1)
    qb = rng.integers(1, 40, (n, levels))
    qa = rng.integers(1, 40, (n, levels))
    no_bid = (rng.random(n) < 0.01) & ~bad
    no_ask = (rng.random(n) < 0.01) & ~bad & ~no_bid
    pb = (bid_t[:, None] - np.arange(levels)) * 0.5
    pa = (ask_t[:, None] + np.arange(levels)) * 0.5
    pb[no_bid], qb[no_bid] = -np.inf, 0
    pa[no_ask], qa[no_ask] = np.inf, 0
    snaps = []
    for i in range(n):
        bids = [] if no_bid[i] else list(zip(pb[i], qb[i]))
        asks = [] if no_ask[i] else list(zip(pa[i], qa[i]))
        snaps.append(snap(int(ts[i]), bids, asks))
    return snaps, ts, pb, qb, pa, qa, bad


def test_ofi_windows_match_pandas_rolling():
    rng = np.random.default_rng(3)
    snaps, ts, pb, qb, pa, qa, bad = _synthetic_books(rng)
    ok = ~bad
    ts, pb, qb, pa, qa = ts[ok], pb[ok], qb[ok], pa[ok], qa[ok]
    # e_n per level straight from the CKS formula, first state = 0.
    e = np.zeros(qb.shape, dtype=np.int64)
    e[1:] = (np.where(pb[1:] >= pb[:-1], qb[1:], 0) - np.where(pb[1:] <= pb[:-1], qb[:-1], 0)
             - np.where(pa[1:] <= pa[:-1], qa[1:], 0) + np.where(pa[1:] >= pa[:-1], qa[:-1], 0))
    idx = pd.to_datetime(ts, unit="ns")
    frame = pd.DataFrame(e, index=idx, columns=[f"e{m}" for m in range(1, 6)])
    frame["top"] = (qb[:, 0] + qa[:, 0]) / 2
    frame["deep"] = (qb.sum(axis=1) + qa.sum(axis=1)) / 10
    frame["gross"] = np.abs(e[:, 0])
    expected = {}
    for w, offset in WINDOWS.items():
        r = frame.rolling(offset)
        sums, means = r.sum(), r.mean()
        expected[w] = (sums, means)
    ofi = OrderFlowImbalance()
    k = 0
    for s, is_bad in zip(snaps, bad):
        out = ofi.on_book(s)
        if is_bad:
            assert out is None
            continue
        assert out == e[k, 0]
        if k % 7 == 0 or k == len(ts) - 1:
            for w in WINDOWS:
                sums, means = expected[w]
                assert ofi.ofi(w) == sums["e1"].iat[k], (k, w)
                assert same(ofi.ofi_normalized(w), sums["e1"].iat[k] / means["top"].iat[k], 1e-12)
                assert ofi.mlofi(w) == tuple(sums[f"e{m}"].iat[k] for m in range(1, 6))
                gross = sums["gross"].iat[k]
                assert same(ofi.ofi_ratio(w), sums["e1"].iat[k] / gross if gross else math.nan, 1e-12)
                exp_norm = [sums[f"e{m}"].iat[k] / means["deep"].iat[k] for m in range(1, 6)]
                assert all(same(a, b, 1e-12) for a, b in zip(ofi.mlofi_normalized(w), exp_norm))
        k += 1
    assert ofi.skipped == bad.sum()


# --------------------------------------------------------------------------- trade flow


def _synthetic_trades(rng, n_orders=3000):
    """Aggressor orders of 1-4 fills sharing a stamp, auction/cross prints (some inside
    an aggression), a 70-minute gap opened by auction prints only."""
    rows = []
    t = MONDAY_10H
    price = 5400.0
    for i in range(n_orders):
        t += int(rng.exponential(1.2) * NS_PER_S) if rng.random() > 0.1 else 1
        if i == n_orders // 2:
            t += 70 * NS_PER_MIN
            for j in range(3):
                rows.append((t + j, price, int(rng.integers(1, 30)), AUCTION))
            t += 10 * NS_PER_S
        side = BUY if rng.random() < 0.52 else SELL
        u = rng.random()
        total = int(rng.integers(1, 6) if u < 0.6 else rng.integers(6, 25) if u < 0.85
                    else rng.integers(21, 60) if u < 0.97 else rng.integers(51, 200))
        fills = min(total, int(rng.integers(1, 5)))
        sizes = np.diff(np.r_[0, np.sort(rng.choice(np.arange(1, total), fills - 1, replace=False)), total]) \
            if fills > 1 else np.array([total])
        for j, q in enumerate(sizes):
            price += 0.5 * (1 if side == BUY else -1) * (j > 0)
            rows.append((t, price, int(q), side))
            if rng.random() < 0.03:
                rows.append((t, price, int(rng.integers(1, 10)), CROSS))  # neither joins nor breaks
        if rng.random() < 0.02:
            rows.append((t + 1, price, int(rng.integers(1, 20)), AUCTION))
            t += 1
    df = pd.DataFrame(rows, columns=["ts", "price", "qty", "tt"])
    df["s"] = np.where(df.tt == BUY, 1, np.where(df.tt == SELL, -1, 0))
    return df


def _run_ids(ts: pd.Series, side: pd.Series) -> np.ndarray:
    """Ids of consecutive runs with equal (ts, side); numpy, as a float shift would
    round nanosecond stamps ~1.8e18 together."""
    t, s = ts.to_numpy(), side.to_numpy()
    return np.cumsum(np.r_[True, (t[1:] != t[:-1]) | (s[1:] != s[:-1])])


def _orders_by_pandas(df: pd.DataFrame) -> pd.DataFrame:
    agg = df[df.s != 0]
    return agg.groupby(_run_ids(agg.ts, agg.s)).agg(ts=("ts", "first"), s=("s", "first"), qty=("qty", "sum"))


def test_trade_flow_windows_match_pandas():
    rng = np.random.default_rng(5)
    df = _synthetic_trades(rng)
    d = df.set_index(pd.to_datetime(df.ts, unit="ns"))
    cols = pd.DataFrame({"sv": d.s * d.qty, "av": d.s.abs() * d.qty, "vol": d.qty,
                         "nb": (d.s > 0).astype(int), "ns": (d.s < 0).astype(int), "n": 1}, index=d.index)
    rolled = {w: cols.rolling(off).sum().to_numpy() for w, off in WINDOWS.items()}  # sv av vol nb ns n
    speed = {sec: (cols["n"].rolling(f"{sec}s").sum() / sec).to_numpy() for sec in (60, 300, 900)}
    th = SizeThresholds()
    flow = TradeFlow(th)
    checkpoints = set(range(0, len(df), 37)) | {len(df) - 1}
    first_ts = int(df.ts.iat[0])
    nan_tfi = 0
    for i, row in enumerate(df.itertuples(index=False)):
        flow.on_trade(trade(row.ts, row.price, row.qty, row.tt))
        for w in WINDOWS:
            sv, av, vol, nb, ns, _ = rolled[w][i]
            assert flow.delta(w) == sv and flow.volume(w) == vol
            exp_tfi = sv / av if av else math.nan
            nan_tfi += math.isnan(exp_tfi)
            assert same(flow.tfi(w), exp_tfi), (i, w)
            exp_ci = (nb - ns) / (nb + ns) if nb + ns else math.nan
            assert same(flow.count_imbalance(w), exp_ci), (i, w)
        for sec in (60, 300, 900):
            exp = speed[sec][i] if row.ts - first_ts >= sec * NS_PER_S else math.nan
            assert same(flow.tape_speed(sec), exp), (i, sec)
        if i in checkpoints:
            orders = _orders_by_pandas(df.iloc[: i + 1])
            for w, width in (("1m", NS_PER_MIN), ("5m", 5 * NS_PER_MIN), ("60m", 60 * NS_PER_MIN)):
                o = orders[orders.ts > row.ts - width]
                big = (o.qty > th.medium).sum()
                assert same(flow.aggression_ratio(w), (o.s > 0).mean() if len(o) else math.nan), (i, w)
                assert same(flow.large_trade_ratio(w), big / len(o) if len(o) else math.nan), (i, w)
                v = flow.values()
                cats = pd.cut(o.qty, [0, 5, 20, 50, np.inf], labels=["small", "medium", "large", "whale"])
                for name, count in cats.value_counts().items():
                    assert v[f"orders_{name}_{w}"] == count
    assert nan_tfi > 0  # the auction-only start after the gap really produced empty windows
    assert flow.empty_windows > 0


def test_zero_volume_windows_are_nan_with_counts_and_auction_prints_stay_out_of_signed_flow():
    flow = TradeFlow()
    flow.on_trade(trade(MONDAY_10H, 100.0, 5, BUY))
    flow.on_trade(trade(MONDAY_10H + NS_PER_S, 100.0, 3, SELL))
    assert flow.tfi("1m") == pytest.approx(2 / 8)
    flow.on_trade(trade(MONDAY_10H + 2 * NS_PER_S, 100.0, 40, AUCTION))
    assert flow.tfi("1m") == pytest.approx(2 / 8)  # unchanged by the auction print
    assert flow.volume("1m") == 48 and flow.delta("1m") == 2
    assert flow.aggression_ratio("1m") == 0.5  # two aggressor orders, one buy
    flow.advance(MONDAY_10H + 2 * NS_PER_S + 90 * NS_PER_S)  # 90 s later, no prints since
    n0 = flow.empty_windows
    v = flow.values()
    assert math.isnan(v["tfi_1m"]) and v["trades_n_1m"] == 0 and v["volume_1m"] == 0
    assert math.isnan(v["aggression_ratio_1m"]) and math.isnan(v["large_trade_ratio_1m"])
    assert flow.empty_windows > n0
    assert v["tfi_5m"] == pytest.approx(2 / 8)
    # A window with only an auction print has volume but no signed flow: NaN, not 0.
    flow.on_trade(trade(MONDAY_10H + 200 * NS_PER_S, 100.0, 7, AUCTION))
    assert flow.volume("1m") == 7 and flow.delta("1m") == 0 and math.isnan(flow.tfi("1m"))


def test_aggressor_orders_group_fills_before_size_categories():
    flow = TradeFlow(SizeThresholds(small=5, medium=20, large=50))
    # One buy aggression of 4 fills x 15 = 60 contracts (a whale), then 3 small orders.
    for px in (100.0, 100.0, 100.5, 101.0):
        flow.on_trade(trade(MONDAY_10H, px, 15, BUY))
    flow.on_trade(trade(MONDAY_10H + 1, 101.0, 2, SELL))
    flow.on_trade(trade(MONDAY_10H + 1, 101.0, 2, BUY))  # same stamp, other side: a new order
    flow.on_trade(trade(MONDAY_10H + 2, 101.0, 2, BUY))
    v = flow.values()
    assert (v["orders_small_1m"], v["orders_medium_1m"], v["orders_large_1m"], v["orders_whale_1m"]) == (3, 0, 0, 1)
    assert v["large_trade_ratio_1m"] == 0.25 and v["aggression_ratio_1m"] == 0.75
    # Per fill the 15-lots would have been four "medium" trades and no whale at all.
    assert size_thresholds_for("WINJ26") == SizeThresholds() and size_thresholds_for(
        "XYZ", {"XYZ": SizeThresholds(1, 2, 3)}) == SizeThresholds(1, 2, 3)
    # 1 ms resolution groups a Sierra-Chart style split of one aggression.
    coarse = TradeFlow(aggression_resolution_ns=MS)
    for k in range(3):
        coarse.on_trade(trade(MONDAY_10H + 5 * MS + k * 1000, 100.0, 20, SELL))
    assert coarse.values()["orders_whale_1m"] == 1


def test_gaps_and_new_session_day():
    flow = TradeFlow()
    flow.on_trade(trade(MONDAY_10H, 100.0, 4, BUY))
    flow.on_trade(trade(MONDAY_10H + 30 * NS_PER_MIN, 100.0, 6, SELL))  # 30-minute gap
    assert flow.delta("5m") == -6 and flow.delta("60m") == -2  # the window just holds fewer events
    next_day = to_ns(datetime(2026, 3, 3, 9, 0, tzinfo=SAO_PAULO))
    flow.on_trade(trade(next_day, 100.0, 1, BUY))
    assert flow.delta("60m") == 1
    assert math.isnan(flow.tape_speed(60))  # warm-up restarts with the session day
    flow.on_trade(trade(next_day + 61 * NS_PER_S, 100.0, 1, BUY))
    assert flow.tape_speed(60) == pytest.approx(1 / 60)


# --------------------------------------------------------------------------- VPIN


def _vpin_numpy(df: pd.DataFrame, V: int, n: int) -> np.ndarray:
    agg = df.s.to_numpy() != 0
    vols = df.qty.to_numpy()[agg]
    sides = df.s.to_numpy()[agg]
    units = np.repeat(sides, vols)  # one entry per contract, in order
    nb = len(units) // V
    buy = np.bincount(np.arange(nb * V) // V, weights=(units[: nb * V] > 0), minlength=nb)
    imb = np.abs(V - 2 * buy)  # |V^S - V^B| with V^S = V - V^B
    cimb = np.r_[0, np.cumsum(imb)]
    done = np.cumsum(np.where(agg, df.qty.to_numpy(), 0)) // V  # complete buckets after each trade
    out = np.full(len(df), np.nan)
    ok = done >= n
    out[ok] = (cimb[done[ok]] - cimb[done[ok] - n]) / (n * V)
    return out


def test_vpin_matches_numpy_and_carries_across_days():
    rng = np.random.default_rng(9)
    df = _synthetic_trades(rng, n_orders=2500)
    # Move the second half to the next session day: buckets must carry over.
    half = len(df) // 2
    df.loc[half:, "ts"] += 24 * 60 * NS_PER_MIN
    V, n = 37, 50
    expected = _vpin_numpy(df, V, n)
    vpin = VPIN(V, n)
    for i, row in enumerate(df.itertuples(index=False)):
        vpin.on_trade(trade(row.ts, row.price, row.qty, row.tt))
        assert same(vpin.value(), expected[i], 1e-12), i
    assert np.isnan(expected[0]) and not np.isnan(expected[-1])
    assert vpin.excluded_volume == df.qty[df.s == 0].sum()
    assert vpin.buckets_completed == df.qty[df.s != 0].sum() // V
    with pytest.raises(ValueError):
        VPIN(10.5)


def test_vpin_single_print_spanning_many_buckets():
    vpin = VPIN(10, n_buckets=3)
    vpin.on_trade(trade(MONDAY_10H, 100.0, 4, SELL))
    vpin.on_trade(trade(MONDAY_10H + 1, 100.0, 1000, BUY))  # fills the bucket then ~100 full buy buckets
    assert vpin.value() == 1.0  # the last three buckets are all one-sided
    vpin.on_trade(trade(MONDAY_10H + 2, 100.0, 6, SELL))  # 1000+4 = 1004: remainder 4 buy + 6 sell
    # buckets: [..., 10 buy, 10 buy, (4 buy, 6 sell)] -> (10 + 10 + 2) / 30
    assert vpin.value() == pytest.approx(22 / 30)


# --------------------------------------------------------------------------- footprint


def _poc_by_rule(g: pd.DataFrame, tick: float) -> float:
    top = g.vol.max()
    tied = g.index[g.vol == top].to_numpy()
    mid = (g.index.max() + g.index.min()) / 2
    return float(sorted(tied, key=lambda p: (abs(p - mid), p))[0])


def _value_area_by_rule(g: pd.DataFrame, tick: float) -> tuple[float, float]:
    grid = np.round(np.arange(g.index.min(), g.index.max() + tick / 2, tick) / tick).astype(int)
    vols = {k: 0 for k in grid}
    for p, v in g.vol.items():
        vols[round(p / tick)] += v
    total = sum(vols.values())
    poc = round(_poc_by_rule(g, tick) / tick)
    lo_k, hi_k, covered = poc, poc, vols[poc]
    while covered < 0.7 * total and (lo_k > grid[0] or hi_k < grid[-1]):
        above = [k for k in (hi_k + 1, hi_k + 2) if k <= grid[-1]]
        below = [k for k in (lo_k - 1, lo_k - 2) if k >= grid[0]]
        sa = sum(vols[k] for k in above) if above else -1
        sb = sum(vols[k] for k in below) if below else -1
        if sa >= sb:
            covered += sum(vols[k] for k in above)
            hi_k = max(above)
        if sb >= sa:
            covered += sum(vols[k] for k in below)
            lo_k = min(below)
    return hi_k * tick, lo_k * tick


def _footprint_frame(df: pd.DataFrame) -> pd.DataFrame:
    d = df.assign(minute=df.ts - df.ts % NS_PER_MIN,
                  ask=np.where(df.tt == BUY, df.qty, 0), bid=np.where(df.tt == SELL, df.qty, 0))
    return d.groupby(["minute", "price"]).agg(bid=("bid", "sum"), ask=("ask", "sum"), vol=("qty", "sum"))


def _check_footprint(bars, df: pd.DataFrame, tick: float) -> None:
    per_level = _footprint_frame(df)
    minutes = per_level.index.get_level_values(0).unique()
    assert [b.ts_open for b in bars] == list(minutes)
    cvd = 0
    for bar, minute in zip(bars, minutes):
        g = per_level.loc[minute]
        assert bar.levels == tuple((float(p), int(r.bid), int(r.ask), int(r.vol)) for p, r in g.iterrows())
        delta = int(g.ask.sum() - g.bid.sum())
        cvd += delta
        assert (bar.delta, bar.cum_delta, bar.volume) == (delta, cvd, int(g.vol.sum()))
        assert bar.poc == _poc_by_rule(g, tick)
        assert (bar.value_area_high, bar.value_area_low) == _value_area_by_rule(g, tick)
        inside = g[(g.index >= bar.value_area_low) & (g.index <= bar.value_area_high)].vol.sum()
        assert inside >= 0.7 * g.vol.sum() and bar.value_area_low <= bar.poc <= bar.value_area_high


def test_footprint_matches_pandas_groupby():
    rng = np.random.default_rng(21)
    n = 6000
    ts = MONDAY_10H + np.cumsum((rng.exponential(0.3, n) * NS_PER_S).astype(np.int64))
    price = 5400.0 + 0.5 * np.cumsum(rng.integers(-1, 2, n))
    qty = rng.integers(1, 4, n)  # small sizes make POC ties common
    tt = rng.choice([BUY, SELL, AUCTION], n, p=[0.49, 0.49, 0.02])
    df = pd.DataFrame({"ts": ts, "price": price, "qty": qty, "tt": tt})
    fp = FootprintBuilder(SYM, tick_size=0.5)
    bars = [b for b in (fp.on_trade(trade(*r)) for r in df.itertuples(index=False)) if b is not None]
    bars.append(fp.flush())
    _check_footprint(bars, df, 0.5)
    assert any(b.ask_volume + b.bid_volume < b.volume for b in bars)  # auction prints: volume only


def _bar_from(rows, minute=0, builder=None):
    """rows: (price, bid_vol, ask_vol) -> one closed bar."""
    fp = builder or FootprintBuilder(SYM, tick_size=0.5, imbalance_ratio=3.0, imbalance_min_volume=5)
    t = MONDAY_10H + minute * NS_PER_MIN
    for price, bid, ask in rows:
        if bid:
            fp.on_trade(trade(t, price, bid, SELL))
        if ask:
            fp.on_trade(trade(t, price, ask, BUY))
    return fp.flush()


def test_stacked_imbalance_and_unfinished_auction():
    bar = _bar_from([(100.0, 4, 2), (100.5, 2, 12), (101.0, 3, 6), (101.5, 1, 9), (102.0, 2, 4)])
    # 12 >= 3*4, 6 >= 3*2, 9 >= 3*3 on three consecutive rows; 4 >= 3*1 but below min volume 5.
    assert bar.buy_imbalances == (100.5, 101.0, 101.5)
    assert bar.stacked_buy == ((100.5, 101.5),)
    assert bar.sell_imbalances == () and bar.stacked_sell == ()
    assert bar.unfinished_high and bar.unfinished_low
    # Counter-example: the middle row misses the ratio (5 < 3*2): no stack; low finished.
    bar = _bar_from([(100.0, 4, 0), (100.5, 2, 12), (101.0, 3, 5), (101.5, 1, 9), (102.0, 2, 4)])
    assert bar.buy_imbalances == (100.5, 101.5) and bar.stacked_buy == ()
    assert bar.unfinished_high and not bar.unfinished_low
    # Sell side mirror: bid(p) >= 3 * ask(p + tick).
    bar = _bar_from([(100.0, 30, 0), (100.5, 15, 10), (101.0, 6, 5), (101.5, 5, 2), (102.0, 0, 1)])
    assert bar.sell_imbalances == (100.0, 100.5, 101.0, 101.5) and bar.stacked_sell == ((100.0, 101.5),)
    assert not bar.unfinished_high and not bar.unfinished_low


def test_diagonal_imbalance_zero_denominator_and_range_edges():
    # 100.5 untraded inside the range: ask(101.0)=5 vs bid(100.5)=0 -> infinite ratio, min volume met.
    bar = _bar_from([(100.0, 5, 10), (101.0, 0, 5)])
    assert bar.buy_imbalances == (101.0,)  # 100.0 is the low: no row below to compare
    assert bar.sell_imbalances == (100.0,)  # 5 >= 3 * ask(100.5) = 0
    bar = _bar_from([(100.0, 4, 10), (101.0, 0, 4)])
    assert bar.buy_imbalances == () and bar.sell_imbalances == ()  # below the minimum volume


def test_poc_tie_break_and_value_area_two_row_rule_by_hand():
    # Tied 5s at 100.0 and 101.0 are equally far from the mid-range 100.5: the lower wins.
    assert _bar_from([(100.0, 5, 0), (100.5, 1, 0), (101.0, 0, 5)]).poc == 100.0
    # Tied 5s at 100.0 and 100.5; mid-range 100.75 is nearer 100.5 (not simply the lowest).
    assert _bar_from([(100.0, 5, 0), (100.5, 0, 5), (101.0, 1, 0), (101.5, 0, 1)]).poc == 100.5
    # Volumes 3 3 10 3 3: POC 101.0 (10 of 22); the pairs above and below tie at 6, so both
    # are added (22 >= 15.4) rather than one side (16).
    bar = _bar_from([(100.0, 3, 0), (100.5, 0, 3), (101.0, 5, 5), (101.5, 3, 0), (102.0, 0, 3)])
    assert (bar.poc, bar.value_area_low, bar.value_area_high) == (101.0, 100.0, 102.0)
    # Volumes 1 1 10 4 1 8: above (4+1) vs below (1+1) -> add above: 15 of 25 < 17.5; then the
    # pair above is one row (8) vs below (2) -> add it: 23 >= 17.5. VA 101.0 .. 102.5.
    bar = _bar_from([(100.0, 1, 0), (100.5, 1, 0), (101.0, 10, 0), (101.5, 4, 0), (102.0, 1, 0), (102.5, 0, 8)])
    assert (bar.poc, bar.value_area_low, bar.value_area_high) == (101.0, 101.0, 102.5)


def test_absorption_confirmed_when_the_low_holds():
    fp = FootprintBuilder(SYM, tick_size=0.5)
    b1 = _bar_from([(100.0, 30, 0), (100.5, 5, 0), (101.0, 0, 5)], 0, fp)
    assert b1.absorption == ()
    b2 = _bar_from([(100.5, 3, 3), (101.0, 2, 2)], 1, fp)
    b3 = _bar_from([(100.0, 2, 4), (100.5, 1, 1)], 2, fp)
    assert b2.absorption == ()
    assert b3.absorption == (Absorption("low", MONDAY_10H, 100.0, 35),)
    # Counter-example: the next bar trades below the low: no absorption ever.
    fp = FootprintBuilder(SYM, tick_size=0.5)
    _bar_from([(100.0, 30, 0), (100.5, 5, 0), (101.0, 0, 5)], 0, fp)
    bars = [_bar_from([(99.5, 3, 3)], 1, fp), _bar_from([(100.5, 2, 2)], 2, fp), _bar_from([(100.5, 2, 2)], 3, fp)]
    assert all(b.absorption == () for b in bars)


def test_cumulative_delta_resets_on_a_new_session_day():
    fp = FootprintBuilder(SYM)
    fp.on_trade(trade(MONDAY_10H, 100.0, 5, BUY))
    next_day = to_ns(datetime(2026, 3, 3, 9, 0, tzinfo=SAO_PAULO))
    day1 = fp.on_trade(trade(next_day, 100.0, 3, SELL))
    day2 = fp.flush()
    assert (day1.cum_delta, day2.delta, day2.cum_delta) == (5, -3, -3)


# --------------------------------------------------------------------------- liquidity


def test_liquidity_metrics_by_formula():
    lm = LiquidityMonitor(tick_size=0.5, depth_levels=3)
    lm.on_book(snap(MONDAY_10H, [(100.0, 10), (99.5, 0), (99.0, 20), (98.5, 5), (98.0, 7)],
                    [(100.5, 30), (101.0, 1), (101.5, 2), (102.0, 9)]))
    v = lm.values()
    qb, qa = 10, 30
    i = qb / (qb + qa)
    db, da = 10 + 20 + 5, 30 + 1 + 2  # first three non-empty levels
    assert v["spread_ticks"] == 1 and v["mid"] == 100.25
    assert v["book_imbalance"] == i and v["queue_imbalance"] == 2 * i - 1
    assert (v["bid_depth"], v["ask_depth"], v["depth"]) == (db, da, db + da)
    assert v["depth_imbalance"] == pytest.approx((db - da) / (db + da))
    assert v["weighted_mid"] == pytest.approx(i * 100.5 + (1 - i) * 100.0)
    assert v["microprice"] == v["weighted_mid"]  # documented weighted-mid fallback
    assert math.isnan(v["liquidity_score"])  # warm-up
    # Locked and crossed: skipped, previous values kept, counted.
    assert not lm.on_book(snap(MONDAY_10H + 1, [(100.5, 3)], [(100.5, 4)]))
    assert not lm.on_book(snap(MONDAY_10H + 2, [(101.0, 3)], [(100.5, 4)]))
    assert lm.values()["mid"] == 100.25 and (lm.skipped_locked, lm.skipped_crossed) == (1, 1)
    # One-sided book: no spread, mid, W; imbalance still defined from sizes.
    lm.on_book(snap(MONDAY_10H + 3, [(100.0, 10)], []))
    v = lm.values()
    assert math.isnan(v["spread_ticks"]) and math.isnan(v["mid"]) and math.isnan(v["microprice"])
    assert v["book_imbalance"] == 1.0 and lm.one_sided == 1
    lm.on_book(snap(MONDAY_10H + 4, [], []))
    assert math.isnan(lm.values()["book_imbalance"])


def test_liquidity_score_matches_rolling_zscores():
    rng = np.random.default_rng(4)
    n = 3000
    ts = MONDAY_10H + np.cumsum((rng.exponential(2.0, n) * NS_PER_S).astype(np.int64))
    spread = rng.choice([1, 1, 1, 2, 3], n)
    depth_b = rng.integers(1, 60, (n, 5))
    depth_a = rng.integers(1, 60, (n, 5))
    x = np.log1p(depth_b.sum(axis=1) + depth_a.sum(axis=1))
    frame = pd.DataFrame({"x": x, "y": spread.astype(float)}, index=pd.to_datetime(ts, unit="ns"))
    r = frame.rolling("30min")
    mean, std, cnt = r.mean(), r.std(ddof=0), r.count()
    lm = LiquidityMonitor(tick_size=0.5, depth_levels=5, min_score_samples=30)
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    for k in range(n):
        bid = 10_800 - np.arange(5)
        ask = 10_800 + spread[k] + np.arange(5)
        lm.on_book(snap(int(ts[k]), list(zip(bid * 0.5, depth_b[k])), list(zip(ask * 0.5, depth_a[k]))))
        if cnt.x.iat[k] < 30:
            assert math.isnan(lm.liquidity_score())
            continue
        zx = (x[k] - mean.x.iat[k]) / std.x.iat[k]
        zy = (spread[k] - mean.y.iat[k]) / std.y.iat[k] if std.y.iat[k] > 1e-9 else 0.0
        score = lm.liquidity_score()
        assert score == pytest.approx(phi((zx - zy) / 2), rel=1e-6, abs=1e-9), k
        assert 0.0 <= score <= 1.0


# --------------------------------------------------------------------------- tape patterns


def test_sweep_one_aggression_across_levels():
    det = SweepDetector()
    for px, q in ((100.0, 2), (100.0, 1), (100.5, 3), (101.0, 4)):
        assert det.on_trade(trade(MONDAY_10H, px, q, BUY)) == ()
    assert det.on_book(snap(MONDAY_10H, [(100.5, 1)], [(101.5, 9)])) == ()  # same stamp: still open
    found = det.on_book(snap(MONDAY_10H + MS, [(100.5, 1)], [(101.5, 9)]))
    assert len(found) == 1
    p = found[0]
    assert (p.kind, p.side, p.price, p.ts_event, p.confidence) == ("sweep", 1, 101.0, MONDAY_10H, 0.75)
    assert p.details["levels"] == 3 and p.details["qty"] == 10
    det.on_trade(trade(MONDAY_10H + 2 * MS, 100.0, 1, SELL))
    det.on_trade(trade(MONDAY_10H + 2 * MS, 99.5, 1, SELL))
    (p,) = det.flush()
    assert (p.side, p.price, p.confidence, p.details["levels"]) == (-1, 99.5, 0.5, 2)


@pytest.mark.parametrize(
    "fills",
    [
        [(0, 100.0, BUY), (0, 100.0, BUY), (0, 100.0, BUY)],  # one level only
        [(0, 100.0, BUY), (0, 100.5, BUY), (0, 100.0, BUY)],  # not monotone
        [(0, 100.0, BUY), (1, 100.5, BUY), (2, 101.0, BUY)],  # different stamps
        [(0, 100.0, BUY), (0, 100.5, SELL)],  # sides differ
        [(0, 100.0, BUY), (0, 100.5, AUCTION)],  # an auction print is no aggression
    ],
    ids=["one_level", "not_monotone", "separate_stamps", "two_sides", "auction"],
)
def test_sweep_levels_counter_examples(fills):
    det = SweepDetector()
    found = []
    for dt, px, tt in fills:
        found += det.on_trade(trade(MONDAY_10H + dt * MS, px, 1, tt))
    found += det.flush()
    assert [p for p in found if p.details["method"] == "levels"] == []


def _run(det, sizes, step_ns, sides=None):
    out = []
    for k, q in enumerate(sizes):
        out += det.on_trade(trade(MONDAY_10H + k * step_ns, 100.0, q, (sides or [BUY] * len(sizes))[k]))
    return out + list(det.flush())


def test_sweep_fast_run_of_rising_aggressions():
    found = _run(SweepDetector(), [1, 2, 3, 4, 5], 100 * MS)
    runs = [p for p in found if p.details["method"] == "run"]
    assert len(runs) == 1
    # rate = 4 intervals / 0.4 s = 10/s -> confidence min(1, 10 / (2*5)) = 1
    assert runs[0].details["rate"] == pytest.approx(10.0) and runs[0].confidence == pytest.approx(1.0)
    assert runs[0].ts_event == MONDAY_10H + 4 * 100 * MS and runs[0].side == 1
    assert _run(SweepDetector(), [1, 2, 3, 4, 5], 300 * MS) == []  # 3.3 orders/s: too slow
    assert _run(SweepDetector(), [1, 2, 2, 3, 4], 100 * MS) == []  # size not rising
    assert _run(SweepDetector(), [1, 2, 3, 4, 5], 100 * MS, [BUY, BUY, SELL, BUY, BUY]) == []
    assert _run(SweepDetector(), [1, 2, 3, 4], 100 * MS) == []  # only four


def test_iceberg_fills_beyond_displayed_size():
    det = IcebergDetector()
    det.on_book(snap(MONDAY_10H, [(100.5, 5)], [(101.0, 10)]))
    assert det.on_trade(trade(MONDAY_10H + 1, 101.0, 4, BUY)) == ()
    det.on_book(snap(MONDAY_10H + 2, [(100.5, 5)], [(101.0, 6)]))
    assert det.on_trade(trade(MONDAY_10H + 3, 101.0, 6, BUY)) == ()  # 10: exactly the displayed size
    det.on_book(snap(MONDAY_10H + 4, [(100.5, 5)], [(101.0, 10)]))  # refilled at the same price
    (p,) = det.on_trade(trade(MONDAY_10H + 5, 101.0, 5, BUY))
    assert (p.kind, p.side, p.price, p.ts_event) == ("iceberg", -1, 101.0, MONDAY_10H + 5)  # hidden seller
    assert p.confidence == pytest.approx(1 - 10 / 15)
    assert (p.details["executed"], p.details["displayed"]) == (15, 10)
    assert det.on_trade(trade(MONDAY_10H + 6, 101.0, 5, BUY)) == ()  # once per episode


def test_iceberg_counter_examples():
    det = IcebergDetector()
    det.on_book(snap(MONDAY_10H, [(100.5, 5)], [(101.0, 10)]))
    det.on_trade(trade(MONDAY_10H + 1, 101.0, 4, BUY))
    det.on_book(snap(MONDAY_10H + 2, [(100.5, 5)], [(101.0, 6)]))
    det.on_trade(trade(MONDAY_10H + 3, 101.0, 6, BUY))
    det.on_book(snap(MONDAY_10H + 4, [(100.5, 5)], [(101.5, 8)]))  # level consumed: best ask moved on
    assert det.on_trade(trade(MONDAY_10H + 5, 101.5, 8, BUY)) == ()
    assert det.on_trade(trade(MONDAY_10H + 6, 101.5, 1, BUY)) != ()  # 9 > 8 at the new level: that one is
    # The level leaves the top and a new 10-lot shows up at the same price: a fresh
    # episode (8 + 5 traded across two different resting sizes is no iceberg).
    det = IcebergDetector()
    det.on_book(snap(MONDAY_10H, [(100.5, 5)], [(101.0, 10)]))
    det.on_trade(trade(MONDAY_10H + 1, 101.0, 4, BUY))
    det.on_trade(trade(MONDAY_10H + 2, 101.0, 4, BUY))
    det.on_book(snap(MONDAY_10H + 3, [(100.5, 5)], [(101.5, 7)]))
    det.on_book(snap(MONDAY_10H + 4, [(100.5, 5)], [(101.0, 10)]))
    assert det.on_trade(trade(MONDAY_10H + 5, 101.0, 5, BUY)) == ()
    det = IcebergDetector()
    det.on_book(snap(MONDAY_10H, [(100.5, 5)], [(101.0, 10)]))
    assert det.on_trade(trade(MONDAY_10H + 1, 101.0, 12, BUY)) == ()  # one fill is not "repeated fills"
    assert det.on_trade(trade(MONDAY_10H + 2, 102.0, 12, BUY)) == ()  # price not displayed: no reference


def test_iceberg_refills_with_low_size_variation():
    det = IcebergDetector()
    det.on_book(snap(MONDAY_10H, [(100.0, 10)], [(100.5, 50)]))
    found = []
    for k, (fill, shown) in enumerate(((10, 10), (10, 10), (9, 10))):
        found += det.on_trade(trade(MONDAY_10H + 2 * k + 1, 100.0, fill, SELL))
        found += det.on_book(snap(MONDAY_10H + 2 * k + 2, [(100.0, shown)], [(100.5, 50)]))
    refill = [p for p in found if p.details["method"] == "refill"]
    assert len(refill) == 1
    refills = np.array([10, 10, 9])
    cv = refills.std() / refills.mean()
    assert refill[0].details["cv"] == pytest.approx(cv)
    assert refill[0].confidence == pytest.approx((1 - cv / 0.2) * 3 / 5)
    assert (refill[0].side, refill[0].price) == (1, 100.0)  # hidden buyer on the bid
    # Counter-example: refills 2, 10, 25 (CV ~ 0.77).
    det = IcebergDetector()
    det.on_book(snap(MONDAY_10H, [(100.0, 10)], [(100.5, 50)]))
    found = []
    for k, shown in enumerate((7, 12, 32)):
        found += det.on_trade(trade(MONDAY_10H + 2 * k + 1, 100.0, 5, SELL))
        found += det.on_book(snap(MONDAY_10H + 2 * k + 2, [(100.0, shown)], [(100.5, 50)]))
    assert [p for p in found if p.details["method"] == "refill"] == []


# --------------------------------------------------------------------------- flow set


def test_flow_features_set_and_shared_clock():
    ff = FlowFeatures(SYM)
    assert tuple(ff.values()) == FLOW_FEATURE_NAMES
    assert all(math.isnan(x) for x in ff.values().values())
    ff.on_book(snap(MONDAY_10H, *REF))
    ff.on_book(snap(MONDAY_10H + NS_PER_S, [(100.0, 14)], [(101.0, 8)]))
    ff.on_trade(trade(MONDAY_10H + 2 * NS_PER_S, 101.0, 60, BUY))
    ff.on_trade(trade(MONDAY_10H + 3 * NS_PER_S, 100.0, 2, SELL))
    v = ff.values()
    assert v["flow_ofi_1m"] == pytest.approx(4 / ((18 + 22) / 2 / 2))
    assert v["flow_volume_imbalance"] == pytest.approx(58 / 62)
    assert v["flow_aggression_ratio"] == 0.5 and v["flow_large_trade_ratio"] == 0.5
    assert math.isnan(v["tape_speed"])  # not 60 s into the session yet
    ff.on_trade(trade(MONDAY_10H + 2 * NS_PER_MIN, 100.0, 1, SELL))  # a trade moves the book clock too
    v = ff.values()
    assert math.isnan(v["flow_ofi_1m"]) and v["flow_ofi_5m"] == pytest.approx(4 / 10)
    assert v["tape_speed"] == pytest.approx(1 / 60)


# --------------------------------------------------------------------------- memory


def test_memory_stays_bounded_over_a_million_events():
    rng = np.random.default_rng(1)
    n = 1_000_000
    step = 50 * MS  # 72,000 events per 60-minute window; the run crosses midnight
    start = to_ns(datetime(2026, 3, 2, 15, 0, tzinfo=SAO_PAULO))
    mid = 10_800 + np.cumsum(rng.integers(-1, 2, n))
    is_trade = rng.random(n) < 0.4
    side = rng.random(n) < 0.5
    qty = rng.integers(1, 30, n).tolist()
    qb = rng.integers(1, 50, n).tolist()
    qa = rng.integers(1, 50, n).tolist()
    ff = FlowFeatures(SYM)
    tape = TapeReader()
    fp = FootprintBuilder(SYM)
    vpin = VPIN(100)
    peak: dict[str, int] = {}
    mid_l, trade_l, side_l = mid.tolist(), is_trade.tolist(), side.tolist()
    for i in range(n):
        ts = start + i * step
        m = mid_l[i] * 0.5
        if trade_l[i]:
            t = Trade(SYM, ts, ts, i, m + 0.5 if side_l[i] else m, qty[i], BUY if side_l[i] else SELL)
            ff.on_trade(t)
            tape.on_trade(t)
            fp.on_trade(t)
            vpin.on_trade(t)
        else:
            s = BookSnapshot(SYM, ts, ts, i, (m, m - 0.5, m - 1.0), (qb[i], 5, 5), (m + 0.5, m + 1.0, m + 1.5),
                             (qa[i], 5, 5))
            ff.on_book(s)
            tape.on_book(s)
        if i % 50_000 == 0:
            sizes = {**ff.state_sizes(), **fp.state_sizes(), **vpin.state_sizes()}
            for k, v in sizes.items():
                peak[k] = max(peak.get(k, 0), v)
    per_hour = 60 * NS_PER_MIN // step
    for key in ("ofi_rows", "trade_rows", "order_rows"):
        assert peak[key] <= 2 * per_hour + 4096, (key, peak[key])
    assert peak["liquidity_rows"] <= 2 * (30 * NS_PER_MIN // step) + 4096
    assert peak["vpin_buckets"] <= 50 and peak["footprint_rows"] <= 600
    assert len(tape.sweeps._run_ts) <= 5
    assert ff.ofi.session_resets == 1
    assert not math.isnan(ff.values()["flow_ofi_15m"])


# --------------------------------------------------------------------------- real ES tape


def _parse_es_time(date: str, clock: str) -> int:
    """'13:30:00.509003' -> 13:30:00 + 509 ms + 3 (sub-ms counter, kept as microseconds)."""
    hms, frac = clock.split(".")
    base = pd.Timestamp(f"{date} {hms}", tz="UTC").value
    return base + int(frac[:-3]) * MS + int(frac[-3:]) * 1000


@pytest.fixture(scope="module")
def es(es_file) -> pd.DataFrame:
    df = pd.read_csv(es_file, sep=";").sort_values("Sequence", kind="stable").reset_index(drop=True)
    df["ts"] = [_parse_es_time(d, t) for d, t in zip(df.Date, df.Time)]
    df["tt"] = df.TradeType.map({2: BUY, 1: SELL})
    df["s"] = np.where(df.tt == BUY, 1, -1)
    df["qty"] = df.Volume
    df["price"] = df.Price
    return df


def _es_trades(df: pd.DataFrame) -> list[Trade]:
    return [Trade("ES", int(r.ts), int(r.ts), int(r.Sequence), float(r.Price), int(r.Volume), int(r.tt))
            for r in df.itertuples(index=False)]


def test_es_time_parser_quirk(es):
    assert len(es) == 2026 and es.ts.is_monotonic_increasing
    naive = pd.to_datetime(es.Date + " " + es.Time).astype("int64")
    assert int((np.diff(naive.to_numpy()) < 0).sum()) == 19  # why the quirk-aware parse matters


def test_es_footprint_delta_volume_and_levels(es):
    fp = FootprintBuilder("ES", tick_size=0.25)
    bars = [b for b in map(fp.on_trade, _es_trades(es)) if b is not None] + [fp.flush()]
    assert sum(b.volume for b in bars) == 2846
    assert (sum(b.ask_volume for b in bars), sum(b.bid_volume for b in bars)) == (1432, 1414)
    minute = es.ts - es.ts % NS_PER_MIN
    per_minute = (es.qty.where(es.s > 0, 0) - es.qty.where(es.s < 0, 0)).groupby(minute).sum()
    assert [b.delta for b in bars] == per_minute.tolist()
    _check_footprint(bars, es[["ts", "price", "qty", "tt"]], 0.25)


def test_es_trade_flow(es):
    flow = TradeFlow(aggression_resolution_ns=MS)
    for t in _es_trades(es):
        flow.on_trade(t)
    assert flow.volume("60m") == 2846 and flow.delta("60m") == 1432 - 1414
    assert flow.tfi("60m") == pytest.approx(18 / 2846)
    orders = es.groupby(_run_ids(es.ts // MS, es.s)).agg(s=("s", "first"), qty=("qty", "sum"))
    assert flow.aggression_ratio("60m") == pytest.approx((orders.s > 0).mean())
    assert flow.large_trade_ratio("60m") == pytest.approx((orders.qty > 20).mean())


def test_es_sweeps_match_pandas_rule(es):
    ms = es.ts // MS
    assert int((es.groupby(ms).Price.nunique() > 1).sum()) == 18  # the documented candidates
    expected = set()
    for _, g in es.assign(ms=ms).groupby(_run_ids(ms, es.s)):
        steps = np.diff(g.Price.to_numpy()) * g.s.iat[0]
        levels = 1 + int((steps != 0).sum())
        if levels >= 2 and (steps >= 0).all():
            expected.add((int(g.ms.iat[0]), int(g.s.iat[0]), levels))
    det = SweepDetector(aggression_resolution_ns=MS)
    found = [p for t in _es_trades(es) for p in det.on_trade(t)] + list(det.flush())
    got = {(p.ts_event // MS, p.side, p.details["levels"]) for p in found if p.details["method"] == "levels"}
    assert got == expected and len(got) > 0
    candidates = set(ms[es.groupby(ms).Price.transform("nunique") > 1])
    assert {k[0] for k in got} <= candidates


def test_es_l1_ofi(es):
    ofi = OrderFlowImbalance(levels=1)
    for r in es.itertuples(index=False):
        ofi.on_book(snap(int(r.ts), [(r.BidPrice, r.BidSize)], [(r.AskPrice, r.AskSize)], "ES"))
    pb, qb, pa, qa = (es[c].to_numpy() for c in ("BidPrice", "BidSize", "AskPrice", "AskSize"))
    e = np.r_[0, (np.where(pb[1:] >= pb[:-1], qb[1:], 0) - np.where(pb[1:] <= pb[:-1], qb[:-1], 0)
                  - np.where(pa[1:] <= pa[:-1], qa[1:], 0) + np.where(pa[1:] >= pa[:-1], qa[:-1], 0))]
    s = pd.Series(e, index=pd.to_datetime(es.ts, unit="ns"))
    assert ofi.ofi("60m") == e.sum() and ofi.skipped == 0
    assert ofi.ofi("1m") == s.rolling("1min").sum().iat[-1]
