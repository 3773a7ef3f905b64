#!/usr/bin/env python3
"""Benchmarks. Each prints one JSON object per line; nothing here is a test.

    python scripts/bench.py pipeline [--rates 1000,5000,20000] [--seconds 10] [--warmup 3]
    python scripts/bench.py features [--events 100000] [--batch 1000000] [--naive 300]
    python scripts/bench.py orders [--orders 300] [--rates 100,500,2000] [--seconds 5]
    python scripts/bench.py decisions [--rates 1000,5000,20000] [--seconds 10] [--decision-ms 100]
    python scripts/bench.py execution [--repeats 3] [--graph-runs 3] [--rate 5000] [--seconds 30] [--only graph]
    python scripts/bench.py profitdll [--events 200000] [--rate 0,53000] [--batch-ms 5] [--graph]
    python scripts/bench.py backtest [--events 200000] [--rate 2000] [--repeats 3] [--decision-ms 1000]
                                     [--only throughput,day,sweep] [--day-rate 40] [--sweep-tasks 4]
    python scripts/bench.py training [--events 400000] [--rate 40] [--repeats 3] [--trials 16] [--tune-repeats 3]
                                     [--only dataset,cv,tune]

pipeline: the issue-2 graph (simulator feed -> buffers -> Valkey and ZeroMQ) on
a private local Ray and an embedded Valkey. For each offered rate it reports
sustained events/s (events that reached both Valkey and ZeroMQ per second of
the measurement window) and publish latency p50/p99 (ZeroMQ send time minus the
event's receive time, which for the simulator is the instant the event was due).
``backlog_growing`` is true when the writer queue or the feed's lag grew over
the window, i.e. the rate is not sustained. ``--features`` adds the
FeatureEngine: its accepted events/s count toward "sustained", and
``analytics_latency_p50/p99_ms`` is the analytics publish time (ZeroMQ
5557-5560) minus the receive time of the event they were computed after.

decisions: the whole graph (feed -> buffers -> features -> four agents + ML
-> coordinator) with a subscriber on ZeroMQ 5561 in this process.
``tick_to_decision`` is the time a decision reaches the subscriber minus the
receive time of the trade that triggered it. The coordinator decides every
``--decision-ms`` of event time: default 100 ms, ten times the configured
cadence (``hmarl.decision_every_ms: 1000``) so a 10 s window holds ~100
samples. A shorter cadence measures a different load: at 20 ms the
coordinator, ML voter and feedback actor make 50 decisions/s and take ~0.45
of the 2 cores between them (``actor_cpu_cores``).
``max_sustained_events_per_s`` is the highest offered rate at which neither
the feed, the Valkey writer nor the FeatureEngine fell behind.
``actor_cpu_cores`` is the CPU the actors used over the window, in cores, in
total and per actor (``by_actor``; Linux only): where the 2 cores go.

execution: first the simulated exchange alone (``bench_exchange``: book and trade events/s
on one core with 10 and 100 resting orders, runs interleaved, then the median per size), then
the decision -> order accepted latency in the running graph (``--only exchange|graph`` runs one
part). The graph part starts the trading graph (feed -> buffers -> features -> HMARL ->
coordinator -> execution actor -> ZeroMQ 5561) ``--graph-runs`` times at ``--rate`` events/s,
speed 1, with a low ``--threshold`` and a ``--decision-ms`` cadence so that decisions trade
often, and subscribes to 5561 in this process (topics ``decision.``, ``order.``, ``risk.``).
For each decision whose message arrives within the ``--seconds`` window and whose entry order
(``<decision id>:entry``) the venue accepted, ``decision_to_accepted`` is the arrival of that
order's ACCEPTED event minus the arrival of the decision, both at the subscriber's wall clock;
``tick_to_decision`` is, for every decision of the window, its arrival minus ``ts_recv`` (the
wall clock at receipt of the tick it was made on), as in ``bench.py decisions``, and
``tick_to_accepted`` the sum of the two for the decisions that have both. The coordinator sends
a decision to the publisher and to the execution actor at once; the execution actor holds the
market data after the decided event until the decision comes, and by then the market data that
makes the ack due (entry + ack latency, 5 + 5 ms of event time by default) has usually arrived,
so decision -> accepted is mostly the one hop more (coordinator -> execution actor -> publisher
against coordinator -> publisher) and the engine's work on the held events. The account limits that would stop new entries
after a few losing round trips at this threshold (cooldown, daily loss, drawdown) are off: this
measures the order path. Only a change of target position makes an entry order (a BUY after
a SELL, ...): a 30 s window holds about 120 decisions and 20 entry orders. After the window the
run waits ``--grace`` seconds for the last decisions' order events. Per run: those percentiles with
their sample counts, the counts (decisions by action, entry orders, accepted, not accepted by
how they ended, risk denials by reason), whether the feed or the FeatureEngine fell behind, and
the execution actor's ``held`` / ``late_decisions`` / ``overrun`` / ``waiting_decisions`` at the
end; then a summary per latency: the median, min and max of the runs' p50 and p99, and the
p50/p99/max of all runs' samples pooled.

profitdll: the native fake ProfitDLL (tests/fake_profitdll, built with the
system C compiler) fires ``--events`` market callbacks from its own thread at
each ``--rate`` (callbacks/s; 0 = as fast as it can), inside the feed-bridge
child process that the FeedActor spawns for ``feed.source: profitdll``
(HostedBridge), on a private local Ray. By default the FeedActor feeds one
light destination actor (ProfitBenchSink: unpickles each batch, checks the
seqs, keeps latencies), so the numbers are those of the DLL -> host process ->
FeedActor path; ``--graph`` runs the whole MarketDataGraph instead (no Valkey,
features and HMARL off: FeedActor, ZeroMQ market-data publisher, per-symbol
buffers), the destination then being the ZeroMQ publisher.
The reference is the fake's sent log: every trade that is not an edit and
every offer-book callback must come out as exactly one event (trade edits and
daily callbacks, ~5% of the fake's callbacks, are not events, so a paced run
offers ``offered_per_s`` ~ 0.95 x rate events/s). ``lost_events`` = expected -
events that reached the destination - events the FeedActor's validator
rejected (``rejected``, reported apart).
``events_per_s`` is events delivered to the destination per second, from the
first poll that sees events there until the last one arrives. At rate 0 the
source floods (its callbacks compete for the same two cores), so this is the
drain rate under a flood; a paced run is ``sustained`` when it delivers at
least 95% of what it is offered. ``cpu_us_per_event`` is each process's CPU
time (all threads, from /proc) over that window per delivered event: the bridge
host (fake DLL thread + session + publisher), the FeedActor's worker, the
destination(s); it moves less with the machine's other load than events/s.
``latency_p50/p99_ms`` is the destination's arrival (sink) or ZeroMQ send
(graph) time minus ``ts_recv``, the wall clock stamped inside the DLL callback
on the native thread: callback -> session -> bridge PUB -> BridgeClient in the
FeedActor -> validation, seq, micro-batch -> Ray call -> destination. Samples
start at that first poll (the start-up catch-up is excluded); when a run is
not sustained they measure the growing backlog.
backtest: the backtest's InProcessGraph (actors/backtest.py) on one core, CPU time of this
process (``time.process_time``; wall time beside it). The input is one fixed simulator session
(``--seed``, ``--rate`` events/s of event time from ``--start``, ``--events`` events),
generated once before any timing; the ML voter's model is trained first on another seed (as
the tests' model is), so the ML voter votes at every decision. Per repetition, interleaved
(each mode once, then again, ``--repeats`` times), on the same events:

- ``full_stack``: features, the four agents and their learning, the ML voter, the coordinator
  (a decision every ``--decision-ms`` of event time), the feedback system, risk, the execution
  policy and the simulated exchange, from ``admit`` (validation, numbering) to ``finish``;
  ``chunk_us_per_event_p50/p99``: the CPU per event of each ``--batch`` events fed (the
  decision rounds fall in some chunks and not others: p99 is a chunk with rounds in it);
- ``features_graph``: the same graph with HMARL and execution off (the FeatureEngine actor
  alone), the graph's own baseline;
- ``features_only``: :class:`SymbolAnalytics` run directly on the events (what the feature
  engine emits, no actor, no validation): the ceiling of the full stack;
- ``end_to_end``: ``InProcessGraph.run()`` on the configured simulator source, the
  simulator's own cost included.

Then the summary per mode: median, min and max of the repetitions, and the full stack's
share of the ceiling. ``day``: one simulated WDO day (09:00-18:00, ``--day-rate`` events/s on
average, the simulator's ``profile: day``: busier at the open and close) through the full stack
with the simulator, timed end to end (a simulator without that profile: the flat profile, said in
the row). ``sweep``: ``--sweep-tasks`` full-stack
runs over the same events as Ray tasks on a private local Ray with 2 CPUs, first one task at a
time (each task asks for both CPUs), then two at a time (one CPU each), interleaved
``--sweep-repeats`` times; the speed-up is the median wall time of the one-at-a-time runs
over the two-at-a-time runs' (the tasks of both runs give the same decisions, checked).

training: the ML training pipeline (pipelines/training, actors/tune.py) on one simulator
session (``--events`` events at ``--rate`` events/s of event time, ``--seed``), generated once.
``dataset``: :func:`build_dataset` (features at the ``--decision-ms`` cadence through the live
engine's class, fixed-horizon labels with the default dead zone) ``--repeats`` times: samples/s
and events/s of wall time, then the median. ``cv``: one :func:`cross_validate` of that dataset
with the default FitConfig and CVConfig (walk-forward, 5 folds, 500 bootstrap resamples), in
seconds. ``tune``: ``--trials`` Optuna trials on Ray Tune over the default search space, on a
fresh local Ray of 1 CPU and of 2 CPUs (one and two trials at a time; Ray's start is not timed),
interleaved ``--tune-repeats`` times (1, 2, 1, 2, ...); the speed-up is the median wall time of
the 1-CPU runs over the 2-CPU runs'. Each trial is a whole purged CV (no bootstrap) in a reused
Tune actor. A fresh Ray per run, because Tune hands the next trial to an actor that just
finished rather than wait for one still starting: on a Ray whose idle worker processes earlier
runs used up, the second actor of short trials never gets a trial. ``same_trials_one_at_a_time``: whether the 1-CPU runs tried the same parameters
with the same scores (Optuna is seeded; with two at a time its later proposals depend on which
trial finished first).
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
    from pipelines.persistence.server import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="qt-bench-"))
    server = EmbeddedValkey(tmp / "valkey")
    url = server.start()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=300 * 2**20)
    try:
        for rate in args.rates:
            sym = "WDOZ26"
            # features off: the market-data path alone (the baseline)
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
    from pipelines.persistence.server import EmbeddedValkey

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
            pids = {name: ray.get(g.handle(name).ping.remote())["pid"] for name in g.actors}
            time.sleep(args.warmup)
            s0 = snapshot(feed, vw, zp, eng)
            cpu0 = {name: process_cpu_s(pid) for name, pid in pids.items()}
            measuring.set()
            time.sleep(args.seconds)
            measuring.clear()
            s1 = snapshot(feed, vw, zp, eng)
            cpu1 = {name: process_cpu_s(pid) for name, pid in pids.items()}
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
            # Where the 2 cores go: each actor's share of a core over the window (Linux /proc).
            cores = {n: round((cpu1[n] - cpu0[n]) / dt, 3) for n in pids if cpu0[n] is not None and cpu1[n] is not None}
            if cores:
                emit(**common, metric="actor_cpu_cores", value=round(sum(cores.values()), 3), unit="cores",
                     by_actor=dict(sorted(cores.items(), key=lambda kv: -kv[1])))
        emit(bench="decisions", metric="max_sustained_events_per_s", value=best, unit="events/s", rate=None,
             rates_tried=args.rates)
    finally:
        ray.shutdown()
        server.stop()


def server_client_flush(url: str) -> None:
    """Start each rate on an empty database so earlier runs do not skew trimming."""
    from pipelines.persistence.connection import connect

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
    from pipelines.features.benchmark import bench_features as run

    units = {"_us": "us", "_per_s": "events/s", "speedup": "x"}
    for metric, value in run(n_events=args.events, n_batch=args.batch, n_naive=args.naive).items():
        unit = next((u for suffix, u in units.items() if suffix in metric), "")
        emit(bench="features", metric=metric, value=round(float(value), 3), unit=unit)


def bench_execution(args) -> None:
    """The simulated exchange alone: book and trade events/s with resting orders, on one core
    (the loop's CPU time). Runs are interleaved (10, 100, 10, 100, ...) so a change in the
    machine's speed hits both sizes alike; the last line per size is the median of the runs."""
    import statistics

    from pipelines.execution.benchmark import bench_exchange

    rates: dict[int, list[float]] = {n: [] for n in args.orders}
    for r in range(args.repeats):
        for n in args.orders:
            out = bench_exchange(n_events=args.events, n_orders=n, seed=13 + r)
            rates[n].append(out["events_per_s"])
            emit(bench="execution", run=r, resting_orders=n, events=args.events,
                 events_per_s=round(out["events_per_s"]), us_per_event=round(out["us_per_event"], 3),
                 wall_events_per_s=round(out["wall_events_per_s"]), fills=out["fills"])
    for n, rs in rates.items():
        emit(bench="execution", summary="median", resting_orders=n, runs=len(rs),
             events_per_s=round(statistics.median(rs)), min=round(min(rs)), max=round(max(rs)))


def bench_execution_graph(args) -> None:
    """Decision -> order accepted latency in the running trading graph (see the module docstring)."""
    import statistics

    import ray

    from actors.execution import execution_name
    from actors.wiring import MarketDataGraph
    from pipelines.config import config_from_dict
    from pipelines.persistence.server import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="qt-bench-"))
    server = EmbeddedValkey(tmp / "valkey")
    url = server.start()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=300 * 2**20)
    names = ("decision_to_accepted", "tick_to_decision", "tick_to_accepted")
    runs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    try:
        for r in range(args.graph_runs):
            sym = "WDOZ26"
            hmarl = {"enabled": True, "decision_every_ms": args.decision_ms, "threshold": args.threshold,
                     "model_dir": str(REPO / "models")}
            raw = bench_config(args, args.rate, sym, features=True, hmarl=hmarl)
            raw["execution"] = {"enabled": True}
            # At a threshold this low the account limits (cooldown after 3 losing round trips, the
            # daily loss) stop new entries within seconds and leave the window without samples:
            # this measures the order path, not the limits.
            raw["risk"] = {"max_consecutive_losses": 0, "max_daily_loss": 0, "max_drawdown": 0}
            cfg = config_from_dict(raw)
            server_client_flush(url)
            g = MarketDataGraph(cfg, url)
            g.start()
            sub = TradingSubscriber(g.zmq_endpoints["decision"])
            try:
                feed, vw, zp = g.handle("feed"), g.handle("valkey_writer"), g.handle("zmq_publisher")
                eng, ex = g.handle(f"features:{sym}"), g.handle(execution_name(cfg.execution.account))
                time.sleep(args.warmup)
                s0 = snapshot(feed, vw, zp, eng)
                t0 = time.time_ns()
                time.sleep(args.seconds)
                t1 = time.time_ns()
                s1 = snapshot(feed, vw, zp, eng)
                time.sleep(args.grace)  # the order events of the window's last decisions
                ex_stats = ray.get(ex.stats.remote())
            finally:
                sub.close()
                g.shutdown()
            dt = s1["t"] - s0["t"]
            produced = (s1["feed"] - s0["feed"]) / dt
            analysed = (s1["engine"] - s0["engine"]) / dt
            backlog = (s1["queue"] - s0["queue"] > 0.05 * args.rate * dt) or min(produced, analysed) < 0.95 * args.rate
            m = sub.measure(t0, t1)
            common = {"bench": "execution", "part": "graph", "run": r, "rate": args.rate,
                      "decision_ms": args.decision_ms, "threshold": args.threshold}
            for name in names:
                lat = m[name]
                runs[name].append(lat)
                for q in (50, 99):
                    v = round(float(np.percentile(lat, q)), 3) if lat.size else None
                    emit(**common, metric=f"{name}_p{q}_ms", value=v, unit="ms", samples=int(lat.size))
                emit(**common, metric=f"{name}_max_ms", value=round(float(lat.max()), 3) if lat.size else None,
                     unit="ms", samples=int(lat.size))
            emit(**common, metric="orders", value=m["entries"], unit="entry orders", decisions=m["decisions"],
                 actions=m["actions"], accepted=m["accepted"], not_accepted=m["not_accepted"],
                 orders_any_role=m["orders"], risk_denials=m["risk_denials"], backlog_growing=bool(backlog),
                 produced_per_s=round(produced, 1), features_per_s=round(analysed, 1), window_s=round(dt, 2))
            emit(**common, metric="execution_actor", value=ex_stats["held"], unit="events held",
                 late_decisions=ex_stats["late_decisions"], overrun=ex_stats["overrun"],
                 waiting_decisions=ex_stats["waiting_decisions"], decisions=ex_stats["decisions"],
                 trading_state=ex_stats["trading_state"], risk_reason=ex_stats["risk_reason"],
                 day_pnl_net=round(ex_stats["day_pnl_net"], 2))
        for name, per_run in runs.items():
            pooled = np.concatenate(per_run) if per_run else np.array([])
            p50s = [float(np.percentile(a, 50)) for a in per_run if a.size]
            p99s = [float(np.percentile(a, 99)) for a in per_run if a.size]
            row = {"bench": "execution", "part": "graph", "summary": name, "rate": args.rate, "runs": len(per_run),
                   "samples": int(pooled.size)}
            for label, xs in (("p50", p50s), ("p99", p99s)):
                row[f"{label}_ms_median_of_runs"] = round(statistics.median(xs), 3) if xs else None
                row[f"{label}_ms_runs_min_max"] = [round(min(xs), 3), round(max(xs), 3)] if xs else None
            for q in (50, 99):
                row[f"pooled_p{q}_ms"] = round(float(np.percentile(pooled, q)), 3) if pooled.size else None
            row["pooled_max_ms"] = round(float(pooled.max()), 3) if pooled.size else None
            emit(**row)
    finally:
        ray.shutdown()
        server.stop()


