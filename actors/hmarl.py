"""The HMARL actors of one symbol: four agents, the ML voter, the coordinator and the feedback system.

The symbol's FeatureEngine drives them in decision rounds (``actors.rounds``): once per
decision-clock boundary it calls

    agent:<id>:<SYM> ×4 .on_round(states, [outcomes])          -> signals
    ml:<SYM>             .on_round([boundary vector])             -> signals
    feedback:<SYM>       .on_round(prices, [signals], [decisions]) -> (outcomes, voter credits)
    coordinator:<SYM>    .on_round(market + vector, [signals], [outcomes]) -> decisions -> ZeroMQ 5561, Valkey

where the bracketed arguments are the ObjectRefs of the other calls' results; each
actor resolves them (with a timeout) before it reads its own input, so every decision
depends on event time only.

Each class wraps plain logic from the ``pipelines`` domain packages. A restarted actor re-runs
``__init__`` and reloads its learned state (agent learning tables, coordinator
weights) from Valkey; Ray re-submits the round that was in flight
(``max_task_retries``), and the coordinator skips a decision slot it already decided.
The feedback system mirrors its pending outcomes in Valkey
(``hmarl:agent:feedback:<SYM>:pending``) as they are tracked and resolved; a restarted
one tracks them again and replays the trade prices since the oldest of them from the
Valkey tick stream, so outcomes whose horizon passed while it was down still get their
price. Without Valkey they are lost with the process; none is invented.

A run (``run_id``) is one session of the system: the coordinator's decision clock and latest
signals belong to the run, while what the voters learned carries over (``scripts/launch.py
--resume`` continues a run). Positions are the execution actor's (``actors.execution``): the
coordinator says what the consensus is, the account's execution policy and risk engine decide
what that means in orders.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
import uuid

from actors.config import ActorConfig, ValkeyLink
from actors.peers import Peer, Runtime, node_id
from pipelines.alpha.inputs import next_decision_ns
from pipelines.config import HmarlConfig
from pipelines.data.sequencing import SlotGate
from pipelines.model.clock import NS_PER_MS, NS_PER_S
from pipelines.model.messages import Decision, FeatureVector, FlowState, LiquidityState, Signal

log = logging.getLogger("quantumtrader.hmarl")

MODEL_CHECK_S = 5.0  # how often the ML actor looks for a newer registered model (file mtime: I/O, not pipeline time)


def agent_name(agent_id: str, symbol: str) -> str:
    return f"agent:{agent_id}:{symbol}"


def ml_name(symbol: str) -> str:
    return f"ml:{symbol}"


def coordinator_name(symbol: str) -> str:
    return f"coordinator:{symbol}"


def feedback_name(symbol: str) -> str:
    return f"feedback:{symbol}"


def _messages(payload) -> list:
    return pickle.loads(payload) if isinstance(payload, bytes) else payload


def open_hmarl_store(cfg: HmarlConfig, link: ValkeyLink):
    valkey_url, password_env = link.url, link.password_env
    if not valkey_url:
        return None
    from pipelines.persistence.connection import password_from_env
    from pipelines.persistence.hmarl_store import HmarlStore, HmarlTTL

    ttl = HmarlTTL(decision_s=cfg.ttl_decision_s, feedback_s=cfg.ttl_feedback_s, signal_s=cfg.ttl_signal_s,
                   metrics_s=cfg.ttl_metrics_s)
    return HmarlStore(valkey_url, password_from_env(password_env), ttl=ttl)


class _HmarlActor:
    """Shared plumbing: identity, Valkey store, resolving the results a round hands over."""

    def __init__(self, config: ActorConfig[HmarlConfig], *, runtime: Runtime | None = None):
        """``runtime``: how the actor resolves results and calls other actors (None: Ray)."""
        if runtime is None:
            import ray as runtime

        self._ray = runtime
        self.symbol = config.symbol
        self.cfg = config.domain
        self.namespace = config.namespace
        self.run_id = config.run_id
        self.incarnation = uuid.uuid4().hex
        self.store = open_hmarl_store(config.domain, config.valkey)
        self.restored = False
        self.restore_error: str | None = None
        self.absent: dict[str, int] = {}  # results of other actors that did not come, by kind
        self._absent_since_log = 0
        self._metrics_every_ns = int(config.domain.metrics_every_s * NS_PER_S)
        self._next_metrics_ns = 0

    def _peer(self, name: str) -> Peer:
        return Peer(self._ray, name, self.namespace)

    def _resolve(self, refs: list, what: str) -> list:
        """The results behind ``refs``, in order; one that fails or does not come within
        ``round_timeout_s`` is left out and counted (its actor is absent for this round)."""
        if not refs:
            return []
        ready, _ = self._ray.wait(list(refs), num_returns=len(refs), timeout=self.cfg.round_timeout_s)
        ready = set(ready)
        out = []
        for ref in refs:
            try:
                if ref not in ready:
                    raise TimeoutError(f"no result within {self.cfg.round_timeout_s:g}s")
                out.append(self._ray.get(ref))
            except Exception as e:
                self.absent[what] = self.absent.get(what, 0) + 1
                if self._absent_since_log == 0:
                    log.warning("%s: a %s result is missing (%s); counted as absent", self.ping_name(), what,
                                type(e).__name__)
                self._absent_since_log = (self._absent_since_log + 1) % 1000
        return out

    def ping_name(self) -> str:
        return f"{type(self).__name__}:{self.symbol}"

    def _report(self, ts_event: int | None) -> None:
        """Every ``metrics_every_s`` of event time, this actor's stats go to ``hmarl:metrics:<owner>``
        (with a TTL): what status pages and alerts read without calling the actor."""
        if self.store is None or type(ts_event) is not int or ts_event < self._next_metrics_ns:
            return
        self._next_metrics_ns = (ts_event // self._metrics_every_ns + 1) * self._metrics_every_ns
        self.store.store_metrics(self._owner(), {"ts_event": ts_event, "run_id": self.run_id, **self.stats()})

    def _restore_into(self, target, owner: str, name: str) -> None:
        """Load learned state saved in Valkey into ``target``; a state that does not fit
        (other symbol, old version, voters changed) is logged and ignored, never fatal."""
        state = self.store.load_agent_state(owner, name) if self.store is not None else None
        if not state:
            return
        try:
            target.load_state(state)
        except (ValueError, KeyError, TypeError) as e:
            self.restore_error = f"{type(e).__name__}: {e}"
            log.error("%s: saved %s state ignored: %s", owner, name, self.restore_error)
            return
        self.restored = True
        log.info("%s restored its %s state from Valkey", owner, name)

    def ping(self) -> dict:
        return {"incarnation": self.incarnation, "pid": os.getpid(), "node": node_id(self._ray)}

    def close(self, timeout_s: float = 10.0) -> dict:
        stats = self.stats()
        if self.store is not None:
            self.store.flush(timeout_s)
            self.store.close()
        return stats


class _VoterActor(_HmarlActor):
    """An agent or the ML model: one round's analytics in, its signals out (returned)."""

    def _voter_init(self, voter) -> None:
        self.voter = voter
        self.signals = 0
        self.rounds = 0

    def on_round(self, payload, feedback_refs: list = ()) -> list[Signal]:
        self.rounds += 1
        for outcomes, _credits in self._resolve(feedback_refs, "feedback"):
            self._learn(outcomes)
        messages = _messages(payload) if payload else []
        signals: list[Signal] = self.voter.on_analytics(messages) if messages else []
        if signals:
            self.signals += len(signals)
            if self.store is not None:
                for s in signals:
                    self.store.store_signal(s)
        self._report(getattr(messages[-1], "ts_event", None) if messages else None)
        return signals

    def _learn(self, outcomes: list) -> None:
        """Only the agents learn from outcomes."""

    def stats(self) -> dict:
        return {**self.voter.stats(), "signals_sent": self.signals, "rounds": self.rounds, "absent": dict(self.absent),
                "restored": self.restored, "restore_error": self.restore_error}


