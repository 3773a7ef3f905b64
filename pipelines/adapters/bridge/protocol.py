"""The bridge wire format: one PUB stream of event batches and heartbeats, one REP command socket.

This module owns the bridge's ports and every byte the bridge puts on the wire.
Every message starts with the protocol :data:`VERSION`; a peer speaking another
version gets a :class:`VersionMismatch` naming both versions.

**PUB** (default port :data:`DEFAULT_PUB_PORT`), two frames ``[topic, payload]``,
payload = one orjson array:

- event batch, topic ``ev.<STREAM>|`` (the ``|`` ends the name, so a prefix
  subscription to ``ev.WDOZ26|`` never matches ``WDOZ26X``)::

      [VERSION, "b", incarnation, stream, first_seq, rows]

  A stream is one symbol. ``rows`` are that stream's consecutive events, so the
  i-th row has seq ``first_seq + i``: the bridge's own per-stream sequence,
  independent of the pipeline's seq (the FeedActor stamps that later). A row is
  the event's field values without ``symbol`` and ``seq`` (both implied), led by
  a kind code: ``[KIND_CODE, ts_event, ts_recv, *other fields]``. Decoded events
  carry ``seq=0`` and the ``ts_recv`` the producer set.
- heartbeat, topic ``hb``, every ``heartbeat_s``::

      [VERSION, "h", incarnation, ts_ns, {stream: last_seq}, exhausted, stats]

  ``last_seq`` lets a subscriber see a gap at the tail of a stream (no later
  batch would reveal it); a new ``incarnation`` id means the bridge restarted and
  its streams started again at seq 1.

**REP** (default port :data:`DEFAULT_REP_PORT`), one frame each way, orjson objects.
Requests ``{"v": VERSION, "cmd": ..., args}``; replies ``{"v": VERSION, "ok": bool, ...}``
with ``"error"`` (one line) when ``ok`` is false. Commands and their arguments:
see :data:`COMMANDS`. ``resync`` answers the events ``[from_seq, to_seq]`` still in
the bridge's ring; when ``from_seq`` has already left the ring the reply says
``"gone": true`` and ``first_available`` (and carries what is still there).
"""

from __future__ import annotations

import time
from typing import Any, Iterable, NamedTuple

import orjson

from pipelines.model.messages import BookSnapshot, BookUpdate, Event, Trade
from pipelines.data.validation import Malformed

VERSION = 1

# Ports 5555-5561 belong to pipelines.edges.zmq; the bridge takes the next two.
DEFAULT_PUB_PORT = 5562
DEFAULT_REP_PORT = 5563

HEARTBEAT_TOPIC = b"hb"
EVENT_TOPIC_PREFIX = b"ev."

# Wire kind code per event type, and the row length each one must have
# (kind code + ts_event + ts_recv + the fields after seq).
KIND_CODES: dict[type, int] = {Trade: 0, BookSnapshot: 1, BookUpdate: 2}
_ROW_LEN = {code: 3 + len(cls._fields) - 4 for cls, code in KIND_CODES.items()}

# cmd -> required argument names (and their types); optional ones are documented per command.
COMMANDS: dict[str, dict[str, type]] = {
    "subscribe": {"symbol": str},
    "unsubscribe": {"symbol": str},
    "resync": {"stream": str, "from_seq": int},  # optional: to_seq (int), max_events (int)
    "status": {},
}


class ProtocolError(ValueError):
    """A message that does not follow this protocol. ``str(err)`` is one line."""


class VersionMismatch(ProtocolError):
    """The peer speaks another protocol version."""

    def __init__(self, theirs: Any):
        self.theirs = theirs
        super().__init__(f"bridge protocol version mismatch: this side speaks {VERSION}, the peer sent {theirs!r}")


class Batch(NamedTuple):
    incarnation: str
    stream: str
    first_seq: int
    rows: list


class Heartbeat(NamedTuple):
    incarnation: str
    ts_ns: int
    last_seqs: dict[str, int]
    exhausted: bool
    stats: dict


def event_topic(stream: str) -> bytes:
    """The PUB topic of one stream's batches."""
    return EVENT_TOPIC_PREFIX + stream.encode("ascii") + b"|"


# -- events <-> rows ------------------------------------------------------------------


