"""The liquidity agent: book imbalances and hidden liquidity, gated by the book's quality.

Rules (defaults in :class:`LiquidityParams`; constructor keywords override)
    on LiquidityState (gates first: liquidity_score < 0.3 or spread_ticks > 2 -> neutral):
      depth_imbalance  |depth_imbalance| >= 0.3 -> its sign, min(0.9, 0.5 + 0.3 |x|)
      queue_imbalance  |queue_imbalance| >= 0.5 -> its sign, same shape
      hidden_liquidity the latest iceberg TapeSignal with confidence >= 0.25,
                       within 10 s: its side (+1 hidden bid),
                       min(0.9, 0.5 + 0.3 iceberg confidence)

Context (6): spread_{tight,wide} (at most 1 tick) x score_{low,mid,high}
(liquidity_score < 0.4, > 0.6).
"""

from __future__ import annotations

from typing import NamedTuple

from pipelines.alpha.base import Agent, ConfidenceShape, Vote, as_float, level_vote, side_name
from pipelines.model.clock import NS_PER_S
from pipelines.model.messages import LiquidityState, TapeSignal

BOOK_SHAPE = ConfidenceShape(0.5, 0.3, 0.9)  # original liquidity: 0.5 + 0.3 imbalance, capped at 0.9
SCORE_CONTEXT_BOUNDS = (0.4, 0.6)  # context buckets score_low / score_mid / score_high


class LiquidityParams(NamedTuple):
    depth_threshold: float = 0.3
    queue_threshold: float = 0.5
    min_liquidity_score: float = 0.3  # a thinner book gates every rule (neutral)
    max_spread_ticks: float = 2.0  # so does a wider spread
    hidden_ttl_ns: int = 10 * NS_PER_S  # how long an iceberg counts as hidden liquidity
    min_iceberg_confidence: float = 0.25


class LiquidityAgent(Agent):
    agent_id = "liquidity"
    Params = LiquidityParams

    def __init__(self, symbol: str, **kw):
        super().__init__(symbol, **kw)
        self._iceberg: TapeSignal | None = None
        self._book: dict = {}

    def _votes(self, m) -> list[Vote] | None:
        if type(m) is TapeSignal:
            if m.pattern == "iceberg" and m.side in (1, -1) and m.confidence >= self.p.min_iceberg_confidence:
                self._iceberg = m
            return None
        if type(m) is not LiquidityState:
            return None
        v = self._book = m.values
        score, spread = as_float(v, "liquidity_score"), as_float(v, "spread_ticks")
        gates = []
        if score < self.p.min_liquidity_score:
            gates.append(Vote("thin_book", 0, 0.0, f"liquidity_score={score:.3f}<{self.p.min_liquidity_score:g} "
                                                   "-> neutral (thin book)"))
        if spread > self.p.max_spread_ticks:
            gates.append(Vote("wide_spread", 0, 0.0, f"spread_ticks={spread:g}>{self.p.max_spread_ticks:g} "
                                                     "-> neutral (wide spread)"))
        if gates:
            return gates
        return (level_vote("depth_imbalance", "depth_imbalance", as_float(v, "depth_imbalance"),
                           self.p.depth_threshold, BOOK_SHAPE)
                + level_vote("queue_imbalance", "queue_imbalance", as_float(v, "queue_imbalance"),
                             self.p.queue_threshold, BOOK_SHAPE)
                + self._hidden(m.ts_event))

    def _hidden(self, ts: int) -> list[Vote]:
        ice = self._iceberg
        if ice is None or not 0 <= ts - ice.ts_event <= self.p.hidden_ttl_ns:
            return []
        conf = BOOK_SHAPE.of(float(ice.confidence))
        where = "bid (hidden buyer)" if ice.side > 0 else "ask (hidden seller)"
        return [Vote("hidden_liquidity", ice.side, conf,
                     f"iceberg on the {where} at {ice.price:g}, confidence {ice.confidence:.3f}, "
                     f"{(ts - ice.ts_event) / NS_PER_S:.1f} s ago -> {side_name(ice.side)} {conf:.3f}")]

    def _context(self) -> str:
        spread = as_float(self._book, "spread_ticks")
        score = as_float(self._book, "liquidity_score")
        low, high = SCORE_CONTEXT_BOUNDS
        level = "low" if score < low else "high" if score > high else "mid"
        return f"spread_{'tight' if spread <= 1 else 'wide'}|score_{level}"