class TradingSubscriber:
    """A SUB socket on ZeroMQ 5561 read by a thread of its own: keeps, with the wall-clock
    arrival of each, the decisions, the entry orders (client order id -> decision id), each
    order's first ACCEPTED or terminal event, and the risk denials."""

    def __init__(self, endpoint: str):
        import threading

        import zmq

        self.decisions: list[tuple[int, dict]] = []  # (arrival ns, decision)
        self.entry_of: dict[str, str] = {}  # client order id -> decision id, entry orders only
        self.order_arrivals: list[int] = []  # every order, any role
        self.accepted_at: dict[str, int] = {}  # client order id -> arrival ns of its ACCEPTED
        self.ended: dict[str, str] = {}  # client order id -> the first terminal status
        self.denials: list[tuple[int, str]] = []  # (arrival ns, reason)
        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.connect(endpoint)
        for prefix in (b"decision.", b"order.", b"risk."):
            self._sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        from pipelines.model.orders import ACCEPTED, ENTRY, TERMINAL

        entry_suffix = f":{ENTRY}"
        while not self._stop.is_set():
            if not self._sock.poll(100):
                continue
            _topic, payload = self._sock.recv_multipart()
            now = time.time_ns()
            msg = orjson.loads(payload)
            kind = msg.get("kind")
            if kind == "decision":
                self.decisions.append((now, msg))
            elif kind == "order":
                self.order_arrivals.append(now)
                if msg["client_order_id"].endswith(entry_suffix):
                    self.entry_of[msg["client_order_id"]] = msg["decision_id"]
            elif kind == "order_event":
                cid, status = msg["client_order_id"], msg["status"]
                if status == ACCEPTED:
                    self.accepted_at.setdefault(cid, now)
                elif status in TERMINAL:
                    self.ended.setdefault(cid, status)
            elif kind == "risk" and msg.get("action") == "denied":
                self.denials.append((now, str(msg.get("reason", ""))))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close(linger=0)

    def measure(self, t0: int, t1: int) -> dict:
        """Latencies (ms) and counts for the decisions that arrived in [t0, t1); orders of any
        role and risk denials that arrived in it."""
        from collections import Counter

        entry = {did: cid for cid, did in self.entry_of.items()}
        actions: Counter = Counter()
        not_accepted: Counter = Counter()
        tick, acc, total = [], [], []
        entries = 0
        for at, d in self.decisions:
            if not t0 <= at < t1:
                continue
            actions[d["action"]] += 1
            tick.append((at - d["ts_recv"]) / 1e6)
            cid = entry.get(d["decision_id"])
            if cid is None:
                continue
            entries += 1
            if cid in self.accepted_at:
                acc.append((self.accepted_at[cid] - at) / 1e6)
                total.append((self.accepted_at[cid] - d["ts_recv"]) / 1e6)
            else:
                not_accepted[self.ended.get(cid, "no_event")] += 1
        return {"decision_to_accepted": np.array(acc), "tick_to_decision": np.array(tick),
                "tick_to_accepted": np.array(total), "decisions": sum(actions.values()), "actions": dict(actions),
                "entries": entries, "accepted": len(acc), "not_accepted": dict(not_accepted),
                "orders": sum(t0 <= at < t1 for at in self.order_arrivals),
                "risk_denials": dict(Counter(reason for at, reason in self.denials if t0 <= at < t1))}


