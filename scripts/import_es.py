"""Import the CME ES Sierra Chart tape into the recording layout replay reads.

    python scripts/import_es.py [--input ../shared/data/cme_es_20220124_tbt.csv]
                                [--output data/recordings] [--symbol ESH22] [--tz UTC]

Prints a one-line JSON summary. Exit 2 (one-line message on stderr) when the
input file is missing. The data file stays in shared/data; only the Parquet
output is written under --output. See pipelines/adapters/files/cme_es.py for the
format decisions (time quirk, timezone, DOM interpretation).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402

from pipelines.adapters.files.cme_es import import_cme_es  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "cme_es_20220124_tbt.csv"
DEFAULT_OUTPUT = REPO / "data" / "recordings"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", default=str(DEFAULT_INPUT), help="ES tape CSV (default: %(default)s)")
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT), help="recordings root (default: %(default)s)")
    ap.add_argument("--symbol", default="ESH22", help="contract code to record under (default: %(default)s)")
    ap.add_argument("--tz", default="UTC", help="IANA timezone of the file's times; unstated in the source (default: %(default)s)")
    args = ap.parse_args(argv)
    if not Path(args.input).is_file():
        print(f"import_es: input file not found: {args.input}", file=sys.stderr)
        return 2
    try:
        counts = import_cme_es(args.input, args.output, symbol=args.symbol, tz=args.tz)
    except (ValueError, OSError) as e:
        print(f"import_es: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    print(json.dumps(counts, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
