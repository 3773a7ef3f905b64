"""FeatureEngine: one symbol's features and order-flow analytics, as an actor.

It is a feed destination like the buffers (same micro-batches, same
``on_batch(events, prev)`` / :class:`BatchReply` sequence protocol, so it
dedupes and asks for resends the same way) and sits between the market data
and the agents. Per batch it runs :class:`SymbolAnalytics` and sends what
came out, fire-and-forget with a bounded number of calls in flight:

- every analytics message to the ``AnalyticsPublisher`` (ZeroMQ 5557-5560);
- flow states to Valkey (``hmarl:flow_state:<SYM>`` + the flow history),
  through a write-behind queue that never blocks the engine;
- to the downstream actors (agents, ML, coordinator, feedback) as
  ``on_analytics(payload)``, each receiver kind only what it reads
  (``pipelines.hmarl.inputs``), pickled once per kind.

Receivers are named actors looked up lazily (:class:`actors.peers.Peer`), so
one that was recreated is picked up without re-wiring.

A restarted engine re-runs ``__init__``: it replays the last
``restore_minutes`` of ticks and book snapshots from the Valkey streams
(quietly, nothing re-published) so its windows are warm, and takes the
last restored seq as its position; the feed re-sends anything newer.
"""

from __future__ import annotations

import heapq
import logging
import os
import pickle
import time
import uuid

from actors.peers import Peer
from pipelines.config import FeaturesConfig
from pipelines.features.engine import VECTOR_NAMES, SymbolAnalytics
from pipelines.messages import Event, FlowState
from pipelines.sequencing import BatchReply, SeqGate
from pipelines.timeutil import NS_PER_MIN

log = logging.getLogger("quantumtrader.features")


class FeatureEngine:
    KINDS = frozenset({"tick", "book"})

    def __init__(self, symbol: str, cfg: FeaturesConfig, tick_size: float, namespace: str, publisher: str | None = None,
                 downstream: tuple[tuple[str, str], ...] = (), valkey_url: str | None = None,
                 password_env: str = "VALKEY_PASSWORD", decision_every_ms: float = 1000.0):
        import ray  # the engine calls other actors; SymbolAnalytics is plain Python

        self.symbol = symbol
        self.cfg = cfg
        self.incarnation = uuid.uuid4().hex
        self.analytics = self._new_analytics(tick_size)
        self.gate = SeqGate()
        self.publisher = Peer(ray, publisher, namespace, cfg.max_inflight) if publisher else None
        from pipelines.hmarl.inputs import selector

        every_ns = int(decision_every_ms * 1_000_000)
        kinds = sorted({kind for _, kind in downstream})
        self.selectors = {kind: selector(kind, every_ns) for kind in kinds}
        self.downstream = [(kind, Peer(ray, name, namespace, cfg.max_inflight)) for name, kind in downstream]
        self.accepted = 0
        self.restored = 0
        self.restore_seconds = 0.0
        self.restore_error: str | None = None
        self.flow_writer = None
        if valkey_url:
            password = os.environ.get(password_env) or None
            self._restore(valkey_url, password)
            from pipelines.flow_store import FlowStateWriter

            self.flow_writer = FlowStateWriter(valkey_url, password, ttl_s=cfg.flow_state_ttl_s,
                                               history_maxlen=cfg.flow_history_maxlen)

    def _new_analytics(self, tick_size: float) -> SymbolAnalytics:
        c = self.cfg
        return SymbolAnalytics(self.symbol, tick_size, vector_every_ns=int(c.vector_every_ms * 1_000_000),
                               state_every_ns=int(c.state_every_ms * 1_000_000), vpin_bucket_volume=c.vpin_bucket_volume)

    def _restore(self, url: str, password: str | None) -> None:
        """Warm the windows from the Valkey streams (Valkey down: start cold, say so)."""
        from pipelines.valkey_store import EventStore, connect

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
        self.analytics.on_events(events, None)
        self.restored = len(events)
        if events:
            self.gate.position[self.symbol] = events[-1].seq
        self.restore_seconds = time.monotonic() - t0
        log.info("FeatureEngine %s restored %d events in %.1fs", self.symbol, self.restored, self.restore_seconds)

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
        if self.downstream:
            payloads = {}
            for kind, sel in self.selectors.items():
                picked = sel.select(out)
                payloads[kind] = pickle.dumps(picked, protocol=5) if picked else None  # once per kind
            for kind, peer in self.downstream:
                if payloads[kind] is not None:
                    peer.call("on_analytics", payloads[kind])

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
            "downstream": {p.name: p.stats() for _, p in self.downstream},
            "flow_store": self.flow_writer.stats() if self.flow_writer is not None else None,
        }

    def close(self, timeout_s: float = 10.0) -> dict:
        """Send what the selectors hold back, wait for outstanding calls, flush the flow states to Valkey."""
        held = {kind: getattr(sel, "flush", list)() for kind, sel in self.selectors.items()}
        for kind, peer in self.downstream:
            if held[kind]:
                peer.call("on_analytics", pickle.dumps(held[kind], protocol=5))
        for peer in ([self.publisher] if self.publisher is not None else []) + [p for _, p in self.downstream]:
            peer.drain(timeout_s)
        if self.flow_writer is not None:
            self.flow_writer.close(timeout_s)
        return self.stats()
