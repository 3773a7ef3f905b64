"""SymbolAnalytics: every feature and flow analytic of one symbol, fed event by event.

The one place that combines the feature modules for live use; the
``FeatureEngine`` actor (``actors/features.py``) wraps it, backtests and
training can drive it directly. Per event it folds a trade or book snapshot
into:

- ``FeatureEngineCore`` (the 65 trade features) and ``FlowFeatures`` (the
  flow-enhanced set) -> a :class:`FeatureVector` after each trade, or after
  the first trade of each ``vector_every_ns`` of event time;
- ``OrderFlowImbalance`` / ``TradeFlow`` (inside FlowFeatures) and ``VPIN``
  -> a :class:`FlowState`, and ``LiquidityMonitor`` -> a
  :class:`LiquidityState`, both every ``state_every_ns`` of event time (the
  first event at or after each boundary);
- ``FootprintBuilder`` -> a closed :class:`FootprintState` when a minute ends
  (by a trade or by the clock), and the forming bar with each state tick;
- ``TapeReader`` -> a :class:`TapeSignal` for each sweep or iceberg.

Everything is on event time; the outputs carry the seq of the event after
which they were computed. ``emit=False`` (used to warm up after a restart)
updates all state but builds no output.
"""

from __future__ import annotations

from pipelines.features.config import VPIN_BUCKET_VOLUME
from pipelines.features.core import FEATURE_NAMES, FeatureEngineCore
from pipelines.features.flow import VPIN
from pipelines.features.flow_set import FLOW_FEATURE_NAMES, FlowFeatures
from pipelines.features.footprint import FootprintBar, FootprintBuilder
from pipelines.features.tape import TapePattern, TapeReader
from pipelines.model.clock import NS_PER_S
from pipelines.model.messages import (
    Analytics,
    BookSnapshot,
    FeatureVector,
    FlowState,
    FootprintState,
    LiquidityState,
    TapeSignal,
    Trade,
)

VECTOR_NAMES: tuple[str, ...] = FEATURE_NAMES + FLOW_FEATURE_NAMES
VPIN_BUCKETS = 50


def footprint_dict(bar: FootprintBar) -> dict:
    """A footprint bar as plain JSON-friendly data (named absorption records)."""
    d = bar._asdict()
    d["absorption"] = [a._asdict() for a in bar.absorption]
    return d


