"""The HMARL actors of one symbol: four agents, the ML voter, the coordinator and the feedback system.

    FeatureEngine:<SYM> ──states──> agent:<id>:<SYM> ×4 ──on_signals──> coordinator:<SYM>
                        ──vectors at decision times──> ml:<SYM> ──on_signals──> coordinator:<SYM>
                        ──vectors at decision times, market state──> coordinator:<SYM> ──> ZeroMQ 5561, Valkey
                        ──(ts, price) of every trade──> feedback:<SYM> <──track── signals and decisions

Each receiver gets only what it reads (``pipelines.hmarl.inputs``, class
attribute ``INPUTS``).
    feedback:<SYM> ──on_feedback──> agents (learning), coordinator (voter weights); Valkey hmarl:feedback:*

Each class wraps plain logic from ``pipelines.hmarl``; peers are named actors
looked up lazily (``actors.peers.Peer``). A restarted actor re-runs
``__init__`` and reloads its learned state (agent learning tables,
coordinator weights and position) from Valkey. The feedback system mirrors its
pending outcomes in Valkey (``hmarl:agent:feedback:<SYM>:pending``) as they are
tracked and resolved; a restarted one tracks them again and replays the trade
prices since the oldest of them from the Valkey tick stream, so outcomes whose
horizon passed while it was down still get their price. Without Valkey they
are lost with the process; none is invented.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
import uuid

from actors.peers import Peer
from pipelines.config import HmarlConfig
from pipelines.hmarl.inputs import next_decision_ns
from pipelines.messages import Decision, FeatureVector, FlowState, LiquidityState, Signal

log = logging.getLogger("quantumtrader.hmarl")

NS_PER_S = 1_000_000_000
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


def open_hmarl_store(cfg: HmarlConfig, valkey_url: str | None, password_env: str):
    if not valkey_url:
        return None
    from pipelines.hmarl.store import HmarlStore, HmarlTTL

    ttl = HmarlTTL(decision_s=cfg.ttl_decision_s, feedback_s=cfg.ttl_feedback_s, signal_s=cfg.ttl_signal_s,
                   metrics_s=cfg.ttl_metrics_s)
    return HmarlStore(valkey_url, os.environ.get(password_env) or None, ttl=ttl)


class _HmarlActor:
    """Shared plumbing: identity, Valkey store, peers to the symbol's coordinator and feedback."""

    def __init__(self, symbol: str, cfg: HmarlConfig, namespace: str, valkey_url: str | None, password_env: str):
        import ray

        self._ray = ray
        self.symbol = symbol
        self.cfg = cfg
        self.namespace = namespace
        self.incarnation = uuid.uuid4().hex
        self.store = open_hmarl_store(cfg, valkey_url, password_env)
        self.restored = False
        self.restore_error: str | None = None

    def _peer(self, name: str) -> Peer:
        return Peer(self._ray, name, self.namespace)

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
        return {"incarnation": self.incarnation, "pid": os.getpid(), "node": self._ray.get_runtime_context().get_node_id()}

    def close(self, timeout_s: float = 10.0) -> dict:
        stats = self.stats()
        if self.store is not None:
            self.store.flush(timeout_s)
            self.store.close()
        return stats


class _VoterActor(_HmarlActor):
    """An agent or the ML model: analytics in, signals out to the coordinator and feedback."""

    def _voter_init(self, voter) -> None:
        self.voter = voter
        self.coordinator = self._peer(coordinator_name(self.symbol))
        self.feedback = self._peer(feedback_name(self.symbol))
        self.signals = 0

    def on_analytics(self, payload) -> int:
        signals: list[Signal] = self.voter.on_analytics(_messages(payload))
        if signals:
            self.signals += len(signals)
            self.coordinator.call("on_signals", signals)
            self.feedback.call("track", signals)
            if self.store is not None:
                for s in signals:
                    self.store.store_signal(s)
        return len(signals)

    def stats(self) -> dict:
        return {**self.voter.stats(), "signals_sent": self.signals, "restored": self.restored,
                "restore_error": self.restore_error, "coordinator": self.coordinator.stats()}


class AgentActor(_VoterActor):
    INPUTS = "agent"  # what the FeatureEngine sends it (pipelines.hmarl.inputs)

    def __init__(self, agent_id: str, symbol: str, cfg: HmarlConfig, namespace: str, valkey_url: str | None = None,
                 password_env: str = "VALKEY_PASSWORD"):
        super().__init__(symbol, cfg, namespace, valkey_url, password_env)
        from pipelines.hmarl.agents import AGENTS

        self.agent_id = agent_id
        agent = AGENTS[agent_id](symbol, horizon_ns=int(cfg.horizon_s * NS_PER_S), learning=cfg.learning)
        self._restore_into(agent, self._owner(), "learning")
        self._voter_init(agent)

    def _owner(self) -> str:
        return f"{self.agent_id}:{self.symbol}"

    def on_feedback(self, feedbacks: list) -> int:
        applied = self.voter.on_feedback(feedbacks)
        if applied and self.store is not None:
            self.store.store_agent_state(self._owner(), "learning", self.voter.state())
        return applied