def encode_rows(events: Iterable[Event]) -> list[tuple]:
    """Wire rows for one stream's events (symbol and seq dropped: the batch header implies them)."""
    codes = KIND_CODES
    return [(codes[type(e)], e[1], e[2], *e[4:]) for e in events]


_new = tuple.__new__


class BadRows(ProtocolError):
    """Some rows of a batch are malformed; the others decoded. ``events`` holds one entry per
    row, in order: the decoded events, and a :class:`~pipelines.data.validation.Malformed` in place
    of each bad row (so the i-th entry still has seq ``first_seq + i``); ``bad`` counts them."""

    def __init__(self, message: str, events: list, bad: int):
        super().__init__(message)
        self.events = events
        self.bad = bad


def _bad_row(stream: str, r: Any, err: Exception | None) -> Malformed:
    """The placeholder of a malformed row, saying what is wrong with it (never raises)."""
    try:
        if type(r) is not list and type(r) is not tuple:
            detail = f"a {type(r).__name__}, not a list"
        elif not (r and type(r[0]) is int and r[0] in _ROW_LEN and len(r) == _ROW_LEN[r[0]]):
            detail = f"kind {repr(r[0])[:20] if r else None} with {len(r)} values"
        elif type(r[2]) is not int:
            detail = f"ts_recv {repr(r[2])[:30]} is not an integer"
        else:
            detail = f"{type(err).__name__}: {str(err)[:80]}"
    except Exception as e:
        detail = f"unreadable row ({type(e).__name__})"
    return Malformed(stream, 0, time.time_ns(), 0, f"bad event row in stream {stream}: {detail}")


def decode_rows(stream: str, rows: list) -> list[Event]:
    """Events from wire rows, ``seq=0``, one per row, in order.

    Only each row's *shape* is checked here (a list led by an int kind code, that kind's
    length, an int ``ts_recv``, book arrays that make tuples): field values are the
    Validator's job, so a well-shaped row holding a None or a str decodes to an event the
    Validator rejects, counted by reason. ``ts_recv`` is checked because the client reads
    it itself (feed lag).

    A row of the wrong shape raises :class:`BadRows`, a :class:`ProtocolError` that still
    carries every row's result, a :class:`~pipelines.data.validation.Malformed` standing in for
    each bad row. A caller that drops the batch on a ProtocolError stays correct; the
    BridgeClient delivers ``err.events`` instead, so the good rows are not lost and the bad
    ones are counted by the Validator (``bad_row``). ``rows`` not a list at all: a plain
    :class:`ProtocolError`.
    """
    if type(rows) is not list and type(rows) is not tuple:
        raise ProtocolError(f"bad event rows in stream {stream}: a {type(rows).__name__}, not a list")
    out: list = []
    append = out.append
    trade_len, book_len, update_len = _ROW_LEN[0], _ROW_LEN[1], _ROW_LEN[2]
    bad: list[int] = []
    for r in rows:
        try:
            if type(r) is list or type(r) is tuple:
                code = r[0]
                n = len(r)
                # Exact int kind code and ts_recv: True == 1 and 1.0 == 1 would pass an == test.
                # tuple.__new__ skips the NamedTuple's Python __new__ (half the cost); the length
                # checks keep a short or long row from making a wrong event.
                if type(code) is int and type(r[2]) is int:
                    if code == 1 and n == book_len:
                        append(_new(BookSnapshot, (stream, r[1], r[2], 0, tuple(r[3]), tuple(r[4]), tuple(r[5]), tuple(r[6]))))
                        continue
                    if code == 0 and n == trade_len:
                        append(_new(Trade, (stream, r[1], r[2], 0, *r[3:])))
                        continue
                    if code == 2 and n == update_len:
                        append(_new(BookUpdate, (stream, r[1], r[2], 0, *r[3:])))
                        continue
            err = None
        except Exception as e:  # IndexError (short row), TypeError (a book array that is a number)...
            err = e
        bad.append(len(out))
        append(_bad_row(stream, r, err))
    if bad:
        more = f" (and {len(bad) - 1} more of {len(out)} rows)" if len(bad) > 1 else ""
        raise BadRows(out[bad[0]].detail + more, out, len(bad))
    return out


# -- PUB messages ---------------------------------------------------------------------