def profitdll_expected(rows: list[dict]) -> int:
    """Events the session must deliver for the fake's sent log: every non-edit trade, and a
    snapshot per offer-book callback once its ticker has an exchange time (a trade, or an add's date)."""
    timed: set = set()
    n = 0
    for row in rows:
        if row["kind"] == "trade" and not int(row["flags"]) & 1:
            timed.add(row["ticker"])
            n += 1
        elif row["kind"] == "book":
            if row["action"] == "0":
                timed.add(row["ticker"])
            n += row["ticker"] in timed
    return n


def bench_profitdll(args) -> None:
    """Fake DLL native thread -> bridge child -> FeedActor -> a destination (see the module docstring)."""
    import os
    import shutil
    from datetime import datetime, timedelta

    import ray

    from pipelines.config import config_from_dict
    from pipelines.model.clock import SAO_PAULO
    from tests.profitdll_fake import build_fake_dll, fake_env, read_sent_log

    dll = build_fake_dll()
    sym = "WDOZ26"
    for rate in args.rate:
        tmp = Path(tempfile.mkdtemp(prefix="qt-bench-profitdll-"))
        sent_log = tmp / "sent.log"
        # Read by the fake inside the bridge child: set before ray.init so the workers (and
        # the child the FeedActor spawns) inherit them. The credentials are bench values.
        # The fake's market clock starts a minute ahead of B3 local time (and, at 0-2 ms per
        # event, runs ahead anyway): a book snapshot sent before any exchange time carries its
        # receive time as event time, which must not lie after the exchange times that follow
        # or the FeedActor rejects them as time going backwards (as it would with the real DLL
        # on a host whose clock runs ahead of the exchange).
        start = (datetime.now(SAO_PAULO) + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
        env = {**fake_env(rate=rate, events=args.events, seed=1, sent_log=sent_log, log_depth=1, state_delay_us=0,
                          start=start),
               "PROFITDLL_PATH": str(dll), "PROFIT_KEY": "bench-key", "PROFIT_USER": "bench-user",
               "PROFIT_PASSWORD": "bench-password"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=300 * 2**20)
        try:
            cfg = config_from_dict({
                "namespace": f"bench{uuid.uuid4().hex[:6]}", "symbols": [sym],
                "feed": {"source": "profitdll", "profitdll": {"resource": None, "ready_timeout_s": 60},
                         "batch_max_ms": args.batch_ms, "batch_max_events": args.batch_events},
                "zmq": {f"{k}_port": 0 for k in ("tick", "book", "flow", "footprint", "liquidity", "tape", "decision")},
                "features": {"enabled": False}, "hmarl": {"enabled": False}, "recorder": {"enabled": False},
            })
            run = profitdll_graph_run if args.graph else profitdll_sink_run
            r = run(cfg, sym, timeout_s=60 + args.events / 2000)
        finally:
            ray.shutdown()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        rows = read_sent_log(sent_log)
        shutil.rmtree(tmp, ignore_errors=True)
        market = sum(1 for row in rows if row["kind"] in ("trade", "book", "daily"))
        expected = profitdll_expected(rows)
        rejected = sum(r["feed_stats"]["validation"]["rejected"].values())
        src = r["feed_stats"].get("source") or {}
        common = {"bench": "profitdll", "rate": rate, "destination": "graph" if args.graph else "sink"}
        dt = r["t_last"] - r["t0"]
        window = r["n_last"] - r["n0"]
        per_s = window / dt if dt > 0 else None
        offered = rate * expected / market if rate and market else None  # events/s the paced fake offers
        emit(**common, metric="events_per_s", value=round(per_s, 1) if per_s else None, unit="events/s",
             offered_per_s=round(offered, 1) if offered else None,
             sustained=None if offered is None or per_s is None else per_s >= 0.95 * offered,
             delivered=r["n_last"], expected=expected, market_callbacks=market, window_events=window,
             window_s=round(dt, 3), cpu_us_per_event=r["cpu_us_per_event"])
        emit(**common, metric="lost_events", value=expected - r["n_last"] - rejected, unit="events", rejected=rejected,
             bridge_gaps=src.get("gaps"), bridge_lost=src.get("lost_events"), bridge_recovered=src.get("recovered_events"),
             host_restarts=src.get("restarts"))
        emit_latency(common, "latency", r["latency_ms"])


class ProfitBenchSink:
    """The light FeedActor destination of ``bench.py profitdll``: unpickles each batch (as
    every real destination does), checks that the feed's seqs run 1, 2, 3... per symbol,
    and keeps each event's latency (arrival time minus ``ts_recv``)."""

    def __init__(self):
        self.incarnation = uuid.uuid4().hex
        self.pos: dict[str, int] = {}
        self.seq_errors = 0
        self.lat_ns: list[int] = []

    def on_batch(self, events, prev):
        import gc
        import pickle

        from pipelines.data.sequencing import BatchReply

        # The events die with this call: no garbage collection in the middle of it (the
        # observer should cost the machine as little as it can).
        pause_gc = gc.isenabled()
        if pause_gc:
            gc.disable()
        try:
            if isinstance(events, bytes):
                events = pickle.loads(events)
            now = time.time_ns()
            pos = self.pos
            for e in events:  # Event fields: symbol, ts_event, ts_recv, seq, ...
                if e[3] != pos.get(e[0], 0) + 1:
                    self.seq_errors += 1
                pos[e[0]] = e[3]
            self.lat_ns.extend([now - e[2] for e in events])
            n = len(events)
            del events
        finally:
            if pause_gc:
                gc.enable()
        return BatchReply(self.incarnation, n, 0, None)

    def position(self) -> dict[str, int]:
        return dict(self.pos)

    def reset_latency(self) -> None:
        self.lat_ns = []

    def latency_ms(self):
        return np.array(self.lat_ns, dtype=np.int64) / 1e6

    def ping(self) -> dict:
        import os

        return {"incarnation": self.incarnation, "pid": os.getpid()}

    def stats(self) -> dict:
        return {"seq_errors": self.seq_errors, "position": dict(self.pos)}


def profitdll_sink_run(cfg, sym: str, timeout_s: float) -> dict:
    """The FeedActor (feed.source profitdll: it spawns the bridge child) feeding one ProfitBenchSink."""
    import ray

    from functools import partial

    from actors.config import ActorConfig
    from actors.feed import FeedActor, Route
    from actors.wiring import ALL_KINDS
    from pipelines.adapters.sources import make_source

    opts = {"namespace": cfg.namespace, "num_cpus": 0, "max_restarts": 0}
    sink = ray.remote(ProfitBenchSink).options(name="sink", **opts).remote()
    ray.get(sink.__ray_ready__.remote())
    feed = ray.remote(FeedActor).options(name="feed", **opts).remote(
        ActorConfig.for_run(cfg, None, "bench").with_domain(cfg.feed), [Route("sink", sink, ALL_KINDS, None)],
        open_source=partial(make_source, cfg.feed, tuple(cfg.symbols)))
    try:
        ray.get(feed.__ray_ready__.remote(), timeout=120)
        pids = profitdll_pids(feed, {"sink": sink})
        r = watch_delivered(sink, sym, pids, idle_s=3.0, timeout_s=timeout_s)
        r["latency_ms"] = ray.get(sink.latency_ms.remote())
        r["feed_stats"] = ray.get(feed.stop.remote(15.0))
        if ray.get(sink.stats.remote())["seq_errors"]:
            raise RuntimeError("the sink saw events out of seq order")
    finally:
        for h in (feed, sink):
            ray.kill(h, no_restart=True)
    return r


def profitdll_graph_run(cfg, sym: str, timeout_s: float) -> dict:
    """The whole market-data graph (feed, ZeroMQ publisher, buffers; no Valkey) via MarketDataGraph."""
    import ray

    from actors.wiring import MarketDataGraph

    g = MarketDataGraph(cfg, None)
    try:
        g.start()
        feed, zp = g.handle("feed"), g.handle("zmq_publisher")
        pids = profitdll_pids(feed, {name: g.handle(name) for name in g.actors if name != "feed"})
        r = watch_delivered(zp, sym, pids, idle_s=3.0, timeout_s=timeout_s)
        r["latency_ms"] = ray.get(zp.latency_ms.remote())
        r["feed_stats"] = ray.get(feed.stats.remote())
    finally:
        g.shutdown()
    return r


def profitdll_pids(feed, others: dict) -> dict[str, int]:
    """Process ids whose CPU time the profitdll bench reports: the bridge host (the DLL's
    process), the FeedActor's worker and the destination(s)."""
    import ray

    pids = {"bridge_host": ray.get(feed.stats.remote())["source"]["child_pid"],
            "feed_actor": ray.get(feed.ping.remote())["pid"]}
    pids.update({name: ray.get(h.ping.remote())["pid"] for name, h in others.items()})
    return pids


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) from /proc; None elsewhere."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def watch_delivered(dest, sym: str, pids: dict[str, int], idle_s: float, timeout_s: float,
                    every_s: float = 0.02) -> dict:
    """Watch the destination's position (= events it got: the feed numbers each symbol's
    events 1, 2, ...) until it stops moving for ``idle_s``. Returns the time and count at the
    first poll that saw events (``t0``, ``n0``) and at the last change (``t_last``,
    ``n_last``), and each process's CPU time over that window per event
    (``cpu_us_per_event``; machine-load independent, unlike events/s). Latency samples are
    reset at that first poll."""
    import ray

    deadline = time.monotonic() + timeout_s
    t0 = n0 = cpu0 = cpu_last = None
    t_last, n_last = time.monotonic(), 0
    while time.monotonic() < deadline:
        n = ray.get(dest.position.remote()).get(sym, 0)
        now = time.monotonic()
        if n and t0 is None:
            ray.get(dest.reset_latency.remote())
            t0, n0, cpu0 = now, n, {k: process_cpu_s(p) for k, p in pids.items()}
        if n != n_last:
            t_last, n_last = now, n
            if t0 is not None:
                cpu_last = {k: process_cpu_s(p) for k, p in pids.items()}
        elif t0 is not None and now - t_last >= idle_s:
            break
        time.sleep(every_s)
    if t0 is None:
        raise RuntimeError(f"no event reached the destination in {timeout_s:.0f} s")
    events = n_last - n0
    cpu = {k: round((cpu_last[k] - cpu0[k]) / events * 1e6, 2) if events and cpu_last and cpu0[k] is not None
           and cpu_last[k] is not None else None for k in pids}
    return {"t0": t0, "n0": n0, "t_last": t_last, "n_last": n_last, "cpu_us_per_event": cpu}


