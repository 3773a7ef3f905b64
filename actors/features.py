"""FeatureEngine: one symbol's features and order-flow analytics, as an actor.

It is a feed destination like the buffers (same micro-batches, same
``on_batch(events, prev)`` / :class:`BatchReply` sequence protocol, so it
dedupes and asks for resends the same way) and sits between the market data
and the agents. Per batch it runs :class:`SymbolAnalytics` and sends what
came out, fire-and-forget with a bounded number of calls in flight:

- every analytics message to the ``AnalyticsPublisher`` (ZeroMQ 5557-5560),
  found by name so a recreated publisher is picked up;
- flow states to Valkey (``hmarl:flow_state:<SYM>`` + the flow history),
  through a write-behind queue that never blocks the engine;
- every message to the downstream actors (the agents) set with
  :meth:`set_downstream`, as ``on_analytics(messages)``.

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
from collections import deque

from pipelines.config import FeaturesConfig
from pipelines.features.engine import VECTOR_NAMES, SymbolAnalytics
from pipelines.messages import Event, FlowState
from pipelines.sequencing import BatchReply, SeqGate
from pipelines.timeutil import NS_PER_MIN

log = logging.getLogger("quantumtrader.features")

STALL_TIMEOUT_S = 2.0  # a receiver slower than this on its oldest call stops being waited for


class Outbox:
    """Fire-and-forget calls to one receiver with at most ``max_inflight`` unanswered.

    When full it waits up to STALL_TIMEOUT_S for the oldest call, then stops
    tracking it (counted as a stall): a hung or restarting receiver slows the
    engine by at most that, never stops it. Failed calls are counted."""

    def __init__(self, ray, max_inflight: int):
        self._ray = ray
        self.max_inflight = max_inflight
        self.refs: deque = deque()
        self.sent = 0
        self.failed = 0
        self.stalled = 0

    def send(self, method, *args) -> None:
        if len(self.refs) >= self.max_inflight:
            ready, _ = self._ray.wait([self.refs[0]], timeout=STALL_TIMEOUT_S)
            if not ready:
                self.refs.popleft()
                self.stalled += 1
        self.reap()
        self.refs.append(method.remote(*args))
        self.sent += 1

    def reap(self) -> None:
        while self.refs:
            ready, _ = self._ray.wait([self.refs[0]], timeout=0)
            if not ready:
                return
            try:
                self._ray.get(self.refs.popleft())
            except Exception as e:
                self.failed += 1
                log.warning("analytics call failed: %s", type(e).__name__)

    def drain(self, timeout_s: float) -> None:
        if self.refs:
            self._ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout_s)
        self.reap()

    def stats(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "stalled": self.stalled, "inflight": len(self.refs)}


class FeatureEngine:
    KINDS = frozenset({"tick", "book"})

    def __init__(self, symbol: str, cfg: FeaturesConfig, tick_size: float, publisher: tuple[str, str] | None = None,
                 valkey_url: str | None = None, password_env: str = "VALKEY_PASSWORD"):
        import ray  # the engine calls other actors; SymbolAnalytics is plain Python

        self._ray = ray
        self.symbol = symbol
        self.cfg = cfg
        self.incarnation = uuid.uuid4().hex
        self.analytics = self._new_analytics(tick_size)
        self.gate = SeqGate()
        self.publisher_name = publisher  # (name, namespace) of the AnalyticsPublisher, or None
        self._publisher = None
        self._publisher_out = Outbox(ray, cfg.max_inflight)
        self.publisher_errors = 0
        self.downstream: dict[str, tuple] = {}  # name -> (handle, Outbox)
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
            last_ns = store.last_event_ns(self.symbol)
            if last_ns is None:
                return
            since = last_ns - int(self.cfg.restore_minutes * NS_PER_MIN)
            ticks = store.since(self.symbol, "tick", since)
            books = store.since(self.symbol, "book", since)
        except Exception as e:
            self.restore_error = f"{type(e).__name__}: {e}"
            log.error("FeatureEngine %s starts cold, Valkey unavailable: %s", self.symbol, self.restore_error)
            return
        events = list(heapq.merge(ticks, books, key=lambda e: e.seq))
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
        if self.publisher_name is not None:
            self._publish(out if self.cfg.publish_vectors else [m for m in out if m.KIND != "features"])
        if self.flow_writer is not None:
            states = [m for m in out if type(m) is FlowState]
            if states:
                self.flow_writer.write(states)
        for name, (handle, box) in self.downstream.items():
            box.send(handle.on_analytics, out)

    def _publish(self, out: list) -> None:
        if not out:
            return
        try:
            if self._publisher is None:
                self._publisher = self._ray.get_actor(*self.publisher_name)
            self._publisher_out.send(self._publisher.publish, out)
        except Exception as e:  # publisher gone: look it up again next time (the supervisor recreates it)
            self._publisher = None
            self.publisher_errors += 1
            log.warning("FeatureEngine %s: publisher unavailable: %s", self.symbol, type(e).__name__)

    def set_downstream(self, handles: dict) -> None:
        """Receivers of every analytics message (``on_analytics(list)``), by name."""
        self.downstream = {n: (h, Outbox(self._ray, self.cfg.max_inflight)) for n, h in handles.items()}

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
            "publisher": {**self._publisher_out.stats(), "errors": self.publisher_errors},
            "downstream": {n: box.stats() for n, (_h, box) in self.downstream.items()},
            "flow_store": self.flow_writer.stats() if self.flow_writer is not None else None,
        }

    def close(self, timeout_s: float = 10.0) -> dict:
        """Wait for outstanding calls and flush the flow states to Valkey."""
        self._publisher_out.drain(timeout_s)
        for _h, box in self.downstream.values():
            box.drain(timeout_s)
        if self.flow_writer is not None:
            self.flow_writer.close(timeout_s)
        return self.stats()
