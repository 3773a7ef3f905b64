"""Decision rounds: how a FeatureEngine drives its symbol's HMARL actors so that every
decision is the same whatever the replay speed, the micro-batching or the machine's load.

A round is the engine's output from one decision-clock boundary to the next: it ends
with the first feature vector at or after a boundary (``next_decision_ns``). At the end
of round k the engine submits, without waiting for any of them:

    agent_i.on_round(states_k, [F(k-1)])                 -> S_i(k)  signals
    ml.on_round([vector_k])                              -> S_ml(k) signals
    feedback.on_round(prices_k, [S_*(k)], [D(k-1)])      -> F(k)    (feedbacks, voter credits)
    coordinator.on_round(market_k + vector_k, [S_*(k)], [F(k-1)]) -> D(k) decisions

The bracketed arguments are ObjectRefs of earlier calls' results, passed inside lists so
the receiver resolves them itself, with a timeout (``HmarlConfig.round_timeout_s``).
Ray runs each actor's calls in the order one caller submitted them, so:

- the coordinator decides at boundary k on the signals computed from round k's inputs,
  with voter weights learned from the outcomes resolved up to round k-1;
- each agent learns from the outcomes resolved up to round k-1 before it reads round k;
- the feedback system tracks round k's signals and round k-1's decision before it
  reads round k's prices (horizons are longer than a round, so none is due yet).

Nothing there depends on when a message arrives, only on event time. Before, each actor
sent on as soon as it had something, and a replay at another speed interleaved the
signals, decisions and rewards differently. A receiver whose result does
not come within the timeout (it died for good, or its restart takes longer) counts as
absent for that round, and is counted; only then can a result depend on timing.

Signals reach the coordinator once per round instead of as they happen: nothing reads
them in between, and it is fewer calls.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

from actors.peers import Peer
from pipelines.alpha.inputs import DECISION_STATES, AgentInputs, next_decision_ns
from pipelines.model.messages import FeatureVector, FootprintState, TapeSignal


@dataclass(frozen=True)
class RoundPlan:
    """Whom one symbol's rounds call (actor names, looked up when first called) and how often."""

    every_ms: float  # the decision clock, event time
    agents: tuple[str, ...] = ()
    ml: str | None = None
    coordinator: str | None = None
    feedback: str | None = None


class DecisionRounds:
    def __init__(self, ray, namespace: str, every_ns: int, max_inflight: int, *, agents: tuple[str, ...] = (),
                 ml: str | None = None, coordinator: str | None = None, feedback: str | None = None):
        if every_ns <= 0:
            raise ValueError(f"decision cadence must be > 0 ns, got {every_ns}")
        peer = lambda name: Peer(ray, name, namespace, max_inflight) if name else None  # noqa: E731
        self.agents = [peer(a) for a in agents]
        self.ml = peer(ml)
        self.coordinator = peer(coordinator)
        self.feedback = peer(feedback)
        self.every_ns = every_ns
        self.next_ns = 0
        self.rounds = 0
        self._agent_inputs = AgentInputs()
        self._agent_msgs: list = []  # what the agents read this round
        self._market: list = []  # flow and liquidity states for the coordinator, this round
        self._prices: list[tuple[int, float]] = []  # every trade price this round, for the feedback system
        self._patterns: list = []  # tape signals and closed footprint bars: the feedback system keeps their outcome
        self._last_feedback = None  # F(k-1)
        self._last_decisions = None  # D(k-1)

    def peers(self) -> list[Peer]:
        return [p for p in (*self.agents, self.ml, self.coordinator, self.feedback) if p is not None]

    def on_output(self, out: list) -> None:
        """Take one engine batch's analytics (in emission order); end a round at each boundary vector."""
        start = 0
        for i, m in enumerate(out):
            if type(m) is FeatureVector:
                self._prices.append((m.ts_event, m.price))
                if m.ts_event >= self.next_ns:
                    self.next_ns = next_decision_ns(m.ts_event, self.every_ns)
                    self._absorb(out[start:i])
                    start = i + 1
                    self._end_round(m)
        self._absorb(out[start:])

    def _absorb(self, part: list) -> None:
        if not part:
            return
        self._agent_msgs.extend(self._agent_inputs.select(part))
        self._market.extend(m for m in part if type(m) in DECISION_STATES)
        self._patterns.extend(m for m in part if type(m) is TapeSignal or (type(m) is FootprintState and m.closed))

    def _end_round(self, vector: FeatureVector) -> None:
        # The boundary vector belongs to this round for the agents too (it may follow a state of its trade).
        self._agent_msgs.extend(self._agent_inputs.select([vector]))
        prev_feedback = _refs(self._last_feedback)
        voters = self._call_voters(vector)
        self._call_feedback(voters)
        if self.coordinator is not None:
            self._last_decisions = self.coordinator.call("on_round", _pickle(self._market + [vector]), voters,
                                                         prev_feedback)
        self._market = []
        self.rounds += 1

    def _call_voters(self, vector: FeatureVector | None) -> list:
        payload = _pickle(self._agent_msgs)  # once for every agent
        self._agent_msgs = []
        refs = [a.call("on_round", payload, _refs(self._last_feedback)) for a in self.agents]
        if self.ml is not None and vector is not None:
            refs.append(self.ml.call("on_round", _pickle([vector])))
        return [r for r in refs if r is not None]

    def _call_feedback(self, voters: list) -> None:
        if self.feedback is not None:
            self._last_feedback = self.feedback.call("on_round", _pickle(self._prices), voters,
                                                     _refs(self._last_decisions),
                                                     _pickle(self._patterns) if self._patterns else None)
        self._prices = []
        self._patterns = []

    def close(self) -> None:
        """At shutdown: the last, unfinished round still reaches the agents and the feedback
        system (its prices resolve horizons); there is no boundary, so no decision."""
        self._call_feedback(self._call_voters(None))
        self._market = []

    def drain(self, timeout_s: float) -> None:
        for p in self.peers():
            p.drain(timeout_s)

    def stats(self) -> dict:
        return {"rounds": self.rounds, **{p.name: p.stats() for p in self.peers()}}


def _refs(ref) -> list:
    """An earlier call's result to hand over, inside a list (the receiver resolves it itself)."""
    return [] if ref is None else [ref]


def _pickle(items: list) -> bytes:
    return pickle.dumps(items, protocol=5)
