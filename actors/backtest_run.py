"""A backtest run: an input through :class:`actors.backtest.InProcessGraph`, then its tables,
statistics and the run directory ``reports/<run-id>/`` (``scripts/backtest.py`` is the CLI).

Inputs (:class:`BacktestInput`): a simulator session, a recordings folder (the recorder's
Parquet layout), the CME ES tape or a Profit Times & Trades CSV. The two files are imported
into a temporary recordings folder first, so every recorded input goes the replay's way, the
way ``feed.source: replay`` reads it live (same reader, same time window, same validation).

The graph keeps every decision and the execution actors' steps; the market's trades are kept
here as they are admitted (the marks of the equity curve). What the run writes:

- ``stats.json``: ``run`` (the input, the config file, events and rejections, whether it was
  interrupted, the code version, the decision and fill hashes), ``statistics`` and their
  ``definitions`` (:mod:`pipelines.backtest.stats`), ``agents`` (per voter: signals, outcomes,
  hit rate, mean reward, first and last weight) and ``decisions`` (counts by action);
- Parquet: ``decisions`` (with the reason and one ``weight_<voter>`` column per voter),
  ``orders`` (with their last status and filled quantity), ``fills``, ``trades`` (round
  trips), ``equity`` and ``prices`` (the last trade price once per second of event time);
- ``report.html`` (:mod:`pipelines.backtest.report`).

The directory is written as ``.<run-id>.partial`` and renamed when complete, so nothing half
written ever sits under a run's name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from actors.backtest import InProcessGraph, POLL_EVENTS, SOURCE_WAIT_S
from actors.execution import execution_name
from actors.hmarl import agent_name, explain, feedback_name, ml_name
from pipelines.adapters.base import FeedSource
from pipelines.adapters.files.replay import parse_bound
from pipelines.adapters.sources import make_source
from pipelines.backtest import stats as bstats
from pipelines.backtest.sweep import merge_overrides
from pipelines.config import AppConfig, load_config
from pipelines.execution.costs import CostModel
from pipelines.model.clock import NS_PER_S, from_ns
from pipelines.model.instruments import point_value_for
from pipelines.model.messages import Decision, Trade
from pipelines.model.orders import Fill, Order

REPO = Path(__file__).resolve().parent.parent
KINDS = ("simulator", "recordings", "es", "profit_csv")
TABLES = ("decisions", "orders", "fills", "trades", "equity", "prices")
DEFAULT_CAPITAL = 100_000.0  # R$ the daily returns are measured against (stats.json says which)


class BacktestError(ValueError):
    """The input cannot be backtested (no such file, no data in the range, ...): one line."""


@dataclass(frozen=True)
class BacktestInput:
    """What a backtest reads. ``start`` / ``end``: ISO date or time (Sao Paulo when no offset),
    ``start`` inclusive, ``end`` exclusive (a date-only end covers that day). A simulator
    session runs from ``start`` to ``end`` of event time (both required)."""

    kind: str
    path: str | None = None
    start: str | None = None
    end: str | None = None
    seed: int | None = None  # simulator only: None = the config's
    rate: float | None = None
    profile: str | None = None
    symbols: tuple[str, ...] | None = None  # None: the config's (simulator), what the input holds (files)

    def describe(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v is not None}


@dataclass
class BacktestRun:
    run_id: str
    stats: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    decision_hash: str
    fill_hash: str
    interrupted: bool = False
    final: dict[str, Any] = field(default_factory=dict)  # every actor's final stats


# -- the input as a config ------------------------------------------------------------


def _bound(text: str | None, name: str, is_end: bool) -> int | None:
    try:
        return parse_bound(text, is_end=is_end)
    except ValueError as e:
        raise BacktestError(f"--{name}: {str(e).split(': ', 1)[-1]}") from None


def _recorded_symbols(root: Path) -> list[str]:
    """Symbols with recordings under ``root`` (``<kind>/symbol=<SYM>/``)."""
    return sorted({d.name[len("symbol="):] for d in root.glob("*/symbol=*") if d.is_dir()})


def _import_file(source: BacktestInput, into: Path) -> tuple[list[str], dict[str, Any]]:
    """The ES tape or a Profit CSV written into ``into`` in the recorder's layout."""
    path = Path(source.path or "")
    if not path.is_file():
        raise BacktestError(f"input file not found: {source.path}")
    if path.stat().st_size == 0:
        raise BacktestError(f"input file is empty: {source.path}")
    try:
        if source.kind == "es":
            from pipelines.adapters.files.cme_es import import_cme_es

            symbol = source.symbols[0] if source.symbols else "ESH22"
            counts = import_cme_es(path, into, symbol=symbol)
        else:
            from pipelines.adapters.files.profit_csv import import_profit_csv

            counts = import_profit_csv(path, into, symbol=source.symbols[0] if source.symbols else None)
    except (ValueError, KeyError, OSError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BacktestError(why if why.startswith(str(source.path)) else f"{source.path}: {why}") from None
    symbols = _recorded_symbols(into)
    if not symbols:
        raise BacktestError(f"{source.path}: no usable rows ({json.dumps(counts, default=str)[:300]})")
    return symbols, counts


def backtest_config(source: BacktestInput, config_path: str | None = None, overrides: dict | None = None,
                    workdir: Path | None = None) -> tuple[AppConfig, dict[str, Any]]:
    """The run's config: the file ``launch.py`` reads, ``overrides`` (dotted-key sets of a sweep),
    then the input (feed source, symbols, window). Recorded files are imported into ``workdir``
    first. Returns the config and what the input import counted. Raises ConfigError (a config
    key) or BacktestError (the input)."""
    if source.kind not in KINDS:
        raise BacktestError(f"input kind must be one of {', '.join(KINDS)}, got {source.kind!r}")
    feed: dict[str, Any] = {}
    top: dict[str, Any] = {"recorder": {"enabled": False}}
    imported: dict[str, Any] = {}
    if source.kind == "simulator":
        if source.start is None or source.end is None:
            raise BacktestError("a simulator session needs a start and an end")
        sim = {"start": source.start, "speed": 0.0}
        for key in ("seed", "rate", "profile"):
            if getattr(source, key) is not None:
                sim[key] = getattr(source, key)
        feed = {"source": "simulator", "simulator": sim}
        if source.symbols:
            top["symbols"] = list(source.symbols)
    else:
        if source.kind == "recordings":
            root = Path(source.path or "")
            if not root.is_dir():
                raise BacktestError(f"recordings folder not found: {source.path}")
            symbols = _recorded_symbols(root)
            if not symbols:
                raise BacktestError(f"{source.path} holds no recordings (<kind>/symbol=<SYM>/date=YYYY-MM-DD/*.parquet)")
        else:
            if workdir is None:
                raise BacktestError("a file input needs a work folder to import into")
            root = workdir
            symbols, imported = _import_file(source, root)
        if source.symbols:
            missing = [s for s in source.symbols if s not in symbols]
            if missing:
                raise BacktestError(f"--symbols: {', '.join(missing)} not in the input (it holds {', '.join(symbols)})")
            symbols = list(source.symbols)
        top["symbols"] = symbols
        feed = {"source": "replay", "replay": {"path": str(root), "speed": 0.0, "start": source.start,
                                                "end": source.end}}
    merged = merge_overrides(overrides or {}, {**top, "feed": feed})
    cfg = load_config(config_path, overrides=merged)
    return cfg, imported


# -- running ----------------------------------------------------------------------------


class _Window:
    """A source cut to event time [start, end): the simulator runs until told to stop."""

    def __init__(self, source: FeedSource, end_ns: int | None):
        self.source, self.end_ns, self.done = source, end_ns, False
        self.symbols = source.symbols

    @property
    def exhausted(self) -> bool:
        return self.done or self.source.exhausted

    def poll(self, max_events: int) -> list:
        events = self.source.poll(max_events)
        if self.end_ns is not None and events and events[-1].ts_event >= self.end_ns:
            events = [e for e in events if e.ts_event < self.end_ns]
            self.done = True
        return events

    def wait(self, timeout_s: float) -> None:
        self.source.wait(timeout_s)

    def close(self) -> None:
        self.source.close()


class _Marks:
    """The admitted trades' (ts, symbol, price), in columns."""

    def __init__(self):
        self.ts: list[int] = []
        self.symbol: list[str] = []
        self.price: list[float] = []

    def add(self, events: list) -> None:
        for e in events:
            if type(e) is Trade:
                self.ts.append(e.ts_event)
                self.symbol.append(e.symbol)
                self.price.append(e.price)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"ts_event": np.asarray(self.ts, dtype=np.int64), "symbol": self.symbol,
                             "price": np.asarray(self.price, dtype=float)})


