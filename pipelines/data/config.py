"""Configuration of this domain (the loader is :mod:`pipelines.config`). Circular buffer capacities."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.model.settings import bounded


@dataclass(frozen=True)
class BufferConfig:
    trades: int = field(default=1000, metadata=bounded(1, 10_000_000))
    book: int = field(default=100, metadata=bounded(1, 10_000_000))
    candles: int = field(default=200, metadata=bounded(1, 1_000_000))