# -- backtest ---------------------------------------------------------------------------------

BACKTEST_SYM = "WDOZ26"
BACKTEST_MODES = ("full_stack", "features_graph", "features_only", "end_to_end")


def backtest_config(args, model_dir: str, *, hmarl: bool = True, seed: int | None = None, rate: float | None = None,
                    events: int | None = None, start: str | None = None):
    """The bench's backtest config: one symbol, the simulator session of ``args`` (or the one
    given), HMARL and execution on (off: the FeatureEngine alone), nothing recorded."""
    from pipelines.config import config_from_dict

    sim = {"seed": args.seed if seed is None else seed, "rate": args.rate if rate is None else rate,
           "start": start or args.start, "max_events": events or args.events, "speed": 0.0}
    return config_from_dict({
        "symbols": [BACKTEST_SYM],
        "feed": {"batch_max_events": args.batch, "simulator": sim},
        "recorder": {"enabled": False},
        "features": {"enabled": True},
        "hmarl": {"enabled": True, "model_dir": model_dir, "decision_every_ms": args.decision_ms} if hmarl
        else {"enabled": False},
        "execution": {"enabled": hmarl},
    })


def simulate(cfg) -> list:
    """Every event of ``cfg``'s simulator session (raw, as the source gives them to the feed)."""
    from pipelines.adapters.simulator import MarketSimulator

    sim = MarketSimulator(cfg.feed.simulator, list(cfg.symbols))
    events: list = []
    while not sim.exhausted:
        events.extend(sim.poll(10_000))
    return events


