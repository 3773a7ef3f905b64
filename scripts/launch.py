#!/usr/bin/env python3
"""Start the QuantumTrader actor system and supervise it until Ctrl-C, SIGTERM or --duration.

    python scripts/launch.py                      # join a `ray start` cluster if one runs, else local
    python scripts/launch.py --address local      # always start a private local Ray
    python scripts/launch.py --address auto       # must join the running cluster
    python scripts/launch.py --duration 30 --symbol WDOZ26 --symbol WINZ26

On start it prints one line ``READY {json}`` (namespace, actors, dashboard_url,
valkey_url, zmq endpoints, symbols), then progress. A bad config prints one
line naming the key and the problem and exits with code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from pipelines.config import ConfigError, load_config  # noqa: E402

log = logging.getLogger("quantumtrader.launch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "config" / "default.yaml"), help="YAML config (default: config/default.yaml)")
    p.add_argument("--address", default=None, help="'auto' (join running cluster), 'local' (private Ray), or host:port; default: auto, falling back to local")
    p.add_argument("--duration", type=float, default=None, help="stop cleanly after this many seconds")
    p.add_argument("--symbol", action="append", default=None, help="symbol to stream (repeatable); overrides config symbols")
    p.add_argument("--object-store-mb", type=int, default=512, help="object store size when starting a local Ray (default 512)")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard with a local Ray")
    p.add_argument("--resume", action="store_true",
                   help="continue the previous run (its paper account, orders and pending outcomes); default: a new run")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--live", action="store_true",
                      help="send real orders through the DLL host (needs execution.venue: profitdll, an account, risk on)")
    mode.add_argument("--shadow", action="store_true",
                      help="run the live order path up to the DLL host, which acknowledges without sending (host --shadow)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def init_ray(address: str | None, namespace: str, object_store_mb: int, dashboard: bool):
    import ray

    local_kw = dict(
        address="local",
        namespace=namespace,
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        object_store_memory=object_store_mb * 2**20,
        log_to_driver=True,
    )
    if address == "local":
        return ray.init(**local_kw)
    if address in (None, "auto"):
        try:
            return ray.init(address="auto", namespace=namespace)
        except ConnectionError:
            if address == "auto":
                raise
            print("no running Ray cluster found; starting a local one", flush=True)
            return ray.init(**local_kw)
    return ray.init(address=address, namespace=namespace)


def start_valkey(cfg):
    """The configured Valkey URL, or an embedded server started here (returned too, to stop it).

    The embedded server requires the password in ``$<valkey.password_env>`` when it is set (the
    same variable the actors read), so what the actors send is what it checks. The URL returned
    never contains the password."""
    if cfg.valkey.url:
        return cfg.valkey.url, None
    from pipelines.persistence.connection import resolve_password
    from pipelines.persistence.server import EmbeddedValkey

    data_dir = Path(cfg.valkey.data_dir)
    if not data_dir.is_absolute():
        data_dir = REPO / data_dir
    server = EmbeddedValkey(data_dir, host=cfg.valkey.host, port=cfg.valkey.port, password=resolve_password(cfg.valkey))
    url = server.start()
    return url, server


def progress_line(elapsed: float, stats: dict, totals: dict | None = None) -> str:
    """One progress line; counters from ``totals`` (the run's, restarts included) when given."""
    totals = totals or {}
    feed = stats.get("feed", {})
    val = feed.get("validation", {})
    rej = sum((val.get("rejected") or {}).values())
    vw = stats.get("valkey_writer", {})
    zp = stats.get("zmq_publisher", {})
    bufs = " ".join(
        f"{name}={s.get('size')}" for name, s in sorted(stats.items()) if ":" in name and isinstance(s, dict) and "size" in s
    )
    feats = " ".join(
        f"{name} " + " ".join(f"{label}={totals.get(f'{name}.{kind}', (s.get('emitted') or {}).get(kind, 0))}"
                              for label, kind in (("vectors", "features"), ("flow", "flow"), ("tape", "tape")))
        for name, s in sorted(stats.items()) if name.startswith("features:") and isinstance(s, dict)
    )
    hmarl = " ".join(filter(None, (hmarl_summary(name, s, stats, totals) for name, s in sorted(stats.items()))))
    trading = "\n           ".join(filter(None, (execution_summary(name, s) for name, s in sorted(stats.items()))))
    p99 = zp.get("latency_p99_ms")
    return (
        f"[{elapsed:6.1f}s] feed events={totals.get('feed.events', feed.get('events_out', 0))} rejected={rej} | "
        f"valkey written={vw.get('written', '-')} queue={vw.get('queue_len', '-')} connected={vw.get('connected', '-')} | "
        f"zmq sent={zp.get('sent', '-')} p99={'-' if p99 is None else f'{p99:.2f}ms'} | {bufs}"
        + (f" | {feats}" if feats else "")
        + (f"\n           {hmarl}" if hmarl else "")
        + (f"\n           {trading}" if trading else "")
    )


def execution_summary(name: str, s: dict) -> str:
    """One account's orders, fills, positions, the day's P&L net of B3 costs and the risk state."""
    if not name.startswith("execution:") or not isinstance(s, dict) or "counts" not in s:
        return ""
    counts, acct = s.get("counts") or {}, s.get("account_summary") or {}
    positions = " ".join(f"{sym}={q:+d}" for sym, q in sorted((s.get("positions") or {}).items())) or "flat"
    state = s.get("trading_state", "?")
    why = f" ({s['risk_reason']})" if state != "ACTIVE" and s.get("risk_reason") else ""
    routing = s.get("routing")  # real orders (or their rehearsal) say so on every line
    mode = " [LIVE]" if routing == "live" else f" [{routing}]" if routing else ""
    return (f"{s.get('account', name.split(':', 1)[1])}{mode} orders={counts.get('orders', 0)} "
            f"fills={counts.get('fills', 0)} denied={counts.get('denied', 0)} "
            f"working={s.get('working_orders', 0)} position {positions} | "
            f"day P&L net R$ {acct.get('day_pnl_net', 0.0):,.2f} (gross {acct.get('day_pnl_gross', 0.0):,.2f}, "
            f"fees {acct.get('fees', 0.0):,.2f}) | risk {state}{why}")


def hmarl_summary(name: str, s: dict, stats: dict, totals: dict | None = None) -> str:
    """Decisions, voter weights and realized hit rates of one symbol's coordinator."""
    if not name.startswith("coordinator:") or not isinstance(s, dict) or "weights" not in s:
        return ""
    sym = name.split(":", 1)[1]
    fb = stats.get(f"feedback:{sym}") or {}
    perf = fb.get("performance") or {}
    res = fb.get("decisions_from_fills") or {}
    closed = (f" | closed decisions {res['count']} won {res['wins']} net R$ {res['net_pnl']:,.2f}"
              if res.get("count") else "")
    voters = []
    for voter, w in sorted(s["weights"].items()):
        p = perf.get(voter) or {}
        hit = p.get("hit_rate")
        voters.append(f"{voter}={w:.3f}" + (f"(hit {hit:.2f} n={p.get('count')})" if hit is not None else ""))
    acts = s.get("actions") or {}
    totals = totals or {}
    count = {k: totals.get(f"{name}.{k}", acts.get(k, 0)) for k in ("BUY", "SELL", "HOLD")}
    last = f"\n           last: {s['last']}" if s.get("last") else ""
    return (f"{sym} decisions={totals.get(f'{name}.decisions', s.get('decisions', 0))} buy={count['BUY']} "
            f"sell={count['SELL']} hold={count['HOLD']} weights " + " ".join(voters) + closed + last)


def account_final(s: dict) -> dict:
    counts = s.get("counts") or {}
    return {"orders": counts.get("orders", 0), "fills": counts.get("fills", 0), "denied": counts.get("denied", 0),
            "positions": s.get("positions") or {}, "day": s.get("account_summary"),
            "risk": s.get("trading_state"), "late_decisions": s.get("late_decisions"), "overrun": s.get("overrun")}


def start_run(cfg, valkey_url: str | None, resume: bool) -> dict | None:
    """A new run id (recorded in Valkey), or with ``--resume`` the last one's; None
    (after one line on stderr) when there is nothing to resume."""
    from pipelines.persistence.runs import last_run, new_run_id, record_run

    if not valkey_url:
        if resume:
            print("config error: --resume: needs Valkey (valkey.url or the embedded server)", file=sys.stderr)
            return None
        return {"run_id": new_run_id()}
    import valkey

    from pipelines.persistence.connection import connect, resolve_password

    client = connect(valkey_url, password=resolve_password(cfg.valkey))
    try:
        if resume:
            last = last_run(client, cfg.namespace)
            if last is None:
                print(f"config error: --resume: no earlier run recorded in namespace {cfg.namespace!r}", file=sys.stderr)
                return None
            print(f"resuming run {last['run_id']}", flush=True)
            return last
        return record_run(client, cfg.namespace, new_run_id(), cfg.feed.source, list(cfg.symbols))
    except valkey.exceptions.ValkeyError as e:
        # Valkey away at start: the writers queue until it returns, so a new run still starts
        # (unrecorded, so it cannot be resumed); a resume cannot know what to continue.
        if resume:
            print(f"config error: --resume: Valkey unreachable ({type(e).__name__}): cannot read the last run",
                  file=sys.stderr)
            return None
        print(f"warning: Valkey unreachable ({type(e).__name__}); this run is not recorded and cannot be resumed",
              file=sys.stderr, flush=True)
        return {"run_id": new_run_id()}
    finally:
        client.close()


def resolve_contracts(cfg):
    """WDOFUT / WINFUT -> today's front contract (Sao Paulo date): buffers, streams and
    recordings are kept per contract, and the DLL is subscribed to the contract itself."""
    import dataclasses

    from pipelines.model.contracts import resolve_symbol

    resolved = tuple(resolve_symbol(s) for s in cfg.symbols)
    for alias, code in zip(cfg.symbols, resolved):
        if alias != code:
            print(f"{alias} -> {code} (front contract today)", flush=True)
    return dataclasses.replace(cfg, symbols=resolved) if resolved != tuple(cfg.symbols) else cfg


def routing_mode(cfg, live: bool, shadow: bool) -> str | None | ConfigError:
    """Paper trading is the default; real orders need the config *and* the command line to say so."""
    if cfg.execution.venue == "profitdll":
        if not (live or shadow):
            return ConfigError("execution.venue", "profitdll sends real orders: add --live (or --shadow to rehearse)")
        return "live" if live else "shadow"
    if live or shadow:
        return ConfigError("execution.venue", f"--{'live' if live else 'shadow'} needs execution.venue: profitdll "
                                              f"(it is {cfg.execution.venue})")
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        overrides = {"symbols": args.symbol} if args.symbol else None
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    try:
        cfg = resolve_contracts(cfg)
    except ValueError as e:
        print(f"config error: symbols: {e}", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration <= 0:
        print("config error: --duration: must be > 0", file=sys.stderr)
        return 2
    routing = routing_mode(cfg, args.live, args.shadow)
    if isinstance(routing, ConfigError):
        print(f"config error: {routing}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum, _frame):
        print(f"received {signal.Signals(signum).name}; draining and stopping", flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    from actors.wiring import MarketDataGraph, PlacementError, check_feed_placement
    from pipelines.persistence.connection import redact, resolve_password
    from pipelines.persistence.retention import Retention

    valkey_url, server = start_valkey(cfg)
    graph = None
    try:
        run = start_run(cfg, valkey_url, args.resume)
        if run is None:
            return 2
        ctx = init_ray(args.address, cfg.namespace, args.object_store_mb, not args.no_dashboard)
        dashboard = getattr(ctx, "dashboard_url", None)
        try:
            check_feed_placement(cfg)
        except PlacementError as e:
            print(f"placement error: {e}", file=sys.stderr)
            return 2
        graph = MarketDataGraph(cfg, valkey_url, on_event=lambda m: print(f"supervisor: {m}", flush=True),
                                run_id=run["run_id"], routing=routing)
        graph.start()
        ready = {
            "namespace": cfg.namespace,
            "actors": sorted(graph.actors),
            "dashboard_url": f"http://{dashboard}" if dashboard and not dashboard.startswith("http") else dashboard,
            "valkey_url": redact(valkey_url),
            "valkey_embedded": server is not None,
            "zmq": graph.zmq_endpoints,
            # The node each edge runs on: subscribers connect there, recordings are written there.
            "edges": graph.nodes_of(["zmq_publisher", "analytics_publisher", "recorder"]),
            "symbols": list(cfg.symbols),
            "source": cfg.feed.source,
            "run_id": graph.run_id,
            "resumed": bool(args.resume),
            "ray_address": ctx.address_info.get("address") if hasattr(ctx, "address_info") else None,
            "pid": os.getpid(),
        }
        print("READY " + orjson.dumps(ready).decode(), flush=True)
        if cfg.hmarl.enabled and cfg.hmarl.ml_enabled:
            from actors.wiring import model_path
            from pipelines.training.registry import champion_line

            print(champion_line(model_path(cfg.hmarl)), flush=True)
        retention = None
        if valkey_url and cfg.hmarl.enabled and cfg.hmarl.retention_days > 0:
            retention = Retention(valkey_url, resolve_password(cfg.valkey), cfg.hmarl.retention_days,
                                  cfg.hmarl.cleanup_every_s, report=lambda m: print(m, flush=True))

        exit_code = 0
        t0 = time.monotonic()
        next_progress = t0 + cfg.supervisor.progress_interval_s
        while not stop.is_set():
            if args.duration is not None and time.monotonic() - t0 >= args.duration:
                print(f"duration {args.duration:g}s reached; draining and stopping", flush=True)
                break
            stop.wait(cfg.supervisor.ping_interval_s)
            if stop.is_set():
                break
            graph.supervise()
            finished, error = graph.feed_finished()
            if error:
                # Never reported as a finished source: one line with the cause, then a non-zero exit.
                print(f"feed failed: {error}; draining and stopping", file=sys.stderr, flush=True)
                exit_code = 1
                break
            if finished:
                print("feed source exhausted; draining and stopping", flush=True)
                break
            if time.monotonic() >= next_progress:
                stats = graph.stats()
                print(progress_line(time.monotonic() - t0, stats, graph.totals(stats)), flush=True)
                next_progress += cfg.supervisor.progress_interval_s
        if retention is not None:
            retention.stop()
        final = graph.shutdown()
        feed = final.get("feed") or {}
        vw = final.get("valkey_writer") or {}
        print(
            "STOPPED " + orjson.dumps({
                "run_id": graph.run_id,
                "events": feed.get("events_out"),
                "rejected": (feed.get("validation") or {}).get("rejected"),
                "valkey_written": vw.get("written"),
                "valkey_dropped": vw.get("dropped"),
                "zmq_sent": (final.get("zmq_publisher") or {}).get("sent"),
                # each account: its orders, fills, positions, the day's P&L after costs and the risk state
                "accounts": {name.split(":", 1)[1]: account_final(s) for name, s in final.items()
                             if name.startswith("execution:") and isinstance(s, dict) and "counts" in s},
                "feed_error": feed.get("error"),
                # every stage, restarts included (counts from before a restart carried over)
                "totals": graph.totals(final),
            }).decode(),
            flush=True,
        )
        return exit_code
    finally:
        if graph is not None and graph.actors:
            graph.shutdown(timeout_s=10)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
