"""ProfitDLL loader and the market-data wrapper.

Loading: ``WinDLL`` on Windows, ``CDLL`` elsewhere (the native test fake), always from an absolute
path: the ``dll_path`` argument, else ``$PROFITDLL_PATH``, else an error naming both. A folder may
be given for the real DLL (``ProfitDLL64.dll`` / ``ProfitDLL.dll`` inside). The working directory
is never searched, so a planted DLL there is never picked up.

:class:`ProfitDLL` follows the rules the vendor examples and field reports settled on:

- ``DLLInitializeMarketLogin`` / ``DLLInitializeLogin`` with the legacy callback slots ``None``;
  the modern callbacks (``SetTradeCallbackV2``, ``SetOfferBookCallbackV2``,
  ``SetHistoryTradeCallbackV2``, ``SetInvalidTickerCallback``, ``SetPriceDepthCallback``) are
  registered immediately after init returns ``NL_OK`` (registering them later crashed
  ``SubscribePriceDepth``).
- Callbacks run on the DLL's native thread. They only copy into a bounded queue
  (``events``; a full queue drops and counts) plus the accessor calls meant to run there:
  ``TranslateTrade``, copying the FullBook arrays and ``FreePointer``, ``GetPriceGroup`` /
  ``GetPriceDepthSideCount`` / ``GetTheoreticalValues``, which keep the GIL (:func:`_gil_holding`).
  No logging, no I/O, no request calls.
  Every handler is wrapped in try/except: an error is counted, never raised into native frames.
- Every callback object stays referenced for the life of the process (module ``_KEEPALIVE``):
  a collected thunk that the DLL calls crashes the process.
- The DLL's native thread gets one Python thread state for the life of the process
  (:func:`_pin_thread_state`, on its first callback). ctypes wraps each foreign-thread callback in
  ``PyGILState_Ensure``/``Release``, which for a thread Python did not create builds and tears
  down a thread state on every call: measured ~20 us per callback, five to twenty times the
  cost of the callback itself. One extra ``Ensure`` that is never released keeps it.
- Order routing (``DLLInitializeLogin`` only): ``SetOrderCallback`` and
  ``SetTradingMessageResultCallback`` are registered with the others. The order callback reads
  the order with the accessor ``GetOrderDetails`` (two passes, GIL kept, inside the callback as
  the manual intends) and enqueues a copied ``RawOrder`` (or ``RawOrderError`` naming the order
  when the read fails); the message-result callback enqueues a ``RawTradingMessage``. They share
  ``events`` with market data, in callback order, and are never dropped on a full queue. The
  request calls are in :mod:`~pipelines.adapters.profitdll.routing` (``OrderRouting``).
- Readiness: login 0, activation 0, market data 4, routing 2 or 5; each latched the first time
  it is seen, in any order. Market data 6 = degraded (the client is not keeping up) until 4
  again. A login or activation rejection before readiness is reported by :meth:`wait_ready` as
  :class:`ProfitLoginError`; state codes during ``DLLFinalize`` (login 1 = "ending") are ignored.
- One initialization per process and DLL file (:class:`AlreadyInitializedError`).
- :meth:`finalize` calls ``DLLFinalize``; callbacks may fire until it returns, so the queue is
  drained *after* it (by the session).

Raw events are NamedTuples (``RawTrade``, ``RawBook``...), copied out of native memory; the
session turns them into pipeline messages.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
import threading
import time
from collections import Counter, deque
from ctypes import POINTER, byref, c_double, c_int32, c_int64, c_size_t, c_uint8, c_void_p, c_wchar_p
from datetime import date, timedelta
from pathlib import Path
from threading import get_ident, get_native_id
from typing import Any, Callable, Mapping, NamedTuple

from pipelines.adapters.profitdll import structs as S
from pipelines.adapters.profitdll.routing import (
    ROUTING_SIGNATURES,
    RawOrderError,
    read_order,
    trading_message_from,
)
from pipelines.adapters.profitdll.errors import (
    AlreadyInitializedError,
    HistoryTimeoutError,
    ProfitDLLLoadError,
    ProfitLoginError,
    ProfitNotReady,
    check,
    error_for,
)

log = logging.getLogger("quantumtrader.profitdll")

ENV_DLL_PATH = "PROFITDLL_PATH"
DLL_NAMES = ("ProfitDLL64.dll", "ProfitDLL.dll") if ctypes.sizeof(c_void_p) == 8 else ("ProfitDLL.dll",)
MAX_DEPTH_LEVELS = 50  # levels read per side on a price-depth FullBook
MAX_OFFER_ARRAY_BYTES = 64 << 20  # a FullBook array header claiming more is corrupt

# -- connection states (§1.4) -----------------------------------------------------------------
LOGIN, ROUTING, MARKET_DATA, ACTIVATION = 0, 1, 2, 3
CHANNEL_NAMES = {LOGIN: "login", ROUTING: "routing", MARKET_DATA: "market data", ACTIVATION: "activation"}
RESULT_NAMES = {
    LOGIN: {0: "LOGIN_CONNECTED", 1: "LOGIN_INVALID", 2: "INVALID_PASS", 3: "BLOCKED_PASS", 4: "EXPIRED_PASS",
            200: "UNKNOWN_ERR"},
    ROUTING: {0: "DISCONNECTED", 1: "CONNECTING", 2: "CONNECTED", 3: "BROKER_DISCONNECTED", 4: "BROKER_CONNECTING",
              5: "BROKER_CONNECTED"},
    MARKET_DATA: {0: "DISCONNECTED", 1: "CONNECTING", 2: "WAITING", 3: "NOT_LOGGED", 4: "CONNECTED",
                  5: "PERFORMANCE_WARNING", 6: "PARTIAL_CONNECTED"},
    ACTIVATION: {0: "ACTIVATE_VALID", 1: "ACTIVATE_INVALID"},
}
READY_RESULTS = {LOGIN: (0,), ROUTING: (2, 5), MARKET_DATA: (4,), ACTIVATION: (0,)}
MARKET_DEGRADED = 6
MARKET_CONNECTED = 4


def state_name(channel: int, result: int | None) -> str:
    if result is None:
        return "none yet"
    return f"{RESULT_NAMES.get(channel, {}).get(result, 'UNKNOWN')} ({result})"


# -- raw events (what the callbacks enqueue) --------------------------------------------------


class RawState(NamedTuple):
    ts_recv: int
    state_type: int
    result: int


class RawTrade(NamedTuple):
    """A V2 trade after ``TranslateTrade``; the date is the SystemTime in B3 local time."""

    ts_recv: int
    ticker: str
    exchange: str
    flags: int  # TC_IS_EDIT, TC_LAST_PACKET
    year: int
    month: int
    day_of_week: int
    day: int
    hour: int
    minute: int
    second: int
    millisecond: int
    number: int
    price: float
    qty: int
    volume: float
    buy_agent: int
    sell_agent: int
    trade_type: int


class RawBook(NamedTuple):
    """One offer-book V2 callback. FullBook arrays are copied bytes (already freed in the DLL)."""

    ts_recv: int
    ticker: str
    exchange: str
    action: int
    position: int
    side: int
    qty: int
    agent: int
    offer_id: int
    price: float
    has_price: int
    has_qty: int
    has_date: int
    has_offer_id: int
    has_agent: int
    date: str
    sell_array: bytes | None
    buy_array: bytes | None


class RawDaily(NamedTuple):
    ts_recv: int
    ticker: str
    exchange: str
    date: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    adjustment: float
    max_limit: float
    min_limit: float
    volume_buyer: float
    volume_seller: float
    quantity: int
    trades: int
    open_contracts: int
    quantity_buyer: int
    quantity_seller: int
    trades_buyer: int
    trades_seller: int


class RawProgress(NamedTuple):
    ts_recv: int
    ticker: str
    exchange: str
    progress: int


class RawInvalidTicker(NamedTuple):
    ts_recv: int
    ticker: str
    exchange: str


class PriceLevel(NamedTuple):
    side: int
    position: int
    price: float
    count: int
    qty: int
    flags: int


class RawDepth(NamedTuple):
    """A price-depth callback with the levels read inside it (one for add/edit/insert, all on FullBook)."""

    ts_recv: int
    ticker: str
    exchange: str
    side: int
    position: int
    update_type: int
    levels: tuple[PriceLevel, ...]


# -- loading -----------------------------------------------------------------------------------


def resolve_dll_path(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The absolute DLL file to load: ``path``, else ``$PROFITDLL_PATH``; never a search of the CWD."""
    env = os.environ if env is None else env
    if path:
        given, origin = str(path), "the dll_path argument"
    elif env.get(ENV_DLL_PATH):
        given, origin = env[ENV_DLL_PATH], f"${ENV_DLL_PATH}"
    else:
        raise ProfitDLLLoadError(
            f"no ProfitDLL location: pass dll_path (config profitdll.dll_path) or set {ENV_DLL_PATH} "
            "to the DLL file or its folder; the working directory is never searched")
    p = Path(given).expanduser().absolute()
    if p.is_dir():
        for name in DLL_NAMES:
            if (p / name).is_file():
                return p / name
        raise ProfitDLLLoadError(f"no {' or '.join(DLL_NAMES)} in folder {p} (from {origin})")
    if not p.is_file():
        raise ProfitDLLLoadError(f"ProfitDLL not found at {p} (from {origin})")
    return p


