"""Market data in Valkey: the stream keys, the writer and the reader.

This module owns the key family

- ``stream:ticks:<SYM>``  trades (:class:`~pipelines.model.messages.Trade`)
- ``stream:book:<SYM>``   book snapshots and book updates

and everything that reads or writes those streams. Nothing else should build
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

The fields of an entry are :mod:`pipelines.persistence.codec`'s business.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import valkey
from valkey.exceptions import ResponseError

from pipelines.model.clock import NS_PER_MS
from pipelines.model.messages import Event
from pipelines.persistence.codec import EventCodec, decode_fields, event_codec, resp_bulk, resp_command
from pipelines.persistence.config import ValkeyConfig
from pipelines.persistence.connection import connect, scan_stream
from pipelines.persistence.write_behind import DUPLICATE, WriteBehind

__all__ = ["KINDS", "EventStore", "StreamWriter", "stream_key"]

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


def _parse_id(entry_id: bytes | str) -> tuple[int, int]:
    if isinstance(entry_id, str):
        entry_id = entry_id.encode()
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


# ---------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------


class StreamWriter:
    """Write-behind from the feed into the market-data streams.

    :meth:`enqueue` only appends to the bounded in-memory queue of a
    :class:`~pipelines.persistence.write_behind.WriteBehind` and returns: the
    feed must never wait on Valkey. Its thread drains the queue in chunks of
    ``cfg.flush_max_events`` (at most ``cfg.queue_max_events`` queued, the
    oldest dropped beyond), one pipelined round trip per chunk, and re-sends a
    chunk unchanged after a lost connection: entries of it that had already
    landed are rejected by id and count as ``duplicates``, so nothing is
    written twice.

    Pipelining note: valkey-py's pure-Python command packer costs ~30 us per
    XADD with ~20 arguments (no libvalkey here), which alone caps a core at
    ~30k events/s. :class:`_XaddSender` packs each XADD from a per-type RESP
    template (~3 us) and sends a chunk over a pooled connection exactly like
    ``pipeline(transaction=False).execute(raise_on_error=False)`` does: one
    write, then one reply per command, reply errors collected, not raised.
    """

    def __init__(self, url: str, password: str | None, cfg: ValkeyConfig, *, name: str = "valkey-writer"):
        self._wb = WriteBehind(
            url,
            password,
            name=name,
            sender=_XaddSender(cfg.maxlen),
            noun="event",
            max_queue=cfg.queue_max_events,
            chunk=cfg.flush_max_events,
            socket_timeout_s=cfg.socket_timeout_s,
            reconnect_initial_s=cfg.reconnect_initial_s,
            reconnect_max_s=cfg.reconnect_max_s,
            count_after_close_as="enqueue after close",
        )
        del password  # only the client's connection kwargs keep it

    def enqueue(self, events: list[Event]) -> None:
        """Queue ``events`` for writing; never blocks on Valkey, never raises for it.

        On overflow the oldest queued events are discarded (``dropped``); after
        :meth:`close` they are refused and counted as ``errors["enqueue after close"]``.
        """
        self._wb.submit(events)

    def flush(self, timeout_s: float | None = 10.0) -> bool:
        """Block until every event enqueued before this call is finished
        (written, duplicate, failed or dropped). False on timeout."""
        return self._wb.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush (up to ``timeout_s``), then stop the thread and close the client.

        Returns whether everything was flushed. Events still unwritten after
        that (server down) are given up and counted as ``errors["unwritten at close"]``.
        """
        return self._wb.close(timeout_s)

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._wb.connected

    def stats(self) -> dict[str, Any]:
        """The queue's counters under the feed's names: ``queue_len`` leaves out the
        ``inflight`` chunk."""
        s = self._wb.stats()
        return {
            "enqueued": s["submitted"],
            "written": s["written"],
            "duplicates": s["duplicates"],
            "dropped": s["dropped"],
            "errors": s["errors"],
            "reconnects": s["reconnects"],
            "connection_errors": s["connection_errors"],
            "queue_len": s["queued"] - s["inflight"],
            "inflight": s["inflight"],
            "connected": s["connected"],
            "last_error": s["last_error"],
        }


class _Batch:
    """One chunk turned into packed XADD commands.

    Built once and re-sent unchanged after a reconnect, so the ids stay the
    same and anything already written comes back as a duplicate. ``settled``:
    the replies of the events answered without the server (known duplicates,
    malformed events).
    """

    __slots__ = ("commands", "settled")

    def __init__(self) -> None:
        self.commands: list[bytes] = []
        self.settled: list[Any] = []


