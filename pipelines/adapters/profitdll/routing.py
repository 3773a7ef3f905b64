"""ProfitDLL order routing: accounts, orders, cancels, changes, positions, order events.

Design:

- :class:`OrderRouting` wraps an initialized :class:`~pipelines.adapters.profitdll.binding.ProfitDLL`
  (``DLLInitializeLogin``: the market-only login has no routing) and makes the *request* calls
  the DLL host needs: ``SendOrder`` (``TConnectorSendOrder`` Version 2, so the trading server's
  MessageID comes back), ``SendChangeOrderV2``, ``SendCancelOrderV2``,
  ``SendCancelAllOrdersV2``, ``SendZeroPositionV2``, ``GetPositionV2``, ``GetOrderDetails``,
  ``EnumerateAllOrders`` (recovery), ``GetAccountCount`` / ``GetAccounts`` / ``GetSubAccounts`` /
  ``GetAccountDetails``, ``SetDayTrade``. It is a separate class (not more ``ProfitDLL``
  methods) so the market-data wrapper stays what it was; it holds no state of its own but the
  enumeration thunk, and never any credential.
- Order *events* arrive on the DLL's thread: ``ProfitDLL`` registers ``SetOrderCallback`` and
  ``SetTradingMessageResultCallback`` straight after ``DLLInitializeLogin`` returns NL_OK, like
  its other callbacks, and its handlers use :func:`read_order` (the two-pass
  ``GetOrderDetails``, an accessor meant to be called there) to put a copied :class:`RawOrder`,
  or a :class:`RawTradingMessage`, on the same ``events`` queue as market data, in callback
  order. Order events are never dropped when the queue is full (losing one would leave an
  order's state wrong; there are few of them). A detail read that fails inside the callback
  enqueues a :class:`RawOrderError` naming the order, so the consumer can read it again with
  :meth:`OrderRouting.order_details`.
- Two-pass strings (``*Out`` records): first call with NULL string pointers fills the
  ``*Length`` fields; buffers of length + 1 are allocated; the second call fills them (the
  vendor example's pattern). Inline ``TString0In`` strings (account ids) are read directly.
- The routing password is an argument of each call that needs it, never an attribute: it is
  copied into a buffer this module owns, the record points at it, and the buffer is zeroed as
  soon as the call returns. It never appears in a message, a repr or a log line; errors name the
  function and the NL code only.
- Arguments are validated before any native call; a bad one raises ``ValueError`` with one
  line naming the argument (never its value when it is the password). A negative result raises
  the matching :class:`~pipelines.adapters.profitdll.errors.ProfitDLLError` subclass.
- Raw records keep the DLL's codes (side 1/2, type 1/2/4, status, validity) and its text as
  given; :data:`SIDE_NAMES` / :data:`ORDER_TYPE_NAMES` and
  :mod:`~pipelines.adapters.profitdll.order_codes` name them. Times are B3 local
  ``SystemTime`` converted to ns UTC (America/Sao_Paulo); 0 means "no date".

This module imports only ``structs`` and ``errors`` at load time: ``binding`` imports it.
"""

from __future__ import annotations

import ctypes
import math
import threading
from ctypes import byref, c_int32, c_int64, c_ssize_t, c_uint8, c_void_p
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from pipelines.adapters.profitdll import structs as S
from pipelines.adapters.profitdll.errors import NoPositionError, ProfitDLLError, ProfitDLLLoadError, check
from pipelines.model.clock import NS_PER_MS, SAO_PAULO, to_ns

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.adapters.profitdll.binding import ProfitDLL

