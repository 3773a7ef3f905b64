"""Configuration: typed dataclasses loaded from YAML with strict checking.

Every key is checked for type and range; unknown keys are errors (a typo must
not silently fall back to a default). Errors raise :class:`ConfigError` whose
message is one line naming the dotted key and the problem; ``launch.py`` prints
it and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import math
import os
import re
import reprlib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.adapters.config import FeedConfig, RecorderConfig, ReplayConfig
from pipelines.alpha.base import COST_TICKS, MIN_CONFIDENCE
from pipelines.alpha.registry import AGENTS
from pipelines.data.config import BufferConfig
from pipelines.edges.config import ZmqConfig
from pipelines.execution.config import ExecutionConfig
from pipelines.features.config import FeaturesConfig
from pipelines.model.settings import INT32_MAX, INT64_MAX, SYMBOL_RE, bounded, choices
from pipelines.persistence.config import ValkeyConfig
from pipelines.risk.config import RiskConfig, account_problem
from pipelines.training.config import TrainingConfig

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "default.yaml"
HOST_RE = re.compile(r"^[A-Za-z0-9._:*\[\]-]+$")  # a host name, an IPv4/IPv6 address or * (no spaces, no scheme)
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 6
_REPR.maxlevel = 3


def _show(value: Any) -> str:
    """A short, one-line repr of a config value for error messages (depth, length and recursion bounded)."""
    return _REPR.repr(value)


def _key_part(key: Any) -> str:
    """A mapping key as it appears in a dotted path: plain names as they are, anything else as a short repr."""
    return key if isinstance(key, str) and _KEY_RE.match(key) else _show(key)


class ConfigError(ValueError):
    """A bad configuration value. ``str(err)`` is one line: '<key>: <problem>'."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")



@dataclass(frozen=True)
class SupervisorConfig:
    ping_interval_s: float = field(default=1.0, metadata=bounded(0.05, 3600))
    ping_timeout_s: float = field(default=5.0, metadata=bounded(0.05, 3600))
    max_restarts: int = field(default=-1, metadata=bounded(-1, INT32_MAX))
    progress_interval_s: float = field(default=5.0, metadata=bounded(0.1, 3600))


