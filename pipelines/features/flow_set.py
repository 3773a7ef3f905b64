"""The flow-enhanced feature set (8 features after the 65 core ones in every feature vector),
from the flow, trade and book analytics.

``FlowFeatures`` feeds one symbol's trades and book snapshots to
``OrderFlowImbalance``, ``TradeFlow`` and ``LiquidityMonitor`` and keeps one
event-time clock for all of them (a trade also moves the book windows and a
snapshot the trade windows), so ``values()`` after any event reads every
window as of that event. ``FEATURE_SPECS`` lists each name with its definition
and window for the catalog.
"""

from __future__ import annotations

from pipelines.features.catalog import FeatureSpec
from pipelines.features.flow import (
    INF,
    OrderFlowImbalance,
    SizeThresholds,
    TradeFlow,
    book_levels,
    size_thresholds_for,
)
from pipelines.features.liquidity import LiquidityMonitor
from pipelines.model.messages import BookSnapshot, Trade


FEATURE_SPECS: tuple[FeatureSpec, ...] = (
    FeatureSpec("flow_ofi_1m", "flow", "CKS best-level OFI sum / mean((Q^B+Q^A)/2) over the window's accepted "
                "book states; NaN with no book state in the window", "1 min event time",
                "top-of-book depths (signed, unbounded)"),
    FeatureSpec("flow_ofi_5m", "flow", "as flow_ofi_1m", "5 min event time", "top-of-book depths"),
    FeatureSpec("flow_ofi_15m", "flow", "as flow_ofi_1m", "15 min event time", "top-of-book depths"),
    FeatureSpec("flow_volume_imbalance", "flow", "TFI = sum(s*v) / sum(|s|*v) over aggressor prints; "
                "NaN with no aggressive volume", "5 min event time", "ratio in [-1, 1]"),
    FeatureSpec("flow_aggression_ratio", "flow", "buyer-initiated aggressor orders / all aggressor orders "
                "(fills grouped per aggression); NaN with no order", "5 min event time", "ratio in [0, 1]"),
    FeatureSpec("flow_large_trade_ratio", "flow", "aggressor orders above the medium size threshold "
                "(large + whale, > 20 contracts by default) / all aggressor orders; NaN with no order",
                "5 min event time", "ratio in [0, 1]"),
    FeatureSpec("tape_speed", "flow", "all prints in the window / 60 s; NaN until 60 s after the first "
                "print of the session day", "60 s event time", "trades per second", warmup_seconds=60),
    FeatureSpec("liquidity_score", "flow", "Phi((z(log(1 + depth over 5 levels)) - z(spread in ticks)) / 2), "
                "z against the window's mean and population std; NaN until 30 two-sided snapshots",
                "30 min event time", "score in [0, 1]"),
)
FLOW_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURE_SPECS)


class FlowFeatures:
    def __init__(self, symbol: str, tick_size: float = 0.5, thresholds: SizeThresholds | None = None,
                 aggression_resolution_ns: int = 1):
        self.symbol = symbol
        self.ofi = OrderFlowImbalance()
        self.trades = TradeFlow(thresholds or size_thresholds_for(symbol), aggression_resolution_ns)
        self.liquidity = LiquidityMonitor(tick_size)

    def on_trade(self, t: Trade) -> None:
        self.trades.on_trade(t)
        ts = t.ts_event
        self.ofi.advance(ts)
        self.liquidity.advance(ts)

    def on_book(self, snap: BookSnapshot) -> None:
        ofi, liquidity, ts = self.ofi, self.liquidity, snap.ts_event
        m = ofi.levels
        if m == liquidity.depth_levels:  # the defaults: both read the same levels, taken once
            bp, bq = book_levels(snap.bid_px, snap.bid_qty, m, -INF)
            ap, aq = book_levels(snap.ask_px, snap.ask_qty, m, INF)
            ofi.on_levels(ts, bp, bq, ap, aq)
            liquidity.on_levels(ts, bp, bq, ap, aq)
        else:
            ofi.on_book(snap)
            liquidity.on_book(snap)
        self.trades.advance(ts)

    def values(self) -> dict[str, float]:
        ofi, tr = self.ofi, self.trades
        out = {
            "flow_ofi_1m": ofi.ofi_normalized("1m"),
            "flow_ofi_5m": ofi.ofi_normalized("5m"),
            "flow_ofi_15m": ofi.ofi_normalized("15m"),
            "flow_volume_imbalance": tr.tfi("5m"),
        }
        out["flow_aggression_ratio"], out["flow_large_trade_ratio"] = tr.order_ratios("5m")
        out["tape_speed"] = tr.tape_speed(60)
        out["liquidity_score"] = self.liquidity.liquidity_score()
        return out

    def state_sizes(self) -> dict[str, int]:
        return {**self.ofi.state_sizes(), **self.trades.state_sizes(), **self.liquidity.state_sizes()}