class MLActor(_VoterActor):
    INPUTS = "decision"  # its vote counts at decision time only

    def __init__(self, symbol: str, cfg: HmarlConfig, namespace: str, model_dir: str, valkey_url: str | None = None,
                 password_env: str = "VALKEY_PASSWORD"):
        super().__init__(symbol, cfg, namespace, valkey_url, password_env)
        from pipelines.hmarl.ml import MLModel

        model = MLModel(model_dir, horizon_ns=int(cfg.horizon_s * NS_PER_S))
        model.load_latest()
        self._next_check = time.monotonic() + MODEL_CHECK_S
        self._voter_init(model)

    def on_analytics(self, payload) -> int:
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + MODEL_CHECK_S
            self.voter.maybe_reload()
        return super().on_analytics(payload)


class CoordinatorActor(_HmarlActor):
    """Consensus on the event-time decision clock; decisions to ZeroMQ 5561, Valkey and feedback."""

    INPUTS = "decision"

    def __init__(self, symbol: str, cfg: HmarlConfig, namespace: str, voters: tuple[str, ...], publisher: str | None,
                 valkey_url: str | None = None, password_env: str = "VALKEY_PASSWORD"):
        super().__init__(symbol, cfg, namespace, valkey_url, password_env)
        from pipelines.hmarl.consensus import ConsensusConfig, Coordinator

        agents = [v for v in voters if v != "ml"]
        ccfg = ConsensusConfig(
            ml_weight=cfg.ml_weight if "ml" in voters else 0.0,
            agent_weights={a: (1.0 - (cfg.ml_weight if "ml" in voters else 0.0)) / len(agents) for a in agents},
            threshold=cfg.threshold, eta=cfg.eta, weight_floor=cfg.weight_floor, max_position=cfg.max_position,
            max_loss=cfg.max_loss, base_size=cfg.base_size, signal_ttl_ns=int(cfg.signal_ttl_s * NS_PER_S),
            horizon_ns=int(cfg.horizon_s * NS_PER_S),
        )
        self.coordinator = Coordinator(symbol, list(voters), ccfg)
        self._restore_into(self.coordinator, f"coordinator:{symbol}", "state")
        self.every_ns = int(cfg.decision_every_ms * 1_000_000)
        self.next_decision = 0
        self.market: dict[str, float] = {}
        self.publisher = self._peer(publisher) if publisher else None
        self.feedback = self._peer(feedback_name(symbol))
        self.decisions = 0
        self.actions: dict[str, int] = {}
        self.last: Decision | None = None

    def on_signals(self, signals: list[Signal]) -> None:
        self.coordinator.on_signals(signals)

    def on_analytics(self, payload) -> int:
        made = []
        for m in _messages(payload):
            t = type(m)
            if t is FlowState:
                v = m.values
                self.market.update({k: v.get(k) for k in ("ofi_ratio_5m", "tfi_5m", "tape_speed", "vpin")})
            elif t is LiquidityState:
                v = m.values
                self.market.update({k: v.get(k) for k in ("spread_ticks", "depth", "book_imbalance", "liquidity_score")})
            elif t is FeatureVector and m.ts_event >= self.next_decision:
                ts = m.ts_event
                self.next_decision = next_decision_ns(ts, self.every_ns)
                d = self.coordinator.decide(ts, m.seq, m.price, dict(self.market))._replace(ts_recv=m.ts_recv)
                self.coordinator.apply_decision(d)
                made.append(d)
        if made:
            self._emit(made)
        return len(made)

    def _emit(self, decisions: list[Decision]) -> None:
        self.decisions += len(decisions)
        self.last = decisions[-1]
        for d in decisions:
            self.actions[d.action] = self.actions.get(d.action, 0) + 1
            if self.store is not None:
                self.store.store_decision(d)
        if self.publisher is not None:
            self.publisher.call("publish", decisions)
        self.feedback.call("track", decisions)

    def on_feedback(self, feedbacks: list) -> dict:
        weights = self.coordinator.on_feedback(feedbacks)
        if self.store is not None:
            self.store.store_agent_state(f"coordinator:{self.symbol}", "state", self.coordinator.state())
        return weights

    def weights(self) -> dict:
        return dict(self.coordinator.weights)

    def stats(self) -> dict:
        return {**self.coordinator.stats(), "decisions": self.decisions, "actions": dict(self.actions),
                "last": explain(self.last) if self.last is not None else None,
                "weights": dict(self.coordinator.weights), "restored": self.restored, "restore_error": self.restore_error}


