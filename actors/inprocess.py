"""An in-process stand-in for Ray: the actor classes driven as plain objects, in one process.

It is the backtest's runtime (:mod:`actors.backtest` runs the live graph's actor classes on it,
so only the transport differs from the live graph) and the tests'. It implements what
``actors.peers.Runtime`` asks of Ray (``wait``, ``get``, ``get_actor``, ``is_initialized``,
``get_runtime_context``). ``runtime.handle(obj)`` wraps a plain object like an actor handle:
``handle.method.remote(*args)`` returns a :class:`Ref`. A call runs at once in the caller's
thread, unless the handle is held (a hung or slow actor): then its calls queue, unanswered,
until ``release()`` runs them in order. A killed handle's calls fail, as a dead actor's do. Like
Ray, one handle runs its calls one at a time, in submission order. A call that raises is kept
in its Ref, as Ray keeps it, and counted on its handle (``errors``, ``last_error``): a backtest
must not pass over a failing actor silently.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class ActorGone(RuntimeError):
    """What a call to a killed handle raises when its result is read (Ray: ActorDiedError)."""


class Ref:
    """The result of one call: ready once the call ran."""

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None


class _Method:
    def __init__(self, handle: Handle, name: str):
        self._handle, self._name = handle, name

    def remote(self, *args, **kwargs) -> Ref:
        return self._handle._submit(self._name, args, kwargs)


class Handle:
    def __init__(self, runtime: InProcessRay, obj: Any, held: bool = False):
        self._runtime = runtime
        self.obj = obj
        self.held = held
        self.dead = False
        self.calls = 0  # calls submitted (run or queued)
        self.errors = 0  # calls that raised
        self.last_error: BaseException | None = None
        self._queue: deque = deque()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    def _submit(self, name: str, args: tuple, kwargs: dict) -> Ref:
        ref = Ref()
        with self._lock:
            self.calls += 1
            self._queue.append((ref, name, args, kwargs))
            if self.held:
                return ref
            self._run_queued()
        return ref

    def _run_queued(self) -> None:
        while self._queue:
            ref, name, args, kwargs = self._queue.popleft()
            if self.dead:
                ref.error = ActorGone(f"{type(self.obj).__name__} is gone")
            else:
                try:
                    ref.value = getattr(self.obj, name)(*args, **kwargs)
                except Exception as e:
                    ref.error = self.last_error = e
                    self.errors += 1
            self._runtime._finished(ref)

    def hold(self) -> None:
        """From now on calls wait, unanswered, until ``release()``."""
        self.held = True

    def release(self) -> None:
        """Run the queued calls, in order, and answer the next ones at once again."""
        with self._lock:
            self.held = False
            self._run_queued()

    def kill(self) -> None:
        """The actor dies: queued and later calls fail."""
        self.dead = True
        self.release()


class InProcessRay:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.named: dict[str, Handle] = {}

    def handle(self, obj: Any, name: str | None = None, held: bool = False) -> Handle:
        """``obj`` as an actor; with a ``name``, ``get_actor(name)`` finds it (a new one replaces the old)."""
        h = Handle(self, obj, held)
        if name is not None:
            self.named[name] = h
        return h

    def _finished(self, ref: Ref) -> None:
        with self._cond:
            ref.done = True
            self._cond.notify_all()

    # -- what the actors use of Ray ------------------------------------------------

    def wait(self, refs: list, *, num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                ready = [r for r in refs if r.done]
                left = None if deadline is None else deadline - time.monotonic()
                if len(ready) >= num_returns or (left is not None and left <= 0):
                    break
                self._cond.wait(left)
        ready = ready[:num_returns]
        chosen = {id(r) for r in ready}
        return ready, [r for r in refs if id(r) not in chosen]

    def get(self, refs: Any, *, timeout: float | None = None) -> Any:
        many = isinstance(refs, list)
        todo = refs if many else [refs]
        ready, _ = self.wait(todo, num_returns=len(todo), timeout=timeout)
        if len(ready) < len(todo):
            raise TimeoutError(f"no result within {timeout}s")
        for r in todo:
            if r.error is not None:
                raise r.error
        values = [r.value for r in todo]
        return values if many else values[0]

    def get_actor(self, name: str, namespace: str | None = None) -> Handle:
        h = self.named.get(name)
        if h is None or h.dead:
            raise ValueError(f"Failed to look up actor with name '{name}'")
        return h

    def is_initialized(self) -> bool:
        return False  # no Ray in this process: no node, no restarts

    def get_runtime_context(self) -> Any:
        raise AssertionError("asked Ray for its runtime context outside Ray")
