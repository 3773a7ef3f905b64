"""FeatureEngine: one symbol's features and order-flow analytics, as an actor.

It is a feed destination like the buffers (same micro-batches, same
``on_batch(events, prev)`` / :class:`BatchReply` sequence protocol, so it
dedupes and asks for resends the same way) and sits between the market data
and the agents. Per batch it runs :class:`SymbolAnalytics` and sends what
came out, fire-and-forget with a bounded number of calls in flight:

- every analytics message to the ``AnalyticsPublisher`` (ZeroMQ 5557-5560);
- flow states to Valkey (``hmarl:flow_state:<SYM>`` + the flow history),
  through a write-behind queue that never blocks the engine;
- to the symbol's HMARL actors (agents, ML, coordinator, feedback) once per
  decision round, each only what it reads, chained so that every decision is
  the same whatever the timing (:mod:`actors.rounds`).

Receivers are named actors looked up lazily (:class:`actors.peers.Peer`), so
one that was recreated is picked up without re-wiring.

The feed does not wait for this actor (``BACKPRESSURE = False``): when it falls
behind or restarts, market data flows on and it catches up from the feed's
resend window.

A restarted engine re-runs ``__init__``: it replays the last
``restore_minutes`` of ticks and book snapshots from the Valkey streams
(quietly, nothing re-published) so its windows are warm, and takes the
last restored seq as its position; the feed re-sends anything newer.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
import uuid

import orjson

from actors.config import ActorConfig
from actors.peers import Peer, Runtime
from actors.rounds import DecisionRounds, RoundPlan
from pipelines.features.config import FeaturesConfig
from pipelines.features.engine import VECTOR_NAMES, SymbolAnalytics
from pipelines.model.messages import Event, FlowState
from pipelines.data.sequencing import BatchReply, SeqGate
from pipelines.model.clock import NS_PER_MIN, NS_PER_MS

log = logging.getLogger("quantumtrader.features")


class FeatureEngine:
    KINDS = frozenset({"tick", "book"})
    BACKPRESSURE = False  # analytics must never hold market data up

    def __init__(self, cfg: ActorConfig[FeaturesConfig], *, tick_size: float, publisher: str | None = None,
                 rounds: RoundPlan | None = None, runtime: Runtime | None = None):
        """``publisher``: the AnalyticsPublisher's actor name; ``rounds``: the symbol's HMARL actors
        (None: no decisions, analytics only); ``runtime``: how other actors are called (default: Ray)."""
        if runtime is None:
            import ray as runtime  # the engine calls other actors; SymbolAnalytics is plain Python

        self.symbol = cfg.symbol
        self.cfg = cfg.domain
        self.incarnation = uuid.uuid4().hex
        self.analytics = self._new_analytics(tick_size)
        self.gate = SeqGate()
        ns, max_inflight = cfg.namespace, cfg.domain.max_inflight
        self.publisher = Peer(runtime, publisher, ns, max_inflight) if publisher else None
        self.rounds = DecisionRounds(runtime, ns, int(rounds.every_ms * NS_PER_MS), max_inflight, agents=rounds.agents,
                                     ml=rounds.ml, coordinator=rounds.coordinator,
                                     feedback=rounds.feedback) if rounds else None
        self.accepted = 0
        self.restored = 0
        self.restore_seconds = 0.0
        self.restore_error: str | None = None
        self.replayed_rounds = 0  # events replayed aloud after a restart (their rounds were not finished)
        self.flow_writer = None
        self.run_id = cfg.run_id
        valkey_url = cfg.valkey.url
        if valkey_url:
            from pipelines.persistence.connection import password_from_env
            from pipelines.persistence.flow_store import FlowStateWriter

            password = password_from_env(cfg.valkey.password_env)
            self.flow_writer = FlowStateWriter(valkey_url, password, ttl_s=self.cfg.flow_state_ttl_s,
                                               history_maxlen=self.cfg.flow_history_maxlen)
            self._restore(valkey_url, password)

    def _new_analytics(self, tick_size: float) -> SymbolAnalytics:
        c = self.cfg
        return SymbolAnalytics(self.symbol, tick_size, vector_every_ns=int(c.vector_every_ms * NS_PER_MS),
                               state_every_ns=int(c.state_every_ms * NS_PER_MS), vpin_bucket_volume=c.vpin_bucket_volume)

    def _restore(self, url: str, password: str | None) -> None:
        """Warm the windows from the Valkey streams (Valkey down: start cold, say so)."""
        from pipelines.persistence.connection import connect
        from pipelines.persistence.events import EventStore

        t0 = time.monotonic()
        try:
            store = EventStore(connect(url, password=password))
            # The writer keeps appending while we read two streams one after the other.
            # It writes in seq order, so everything up to the highest seq stored *now*
            # is already there: replay exactly that prefix, nothing newer from one
            # stream only (that would skip the other stream's events in between).
            cut = store.last_seq(self.symbol)
            last_ns = store.last_event_ns(self.symbol)
            if last_ns is None or cut == 0:
                return
            since = last_ns - int(self.cfg.restore_minutes * NS_PER_MIN)
            ticks = store.since(self.symbol, "tick", since)
            books = store.since(self.symbol, "book", since)
        except Exception as e:
            self.restore_error = f"{type(e).__name__}: {e}"
            log.error("FeatureEngine %s starts cold, Valkey unavailable: %s", self.symbol, self.restore_error)
            return
        events = [e for e in heapq.merge(ticks, books, key=lambda e: e.seq) if e.seq <= cut]
        # Quietly up to the last decision slot the coordinator finished (this run's); aloud
        # from there, so the rounds a crash cut short are made again (the receivers skip
        # what they have already seen) and no decision slot goes missing.
        aloud_from = self._first_undecided_ns(store)
        split = len(events) if aloud_from is None else next(
            (i for i, e in enumerate(events) if e.ts_event >= aloud_from), len(events))
        self.analytics.on_events(events[:split], None)
        if split < len(events):
            out: list = []
            self.analytics.on_events(events[split:], out)
            self.replayed_rounds = len(events) - split
            if out:
                self._emit(out)
        self.restored = len(events)
        if events:
            self.gate.position[self.symbol] = events[-1].seq
        self.restore_seconds = time.monotonic() - t0
        log.info("FeatureEngine %s restored %d events in %.1fs", self.symbol, self.restored, self.restore_seconds)

    def _first_undecided_ns(self, store) -> int | None:
        """Start of the first decision slot this run's coordinator has not decided (None:
        no decisions here, or none of this run: nothing to make again)."""
        if self.rounds is None:
            return None
        from pipelines.persistence.hmarl_store import agent_state_key

        try:
            raw = store.client.get(agent_state_key(f"coordinator:{self.symbol}", "state"))
            state = orjson.loads(raw) if raw else None
        except Exception:
            return None
        if not isinstance(state, dict) or state.get("run_id") != self.run_id or "last_slot" not in state:
            return None
        return (int(state["last_slot"]) + 1) * self.rounds.every_ns

    # -- the feed's side ----------------------------------------------------------

    def on_batch(self, events: list[Event] | bytes, prev: dict[str, int | None]) -> BatchReply:
        good, resync = self.gate.admit(events, prev)
        if good:
            self.accepted += len(good)
            out: list = []
            self.analytics.on_events(good, out)
            if out:
                self._emit(out)
        return BatchReply(self.incarnation, len(good), self.gate.duplicates, resync)

    def _emit(self, out: list) -> None:
        if self.publisher is not None:
            public = out if self.cfg.publish_vectors else [m for m in out if m.KIND != "features"]
            if public:
                self.publisher.call("publish", public)
        if self.flow_writer is not None:
            states = [m for m in out if type(m) is FlowState]
            if states:
                self.flow_writer.write(states)
        if self.rounds is not None:
            self.rounds.on_output(out)

    # -- queries and control ------------------------------------------------------

    def position(self) -> dict[str, int]:
        return dict(self.gate.position)

    def latest_vector(self) -> dict | None:
        """The current full feature vector as {name: value}, None before the first trade."""
        a = self.analytics
        if a.trades == 0:
            return None
        return dict(zip(VECTOR_NAMES, a.vector_values()))

    def flow_values(self) -> dict:
        return self.analytics.flow_values()

    def ping(self) -> dict:
        return {"incarnation": self.incarnation, "pid": os.getpid(), "accepted": self.accepted}

    def stats(self) -> dict:
        return {
            **self.analytics.stats(),
            "symbol": self.symbol,
            "accepted": self.accepted,
            "duplicates": self.gate.duplicates,
            "gaps": self.gate.gaps,
            "position": self.gate.position.get(self.symbol, 0),
            "restored": self.restored,
            "restore_seconds": round(self.restore_seconds, 3),
            "restore_error": self.restore_error,
            "publisher": self.publisher.stats() if self.publisher is not None else None,
            "hmarl": self.rounds.stats() if self.rounds is not None else None,
            "flow_store": self.flow_writer.stats() if self.flow_writer is not None else None,
        }

    def close(self, timeout_s: float = 10.0) -> dict:
        """Send the unfinished round, wait for outstanding calls, flush the flow states to Valkey."""
        if self.rounds is not None:
            self.rounds.close()
            self.rounds.drain(timeout_s)
        if self.publisher is not None:
            self.publisher.drain(timeout_s)
        if self.flow_writer is not None:
            self.flow_writer.close(timeout_s)
        return self.stats()
