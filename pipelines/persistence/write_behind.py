"""The write-behind queue: every write to Valkey goes through one of these.

Callers hand over items and go on at once: a producer (the feed, an actor
deciding) must never wait on Valkey. A daemon thread drains the bounded queue
in chunks, one pipelined round trip per chunk, and survives outages:

- connection lost / timeout: the chunk is kept and re-sent unchanged after
  reconnecting (exponential backoff ``reconnect_initial_s`` ..
  ``reconnect_max_s``); meanwhile the queue absorbs the producer. Delivery is
  therefore at-least-once, and items must be idempotent (SET, XADD with an
  explicit id: a re-sent XADD is rejected by id and counted as a duplicate, not
  an error);
- queue full (``max_queue`` items): the oldest queued items are dropped and
  counted in ``dropped``; recent data is the valuable part;
- any other reply error (e.g. OOM, WRONGTYPE): counted per reason in
  ``errors``, the item is not retried.

What an item is and how a chunk goes on the wire is the :class:`Sender`'s
business: :class:`CommandSender` sends command tuples
(``("SET", key, value, "EX", 3600)``) through a valkey-py pipeline, and a
:class:`Transaction` of them as one item applied all or nothing (MULTI/EXEC); the
market-data writer (:class:`~pipelines.persistence.events.StreamWriter`) packs
its XADDs itself, because valkey-py's command packer is too slow for the feed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Protocol

import valkey
from valkey.exceptions import ResponseError

from pipelines.persistence.connection import CONN_ERRORS, RateLimit, connect, redact, suppressed_note

log = logging.getLogger("quantumtrader.valkey.write_behind")

__all__ = ["DUPLICATE", "CommandSender", "Sender", "Transaction", "WriteBehind"]

# The server's reply to an XADD whose explicit id is not above the stream top:
# the entry was written before (a re-sent chunk), so it counts as a duplicate.
_DUPLICATE_MSG = "equal or smaller than the target stream top item"


class _Duplicate:
    def __repr__(self) -> str:
        return "DUPLICATE"


DUPLICATE: Any = _Duplicate()
"""A reply a :class:`Sender` gives for an item it knows is stored already, without asking the server."""


class Sender(Protocol):
    """How a chunk of queued items reaches the server (used by the writer thread only)."""

    def prepare(self, client: valkey.Valkey, chunk: list) -> Any:
        """What :meth:`send` sends for ``chunk``. Called once per chunk, so a chunk
        re-sent after a reconnect goes out unchanged. May ask the server (a
        :data:`~pipelines.persistence.connection.CONN_ERRORS` error: called again)."""
        ...

    def send(self, client: valkey.Valkey, prepared: Any) -> list[Any]:
        """One round trip; one reply per item of the chunk: a value, :data:`DUPLICATE`,
        or the exception of that item (a ``ResponseError`` from the server, any other
        one for an item that could not be encoded). Raises a ``CONN_ERRORS`` error
        for the whole chunk to be re-sent after reconnecting."""
        ...

    def reset(self) -> None:
        """The writer (re)connected: the server may have lost or gained data since."""
        ...


class Transaction(tuple):
    """Command tuples queued as one item and applied all or nothing (MULTI ... EXEC): a writer
    killed mid-chunk, or a chunk boundary, never leaves part of them on the server. One item in
    the counts; its reply is EXEC's list of replies, or the first error in it."""


