"""ProfitSession: one ProfitDLL login turned into normalized pipeline events (a FeedSource).

The DLL allows one initialization per process, so a session is meant to live in its own host
process (the bridge / the FeedActor's host owns that process). :meth:`ProfitSession.start` loads
the DLL, logs in with the modern callbacks registered at once, waits for the readiness rule and
subscribes trades + offer book for each symbol. :meth:`poll` (never blocking) turns the raw
callback copies queued by :class:`~pipelines.adapters.profitdll.binding.ProfitDLL` into:

- :class:`~pipelines.model.messages.Trade` for each V2 trade: ``ts_event`` from the trade's SystemTime,
  which is B3 local time (America/Sao_Paulo) -> ns UTC; ``trade_type`` the ProfitDLL code;
  ``buyer``/``seller`` the agent ids; ``trade_id`` the trade number; ``symbol`` the ticker.
- :class:`~pipelines.model.messages.BookSnapshot` (top ``book_depth`` levels per side, aggregated by
  price) after every offer-book callback, FullBook included. Book callbacks carry no event time
  of their own (an add's date is the order's time, edits and deletes have none), so a
  snapshot's ``ts_event`` is the newest exchange time seen on that symbol (trade times, add
  dates). Before any exchange time is known the book is kept up to date but no snapshot leaves
  (counted, ``books_before_exchange_time``): stamping one with the local clock would mix two
  clocks, and a host clock ahead of B3 would then get the real events rejected as time running
  backwards. The first snapshot after that carries the whole book.

Both leave with ``seq=0`` and ``ts_recv`` = wall-clock ns when the callback ran.

Trade edits (``TC_IS_EDIT``: the exchange corrected an earlier print, identified by its trade
number and original time) are **not** re-emitted as trades: the pipeline has no correction
message, and a second print with an old time would double the volume and run event time
backwards. They are counted (``trade_edits``) and the corrected trades kept in ``edits`` (the
last 1000) for audit.

With ``routing=True`` the login is ``DLLInitializeLogin`` (market data + order routing; the binding
then registers the order callbacks) and :attr:`ProfitSession.routing` is the
:class:`~pipelines.adapters.profitdll.routing.OrderRouting` of this login. The DLL's order events
(``RawOrder``, ``RawOrderError``, ``RawTradingMessage``) share the market-data queue; :meth:`poll`
hands each one, in callback order, to ``order_sink`` (the host's order service) and never turns
it into a market event. Without a sink they are counted (``order_events_unhandled``) and dropped.

Malformed data (a trade time that is not a date, an offer array whose sizes do not add up, a book
action that does not fit the book) is counted and skipped; the events around it flow on. Daily
callbacks are kept per symbol in ``last_daily``; invalid tickers are counted and logged.
Credentials are used once for the login and then dropped; they never reach a log line or a
message.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from datetime import datetime
from typing import Any, Callable, Sequence

from pipelines.model.messages import BookSnapshot, Event, Trade
from pipelines.adapters.profitdll.binding import (
    CHANNEL_NAMES,
    MARKET_DATA,
    MARKET_DEGRADED,
    ProfitDLL,
    RawBook,
    RawDaily,
    RawDepth,
    RawInvalidTicker,
    RawState,
    RawTrade,
    state_name,
)
from pipelines.adapters.profitdll.errors import ProfitDLLError
from pipelines.adapters.profitdll.offerbook import FULL_BOOK, BookError, OfferArrayError, OfferBook, parse_offer_orders_v2
from pipelines.adapters.profitdll.routing import OrderRouting, RawOrder, RawOrderError, RawTradingMessage
from pipelines.adapters.profitdll.structs import TC_IS_EDIT
from pipelines.model.clock import NS_PER_MS, SAO_PAULO, to_ns

log = logging.getLogger("quantumtrader.profitdll")

# Messages are built with tuple.__new__: the same immutable NamedTuple, without the generated
# __new__'s argument handling (a third of the cost of building one per event).
_tuple_new = tuple.__new__
LOG_EVERY_S = 10.0  # rate limit for repeated data-error warnings
ORDER_EVENT_TYPES = (RawOrder, RawOrderError, RawTradingMessage)


class ProfitSession:
    """One DLL login in this process (the DLL allows one init per process)."""

    def __init__(self, credentials, symbols: Sequence[str], *, dll_path: str | None = None, exchange: str = "F",
                 book_depth: int = 10, ready_timeout_s: float = 30.0, queue_max: int = 1_000_000,
                 routing: bool = False, order_sink: Callable[[Any], None] | None = None):
        if book_depth < 1:
            raise ValueError(f"book_depth must be at least 1, got {book_depth}")
        self._credentials = credentials
        self.symbols: list[str] = list(dict.fromkeys(symbols))
        self.dll_path = dll_path
        self.exchange = exchange
        self.book_depth = book_depth
        self.ready_timeout_s = ready_timeout_s
        self.queue_max = queue_max
        self.dll: ProfitDLL | None = None
        self.with_routing = routing
        self.routing: OrderRouting | None = None  # set by start() when routing is on
        self.order_sink = order_sink
        self.edits: deque[Trade] = deque(maxlen=1000)
        self.last_daily: dict[str, RawDaily] = {}
        self._books: dict[str, OfferBook] = {}
        self._last_ts: dict[str, int] = {}
        self._hour_ns: dict[tuple[int, int, int, int], int] = {}
        self._subscribed: set[str] = set()
        self._closed = False
        self.counts: Counter[str] = Counter()  # rare events; the hot ones are plain ints below
        self.trades_out = 0
        self.books_out = 0
        self.trade_edits = 0
        self._text_second_ns: dict[str, int] = {}
        self._last_warn = 0.0

    def __repr__(self) -> str:
        return f"ProfitSession(symbols={self.symbols}, exchange={self.exchange!r}, started={self.dll is not None})"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Load, log in (callbacks registered at once), wait for readiness, subscribe each symbol.

        Raises ``ProfitLoginError`` / ``ProfitNotReady`` (naming the missing states) / other
        ``ProfitDLLError``; the DLL is finalized before raising, so no native thread is left.
        """
        if self.dll is not None:
            raise RuntimeError("ProfitSession.start() called twice; the DLL allows one login per process")
        self.dll = ProfitDLL(self.dll_path, queue_max=self.queue_max)
        credentials, self._credentials = self._credentials, None  # used once, then dropped
        try:
            if self.with_routing:
                self.dll.initialize_login(credentials)  # market data + routing, order callbacks registered
            else:
                self.dll.initialize_market_login(credentials)
            del credentials
            self.dll.wait_ready(self.ready_timeout_s)
            if self.with_routing:
                self.routing = OrderRouting(self.dll)
            log.info("ProfitDLL ready: %s", self._state_text())
            for symbol in self.symbols:
                self._subscribe(symbol)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Unsubscribe, ``DLLFinalize`` (joins the DLL thread); what arrived meanwhile stays for :meth:`poll`."""
        if self._closed:
            return
        self._closed = True
        dll = self.dll
        if dll is None or not dll.initialized or dll.finalized:
            return
        for symbol in sorted(self._subscribed):
            try:
                dll.unsubscribe_ticker(symbol, self.exchange)
                dll.unsubscribe_offer_book(symbol, self.exchange)
            except ProfitDLLError as e:
                log.warning("unsubscribe %s at close: %s", symbol, e)
        self._subscribed.clear()
        try:
            dll.finalize()
        except ProfitDLLError as e:
            log.warning("DLLFinalize: %s", e)

    @property
    def exhausted(self) -> bool:
        """False while open (a live feed never ends); True once closed and drained."""
        return self._closed and not (self.dll is not None and self.dll.events)

    # -- subscriptions --------------------------------------------------------------------------

    def _subscribe(self, symbol: str) -> None:
        self.dll.subscribe_ticker(symbol, self.exchange)
        self.dll.subscribe_offer_book(symbol, self.exchange)
        self._subscribed.add(symbol)

    def subscribe(self, symbol: str) -> None:
        if symbol not in self.symbols:
            self.symbols.append(symbol)
        if self.dll is not None and not self._closed and symbol not in self._subscribed:
            self._subscribe(symbol)

    def unsubscribe(self, symbol: str) -> None:
        if symbol in self.symbols:
            self.symbols.remove(symbol)
        if self.dll is not None and symbol in self._subscribed:
            self._subscribed.discard(symbol)
            self.dll.unsubscribe_ticker(symbol, self.exchange)
            self.dll.unsubscribe_offer_book(symbol, self.exchange)
        self._books.pop(symbol, None)  # a later subscribe starts from the DLL's FullBook

    # -- events ---------------------------------------------------------------------------------

    def poll(self, max_events: int) -> list[Event]:
        """Up to ``max_events`` normalized events, in callback order. Never blocks."""
        dll = self.dll
        out: list[Event] = []
        if dll is None:
            return out
        queue = dll.events
        pop = queue.popleft
        while queue and len(out) < max_events:
            item = pop()
            kind = type(item)
            try:
                if kind is RawTrade:
                    self._trade(item, out)
                elif kind is RawBook:
                    self._book(item, out)
                elif kind is RawState:
                    self._state(item)
                elif kind is RawDaily:
                    self.last_daily[item.ticker] = item
                    self.counts["daily"] += 1
                elif kind is RawInvalidTicker:
                    self.counts["invalid_ticker"] += 1
                    log.warning("ProfitDLL: invalid ticker %r on exchange %r", item.ticker, item.exchange)
                elif kind is RawDepth:
                    self.counts["depth"] += 1
                elif kind in ORDER_EVENT_TYPES:
                    self._order_event(item)
            except (ValueError, OverflowError, TypeError, KeyError, IndexError) as e:
                # One event the decoder cannot place must not take the host (and the feed) down.
                self._bad(kind.__name__, e)
        return out


    def _order_event(self, item: Any) -> None:
        """An order event goes to the order service, never into the market-data stream."""
        self.counts["order_events"] += 1
        sink = self.order_sink
        if sink is None:
            self.counts["order_events_unhandled"] += 1
            return
        try:
            sink(item)
        except Exception as e:  # the sink's failure must not stop market data
            self.counts["order_sink_errors"] += 1
            log.warning("order event not handed over: %s: %s", type(e).__name__, e)

    def _bad(self, what: str, exc: Exception) -> None:
        self.counts["decode_errors"] += 1
        self.counts[f"bad_{what}"] += 1
        now = time.monotonic()
        if now - self._last_warn >= LOG_EVERY_S:
            self._last_warn = now
            log.warning("ProfitDLL: skipped a malformed %s: %s (%d skipped so far)", what, exc,
                        self.counts["decode_errors"])

    def _time_ns(self, y: int, mo: int, d: int, h: int, mi: int, s: int, ms: int) -> int:
        """B3 local wall time -> ns UTC. The zone offset is cached per hour (offsets change on hours)."""
        if not (0 <= mi < 60 and 0 <= s < 60 and 0 <= ms < 1000):
            raise ValueError(f"time {h:02d}:{mi:02d}:{s:02d}.{ms:03d} out of range")
        key = (y, mo, d, h)
        base = self._hour_ns.get(key)
        if base is None:
            if len(self._hour_ns) > 10_000:
                self._hour_ns.clear()
            base = self._hour_ns[key] = to_ns(datetime(y, mo, d, h, tzinfo=SAO_PAULO))
        return base + ((mi * 60 + s) * 1000 + ms) * NS_PER_MS

    def _date_text_ns(self, text: str) -> int:
        """'dd/mm/yyyy hh:mm:ss[.zzz]' (B3 local) -> ns UTC. The value of each whole second
        (``text[:19]``, checked once) is cached: many updates share it."""
        base = self._text_second_ns.get(text[:19])
        if base is None:
            base = self._date_second_ns(text)
        n = len(text)
        if n == 19:
            return base
        if n != 23 or text[19] != ".":
            raise ValueError(f"date {text!r} is not dd/mm/yyyy hh:mm:ss.zzz")
        ms = int(text[20:23])
        if not 0 <= ms < 1000:
            raise ValueError(f"date {text!r} is out of range")
        return base + ms * NS_PER_MS

    def _date_second_ns(self, text: str) -> int:
        """The whole-second part of :meth:`_date_text_ns`, checked and cached."""
        n = len(text)
        if (n != 19 and n != 23) or text[2] != "/" or text[5] != "/" or text[10] != " " or text[13] != ":" \
                or text[16] != ":":
            raise ValueError(f"date {text!r} is not dd/mm/yyyy hh:mm:ss.zzz")
        mi, sec = int(text[14:16]), int(text[17:19])
        if not (0 <= mi < 60 and 0 <= sec < 60):
            raise ValueError(f"date {text!r} is out of range")
        base = self._time_ns(int(text[6:10]), int(text[3:5]), int(text[0:2]), int(text[11:13]), mi, sec, 0)
        if len(self._text_second_ns) > 10_000:
            self._text_second_ns.clear()
        self._text_second_ns[text[:19]] = base
        return base

    def _trade(self, t: RawTrade, out: list) -> None:
        (ts_recv, ticker, _exchange, flags, y, mo, _dow, d, h, mi, sec, ms,
         number, price, qty, _volume, buyer, seller, trade_type) = t
        ts_event = self._time_ns(y, mo, d, h, mi, sec, ms)
        trade = _tuple_new(Trade, (ticker, ts_event, ts_recv, 0, price, qty, trade_type, buyer, seller, number))
        if flags & TC_IS_EDIT:
            self.trade_edits += 1
            self.edits.append(trade)
            return
        if ts_event > self._last_ts.get(ticker, 0):
            self._last_ts[ticker] = ts_event
        self.trades_out += 1
        out.append(trade)

    def _book(self, b: RawBook, out: list) -> None:
        (ts_recv, symbol, _exchange, action, position, side, qty, agent, offer_id, price,
         _has_price, has_qty, has_date, _has_offer_id, _has_agent, date, sell_array, buy_array) = b
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = OfferBook()
        try:
            if action == FULL_BOOK:
                sell = parse_offer_orders_v2(sell_array) if sell_array is not None else []
                buy = parse_offer_orders_v2(buy_array) if buy_array is not None else []
                book.full_book_orders(sell, buy)
            else:
                book.apply(action, side, position, price, qty, agent, offer_id, has_qty != 0)
        except (BookError, OfferArrayError) as e:
            self.counts["book_errors"] += 1
            self._bad("book", e)
            return
        last_ts = self._last_ts
        if has_date and date:
            try:
                ts = self._date_text_ns(date)
                if ts > last_ts.get(symbol, 0):
                    last_ts[symbol] = ts
            except ValueError as e:  # the update itself is good: keep it, count the date
                self._bad("book_date", e)
        ts_event = last_ts.get(symbol)
        if ts_event is None:
            self.counts["books_before_exchange_time"] += 1
            return
        self.books_out += 1
        out.append(_tuple_new(BookSnapshot, (symbol, ts_event, ts_recv, 0, *book.snapshot(self.book_depth))))

    def _state(self, s: RawState) -> None:
        self.counts["states"] += 1
        if s.state_type == MARKET_DATA and s.result == MARKET_DEGRADED:
            log.warning("ProfitDLL market data degraded (state 6): callbacks are not consumed fast enough; "
                        "events may be delayed or lost until state 4")
        else:
            log.debug("ProfitDLL %s: %s", CHANNEL_NAMES.get(s.state_type, s.state_type),
                      state_name(s.state_type, s.result))

    def _state_text(self) -> str:
        dll = self.dll
        return ", ".join(f"{CHANNEL_NAMES[c]} {state_name(c, dll.state[c])}" for c in CHANNEL_NAMES)

    # -- stats ----------------------------------------------------------------------------------

    def stats(self) -> dict:
        dll = self.dll
        base = dll.stats() if dll is not None else {
            "received": {}, "dropped": 0, "decode_errors": {}, "handler_errors": {}, "invalid_tickers": {},
            "state": {name: None for name in CHANNEL_NAMES.values()}, "ready": False, "degraded": False,
            "degraded_episodes": 0, "queued": 0, "last_error": None}
        return {
            "received": base["received"],
            "decode_errors": sum(base["decode_errors"].values()) + self.counts["decode_errors"],
            "decode_errors_by_kind": {**base["decode_errors"],
                                      **{k[4:]: v for k, v in self.counts.items() if k.startswith("bad_")}},
            "handler_errors": sum(base["handler_errors"].values()),
            "last_error": base["last_error"],
            "dropped": base["dropped"],
            "invalid_tickers": base["invalid_tickers"],
            "state": base["state"],
            "ready": base["ready"],
            "degraded": base["degraded"],
            "degraded_episodes": base["degraded_episodes"],
            "queued": base["queued"],
            "trades": self.trades_out,
            "books": self.books_out,
            "books_before_exchange_time": self.counts["books_before_exchange_time"],
            "trade_edits": self.trade_edits,
            "book_errors": self.counts["book_errors"],
            "daily": self.counts["daily"],
            "order_events": self.counts["order_events"],
            "order_events_unhandled": self.counts["order_events_unhandled"],
        }
