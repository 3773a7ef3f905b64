"""FeedActor: the entrance of the pipeline.

It polls a feed source, validates each event (bad ones are counted, never
raised), stamps per-symbol sequence numbers, groups events into micro-batches
(``batch_max_events`` or ``batch_max_ms``, whichever first) and sends each
destination the part it wants, fire-and-forget, with a bounded number of calls
in flight. Replies are reaped without blocking; a destination that restarted
asks for a resync and gets the missed events from the resend window.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, NamedTuple

from actors.config import ActorConfig
from actors.peers import Runtime, node_id, reconstructed
from pipelines.adapters.base import FeedSource
from pipelines.adapters.config import FeedConfig
from pipelines.model.clock import NS_PER_MS, NS_PER_S
from pipelines.model.messages import Event
from pipelines.data.sequencing import BatchReply, ResendWindow
from pipelines.data.validation import Validator

log = logging.getLogger("quantumtrader.feed")

_new = tuple.__new__
STALL_TIMEOUT_S = 2.0  # a destination slower than this on its oldest call stops being waited for
REAP_EVERY_NS = 5_000_000  # when idle, look at replies this often (each look is a ray.wait)


class Route(NamedTuple):
    """One destination of the feed: which events it wants and how to reach it."""

    name: str
    handle: Any  # a Ray actor handle (or anything with .on_batch.remote / .position.remote)
    kinds: frozenset[str]
    symbols: frozenset[str] | None  # None = every symbol
    bulk: bool = False  # no one waits on it (buffers, storage): batched every feed.bulk_batch_ms
    # False: the feed never waits for it (analytics). With its calls all in flight it is
    # skipped, and caught up from the resend window once it answers again.
    backpressure: bool = True
    storage: bool = False  # the route that persists events (the Valkey writer): what it accepted is stored

    def wants(self, ev: Event) -> bool:
        return self.wants_key(ev.KIND, ev.symbol)

    def wants_key(self, kind: str, symbol: str) -> bool:
        return kind in self.kinds and (self.symbols is None or symbol in self.symbols)


def feed_validator(f: FeedConfig, symbols, live: bool) -> Validator:
    """The feed's checks (the backtest applies the same); ``live``: events stamped too far ahead
    of their receipt are rejected, which only a live source's receive clock can tell."""
    return Validator(int(f.time_tolerance_ms * NS_PER_MS), symbols=symbols,
                     max_ahead_ns=int(f.max_ahead_s * NS_PER_S) if live else None,
                     max_forward_gap_ns=int(f.max_forward_gap_s * NS_PER_S), confirm_events=f.confirm_events)