def train_bench_model(args, out_dir: str) -> None:
    """The ML voter's model, trained on another seed of the simulator (30,000 events at 400/s,
    as the tests' model), so that it votes on the bench's simulated market."""
    from pipelines.alpha.ml import train_model
    from pipelines.features.engine import SymbolAnalytics
    from pipelines.model.messages import FeatureVector

    cfg = backtest_config(args, out_dir, seed=args.seed + 98, rate=400, events=30_000)
    out: list = []
    SymbolAnalytics(BACKTEST_SYM, cfg.feed.simulator.tick_size).on_events(simulate(cfg), out)
    train_model([m for m in out if type(m) is FeatureVector], int(cfg.hmarl.horizon_s * 1e9), out_dir, "bench")


def decisions_digest(g) -> str:
    import hashlib

    # ts_recv aside: the simulator stamps it with the wall clock (no decision reads it)
    rows = ([d._replace(ts_recv=0) for d in g.decisions], g.orders(), g.fills())
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def run_graph(cfg, events: list, chunk: int) -> dict:
    """``events`` through an InProcessGraph of ``cfg``, ``chunk`` at a time: CPU and wall time,
    the CPU per event of each chunk, and what came out."""
    from actors.backtest import InProcessGraph

    cpu, wall = time.process_time_ns, time.perf_counter_ns
    c0, w0 = cpu(), wall()
    g = InProcessGraph(cfg)
    per_event: list[float] = []
    for i in range(0, len(events), chunk):
        part = events[i:i + chunk]
        t = cpu()
        g.feed(g.admit(part))
        per_event.append((cpu() - t) / 1e3 / len(part))
    g.feed(g.end_of_input())
    final = g.finish()
    return {"cpu_s": (cpu() - c0) / 1e9, "wall_s": (wall() - w0) / 1e9, "chunk_us": np.array(per_event),
            "events": final["feed"]["events_out"], "graph": g, "final": final}


def run_features_only(cfg, numbered: list) -> dict:
    from pipelines.features.engine import SymbolAnalytics
    from pipelines.model.clock import NS_PER_MS

    f = cfg.features
    eng = SymbolAnalytics(BACKTEST_SYM, cfg.feed.simulator.tick_size, vector_every_ns=int(f.vector_every_ms * NS_PER_MS),
                          state_every_ns=int(f.state_every_ms * NS_PER_MS), vpin_bucket_volume=f.vpin_bucket_volume)
    out: list = []
    c0, w0 = time.process_time_ns(), time.perf_counter_ns()
    eng.on_events(numbered, out)
    return {"cpu_s": (time.process_time_ns() - c0) / 1e9, "wall_s": (time.perf_counter_ns() - w0) / 1e9,
            "events": len(numbered), "outputs": len(out)}


def run_end_to_end(cfg) -> dict:
    from actors.backtest import InProcessGraph

    c0, w0 = time.process_time_ns(), time.perf_counter_ns()
    g = InProcessGraph(cfg)
    final = g.run()
    return {"cpu_s": (time.process_time_ns() - c0) / 1e9, "wall_s": (time.perf_counter_ns() - w0) / 1e9,
            "events": final["feed"]["events_out"], "graph": g, "final": final}


def bench_backtest(args) -> None:
    import statistics

    only = set(args.only)
    with tempfile.TemporaryDirectory(prefix="qt-bench-model-") as model_dir:
        train_bench_model(args, model_dir)
        if "throughput" in only:
            bench_backtest_throughput(args, model_dir)
        if "day" in only:
            bench_backtest_day(args, model_dir)
        if "sweep" in only:
            bench_backtest_sweep(args, model_dir, statistics)


def bench_backtest_throughput(args, model_dir: str) -> None:
    import statistics

    from actors.backtest import InProcessGraph

    full = backtest_config(args, model_dir)
    bare = backtest_config(args, model_dir, hmarl=False)
    events = simulate(full)
    numbered = InProcessGraph(bare).admit(events)
    runs = {
        "full_stack": lambda: run_graph(full, events, args.batch),
        "features_graph": lambda: run_graph(bare, events, args.batch),
        "features_only": lambda: run_features_only(bare, numbered),
        "end_to_end": lambda: run_end_to_end(full),
    }
    rates: dict[str, list[float]] = {m: [] for m in BACKTEST_MODES}
    digests: set[str] = set()
    common = {"bench": "backtest", "events": len(events), "rate": args.rate, "seed": args.seed,
              "decision_ms": args.decision_ms}
    for r in range(args.repeats):
        for mode in BACKTEST_MODES:
            out = runs[mode]()
            eps = out["events"] / out["cpu_s"]
            rates[mode].append(eps)
            row = {**common, "run": r, "mode": mode, "events_per_s": round(eps), "cpu_s": round(out["cpu_s"], 3),
                   "wall_events_per_s": round(out["events"] / out["wall_s"])}
            if "chunk_us" in out:
                row["chunk_us_per_event_p50"] = round(float(np.percentile(out["chunk_us"], 50)), 2)
                row["chunk_us_per_event_p99"] = round(float(np.percentile(out["chunk_us"], 99)), 2)
            if "graph" in out and out["graph"].decisions:
                g, final = out["graph"], out["final"]
                digests.add(decisions_digest(g))
                ml = final.get(f"ml:{BACKTEST_SYM}", {})
                row.update(decisions=len(g.decisions), orders=len(g.orders()), fills=len(g.fills()),
                           ml_signals=ml.get("signals"), ml_abstain_reason=ml.get("abstain_reason"))
            emit(**row)
    for mode, rs in rates.items():
        emit(**common, summary="median", mode=mode, runs=len(rs), events_per_s=round(statistics.median(rs)),
             min=round(min(rs)), max=round(max(rs)))
    med = {m: statistics.median(rs) for m, rs in rates.items()}
    emit(**common, summary="ratios", full_stack_of_features_only=round(med["full_stack"] / med["features_only"], 3),
         full_stack_of_features_graph=round(med["full_stack"] / med["features_graph"], 3),
         end_to_end_of_full_stack=round(med["end_to_end"] / med["full_stack"], 3),
         target_events_per_s=50_000, full_stack_meets_target=med["full_stack"] >= 50_000,
         same_decisions_every_run=len(digests) == 1)