# The legacy callback slots of the init functions are always passed as None: declared c_void_p
# (a CFUNCTYPE argtype refuses None). Their prototypes are in structs.py for reference.
_LEGACY = c_void_p
_SIGNATURES: dict[str, tuple[Any, list]] = {
    # key, user, password, State, History, OrderChange, Account, NewTrade, NewDaily, PriceBook,
    # OfferBook, HistoryTrade, Progress, TinyBook
    "DLLInitializeLogin": (c_int32, [c_wchar_p, c_wchar_p, c_wchar_p, S.TStateCallback, _LEGACY, _LEGACY, _LEGACY,
                                     _LEGACY, S.TNewDailyCallback, _LEGACY, _LEGACY, _LEGACY, S.TProgressCallback,
                                     _LEGACY]),
    # key, user, password, State, NewTrade, NewDaily, PriceBook, OfferBook, HistoryTrade, Progress, TinyBook
    "DLLInitializeMarketLogin": (c_int32, [c_wchar_p, c_wchar_p, c_wchar_p, S.TStateCallback, _LEGACY,
                                           S.TNewDailyCallback, _LEGACY, _LEGACY, _LEGACY, S.TProgressCallback,
                                           _LEGACY]),
    "DLLFinalize": (c_int32, []),
    "SetTradeCallbackV2": (c_int32, [S.TConnectorTradeCallback]),
    "SetHistoryTradeCallbackV2": (c_int32, [S.TConnectorTradeCallback]),
    "SetOfferBookCallbackV2": (c_int32, [S.TOfferBookCallbackV2]),
    "SetInvalidTickerCallback": (c_int32, [S.TInvalidTickerCallback]),
    "SetPriceDepthCallback": (c_int32, [S.TConnectorPriceDepthCallback]),
    "TranslateTrade": (c_int32, [c_size_t, S.PConnectorTrade]),
    "FreePointer": (c_int32, [c_void_p, c_int32]),
    "SubscribeTicker": (c_int32, [c_wchar_p, c_wchar_p]),
    "UnsubscribeTicker": (c_int32, [c_wchar_p, c_wchar_p]),
    "SubscribeOfferBook": (c_int32, [c_wchar_p, c_wchar_p]),
    "UnsubscribeOfferBook": (c_int32, [c_wchar_p, c_wchar_p]),
    # PConnectorAssetIdentifier arguments are c_void_p so byref() of either record form is accepted.
    "SubscribePriceDepth": (c_int32, [c_void_p]),
    "UnsubscribePriceDepth": (c_int32, [c_void_p]),
    "GetPriceDepthSideCount": (c_int32, [c_void_p, c_uint8]),
    "GetPriceGroup": (c_int32, [c_void_p, c_uint8, c_int32, S.PConnectorPriceGroup]),
    "GetTheoreticalValues": (c_int32, [c_void_p, POINTER(c_double), POINTER(c_int64)]),
    "GetHistoryTrades": (c_int32, [c_wchar_p, c_wchar_p, c_wchar_p, c_wchar_p]),
}
_SIGNATURES.update(ROUTING_SIGNATURES)
# Newer than the oldest 4.0 builds: a DLL without them still streams trades and the offer book.
# The routing functions too: OrderRouting names the missing ones when it is asked for.
_OPTIONAL = frozenset({"SetPriceDepthCallback", "SubscribePriceDepth", "UnsubscribePriceDepth",
                       "GetPriceDepthSideCount", "GetPriceGroup", "GetTheoreticalValues",
                       "SetHistoryTradeCallbackV2", "DLLInitializeLogin"}) | frozenset(ROUTING_SIGNATURES)