SIDE_CODES = {"BUY": S.ORDER_SIDE_BUY, "SELL": S.ORDER_SIDE_SELL}
SIDE_NAMES = {code: name for name, code in SIDE_CODES.items()}
ORDER_TYPE_CODES = {"MARKET": S.ORDER_TYPE_MARKET, "LIMIT": S.ORDER_TYPE_LIMIT, "STOP_LIMIT": S.ORDER_TYPE_STOP_LIMIT}
ORDER_TYPE_NAMES = {code: name for name, code in ORDER_TYPE_CODES.items()}
POSITION_TYPES = (S.POSITION_DAY_TRADE, S.POSITION_CONSOLIDATED)
MAX_TEXT_CHARS = 1 << 16  # a *Length field above this is corrupt, not a string to allocate
MAX_ACCOUNTS = 10_000
MAX_NAME_CHARS = 64  # tickers, exchanges, account ids we accept as arguments

# Function name -> (restype, argtypes). Records are passed as c_void_p so byref() of either the
# documented or the *Safe form is accepted. All optional for load_library: a DLL without them
# still streams market data; OrderRouting names what is missing.
ROUTING_SIGNATURES: dict[str, tuple[Any, list]] = {
    "SetOrderCallback": (c_int32, [S.TConnectorOrderCallback]),
    "SetTradingMessageResultCallback": (c_int32, [S.TConnectorTradingMessageResultCallback]),
    "SendOrder": (c_int64, [c_void_p]),
    "SendChangeOrderV2": (c_int32, [c_void_p]),
    "SendCancelOrderV2": (c_int32, [c_void_p]),
    "SendCancelAllOrdersV2": (c_int32, [c_void_p]),
    "SendZeroPositionV2": (c_int64, [c_void_p]),
    "GetAccountCount": (c_int32, []),
    "GetAccounts": (c_int32, [c_int32, c_int32, c_int32, c_void_p]),
    "GetSubAccountCount": (c_int32, [c_void_p]),
    "GetSubAccounts": (c_int32, [c_void_p, c_int32, c_int32, c_int32, c_void_p]),
    "GetAccountDetails": (c_int32, [c_void_p]),
    "GetPositionV2": (c_int32, [c_void_p]),
    "GetOrderDetails": (c_int32, [c_void_p]),
    "EnumerateAllOrders": (c_int32, [c_void_p, c_uint8, c_ssize_t, S.TConnectorEnumerateOrdersProc]),
    "SetDayTrade": (c_int32, [c_int32]),
}


# -- records handed out ----------------------------------------------------------------------


class RoutingAccount(NamedTuple):
    broker_id: int
    account_id: str
    sub_account_id: str  # "" for a master account
    holder: str


class SendResult(NamedTuple):
    local_id: int  # the DLL's LocalOrderID (per session; the ClOrderID is the permanent one)
    message_id: int  # the trading server's message id (TConnectorSendOrder V2)


class RawOrder(NamedTuple):
    """An order as the DLL reports it (``GetOrderDetails`` or an enumerated ``TConnectorOrder``).
    Codes are the DLL's: side 1 buy / 2 sell, order_type 1 market / 2 limit / 4 stop-limit,
    status ``TConnectorOrderStatus``, validity ``VALIDITY_NAMES``. Prices of -1 mean "none"."""

    local_id: int
    cl_ord_id: str
    broker_id: int
    account_id: str
    sub_account_id: str
    ticker: str
    exchange: str
    side: int
    order_type: int
    status: int
    validity: int
    quantity: int
    traded_qty: int
    leaves_qty: int
    price: float
    stop_price: float
    avg_price: float
    date: int  # ns UTC of the order's creation (B3 local SystemTime converted); 0 = none
    last_update: int  # ns UTC of its last change; 0 = none
    text: str  # the DLL's TextMessage, as given
    event_id: int
    ts_recv: int = 0  # wall-clock ns when the callback ran (0 when read on request)


class RawOrderError(NamedTuple):
    """An order callback whose details could not be read (the order is named; read it again)."""

    local_id: int
    cl_ord_id: str
    error: str
    ts_recv: int


