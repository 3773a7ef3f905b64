"""HostedBridge: a FeedSource that runs the feed bridge as a child process and supervises it.

The ProfitDLL may crash the process that hosts it (SIGSEGV) and allows one login
per process, so the pipeline never loads it itself: this class spawns
``scripts/feed_bridge.py`` on 127.0.0.1 with ephemeral ports (the child binds
port 0 and reports the real endpoints in its ``READY {json}`` line), and reads it
through a :class:`~pipelines.adapters.bridge.client.BridgeClient`.

Credentials reach the child only through its environment (PROFIT_* variables
pass through), never its command line. The child also watches its stdin, which
this class holds open: if this process dies, the child sees EOF and exits, so no
orphan keeps the DLL login.

Orders: with ``--routing`` or ``--shadow`` among ``bridge_args`` the child also serves orders
(:mod:`pipelines.adapters.bridge.order_service`); unless ``bridge_args`` name them, its order
ports are ephemeral on 127.0.0.1 too, and :attr:`HostedBridge.order_endpoints` holds the
(commands, updates) endpoints of the running child (new ones after a restart). The routing
password and the bridge token reach the child like the login: through its environment
(PROFIT_ROUTING_PASSWORD, PROFIT_BRIDGE_TOKEN) or its credentials file, never its command line.

Supervision (done inside ``poll``, never blocking): when the child exits, or is
alive but silent for ``hang_timeout_s`` (killed then), it is restarted after an
exponential backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``, back
to the initial value once a child has run ``healthy_after_s``). A child that exits
with code 2 (a configuration error such as a refused login: retrying could lock
the account) is not restarted: ``poll`` raises :class:`BridgeStartError`. The client sees
the new bridge incarnation, counts what the old one announced but never
delivered as lost, subscribes again and reads the new one from seq 1.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from pipelines.adapters.bridge.client import BridgeClient
from pipelines.model.messages import Event

log = logging.getLogger(__name__)

FEED_BRIDGE_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "feed_bridge.py"
_LOCAL_EPHEMERAL = "tcp://127.0.0.1:0"


class BridgeStartError(RuntimeError):
    """The bridge process did not come up, or exited with a configuration error (exit code 2)
    that no restart can fix; the message says why (its last error line)."""


CONFIG_ERROR_EXIT = 2  # feed_bridge.py: bad arguments, credentials, DLL file, login refused


class _Child:
    """One bridge process and the threads that read its stdout (READY) and stderr (logs)."""

    def __init__(self, cmd: list[str], env: dict[str, str]):
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True  # a Ctrl+C in the terminal is for the parent, which stops us
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, **kwargs)
        self.pid = self.proc.pid
        self.ready: queue.Queue[dict] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=20)
        self._threads = [
            threading.Thread(target=self._read_stdout, name=f"bridge-{self.pid}-out", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"bridge-{self.pid}-err", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if line.startswith("READY "):
                try:
                    self.ready.put(json.loads(line[6:]))
                except ValueError:
                    self.tail.append(f"unreadable READY line: {line[:200]}")
            elif line:
                log.info("[feed_bridge %d] %s", self.pid, line)

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.tail.append(line)
                level = logging.ERROR if (" ERROR " in line or "error:" in line) else logging.INFO
                log.log(level, "[feed_bridge %d] %s", self.pid, line)

    def last_error(self) -> str:
        for line in reversed(self.tail):
            if "error" in line.lower():
                return line
        return self.tail[-1] if self.tail else "(no output)"

    def stop(self, timeout_s: float) -> int:
        """Ask it to stop (stdin EOF, and SIGTERM on POSIX), kill it after ``timeout_s``; reap it."""
        proc = self.proc
        if proc.poll() is None:
            # SIGTERM first: sent after the stdin EOF it could land while the child's interpreter
            # is already finalizing (default handlers back) and kill it mid-DLLFinalize.
            if os.name != "nt":
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                proc.stdin.close()  # --exit-with-parent: the clean stop on Windows (no SIGTERM there)
            except OSError:
                pass
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("feed bridge %d did not stop in %.1f s; killing it", self.pid, timeout_s)
                proc.kill()
                proc.wait()
        self.join()
        return proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.join()

    def join(self) -> None:
        for t in self._threads:
            t.join(timeout=2.0)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class HostedBridge:
    """FeedSource: ``scripts/feed_bridge.py --source <source>`` as a supervised child process.

    ``bridge_args`` are extra command-line arguments for the child (never credentials);
    ``env`` replaces the environment passed to it (default: this process's).
    ``client_options`` go to the :class:`BridgeClient`.
    The constructor blocks until the first child is ready (``ready_timeout_s``) and
    raises :class:`BridgeStartError` with the child's own error line if it is not.
    """

    def __init__(self, symbols: Sequence[str], *, source: str = "profitdll", bridge_args: Sequence[str] = (),
                 env: dict[str, str] | None = None, python: str | None = None, heartbeat_s: float = 1.0,
                 heartbeat_timeout_s: float = 3.0, ready_timeout_s: float = 60.0, hang_timeout_s: float = 10.0,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0, healthy_after_s: float = 60.0,
                 stop_timeout_s: float = 5.0, client_options: dict | None = None):
        if not symbols:
            raise ValueError("HostedBridge needs at least one symbol")
        self.symbols = tuple(symbols)
        self._cmd = [python or sys.executable, str(FEED_BRIDGE_SCRIPT), "--source", source, "--symbols", *self.symbols,
                     "--pub", _LOCAL_EPHEMERAL, "--rep", _LOCAL_EPHEMERAL, "--heartbeat-s", repr(heartbeat_s),
                     "--exit-with-parent", *bridge_args]
        if {"--routing", "--shadow"} & set(bridge_args):
            for flag in ("--orders", "--order-pub"):
                if flag not in bridge_args:
                    self._cmd += [flag, _LOCAL_EPHEMERAL]
        self.order_endpoints: tuple[str, str] | None = None
        self._env = dict(os.environ if env is None else env)
        self.ready_timeout_s = ready_timeout_s
        self.hang_timeout_s = max(hang_timeout_s, heartbeat_timeout_s)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self.stop_timeout_s = stop_timeout_s

        self.restarts = 0
        self.exit_codes: list[int] = []  # the last few children's exit codes (negative: signal)
        self.last_exit: str | None = None
        self._backoff = backoff_initial_s
        self._state = "starting"
        self._restart_at = 0.0
        self._ready_deadline = 0.0
        self._running_since = 0.0
        self._closed = False
        self.failure: str | None = None

        self._child = _Child(self._cmd, self._env)
        info = self._wait_ready(self._child, time.monotonic() + ready_timeout_s)
        self.endpoints = (info["pub"], info["rep"])
        self._note_orders(info)
        self.client = BridgeClient(info["pub"], info["rep"], self.symbols, heartbeat_timeout_s=heartbeat_timeout_s,
                                   catch_up=True, **(client_options or {}))
        self._state = "running"
        self._running_since = time.monotonic()
        log.info("feed bridge %d ready: %s", self._child.pid, info)

    def _note_orders(self, info: dict) -> None:
        if "orders" in info and "order_pub" in info:
            self.order_endpoints = (info["orders"], info["order_pub"])

    def _wait_ready(self, child: _Child, deadline: float) -> dict:
        while True:
            try:
                return child.ready.get(timeout=0.05)
            except queue.Empty:
                pass
            if child.proc.poll() is not None:
                child.join()  # read its last words
                raise BridgeStartError(f"feed bridge exited before it was ready ({describe_exit(child.proc.returncode)}): "
                                       f"{child.last_error()}")
            if time.monotonic() > deadline:
                child.kill()
                raise BridgeStartError(f"feed bridge not ready after {self.ready_timeout_s:g} s "
                                       f"(killed): {child.last_error()}")

    # -- FeedSource ------------------------------------------------------------------------

    def poll(self, max_events: int) -> list[Event]:
        if self._closed:
            return []
        if self._state == "failed":
            raise BridgeStartError(self.failure)
        self._supervise(time.monotonic())
        return self.client.poll(max_events)

    def wait(self, timeout_s: float) -> None:
        if self._closed or self._state == "failed":
            return
        self.client.wait(timeout_s)

    @property
    def exhausted(self) -> bool:
        return self._closed or self.client.exhausted

    def subscribe(self, symbol: str) -> None:
        self.client.subscribe(symbol)
        if symbol not in self.symbols:
            self.symbols = (*self.symbols, symbol)
            self._cmd[self._cmd.index("--symbols") + 1:self._cmd.index("--pub")] = list(self.symbols)

    def unsubscribe(self, symbol: str) -> None:
        self.client.unsubscribe(symbol)

    @property
    def child_pid(self) -> int | None:
        return self._child.pid if self._child is not None and self._child.proc.poll() is None else None

    def close(self) -> None:
        """Stop reading, stop the child (stdin EOF + SIGTERM, SIGKILL after ``stop_timeout_s``), reap it."""
        if self._closed:
            return
        self._closed = True
        self.client.close()
        if self._child is not None:
            code = self._child.stop(self.stop_timeout_s)
            self.last_exit = describe_exit(code)
            log.info("feed bridge %d stopped (%s)", self._child.pid, self.last_exit)

    # -- supervision -----------------------------------------------------------------------

    def _supervise(self, now: float) -> None:
        child = self._child
        if self._state == "running":
            code = child.proc.poll()
            if code is not None:
                self._on_exit(code, now)
                return
            silent = now - max(self._running_since, self.client.last_message_at or 0.0)
            if silent > self.hang_timeout_s:
                log.error("feed bridge %d silent for %.1f s; killing it", child.pid, silent)
                child.kill()
                self._on_exit(child.proc.returncode, now)
                return
            if self._backoff > self.backoff_initial_s and now - self._running_since >= self.healthy_after_s:
                self._backoff = self.backoff_initial_s
        elif self._state == "backoff":
            if now >= self._restart_at:
                self.restarts += 1
                log.info("restarting the feed bridge (restart %d)", self.restarts)
                self._child = _Child(self._cmd, self._env)
                self._state = "starting"
                self._ready_deadline = now + self.ready_timeout_s
        elif self._state == "starting":
            try:
                info = child.ready.get_nowait()
            except queue.Empty:
                info = None
            if info is not None:
                self.endpoints = (info["pub"], info["rep"])
                self._note_orders(info)
                self.client.retarget(info["pub"], info["rep"])
                self._state = "running"
                self._running_since = now
                log.info("feed bridge %d ready again: %s", child.pid, info)
            elif child.proc.poll() is not None:
                self._on_exit(child.proc.returncode, now)
            elif now > self._ready_deadline:
                log.error("feed bridge %d not ready after %.1f s; killing it", child.pid, self.ready_timeout_s)
                child.kill()
                self._on_exit(child.proc.returncode, now)

    def _on_exit(self, code: int, now: float) -> None:
        self._child.join()
        self.exit_codes = (self.exit_codes + [code])[-10:]
        self.last_exit = describe_exit(code)
        if code == CONFIG_ERROR_EXIT:
            self._state = "failed"
            self.failure = f"feed bridge {self._child.pid} exited with a configuration error: {self._child.last_error()}"
            log.error("%s; not restarting it", self.failure)
            return
        log.error("feed bridge %d died (%s): %s; restarting in %.1f s", self._child.pid, self.last_exit,
                  self._child.last_error(), self._backoff)
        self._state = "backoff"
        self._restart_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self.backoff_max_s)

    def stats(self) -> dict:
        s = self.client.stats()
        s.update({
            "bridge_state": self._state,
            "child_pid": self.child_pid,
            "restarts": self.restarts,
            "exit_codes": list(self.exit_codes),
            "last_exit": self.last_exit,
            "next_backoff_s": self._backoff,
            "endpoints": list(self.endpoints),
            "order_endpoints": list(self.order_endpoints) if self.order_endpoints else None,
        })
        return s
