"""Replay recorded Parquet partitions (see ``recorder.py``) as a FeedSource.

The recorded tree is ``<root>/<kind>/symbol=<SYM>/date=<YYYY-MM-DD>/*.parquet``.
For each requested symbol the source walks its date partitions in order,
loading **one date at a time** (all kinds of that symbol and day), sorting
them by ``(ts_event, original seq)`` and merging the symbols with a heap. A
day is the natural unit: it bounds memory to one session per symbol, and the
dates are Sao Paulo days of ``ts_event`` so partitions never overlap in time.

Events leave with ``seq=0`` (the FeedActor re-stamps sequence numbers, as for
any source) and ``ts_recv`` = wall clock at the poll that returns them.

Pacing (``cfg.speed``): ``1`` reproduces the original event-time gaps in wall
time, ``N`` plays N times faster, ``0`` as fast as polled. Due times are
computed from one anchor (first event's ts_event, monotonic clock at the first
poll), never from the previous event, so rounding and poll jitter do not
accumulate into drift.

Time filters: ``cfg.start`` (inclusive) and ``cfg.end`` (exclusive) are parsed
with ``timeutil.parse_time`` (naive = Sao Paulo). A date-only string means
that Sao Paulo day: ``start: 2026-11-23`` begins at its 00:00 and
``end: 2026-11-23`` ends at the next midnight, so start=end=D replays day D.

A corrupt or unreadable file is skipped with a logged, counted error
(``stats()``): one bad file should not cost a whole replay. A symbol with no
recordings at all is a configuration mistake and raises :class:`ReplayError`.
"""

from __future__ import annotations

import heapq
import logging
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.adapters.config import ReplayConfig
from pipelines.model.messages import Event
from pipelines.adapters.base import MIN_WAIT_S
from pipelines.adapters.files.recorder import MESSAGE_TYPES
from pipelines.model.clock import NS_PER_S, SAO_PAULO, day_bounds_ns, parse_time, to_ns

log = logging.getLogger("quantumtrader.replay")


class ReplayError(ValueError):
    """The replay configuration cannot be satisfied (e.g. no recordings for a symbol)."""


def parse_bound(text: str | None, *, is_end: bool) -> int | None:
    """ns bound from an ISO date/datetime; a date-only end covers that whole day."""
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None and len(text) == 10:
        if is_end:
            day += timedelta(days=1)
        return to_ns(datetime.combine(day, datetime.min.time(), tzinfo=SAO_PAULO))
    try:
        return to_ns(parse_time(text))
    except ValueError as e:
        raise ReplayError(f"replay.{'end' if is_end else 'start'}: {e}") from None


