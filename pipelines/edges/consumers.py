"""Consumers of the FeatureEngine's analytics streams: plain pyzmq, usable from any process.

The FeatureEngine publishes on PUB sockets (see ``pipelines.edges.zmq.PORTS``):
``flow`` (topics ``flow.<SYM>`` and ``features.<SYM>``), ``footprint``,
``liquidity`` and ``tape``. Each message is two frames, the topic and an orjson
object (``pipelines.model.messages.to_dict``; NaN arrives as null, here ``None``).

Every consumer here shares :class:`_SubscriberBase`: one SUB socket per stream,
``poll()`` to process what is available in the caller's thread, or ``start()``
/ ``stop()`` for a background receive thread. A bad message (undecodable,
unexpected topic) or a raising callback is counted as an error per stream and
logged rate-limited; it never propagates and never stops the consumer. For
every stream ``received == processed + errors``. Latest-state reads take a lock.

Subscribers joining a PUB socket miss what was published before the
subscription reached the publisher (ZeroMQ's "slow joiner"); gaps in ``seq``
reveal loss later on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Iterable, NamedTuple

import zmq

from pipelines.edges.zmq import PORTS, decode

log = logging.getLogger("quantumtrader.consumers")

Payload = dict[str, Any]
Callback = Callable[[Payload], Any]

WINDOWS = ("1m", "5m", "15m", "30m", "60m")
OFI_MEASURES = {"raw": "ofi_{}", "norm": "ofi_norm_{}", "ratio": "ofi_ratio_{}"}


def _check(name: str, value: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
    return value


def _symbols(symbols: str | Iterable[str] | None) -> frozenset[str] | None:
    if symbols is None:
        return None
    return frozenset([symbols] if isinstance(symbols, str) else symbols) or None


class _SubscriberBase:
    """SUB sockets, receive loop, callbacks, per-stream counters, rate-limited error log.

    ``streams`` maps a stream (socket) name to the message kinds it carries here.
    Subclasses implement :meth:`_update` (called under ``self._lock``).
    """

    LOG_EVERY_S = 5.0

    def __init__(self, streams: dict[str, tuple[str, ...]], symbols=None, endpoints: dict[str, str] | None = None,
                 ctx: zmq.Context | None = None):
        self._ctx = ctx or zmq.Context.instance()
        self._symbols = _symbols(symbols)
        self._kinds = streams
        self._lock = threading.Lock()
        self._callbacks: dict[str, tuple[Callback, ...]] = {}
        self._counts = {s: {"received": 0, "processed": 0, "errors": 0} for s in streams}
        self._last_log, self._unlogged = 0.0, 0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._poller = zmq.Poller()
        self._sockets: dict[zmq.Socket, str] = {}
        endpoints = endpoints or {}
        for stream, kinds in streams.items():
            sock = self._ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoints.get(stream) or f"tcp://127.0.0.1:{PORTS[stream]}")
            for kind in kinds:
                for sym in sorted(self._symbols) if self._symbols else [""]:
                    sock.setsockopt(zmq.SUBSCRIBE, f"{kind}.{sym}".encode("ascii"))
            self._poller.register(sock, zmq.POLLIN)
            self._sockets[sock] = stream

    # -- receiving --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None

    def poll(self, timeout_ms: int = 0, limit: int | None = None) -> int:
        """Process every message available (waiting up to ``timeout_ms`` for the first, reading at
        most ``limit``) in the caller's thread; the number processed without error."""
        if self._thread is not None:
            raise RuntimeError("the background thread owns the sockets; stop() before poll()")
        return self._drain(timeout_ms, limit)

    def _drain(self, timeout_ms: int, limit: int | None = None) -> int:
        """Round-robin over the ready sockets until all are empty (or ``limit`` messages were read)."""
        n = seen = 0
        ready = [s for s, _ in self._poller.poll(timeout_ms)]
        while ready and (limit is None or seen < limit):
            for sock in list(ready):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    ready.remove(sock)
                    continue
                seen += 1
                n += self._handle(self._sockets[sock], frames)
        return n

    def start(self) -> "_SubscriberBase":
        """Receive on a background daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._drain(50, limit=1000)  # bounded, so stop() is prompt under a flood

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self.stop()
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one message --------------------------------------------------------------

    def _handle(self, stream: str, frames: list[bytes]) -> int:
        try:
            topic, payload = decode(frames)
            kind, _, symbol = topic.partition(".")
            if kind not in self._kinds[stream] or payload.get("kind") != kind:
                raise ValueError(f"unexpected topic {topic!r} (payload kind {payload.get('kind')!r})")
        except Exception as e:  # noqa: BLE001 - one bad message never stops the consumer
            return self._count(stream, e, "undecodable message")
        if self._symbols is not None and symbol not in self._symbols:
            return 0  # a longer symbol sharing the subscribed prefix
        error = None
        try:
            with self._lock:
                self._update(kind, symbol, payload)
        except Exception as e:  # noqa: BLE001
            error = e
        for cb in self._callbacks.get(kind, ()):
            try:
                cb(payload)
            except Exception as e:  # noqa: BLE001 - user code
                error = e
        return self._count(stream, error, f"{kind} handler failed")

    def _count(self, stream: str, error: Exception | None = None, what: str = "") -> int:
        with self._lock:  # a counts() snapshot always has received == processed + errors
            c = self._counts[stream]
            c["received"] += 1
            c["processed" if error is None else "errors"] += 1
        if error is None:
            return 1
        now = time.monotonic()
        if now - self._last_log >= self.LOG_EVERY_S:
            more = f" (+{self._unlogged} more errors since last report)" if self._unlogged else ""
            log.warning("%s stream: %s: %r%s", stream, what, error, more, exc_info=error)
            self._last_log, self._unlogged = now, 0
        else:
            self._unlogged += 1
        return 0

    def _update(self, kind: str, symbol: str, payload: Payload) -> None:
        raise NotImplementedError

    def _on(self, kind: str, callback: Callback) -> None:
        _check("kind", kind, (k for kinds in self._kinds.values() for k in kinds))
        self._callbacks[kind] = (*self._callbacks.get(kind, ()), callback)  # swap: safe while receiving

    def counts(self) -> dict[str, dict[str, int]]:
        """{stream: {"received", "processed", "errors"}}."""
        with self._lock:
            return {s: dict(c) for s, c in self._counts.items()}


class _LatestConsumer(_SubscriberBase):
    """One stream of one kind; keeps the latest payload per symbol."""

    KIND = ""

    def __init__(self, symbol: str | None = None, endpoint: str | None = None, ctx: zmq.Context | None = None):
        super().__init__({self.KIND: (self.KIND,)}, symbol, {self.KIND: endpoint} if endpoint else None, ctx)
        self._latest: dict[str, Payload] = {}
        self._last: Payload | None = None

    def _update(self, kind: str, symbol: str, payload: Payload) -> None:
        self._latest[symbol] = self._last = payload

    def latest(self, symbol: str | None = None) -> Payload | None:
        """The last payload of ``symbol`` (of any symbol when None), or None."""
        with self._lock:
            return self._last if symbol is None else self._latest.get(symbol)


class FlowConsumer(_LatestConsumer):
    """Latest :class:`~pipelines.model.messages.FlowState` per symbol, and OFI look-ups."""

    KIND = "flow"

    def on_flow(self, callback: Callback) -> None:
        self._on("flow", callback)

    def get_ofi(self, window: str = "5m", measure: str = "norm", symbol: str | None = None) -> float | None:
        """OFI over ``window``: ``raw`` CKS sum, ``norm`` depth-normalized, ``ratio`` in [-1, 1].
        None before any message or when the value is NaN (null)."""
        key = OFI_MEASURES[_check("measure", measure, OFI_MEASURES)].format(_check("window", window, WINDOWS))
        p = self.latest(symbol)
        v = None if p is None else p["values"].get(key)
        return None if v is None else float(v)


class _Stats:
    """Running count, sum, min, max of one series (O(1) memory); None counts as missing."""

    __slots__ = ("n", "total", "lo", "hi", "missing")

    def __init__(self):
        self.n, self.total, self.lo, self.hi, self.missing = 0, 0.0, None, None, 0

    def add(self, v: float | None) -> None:
        if v is None:
            self.missing += 1
            return
        self.n += 1
        self.total += v
        self.lo = v if self.lo is None else min(self.lo, v)
        self.hi = v if self.hi is None else max(self.hi, v)

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None


class LiquidityConsumer(_LatestConsumer):
    """Latest :class:`~pipelines.model.messages.LiquidityState` per symbol and a running liquidity profile."""

    KIND = "liquidity"
    PROFILED = ("spread_ticks", "depth", "book_imbalance", "liquidity_score")

    def __init__(self, symbol: str | None = None, endpoint: str | None = None, ctx: zmq.Context | None = None):
        super().__init__(symbol, endpoint, ctx)
        self._stats: dict[str, dict[str, _Stats]] = {}
        self._score: dict[str, float] = {}

    def _update(self, kind: str, symbol: str, payload: Payload) -> None:
        super()._update(kind, symbol, payload)
        values = payload["values"]
        stats = self._stats.setdefault(symbol, {name: _Stats() for name in self.PROFILED})
        for name, s in stats.items():
            s.add(values.get(name))
        if values.get("liquidity_score") is not None:
            self._score[symbol] = values["liquidity_score"]

    def on_liquidity(self, callback: Callback) -> None:
        self._on("liquidity", callback)

    def profile(self, symbol: str | None = None) -> dict[str, Any] | None:
        """Over every liquidity state of ``symbol`` (default: the last one seen): ``samples``,
        ``spread_ticks_{mean,min,max}``, ``depth_{mean,min,max}``, ``book_imbalance_mean``,
        ``liquidity_score`` (latest non-null) and ``missing`` (nulls skipped, per field). None before any."""
        with self._lock:
            if symbol is None and self._last is not None:
                symbol = self._last["symbol"]
            stats = self._stats.get(symbol)
            if stats is None:
                return None
            spread = stats["spread_ticks"]
            out: dict[str, Any] = {"symbol": symbol, "samples": spread.n + spread.missing}  # every state adds to one
            for name in ("spread_ticks", "depth"):
                s = stats[name]
                out.update({f"{name}_mean": s.mean(), f"{name}_min": s.lo, f"{name}_max": s.hi})
            out["book_imbalance_mean"] = stats["book_imbalance"].mean()
            out["liquidity_score"] = self._score.get(symbol)
            out["missing"] = {name: s.missing for name, s in stats.items()}
            return out


class MultiStreamConsumer(_SubscriberBase):
    """Flow, footprint, liquidity and tape (and optionally feature vectors) merged into one view per symbol."""

    def __init__(self, symbols: str | Iterable[str] | None = None, endpoints: dict[str, str] | None = None,
                 include_features: bool = False, ctx: zmq.Context | None = None, tape_history: int = 100):
        flow_kinds = ("flow", "features") if include_features else ("flow",)
        streams = {"flow": flow_kinds, "footprint": ("footprint",), "liquidity": ("liquidity",), "tape": ("tape",)}
        super().__init__(streams, symbols, endpoints, ctx)
        self._tape_history = tape_history
        self._views: dict[str, dict[str, Any]] = {}

    def _empty(self) -> dict[str, Any]:
        return {"flow": None, "liquidity": None, "footprint": None, "closed_bars": 0,
                "tape": deque(maxlen=self._tape_history), "features": None, "ts_event": None}

    def _update(self, kind: str, symbol: str, payload: Payload) -> None:
        v = self._views.get(symbol) or self._views.setdefault(symbol, self._empty())
        if kind == "footprint":
            v["footprint"] = payload["bar"]
            v["closed_bars"] += bool(payload["closed"])
        elif kind == "tape":
            v["tape"].append(payload)
        else:  # flow, liquidity, features
            v[kind] = payload["values"]
        ts = payload["ts_event"]
        v["ts_event"] = ts if v["ts_event"] is None else max(v["ts_event"], ts)

    def on(self, kind: str, callback: Callback) -> None:
        """Call ``callback(payload)`` for every message of ``kind`` (flow, footprint, liquidity, tape, features)."""
        self._on(kind, callback)

    def symbols(self) -> list[str]:
        with self._lock:
            return sorted(self._views)

    def view(self, symbol: str) -> dict[str, Any]:
        """{"flow", "liquidity", "footprint" (latest bar, closed or forming), "closed_bars",
        "tape" (recent payloads, oldest first), "features", "ts_event"}; empty values before any message."""
        with self._lock:
            v = self._views.get(symbol) or self._empty()
            return {**v, "tape": list(v["tape"])}


class Alert(NamedTuple):
    kind: str  # "ofi", "large_trades", "sweep", "iceberg"
    symbol: str
    ts_event: int
    side: int  # +1 buy, -1 sell, 0 unknown
    value: float
    threshold: float
    message: str


class FlowAlertSystem:
    """Alerts on order-flow extremes, large-trade spikes and tape patterns.

    - ``ofi``: ``ofi_ratio_<ofi_window>`` (sum e / sum |e|) reaches ±``ofi_threshold``.
      The ratio is bounded in [-1, 1], so a fixed threshold such as 0.7 means the
      same thing ("70% of the book pressure was one-sided") for every contract,
      depth and time of day. Depth-normalized OFI is unbounded and scales with
      activity, so no fixed ±0.7 would be meaningful for it.
    - ``large_trades``: with at least ``large_min_orders`` aggressor orders in
      ``large_ratio_window``, its ``large_trade_ratio`` reaches
      max(``large_min_ratio``, ``large_spike_factor`` x the ``large_ratio_baseline``
      ratio); a null baseline leaves ``large_min_ratio`` alone. Side: the sign of
      that window's ``delta`` (0 if unknown).
    - ``sweep`` / ``iceberg``: each tape signal with confidence >= ``min_pattern_confidence``.

    Both flow rules use hysteresis: one alert per excursion per symbol (and side,
    for OFI), re-armed when the value falls back inside the threshold (or OFI
    crosses to the other side). Null values never alert and leave the state as it
    was. Exceptions from ``on_alert`` callbacks propagate to the caller of
    :meth:`process` (an attached consumer counts them as errors).
    """

    def __init__(self, consumer: MultiStreamConsumer | None = None, *, ofi_threshold: float = 0.7,
                 ofi_window: str = "5m", large_ratio_window: str = "1m", large_ratio_baseline: str = "60m",
                 large_spike_factor: float = 3.0, large_min_ratio: float = 0.1, large_min_orders: int = 5,
                 min_pattern_confidence: float = 0.5):
        for w in (ofi_window, large_ratio_window, large_ratio_baseline):
            _check("window", w, WINDOWS)
        self.ofi_threshold, self.ofi_window = ofi_threshold, ofi_window
        self.large_window, self.large_baseline = large_ratio_window, large_ratio_baseline
        self.large_spike_factor, self.large_min_ratio = large_spike_factor, large_min_ratio
        self.large_min_orders, self.min_pattern_confidence = large_min_orders, min_pattern_confidence
        self.counts: Counter[str] = Counter()
        self._callbacks: list[Callable[[Alert], Any]] = []
        self._state: dict[tuple[str, str], int] = {}  # (rule, symbol) -> side of the current excursion, 0 armed
        if consumer is not None:
            self.attach(consumer)

    def attach(self, consumer: MultiStreamConsumer) -> None:
        consumer.on("flow", lambda p: self.process("flow", p))
        consumer.on("tape", lambda p: self.process("tape", p))

    def on_alert(self, callback: Callable[[Alert], Any]) -> None:
        self._callbacks.append(callback)

    def process(self, kind: str, payload: Payload) -> list[Alert]:
        """The alerts raised by one message (flow and tape; other kinds raise none)."""
        if kind == "flow":
            alerts = [a for a in (self._ofi(payload), self._large_trades(payload)) if a is not None]
        elif kind == "tape":
            alerts = self._pattern(payload)
        else:
            alerts = []
        for a in alerts:
            self.counts[a.kind] += 1
            for cb in self._callbacks:
                cb(a)
        return alerts

    def _enters(self, rule: str, symbol: str, state: int) -> bool:
        """Hysteresis: True only when ``rule`` enters a new excursion (state != 0 and changed)."""
        key = (rule, symbol)
        if self._state.get(key, 0) == state:
            return False
        self._state[key] = state
        return state != 0

    def _ofi(self, p: Payload) -> Alert | None:
        x, thr = p["values"].get(f"ofi_ratio_{self.ofi_window}"), self.ofi_threshold
        if x is None:
            return None
        side = 1 if x >= thr else -1 if x <= -thr else 0
        if not self._enters("ofi", p["symbol"], side):
            return None
        msg = f"{p['symbol']} OFI ratio {self.ofi_window} {x:+.2f} beyond ±{thr}"
        return Alert("ofi", p["symbol"], p["ts_event"], side, x, thr, msg)

    def _large_trades(self, p: Payload) -> Alert | None:
        values, w = p["values"], self.large_window
        n, ratio = values.get(f"orders_n_{w}"), values.get(f"large_trade_ratio_{w}")
        if n is None or ratio is None:
            return None
        base = values.get(f"large_trade_ratio_{self.large_baseline}")
        thr = self.large_min_ratio if base is None else max(self.large_min_ratio, self.large_spike_factor * base)
        if not self._enters("large_trades", p["symbol"], int(n >= self.large_min_orders and ratio >= thr)):
            return None
        delta = values.get(f"delta_{w}") or 0
        msg = f"{p['symbol']} large-trade ratio {w} {ratio:.2f} >= {thr:.2f} over {n} orders"
        return Alert("large_trades", p["symbol"], p["ts_event"], (delta > 0) - (delta < 0), ratio, thr, msg)

    def _pattern(self, p: Payload) -> list[Alert]:
        conf = p.get("confidence")
        if conf is None or conf < self.min_pattern_confidence:
            return []
        side = "buy" if p["side"] > 0 else "sell"
        msg = f"{p['symbol']} {p['pattern']} {side} at {p['price']} (confidence {conf:.2f})"
        return [Alert(p["pattern"], p["symbol"], p["ts_event"], p["side"], conf, self.min_pattern_confidence, msg)]