class CommandSender:
    """Items are command tuples (or :class:`Transaction` s of them), sent through a plain valkey-py pipeline."""

    def prepare(self, client: valkey.Valkey, chunk: list[tuple]) -> list[tuple]:
        return chunk

    def send(self, client: valkey.Valkey, chunk: list[tuple]) -> list[Any]:
        try:
            pipe = client.pipeline(transaction=False)
            at = []  # per item, the index of its reply in the pipeline's replies
            n = 0
            for op in chunk:
                if isinstance(op, Transaction):
                    pipe.execute_command("MULTI")
                    for sub in op:
                        pipe.execute_command(*sub)
                    pipe.execute_command("EXEC")
                    n += len(op) + 2
                else:
                    pipe.execute_command(*op)
                    n += 1
                at.append(n - 1)
            replies = pipe.execute(raise_on_error=False)
        except CONN_ERRORS:
            raise
        except Exception as e:  # an op valkey-py cannot encode: a caller bug must not stop the thread
            return [e] * len(chunk)
        out = []
        for op, i in zip(chunk, at):
            r = replies[i]
            if isinstance(op, Transaction) and isinstance(r, list):
                r = next((x for x in r if isinstance(x, Exception)), r)
            out.append(r)
        return out

    def reset(self) -> None:
        pass


