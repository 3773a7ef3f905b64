"""Train, validate, compare and promote the ML voter's model (actors/training.py).

    python scripts/train_model.py train    INPUT [--name NAME] [--trials 16 [--address auto]] [--no-backtest]
    python scripts/train_model.py validate INPUT                 # the purged CV only; nothing written
    python scripts/train_model.py compare  A B INPUT             # both recipes on the same folds of INPUT
    python scripts/train_model.py promote  NAME                  # make NAME the champion by hand (a rollback)
    python scripts/train_model.py list | card NAME
    python scripts/train_model.py --retrain                      # the last training.retrain.days of recordings
    python scripts/train_model.py schedule [--address auto]      # --retrain every weekday at training.retrain.at

INPUT is one of ``--sim`` (a simulated session: ``--date``, ``--start 09:00``, ``--end 18:00``,
``--seed``, ``--rate``, ``--profile``), ``--recordings DIR`` (with ``--from``/``--to`` dates),
``--es FILE`` (the CME ES tape), ``--profit FILE`` (a Profit CSV export) or ``--dataset FILE``
(a Parquet dataset saved with ``--save-dataset``). Common options: ``--config FILE``, ``--set
key=value`` (e.g. ``training.label.kind=triple_barrier``), ``--out models``, ``--symbol``,
``--data-source`` (what the recordings are: profitdll, bridge, simulator...), ``--quiet``.

``train`` writes ``<out>/<name>.ubj``, ``.json`` (metadata and model card) and ``.card.md``,
registers the model as a challenger and promotes it only when it beats the champion on the same
folds (``training.promotion``); the running ML actor loads a new champion within seconds. The
result is one JSON line on stdout; progress goes to stderr. A bad input, too few samples, one
label class, a feature from the future or another feature definition: one line on stderr,
exit 2, no model written.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402


from actors.backtest_run import BacktestError, BacktestInput  # noqa: E402
from pipelines.alpha.ml import DATA_SOURCES, DEFAULT_MODEL_DIR, read_registry  # noqa: E402
from pipelines.backtest import sweep as psweep  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.model.clock import SAO_PAULO  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ES_FILE = REPO.parent / "shared" / "data" / "cme_es_20220124_tbt.csv"
SIM_RATE = 40.0  # events/s the simulator's price dynamics are calibrated at (as `backtest.py sim --day`)


class UsageError(ValueError):
    pass


def _at(day: str, text: str) -> str:
    return text if "T" in text or len(text) >= 10 else f"{day}T{text}"


def _input(args) -> tuple[list[BacktestInput], object]:
    """(inputs, dataset) from the INPUT flags."""
    if args.dataset:
        from pipelines.training.dataset import Dataset

        return [], Dataset.load(args.dataset)
    if args.sim:
        day = args.date or (dt.datetime.now(SAO_PAULO).date() - dt.timedelta(days=1)).isoformat()
        return [BacktestInput("simulator", start=_at(day, args.start or "09:00"), end=_at(day, args.end or "18:00"),
                              seed=args.seed, rate=args.rate if args.rate is not None else SIM_RATE,
                              profile=args.profile or "day",
                              symbols=(args.symbol,) if args.symbol else None)], None
    if args.recordings:
        return [BacktestInput("recordings", path=args.recordings, start=args.date_from, end=args.date_to)], None
    if args.es is not None:
        path = args.es or str(ES_FILE)
        return [BacktestInput("es", path=path)], None
    if args.profit:
        return [BacktestInput("profit_csv", path=args.profit)], None
    raise UsageError("say what to train on: --sim, --recordings DIR, --es [FILE], --profit FILE or --dataset FILE")


def _add_input(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input (one of)")
    g.add_argument("--sim", action="store_true", help="a simulated session (the profile 'day' by default)")
    g.add_argument("--recordings", metavar="DIR", help="a recordings root (replay Parquet)")
    g.add_argument("--es", nargs="?", const="", metavar="FILE", help="the CME ES tape (default ../shared/data)")
    g.add_argument("--profit", metavar="FILE", help="a Profit CSV export")
    g.add_argument("--dataset", metavar="FILE", help="a dataset saved with --save-dataset")
    g.add_argument("--date", help="--sim: the session's date (default: yesterday, Sao Paulo)")
    g.add_argument("--start", help="--sim: HH:MM (09:00) or ISO time")
    g.add_argument("--end", help="--sim: HH:MM (18:00) or ISO time")
    g.add_argument("--seed", type=int, help="--sim: the simulator's seed")
    g.add_argument("--rate", type=float, help=f"--sim: events per second (default {SIM_RATE:g})")
    g.add_argument("--profile", choices=("flat", "day"), help="--sim: intraday activity profile")
    g.add_argument("--from", dest="date_from", help="--recordings: first date (inclusive)")
    g.add_argument("--to", dest="date_to", help="--recordings: last date (inclusive)")
    g.add_argument("--symbol", help="the symbol to train on (required when the input holds several)")
    g.add_argument("--data-source", choices=sorted(DATA_SOURCES),
                   help="where recordings came from (default: simulator for --sim, cme_es, profit_csv, replay)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="the config file (default config/default.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config key (repeatable)")
    p.add_argument("--out", default=str(DEFAULT_MODEL_DIR), help="model directory (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for cmd in ("train", "validate", "retrain"):
        p = sub.add_parser(cmd)
        if cmd != "retrain":
            _add_input(p)
        else:
            p.add_argument("--symbol", help="the symbol to train on (required when the recordings hold several)")
            p.add_argument("--data-source", choices=sorted(DATA_SOURCES), default="replay",
                           help="what the recordings are (default %(default)s; the ML voter serves only the same "
                                "kind of data: profitdll or bridge for live recordings, simulator for simulated ones)")
        _add_common(p)
        p.add_argument("--trials", type=int, default=None, help="Ray Tune trials (default 0; retrain: training.retrain.trials)")
        p.add_argument("--address", help="a Ray cluster to tune on (auto: the one `ray start` made)")
        p.add_argument("--no-backtest", action="store_true", help="skip the model-alone backtest per fold")
        p.add_argument("--save-dataset", metavar="FILE", help="also write the dataset (Parquet)")
        if cmd != "validate":
            p.add_argument("--name", help="model name (default: <root>-<last sample time>)")
            p.add_argument("--replace", action="store_true", help="overwrite a model of the same name")
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    _add_input(p)
    _add_common(p)
    p = sub.add_parser("promote")
    p.add_argument("name")
    _add_common(p)
    p = sub.add_parser("list")
    _add_common(p)
    p = sub.add_parser("card")
    p.add_argument("name")
    _add_common(p)
    p = sub.add_parser("schedule")
    _add_common(p)
    p.add_argument("--address", help="run each retrain's tuning on this Ray cluster")
    p.add_argument("--symbol", help="the symbol to train on (required when the recordings hold several)")
    p.add_argument("--data-source", choices=sorted(DATA_SOURCES), default="replay", help="what the recordings are")
    p.add_argument("--once-at", help=argparse.SUPPRESS)  # tests: an ISO time to run at instead of the next slot
    return ap


def _say(args):
    return (lambda m: None) if args.quiet else (lambda m: print(f"train_model: {m}", file=sys.stderr, flush=True))


def _summary(report) -> dict:
    s = report.cv.overall["scores"]
    out = {"model": report.name, "samples": report.dataset.summary(), "cv": report.cv.scheme["scheme"],
           "folds": len(report.cv.folds), "auc": s["auc"], "auc_ci": s["auc_ci"], "log_loss": s["log_loss"],
           "log_loss_ci": s["log_loss_ci"], "brier": s["brier"], "hit_rate": s["hit_rate"], "coverage": s["coverage"],
           "majority_log_loss": report.cv.overall["baselines"]["majority"]["log_loss"],
           "backtest_net_pnl": [b.get("net_pnl") for b in report.backtest], "seconds": round(report.seconds, 1)}
    if report.meta:
        out["verdict"] = report.meta["card"]["verdict"]
    if report.decision:
        out["promoted"] = report.decision["promote"]
        out["why"] = report.decision["why"]
    return out


def cmd_train(args, validate: bool = False) -> int:
    from actors.training import train
    from pipelines.training.registry import json_ready

    inputs, dataset = _input(args)
    overrides = psweep.set_overrides(args.set)
    load_config(args.config, overrides=overrides)  # a bad key fails before any work
    trials = args.trials if args.trials is not None else 0
    report = train(inputs, model_dir=None if validate else args.out, name=getattr(args, "name", None),
                   config_path=args.config, overrides=overrides, symbol=args.symbol, data_source=args.data_source,
                   trials=trials, address=args.address, backtest=False if args.no_backtest else None,
                   replace=getattr(args, "replace", False), dataset=dataset, save_dataset=args.save_dataset,
                   progress=_say(args), bar=not args.quiet)
    out = _summary(report)
    say = _say(args)
    if report.meta:
        say(f"{report.name}: {report.meta['card']['verdict']}")
        say(f"card: {Path(args.out) / (report.name + '.card.md')}")
        say(("promoted to champion: " if report.decision["promote"] else "not promoted: ") + report.decision["why"])
    else:
        from actors.training import verdict

        say(f"{verdict(report.cv)} (validated: nothing written)")
    print(json.dumps(json_ready(out), allow_nan=False))
    return 0


def cmd_retrain(args) -> int:
    from actors.training import recent_days

    cfg = load_config(args.config, overrides=psweep.set_overrides(args.set))
    r = cfg.training.retrain
    root = Path(r.recordings)
    source = recent_days(root if root.is_absolute() else REPO / root, r.days)
    _say(args)(f"retraining on {source.path} from {source.start} to {source.end}")
    args.recordings, args.date_from, args.date_to = source.path, source.start, source.end
    args.sim, args.es, args.profit, args.dataset = False, None, None, None
    args.symbol = getattr(args, "symbol", None)
    args.data_source = getattr(args, "data_source", None) or "replay"
    args.seed = args.rate = args.profile = args.date = args.start = args.end = None
    if args.trials is None:
        args.trials = r.trials
    return cmd_train(args)


def cmd_compare(args) -> int:
    from actors.training import load_dataset
    from pipelines.training import registry as reg
    from pipelines.training.config import FitConfig
    from pipelines.training.evaluate import compare, cross_validate, make_folds
    import tempfile

    overrides = psweep.set_overrides(args.set)
    cfg = load_config(args.config, overrides=overrides)
    recipes = []
    for name in (args.a, args.b):
        recipe = (reg.load_meta(args.out, name).get("card") or {}).get("recipe")
        if not recipe:
            raise UsageError(f"model {name!r} has no model card (trained before the pipeline): nothing to refit")
        recipes.append(FitConfig(**recipe))
    inputs, ds = _input(args)
    with tempfile.TemporaryDirectory(prefix="qt-compare-") as tmp:
        if ds is None:
            ds, _, cfg = load_dataset(inputs, Path(tmp), config_path=args.config, overrides=overrides,
                                      symbol=args.symbol, data_source=args.data_source, progress=_say(args))
    folds = make_folds(ds.t0, ds.t1, cfg.training.cv)
    a, b = (cross_validate(ds, r, cfg.training.cv, consensus_threshold=cfg.hmarl.threshold, n_boot=0, folds=folds)
            for r in recipes)
    p = cfg.training.promotion
    decision = compare(a.fold_log_loss, b.fold_log_loss, min_improvement=p.min_improvement, min_fold_wins=p.min_fold_wins)
    print(json.dumps({"a": args.a, "b": args.b, "b_beats_a": decision["promote"], **decision}))
    return 0


def cmd_promote(args) -> int:
    from pipelines.training import registry as reg

    meta = reg.load_meta(args.out, args.name)
    promo = (meta.get("card") or {}).get("promotion") or {}
    if promo and not promo.get("promote"):
        _say(args)(f"note: {args.name} lost to the champion when it was trained: {promo.get('why')}")
    reg.promote(args.out, args.name)
    print(json.dumps({"champion": args.name, "version": meta.get("version")}))
    return 0


def cmd_list(args) -> int:
    from pipelines.training import registry as reg

    registry = read_registry(args.out)
    for v in registry["versions"]:
        try:
            card = reg.load_meta(args.out, v["name"]).get("card") or {}
        except ValueError:
            card = {}
        s = ((card.get("cv") or {}).get("overall") or {}).get("scores") or {}
        auc = f"AUC {s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]" if s.get("auc_ci") else "no card"
        print(f"{v['name']:<28} v{v['version']:<3} {v.get('status') or ('champion' if v['name'] == registry['current'] else '-'):<10} "
              f"{v.get('instrument_root')} ({v.get('data_source')})  {auc}")
    return 0


def cmd_card(args) -> int:
    path = Path(args.out) / f"{args.name}.card.md"
    if not path.exists():
        raise UsageError(f"no card for {args.name!r} in {args.out}")
    print(path.read_text(), end="")
    return 0


def next_slot(now: dt.datetime, at: str) -> dt.datetime:
    """The next weekday at ``at`` (HH:MM, Sao Paulo) after ``now``."""
    hh, mm = (int(x) for x in at.split(":"))
    slot = now.astimezone(SAO_PAULO).replace(hour=hh, minute=mm, second=0, microsecond=0)
    while slot <= now or slot.weekday() >= 5:
        slot += dt.timedelta(days=1)
        slot = slot.replace(hour=hh, minute=mm)
    return slot


def cmd_schedule(args) -> int:
    cfg = load_config(args.config, overrides=psweep.set_overrides(args.set))
    say = _say(args)
    while True:
        slot = (dt.datetime.fromisoformat(args.once_at) if args.once_at
                else next_slot(dt.datetime.now(SAO_PAULO), cfg.training.retrain.at))
        say(f"next retrain at {slot.isoformat(timespec='minutes')}")
        while dt.datetime.now(SAO_PAULO) < slot:
            time.sleep(min(60.0, max(0.1, (slot - dt.datetime.now(SAO_PAULO)).total_seconds())))
        ns = argparse.Namespace(**{**vars(args), "trials": None, "no_backtest": False, "save_dataset": None,
                                   "name": None, "replace": False, "symbol": args.symbol,
                                   "data_source": args.data_source})
        try:
            cmd_retrain(ns)
        except (ValueError, OSError) as e:  # a day without recordings must not stop the schedule
            say(f"retrain failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        if args.once_at:
            return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--retrain":
        argv[0] = "retrain"
    args = parser().parse_args(argv)
    commands = {"train": cmd_train, "validate": lambda a: cmd_train(a, validate=True), "retrain": cmd_retrain,
                "compare": cmd_compare, "promote": cmd_promote, "list": cmd_list, "card": cmd_card,
                "schedule": cmd_schedule}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("train_model: interrupted; nothing written", file=sys.stderr)
        return 130
    except (ValueError, OSError, BacktestError) as e:  # ConfigError, TrainingError, UsageError are ValueErrors
        print(f"train_model: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