class FeedActor:
    """``open_source(resume_after_ns)`` makes the source once the resume points are known (a
    restarted simulator continues its clock after the last stored event); ``runtime`` is how
    destinations are called (default: Ray)."""

    def __init__(self, cfg: ActorConfig[FeedConfig], routes: list[Route], *,
                 open_source: Callable[[dict[str, int]], FeedSource], autostart: bool = True,
                 runtime: Runtime | None = None):
        if runtime is None:
            import ray as runtime  # the feed talks to other actors; everything else here is plain Python

        self._ray = runtime
        self.cfg = cfg
        self.symbols = list(cfg.symbols)
        self.incarnation = uuid.uuid4().hex
        f = cfg.domain
        live = f.source in ("profitdll", "bridge")  # only there is ts_recv the wall clock of the event's arrival
        self.validator = feed_validator(f, cfg.symbols, live)
        self.window = ResendWindow(f.resend_window_events)
        self.routes: dict[str, Route] = {}
        self.sent_upto: dict[str, dict[str, int]] = {}
        self.inflight: dict[str, deque] = {}
        self.incarnations: dict[str, str] = {}
        self.route_errors: dict[str, int] = {}
        self.resyncs: dict[str, int] = {}
        self.behind: dict[str, int] = {}  # routes without backpressure skipped while full: batches skipped
        self.catch_ups: dict[str, int] = {}
        self._failing: dict[str, int] = {}  # routes in an outage: failed batches so far
        self._resynced: set = set()
        self.batches = 0
        self.events_out = 0
        self.error: str | None = None
        self.unpersisted: dict[str, int] = {}
        self.finished = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The loop thread and actor calls (set_routes, stats) share the route tables.
        self._lock = threading.RLock()

        self._start_positions: dict[str, dict[str, int]] = {}
        valkey_url = cfg.valkey.url
        seq, last_ns = self._resume_points(valkey_url, routes)
        self.seq = seq
        self.set_routes(routes)
        self._refill_from_storage(valkey_url)
        self.source = open_source(last_ns)
        if autostart:
            self.start()

    # -- set-up -----------------------------------------------------------------

    def _resume_points(self, valkey_url, routes) -> tuple[dict[str, int], dict[str, int]]:
        """Where to continue after a restart: the highest seq any destination or
        Valkey holds (so seq numbers are never reused), and Valkey's last event time."""
        seq = {s: 0 for s in self.symbols}
        last_ns: dict[str, int] = {}
        if valkey_url:
            try:
                from actors.buffers import open_store

                store = open_store(self.cfg.valkey)
                for s in self.symbols:
                    seq[s] = max(seq[s], store.last_seq(s))
                    t = store.last_event_ns(s)
                    if t is not None:
                        last_ns[s] = t
            except Exception as e:
                log.error("feed could not read resume points from Valkey: %s", e)
        stored = dict(seq)
        storage = {r.name for r in routes if r.storage}
        refs = {r.name: r.handle.position.remote() for r in routes}
        for name, ref in refs.items():
            try:
                pos = self._ray.get(ref, timeout=10)
            except Exception as e:
                log.warning("feed: no position from %s: %s", name, e)
                continue
            self._start_positions[name] = pos
            for s, p in pos.items():
                if s in seq:
                    seq[s] = max(seq[s], p)
                    if name in storage:  # accepted there = on its way to storage (write-behind)
                        stored[s] = max(stored[s], p)
        # Events a destination saw that storage never got: the previous feed died with them in
        # flight. Seqs are never reused, so they stay a hole in the streams: counted, said once.
        self.unpersisted = {s: seq[s] - stored[s] for s in seq if valkey_url and seq[s] > stored[s]}
        if self.unpersisted:
            log.error("feed: the previous feed died before storing %s event(s) that others had seen",
                      ", ".join(f"{n} of {s}" for s, n in self.unpersisted.items()))
        return seq, last_ns

    def _refill_from_storage(self, valkey_url: str | None) -> None:
        """After a restart: a destination behind what storage holds (the previous feed died
        with its events in flight, or skipped it while it lagged) gets them from Valkey.
        They go into the resend window and the destination is caught up from there first."""
        # Only a feed Ray restarted mid-run: at a first start a destination at 0 is a new one (a new
        # run's recorder) and must not get the previous run's events; one at 0 after a restart has
        # nothing of this history to continue from either.
        if not valkey_url or not reconstructed(self._ray):
            return
        storage = [name for name, r in self.routes.items() if r.storage]
        stored_upto = {s: max((self._start_positions.get(n, {}).get(s, 0) for n in storage), default=0)
                       for s in self.symbols}
        behind = {name: {s: p for s, p in pos.items() if s in stored_upto and 0 < p < stored_upto[s]}
                  for name, pos in self._start_positions.items() if name in self.routes}
        behind = {name: syms for name, syms in behind.items() if syms}
        if not behind:
            return
        from actors.buffers import open_store

        try:
            store = open_store(self.cfg.valkey)
            for s in self.symbols:
                lowest = min((syms[s] for syms in behind.values() if s in syms), default=None)
                if lowest is not None:
                    events, complete = store.after_seq(s, lowest, self.window.capacity)
                    if not complete:
                        self.window.unrecoverable += 1
                    self.window.extend(events)
        except Exception as e:
            log.error("feed: could not refill behind destinations from Valkey: %s", e)
            return
        for name in behind:
            self.behind[name] = 0
        log.warning("feed: %s behind storage after the restart; catching up from Valkey", ", ".join(sorted(behind)))

    def set_routes(self, routes: list[Route]) -> None:
        """Install destinations. A route seen for the first time starts at its own position."""
        new = {r.name: r for r in routes}
        with self._lock:
            self._install(new)

    def _install(self, new: dict[str, Route]) -> None:
        for name, r in new.items():
            old = self.routes.get(name)
            if old is None or old.handle != r.handle:
                try:
                    pos = self._ray.get(r.handle.position.remote(), timeout=10)
                except Exception:
                    pos = {}
                self.sent_upto[name] = {s: pos.get(s, 0) for s in self.symbols}
                self.inflight[name] = deque()
                self.incarnations.pop(name, None)
        self.routes = new

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="feed-loop", daemon=True)
            self._thread.start()

    # -- the loop ---------------------------------------------------------------

    def run(self) -> None:
        """The loop, in the calling thread, until the source is exhausted or ``stop()`` (``start()``
        runs it in a thread of its own)."""
        # The feed allocates a tuple per event and little that lives long: collect the young
        # generation less often, and leave the start-up objects (modules, config) out of it.
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        fcfg = self.cfg.domain
        max_events = fcfg.batch_max_events
        max_wait_ns = int(fcfg.batch_max_ms * NS_PER_MS)
        pending: list[Event] = []
        first_at = 0
        next_reap = 0
        # Latency-critical routes get every micro-batch; bulk routes the same events
        # grouped over bulk_batch_ms: fewer calls, the costliest part of a batch.
        bulk: list[Event] = []
        bulk_since = time.monotonic_ns()
        bulk_wait_ns = int(fcfg.bulk_batch_ms * NS_PER_MS)
        max_bulk = max(max_events, fcfg.bulk_batch_max_events)
        seq = self.seq
        wait = getattr(self.source, "wait", None) or time.sleep
        try:
            while not self._stop.is_set():
                events = self.source.poll(max_events - len(pending))
                if events:
                    for ev in self.validator.filter(events):
                        n = seq[ev.symbol] = seq.get(ev.symbol, 0) + 1
                        # tuple.__new__ is half the cost of _replace; field 3 is seq.
                        pending.append(_new(type(ev), (*ev[:3], n, *ev[4:])))
                    if pending and not first_at:
                        first_at = time.monotonic_ns()
                now = time.monotonic_ns()
                if pending and (len(pending) >= max_events or now - first_at >= max_wait_ns):
                    with self._lock:
                        self._dispatch(pending, bulk=False)
                        bulk.extend(pending)
                        if len(bulk) >= max_bulk or now - bulk_since >= bulk_wait_ns:
                            self._dispatch(bulk, bulk=True)
                            bulk, bulk_since = [], now
                        self._reap()
                    pending, first_at = [], 0
                elif now >= next_reap:  # replies also matter when idle (resync requests)
                    with self._lock:
                        if bulk and now - bulk_since >= bulk_wait_ns:
                            # A quiet feed (a live market pauses): the bulk routes get their last
                            # events now, not whenever the next event happens to arrive.
                            self._dispatch(bulk, bulk=True)
                            bulk, bulk_since = [], now
                        self._reap()
                        self._catch_up_all()  # a quiet feed still brings a skipped route up to date
                    next_reap = now + REAP_EVERY_NS
                if self.source.exhausted and not pending:
                    self.validator.flush()  # a jump still held at the end is rejected, and counted
                    break
                if not events:
                    # Until the batch is due, or (nothing pending) the next look at the replies;
                    # the source wakes us earlier when events come.
                    wait_ns = max_wait_ns - (now - first_at) if pending else REAP_EVERY_NS
                    wait(min(max(wait_ns, 200_000), REAP_EVERY_NS) / NS_PER_S)
            self._send_last(pending, bulk)
        except Exception as e:  # keep the actor alive and report; the supervisor sees it in ping()
            self.error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            log.exception("feed loop failed")
            # What was read and validated still reaches every destination before the loop ends.
            try:
                self._send_last(pending, bulk)
            except Exception:
                log.exception("feed: flushing after the failure failed too")
        finally:
            self.finished = True

    def _send_last(self, pending: list[Event], bulk: list[Event]) -> None:
        """At the end: what is pending to everyone, then wait for the acknowledgements."""
        with self._lock:
            if pending:
                self._dispatch(pending, bulk=False)
            if bulk or pending:
                self._dispatch(bulk + pending, bulk=True)
            self._drain(timeout_s=10.0)
            self._catch_up_all()
            self._drain(timeout_s=10.0)

    def _dispatch(self, batch: list[Event], bulk: bool) -> None:
        """Send ``batch`` to the fast routes (``bulk=False``: new events, counted and
        windowed here) or to the bulk routes (events already counted)."""
        if not batch:
            return
        if not bulk:
            self.window.extend(batch)
            self.batches += 1
            self.events_out += len(batch)
        groups = {(e.KIND, e.symbol) for e in batch}
        # Routes that want the same part of the batch share one serialization:
        # pickling once per distinct part instead of once per route halves the
        # feed's cost (Ray then copies the bytes as they are).
        parts: dict[tuple, tuple[bytes, list[Event]]] = {}
        for route in self.routes.values():
            if route.bulk is not bulk:
                continue
            keys = tuple(sorted(k for k in groups if route.wants_key(*k)))
            if not keys:
                continue
            if route.name in self.behind:
                if self._catch_up(route):
                    continue
                self.behind[route.name] += 1
                continue
            part = parts.get(keys)
            if part is None:
                evs = batch if len(keys) == len(groups) else [e for e in batch if (e.KIND, e.symbol) in keys]
                part = parts[keys] = (pickle.dumps(evs, protocol=5), evs)
            self._send(route, *part)

    def _send(self, route: Route, payload: bytes | None, events: list[Event], prev: dict[str, int | None] | None = None) -> None:
        """One on_batch call. ``payload`` is ``events`` pickled (None: pickle here)."""
        if payload is None:
            payload = pickle.dumps(events, protocol=5)
        q = self.inflight[route.name]
        if len(q) >= self.cfg.domain.max_inflight_batches and not route.backpressure:
            self._reap()
            if len(q) >= self.cfg.domain.max_inflight_batches:  # still full: skip it, never wait for it
                self.behind[route.name] = self.behind.get(route.name, 0) + 1
                return
        if len(q) >= self.cfg.domain.max_inflight_batches:
            ready, _ = self._ray.wait([q[0]], timeout=STALL_TIMEOUT_S)
            if not ready:  # hung or restarting: stop tracking it; the gap protocol covers loss
                self.route_errors[route.name] = self.route_errors.get(route.name, 0) + 1
                q.popleft()
            self._reap()
        upto = self.sent_upto[route.name]
        if prev is None:
            prev = {s: upto.get(s, 0) for s in {e.symbol for e in events}}
        for e in events:
            if e.seq > upto.get(e.symbol, 0):
                upto[e.symbol] = e.seq
        q.append(route.handle.on_batch.remote(payload, prev))

    def _catch_up(self, route: Route) -> bool:
        """A skipped route with room again gets everything it missed, from the resend
        window, in one call (True); False while its calls are still all in flight."""
        q = self.inflight[route.name]
        if len(q) >= self.cfg.domain.max_inflight_batches:
            self._reap()
            if len(q) >= self.cfg.domain.max_inflight_batches:
                return False
        upto = self.sent_upto[route.name]
        events, prev = [], {}
        for sym in sorted(route.symbols if route.symbols is not None else self.symbols):
            missed, complete = self.window.since(sym, upto.get(sym, 0), route.wants)
            if not complete:
                self.window.unrecoverable += 1
                log.error("feed: %s fell behind %s beyond the resend window", route.name, sym)
            if missed:
                events.extend(missed)
                prev[sym] = upto.get(sym, 0) if complete else None
        del self.behind[route.name]
        self.catch_ups[route.name] = self.catch_ups.get(route.name, 0) + 1
        if events:
            self._send(route, None, events, prev=prev)
        return True

    def _catch_up_all(self) -> None:
        for name in list(self.behind):
            route = self.routes.get(name)
            if route is None:
                del self.behind[name]
            else:
                self._catch_up(route)

    def _reap(self) -> None:
        """Handle every reply that has arrived, without blocking: one ray.wait over all
        calls in flight (a wait per route cost more than the sends themselves)."""
        refs = [r for q in self.inflight.values() for r in q]
        if not refs:
            return
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        if not ready:
            return
        done = set(ready)
        for name, q in self.inflight.items():
            while q and q[0] in done:  # in call order; an actor answers its calls in order
                self._collect(name, q.popleft())

    def _collect(self, name: str, ref) -> None:
        try:
            reply: BatchReply = self._ray.get(ref)
        except Exception as e:  # actor died or restarting: that batch is lost for it
            self.route_errors[name] = self.route_errors.get(name, 0) + 1
            if name not in self._failing:  # one line per outage, not one per batch in flight
                log.warning("feed: batches to %s failing (%s); it will ask for what it missed", name, type(e).__name__)
            self._failing[name] = self._failing.get(name, 0) + 1
            return
        if name in self._failing:
            log.warning("feed: %s answering again after %d failed batches", name, self._failing.pop(name))
        self._on_reply(name, BatchReply(*reply))

    def _on_reply(self, name: str, reply: BatchReply) -> None:
        old = self.incarnations.get(name)
        if old is not None and old != reply.incarnation:
            log.warning("feed: %s restarted (incarnation %s -> %s)", name, old[:8], reply.incarnation[:8])
        self.incarnations[name] = reply.incarnation
        if not reply.resync_from:
            return
        route = self.routes.get(name)
        if route is None:
            return
        for sym, pos in reply.resync_from.items():
            key = (name, reply.incarnation, sym, pos)
            if key in self._resynced:  # refusals of batches already in flight: one resend covers them
                continue
            self._resynced.add(key)
            events, complete = self.window.since(sym, pos, route.wants)
            if not complete:
                self.window.unrecoverable += 1
                log.error("feed: %s missed events of %s after seq %d older than the resend window", name, sym, pos)
            self.resyncs[name] = self.resyncs.get(name, 0) + 1
            if events:
                self._send(route, None, events, prev={sym: pos if complete else None})

    def _drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(self.inflight.values()) and time.monotonic() < deadline:
            refs = [q[0] for q in self.inflight.values() if q]
            self._ray.wait(refs, num_returns=len(refs), timeout=max(0.0, deadline - time.monotonic()))
            self._reap()

    # -- control ----------------------------------------------------------------

    def stop(self, timeout_s: float = 15.0) -> dict:
        """Stop polling, send what is pending, wait for destinations to acknowledge."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.source.close()
        return self.stats()

    def ping(self) -> dict:
        return {
            "incarnation": self.incarnation,
            "pid": os.getpid(),
            "node": node_id(self._ray),  # placement checks (profitdll node)
            "finished": self.finished,
            "error": self.error,
            "events_out": self.events_out,
        }

    def position(self) -> dict[str, int]:
        return dict(self.seq)

    def stats(self) -> dict:
        with self._lock:
            return self._stats()

    def _stats(self) -> dict:
        return {
            "events_out": self.events_out,
            "batches": self.batches,
            "seq": dict(self.seq),
            "validation": self.validator.stats(),
            "route_errors": dict(self.route_errors),
            "resyncs": dict(self.resyncs),
            "behind": dict(self.behind),
            "catch_ups": dict(self.catch_ups),
            "unrecoverable_gaps": self.window.unrecoverable,
            "unpersisted_on_restart": dict(self.unpersisted),
            "inflight": {k: len(v) for k, v in self.inflight.items()},
            "finished": self.finished,
            "error": self.error,
            # bridge / ProfitDLL host: connection, feed lag, gaps, host restarts
            "source": self.source.stats() if hasattr(self.source, "stats") else None,
        }
