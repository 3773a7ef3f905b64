"""What a backtest earned, from its fills and the market's trades: round trips, the equity
curve, daily P&L and the report's statistics, in R$ on event time.

Inputs are tables: ``fills`` with the columns of :class:`pipelines.model.orders.Fill` (this
module reads ``symbol, ts_event, side, quantity, price, fees``; the others are ignored) and
``marks``, the market's trades (``ts_event, symbol, price``). Rows are taken in event time
(a stable sort: rows with the same ``ts_event`` keep their order). Money is the instrument's
currency (R$ for WDO and WIN): price points times the point value, which the caller gives as
a mapping or a function of the symbol (e.g. :func:`pipelines.model.instruments.point_value_for`).

A round trip is one symbol's position going from flat to flat. Its P&L is the sum of its
signed cash flows (what was paid for the contracts bought, received for those sold), times
the point value. Average-cost and FIFO accounting only differ in how they attribute P&L to
the fills inside a trip; once the position is flat every contract bought has been matched
by one sold, so both give the trip's cash flows and this one number.

Bad input (a missing column, an unknown side, a NaN or non-positive price, a non-positive or
fractional quantity, a missing point value) raises ``ValueError`` naming the column and the
row (its position in the table, from 0): the backtest turns it into one line and exit 2.

The ratios on daily returns (Sharpe, Sortino, Calmar, the annual return and the drawdown as
a fraction) come from empyrical-reloaded, the maintained fork of Quantopian's empyrical, so
their definitions are the ones most readers already know; :data:`DEFINITIONS` says how each
figure is computed and when it is undefined (``None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import empyrical
import numpy as np
import pandas as pd

from pipelines.model.clock import NS_PER_DAY, local_ns
from pipelines.model.orders import BUY, SELL, SIDES

PerSymbol = Mapping[str, float] | Callable[[str], float]

FILL_COLUMNS = ("symbol", "ts_event", "side", "quantity", "price", "fees")
MARK_COLUMNS = ("ts_event", "symbol", "price")
TRIP_COLUMNS = ("symbol", "side", "ts_open", "ts_close", "quantity", "entry_vwap", "exit_vwap",
                "gross_pnl", "fees", "net_pnl", "duration_ns")
OPEN_TRIP_COLUMNS = ("symbol", "side", "ts_open", "quantity", "position", "entry_vwap", "exit_vwap",
                     "mark_price", "gross_pnl", "fees", "net_pnl")
EQUITY_COLUMNS = ("ts_event", "gross_pnl", "fees", "equity", "contracts_traded", "notional_traded")
POSITION_PREFIX = "position_"  # equity_curve has one column per symbol: position_<SYMBOL>

SESSIONS_PER_YEAR = 252  # B3 trading sessions in a year, for annualizing daily figures


# -- input checks ---------------------------------------------------------------------


def _require(df: Any, columns: tuple[str, ...], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column {', '.join(missing)}")


def _reject_first(bad: np.ndarray, col: pd.Series, what: str, why: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: row {i}, column {col.name}: {why}, got {col.iloc[i]!r}")


def _is_integer(v: Any) -> bool:
    """An exact integer: timestamps in ns do not survive a float, so a float counts only when
    it is integral and below 2**53."""
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    return isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer() and abs(v) < 2**53


def _integers(col: pd.Series, what: str) -> np.ndarray:
    if pd.api.types.is_integer_dtype(col.dtype) and not col.isna().any():
        return col.to_numpy(dtype=np.int64)
    _reject_first(col.isna().to_numpy(), col, what, "missing value")
    values = col.tolist()
    _reject_first(np.array([not _is_integer(v) for v in values], dtype=bool), col, what, "expected an integer")
    return np.array([int(v) for v in values], dtype=np.int64)


def _floats(col: pd.Series, what: str, positive: bool) -> np.ndarray:
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(values) | (values <= 0 if positive else values < 0)
    _reject_first(bad, col, what, "expected a positive number" if positive else "expected a number >= 0")
    return values


def _symbols(col: pd.Series, what: str) -> np.ndarray:
    values = col.to_numpy(dtype=object)
    bad = np.array([not (isinstance(v, str) and v) for v in values], dtype=bool)
    _reject_first(bad, col, what, "expected a symbol")
    return values


def _per_symbol(value: PerSymbol, symbol: str, what: str) -> float:
    """``value`` (a mapping or a function of the symbol) for ``symbol``, checked."""
    try:
        v = value(symbol) if callable(value) else value[symbol]
    except (LookupError, TypeError, ValueError) as e:
        raise ValueError(f"{what} of {symbol!r}: not given ({e})") from None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
        raise ValueError(f"{what} of {symbol!r}: expected a finite number, got {v!r}")
    return float(v)


def _point_value(point_value: PerSymbol, symbol: str) -> float:
    pv = _per_symbol(point_value, symbol, "point value")
    if pv <= 0:
        raise ValueError(f"point value of {symbol!r}: expected a positive number, got {pv!r}")
    return pv


class _Fills:
    """A validated fills table as arrays in event-time order (rows are checked in the order
    given, so an error names the caller's row)."""

    def __init__(self, f: pd.DataFrame):
        what = "fills"
        _require(f, FILL_COLUMNS, what)
        symbol = _symbols(f["symbol"], what)
        ts = _integers(f["ts_event"], what)
        side = f["side"].to_numpy(dtype=object)
        _reject_first(np.array([s not in SIDES for s in side], dtype=bool), f["side"], what,
                      f"expected {BUY} or {SELL}")
        quantity = _integers(f["quantity"], what)
        _reject_first(quantity <= 0, f["quantity"], what, "expected a positive quantity")
        price = _floats(f["price"], what, positive=True)
        fees = _floats(f["fees"], what, positive=False)
        order = np.argsort(ts, kind="stable")
        self.symbol, self.ts, self.quantity = symbol[order], ts[order], quantity[order]
        self.sign = np.where(side[order] == BUY, 1, -1).astype(np.int64)
        self.price, self.fees = price[order], fees[order]


class _Marks:
    """A validated marks table as arrays in event-time order."""

    def __init__(self, m: pd.DataFrame):
        what = "marks"
        _require(m, MARK_COLUMNS, what)
        symbol = _symbols(m["symbol"], what)
        ts = _integers(m["ts_event"], what)
        price = _floats(m["price"], what, positive=True)
        order = np.argsort(ts, kind="stable")
        self.symbol, self.ts, self.price = symbol[order], ts[order], price[order]


# -- round trips ------------------------------------------------------------------------


class _Trip:
    """One symbol's trip while it is open: quantities in contracts, money in price points."""

    __slots__ = ("side", "ts_open", "position", "opened", "entry_notional", "closed", "exit_notional", "cash",
                 "fees")

    def __init__(self, side: int, ts_open: int):
        self.side = side  # +1 long, -1 short
        self.ts_open = ts_open
        self.position = 0  # signed contracts still open
        self.opened = 0
        self.entry_notional = 0.0
        self.closed = 0
        self.exit_notional = 0.0
        self.cash = 0.0  # signed cash flows: - bought x price + sold x price
        self.fees = 0.0

    def open(self, qty: int, price: float, fees: float) -> None:
        self.position += self.side * qty
        self.opened += qty
        self.entry_notional += qty * price
        self.cash -= self.side * qty * price
        self.fees += fees

    def close(self, qty: int, price: float, fees: float) -> None:
        self.position -= self.side * qty
        self.closed += qty
        self.exit_notional += qty * price
        self.cash += self.side * qty * price
        self.fees += fees

    def row(self, symbol: str, point_value: float, mark: float) -> dict:
        gross = (self.cash + self.position * mark) * point_value if self.position else self.cash * point_value
        return {"symbol": symbol, "side": BUY if self.side > 0 else SELL, "ts_open": self.ts_open,
                "quantity": self.opened, "entry_vwap": self.entry_notional / self.opened,
                "exit_vwap": self.exit_notional / self.closed if self.closed else math.nan,
                "gross_pnl": gross, "fees": self.fees, "net_pnl": gross - self.fees}


def _walk(fills: pd.DataFrame, point_value: PerSymbol) -> tuple[list[dict], dict[str, _Trip]]:
    """The closed trips (in the order they closed) and the trip still open per symbol."""
    f = _Fills(fills)
    pvs = {s: _point_value(point_value, s) for s in sorted(set(f.symbol))}
    closed: list[dict] = []
    trips: dict[str, _Trip] = {}
    for sym, ts, sign, qty, price, fee in zip(f.symbol, f.ts.tolist(), f.sign.tolist(), f.quantity.tolist(),
                                              f.price.tolist(), f.fees.tolist()):
        t = trips.get(sym)
        if t is None:
            t = trips[sym] = _Trip(sign, ts)
        if sign == t.side:
            t.open(qty, price, fee)
            continue
        closing = min(qty, abs(t.position))
        closing_fee = fee * closing / qty  # a flipping fill's fee is split pro rata
        t.close(closing, price, closing_fee)
        if t.position == 0:
            row = t.row(sym, pvs[sym], math.nan)
            row.update(ts_close=ts, duration_ns=ts - t.ts_open)
            closed.append(row)
            del trips[sym]
            if qty > closing:  # a flip: the rest of the fill opens the next trip
                trips[sym] = _Trip(sign, ts)
                trips[sym].open(qty - closing, price, fee - closing_fee)
    return closed, trips


def round_trips(fills: pd.DataFrame, point_value: PerSymbol) -> pd.DataFrame:
    """One row per closed round trip (flat to flat) per symbol, in the order they closed.

    ``side`` BUY for a long trip, SELL for a short one; ``quantity`` the contracts opened in
    total (as many were closed); ``entry_vwap`` / ``exit_vwap`` the volume-weighted prices of
    the opening and closing fills; ``gross_pnl`` the signed cash flows times the point value;
    ``fees`` those of its fills; ``net_pnl = gross_pnl - fees``; ``duration_ns = ts_close -
    ts_open``. A fill that flips the position closes one trip and opens the next at its price,
    its quantity and fees split pro rata. The trip still open at the end is in
    :func:`open_trips`."""
    closed, _ = _walk(fills, point_value)
    return pd.DataFrame(closed, columns=list(TRIP_COLUMNS))


def last_prices(marks: pd.DataFrame) -> dict[str, float]:
    """The last trade price of each symbol in ``marks``."""
    m = _Marks(marks)
    return {str(s): float(p) for s, p in zip(m.symbol, m.price)}


def open_trips(fills: pd.DataFrame, last_price: Mapping[str, float], point_value: PerSymbol) -> pd.DataFrame:
    """The trip still open at the end of ``fills``, per symbol, marked to ``last_price``.

    Columns as :func:`round_trips`, without the close, plus ``position`` (signed contracts
    still open) and ``mark_price``; ``exit_vwap`` is that of partial exits (NaN if none);
    ``gross_pnl`` = (cash flows so far + position x mark) x point value, i.e. what the closed
    part realized plus what the open part is worth at the mark."""
    _, trips = _walk(fills, point_value)
    rows = []
    for sym, t in sorted(trips.items()):
        mark = _per_symbol(last_price, sym, "last price")
        if mark <= 0:
            raise ValueError(f"last price of {sym!r}: expected a positive number, got {mark!r}")
        row = t.row(sym, _point_value(point_value, sym), mark)
        row.update(position=t.position, mark_price=mark)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(OPEN_TRIP_COLUMNS))


