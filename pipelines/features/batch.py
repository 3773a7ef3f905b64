"""The 65 features for every trade of a tape at once: the training and backtest path.

:func:`compute_batch` takes one symbol's trades in tape order and returns one
row per valid trade with the same numbers the live engine
(:class:`pipelines.features.core.FeatureEngineCore`) gives after that trade:
the definitions, warm-ups and conventions are in :mod:`pipelines.features.core`,
and so is how the two paths agree without float drift. Every window sum is a
difference of int64 prefix sums of the same integer-quantized prices; the one
sequential piece, the Wilder recursion of ``rsi_14``, runs through
``itertools.accumulate`` with the engine's very operations.

:func:`compute_streaming` runs the live engine over a tape and returns the same
table: the reference for the parity test, and the CLI's ``--engine streaming``.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import numpy as np
import pandas as pd

from pipelines.features.core import (
    BB_WINDOW,
    BROKER_ACTIVE,
    BROKER_RERANK,
    BROKER_WINDOW,
    CLOSING_START_S,
    DEFAULT_PRICE_QUANTUM,
    FEATURE_NAMES,
    FLOW_WINDOW,
    GK_BLOCK_TRADES,
    GK_BLOCKS,
    GK_K,
    ID_SPAN,
    INTENSITY_LONG_S,
    INTENSITY_SHORT_S,
    LOG_RETURN_LAGS,
    LUNCH_END_S,
    LUNCH_START_S,
    MA_PAIRS,
    MOMENTUM_PAIRS,
    N_FEATURES,
    OFI_WINDOWS,
    OPENING_END_S,
    RETURN_LAGS,
    RSI_KEEP,
    RSI_NEW,
    RSI_PERIOD,
    SHARPE_WINDOWS,
    TOP_N,
    VOL_RATIO_PAIRS,
    VOL_WINDOWS,
    VOLUME_SHORT,
    VOLUME_WINDOWS,
    FeatureEngineCore,
)
from pipelines.model.clock import NS_PER_DAY, NS_PER_S, SESSION_CLOSE_S, SESSION_OPEN_S, local_ns
from pipelines.model.messages import Trade, TradeType

_BUY = int(TradeType.BUY_AGGRESSOR)
_SELL = int(TradeType.SELL_AGGRESSOR)
_TRADE_COLUMNS = ("ts_event", "price", "qty", "trade_type", "buyer", "seller")


def trade_arrays(trades: Any) -> dict[str, np.ndarray]:
    """Columns of a DataFrame (Trade field names; buyer/seller optional) or an iterable of Trade, as
    numpy arrays; invalid trades dropped and unknown broker ids set to 0 (the engine's rules)."""
    if isinstance(trades, pd.DataFrame):
        df = trades
    else:
        rows = list(trades)
        df = pd.DataFrame(rows, columns=list(Trade._fields)) if rows else pd.DataFrame(columns=list(Trade._fields))
    missing = [c for c in _TRADE_COLUMNS[:4] if c not in df.columns]
    if missing:
        raise ValueError(f"trades need columns {_TRADE_COLUMNS[:4]}, missing {missing}")
    n = len(df)
    cols = {
        "ts_event": df["ts_event"].to_numpy(dtype=np.int64),
        "price": df["price"].to_numpy(dtype=np.float64),
        "qty": df["qty"].to_numpy(dtype=np.int64),
        "trade_type": df["trade_type"].to_numpy(dtype=np.int64),
    }
    for side in ("buyer", "seller"):
        ids = df[side].to_numpy(dtype=np.int64) if side in df.columns else np.zeros(n, dtype=np.int64)
        cols[side] = np.where((ids > 0) & (ids < ID_SPAN), ids, 0)
    ok = np.isfinite(cols["price"]) & (cols["price"] > 0) & (cols["qty"] > 0)
    if not ok.all():
        cols = {k: v[ok] for k, v in cols.items()}
    return cols


def _prefix(x: np.ndarray) -> np.ndarray:
    """int64 prefix sums with a leading 0: prefix[n] = sum of the first n values.
    Overflow wraps modulo 2**64, which leaves every window difference exact."""
    out = np.zeros(len(x) + 1, dtype=np.int64)
    np.cumsum(x, out=out[1:])
    return out


def _wsum(prefix: np.ndarray, w: int) -> np.ndarray:
    """Sum over the last w values ending at each row (rows < w-1 hold garbage; mask them)."""
    n = len(prefix) - 1
    out = np.zeros(n, dtype=np.int64)
    if n >= w:
        out[w - 1:] = prefix[w:] - prefix[: n + 1 - w]
    return out


def _lag(x: np.ndarray, k: int) -> np.ndarray:
    """x shifted k rows down (rows < k hold x[0]; mask them)."""
    out = np.empty_like(x)
    if len(x):
        out[k:] = x[:-k] if k < len(x) else x[:0]
        out[:min(k, len(x))] = x[0]
    return out


def compute_batch(trades: Any, price_quantum: float = DEFAULT_PRICE_QUANTUM) -> pd.DataFrame:
    """Every feature for every trade of one symbol, vectorized.

    ``trades``: a DataFrame with the Trade columns (``ts_event``, ``price``,
    ``qty``, ``trade_type``; ``buyer``/``seller`` optional) or an iterable of
    :class:`Trade`, in tape order. Returns one row per valid trade: ``ts_event``,
    ``price``, ``qty``, ``aggressor`` (+1 buyer, -1 seller, 0 none) and the 65
    feature columns. Same definitions and warm-ups as :class:`FeatureEngineCore`.
    """
    cols = trade_arrays(trades)
    ts, px, qty, ttype = cols["ts_event"], cols["price"], cols["qty"], cols["trade_type"]
    n = len(px)
    q = float(price_quantum)
    idx = np.arange(n)
    count = idx + 1  # trades seen after each row
    feats: dict[str, np.ndarray] = {}

    def full() -> np.ndarray:
        return np.full(n, np.nan)

    P = np.rint(px / q).astype(np.int64)
    X = P - P[0] if n else P  # shifted prices keep squared sums small; variances are shift-invariant
    d = np.zeros(n, dtype=np.int64)
    d[1:] = P[1:] - P[:-1]
    a = _aggressor(ttype)
    sv = a * qty
    cX, cX2, cD2 = _prefix(X), _prefix(X * X), _prefix(d * d)
    cV, cV2, cSV, cVP = _prefix(qty), _prefix(qty * qty), _prefix(sv), _prefix(qty * P)

    # volatility
    vol = {}
    for w in (10, 20, 50, 100, 200):
        v = full()
        ok = count > w
        s1 = P - _lag(P, w)
        num = w * _wsum(cD2, w) - s1 * s1
        v[ok] = np.sqrt(num[ok].astype(np.float64)) / w * q / px[ok]
        vol[w] = v
    for w in VOL_WINDOWS:
        feats[f"volatility_{w}"] = vol[w]
    for a_, b_ in VOL_RATIO_PAIRS:
        r = full()
        ok = vol[b_] > 0.0
        r[ok] = vol[a_][ok] / vol[b_][ok]
        feats[f"volatility_ratio_{a_}_{b_}"] = r
    feats["volatility_gk"] = _batch_gk(px)
    r = full()
    s1 = _wsum(cX, BB_WINDOW)
    num = BB_WINDOW * _wsum(cX2, BB_WINDOW) - s1 * s1
    ok = (count >= BB_WINDOW) & (num != 0)
    r[ok] = (BB_WINDOW * X[ok] - s1[ok]).astype(np.float64) / (2.0 * np.sqrt(num[ok].astype(np.float64)))
    feats["bb_position"] = r

    # returns
    for k in RETURN_LAGS:
        r = full()
        if n > k:
            r[k:] = px[k:] / px[:-k] - 1.0
        feats[f"returns_{k}"] = r
    for k in LOG_RETURN_LAGS:
        r = full()
        if n > k:
            r[k:] = np.log(px[k:] / px[:-k])
        feats[f"log_returns_{k}"] = r

    # order flow
    for w in OFI_WINDOWS:
        r = full()
        v = _wsum(cV, w)
        ok = (count >= w) & (v != 0)
        r[ok] = _wsum(cSV, w)[ok] / v[ok]
        feats[f"order_flow_imbalance_{w}"] = r
    local = local_ns(ts)
    day = local // NS_PER_DAY
    feats["cumulative_signed_volume"] = _session_cumsum(sv, day).astype(np.float64)
    okf = count >= FLOW_WINDOW
    r = full()
    r[okf] = _wsum(cSV, FLOW_WINDOW)[okf]
    feats["signed_volume"] = r
    r = full()
    v, vp = _wsum(cV, FLOW_WINDOW), _wsum(cVP, FLOW_WINDOW)
    ok = okf & (vp != 0)
    r[ok] = (P[ok] * v[ok] - vp[ok]) / vp[ok]
    feats["volume_weighted_return"] = r
    r = _batch_distinct_agents(cols["buyer"], cols["seller"], FLOW_WINDOW).astype(np.float64)
    r[~okf | (r == 0)] = np.nan
    feats["agent_turnover"] = r

    # volume
    s10 = _wsum(cV, VOLUME_SHORT)
    for w in VOLUME_WINDOWS:
        r = full()
        v = _wsum(cV, w)
        ok = (count >= w) & (v != 0)
        r[ok] = (w * s10[ok]) / (VOLUME_SHORT * v[ok])
        feats[f"volume_ratio_{w}"] = r
    for w in VOLUME_WINDOWS:
        r = full()
        s1 = _wsum(cV, w)
        num = w * _wsum(cV2, w) - s1 * s1
        ok = (count >= w) & (num != 0)
        r[ok] = (w * qty[ok] - s1[ok]) / np.sqrt(num[ok].astype(np.float64))
        feats[f"volume_zscore_{w}"] = r
    clock = np.maximum.accumulate(ts) if n else ts
    elapsed = clock - clock[0] if n else clock
    c_short = idx - np.searchsorted(clock, clock - INTENSITY_SHORT_S * NS_PER_S, side="right") + 1
    c_long = idx - np.searchsorted(clock, clock - INTENSITY_LONG_S * NS_PER_S, side="right") + 1
    short_rate = c_short / INTENSITY_SHORT_S
    r = full()
    ok = elapsed >= INTENSITY_SHORT_S * NS_PER_S
    r[ok] = short_rate[ok]
    feats["trade_intensity"] = r
    r = full()
    ok = elapsed >= INTENSITY_LONG_S * NS_PER_S
    r[ok] = short_rate[ok] / (c_long[ok] / INTENSITY_LONG_S)
    feats["trade_intensity_ratio"] = r

    # technical
    for a_, b_ in MA_PAIRS:
        r = full()
        ok = count >= b_
        # shifted sums: sum(P) = sum(X) + w * P0, exact in integers
        sa = _wsum(cX, a_) + a_ * (P[0] if n else 0)
        sb = _wsum(cX, b_) + b_ * (P[0] if n else 0)
        r[ok] = (b_ * sa[ok] - a_ * sb[ok]) / (a_ * sb[ok])
        feats[f"ma_{a_}_{b_}_ratio"] = r
    for a_, b_ in MOMENTUM_PAIRS:
        r = full()
        pa, pb = _lag(P, a_), _lag(P, b_)
        db = P - pb
        ok = (count > b_) & (db != 0)
        r[ok] = ((P - pa) * pb)[ok] / (db * pa)[ok]
        feats[f"momentum_{a_}_{b_}"] = r
    for w in SHARPE_WINDOWS:
        r = full()
        s1 = P - _lag(P, w)
        num = w * _wsum(cD2, w) - s1 * s1
        ok = (count > w) & (num != 0)
        r[ok] = s1[ok] / np.sqrt(num[ok].astype(np.float64))
        feats[f"sharpe_{w}"] = r
    tod_ns = local - day * NS_PER_DAY
    r = full()
    ok = (tod_ns >= SESSION_OPEN_S * NS_PER_S) & (tod_ns <= SESSION_CLOSE_S * NS_PER_S)
    r[ok] = (tod_ns[ok] - SESSION_OPEN_S * NS_PER_S) / ((SESSION_CLOSE_S - SESSION_OPEN_S) * NS_PER_S)
    feats["time_normalized"] = r
    feats["rsi_14"] = _batch_rsi(d)

    # microstructure
    buy_flags, buy_count, buy_changed = _batch_top_brokers(cols["buyer"], qty)
    sell_flags, sell_count, sell_changed = _batch_top_brokers(cols["seller"], qty)
    for k in range(TOP_N):
        feats[f"top_buyer_{k}_active"] = buy_flags[:, k]
    for k in range(TOP_N):
        feats[f"top_seller_{k}_active"] = sell_flags[:, k]
    feats["top_buyers_count"] = buy_count
    feats["top_sellers_count"] = sell_count
    feats["buyer_changed"] = buy_changed
    feats["seller_changed"] = sell_changed
    r = full()
    r[ttype == _BUY] = 1.0
    r[ttype == _SELL] = 0.0
    feats["is_buyer_aggressor"] = r

    # temporal
    tod_s = tod_ns // NS_PER_S
    feats["minute"] = (tod_s // 60 % 60).astype(np.float64)
    feats["hour"] = (tod_s // 3600).astype(np.float64)
    feats["day_of_week"] = ((day + 3) % 7).astype(np.float64)
    feats["is_opening_30min"] = ((tod_s >= SESSION_OPEN_S) & (tod_s < OPENING_END_S)).astype(np.float64)
    feats["is_closing_30min"] = ((tod_s >= CLOSING_START_S) & (tod_s < SESSION_CLOSE_S)).astype(np.float64)
    feats["is_lunch_hour"] = ((tod_s >= LUNCH_START_S) & (tod_s < LUNCH_END_S)).astype(np.float64)

    return _table(cols, a, feats)


def _aggressor(trade_type: np.ndarray) -> np.ndarray:
    """+1 buyer aggressor, -1 seller aggressor, 0 every other print."""
    return np.where(trade_type == _BUY, 1, np.where(trade_type == _SELL, -1, 0)).astype(np.int64)


def _table(cols: dict[str, np.ndarray], aggressor: np.ndarray, feats: dict[str, np.ndarray]) -> pd.DataFrame:
    """The feature table: the trade's columns, then the 65 features in ``FEATURE_NAMES`` order."""
    data = {"ts_event": cols["ts_event"], "price": cols["price"], "qty": cols["qty"], "aggressor": aggressor}
    data.update((name, feats[name]) for name in FEATURE_NAMES)
    return pd.DataFrame(data, copy=False)


def _session_cumsum(sv: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``sv`` restarting whenever ``day`` changes from the previous row."""
    n = len(sv)
    if n == 0:
        return sv.copy()
    new = np.ones(n, dtype=bool)
    new[1:] = day[1:] != day[:-1]
    cs = np.cumsum(sv)
    starts = np.flatnonzero(new)
    base = np.where(starts > 0, cs[starts - 1], 0)
    return cs - base[np.cumsum(new) - 1]


def garman_klass_terms(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Per-bar Garman-Klass variance 0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2 (Garman & Klass 1980)."""
    hl = np.log(high / low)
    co = np.log(close / open_)
    return 0.5 * hl * hl - GK_K * co * co


def garman_klass_sigma(window_sum: np.ndarray, n_bars: int) -> np.ndarray:
    """sqrt(window_sum / n_bars); NaN where the sum is negative (bad OHLC data), never clamped to 0.

    Bars built from trades always have O and C inside [L, H], where each term is
    >= 0.11 ln(H/L)^2, so a negative sum can only come from corrupt bars."""
    window_sum = np.asarray(window_sum, dtype=np.float64)
    out = np.full(window_sum.shape, np.nan)
    ok = window_sum >= 0.0
    out[ok] = np.sqrt(window_sum[ok] / n_bars)
    return out


def _batch_gk(px: np.ndarray) -> np.ndarray:
    n = len(px)
    out = np.full(n, np.nan)
    nb = n // GK_BLOCK_TRADES
    if nb < GK_BLOCKS:
        return out
    blocks = px[: nb * GK_BLOCK_TRADES].reshape(nb, GK_BLOCK_TRADES)
    term = garman_klass_terms(blocks[:, 0], blocks.max(axis=1), blocks.min(axis=1), blocks[:, -1])
    # window ending at block j, summed left to right like the live engine (a vectorized add per position)
    view = np.lib.stride_tricks.sliding_window_view(term, GK_BLOCKS)
    total = np.zeros(len(view))
    for k in range(GK_BLOCKS):
        total += view[:, k]
    gk = np.full(nb, np.nan)
    gk[GK_BLOCKS - 1:] = garman_klass_sigma(total, GK_BLOCKS)
    done = (np.arange(n) + 1) // GK_BLOCK_TRADES  # completed blocks after each trade
    has = done >= GK_BLOCKS
    out[has] = gk[done[has] - 1]
    return out


def _batch_rsi(d: np.ndarray) -> np.ndarray:
    n = len(d)
    out = np.full(n, np.nan)
    if n <= RSI_PERIOD:
        return out
    gain = np.where(d > 0, d, 0)
    loss = np.where(d < 0, -d, 0)
    g0 = gain[1: RSI_PERIOD + 1].sum() / RSI_PERIOD
    l0 = loss[1: RSI_PERIOD + 1].sum() / RSI_PERIOD

    # The Wilder recursion is sequential; itertools.accumulate runs it at C speed with the very
    # operations of the live engine, so the two paths agree bit for bit.
    def wilder(avg: float, x: float) -> float:
        return RSI_KEEP * avg + RSI_NEW * x

    g = np.fromiter(accumulate(gain[RSI_PERIOD + 1:].tolist(), wilder, initial=float(g0)), np.float64, n - RSI_PERIOD)
    l_ = np.fromiter(accumulate(loss[RSI_PERIOD + 1:].tolist(), wilder, initial=float(l0)), np.float64, n - RSI_PERIOD)
    tot = g + l_
    r = np.full(len(g), np.nan)
    ok = tot > 0.0
    r[ok] = 100.0 * (g[ok] / tot[ok])
    out[RSI_PERIOD:] = r
    return out


def _batch_distinct_agents(buyer: np.ndarray, seller: np.ndarray, w: int) -> np.ndarray:
    """Distinct known ids among buyers and sellers of the last w trades, per row.

    A (trade j, id) pair counts for rows j .. min(next trade with that id, j + w) - 1,
    so a difference array plus a cumulative sum gives every window at once."""
    n = len(buyer)
    diff = np.zeros(n + 1, dtype=np.int64)
    rows = np.concatenate([np.arange(n), np.arange(n)])
    ids = np.concatenate([buyer, np.where(seller != buyer, seller, 0)])
    keep = ids != 0
    rows, ids = rows[keep], ids[keep]
    if len(ids):
        order = np.lexsort((rows, ids))
        rows, ids = rows[order], ids[order]
        nxt = np.full(len(rows), n, dtype=np.int64)
        same = ids[1:] == ids[:-1]
        nxt[:-1][same] = rows[1:][same]
        end = np.minimum(nxt, rows + w)
        np.add.at(diff, rows, 1)
        np.add.at(diff, end, -1)
    return np.cumsum(diff[:n])


def _batch_top_brokers(ids: np.ndarray, qty: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-N brokers of one side on the re-rank grid and their activity flags, per row."""
    n = len(ids)
    flags = np.full((n, TOP_N), np.nan)
    count = np.full(n, np.nan)
    changed = np.full(n, np.nan)
    n_grid = n // BROKER_RERANK  # re-ranks happen after trade counts R, 2R, ..., valid from BROKER_WINDOW
    first = BROKER_WINDOW // BROKER_RERANK
    known = ids != 0
    if n_grid < first or not known.any():
        return flags, count, changed
    uniq = np.unique(ids[known])  # ascending ids -> code order = tie-break order
    B = len(uniq)
    code = np.searchsorted(uniq, ids)
    per_window = BROKER_WINDOW // BROKER_RERANK  # blocks of BROKER_RERANK trades in one window
    n_rows = n_grid - first + 1  # grid m = first .. n_grid
    top_ids = np.zeros((n_rows, TOP_N), dtype=np.int64)  # 0 = no broker at that rank
    chunk = max(1, 4_000_000 // B - per_window)
    for m0 in range(first, n_grid + 1, chunk):
        m1 = min(n_grid, m0 + chunk - 1)  # inclusive
        b0 = m0 - per_window  # first block needed
        t0, t1 = b0 * BROKER_RERANK, m1 * BROKER_RERANK
        sel = np.flatnonzero(known[t0:t1]) + t0
        nb = m1 - b0
        vol = np.bincount((sel // BROKER_RERANK - b0) * B + code[sel], weights=qty[sel], minlength=nb * B)
        cum = np.zeros((nb + 1, B), dtype=np.int64)
        np.cumsum(vol.astype(np.int64).reshape(nb, B), axis=0, out=cum[1:])
        win = cum[per_window:] - cum[:-per_window]  # rows: grid m0..m1
        key = win * B + (B - 1 - np.arange(B))  # volume desc, then id asc
        k = min(TOP_N, B)
        if B > k:
            part = np.argpartition(-key, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(B), (len(key), B)).copy()
        part_key = np.take_along_axis(key, part, axis=1)
        order = np.argsort(-part_key, axis=1)
        best = np.take_along_axis(part, order, axis=1)
        best_vol = np.take_along_axis(win, best, axis=1)
        top_ids[m0 - first: m1 - first + 1, :k] = np.where(best_vol > 0, uniq[best], 0)
    # rows -> their latest re-rank
    m_of_row = (np.arange(n) + 1) // BROKER_RERANK
    has = m_of_row >= first
    grid_row = m_of_row[has] - first
    rows = np.flatnonzero(has)
    row_ids = top_ids[grid_row]  # (rows, TOP_N)
    # activity: did the id trade on this side in (t - BROKER_ACTIVE, t]?  The ids are fixed between
    # re-ranks, so per re-rank m look once at the BROKER_ACTIVE + BROKER_RERANK - 1 trades that its
    # rows can see, and count matches per row from a cumulative sum (0 pads never match).
    K, R = BROKER_ACTIVE, BROKER_RERANK
    span_len = K + R - 1
    padded = np.concatenate([np.zeros(K - 1, dtype=np.int64), ids, np.zeros(R, dtype=np.int64)])
    starts = np.arange(first, n_grid + 1) * R - 1  # first row served by each re-rank (padded start = row)
    views = np.lib.stride_tricks.sliding_window_view(padded, span_len)[starts]  # (re-ranks, span_len)
    active_grid = np.empty((n_rows, R, TOP_N), dtype=bool)
    for k in range(TOP_N):
        cs = np.zeros((n_rows, span_len + 1), dtype=np.int32)
        np.cumsum(views == top_ids[:, k: k + 1], axis=1, out=cs[:, 1:])
        active_grid[:, :, k] = (cs[:, K: K + R] - cs[:, :R]) > 0
    active = active_grid.reshape(n_rows * R, TOP_N)[: len(rows)]
    present = row_ids != 0
    f = np.where(present, active.astype(np.float64), np.nan)
    flags[rows] = f
    cnt = np.where(present, active, False).sum(axis=1).astype(np.float64)
    cnt[~present[:, 0]] = np.nan
    count[rows] = cnt
    top0 = top_ids[:, 0]
    ch = np.full(n_rows, np.nan)
    if n_rows > 1:
        both = (top0[1:] != 0) & (top0[:-1] != 0)
        ch[1:][both] = (top0[1:][both] != top0[:-1][both]).astype(np.float64)
    changed[rows] = ch[grid_row]
    return flags, count, changed


def compute_streaming(trades: Any, price_quantum: float = DEFAULT_PRICE_QUANTUM) -> pd.DataFrame:
    """The live engine run over a tape: same table as :func:`compute_batch` (slow; the reference)."""
    cols = trade_arrays(trades)
    eng = FeatureEngineCore(price_quantum)
    n = len(cols["price"])
    out = np.empty((n, N_FEATURES))
    update = eng.update
    ts, px, qty, tt = (cols[k].tolist() for k in ("ts_event", "price", "qty", "trade_type"))
    buyer, seller = cols["buyer"].tolist(), cols["seller"].tolist()
    for j in range(n):
        update(ts[j], px[j], qty[j], tt[j], buyer[j], seller[j])
        out[j] = eng.vector()
    return _table(cols, _aggressor(cols["trade_type"]), dict(zip(FEATURE_NAMES, out.T)))
