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
- the coordinator: the first vector at or after each decision-clock boundary
  (``next_decision_ns``) plus the flow and liquidity states (``DECISION_STATES``)
  that fill the decision's market state; the ML voter gets the same vector.
- the feedback system: ``(ts_event, price)`` of every vector.

``actors.rounds.DecisionRounds`` applies these once per decision round.
``AgentInputs`` keeps state across batches (the held vector), so one instance
serves the agents of one engine.
"""

from __future__ import annotations

from pipelines.model.messages import FeatureVector, FlowState, FootprintState, LiquidityState, TapeSignal

AGENT_STATES = (FlowState, LiquidityState, FootprintState, TapeSignal)
DECISION_STATES = (FlowState, LiquidityState)


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