def explain(d: Decision, top: int = 2) -> str:
    """One line: the action and the strongest contributions with their first reason."""
    parts = sorted(d.signals, key=lambda v: -abs(v.get("contribution", 0.0)))[:top]
    why = "; ".join(f"{v['agent']} {v.get('contribution', 0.0):+.3f}: {(v.get('reasons') or ['-'])[0]}" for v in parts)
    risk = f" [risk: {d.risk}]" if d.risk else ""
    return f"{d.action} {d.size} @ {d.price:g} score {d.score:+.3f}{risk} <- {why or 'no voter present'}"


class FeedbackActor(_HmarlActor):
    """Realized outcomes on event time: prices from the FeatureEngine, horizons from the tracked signals."""

    INPUTS = "prices"  # (ts_event, price) of every trade

    def __init__(self, symbol: str, cfg: HmarlConfig, namespace: str, agents: tuple[str, ...],
                 valkey_url: str | None = None, password_env: str = "VALKEY_PASSWORD"):
        super().__init__(symbol, cfg, namespace, valkey_url, password_env)
        from pipelines.hmarl.feedback import FeedbackSystem

        self.system = FeedbackSystem(symbol, journal=self.store is not None)
        self.agents = {a: self._peer(agent_name(a, symbol)) for a in agents}
        self.coordinator = self._peer(coordinator_name(symbol))
        self.sent = 0
        self.restored_pending = 0
        self.replayed_prices = 0
        if self.store is not None:
            self._restore_pending(valkey_url, os.environ.get(password_env) or None)

    def _owner(self) -> str:
        return f"feedback:{self.symbol}"

    def _restore_pending(self, url: str, password: str | None) -> None:
        records = self.store.load_pending(self._owner())
        if records is None:
            self.restore_error = "Valkey unreachable: pending outcomes not restored"
            log.error("%s: %s", self._owner(), self.restore_error)
            return
        if not records:
            return
        self.restored_pending = self.system.restore_pending(records)
        self.restored = self.restored_pending > 0
        oldest = self.system.oldest_pending_ns()
        if oldest is None:
            return
        from pipelines.valkey_store import EventStore, connect

        try:
            ticks = EventStore(connect(url, password=password)).since(self.symbol, "tick", oldest)
        except Exception as e:  # start without the history: those outcomes count as missing prices
            self.restore_error = f"trade prices not replayed: {type(e).__name__}: {e}"
            log.error("%s: %s", self._owner(), self.restore_error)
            return
        self.replayed_prices = len(ticks)
        feedbacks = self.system.on_prices((t.ts_event, t.price) for t in ticks)
        if feedbacks:
            self._route(feedbacks)
        self._sync_pending()
        log.info("%s restored %d pending outcomes, replayed %d trade prices, resolved %d",
                 self._owner(), self.restored_pending, self.replayed_prices, len(feedbacks))

    def _sync_pending(self) -> None:
        """Mirror what became pending or was resolved since the last call (queued, in order)."""
        if self.store is not None:
            added, resolved = self.system.take_journal()
            if added or resolved:
                self.store.store_pending(self._owner(), added, resolved)

    def track(self, items: list) -> None:
        for x in items:
            if isinstance(x, Decision):
                self.system.track_decision(x)
            else:
                self.system.track_signal(x)
        self._sync_pending()

    def on_analytics(self, payload) -> int:
        prices = _messages(payload)
        if not prices:
            return 0
        feedbacks = self.system.on_prices(prices)
        if feedbacks:
            self._route(feedbacks)
        self._sync_pending()
        return len(feedbacks)

    def _route(self, feedbacks: list) -> None:
        self.sent += len(feedbacks)
        if self.store is not None:
            for fb in feedbacks:
                self.store.store_feedback(fb)
        by_voter: dict[str, list] = {}
        for fb in feedbacks:
            by_voter.setdefault(fb.voter, []).append(fb)
        for voter, fbs in by_voter.items():
            if voter in self.agents:
                self.agents[voter].call("on_feedback", fbs)
        # Voter weights learn from the decisions' outcomes, each voter scored on the
        # same rounds; each agent learns from the outcomes of its own signals.
        credits = [c for fb in feedbacks if fb.voter == "coordinator" for c in self.system.voter_credits(fb)]
        if credits:
            self.coordinator.call("on_feedback", credits)

    def performance(self) -> dict:
        return self.system.all_performance()

    def stats(self) -> dict:
        return {**self.system.stats(), "feedback_sent": self.sent, "performance": self.system.all_performance(),
                "restored_pending": self.restored_pending, "replayed_prices": self.replayed_prices,
                "restored": self.restored, "restore_error": self.restore_error}
