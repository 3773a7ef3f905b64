"""The risk engine in Valkey: its state, its events and the operator's commands.

Keys (values are JSON):

- ``hmarl:risk:<account>``           STRING, the engine's state (``RiskEngine.state()``), no TTL: a
  restarted engine loads it, so HALTED stays HALTED
- ``hmarl:risk:stream``              STREAM of every RiskEvent (denials and state changes), one field
  ``json``, trimmed to about ``stream_maxlen``; each one also PUBLISHed on the channel of that name
- ``hmarl:risk:stream:seen``         HASH, per writer the number of the last event it appended
  (re-sent chunks are not appended twice); expires a day after the last event
- ``hmarl:risk:commands:<account>``  STREAM of operator commands (``scripts/ctl.py``), one field
  ``json``: ``command``, ``who``, ``reason``, ``sent_at``; trimmed to about ``commands_maxlen``

Commands travel by stream, not pub/sub: the engine reads with XREAD from the id of the last
command it applied, which it keeps in its own state, so a command sent while the engine
restarts waits for it instead of being lost, and none is applied twice. An engine without a
stored state starts from the stream's newest id (:func:`command_tail`): commands older than
the engine itself are not applied.

State and events are written behind (:class:`~pipelines.persistence.write_behind.WriteBehind`:
never blocking, retried after a lost connection); :meth:`RiskStore.commit` waits for them,
as a command's acknowledgement must. Commands are sent and everything is read synchronously,
with a plain client (the module functions, which ``ctl.py`` uses without a writer).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
import valkey

from pipelines.model.messages import to_dict
from pipelines.model.orders import RiskEvent
from pipelines.model.settings import ACCOUNT_RE
from pipelines.persistence.connection import CONN_ERRORS, RateLimit, connect, redact, suppressed_note
from pipelines.persistence.write_behind import WriteBehind

log = logging.getLogger("quantumtrader.risk.store")

__all__ = ["RISK_STREAM", "RiskStateUnavailable", "RiskStore", "command_tail", "commands_key", "read_commands",
           "read_state", "send_command", "state_key"]

RISK_STREAM = "hmarl:risk:stream"
SEEN_KEY = "hmarl:risk:stream:seen"
SEEN_TTL_S = 86_400
COMMANDS_MAXLEN = 1_000

# KEYS: stream, seen   ARGV: writer, event number, maxlen, json, seen TTL (s)
_APPEND_ONCE_LUA = """
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[2]) <= last then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'json', ARGV[4])
redis.call('PUBLISH', KEYS[1], ARGV[4])
return 1
"""


class RiskStateUnavailable(Exception):
    """The stored state could not be read (Valkey unreachable, or the key holds no JSON object):
    the engine cannot know whether it was halted."""


def _check_account(account: Any) -> str:
    if not isinstance(account, str) or not ACCOUNT_RE.match(account) or account == "stream":
        raise ValueError(f"bad account name {account!r}: 1-32 letters, digits, '_' or '-', not 'stream'")
    return account


def state_key(account: str) -> str:
    return f"hmarl:risk:{_check_account(account)}"


def commands_key(account: str) -> str:
    return f"hmarl:risk:commands:{_check_account(account)}"


def send_command(client: valkey.Valkey, account: str, command: str, who: str, reason: str = "",
                 sent_at: str = "", maxlen: int = COMMANDS_MAXLEN) -> str:
    """XADD one command for ``account``'s engine; returns its stream id (what the engine's
    ``last_command.id`` will say once applied). Raises for an unreachable server."""
    blob = orjson.dumps({"command": command, "who": who, "reason": reason, "sent_at": sent_at})
    entry_id = client.xadd(commands_key(account), {"json": blob}, maxlen=maxlen, approximate=True)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def read_commands(client: valkey.Valkey, account: str, after: str, count: int = 100,
                  block_ms: int | None = None) -> list[tuple[str, dict]]:
    """The commands after stream id ``after``, oldest first, as (id, fields). An entry that is
    not a JSON object comes as (id, {}): the engine refuses it and moves past it. ``block_ms``
    (below the client's socket timeout) waits that long for one. Raises for an unreachable server."""
    reply = client.xread({commands_key(account): after}, count=count, block=block_ms)
    out = []
    for _key, entries in reply or ():
        for entry_id, fields in entries:
            try:
                d = orjson.loads(fields.get(b"json", b""))
            except orjson.JSONDecodeError:
                d = None
            out.append((entry_id.decode(), d if isinstance(d, dict) else {}))
    return out


def command_tail(client: valkey.Valkey, account: str) -> str:
    """The id of ``account``'s newest command ("0-0" when none): where a fresh engine starts reading."""
    top = client.xrevrange(commands_key(account), "+", "-", count=1)
    return top[0][0].decode() if top else "0-0"


def read_state(client: valkey.Valkey, account: str) -> dict | None:
    """``account``'s stored engine state, or None when none was ever stored. Raises
    :class:`RiskStateUnavailable` when it cannot be read."""
    try:
        raw = client.get(state_key(account))
    except CONN_ERRORS as e:
        raise RiskStateUnavailable(f"Valkey unreachable ({type(e).__name__}: {e})") from None
    if raw is None:
        return None
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        d = None
    if not isinstance(d, dict):
        raise RiskStateUnavailable(f"{state_key(account)} holds no JSON object")
    return d


class RiskStore:
    """The engine side: state and events written behind, commands read (module docstring).

    Bad records are counted in ``stats()["rejected"]`` and dropped; a failed command read
    returns [] and is counted in ``stats()["read_errors"]``. ``writer_id`` names this store's
    events for that dedupe (two stores must not share one). ``write_behind_kwargs`` go to the
    writer (``max_queue``, ``chunk``, ``socket_timeout_s``, ``reconnect_*``)."""

    def __init__(self, url: str, password: str | None = None, *, stream_maxlen: int = 100_000,
                 writer_id: str | None = None, **write_behind_kwargs: Any):
        if stream_maxlen < 1:
            raise ValueError(f"stream_maxlen must be >= 1, got {stream_maxlen}")
        self._url = url
        self._maxlen = stream_maxlen
        self._client = connect(url, password, socket_timeout=write_behind_kwargs.get("socket_timeout_s", 2.0))
        self._wb = WriteBehind(url, password, name="risk-store", **write_behind_kwargs)
        del password  # only the clients' connection kwargs keep it
        # This store's events are numbered 1, 2, ... under its writer id: a number not above the
        # last one appended under that id is a re-sent chunk. A random id per store by default.
        self._writer = writer_id or uuid.uuid4().hex[:12]
        self._appended = 0
        self._rejected: dict[str, int] = {}
        self._read_errors = 0
        self._ratelimit = RateLimit(10.0)

    def save_state(self, account: str, state: dict) -> None:
        """SET ``hmarl:risk:<account>`` (no TTL), queued."""
        try:
            key = state_key(account)
            blob = orjson.dumps(state) if isinstance(state, dict) else None
        except (ValueError, TypeError, orjson.JSONEncodeError) as e:  # a bad name, or a value JSON cannot hold
            return self._reject("state", f"{type(e).__name__}: {e}")
        if blob is None:
            return self._reject("state", f"expected a dict, got {type(state).__name__}")
        self._wb.submit([("SET", key, blob)])

    def publish(self, events: list[RiskEvent]) -> None:
        """Append each event to ``hmarl:risk:stream`` and PUBLISH it, queued; once each, even
        when the writer re-sends a chunk after a lost connection."""
        ops = []
        for ev in events:
            if not isinstance(ev, RiskEvent):
                self._reject("event", f"expected a RiskEvent, got {type(ev).__name__}")
                continue
            try:
                blob = orjson.dumps(to_dict(ev))
            except orjson.JSONEncodeError as e:
                self._reject("event", str(e))
                continue
            self._appended += 1
            ops.append(("EVAL", _APPEND_ONCE_LUA, 2, RISK_STREAM, SEEN_KEY, self._writer, self._appended,
                        self._maxlen, blob, SEEN_TTL_S))
        self._wb.submit(ops)

    def load_state(self, account: str) -> dict | None:
        """See :func:`read_state`."""
        return read_state(self._client, account)

    def read_commands(self, account: str, after: str, count: int = 100, block_ms: int | None = None
                      ) -> list[tuple[str, dict]]:
        """See :func:`read_commands`; [] (counted) when Valkey is unreachable."""
        try:
            return read_commands(self._client, account, after, count, block_ms)
        except CONN_ERRORS as e:
            self._read_errors += 1
            suppressed = self._ratelimit("read")
            if suppressed is not None:
                log.warning("reading risk commands from %s failed (%s: %s)%s", redact(self._url),
                            type(e).__name__, e, suppressed_note(suppressed))
            return []

    def command_tail(self, account: str) -> str:
        """See :func:`command_tail` (raises for an unreachable server)."""
        return command_tail(self._client, account)

    def commit(self, timeout_s: float = 2.0) -> bool:
        """Wait up to ``timeout_s`` for the writes queued so far, during an outage too: a state
        change must be stored before it is acknowledged. False when they are not written yet
        (they stay queued)."""
        return self._wb.flush(timeout_s)

    def stats(self) -> dict[str, Any]:
        return {"write_behind": self._wb.stats(), "events_appended": self._appended,
                "rejected": dict(self._rejected), "read_errors": self._read_errors}

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush (up to ``timeout_s``), stop the writer, close the connection; may be called again."""
        ok = self._wb.close(timeout_s)
        self._client.close()
        return ok

    def _reject(self, kind: str, detail: str) -> None:
        self._rejected[kind] = self._rejected.get(kind, 0) + 1
        suppressed = self._ratelimit(kind)
        if suppressed is not None:
            log.warning("risk %s not stored: %s%s", kind, detail, suppressed_note(suppressed))
