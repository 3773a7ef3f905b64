"""Feature tables and the feature catalog from the command line.

    python scripts/features.py compute --input FILE --output OUT.parquet
                                       [--engine batch|streaming] [--symbol SYM] [--tz UTC]
                                       [--price-quantum 0.001]
    python scripts/features.py catalog [--format text|markdown|json]

``compute`` reads a tape and writes one row per trade: ``symbol``, ``seq``,
``ts_event`` (ns), ``price``, ``qty``, ``trade_type``, ``aggressor`` (+1 buyer,
-1 seller, 0 none) and the 65 feature columns (see ``catalog``). FILE is:

- replay Parquet: a recordings root (``<root>/tick/symbol=SYM/date=YYYY-MM-DD/*.parquet``),
  a ``tick`` directory, or one Parquet file with the Trade columns. Rows are
  ordered per symbol by ``(ts_event, seq)``, as replay plays them; each symbol
  gets its own engine state.
- the CME ES Sierra Chart tape (``*.csv``/``*.txt``), parsed by
  ``pipelines.adapters.files.cme_es`` (time quirk, Sequence order, TradeType 2 -> 2,
  1 -> 3); ``--symbol`` names it (default ESH22), ``--tz`` is the zone of its
  times (unstated in the source; default UTC).

``--engine batch`` (default) is the vectorized path; ``streaming`` runs the
live engine trade by trade (slower; the same numbers). A one-line JSON summary
goes to stdout. Exit 2 with a one-line message on stderr for a bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipelines.features.catalog import catalog_entries, render  # noqa: E402
from pipelines.features.batch import compute_batch, compute_streaming  # noqa: E402
from pipelines.features.core import DEFAULT_PRICE_QUANTUM  # noqa: E402
from pipelines.model.messages import Trade  # noqa: E402

TRADE_COLUMNS = list(Trade._fields)


def read_es_csv(path: Path, symbol: str = "ESH22", tz: str = "UTC") -> pd.DataFrame:
    """The ES tape's trades as a DataFrame with the Trade columns, in Sequence order."""
    from pipelines.adapters.files.cme_es import read_cme_es

    events, _counts = read_cme_es(path, symbol=symbol, tz=tz)
    trades = [e for e in events if isinstance(e, Trade)]
    return pd.DataFrame(trades, columns=TRADE_COLUMNS)


def read_replay_parquet(path: Path) -> pd.DataFrame:
    """Trades from a recordings root, a ``tick`` directory or one Parquet file."""
    if path.is_dir():
        root = path / "tick" if (path / "tick").is_dir() else path
        files = sorted(f for f in root.rglob("*.parquet") if not f.name.startswith("."))
        if not files:
            raise ValueError(f"no Parquet files under {root}")
    else:
        files = [path]
    frames = []
    for f in files:
        df = pq.read_table(f).to_pandas()
        if "symbol" not in df.columns:  # a bare file: take the symbol from a symbol=SYM folder if any
            part = next((p.split("=", 1)[1] for p in f.parts if p.startswith("symbol=")), "UNKNOWN")
            df["symbol"] = part
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    missing = [c for c in ("ts_event", "price", "qty", "trade_type") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not trade Parquet (missing columns {missing})")
    for col, default in (("seq", 0), ("buyer", 0), ("seller", 0)):
        if col not in df.columns:
            df[col] = default
    return df.sort_values(["symbol", "ts_event", "seq"], kind="stable").reset_index(drop=True)


def read_input(path: Path, symbol: str | None, tz: str) -> pd.DataFrame:
    if not path.exists():
        raise ValueError(f"input not found: {path}")
    if path.is_file() and path.suffix.lower() in (".csv", ".txt"):
        return read_es_csv(path, symbol or "ESH22", tz)
    df = read_replay_parquet(path)
    if symbol:
        df = df[df["symbol"] == symbol].reset_index(drop=True)
        if df.empty:
            raise ValueError(f"no trades for symbol {symbol} in {path}")
    return df


def compute_table(trades: pd.DataFrame, engine: str, price_quantum: float) -> pd.DataFrame:
    """Feature rows for every symbol of ``trades`` (one engine state per symbol)."""
    fn = compute_batch if engine == "batch" else compute_streaming
    parts = []
    for sym, group in trades.groupby("symbol", sort=True):
        valid = group[(group["price"] > 0) & (group["qty"] > 0) & group["price"].notna()]
        feats = fn(valid, price_quantum=price_quantum)
        head = pd.DataFrame({
            "symbol": sym,
            "seq": valid["seq"].to_numpy(),
            "trade_type": valid["trade_type"].to_numpy().astype("int16"),
        })
        feats = pd.concat([head, feats], axis=1)
        parts.append(feats[["symbol", "seq", "ts_event", "price", "qty", "trade_type"]
                           + [c for c in feats.columns if c not in ("symbol", "seq", "ts_event", "price", "qty",
                                                                    "trade_type")]])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def cmd_compute(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        trades = read_input(Path(args.input), args.symbol, args.tz)
    except (ValueError, OSError) as e:
        print(f"features: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    t1 = time.perf_counter()
    table = compute_table(trades, args.engine, args.price_quantum)
    t2 = time.perf_counter()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    summary = {
        "rows": len(table), "input_rows": len(trades),
        "symbols": sorted(table["symbol"].unique().tolist()) if len(table) else [],
        "engine": args.engine, "output": str(out), "read_s": round(t1 - t0, 3), "compute_s": round(t2 - t1, 3),
        "events_per_s": round(len(table) / (t2 - t1)) if t2 > t1 else None,
    }
    print(json.dumps(summary, sort_keys=True))
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    try:
        print(render(catalog_entries(), args.format))
        sys.stdout.flush()
    except BrokenPipeError:  # `... catalog | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compute", help="write the per-trade feature table of a tape")
    c.add_argument("--input", required=True, help="replay Parquet (root, tick dir or file) or the ES csv")
    c.add_argument("--output", required=True, help="output Parquet file")
    c.add_argument("--engine", choices=("batch", "streaming"), default="batch")
    c.add_argument("--symbol", default=None, help="ES csv: contract code (default ESH22); Parquet: only this symbol")
    c.add_argument("--tz", default="UTC", help="ES csv: IANA zone of its times (default: %(default)s)")
    c.add_argument("--price-quantum", type=float, default=DEFAULT_PRICE_QUANTUM,
                   help="price grid for exact integer sums (default: %(default)s)")
    c.set_defaults(fn=cmd_compute)
    k = sub.add_parser("catalog", help="print the feature catalog")
    k.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    k.set_defaults(fn=cmd_catalog)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