class _PnlSoFar:
    """Net P&L of the run so far, from the execution actors' account summaries (each day's last)."""

    def __init__(self, graph: InProcessGraph):
        self.journals = [a.journal for a in graph.actors.values() if getattr(a, "journal", None) is not None]
        self.seen = [0] * len(self.journals)
        self.by_day: dict[tuple[str, object], float] = {}

    def update(self) -> float:
        for i, journal in enumerate(self.journals):
            for step in journal[self.seen[i]:]:
                a = step.account
                if a is not None:
                    self.by_day[(a.account, from_ns(a.ts_event).date())] = a.day_pnl_net
            self.seen[i] = len(journal)
        return sum(self.by_day.values())


def _source(cfg: AppConfig, source: BacktestInput) -> tuple[FeedSource, int | None, int | None]:
    start = _bound(source.start, "start", False)
    end = _bound(source.end, "end", True)
    if start is not None and end is not None and end <= start:
        raise BacktestError(f"--end ({source.end}) must be after --start ({source.start})")
    return _Window(make_source(cfg.feed, tuple(cfg.symbols)), end), start, end


def input_batches(cfg: AppConfig, source: BacktestInput) -> Iterator[list]:
    """The input's raw event batches as its feed polls them, cut at its end (exclusive); the start
    bound is the caller's to apply (a replay already starts there, the simulator starts at it)."""
    feed, _start, _end = _source(cfg, source)
    try:
        while not feed.exhausted:
            batch = feed.poll(POLL_EVENTS)
            if not batch:
                feed.wait(SOURCE_WAIT_S)
                continue
            yield batch
    finally:
        feed.close()


