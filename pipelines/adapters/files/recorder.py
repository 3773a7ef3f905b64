"""Record normalized events to Parquet so a session can be replayed later.

Layout (one directory tree per message kind, Hive-style ``key=value`` folders)::

    <root>/<kind>/symbol=<SYM>/date=<YYYY-MM-DD>/part-<first_seq>-<8 hex>.parquet

Files also carry ``symbol`` as a column (self-describing when copied alone), so
read a whole kind directory with ``pd.read_parquet(dir, partitioning=None)``;
pyarrow's default Hive inference types ``symbol`` as a dictionary and refuses
to merge it with the string column.

- ``kind`` is the message ``KIND`` (``tick``, ``book``, ``book_update``).
- ``date`` is the **Sao Paulo** local date of ``ts_event``: B3's session day,
  so an event at 02:30 UTC belongs to the previous local day's folder. Replay
  can then load one trading day at a time.
- ``first_seq`` is the ``seq`` of the file's first row, which makes a
  directory listing roughly chronological; the random suffix keeps names
  unique when two flushes start at the same seq (e.g. imported data).

Why these choices:

- Rows are buffered as **columnar lists** per kind: one ``list.append`` per
  field per event is cheap on the hot path, and the lists become Arrow arrays
  in one call at flush time. Partition keys (symbol, local date) are computed
  vectorized at flush, not per event.
- The **schema is explicit** (``SCHEMAS``) rather than inferred, so an empty
  book side or a batch of small ints can never change a column's type between
  files and break a later dataset read.
- Every file is written to a dot-prefixed temp name in the target directory,
  fsynced, then ``os.replace``-d into place. A rename within one directory is
  atomic on POSIX, so a crash leaves either no file or a whole file; readers
  (``replay.py``) ignore dot files.
- Flushing is triggered by row count or by wall-clock age (checked in
  ``on_batch``). Wall clock is right here: it bounds how much data a crash can
  lose, it is I/O scheduling and never feeds pipeline logic.

The recorder does not look at ``cfg.enabled``: whoever owns it decides
whether to create one.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.adapters.config import RecorderConfig
from pipelines.model.messages import BookSnapshot, BookUpdate, Event, Trade

log = logging.getLogger("quantumtrader.recorder")

_HEADER = [
    ("symbol", pa.string()),
    ("ts_event", pa.int64()),
    ("ts_recv", pa.int64()),
    ("seq", pa.int64()),
]

SCHEMAS: dict[str, pa.Schema] = {
    Trade.KIND: pa.schema(
        _HEADER
        + [
            ("price", pa.float64()),
            ("qty", pa.int64()),
            ("trade_type", pa.int8()),
            ("buyer", pa.int64()),
            ("seller", pa.int64()),
            ("trade_id", pa.int64()),
        ]
    ),
    BookSnapshot.KIND: pa.schema(
        _HEADER
        + [
            ("bid_px", pa.list_(pa.float64())),
            ("bid_qty", pa.list_(pa.int64())),
            ("ask_px", pa.list_(pa.float64())),
            ("ask_qty", pa.list_(pa.int64())),
        ]
    ),
    BookUpdate.KIND: pa.schema(
        _HEADER
        + [
            ("side", pa.int8()),
            ("action", pa.int8()),
            ("position", pa.int32()),  # book positions can exceed int16 on deep books
            ("price", pa.float64()),
            ("qty", pa.int64()),
            ("agent", pa.int64()),
            ("offer_id", pa.int64()),
        ]
    ),
}
MESSAGE_TYPES: dict[str, type] = {Trade.KIND: Trade, BookSnapshot.KIND: BookSnapshot, BookUpdate.KIND: BookUpdate}
# The schemas must list exactly the message fields, in order (checked at import).
for _kind, _cls in MESSAGE_TYPES.items():
    assert tuple(SCHEMAS[_kind].names) == _cls._fields, _kind

SAO_PAULO_TZ = "America/Sao_Paulo"
TMP_PREFIX = ".tmp-"


def sao_paulo_dates(ts_event: pa.Array | list[int]) -> pa.Array:
    """Sao Paulo local date (``YYYY-MM-DD`` strings) of each ns timestamp, vectorized."""
    ts = pa.array(ts_event, pa.int64()).cast(pa.timestamp("ns", tz=SAO_PAULO_TZ))
    return pc.strftime(ts, format="%Y-%m-%d")


class _KindBuffer:
    """Columnar buffer for one message kind: one Python list per field."""

    def __init__(self, kind: str):
        self.kind = kind
        self.schema = SCHEMAS[kind]
        self.columns: list[list[Any]] = [[] for _ in self.schema.names]

    def __len__(self) -> int:
        return len(self.columns[0])

    def append(self, ev: Event) -> None:
        for col, value in zip(self.columns, ev):
            col.append(value)

    def take(self) -> pa.Table:
        """The buffered rows as an Arrow table; the buffer is emptied."""
        arrays = [pa.array(col, type=f.type) for col, f in zip(self.columns, self.schema)]
        self.columns = [[] for _ in self.schema.names]
        return pa.Table.from_arrays(arrays, schema=self.schema)


class ParquetRecorder:
    """Buffers normalized events and writes them to partitioned Parquet files."""

    def __init__(self, cfg: RecorderConfig, run_id: str | None = None):
        self.cfg = cfg
        self.root = Path(cfg.path)
        # Tags file names so a restarted recorder can find what this run already wrote.
        self.run_id = run_id
        self._buffers = {kind: _KindBuffer(kind) for kind in SCHEMAS}
        self._buffered = 0
        self._last_flush = time.monotonic()
        self._closed = False
        self._stats = {"events_in": 0, "rows_written": 0, "files_written": 0, "flushes": 0, "write_errors": 0}

    # -- hot path ---------------------------------------------------------
    def on_batch(self, events: Iterable[Event]) -> None:
        """Buffer ``events``; flush if the row or age threshold is reached."""
        if self._closed:
            raise RuntimeError("ParquetRecorder.on_batch after close()")
        n = 0
        buffers = self._buffers
        try:
            for ev in events:
                try:
                    buf = buffers[ev.KIND]
                except (AttributeError, KeyError):
                    raise TypeError(f"cannot record {type(ev).__name__}: not a Trade, BookSnapshot or BookUpdate") from None
                buf.append(ev)
                n += 1
        finally:  # keep the counters true to what was buffered even if one event was rejected
            self._buffered += n
            self._stats["events_in"] += n
        if self._buffered >= self.cfg.flush_events or (
            self._buffered and time.monotonic() - self._last_flush >= self.cfg.flush_seconds
        ):
            self.flush()

    # -- I/O --------------------------------------------------------------
    def flush(self) -> int:
        """Write everything buffered; return the number of rows written."""
        written = 0
        for kind, buf in self._buffers.items():
            if len(buf):
                written += self._write_kind(kind, buf.take())
        self._buffered = 0
        self._last_flush = time.monotonic()
        if written:
            self._stats["flushes"] += 1
            self._stats["rows_written"] += written
        return written

    def _write_kind(self, kind: str, table: pa.Table) -> int:
        """Split one kind's rows by (symbol, Sao Paulo date) and write one file per partition."""
        dates = sao_paulo_dates(table.column("ts_event"))
        keys = sorted(set(zip(table.column("symbol").to_pylist(), dates.to_pylist())))
        written = 0
        for symbol, day in keys:
            if len(keys) == 1:
                part = table
            else:
                mask = pc.and_(pc.equal(table.column("symbol"), symbol), pc.equal(dates, day))
                part = table.filter(mask)
            directory = self.root / kind / f"symbol={symbol}" / f"date={day}"
            first_seq = part.column("seq")[0].as_py()
            tag = f"{self.run_id}-" if self.run_id else ""
            self._write_atomic(part, directory, f"part-{first_seq}-{tag}{uuid.uuid4().hex[:8]}.parquet")
            written += part.num_rows
        return written

    def _write_atomic(self, table: pa.Table, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f"{TMP_PREFIX}{name}"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, directory / name)
        except BaseException:
            self._stats["write_errors"] += 1
            log.exception("recorder: failed to write %s (%d rows lost)", directory / name, table.num_rows)
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            raise
        self._stats["files_written"] += 1

    def close(self) -> None:
        """Flush what is buffered. Idempotent."""
        if not self._closed:
            try:
                self.flush()
            finally:
                self._closed = True

    def stats(self) -> dict[str, Any]:
        return {**self._stats, "rows_buffered": self._buffered, "path": str(self.root), "closed": self._closed}