# -- equity ------------------------------------------------------------------------------


def _last_at(event_ts: np.ndarray, ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The last of ``values`` (ordered by ``event_ts``) at or before each ``ts``; NaN before the first."""
    i = np.searchsorted(event_ts, ts, side="right") - 1
    return np.where(i >= 0, values[np.maximum(i, 0)], np.nan)


def _state_at(event_ts: np.ndarray, ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The running total of ``values`` (ordered by ``event_ts``) after every event at or before each ``ts``."""
    totals = np.concatenate([[0], np.cumsum(values)])
    return totals[np.searchsorted(event_ts, ts, side="right")]


def equity_curve(fills: pd.DataFrame, marks: pd.DataFrame, point_value: PerSymbol,
                 start_ns: int | None = None) -> pd.DataFrame:
    """Net equity in R$ after each event time of ``fills`` and ``marks`` (one row per
    distinct ``ts_event``, the state after every event at that time), from zero.

    ``equity = gross_pnl - fees``, where ``gross_pnl`` is realized plus unrealized P&L: the
    cash flows of every fill plus each open position valued at its symbol's last mark (before
    the symbol's first mark, at its last fill's price). ``contracts_traded`` and
    ``notional_traded`` (contracts x price x point value) are cumulative; ``position_<SYM>``
    is each symbol's signed position. ``start_ns`` adds a row of zeros at the start of the
    run (so the curve, its drawdown and time in market start there); an event before it is
    an error."""
    f, m = _Fills(fills), _Marks(marks)
    times = [f.ts, m.ts]
    if start_ns is not None:
        if isinstance(start_ns, bool) or not isinstance(start_ns, (int, np.integer)):
            raise ValueError(f"start_ns: expected integer nanoseconds, got {start_ns!r}")
        first = min((int(a[0]) for a in times if a.size), default=start_ns)
        if first < start_ns:
            raise ValueError(f"start_ns {start_ns} is after the first event ({first})")
        times.append(np.array([start_ns], dtype=np.int64))
    ts = np.unique(np.concatenate(times))
    gross = np.zeros(ts.size)
    columns: dict[str, np.ndarray] = {"ts_event": ts}
    positions: dict[str, np.ndarray] = {}
    traded = np.zeros(ts.size, dtype=np.int64)
    notional = np.zeros(ts.size)
    fees = _state_at(f.ts, ts, f.fees)
    for sym in sorted(set(f.symbol) | set(m.symbol)):
        fi, mi = f.symbol == sym, m.symbol == sym
        fts, signed = f.ts[fi], f.sign[fi] * f.quantity[fi]
        position = _state_at(fts, ts, signed)
        positions[POSITION_PREFIX + sym] = position
        if not fi.any():
            continue
        pv = _point_value(point_value, sym)
        cash = _state_at(fts, ts, -signed * f.price[fi])
        price = _last_at(fts, ts, f.price[fi])
        if mi.any():
            mark = _last_at(m.ts[mi], ts, m.price[mi])
            price = np.where(np.isnan(mark), price, mark)
        gross += (cash + np.where(position != 0, position * price, 0.0)) * pv
        traded += _state_at(fts, ts, f.quantity[fi])
        notional += _state_at(fts, ts, f.quantity[fi] * f.price[fi] * pv)
    columns.update(gross_pnl=gross, fees=fees, equity=gross - fees, contracts_traded=traded,
                   notional_traded=notional)
    return pd.DataFrame({**columns, **positions}, columns=[*EQUITY_COLUMNS, *positions])


def _equity_arrays(equity: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    _require(equity, EQUITY_COLUMNS, "equity")
    ts = _integers(equity["ts_event"], "equity")
    _reject_first(np.append(False, np.diff(ts) <= 0), equity["ts_event"], "equity",
                  "expected rows in increasing event time")
    return ts, _floats_any(equity["equity"], "equity")


def _running_peak(eq: np.ndarray) -> np.ndarray:
    """The highest equity so far at each row, counting the zero every run starts from."""
    return np.maximum.accumulate(np.concatenate([[0.0], eq]))[1:]


def _floats_any(col: pd.Series, what: str) -> np.ndarray:
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    _reject_first(~np.isfinite(values), col, what, "expected a finite number")
    return values


def underwater(equity: pd.DataFrame) -> pd.Series:
    """The drawdown at each row, in R$ (<= 0): equity minus its running peak, the peak
    starting at the zero every run starts from."""
    ts, eq = _equity_arrays(equity)
    return pd.Series(eq - _running_peak(eq), index=pd.Index(ts, name="ts_event"), name="drawdown")


def daily_pnl(equity: pd.DataFrame) -> pd.Series:
    """Net P&L in R$ per Sao Paulo session day (the local date of the events): each day's
    last equity minus the previous day's (zero before the first). Days without a row (no
    trade and no fill) are not sessions of the run and are absent."""
    ts, eq = _equity_arrays(equity)
    if not ts.size:
        return pd.Series([], index=pd.DatetimeIndex([], name="session_day"), name="pnl", dtype=float)
    day = local_ns(ts) // NS_PER_DAY
    last = np.flatnonzero(np.append(day[1:] != day[:-1], True))
    pnl = np.diff(np.concatenate([[0.0], eq[last]]))
    index = pd.DatetimeIndex(pd.to_datetime(day[last], unit="D"), name="session_day")
    return pd.Series(pnl, index=index, name="pnl")


def buy_and_hold(marks: pd.DataFrame, point_value: PerSymbol, fee_per_contract: PerSymbol) -> float:
    """Net R$ of holding one contract long of each symbol in ``marks`` from its first mark to
    its last, after the fees of buying and selling it."""
    m = _Marks(marks)
    total = 0.0
    for sym in sorted(set(m.symbol)):
        prices = m.price[m.symbol == sym]
        fee = _per_symbol(fee_per_contract, sym, "fee per contract")
        total += (prices[-1] - prices[0]) * _point_value(point_value, sym) - 2 * fee
    return total


# -- statistics --------------------------------------------------------------------------

DEFINITIONS: dict[str, str] = {
    "start_ns": "event time of the equity curve's first row (ns since the epoch, UTC)",
    "end_ns": "event time of its last row",
    "sessions": "Sao Paulo session days with at least one row (a trade or a fill)",
    "capital": "the capital in R$ that daily returns are measured against (daily P&L / capital)",
    "net_pnl": "R$: final equity, realized plus unrealized P&L minus fees; the open position is marked to "
               "the last trade",
    "gross_pnl": "R$: net_pnl before fees",
    "costs": "R$: fees of every fill (exchange, registration, broker)",
    "open_pnl": "R$: net P&L of the trips still open at the end, marked to the last trade (net_pnl minus "
                "the closed trips' net P&L)",
    "trades": "closed round trips (a symbol's position from flat to flat; a flip closes one and opens the next)",
    "wins": "closed trips with net P&L > 0",
    "losses": "closed trips with net P&L < 0 (a trip of exactly 0 is neither)",
    "win_rate": "wins / trades; None without trades",
    "profit_factor": "sum of winning trips' net P&L / -(sum of losing trips' net P&L); None without a "
                     "losing trip (nothing to divide by)",
    "expectancy": "R$: mean net P&L per closed trip; None without trades",
    "average_win": "R$: mean net P&L of winning trips; None without a win",
    "average_loss": "R$ (negative): mean net P&L of losing trips; None without a loss",
    "largest_win": "R$: the largest net P&L of a trip; None without a win",
    "largest_loss": "R$ (negative): the lowest net P&L of a trip; None without a loss",
    "max_consecutive_losses": "the longest run of losing trips in the order they closed (a trip that is not "
                              "a loss ends a run)",
    "max_drawdown": "R$ (positive): the largest fall of equity from its running peak, over event time at "
                    "every row; the peak starts at the run's zero",
    "max_drawdown_duration_ns": "event time from the peak before that fall to the first row back at the peak, "
                                "or to the last row if equity has not recovered; 0 without a drawdown",
    "max_drawdown_recovered": "whether equity came back to the peak before that fall",
    "annual_return": "compound annual return of the daily returns: prod(1 + r)^(252 / sessions) - 1 "
                     "(empyrical annual_return); None with fewer than 2 sessions",
    "max_drawdown_fraction": "largest fall of the compounded daily returns from their peak, as a fraction "
                             "(positive; empyrical max_drawdown); None with fewer than 2 sessions",
    "calmar": "annual_return / max_drawdown_fraction (empyrical calmar_ratio); None with fewer than 2 "
              "sessions or without a drawdown",
    "sharpe_daily": "mean(r) / std(r, ddof=1) x sqrt(252), r = daily P&L / capital for each session, no "
                    "risk-free rate (empyrical sharpe_ratio); None with fewer than 2 sessions or zero std",
    "sortino_daily": "mean(r) / sqrt(mean(min(r, 0)^2)) x sqrt(252), the same r, downside deviation over all "
                     "sessions (empyrical sortino_ratio); None with fewer than 2 sessions or no losing session",
    "sharpe_per_trade": "mean / std(ddof=1) of the closed trips' net P&L, not annualized; None with fewer "
                        "than 2 trades or zero std",
    "sortino_per_trade": "mean(p) / sqrt(mean(min(p, 0)^2)) of the closed trips' net P&L p, not annualized; "
                         "None with fewer than 2 trades or no losing trade",
    "time_in_market": "share of event time with a non-zero position in any symbol, within each session day "
                      "from its first row to its last (nights and gaps between days left out); None when no "
                      "day spans any time",
    "contracts_traded": "contracts bought plus contracts sold",
    "notional_traded": "R$: sum of contracts x price x point value over every fill",
    "turnover": "notional_traded / capital",
    "vs_doing_nothing": "R$: net_pnl minus the 0 of not trading",
    "buy_and_hold": "R$: one contract long of each symbol from its first trade to its last, after the fees "
                    "of buying and selling it; None when not given",
    "vs_buy_and_hold": "R$: net_pnl - buy_and_hold; None when buy_and_hold is None",
}


def _finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is NaN or infinite (undefined: see DEFINITIONS)."""
    v = float(value)
    return v if math.isfinite(v) else None


def _longest_run(flags: np.ndarray) -> int:
    best = run = 0
    for f in flags.tolist():
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def _drawdown(ts: np.ndarray, eq: np.ndarray) -> tuple[float, int, bool]:
    """The largest fall from the running peak (R$), its duration in event time and whether it recovered."""
    if not eq.size:
        return 0.0, 0, True
    peak = _running_peak(eq)
    depth = peak - eq
    k = int(np.argmax(depth))
    if depth[k] <= 0:
        return 0.0, 0, True
    level = peak[k]
    at_peak = np.flatnonzero(eq[:k] >= level)
    start = int(ts[at_peak[-1]]) if at_peak.size else int(ts[0])  # else the run's zero, before the first row
    back = np.flatnonzero(eq[k:] >= level)
    end = int(ts[k + back[0]]) if back.size else int(ts[-1])
    return float(depth[k]), end - start, bool(back.size)


def _time_in_market(equity: pd.DataFrame, ts: np.ndarray) -> float | None:
    cols = [c for c in equity.columns if str(c).startswith(POSITION_PREFIX)]
    if ts.size < 2:
        return None
    held = np.zeros(ts.size, dtype=bool)
    for c in cols:
        held |= _floats_any(equity[c], "equity") != 0
    day = local_ns(ts) // NS_PER_DAY
    same_day = day[1:] == day[:-1]  # the span to the next row counts only within one session day
    span = np.diff(ts)
    covered = int(span[same_day].sum())
    if covered == 0:
        return None
    return float(span[same_day & held[:-1]].sum()) / covered


def statistics(trips: pd.DataFrame, equity: pd.DataFrame, *, capital: float,
               buy_and_hold: float | None = None) -> dict[str, Any]:
    """Every figure of the backtest report, from :func:`round_trips` and :func:`equity_curve`:
    keys and their definitions in :data:`DEFINITIONS`. Values are ints, floats, bools or None
    (undefined, for the reason DEFINITIONS gives), never NaN or infinite, so the dict goes to
    JSON as it is. ``buy_and_hold`` is :func:`buy_and_hold` of the same marks, when known."""
    if isinstance(capital, bool) or not isinstance(capital, (int, float)) or not (math.isfinite(capital)
                                                                                  and capital > 0):
        raise ValueError(f"capital: expected a positive number of R$, got {capital!r}")
    if buy_and_hold is not None and not (isinstance(buy_and_hold, (int, float)) and math.isfinite(buy_and_hold)):
        raise ValueError(f"buy_and_hold: expected a finite number of R$ or None, got {buy_and_hold!r}")
    _require(trips, ("ts_close", "net_pnl"), "trips")
    order = np.argsort(_integers(trips["ts_close"], "trips"), kind="stable")
    pnl = _floats_any(trips["net_pnl"].iloc[order], "trips")
    ts, eq = _equity_arrays(equity)
    final = {c: float(_floats_any(equity[c], "equity")[-1]) if eq.size else 0.0
             for c in ("gross_pnl", "fees", "contracts_traded", "notional_traded")}
    net = float(eq[-1]) if eq.size else 0.0

    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    n = int(pnl.size)
    dd, dd_ns, recovered = _drawdown(ts, eq)

    daily = daily_pnl(equity)
    returns = (daily / capital).to_numpy()
    enough_days = returns.size >= 2
    notional = final["notional_traded"]

    def daily_ratio(value: float) -> float | None:
        return _finite(value) if enough_days else None

    return {
        "start_ns": int(ts[0]) if ts.size else None,
        "end_ns": int(ts[-1]) if ts.size else None,
        "sessions": int(returns.size),
        "capital": float(capital),
        "net_pnl": net,
        "gross_pnl": final["gross_pnl"],
        "costs": final["fees"],
        "open_pnl": net - float(pnl.sum()),
        "trades": n,
        "wins": int(wins.size),
        "losses": int(losses.size),
        "win_rate": wins.size / n if n else None,
        "profit_factor": float(wins.sum()) / -float(losses.sum()) if losses.size else None,
        "expectancy": float(pnl.mean()) if n else None,
        "average_win": float(wins.mean()) if wins.size else None,
        "average_loss": float(losses.mean()) if losses.size else None,
        "largest_win": float(wins.max()) if wins.size else None,
        "largest_loss": float(losses.min()) if losses.size else None,
        "max_consecutive_losses": _longest_run(pnl < 0),
        "max_drawdown": dd,
        "max_drawdown_duration_ns": dd_ns,
        "max_drawdown_recovered": recovered,
        "annual_return": daily_ratio(empyrical.annual_return(returns, annualization=SESSIONS_PER_YEAR)),
        "max_drawdown_fraction": daily_ratio(abs(empyrical.max_drawdown(returns))),
        "calmar": daily_ratio(empyrical.calmar_ratio(returns, annualization=SESSIONS_PER_YEAR)),
        "sharpe_daily": daily_ratio(empyrical.sharpe_ratio(returns, annualization=SESSIONS_PER_YEAR)),
        "sortino_daily": daily_ratio(empyrical.sortino_ratio(returns, annualization=SESSIONS_PER_YEAR)),
        "sharpe_per_trade": _finite(empyrical.sharpe_ratio(pnl, annualization=1)),
        "sortino_per_trade": _finite(empyrical.sortino_ratio(pnl, annualization=1)),
        "time_in_market": _time_in_market(equity, ts),
        "contracts_traded": int(final["contracts_traded"]),
        "notional_traded": notional,
        "turnover": notional / capital,
        "vs_doing_nothing": net,
        "buy_and_hold": float(buy_and_hold) if buy_and_hold is not None else None,
        "vs_buy_and_hold": net - buy_and_hold if buy_and_hold is not None else None,
    }
