"""Runs: each launch of the system is a session with its own id.

Owns the Valkey key ``qt:run:<namespace>`` (a JSON object: ``run_id``, ``started_ns``,
``source``, ``symbols``) and the per-stage totals a run reports.

Why: state that belongs to a market session (the paper account, the outcomes still
pending) must not leak into the next one. A second ``make run`` on the same Valkey
is a new simulated market; a restart of an actor, or ``launch.py --resume``, continues
the same session. The id travels to the actors in their constructor arguments, so
Ray's restarts keep it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

RUN_KEY = "qt:run:{namespace}"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def last_run(client, namespace: str) -> dict | None:
    """The run recorded last in this namespace, or None."""
    raw = client.get(RUN_KEY.format(namespace=namespace))
    if not raw:
        return None
    try:
        info = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return info if isinstance(info, dict) and isinstance(info.get("run_id"), str) else None


def record_run(client, namespace: str, run_id: str, source: str, symbols: list[str]) -> dict:
    info = {"run_id": run_id, "started_ns": time.time_ns(), "source": source, "symbols": list(symbols)}
    client.set(RUN_KEY.format(namespace=namespace), orjson.dumps(info))
    return info


# -- totals per stage ------------------------------------------------------------------------


def stage_totals(stats: dict[str, Any]) -> dict[str, Any]:
    """The monotonic counters of every stage, flat (``stage.counter``), from
    ``MarketDataGraph.stats()``: what the final ``STOPPED`` line reports and what a
    restarted actor's counters continue from."""
    out: dict[str, Any] = {}

    def put(key: str, value) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value

    for name, s in stats.items():
        if not isinstance(s, dict) or "error" in s and len(s) == 1:
            continue
        if name == "feed":
            put("feed.events", s.get("events_out"))
            for reason, n in ((s.get("validation") or {}).get("rejected") or {}).items():
                put(f"feed.rejected.{reason}", n)
        elif name.startswith("features:"):
            for kind, n in (s.get("emitted") or {}).items():
                put(f"{name}.{kind}", n)
        elif name.startswith(("agent:", "ml:")):
            put(f"{name}.signals", s.get("signals_sent"))
        elif name.startswith("coordinator:"):
            put(f"{name}.decisions", s.get("decisions"))
            for action, n in (s.get("actions") or {}).items():
                put(f"{name}.{action}", n)
        elif name.startswith("feedback:"):
            put(f"{name}.feedback", s.get("feedback_sent"))
        elif name == "valkey_writer":
            put("valkey.written", s.get("written"))
            put("valkey.dropped", s.get("dropped"))
        elif name == "zmq_publisher":
            put("zmq.sent", s.get("sent"))
        elif name == "analytics_publisher":
            put("zmq.analytics_sent", s.get("sent"))
    return out

