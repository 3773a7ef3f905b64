"""What each HMARL receiver reads from the FeatureEngine's output, and nothing more.

The engine emits a FeatureVector per trade (73 floats) plus states at the
state cadence. Sending every receiver everything cost one unpickle of every
vector in six processes; on two cores that, not the computation, limited the
decision path. Each receiver kind has a selector that keeps exactly what its
logic reads, so its results are the same as if it had seen everything:

- ``agent``: the states the agents react to (flow, liquidity, footprint,
  tape), each preceded by the latest vector not yet forwarded, and followed by
  the vector of the same trade when it comes after. An agent reads vectors
  only to update its view (price, a few values) and votes once per seq after
  all of that seq's messages, so those vectors are all that matter.
- ``decision``: the first vector at or after each decision-clock boundary
  (``next_decision_ns``, which the coordinator uses too) plus the
  flow and liquidity states that fill the decision's market state. The ML
  voter gets the same vectors: its vote only counts at decision time.
- ``prices``: ``(ts_event, price)`` of every vector, for the feedback system's
  horizons, which need every trade price and nothing else; sent once per
  100 ms of event time.

Selectors keep state across batches (the held vector, the next boundary), so
one instance serves one receiver kind of one engine.
"""

from __future__ import annotations

from pipelines.messages import FeatureVector, FlowState, FootprintState, LiquidityState, TapeSignal

AGENT_STATES = (FlowState, LiquidityState, FootprintState, TapeSignal)
DECISION_STATES = (FlowState, LiquidityState)
KINDS = ("agent", "decision", "prices")


class AgentInputs:
    def __init__(self) -> None:
        self._held: FeatureVector | None = None
        self._state_seq = -1  # seq of the last state forwarded

    def select(self, out: list) -> list:
        picked = []
        for m in out:
            t = type(m)
            if t is FeatureVector:
                # An agent votes once per seq, after all of that seq's messages: a vector
                # of the same trade that follows the state still shapes the vote.
                if m.seq == self._state_seq:
                    picked.append(m)
                    self._held = None
                else:
                    self._held = m
            elif t in AGENT_STATES:
                if self._held is not None:
                    picked.append(self._held)
                    self._held = None
                picked.append(m)
                self._state_seq = m.seq
        return picked


def next_decision_ns(ts: int, every_ns: int) -> int:
    """The decision clock: the first vector at or after this instant gets the next decision."""
    return ts - ts % every_ns + every_ns


class DecisionInputs:
    def __init__(self, every_ns: int) -> None:
        if every_ns <= 0:
            raise ValueError(f"decision cadence must be > 0 ns, got {every_ns}")
        self.every_ns = every_ns
        self.next_ns = 0

    def select(self, out: list) -> list:
        picked = []
        for m in out:
            t = type(m)
            if t is FeatureVector:
                if m.ts_event >= self.next_ns:
                    self.next_ns = next_decision_ns(m.ts_event, self.every_ns)
                    picked.append(m)
            elif t in DECISION_STATES:
                picked.append(m)
        return picked


class PriceInputs:
    """Every trade price, sent in chunks spanning ``every_ns`` of event time: the
    feedback horizons are seconds long, so a call per micro-batch bought nothing."""

    def __init__(self, every_ns: int = 100_000_000) -> None:
        self.every_ns = every_ns
        self._held: list[tuple[int, float]] = []

    def select(self, out: list) -> list:
        held = self._held
        held.extend((m.ts_event, m.price) for m in out if type(m) is FeatureVector)
        if not held or held[-1][0] - held[0][0] < self.every_ns:
            return []
        self._held = []
        return held

    def flush(self) -> list:
        """What is held back, at shutdown: the last prices still resolve horizons."""
        held, self._held = self._held, []
        return held


def selector(kind: str, decision_every_ns: int):
    """A fresh selector for a receiver kind (see the module docstring)."""
    if kind == "agent":
        return AgentInputs()
    if kind == "decision":
        return DecisionInputs(decision_every_ns)
    if kind == "prices":
        return PriceInputs()
    raise ValueError(f"unknown HMARL input kind {kind!r}; expected one of {', '.join(KINDS)}")
