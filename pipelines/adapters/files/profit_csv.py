"""Import Profit's "Times & Trades" CSV export into the recorder layout replay reads.

Format (as Profit writes it)::

    <ticker>,<date>,<time>,<trade_number>,<price>,<qty>,<vol>,<buy_agent>,<sell_agent>,<trade_type>,<aft>
    WINFUT,20240108,090038,10,132840.00000000,25,664200.0000,Capital,Capital,Auction,N

Two dialects are read, chosen from the header line:

- **comma**: ``,`` separator, ``.`` decimal point, dates ``YYYYMMDD``, times ``HHMMSS``;
- **semicolon** (pt-BR exports): ``;`` separator, ``,`` decimal comma with
  optional ``.`` thousands separators (``132.840,50``), dates ``DD/MM/YYYY``.
  A ``.`` in a number of this dialect must group thousands (``5122.5`` is
  rejected as ambiguous rather than read as 51225 or 5122.5).

Both accept dates ``YYYYMMDD``, ``DD/MM/YYYY`` or ``YYYY-MM-DD`` and times
``HHMMSS`` (a dropped leading zero, ``90038``, is accepted), ``HHMMSSmmm``
(B3's own tick files) or ``HH:MM:SS[.fff]`` with a decimal fraction of up to 9
digits (``.5`` = 500 ms). Header names are matched after stripping ``<>``,
case, accents and separators, so ``<trade_number>``, ``Trade Number`` and
``trade_number`` are the same column; ``vol`` and ``aft`` may be absent.

Decisions, and why:

- **Times are B3 local** (America/Sao_Paulo, no zone in the file) -> integer
  ns UTC. ``ts_recv`` = ``ts_event``: a historical file has no receive time
  (replay overwrites it anyway).
- **Order.** B3 trade numbers increase through a session, and the export has
  second resolution, so rows are sorted by ``(ts_event, trade_number, line)``
  within each (symbol, day). For an ascending file this is file order; a
  newest-first export comes out in exchange order too. ``seq`` is 1, 2, ... in
  that order, so replay's ``(ts_event, seq)`` order is trade-number order
  within a second. Rows that step backwards in file order are counted
  (``out_of_order_rows``) as a hint about the file.
- **Symbol.** ``symbol=`` overrides everything. Otherwise a continuous ticker
  (``WDOFUT``, ``WINFUT``) is resolved to the contract that was front on the
  row's date with ``pipelines.model.contracts.resolve_symbol`` (so a multi-month
  export splits at the rolls), and a contract code is kept as is. A ticker
  that cannot be resolved (e.g. a year outside the known B3 calendar) is kept
  unresolved and counted: the data is not thrown away. **Unverified:** Profit's
  own continuous series may roll on a different day than the expiry rule.
- **Trade types.** Text -> ProfitDLL ``TTradeType``: AggressorBuyer 2,
  AggressorSeller 3, Auction 4, RLP 13, Cross / Direct 1 (plus the pt-BR
  words Comprador/Vendedor/Leilao/Direto, and numeric codes); anything else
  -> ``TradeType.UNKNOWN`` (32), counted with the text.
- **Agents** are broker names in the export; ``Trade.buyer``/``seller`` are
  B3 participant ids. ``BROKER_IDS`` maps the few names whose id is known
  (from a partial community map, unverified); a numeric field is
  taken as the id; any other name -> 0, counted (top names in the summary).
- **vol** (financial volume) is not stored: ``Trade`` has no field for it
  and it is price x qty x contract multiplier.
- **aft = S** (after-market) rows are kept, like any print, and counted so a
  user can filter them; futures normally have none.
- **Bad rows** are skipped and counted by reason with their first few line
  numbers; the import never aborts on a row. A repeated (symbol, day,
  trade_number) is skipped as ``duplicate_trade_number`` (B3 trade numbers are
  unique per instrument and session); a repeated header line (concatenated
  exports) is skipped and counted. A file whose header lacks a required
  column raises ``ProfitCsvError``.
- **Memory.** Rows are buffered per (symbol, day) and written when the file
  moves on to another day with at least ``flush_rows`` rows buffered, so
  memory holds about one day of trades, not the whole (possibly multi-GB)
  export. A single day bigger than ``4 * flush_rows`` rows (a busy WIN day
  has 5-6 M trades) is written in parts (``mid_day_flushes``) to bound
  memory; rows of one (symbol, day) written in different parts are then
  ordered by ``ts_event`` only across the parts, and duplicate trade numbers
  are only detected within a part. A day that reappears after it was written
  also goes to another part file; ``days_split`` counts both cases. Replay
  merges part files by ``ts_event``.
- **Encoding.** UTF-8 (with or without BOM) when the first 64 KiB decode as
  UTF-8, else Windows-1252 (Profit runs on Windows); undecodable bytes are
  replaced, never fatal.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import re
import unicodedata
from collections import Counter
from datetime import date, datetime, time as dtime
from pathlib import Path
from typing import Any, Iterator

from pipelines.model.contracts import CalendarError, ContractError, resolve_symbol
from pipelines.model.messages import TRADE_TYPE_CODES, Trade, TradeType
from pipelines.adapters.files.recorder import write_events
from pipelines.model.clock import NS_PER_S, SAO_PAULO, to_ns


class ProfitCsvError(ValueError):
    """The file is not a Profit Times & Trades export (header missing or incomplete)."""


@functools.lru_cache(maxsize=8192)  # a file repeats a few broker names and type words
def _norm(text: str) -> str:
    """Lower-case ASCII letters and digits only: ``"<Trade Number>"`` -> ``"tradenumber"``."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]", "", text.lower())


