"""Labels for the direction model, from the trade tape strictly after each sample's time.

A sample is a decision-clock time ``t0`` (int64 ns, event time) and the price ``p0`` the model
sees there. Its label only uses trades with ``t0 < ts``: a trade printed at exactly ``t0`` may
already be in the features, so it is never the exit. The label becomes known at ``t1``, the end
of the label window; cross-validation purges training samples whose ``[t0, t1]`` overlaps a test
block (:mod:`pipelines.training.cv`), so ``t1`` must be the real time the label was decided.

Two schemes. Fixed horizon: the exit is the last trade in ``(t0, t0 + horizon]`` (no trade: the
price did not move) and ``t1 = t0 + horizon``. Triple barrier (Lopez de Prado, AFML ch. 3): the
first trade in that window at or beyond the take-profit or the stop-loss decides the label and
``t1`` is its time; if neither is touched, the horizon ends it like the fixed scheme.

Labels are 1.0 (up), 0.0 (down) or NaN: a move that does not beat the dead zone (the round-trip
cost in price points, see :func:`dead_zone_ticks`) is no trade either way, and a window that the
data ends before is unknown (the tape might still have moved). NaN rows are dropped before CV.
"""

from __future__ import annotations

import numpy as np


def _ns(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "M":
        return a.astype("datetime64[ns]").view(np.int64)
    if a.dtype.kind not in "iu" and not (a.size == 0 and a.dtype.kind == "f"):
        raise ValueError(f"{name} must be integer ns since the epoch, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _px(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has a NaN or infinite price at row {int(np.flatnonzero(~np.isfinite(a))[0])}")
    return a


def _inputs(t0, p0, trade_ts, trade_px, horizon_ns, **non_negative: float):
    t0, trade_ts = _ns(t0, "t0"), _ns(trade_ts, "trade_ts")
    p0, trade_px = _px(p0, "p0"), _px(trade_px, "trade_px")
    if t0.ndim != 1 or len(t0) != len(p0):
        raise ValueError(f"t0 and p0 must be 1-d of the same length, got {t0.shape} and {p0.shape}")
    if trade_ts.ndim != 1 or len(trade_ts) != len(trade_px):
        raise ValueError(f"trade_ts and trade_px must be 1-d of the same length, got {trade_ts.shape} "
                         f"and {trade_px.shape}")
    if len(trade_ts) > 1 and (np.diff(trade_ts) < 0).any():
        i = int(np.flatnonzero(np.diff(trade_ts) < 0)[0]) + 1
        raise ValueError(f"trade_ts must be sorted: row {i} ({trade_ts[i]}) is before row {i - 1} ({trade_ts[i - 1]})")
    if not horizon_ns > 0:
        raise ValueError(f"horizon_ns must be > 0, got {horizon_ns!r}")
    for name, v in non_negative.items():
        if not v >= 0:  # also refuses NaN
            raise ValueError(f"{name} must be >= 0, got {v!r}")
    return t0, p0, trade_ts, trade_px, int(horizon_ns)


def _window(t0: np.ndarray, trade_ts: np.ndarray, horizon: int):
    """Each sample's trades are ``trade_ts[lo:hi]``: strictly after t0, at or before t0 + horizon."""
    return np.searchsorted(trade_ts, t0, side="right"), np.searchsorted(trade_ts, t0 + horizon, side="right")


def _direction(move: np.ndarray, dead_zone_px: float) -> np.ndarray:
    """1 above the dead zone, 0 below minus it, NaN inside it (edges included) or unknown."""
    return np.where(move > dead_zone_px, 1.0, np.where(move < -dead_zone_px, 0.0, np.nan))


def fixed_horizon_labels(t0, p0, trade_ts, trade_px, horizon_ns: int, dead_zone_px: float):
    """(label, t1, move_px): the move from ``p0`` to the last trade in ``(t0, t0 + horizon]``.

    No trade in the window: move 0. Data ending before ``t0 + horizon``: label and move NaN.
    ``t1 = t0 + horizon`` always.
    """
    t0, p0, trade_ts, trade_px, horizon = _inputs(t0, p0, trade_ts, trade_px, horizon_ns,
                                                  dead_zone_px=dead_zone_px)
    end = t0 + horizon
    lo, hi = _window(t0, trade_ts, horizon)
    if not len(trade_ts):
        move = np.full(len(t0), np.nan)
        return _direction(move, dead_zone_px), end, move
    move = np.where(hi > lo, trade_px[np.maximum(hi - 1, 0)] - p0, 0.0)
    move[end > trade_ts[-1]] = np.nan  # the window is not over when the data ends: unknown
    return _direction(move, dead_zone_px), end, move


def triple_barrier_labels(t0, p0, trade_ts, trade_px, tp_px: float, sl_px: float, horizon_ns: int,
                          dead_zone_px: float):
    """(label, t1, move_px, barrier): the first barrier a trade in ``(t0, t0 + horizon]`` touches.

    A trade at or above ``p0 + tp_px``: label 1, barrier "tp"; at or below ``p0 - sl_px``: label 0,
    "sl"; ``t1`` is that trade's time. Neither: barrier "time", labelled like
    :func:`fixed_horizon_labels`, or "open" (label and move NaN) when the data ends before the
    horizon. ``move_px`` is the exit price minus ``p0``.
    """
    t0, p0, trade_ts, trade_px, horizon = _inputs(t0, p0, trade_ts, trade_px, horizon_ns,
                                                  dead_zone_px=dead_zone_px)
    # A barrier at zero distance would be touched by a trade at the entry price itself.
    for name, v in (("tp_px", tp_px), ("sl_px", sl_px)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")
    label, t1, move = fixed_horizon_labels(t0, p0, trade_ts, trade_px, horizon, dead_zone_px)
    barrier = np.where(np.isnan(move), "open", "time").astype("<U4")
    lo, hi = _window(t0, trade_ts, horizon)
    up, down = p0 + tp_px, p0 - sl_px
    for i in np.flatnonzero(hi > lo):
        w = trade_px[lo[i]:hi[i]]
        # Cheap rejection first: most windows touch neither barrier.
        if w.max() < up[i] and w.min() > down[i]:
            continue
        hit_up, hit_down = w >= up[i], w <= down[i]
        j_up = int(hit_up.argmax()) if hit_up.any() else len(w)
        j_down = int(hit_down.argmax()) if hit_down.any() else len(w)
        j = min(j_up, j_down)  # tp > 0 and sl > 0: one trade cannot touch both
        label[i] = 1.0 if j == j_up else 0.0
        barrier[i] = "tp" if j == j_up else "sl"
        t1[i] = trade_ts[lo[i] + j]
        move[i] = w[j] - p0[i]
    return label, t1, move, barrier


def round_trip_cost_ticks(symbol: str, tick_size: float, point_value: float, fee_per_contract_rs: float,
                          spread_ticks: float = 1.0) -> float:
    """What one contract's round trip costs in ticks: crossing the spread plus the fee both ways.

    The fee comes from ``CostModel(CostsConfig()).fees(symbol, 1)`` and the point value from
    :mod:`pipelines.model.instruments`; ``symbol`` only names the contract in errors.
    """
    if not tick_size > 0 or not point_value > 0:
        raise ValueError(f"{symbol}: tick_size and point_value must be > 0, got {tick_size!r} and {point_value!r}")
    if not fee_per_contract_rs >= 0 or not spread_ticks >= 0:
        raise ValueError(f"{symbol}: fee_per_contract_rs and spread_ticks must be >= 0, "
                         f"got {fee_per_contract_rs!r} and {spread_ticks!r}")
    return float(spread_ticks + 2.0 * fee_per_contract_rs / (tick_size * point_value))


def dead_zone_ticks(configured: float, cost_ticks: float) -> float:
    """The dead zone in ticks: the configured one, raised to the round-trip cost.

    A move that does not pay the round trip is not a trade: labelling it up or down would teach
    the model to act where acting loses money, so such a move gets no label.
    """
    if not configured >= 0 or not cost_ticks >= 0:
        raise ValueError(f"dead zone and cost must be >= 0 ticks, got {configured!r} and {cost_ticks!r}")
    return float(max(configured, cost_ticks))
