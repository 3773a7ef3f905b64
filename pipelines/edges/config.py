"""Configuration of this domain (the loader is :mod:`pipelines.config`). The ZeroMQ publishers:
address, one port per stream, queue bound, and the node they bind on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pipelines.model.settings import INT32_MAX, bounded


@dataclass(frozen=True)
class ZmqConfig:
    host: str = "127.0.0.1"
    tick_port: int = field(default=5555, metadata=bounded(0, 65535))  # 0 = ephemeral
    book_port: int = field(default=5556, metadata=bounded(0, 65535))
    flow_port: int = field(default=5557, metadata=bounded(0, 65535))  # flow states and feature vectors
    footprint_port: int = field(default=5558, metadata=bounded(0, 65535))
    liquidity_port: int = field(default=5559, metadata=bounded(0, 65535))
    tape_port: int = field(default=5560, metadata=bounded(0, 65535))
    decision_port: int = field(default=5561, metadata=bounded(0, 65535))
    sndhwm: int = field(default=100_000, metadata=bounded(1, INT32_MAX))
    # The node the publishers bind on: subscribers connect to a known machine, not to whichever
    # node Ray chose. A Ray resource name; the head node's by default; null = any node.
    resource: str | None = "node:__internal_head__"

    def ports(self) -> dict[str, int]:
        """Stream name -> configured port (names as in ``pipelines.edges.zmq.PORTS``)."""
        return {f.name[: -len("_port")]: getattr(self, f.name) for f in dataclasses.fields(self) if f.name.endswith("_port")}