# Column name (normalized) -> field. English names from the documented export; the
# Portuguese aliases are the obvious translations (unverified against a pt-BR export).
COLUMN_ALIASES: dict[str, str] = {
    "ticker": "ticker", "ativo": "ticker", "symbol": "ticker",
    "date": "date", "data": "date",
    "time": "time", "hora": "time",
    "tradenumber": "trade_number", "numero": "trade_number", "negocio": "trade_number",
    "price": "price", "preco": "price",
    "qty": "qty", "quantity": "qty", "quantidade": "qty", "qtd": "qty",
    "vol": "vol", "volume": "vol",
    "buyagent": "buy_agent", "comprador": "buy_agent", "agentecomprador": "buy_agent",
    "sellagent": "sell_agent", "vendedor": "sell_agent", "agentevendedor": "sell_agent",
    "tradetype": "trade_type", "tipo": "trade_type", "agressor": "trade_type",
    "aft": "aft",
}
REQUIRED_FIELDS = ("ticker", "date", "time", "trade_number", "price", "qty", "buy_agent", "sell_agent", "trade_type")

TRADE_TYPE_NAMES: dict[str, TradeType] = {
    "aggressorbuyer": TradeType.BUY_AGGRESSOR, "buyer": TradeType.BUY_AGGRESSOR, "comprador": TradeType.BUY_AGGRESSOR,
    "aggressorseller": TradeType.SELL_AGGRESSOR, "seller": TradeType.SELL_AGGRESSOR, "vendedor": TradeType.SELL_AGGRESSOR,
    "auction": TradeType.AUCTION, "leilao": TradeType.AUCTION,
    "rlp": TradeType.RLP,
    "cross": TradeType.CROSS, "direct": TradeType.CROSS, "direto": TradeType.CROSS,
}

# Broker name (normalized) -> B3 participant id, from a partial community map;
# unverified against B3's participant list, so unknown names map to 0 and are counted.
BROKER_IDS: dict[str, int] = {
    "xp": 3, "xpinvestimentos": 3,
    "ubs": 8, "ubsbb": 8,
    "santander": 27,
    "agora": 39,
    "bradesco": 72,
    "btg": 85, "btgpactual": 85,
    "genial": 120,
    "clear": 308,
    "rico": 386,
    "inter": 1099,
}

