"""The tape-reading agent: sweeps and icebergs, exhaustion and momentum on the tape's pace.

Rules (defaults in :class:`TapeParams`; constructor keywords override)
    on TapeSignal:
      sweep / iceberg  confidence >= 0.25 -> its side, its confidence
    on FlowState (speed ratio = tape_speed_60s / the 900 s baseline, or the
    300 s one while the 900 s warms up; fast when >= 2):
      exhaustion  |returns_100| >= 8 ticks, fast tape and falling participation
                  (volume_ratio_20 < 0.8 or large_trade_ratio_1m < 0.5 x
                  large_trade_ratio_5m) -> against the move, 0.75
      momentum    (only if no exhaustion) |returns_20| >= 2 ticks with
                  returns_50 of the same sign -> its sign,
                  min(1, ticks / 4) x (1 if fast else 0.7)

A sweep or iceberg vote keeps the coordinator's TTL like the others: the next
FlowState's signal supersedes it within a second.

Context (6): {sweep,iceberg,flow} (what triggered the signal) x speed_{hi,lo}
(60 s print rate at or above its baseline).
"""

from __future__ import annotations

from typing import NamedTuple

from pipelines.alpha.base import Agent, Vote, as_float, side_name, speed_bucket, tape_speed_ratio
from pipelines.model.messages import FlowState, TapeSignal


class TapeParams(NamedTuple):
    min_pattern_confidence: float = 0.25  # a weaker sweep or iceberg is a note, not a vote
    fast_ratio: float = 2.0  # speed ratio from which the tape is fast
    momentum_ticks: float = 2.0  # least |returns_20| for momentum
    slow_tape_factor: float = 0.7  # momentum's confidence factor on a tape that is not fast
    exhaustion_move_ticks: float = 8.0  # least |returns_100| for exhaustion
    exhaustion_volume_ratio: float = 0.8
    exhaustion_large_share: float = 0.5
    exhaustion_confidence: float = 0.75


class TapeReadingAgent(Agent):
    agent_id = "tape"
    VECTOR_INPUTS = ("returns_20", "returns_50", "returns_100", "volume_ratio_20")
    Params = TapeParams

    def __init__(self, symbol: str, **kw):
        super().__init__(symbol, **kw)
        self._flow: dict = {}
        self._trigger = "flow"

    def _votes(self, m) -> list[Vote] | None:
        if type(m) is TapeSignal:
            self._trigger = m.pattern
            return self._pattern(m)
        if type(m) is FlowState:
            self._flow = m.values
            self._trigger = "flow"
            return self._exhaustion() or self._momentum()
        return None

    def _pattern(self, t: TapeSignal) -> list[Vote]:
        conf = float(t.confidence)
        what = f"{t.pattern} side {t.side:+d} at {t.price:g} confidence {conf:.3f}"
        if conf >= self.p.min_pattern_confidence and t.side in (1, -1):
            return [Vote(t.pattern, t.side, conf,
                         f"{what}>={self.p.min_pattern_confidence:g} -> {side_name(t.side)}")]
        return [Vote(f"weak_{t.pattern}", 0, 0.0, f"{what}<{self.p.min_pattern_confidence:g} -> neutral")]

    def _ticks(self, name: str) -> float:
        return self.vector[name] * self.price / self.tick

    def _speed(self) -> tuple[bool, str]:
        ratio, base = tape_speed_ratio(self._flow)
        fast = ratio >= self.p.fast_ratio
        text = f"tape_speed_60s/{base}={ratio:.3g}" if base else "tape speed warming up"
        return fast, f"{text} ({'fast' if fast else 'not fast'}, threshold {self.p.fast_ratio:g})"

    def _exhaustion(self) -> list[Vote]:
        p = self.p
        move = self._ticks("returns_100")
        fast, speed = self._speed()
        if not (abs(move) >= p.exhaustion_move_ticks and fast):
            return []
        vr = self.vector["volume_ratio_20"]
        large_1m, large_5m = as_float(self._flow, "large_trade_ratio_1m"), as_float(self._flow, "large_trade_ratio_5m")
        if vr < p.exhaustion_volume_ratio:
            fading = f"volume_ratio_20={vr:.3g}<{p.exhaustion_volume_ratio:g}"
        elif large_1m < p.exhaustion_large_share * large_5m:
            fading = f"large_trade_ratio_1m={large_1m:.3g}<{p.exhaustion_large_share:g}x{large_5m:.3g}"
        else:
            return []
        d, conf = (-1 if move > 0 else 1), p.exhaustion_confidence
        reason = (f"returns_100={move:+.3g} ticks (|move|>={p.exhaustion_move_ticks:g}), {speed}, {fading} "
                  f"-> {side_name(d)} {conf:g}")
        return [Vote("exhaustion", d, conf, reason)]

    def _momentum(self) -> list[Vote]:
        move, confirm = self._ticks("returns_20"), self._ticks("returns_50")
        if not abs(move) >= self.p.momentum_ticks or not move * confirm > 0:
            return []
        d = 1 if move > 0 else -1
        fast, speed = self._speed()
        factor = 1.0 if fast else self.p.slow_tape_factor
        conf = min(1.0, abs(move) / (2 * self.p.momentum_ticks)) * factor
        return [Vote("momentum", d, conf, f"returns_20={move:+.3g} ticks (|move|>={self.p.momentum_ticks:g}, "
                                          f"returns_50={confirm:+.3g} ticks agrees), {speed} x{factor:g} "
                                          f"-> {side_name(d)} {conf:.3f}")]

    def _context(self) -> str:
        return f"{self._trigger}|speed_{speed_bucket(self._flow)}"