def run_backtest(cfg: AppConfig, source: BacktestInput, *, run_id: str, progress: bool = False,
                 capital: float = DEFAULT_CAPITAL, config_path: str | None = None,
                 imported: dict | None = None, stop: Callable[[], bool] | None = None) -> BacktestRun:
    """``source`` (as :func:`backtest_config` configured ``cfg``) through the graph. Ctrl-C (or
    ``stop()`` turning true) ends the input early; the run is then closed on what was fed and
    marked ``interrupted``. Raises BacktestError when the input had no market event."""
    feed, start_ns, end_ns = _source(cfg, source)
    graph = InProcessGraph(cfg, run_id=run_id)
    marks = _Marks()
    pnl = _PnlSoFar(graph)
    bar = _progress(progress, start_ns, end_ns)
    interrupted = False
    t0 = time.monotonic()
    first_ts = last_ts = None
    try:
        while not feed.exhausted:
            if stop is not None and stop():
                interrupted = True
                break
            events = feed.poll(POLL_EVENTS)
            if not events:
                feed.wait(SOURCE_WAIT_S)
                continue
            good = graph.admit(events)
            marks.add(good)
            graph.feed(good)
            if good:
                first_ts = good[0].ts_event if first_ts is None else first_ts
                last_ts = good[-1].ts_event
            if bar is not None:
                bar.show(graph.events_out + len(graph.pending), last_ts, pnl.update(), time.monotonic() - t0)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        feed.close()
    tail = graph.end_of_input()
    marks.add(tail)
    graph.feed(tail)
    final = graph.finish()
    elapsed = time.monotonic() - t0
    if bar is not None:
        bar.close(graph.events_out, last_ts, pnl.update(), elapsed)
    if graph.events_out == 0:
        window = f" from {source.start or 'the start'} to {source.end or 'the end'}"
        raise BacktestError(f"no market data in the input{window if (source.start or source.end) else ''} "
                            f"(rejected: {json.dumps(graph.validator.stats().get('rejected', {}))})")
    return _results(cfg, source, graph, marks.frame(), final, run_id=run_id, capital=capital, elapsed=elapsed,
                    interrupted=interrupted, config_path=config_path, imported=imported or {},
                    start_ns=start_ns if start_ns is not None and first_ts is not None and start_ns <= first_ts
                    else first_ts)


