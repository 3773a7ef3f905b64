"""One-minute candles from trades, on event time."""

from __future__ import annotations

from typing import Iterable

from pipelines.model.messages import Candle, Trade, TradeType
from pipelines.model.clock import minute_floor_ns


class CandleBuilder:
    """Folds trades into one-minute OHLCV candles for one symbol.

    A candle closes when the first trade of a later minute arrives (event time,
    so a quiet market leaves the last candle open; minutes without trades have
    no candle). A trade whose event time falls before the open candle's minute
    (allowed by the feed's backwards tolerance) is folded into the open candle
    rather than reopening a closed one: closed candles are immutable.
    """

    def __init__(self, symbol: str):
        self.symbol = symbol
        self._open: list | None = None  # [ts_open, o, h, l, c, vol, buy, sell, n, seq]

    @property
    def current(self) -> Candle | None:
        """The candle still forming, or None."""
        return Candle(self.symbol, *self._open) if self._open else None

    def on_trade(self, t: Trade) -> Candle | None:
        """Add one trade; returns the candle it closed, if any."""
        minute = minute_floor_ns(t.ts_event)
        closed = None
        c = self._open
        if c is not None and minute > c[0]:
            closed = Candle(self.symbol, *c)
            c = None
        if c is None:
            self._open = [minute, t.price, t.price, t.price, t.price, 0, 0, 0, 0, t.seq]
            c = self._open
        if t.price > c[2]:
            c[2] = t.price
        if t.price < c[3]:
            c[3] = t.price
        c[4] = t.price
        c[5] += t.qty
        if t.trade_type == TradeType.BUY_AGGRESSOR:
            c[6] += t.qty
        elif t.trade_type == TradeType.SELL_AGGRESSOR:
            c[7] += t.qty
        c[8] += 1
        c[9] = t.seq
        return closed

    def on_trades(self, trades: Iterable[Trade]) -> list[Candle]:
        """Add trades in order; returns the candles they closed."""
        out = []
        for t in trades:
            closed = self.on_trade(t)
            if closed is not None:
                out.append(closed)
        return out