class WriteBehind:
    """Bounded queue of items drained into Valkey by a background thread (see the module docstring).

    ``noun`` names the items in log lines and in the ``errors`` reason of an item
    that could not be encoded (``"bad op: TypeError"``). ``count_after_close_as``:
    None makes :meth:`submit` raise after :meth:`close`; a reason makes it count
    the refused items under ``errors[reason]`` instead, for a producer that must
    never raise.
    """

    IDLE_CHECK_S = 1.0  # an idle writer PINGs this often, so `connected` stays true to life

    def __init__(
        self,
        url: str,
        password: str | None,
        *,
        name: str = "write-behind",
        sender: Sender | None = None,
        noun: str = "op",
        max_queue: int = 100_000,
        chunk: int = 500,
        socket_timeout_s: float = 2.0,
        reconnect_initial_s: float = 0.05,
        reconnect_max_s: float = 2.0,
        count_after_close_as: str | None = None,
    ):
        self._url = url
        self._client = connect(url, password, socket_timeout=socket_timeout_s)
        del password  # only the client's connection kwargs keep it
        self._name = name
        self._sender: Sender = sender if sender is not None else CommandSender()
        self._noun = noun
        self._max_queue = max_queue
        self._chunk = chunk
        self._backoff = (reconnect_initial_s, reconnect_max_s)
        self._after_close = count_after_close_as

        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._q: deque = deque(maxlen=max_queue)  # a full deque discards from the left: the oldest
        self._writer_waiting = False
        self._closed = False  # submit() refuses new items
        self._stop = threading.Event()  # the thread gives up whatever is unwritten and exits

        # Items are numbered 0, 1, ... in submit order. Everything below the
        # watermark (the held chunk's first item, else the queue head) is
        # finished: written, duplicate, failed or dropped. flush() waits on it.
        self._submitted = 0
        self._held_start: int | None = None
        self._held_n = 0

        self._written = 0
        self._duplicates = 0
        self._dropped = 0
        self._errors: dict[str, int] = {}
        self._reconnects = 0
        self._connection_errors = 0
        self._last_error: str | None = None

        # Writer-thread state (no lock needed).
        self._connected = False
        self._ever_connected = False
        self._down_since: float | None = None
        self._delay = reconnect_initial_s
        self._next_attempt = 0.0
        self._logged_dropped = 0
        self._ratelimit = RateLimit(10.0)

        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- producer side (any thread) -------------------------------------------------

    def submit(self, items: list) -> None:
        """Queue ``items``; never blocks on Valkey, never raises for it.

        On overflow the oldest queued items are discarded (``dropped``).
        """
        n = len(items)
        with self._lock:
            if self._closed:
                if self._after_close is None:
                    raise RuntimeError(f"{self._name}: submit after the writer was closed")
                if n:
                    self._count_error(self._after_close, n)
                return
            if not n:
                return
            q = self._q
            before = len(q)
            q.extend(items)  # deque(maxlen) discards from the left
            self._submitted += n
            self._dropped += before + n - len(q)
            if self._writer_waiting:
                self._has_work.notify()

    def flush(self, timeout_s: float | None = 10.0) -> bool:
        """Block until every item submitted before this call is finished
        (written, duplicate, failed or dropped). False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            target = self._submitted
            while self._watermark() < target:
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
            return True

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush (up to ``timeout_s``), then stop the thread and close the client.

        Returns whether everything was flushed. Items still unwritten after that
        (server down) are given up and counted as ``errors["unwritten at close"]``.
        """
        ok = self.flush(timeout_s)
        with self._lock:
            self._closed = True
            self._stop.set()
            self._has_work.notify_all()
        self._thread.join(5.0)
        try:
            self._client.close()
        except Exception:  # closing sockets of a dead server
            pass
        return ok

    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> dict[str, Any]:
        """Counters; ``queued`` includes the chunk in flight (``inflight`` items)."""
        with self._lock:
            return {
                "submitted": self._submitted,
                "written": self._written,
                "duplicates": self._duplicates,
                "dropped": self._dropped,
                "reconnects": self._reconnects,
                "connection_errors": self._connection_errors,
                "errors": dict(self._errors),
                "connected": self._connected,
                "queued": len(self._q) + self._held_n,
                "inflight": self._held_n,
                "last_error": self._last_error,
            }

    def _watermark(self) -> int:  # caller holds the lock
        return self._held_start if self._held_start is not None else self._submitted - len(self._q)

    def _count_error(self, reason: str, n: int) -> None:  # caller holds the lock
        self._errors[reason] = self._errors.get(reason, 0) + n

    # -- writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._log_drops()
            if not self._connected:
                # Take nothing while down: items wait in the bounded queue, so its
                # limit and the drop count are exact.
                if not self._try_connect():
                    self._stop.wait(min(self.IDLE_CHECK_S, max(0.0, self._next_attempt - time.monotonic())))
                continue
            chunk = self._take()
            if chunk is None:
                break
            try:
                if chunk:
                    self._write(chunk)
                else:
                    self._ping()
            except Exception as e:  # a bug must not stop the writer (or hang flush())
                if self._ratelimit("internal") is not None:
                    log.exception("%s: unexpected error; chunk of %d %ss given up", self._name, len(chunk), self._noun)
                if chunk:
                    self._finish(len(chunk), None, give_up=f"internal: {type(e).__name__}")
        with self._lock:  # stopped by close(): whatever is left is given up
            left = len(self._q)
            if left:
                self._q.clear()
                self._count_error("unwritten at close", left)
            self._progress.notify_all()
        self._log_drops()

    def _take(self) -> list | None:
        """The next chunk, held as in flight; [] after an idle interval; None when stopping."""
        with self._lock:
            if not self._q and not self._stop.is_set():
                self._writer_waiting = True
                self._has_work.wait(self.IDLE_CHECK_S)
                self._writer_waiting = False
            if self._stop.is_set():
                return None
            q = self._q
            n = min(len(q), self._chunk)
            if n:
                self._held_start, self._held_n = self._submitted - len(q), n
            popleft = q.popleft
            return [popleft() for _ in range(n)]

    def _write(self, chunk: list) -> None:
        """Send ``chunk`` until the server answered it, re-sending after each lost connection."""
        prepared: Any = None
        ready = False
        while True:
            if self._stop.is_set():
                self._finish(len(chunk), None)
                return
            if not self._connected and not self._try_connect():
                self._log_drops()
                self._stop.wait(max(0.0, self._next_attempt - time.monotonic()))
                continue
            try:
                if not ready:
                    prepared, ready = self._sender.prepare(self._client, chunk), True
                replies = self._sender.send(self._client, prepared)
            except CONN_ERRORS as e:
                self._mark_down(e)  # keep the chunk; re-sent unchanged after reconnecting
                continue
            self._finish(len(chunk), replies)
            return

    def _finish(self, n: int, replies: list[Any] | None, give_up: str = "unwritten at close") -> None:
        """Account for the held chunk of ``n`` items and advance the flush watermark.
        ``replies`` None: given up without an answer from the server."""
        written = duplicates = 0
        errs: dict[str, int] = {}
        last_err = None
        if replies is None:
            errs[give_up] = n
        else:
            for r in replies:
                if r is DUPLICATE:
                    duplicates += 1
                elif not isinstance(r, Exception):
                    written += 1
                elif isinstance(r, ResponseError) and _DUPLICATE_MSG in str(r):
                    duplicates += 1
                else:
                    reason = self._error_reason(r)
                    errs[reason] = errs.get(reason, 0) + 1
                    last_err = f"{type(r).__name__}: {r}"
        with self._lock:
            self._written += written
            self._duplicates += duplicates
            for reason, k in errs.items():
                self._count_error(reason, k)
            if last_err is not None:
                self._last_error = last_err
            self._held_start, self._held_n = None, 0
            self._progress.notify_all()
        for reason, k in errs.items():
            suppressed = self._ratelimit("reply:" + reason)
            if suppressed is not None:
                log.error("%s: %d %ss not written (%s)%s", self._name, k, self._noun, reason,
                          suppressed_note(suppressed))

    def _error_reason(self, e: Exception) -> str:
        """Reply errors grouped by their first words (the error code and the gist);
        an item that could not be encoded by its exception type."""
        if isinstance(e, ResponseError):
            return " ".join(str(e).split()[:4]) or "unknown"
        return f"bad {self._noun}: {type(e).__name__}"

    # -- connection state -----------------------------------------------------------

    def _try_connect(self) -> bool:
        """One PING if the backoff allows it; True when connected."""
        now = time.monotonic()
        if now < self._next_attempt or not self._ping():
            return False
        self._sender.reset()  # the server may have lost or gained data: re-learn lazily
        self._delay, self._next_attempt = self._backoff[0], 0.0
        with self._lock:
            self._connected = True
            if self._ever_connected:
                self._reconnects += 1
        if self._ever_connected:
            log.warning("%s: reconnected to %s after %.1f s; queue_len=%d", self._name, redact(self._url),
                        time.monotonic() - (self._down_since or now), len(self._q))
        else:
            log.info("%s: connected to %s", self._name, redact(self._url))
        self._ever_connected = True
        self._down_since = None
        return True

    def _ping(self) -> bool:
        try:
            self._client.ping()
            return True
        except (*CONN_ERRORS, ResponseError) as e:  # ResponseError: e.g. LOADING, a server not ready
            self._mark_down(e)
            return False

    def _mark_down(self, e: BaseException) -> None:
        """Record a lost connection or a failed attempt and schedule the next try."""
        now = time.monotonic()
        err = f"{type(e).__name__}: {e}"
        was_connected = self._connected
        with self._lock:
            self._connected = False
            self._connection_errors += 1
            self._last_error = err
        try:
            self._client.connection_pool.disconnect()
        except Exception:
            pass
        self._next_attempt = now + self._delay
        self._delay = min(self._delay * 2, self._backoff[1])
        # One line when the outage starts, then at most one per interval while it lasts.
        if was_connected or self._down_since is None:
            self._down_since = now
            self._ratelimit("down")  # the next "still down" line comes an interval later
            log.warning("%s: no connection to %s (%s); %ss stay queued, retrying with backoff",
                        self._name, redact(self._url), err, self._noun)
        else:
            suppressed = self._ratelimit("down")
            if suppressed is not None:
                log.warning("%s: still no connection to %s after %.0f s (%s); queue_len=%d dropped=%d",
                            self._name, redact(self._url), now - self._down_since, err, len(self._q),
                            self._dropped)

    def _log_drops(self) -> None:
        dropped = self._dropped
        if dropped != self._logged_dropped and self._ratelimit("dropped") is not None:
            log.warning("%s: queue full (%d %ss): dropped %d oldest (total %d)", self._name, self._max_queue,
                        self._noun, dropped - self._logged_dropped, dropped)
            self._logged_dropped = dropped