def write_events(events: Iterable[Event], root: str | os.PathLike) -> dict[str, Any]:
    """Record a finite list of events under ``root`` and flush (importers, tests)."""
    events = list(events)
    cfg = RecorderConfig(path=str(root), flush_events=max(len(events), 1), flush_seconds=86_400.0)
    rec = ParquetRecorder(cfg)
    rec.on_batch(events)
    rec.close()
    return rec.stats()


def recorded_positions(root: str | os.PathLike, symbols: Iterable[str], run_id: str) -> dict[str, int]:
    """Per symbol, the highest seq that run ``run_id`` has written under ``root`` (0 if none).

    Only this run's files count: seq numbers of other runs live in other sequence
    spaces. Reads Parquet footer statistics of each kind's newest file, not the data.
    """
    out = {}
    root = Path(root)
    for symbol in symbols:
        best = 0
        for kind in SCHEMAS:
            files = list((root / kind / f"symbol={symbol}").glob(f"date=*/part-*-{run_id}-*.parquet"))
            if not files:
                continue
            newest = max(files, key=lambda p: int(p.name.split("-")[1]))
            meta = pq.ParquetFile(newest).metadata
            col = meta.schema.names.index("seq")
            for i in range(meta.num_row_groups):
                st = meta.row_group(i).column(col).statistics
                if st is not None and st.has_min_max:
                    best = max(best, int(st.max))
        out[symbol] = best
    return out