@dataclass(frozen=True)
class HmarlConfig:
    enabled: bool = True
    agents: tuple[str, ...] = ("order_flow", "liquidity", "tape", "footprint")
    learning: bool = True  # the agents' learning layer (act / fade / abstain per context)
    # An agent's signal weaker than this abstains: it could not carry a decision (threshold) on its
    # own, yet as a present voter it would take a share of the weight and dilute the others.
    min_confidence: float = field(default=MIN_CONFIDENCE, metadata=bounded(0, 1))
    # Round-trip trading cost (ticks of the instrument) the agents charge their act and fade arms, so
    # they abstain where a rule's edge does not pay for it: spread once plus B3 fees (pipelines.alpha.base).
    agent_cost_ticks: float = field(default=COST_TICKS, metadata=bounded(0, 100))
    ml_enabled: bool = True
    model_dir: str = "models"  # XGBoost model + metadata; none there = the ML voter abstains
    # The ML voter abstains when its model was trained on another market than the symbol it
    # serves (instrument root, or simulated vs real data); true = vote anyway (logged once).
    ml_allow_other_market: bool = False
    ml_weight: float = field(default=0.40, metadata=bounded(0, 1))  # initial; the agents share the rest equally
    decision_every_ms: float = field(default=1000.0, metadata=bounded(1, 86_400_000))  # event time
    threshold: float = field(default=0.15, metadata=bounded(0, 1))  # |score| for BUY / SELL
    eta: float = field(default=0.1, metadata=bounded(0, 100))  # Hedge learning rate of the voter weights (per decision)
    weight_floor: float = field(default=0.02, metadata=bounded(0, 0.5))
    horizon_s: float = field(default=10.0, metadata=bounded(0.001, 86_400))  # outcome horizon, event time
    signal_ttl_s: float = field(default=5.0, metadata=bounded(0.001, 86_400))  # older signals count as absent
    # How long a round waits for another actor's result (a voter's signals, the outcomes) before
    # counting it absent: only a dead or restarting actor takes that long (actors.rounds). Ray
    # re-runs a restarted actor's rounds out of order, and a later round may be waiting on an
    # earlier one: this bounds that wait (the resend window must cover it, 20k events).
    round_timeout_s: float = field(default=5.0, metadata=bounded(0.01, 3600))
    # The same wait on a recorded or simulated feed (replay, simulator), where nothing is lost by
    # waiting: a round waits for a restarting actor's results, so that no decision depends on the
    # machine's speed (a backtest of the same recording decides the same). Only an actor that
    # stays dead reaches this bound.
    recorded_round_timeout_s: float = field(default=300.0, metadata=bounded(0.01, 86_400))
    base_size: int = field(default=1, metadata=bounded(1, 10_000))
    scheduling: str = field(default="default", metadata=choices("default", "spread"))  # agents across nodes
    agent_resource: str | None = None  # custom resource the agents require (place them on nodes offering it)
    ttl_decision_s: int = field(default=86_400, metadata=bounded(1, INT32_MAX))
    ttl_feedback_s: int = field(default=7 * 86_400, metadata=bounded(1, INT32_MAX))
    ttl_signal_s: int = field(default=7_200, metadata=bounded(1, INT32_MAX))
    ttl_metrics_s: int = field(default=86_400, metadata=bounded(1, INT32_MAX))
    # Each HMARL actor writes its stats to hmarl:metrics:<actor> once per this much event time.
    metrics_every_s: float = field(default=60.0, metadata=bounded(0.001, 86_400))
    # The launcher removes decisions, feedback and signals older than this (event time, from the
    # newest one kept) every cleanup_every_s of wall time; 0 = keep everything (the TTLs still apply).
    retention_days: float = field(default=7.0, metadata=bounded(0, 3650))
    cleanup_every_s: float = field(default=3600.0, metadata=bounded(1, 86_400 * 30))


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
    risk: RiskConfig = field(default_factory=RiskConfig)  # the risk engine and kill switch (scripts/ctl.py)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)  # orders on the simulated exchange
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)  # the ML model's pipeline (scripts/train_model.py)


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
            raise ConfigError(key, f"expected a mapping, got {_show(value)}")
        return _build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(key, f"expected a non-empty list, got {_show(value)}")
        return tuple(_coerce(f"{key}[{i}]", args[0], v, meta) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {_show(value)}")
        return value
    lo, hi = meta.get("lo"), meta.get("hi")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {_show(value)}")
        lo = -INT64_MAX - 1 if lo is None else lo
        hi = INT64_MAX if hi is None else hi
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {_show(value)}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any float
            raise ConfigError(key, f"expected a finite number, got {_show(value)}") from None
        if not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
    elif tp is str:
        if meta.get("iso_time") and isinstance(value, _dt.date):  # a date/datetime given programmatically
            value = value.isoformat()
        if not isinstance(value, str) or not value:
            raise ConfigError(key, f"expected a non-empty string, got {_show(value)}")
        if _CONTROL_RE.search(value):
            raise ConfigError(key, f"must not contain control characters (tabs, newlines, NUL...), got {_show(value)}")
    else:  # a field type this function does not know: a bug in the schema, not in the file
        raise TypeError(f"{key}: unsupported config type {_type_name(tp)}")
    if lo is not None and value < lo:
        raise ConfigError(key, f"must be >= {lo}, got {_show(value)}")
    if hi is not None and value > hi:
        raise ConfigError(key, f"must be <= {hi}, got {_show(value)}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(choices)}; got {_show(value)}")
    return value


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in names:
            where = f"{prefix}.{_key_part(k)}" if prefix else _key_part(k)
            close = difflib.get_close_matches(k, list(names), n=1) if isinstance(k, str) else []
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(where, f"unknown key{hint} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, f in names.items():
        if name in raw:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(key, hints[name], raw[name], dict(f.metadata))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            # a section written in part (execution.exchange.costs.wdo: {currency: USD}) must name the key it lacks
            raise ConfigError(f"{prefix}.{name}" if prefix else name, "required in this section")
    return cls(**kwargs)


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "<the working directory>"


def _parse_time_key(key: str, text: str) -> _dt.datetime:
    from pipelines.model.clock import parse_time

    try:
        return parse_time(text)
    except (ValueError, OverflowError) as e:
        raise ConfigError(key, str(e)) from None


def _check_replay(cfg: AppConfig) -> None:
    """``feed.source: replay``: ``feed.replay.path`` must hold recordings of every symbol, in the
    time window if one is set. Checked here so that ``launch.py`` fails in one line before it
    starts anything, instead of the feed actor failing with a traceback once Ray is up.

    Same lookup as ``ReplaySource._discover``: the path as given (relative = relative to the
    working directory, which the feed actor shares with launch.py on a local Ray), then
    ``<path>/<kind>/symbol=<SYM>/date=YYYY-MM-DD/*.parquet`` for the recorder's kinds."""
    from pipelines.model.contracts import resolve_symbol
    from pipelines.adapters.files.recorder import MESSAGE_TYPES
    from pipelines.model.clock import day_bounds_ns

    rc = cfg.feed.replay
    key = "feed.replay.path"
    root = Path(rc.path)
    shown = repr(rc.path)
    if not root.is_absolute():
        shown += f" (relative to the working directory {_cwd()!r}, as the replay feed reads it)"
    kinds = "|".join(MESSAGE_TYPES)
    start_ns, end_ns = _replay_bounds(rc)
    try:
        if not root.exists():
            raise ConfigError(key, f"no such folder: {shown}")
        if not root.is_dir():
            raise ConfigError(key, f"not a folder: {shown}")
        for i, alias in enumerate(cfg.symbols):
            try:
                sym = resolve_symbol(alias)  # what the feed will read: launch.py resolves WDOFUT before starting it
            except ValueError as e:
                raise ConfigError(f"symbols[{i}]", str(e)) from None
            days: set[_dt.date] = set()
            for kind in MESSAGE_TYPES:
                sym_dir = root / kind / f"symbol={sym}"
                if not sym_dir.is_dir():
                    continue
                for date_dir in sym_dir.glob("date=*"):
                    try:
                        day = _dt.date.fromisoformat(date_dir.name[len("date="):])
                    except ValueError:
                        continue  # the replay skips it too (and logs it)
                    if any(not f.name.startswith(".") for f in date_dir.glob("*.parquet")):
                        days.add(day)
            if not days:
                raise ConfigError(key, f"{shown} holds no recording of {sym} "
                                       f"(looked for {root}/<{kinds}>/symbol={sym}/date=YYYY-MM-DD/*.parquet)")
            if start_ns is None and end_ns is None:
                continue
            bounds = [day_bounds_ns(d) for d in sorted(days)]
            if not any((end_ns is None or lo < end_ns) and (start_ns is None or hi > start_ns) for lo, hi in bounds):
                which = "feed.replay.start" if rc.start is not None else "feed.replay.end"
                raise ConfigError(which, f"{shown} holds recordings of {sym} from {min(days)} to {max(days)}, none "
                                         f"from start {rc.start} to end {rc.end}")
    except OSError as e:
        raise ConfigError(key, f"cannot read {shown}: {e.strerror or e}") from None
    except OverflowError as e:  # a partition named date=9999-12-31
        raise ConfigError(key, f"{shown} has a date partition out of range: {e}") from None


def _replay_bounds(rc: ReplayConfig) -> tuple[int | None, int | None]:
    """``feed.replay.start`` / ``end`` as the replay reads them (a date-only end covers that day)."""
    from pipelines.adapters.files.replay import ReplayError, parse_bound

    out = []
    for name, is_end in (("start", False), ("end", True)):
        try:
            out.append(parse_bound(getattr(rc, name), is_end=is_end))
        except (ReplayError, ValueError, OverflowError) as e:
            raise ConfigError(f"feed.replay.{name}", str(e).removeprefix(f"replay.{name}: ")) from None
    start_ns, end_ns = out
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise ConfigError("feed.replay.end", f"must be after feed.replay.start ({rc.start}), got {rc.end}")
    return start_ns, end_ns


def _resolved(key: str, path: str) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # RuntimeError: a symlink loop
        raise ConfigError(key, f"cannot resolve {path!r}: {e}") from None


def _check_cross_fields(cfg: AppConfig) -> None:
    for i, sym in enumerate(cfg.symbols):
        if not SYMBOL_RE.match(sym):
            raise ConfigError(f"symbols[{i}]", f"expected an upper-case contract code like WDOZ26, got {sym!r}")
    if len(set(cfg.symbols)) != len(cfg.symbols):
        raise ConfigError("symbols", "duplicate symbol")
    tr = cfg.training
    if tr.cv.n_test_groups >= tr.cv.n_groups:
        raise ConfigError("training.cv.n_test_groups", f"must be below training.cv.n_groups ({tr.cv.n_groups})")
    if not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", tr.retrain.at):
        raise ConfigError("training.retrain.at", f"expected HH:MM (Sao Paulo time), got {tr.retrain.at!r}")
    seen: dict[int, str] = {}
    for name, port in cfg.zmq.ports().items():
        if port and port in seen:
            raise ConfigError(f"zmq.{name}_port", f"same port as zmq.{seen[port]}_port ({port}); one owner per port")
        seen[port] = name
    for key, host in (("zmq.host", cfg.zmq.host), ("valkey.host", cfg.valkey.host)):
        if not HOST_RE.match(host):
            raise ConfigError(key, f"expected a host name or an IP address like 127.0.0.1, got {host!r}")
    if cfg.valkey.url is not None:
        if not re.match(r"^(redis|rediss|valkey|valkeys|unix)://\S*$", cfg.valkey.url):
            raise ConfigError("valkey.url", "expected redis://, rediss://, valkey:// or unix:// URL (no spaces)")
        try:
            urllib.parse.urlsplit(cfg.valkey.url).port  # noqa: B018 - raises on a bad port
        except ValueError as e:
            raise ConfigError("valkey.url", f"bad port: {e}") from None
    if cfg.valkey.reconnect_initial_s > cfg.valkey.reconnect_max_s:
        raise ConfigError("valkey.reconnect_initial_s", "must not exceed valkey.reconnect_max_s")
    if cfg.feed.source == "replay" and cfg.recorder.enabled and (
        _resolved("recorder.path", cfg.recorder.path) == _resolved("feed.replay.path", cfg.feed.replay.path)
    ):
        raise ConfigError("recorder.path", "same folder as feed.replay.path: recording a replay there would duplicate it")
    pd = cfg.feed.profitdll
    if pd.backoff_initial_s > pd.backoff_max_s:
        raise ConfigError("feed.profitdll.backoff_initial_s", "must not exceed feed.profitdll.backoff_max_s")
    for key in ("pub", "rep"):
        if not re.match(r"^(tcp|ipc)://\S+$", getattr(cfg.feed.bridge, key)):
            raise ConfigError(f"feed.bridge.{key}", f"expected a ZeroMQ endpoint like tcp://host:5562, got {getattr(cfg.feed.bridge, key)!r}")
    ex = cfg.execution
    for key in ("orders", "updates"):
        if not re.match(r"^(tcp|ipc)://\S+$", getattr(ex.profitdll, key)):
            raise ConfigError(f"execution.profitdll.{key}",
                              f"expected a ZeroMQ endpoint like tcp://127.0.0.1:5564, got {getattr(ex.profitdll, key)!r}")
    if ex.venue == "profitdll":
        # Live trading only with the account named and the risk engine guarding it.
        if not re.match(r"^\d+:[^:\s]+(:[^:\s]+)?$", ex.profitdll.broker_account or ""):
            raise ConfigError("execution.profitdll.broker_account",
                              f"expected BROKER:ACCOUNT[:SUB] (as in Profit) for execution.venue: profitdll, "
                              f"got {ex.profitdll.broker_account!r}")
        if not ex.enabled:
            raise ConfigError("execution.enabled", "must be true for execution.venue: profitdll")
        if not cfg.risk.enabled:
            raise ConfigError("risk.enabled", "must be true for execution.venue: profitdll (no live orders unguarded)")
    for i, agent in enumerate(cfg.hmarl.agents):
        if agent not in AGENTS:
            raise ConfigError(f"hmarl.agents[{i}]", f"unknown agent {agent!r} (known: {', '.join(AGENTS)})")
        if agent in cfg.hmarl.agents[:i]:
            raise ConfigError(f"hmarl.agents[{i}]", f"{agent} is listed twice; one actor per agent and symbol")
    problem = account_problem(cfg.risk.account)
    if problem is not None:
        raise ConfigError("risk.account", problem)
    problem = account_problem(cfg.execution.account)
    if problem is not None:
        raise ConfigError("execution.account", problem)
    if cfg.execution.enabled and cfg.execution.account != cfg.risk.account:
        # one risk engine per account: ctl.py (risk.account) must reach the one the orders pass
        raise ConfigError("execution.account", f"must equal risk.account ({cfg.risk.account!r}), "
                                               f"got {cfg.execution.account!r}")
    if cfg.hmarl.enabled and not cfg.features.enabled:
        raise ConfigError("hmarl.enabled", "the agents read the FeatureEngine's output: set features.enabled: true")
    sim = cfg.feed.simulator
    bounds = {}
    for name in ("start", "end"):
        if getattr(sim, name) is not None:
            bounds[name] = _parse_time_key(f"feed.simulator.{name}", getattr(sim, name))
            if not 1970 <= bounds[name].year <= 2261:  # event times are int64 ns since 1970
                raise ConfigError(f"feed.simulator.{name}", f"must be between 1970 and 2261, got {getattr(sim, name)}")
    if "start" in bounds and "end" in bounds and bounds["end"] <= bounds["start"]:
        raise ConfigError("feed.simulator.end", f"must be after feed.simulator.start ({sim.start}), got {sim.end}")
    if cfg.feed.replay.start is not None or cfg.feed.replay.end is not None:
        _replay_bounds(cfg.feed.replay)
    if cfg.feed.source == "replay":
        _check_replay(cfg)


# -- reading the file -------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` for config files: timestamps stay the strings they are written as
    (every time key is an ISO string, checked with its key's name; PyYAML's own conversion raises
    a bare ValueError for a date like 2026-02-30), and a malformed number (``0x_``) is a YAML
    error with its line instead of a bare ValueError."""


def _checked(construct):
    def run(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, OverflowError) as e:
            raise yaml.constructor.ConstructorError(None, None, f"cannot read {node.value!r} ({e})",
                                                    node.start_mark) from None
    return run


_Loader.add_constructor("tag:yaml.org,2002:timestamp", yaml.constructor.SafeConstructor.construct_yaml_str)
for _tag, _fn in (("int", yaml.constructor.SafeConstructor.construct_yaml_int),
                  ("float", yaml.constructor.SafeConstructor.construct_yaml_float)):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _checked(_fn))


def _one_line(text: Any) -> str:
    return _CONTROL_RE.sub(" ", str(text))


def _parse_yaml(text: str, shown: str) -> tuple[Any, yaml.Node | None]:
    """(data, node tree) of one YAML document; ConfigError('--config', ...) for anything unreadable."""
    loader = None
    try:
        loader = _Loader(text)  # the reader rejects unprintable characters right here
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        position = getattr(e, "position", None)  # a ReaderError: an unprintable character
        where = (f" at line {mark.line + 1} column {mark.column + 1}" if mark else
                 f" at character {position + 1}" if isinstance(position, int) else "")
        problem = getattr(e, "problem", None) or getattr(e, "reason", None)
        detail = f": {_one_line(problem)}" if problem else ""
        raise ConfigError("--config", f"invalid YAML{where} in {shown}{detail}") from None
    except RecursionError:
        raise ConfigError("--config", f"invalid YAML in {shown}: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, node


def _first_duplicate(node: yaml.Node | None) -> tuple[str, int, int] | None:
    """(dotted key, first line, second line) of the first key written twice in one mapping.
    PyYAML silently keeps the last; two ``feed:`` sections would drop the first one's keys."""
    stack: list[tuple[yaml.Node, str]] = [(node, "")] if node is not None else []
    done: set[int] = set()
    while stack:
        n, path = stack.pop()
        if id(n) in done:  # aliases share nodes, and may point back at an ancestor
            continue
        done.add(id(n))
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(n, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    where = f"{path}.{_key_part(k.value)}" if path else _key_part(k.value)
                    ident = (k.tag, k.value)
                    if ident in lines:
                        return where, lines[ident], k.start_mark.line + 1
                    lines[ident] = k.start_mark.line + 1
                    children.append((v, where))
                else:
                    children.append((v, path))
        elif isinstance(n, yaml.SequenceNode):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(n.value)]
        stack.extend(reversed(children))
    return None


def _path_text(p: Path) -> str:
    s = str(p)
    return s if not _CONTROL_RE.search(s) else repr(s)


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> AppConfig:
    """Load YAML (default ``config/default.yaml``), apply ``overrides`` (a nested dict), check it.

    Anything wrong raises :class:`ConfigError`: ``--config: ...`` for a file that cannot be read
    or parsed, else ``<dotted key>: <problem>``, one line either way."""
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    shown = _path_text(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {shown}") from None
    except UnicodeDecodeError as e:
        raise ConfigError("--config", f"{shown} is not UTF-8 text (byte {e.start})") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise ConfigError("--config", f"cannot read {shown}: {_one_line(getattr(e, 'strerror', None) or e)}") from None
    loaded, node = _parse_yaml(text, shown)
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError("--config", f"top level of {shown} must be a mapping of keys (like feed:, symbols:), "
                                      f"got {type(loaded).__name__}")
    raw = loaded
    if overrides:
        raw = _deep_merge(raw, overrides)
    cfg = _build(AppConfig, raw)
    dup = _first_duplicate(node)
    if dup is not None:
        key, first, second = dup
        raise ConfigError(key, f"written twice (lines {first} and {second} of {shown}); "
                               "YAML keeps only the last: remove one")
    _check_cross_fields(cfg)
    return cfg


def config_from_dict(raw: dict) -> AppConfig:
    """Build and check a config from a plain dict (tests, programmatic use)."""
    if not isinstance(raw, dict):
        raise ConfigError("config", f"expected a mapping of keys, got {_show(raw)}")
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
