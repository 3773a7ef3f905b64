"""Backtest the live graph's decision path on history or a simulated session, in one process.

    python scripts/backtest.py sim [--day] [--date 2026-12-01] [--start 09:00] [--end 18:00 | --duration 30m]
                                   [--seed 42] [--rate 40] [--profile day]
    python scripts/backtest.py replay data/recordings [--start 2026-11-24T10:00] [--end 2026-11-25] [--symbols WDOZ26]
    python scripts/backtest.py es [../shared/data/cme_es_20220124_tbt.csv]
    python scripts/backtest.py profit export.csv [--symbol WDOZ26]

Common options: ``--config FILE`` (the file launch.py reads), ``--set key=value`` (repeatable,
dotted config keys), ``--out reports``, ``--run-id ID``, ``--force``, ``--capital 100000``,
``--no-report``, ``--quiet``.

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

import yaml  # noqa: E402

from actors.backtest_run import DEFAULT_CAPITAL, BacktestError, BacktestInput, backtest, write_run  # noqa: E402
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


def _overrides(sets: list[str]) -> dict:
    """``a.b=value`` (YAML scalar) -> {"a": {"b": value}}; the config loader checks the keys."""
    out: dict = {}
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", f"expected key=value, got {item!r}")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError("--set", f"{key} sets a key inside a value set before")
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    return out


def _input(args) -> BacktestInput:
    symbols = tuple(s for s in (args.symbols or "").split(",") if s) or None
    if args.kind == "sim":
        day = dt.date.fromisoformat(args.date) if args.date else _last_weekday()
        preset = DAY if args.day else {}
        start = _at(day, args.start or preset.get("start", "10:00"), "--start")
        if args.duration:
            end = (dt.datetime.fromisoformat(start) + dt.timedelta(seconds=_duration_s(args.duration))).isoformat()
        else:
            end = _at(day, args.end or preset.get("end", "18:00"), "--end")
        return BacktestInput("simulator", start=start, end=end, seed=args.seed,
                             rate=args.rate if args.rate is not None else preset.get("rate"),
                             profile=args.profile or preset.get("profile"), symbols=symbols)
    if args.kind == "es":
        return BacktestInput("es", path=args.path or str(ES_FILE), start=args.start, end=args.end, symbols=symbols)
    if args.kind == "profit":
        return BacktestInput("profit_csv", path=args.path, start=args.start, end=args.end, symbols=symbols)
    return BacktestInput("recordings", path=args.path, start=args.start, end=args.end, symbols=symbols)


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

    p = sub.add_parser("sim", help="a simulated session")
    p.add_argument("--day", action="store_true", help="a WDO-like day: profile day, 40 events/s, 09:00-18:00")
    p.add_argument("--date", help="session date (default: the last weekday)")
    p.add_argument("--start", help="HH:MM Sao Paulo or ISO time (default 10:00; 09:00 with --day)")
    p.add_argument("--end", help="HH:MM or ISO time (default 18:00)")
    p.add_argument("--duration", help="instead of --end: 90s, 30m, 2h")
    p.add_argument("--seed", type=int)
    p.add_argument("--rate", type=float, help="events/s of event time")
    p.add_argument("--profile", help="flat | day")
    common(p)
    for name, what in (("replay", "a recordings folder"), ("es", "the CME ES tape"), ("profit", "a Profit CSV")):
        p = sub.add_parser(name, help=what)
        p.add_argument("path", nargs="?" if name == "es" else None, help=what)
        p.add_argument("--start", help="ISO date/time, inclusive (Sao Paulo when no offset)")
        p.add_argument("--end", help="ISO date/time, exclusive (a date covers that day)")
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

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        source = _input(args)
        run_id = args.run_id or f"{source.kind}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
        if (Path(args.out) / run_id).exists() and not args.force:
            raise BacktestError(f"{Path(args.out) / run_id} exists (choose another --run-id, or --force)")
        run = backtest(source, config_path=args.config, overrides=_overrides(args.set), run_id=run_id,
                       progress=not args.quiet, capital=args.capital, stop=lambda: interrupts > 0)
        path = write_run(run, args.out, report=not args.no_report, force=args.force)
    except (ConfigError, BacktestError) as e:
        print(f"backtest: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("backtest: aborted, nothing written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
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


if __name__ == "__main__":
    sys.exit(main())
