"""The external I/O edges as actor logic: Valkey writer, ZeroMQ publisher, Parquet recorder.

Each takes the same ``on_batch(events, prev)`` call as the buffers and answers
a :class:`BatchReply`, so the feed treats every destination alike.
"""

from __future__ import annotations

import logging
import os
import uuid

from actors.config import ActorConfig
from pipelines.adapters.config import RecorderConfig
from pipelines.edges.config import ZmqConfig
from pipelines.edges.zmq import ANALYTICS_STREAMS, ZmqPublisher
from pipelines.model.messages import Event
from pipelines.data.sequencing import BatchReply, SeqGate
from pipelines.persistence.config import ValkeyConfig

log = logging.getLogger("quantumtrader.edges")


class _StoringEdge:
    """A feed destination that keeps every event once, in seq order: its gate drops what it
    already has and refuses a batch after a gap (the feed re-sends from its window)."""

    incarnation: str
    gate: SeqGate

    def _store(self, events: list[Event]) -> None:
        raise NotImplementedError

    def on_batch(self, events: list[Event], prev: dict[str, int | None]) -> BatchReply:
        good, resync = self.gate.admit(events, prev)
        if good:
            self._store(good)
        return BatchReply(self.incarnation, len(good), self.gate.duplicates, resync)

    def position(self) -> dict[str, int]:
        return dict(self.gate.position)


class ValkeyWriter(_StoringEdge):
    """Appends every event to ``stream:ticks:<SYM>`` / ``stream:book:<SYM>``.

    ``on_batch`` only enqueues (the write-behind thread of StreamWriter does the
    I/O), so an unreachable Valkey never blocks the feed. After a restart the
    queue that was in memory is gone; the gate's positions come from what
    Valkey holds, so the feed re-sends the rest from its window.
    """

    # Every micro-batch, first of all routes: the feed's memory is the only other copy of an
    # event, so no consumer may see an event before it is on its way to storage. As a bulk
    # route (every 50 ms) it lagged the engine and the publishers, and a SIGKILLed feed left
    # a hole in the streams that no one could fill.
    BULK = False
    STORAGE = True  # what it accepted is on its way to Valkey: a restarted feed measures holes against it

    def __init__(self, cfg: ActorConfig[ValkeyConfig]):
        from pipelines.persistence.connection import connect, password_from_env
        from pipelines.persistence.events import EventStore, StreamWriter

        valkey_url = cfg.valkey.url
        password = password_from_env(cfg.valkey.password_env)
        self.incarnation = uuid.uuid4().hex
        self.writer = StreamWriter(valkey_url, password, cfg.domain)
        positions = {}
        try:
            store = EventStore(connect(valkey_url, password=password, socket_timeout=cfg.domain.socket_timeout_s))
            positions = {s: store.last_seq(s) for s in cfg.symbols}
        except Exception as e:  # Valkey down at start: accept whatever comes; dedupe still holds in Valkey
            log.error("ValkeyWriter could not read stream positions: %s", e)
        self.gate = SeqGate(positions)

    def _store(self, events: list[Event]) -> None:
        self.writer.enqueue(events)

    def flush(self, timeout_s: float = 10.0) -> bool:
        return self.writer.flush(timeout_s)

    def ping(self) -> dict:
        s = self.writer.stats()
        return {"incarnation": self.incarnation, "pid": os.getpid(), "connected": s.get("connected")}

    def stats(self) -> dict:
        return {**self.writer.stats(), "gaps": self.gate.gaps, "position": dict(self.gate.position)}

    def close(self, timeout_s: float = 10.0) -> dict:
        self.writer.close(timeout_s)
        return self.stats()


class AnalyticsPublisher:
    """Owns the analytics PUB sockets (5557 flow + feature vectors, 5558 footprint,
    5559 liquidity, 5560 tape) for every symbol's FeatureEngine, and 5561 for the
    coordinators' decisions.

    One owner per port, so per-symbol engines share it. Analytics messages
    share the seq of the event they were computed after, so there is no seq
    gate here: an engine replaying after a restart may repeat a few messages
    (subscribers key them by (seq, kind))."""

    STREAMS: tuple[str, ...] = ANALYTICS_STREAMS  # the sockets it owns (names as in pipelines.edges.zmq.PORTS)

    def __init__(self, cfg: ActorConfig[ZmqConfig]):
        ports = cfg.domain.ports()
        self.incarnation = uuid.uuid4().hex
        self.publisher = ZmqPublisher({k: ports[k] for k in self.STREAMS}, host=cfg.domain.host,
                                      sndhwm=cfg.domain.sndhwm)

    def publish(self, messages: list) -> int:
        return self.publisher.publish(messages)

    def endpoints(self) -> dict[str, str]:
        return dict(self.publisher.endpoints)

    def latency_ms(self):
        return self.publisher.latency_ms()

    def reset_latency(self) -> None:
        self.publisher.reset_latency()

    def ping(self) -> dict:
        return {"incarnation": self.incarnation, "pid": os.getpid()}

    def stats(self) -> dict:
        return self.publisher.stats()

    def close(self) -> dict:
        s = self.stats()
        self.publisher.close()
        return s


class MarketDataPublisher(AnalyticsPublisher):
    """Owns the market-data PUB sockets (5555 ticks, 5556 book); a feed destination.

    ZeroMQ PUB/SUB is best-effort by design, so no resync here: stale events
    re-published late would mislead subscribers more than a counted gap.
    """

    STREAMS = ("tick", "book")

    def __init__(self, cfg: ActorConfig[ZmqConfig]):
        super().__init__(cfg)
        self.gate = SeqGate()

    def on_batch(self, events: list[Event], prev: dict[str, int | None]) -> BatchReply:
        good, _ = self.gate.admit(events, {})
        self.publisher.publish(good)
        return BatchReply(self.incarnation, len(good), self.gate.duplicates, None)

    def position(self) -> dict[str, int]:
        return dict(self.gate.position)


class Recorder(_StoringEdge):
    """Writes every normalized event to Parquet, partitioned by kind, symbol and date."""

    BULK = True

    def __init__(self, cfg: ActorConfig[RecorderConfig]):
        from pipelines.adapters.files.recorder import ParquetRecorder, recorded_positions

        self.incarnation = uuid.uuid4().hex
        self.recorder = ParquetRecorder(cfg.domain, run_id=cfg.run_id)
        # After a restart, resume after what this run already flushed to disk; the feed
        # re-sends the rest (the rows that were buffered in memory) from its window.
        self.gate = SeqGate(recorded_positions(cfg.domain.path, cfg.symbols, cfg.run_id))

    def _store(self, events: list[Event]) -> None:
        self.recorder.on_batch(events)

    def flush(self) -> int:
        return self.recorder.flush()

    def ping(self) -> dict:
        return {"incarnation": self.incarnation, "pid": os.getpid()}

    def stats(self) -> dict:
        return self.recorder.stats()

    def close(self) -> dict:
        self.recorder.close()
        return self.stats()