class AgentActor(_VoterActor):
    def __init__(self, config: ActorConfig[HmarlConfig], *, agent_id: str, runtime: Runtime | None = None):
        super().__init__(config, runtime=runtime)
        cfg, symbol = config.domain, config.symbol
        from pipelines.alpha.registry import AGENTS

        self.agent_id = agent_id
        agent = AGENTS[agent_id](symbol, horizon_ns=int(cfg.horizon_s * NS_PER_S), learning=cfg.learning,
                                 min_confidence=cfg.min_confidence, cost_ticks=cfg.agent_cost_ticks)
        self._restore_into(agent, self._owner(), "learning")
        self._voter_init(agent)

    def _owner(self) -> str:
        return f"{self.agent_id}:{self.symbol}"

    def _learn(self, outcomes: list) -> None:
        mine = [fb for fb in outcomes if fb.voter == self.agent_id]
        if mine and self.voter.on_feedback(mine) and self.store is not None:
            self.store.store_agent_state(self._owner(), "learning", self.voter.state())


class MLActor(_VoterActor):
    def __init__(self, config: ActorConfig[HmarlConfig], *, model_dir: str, feed_source: str | None = None,
                 runtime: Runtime | None = None):
        """``feed_source``: the run's feed (simulator, replay, ...): a model trained on another market abstains."""
        super().__init__(config, runtime=runtime)
        cfg, symbol = config.domain, config.symbol
        from pipelines.alpha.ml import MLModel

        model = MLModel(model_dir, horizon_ns=int(cfg.horizon_s * NS_PER_S), symbol=symbol, feed_source=feed_source,
                        allow_other_market=cfg.ml_allow_other_market)
        model.load_latest()
        self._next_check = time.monotonic() + MODEL_CHECK_S
        self._voter_init(model)

    def _owner(self) -> str:
        return f"ml:{self.symbol}"

    def on_round(self, payload, feedback_refs: list = ()) -> list[Signal]:
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + MODEL_CHECK_S
            self.voter.maybe_reload()
        return super().on_round(payload, feedback_refs)


