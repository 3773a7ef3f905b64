"""A backtest's ``report.html``: one self-contained page a trader opens in a browser, rendered
from the run directory that ``actors/backtest_run.py`` writes (``stats.json`` and the Parquet
tables ``decisions``, ``orders``, ``fills``, ``trades``, ``equity``, ``prices``).

Self-contained means no external URL of any kind: the CSS is inline, the plots are PNGs from
matplotlib's Agg backend embedded as ``data:`` URLs, and the fonts are the browser's own, so
the file can be mailed, archived or opened offline and shows the same thing.

Times are Sao Paulo wall-clock time (the exchange's): the axes read 10:00, not 13:00 UTC, and
leave out the nights between session days (:class:`SessionClock`). Long tables (a day can
have millions of equity rows) are reduced for drawing by :func:`downsample`, which keeps each
time bucket's first, last, lowest and highest row, so no spike and no drawdown disappears from
a plot; the figures themselves come from ``stats.json``, computed on every row.

Every table may have zero rows (a run without a fill): the page then says so where the plot
would be. A missing file, a missing column or a malformed ``stats.json`` raises ``ValueError``
naming the file and the column or key (the CLI prints it as one line and exits 2).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipelines.backtest.stats import (EQUITY_COLUMNS, MARK_COLUMNS, POSITION_PREFIX, TRIP_COLUMNS, daily_pnl,
                                      underwater)
from pipelines.model.clock import NS_PER_DAY, NS_PER_HOUR, NS_PER_MIN, NS_PER_MS, NS_PER_S, SAO_PAULO, from_ns, local_ns
from pipelines.model.orders import BUY, SELL

REPORT_NAME = "report.html"
STATS_NAME = "stats.json"
WEIGHT_PREFIX = "weight_"  # decisions has one column per voter: weight_<voter>

# What the report reads of each table (extra columns are ignored).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "decisions": ("decision_id", "symbol", "ts_event", "action", "size", "score", "confidence", "price", "reason"),
    "orders": ("client_order_id", "symbol", "ts_event", "side", "quantity", "order_type"),
    "fills": ("symbol", "ts_event", "side", "quantity", "price", "fees"),
    "trades": TRIP_COLUMNS,
    "equity": EQUITY_COLUMNS,
    "prices": MARK_COLUMNS,
}
TEXT_COLUMNS = frozenset({"decision_id", "symbol", "action", "reason", "client_order_id", "side", "order_type"})
TIME_COLUMNS = frozenset({"ts_event", "ts_open", "ts_close", "duration_ns"})
RUN_KEYS = ("run_id", "input", "symbols", "events", "rejected", "interrupted", "code_version")
AGENT_KEYS = ("signals", "outcomes", "hit_rate", "mean_reward", "weight_first", "weight_last")
DECISION_KEYS = ("count", BUY, SELL, "HOLD")

PLOTS = ("equity", "underwater", "daily_pnl", "trade_pnl", "prices", "position", "weights")
BUCKETS = 1500  # time buckets per drawn line: up to 4 points each, finer than the plot's pixels
TABLE_ROWS = 10  # trades shown at each end of the trades table
LAST_DECISIONS = 15

# The headline figures, by section: (key in statistics, label, format).
HEADLINE: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("P&L", (
        ("net_pnl", "Net P&L", "pnl"),
        ("gross_pnl", "Gross P&L", "pnl"),
        ("costs", "Costs", "money"),
        ("open_pnl", "Open at the end", "pnl"),
        ("vs_doing_nothing", "vs doing nothing", "pnl"),
        ("buy_and_hold", "Buy and hold", "pnl"),
        ("vs_buy_and_hold", "vs buy and hold", "pnl"),
    )),
    ("Trades", (
        ("trades", "Trades", "count"),
        ("win_rate", "Win rate", "percent"),
        ("profit_factor", "Profit factor", "ratio"),
        ("expectancy", "Expectancy per trade", "pnl"),
        ("average_win", "Average win", "pnl"),
        ("average_loss", "Average loss", "pnl"),
        ("largest_win", "Largest win", "pnl"),
        ("largest_loss", "Largest loss", "pnl"),
        ("max_consecutive_losses", "Max consecutive losses", "count"),
    )),
    ("Risk and return", (
        ("max_drawdown", "Max drawdown", "money"),
        ("max_drawdown_duration_ns", "Max drawdown duration", "duration"),
        ("sharpe_daily", "Sharpe (daily, annualized)", "ratio"),
        ("sortino_daily", "Sortino (daily, annualized)", "ratio"),
        ("sharpe_per_trade", "Sharpe per trade", "ratio"),
        ("sortino_per_trade", "Sortino per trade", "ratio"),
        ("calmar", "Calmar", "ratio"),
        ("annual_return", "Annual return", "percent"),
        ("max_drawdown_fraction", "Max drawdown (fraction)", "percent"),
    )),
    ("Activity", (
        ("time_in_market", "Time in market", "percent"),
        ("turnover", "Turnover", "multiple"),
        ("contracts_traded", "Contracts traded", "count"),
        ("notional_traded", "Notional traded", "money"),
        ("sessions", "Sessions", "count"),
        ("capital", "Capital", "money"),
    )),
)
FIGURE_KEYS = tuple(key for _, figures in HEADLINE for key, _, _ in figures)
# Labels of the statistics that are not cards (shown in the definitions).
OTHER_LABELS = {"start_ns": "Start", "end_ns": "End", "wins": "Wins", "losses": "Losses",
                "max_drawdown_recovered": "Drawdown recovered"}
CURRENCY_SYMBOLS = {"BRL": "R$", "USD": "US$"}

UP, DOWN, LINE, MUTED = "#1a7f37", "#cf222e", "#0969da", "#8c959f"


# -- reading the run directory --------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A run directory, read and checked: ``stats`` is stats.json, ``tables`` one DataFrame per
    table of :data:`TABLE_COLUMNS`."""

    stats: dict[str, Any]
    tables: dict[str, pd.DataFrame]


