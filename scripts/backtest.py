"""Backtest the live graph's decision path on history or a simulated session, in one process.

    python scripts/backtest.py sim [--day] [--date 2026-12-01] [--start 09:00] [--end 18:00 | --duration 30m]
                                   [--seed 42] [--rate 40] [--profile day]
    python scripts/backtest.py replay data/recordings [--start 2026-11-24T10:00] [--end 2026-11-25] [--symbols WDOZ26]
    python scripts/backtest.py es [../shared/data/cme_es_20220124_tbt.csv]
    python scripts/backtest.py profit export.csv [--symbol WDOZ26]

Common options: ``--config FILE`` (the file launch.py reads), ``--set key=value`` (repeatable,
dotted config keys), ``--out reports``, ``--run-id ID``, ``--force``, ``--capital 100000``,
``--no-report``, ``--quiet``.

Sweeps and walk-forward (actors/sweep.py), on Ray with ``--ray [--address auto]``:

    python scripts/backtest.py sim --dates 2026-11-23,2026-11-24 --seeds 1,2 --duration 1h --ray
                                   --param hmarl.threshold=0.1,0.15,0.2 --param risk.max_position=1,3
    python scripts/backtest.py sim --random 20 --param hmarl.threshold=uniform:0.05:0.3 --ray --address auto
    python scripts/backtest.py replay data/recordings --per-day --walk-forward 3 --ray

``--param KEY=v1,v2`` (a grid over every combination) or ``--random N`` draws from
``uniform:lo:hi``, ``int:lo:hi``, ``choice:a,b``; every set runs on every input (``--dates`` x
``--seeds`` simulator sessions, or ``--per-day`` over a recordings folder). One combined report
ranks the sets (``--rank-by``) and states how many were tried with the deflated Sharpe ratio of
the best. ``--walk-forward W`` trains the ML model on W inputs, tests on the next, and rolls.

The same classes as the live graph run the input (actors/backtest.py); event time drives
everything, so the same input and config give the same decisions and fills. The run is written
to ``<out>/<run-id>/``: report.html, stats.json and Parquet files (actors/backtest_run.py). A
progress bar shows event time done, events/s and the P&L so far. Ctrl-C stops the input, closes
the run on what was fed and still writes it, marked "interrupted" (exit 130); a second Ctrl-C
aborts without writing. A bad input, an unknown config key or a range with no data: one line on
stderr and exit 2, nothing written.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402


from actors.backtest_run import DEFAULT_CAPITAL, BacktestError, BacktestInput, backtest, write_run  # noqa: E402
from pipelines.backtest import sweep as psweep  # noqa: E402
from pipelines.config import ConfigError  # noqa: E402
from pipelines.model.clock import SAO_PAULO  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ES_FILE = REPO.parent / "shared" / "data" / "cme_es_20220124_tbt.csv"
DAY = {"profile": "day", "rate": 40.0, "start": "09:00", "end": "18:00"}  # a simulated WDO session
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh])$")


def _duration_s(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise BacktestError(f"--duration: expected a number with s, m or h (e.g. 30m), got {text!r}")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def _last_weekday() -> dt.date:
    day = dt.datetime.now(SAO_PAULO).date() - dt.timedelta(days=1)
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


def _at(day: dt.date, text: str, flag: str) -> str:
    """``HH:MM[:SS]`` on ``day`` (Sao Paulo), or a full ISO time as it is."""
    if "T" in text or len(text) >= 10:
        return text
    try:
        t = dt.time.fromisoformat(text)
    except ValueError:
        raise BacktestError(f"{flag}: expected HH:MM or an ISO date/time, got {text!r}") from None
    return dt.datetime.combine(day, t).isoformat()


def _sim_window(args, day: dt.date) -> tuple[str, str]:
    preset = DAY if args.day else {}
    start = _at(day, args.start or preset.get("start", "10:00"), "--start")
    if args.duration:
        end = (dt.datetime.fromisoformat(start) + dt.timedelta(seconds=_duration_s(args.duration))).isoformat()
    else:
        end = _at(day, args.end or preset.get("end", "18:00"), "--end")
    return start, end


def _sim(args, day: dt.date, seed: int | None, symbols) -> BacktestInput:
    preset = DAY if args.day else {}
    start, end = _sim_window(args, day)
    return BacktestInput("simulator", start=start, end=end, seed=seed,
                         rate=args.rate if args.rate is not None else preset.get("rate"),
                         profile=args.profile or preset.get("profile"), symbols=symbols)


def _list(text: str | None, flag: str, cast) -> list:
    try:
        return [cast(x.strip()) for x in text.split(",") if x.strip()] if text else []
    except ValueError:
        raise BacktestError(f"{flag}: expected a comma-separated list, got {text!r}") from None


def _inputs(args) -> list[BacktestInput]:
    """The run's inputs: one, or (a sweep's "many days") one per date x seed or recorded day."""
    symbols = tuple(s for s in (args.symbols or "").split(",") if s) or None
    if args.kind == "sim":
        days = _list(args.dates, "--dates", dt.date.fromisoformat) or [
            dt.date.fromisoformat(args.date) if args.date else _last_weekday()]
        seeds = _list(args.seeds, "--seeds", int) or [args.seed]
        return [_sim(args, day, seed, symbols) for day in days for seed in seeds]
    if args.kind == "replay" and args.per_day:
        from actors.sweep import recording_days

        return recording_days(args.path, symbols=symbols)
    kind = {"es": "es", "profit": "profit_csv", "replay": "recordings"}[args.kind]
    path = args.path or (str(ES_FILE) if args.kind == "es" else None)
    return [BacktestInput(kind, path=path, start=args.start, end=args.end, symbols=symbols)]


def _is_sweep(args) -> bool:
    return bool(args.param or args.random or args.walk_forward or args.ray or getattr(args, "per_day", False)
                or getattr(args, "dates", None) or getattr(args, "seeds", None))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    sub = ap.add_subparsers(dest="kind", required=True, metavar="{sim,replay,es,profit}")

    def common(p):
        p.add_argument("--config", help="config file (default: config/default.yaml)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
        p.add_argument("--out", default=str(REPO / "reports"), help="reports folder (default: %(default)s)")
        p.add_argument("--run-id", help="run directory name (default: <input>-<UTC time>)")
        p.add_argument("--force", action="store_true", help="replace an existing run of that id")
        p.add_argument("--capital", type=float, default=DEFAULT_CAPITAL, help="R$ for daily returns (default: %(default)s)")
        p.add_argument("--symbols", help="comma-separated symbols (default: the input's, or the config's)")
        p.add_argument("--no-report", action="store_true", help="skip report.html (tables and stats.json only)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        s = p.add_argument_group("sweeps and walk-forward")
        s.add_argument("--param", action="append", default=[], metavar="KEY=SPEC",
                       help="sweep a config key: v1,v2,... (a grid), or uniform:lo:hi | int:lo:hi | choice:a,b "
                            "with --random N")
        s.add_argument("--random", type=int, metavar="N", help="draw N parameter sets at random instead of the grid")
        s.add_argument("--sweep-seed", type=int, default=0, help="seed of the random draws (default: %(default)s)")
        s.add_argument("--rank-by", default="net_pnl", choices=list(psweep.RANK_ORDER))
        s.add_argument("--sharpe-basis", default="trade", choices=list(psweep.BASES),
                       help="observations of the deflated Sharpe ratio (default: %(default)s)")
        s.add_argument("--walk-forward", type=int, metavar="W",
                       help="train the ML model on W inputs, test on the next, roll")
        s.add_argument("--horizon-s", type=float, help="walk-forward label horizon (default: hmarl.horizon_s)")
        s.add_argument("--ray", action="store_true", help="run the backtests as Ray tasks")
        s.add_argument("--address", default="auto", help="Ray address with --ray: auto | local | HOST:PORT")
        s.add_argument("--keep-runs", action="store_true", help="also write every run's directory")

    p = sub.add_parser("sim", help="a simulated session")
    p.add_argument("--day", action="store_true", help="a WDO-like day: profile day, 40 events/s, 09:00-18:00")
    p.add_argument("--date", help="session date (default: the last weekday)")
    p.add_argument("--start", help="HH:MM Sao Paulo or ISO time (default 10:00; 09:00 with --day)")
    p.add_argument("--end", help="HH:MM or ISO time (default 18:00)")
    p.add_argument("--duration", help="instead of --end: 90s, 30m, 2h")
    p.add_argument("--seed", type=int)
    p.add_argument("--rate", type=float, help="events/s of event time")
    p.add_argument("--profile", help="flat | day")
    p.add_argument("--dates", help="a sweep over sessions: comma-separated dates")
    p.add_argument("--seeds", help="a sweep over sessions: comma-separated simulator seeds")
    common(p)
    for name, what in (("replay", "a recordings folder"), ("es", "the CME ES tape"), ("profit", "a Profit CSV")):
        p = sub.add_parser(name, help=what)
        p.add_argument("path", nargs="?" if name == "es" else None, help=what)
        p.add_argument("--start", help="ISO date/time, inclusive (Sao Paulo when no offset)")
        p.add_argument("--end", help="ISO date/time, exclusive (a date covers that day)")
        if name == "replay":
            p.add_argument("--per-day", action="store_true", help="one input per recorded date (sweeps)")
        common(p)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    interrupts = 0

    def on_sigint(_sig, _frame):
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt
        print("\nbacktest: stopping at the next batch (Ctrl-C again to abort without writing)", file=sys.stderr)

    # SIGTERM (a scheduler's stop, kill) is the first Ctrl-C: the run still ends cleanly and is written
    previous = {sig: signal.signal(sig, on_sigint) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        inputs = _inputs(args)
        if _is_sweep(args):
            return _sweep(args, inputs, stop=lambda: interrupts > 0)
        source = inputs[0]
        run_id = args.run_id or f"{source.kind}-{_now()}"
        if (Path(args.out) / run_id).exists() and not args.force:
            raise BacktestError(f"{Path(args.out) / run_id} exists (choose another --run-id, or --force)")
        run = backtest(source, config_path=args.config, overrides=psweep.set_overrides(args.set), run_id=run_id,
                       progress=not args.quiet, capital=args.capital, stop=lambda: interrupts > 0)
        path = write_run(run, args.out, report=not args.no_report, force=args.force)
    except (ConfigError, BacktestError) as e:
        print(f"backtest: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("backtest: aborted, nothing written", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    s = run.stats["statistics"]
    summary = {"run": str(path), "report": str(path / "report.html") if not args.no_report else None,
               "interrupted": run.interrupted, "events": run.stats["run"]["events"],
               **{k: s[k] for k in ("net_pnl", "gross_pnl", "costs", "trades", "win_rate", "max_drawdown")},
               "decisions": run.stats["decisions"], "decision_hash": run.decision_hash[:16],
               "fill_hash": run.fill_hash[:16]}
    print(json.dumps(summary, default=str))
    if run.interrupted:
        print(f"backtest: interrupted; the partial run is in {path}", file=sys.stderr)
        return 130
    return 0


def _now() -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"


def _sweep(args, inputs: list[BacktestInput], stop) -> int:
    """A sweep or a walk-forward: sets x inputs as tasks (Ray with --ray), one combined result."""
    from actors import sweep

    overrides = psweep.set_overrides(args.set)
    if args.ray:
        import ray

        ray.init(address=None if args.address == "local" else args.address, log_to_driver=False,
                 include_dashboard=False if args.address == "local" else None)
    try:
        if args.walk_forward:
            if args.param or args.random:
                raise BacktestError("--walk-forward: give the parameters with --set (one set), not --param")
            wf_id = args.run_id or f"walk-forward-{_now()}"
            result = sweep.run_walk_forward(inputs, args.walk_forward, wf_id=wf_id, config_path=args.config,
                                            overrides=overrides, use_ray=args.ray, horizon_s=args.horizon_s,
                                            capital=args.capital, keep_tables=args.keep_runs,
                                            progress=not args.quiet, stop=stop)
            path = sweep.write_walk_forward(result, args.out, force=args.force, run_reports=not args.no_report)
            print(json.dumps({"walk_forward": str(path), "steps": len(result.plan), "finished": len(result.steps),
                              "interrupted": result.interrupted, "out_of_sample": result.combined}, default=str))
        else:
            sets = psweep.random_sets(args.param, args.random, args.sweep_seed) if args.random else psweep.grid(args.param)
            sweep_id = args.run_id or f"sweep-{_now()}"
            result = sweep.run_sweep(sets, inputs, sweep_id=sweep_id, config_path=args.config, overrides=overrides,
                                     use_ray=args.ray, rank_by=args.rank_by, basis=args.sharpe_basis,
                                     capital=args.capital, keep_tables=args.keep_runs, progress=not args.quiet,
                                     stop=stop, meta={"mode": "random" if args.random else "grid",
                                                      "random": args.random, "seed": args.sweep_seed})
            path = sweep.write_sweep(result, args.out, force=args.force, run_reports=not args.no_report)
            top = result.ranking.head(10)
            cols = [c for c in ("rank", "set_id", "label", "net_pnl", "trades", "win_rate", "profit_factor",
                                "sharpe_per_trade", "max_drawdown") if c in top.columns]
            print(top[cols].to_string(index=False), file=sys.stderr)
            best = result.ranking.iloc[0].to_dict() if len(result.ranking) else {}
            print(json.dumps({"sweep": str(path), "sets_tried": len(sets), "runs": len(result.results),
                              "failed": sum(1 for r in result.results if r.error), "interrupted": result.interrupted,
                              "best": {k: best.get(k) for k in ("set_id", "label", "net_pnl", "trades",
                                                                 "sharpe_per_trade")},
                              "deflated_sharpe_ratio": (result.deflated or {}).get("deflated_sharpe_ratio"),
                              "html": str(path / "sweep.html")}, default=str))
    except (ConfigError, BacktestError, psweep.SweepError) as e:
        print(f"backtest: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
