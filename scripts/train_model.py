"""Train and register the ML voter's XGBoost model.

    python scripts/train_model.py --simulator-events 60000 --horizon-s 60 --out models [--name sim-20261123]
                                  [--seed 0] [--rate 40] [--start 2026-11-23T09:00:00-03:00] [--symbol WDOZ26]
    python scripts/train_model.py --input FILE --symbol SYM --horizon-s 60 --out models --name NAME
                                  [--data-source profitdll]

Events run through ``SymbolAnalytics`` (one feature vector per trade), are
labelled by the sign of the price change over the horizon and split in time
(see ``pipelines.alpha.ml.train_model``). FILE is a recordings root (replay
Parquet, all kinds, for ``--symbol``) or the CME ES Sierra Chart tape
(``*.csv``/``*.txt``; ``--tz`` is the zone of its times, default UTC).

The model records the market it was trained on (``pipelines.alpha.ml``):
``instrument_root`` from the symbol (``WDOZ26`` -> ``WDO``, ``ESH22`` -> ``ES``)
and ``data_source``: ``simulator``, ``cme_es`` for the ES tape, ``replay`` for a
recordings root unless ``--data-source`` says where those recordings came from
(``profitdll``, ``bridge``, ``profit_csv``, or ``simulator`` for a recorded
simulator session). The ML voter abstains on any other market unless
``hmarl.ml_allow_other_market`` is true.

The simulator's default rate (40 events/s) is the one its price dynamics are
calibrated at. The model's metadata goes to stdout as one JSON line; exit 2
with a one-line message on stderr for a bad input or too little data.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402

from pipelines.adapters.config import ReplayConfig, SimulatorConfig  # noqa: E402
from pipelines.features.engine import SymbolAnalytics  # noqa: E402
from pipelines.alpha.ml import DATA_SOURCES, DEFAULT_MODEL_DIR, train_model  # noqa: E402
from pipelines.model.instruments import tick_size_for  # noqa: E402
from pipelines.model.messages import FeatureVector  # noqa: E402
from pipelines.model.clock import from_ns  # noqa: E402


def simulator_events(n_events: int, symbol: str, seed: int, rate: float, start: str) -> list:
    from pipelines.adapters.simulator import MarketSimulator

    cfg = SimulatorConfig(seed=seed, rate=rate, speed=0.0, start=start, max_events=n_events)
    sim = MarketSimulator(cfg, [symbol])
    events: list = []
    while not sim.exhausted:
        events.extend(sim.poll(5000))
    return events


def file_events(path: Path, symbol: str | None, tz: str) -> tuple[list, str, str]:
    """(events, symbol, data source) of a CME ES csv or a recordings root."""
    if not path.exists():
        raise ValueError(f"input not found: {path}")
    if path.is_file() and path.suffix.lower() in (".csv", ".txt"):
        from pipelines.adapters.files.cme_es import read_cme_es

        symbol = symbol or "ESH22"
        events, _counts = read_cme_es(path, symbol=symbol, tz=tz)
        return events, symbol, "cme_es"
    if not symbol:
        raise ValueError("--symbol is required with a recordings root")
    from pipelines.adapters.files.replay import ReplaySource

    src = ReplaySource(ReplayConfig(path=str(path), speed=0.0), [symbol])
    events = []
    while not src.exhausted:
        events.extend(src.poll(50_000))
    src.close()
    return events, symbol, "replay"


def feature_vectors(events: list, symbol: str, tick_size: float) -> list[FeatureVector]:
    # Seq as the feed stamps it (per symbol, across kinds); replayed events arrive with seq 0.
    events = [e._replace(seq=i + 1) for i, e in enumerate(events) if e.symbol == symbol]
    analytics = SymbolAnalytics(symbol, tick_size, vector_every_ns=0)
    out: list = []
    analytics.on_events(events, out)
    return [m for m in out if isinstance(m, FeatureVector)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--simulator-events", type=int, help="train on this many simulated events")
    src.add_argument("--input", help="recordings root (replay Parquet) or the CME ES csv")
    ap.add_argument("--horizon-s", type=float, default=60.0, help="label horizon, event-time seconds")
    ap.add_argument("--out", default=str(DEFAULT_MODEL_DIR), help="model directory (default: %(default)s)")
    ap.add_argument("--name", default=None, help="model name (default: sim-<first event date> / <symbol>-<date>)")
    ap.add_argument("--replace", action="store_true", help="overwrite a model of the same name (new version)")
    ap.add_argument("--symbol", default=None, help="simulator: WDOZ26; file: the symbol to train on")
    ap.add_argument("--seed", type=int, default=0, help="simulator and XGBoost seed")
    ap.add_argument("--rate", type=float, default=40.0, help="simulator events per event-time second")
    ap.add_argument("--start", default="2026-11-23T09:00:00-03:00", help="simulator: ISO time of the first event")
    ap.add_argument("--tz", default="UTC", help="ES csv: IANA zone of its times")
    ap.add_argument("--data-source", choices=sorted(DATA_SOURCES), default=None,
                    help="where the data came from, recorded in the model (default: simulator, cme_es for the ES "
                         "csv, replay for a recordings root)")
    args = ap.parse_args(argv)
    try:
        if args.simulator_events is not None:
            symbol = args.symbol or "WDOZ26"
            events = simulator_events(args.simulator_events, symbol, args.seed, args.rate, args.start)
            prefix, source = "sim", "simulator"
        else:
            events, symbol, source = file_events(Path(args.input), args.symbol, args.tz)
            prefix = symbol.lower()
        vectors = feature_vectors(events, symbol, tick_size_for(symbol, 0.5))
        if not vectors:
            raise ValueError(f"no trades of {symbol} in the input")
        name = args.name or f"{prefix}-{from_ns(vectors[0].ts_event):%Y%m%d}"  # Sao Paulo date of the data
        meta = train_model(vectors, int(args.horizon_s * 1e9), args.out, name, seed=args.seed, replace=args.replace,
                           data_source=args.data_source or source)
    except (ValueError, OSError) as e:
        print(f"train_model: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    print(json.dumps(meta, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
