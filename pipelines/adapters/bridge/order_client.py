"""OrderClient: the pipeline's end of the DLL host's order service (DEALER for commands, SUB for updates).

Commands (:meth:`OrderClient.request`): each request gets a fresh request id (``rid``) and is
sent on a DEALER socket; when no reply comes within the attempt's share of ``timeout_s``, the
*same bytes* are sent again (``retries`` times). The host dedupes them (a send by its coid,
anything else by its rid), so a retry never reaches the DLL twice. Replies carry the rid: a late
reply to a request already given up on is dropped and counted (``stale_replies``). After the
last attempt :class:`~pipelines.adapters.bridge.orders.RequestTimeout` is raised; the command
may or may not have been carried out, and re-sending it with the same coid is safe.

Updates (:meth:`OrderClient.poll_updates`) are delivered once each, in the host's seq order.
An update beyond the next expected seq opens a gap: updates after it are held, a ``resync`` for
the missing range goes out (asynchronously: its reply is picked up by later polls), and what
the host no longer has ("gone") or never answers for is counted in ``lost_updates``; held
updates are then delivered. A heartbeat's ``last_seq`` reveals a lost final update the same
way. Losing an update loses no fill: updates are cumulative, so the next one of the same order
carries everything. The first incarnation met is read from seq 1 (``catch_up``, what the host's
ring still has), so the updates published before this client connected are not missed.

A message with another host *incarnation* means the host restarted (its seqs start again at 1):
what is held is delivered, what the old host announced and never delivered is counted lost,
the new one is read from seq 1, ``incarnation_changes`` counts it and :meth:`take_reconnected`
returns True once (and ``on_reconnect`` is called) so the execution side can reconcile with the
broker (``orders``, ``positions``): after a restart the broker, not the stream, is the truth.

Nothing here blocks longer than asked: ``poll_updates(timeout_s=0)`` only reads what is queued.
"""

from __future__ import annotations

import bisect
import logging
import time
import uuid
from typing import Any, Callable

import zmq

from pipelines.adapters.bridge import orders as O

log = logging.getLogger(__name__)

Update = O.OrderUpdate | O.MessageUpdate


