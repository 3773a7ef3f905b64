"""Calls between actors that must never stall the caller.

``Outbox``: fire-and-forget calls to one receiver with at most
``max_inflight`` unanswered. When full it waits up to ``STALL_TIMEOUT_S`` for
the oldest call, then stops tracking it (counted as a stall): a hung or
restarting receiver slows the sender by at most that, never stops it.

``Peer``: an Outbox to a named actor, looked up lazily and looked up again
after a failure, so a receiver recreated by the supervisor (a new handle under
the same name) is picked up without re-wiring anything.

Both reach Ray through a :class:`Runtime`: the ``ray`` module in a running system,
an in-process stand-in when the actor classes are used as plain objects (tests).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Protocol

log = logging.getLogger("quantumtrader.peers")

STALL_TIMEOUT_S = 2.0
RELOOKUP_S = 1.0  # while calls fail, look the name up again at most this often (a lookup asks Ray's GCS)


class Runtime(Protocol):
    """What the actors use of Ray to call one another (the ``ray`` module has it all)."""

    def wait(self, refs: list, *, num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]: ...

    def get(self, refs: Any, *, timeout: float | None = None) -> Any: ...

    def get_actor(self, name: str, namespace: str | None = None) -> Any: ...

    def is_initialized(self) -> bool: ...

    def get_runtime_context(self) -> Any: ...


def node_id(ray: Runtime) -> str | None:
    """The Ray node this process runs on; None outside Ray (an actor class used as a plain
    object), where asking would start a local Ray instance as a side effect."""
    if not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def reconstructed(ray: Runtime) -> bool:
    """Whether Ray re-created this actor after its process died (False at a first start, in the
    driver, or outside Ray: only an actor's worker can ask without failing)."""
    if not ray.is_initialized():
        return False
    ctx = ray.get_runtime_context()
    return ctx.get_actor_id() is not None and ctx.was_current_actor_reconstructed


class Outbox:
    def __init__(self, ray: Runtime, max_inflight: int, label: str = "receiver"):
        self._ray = ray
        self.label = label
        self._failing = 0  # consecutive failed calls of the current outage
        self.max_inflight = max_inflight
        self.refs: deque = deque()
        self.sent = 0
        self.failed = 0
        self.stalled = 0

    def send(self, method, *args):
        """Submit ``method(*args)``; returns its ObjectRef (a caller may hand it to another actor)."""
        if len(self.refs) >= self.max_inflight:
            ready, _ = self._ray.wait([self.refs[0]], timeout=STALL_TIMEOUT_S)
            if not ready:
                self.refs.popleft()
                self.stalled += 1
        if len(self.refs) >= self.max_inflight // 2:  # reaping is a ray.wait: not on every send
            self.reap()
        ref = method.remote(*args)
        self.refs.append(ref)
        self.sent += 1
        return ref

    def reap(self) -> list:
        """Collect the answers that have arrived, without blocking (one ray.wait); returns them."""
        out = []
        if not self.refs:
            return out
        ready, _ = self._ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
        done = set(ready)
        while self.refs and self.refs[0] in done:
            try:
                out.append(self._ray.get(self.refs.popleft()))
            except Exception as e:
                # One line per outage, not one per failed call: a restart fails every call in flight.
                self.failed += 1
                self._failing += 1
                if self._failing == 1:
                    log.warning("%s: calls failing (%s); counting until it answers again", self.label, type(e).__name__)
                continue
            if self._failing:
                log.warning("%s: answering again after %d failed calls", self.label, self._failing)
                self._failing = 0
        return out

    def drain(self, timeout_s: float) -> None:
        if self.refs:
            self._ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout_s)
        self.reap()

    def stats(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "stalled": self.stalled, "inflight": len(self.refs)}

    @property
    def failing(self) -> bool:
        """The last answers were failures (an outage under way)."""
        return self._failing > 0


class Peer:
    def __init__(self, ray: Runtime, name: str, namespace: str | None, max_inflight: int = 16):
        self._ray = ray
        self.name = name
        self.namespace = namespace
        self.box = Outbox(ray, max_inflight, name)
        self._handle = None
        self._looked_up = 0.0
        self.lookup_errors = 0
        self.relookups = 0

    def call(self, method: str, *args):
        """Send ``method(*args)``; its ObjectRef, or None (counted) when the actor cannot be reached now."""
        try:
            now = time.monotonic()
            if self._handle is not None and self.box.failing and now - self._looked_up >= RELOOKUP_S:
                # Calls on a dead actor's handle are accepted and fail later, so a failing
                # outbox is the only sign that the supervisor may have created a new actor
                # under this name; while Ray restarts the same actor the lookup returns it again.
                self._handle = None
                self.relookups += 1
            if self._handle is None:
                self._looked_up = now
                self._handle = self._ray.get_actor(self.name, namespace=self.namespace)
            return self.box.send(getattr(self._handle, method), *args)
        except Exception as e:  # not created yet, or gone: look it up again next time
            self._handle = None
            self.lookup_errors += 1
            if self.lookup_errors in (1, 10, 100, 1000) or self.lookup_errors % 10_000 == 0:
                log.warning("%s unreachable (%d times): %s", self.name, self.lookup_errors, type(e).__name__)
            return None

    def drain(self, timeout_s: float) -> None:
        self.box.drain(timeout_s)

    def stats(self) -> dict:
        return {**self.box.stats(), "unreachable": self.lookup_errors, "relookups": self.relookups}
