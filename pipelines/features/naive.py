"""A deliberately naive feature engine: the benchmark's "before" picture. Not for production.

It works the way the original ``BookFeatureEngineerRT`` did: keep the last 200
trades, and on every call rebuild a DataFrame from them and recompute every
window from scratch with pandas. It computes the same 65 names with the same
definitions as :mod:`pipelines.features.core` wherever 200 trades of history
are enough; the features that need more (volatility_ratio_100_200's 201 prices,
Garman-Klass over 200 trades aligned to blocks, the 1000-trade broker ranking,
the session's cumulative delta, Wilder RSI from the first trade) are computed
over the 200-trade buffer instead, so their values differ. Only the cost
matters here: :mod:`pipelines.features.benchmark` compares it with the incremental engine.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd

from pipelines.features import core
from pipelines.features.core import FEATURE_NAMES
from pipelines.model.clock import NS_PER_S, SAO_PAULO, SESSION_CLOSE_S, SESSION_OPEN_S

BUFFER = 200


class NaiveFeatureEngine:
    """Rebuild-everything-per-event reference (benchmarks only)."""

    def __init__(self) -> None:
        self._rows: deque[tuple] = deque(maxlen=BUFFER)
        self._first_ts: int | None = None

    def update(self, ts: int, price: float, qty: int, trade_type: int, buyer: int = 0, seller: int = 0) -> None:
        if self._first_ts is None:
            self._first_ts = ts
        self._rows.append((ts, price, qty, trade_type, buyer, seller))

    def vector(self) -> np.ndarray:
        df = pd.DataFrame(list(self._rows), columns=["ts", "price", "qty", "type", "buyer", "seller"])
        f = {name: np.nan for name in FEATURE_NAMES}
        p = df["price"]
        v = df["qty"].astype(float)
        n = len(df)
        last = p.iloc[-1]
        ret = p.pct_change()
        diff = p.diff()
        for w in (10, 20, 50, 100):
            if n > w:
                f[f"volatility_{w}"] = diff.iloc[-w:].std(ddof=0) / last
        vols = {w: diff.iloc[-w:].std(ddof=0) / last for w in (10, 20, 50, 100, 199) if n > w}
        for a, b in ((10, 20), (20, 50), (50, 100), (100, 199)):
            if a in vols and b in vols and vols[b] > 0:
                name = f"volatility_ratio_{a}_{200 if b == 199 else b}"
                f[name] = vols[a] / vols[b]
        if n >= 20:
            blocks = pd.DataFrame({"p": p.iloc[-(n // 10) * 10:].to_numpy(), "b": np.repeat(np.arange(n // 10), 10)})
            ohlc = blocks.groupby("b")["p"].agg(["first", "max", "min", "last"])
            term = 0.5 * np.log(ohlc["max"] / ohlc["min"]) ** 2 - core.GK_K * np.log(ohlc["last"] / ohlc["first"]) ** 2
            f["volatility_gk"] = math.sqrt(term.mean()) if term.mean() >= 0 else np.nan
            ma, sd = p.rolling(20).mean().iloc[-1], p.rolling(20).std(ddof=0).iloc[-1]
            f["bb_position"] = (last - ma) / (2 * sd) if sd > 0 else np.nan
        for k in core.RETURN_LAGS:
            if n > k:
                f[f"returns_{k}"] = p.iloc[-1] / p.iloc[-1 - k] - 1
        for k in core.LOG_RETURN_LAGS:
            if n > k:
                f[f"log_returns_{k}"] = math.log(p.iloc[-1] / p.iloc[-1 - k])
        sign = np.where(df["type"] == 2, 1, np.where(df["type"] == 3, -1, 0))
        sv = pd.Series(sign * df["qty"].to_numpy(), dtype=float)
        for w in core.OFI_WINDOWS:
            if n >= w:
                tot = v.iloc[-w:].sum()
                f[f"order_flow_imbalance_{w}"] = sv.iloc[-w:].sum() / tot if tot else np.nan
        f["cumulative_signed_volume"] = sv.sum()
        if n >= 100:
            f["signed_volume"] = sv.iloc[-100:].sum()
            vwap = (p.iloc[-100:] * v.iloc[-100:]).sum() / v.iloc[-100:].sum()
            f["volume_weighted_return"] = last / vwap - 1
            ids = pd.concat([df["buyer"].iloc[-100:], df["seller"].iloc[-100:]])
            ids = ids[ids != 0]
            f["agent_turnover"] = float(ids.nunique()) if len(ids) else np.nan
        for w in core.VOLUME_WINDOWS:
            if n >= w:
                f[f"volume_ratio_{w}"] = v.iloc[-10:].mean() / v.iloc[-w:].mean()
                sd = v.iloc[-w:].std(ddof=0)
                f[f"volume_zscore_{w}"] = (v.iloc[-1] - v.iloc[-w:].mean()) / sd if sd > 0 else np.nan
        ts = df["ts"]
        clock = ts.cummax()
        now = clock.iloc[-1]
        if now - self._first_ts >= 60 * NS_PER_S:
            f["trade_intensity"] = (clock > now - 60 * NS_PER_S).sum() / 60
        if now - self._first_ts >= 300 * NS_PER_S:
            f["trade_intensity_ratio"] = ((clock > now - 60 * NS_PER_S).sum() / 60) / (
                (clock > now - 300 * NS_PER_S).sum() / 300)
        for a, b in core.MA_PAIRS:
            if n >= b:
                f[f"ma_{a}_{b}_ratio"] = p.rolling(a).mean().iloc[-1] / p.rolling(b).mean().iloc[-1] - 1
        for a, b in core.MOMENTUM_PAIRS:
            if n > b:
                rb = p.iloc[-1] / p.iloc[-1 - b] - 1
                f[f"momentum_{a}_{b}"] = (p.iloc[-1] / p.iloc[-1 - a] - 1) / rb if rb else np.nan
        for w in core.SHARPE_WINDOWS:
            if n > w:
                sd = diff.iloc[-w:].std(ddof=0)
                f[f"sharpe_{w}"] = diff.iloc[-w:].mean() / sd if sd > 0 else np.nan
        local = pd.to_datetime(ts, utc=True).dt.tz_convert(SAO_PAULO)
        t = local.iloc[-1]
        tod = t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6 + t.nanosecond / 1e9
        if SESSION_OPEN_S <= tod <= SESSION_CLOSE_S:
            f["time_normalized"] = (tod - SESSION_OPEN_S) / (SESSION_CLOSE_S - SESSION_OPEN_S)
        if n > 14:
            delta = diff.fillna(0.0)
            gain = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean().iloc[-1]
            loss = (-delta).clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean().iloc[-1]
            f["rsi_14"] = 100 * gain / (gain + loss) if gain + loss > 0 else np.nan
        for side in ("buyer", "seller"):
            vol = df[df[side] != 0].groupby(side)["qty"].sum()
            if len(vol):
                top = vol.reset_index().sort_values(["qty", side], ascending=[False, True])[side].head(5).tolist()
                recent = set(df[side].iloc[-core.BROKER_ACTIVE:])
                flags = [1.0 if b in recent else 0.0 for b in top]
                for k, fl in enumerate(flags):
                    f[f"top_{side}_{k}_active"] = fl
                f[f"top_{side}s_count"] = sum(flags)
                prev = df.iloc[:-core.BROKER_RERANK]
                pv = prev[prev[side] != 0].groupby(side)["qty"].sum()
                if len(pv):
                    f[f"{side}_changed"] = float(pv.idxmax() != vol.idxmax())
        last_type = df["type"].iloc[-1]
        f["is_buyer_aggressor"] = 1.0 if last_type == 2 else (0.0 if last_type == 3 else np.nan)
        f["minute"], f["hour"], f["day_of_week"] = float(t.minute), float(t.hour), float(t.weekday())
        f["is_opening_30min"] = float(SESSION_OPEN_S <= tod < core.OPENING_END_S)
        f["is_closing_30min"] = float(core.CLOSING_START_S <= tod < SESSION_CLOSE_S)
        f["is_lunch_hour"] = float(core.LUNCH_START_S <= tod < core.LUNCH_END_S)
        return np.array([f[name] for name in FEATURE_NAMES], dtype=np.float64)