class RawTradingMessage(NamedTuple):
    """One ``TConnectorTradingMessageResult``: what happened to a message sent to the trading server."""

    broker_id: int
    local_id: int  # 0 in some results (docs: map them by message_id)
    cl_ord_id: str
    message_id: int
    result_code: int  # TConnectorTradingMessageResultCode, see order_codes
    message: str  # the DLL's text, as given
    ts_recv: int = 0


class RawPosition(NamedTuple):
    """``GetPositionV2`` for one account and asset. ``open_qty`` is signed: + bought, - sold."""

    ticker: str
    exchange: str
    open_qty: int
    open_avg_price: float
    open_side: int  # 1 bought, 2 sold, 0 flat/unknown (the DLL's code)
    daily_buy_qty: int
    daily_buy_avg_price: float
    daily_sell_qty: int
    daily_sell_avg_price: float
    daily_qty: int
    position_type: int  # 1 day trade, 2 consolidated
    event_id: int


# -- conversions -----------------------------------------------------------------------------


def systime_ns(st: S.SystemTime) -> int:
    """A B3 local ``SystemTime`` -> ns UTC; 0 for a zero or impossible date (the DLL's "none")."""
    if st.wYear == 0:
        return 0
    try:
        dt = datetime(st.wYear, st.wMonth, st.wDay, st.wHour, st.wMinute, st.wSecond, tzinfo=SAO_PAULO)
    except ValueError:
        return 0
    return to_ns(dt) + min(st.wMilliseconds, 999) * NS_PER_MS


def _signed_open_qty(qty: int, side: int) -> int:
    """OpenQuantity with OpenSide's sign: 2 (sold) negative, 1 (bought) positive; side 0 keeps
    whatever sign the DLL gave (0 when flat)."""
    if side == S.POSITION_SIDE_SOLD:
        return -abs(qty)
    if side == S.POSITION_SIDE_BOUGHT:
        return abs(qty)
    return qty


def _buffer_for(length: int, what: str) -> ctypes.Array | None:
    """The second-pass buffer for a string the DLL says is ``length`` chars long (None for 0)."""
    if length < 0 or length > MAX_TEXT_CHARS:
        raise ProfitDLLError(f"GetOrderDetails: {what} length {length} is out of range", func="GetOrderDetails")
    return ctypes.create_unicode_buffer(length + 1) if length else None


def read_order(get_details, local_id: int, cl_ord_id: str, ts_recv: int = 0) -> RawOrder:
    """``GetOrderDetails`` for one order, two passes. ``get_details`` is the declared function
    (the GIL-holding form inside callbacks). Either id may be empty (-1 / "")."""
    out = S.TConnectorOrderOut(Version=S.ORDER_OUT_VERSION)
    out.OrderID.Version = 0
    out.OrderID.LocalOrderID = local_id
    cl_buf = ctypes.create_unicode_buffer(cl_ord_id) if cl_ord_id else None
    out.OrderID.ClOrderID = ctypes.addressof(cl_buf) if cl_buf is not None else None
    out.AccountID.Version = 0
    out.AssetID.Version = 0
    ref = byref(out)
    check(get_details(ref), "GetOrderDetails")  # pass 1: lengths
    ticker = _buffer_for(out.AssetID.TickerLength, "ticker")
    exchange = _buffer_for(out.AssetID.ExchangeLength, "exchange")
    text = _buffer_for(out.TextMessageLength, "text")
    out.AssetID.Ticker = ctypes.addressof(ticker) if ticker is not None else None
    out.AssetID.Exchange = ctypes.addressof(exchange) if exchange is not None else None
    out.TextMessage = ctypes.addressof(text) if text is not None else None
    check(get_details(ref), "GetOrderDetails")  # pass 2: the strings
    acc = out.AccountID
    return RawOrder(
        out.OrderID.LocalOrderID,
        S.wstr(out.OrderID.ClOrderID),
        acc.BrokerID,
        S.utf16_text(acc.AccountID, acc.AccountIDLength),
        S.utf16_text(acc.SubAccountID, acc.SubAccountIDLength),
        ticker.value if ticker is not None else "",
        exchange.value if exchange is not None else "",
        out.OrderSide,
        out.OrderType,
        out.OrderStatus,
        out.ValidityType,
        out.Quantity,
        out.TradedQuantity,
        out.LeavesQuantity,
        out.Price,
        out.StopPrice,
        out.AveragePrice,
        systime_ns(out.Date),
        systime_ns(out.LastUpdate),
        text.value if text is not None else "",
        out.EventID,
        ts_recv,
    )