_DLL_DIRECTORIES: list = []  # add_dll_directory handles, kept for the life of the process


def load_library(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None):
    """Load the DLL (WinDLL/CDLL) from :func:`resolve_dll_path` and declare every function used."""
    file = resolve_dll_path(path, env)
    try:
        if S.IS_WINDOWS:  # pragma: no cover - Windows node only
            _DLL_DIRECTORIES.append(os.add_dll_directory(str(file.parent)))  # its dependencies live next to it
        lib = S.LIBRARY(str(file))
    except OSError as e:
        raise ProfitDLLLoadError(f"cannot load {file}: {e} (a 64-bit Python needs the 64-bit DLL)") from None
    missing = []
    for name, (restype, argtypes) in _SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            if name not in _OPTIONAL:
                missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise ProfitDLLLoadError(f"{file} lacks {', '.join(missing)}: ProfitDLL 4.0.0.30 or newer is needed")
    return lib


# ctypes releases the GIL around every foreign call unless the function carries the PYTHONAPI
# flag (what ctypes.PyDLL / PYFUNCTYPE use), combined here with the DLL's calling convention.
if S.IS_WINDOWS:  # pragma: no cover - Windows node only
    _CONVENTION = ctypes._FUNCFLAG_STDCALL  # type: ignore[attr-defined]