class _XaddSender:
    """Assigns the entry ids (see the module docstring) and packs the XADDs of a chunk."""

    def __init__(self, maxlen: int):
        self._maxlen_arg = resp_bulk(b"%d" % maxlen)
        self._last_id: dict[bytes, tuple[int, int]] = {}  # stream key -> (ms, seq) of its top
        self._headers: dict[tuple[type, str], tuple[bytes, bytes, EventCodec]] = {}

    def reset(self) -> None:
        self._last_id.clear()  # re-learn the stream tops lazily

    def prepare(self, client: valkey.Valkey, chunk: list[Event]) -> _Batch:
        """Assign ids and pack XADDs. Learns unknown stream tops first (one round trip)."""
        headers = self._headers
        last_id = self._last_id
        keyed = []
        unknown: dict[bytes, None] = {}
        batch = _Batch()
        for ev in chunk:
            try:
                h = headers.get((type(ev), ev.symbol)) or self._header(ev)
            except Exception as e:  # not an Event: reject it, never kill the thread
                batch.settled.append(e)
                continue
            keyed.append((h, ev))
            if h[0] not in last_id:
                unknown[h[0]] = None
        if unknown:
            self._learn_tops(client, list(unknown))

        commands = batch.commands
        maxlen_arg = self._maxlen_arg
        for (key, prefix, codec), ev in keyed:
            try:
                seq = ev.seq
                ms = ev.ts_event // 1_000_000
                top_ms, top_seq = last_id[key]
                if ms <= top_ms:
                    if seq <= top_seq:  # the stream already has this id or a later one
                        batch.settled.append(DUPLICATE)
                        continue
                    ms = top_ms
                entry_id = b"%d-%d" % (ms, seq)
                fields = codec.resp_fields(ev)
            except Exception as e:  # a field of the wrong type
                batch.settled.append(e)
                continue
            last_id[key] = (ms, seq)
            commands.append(b"".join((prefix, maxlen_arg, b"$%d\r\n%s\r\n" % (len(entry_id), entry_id), fields)))
        return batch

    def send(self, client: valkey.Valkey, batch: _Batch) -> list[Any]:
        return batch.settled + (_roundtrip(client, batch.commands) if batch.commands else [])

    def _header(self, ev: Event) -> tuple[bytes, bytes, EventCodec]:
        """(key, RESP prefix "XADD <key> MAXLEN ~", codec) for an event's type and symbol."""
        codec = event_codec(type(ev))
        key = stream_key(codec.kind, ev.symbol).encode()
        nargs = 6 + codec.nargs  # XADD key MAXLEN ~ n id + fields
        prefix = b"*%d\r\n" % nargs + b"".join(resp_bulk(a) for a in (b"XADD", key, b"MAXLEN", b"~"))
        h = self._headers[(type(ev), ev.symbol)] = (key, prefix, codec)
        return h

    def _learn_tops(self, client: valkey.Valkey, keys: list[bytes]) -> None:
        replies = _roundtrip(client, [resp_command(b"XREVRANGE", k, b"+", b"-", b"COUNT", b"1") for k in keys])
        learned = {}
        for key, reply in zip(keys, replies):
            if isinstance(reply, ResponseError):  # e.g. WRONGTYPE: let XADD report it
                learned[key] = (0, 0)
            elif reply:
                learned[key] = _parse_id(reply[0][0])
            else:
                learned[key] = (0, 0)
        self._last_id.update(learned)


def _roundtrip(client: valkey.Valkey, commands: list[bytes]) -> list[Any]:
    """Send packed commands in one write, read one reply each (a plain pipeline).

    Reply errors are returned in place; connection errors propagate after the
    connection is discarded (its remaining replies would be out of step).
    """
    pool = client.connection_pool
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
        """``client`` must return bytes (``decode_responses=False``, as
        :func:`~pipelines.persistence.connection.connect` makes it)."""
        self.client = client
        self.lateness_ms = lateness_ms

    @classmethod
    def from_url(cls, url: str, password: str | None = None, **kwargs: Any) -> "EventStore":
        return cls(connect(url, password), **kwargs)

    # -- raw iteration --------------------------------------------------------

    def _scan(self, key: str, lo: str, hi: str) -> Iterator[tuple[bytes, dict]]:
        """XRANGE key lo hi, in pages; yields (id, fields)."""
        return scan_stream(self.client.xrange, key, lo, hi, count=self.PAGE)

    def _rscan(self, key: str, hi: str = "+", lo: str = "-") -> Iterator[tuple[bytes, dict]]:
        """XREVRANGE key hi lo, in pages; yields (id, fields) newest first."""
        return scan_stream(self.client.xrevrange, key, hi, lo, count=self.PAGE)

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
        lo = str(max(0, t0_ns // NS_PER_MS))
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
        for _id, fields in self._scan(stream_key(kind, symbol), str(max(0, t0_ns // NS_PER_MS)), "+"):
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

