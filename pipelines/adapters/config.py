"""Configuration of this domain (the loader is :mod:`pipelines.config`). Where market data comes
from (simulator, replay, ProfitDLL host, bridge), how the feed batches it, and the recorder."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.model.settings import bounded, choices


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int = field(default=42)
    rate: float = field(default=2000.0, metadata=bounded(1, 1_000_000))  # events/s of event time
    speed: float = field(default=1.0, metadata=bounded(0, 10_000))  # event time per wall time; 0 = max
    start: str | None = field(default=None, metadata={"iso_time": True})  # first event; None = today's 10:00 Sao Paulo
    end: str | None = field(default=None, metadata={"iso_time": True})  # exhausted at this event time (exclusive)
    # "flat": `rate` all day; "day": `rate` is the session's mean, busier at the open and close
    profile: str = field(default="flat", metadata=choices("flat", "day"))
    base_price: float = field(default=5400.0, metadata=bounded(1, 1e7))
    tick_size: float = field(default=0.5, metadata=bounded(1e-6, 1e6))
    book_depth: int = field(default=5, metadata=bounded(5, 50))
    # `max_events`: stop after this many events (0 = endless). Tests and benches.
    max_events: int = field(default=0, metadata=bounded(0, None))


@dataclass(frozen=True)
class ReplayConfig:
    # Relative to the working directory of the process that reads it (launch.py's, which the
    # feed actor inherits on a local Ray); load_config checks it holds each symbol's recordings.
    path: str = "data/recordings"
    speed: float = field(default=1.0, metadata=bounded(0, 1_000_000))  # 1 = original pace, 0 = max
    start: str | None = field(default=None, metadata={"iso_time": True})  # ISO date/time filter (inclusive)
    end: str | None = field(default=None, metadata={"iso_time": True})  # ISO date/time filter (exclusive)


@dataclass(frozen=True)
class ProfitDLLConfig:
    """``source: profitdll``: the DLL in a supervised child process (scripts/feed_bridge.py)
    on the node offering ``resource``. Credentials never come from here: PROFIT_KEY,
    PROFIT_USER, PROFIT_PASSWORD in the environment, or ``credentials_file`` outside the repo."""

    dll_path: str | None = None  # None: the PROFITDLL_PATH environment variable
    credentials_file: str | None = None
    exchange: str = field(default="F", metadata=choices("F", "B"))  # F = BMF (futures), B = Bovespa
    book_depth: int = field(default=10, metadata=bounded(1, 50))
    resource: str | None = "profitdll"  # Ray custom resource the feed actor requires; None = anywhere
    ready_timeout_s: float = field(default=60.0, metadata=bounded(1, 3600))  # login + first subscribe
    heartbeat_timeout_s: float = field(default=3.0, metadata=bounded(0.5, 600))
    backoff_initial_s: float = field(default=0.5, metadata=bounded(0.01, 600))  # host restarts
    backoff_max_s: float = field(default=30.0, metadata=bounded(0.01, 3600))


@dataclass(frozen=True)
class BridgeConfig:
    """``source: bridge``: read a feed bridge (scripts/feed_bridge.py on the Windows machine)."""

    pub: str = "tcp://127.0.0.1:5562"
    rep: str = "tcp://127.0.0.1:5563"
    heartbeat_timeout_s: float = field(default=3.0, metadata=bounded(0.5, 600))
    request_timeout_s: float = field(default=1.0, metadata=bounded(0.05, 600))


@dataclass(frozen=True)
class FeedConfig:
    source: str = field(default="simulator", metadata=choices("simulator", "replay", "profitdll", "bridge"))
    batch_max_events: int = field(default=500, metadata=bounded(1, 100_000))
    batch_max_ms: float = field(default=5.0, metadata=bounded(0.1, 10_000))
    # Buffers, Valkey and the recorder: nobody waits on them per tick, and each call costs
    # the same whatever its size, so they get the same events in fewer, larger batches.
    bulk_batch_ms: float = field(default=50.0, metadata=bounded(0.1, 10_000))
    bulk_batch_max_events: int = field(default=5000, metadata=bounded(1, 1_000_000))
    time_tolerance_ms: float = field(default=1000.0, metadata=bounded(0, 86_400_000))
    # Live sources (profitdll, bridge): an event stamped further ahead of its receive time is
    # rejected (future_time). Simulator and replay run event time ahead of the wall clock.
    max_ahead_s: float = field(default=60.0, metadata=bounded(0, 86_400))
    # A forward jump of event time larger than this is held until confirm_events more events
    # agree (a real gap, e.g. two recordings), else rejected (time_jump): one bad stamp must not
    # make every later event "time running backwards".
    max_forward_gap_s: float = field(default=7 * 86_400.0, metadata=bounded(1, 366 * 86_400))
    confirm_events: int = field(default=3, metadata=bounded(1, 1000))
    # Batches kept to re-send to a destination actor that restarted (dedupe by seq).
    resend_window_events: int = field(default=20_000, metadata=bounded(0, 10_000_000))
    # Fire-and-forget calls allowed in flight per destination before the feed waits.
    max_inflight_batches: int = field(default=16, metadata=bounded(1, 10_000))
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    profitdll: ProfitDLLConfig = field(default_factory=ProfitDLLConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)


@dataclass(frozen=True)
class RecorderConfig:
    enabled: bool = True
    path: str = "data/recordings"
    flush_events: int = field(default=50_000, metadata=bounded(1, None))
    flush_seconds: float = field(default=10.0, metadata=bounded(0.01, 86_400))
    resource: str | None = "node:__internal_head__"  # where the files are written (a Ray resource; null = any node)
