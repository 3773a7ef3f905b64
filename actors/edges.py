"""The external I/O edges as actor logic: Valkey writer, ZeroMQ publisher, Parquet recorder.

Each takes the same ``on_batch(events, prev)`` call as the buffers and answers
a :class:`BatchReply`, so the feed treats every destination alike.
"""

from __future__ import annotations

import logging
import os
import uuid

from pipelines.config import RecorderConfig, ValkeyConfig
from pipelines.model.messages import Event
from pipelines.data.sequencing import BatchReply, SeqGate
from pipelines.edges.zmq import ZmqPublisher

log = logging.getLogger("quantumtrader.edges")


class ValkeyWriter:
    """Appends every event to ``stream:ticks:<SYM>`` / ``stream:book:<SYM>``.

    ``on_batch`` only enqueues (the write-behind thread of StreamWriter does the
    I/O), so an unreachable Valkey never blocks the feed. After a restart the
    queue that was in memory is gone; the gate's positions come from what
    Valkey holds, so the feed re-sends the rest from its window.
    """

    # Every micro-batch, first of all routes: the feed's memory is the only other copy of an
    # event, so no consumer may see an event before it is on its way to storage. As a bulk
    # route (every 50 ms) it lagged the engine and the publishers, and a SIGKILLed feed left
    # a hole in the streams that no one could fill (issue 11).
    BULK = False
    STORAGE = True  # what it accepted is on its way to Valkey: a restarted feed measures holes against it

    def __init__(self, valkey_url: str, cfg: ValkeyConfig, symbols: list[str]):
        from pipelines.persistence.valkey_store import EventStore, StreamWriter, connect

        password = os.environ.get(cfg.password_env) or None
        self.incarnation = uuid.uuid4().hex
        self.writer = StreamWriter(valkey_url, password, cfg)
        positions = {}
        try:
            store = EventStore(connect(valkey_url, password=password, socket_timeout=cfg.socket_timeout_s))
            positions = {s: store.last_seq(s) for s in symbols}
        except Exception as e:  # Valkey down at start: accept whatever comes; dedupe still holds in Valkey
            log.error("ValkeyWriter could not read stream positions: %s", e)
        self.gate = SeqGate(positions)

    def on_batch(self, events: list[Event], prev: dict[str, int | None]) -> BatchReply:
        good, resync = self.gate.admit(events, prev)
        if good:
            self.writer.enqueue(good)
        return BatchReply(self.incarnation, len(good), self.gate.duplicates, resync)

    def position(self) -> dict[str, int]:
        return dict(self.gate.position)

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
    5559 liquidity, 5560 tape) for every symbol's FeatureEngine.

    One owner per port, so per-symbol engines share it. Analytics messages
    share the seq of the event they were computed after, so there is no seq
    gate here: an engine replaying after a restart may repeat a few messages
    (subscribers key them by (seq, kind))."""

    def __init__(self, ports: dict[str, int], host: str, sndhwm: int):
        self.incarnation = uuid.uuid4().hex
        self.publisher = ZmqPublisher(ports, host=host, sndhwm=sndhwm)

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

    def __init__(self, ports: dict[str, int], host: str, sndhwm: int):
        super().__init__(ports, host, sndhwm)
        self.gate = SeqGate()

    def on_batch(self, events: list[Event], prev: dict[str, int | None]) -> BatchReply:
        good, _ = self.gate.admit(events, {})
        self.publisher.publish(good)
        return BatchReply(self.incarnation, len(good), self.gate.duplicates, None)

    def position(self) -> dict[str, int]:
        return dict(self.gate.position)


class Recorder:
    """Writes every normalized event to Parquet, partitioned by kind, symbol and date."""

    BULK = True

    def __init__(self, cfg: RecorderConfig, symbols: list[str], run_id: str):
        from pipelines.adapters.files.recorder import ParquetRecorder, recorded_positions

        self.incarnation = uuid.uuid4().hex
        self.recorder = ParquetRecorder(cfg, run_id=run_id)
        # After a restart, resume after what this run already flushed to disk; the feed
        # re-sends the rest (the rows that were buffered in memory) from its window.
        self.gate = SeqGate(recorded_positions(cfg.path, symbols, run_id))

    def on_batch(self, events: list[Event], prev: dict[str, int | None]) -> BatchReply:
        good, resync = self.gate.admit(events, prev)
        if good:
            self.recorder.on_batch(good)
        return BatchReply(self.incarnation, len(good), self.gate.duplicates, resync)

    def position(self) -> dict[str, int]:
        return dict(self.gate.position)

    def flush(self) -> int:
        return self.recorder.flush()

    def ping(self) -> dict:
        return {"incarnation": self.incarnation, "pid": os.getpid()}

    def stats(self) -> dict:
        return self.recorder.stats()

    def close(self) -> dict:
        self.recorder.close()
        return self.stats()