class _Progress:
    """tqdm over event time when the window is known, else over events; postfix: events/s, P&L."""

    def __init__(self, start_ns: int | None, end_ns: int | None):
        from tqdm import tqdm

        self.start_ns = start_ns
        total = (end_ns - start_ns) / NS_PER_S if start_ns is not None and end_ns is not None else None
        self.by_time = total is not None
        self.bar = tqdm(total=total, unit="s" if self.by_time else " events", unit_scale=not self.by_time,
                        desc="backtest (event time)" if self.by_time else "backtest", dynamic_ncols=True,
                        mininterval=0.5,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:,.0f}/{total:,.0f} s [{elapsed}<{remaining}{postfix}]"
                        if self.by_time else None)
        self.shown = 0.0

    def show(self, events: int, last_ts: int | None, pnl: float, elapsed: float) -> None:
        if self.by_time:
            if last_ts is None:
                return
            at = max(0.0, (last_ts - self.start_ns) / NS_PER_S)
            at = min(at, self.bar.total)
        else:
            at = float(events)
        if at > self.shown:
            self.bar.update(at - self.shown)
            self.shown = at
        self.bar.set_postfix_str(f"{events:,} events, {events / max(elapsed, 1e-9):,.0f}/s, P&L {pnl:+,.2f}",
                                 refresh=False)

    def close(self, events: int, last_ts: int | None, pnl: float, elapsed: float) -> None:
        self.show(events, last_ts, pnl, elapsed)
        self.bar.close()


def _progress(enabled: bool, start_ns: int | None, end_ns: int | None) -> _Progress | None:
    return _Progress(start_ns, end_ns) if enabled else None


# -- results ----------------------------------------------------------------------------


def _digest(rows: list) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def decision_rows(decisions: list[Decision]) -> list[tuple]:
    """What must be identical between two runs of the same input: ids, actions, sizes, scores."""
    return [(d.decision_id, d.action, d.size, d.score) for d in decisions]


def fill_rows(fills: list[Fill]) -> list[tuple]:
    return [(f.fill_id, f.ts_event, f.side, f.quantity, f.price, f.fees) for f in fills]


def _decisions_frame(decisions: list[Decision]) -> pd.DataFrame:
    voters = sorted({v for d in decisions for v in d.weights})
    rows = []
    for d in decisions:
        row = {"decision_id": d.decision_id, "symbol": d.symbol, "ts_event": d.ts_event, "seq": d.seq,
               "action": d.action, "size": d.size, "score": d.score, "confidence": d.confidence, "price": d.price,
               "risk": d.risk, "reason": explain(d)}
        row.update({f"weight_{v}": float(d.weights.get(v, math.nan)) for v in voters})
        rows.append(row)
    columns = ["decision_id", "symbol", "ts_event", "seq", "action", "size", "score", "confidence", "price", "risk",
               "reason", *(f"weight_{v}" for v in voters)]
    return pd.DataFrame(rows, columns=columns).astype({"ts_event": "int64", "seq": "int64", "size": "int64"})