else:
    _CONVENTION = ctypes._FUNCFLAG_CDECL
_KEEP_GIL_FLAGS = ctypes._FUNCFLAG_PYTHONAPI | _CONVENTION


def _gil_holding(lib, name: str):
    """``lib.<name>`` (already declared by :func:`load_library`) as a function that keeps the GIL
    during the call; None if the DLL lacks it.

    For the accessors called inside callbacks (``TranslateTrade``, ``FreePointer``,
    ``GetPriceGroup``...): they only copy a few bytes, and a call that released the GIL let the
    consumer thread take it, stalling the DLL's thread in the middle of the callback until the
    interpreter switched back (up to its 5 ms switch interval, once per trade at high rates).
    Holding it cannot deadlock: every callback runs on the DLL's single thread (docs §5.1), and
    the request functions that other threads call release the GIL as usual.
    """
    fn = getattr(lib, name, None)
    if fn is None:
        return None

    class Prototype(ctypes._CFuncPtr):  # what ctypes.PYFUNCTYPE builds, with the DLL's convention
        _argtypes_ = tuple(fn.argtypes or ())
        _restype_ = fn.restype
        _flags_ = _KEEP_GIL_FLAGS

    return Prototype((name, lib))


# One init per process and DLL file (the real DLL fails a second one, leaking its resources).
_INITIALIZED: set[str] = set()
_INIT_LOCK = threading.Lock()
# Every callback thunk ever handed to a DLL: never collected while the process lives.
_KEEPALIVE: list = []


def keep_alive(thunk) -> None:
    """Keep a callback thunk referenced until the process ends (see :data:`_KEEPALIVE`)."""
    _KEEPALIVE.append(thunk)


# Raw events are built with tuple.__new__ in the callbacks: the same NamedTuple without the
# generated __new__'s argument handling (measurable at tens of thousands of callbacks a second).
_tuple_new = tuple.__new__
_PyGILState_Ensure = ctypes.pythonapi.PyGILState_Ensure
_PyGILState_Ensure.restype = ctypes.c_int
_PyGILState_Ensure.argtypes = []


def _pin_thread_state() -> None:
    """Keep the calling (native) thread's Python thread state alive until interpreter exit.

    Called once per native thread from inside a callback (the GIL is held): the extra
    ``PyGILState_Ensure`` raises the state's use count, so ctypes' per-callback ``Release`` no
    longer destroys it. It is reclaimed when the interpreter finalizes.
    """
    _PyGILState_Ensure()