def bench_backtest_day(args, model_dir: str) -> None:
    """One simulated WDO day, 09:00-18:00, through the full stack with the simulator."""
    from dataclasses import fields, replace

    from pipelines.adapters.config import SimulatorConfig

    day = args.start[:10]
    offset = args.start[19:]
    start, end = f"{day}T09:00:00{offset}", f"{day}T18:00:00{offset}"
    flat_events = int(args.day_rate * 9 * 3600)  # 09:00-18:00 at the flat rate
    names = {f.name for f in fields(SimulatorConfig)}
    # The day profile ends at ``end``; max_events only bounds it (twice the mean rate's count).
    cfg = backtest_config(args, model_dir, rate=args.day_rate, start=start,
                          events=2 * flat_events if {"profile", "end"} <= names else flat_events)
    if {"profile", "end"} <= names:
        cfg = replace(cfg, feed=replace(cfg.feed, simulator=replace(cfg.feed.simulator, profile="day", end=end)))
        how = f"simulator profile: day, mean {args.day_rate:g} events/s, 09:00-18:00"
    else:
        how = f"flat profile at {args.day_rate:g} events/s, 09:00-18:00 (the simulator has no day profile)"
    out = run_end_to_end(cfg)
    g = out["graph"]
    first, last = (g.decisions[0].ts_event, g.decisions[-1].ts_event) if g.decisions else (0, 0)
    emit(bench="backtest", part="day", how=how, events=out["events"], seconds=round(out["wall_s"], 1),
         cpu_s=round(out["cpu_s"], 1), events_per_s=round(out["events"] / out["cpu_s"]),
         decisions=len(g.decisions), decisions_span_h=round((last - first) / 3.6e12, 2), orders=len(g.orders()),
         fills=len(g.fills()), decision_ms=args.decision_ms)


def sweep_task(cfg, events: list) -> tuple[str, float]:
    """One sweep task: a full-stack backtest over ``events``; what it decided, and its CPU time."""
    from actors.backtest import InProcessGraph

    t = time.process_time()
    g = InProcessGraph(cfg)
    g.feed(g.admit(events))
    g.feed(g.end_of_input())
    g.finish()
    return decisions_digest(g), time.process_time() - t


