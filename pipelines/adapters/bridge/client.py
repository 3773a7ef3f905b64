"""BridgeClient: a FeedSource that reads a feed bridge over ZeroMQ, in order, with gaps repaired.

Per stream (symbol) the client delivers events exactly once and in bridge-seq
order. A batch that starts beyond the next expected seq opens a *gap*: the batch
is held back, the gap is counted (``gaps``, ``missing_events``) and a ``resync``
for exactly the missing range goes to the bridge's REP socket. The reply's events
are delivered, then the held batches. When the bridge no longer has the range
("gone") or does not answer, the range is counted in ``lost_events`` and the
stream carries on. A heartbeat's last seq reveals a gap at the tail of a stream
(a lost final batch) the same way.

Nothing blocks: ``poll`` reads what is queued, and the REQ socket is driven
asynchronously (one request in flight; on a timeout the socket is replaced, since
a REQ socket whose reply never came cannot send again).

Liveness: no message for ``heartbeat_timeout_s`` -> ``connected`` False (counted
in ``heartbeat_losses``) and the sockets are recreated. A message carrying another
bridge *incarnation* means the bridge restarted: what was held is delivered,
what the old bridge announced but never delivered counts as lost, the symbols are
subscribed again and the new incarnation is read from its seq 1.

A slow reader: the SUB queue holds up to ``rcvhwm`` batches and the bridge's PUB
another ``sndhwm``; past that libzmq drops whole batches for this subscriber only.
The drops show up as gaps and are resynced from the bridge's ring (``ring_events``
per stream); a reader that falls further behind than the ring loses events, counted.
"""

from __future__ import annotations

import bisect
import gc
import logging
import time
from collections import deque
from typing import Any, Sequence

import zmq

from pipelines.adapters.bridge import protocol as P
from pipelines.model.messages import Event

log = logging.getLogger(__name__)


class _Stream:
    """Delivery state of one stream within the current bridge incarnation."""

    __slots__ = ("name", "next_seq", "start_seq", "held", "held_n", "known_last", "gap", "counted_upto", "catch_up_upto")

    def __init__(self, name: str):
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.next_seq: int | None = None  # next seq to deliver; None before the first message
        self.start_seq = 1  # where reading started in this incarnation
        self.held: list[tuple[int, list]] = []  # (first_seq, events) waiting behind a gap, sorted
        self.held_n = 0
        self.known_last = 0  # highest seq known to exist (batches, heartbeats)
        self.gap: tuple[int, int] | None = None  # range asked for by the outstanding resync
        self.counted_upto = 0  # highest seq already counted in missing_events
        self.catch_up_upto = 0  # seqs up to here predate our first message: fetched, not "missing"


class _Request:
    __slots__ = ("cmd", "args", "meta", "attempts", "deadline")

    def __init__(self, cmd: str, args: dict, meta: dict | None = None):
        self.cmd, self.args, self.meta = cmd, args, meta or {}
        self.attempts = 0
        self.deadline = 0.0