def order_from_record(o: S.TConnectorOrder) -> RawOrder:
    """A ``TConnectorOrder`` (enumeration; valid during the proc only) copied into a RawOrder."""
    acc, asset = o.AccountID, o.AssetID
    return RawOrder(
        o.OrderID.LocalOrderID, o.OrderID.ClOrderID or "", acc.BrokerID, acc.AccountID or "", acc.SubAccountID or "",
        asset.Ticker or "", asset.Exchange or "", o.OrderSide, o.OrderType, o.OrderStatus, o.ValidityType,
        o.Quantity, o.TradedQuantity, o.LeavesQuantity, o.Price, o.StopPrice, o.AveragePrice,
        systime_ns(o.Date), systime_ns(o.LastUpdate), o.TextMessage or "", o.EventID, 0)


def trading_message_from(r: S.TConnectorTradingMessageResult, ts_recv: int) -> RawTradingMessage:
    """A trading message result (valid during the callback only) copied; Message cut to MessageLength."""
    message = r.Message or ""
    if 0 <= r.MessageLength < len(message):
        message = message[: r.MessageLength]
    return RawTradingMessage(r.BrokerID, r.OrderID.LocalOrderID, r.OrderID.ClOrderID or "", r.MessageID,
                             r.ResultCode, message, ts_recv)


# -- argument checks (before any native call) --------------------------------------------------


