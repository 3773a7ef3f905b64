#!/usr/bin/env python3
"""Benchmarks. Each prints one JSON object per line; nothing here is a test.

    python scripts/bench.py pipeline [--rates 1000,5000,20000] [--seconds 10] [--warmup 3]
    python scripts/bench.py features [--events 100000] [--batch 1000000] [--naive 300]
    python scripts/bench.py decisions [--rates 1000,5000,20000] [--seconds 10] [--decision-ms 20]

pipeline: the issue-2 graph (simulator feed -> buffers -> Valkey and ZeroMQ) on
a private local Ray and an embedded Valkey. For each offered rate it reports
sustained events/s (events that reached both Valkey and ZeroMQ per second of
the measurement window) and publish latency p50/p99 (ZeroMQ send time minus the
event's receive time, which for the simulator is the instant the event was due).
``backlog_growing`` is true when the writer queue or the feed's lag grew over
the window, i.e. the rate is not sustained. ``--features`` adds the
FeatureEngine (issue 3): its accepted events/s count toward "sustained", and
``analytics_latency_p50/p99_ms`` is the analytics publish time (ZeroMQ
5557-5560) minus the receive time of the event they were computed after.

decisions: the whole graph (feed -> buffers -> features -> four agents + ML
-> coordinator) with a subscriber on ZeroMQ 5561 in this process.
``tick_to_decision`` is the time a decision reaches the subscriber minus the
receive time of the trade that triggered it. The coordinator decides every
``--decision-ms`` of event time (default 20 ms, so there are enough samples).
``max_sustained_events_per_s`` is the highest offered rate at which neither
the feed, the Valkey writer nor the FeatureEngine fell behind.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import orjson  # noqa: E402


def emit(**row) -> None:
    print(orjson.dumps(row).decode(), flush=True)


def bench_pipeline(args) -> None:
    import ray

    from actors.wiring import MarketDataGraph
    from pipelines.config import config_from_dict
    from pipelines.valkey_store import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="qt-bench-"))
    server = EmbeddedValkey(tmp / "valkey")
    url = server.start()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=300 * 2**20)
    try:
        for rate in args.rates:
            sym = "WDOZ26"
            # features off: the market-data path alone (issue 2 baseline)
            cfg = config_from_dict(bench_config(args, rate, sym, features=bool(args.features)))
            server_client_flush(url)
            g = MarketDataGraph(cfg, url)
            g.start()
            feed, vw, zp = g.handle("feed"), g.handle("valkey_writer"), g.handle("zmq_publisher")
            eng = g.handle(f"features:{sym}") if args.features else None
            ap = g.handle("analytics_publisher") if args.features else None
            time.sleep(args.warmup)
            s0 = snapshot(feed, vw, zp, eng)
            ray.get([h.reset_latency.remote() for h in (zp, ap) if h is not None])
            time.sleep(args.seconds)
            s1 = snapshot(feed, vw, zp, eng)
            lat = ray.get(zp.latency_ms.remote())
            alat = ray.get(ap.latency_ms.remote()) if ap is not None else None
            g.shutdown()
            dt = s1["t"] - s0["t"]
            produced = (s1["feed"] - s0["feed"]) / dt
            written = (s1["written"] - s0["written"]) / dt
            published = (s1["sent"] - s0["sent"]) / dt
            offered_in_window = rate * dt
            backlog = (s1["queue"] - s0["queue"] > 0.05 * offered_in_window) or (produced < 0.95 * rate)
            analysed = (s1["engine"] - s0["engine"]) / dt if args.features else produced
            sustained = min(produced, written, published, analysed)
            common = {"bench": "pipeline", "rate": rate, "features": bool(args.features)}
            emit(**common, metric="events_per_s_sustained", value=round(sustained, 1), unit="events/s",
                 backlog_growing=bool(backlog or analysed < 0.95 * rate), produced_per_s=round(produced, 1),
                 valkey_per_s=round(written, 1), zmq_per_s=round(published, 1), features_per_s=round(analysed, 1),
                 window_s=round(dt, 2))
            emit_latency(common, "publish_latency", lat)
            if alat is not None:
                emit_latency(common, "analytics_latency", alat)
    finally:
        ray.shutdown()
        server.stop()


def bench_config(args, rate: int, sym: str, features: bool, hmarl: dict | None = None) -> dict:
    return {
        "namespace": f"bench{uuid.uuid4().hex[:6]}",
        "symbols": [sym],
        "feed": {"batch_max_ms": args.batch_ms, "batch_max_events": args.batch_events,
                 "simulator": {"rate": rate, "speed": 1.0, "seed": 1, "start": "2026-11-23T10:00:00-03:00"}},
        "zmq": {f"{k}_port": 0 for k in ("tick", "book", "flow", "footprint", "liquidity", "tape", "decision")},
        "features": {"enabled": features},
        "hmarl": hmarl or {"enabled": False},
        "recorder": {"enabled": False},
    }


def bench_decisions(args) -> None:
    import threading

    import ray
    import zmq

    from actors.wiring import MarketDataGraph
    from pipelines.config import config_from_dict
    from pipelines.valkey_store import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="qt-bench-"))
    server = EmbeddedValkey(tmp / "valkey")
    url = server.start()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=300 * 2**20)
    best = 0
    try:
        for rate in args.rates:
            sym = "WDOZ26"
            hmarl = {"enabled": True, "decision_every_ms": args.decision_ms, "model_dir": str(REPO / "models")}
            cfg = config_from_dict(bench_config(args, rate, sym, features=True, hmarl=hmarl))
            server_client_flush(url)
            g = MarketDataGraph(cfg, url)
            g.start()
            lat: list[float] = []
            measuring = threading.Event()
            stop = threading.Event()
            sock = zmq.Context.instance().socket(zmq.SUB)
            sock.connect(g.zmq_endpoints["decision"])
            sock.setsockopt(zmq.SUBSCRIBE, b"decision.")

            def receive():
                while not stop.is_set():
                    if sock.poll(100):
                        _topic, payload = sock.recv_multipart()
                        if measuring.is_set():
                            lat.append((time.time_ns() - orjson.loads(payload)["ts_recv"]) / 1e6)

            t = threading.Thread(target=receive, daemon=True)
            t.start()
            feed, vw, zp = g.handle("feed"), g.handle("valkey_writer"), g.handle("zmq_publisher")
            eng = g.handle(f"features:{sym}")
            time.sleep(args.warmup)
            s0 = snapshot(feed, vw, zp, eng)
            measuring.set()
            time.sleep(args.seconds)
            measuring.clear()
            s1 = snapshot(feed, vw, zp, eng)
            stop.set()
            t.join(2)
            sock.close(linger=0)
            g.shutdown()
            dt = s1["t"] - s0["t"]
            produced = (s1["feed"] - s0["feed"]) / dt
            analysed = (s1["engine"] - s0["engine"]) / dt
            backlog = (s1["queue"] - s0["queue"] > 0.05 * rate * dt) or min(produced, analysed) < 0.95 * rate
            if not backlog:
                best = max(best, rate)
            common = {"bench": "decisions", "rate": rate}
            arr = np.array(lat)
            for q in (50, 99):
                v = round(float(np.percentile(arr, q)), 3) if arr.size else None
                emit(**common, metric=f"tick_to_decision_p{q}_ms", value=v, unit="ms", samples=int(arr.size),
                     backlog_growing=bool(backlog), produced_per_s=round(produced, 1), features_per_s=round(analysed, 1))
        emit(bench="decisions", metric="max_sustained_events_per_s", value=best, unit="events/s", rate=None,
             rates_tried=args.rates)
    finally:
        ray.shutdown()
        server.stop()


def server_client_flush(url: str) -> None:
    """Start each rate on an empty database so earlier runs do not skew trimming."""
    from pipelines.valkey_store import connect

    connect(url).flushall()


def emit_latency(common: dict, name: str, lat) -> None:
    for q in (50, 99):
        v = round(float(np.percentile(lat, q)), 3) if len(lat) else None
        emit(**common, metric=f"{name}_p{q}_ms", value=v, unit="ms", samples=len(lat))


def snapshot(feed, vw, zp, engine=None) -> dict:
    import ray

    f, w, z = ray.get([feed.stats.remote(), vw.stats.remote(), zp.stats.remote()])
    e = ray.get(engine.stats.remote())["accepted"] if engine is not None else 0
    return {"t": time.monotonic(), "feed": f["events_out"], "written": w["written"], "queue": w["queue_len"],
            "sent": z["sent"], "engine": e}


def bench_features(args) -> None:
    from pipelines.features.core import bench_features as run

    units = {"_us": "us", "_per_s": "events/s", "speedup": "x"}
    for metric, value in run(n_events=args.events, n_batch=args.batch, n_naive=args.naive).items():
        unit = next((u for suffix, u in units.items() if suffix in metric), "")
        emit(bench="features", metric=metric, value=round(float(value), 3), unit=unit)


def graph_parser(sub, name: str, help_text: str, warmup: float):
    """A subcommand that runs the actor graph at a list of offered rates."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000, 20000])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=warmup)
    p.add_argument("--batch-ms", type=float, default=5.0)
    p.add_argument("--batch-events", type=int, default=500)
    return p


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="QuantumTrader benchmarks (JSON lines on stdout)")
    sub = p.add_subparsers(dest="bench", required=True)
    pp = graph_parser(sub, "pipeline", "feed -> buffers -> Valkey + ZeroMQ throughput and latency", warmup=3.0)
    pp.add_argument("--features", action="store_true", help="include the FeatureEngine and its ZeroMQ analytics")
    pd_ = graph_parser(sub, "decisions", "tick -> decision latency through the whole graph, max sustained rate", warmup=5.0)
    pd_.add_argument("--decision-ms", type=float, default=20.0)
    pf = sub.add_parser("features", help="feature engine: incremental update, vector, batch, naive baseline")
    pf.add_argument("--events", type=int, default=100_000)
    pf.add_argument("--batch", type=int, default=1_000_000)
    pf.add_argument("--naive", type=int, default=300)
    args = p.parse_args(argv)
    if args.bench == "pipeline":
        bench_pipeline(args)
    elif args.bench == "features":
        bench_features(args)
    elif args.bench == "decisions":
        bench_decisions(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
