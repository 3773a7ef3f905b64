"""Import the Binance BTCUSDT websocket capture into the recording layout replay reads.

    python scripts/import_binance.py [--input ../shared/data/binance_btcusdt_20240808.jsonl.gz]
                                     [--output data/recordings] [--symbol BTCUSDT] [--levels 10]

Prints a one-line JSON summary. Exit 2 (one-line message on stderr) when the
input file is missing or unreadable. The data file stays in shared/data; only
the Parquet output is written under --output. See
pipelines/adapters/files/binance.py for the format decisions (event time, lots
of 0.00001 BTC, the book rebuild).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402

from pipelines.adapters.files.binance import DEFAULT_LEVELS, import_binance  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "binance_btcusdt_20240808.jsonl.gz"
DEFAULT_OUTPUT = REPO / "data" / "recordings"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", default=str(DEFAULT_INPUT), help="capture, gzip or plain (default: %(default)s)")
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT), help="recordings root (default: %(default)s)")
    ap.add_argument("--symbol", default="BTCUSDT", help="symbol to record under (default: %(default)s)")
    ap.add_argument("--levels", type=int, default=DEFAULT_LEVELS, help="book levels per side (default: %(default)s)")
    args = ap.parse_args(argv)
    if not Path(args.input).is_file():
        print(f"import_binance: input file not found: {args.input}", file=sys.stderr)
        return 2
    try:
        counts = import_binance(args.input, args.output, symbol=args.symbol, levels=args.levels)
    except (ValueError, OSError) as e:
        print(f"import_binance: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    print(json.dumps(counts, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