def encode_batch(incarnation: str, stream: str, first_seq: int, rows: list) -> list[bytes]:
    """The two frames of one event batch."""
    return [event_topic(stream), orjson.dumps([VERSION, "b", incarnation, stream, first_seq, rows])]


def encode_heartbeat(incarnation: str, ts_ns: int, last_seqs: dict[str, int], exhausted: bool, stats: dict) -> list[bytes]:
    """The two frames of one heartbeat. Stats values that JSON cannot hold are sent as strings."""
    payload = orjson.dumps([VERSION, "h", incarnation, ts_ns, last_seqs, exhausted, stats], default=str)
    return [HEARTBEAT_TOPIC, payload]


def decode_message(frames: list[bytes]) -> Batch | Heartbeat:
    """A PUB message from its frames. Raises :class:`VersionMismatch` or :class:`ProtocolError`."""
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames (topic, payload), got {len(frames)}")
    try:
        msg = orjson.loads(frames[1])
    except orjson.JSONDecodeError as e:
        raise ProtocolError(f"payload is not JSON: {e}") from None
    if not isinstance(msg, list) or len(msg) < 2:
        raise ProtocolError("payload is not a bridge message array")
    if msg[0] != VERSION:
        raise VersionMismatch(msg[0])
    kind = msg[1]
    if kind == "b" and len(msg) == 6:
        _, _, inc, stream, first, rows = msg
        if isinstance(inc, str) and isinstance(stream, str) and type(first) is int and first >= 1 and isinstance(rows, list):
            return Batch(inc, stream, first, rows)
        raise ProtocolError("malformed event batch header")
    if kind == "h" and len(msg) == 7:
        _, _, inc, ts, last, exhausted, stats = msg
        if (isinstance(inc, str) and type(ts) is int and isinstance(last, dict)
                and all(type(v) is int for v in last.values()) and isinstance(stats, dict)):
            return Heartbeat(inc, ts, last, bool(exhausted), stats)
        raise ProtocolError("malformed heartbeat")
    raise ProtocolError(f"unknown message kind {str(kind)[:20]!r}")


# -- REP commands ----------------------------------------------------------------------


def encode_request(cmd: str, **args: Any) -> bytes:
    return orjson.dumps({"v": VERSION, "cmd": cmd, **args})


def load_request(payload: bytes) -> dict:
    """The request object of either REP/ROUTER socket of the bridge (market data and orders), its
    version checked. Raises :class:`ProtocolError` naming what is wrong, :class:`VersionMismatch`."""
    try:
        req = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ProtocolError("request is not JSON") from None
    if not isinstance(req, dict):
        raise ProtocolError("request is not a JSON object")
    if "v" not in req:
        raise ProtocolError("request has no protocol version 'v'")
    if req["v"] != VERSION:
        raise VersionMismatch(req["v"])
    return req


def decode_request(payload: bytes) -> tuple[str, dict]:
    """(cmd, args) of a request. Raises :class:`ProtocolError` naming what is wrong."""
    req = load_request(payload)
    cmd = req.get("cmd")
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {str(cmd)[:40]!r} (known: {', '.join(COMMANDS)})")
    for name, typ in COMMANDS[cmd].items():
        value = req.get(name)
        if value is None:
            raise ProtocolError(f"{cmd}: missing argument {name!r}")
        if type(value) is not typ:
            raise ProtocolError(f"{cmd}: argument {name!r} must be {typ.__name__}, got {type(value).__name__}")
    return cmd, {k: v for k, v in req.items() if k not in ("v", "cmd")}


def encode_reply(ok: bool, **fields: Any) -> bytes:
    return orjson.dumps({"v": VERSION, "ok": ok, **fields}, default=str)


def error_reply(problem: str) -> bytes:
    return encode_reply(False, error=problem)


def decode_reply(payload: bytes) -> dict:
    """A reply object. Raises :class:`VersionMismatch` or :class:`ProtocolError`."""
    try:
        rep = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ProtocolError("reply is not JSON") from None
    if not isinstance(rep, dict) or "ok" not in rep:
        raise ProtocolError("reply is not a bridge reply object")
    if rep.get("v") != VERSION:
        raise VersionMismatch(rep.get("v"))
    return rep