def _orders_frame(graph: InProcessGraph) -> pd.DataFrame:
    status: dict[str, str] = {}
    filled: Counter[str] = Counter()
    orders: list[Order] = []
    for step in graph.steps:
        orders.extend(step.orders)
        for ev in step.order_events:
            status[ev.client_order_id] = ev.status
        for f in step.fills:
            filled[f.client_order_id] += f.quantity
    df = pd.DataFrame(orders, columns=Order._fields)
    df["status"] = [status.get(o.client_order_id, "") for o in orders]
    df["filled_quantity"] = np.asarray([filled[o.client_order_id] for o in orders], dtype=np.int64)
    return df.astype({"ts_event": "int64", "quantity": "int64"})


def _prices_frame(marks: pd.DataFrame) -> pd.DataFrame:
    """The last trade price of each symbol once per second of event time (the price plot's line)."""
    if marks.empty:
        return pd.DataFrame({"ts_event": np.zeros(0, np.int64), "symbol": [], "price": np.zeros(0)})
    second = marks["ts_event"] // NS_PER_S
    last = marks.assign(second=second).groupby(["symbol", "second"], sort=True).tail(1)
    return last[["ts_event", "symbol", "price"]].sort_values(["ts_event", "symbol"], kind="stable").reset_index(drop=True)


def _agents(cfg: AppConfig, final: dict, decisions: pd.DataFrame) -> dict[str, dict]:
    """Per voter (``voter`` with one symbol, ``voter@SYM`` with several): signals sent, outcomes
    judged by the feedback system, hit rate, mean reward, the weight at the first and last decision."""
    out: dict[str, dict] = {}
    many = len(cfg.symbols) > 1
    voters = list(cfg.hmarl.agents) + (["ml"] if cfg.hmarl.ml_enabled else [])
    for sym in cfg.symbols:
        perf = (final.get(feedback_name(sym)) or {}).get("performance") or {}
        mine = decisions[decisions["symbol"] == sym] if not decisions.empty else decisions
        for v in voters:
            actor = final.get(agent_name(v, sym) if v != "ml" else ml_name(sym)) or {}
            p = perf.get(v) or {}
            col = f"weight_{v}"
            weights = mine[col].dropna() if col in mine.columns else pd.Series(dtype=float)
            out[f"{v}@{sym}" if many else v] = {
                "signals": int(actor.get("signals_sent", 0)), "outcomes": int(p.get("count", 0)),
                # hits and misses: the outcomes of signals with a direction (an abstention is neither)
                "hits": int(p.get("hits", 0)), "misses": int(p.get("misses", 0)),
                "hit_rate": p.get("hit_rate"), "mean_reward": p.get("mean_reward"),
                "weight_first": float(weights.iloc[0]) if len(weights) else None,
                "weight_last": float(weights.iloc[-1]) if len(weights) else None}
    return out


