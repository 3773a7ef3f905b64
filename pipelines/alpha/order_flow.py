"""The order-flow agent: order flow and trade flow imbalance, absorption and delta divergence.

Rules (defaults in :class:`OrderFlowParams`; constructor keywords override)
    on FlowState:
      ofi   |ofi_ratio_1m| >= 0.3 and ofi_ratio_5m of the same sign -> its sign,
            confidence min(1, 2 |ofi_ratio_1m|) (original: OFI > 0.3, conf 2 ofi_1m)
      tfi   the same on tfi_1m / tfi_5m (signed aggressive volume share)
    on a closed FootprintState:
      absorption  each confirmed absorption: at the low -> buy, at the high -> sell, 0.7
      divergence  bar high above the previous 5 bars' highs while the bar's
                  cum_delta <= their max cum_delta -> sell, 0.6 (mirror at lows -> buy)

Context (6): ofi5m{+,0,-} (|ofi_ratio_5m| > 0.05) x speed_{hi,lo} (60 s print
rate at or above its baseline).
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from pipelines.alpha.base import Agent, ConfidenceShape, Vote, as_float, level_vote, side_name, speed_bucket
from pipelines.model.clock import SessionDay
from pipelines.model.messages import FlowState, FootprintState

FLOW_SHAPE = ConfidenceShape(0.0, 2.0)  # original order flow: min(2 ofi, 1)


class OrderFlowParams(NamedTuple):
    ofi_threshold: float = 0.3  # |ofi_ratio_1m| from which the ofi rule fires
    tfi_threshold: float = 0.3  # |tfi_1m| from which the tfi rule fires
    absorption_confidence: float = 0.7
    divergence_bars: int = 5  # the bars a new high or low is measured against
    divergence_confidence: float = 0.6
    context_ofi_band: float = 0.05  # |ofi_ratio_5m| under it is the flat context bucket


class OrderFlowSpecialist(Agent):
    agent_id = "order_flow"
    Params = OrderFlowParams

    def __init__(self, symbol: str, **kw):
        super().__init__(symbol, **kw)
        self._bars: deque[tuple[float, float, float]] = deque(maxlen=self.p.divergence_bars)  # (high, low, cum_delta)
        self._day = SessionDay()  # cum_delta restarts each session day
        self._flow: dict = {}

    def _votes(self, m) -> list[Vote] | None:
        if type(m) is FlowState:
            v = self._flow = m.values
            return (level_vote("ofi", "ofi_ratio_1m", as_float(v, "ofi_ratio_1m"), self.p.ofi_threshold, FLOW_SHAPE,
                               confirm=("ofi_ratio_5m", as_float(v, "ofi_ratio_5m")))
                    + level_vote("tfi", "tfi_1m", as_float(v, "tfi_1m"), self.p.tfi_threshold, FLOW_SHAPE,
                                 confirm=("tfi_5m", as_float(v, "tfi_5m"))))
        if type(m) is FootprintState and m.closed:
            return self._absorption(m.bar) + self._divergence(m.bar)
        return None

    def _absorption(self, bar: dict) -> list[Vote]:
        votes = []
        for a in bar["absorption"]:
            d = 1 if a["at"] == "low" else -1
            votes.append(Vote("absorption", d, self.p.absorption_confidence,
                              f"absorption at the {a['at']} {a['price']:g} ({a['volume']} aggressive contracts, "
                              f"held) -> {side_name(d)} {self.p.absorption_confidence:g}"))
        return votes

    def _divergence(self, bar: dict) -> list[Vote]:
        high, low, cd = float(bar["high"]), float(bar["low"]), float(bar["cum_delta"])
        if self._day.update(int(bar["ts_open"])):
            self._bars.clear()
        prior = list(self._bars)
        self._bars.append((high, low, cd))
        if len(prior) < self._bars.maxlen:
            return []
        n, conf = len(prior), self.p.divergence_confidence
        prior_high, prior_low = max(p[0] for p in prior), min(p[1] for p in prior)
        max_cd, min_cd = max(p[2] for p in prior), min(p[2] for p in prior)
        votes = []
        if high > prior_high and cd <= max_cd:
            votes.append(Vote("divergence", -1, conf, f"high {high:g} > {n}-bar high {prior_high:g} while "
                                                      f"cum_delta {cd:g} <= {max_cd:g} -> sell {conf:g}"))
        if low < prior_low and cd >= min_cd:
            votes.append(Vote("divergence", 1, conf, f"low {low:g} < {n}-bar low {prior_low:g} while "
                                                     f"cum_delta {cd:g} >= {min_cd:g} -> buy {conf:g}"))
        return votes

    def _context(self) -> str:
        x = as_float(self._flow, "ofi_ratio_5m")
        band = self.p.context_ofi_band
        sign = "+" if x > band else "-" if x < -band else "0"
        return f"ofi5m{sign}|speed_{speed_bucket(self._flow)}"
