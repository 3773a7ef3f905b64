"""Order-flow state in Valkey: the writer and the reader of two key families.

- ``hmarl:flow_state:<SYM>``  STRING, the newest :class:`~pipelines.model.messages.FlowState`
  of the symbol, with a TTL (``ttl_s``, default 1 h): a stale state disappears
  instead of being served as current when the feed stops.
- ``hmarl:flow_history:<SYM>`` STREAM of every FlowState, trimmed to about
  ``history_maxlen`` entries (``MAXLEN ~``), one field ``json``.

Both hold the same wire form: ``orjson.dumps(to_dict(state))``, i.e.
``{"symbol", "ts_event", "ts_recv", "seq", "values": {...}, "kind": "flow"}``;
NaN (a feature still warming up) is stored as ``null`` and read back as None.

History entry ids are ``<ms>-<seq>`` with ``ms = ts_event // 1_000_000``,
raised to the ms of the previous entry when event time steps backwards, so ids
never go backwards and a re-sent state is rejected by id (a duplicate, not a
second copy). An entry's id ms is therefore never below its ``ts_event`` ms, but
may be above it: readers look ``lateness_ms`` past the requested time and filter
on the decoded ``ts_event``.

Nothing else should build these keys; all times are event time (ns), never the
wall clock, because the data may be replayed or simulated.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Iterator

import orjson
import valkey

from pipelines.model.clock import NS_PER_MS
from pipelines.model.messages import FlowState, to_dict
from pipelines.persistence.connection import scan_stream
from pipelines.persistence.write_behind import WriteBehind

__all__ = ["FlowStateWriter", "FlowStore", "flow_history_key", "flow_state_key"]



def flow_state_key(symbol: str) -> str:
    """STRING with the newest FlowState of ``symbol`` (expires after ``ttl_s``)."""
    return f"hmarl:flow_state:{symbol}"


def flow_history_key(symbol: str) -> str:
    """STREAM with every FlowState of ``symbol``, ids ``<ms>-<seq>``."""
    return f"hmarl:flow_history:{symbol}"


class FlowStateWriter:
    """Writes FlowStates through a :class:`~pipelines.persistence.write_behind.WriteBehind`: never blocks.

    Ids are assigned here, from the last id this writer gave each stream. A
    state whose id would not be above it was written already (a retry) and is
    skipped (``skipped`` in :meth:`stats`), without touching the state key
    either. A new writer (process restart) starts without that memory: states
    it re-sends are rejected by Valkey and counted as ``duplicates``, but the
    state key is still overwritten with the newest state of the batch.
    """

    def __init__(self, url: str, password: str | None, *, ttl_s: int = 3600, history_maxlen: int = 100_000,
                 max_queue: int = 100_000, **write_behind_kwargs: Any):
        self._ttl_s = ttl_s
        self._maxlen = history_maxlen
        self._wb = WriteBehind(url, password, name="flow-store", max_queue=max_queue, **write_behind_kwargs)
        self._lock = threading.Lock()  # ids must reach the queue in the order they were assigned
        self._last_id: dict[str, tuple[int, int]] = {}  # history key -> (ms, seq) of the last entry sent
        self._skipped = 0

    def write(self, states: list[FlowState]) -> None:
        """Queue ``states`` (oldest first): one XADD each, then one SET per symbol.
        Never blocks on Valkey; RuntimeError after :meth:`close`."""
        with self._lock:
            ops: list[tuple] = []
            newest: dict[str, bytes] = {}  # symbol -> json of its last state sent in this batch
            for st in states:
                key = flow_history_key(st.symbol)
                last = self._last_id.get(key, (0, 0))
                entry = (max(st.ts_event // NS_PER_MS, last[0]), st.seq)
                if entry <= last:
                    self._skipped += 1
                    continue
                self._last_id[key] = entry
                blob = orjson.dumps(to_dict(st), option=orjson.OPT_SERIALIZE_NUMPY)
                ops.append(("XADD", key, "MAXLEN", "~", self._maxlen, "%d-%d" % entry, "json", blob))
                newest[st.symbol] = blob
            ops.extend(("SET", flow_state_key(sym), blob, "EX", self._ttl_s) for sym, blob in newest.items())
            if ops:
                self._wb.submit(ops)

    def flush(self, timeout_s: float | None = 10.0) -> bool:
        return self._wb.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        return self._wb.close(timeout_s)

    @property
    def connected(self) -> bool:
        return self._wb.connected

    def stats(self) -> dict[str, Any]:
        """The write-behind counters (per Valkey op) plus ``skipped`` (states already sent)."""
        with self._lock:
            skipped = self._skipped
        return {**self._wb.stats(), "skipped": skipped}


class FlowStore:
    """Read side: the current flow state, the state as of a time, a window of history."""

    PAGE = 10_000  # entries per XRANGE call: bounds memory per round trip

    def __init__(self, client: valkey.Valkey, *, lateness_ms: int = 2_000):
        """``client`` as :func:`~pipelines.persistence.connection.connect` makes it (bytes replies).

        ``lateness_ms``: how far past a requested time the id scan goes, to find
        states stored under a later id ms because event time stepped backwards."""
        self.client = client
        self.lateness_ms = lateness_ms

    def get_flow_state(self, symbol: str, timestamp_ns: int | None = None) -> dict | None:
        """Without ``timestamp_ns``: the current state (None once it expired).

        With it: the newest history entry (highest id) whose ``ts_event <=
        timestamp_ns``, None when there is none."""
        if timestamp_ns is None:
            raw = self.client.get(flow_state_key(symbol))
            return None if raw is None else orjson.loads(raw)
        hi = str(timestamp_ns // NS_PER_MS + self.lateness_ms)
        # Usually one of the first few entries matches: every entry with id ms
        # below timestamp's ms does. Start small, grow the page while scanning.
        for st in self._scan(self.client.xrevrange, flow_history_key(symbol), hi, "-", count=16):
            if st["ts_event"] <= timestamp_ns:
                return st
        return None

    def get_flow_history(self, symbol: str, minutes_back: float, until_ns: int | None = None) -> list[dict]:
        """States with ``until_ns - minutes_back min < ts_event <= until_ns``, in stream order (oldest first).

        ``until_ns`` defaults to the ``ts_event`` of the newest entry: event
        time, not the wall clock."""
        if not (minutes_back > 0 and math.isfinite(minutes_back)):  # NaN fails the first test
            raise ValueError(f"minutes_back must be > 0, got {minutes_back!r}")
        key = flow_history_key(symbol)
        if until_ns is None:
            top = self.client.xrevrange(key, "+", "-", count=1)
            if not top:
                return []
            until_ns = orjson.loads(top[0][1][b"json"])["ts_event"]
        since_ns = until_ns - int(minutes_back * 60e9)
        lo = str(max(0, since_ns // NS_PER_MS))  # an id ms is never below its ts_event ms
        hi = str(until_ns // NS_PER_MS + self.lateness_ms)
        return [st for st in self._scan(self.client.xrange, key, lo, hi) if since_ns < st["ts_event"] <= until_ns]

    def _scan(self, fetch: Any, key: str, start: str, stop: str, count: int = PAGE) -> Iterator[dict]:
        """Decoded entries of XRANGE or XREVRANGE (``fetch``) from ``start`` to ``stop``, in pages."""
        for _id, fields in scan_stream(fetch, key, start, stop, count=count, max_count=self.PAGE):
            yield orjson.loads(fields[b"json"])
