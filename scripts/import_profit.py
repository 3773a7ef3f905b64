"""Import a Profit "Times & Trades" CSV export into the recording layout replay reads.

    python scripts/import_profit.py --input WDOFUT_trades.csv [--output data/recordings]
                                    [--symbol WDOZ26] [--flush-rows 500000]

Continuous tickers (WDOFUT, WINFUT) are recorded under the contract that was
front on each row's date unless --symbol names one code for every row.
Prints a one-line JSON summary (rows, trades, skipped rows by reason with
their first line numbers, unknown trade types, unmapped broker names...).
Exit 2 (one-line message on stderr) when the input is missing or its header
is not a Profit export. See pipelines/adapters/files/profit_csv.py for the format
decisions.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402

from pipelines.adapters.files.profit_csv import DEFAULT_FLUSH_ROWS, import_profit_csv  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "data" / "recordings"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True, help="Profit Times & Trades CSV export")
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT), help="recordings root (default: %(default)s)")
    ap.add_argument("--symbol", default=None, help="record every row under this contract code (default: from the ticker)")
    ap.add_argument("--flush-rows", type=int, default=DEFAULT_FLUSH_ROWS,
                    help="write buffered days once this many rows are held (default: %(default)s)")
    args = ap.parse_args(argv)
    if not Path(args.input).is_file():
        print(f"import_profit: input file not found: {args.input}", file=sys.stderr)
        return 2
    try:
        counts = import_profit_csv(args.input, args.output, symbol=args.symbol, flush_rows=args.flush_rows)
    except (ValueError, OSError) as e:
        print(f"import_profit: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    print(json.dumps(counts, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