def code_version() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (head + ("-dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _results(cfg: AppConfig, source: BacktestInput, graph: InProcessGraph, marks: pd.DataFrame, final: dict, *,
             run_id: str, capital: float, elapsed: float, interrupted: bool, config_path: str | None,
             imported: dict, start_ns: int | None) -> BacktestRun:
    fills_list = graph.fills()
    decisions = _decisions_frame(graph.decisions)
    fills = pd.DataFrame(fills_list, columns=Fill._fields).astype({"ts_event": "int64", "quantity": "int64"})
    trades = bstats.round_trips(fills, point_value_for)
    equity = bstats.equity_curve(fills, marks, point_value_for, start_ns=start_ns)
    costs = CostModel(cfg.execution.exchange.costs)
    bh = bstats.buy_and_hold(marks, point_value_for, costs.exchange_fee) if not marks.empty else None
    statistics = bstats.statistics(trades, equity, capital=capital, buy_and_hold=bh)
    actions = Counter(d.action for d in graph.decisions)
    feed = final.get("feed", {})
    validation = feed.get("validation", {})
    ex = final.get(execution_name(cfg.execution.account)) or {}
    stats = {
        "run": {
            "run_id": run_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "input": {**source.describe(), **({"imported": imported} if imported else {})},
            "symbols": list(cfg.symbols), "config": config_path,
            "currency": {s: _currency(s) for s in cfg.symbols},
            "events": int(graph.events_out), "rejected": dict(validation.get("rejected", {})),
            "interrupted": interrupted, "elapsed_s": round(elapsed, 3), "code_version": code_version(),
            "decision_hash": _digest(decision_rows(graph.decisions)), "fill_hash": _digest(fill_rows(fills_list)),
            "execution": {k: ex.get(k) for k in ("trading_state", "risk_reason", "overrun", "late_decisions")
                          if k in ex},
        },
        "statistics": statistics,
        "definitions": bstats.DEFINITIONS,
        "agents": _agents(cfg, final, decisions),
        "decisions": {"count": len(graph.decisions), **{a: actions.get(a, 0) for a in ("BUY", "SELL", "HOLD")}},
    }
    tables = {"decisions": decisions, "orders": _orders_frame(graph), "fills": fills, "trades": trades,
              "equity": equity, "prices": _prices_frame(marks)}
    return BacktestRun(run_id, stats, tables, stats["run"]["decision_hash"], stats["run"]["fill_hash"],
                       interrupted, final)


def _currency(symbol: str) -> str:
    from pipelines.model.instruments import UnknownInstrument, instrument_for

    try:
        return instrument_for(symbol).currency
    except UnknownInstrument:
        return "points"


# -- writing ----------------------------------------------------------------------------


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return str(v)


@contextmanager
def staged_dir(out_dir: str | os.PathLike, name: str, force: bool) -> Iterator[Path]:
    """A folder ``out_dir/name`` written as ``.name.partial`` and renamed when complete, so
    nothing half written ever sits under the name (removed if the body raises). An existing
    folder of that name is an error unless ``force``."""
    out = Path(out_dir)
    final = out / name
    if final.exists() and not force:
        raise BacktestError(f"{final} exists (choose another id, or --force to replace it)")
    stage = out / f".{name}.partial"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    try:
        yield stage
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def write_run(run: BacktestRun, out_dir: str | os.PathLike, *, report: bool = True, force: bool = False) -> Path:
    """``out_dir/<run-id>/`` with stats.json, the Parquet tables and (``report``) report.html,
    staged (:func:`staged_dir`). An existing run of that id is an error unless ``force``."""
    with staged_dir(out_dir, run.run_id, force) as stage:
        for name in TABLES:
            run.tables[name].to_parquet(stage / f"{name}.parquet", index=False)
        (stage / "stats.json").write_text(json.dumps(run.stats, indent=2, default=_json_default, allow_nan=False)
                                          + "\n", encoding="utf-8")
        if report:
            from pipelines.backtest.report import write_report

            write_report(stage)
    return Path(out_dir) / run.run_id


def backtest(source: BacktestInput, *, config_path: str | None = None, overrides: dict | None = None,
             run_id: str, progress: bool = False, capital: float = DEFAULT_CAPITAL,
             stop: Callable[[], bool] | None = None) -> BacktestRun:
    """Config, import (into a temporary folder, removed after), run: what the CLI and a sweep's task do."""
    with tempfile.TemporaryDirectory(prefix="qt-backtest-") as tmp:
        cfg, imported = backtest_config(source, config_path, overrides, workdir=Path(tmp))
        return run_backtest(cfg, source, run_id=run_id, progress=progress, capital=capital,
                            config_path=config_path, imported=imported, stop=stop)

