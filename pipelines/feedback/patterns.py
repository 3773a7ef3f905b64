"""Order-flow patterns and what the market did after them.

A trader trusts a pattern detector only as far as its record goes, so every pattern the
engine detects is kept with its realized outcome (``hmarl:pattern:<type>:<id>``):

    sweep, iceberg        a TapeSignal; direction = its side (+1 buy side)
    absorption            a closed bar's confirmed absorption: at the low sellers were
                          absorbed (+1), at the high buyers (-1)
    unfinished_auction    both sides traded at the bar's high (+1: price tends to revisit
                          it) or at its low (-1)
    p_profile, b_profile  the bar's volume shape (:func:`pipelines.features.footprint.profile_shape`):
                          P +1, b -1

The outcome is judged exactly as a voter's signal is (:class:`FeedbackSystem`): the last
trade price at or before ``ts_event + horizon`` against the price when the pattern was
seen, so a pattern record and an agent's feedback on the same bar agree.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

from pipelines.features.footprint import ProfileRule, profile_shape
from pipelines.feedback.system import FeedbackSystem
from pipelines.model.messages import Feedback, FootprintState, Signal, TapeSignal

VOTER_PREFIX = "pattern:"  # tracked under voter names of their own: never mixed with the agents' records


class Pattern(NamedTuple):
    """One detected pattern: ``kind`` (the Valkey pattern type), the event after which it was
    detected, the direction it points to, and the price then (the outcome's entry)."""

    kind: str
    symbol: str
    ts_event: int
    seq: int
    direction: int
    price: float
    details: dict[str, Any]

    @property
    def pattern_id(self) -> str:
        side = "buy" if self.direction > 0 else "sell"
        return f"{self.symbol}-{self.ts_event}-{self.seq}-{side}"


def patterns_in(messages: Iterable, tick_size: float, profile: ProfileRule = ProfileRule(),
                malformed: list | None = None) -> list[Pattern]:
    """The patterns in a stream of engine output (TapeSignals and closed footprint bars). A
    message that cannot be read is skipped (and appended to ``malformed`` when given)."""
    out: list[Pattern] = []
    for m in messages:
        try:
            if type(m) is TapeSignal and m.side in (1, -1):
                out.append(Pattern(m.pattern, m.symbol, m.ts_event, m.seq, m.side, m.price,
                                   {"confidence": m.confidence, **m.details}))
            elif type(m) is FootprintState and m.closed:
                out.extend(_bar_patterns(m, tick_size, profile))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            if malformed is not None:
                malformed.append(m)
    return out


def _bar_patterns(m: FootprintState, tick_size: float, profile: ProfileRule) -> list[Pattern]:
    bar, close = m.bar, float(m.bar["close"])
    found = []
    for a in bar["absorption"]:
        found.append(("absorption", 1 if a["at"] == "low" else -1, dict(a)))
    if bar["unfinished_high"]:
        found.append(("unfinished_auction", 1, {"at": "high", "price": bar["high"]}))
    if bar["unfinished_low"]:
        found.append(("unfinished_auction", -1, {"at": "low", "price": bar["low"]}))
    shape = profile_shape(bar, tick_size, profile)
    if shape is not None:
        found.append((f"{shape.name}_profile", shape.direction,
                      {"poc_position": shape.poc_position, "volume_share": shape.volume_share}))
    head = {"bar_open_ns": bar["ts_open"], "high": bar["high"], "low": bar["low"], "close": close}
    return [Pattern(kind, m.symbol, m.ts_event, m.seq, d, close, {**head, **details}) for kind, d, details in found]


class PatternOutcomes:
    """Tracks patterns until their horizon passes; returns each with its outcome."""

    def __init__(self, symbol: str, tick_size: float, horizon_ns: int, profile: ProfileRule = ProfileRule()):
        self.symbol = symbol
        self.tick_size = tick_size
        self.horizon_ns = horizon_ns
        self.profile = profile
        self.system = FeedbackSystem(symbol)
        self._open: dict[tuple[str, int, int], Pattern] = {}
        self.detected = 0
        self.malformed = 0

    def track(self, messages: Iterable) -> None:
        bad: list = []
        found = patterns_in(messages, self.tick_size, self.profile, bad)
        self.malformed += len(bad)
        for p in found:
            voter = f"{VOTER_PREFIX}{p.kind}:{p.direction:+d}"
            if (voter, p.seq, p.ts_event) in self._open:
                continue  # the same pattern seen again (a re-sent round)
            self._open[(voter, p.seq, p.ts_event)] = p
            self.detected += 1
            self.system.track_signal(Signal(voter, p.symbol, p.ts_event, p.seq, float(p.direction), 1.0,
                                            self.horizon_ns, p.price, (p.kind,)))

    def on_prices(self, prices: Iterable[tuple[int, float]]) -> list[tuple[Pattern, dict]]:
        """(pattern, record to store) for every pattern whose horizon elapsed."""
        prices = list(prices)
        out = []
        for fb in self.system.on_prices(prices):
            p = self._open.pop((fb.voter, fb.seq, fb.signal_ts), None)
            if p is not None:
                out.append((p, record(p, fb)))
        if prices and self._open:
            last = prices[-1][0]
            # A pattern due with no price at or before its horizon is dropped by the feedback
            # system (counted as missing_price): forget it here too, or it would be kept forever.
            self._open = {k: p for k, p in self._open.items() if p.ts_event + self.horizon_ns > last}
        return out

    def stats(self) -> dict:
        return {"patterns_detected": self.detected, "patterns_open": len(self._open),
                "patterns_malformed": self.malformed,
                "patterns_missing_price": self.system.stats().get("missing_price", 0)}


def record(p: Pattern, fb: Feedback) -> dict:
    """What Valkey keeps of a pattern: the pattern, and its outcome (exit price, points, hit)."""
    return {
        "kind": p.kind, "symbol": p.symbol, "ts_event": p.ts_event, "seq": p.seq, "direction": p.direction,
        "price": p.price, "details": p.details,
        "outcome": {"horizon_ns": fb.ts_event - p.ts_event, "exit_ts": fb.ts_event, "exit_price": fb.exit_price,
                    "points": fb.points, "hit": fb.hit},
    }