class OrderClient:
    """Commands to, and updates from, one account's order service (module docstring).

    ``command_endpoint``: the host's ROUTER; ``updates_endpoint``: its PUB; ``account``:
    ``BROKER:ACCOUNT[:SUB]`` as the host was started with; ``token``: the shared token when the
    host requires one (kept here and sent with every command; never logged).
    """

    def __init__(self, command_endpoint: str, updates_endpoint: str, account: str, token: str | None = None, *,
                 heartbeat_timeout_s: float = 3.0, resync_timeout_s: float = 1.0, resync_retries: int = 2,
                 max_held_updates: int = 100_000, catch_up: bool = True,
                 on_reconnect: Callable[[str | None, str], None] | None = None):
        self.command_endpoint, self.updates_endpoint = command_endpoint, updates_endpoint
        self.account = account
        self._token = token
        self.topic = O.order_topic(account)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.resync_timeout_s = resync_timeout_s
        self.resync_retries = resync_retries
        self.max_held_updates = max_held_updates
        self._catch_up = catch_up
        self.on_reconnect = on_reconnect

        self.incarnation: str | None = None
        self._next_seq: int | None = None  # next seq to deliver in this incarnation
        self._known_last = 0  # highest seq known to exist (updates, heartbeats)
        self._held: list[tuple[int, Update]] = []  # behind a gap, sorted by seq
        self._ready: list[Update] = []
        self._resync: dict | None = None  # the outstanding resync: rid, payload, range, attempts, deadline
        self._replies: dict[str, dict] = {}  # replies that came while waiting for another one
        self._waiting: set[str] = set()  # rids whose reply is wanted
        self._reconnected = False
        self.last_message_at: float | None = None
        self.last_heartbeat: tuple[int, int] | None = None  # (ts_ns, last_seq) of the last heartbeat
        self._closed = False

        self.updates_delivered = 0
        self.heartbeats = 0
        self.gaps = 0
        self.lost_updates = 0
        self.recovered_updates = 0
        self.duplicates = 0
        self.resyncs_requested = 0
        self.resyncs_gone = 0
        self.resync_timeouts = 0
        self.incarnation_changes = 0
        self.requests = 0
        self.retries = 0
        self.timeouts = 0
        self.stale_replies = 0
        self.bad_messages = 0
        self.version_errors = 0
        self.last_error: str | None = None

        self._ctx = zmq.Context.instance()
        self._dealer: zmq.Socket | None = None
        self._sub: zmq.Socket | None = None
        self._open()

    def __repr__(self) -> str:
        return (f"OrderClient(commands={self.command_endpoint!r}, updates={self.updates_endpoint!r}, "
                f"account={self.account!r}, token={'<set>' if self._token else None})")

    # -- sockets ---------------------------------------------------------------------------------

    def _open(self) -> None:
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(self.command_endpoint)
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, self.topic)
        sub.connect(self.updates_endpoint)
        self._dealer, self._sub = dealer, sub

    def retarget(self, command_endpoint: str, updates_endpoint: str) -> None:
        """Talk to a host on other endpoints (a restarted host on new ports). Stream state is kept;
        the new host's incarnation is noticed from its first message."""
        self._drain_sub(time.monotonic())
        for sock in (self._dealer, self._sub):
            if sock is not None:
                sock.close(linger=0)
        self.command_endpoint, self.updates_endpoint = command_endpoint, updates_endpoint
        self._open()
        if self._resync is not None:
            self._resync["deadline"] = 0.0  # ask the new host at once

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for sock in (self._dealer, self._sub):
                if sock is not None and not sock.closed:
                    sock.close(linger=0)

    # -- commands --------------------------------------------------------------------------------

    def request(self, cmd: str, args: dict | None = None, timeout_s: float = 2.0, retries: int = 2) -> dict:
        """Send ``cmd`` with ``args`` (wire names, e.g. ``type`` for the order type) and return the
        host's reply (``ok``, ...). Waits at most ``timeout_s`` in all, split over ``retries + 1``
        attempts of the same bytes; raises :class:`RequestTimeout` after the last."""
        if self._closed:
            raise RuntimeError("OrderClient is closed")
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be > 0 and retries >= 0")
        rid = uuid.uuid4().hex
        payload = O.encode_command(cmd, rid=rid, token=self._token, **(args or {}))
        self.requests += 1
        deadline = time.monotonic() + timeout_s
        attempts = retries + 1
        self._waiting.add(rid)
        try:
            for attempt in range(attempts):
                if attempt:
                    self.retries += 1
                self._dealer.send(payload, flags=zmq.NOBLOCK)
                now = time.monotonic()
                attempt_end = min(deadline, now + (deadline - now) / (attempts - attempt))
                reply = self._wait_reply(rid, attempt_end)
                if reply is not None:
                    return reply
            self.timeouts += 1
            raise O.RequestTimeout(f"order service {self.command_endpoint}: no reply to {cmd} within {timeout_s:g} s "
                                   f"({attempts} attempts)")
        except zmq.Again:
            self.timeouts += 1
            raise O.RequestTimeout(f"order service {self.command_endpoint}: cannot send {cmd} now") from None
        finally:
            self._waiting.discard(rid)
            self._replies.pop(rid, None)

    def _wait_reply(self, rid: str, until: float) -> dict | None:
        while True:
            reply = self._replies.pop(rid, None)
            if reply is not None:
                return reply
            remaining = until - time.monotonic()
            if remaining <= 0:
                return None
            if self._dealer.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                self._drain_dealer()

    def _drain_dealer(self) -> None:
        """Every reply now queued: wanted ones kept by rid, the resync's handled, others dropped."""
        while True:
            try:
                frames = self._dealer.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if len(frames) != 1:
                    raise O.ProtocolError(f"expected one reply frame, got {len(frames)}")
                reply = O.decode_reply(frames[0])
            except O.VersionMismatch as e:
                self.version_errors += 1
                self.last_error = str(e)
                continue
            except O.ProtocolError as e:
                self.bad_messages += 1
                self.last_error = f"bad reply from the order service: {e}"
                continue
            rid = reply.get("rid")
            if self._resync is not None and rid == self._resync["rid"]:
                self._on_resync_reply(reply)
            elif rid in self._waiting:
                self._replies[rid] = reply
            else:
                self.stale_replies += 1

    # -- updates ---------------------------------------------------------------------------------

    def poll_updates(self, max_updates: int = 10_000, timeout_s: float = 0.0) -> list[Update]:
        """Up to ``max_updates`` updates, in seq order, each once. Waits up to ``timeout_s`` for the
        first message when nothing is ready (0: never waits)."""
        if self._closed or max_updates <= 0:
            return []
        now = time.monotonic()
        if not self._ready and timeout_s > 0 and not self._sub.poll(0):
            self._sub.poll(max(1, int(timeout_s * 1000)))
            now = time.monotonic()
        self._drain_dealer()
        self._drain_sub(now)
        self._service_resync(now)
        out, self._ready = self._ready[:max_updates], self._ready[max_updates:]
        self.updates_delivered += len(out)
        return out

    def take_reconnected(self) -> bool:
        """True once after the host restarted (a new incarnation): time to reconcile."""
        flag, self._reconnected = self._reconnected, False
        return flag

    @property
    def reconnected(self) -> bool:
        """Whether a host restart has not been taken yet (see :meth:`take_reconnected`)."""
        return self._reconnected

    @property
    def connected(self) -> bool:
        return self.last_message_at is not None and time.monotonic() - self.last_message_at < self.heartbeat_timeout_s

    def _drain_sub(self, now: float) -> None:
        while True:
            try:
                frames = self._sub.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = O.decode_order_message(frames)
            except O.VersionMismatch as e:
                self.version_errors += 1
                self.last_error = str(e)
                continue
            except O.ProtocolError as e:  # its seq (if it had one) becomes a gap, resynced
                self.bad_messages += 1
                self.last_error = f"bad message from the order service: {e}"
                continue
            self.last_message_at = now
            if msg.incarnation != self.incarnation:
                self._new_incarnation(msg.incarnation)
            if type(msg) is O.OrderHeartbeat:
                self.heartbeats += 1
                self.last_heartbeat = (msg.ts_ns, msg.last_seq)
                if self._next_seq is None:
                    self._first_contact(msg.last_seq + 1)
                if msg.last_seq > self._known_last:
                    self._known_last = msg.last_seq
                    self._advance()
            else:
                self._on_update(msg)

    def _first_contact(self, first_seq: int) -> None:
        self._next_seq = 1 if self._catch_up else first_seq

    def _on_update(self, u: Update) -> None:
        if self._next_seq is None:
            self._first_contact(u.seq)
        if u.seq > self._known_last:
            self._known_last = u.seq
        if u.seq < self._next_seq:
            self.duplicates += 1
            return
        if u.seq == self._next_seq and not self._held:
            self._ready.append(u)
            self._next_seq += 1
            return
        i = bisect.bisect_left([s for s, _ in self._held], u.seq)
        if i < len(self._held) and self._held[i][0] == u.seq:
            self.duplicates += 1
            return
        self._held.insert(i, (u.seq, u))
        self._advance()
        if len(self._held) > self.max_held_updates:
            self._give_up("too many updates held behind a gap")

    def _advance(self) -> None:
        """Deliver held updates that are next; ask for the first missing range if there is one."""
        held = self._held
        while held and held[0][0] <= self._next_seq:
            seq, u = held.pop(0)
            if seq == self._next_seq:
                self._ready.append(u)
                self._next_seq += 1
            else:
                self.duplicates += 1
        upto = (held[0][0] - 1) if held else self._known_last
        if upto >= self._next_seq and self._resync is None:
            self._ask_resync(self._next_seq, upto)

    def _ask_resync(self, first: int, last: int) -> None:
        self.gaps += 1
        self.resyncs_requested += 1
        rid = uuid.uuid4().hex
        payload = O.encode_command("resync", rid=rid, token=self._token, from_seq=first)
        self._resync = {"rid": rid, "payload": payload, "first": first, "last": last, "attempts": 0, "deadline": 0.0}
        self._service_resync(time.monotonic())

    def _service_resync(self, now: float) -> None:
        r = self._resync
        if r is None or now < r["deadline"]:
            return
        if r["attempts"] > self.resync_retries:
            self.resync_timeouts += 1
            self._give_up(f"no resync reply after {r['attempts']} attempts")
            return
        r["attempts"] += 1
        r["deadline"] = now + self.resync_timeout_s
        try:
            self._dealer.send(r["payload"], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # tried again at the deadline

    def _on_resync_reply(self, reply: dict) -> None:
        r, self._resync = self._resync, None
        if not reply.get("ok") or reply.get("incarnation") != self.incarnation:
            # Another incarnation answered (the host restarted meanwhile): its seqs mean other updates.
            self._give_up(f"resync refused: {str(reply.get('error') or 'another incarnation')[:100]}")
            return
        if reply.get("gone"):
            self.resyncs_gone += 1
        first_available = reply.get("first_available")
        if type(first_available) is int and first_available > self._next_seq:
            self._count_lost(min(first_available, r["last"] + 1) - self._next_seq)
            self._next_seq = min(first_available, r["last"] + 1)
        for item in reply.get("updates") or ():
            try:
                seq, body = item
                u = O.decode_body(self.incarnation, seq, body)
            except (O.ProtocolError, TypeError, ValueError) as e:
                self.bad_messages += 1
                self.last_error = f"bad resync update: {e}"
                continue
            if seq >= self._next_seq:
                self.recovered_updates += 1
                self._on_update(u)
        self._advance()

    def _give_up(self, why: str) -> None:
        """Count the missing range as lost and go on with what is held."""
        self._resync = None
        target = self._held[0][0] if self._held else self._known_last + 1
        if target > self._next_seq:
            self._count_lost(target - self._next_seq)
            log.warning("order updates %d..%d lost: %s", self._next_seq, target - 1, why)
            self._next_seq = target
        self._advance()

    def _count_lost(self, n: int) -> None:
        if n > 0:
            self.lost_updates += n

    def _new_incarnation(self, incarnation: str) -> None:
        old, self.incarnation = self.incarnation, incarnation
        if old is None:
            return
        self.incarnation_changes += 1
        for _, u in self._held:  # the old host's last words, still valid (cumulative)
            self._ready.append(u)
        if self._next_seq is not None:
            missing = self._known_last - (self._next_seq - 1) - len(self._held)
            self._count_lost(missing)
        self._held = []
        self._resync = None
        self._known_last = 0
        self._next_seq = None
        self._catch_up = True  # a restarted host is read from its seq 1
        self._reconnected = True
        log.warning("order service restarted (incarnation %s -> %s): reconcile with the broker", old, incarnation)
        if self.on_reconnect is not None:
            try:
                self.on_reconnect(old, incarnation)
            except Exception as e:  # the callback's failure is the caller's; the stream goes on
                self.last_error = f"on_reconnect failed: {type(e).__name__}: {e}"

    def stats(self) -> dict[str, Any]:
        return {
            "incarnation": self.incarnation, "connected": self.connected, "next_seq": self._next_seq,
            "known_last": self._known_last, "held": len(self._held), "updates_delivered": self.updates_delivered,
            "heartbeats": self.heartbeats, "gaps": self.gaps, "lost_updates": self.lost_updates,
            "recovered_updates": self.recovered_updates, "duplicates": self.duplicates,
            "resyncs_requested": self.resyncs_requested, "resyncs_gone": self.resyncs_gone,
            "resync_timeouts": self.resync_timeouts, "incarnation_changes": self.incarnation_changes,
            "requests": self.requests, "retries": self.retries, "timeouts": self.timeouts,
            "stale_replies": self.stale_replies, "bad_messages": self.bad_messages,
            "version_errors": self.version_errors, "last_error": self.last_error,
        }