class ReplaySource:
    """FeedSource over a recorded Parquet tree."""

    def __init__(self, cfg: ReplayConfig, symbols: Sequence[str], resume_after_ns: dict[str, int] | None = None):
        self.cfg = cfg
        self.symbols = tuple(symbols)
        # After a feed restart: skip what was already replayed (events at or before
        # the last stored event time of each symbol).
        self._resume_after = dict(resume_after_ns or {})
        self.root = Path(cfg.path)
        self._start = parse_bound(cfg.start, is_end=False)
        self._end = parse_bound(cfg.end, is_end=True)
        if self._start is not None and self._end is not None and self._end <= self._start:
            raise ReplayError(f"replay.end ({cfg.end}) must be after replay.start ({cfg.start})")
        self._stats: dict[str, Any] = {
            "files_read": 0,
            "files_failed": 0,
            "rows_read": 0,
            "events_out": 0,
            "errors": [],  # last few "path: reason" strings
        }
        partitions = {sym: self._discover(sym) for sym in self.symbols}
        self._stats["dates"] = {sym: sorted(d.isoformat() for d in parts) for sym, parts in partitions.items()}
        # Heap-merge per-symbol streams; the symbol index breaks exact (ts, seq) ties deterministically.
        streams = [self._symbol_stream(i, partitions[sym]) for i, sym in enumerate(self.symbols)]
        self._merged: Iterator[tuple[int, int, int, Event]] = heapq.merge(*streams)
        self._next: Event | None = None
        self._done = False
        self._anchor_event_ns: int | None = None
        self._anchor_wall_ns: int | None = None

    # -- discovery and loading -------------------------------------------
    def _discover(self, symbol: str) -> dict[date, list[Path]]:
        """Files of ``symbol`` per Sao Paulo date, all kinds, pruned by the time filter."""
        found: dict[date, list[Path]] = {}
        any_file = False
        for kind in MESSAGE_TYPES:
            sym_dir = self.root / kind / f"symbol={symbol}"
            if not sym_dir.is_dir():
                continue
            for date_dir in sym_dir.glob("date=*"):
                try:
                    day = date.fromisoformat(date_dir.name[len("date="):])
                except ValueError:
                    self._error(date_dir, "not a date=YYYY-MM-DD partition")
                    continue
                files = sorted(p for p in date_dir.glob("*.parquet") if not p.name.startswith("."))
                if not files:
                    continue
                any_file = True
                lo, hi = day_bounds_ns(day)
                if (self._end is not None and lo >= self._end) or (self._start is not None and hi <= self._start):
                    continue
                found.setdefault(day, []).extend(files)
        if not any_file:
            raise ReplayError(
                f"no recordings for symbol {symbol!r} under {self.root} "
                f"(expected {self.root}/<tick|book|book_update>/symbol={symbol}/date=YYYY-MM-DD/*.parquet)"
            )
        return dict(sorted(found.items()))

    def _symbol_stream(self, index: int, partitions: dict[date, list[Path]]) -> Iterator[tuple[int, int, int, Event]]:
        """(ts_event, seq, symbol index, event) for one symbol, one date loaded at a time."""
        after = self._resume_after.get(self.symbols[index], -1)
        for files in partitions.values():
            rows: list[tuple[int, int, int, Event]] = []
            for path in files:
                rows.extend((ev.ts_event, ev.seq, index, ev) for ev in self._read_file(path) if ev.ts_event > after)
            rows.sort(key=lambda r: (r[0], r[1]))
            yield from rows

    def _read_file(self, path: Path) -> list[Event]:
        kind = path.parent.parent.parent.name
        cls = MESSAGE_TYPES[kind]
        try:
            table = pq.read_table(path)
            cols = [table.column(name).to_pylist() for name in cls._fields]
        except (OSError, pa.ArrowException, KeyError, ValueError) as e:
            self._error(path, f"{type(e).__name__}: {e}")
            return []
        tuple_cols = [i for i, name in enumerate(cls._fields) if pa.types.is_list(table.schema.field(name).type)]
        for i in tuple_cols:
            cols[i] = [tuple(v) if v is not None else () for v in cols[i]]
        events = [cls(*row) for row in zip(*cols)]
        self._stats["files_read"] += 1
        self._stats["rows_read"] += len(events)
        # Rows are ordered and resumed by event time: one without an integer one cannot be placed
        # (it would stop the whole replay); dropped and counted. Every other field is the validator's.
        timed = [ev for ev in events if type(ev.ts_event) is int]
        if len(timed) != len(events):
            self._stats["rows_without_time"] = self._stats.get("rows_without_time", 0) + len(events) - len(timed)
            log.error("replay: %s: %d row(s) without an event time skipped", path, len(events) - len(timed))
            events = timed
        if self._start is not None or self._end is not None:
            lo = self._start if self._start is not None else -(2**63)
            hi = self._end if self._end is not None else 2**63
            events = [ev for ev in events if lo <= ev.ts_event < hi]
        return events

    def _error(self, path: Path, reason: str) -> None:
        self._stats["files_failed"] += 1
        msg = f"{path}: {reason}"
        self._stats["errors"] = (self._stats["errors"] + [msg])[-20:]
        log.error("replay: skipping unreadable file %s", msg)

    # -- FeedSource -------------------------------------------------------
    def _peek(self) -> Event | None:
        if self._next is None and not self._done:
            try:
                self._next = next(self._merged)[3]
            except StopIteration:
                self._done = True
        return self._next

    def poll(self, max_events: int) -> list[Event]:
        """Events due now (at most ``max_events``), with seq=0 and ts_recv=now."""
        out: list[Event] = []
        speed = self.cfg.speed
        due_until = 0
        if speed > 0:
            now_wall = time.monotonic_ns()
            if self._anchor_wall_ns is None:
                first = self._peek()
                if first is None:
                    return out
                self._anchor_event_ns, self._anchor_wall_ns = first.ts_event, now_wall
            # Latest event time due at this wall instant.
            due_until = self._anchor_event_ns + int((now_wall - self._anchor_wall_ns) * speed)
        while len(out) < max_events:
            ev = self._peek()
            if ev is None or (speed > 0 and ev.ts_event > due_until):
                break
            out.append(ev)
            self._next = None
        if out:
            now = time.time_ns()
            out = [ev._replace(seq=0, ts_recv=now) for ev in out]
            self._stats["events_out"] += len(out)
        return out

    def wait(self, timeout_s: float) -> None:
        """Sleep until the next recorded event is due at this speed, at most ``timeout_s``."""
        speed = self.cfg.speed
        if speed <= 0 or self._anchor_wall_ns is None:
            return
        ev = self._peek()
        if ev is None:
            time.sleep(timeout_s)  # finished: the feed stops polling once it sees that
            return
        due_ns = self._anchor_wall_ns + (ev.ts_event - self._anchor_event_ns) / speed - time.monotonic_ns()
        time.sleep(max(MIN_WAIT_S, min(timeout_s, due_ns / NS_PER_S)))

    @property
    def exhausted(self) -> bool:
        return self._peek() is None

    def close(self) -> None:
        self._merged = iter(())
        self._next = None
        self._done = True

    def stats(self) -> dict[str, Any]:
        return {**self._stats, "errors": list(self._stats["errors"]), "exhausted": self._done and self._next is None}