class SymbolAnalytics:
    def __init__(self, symbol: str, tick_size: float, *, vector_every_ns: int = 0, state_every_ns: int = NS_PER_S,
                 vpin_bucket_volume: int = VPIN_BUCKET_VOLUME):
        self.symbol = symbol
        self.core = FeatureEngineCore(price_quantum=tick_size, symbol=symbol)
        self.flow = FlowFeatures(symbol, tick_size)
        self.vpin = VPIN(vpin_bucket_volume, VPIN_BUCKETS)
        self.footprint = FootprintBuilder(symbol, tick_size)
        self.tape = TapeReader()
        self.vector_every_ns = vector_every_ns
        self.state_every_ns = state_every_ns
        self._next_vector = 0
        self._next_state = 0
        self.trades = 0
        self.books = 0
        self.rejected = 0  # trades the core refused (non-positive price or size)
        self.emitted: dict[str, int] = {}

    # -- input --------------------------------------------------------------------

    def on_events(self, events, out: list[Analytics] | None) -> None:
        """Fold ``events`` (trades and book snapshots of this symbol, in seq order) in;
        append what they produce to ``out`` (None: update state only)."""
        for ev in events:
            t = type(ev)  # the exact classes first (every event of the feed), a subclass after
            if t is BookSnapshot:
                self._on_book(ev, out)
            elif t is Trade or isinstance(ev, Trade):
                self._on_trade(ev, out)
            elif isinstance(ev, BookSnapshot):
                self._on_book(ev, out)

    def _on_trade(self, t: Trade, out: list | None) -> None:
        self.trades += 1
        if not self.core.on_trade(t):
            self.rejected += 1
            return
        self.flow.on_trade(t)
        self.vpin.on_trade(t)
        bar = self.footprint.on_trade(t)
        patterns = self.tape.on_trade(t)
        if not self._emit_events(t, bar, patterns, out):
            return
        ts = t.ts_event
        if ts >= self._next_vector:
            out.append(self.vector(t))
            if self.vector_every_ns:
                self._next_vector = ts - ts % self.vector_every_ns + self.vector_every_ns
        if ts >= self._next_state:
            self._states(t, out)

    def _on_book(self, s: BookSnapshot, out: list | None) -> None:
        self.books += 1
        self.core.on_book(s)
        self.flow.on_book(s)
        patterns = self.tape.on_book(s)
        ts = s.ts_event
        bar = self.footprint.advance(ts)
        # _emit_events only when there is something to emit or no output (most snapshots have neither)
        if (out is None or bar is not None or patterns) and not self._emit_events(s, bar, patterns, out):
            return
        if ts >= self._next_state:
            self._states(s, out)

    def _emit_events(self, ev, bar: FootprintBar | None, patterns, out: list | None) -> bool:
        """Append what the event itself produced (a closed footprint bar, tape patterns), in that
        order; False in quiet mode (``out`` None), where only the cadence clocks move."""
        if out is None:
            self._tick_clocks(ev.ts_event)
            return False
        if bar is not None:
            out.append(self._footprint(ev, bar, True))
        for p in patterns:
            out.append(self._tape(ev, p))
        return True

    def _tick_clocks(self, ts: int) -> None:
        # Quiet mode keeps the cadence phase so the first output after warm-up is on schedule.
        if ts >= self._next_vector and self.vector_every_ns:
            self._next_vector = ts - ts % self.vector_every_ns + self.vector_every_ns
        if ts >= self._next_state:
            self._next_state = ts - ts % self.state_every_ns + self.state_every_ns

    # -- outputs ------------------------------------------------------------------

    def vector_values(self) -> tuple[float, ...]:
        """The current values of ``VECTOR_NAMES``."""
        flow = self.flow.values()
        return self.core.vector_tuple() + tuple(map(flow.__getitem__, FLOW_FEATURE_NAMES))

    def vector(self, t: Trade) -> FeatureVector:
        self._count("features")
        return FeatureVector(t.symbol, t.ts_event, t.ts_recv, t.seq, t.price, t.qty, t.aggressor, VECTOR_NAMES,
                             self.vector_values())

    def flow_values(self) -> dict[str, float]:
        f = self.flow
        out = f.ofi.values()
        out.update(f.trades.values())
        out.update(f.values())
        out["vpin"] = self.vpin.value()
        current = self.footprint.current()
        out["cum_delta"] = current.cum_delta if current is not None else float("nan")
        return out

    def liquidity_values(self) -> dict[str, float]:
        out = self.flow.liquidity.values()
        book = self.core.book
        nan = float("nan")
        if book is not None:
            out["best_bid"] = book.bid_px[0] if book.bid_px else nan
            out["best_ask"] = book.ask_px[0] if book.ask_px else nan
            out["best_bid_qty"] = book.bid_qty[0] if book.bid_qty else 0
            out["best_ask_qty"] = book.ask_qty[0] if book.ask_qty else 0
        return out

    def _states(self, ev, out: list) -> None:
        ts = ev.ts_event
        self._next_state = ts - ts % self.state_every_ns + self.state_every_ns
        out.append(FlowState(ev.symbol, ts, ev.ts_recv, ev.seq, self.flow_values()))
        out.append(LiquidityState(ev.symbol, ts, ev.ts_recv, ev.seq, self.liquidity_values()))
        self._count("flow")
        self._count("liquidity")
        current = self.footprint.current()
        if current is not None:
            out.append(self._footprint(ev, current, False))

    def _footprint(self, ev, bar: FootprintBar, closed: bool) -> FootprintState:
        self._count("footprint")
        return FootprintState(ev.symbol, ev.ts_event, ev.ts_recv, ev.seq, closed, footprint_dict(bar))

    def _tape(self, ev, p: TapePattern) -> TapeSignal:
        self._count("tape")
        return TapeSignal(ev.symbol, p.ts_event, ev.ts_recv, ev.seq, p.kind, p.side, p.price, p.confidence, dict(p.details))

    def _count(self, kind: str) -> None:
        self.emitted[kind] = self.emitted.get(kind, 0) + 1

    def stats(self) -> dict:
        return {
            "trades": self.trades,
            "books": self.books,
            "rejected": self.rejected,
            "emitted": dict(self.emitted),
            "ofi_skipped": self.flow.ofi.skipped,
            "state_sizes": {**self.core.state_sizes(), **self.flow.state_sizes(), **self.vpin.state_sizes(),
                            **self.footprint.state_sizes()},
        }