class ProfitDLL:
    """The market-data side of one ProfitDLL instance. See the module docstring for the rules."""

    def __init__(self, dll_path: str | os.PathLike | None = None, *, queue_max: int = 1_000_000,
                 env: Mapping[str, str] | None = None, pin_thread_state: bool = True):
        self.path = resolve_dll_path(dll_path, env)
        self.lib = load_library(self.path)
        self.queue_max = queue_max
        self.events: deque = deque()  # live events, oldest first
        self.history: deque = deque()  # RawTrade / RawProgress of GetHistoryTrades
        self.received: Counter[str] = Counter()
        self.dropped = 0
        self.decode_errors: Counter[str] = Counter()
        self.handler_errors: Counter[str] = Counter()
        self.last_error: str | None = None
        self.invalid_tickers: Counter[str] = Counter()
        self.callback_thread_ids: set[int] = set()  # native ids of the threads that called back
        # The same threads by Python ident: get_ident() is pthread_self(), get_native_id() a gettid
        # system call, too dear to make on every callback just to spot a new thread.
        self._callback_idents: set[int] = set()
        self.pin_thread_state = pin_thread_state
        self.state: dict[int, int | None] = {LOGIN: None, ROUTING: None, MARKET_DATA: None, ACTIVATION: None}
        self.latched: dict[int, bool] = {LOGIN: False, ROUTING: False, MARKET_DATA: False, ACTIVATION: False}
        self.ready = False
        self.degraded = False
        self.degraded_episodes = 0
        self.login_error: tuple[int, int] | None = None
        self.history_progress: dict[str, int] = {}
        self.initialized = False
        self.finalized = False
        self._tearing_down = False
        self._state_event = threading.Event()
        self._history_lock = threading.Lock()
        self._assets: dict[tuple[str, str], S.TConnectorAssetIdentifierSafe] = {}
        # Reused by the native thread only (callbacks are serialized on it).
        self._trade_buf = S.TConnectorTrade(Version=0)
        self._trade_ref = byref(self._trade_buf)
        self._group = S.TConnectorPriceGroup(Version=0)
        self._group_ref = byref(self._group)
        self._theo_price = c_double()
        self._theo_qty = c_int64()
        lib = self.lib
        # The accessors the callbacks call, bound so that they keep the GIL (see _gil_holding).
        self._translate = _gil_holding(lib, "TranslateTrade")
        self._free = _gil_holding(lib, "FreePointer")
        self._side_count = _gil_holding(lib, "GetPriceDepthSideCount")
        self._price_group = _gil_holding(lib, "GetPriceGroup")
        self._theoretical = _gil_holding(lib, "GetTheoreticalValues")
        self._order_details = _gil_holding(lib, "GetOrderDetails")
        self._thunks = {
            "state": S.TStateCallback(self._on_state),
            "daily": S.TNewDailyCallback(self._on_daily),
            "progress": S.TProgressCallback(self._on_progress),
            "trade": S.TConnectorTradeCallback(self._on_trade),
            "history_trade": S.TConnectorTradeCallback(self._on_history_trade),
            "book": S.TOfferBookCallbackV2(self._on_book),
            "invalid_ticker": S.TInvalidTickerCallback(self._on_invalid_ticker),
            "depth": S.TConnectorPriceDepthCallback(self._on_depth),
            "order": S.TConnectorOrderCallback(self._on_order),
            "trading_message": S.TConnectorTradingMessageResultCallback(self._on_trading_message),
        }
        _KEEPALIVE.extend(self._thunks.values())

    def __repr__(self) -> str:
        return f"ProfitDLL(path={str(self.path)!r}, initialized={self.initialized}, ready={self.ready})"

    # -- init / finalize ------------------------------------------------------------------------

    def _claim_process_slot(self) -> None:
        key = os.path.normcase(str(self.path.resolve()))
        with _INIT_LOCK:
            if key in _INITIALIZED:
                raise AlreadyInitializedError(
                    f"ProfitDLL at {self.path} was already initialized in this process; it allows one login "
                    "per process (a second init fails and leaks): start a new host process")
            _INITIALIZED.add(key)  # claimed even if init fails: the DLL may be half-initialized

    def initialize_market_login(self, credentials) -> None:
        """``DLLInitializeMarketLogin`` (market data only), then the modern callbacks at once."""
        self._claim_process_slot()
        t = self._thunks
        result = self.lib.DLLInitializeMarketLogin(
            credentials.key, credentials.user, credentials.password,
            t["state"], None, t["daily"], None, None, None, t["progress"], None)
        check(result, "DLLInitializeMarketLogin")
        self._after_init("DLLInitializeMarketLogin")

    def initialize_login(self, credentials) -> None:
        """``DLLInitializeLogin`` (market data + routing), then the modern callbacks at once."""
        if getattr(self.lib, "DLLInitializeLogin", None) is None:
            raise ProfitDLLLoadError(f"{self.path} has no DLLInitializeLogin")
        self._claim_process_slot()
        t = self._thunks
        result = self.lib.DLLInitializeLogin(
            credentials.key, credentials.user, credentials.password,
            t["state"], None, None, None, None, t["daily"], None, None, None, t["progress"], None)
        check(result, "DLLInitializeLogin")
        self._after_init("DLLInitializeLogin", routing=True)

    def _after_init(self, func: str, routing: bool = False) -> None:
        self.initialized = True
        # Straight after NL_OK, before anything else: late registration crashed SubscribePriceDepth.
        setters = [("SetTradeCallbackV2", "trade"), ("SetOfferBookCallbackV2", "book"),
                   ("SetInvalidTickerCallback", "invalid_ticker"), ("SetHistoryTradeCallbackV2", "history_trade"),
                   ("SetPriceDepthCallback", "depth")]
        if routing:  # order events exist only with the routing login
            setters += [("SetOrderCallback", "order"), ("SetTradingMessageResultCallback", "trading_message")]
        for setter, kind in setters:
            fn = getattr(self.lib, setter, None)
            if fn is None:
                continue
            check(fn(self._thunks[kind]), setter)
        log.info("%s: NL_OK, callbacks registered (%s)", func, self.path.name)

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the readiness rule holds; :class:`ProfitLoginError` / :class:`ProfitNotReady` otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.login_error is not None:
                channel, result = self.login_error
                raise ProfitLoginError(
                    f"ProfitDLL {CHANNEL_NAMES[channel]} rejected: {state_name(channel, result)}; "
                    "check PROFIT_KEY / PROFIT_USER / PROFIT_PASSWORD", channel, result)
            if self.ready:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = tuple(CHANNEL_NAMES[c] for c in (LOGIN, ACTIVATION, MARKET_DATA, ROUTING)
                                if not self.latched[c])
                detail = ", ".join(f"{CHANNEL_NAMES[c]} (last: {state_name(c, self.state[c])})"
                                   for c in (LOGIN, ACTIVATION, MARKET_DATA, ROUTING) if not self.latched[c])
                raise ProfitNotReady(f"ProfitDLL not ready after {timeout_s:g} s; waiting for {detail}", missing)
            self._state_event.wait(min(remaining, 0.05))
            self._state_event.clear()

    def finalize(self) -> None:
        """``DLLFinalize`` (joins the DLL's thread). Events that arrive meanwhile stay queued. Idempotent."""
        if not self.initialized or self.finalized:
            return
        self._tearing_down = True
        try:
            check(self.lib.DLLFinalize(), "DLLFinalize")
        finally:
            self.finalized = True
        log.info("DLLFinalize: NL_OK (%d events left to drain)", len(self.events))

    # -- requests (never from inside a callback) ------------------------------------------------

    def subscribe_ticker(self, ticker: str, exchange: str = "F") -> None:
        check(self.lib.SubscribeTicker(ticker, exchange), "SubscribeTicker")

    def unsubscribe_ticker(self, ticker: str, exchange: str = "F") -> None:
        check(self.lib.UnsubscribeTicker(ticker, exchange), "UnsubscribeTicker")

    def subscribe_offer_book(self, ticker: str, exchange: str = "F") -> None:
        check(self.lib.SubscribeOfferBook(ticker, exchange), "SubscribeOfferBook")

    def unsubscribe_offer_book(self, ticker: str, exchange: str = "F") -> None:
        check(self.lib.UnsubscribeOfferBook(ticker, exchange), "UnsubscribeOfferBook")

    def subscribe_price_depth(self, ticker: str, exchange: str = "F") -> None:
        ident = self._assets.setdefault((ticker, exchange), S.asset_identifier(ticker, exchange))
        check(self.lib.SubscribePriceDepth(byref(ident)), "SubscribePriceDepth")

    def unsubscribe_price_depth(self, ticker: str, exchange: str = "F") -> None:
        ident = self._assets.setdefault((ticker, exchange), S.asset_identifier(ticker, exchange))
        check(self.lib.UnsubscribePriceDepth(byref(ident)), "UnsubscribePriceDepth")

    def request_history_day(self, ticker: str, exchange: str, day: date) -> None:
        """Ask for one day of trades (the DLL refuses WIN/WDO ranges of 10+ days and starts older than 30 days)."""
        start, end = f"{day:%d/%m/%Y} 00:00:00", f"{day:%d/%m/%Y} 23:59:59"
        check(self.lib.GetHistoryTrades(ticker, exchange, start, end), "GetHistoryTrades")

    def get_history_trades(self, ticker: str, exchange: str, day: date, *, timeout_s: float = 60.0,
                           on_progress: Callable[[int], None] | None = None,
                           quiet_s: float = 0.5) -> list[RawTrade]:
        """One day of history trades, blocking until the DLL says it is complete.

        Complete = the trade flagged ``TC_LAST_PACKET`` and progress 100 both seen, or either of
        them followed by ``quiet_s`` without anything new (days without trades, builds without the
        flag). The DLL has no cancel call and may report progress 0 forever: past ``timeout_s``
        this raises :class:`HistoryTimeoutError` (restarting the host process is the remedy).
        """
        with self._history_lock:
            self.history.clear()  # leftovers of an abandoned request
            self.request_history_day(ticker, exchange, day)
            trades: list[RawTrade] = []
            last_packet = done_progress = False
            progress = -1
            deadline = time.monotonic() + timeout_s
            last_seen = time.monotonic()
            while True:
                while self.history:
                    item = self.history.popleft()
                    if item.ticker != ticker:
                        continue
                    last_seen = time.monotonic()
                    if type(item) is RawProgress:
                        progress = item.progress
                        if on_progress is not None:
                            on_progress(progress)
                        done_progress = done_progress or progress >= 100
                    else:
                        trades.append(item)
                        last_packet = last_packet or bool(item.flags & S.TC_LAST_PACKET)
                now = time.monotonic()
                if (last_packet and done_progress) or ((last_packet or done_progress) and now - last_seen >= quiet_s):
                    return trades
                if now >= deadline:
                    raise HistoryTimeoutError(
                        f"GetHistoryTrades {ticker} {day:%d/%m/%Y}: not complete after {timeout_s:g} s (last "
                        f"progress {progress}, {len(trades)} trades); the DLL has no cancel call: restart the host process",
                        func="GetHistoryTrades")
                time.sleep(0.002)

    def get_history_range(self, ticker: str, exchange: str, first: date, last: date, **kw) -> list[RawTrade]:
        """Weekdays ``first``..``last`` inclusive, one request per day, in order."""
        out: list[RawTrade] = []
        day = first
        while day <= last:
            if day.weekday() < 5:
                out.extend(self.get_history_trades(ticker, exchange, day, **kw))
            day += timedelta(days=1)
        return out

    # -- consumer side ---------------------------------------------------------------------------

    def pop_events(self, max_events: int) -> list:
        """Up to ``max_events`` queued raw events, oldest first. Never blocks."""
        q = self.events
        pop = q.popleft
        return [pop() for _ in range(min(max_events, len(q)))]

    def stats(self) -> dict:
        return {
            "received": dict(self.received),
            "dropped": self.dropped,
            "decode_errors": dict(self.decode_errors),
            "handler_errors": dict(self.handler_errors),
            "last_error": self.last_error,
            "invalid_tickers": dict(self.invalid_tickers),
            "state": {CHANNEL_NAMES[c]: self.state[c] for c in (LOGIN, ROUTING, MARKET_DATA, ACTIVATION)},
            "ready": self.ready,
            "degraded": self.degraded,
            "degraded_episodes": self.degraded_episodes,
            "queued": len(self.events),
        }

    # -- callbacks: native thread; copy, enqueue, return -------------------------------------------

    def _failed(self, kind: str, exc: BaseException) -> None:
        try:
            self.handler_errors[kind] += 1
            self.last_error = f"{kind} callback: {type(exc).__name__}: {exc}"
        except BaseException:  # never raise into the DLL
            pass

    def _new_thread(self) -> None:
        self._callback_idents.add(get_ident())
        self.callback_thread_ids.add(get_native_id())
        if self.pin_thread_state:
            _pin_thread_state()

    def _put(self, queue: deque, item: Any) -> None:
        if len(queue) >= self.queue_max:
            self.dropped += 1
        else:
            queue.append(item)

    def _on_state(self, state_type: int, result: int) -> None:
        try:
            ts = time.time_ns()
            self._enter("state")
            self.state[state_type] = result
            if not self._tearing_down and state_type in self.latched:
                if result in READY_RESULTS[state_type]:
                    self.latched[state_type] = True
                    if not self.ready and all(self.latched.values()):
                        self.ready = True
                elif not self.ready and self.login_error is None and state_type in (LOGIN, ACTIVATION):
                    self.login_error = (state_type, result)
                if state_type == MARKET_DATA:
                    if result == MARKET_DEGRADED and not self.degraded:
                        self.degraded = True
                        self.degraded_episodes += 1
                    elif result == MARKET_CONNECTED:
                        self.degraded = False
            self._put(self.events, _tuple_new(RawState, (ts, state_type, result)))
            self._state_event.set()
        except BaseException as e:
            self._failed("state", e)

    def _translated(self, kind: str, asset, p_trade: int, flags: int) -> RawTrade | None:
        buf = self._trade_buf
        buf.Version = 0
        result = self._translate(p_trade, self._trade_ref)
        if result != 0:
            self.decode_errors[kind] += 1
            self.last_error = str(error_for(result, "TranslateTrade"))
            return None
        fields = S.TRADE_LAYOUT.unpack_from(buf)
        return _tuple_new(RawTrade, (time.time_ns(), asset.Ticker or "", asset.Exchange or "", flags) + fields[1:])

    def _enter(self, kind: str) -> int:
        """Every callback's first step: know the DLL's thread, count the call, stamp the receive time."""
        if get_ident() not in self._callback_idents:
            self._new_thread()
        self.received[kind] += 1
        return time.time_ns()

    def _received_trade(self, kind: str, asset, p_trade: int, flags: int) -> RawTrade | None:
        self._enter(kind)
        return self._translated(kind, asset, p_trade, flags)

    def _on_trade(self, asset, p_trade: int, flags: int) -> None:
        try:
            item = self._received_trade("trade", asset, p_trade, flags)
            if item is not None:
                events = self.events  # _put, inlined: this runs once per trade
                if len(events) < self.queue_max:
                    events.append(item)
                else:
                    self.dropped += 1
        except BaseException as e:
            self._failed("trade", e)

    def _on_history_trade(self, asset, p_trade: int, flags: int) -> None:
        try:
            item = self._received_trade("history_trade", asset, p_trade, flags)
            if item is not None:
                self._put(self.history, item)
        except BaseException as e:
            self._failed("history_trade", e)

    def _take_offer_array(self, ptr: int) -> bytes | None:
        """Copy one FullBook array out of the DLL and release it with FreePointer (always)."""
        total = 0
        data = None
        try:
            _count, total = struct.unpack("<ii", ctypes.string_at(ptr, 8))
            if 12 <= total <= MAX_OFFER_ARRAY_BYTES:
                data = ctypes.string_at(ptr, total)
            else:
                self.decode_errors["offer_array"] += 1
                self.last_error = f"offer array header claims {total} bytes"
        finally:
            if self._free(ptr, total) != 0:
                self.decode_errors["free_pointer"] += 1
        return data

    def _on_book(self, asset, action, position, side, qty, agent, offer_id, price,
                 has_price, has_qty, has_date, has_offer_id, has_agent, date_text, p_sell, p_buy) -> None:
        try:
            ts = time.time_ns()
            self._enter("book")
            sell = self._take_offer_array(p_sell) if p_sell else None
            buy = self._take_offer_array(p_buy) if p_buy else None
            events = self.events  # _put, inlined: this runs once per book change
            if len(events) < self.queue_max:
                events.append(_tuple_new(RawBook, (
                    ts, asset.ticker or "", asset.bolsa or "", action, position, side, qty, agent, offer_id, price,
                    has_price, has_qty, has_date, has_offer_id, has_agent, date_text or "", sell, buy)))
            else:
                self.dropped += 1
        except BaseException as e:
            self._failed("book", e)

    def _on_daily(self, asset, date_text, *values) -> None:
        try:
            ts = self._enter("daily")
            self._put(self.events, _tuple_new(RawDaily, (ts, asset.ticker or "", asset.bolsa or "", date_text or "")
                                              + values))
        except BaseException as e:
            self._failed("daily", e)

    def _on_progress(self, asset, progress: int) -> None:
        try:
            ts = self._enter("progress")
            ticker = asset.ticker or ""
            self.history_progress[ticker] = progress
            self._put(self.history, RawProgress(ts, ticker, asset.bolsa or "", progress))
        except BaseException as e:
            self._failed("progress", e)

    def _on_invalid_ticker(self, asset) -> None:
        try:
            ts = self._enter("invalid_ticker")
            ticker = asset.Ticker or ""
            self.invalid_tickers[ticker] += 1
            self._put(self.events, RawInvalidTicker(ts, ticker, asset.Exchange or ""))
        except BaseException as e:
            self._failed("invalid_ticker", e)

    def _read_group(self, asset_ref, side: int, position: int) -> PriceLevel | None:
        group = self._group
        group.Version = 0
        result = self._price_group(asset_ref, side, position, self._group_ref)
        if result != 0:
            self.decode_errors["price_group"] += 1
            self.last_error = str(error_for(result, "GetPriceGroup"))
            return None
        price = group.Price
        if group.PriceGroupFlags & S.PG_IS_THEORIC and self._theoretical is not None:
            # The auction level's price is -INF in the group; the real value comes from here.
            if self._theoretical(asset_ref, byref(self._theo_price), byref(self._theo_qty)) == 0:
                price = self._theo_price.value
        return PriceLevel(side, position, price, group.Count, group.Quantity, group.PriceGroupFlags)

    def _on_depth(self, asset, side: int, position: int, update_type: int) -> None:
        try:
            ts = self._enter("depth")
            asset_ref = byref(asset)
            levels: list[PriceLevel] = []
            if update_type in (0, 1, 3):  # add, edit, insert: the level at that position
                level = self._read_group(asset_ref, side, position)
                if level is not None:
                    levels.append(level)
            elif update_type == 4:  # full book: every level, up to MAX_DEPTH_LEVELS per side
                for s in ((0, 1) if side == S.SIDE_BOTH else (side,)):
                    count = self._side_count(asset_ref, s)
                    if count < 0:
                        self.decode_errors["price_depth_count"] += 1
                        continue
                    for pos in range(min(count, MAX_DEPTH_LEVELS)):
                        level = self._read_group(asset_ref, s, pos)
                        if level is not None:
                            levels.append(level)
            self._put(self.events, RawDepth(ts, asset.Ticker or "", asset.Exchange or "", side, position,
                                            update_type, tuple(levels)))
        except BaseException as e:
            self._failed("depth", e)

    def _on_order(self, order_id) -> None:
        """``TConnectorOrderCallback``: read the order (two-pass GetOrderDetails) and enqueue it."""
        try:
            ts = self._enter("order")
            local_id, cl_ord_id = order_id.LocalOrderID, order_id.ClOrderID or ""
            try:
                item = read_order(self._order_details, local_id, cl_ord_id, ts)
            except Exception as e:  # the order is still named: the consumer can read it again
                self.decode_errors["order"] += 1
                self.last_error = f"order callback: {type(e).__name__}: {e}"
                item = RawOrderError(local_id, cl_ord_id, f"{type(e).__name__}: {e}", ts)
            self.events.append(item)  # never dropped: a lost order event leaves an order's state wrong
        except BaseException as e:
            self._failed("order", e)

    def _on_trading_message(self, p_result) -> None:
        """``TConnectorTradingMessageResultCallback``: copy the result (valid during the call only)."""
        try:
            ts = self._enter("trading_message")
            if not p_result:
                self.decode_errors["trading_message"] += 1
                self.last_error = "trading message result callback with a NULL pointer"
                return
            self.events.append(trading_message_from(p_result.contents, ts))  # never dropped, as orders
        except BaseException as e:
            self._failed("trading_message", e)