def bench_backtest_sweep(args, model_dir: str, statistics) -> None:
    """The same ``--sweep-tasks`` backtests as Ray tasks, one at a time then two at a time."""
    import os

    import ray

    cfg = backtest_config(args, model_dir, events=args.sweep_events)
    events = simulate(cfg)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200_000_000)
    try:
        task = ray.remote(sweep_task)
        ref = ray.put(events)
        ray.get([task.options(num_cpus=1).remote(cfg, ref) for _ in range(2)])  # both workers up, imports done
        times: dict[int, list[float]] = {1: [], 2: []}
        digests: set[str] = set()
        for r in range(args.sweep_repeats):
            for workers in (1, 2):
                t0 = time.perf_counter()
                out = ray.get([task.options(num_cpus=2 // workers).remote(cfg, ref) for _ in range(args.sweep_tasks)])
                dt = time.perf_counter() - t0
                times[workers].append(dt)
                digests.update(d for d, _cpu in out)
                emit(bench="backtest", part="sweep", run=r, workers=workers, tasks=args.sweep_tasks,
                     events_per_task=len(events), seconds=round(dt, 3),
                     task_cpu_s_median=round(statistics.median(c for _d, c in out), 3))
        one, two = statistics.median(times[1]), statistics.median(times[2])
        emit(bench="backtest", part="sweep", summary="median", tasks=args.sweep_tasks, runs=args.sweep_repeats,
             seconds_1_worker=round(one, 3), seconds_2_workers=round(two, 3), speedup=round(one / two, 3),
             target_speedup=1.8, same_decisions_every_task=len(digests) == 1,
             how="plain ray.remote tasks, each an InProcessGraph over the same events")
    finally:
        ray.shutdown()


# -- training ---------------------------------------------------------------------------------


def training_config(args):
    from pipelines.config import config_from_dict

    return config_from_dict({
        "symbols": [BACKTEST_SYM],
        "feed": {"simulator": {"seed": args.seed, "rate": args.rate, "start": args.start,
                               "max_events": args.events, "speed": 0.0}},
        "recorder": {"enabled": False},
        "hmarl": {"decision_every_ms": args.decision_ms},
    })


def bench_training(args) -> None:
    import statistics

    from pipelines.model.clock import NS_PER_MS
    from pipelines.training.dataset import build_dataset

    cfg = training_config(args)
    events = simulate(cfg)
    common = {"bench": "training", "events": len(events), "rate": args.rate, "seed": args.seed,
              "decision_ms": args.decision_ms}

    def build():
        return build_dataset(events, BACKTEST_SYM, cfg.feed.simulator.tick_size, cfg.training.label,
                             decision_every_ns=int(cfg.hmarl.decision_every_ms * NS_PER_MS),
                             vector_every_ns=int(cfg.features.vector_every_ms * NS_PER_MS),
                             costs=cfg.execution.exchange.costs, source="simulator")

    ds = None
    if "dataset" in args.only:
        seconds = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            ds = build()
            dt = time.perf_counter() - t0
            seconds.append(dt)
            s = ds.summary()
            emit(**common, part="dataset", run=r, samples=s["samples"], labelled=s["labelled"], seconds=round(dt, 3),
                 samples_per_s=round(s["samples"] / dt), events_per_s=round(len(events) / dt))
        med = statistics.median(seconds)
        emit(**common, part="dataset", summary="median", runs=len(seconds), samples=len(ds.frame),
             seconds=round(med, 3), samples_per_s=round(len(ds.frame) / med), events_per_s=round(len(events) / med),
             min_s=round(min(seconds), 3), max_s=round(max(seconds), 3))
    ds = ds if ds is not None else build()
    if "cv" in args.only:
        from pipelines.training.evaluate import cross_validate

        tcfg = cfg.training
        t0 = time.perf_counter()
        result = cross_validate(ds, tcfg.fit, tcfg.cv, consensus_threshold=cfg.hmarl.threshold,
                                n_boot=tcfg.bootstrap, seed=tcfg.fit.seed)
        emit(**common, part="cv", scheme=tcfg.cv.scheme, folds=len(result.fold_log_loss), labelled=len(ds.y),
             n_boot=tcfg.bootstrap, seconds=round(time.perf_counter() - t0, 3), score=round(result.score, 5))
    if "tune" in args.only:
        bench_training_tune(args, cfg, ds, common, statistics)


def bench_training_tune(args, cfg, ds, common: dict, statistics) -> None:
    """The same ``--trials`` tuning run on a fresh local Ray of 1 CPU and of 2 CPUs, interleaved."""
    import os

    import ray

    from actors.tune import tune_model

    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    tcfg = cfg.training
    times: dict[int, list[float]] = {1: [], 2: []}
    sequential: set[str] = set()
    for r in range(args.tune_repeats):
        for workers in (1, 2):
            # A fresh Ray per run (its start not timed): every run begins with idle worker processes
            # for its trial actors; tune_model runs as many trials at once as the Ray has CPUs.
            ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     object_store_memory=200_000_000)
            try:
                t0 = time.perf_counter()
                result = tune_model(ds, tcfg.fit, tcfg.cv, args.trials, seed=args.seed,
                                    consensus_threshold=cfg.hmarl.threshold, progress=False)
                dt = time.perf_counter() - t0
            finally:
                ray.shutdown()
            times[workers].append(dt)
            if workers == 1:
                sequential.add(orjson.dumps([(t["params"], t["cv_log_loss"]) for t in result.trials],
                                            option=orjson.OPT_SORT_KEYS).decode())
            emit(**common, part="tune", run=r, workers=workers, trials=args.trials, labelled=len(ds.y),
                 seconds=round(dt, 3), seconds_per_trial=round(dt / args.trials, 3),
                 failed=sum(t["error"] is not None for t in result.trials), best_score=round(result.best_score, 5))
    one, two = statistics.median(times[1]), statistics.median(times[2])
    emit(**common, part="tune", summary="median", trials=args.trials, runs=args.tune_repeats,
         seconds_1_worker=round(one, 3), seconds_2_workers=round(two, 3), speedup=round(one / two, 3),
         same_trials_one_at_a_time=len(sequential) == 1,
         how="Ray Tune + OptunaSearch, 1 CPU per trial, trial actors reused, a fresh local Ray of 1 vs 2 CPUs")


def bench_orders(args) -> None:
    """Decision -> broker acknowledgement through the live path, and the order rate the DLL host
    sustains with zero loss, on the native fake DLL (tests/fake_profitdll) in its own host process.

    Part 1 (``decision_to_ack``): the execution engine with the live venue, as the execution actor
    runs it (in this process: the Ray call into the actor is not in the figure), sends market
    orders through OrderClient -> the host (scripts/feed_bridge.py --routing) -> SendOrder; the
    fake accepts and fills each from its native thread. Latency = from ``on_decision`` to the
    venue's ACCEPTED (the ack) and to its last fill; decisions alternate BUY / SELL 1, one at a time.
    Part 2 (``order_rate``): OrderClient alone sends resting limits (far from the book) as fast as
    request/reply allows, at each offered rate, for ``--seconds``; an order is lost when its
    ACCEPTED update never arrives; the fake's log counts what reached the DLL."""
    import os
    import subprocess
    import tempfile
    from dataclasses import replace
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from pipelines.adapters.bridge.order_client import OrderClient
    from pipelines.execution.config import ExecutionConfig
    from pipelines.execution.costs import CostModel
    from pipelines.execution.engine import ExecutionEngine
    from pipelines.execution.profitdll_venue import ProfitDLLVenue
    from pipelines.model.messages import BookSnapshot, Decision, Trade
    from pipelines.risk.config import RiskConfig
    from tests.profitdll_fake import build_fake_dll, fake_env, fresh_copy, read_sent_log

    sym, account = "WDOZ26", "308:1234567"
    tmp = Path(tempfile.mkdtemp(prefix="qt-bench-orders-"))
    sent = tmp / "sent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_PROFITDLL_", "PROFIT_"))}
    env.update({"PROFIT_KEY": "bench-key", "PROFIT_USER": "bench-user", "PROFIT_PASSWORD": "bench-pw",
                "PROFIT_ROUTING_PASSWORD": "bench-route"})
    env.update(fake_env(rate=100, events=10, state_delay_us=0, sent_log=sent, routing_password="bench-route",
                        broker_book=f"{sym}:5000.0x100000000/5000.5x100000000", max_position=1_000_000))
    cmd = [sys.executable, str(REPO / "scripts" / "feed_bridge.py"), "--source", "profitdll", "--symbols", sym,
           "--pub", "tcp://127.0.0.1:0", "--rep", "tcp://127.0.0.1:0", "--orders", "tcp://127.0.0.1:0",
           "--order-pub", "tcp://127.0.0.1:0", "--routing", "--account", account, "--state-dir", str(tmp / "state"),
           "--max-orders-per-s", "1000000", "--order-burst", "1000000", "--exit-with-parent",
           "--dll-path", str(fresh_copy(build_fake_dll(), tmp)), "--log-level", "WARNING"]
    host = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            text=True)
    try:
        line = host.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"the DLL host did not start: {line.strip()!r}")
        info = orjson.loads(line[6:])
        client = OrderClient(info["orders"], info["order_pub"], account)
        s = 1_000_000_000
        t0 = int(datetime(2026, 12, 1, 11, 0, tzinfo=ZoneInfo("America/Sao_Paulo")).timestamp()) * s
        cfg = ExecutionConfig(account="bench", venue="profitdll")
        cfg = replace(cfg, policy=replace(cfg.policy, style="market"))
        venue = ProfitDLLVenue(client, "bench", costs=CostModel(), tick_sizes={sym: 0.5})
        # every round trip loses the spread on the fixed book: no cooldown, no daily loss limit here
        engine = ExecutionEngine(cfg, RiskConfig(account="bench", max_orders_per_s=1000, max_consecutive_losses=0,
                                                 max_daily_loss=0, max_drawdown=0), (sym,),
                                 tick_sizes={sym: 0.5}, venue=venue)
        ack_ms, fill_ms = [], []
        for i in range(args.orders):
            ts = t0 + (i + 1) * s  # a second of event time apart: the risk engine's rate limits stay out of it
            engine.on_market([BookSnapshot(sym, ts, ts, 2 * i + 1, (5000.0,), (10,), (5000.5,), (10,)),
                              Trade(sym, ts, ts, 2 * i + 2, 5000.5, 1, "BUY")])
            d = Decision(f"{sym}:{i}", sym, ts, 2 * i + 2, "BUY" if i % 2 == 0 else "SELL", 1, 0.6, 0.6, 5000.5,
                         10 * s, (), {}, {})
            start = time.perf_counter()
            step = engine.on_decision(d)
            if not step.orders:
                raise SystemExit(f"decision {i} made no order: {step.risk_events} {engine.stats()['risk']}")
            coid = step.orders[-1].client_order_id
            acked = None
            while True:
                out = engine.poll_venue()
                now = time.perf_counter()
                for e in out.order_events:
                    if e.client_order_id == coid and acked is None and e.status != "SUBMITTED":
                        acked = now
                if any(e.client_order_id == coid and e.status == "FILLED" for e in out.order_events):
                    break
                if now - start > 10:
                    raise SystemExit(f"order {coid} not filled in 10 s: {venue.stats()}")
            ack_ms.append((acked - start) * 1000)
            fill_ms.append((now - start) * 1000)
        a, f = np.array(ack_ms), np.array(fill_ms)
        emit(bench="orders", part="decision_to_ack", orders=len(a), p50_ms=round(float(np.median(a)), 3),
             p99_ms=round(float(np.percentile(a, 99)), 3), fill_p50_ms=round(float(np.median(f)), 3),
             fill_p99_ms=round(float(np.percentile(f, 99)), 3))

        for rate in args.rates:
            client.request("cancel_all", {}, 5.0)
            client.poll_updates(1_000_000, 0.2)
            sent_before = sum(1 for r in read_sent_log(sent) if r["kind"] == "send_order")
            coids, acked, start, n = set(), set(), time.perf_counter(), 0
            while time.perf_counter() - start < args.seconds:
                due = start + n / rate
                while time.perf_counter() < due:
                    for u in client.poll_updates(10_000, 0.0):
                        if u.kind == "order" and u.coid in coids and u.status == "ACCEPTED":
                            acked.add(u.coid)
                coid = f"bench-{rate}-{n}"
                reply = client.request("send", {"coid": coid, "symbol": sym, "side": "BUY", "type": "LIMIT",
                                                "quantity": 1, "price": 4000.0, "stop_price": None}, 5.0)
                if reply.get("ok"):
                    coids.add(coid)
                n += 1
            elapsed = time.perf_counter() - start
            deadline = time.perf_counter() + 5
            while len(acked) < len(coids) and time.perf_counter() < deadline:
                for u in client.poll_updates(10_000, 0.05):
                    if u.kind == "order" and u.coid in coids and u.status == "ACCEPTED":
                        acked.add(u.coid)
            at_dll = sum(1 for r in read_sent_log(sent) if r["kind"] == "send_order") - sent_before
            emit(bench="orders", part="order_rate", offered_per_s=rate, sent=n, sent_per_s=round(n / elapsed, 1),
                 accepted_by_host=len(coids), at_dll=at_dll, acked=len(acked), lost=len(coids) - len(acked),
                 zero_loss=len(acked) == len(coids) == at_dll == n)
        client.close()
    finally:
        host.terminate()
        try:
            host.wait(10)
        except subprocess.TimeoutExpired:
            host.kill()