def _key(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, Mapping):
        raise ValueError(f"{STATS_NAME}: {where}: expected an object, got {type(d).__name__}")
    if key not in d:
        raise ValueError(f"{STATS_NAME}: missing key {where}.{key}" if where else f"{STATS_NAME}: missing key {key}")
    return d[key]


def _number_or_none(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{STATS_NAME}: {where}: expected a number or null, got {value!r}")
    return float(value)


def _number(value: Any, where: str) -> float:
    if value is None:
        raise ValueError(f"{STATS_NAME}: {where}: expected a number, got null")
    return _number_or_none(value, where)


def _read_stats(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None
    run = _key(stats, "run", "")
    for k in RUN_KEYS:
        _key(run, k, "run")
    if not isinstance(run["symbols"], list):
        raise ValueError(f"{STATS_NAME}: run.symbols: expected a list, got {run['symbols']!r}")
    if not isinstance(run["rejected"], Mapping):
        raise ValueError(f"{STATS_NAME}: run.rejected: expected an object, got {run['rejected']!r}")
    statistics = _key(stats, "statistics", "")
    for k in (*FIGURE_KEYS, "start_ns", "end_ns", "max_drawdown_recovered"):
        value = _key(statistics, k, "statistics")
        if k != "max_drawdown_recovered":
            _number_or_none(value, f"statistics.{k}")
    definitions = _key(stats, "definitions", "")
    if not isinstance(definitions, Mapping):
        raise ValueError(f"{STATS_NAME}: definitions: expected an object")
    agents = _key(stats, "agents", "")
    if not isinstance(agents, Mapping):
        raise ValueError(f"{STATS_NAME}: agents: expected an object")
    for name, a in agents.items():
        for k in AGENT_KEYS:
            _number_or_none(_key(a, k, f"agents.{name}"), f"agents.{name}.{k}")
    decisions = _key(stats, "decisions", "")
    for k in DECISION_KEYS:
        _number(_key(decisions, k, "decisions"), f"decisions.{k}")
    _number(run["events"], "run.events")
    return stats


def _read_table(run_dir: Path, name: str) -> pd.DataFrame:
    path = run_dir / f"{name}.parquet"
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged or foreign file
        raise ValueError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    missing = [c for c in TABLE_COLUMNS[name] if c not in df.columns]
    if missing:
        raise ValueError(f"{path.name}: missing column {', '.join(missing)}")
    if not len(df):
        return df
    numeric = [c for c in TABLE_COLUMNS[name] if c not in TEXT_COLUMNS]
    numeric += [c for c in df.columns if str(c).startswith((WEIGHT_PREFIX, POSITION_PREFIX))]
    for col in numeric:
        dtype = df[col].dtype
        if col in TIME_COLUMNS and not pd.api.types.is_integer_dtype(dtype):
            raise ValueError(f"{path.name}: column {col}: expected integer nanoseconds, got {dtype}")
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raise ValueError(f"{path.name}: column {col}: expected numbers, got {dtype}")
    return df


def load_run(run_dir: str | Path) -> Run:
    """Read and check ``run_dir``'s stats.json and tables; ``ValueError`` names the file and
    the missing column or key."""
    d = Path(run_dir)
    if not d.is_dir():
        raise ValueError(f"{d}: no such run directory")
    stats = _read_stats(d / STATS_NAME)
    return Run(stats, {name: _read_table(d, name) for name in TABLE_COLUMNS})


# -- formatting ------------------------------------------------------------------------------


def format_duration(ns: int | float) -> str:
    """A span of event time for a person: ``850 ms``, ``8.8 s``, ``6 min 29 s``, ``2 h 05 min``,
    ``3 d 04 h 10 min`` (truncated to the last unit shown)."""
    ns = int(ns)
    if ns < NS_PER_S:
        return f"{ns // NS_PER_MS} ms"
    if ns < NS_PER_MIN:
        return f"{math.floor(ns / NS_PER_S * 10) / 10:.1f} s"
    if ns < NS_PER_HOUR:
        return f"{ns // NS_PER_MIN} min {ns % NS_PER_MIN // NS_PER_S:02d} s"
    if ns < NS_PER_DAY:
        return f"{ns // NS_PER_HOUR} h {ns % NS_PER_HOUR // NS_PER_MIN:02d} min"
    return f"{ns // NS_PER_DAY} d {ns % NS_PER_DAY // NS_PER_HOUR:02d} h {ns % NS_PER_HOUR // NS_PER_MIN:02d} min"


def currency_symbol(run: Mapping[str, Any]) -> str:
    """How money is written: R$ for B3 (the default), US$ for the ES tape; the currencies
    joined when a run mixes them (its sums are then in mixed units, and the label says so)."""
    codes = sorted({str(c) for c in (run.get("currency") or {}).values()})
    if not codes:
        return "R$"
    return "/".join(CURRENCY_SYMBOLS.get(c, c) for c in codes)


def format_value(value: float | int, kind: str, money: str = "R$") -> str:
    """One figure as the report shows it. ``pnl`` is signed money, ``money`` unsigned."""
    if kind in ("pnl", "money"):
        value = round(value, 2) + 0.0  # a float residue of a flat position shows as 0.00, not -0.00
    if kind == "pnl":
        return f"{money} {value:+,.2f}"
    if kind == "money":
        return f"{money} {value:,.2f}"
    if kind == "count":
        return f"{int(value):,}"
    if kind == "percent":
        return f"{value * 100:.1f}%"
    if kind == "ratio":
        return f"{value:.2f}"
    if kind == "multiple":
        return f"{value:.2f}x"
    if kind == "duration":
        return format_duration(value)
    raise ValueError(f"unknown figure format {kind!r}")


def undefined_reason(definition: str) -> str:
    """Why a figure is n/a, from its definition's "None ..." clause ("None with fewer than 2
    sessions" gives "with fewer than 2 sessions")."""
    m = re.search(r"\bNone ([^;()]+)", definition)
    return m.group(1).strip().rstrip(".") if m else "undefined for this run"


def _ts_text(ns: int, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return from_ns(int(ns), SAO_PAULO).strftime(fmt)


def period_text(start_ns: int | None, end_ns: int | None) -> str:
    """The run's span in Sao Paulo time, the end's date left out when it is the start's."""
    if start_ns is None or end_ns is None:
        return "no events"
    start, end = from_ns(int(start_ns), SAO_PAULO), from_ns(int(end_ns), SAO_PAULO)
    end_text = end.strftime("%H:%M:%S" if end.date() == start.date() else "%Y-%m-%d %H:%M:%S")
    offset = f"{start:%z}"
    return (f"{start:%Y-%m-%d %H:%M:%S} to {end_text} Sao Paulo (UTC{offset[:3]}:{offset[3:]}), "
            f"{format_duration(end_ns - start_ns)}")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _sign_class(value: float | None) -> str:
    if value is None or round(value, 2) == 0:  # as shown: a residue of -1e-12 is no loss
        return ""
    return "pos" if value > 0 else "neg"


# -- downsampling ----------------------------------------------------------------------------


def downsample(ts: np.ndarray, values: np.ndarray, buckets: int = BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``4 x buckets`` rows of a time series (``ts`` increasing) to draw: ``ts`` is cut
    into ``buckets`` equal spans of time and each span keeps its first, last, lowest and highest
    row, in time order, so the drawn line reaches every extreme the full series reaches."""
    ts, values = np.asarray(ts), np.asarray(values)
    if ts.size <= 4 * buckets:
        return ts, values
    span = int(ts[-1]) - int(ts[0]) + 1
    bucket = ((ts - ts[0]).astype(np.float64) * (buckets / span)).astype(np.int64)
    starts = np.flatnonzero(np.diff(bucket, prepend=-1))
    ends = np.append(starts[1:], ts.size) - 1
    counts = ends - starts + 1
    keep = [starts, ends]
    for extreme in (np.minimum, np.maximum):
        best = np.repeat(extreme.reduceat(values, starts), counts)
        hit = np.flatnonzero(values == best)  # the first row of each bucket at its extreme
        _, first = np.unique(bucket[hit], return_index=True)
        keep.append(hit[first])
    rows = np.unique(np.concatenate(keep))
    return ts[rows], values[rows]


class SessionClock:
    """The time axis of the plots: seconds of Sao Paulo session time, the hours between two
    session days (nights, weekends) cut out, so a week of trading is not five slivers between
    four flat nights. Each day spans its first to its last event; a thin gap, drawn as a dashed
    line, separates two days. Ticks are wall-clock times, aligned on the clock (10:00, 10:30)."""

    STEPS_S = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
    MAX_TICKS = 10

    def __init__(self, *times: np.ndarray):
        extents: dict[int, list[int]] = {}
        for ts in times:
            ts = np.asarray(ts, dtype=np.int64)
            if not ts.size:
                continue
            local = local_ns(ts)
            day = local // NS_PER_DAY
            for d in np.unique(day).tolist():
                mine = local[day == d]
                lo, hi = int(mine.min()), int(mine.max())
                e = extents.setdefault(d, [lo, hi])
                e[0], e[1] = min(e[0], lo), max(e[1], hi)
        if not extents:
            raise ValueError("a session clock needs at least one event time")
        self.days = np.array(sorted(extents), dtype=np.int64)
        self.first = np.array([extents[d][0] for d in self.days.tolist()], dtype=np.int64)
        self.last = np.array([extents[d][1] for d in self.days.tolist()], dtype=np.int64)
        lengths = self.last - self.first
        self.gap = max(int(lengths.sum() // 40), NS_PER_S)  # 2.5% of the trading time per night
        self.start = np.concatenate([[0], np.cumsum(lengths + self.gap)[:-1]]).astype(np.int64)

    def x(self, ts: np.ndarray) -> np.ndarray:
        """Positions on the axis (seconds) of UTC event times."""
        local = local_ns(np.asarray(ts, dtype=np.int64))
        k = np.clip(np.searchsorted(self.days, local // NS_PER_DAY), 0, self.days.size - 1)
        return (local - self.first[k] + self.start[k]) / NS_PER_S

    def apply(self, ax: Any) -> None:
        """Ticks, labels and the day separators on ``ax``."""
        span_s = (int(self.start[-1]) + int(self.last[-1] - self.first[-1])) / NS_PER_S
        step_s = next((s for s in self.STEPS_S if span_s / s <= self.MAX_TICKS), 86400)
        step = step_s * NS_PER_S
        ticks, labels = [], []
        for k, (day, first, last) in enumerate(zip(self.days.tolist(), self.first.tolist(), self.last.tolist())):
            local = list(range(-(-first // step) * step, last + 1, step)) or [first]
            for n, lt in enumerate(local):
                x = (lt - first + int(self.start[k])) / NS_PER_S
                if n == 0 and ticks and x - ticks[-1] < 0.6 * step_s:  # the day's first tick wins: it has the date
                    ticks.pop()
                    labels.pop()
                ticks.append(x)
                clock = f"{lt % NS_PER_DAY // NS_PER_HOUR:02d}:{lt % NS_PER_HOUR // NS_PER_MIN:02d}"
                if step_s < 60:
                    clock += f":{lt % NS_PER_MIN // NS_PER_S:02d}"
                labels.append(clock + (f"\n{date(1970, 1, 1) + timedelta(days=day):%a %Y-%m-%d}" if n == 0 else ""))
            if k:
                ax.axvline((int(self.start[k]) - self.gap / 2) / NS_PER_S, color=MUTED, linewidth=0.8,
                           linestyle="--")
        ax.set_xticks(ticks, labels)
        nights = " (nights left out)" if self.days.size > 1 else ""
        ax.set_xlabel(f"Sao Paulo time{nights}")


# -- plots -----------------------------------------------------------------------------------


def _figure(height: float = 3.0, rows: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(11.0, height * rows if rows > 1 else height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0].tolist()
    for ax in axes:
        ax.grid(True, color="#d0d7de", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def _legend(ax: Any) -> None:
    """The legend in one row above the plot's right corner, where it hides no data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8, ncols=6,
                  borderaxespad=0.2)


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: same run, same bytes
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plot_equity(equity: pd.DataFrame, money: str, clock: SessionClock) -> Figure:
    fig, (ax,) = _figure()
    t, eq = downsample(equity["ts_event"].to_numpy(np.int64), equity["equity"].to_numpy(float))
    x = clock.x(t)
    ax.plot(x, eq, color=LINE, linewidth=1.2, drawstyle="steps-post")
    ax.axhline(0, color=MUTED, linewidth=0.8)
    ax.fill_between(x, eq, 0, where=eq >= 0, step="post", color=UP, alpha=0.12, linewidth=0)
    ax.fill_between(x, eq, 0, where=eq < 0, step="post", color=DOWN, alpha=0.12, linewidth=0)
    ax.set_title(f"Equity, net of costs ({money})", loc="left")
    ax.set_ylabel(money)
    clock.apply(ax)
    return fig


def _plot_underwater(equity: pd.DataFrame, money: str, clock: SessionClock) -> Figure:
    fig, (ax,) = _figure(2.4)
    dd = underwater(equity)
    t, depth = downsample(dd.index.to_numpy(np.int64), dd.to_numpy(float))
    x = clock.x(t)
    ax.fill_between(x, depth, 0, step="post", color=DOWN, alpha=0.35, linewidth=0)
    ax.plot(x, depth, color=DOWN, linewidth=0.9, drawstyle="steps-post")
    ax.set_title(f"Underwater: equity below its running peak ({money})", loc="left")
    ax.set_ylabel(money)
    if not (depth < 0).any():
        ax.set_ylim(-1, 1)
    clock.apply(ax)
    return fig


def _plot_daily(daily: pd.Series, money: str) -> Figure:
    fig, (ax,) = _figure(2.6)
    pnl = daily.to_numpy(float)
    pos = np.arange(pnl.size)
    bars = ax.bar(pos, pnl, color=[UP if v >= 0 else DOWN for v in pnl], width=0.7)
    ax.axhline(0, color=MUTED, linewidth=0.8)
    labels = [d.strftime("%a %Y-%m-%d") for d in daily.index]
    step = max(1, pnl.size // 12)  # at most a dozen date labels
    many = pnl.size > 6
    ax.set_xticks(pos[::step], labels[::step], rotation=30 if many else 0, ha="right" if many else "center")
    if pnl.size <= 20:
        ax.bar_label(bars, labels=[f"{v:+,.2f}" for v in pnl], fontsize=8, padding=2)
    ax.margins(y=0.2)
    ax.set_title(f"Net P&L per Sao Paulo session day ({money})", loc="left")
    ax.set_ylabel(money)
    return fig


def _plot_trades(trades: pd.DataFrame, money: str) -> Figure:
    fig, (ax,) = _figure(2.6)
    pnl = trades["net_pnl"].to_numpy(float)
    lo, hi = min(float(pnl.min()), 0.0), max(float(pnl.max()), 0.0)
    width = max(hi - lo, 1.0) / int(np.clip(np.sqrt(pnl.size) * 2, 5, 60))
    # Bin edges on multiples of the width, so zero is an edge and no bar mixes wins and losses.
    bins = np.arange(math.floor(lo / width), math.floor(hi / width) + 2) * width
    ax.hist(pnl[pnl < 0], bins=bins, color=DOWN, alpha=0.8, label=f"losses ({(pnl < 0).sum()})")
    ax.hist(pnl[pnl >= 0], bins=bins, color=UP, alpha=0.8, label=f"wins and flat ({(pnl >= 0).sum()})")
    ax.axvline(0, color=MUTED, linewidth=0.8)
    ax.axvline(float(pnl.mean()), color=LINE, linewidth=1.2, linestyle="--", label=f"mean {pnl.mean():+,.2f}")
    _legend(ax)
    ax.set_title(f"Net P&L per round trip ({len(pnl)} trades, {money})", loc="left")
    ax.set_xlabel(f"net P&L ({money})")
    ax.set_ylabel("trades")
    return fig


def _fill_roles(fills: pd.DataFrame) -> np.ndarray:
    """True for a fill that opens or adds to a position (an entry), False for one that reduces
    it (an exit); a flip counts as an entry, since it leaves a new position open."""
    f = fills.reset_index(drop=True).sort_values("ts_event", kind="stable")
    signed = np.where(f["side"].to_numpy(object) == BUY, 1, -1) * f["quantity"].to_numpy(np.int64)
    entry = np.zeros(len(f), dtype=bool)
    for sym in pd.unique(f["symbol"]):
        mine = (f["symbol"] == sym).to_numpy()
        after = np.cumsum(signed[mine])
        before = after - signed[mine]
        entry[mine] = (np.abs(after) > np.abs(before)) | (after * before < 0)
    out = np.zeros(len(f), dtype=bool)
    out[f.index.to_numpy()] = entry
    return out


def _plot_prices(prices: pd.DataFrame, fills: pd.DataFrame, symbols: Sequence[str], clock: SessionClock) -> Figure:
    fig, axes = _figure(2.8, rows=len(symbols))
    entry = _fill_roles(fills)
    fill_ts, fill_px = fills["ts_event"].to_numpy(np.int64), fills["price"].to_numpy(float)
    side = fills["side"].to_numpy(object)
    size = 42 if len(fills) <= 200 else 14  # a busy day's markers would hide the price line
    for ax, sym in zip(axes, symbols):
        p = prices[prices["symbol"] == sym]
        if len(p):
            t, v = downsample(p["ts_event"].to_numpy(np.int64), p["price"].to_numpy(float))
            ax.plot(clock.x(t), v, color=MUTED, linewidth=0.9, label="last trade", drawstyle="steps-post")
        mine = (fills["symbol"] == sym).to_numpy(bool)
        for name, marker, color in ((BUY, "^", UP), (SELL, "v", DOWN)):
            for opens, face, what in ((True, color, "entry"), (False, "white", "exit")):
                sel = mine & (side == name) & (entry == opens)
                if sel.any():
                    ax.scatter(clock.x(fill_ts[sel]), fill_px[sel], marker=marker, s=size, facecolors=face,
                               edgecolors=color, linewidths=1.2, zorder=3, label=f"{name.lower()} {what}")
        ax.set_title(f"{sym}: price with fills" + ("" if mine.any() else " (no fills)"), loc="left")
        ax.set_ylabel("price")
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        _legend(ax)
    clock.apply(axes[-1])
    return fig


def _plot_position(equity: pd.DataFrame, columns: Sequence[str], clock: SessionClock) -> Figure:
    fig, (ax,) = _figure(2.4)
    ts = equity["ts_event"].to_numpy(np.int64)
    for col in columns:
        t, v = downsample(ts, equity[col].to_numpy(float))
        ax.plot(clock.x(t), v, drawstyle="steps-post", linewidth=1.1, label=col[len(POSITION_PREFIX):])
    ax.axhline(0, color=MUTED, linewidth=0.8)
    ax.set_title("Position (contracts, + long / - short)", loc="left")
    ax.set_ylabel("contracts")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(ax)
    clock.apply(ax)
    return fig


def _plot_weights(decisions: pd.DataFrame, columns: Sequence[str], clock: SessionClock) -> Figure:
    fig, (ax,) = _figure(2.8)
    d = decisions.sort_values("ts_event", kind="stable")
    symbols = list(pd.unique(d["symbol"]))
    for sym in symbols:
        mine = d[d["symbol"] == sym]
        for col in columns:
            w = mine[col].to_numpy(float)
            ok = np.isfinite(w)
            if not ok.any():
                continue
            t, v = downsample(mine["ts_event"].to_numpy(np.int64)[ok], w[ok])
            label = col[len(WEIGHT_PREFIX):] + (f"@{sym}" if len(symbols) > 1 else "")
            ax.plot(clock.x(t), v, drawstyle="steps-post", linewidth=1.2, label=label)
    ax.set_title("Voter weights at each decision", loc="left")
    ax.set_ylabel("weight")
    _legend(ax)
    ax.margins(y=0.15)
    clock.apply(ax)
    return fig


def _plot_html(name: str, caption: str, fig: Figure | None, empty: str) -> str:
    if fig is None:
        return (f'<figure class="plot" id="plot-{name}" data-plot="{name}" data-empty="true">'
                f'<figcaption>{_e(caption)}</figcaption><p class="empty">{_e(empty)}</p></figure>')
    data = _png(fig)
    return (f'<figure class="plot" id="plot-{name}" data-plot="{name}"><figcaption>{_e(caption)}</figcaption>'
            f'<img alt="{_e(caption)}" src="data:image/png;base64,{data}"></figure>')


def _plots(run: Run, money: str) -> list[str]:
    t = run.tables
    equity, trades, fills, prices, decisions = t["equity"], t["trades"], t["fills"], t["prices"], t["decisions"]
    symbols = [str(s) for s in run.stats["run"]["symbols"]] or sorted(set(prices["symbol"]) | set(fills["symbol"]))
    symbols = [s for s in symbols if (prices["symbol"] == s).any() or (fills["symbol"] == s).any()]
    positions = [c for c in equity.columns
                 if str(c).startswith(POSITION_PREFIX) and (pd.to_numeric(equity[c], errors="coerce") != 0).any()]
    weights = [c for c in decisions.columns if str(c).startswith(WEIGHT_PREFIX)]
    daily = daily_pnl(equity) if len(equity) else None
    times = [df["ts_event"].to_numpy(np.int64) for df in (equity, prices, fills, decisions)]
    clock = SessionClock(*times) if any(ts.size for ts in times) else None
    with rc_context({"text.parse_math": False, "font.size": 9, "axes.titlesize": 10}):  # "R$ ... R$" is not TeX
        specs = {  # name: (caption, figure or None when there is nothing to draw, what the page says then)
            "equity": ("Equity curve", _plot_equity(equity, money, clock) if len(equity) else None,
                       "No equity rows: the run saw no trade and no fill."),
            "underwater": ("Underwater (drawdown) curve",
                           _plot_underwater(equity, money, clock) if len(equity) else None,
                           "No equity rows: nothing to draw down from."),
            "daily_pnl": ("Daily P&L", _plot_daily(daily, money) if daily is not None and len(daily) else None,
                          "No session day with a trade or a fill."),
            "trade_pnl": ("Trade P&L distribution", _plot_trades(trades, money) if len(trades) else None,
                          "No closed round trips: no trade P&L to show."),
            "prices": ("Price with entries and exits", _plot_prices(prices, fills, symbols, clock) if symbols else None,
                       "No market prices and no fills."),
            "position": ("Position over time", _plot_position(equity, positions, clock) if positions else None,
                         "No position was ever held."),
            "weights": ("Voter weights over time",
                        _plot_weights(decisions, weights, clock) if len(decisions) and weights else None,
                        "No decisions: no voter weights to show."),
        }
        return [_plot_html(name, *specs[name]) for name in PLOTS]


# -- sections --------------------------------------------------------------------------------


def _input_html(value: Any) -> str:
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            if isinstance(v, Mapping):
                items.append(f"<details><summary>{_e(k)}</summary>{_input_html(v)}</details>")
            else:
                items.append(f"<span class='kv'><b>{_e(k)}</b> {_e(v)}</span>")
        return " ".join(items)
    return _e(value)


def _header(stats: Mapping[str, Any]) -> str:
    run, s = stats["run"], stats["statistics"]
    rejected = run["rejected"]
    rejected_text = ", ".join(f"{k} {v:,}" for k, v in sorted(rejected.items())) if rejected else "none"
    rows = [
        ("Input", _input_html(run["input"])),
        ("Symbols", _e(", ".join(str(x) for x in run["symbols"]) or "none")),
        ("Period", _e(period_text(s["start_ns"], s["end_ns"]))),
        ("Events", _e(f"{int(run['events']):,}")),
        ("Rejected", _e(rejected_text)),
        ("Decisions", _e(f"{int(stats['decisions']['count']):,} ("
                         + ", ".join(f"{k} {int(stats['decisions'][k]):,}" for k in DECISION_KEYS[1:]) + ")")),
        ("Config", _e(run.get("config") or "default")),
        ("Interrupted", "yes" if run["interrupted"] else "no"),
        ("Code version", _e(run["code_version"])),
    ]
    ex = run.get("execution") or {}
    if ex.get("trading_state"):
        reason = f": {ex['risk_reason']}" if ex.get("risk_reason") else ""
        rows.append(("Risk state at the end", _e(f"{ex['trading_state']}{reason}")))
    if run.get("created"):
        rows.append(("Created", _e(run["created"])))
    if run.get("elapsed_s") is not None:
        rows.append(("Run time", _e(f"{float(run['elapsed_s']):,.1f} s")))
    body = "".join(f'<tr><th>{k}</th><td data-run="{_e(k.lower())}">{v}</td></tr>' for k, v in rows)
    banner = ""
    if run["interrupted"]:
        banner = ('<div class="banner" id="interrupted" role="alert"><b>Interrupted: partial result.</b> The run was '
                  'stopped before the end of its input; every figure covers only the events processed.</div>')
    return (f'<header><h1>Backtest <span id="run-id">{_e(run["run_id"])}</span></h1>{banner}'
            f'<table class="meta" id="run">{body}</table></header>')


def _figures(stats: Mapping[str, Any], money: str) -> str:
    s, defs = stats["statistics"], stats["definitions"]
    sections = []
    for title, figures in HEADLINE:
        cards = []
        for key, label, kind in figures:
            value = s[key]
            definition = str(defs.get(key, ""))
            note = ""
            if value is None:
                text, cls = "n/a", "na"
                note = f'<div class="note">n/a: {_e(undefined_reason(definition))}</div>'
            else:
                text = format_value(value, kind, money)
                cls = _sign_class(value) if kind == "pnl" else ""
                if key == "max_drawdown_duration_ns" and value:
                    note = f'<div class="note">{"recovered" if s["max_drawdown_recovered"] else "not recovered"}</div>'
                if key == "trades":
                    note = f'<div class="note">{int(s.get("wins", 0)):,} won, {int(s.get("losses", 0)):,} lost</div>'
            cards.append(f'<div class="card" data-figure="{_e(key)}" title="{_e(definition)}">'
                         f'<div class="label">{_e(label)}</div><div class="value {cls}">{_e(text)}</div>{note}</div>')
        sections.append(f'<h3>{_e(title)}</h3><div class="cards">{"".join(cards)}</div>')
    return f'<section id="figures"><h2>Headline figures</h2>{"".join(sections)}</section>'


def _agents(stats: Mapping[str, Any]) -> str:
    agents = stats["agents"]
    if not agents:
        return '<section id="agents"><h2>Agents</h2><p class="empty">No voters in this run.</p></section>'

    def num(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(int(v) if fmt == ",d" else v, fmt)

    def hits(a: dict) -> str:  # runs written before hits and misses were kept have neither
        return "n/a" if a.get("hits") is None else f'{a["hits"]:,d} / {a["misses"]:,d}'

    rows = []
    for name, a in agents.items():
        first, last = a["weight_first"], a["weight_last"]
        arrow = ""
        if first is not None and last is not None and last != first:
            arrow = " &#8599;" if last > first else " &#8600;"
        rows.append(f'<tr data-agent="{_e(name)}"><td>{_e(name)}</td><td>{num(a["signals"], ",d")}</td>'
                    f'<td>{num(a["outcomes"], ",d")}</td><td>{hits(a)}</td><td>{num(a["hit_rate"], ".1%")}</td>'
                    f'<td>{num(a["mean_reward"], "+.4f")}</td>'
                    f'<td>{num(first, ".3f")} &#8594; {num(last, ".3f")}{arrow}</td></tr>')
    head = ("<tr><th>voter</th><th>signals</th><th>outcomes</th><th>hits / misses</th><th>hit rate</th>"
            "<th>mean reward</th>"
            "<th>weight first &#8594; last</th></tr>")
    return (f'<section id="agents"><h2>Agents</h2><table class="grid">{head}{"".join(rows)}</table>'
            '<p class="hint">Outcomes are the signals the feedback system judged at their horizon; a hit or a miss is '
            'an outcome with a direction and a price change (an abstention or an unchanged price is neither), and the '
            'hit rate is hits / (hits + misses). The mean reward is over every outcome. Weights are the '
            'coordinator\'s at the first and the last decision.</p></section>')


def _trades_table(trades: pd.DataFrame, money: str) -> str:
    if not len(trades):
        return '<section id="trades"><h2>Trades</h2><p class="empty">No closed round trips.</p></section>'
    t = trades.sort_values("ts_close", kind="stable").reset_index(drop=True)
    n = len(t)
    shown = list(range(n)) if n <= 2 * TABLE_ROWS else [*range(TABLE_ROWS), -1, *range(n - TABLE_ROWS, n)]
    rows = []
    for i in shown:
        if i < 0:
            rows.append(f'<tr class="gap"><td colspan="9">&#8230; {n - 2 * TABLE_ROWS:,} more trades &#8230;</td></tr>')
            continue
        r = t.iloc[i]
        net = float(r["net_pnl"])
        rows.append(f'<tr><td>{i + 1}</td><td>{_e(r["symbol"])}</td><td>{"long" if r["side"] == BUY else "short"}</td>'
                    f'<td class="time">{_e(_ts_text(r["ts_open"]))}</td>'
                    f'<td>{_e(format_duration(r["duration_ns"]))}</td><td>{int(r["quantity"])}</td>'
                    f'<td>{float(r["entry_vwap"]):,.2f} &#8594; {float(r["exit_vwap"]):,.2f}</td>'
                    f'<td>{float(r["fees"]):,.2f}</td><td class="{_sign_class(net)}">{net:+,.2f}</td></tr>')
    head = (f"<tr><th>#</th><th>symbol</th><th>side</th><th>opened (Sao Paulo)</th><th>held</th><th>contracts</th>"
            f"<th>entry &#8594; exit</th><th>fees ({_e(money)})</th><th>net P&amp;L ({_e(money)})</th></tr>")
    return f'<section id="trades"><h2>Trades ({n:,})</h2><table class="grid">{head}{"".join(rows)}</table></section>'


def _decisions_table(decisions: pd.DataFrame, orders: pd.DataFrame) -> str:
    """The last decisions that traded (BUY or SELL): HOLDs are most rows and say least."""
    order_note = f"{len(orders):,} orders"
    if len(orders) and "status" in orders.columns:
        counts = orders["status"].astype(str).value_counts()
        order_note += " (" + ", ".join(f"{k.lower()} {v:,}" for k, v in counts.items()) + ")"
    acting = decisions[decisions["action"].isin((BUY, SELL))]
    if not len(acting):
        what = "No decisions." if not len(decisions) else f"No BUY or SELL among {len(decisions):,} decisions."
        return (f'<section id="decisions"><h2>Last decisions</h2><p class="empty">{_e(what)}</p>'
                f'<p class="hint">{_e(order_note)}</p></section>')
    d = acting.sort_values("ts_event", kind="stable").tail(LAST_DECISIONS)
    rows = "".join(
        f'<tr><td class="time">{_e(_ts_text(r.ts_event))}</td><td>{_e(r.symbol)}</td><td>{_e(r.action)}</td>'
        f'<td>{int(r.size)}</td><td>{float(r.score):+.3f}</td><td>{float(r.confidence):.2f}</td>'
        f'<td>{float(r.price):,.2f}</td><td class="reason">{_e(r.reason)}</td></tr>' for r in d.itertuples(index=False))
    head = ("<tr><th>time (Sao Paulo)</th><th>symbol</th><th>action</th><th>size</th><th>score</th><th>confidence</th>"
            '<th>price</th><th class="reason">why</th></tr>')
    return (f'<section id="decisions"><h2>Last {len(d)} of {len(acting):,} BUY and SELL decisions</h2>'
            f'<table class="grid">{head}{rows}</table><p class="hint">{len(decisions):,} decisions in all; '
            f'{_e(order_note)}.</p></section>')


def _definitions(stats: Mapping[str, Any]) -> str:
    labels = {**OTHER_LABELS, **{key: label for _, figures in HEADLINE for key, label, _ in figures}}
    items = "".join(f'<dt id="def-{_e(k)}">{_e(labels.get(k, k))} <code>{_e(k)}</code></dt><dd>{_e(v)}</dd>'
                    for k, v in stats["definitions"].items())
    return f'<section id="definitions"><h2>Definitions</h2><dl>{items}</dl></section>'


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1140px;
padding:16px 20px 40px;color:#1f2328;background:#fff;font-size:14px}
h1{font-size:22px;margin:8px 0 12px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:14px;margin:14px 0 6px;color:#57606a;text-transform:uppercase;letter-spacing:.04em}
.banner{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:10px 14px;margin:10px 0}
table.meta th{text-align:left;color:#57606a;font-weight:600;padding:2px 16px 2px 0;vertical-align:top;
white-space:nowrap}
table.meta td{padding:2px 0}.kv{margin-right:14px}.kv b{color:#57606a;font-weight:600}
details{display:inline-block;margin-right:14px}summary{cursor:pointer;color:#0969da}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:8px}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px 10px;cursor:help}
.card .label{color:#57606a;font-size:12px}.card .value{font-size:18px;font-weight:600;margin-top:2px;
font-variant-numeric:tabular-nums}.card .note{color:#57606a;font-size:11px;margin-top:2px}
.pos{color:#1a7f37}.neg{color:#cf222e}.na{color:#8c959f}
table.grid{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
table.grid th,table.grid td{border-bottom:1px solid #eaeef2;padding:4px 8px;text-align:right}
table.grid th{color:#57606a;font-weight:600;background:#f6f8fa}
table.grid td:first-child,table.grid th:first-child,table.grid td.reason,table.grid th.reason{text-align:left}
table.grid td.reason{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
table.grid td.time{white-space:nowrap}
tr.gap td{text-align:center;color:#57606a}
figure.plot{margin:14px 0}figure.plot img{width:100%;height:auto;display:block}
figcaption{font-weight:600;margin-bottom:4px}.empty{color:#57606a;font-style:italic}.hint{color:#57606a;font-size:12px}
dl{display:grid;grid-template-columns:minmax(180px,260px) 1fr;gap:4px 16px}dt{font-weight:600}dd{margin:0;color:#1f2328}
code{color:#57606a;font-weight:400;font-size:11px}footer{margin-top:30px;color:#8c959f;font-size:12px}
"""


def render_report(run: Run) -> str:
    """The HTML page of a checked run (:func:`load_run`)."""
    stats = run.stats
    money = currency_symbol(stats["run"])
    title = f"Backtest {stats['run']['run_id']}"
    body = "".join([
        _header(stats),
        _figures(stats, money),
        _agents(stats),
        '<section id="plots"><h2>Plots</h2>' + "".join(_plots(run, money)) + "</section>",
        _trades_table(run.tables["trades"], money),
        _decisions_table(run.tables["decisions"], run.tables["orders"]),
        _definitions(stats),
        f"<footer>Money in {_e(money)}; times in Sao Paulo local time. Hover a figure for its definition.</footer>",
    ])
    # The CSP forbids the page from loading anything, so a stray URL cannot leak out of the file.
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


def write_report(run_dir: str | Path) -> Path:
    """Render ``run_dir/report.html`` from the run's files and return its path; ``ValueError``
    (naming the file and the column or key) when a file is missing or malformed."""
    run = load_run(run_dir)
    page = render_report(run)
    path = Path(run_dir) / REPORT_NAME
    path.write_text(page, encoding="utf-8")
    return path
