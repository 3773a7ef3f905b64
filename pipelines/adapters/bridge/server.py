"""BridgeServer: polls a producer, stamps per-stream seqs, publishes batches, answers commands.

One thread runs :meth:`BridgeServer.run`. Each turn it polls the producer (never
blocking), appends the events to per-stream pending lists, publishes them as one
batch per stream once ``batch_max_events`` are pending or the oldest has waited
``batch_max_ms``, sends a heartbeat every ``heartbeat_s``, and answers whatever
commands wait on the REP socket. The REP socket is checked with a zero (busy)
or short (idle) ``zmq.Poller`` timeout, so commands never hold up publishing for
longer than one answer takes; resync answers are capped at ``resync_max_events``.

Every published batch also goes into a bounded per-stream ring (whole batches,
at least ``ring_events`` events per stream), which serves ``resync``.

Slow subscribers: PUB never blocks. Once a subscriber's queue holds ``sndhwm``
batches libzmq drops further batches *for that subscriber only*; it sees the gap
in the seqs and asks for a resync, which the ring serves while the missing
events are still in it ("gone" after that).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from typing import Any, Callable

import orjson
import zmq

from pipelines.adapters.bridge import protocol as P
from pipelines.model.clock import NS_PER_S
from pipelines.model.settings import SYMBOL_RE
from pipelines.model.messages import Event

log = logging.getLogger(__name__)

DEFAULT_PUB_ADDR = f"tcp://127.0.0.1:{P.DEFAULT_PUB_PORT}"
DEFAULT_REP_ADDR = f"tcp://127.0.0.1:{P.DEFAULT_REP_PORT}"


class _Ring:
    """One stream's recently published batches, at least ``keep`` events.

    Batches are kept as the encoded payloads that were published: bytes are not
    tracked by Python's garbage collector, whereas 100k decoded rows (half a
    million small objects) made every full collection stall the feed for tens
    of milliseconds. A resync decodes only the batches it needs.
    """

    __slots__ = ("batches", "events", "keep")

    def __init__(self, keep: int):
        self.batches: deque[tuple[int, int, bytes]] = deque()  # (first_seq, n_events, batch payload)
        self.events = 0
        self.keep = keep

    def add(self, first_seq: int, n: int, payload: bytes) -> None:
        self.batches.append((first_seq, n, payload))
        self.events += n
        while self.batches and self.events - self.batches[0][1] >= self.keep:
            self.events -= self.batches.popleft()[1]

    @property
    def first_seq(self) -> int | None:
        return self.batches[0][0] if self.batches else None

    def slice(self, from_seq: int, to_seq: int, limit: int) -> tuple[int, list]:
        """(first seq of the rows, rows) for ``[from_seq, to_seq]``, at most ``limit`` rows."""
        out: list = []
        start = None
        for first, n, payload in self.batches:
            last = first + n - 1
            if last < from_seq:
                continue
            if first > to_seq or len(out) >= limit:
                break
            rows = orjson.loads(payload)[5]
            lo = max(from_seq, first) - first
            hi = min(to_seq, last) - first + 1
            if start is None:
                start = first + lo
            out.extend(rows[lo:hi][: limit - len(out)])
        return (start if start is not None else from_seq), out


class BridgeServer:
    """Publishes a producer's events over ZeroMQ with per-stream seqs and heartbeats.

    ``producer`` is a FeedSource (``poll``, ``exhausted``, ``close``, ``symbols``);
    ``subscribe``/``unsubscribe``/``stats`` are used when it has them (ProfitSession).
    ``resolve`` maps a subscribe argument to the stream name (e.g. WDOFUT -> WDOZ26);
    identity by default.

    ``drop_filter`` is a **test-only** hook: called once per batch with
    ``(stream, first_seq, n_events)``; when it returns True the batch is stamped
    and kept in the ring but not published, as if the network had lost it.
    """

    def __init__(self, producer: Any, pub_addr: str = DEFAULT_PUB_ADDR, rep_addr: str = DEFAULT_REP_ADDR, *,
                 heartbeat_s: float = 1.0, ring_events: int = 100_000, batch_max_events: int = 250,
                 batch_max_ms: float = 2.0, resync_max_events: int = 20_000, sndhwm: int = 10_000,
                 resolve: Callable[[str], str] | None = None,
                 drop_filter: Callable[[str, int, int], bool] | None = None):
        if heartbeat_s <= 0 or ring_events < 1 or batch_max_events < 1 or batch_max_ms < 0 or resync_max_events < 1:
            raise ValueError("heartbeat_s, ring_events, batch_max_events, resync_max_events must be positive")
        self.producer = producer
        self.heartbeat_s = heartbeat_s
        self.ring_events = ring_events
        self.batch_max_events = batch_max_events
        self.batch_max_ns = int(batch_max_ms * 1e6)
        self.resync_max_events = resync_max_events
        self._resolve = resolve or (lambda s: s)
        self._drop = drop_filter
        self.incarnation = f"{os.getpid():x}-{secrets.token_hex(4)}"

        self.last_seq: dict[str, int] = {}
        self._rings: dict[str, _Ring] = {}
        for s in getattr(producer, "symbols", ()):
            self._add_stream(s)
        self._pending: dict[str, list[Event]] = {}
        self._pending_n = 0
        self._pending_since = 0

        self.events_published = 0
        self.batches_published = 0
        self.batches_dropped_by_test = 0
        self.heartbeats = 0
        self.commands = 0
        self.bad_commands = 0
        self.resyncs_served = 0
        self.resync_events_served = 0
        self.resyncs_gone = 0
        self.unknown_stream_events = 0  # events for a symbol nobody subscribed (published anyway)
        self._exhausted = False

        self._ctx = zmq.Context.instance()
        self._pub = self._ctx.socket(zmq.PUB)
        self._rep = self._ctx.socket(zmq.REP)
        try:
            self._pub.setsockopt(zmq.SNDHWM, sndhwm)
            self._pub.setsockopt(zmq.LINGER, 0)
            self._rep.setsockopt(zmq.LINGER, 0)
            self._pub.bind(pub_addr)
            self._rep.bind(rep_addr)
        except zmq.ZMQError as e:
            self.close()
            raise OSError(f"bridge cannot bind {pub_addr} / {rep_addr}: {e}") from None
        self.pub_endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.rep_endpoint = self._rep.getsockopt_string(zmq.LAST_ENDPOINT)
        self._poller = zmq.Poller()
        self._poller.register(self._rep, zmq.POLLIN)

    def _add_stream(self, stream: str) -> None:
        if stream not in self._rings:
            self._rings[stream] = _Ring(self.ring_events)
            self.last_seq.setdefault(stream, 0)

    # -- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set. Can be called again after it returns (sockets stay bound)."""
        producer = self.producer
        poll = producer.poll
        max_events = self.batch_max_events
        pending = self._pending
        next_hb = time.monotonic()
        while not stop.is_set():
            events = poll(max_events) if not self._exhausted else []
            if events:
                if not self._pending_n:
                    self._pending_since = time.monotonic_ns()
                self._pending_n += len(events)
                first_sym = events[0].symbol
                if events[-1].symbol == first_sym and all(e.symbol == first_sym for e in events):
                    pending.setdefault(first_sym, []).extend(events)
                else:
                    for e in events:
                        lst = pending.get(e.symbol)
                        if lst is None:
                            lst = pending[e.symbol] = []
                        lst.append(e)
            elif not self._exhausted and producer.exhausted:
                self._exhausted = True
            now_ns = time.monotonic_ns()
            if self._pending_n and (self._pending_n >= max_events or now_ns - self._pending_since >= self.batch_max_ns
                                    or self._exhausted):
                self._flush()
            now = now_ns / NS_PER_S
            if now >= next_hb:
                self._heartbeat()
                next_hb = now + self.heartbeat_s
            # Busy: just look at the REP socket. Idle: wait on it briefly (this is the idle sleep).
            if events:
                timeout_ms = 0
            elif self._exhausted:
                timeout_ms = max(1, int((next_hb - now) * 1000))
            else:
                timeout_ms = 1
            if self._poller.poll(timeout_ms):
                self._serve_commands()
        if self._pending_n:
            self._flush()

    def _flush(self) -> None:
        pending, drop = self._pending, self._drop
        pub_send = self._pub.send_multipart
        for stream, events in pending.items():
            if not events:
                continue
            if stream not in self._rings:
                self._add_stream(stream)
                self.unknown_stream_events += len(events)
            first = self.last_seq[stream] + 1
            n = len(events)
            frames = P.encode_batch(self.incarnation, stream, first, P.encode_rows(events))
            self.last_seq[stream] = first + n - 1
            self._rings[stream].add(first, n, frames[1])
            if drop is not None and drop(stream, first, n):
                self.batches_dropped_by_test += 1
                continue
            pub_send(frames, flags=zmq.NOBLOCK)
            self.events_published += n
            self.batches_published += 1
        pending.clear()
        self._pending_n = 0

    def _heartbeat(self) -> None:
        self.heartbeats += 1
        frames = P.encode_heartbeat(self.incarnation, time.time_ns(), self.last_seq,
                                    self._exhausted and not self._pending_n, self._short_stats())
        self._pub.send_multipart(frames, flags=zmq.NOBLOCK)

    # -- commands ----------------------------------------------------------------------

    def _serve_commands(self, max_commands: int = 16) -> None:
        """Answer up to ``max_commands`` waiting requests; every request gets exactly one reply."""
        for _ in range(max_commands):
            try:
                frames = self._rep.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self.commands += 1
            self._rep.send(self._answer(frames))

    def _answer(self, frames: list[bytes]) -> bytes:
        try:
            if len(frames) != 1:
                raise P.ProtocolError(f"expected one frame, got {len(frames)}")
            cmd, args = P.decode_request(frames[0])
            return getattr(self, f"_cmd_{cmd}")(**args)
        except P.ProtocolError as e:
            return self._bad(str(e))
        except TypeError as e:  # unexpected argument names
            return self._bad(f"bad arguments: {e}")
        except Exception as e:  # a producer failure answering a command must not stop the feed
            log.warning("bridge command failed: %s: %s", type(e).__name__, e)
            return self._bad(f"{type(e).__name__}: {e}")

    def _bad(self, problem: str) -> bytes:
        self.bad_commands += 1
        log.warning("bridge: bad command: %s", problem)
        return P.error_reply(problem)

    def _cmd_subscribe(self, symbol: str) -> bytes:
        if not SYMBOL_RE.match(symbol):
            raise P.ProtocolError(f"subscribe: bad symbol {symbol[:20]!r} (expected 2-12 of A-Z 0-9)")
        stream = self._resolve(symbol)
        if stream in self._rings:
            return P.encode_reply(True, symbol=symbol, stream=stream, last_seq=self.last_seq[stream])
        sub = getattr(self.producer, "subscribe", None)
        if sub is None:
            raise P.ProtocolError(f"subscribe: this producer cannot add symbols; it streams {sorted(self._rings)}")
        sub(stream)
        self._add_stream(stream)
        return P.encode_reply(True, symbol=symbol, stream=stream, last_seq=self.last_seq[stream])

    def _cmd_unsubscribe(self, symbol: str) -> bytes:
        stream = self._resolve(symbol) if SYMBOL_RE.match(symbol) else symbol
        if stream not in self._rings:
            raise P.ProtocolError(f"unsubscribe: not streaming {symbol[:20]!r}")
        unsub = getattr(self.producer, "unsubscribe", None)
        if unsub is None:
            raise P.ProtocolError("unsubscribe: this producer cannot drop symbols")
        unsub(stream)  # the ring and last seq stay: a resubscribe continues the same stream
        return P.encode_reply(True, symbol=symbol, stream=stream)

    def _cmd_resync(self, stream: str, from_seq: int, to_seq: int | None = None, max_events: int | None = None) -> bytes:
        ring = self._rings.get(stream)
        if ring is None:
            raise P.ProtocolError(f"resync: unknown stream {stream[:20]!r}")
        if from_seq < 1 or (to_seq is not None and (type(to_seq) is not int or to_seq < from_seq)):
            raise P.ProtocolError(f"resync: bad range from_seq={from_seq!r} to_seq={to_seq!r}")
        limit = self.resync_max_events
        if max_events is not None:
            if type(max_events) is not int or max_events < 1:
                raise P.ProtocolError(f"resync: bad max_events {max_events!r}")
            limit = min(limit, max_events)
        last = self.last_seq[stream]
        to = last if to_seq is None else min(to_seq, last)
        first_available = ring.first_seq if ring.first_seq is not None else last + 1
        gone = from_seq < first_available
        start, rows = ring.slice(max(from_seq, first_available), to, limit)
        self.resyncs_served += 1
        self.resync_events_served += len(rows)
        if gone:
            self.resyncs_gone += 1
        return P.encode_reply(True, incarnation=self.incarnation, stream=stream, from_seq=from_seq, first_seq=start,
                              rows=rows, gone=gone, first_available=first_available, last_seq=last)

    def _cmd_status(self) -> bytes:
        rings = {s: {"last_seq": self.last_seq[s], "first_available": r.first_seq, "ring_events": r.events}
                 for s, r in self._rings.items()}
        return P.encode_reply(True, incarnation=self.incarnation, streams=rings, stats=self.stats())

    # -- stats / close -----------------------------------------------------------------

    def _short_stats(self) -> dict:
        s = {"published": self.events_published, "batches": self.batches_published,
             "commands": self.commands, "bad_commands": self.bad_commands, "resyncs": self.resyncs_served}
        pstats = getattr(self.producer, "stats", None)
        if pstats is not None:
            try:
                s["producer"] = pstats()
            except Exception as e:
                s["producer"] = {"error": f"{type(e).__name__}: {e}"}
        return s

    def stats(self) -> dict:
        return {
            "incarnation": self.incarnation,
            "pub": self.pub_endpoint,
            "rep": self.rep_endpoint,
            "events_published": self.events_published,
            "batches_published": self.batches_published,
            "batches_dropped_by_test": self.batches_dropped_by_test,
            "heartbeats": self.heartbeats,
            "commands": self.commands,
            "bad_commands": self.bad_commands,
            "resyncs_served": self.resyncs_served,
            "resync_events_served": self.resync_events_served,
            "resyncs_gone": self.resyncs_gone,
            "unknown_stream_events": self.unknown_stream_events,
            "exhausted": self._exhausted,
            "last_seq": dict(self.last_seq),
        }

    def close(self) -> None:
        """Close the sockets (not the producer: its owner closes it). Idempotent."""
        for name in ("_pub", "_rep"):
            sock = getattr(self, name, None)
            if sock is not None and not sock.closed:
                sock.close(linger=0)
