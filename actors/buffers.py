"""Circular buffers: the last N trades, book snapshots and one-minute candles of one symbol.

Plain classes; ``actors.wiring`` wraps them as Ray actors (one per symbol and
kind). A restarted actor re-runs ``__init__``, so the constructor rebuilds the
content from the Valkey streams: a crash loses nothing already written there,
and the sequence protocol (``pipelines.data.sequencing``) makes the feed re-send
whatever was not.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque

from actors.config import ActorConfig, ValkeyLink
from pipelines.data.candles import CandleBuilder
from pipelines.model.messages import BookSnapshot, Candle, Event, Trade
from pipelines.data.config import BufferConfig
from pipelines.data.sequencing import BatchReply, SeqGate
from pipelines.model.clock import NS_PER_MIN

log = logging.getLogger("quantumtrader.buffers")

RESTORE_RETRY_S = 10.0  # how long a constructor keeps trying Valkey before starting empty


def open_store(link: ValkeyLink):
    """An EventStore on the linked Valkey (password from the env var), or None without a URL."""
    valkey_url, password_env = link.url, link.password_env
    if not valkey_url:
        return None
    from pipelines.persistence.connection import connect, password_from_env
    from pipelines.persistence.events import EventStore

    return EventStore(connect(valkey_url, password=password_from_env(password_env)))


class _SymbolBuffer:
    """Shared shape of the three buffers: a bounded deque behind a SeqGate."""

    KINDS: frozenset[str] = frozenset()
    CAPACITY = ""  # the field of BufferConfig that holds its capacity
    BULK = True  # the feed sends it bulk batches (feed.bulk_batch_ms): queried, not waited on per tick

    def __init__(self, cfg: ActorConfig[BufferConfig]):
        self.symbol = cfg.symbol
        self.capacity: int = getattr(cfg.domain, self.CAPACITY)
        self.incarnation = uuid.uuid4().hex
        self.items: deque = deque(maxlen=self.capacity)
        self.gate = SeqGate()
        self.restored = 0
        self.restore_error: str | None = None
        self.accepted = 0
        store = open_store(cfg.valkey)
        if store is not None:
            self._restore_with_retry(store)

    def _restore_with_retry(self, store) -> None:
        deadline = time.monotonic() + RESTORE_RETRY_S
        while True:
            try:
                self._restore(store)
                if self.restored:
                    log.info("%s %s restored %d items from Valkey", type(self).__name__, self.symbol, self.restored)
                return
            except Exception as e:  # Valkey down: retry, then start empty (the feed re-sends its window)
                if time.monotonic() > deadline:
                    self.restore_error = f"{type(e).__name__}: {e}"
                    log.error("%s %s could not restore from Valkey, starting empty: %s", type(self).__name__, self.symbol, self.restore_error)
                    return
                time.sleep(0.2)

    STREAM_KIND = ""  # the Valkey stream to rebuild from ("tick" or "book")
    ITEM_TYPE: type = object  # what the buffer keeps from that stream

    def _restore(self, store) -> None:
        events = store.tail(self.symbol, self.STREAM_KIND, self.capacity)
        items = [e for e in events if isinstance(e, self.ITEM_TYPE)]
        self.items.clear()
        self.items.extend(items)
        self.restored = len(items)
        if events:
            self.gate.position[self.symbol] = events[-1].seq

    def _apply(self, events: list[Event]) -> None:
        self.items.extend(events)

    def on_batch(self, events: list[Event] | bytes, prev: dict[str, int | None]) -> BatchReply:
        good, resync = self.gate.admit(events, prev)
        if good:
            self.accepted += len(good)
            self._apply(good)
        return BatchReply(self.incarnation, len(good), self.gate.duplicates, resync)

    def position(self) -> dict[str, int]:
        return dict(self.gate.position)

    def snapshot(self, n: int | None = None) -> list:
        items = list(self.items)
        return items if n is None else items[-n:]

    def ping(self) -> dict:
        return {"incarnation": self.incarnation, "pid": os.getpid(), "size": len(self.items)}

    def stats(self) -> dict:
        return {
            "symbol": self.symbol,
            "size": len(self.items),
            "capacity": self.capacity,
            "accepted": self.accepted,
            "duplicates": self.gate.duplicates,
            "gaps": self.gate.gaps,
            "restored": self.restored,
            "restore_error": self.restore_error,
            "position": self.gate.position.get(self.symbol, 0),
        }


class TradeBuffer(_SymbolBuffer):
    """The last ``capacity`` trades (default 1000), in seq order."""

    KINDS = frozenset({"tick"})
    CAPACITY = "trades"
    STREAM_KIND = "tick"
    ITEM_TYPE = Trade


class BookBuffer(_SymbolBuffer):
    """The last ``capacity`` book snapshots (default 100)."""

    KINDS = frozenset({"book"})
    CAPACITY = "book"
    STREAM_KIND = "book"
    ITEM_TYPE = BookSnapshot


class CandleBuffer(_SymbolBuffer):
    """The last ``capacity`` closed one-minute candles (default 200) plus the forming one."""

    KINDS = frozenset({"tick"})
    CAPACITY = "candles"

    def __init__(self, cfg: ActorConfig[BufferConfig]):
        self.builder = CandleBuilder(cfg.symbol)
        super().__init__(cfg)

    def _restore(self, store) -> None:
        # Candles are derived data: rebuild them from the trades still in the stream
        # (bounded by the stream's MAXLEN, so very old candles may not come back).
        last_ns = store.last_event_ns(self.symbol)
        if last_ns is None:
            return
        since = last_ns - last_ns % NS_PER_MIN - self.capacity * NS_PER_MIN
        trades = store.since(self.symbol, "tick", since)
        self.builder = CandleBuilder(self.symbol)
        self.items.clear()
        self._apply(trades)
        self.restored = len(self.items)
        if trades:
            self.gate.position[self.symbol] = trades[-1].seq

    def _apply(self, events: list[Event]) -> None:
        self.items.extend(self.builder.on_trades(events))

    def current(self) -> Candle | None:
        return self.builder.current

    def snapshot(self, n: int | None = None, include_open: bool = False) -> list[Candle]:
        items = super().snapshot(n)
        if include_open and self.builder.current is not None:
            items.append(self.builder.current)
        return items