def graph_parser(sub, name: str, help_text: str, warmup: float):
    """A subcommand that runs the actor graph at a list of offered rates."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000, 20000])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=warmup)
    batch_args(p)
    return p


def batch_args(p) -> None:
    """The FeedActor's micro-batch: flush at this age or this size (feed.batch_max_ms / _events)."""
    p.add_argument("--batch-ms", type=float, default=5.0, help="feed.batch_max_ms (default: %(default)s)")
    p.add_argument("--batch-events", type=int, default=500, help="feed.batch_max_events (default: %(default)s)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="QuantumTrader benchmarks (JSON lines on stdout)")
    sub = p.add_subparsers(dest="bench", required=True)
    pp = graph_parser(sub, "pipeline", "feed -> buffers -> Valkey + ZeroMQ throughput and latency", warmup=3.0)
    pp.add_argument("--features", action="store_true", help="include the FeatureEngine and its ZeroMQ analytics")
    pd_ = graph_parser(sub, "decisions", "tick -> decision latency through the whole graph, max sustained rate", warmup=5.0)
    pd_.add_argument("--decision-ms", type=float, default=100.0)
    po = sub.add_parser("orders", help="decision -> broker ack latency and order rate through the DLL host (fake DLL)")
    po.add_argument("--orders", type=int, default=300, help="decisions for the latency part (default: %(default)s)")
    po.add_argument("--rates", type=lambda v: [int(x) for x in v.split(",")], default=[100, 500, 2000],
                    help="offered orders/s for the rate part, comma-separated (default: 100,500,2000)")
    po.add_argument("--seconds", type=float, default=5.0, help="per offered rate (default: %(default)s)")
    pf = sub.add_parser("features", help="feature engine: incremental update, vector, batch, naive baseline")
    pf.add_argument("--events", type=int, default=100_000)
    pf.add_argument("--batch", type=int, default=1_000_000)
    pf.add_argument("--naive", type=int, default=300)
    pe = sub.add_parser("execution", help="simulated exchange: events/s with resting orders; decision -> accepted "
                                          "latency in the running graph")
    pe.add_argument("--events", type=int, default=200_000)
    pe.add_argument("--orders", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100],
                    help="resting orders per run, comma-separated (default: 10,100)")
    pe.add_argument("--repeats", type=int, default=3)
    pe.add_argument("--only", choices=("exchange", "graph"), default=None,
                    help="run one part: the exchange alone, or the decision -> accepted latency in the graph")
    pe.add_argument("--graph-runs", type=int, default=3, help="graph runs (default: %(default)s)")
    pe.add_argument("--rate", type=int, default=5000, help="simulator events/s in the graph (default: %(default)s)")
    pe.add_argument("--seconds", type=float, default=30.0,
                    help="measurement window per graph run (default: %(default)s)")
    pe.add_argument("--warmup", type=float, default=5.0)
    pe.add_argument("--grace", type=float, default=3.0,
                    help="seconds after the window for its last decisions' order events (default: %(default)s)")
    pe.add_argument("--decision-ms", type=float, default=250.0, help="hmarl.decision_every_ms (default: %(default)s)")
    pe.add_argument("--threshold", type=float, default=0.05,
                    help="hmarl.threshold, low so that decisions trade often (default: %(default)s)")
    batch_args(pe)
    pl = sub.add_parser("profitdll", help="fake ProfitDLL -> bridge child -> FeedActor: events/s, loss, latency")
    pl.add_argument("--events", type=int, default=200_000, help="market callbacks the fake sends per run")
    pl.add_argument("--rate", type=lambda s: [int(x) for x in s.split(",")], default=[0, 53_000],
                    help="fake market callbacks/s, comma-separated runs (0 = as fast as possible; "
                         "about 95%% of callbacks are events, so 53000 offers ~50k events/s)")
    batch_args(pl)
    pl.add_argument("--graph", action="store_true",
                    help="through the whole MarketDataGraph (ZeroMQ publisher + buffers) instead of a light sink")
    pb = sub.add_parser("backtest", help="InProcessGraph: full-stack events/s on one core, features-only ceiling, "
                                         "a simulated WDO day, a sweep on 2 Ray workers against 1")
    pb.add_argument("--events", type=int, default=200_000, help="simulator events (default: %(default)s)")
    pb.add_argument("--rate", type=float, default=2000.0, help="simulator events/s of event time (default: %(default)s)")
    pb.add_argument("--seed", type=int, default=1)
    pb.add_argument("--start", default="2026-11-23T10:00:00-03:00", help="session start (ISO, with its offset)")
    pb.add_argument("--decision-ms", type=float, default=1000.0, help="hmarl.decision_every_ms (default: %(default)s)")
    pb.add_argument("--batch", type=int, default=500, help="feed.batch_max_events (default: %(default)s)")
    pb.add_argument("--repeats", type=int, default=3)
    pb.add_argument("--only", type=lambda s: s.split(","), default=["throughput", "day", "sweep"],
                    help="comma-separated parts: throughput, day, sweep (default: all)")
    pb.add_argument("--day-rate", type=float, default=40.0,
                    help="the simulated day's mean events/s (default: %(default)s)")
    pb.add_argument("--sweep-tasks", type=int, default=4)
    pb.add_argument("--sweep-events", type=int, default=100_000)
    pb.add_argument("--sweep-repeats", type=int, default=3)
    pt = sub.add_parser("training", help="ML training: dataset build samples/s, one purged CV, tuning on 2 Ray "
                                         "workers against 1")
    pt.add_argument("--events", type=int, default=400_000, help="simulator events (default: %(default)s)")
    pt.add_argument("--rate", type=float, default=40.0, help="simulator events/s of event time (default: %(default)s)")
    pt.add_argument("--seed", type=int, default=1)
    pt.add_argument("--start", default="2026-11-23T10:00:00-03:00", help="session start (ISO, with its offset)")
    pt.add_argument("--decision-ms", type=float, default=1000.0,
                    help="hmarl.decision_every_ms: one sample per round (default: %(default)s)")
    pt.add_argument("--repeats", type=int, default=3, help="dataset builds (default: %(default)s)")
    pt.add_argument("--trials", type=int, default=16, help="tuning trials per run (default: %(default)s)")
    pt.add_argument("--tune-repeats", type=int, default=3,
                    help="tuning runs per concurrency, interleaved (default: %(default)s)")
    pt.add_argument("--only", type=lambda s: s.split(","), default=["dataset", "cv", "tune"],
                    help="comma-separated parts: dataset, cv, tune (default: all)")
    args = p.parse_args(argv)
    if args.bench == "pipeline":
        bench_pipeline(args)
    elif args.bench == "features":
        bench_features(args)
    elif args.bench == "decisions":
        bench_decisions(args)
    elif args.bench == "backtest":
        bad = set(args.only) - {"throughput", "day", "sweep"}
        if bad:
            p.error(f"--only: unknown part(s) {', '.join(sorted(bad))}; use throughput, day, sweep")
        bench_backtest(args)
    elif args.bench == "training":
        bad = set(args.only) - {"dataset", "cv", "tune"}
        if bad:
            p.error(f"--only: unknown part(s) {', '.join(sorted(bad))}; use dataset, cv, tune")
        bench_training(args)
    elif args.bench == "profitdll":
        bench_profitdll(args)
    elif args.bench == "orders":
        bench_orders(args)
    elif args.bench == "execution":
        if args.only != "graph":
            bench_execution(args)
        if args.only != "exchange":
            bench_execution_graph(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
