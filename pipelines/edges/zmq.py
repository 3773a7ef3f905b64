"""The ZeroMQ edge: port registry, topics, framing, and the PUB socket owner.

This module owns every ZeroMQ port number and the wire contract:

- two frames: topic ``<kind>.<SYMBOL>`` (ASCII), then an orjson object
  (the message's fields plus ``kind``; see ``pipelines.model.messages.to_dict``);
- PUB sockets bind 127.0.0.1 by default; one owner per port;
- a bounded send high-water mark: once a subscriber's queue holds ``sndhwm``
  messages, libzmq drops further messages *for that subscriber only*, silently
  (PUB sockets never block or report it). Subscribers detect loss from the
  per-symbol ``seq`` gaps. The pipeline is never stalled by a slow reader.
"""

from __future__ import annotations

import time
from typing import Iterable

import numpy as np
import orjson
import zmq

from pipelines.model.messages import Event, to_dict

# Port -> stream, the whole system. Owners: 5555-5556 ZmqPublisher (market data);
# 5557-5560 AnalyticsPublisher (the FeatureEngine's output); 5561 the Coordinator's decisions
# and the execution actors' orders, fills and positions.
PORTS: dict[str, int] = {
    "tick": 5555,
    "book": 5556,
    "flow": 5557,
    "footprint": 5558,
    "liquidity": 5559,
    "tape": 5560,
    "decision": 5561,
}

# Which socket carries which message kind.
# Feature vectors ride the flow socket (topic ``features.<SYM>``); the trading messages
# (``pipelines.model.orders``) ride the decision socket beside the decisions that caused
# them; every other kind has a socket of its own name.
TRADING_KINDS = ("order", "order_event", "fill", "position", "account", "risk", "outcome")
SOCKET_FOR_KIND = {"tick": "tick", "book": "book", "book_update": "book", "features": "flow",
                   **{k: "decision" for k in TRADING_KINDS}}
# An order and the events of its life share one topic, ``order.<SYM>`` (the JSON ``kind`` tells
# them apart), so a subscriber to one order's symbol sees its whole life in sequence.
TOPIC_FOR_KIND = {"order_event": "order"}
ANALYTICS_STREAMS = ("flow", "footprint", "liquidity", "tape", "decision")


def topic(kind: str, symbol: str) -> bytes:
    """Topic frame, e.g. ``tick.WDOZ26``. Subscribe to a prefix (``tick.``) for all symbols."""
    return f"{TOPIC_FOR_KIND.get(kind, kind)}.{symbol}".encode("ascii")


def encode(ev: object) -> list[bytes]:
    """The two frames for one message. An account summary has no symbol: its topic names the
    account (``account.<ACCOUNT>``), as does an account-wide risk event (``risk.<ACCOUNT>``)."""
    return [topic(ev.KIND, getattr(ev, "symbol", "") or ev.account), orjson.dumps(to_dict(ev))]


def decode(frames: list[bytes]) -> tuple[str, dict]:
    """(topic, payload dict) from the two frames a subscriber receives."""
    return frames[0].decode("ascii"), orjson.loads(frames[1])


class ZmqPublisher:
    """Owns PUB sockets, one per stream name in ``ports`` (port 0 = ephemeral).

    Keeps a bounded sample of publish latencies (publish wall time minus the
    event's ``ts_recv``) for the benchmark and progress reports.
    """

    LATENCY_SAMPLES = 200_000

    def __init__(self, ports: dict[str, int], host: str = "127.0.0.1", sndhwm: int = 100_000):
        self._ctx = zmq.Context.instance()
        self._sockets: dict[str, zmq.Socket] = {}
        self.endpoints: dict[str, str] = {}
        try:
            for name, port in ports.items():
                sock = self._ctx.socket(zmq.PUB)
                sock.setsockopt(zmq.SNDHWM, sndhwm)
                sock.setsockopt(zmq.LINGER, 0)
                sock.bind(f"tcp://{host}:{port or '*'}")
                self._sockets[name] = sock
                self.endpoints[name] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as e:
            self.close()
            raise OSError(f"cannot bind ZeroMQ {name} socket on {host}:{port}: {e}") from None
        self.sent = 0
        self.unroutable = 0  # kinds with no socket here
        self._lat = np.zeros(self.LATENCY_SAMPLES, dtype=np.int64)
        self._lat_n = 0

    def publish(self, events: Iterable[Event]) -> int:
        socks = self._sockets
        sent = 0
        now = time.time_ns()
        lat, n, cap = self._lat, self._lat_n, self.LATENCY_SAMPLES
        for ev in events:
            sock = socks.get(SOCKET_FOR_KIND.get(ev.KIND, ev.KIND))
            if sock is None:
                self.unroutable += 1
                continue
            sock.send_multipart(encode(ev), flags=zmq.NOBLOCK)
            sent += 1
            recv = getattr(ev, "ts_recv", None)  # trading messages carry event time only
            if recv is not None:
                lat[n % cap] = now - recv
                n += 1
        self._lat_n = n
        self.sent += sent
        return sent

    def latency_ms(self) -> np.ndarray:
        """Recent publish latencies in milliseconds (up to LATENCY_SAMPLES)."""
        n = min(self._lat_n, self.LATENCY_SAMPLES)
        return self._lat[:n] / 1e6

    def reset_latency(self) -> None:
        self._lat_n = 0

    def stats(self) -> dict:
        lat = self.latency_ms()
        return {
            "sent": self.sent,
            "unroutable": self.unroutable,
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
            "endpoints": dict(self.endpoints),
        }

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