_TYPE_NAMES = {int(t): t.name for t in TradeType}
MAX_LINES_PER_REASON = 5
TOP_N = 5
DEFAULT_FLUSH_ROWS = 500_000


class _BadRow(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# -- field parsers ----------------------------------------------------------------

_THOUSANDS = re.compile(r"[+-]?\d{1,3}(\.\d{3})+(,\d*)?")


def parse_number(text: str, decimal_comma: bool) -> float:
    """A number in the file's dialect; ``ValueError`` when it is not one (or is ambiguous)."""
    s = text.strip()
    if decimal_comma:
        if "." in s:
            if not _THOUSANDS.fullmatch(s):
                raise ValueError(f"ambiguous number {text!r} in a decimal-comma file")
            s = s.replace(".", "")
        s = s.replace(",", ".")
    elif "," in s:
        raise ValueError(f"decimal comma {text!r} in a decimal-point file")
    value = float(s)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def parse_date(text: str) -> date:
    s = text.strip()
    if len(s) == 8 and s.isdigit():
        return date(int(s[:4]), int(s[4:6]), int(s[6:]))
    if len(s) == 10 and s[2] == "/" and s[5] == "/":
        return date(int(s[6:]), int(s[3:5]), int(s[:2]))
    if len(s) == 10 and s[4] == "-" and s[7] == "-":
        return date.fromisoformat(s)
    raise ValueError(f"bad date {text!r}: expected YYYYMMDD, DD/MM/YYYY or YYYY-MM-DD")


def parse_time(text: str) -> tuple[dtime, int]:
    """(wall time to the second, extra ns). ``ValueError`` when malformed."""
    s = text.strip()
    frac = ""
    if ":" in s:
        hms, _, frac = s.replace(",", ".").partition(".")
        parts = hms.split(":")
        if len(parts) != 3 or not all(p.isdigit() and 1 <= len(p) <= 2 for p in parts):
            raise ValueError(f"bad time {text!r}")
        h, m, sec = (int(p) for p in parts)
    elif s.isdigit() and len(s) in (5, 6):
        s = s.zfill(6)
        h, m, sec = int(s[:2]), int(s[2:4]), int(s[4:])
    elif s.isdigit() and len(s) in (8, 9):  # HHMMSSmmm
        s = s.zfill(9)
        h, m, sec, frac = int(s[:2]), int(s[2:4]), int(s[4:6]), s[6:]
    else:
        raise ValueError(f"bad time {text!r}: expected HHMMSS, HHMMSSmmm or HH:MM:SS[.fff]")
    if frac and (not frac.isdigit() or len(frac) > 9):
        raise ValueError(f"bad time fraction {text!r}")
    extra_ns = int(frac.ljust(9, "0")) if frac else 0
    return dtime(h, m, sec), extra_ns


def agent_id(name: str) -> int | None:
    """Participant id for a broker field: a number as is, a known name mapped, else None."""
    s = name.strip()
    if s.isdigit():
        return int(s)
    return BROKER_IDS.get(_norm(s))


def trade_type_code(text: str) -> int | None:
    """TTradeType code for the export's text, or None when unknown."""
    s = text.strip()
    if s.isdigit() and int(s) in TRADE_TYPE_CODES:
        return int(s)
    tt = TRADE_TYPE_NAMES.get(_norm(s))
    return None if tt is None else int(tt)


# -- reading --------------------------------------------------------------------


def _sniff_encoding(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(65536)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a multi-byte char cut at the 64 KiB boundary
            return "cp1252"
    return "utf-8-sig"


def _header_map(header: list[str], path: Path) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, name in enumerate(header):
        field = COLUMN_ALIASES.get(_norm(name))
        if field is not None and field not in columns:
            columns[field] = i
    missing = [f for f in REQUIRED_FIELDS if f not in columns]
    if missing:
        raise ProfitCsvError(
            f"{path}: not a Profit Times & Trades export: header lacks {', '.join(missing)} "
            f"(expected <ticker>,<date>,<time>,<trade_number>,<price>,<qty>,<vol>,<buy_agent>,<sell_agent>,<trade_type>,<aft>)"
        )
    return columns


class _Row:
    __slots__ = ("symbol", "day", "ts", "trade_number", "line", "price", "qty", "ttype", "type_text",
                 "buyer", "seller", "unmapped", "after_market")


class ProfitCsvImporter:
    """Streams one export file into ``Trade`` events, day by day; see the module docstring."""

    def __init__(self, symbol: str | None = None, flush_rows: int = DEFAULT_FLUSH_ROWS):
        self.symbol_override = symbol
        self.flush_rows = max(1, int(flush_rows))
        self.max_buffer_rows = 4 * self.flush_rows
        self.counts: dict[str, Any] = {
            "rows": 0, "trades": 0, "skipped": {}, "skipped_lines": {}, "trade_types": {},
            "unknown_trade_types": {}, "unmapped_agent_fields": 0, "unmapped_agents": {},
            "after_market_rows": 0, "out_of_order_rows": 0, "repeated_headers": 0,
            "symbols": {}, "symbol_unresolved": {}, "days_split": 0, "mid_day_flushes": 0,
        }
        self._unknown_types: Counter[str] = Counter()
        self._unmapped: Counter[str] = Counter()
        self._resolved: dict[tuple[str, date], tuple[str, bool]] = {}
        self._seq = 0
        self._dates: dict[str, date] = {}
        self._hours: dict[tuple[date, int], int] = {}

    # -- per row -------------------------------------------------------------
    def _skip(self, reason: str, line: int) -> None:
        skipped = self.counts["skipped"]
        skipped[reason] = skipped.get(reason, 0) + 1
        lines = self.counts["skipped_lines"].setdefault(reason, [])
        if len(lines) < MAX_LINES_PER_REASON:
            lines.append(line)

    def _symbol(self, ticker: str, day: date) -> str:
        if self.symbol_override:
            return self.symbol_override
        key = (ticker, day)
        cached = self._resolved.get(key)
        if cached is None:
            try:
                cached = (resolve_symbol(ticker, on=day), True)
            except (ContractError, CalendarError):
                cached = (ticker, False)  # keep the data under the raw ticker
            self._resolved[key] = cached
        sym, ok = cached
        if not ok:
            unresolved = self.counts["symbol_unresolved"]
            unresolved[ticker] = unresolved.get(ticker, 0) + 1
        return sym

    def _hour_ns(self, day: date, hour: int) -> int:
        """ns of ``day`` ``hour``:00 Sao Paulo. Cached per hour: offsets only ever changed on the hour."""
        key = (day, hour)
        ns = self._hours.get(key)
        if ns is None:
            ns = self._hours[key] = to_ns(datetime.combine(day, dtime(hour), tzinfo=SAO_PAULO))
        return ns

    def _parse(self, fields: list[str], cols: dict[str, int], decimal_comma: bool, line: int) -> _Row:
        def get(name: str) -> str:
            return fields[cols[name]]

        row = _Row()
        row.line = line
        ticker = get("ticker").strip()
        if not ticker:
            raise _BadRow("missing_ticker")
        date_text = get("date")
        row.day = self._dates.get(date_text)
        if row.day is None:
            try:
                row.day = self._dates[date_text] = parse_date(date_text)
            except ValueError:
                raise _BadRow("bad_date") from None
        try:
            wall, extra_ns = parse_time(get("time"))
        except ValueError:
            raise _BadRow("bad_time") from None
        row.ts = self._hour_ns(row.day, wall.hour) + (wall.minute * 60 + wall.second) * NS_PER_S + extra_ns
        try:
            number = parse_number(get("trade_number"), decimal_comma)  # pt-BR may group thousands
        except ValueError:
            raise _BadRow("bad_trade_number") from None
        if number < 0 or number != int(number):
            raise _BadRow("bad_trade_number")
        row.trade_number = int(number)
        try:
            row.price = parse_number(get("price"), decimal_comma)
        except ValueError:
            raise _BadRow("bad_price") from None
        if row.price <= 0:
            raise _BadRow("bad_price")
        try:
            qty = parse_number(get("qty"), decimal_comma)
        except ValueError:
            raise _BadRow("bad_qty") from None
        if qty <= 0 or qty != int(qty):
            raise _BadRow("bad_qty")
        row.qty = int(qty)
        row.type_text = get("trade_type").strip()
        code = trade_type_code(row.type_text)
        row.ttype = int(TradeType.UNKNOWN) if code is None else code
        buy_text, sell_text = get("buy_agent").strip(), get("sell_agent").strip()
        buyer, seller = agent_id(buy_text), agent_id(sell_text)
        row.buyer, row.seller = buyer or 0, seller or 0
        # Names with no known id (an empty field is just missing, not unmapped).
        row.unmapped = tuple(n for n, i in ((buy_text, buyer), (sell_text, seller)) if i is None and n)
        row.after_market = "aft" in cols and fields[cols["aft"]].strip().upper() == "S"
        row.symbol = self._symbol(ticker, row.day)
        return row

    # -- per day ---------------------------------------------------------------
    def _events(self, rows: list[_Row]) -> list[Trade]:
        """One (symbol, day) group -> Trades in exchange order, duplicates dropped, seq assigned."""
        rows.sort(key=lambda r: (r.ts, r.trade_number, r.line))
        out: list[Trade] = []
        seen: set[int] = set()
        types = self.counts["trade_types"]
        for r in rows:
            if r.trade_number in seen:
                self._skip("duplicate_trade_number", r.line)
                continue
            seen.add(r.trade_number)
            # Counted here, for the rows actually written.
            name = _TYPE_NAMES[r.ttype]
            types[name] = types.get(name, 0) + 1
            if r.ttype == TradeType.UNKNOWN and r.type_text != "32":
                self._unknown_types[r.type_text] += 1
            for n in r.unmapped:
                self._unmapped[n] += 1
            self.counts["unmapped_agent_fields"] += len(r.unmapped)
            self.counts["after_market_rows"] += r.after_market
            self._seq += 1
            out.append(Trade(r.symbol, r.ts, r.ts, self._seq, r.price, r.qty, r.ttype, r.buyer, r.seller, r.trade_number))
        return out

    def iter_batches(self, path: str | os.PathLike) -> Iterator[list[Trade]]:
        """Parse ``path``; yield lists of Trades, each holding whole (symbol, day) groups."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Profit CSV not found: {path}")
        encoding = _sniff_encoding(path)
        with open(path, newline="", encoding=encoding, errors="replace") as f:
            first = f.readline()
            header_line = 1
            while first and not first.strip():
                first = f.readline()
                header_line += 1
            if not first:
                raise ProfitCsvError(f"{path}: empty file (no header)")
            delimiter = ";" if first.count(";") > first.count(",") else ","
            decimal_comma = delimiter == ";"
            header = next(csv.reader([first], delimiter=delimiter))
            cols = _header_map(header, path)
            self.counts["dialect"] = "semicolon" if decimal_comma else "comma"
            self.counts["encoding"] = encoding
            norm_header = [_norm(h) for h in header]
            ticker_col = cols["ticker"]
            width = max(cols.values()) + 1
            reader = csv.reader(f, delimiter=delimiter)
            line_base = header_line  # lines consumed before the reader started

            groups: dict[tuple[str, date], list[_Row]] = {}
            flushed: set[tuple[str, date]] = set()
            buffered = 0
            last_key: tuple[str, date, int, int] | None = None
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                except csv.Error:  # e.g. a field over csv's size limit: skip the line, keep reading
                    self.counts["rows"] += 1
                    self._skip("malformed_csv", line_base + reader.line_num)
                    continue
                line = line_base + reader.line_num
                if not fields or all(not x.strip() for x in fields):
                    continue
                self.counts["rows"] += 1
                if fields[ticker_col] == header[ticker_col] and [_norm(x) for x in fields] == norm_header:
                    self.counts["rows"] -= 1
                    self.counts["repeated_headers"] += 1
                    continue
                if len(fields) < width:
                    self._skip("bad_field_count", line)
                    continue
                try:
                    row = self._parse(fields, cols, decimal_comma, line)
                except _BadRow as e:
                    self._skip(e.reason, line)
                    continue
                key = (row.symbol, row.day)
                order = (row.symbol, row.day, row.ts, row.trade_number)
                if last_key is not None and order[:2] == last_key[:2] and order[2:] < last_key[2:]:
                    self.counts["out_of_order_rows"] += 1
                last_key = order
                day_boundary = buffered >= self.flush_rows and key not in groups
                if day_boundary or buffered >= self.max_buffer_rows:
                    # The file moved on to another day (or one day is too big): write what is buffered.
                    if not day_boundary:
                        self.counts["mid_day_flushes"] += 1
                    batch: list[Trade] = []
                    for gkey, grows in groups.items():
                        batch.extend(self._events(grows))
                        flushed.add(gkey)
                    groups.clear()
                    buffered = 0
                    yield batch
                if key in flushed and key not in groups:
                    self.counts["days_split"] += 1
                groups.setdefault(key, []).append(row)
                buffered += 1
            batch = []
            for grows in groups.values():
                batch.extend(self._events(grows))
            if batch:
                yield batch

    def finish_counts(self) -> dict[str, Any]:
        c = self.counts
        c["unknown_trade_types"] = dict(self._unknown_types.most_common(TOP_N))
        c["unknown_trade_type_rows"] = sum(self._unknown_types.values())
        c["unmapped_agents"] = dict(self._unmapped.most_common(TOP_N))
        c["skipped_rows"] = sum(c["skipped"].values())
        return c


def read_profit_csv(
    csv_path: str | os.PathLike, symbol: str | None = None
) -> tuple[list[Trade], dict[str, Any]]:
    """Parse a whole export in memory: (Trades with seq 1..N, counts). For small files and tests."""
    imp = ProfitCsvImporter(symbol=symbol, flush_rows=2**62)
    events: list[Trade] = []
    for batch in imp.iter_batches(csv_path):
        events.extend(batch)
    counts = imp.finish_counts()
    counts.update(trades=len(events), symbols=dict(Counter(ev.symbol for ev in events)))
    return events, counts


def import_profit_csv(
    csv_path: str | os.PathLike,
    out_root: str | os.PathLike,
    symbol: str | None = None,
    flush_rows: int = DEFAULT_FLUSH_ROWS,
) -> dict[str, Any]:
    """Import an export and write it through the recorder layout under ``out_root``; return counts."""
    imp = ProfitCsvImporter(symbol=symbol, flush_rows=flush_rows)
    rows_written = files_written = trades = 0
    first_ts = last_ts = None
    symbols: Counter[str] = Counter()
    for batch in imp.iter_batches(csv_path):
        if not batch:
            continue
        rec = write_events(batch, out_root)
        rows_written += rec["rows_written"]
        files_written += rec["files_written"]
        trades += len(batch)
        symbols.update(ev.symbol for ev in batch)
        lo, hi = min(ev.ts_event for ev in batch), max(ev.ts_event for ev in batch)
        first_ts = lo if first_ts is None else min(first_ts, lo)
        last_ts = hi if last_ts is None else max(last_ts, hi)
    counts = imp.finish_counts()
    counts.update(
        trades=trades, symbols=dict(symbols), output=str(out_root), rows_written=rows_written,
        files_written=files_written, first_ts_event=first_ts, last_ts_event=last_ts,
    )
    return counts