class BridgeClient:
    """FeedSource over a feed bridge's PUB (``pub_addr``) and REP (``rep_addr``) sockets.

    ``catch_up``: on the first bridge incarnation seen, fetch the stream from seq 1
    (what the bridge still has) instead of starting at the first message that
    arrives. A restarted bridge (new incarnation) is always read from seq 1.
    """

    def __init__(self, pub_addr: str, rep_addr: str, symbols: Sequence[str], *, heartbeat_timeout_s: float = 3.0,
                 request_timeout_s: float = 1.0, request_retries: int = 2, catch_up: bool = False,
                 max_held_events: int = 500_000, rcvhwm: int = 20_000, resync_max_events: int = 20_000):
        if not symbols:
            raise ValueError("BridgeClient needs at least one symbol")
        self.symbols = tuple(symbols)
        self.pub_addr, self.rep_addr = pub_addr, rep_addr
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.request_timeout_s = request_timeout_s
        self.request_retries = request_retries
        self.max_held_events = max_held_events
        self.rcvhwm = rcvhwm
        self.resync_max_events = resync_max_events
        self._catch_up = catch_up  # for the incarnation we meet first; later ones: always

        self._streams = {s: _Stream(s) for s in self.symbols}
        self._ready: list[Event] = []
        self.incarnation: str | None = None
        self.connected = False
        self._closed = False
        self._created = time.monotonic()
        self.last_message_at: float | None = None
        self._last_hb: float | None = None
        self._next_reconnect = 0.0
        self._hb_exhausted = False
        self._last_ts_recv: int | None = None
        self.bridge_stats: dict = {}
        self.history: list[dict] = []  # one entry per ended bridge incarnation
        self._delivered_in_incarnation = 0
        self._lost_before_incarnation = 0

        self.events_delivered = 0
        self.batches = 0
        self.heartbeats = 0
        self.gaps = 0
        self.missing_events = 0
        self.recovered_events = 0
        self.caught_up_events = 0
        self.lost_events = 0
        self.duplicates = 0
        self.resyncs_requested = 0
        self.resyncs_gone = 0
        self.request_timeouts = 0
        self.request_errors = 0
        self.heartbeat_losses = 0
        self.reconnects = 0
        self.incarnation_changes = 0
        self.bad_messages = 0
        self.version_errors = 0
        self.foreign_batches = 0  # batches of streams we do not read (should not reach us)
        self.last_error: str | None = None

        self._ctx = zmq.Context.instance()
        self._sub: zmq.Socket | None = None
        self._req: zmq.Socket | None = None
        self._queue: deque[_Request] = deque()
        self._inflight: _Request | None = None
        self._open_sub()
        self._open_req()
        self._unconfirmed: set[str] = set()  # subscribes not acknowledged yet (retried after a timeout)
        self._resubscribe_at = 0.0
        for s in self.symbols:
            self._subscribe_request(s)

    # -- sockets ---------------------------------------------------------------------

    def _open_sub(self) -> None:
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, self.rcvhwm)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, P.HEARTBEAT_TOPIC)
        for s in self._streams:
            sub.setsockopt(zmq.SUBSCRIBE, P.event_topic(s))
        sub.connect(self.pub_addr)
        self._sub = sub

    def _open_req(self) -> None:
        req = self._ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(self.rep_addr)
        self._req = req

    def _close_sockets(self) -> None:
        for sock in (self._sub, self._req):
            if sock is not None and not sock.closed:
                sock.close(linger=0)

    def _fresh_req(self) -> None:
        """A REQ socket whose reply never came cannot send again: replace it."""
        if self._req is not None:
            self._req.close(linger=0)
        self._open_req()

    def _reconnect(self) -> None:
        self.reconnects += 1
        if self._sub is not None:
            self._sub.close(linger=0)
        self._open_sub()
        self._fresh_req()
        if self._inflight is not None:  # ask again on the new socket
            self._send(self._inflight, time.monotonic())

    def retarget(self, pub_addr: str, rep_addr: str) -> None:
        """Read from other endpoints (a restarted bridge on new ports), keeping all stream state.
        Whatever the old sockets already received is processed first."""
        now = time.monotonic()
        while True:
            try:
                frames = self._sub.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            self._on_message(frames, now)
        self.pub_addr, self.rep_addr = pub_addr, rep_addr
        self._reconnect()

    # -- FeedSource --------------------------------------------------------------------

    def poll(self, max_events: int) -> list[Event]:
        """Up to ``max_events`` events ready now, in order per stream. Never blocks."""
        if self._closed or max_events <= 0:
            return []
        now = time.monotonic()
        self._service_requests(now)
        recv = self._sub.recv_multipart
        on_message = self._on_message
        # Decoding a batch allocates ~3 short-lived lists per event (orjson's rows), all alive
        # until the batch is decoded: a garbage collection started in the middle scans them and
        # promotes them to older generations, where they die dearly. Collections wait until the
        # batch is decoded instead (in the FeedActor at ~30k events/s this halved the time spent
        # collecting, from about a fifth of the feed loop).
        pause_gc = gc.isenabled()
        if pause_gc:
            gc.disable()
        try:
            while len(self._ready) < max_events:
                try:
                    frames = recv(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                on_message(frames, now)
        finally:
            if pause_gc:
                gc.enable()
        self._check_liveness(now)
        ready = self._ready
        if not ready:
            return []
        if len(ready) <= max_events:
            out, self._ready = ready, []
        else:
            out = ready[:max_events]
            del ready[:max_events]
        self.events_delivered += len(out)
        self._delivered_in_incarnation += len(out)
        self._last_ts_recv = out[-1].ts_recv
        return out

    def wait(self, timeout_s: float) -> None:
        """Block until the bridge sends something (or ``timeout_s``): a message wakes the
        caller at once, with the GIL released meanwhile."""
        if self._closed or self._ready or self._sub is None or timeout_s <= 0:
            return
        if timeout_s < 0.001:  # below ZeroMQ's millisecond resolution
            time.sleep(timeout_s)
        else:
            self._sub.poll(int(timeout_s * 1000))

    @property
    def exhausted(self) -> bool:
        """True once a finite producer behind the bridge is done and every event has been delivered."""
        if self._closed:
            return True
        if not self._hb_exhausted or self._ready:
            return False
        for st in self._streams.values():
            if st.held or st.gap is not None or st.next_seq is None or st.next_seq <= st.known_last:
                return False
        return True

    def subscribe(self, symbol: str) -> None:
        if symbol in self._streams:
            return
        self._streams[symbol] = _Stream(symbol)
        self.symbols = (*self.symbols, symbol)
        self._sub.setsockopt(zmq.SUBSCRIBE, P.event_topic(symbol))
        self._subscribe_request(symbol)

    def unsubscribe(self, symbol: str) -> None:
        if self._streams.pop(symbol, None) is None:
            return
        self.symbols = tuple(s for s in self.symbols if s != symbol)
        self._sub.setsockopt(zmq.UNSUBSCRIBE, P.event_topic(symbol))
        self._unconfirmed.discard(symbol)
        self._request("unsubscribe", symbol=symbol)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close_sockets()

    # -- incoming messages ---------------------------------------------------------------

    def _on_message(self, frames: list[bytes], now: float) -> None:
        try:
            msg = P.decode_message(frames)
        except P.VersionMismatch as e:
            self.version_errors += 1
            self._error(str(e), self.version_errors)
            return
        except P.ProtocolError as e:
            self.bad_messages += 1
            self._error(f"bad message from the bridge: {e}", self.bad_messages)
            return
        self.last_message_at = now
        if not self.connected:
            self.connected = True
            if self.heartbeat_losses:
                log.info("bridge %s: connected again", self.pub_addr)
        if msg.incarnation != self.incarnation:
            self._new_incarnation(msg.incarnation)
        if type(msg) is P.Batch:
            st = self._streams.get(msg.stream)
            if st is None:
                self.foreign_batches += 1
                return
            try:
                events = P.decode_rows(msg.stream, msg.rows)
            except P.BadRows as e:  # the good rows go on; each bad one as a Malformed the Validator counts
                self.bad_messages += 1
                self._error(str(e), self.bad_messages)
                events = e.events
            except P.ProtocolError as e:  # its seqs become a gap, resynced like a lost batch
                self.bad_messages += 1
                self._error(str(e), self.bad_messages)
                return
            self.batches += 1
            self._on_batch(st, msg.first_seq, events)
        else:
            self._on_heartbeat(msg, now)

    def _on_batch(self, st: _Stream, first: int, events: list) -> None:
        if not events:
            return
        last = first + len(events) - 1
        if st.next_seq is None:
            self._first_contact(st, first)
        if last > st.known_last:
            st.known_last = last
        nxt = st.next_seq
        if first == nxt and not st.held:  # the common case: in order, nothing waiting
            self._ready.extend(events)
            st.next_seq = last + 1
            if st.gap is not None and st.next_seq > st.gap[1]:
                st.gap = None
            return
        self._hold(st, first, events)
        self._advance(st)
        if st.held_n > self.max_held_events and st.gap is not None:
            self._give_up(st, f"more than {self.max_held_events} events held behind a gap")

    def _on_heartbeat(self, hb: P.Heartbeat, now: float) -> None:
        self.heartbeats += 1
        if self._unconfirmed and now >= self._resubscribe_at:  # a subscribe timed out: the bridge is back
            self._resubscribe_at = now + self.heartbeat_timeout_s
            waiting = {r.args["symbol"] for r in self._queue if r.cmd == "subscribe"}
            if self._inflight is not None and self._inflight.cmd == "subscribe":
                waiting.add(self._inflight.args["symbol"])
            for sym in sorted(self._unconfirmed - waiting):
                self._request("subscribe", symbol=sym)
        self._last_hb = now
        self._hb_exhausted = hb.exhausted
        self.bridge_stats = hb.stats
        streams = self._streams
        for name, last in hb.last_seqs.items():
            st = streams.get(name)
            if st is None:
                continue
            if st.next_seq is None:
                self._first_contact(st, last + 1)
            if last > st.known_last:  # batches up to `last` were sent before this heartbeat
                st.known_last = last
                if st.gap is None:
                    self._advance(st)

    def _first_contact(self, st: _Stream, first_seq: int) -> None:
        """Where reading starts: seq 1 when catching up, else the first seq that reached us."""
        if self._catch_up:
            st.next_seq = st.start_seq = 1
            st.catch_up_upto = st.counted_upto = first_seq - 1
        else:
            st.next_seq = st.start_seq = first_seq

    def _new_incarnation(self, incarnation: str) -> None:
        old = self.incarnation
        self.incarnation = incarnation
        if old is None:
            return
        # The old bridge is gone: deliver what is held, count what it announced but never sent.
        self.incarnation_changes += 1
        lost_here = announced = 0
        for st in self._streams.values():
            if st.next_seq is not None:
                for first, events in st.held:
                    if first > st.next_seq:
                        lost_here += first - st.next_seq
                    self._deliver(st, first, events)
                if st.known_last >= st.next_seq:
                    lost_here += st.known_last - st.next_seq + 1
                announced += max(st.known_last, st.next_seq - 1) - st.start_seq + 1
            st.reset()
        self.lost_events += lost_here
        # announced = delivered + lost (within that incarnation, from where reading started)
        self.history.append({"incarnation": old, "announced": announced,
                             "delivered": self._delivered_in_incarnation + len(self._ready),
                             "lost": self.lost_events - self._lost_before_incarnation})
        self._delivered_in_incarnation = -len(self._ready)  # what is ready now belongs to the old one
        self._lost_before_incarnation = self.lost_events
        log.warning("bridge restarted (incarnation %s -> %s): %d events lost", old, incarnation, lost_here)
        self._catch_up = True
        self._queue = deque(r for r in self._queue if r.cmd != "resync")
        if self._inflight is not None and self._inflight.cmd == "resync":
            self._inflight = None  # asked of the old bridge; a fresh socket for the new one
            self._fresh_req()
        for s in self._streams:
            self._subscribe_request(s)

    # -- ordering ----------------------------------------------------------------------

    def _hold(self, st: _Stream, first: int, events: list) -> None:
        bisect.insort(st.held, (first, events), key=lambda h: h[0])
        st.held_n += len(events)

    def _deliver(self, st: _Stream, first: int, events: list) -> int:
        """Append ``events`` (seqs from ``first``) past ``next_seq``; returns how many were new."""
        nxt = st.next_seq
        last = first + len(events) - 1
        if last < nxt:
            self.duplicates += len(events)
            return 0
        if first < nxt:
            self.duplicates += nxt - first
            events = events[nxt - first:]
        self._ready.extend(events)
        st.next_seq = last + 1
        return len(events)

    def _advance(self, st: _Stream) -> None:
        """Deliver held batches that are next in line; then ask for whatever is still missing."""
        held = st.held
        while held and held[0][0] <= st.next_seq:
            first, events = held.pop(0)
            st.held_n -= len(events)
            self._deliver(st, first, events)
        if st.gap is not None:
            if st.next_seq <= st.gap[1]:
                return  # the outstanding resync covers it
            st.gap = None
        upto = held[0][0] - 1 if held else st.known_last
        if upto >= st.next_seq:
            self._open_gap(st, st.next_seq, upto)

    def _open_gap(self, st: _Stream, a: int, b: int) -> None:
        new = b - max(a - 1, st.counted_upto)
        if new > 0:
            self.gaps += 1
            self.missing_events += new
            st.counted_upto = b
        st.gap = (a, b)
        self.resyncs_requested += 1
        self._request("resync", meta={"stream": st.name, "gap": (a, b), "incarnation": self.incarnation},
                      stream=st.name, from_seq=a, to_seq=b, max_events=self.resync_max_events)

    def _give_up(self, st: _Stream, why: str) -> None:
        """Count the outstanding gap as lost and carry on after it."""
        a, b = st.gap
        if st.next_seq <= b:
            n = b - st.next_seq + 1
            self.lost_events += n
            self._error(f"stream {st.name}: seqs {st.next_seq}-{b} lost ({why})", self.lost_events)
            st.next_seq = b + 1
        st.gap = None
        self._advance(st)

    def _on_resync(self, req: _Request, rep: dict) -> None:
        meta = req.meta
        st = self._streams.get(meta["stream"])
        if st is None or meta["incarnation"] != self.incarnation or st.gap != meta["gap"]:
            return  # for a stream or a bridge incarnation that is gone
        if rep.get("incarnation") != self.incarnation:
            return  # the bridge restarted; its messages will say so
        if not rep["ok"]:
            self.request_errors += 1
            self._give_up(st, f"resync refused: {rep.get('error')}")
            return
        a, b = st.gap
        before = st.next_seq
        try:
            try:
                events = P.decode_rows(st.name, rep["rows"])
            except P.BadRows as e:  # as for a batch: the good rows are kept, the bad ones counted
                self.bad_messages += 1
                self._error(str(e), self.bad_messages)
                events = e.events
            first = int(rep["first_seq"])
            if rep.get("gone"):
                self.resyncs_gone += 1
                fa = min(int(rep["first_available"]), b + 1)
                if fa > st.next_seq:
                    n = fa - st.next_seq
                    self.lost_events += n
                    self._error(f"stream {st.name}: seqs {st.next_seq}-{fa - 1} are no longer in the bridge's ring",
                                self.lost_events)
                    st.next_seq = fa
        except (P.ProtocolError, KeyError, TypeError, ValueError) as e:
            self.bad_messages += 1
            self._give_up(st, f"bad resync reply: {e}")
            return
        if events and first > st.next_seq:  # should not happen: keep it in order behind the gap
            self._hold(st, first, events)
            got = 0
        else:
            got = self._deliver(st, first, events) if events else 0
        if st.catch_up_upto >= first:
            caught = min(got, max(0, st.catch_up_upto - max(first, before) + 1))
            self.caught_up_events += caught
            self.recovered_events += got - caught
        else:
            self.recovered_events += got
        if st.next_seq == before:
            self._give_up(st, "resync returned nothing")
            return
        st.gap = None
        self._advance(st)

    # -- requests ----------------------------------------------------------------------

    def _subscribe_request(self, symbol: str) -> None:
        self._unconfirmed.add(symbol)
        self._request("subscribe", symbol=symbol)

    def _request(self, cmd: str, meta: dict | None = None, **args: Any) -> None:
        self._queue.append(_Request(cmd, args, meta))

    def _send(self, req: _Request, now: float) -> None:
        req.deadline = now + self.request_timeout_s
        try:
            self._req.send(P.encode_request(req.cmd, **req.args), flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # not sent: the deadline passes and it is retried on a fresh socket
        self._inflight = req

    def _service_requests(self, now: float) -> None:
        for _ in range(8):  # a few round trips per poll at most
            req = self._inflight
            if req is not None:
                if self._req.poll(0, zmq.POLLIN):
                    payload = self._req.recv()
                    self._inflight = None
                    self._on_reply(req, payload)
                elif now >= req.deadline:
                    self.request_timeouts += 1
                    self._fresh_req()
                    req.attempts += 1
                    if req.attempts > self.request_retries:
                        self._inflight = None
                        self._on_failure(req, f"no answer in {self.request_timeout_s:g} s x {req.attempts}")
                    else:
                        self._send(req, now)
                        return
                else:
                    return
            if not self._queue:
                return
            self._send(self._queue.popleft(), now)

    def _on_reply(self, req: _Request, payload: bytes) -> None:
        try:
            rep = P.decode_reply(payload)
        except P.VersionMismatch as e:
            self.version_errors += 1
            self._error(str(e), self.version_errors)
            return self._on_failure(req, str(e))
        except P.ProtocolError as e:
            self.bad_messages += 1
            return self._on_failure(req, str(e))
        if req.cmd == "resync":
            self._on_resync(req, rep)
            return
        if req.cmd == "subscribe":
            self._unconfirmed.discard(req.args["symbol"])  # answered: yes, or a definite no
            if rep["ok"] and rep.get("stream") not in (None, req.args["symbol"]):
                log.warning("bridge streams %s as %s; read that symbol", req.args["symbol"], rep["stream"])
        if not rep["ok"]:
            self.request_errors += 1
            self._error(f"bridge refused {req.cmd} {req.args}: {rep.get('error')}", self.request_errors)

    def _on_failure(self, req: _Request, why: str) -> None:
        if req.cmd == "resync":
            st = self._streams.get(req.meta["stream"])
            if st is not None and st.gap == req.meta["gap"] and req.meta["incarnation"] == self.incarnation:
                self._give_up(st, why)
        else:
            self.request_errors += 1
            self._error(f"{req.cmd} {req.args} failed: {why}", self.request_errors)
            if req.cmd == "subscribe":
                self._resubscribe_at = time.monotonic() + self.heartbeat_timeout_s

    # -- liveness / stats ---------------------------------------------------------------

    def _check_liveness(self, now: float) -> None:
        ref = self.last_message_at if self.last_message_at is not None else self._created
        if now - ref <= self.heartbeat_timeout_s:
            return
        if self.connected:
            self.connected = False
            self.heartbeat_losses += 1
            log.warning("bridge %s: no heartbeat for %.1f s; reconnecting", self.pub_addr, now - ref)
        if now >= self._next_reconnect:
            self._next_reconnect = now + self.heartbeat_timeout_s
            self._reconnect()

    def _error(self, text: str, count: int) -> None:
        self.last_error = text
        if count <= 10 or count % 1000 == 0:
            log.warning("bridge client: %s (#%d)", text, count)

    def stats(self) -> dict:
        now = time.monotonic()
        held = sum(st.held_n for st in self._streams.values())
        return {
            "connected": self.connected,
            "incarnation": self.incarnation,
            "events_delivered": self.events_delivered,
            "batches": self.batches,
            "heartbeats": self.heartbeats,
            "gaps": self.gaps,
            "missing_events": self.missing_events,
            "recovered_events": self.recovered_events,
            "caught_up_events": self.caught_up_events,
            "lost_events": self.lost_events,
            "duplicates": self.duplicates,
            "resyncs_requested": self.resyncs_requested,
            "resyncs_gone": self.resyncs_gone,
            "request_timeouts": self.request_timeouts,
            "request_errors": self.request_errors,
            "heartbeat_losses": self.heartbeat_losses,
            "reconnects": self.reconnects,
            "incarnation_changes": self.incarnation_changes,
            "bad_messages": self.bad_messages,
            "version_errors": self.version_errors,
            "foreign_batches": self.foreign_batches,
            "held_events": held,
            "unconfirmed_subscriptions": sorted(self._unconfirmed),
            "ready_events": len(self._ready),
            "last_error": self.last_error,
            "feed_lag_ms": (time.time_ns() - self._last_ts_recv) / 1e6 if self._last_ts_recv is not None else None,
            "heartbeat_age_s": now - self._last_hb if self._last_hb is not None else None,
            "streams": {s: {"next_seq": st.next_seq, "known_last": st.known_last, "gap": st.gap, "held": st.held_n}
                        for s, st in self._streams.items()},
            "history": list(self.history),
            "bridge": self.bridge_stats,
        }