class CoordinatorActor(_HmarlActor):
    """Consensus on the event-time decision clock; decisions to ZeroMQ 5561, Valkey and the
    account's execution actor, and returned for the feedback system."""

    def __init__(self, config: ActorConfig[HmarlConfig], *, voters: tuple[str, ...], publisher: str | None = None,
                 execution: str | None = None, runtime: Runtime | None = None):
        """``voters``: the agent ids (and "ml") it weighs; ``publisher``: the actor that publishes decisions;
        ``execution``: the account's execution actor, which makes them orders (None: no orders)."""
        super().__init__(config, runtime=runtime)
        cfg, symbol = config.domain, config.symbol
        from pipelines.portfolio.consensus import ConsensusConfig, Coordinator

        self.coordinator = Coordinator(symbol, list(voters), ConsensusConfig.from_hmarl(cfg))
        self.every_ns = int(cfg.decision_every_ms * NS_PER_MS)
        self.slots = SlotGate()  # decision-clock slots (ts // every_ns) decided, once each
        self._restore()
        self.market: dict[str, float] = {}
        self.publisher = self._peer(publisher) if publisher else None
        self.execution = self._peer(execution) if execution else None
        self.decisions = 0
        self.skipped = 0  # boundaries of a slot already decided (a re-submitted round, a restarted engine)
        self.actions: dict[str, int] = {}
        self.last: Decision | None = None
        # For the execution actor: the seq of the last feature vector decided on (or skipped), and the
        # next decision-clock boundary, before which no decision can be made on an event.
        self.through = 0
        self.until = 0

    def _owner(self) -> str:
        return f"coordinator:{self.symbol}"

    def _restore(self) -> None:
        """Weights always; the decision clock and the latest signals only within the same run."""
        state = self.store.load_agent_state(self._owner(), "state") if self.store is not None else None
        if not state:
            return
        try:
            self.coordinator.load_state(state)
        except (ValueError, KeyError, TypeError) as e:
            self.restore_error = f"{type(e).__name__}: {e}"
            log.error("%s: saved state ignored: %s", self._owner(), self.restore_error)
            return
        if state.get("run_id") == self.run_id:
            self.slots.load_state(state)
        else:
            self.coordinator.new_run()
            log.info("%s: new run %s: weights restored", self._owner(), self.run_id)
        self.restored = True

    def on_round(self, payload, voter_refs: list = (), feedback_refs: list = ()) -> list[Decision]:
        for _outcomes, credits in self._resolve(feedback_refs, "feedback"):
            if credits:
                self.coordinator.on_feedback(credits)
        for signals in self._resolve(voter_refs, "voter"):
            self.coordinator.on_signals(signals)
        made = []
        through = last_ts = 0
        for m in _messages(payload):
            t = type(m)
            if t is FlowState:
                v = m.values
                self.market.update({k: v.get(k) for k in ("ofi_ratio_5m", "tfi_5m", "tape_speed", "vpin")})
            elif t is LiquidityState:
                v = m.values
                self.market.update({k: v.get(k) for k in ("spread_ticks", "depth", "book_imbalance", "liquidity_score")})
            elif t is FeatureVector:
                through, last_ts = max(through, m.seq), max(last_ts, m.ts_event)
                if not self.slots.admit(m.ts_event // self.every_ns):
                    self.skipped += 1
                    continue
                made.append(self.coordinator.decide(m.ts_event, m.seq, m.price,
                                                    dict(self.market))._replace(ts_recv=m.ts_recv))
        if made:
            self._emit(made)
            self._report(made[-1].ts_event)
        if self.execution is not None and (made or through > self.through):
            # every round, decisions or not: the execution actor holds market data until it knows
            # what was decided on it; the next decision is on the first vector at or after the next
            # boundary, so the market data before that boundary need not wait for it
            self.through = max(self.through, through)
            self.until = max(self.until, next_decision_ns(last_ts, self.every_ns))
            self.execution.call("on_decisions", made, {self.symbol: self.through}, {self.symbol: self.until})
        if self.store is not None:
            self.store.store_agent_state(self._owner(), "state",
                                         {**self.coordinator.state(), "run_id": self.run_id, **self.slots.state()})
            if made:  # stored before the round returns: a SIGKILL now loses no decision (Ray re-runs the round)
                self.store.commit()
        return made

    def _emit(self, decisions: list[Decision]) -> None:
        self.decisions += len(decisions)
        self.last = decisions[-1]
        for d in decisions:
            self.actions[d.action] = self.actions.get(d.action, 0) + 1
            if self.store is not None:
                self.store.store_decision(d)
        if self.publisher is not None:
            self.publisher.call("publish", decisions)

    def close(self, timeout_s: float = 10.0) -> dict:
        if self.execution is not None:  # the last decisions reach the orders before the shutdown goes on
            self.execution.drain(timeout_s)
        return super().close(timeout_s)

    def weights(self) -> dict:
        return dict(self.coordinator.weights)

    def stats(self) -> dict:
        return {**self.coordinator.stats(), "decisions": self.decisions, "actions": dict(self.actions),
                "skipped": self.skipped, "absent": dict(self.absent), "run_id": self.run_id,
                "last": explain(self.last) if self.last is not None else None,
                "weights": dict(self.coordinator.weights), "restored": self.restored, "restore_error": self.restore_error,
                **({"execution": self.execution.stats()} if self.execution is not None else {})}


def explain(d: Decision, top: int = 2) -> str:
    """One line: the action and the strongest contributions with their first reason."""
    parts = sorted(d.signals, key=lambda v: -abs(v.get("contribution", 0.0)))[:top]
    why = "; ".join(f"{v['agent']} {v.get('contribution', 0.0):+.3f}: {(v.get('reasons') or ['-'])[0]}" for v in parts)
    risk = f" [risk: {d.risk}]" if d.risk else ""
    return f"{d.action} {d.size} @ {d.price:g} score {d.score:+.3f}{risk} <- {why or 'no voter present'}"


class FeedbackActor(_HmarlActor):
    """Realized outcomes on event time: each round's trade prices resolve the horizons of the
    signals and decisions tracked before them; the outcomes go back as the round's result."""

    def __init__(self, config: ActorConfig[HmarlConfig], *, tick_size: float, round_trip_cost: float = 0.0,
                 runtime: Runtime | None = None):
        """``tick_size``: the price grid the FeatureEngine detects patterns on; ``round_trip_cost``:
        R$ per contract in and out (B3's fees), taken off the outcomes' P&L."""
        super().__init__(config, runtime=runtime)
        from pipelines.feedback.patterns import PatternOutcomes
        from pipelines.feedback.system import DecisionResults, FeedbackSystem

        self.system = FeedbackSystem(self.symbol, journal=self.store is not None, round_trip_cost=round_trip_cost)
        self.results = DecisionResults()  # the decisions' results from their fills (the execution actor's)
        # Detected patterns are judged like signals, on the same prices, and kept with their outcome.
        self.patterns = PatternOutcomes(self.symbol, tick_size, int(self.cfg.horizon_s * NS_PER_S))
        self.sent = 0
        self.rounds = 0
        self.restored_pending = 0
        self.replayed_prices = 0
        self.other_run_pending = 0
        self._carry: list = []  # outcomes resolved while restoring, handed out with the next round
        if self.store is not None:
            from pipelines.persistence.connection import password_from_env

            self._restore_pending(config.valkey.url, password_from_env(config.valkey.password_env))

    def _owner(self) -> str:
        return f"feedback:{self.symbol}"

    def _restore_pending(self, url: str, password: str | None) -> None:
        records = self.store.load_pending(self._owner())
        if records is None:
            self.restore_error = "Valkey unreachable: pending outcomes not restored"
            log.error("%s: %s", self._owner(), self.restore_error)
            return
        # Outcomes another run left pending belong to another market session: dropped, not resolved here.
        stale = [f for f, r in records.items() if r.get("run", "") != self.run_id]
        if stale:
            self.other_run_pending = len(stale)
            self.store.store_pending(self._owner(), {}, stale)
            records = {f: r for f, r in records.items() if f not in set(stale)}
        if not records:
            return
        self.restored_pending = self.system.restore_pending(records)
        self.restored = self.restored_pending > 0
        oldest = self.system.oldest_pending_ns()
        if oldest is None:
            return
        from pipelines.persistence.connection import connect
        from pipelines.persistence.events import EventStore

        try:
            ticks = EventStore(connect(url, password=password)).since(self.symbol, "tick", oldest)
        except Exception as e:  # start without the history: those outcomes count as missing prices
            self.restore_error = f"trade prices not replayed: {type(e).__name__}: {e}"
            log.error("%s: %s", self._owner(), self.restore_error)
            return
        self.replayed_prices = len(ticks)
        self._carry = self.system.on_prices((t.ts_event, t.price) for t in ticks)
        for fb in self._carry:  # recorded now; the learners get them with the next round
            self.store.store_feedback(fb)
        self._sync_pending()
        log.info("%s restored %d pending outcomes, replayed %d trade prices, resolved %d",
                 self._owner(), self.restored_pending, self.replayed_prices, len(self._carry))

    def _sync_pending(self) -> None:
        """Mirror what became pending or was resolved since the last call (queued, in order)."""
        if self.store is not None:
            added, resolved = self.system.take_journal()
            if added or resolved:
                self.store.store_pending(self._owner(), {f: {**r, "run": self.run_id} for f, r in added.items()},
                                         resolved)

    def on_round(self, prices, voter_refs: list = (), decision_refs: list = (), patterns=None) -> tuple[list, list]:
        """Track the round's decisions, signals and detected patterns, then read its prices;
        returns (outcomes, voter credits): the agents learn from the first, the coordinator's
        weights from the second. Patterns whose horizon passed are stored with their outcome."""
        self.rounds += 1
        for decisions in self._resolve(decision_refs, "coordinator"):
            for d in decisions:
                self.system.track_decision(d)
        for signals in self._resolve(voter_refs, "voter"):
            for sig in signals:
                self.system.track_signal(sig)
        prices = _messages(prices) if prices else []
        new = self.system.on_prices(prices) if prices else []
        outcomes, self._carry = self._carry + new, []
        self._sync_pending()
        if patterns:
            self.patterns.track(_messages(patterns))
        for pattern, record in self.patterns.on_prices(prices):
            if self.store is not None:
                self.store.store_pattern(pattern.kind, pattern.pattern_id, record)
        self._report(prices[-1][0] if prices else None)
        if not outcomes:
            return [], []
        self.sent += len(outcomes)
        if self.store is not None:
            for fb in new:
                self.store.store_feedback(fb)
        # Voter weights learn from the decisions' outcomes, each voter scored on the
        # same rounds; each agent learns from the outcomes of its own signals.
        credits = [c for fb in outcomes if fb.voter == "coordinator" for c in self.system.voter_credits(fb)]
        return outcomes, credits

    def on_outcomes(self, outcomes) -> int:
        """Decisions' realized outcomes from their fills, net of costs (from the execution actor)."""
        return self.results.add(outcomes if isinstance(outcomes, (list, tuple)) else ())

    def performance(self) -> dict:
        return self.system.all_performance()

    def stats(self) -> dict:
        return {**self.system.stats(), "feedback_sent": self.sent, "rounds": self.rounds,
                "performance": self.system.all_performance(), "absent": dict(self.absent),
                "restored_pending": self.restored_pending, "replayed_prices": self.replayed_prices,
                "other_run_pending": self.other_run_pending, **self.patterns.stats(),
                "decisions_from_fills": self.results.summary(),
                "restored": self.restored, "restore_error": self.restore_error}
