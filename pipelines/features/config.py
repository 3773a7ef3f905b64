"""Configuration of this domain (the loader is :mod:`pipelines.config`). The feature engine:
emission cadence, publishing, warm-up after a restart, VPIN buckets."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.model.settings import INT32_MAX, bounded

VPIN_BUCKET_VOLUME = 500


@dataclass(frozen=True)
class FeaturesConfig:
    enabled: bool = True
    # Feature vectors: after every trade (0) or after the first trade of each N ms of event time.
    vector_every_ms: float = field(default=0.0, metadata=bounded(0, 86_400_000))
    # Flow, liquidity and forming-footprint states: every N ms of event time.
    state_every_ms: float = field(default=1000.0, metadata=bounded(1, 86_400_000))
    publish_vectors: bool = True  # feature vectors on ZeroMQ (flow port, topic features.<SYM>)
    flow_state_ttl_s: int = field(default=3600, metadata=bounded(1, INT32_MAX))
    flow_history_maxlen: int = field(default=100_000, metadata=bounded(1, None))
    restore_minutes: float = field(default=60.0, metadata=bounded(0, 24 * 60))  # warm-up read after a restart
    # Contracts per VPIN bucket (about a minute of WDO at a quiet pace).
    vpin_bucket_volume: int = field(default=VPIN_BUCKET_VOLUME, metadata=bounded(1, None))
    max_inflight: int = field(default=16, metadata=bounded(1, 10_000))