def _text_arg(value: Any, name: str, max_chars: int = MAX_NAME_CHARS, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {type(value).__name__}")
    if (not value and not empty_ok) or len(value) > max_chars or "\0" in value:
        raise ValueError(f"{name} must be 1..{max_chars} characters without NUL, got {value!r}")
    return value


def _password_arg(value: Any) -> str:
    # The value never appears in the message: only what is wrong with it.
    if not isinstance(value, str) or not value:
        raise ValueError("the routing password is missing (set it in the DLL host's environment or file)")
    if "\0" in value or len(value) > 1024:
        raise ValueError("the routing password has a NUL character or is over 1024 characters")
    return value


def _quantity_arg(value: Any, name: str = "quantity") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise ValueError(f"{name} must be a positive whole number of contracts, got {value!r}")
    return value


def _price_arg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite price above 0, got {value!r}")
    return float(value)


def _no_price(value: Any) -> bool:
    """True for the ways "no price" is written: None, NaN, or the DLL's -1."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and value == S.NO_PRICE)


def _optional_price_arg(value: Any, name: str) -> float:
    """-1 for "none" (None / NaN / -1), else a checked positive price."""
    return S.NO_PRICE if _no_price(value) else _price_arg(value, name)


def _order_ids_arg(local_id: Any, cl_ord_id: Any) -> tuple[int, str]:
    if local_id is None:
        local_id = -1
    if isinstance(local_id, bool) or not isinstance(local_id, int) or not (local_id == -1 or 0 < local_id < 2**63):
        raise ValueError(f"local_id must be a positive LocalOrderID or -1, got {local_id!r}")
    cl = _text_arg(cl_ord_id if cl_ord_id is not None else "", "cl_ord_id", empty_ok=True)
    if local_id == -1 and not cl:
        raise ValueError("an order is named by its local_id or its cl_ord_id; both are missing")
    return local_id, cl


class _Strings:
    """Owns the wide-string buffers a request record points at; :meth:`wipe` zeroes them."""

    def __init__(self):
        self._buffers: list[ctypes.Array] = []

    def ptr(self, text: str | None) -> int | None:
        if not text:
            return None
        buf = ctypes.create_unicode_buffer(text)
        self._buffers.append(buf)
        return ctypes.addressof(buf)

    def wipe(self) -> None:
        for buf in self._buffers:
            ctypes.memset(buf, 0, ctypes.sizeof(buf))
        self._buffers.clear()


def _account_arg(account: Any) -> tuple[int, str, str]:
    try:
        broker_id, account_id, sub = account.broker_id, account.account_id, account.sub_account_id
    except AttributeError:
        raise ValueError(f"account must be a RoutingAccount (broker_id, account_id, sub_account_id), "
                         f"got {type(account).__name__}") from None
    if isinstance(broker_id, bool) or not isinstance(broker_id, int) or not 0 <= broker_id < 2**31:
        raise ValueError(f"account broker_id must be a whole number, got {broker_id!r}")
    return broker_id, _text_arg(account_id, "account_id"), _text_arg(sub or "", "sub_account_id", empty_ok=True)


def _fill_account(record, strings: _Strings, account: tuple[int, str, str]) -> None:
    broker_id, account_id, sub = account
    record.Version = 0
    record.BrokerID = broker_id
    record.AccountID = strings.ptr(account_id)
    record.SubAccountID = strings.ptr(sub)
    record.Reserved = 0


def _fill_asset(record, strings: _Strings, ticker: str, exchange: str) -> None:
    record.Version = 0
    record.Ticker = strings.ptr(ticker)
    record.Exchange = strings.ptr(exchange)
    record.FeedType = 0


def _fill_order_id(record, strings: _Strings, local_id: int, cl_ord_id: str) -> None:
    record.Version = 0
    record.LocalOrderID = local_id
    record.ClOrderID = strings.ptr(cl_ord_id)


# -- the routing calls -------------------------------------------------------------------------


class OrderRouting:
    """The order-routing calls on an initialized ``ProfitDLL`` (module docstring). Request calls:
    never from inside a DLL callback."""

    def __init__(self, dll: "ProfitDLL"):
        lib = dll.lib
        missing = [name for name in ROUTING_SIGNATURES if getattr(lib, name, None) is None]
        if missing:
            raise ProfitDLLLoadError(f"{dll.path} lacks {', '.join(missing)}: no order routing in this DLL")
        self.dll = dll
        self.lib = lib
        self.enumerate_errors = 0
        # One enumeration thunk for the life of the process (a collected thunk that is called crashes).
        self._enumerated: list[RawOrder] | None = None
        self._enumerate_failure: BaseException | None = None
        self._enumerate_lock = threading.Lock()  # one enumeration at a time: the proc fills shared state
        self._enum_proc = S.TConnectorEnumerateOrdersProc(self._on_enumerated)
        from pipelines.adapters.profitdll.binding import keep_alive

        keep_alive(self._enum_proc)

    def __repr__(self) -> str:
        return f"OrderRouting(dll={self.dll.path.name!r})"

    # -- accounts -----------------------------------------------------------------------------------

    def accounts(self) -> list[RoutingAccount]:
        """Every routing account (``GetAccountCount`` / ``GetAccounts``) and its sub-accounts
        (``GetSubAccountCount`` / ``GetSubAccounts``), with the holder from ``GetAccountDetails``."""
        count = check(self.lib.GetAccountCount(), "GetAccountCount")
        out: list[RoutingAccount] = []
        for broker_id, account_id, sub in self._account_ids(count, None):
            out.append(self._with_holder(broker_id, account_id, ""))
            master = (broker_id, account_id, "")
            strings = _Strings()
            ident = S.TConnectorAccountIdentifierSafe()
            _fill_account(ident, strings, master)
            subs = check(self.lib.GetSubAccountCount(byref(ident)), "GetSubAccountCount")
            for b, a, s in self._account_ids(subs, ident):
                out.append(self._with_holder(b, a, s))
        return out

    def _account_ids(self, count: int, master) -> list[tuple[int, str, str]]:
        if count <= 0:
            return []
        if count > MAX_ACCOUNTS:
            raise ProfitDLLError(f"the DLL reports {count} accounts; more than {MAX_ACCOUNTS} is corrupt")
        array = (S.TConnectorAccountIdentifierOut * count)()
        for rec in array:
            rec.Version = S.ACCOUNT_OUT_VERSION
        if master is None:
            got = check(self.lib.GetAccounts(0, 0, count, array), "GetAccounts")
        else:
            got = check(self.lib.GetSubAccounts(byref(master), 0, 0, count, array), "GetSubAccounts")
        return [(r.BrokerID, S.utf16_text(r.AccountID, r.AccountIDLength),
                 S.utf16_text(r.SubAccountID, r.SubAccountIDLength)) for r in array[: min(got, count)]]

    def _with_holder(self, broker_id: int, account_id: str, sub: str) -> RoutingAccount:
        strings = _Strings()
        rec = S.TConnectorTradingAccountOut(Version=S.TRADING_ACCOUNT_OUT_VERSION)
        _fill_account(rec.AccountID, strings, (broker_id, account_id, sub))
        check(self.lib.GetAccountDetails(byref(rec)), "GetAccountDetails")  # pass 1: lengths
        owner = _buffer_for(rec.OwnerNameLength, "owner name")
        sub_owner = _buffer_for(rec.SubOwnerNameLength, "sub-owner name")
        broker = _buffer_for(rec.BrokerNameLength, "broker name")
        rec.OwnerName = ctypes.addressof(owner) if owner is not None else None
        rec.SubOwnerName = ctypes.addressof(sub_owner) if sub_owner is not None else None
        rec.BrokerName = ctypes.addressof(broker) if broker is not None else None
        check(self.lib.GetAccountDetails(byref(rec)), "GetAccountDetails")  # pass 2: the names
        holder = (sub_owner.value if sub and sub_owner is not None else "") or (owner.value if owner else "")
        return RoutingAccount(broker_id, account_id, sub, holder)

    # -- orders -------------------------------------------------------------------------------------

    def send_order(self, account, ticker: str, exchange: str, side: str, order_type: str, quantity: int,
                   price: float, stop_price: float, password: str) -> SendResult:
        """``SendOrder`` (struct Version 2). Market: Price -1; non-stop: StopPrice -1 (docs §4.2)."""
        acct = _account_arg(account)
        _text_arg(ticker, "ticker")
        _text_arg(exchange, "exchange", 4)
        if side not in SIDE_CODES:
            raise ValueError(f"side must be BUY or SELL, got {side!r}")
        if order_type not in ORDER_TYPE_CODES:
            raise ValueError(f"order_type must be MARKET, LIMIT or STOP_LIMIT, got {order_type!r}")
        _quantity_arg(quantity)
        if order_type == "MARKET":
            if not _no_price(price):
                raise ValueError(f"a MARKET order has no price (None, NaN or -1), got {price!r}")
            limit = S.NO_PRICE
        else:
            limit = _price_arg(price, "price")
        if order_type == "STOP_LIMIT":
            stop = _price_arg(stop_price, "stop_price")
        elif not _no_price(stop_price):
            raise ValueError(f"only a STOP_LIMIT order has a stop_price (None, NaN or -1), got {stop_price!r}")
        else:
            stop = S.NO_PRICE
        _password_arg(password)
        strings = _Strings()
        try:
            rec = S.TConnectorSendOrderSafe(Version=S.SEND_ORDER_VERSION)
            _fill_account(rec.AccountID, strings, acct)
            _fill_asset(rec.AssetID, strings, ticker, exchange)
            rec.Password = strings.ptr(password)
            rec.OrderType = ORDER_TYPE_CODES[order_type]
            rec.OrderSide = SIDE_CODES[side]
            rec.Price = limit
            rec.StopPrice = stop
            rec.Quantity = quantity
            rec.MessageID = 0
            local_id = check(self.lib.SendOrder(byref(rec)), "SendOrder")
            return SendResult(local_id, rec.MessageID)
        finally:
            strings.wipe()  # the password's buffer is zero from here on

    def change_order(self, account, local_id: int, cl_ord_id: str, price: float, stop_price: float, quantity: int,
                     password: str) -> int:
        """``SendChangeOrderV2`` (Version 1): new price / stop (-1 none) / quantity; the MessageID."""
        acct = _account_arg(account)
        lid, cl = _order_ids_arg(local_id, cl_ord_id)
        limit = _price_arg(price, "price")
        stop = _optional_price_arg(stop_price, "stop_price")
        _quantity_arg(quantity)
        _password_arg(password)
        strings = _Strings()
        try:
            rec = S.TConnectorChangeOrderSafe(Version=S.CHANGE_ORDER_VERSION)
            _fill_account(rec.AccountID, strings, acct)
            _fill_order_id(rec.OrderID, strings, lid, cl)
            rec.Password = strings.ptr(password)
            rec.Price, rec.StopPrice, rec.Quantity, rec.MessageID = limit, stop, quantity, 0
            check(self.lib.SendChangeOrderV2(byref(rec)), "SendChangeOrderV2")
            return rec.MessageID
        finally:
            strings.wipe()

    def cancel_order(self, account, local_id: int, cl_ord_id: str, password: str) -> int:
        """``SendCancelOrderV2`` (Version 1); the MessageID. The outcome arrives as order events."""
        acct = _account_arg(account)
        lid, cl = _order_ids_arg(local_id, cl_ord_id)
        _password_arg(password)
        strings = _Strings()
        try:
            rec = S.TConnectorCancelOrderSafe(Version=S.CANCEL_ORDER_VERSION)
            _fill_account(rec.AccountID, strings, acct)
            _fill_order_id(rec.OrderID, strings, lid, cl)
            rec.Password = strings.ptr(password)
            rec.MessageID = 0
            check(self.lib.SendCancelOrderV2(byref(rec)), "SendCancelOrderV2")
            return rec.MessageID
        finally:
            strings.wipe()

    def cancel_all_orders(self, account, password: str) -> None:
        """``SendCancelAllOrdersV2``: every open order of the account, every asset."""
        acct = _account_arg(account)
        _password_arg(password)
        strings = _Strings()
        try:
            rec = S.TConnectorCancelAllOrdersSafe(Version=S.CANCEL_ALL_ORDERS_VERSION)
            _fill_account(rec.AccountID, strings, acct)
            rec.Password = strings.ptr(password)
            check(self.lib.SendCancelAllOrdersV2(byref(rec)), "SendCancelAllOrdersV2")
        finally:
            strings.wipe()

    def zero_position(self, account, ticker: str, exchange: str, password: str, price: float = -1.0,
                      position_type: int = S.POSITION_DAY_TRADE) -> int:
        """``SendZeroPositionV2`` (Version 2): the closing order's LocalOrderID. Price -1 = at market.
        A flat position raises :class:`NoPositionError` (NL_NO_POSITION)."""
        acct = _account_arg(account)
        _text_arg(ticker, "ticker")
        _text_arg(exchange, "exchange", 4)
        limit = _optional_price_arg(price, "price")
        if position_type not in POSITION_TYPES:
            raise ValueError(f"position_type must be 1 (day trade) or 2 (consolidated), got {position_type!r}")
        _password_arg(password)
        strings = _Strings()
        try:
            rec = S.TConnectorZeroPositionSafe(Version=S.ZERO_POSITION_VERSION)
            _fill_account(rec.AccountID, strings, acct)
            _fill_asset(rec.AssetID, strings, ticker, exchange)
            rec.Password = strings.ptr(password)
            rec.Price, rec.PositionType, rec.MessageID = limit, position_type, 0
            return check(self.lib.SendZeroPositionV2(byref(rec)), "SendZeroPositionV2")
        finally:
            strings.wipe()

    # -- reads --------------------------------------------------------------------------------------

    def position(self, account, ticker: str, exchange: str, position_type: int = S.POSITION_DAY_TRADE) -> RawPosition:
        """``GetPositionV2`` (Version 2). NL_NO_POSITION (never traded) reads as a flat position."""
        acct = _account_arg(account)
        _text_arg(ticker, "ticker")
        _text_arg(exchange, "exchange", 4)
        if position_type not in POSITION_TYPES:
            raise ValueError(f"position_type must be 1 (day trade) or 2 (consolidated), got {position_type!r}")
        strings = _Strings()
        rec = S.TConnectorTradingAccountPosition(Version=S.POSITION_VERSION)
        _fill_account(rec.AccountID, strings, acct)
        _fill_asset(rec.AssetID, strings, ticker, exchange)
        rec.PositionType = position_type
        try:
            check(self.lib.GetPositionV2(byref(rec)), "GetPositionV2")
        except NoPositionError:
            return RawPosition(ticker, exchange, 0, 0.0, 0, 0, 0.0, 0, 0.0, 0, position_type, 0)
        return RawPosition(
            ticker, exchange, _signed_open_qty(rec.OpenQuantity, rec.OpenSide), rec.OpenAveragePrice, rec.OpenSide,
            rec.DailyBuyQuantity, rec.DailyAverageBuyPrice, rec.DailySellQuantity, rec.DailyAverageSellPrice,
            rec.DailyQuantity, rec.PositionType, rec.EventID)

    def order_details(self, local_id: int, cl_ord_id: str = "") -> RawOrder:
        """``GetOrderDetails`` (two passes) by LocalOrderID and/or ClOrderID."""
        lid, cl = _order_ids_arg(local_id, cl_ord_id)
        return read_order(self.lib.GetOrderDetails, lid, cl)

    def all_orders(self, account) -> list[RawOrder]:
        """Every order of the account the DLL holds (``EnumerateAllOrders``, TConnectorOrder V1)."""
        acct = _account_arg(account)
        strings = _Strings()
        ident = S.TConnectorAccountIdentifierSafe()
        _fill_account(ident, strings, acct)
        with self._enumerate_lock:
            self._enumerated, self._enumerate_failure = [], None
            try:
                check(self.lib.EnumerateAllOrders(byref(ident), S.ORDER_ENUM_VERSION, 0, self._enum_proc),
                      "EnumerateAllOrders")
                if self._enumerate_failure is not None:
                    raise ProfitDLLError(f"EnumerateAllOrders: an order could not be read "
                                         f"({type(self._enumerate_failure).__name__}: {self._enumerate_failure})",
                                         func="EnumerateAllOrders")
                return self._enumerated
            finally:
                self._enumerated, self._enumerate_failure = None, None

    def _on_enumerated(self, p_order, _param) -> bool:
        """The enumeration proc (runs inside EnumerateAllOrders): copy, continue; stop on a failure."""
        try:
            self._enumerated.append(order_from_record(p_order.contents))
            return True
        except BaseException as e:  # never into native frames
            self.enumerate_errors += 1
            self._enumerate_failure = e
            return False

    def set_day_trade(self, on: bool) -> None:
        """``SetDayTrade``: tag every order sent from now on as day trade (brokers with that risk control)."""
        if not isinstance(on, bool):
            raise ValueError(f"set_day_trade takes True or False, got {on!r}")
        check(self.lib.SetDayTrade(1 if on else 0), "SetDayTrade")
