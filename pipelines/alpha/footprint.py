"""The footprint agent: the shape and auction of each closed one-minute bar.

Rules (defaults in :class:`FootprintParams`; constructor keywords override), on a closed FootprintState:
    delta       |delta / volume| >= 0.3 -> sign of delta, min(0.9, 0.5 + |share|)
    stacked     more stacked buy than sell imbalance runs -> buy, 0.65 (mirror)
    profile     range >= 4 ticks; P: POC in the upper third and >= 60 % of
                the volume above mid-range -> buy 0.65; b: mirror -> sell
    unfinished  unfinished auction at the high only -> buy 0.5 (price tends to
                revisit it); at the low only -> sell
    initiative  close above the previous bar's value area with
                delta / volume >= 0.1 -> buy 0.65 (mirror below)
    responsive  close inside the previous value area after the high probed
                above it -> sell 0.55 (mirror at the low -> buy)

Validity: one minute, the bar length. The agent votes once per closed bar and
its view holds until the next bar closes, whose signal then replaces it; the
coordinator's 5 s TTL would count it in about 5 decisions of 60.

Context (6): {up,down,flat} bar x volume_{hi,lo} against the mean of the
previous 10 bars.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from pipelines.alpha.base import NAN, Agent, ConfidenceShape, Vote, level_vote, side_name
from pipelines.features.footprint import ProfileRule, profile_shape
from pipelines.model.clock import NS_PER_MIN
from pipelines.model.messages import FootprintState

BAR_DELTA_SHAPE = ConfidenceShape(0.5, 1.0, 0.9)


class FootprintParams(NamedTuple):
    delta_share: float = 0.3  # |delta / volume| from which the bar's delta votes
    stacked_confidence: float = 0.65
    profile_min_ticks: float = 4.0  # a narrower bar has no P or b shape
    profile_volume_share: float = 0.6  # of the volume on the POC's side of mid-range
    profile_confidence: float = 0.65
    unfinished_confidence: float = 0.5
    initiative_confidence: float = 0.65
    initiative_delta_share: float = 0.1  # least delta / volume in the breakout's direction
    responsive_confidence: float = 0.55
    volume_lookback: int = 10  # bars the context's volume bucket compares with


class FootprintPatternAgent(Agent):
    agent_id = "footprint"
    Params = FootprintParams
    VALID_NS = NS_PER_MIN  # a closed one-minute bar's vote holds until the next bar closes

    def __init__(self, symbol: str, **kw):
        super().__init__(symbol, **kw)
        self._prev: dict | None = None
        self._volumes: deque[float] = deque(maxlen=self.p.volume_lookback)
        self._context_key = "flat|volume_lo"

    def _votes(self, m) -> list[Vote] | None:
        if type(m) is not FootprintState or not m.closed:
            return None
        b = m.bar
        volume = float(b["volume"])
        votes = []
        if volume > 0:
            votes += level_vote("delta", f"delta/volume ({b['delta']}/{b['volume']})", b["delta"] / volume,
                                self.p.delta_share, BAR_DELTA_SHAPE)
        votes += self._stacked(b) + self._profile(b) + self._unfinished(b)
        if self._prev is not None:
            votes += self._auction(b, self._prev)
        self._set_context(b, volume)
        self._prev = b
        return votes

    def _stacked(self, b: dict) -> list[Vote]:
        nb, ns = len(b["stacked_buy"]), len(b["stacked_sell"])
        if nb == ns:
            return []
        d, conf = (1 if nb > ns else -1), self.p.stacked_confidence
        return [Vote("stacked", d, conf, f"stacked imbalances buy={nb} sell={ns} -> {side_name(d)} {conf:g}")]

    def _profile(self, b: dict) -> list[Vote]:
        rule = ProfileRule(self.p.profile_min_ticks, self.p.profile_volume_share)
        shape = profile_shape(b, self.tick, rule)
        if shape is None:
            return []
        conf = self.p.profile_confidence
        where = f"POC {b['poc']:g} at {shape.poc_position:.2f} of the range {float(b['low']):g}-{float(b['high']):g}"
        if shape.direction > 0:
            return [Vote("profile", 1, conf, f"P-profile: {where}, {shape.volume_share:.0%} of volume above mid "
                                             f"-> buy {conf:g}")]
        return [Vote("profile", -1, conf, f"b-profile: {where}, {shape.volume_share:.0%} of volume below mid "
                                          f"-> sell {conf:g}")]

    def _unfinished(self, b: dict) -> list[Vote]:
        hi, lo = bool(b["unfinished_high"]), bool(b["unfinished_low"])
        if hi == lo:
            return []
        d, conf = (1 if hi else -1), self.p.unfinished_confidence
        at = f"high {b['high']:g}" if hi else f"low {b['low']:g}"
        reason = f"unfinished auction at the {at} (both sides traded) -> {side_name(d)} {conf:g}"
        return [Vote("unfinished", d, conf, reason)]

    def _auction(self, b: dict, prev: dict) -> list[Vote]:
        vah, val = float(prev["value_area_high"]), float(prev["value_area_low"])
        close, delta, volume = float(b["close"]), b["delta"], float(b["volume"])
        va = f"previous value area {val:g}-{vah:g}"
        share = delta / volume if volume > 0 else 0.0
        d = 1 if close > vah else -1 if close < val else 0
        if d:
            if not share * d >= self.p.initiative_delta_share:
                return []
            conf = self.p.initiative_confidence
            return [Vote("initiative", d, conf, f"close {close:g} {'>' if d > 0 else '<'} {va} with delta/volume "
                                                f"{share:+.3f} ({delta:+}) -> {side_name(d)} {conf:g}")]
        votes = []
        conf = self.p.responsive_confidence
        if float(b["high"]) > vah:
            votes.append(Vote("responsive", -1, conf, f"high {b['high']:g} probed above {va}, close {close:g} "
                                                      f"back inside -> sell {conf:g}"))
        if float(b["low"]) < val:
            votes.append(Vote("responsive", 1, conf, f"low {b['low']:g} probed below {va}, close {close:g} "
                                                     f"back inside -> buy {conf:g}"))
        return votes

    def _set_context(self, b: dict, volume: float) -> None:
        o, c = float(b["open"]), float(b["close"])
        bar = "up" if c > o else "down" if c < o else "flat"
        avg = sum(self._volumes) / len(self._volumes) if self._volumes else NAN
        self._context_key = f"{bar}|volume_{'hi' if volume > avg else 'lo'}"
        self._volumes.append(volume)

    def _context(self) -> str:
        return self._context_key
