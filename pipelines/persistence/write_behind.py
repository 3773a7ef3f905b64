"""A generic, non-blocking write-behind queue of Valkey commands.

Callers hand over ready-made commands (``("SET", key, value, "EX", 3600)``,
``("XADD", key, "MAXLEN", "~", 1000, "<ms>-<seq>", "json", blob)``, ...) and go
on at once; a daemon thread sends them in chunks, one pipelined round trip per
chunk. Delivery is at-least-once: after a lost connection the whole chunk is
sent again, so ops must be idempotent (SET, XADD with an explicit id: a re-sent
XADD is rejected by id and counted as a duplicate, not an error).

The market-data feed has its own, faster writer (:class:`~pipelines.persistence.valkey_store.StreamWriter`);
this one is for analytics records, where a plain valkey-py pipeline is fast enough.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from valkey.exceptions import ResponseError

from pipelines.persistence.valkey_store import _CONN_ERRORS, _DUPLICATE_MSG, _error_reason, _more, _RateLimit, connect, redact

log = logging.getLogger("quantumtrader.write_behind")

__all__ = ["WriteBehind"]


class WriteBehind:
    """Bounded queue of Valkey commands drained by a background thread.

    - connection lost / timeout: the chunk is kept and re-sent after reconnecting
      (exponential backoff ``reconnect_initial_s`` .. ``reconnect_max_s``);
    - queue full (``max_queue`` ops): the oldest ops are dropped (``dropped``);
    - reply error: counted per reason in ``errors`` and not retried, except an
      XADD id at or below the stream top, which was written before a retry
      (``duplicates``).
    """

    IDLE_CHECK_S = 1.0  # an idle writer PINGs this often, so `connected` stays true to life

    def __init__(self, url: str, password: str | None, *, name: str = "write-behind", max_queue: int = 100_000,
                 chunk: int = 500, socket_timeout_s: float = 2.0, reconnect_initial_s: float = 0.05,
                 reconnect_max_s: float = 2.0):
        self._url = url
        self._client = connect(url, password, socket_timeout=socket_timeout_s)
        del password  # only the client's connection kwargs keep it
        self._chunk = chunk
        self._backoff = (reconnect_initial_s, reconnect_max_s)
        self._delay = reconnect_initial_s
        self._next_attempt = 0.0

        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._q: deque = deque(maxlen=max_queue)  # a full deque discards from the left: the oldest
        self._closed = False
        self._stop = threading.Event()
        # Ops are numbered in submit order; everything below the watermark (the
        # held chunk's first op, else the queue head) is finished. flush() waits on it.
        self._submitted = 0
        self._held_start: int | None = None
        self._held_n = 0
        self._n = {"written": 0, "duplicates": 0, "dropped": 0, "reconnects": 0, "connection_errors": 0}
        self._errors: dict[str, int] = {}
        self._last_error: str | None = None
        self._connected = False
        self._ever_connected = False
        self._ratelimit = _RateLimit(10.0)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- caller side ----------------------------------------------------------------

    def submit(self, ops: list[tuple]) -> None:
        """Queue ``ops``; never blocks on Valkey, never raises for it."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._thread.name}: submit after the writer was closed")
            before = len(self._q)
            self._q.extend(ops)
            self._submitted += len(ops)
            self._n["dropped"] += before + len(ops) - len(self._q)
            self._has_work.notify()

    def flush(self, timeout_s: float | None = 10.0) -> bool:
        """Wait until every op submitted before this call is finished
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
        """Flush (up to ``timeout_s``), then stop the thread. Ops still unwritten
        (server down) are given up as ``errors["unwritten at close"]``."""
        ok = self.flush(timeout_s)
        with self._lock:
            self._closed = True
            self._stop.set()
            self._has_work.notify()
        self._thread.join(5.0)
        self._client.close()
        return ok

    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> dict[str, Any]:
        """Counters; ``queued`` includes a chunk held for re-sending."""
        with self._lock:
            return {"submitted": self._submitted, **self._n, "errors": dict(self._errors),
                    "connected": self._connected, "queued": len(self._q) + self._held_n,
                    "last_error": self._last_error}

    def _watermark(self) -> int:  # caller holds the lock
        return self._held_start if self._held_start is not None else self._submitted - len(self._q)

    # -- writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        chunk: list[tuple] = []
        while not self._stop.is_set():
            if not self._connected:
                # Take nothing while down: ops wait in the bounded queue, so its
                # limit and the drop count are exact.
                if not self._try_connect():
                    self._stop.wait(max(0.0, self._next_attempt - time.monotonic()))
                continue
            if not chunk:
                chunk = self._take()
                if not chunk:  # idle for IDLE_CHECK_S, or stopping
                    if not self._stop.is_set():
                        self._ping()
                    continue
            try:
                pipe = self._client.pipeline(transaction=False)
                for op in chunk:
                    pipe.execute_command(*op)
                replies = pipe.execute(raise_on_error=False)
            except _CONN_ERRORS as e:
                self._mark_down(e)  # keep the chunk; re-sent unchanged after reconnecting
                continue
            except Exception as e:  # an op valkey-py cannot encode: a caller bug must not stop the thread
                replies = [e] * len(chunk)
            self._finish(replies)
            chunk = []
        with self._lock:  # stopped by close(): whatever is left is given up
            left = len(self._q) + len(chunk)
            if left:
                self._errors["unwritten at close"] = self._errors.get("unwritten at close", 0) + left
            self._q.clear()
            self._held_start, self._held_n = None, 0
            self._progress.notify_all()

    def _take(self) -> list[tuple]:
        with self._lock:
            if not self._q and not self._stop.is_set():
                self._has_work.wait(self.IDLE_CHECK_S)
            n = 0 if self._stop.is_set() else min(len(self._q), self._chunk)
            if n:
                self._held_start, self._held_n = self._submitted - len(self._q), n
            return [self._q.popleft() for _ in range(n)]

    def _finish(self, replies: list[Any]) -> None:
        """Account for the held chunk's replies and advance the flush watermark."""
        written = duplicates = 0
        errs: dict[str, int] = {}
        last_err = None
        for r in replies:
            if not isinstance(r, Exception):
                written += 1
            elif isinstance(r, ResponseError) and _DUPLICATE_MSG in str(r):
                duplicates += 1
            else:
                reason = _error_reason(str(r)) if isinstance(r, ResponseError) else f"bad op: {type(r).__name__}"
                errs[reason] = errs.get(reason, 0) + 1
                last_err = f"{type(r).__name__}: {r}"
        with self._lock:
            self._last_error = last_err or self._last_error
            self._n["written"] += written
            self._n["duplicates"] += duplicates
            for reason, n in errs.items():
                self._errors[reason] = self._errors.get(reason, 0) + n
            self._held_start, self._held_n = None, 0
            self._progress.notify_all()
        for reason, n in errs.items():
            suppressed = self._ratelimit("reply:" + reason)
            if suppressed is not None:
                log.error("%s: %d ops not written (%s)%s", self._thread.name, n, reason, _more(suppressed))

    # -- connection state -----------------------------------------------------------

    def _try_connect(self) -> bool:
        """One PING if the backoff allows it; True when connected."""
        if time.monotonic() < self._next_attempt:
            return False
        if not self._ping():
            return False
        self._delay, self._next_attempt = self._backoff[0], 0.0
        with self._lock:
            self._connected = True
            if self._ever_connected:
                self._n["reconnects"] += 1
        log.info("%s: %s %s", self._thread.name, "reconnected to" if self._ever_connected else "connected to",
                 redact(self._url))
        self._ever_connected = True
        return True

    def _ping(self) -> bool:
        try:
            self._client.ping()
            return True
        except (*_CONN_ERRORS, ResponseError) as e:  # ResponseError: e.g. LOADING, a server not ready
            self._mark_down(e)
            return False

    def _mark_down(self, e: BaseException) -> None:
        """Record a lost connection or a failed attempt and schedule the next try."""
        err = f"{type(e).__name__}: {e}"
        was_connected = self._connected
        with self._lock:
            self._connected = False
            self._n["connection_errors"] += 1
            self._last_error = err
        self._client.connection_pool.disconnect()
        self._next_attempt = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self._backoff[1])
        # One line when the outage starts, then at most one per interval while it lasts.
        suppressed = self._ratelimit("down")
        if was_connected or suppressed is not None:
            log.warning("%s: no connection to %s (%s); ops stay queued (%d), retrying with backoff%s",
                        self._thread.name, redact(self._url), err, len(self._q), _more(suppressed or 0))
