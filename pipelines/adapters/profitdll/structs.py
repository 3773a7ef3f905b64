"""ctypes records and callback prototypes of ProfitDLL 4.0, as the DLL's C headers lay them out.

One platform switch: on Windows the DLL is ``stdcall`` (``WinDLL`` + ``WINFUNCTYPE``); elsewhere
(the native test fake on Linux) ``CDLL`` + ``CFUNCTYPE``. On x64 there is only one calling
convention, so the rest of the binding is the same code on both.

Layouts use natural alignment, except ``TAssetIDRec`` which is a Delphi *packed* record (20 bytes).
Quantities that are Int64 in the Delphi headers are ``c_int64`` here even where the vendor Python
example declares ``c_int``/``c_long`` (``TConnectorPriceGroup.Quantity``, the V2 offer-book
``nQtd``): on Windows ``c_long`` is 32 bits and would shrink the record.

String fields and arguments: callbacks receive records with ``c_wchar_p`` fields and ``c_wchar_p``
date arguments, so ctypes' C getter copies each string once, during the callback, while the
pointer is valid (NULL reads as ``None``). That is ~16x cheaper than ``ctypes.wstring_at``, which
is itself a foreign call (measured 3 us per string) and would dominate a trade callback.
``*Safe`` records have the same layouts with ``c_void_p`` string fields, for where auto-decoding
would hurt: records we build ourselves and pass by pointer (:func:`asset_identifier` owns the
buffers and keeps them alive with the record; no hidden decode or re-encode on access), and
raw pointers that must be passed back unchanged. :func:`wstr` decodes such a pointer.

Record arguments of callbacks are declared by value, as in the vendor example (on Win64 the
ABI passes such records through a hidden pointer, which ctypes handles).

Order routing (docs §3-4). Request records (``TConnectorSendOrder``, ``...ChangeOrder``,
``...CancelOrder``, ``...CancelAllOrders``, ``...ZeroPosition``) are declared as the headers lay
them out and, for the binding's own use, as ``*Safe`` twins (same offsets, ``c_void_p`` strings):
the routing code owns every string buffer, so it can wipe the routing password's buffer the
moment the call returns, and nothing decodes or copies it behind its back. ``Version`` is never
left to a default: the binding sets it on every record it builds (:data:`SEND_ORDER_VERSION`...).
``TConnectorAccountIdentifierOut`` holds its two strings inline (Delphi ``TString0In``, 100
WideChars): they are ``c_uint16 * 100`` here, UTF-16 code units, because ``c_wchar`` is 4 bytes
on Linux and would break the 424-byte layout (:func:`utf16_text` decodes them). The other
``*Out`` records use the two-pass pattern: pointer fields NULL on the first call (the DLL fills
the ``*Length`` fields), buffers of length + 1 on the second.
"""

from __future__ import annotations

import ctypes
import struct
import sys
from ctypes import (
    POINTER,
    Structure,
    c_double,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint16,
    c_uint32,
    c_void_p,
    c_wchar_p,
)

IS_WINDOWS = sys.platform == "win32"
if IS_WINDOWS:  # pragma: no cover - exercised on the Windows node only
    FUNCTYPE = ctypes.WINFUNCTYPE  # type: ignore[attr-defined]
    LIBRARY = ctypes.WinDLL  # type: ignore[attr-defined]
else:
    FUNCTYPE = ctypes.CFUNCTYPE
    LIBRARY = ctypes.CDLL

# Flags and enums used by the market-data part.
TC_IS_EDIT = 1  # TConnectorTradeCallback flags
TC_LAST_PACKET = 2
OB_LAST_PACKET = 1  # offer-book array trailer flag
PG_IS_THEORIC = 1  # TConnectorPriceGroup.PriceGroupFlags: auction (theoretical) level
SIDE_BOTH = 254  # price-depth callback side for whole-book updates


def wstr(ptr: int | None) -> str:
    """The UTF-16/wchar_t string at ``ptr`` (copied now: it is valid only during the callback); '' for NULL."""
    return ctypes.wstring_at(ptr) if ptr else ""


class SystemTime(Structure):
    _fields_ = [
        ("wYear", ctypes.c_ushort),
        ("wMonth", ctypes.c_ushort),
        ("wDayOfWeek", ctypes.c_ushort),
        ("wDay", ctypes.c_ushort),
        ("wHour", ctypes.c_ushort),
        ("wMinute", ctypes.c_ushort),
        ("wSecond", ctypes.c_ushort),
        ("wMilliseconds", ctypes.c_ushort),
    ]


class TAssetIDRec(Structure):
    """Legacy asset id (``TAssetID``): Delphi packed record, 20 bytes."""

    _pack_ = 1
    _fields_ = [("ticker", c_wchar_p), ("bolsa", c_wchar_p), ("feed", c_int32)]


class TAssetIDRecSafe(Structure):
    _pack_ = 1
    _fields_ = [("ticker", c_void_p), ("bolsa", c_void_p), ("feed", c_int32)]


class TConnectorAssetIdentifier(Structure):
    _fields_ = [("Version", c_uint8), ("Ticker", c_wchar_p), ("Exchange", c_wchar_p), ("FeedType", c_uint8)]


class TConnectorAssetIdentifierSafe(Structure):
    _fields_ = [("Version", c_uint8), ("Ticker", c_void_p), ("Exchange", c_void_p), ("FeedType", c_uint8)]


class TConnectorAssetIdentifierOut(Structure):
    _fields_ = [
        ("Version", c_uint8),
        ("Ticker", c_wchar_p),
        ("TickerLength", c_int32),
        ("Exchange", c_wchar_p),
        ("ExchangeLength", c_int32),
        ("FeedType", c_uint8),
    ]


class TConnectorAccountIdentifier(Structure):
    _fields_ = [
        ("Version", c_uint8),
        ("BrokerID", c_int32),
        ("AccountID", c_wchar_p),
        ("SubAccountID", c_wchar_p),
        ("Reserved", c_int64),
    ]


class TConnectorOrderIdentifier(Structure):
    _fields_ = [("Version", c_uint8), ("LocalOrderID", c_int64), ("ClOrderID", c_wchar_p)]


class TConnectorTrade(Structure):
    """What ``TranslateTrade`` fills. Quantity is Int64 (4.0.0.x)."""

    _fields_ = [
        ("Version", c_uint8),
        ("TradeDate", SystemTime),
        ("TradeNumber", c_uint32),
        ("Price", c_double),
        ("Quantity", c_int64),
        ("Volume", c_double),
        ("BuyAgent", c_int32),
        ("SellAgent", c_int32),
        ("TradeType", c_uint8),
    ]


class TConnectorPriceGroup(Structure):
    """One aggregated price level (``GetPriceGroup``). 40 bytes; Quantity is Int64."""

    _fields_ = [
        ("Version", c_uint8),
        ("Price", c_double),
        ("Count", c_uint32),
        ("Quantity", c_int64),
        ("PriceGroupFlags", c_uint32),
    ]




# -- order routing (docs §3, §4) ----------------------------------------------------------------

# Struct versions the binding sends. SendOrder V2 returns the trading server's MessageID; V1+
# means the V1 enums below (V0 had others: 0 limit/1 stop/2 market, 0 buy/1 sell, and the vendor
# Python example mixes them up). Change/cancel V1 and zero-position V2 also return a MessageID.
SEND_ORDER_VERSION = 2
CHANGE_ORDER_VERSION = 1
CANCEL_ORDER_VERSION = 1
CANCEL_ALL_ORDERS_VERSION = 0
ZERO_POSITION_VERSION = 2
POSITION_VERSION = 2  # GetPositionV2: V1 requires PositionType, V2 adds EventID
ORDER_OUT_VERSION = 1  # GetOrderDetails: V1 adds EventID
ORDER_ENUM_VERSION = 1  # EnumerateAllOrders: the TConnectorOrder version asked for
ACCOUNT_OUT_VERSION = 0  # GetAccounts / GetSubAccounts records
TRADING_ACCOUNT_OUT_VERSION = 1  # GetAccountDetails: V1 adds AccountType

# TConnectorOrderType / TConnectorOrderSide for struct Version >= 1.
ORDER_TYPE_MARKET, ORDER_TYPE_LIMIT, ORDER_TYPE_STOP_LIMIT = 1, 2, 4
ORDER_SIDE_BUY, ORDER_SIDE_SELL = 1, 2
# TConnectorPositionType.
POSITION_DAY_TRADE, POSITION_CONSOLIDATED = 1, 2
# Validity (time in force) codes of TConnectorOrder.ValidityType.
VALIDITY_NAMES = {0: "Day", 1: "GTC", 2: "AtOpening", 3: "IOC", 4: "FOK", 5: "GTX", 6: "GTD", 7: "AtClose",
                  201: "GoodForAuction"}
# Position side (TConnectorTradingAccountPosition.OpenSide, as the legacy GetPosition documents it).
POSITION_SIDE_BOUGHT, POSITION_SIDE_SOLD = 1, 2
# TConnectorTradingAccountOut.AccountFlags.
CA_IS_SUB_ACCOUNT, CA_IS_ENABLED = 1, 2
NO_PRICE = -1.0  # Price of a market order, StopPrice of a non-stop order, Price of a zeroing at market
STRING0_CHARS = 100  # TString0In: array[0..99] of WideChar


def utf16_text(chars, length: int | None = None) -> str:
    """An inline ``TString0In`` (``c_uint16 * 100``) as text: up to ``length`` code units or the first NUL."""
    raw = bytes(chars)
    n = len(chars) if length is None or length < 0 else min(length, len(chars))
    text = raw[: 2 * n].decode("utf-16-le", errors="replace")
    nul = text.find("\0")
    return text if nul < 0 else text[:nul]


class TConnectorAccountIdentifierSafe(Structure):
    _fields_ = [
        ("Version", c_uint8),
        ("BrokerID", c_int32),
        ("AccountID", c_void_p),
        ("SubAccountID", c_void_p),
        ("Reserved", c_int64),
    ]


class TConnectorAccountIdentifierOut(Structure):
    """An account id with inline UTF-16 strings (what GetAccounts / GetSubAccounts fill): 424 bytes."""

    _fields_ = [
        ("Version", c_uint8),
        ("BrokerID", c_int32),
        ("AccountID", c_uint16 * STRING0_CHARS),
        ("AccountIDLength", c_int32),
        ("SubAccountID", c_uint16 * STRING0_CHARS),
        ("SubAccountIDLength", c_int32),
        ("Reserved", c_int64),
    ]


class TConnectorOrderIdentifierSafe(Structure):
    _fields_ = [("Version", c_uint8), ("LocalOrderID", c_int64), ("ClOrderID", c_void_p)]


class TConnectorSendOrder(Structure):
    """``SendOrder``'s record. Version 2 (set explicitly) adds MessageID, which the DLL writes back."""

    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifier),
        ("AssetID", TConnectorAssetIdentifier),
        ("Password", c_wchar_p),
        ("OrderType", c_uint8),
        ("OrderSide", c_uint8),
        ("Price", c_double),
        ("StopPrice", c_double),
        ("Quantity", c_int64),
        ("MessageID", c_int64),
    ]


class TConnectorSendOrderSafe(Structure):
    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifierSafe),
        ("AssetID", TConnectorAssetIdentifierSafe),
        ("Password", c_void_p),
        ("OrderType", c_uint8),
        ("OrderSide", c_uint8),
        ("Price", c_double),
        ("StopPrice", c_double),
        ("Quantity", c_int64),
        ("MessageID", c_int64),
    ]


class TConnectorChangeOrder(Structure):
    """``SendChangeOrderV2``'s record: 104 bytes; MessageID from Version 1."""

    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifier),
        ("OrderID", TConnectorOrderIdentifier),
        ("Password", c_wchar_p),
        ("Price", c_double),
        ("StopPrice", c_double),
        ("Quantity", c_int64),
        ("MessageID", c_int64),
    ]


class TConnectorChangeOrderSafe(Structure):
    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifierSafe),
        ("OrderID", TConnectorOrderIdentifierSafe),
        ("Password", c_void_p),
        ("Price", c_double),
        ("StopPrice", c_double),
        ("Quantity", c_int64),
        ("MessageID", c_int64),
    ]


class TConnectorCancelOrder(Structure):
    """``SendCancelOrderV2``'s record: 80 bytes; MessageID from Version 1."""

    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifier),
        ("OrderID", TConnectorOrderIdentifier),
        ("Password", c_wchar_p),
        ("MessageID", c_int64),
    ]


class TConnectorCancelOrderSafe(Structure):
    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifierSafe),
        ("OrderID", TConnectorOrderIdentifierSafe),
        ("Password", c_void_p),
        ("MessageID", c_int64),
    ]


class TConnectorCancelAllOrders(Structure):
    """``SendCancelAllOrdersV2``'s record (every open order of the account, all assets): 48 bytes."""

    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifier),
        ("Password", c_wchar_p),
    ]


class TConnectorCancelAllOrdersSafe(Structure):
    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifierSafe),
        ("Password", c_void_p),
    ]


class TConnectorZeroPosition(Structure):
    """``SendZeroPositionV2``'s record: 104 bytes; PositionType required from V1, MessageID from V2."""

    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifier),
        ("AssetID", TConnectorAssetIdentifier),
        ("Password", c_wchar_p),
        ("Price", c_double),
        ("PositionType", c_uint8),
        ("MessageID", c_int64),
    ]


class TConnectorZeroPositionSafe(Structure):
    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifierSafe),
        ("AssetID", TConnectorAssetIdentifierSafe),
        ("Password", c_void_p),
        ("Price", c_double),
        ("PositionType", c_uint8),
        ("MessageID", c_int64),
    ]


class TConnectorTradingAccountOut(Structure):
    """``GetAccountDetails``: the account id in, names out (two-pass strings): 96 bytes."""

    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifierSafe),
        ("BrokerName", c_void_p),
        ("BrokerNameLength", c_int32),
        ("OwnerName", c_void_p),
        ("OwnerNameLength", c_int32),
        ("SubOwnerName", c_void_p),
        ("SubOwnerNameLength", c_int32),
        ("AccountFlags", c_uint32),
        ("AccountType", c_uint8),
    ]


class TConnectorTradingAccountPosition(Structure):
    """``GetPositionV2``: account and asset in, the position out: 216 bytes."""

    _fields_ = [
        ("Version", c_uint8),
        ("AccountID", TConnectorAccountIdentifierSafe),
        ("AssetID", TConnectorAssetIdentifierSafe),
        ("OpenQuantity", c_int64),
        ("OpenAveragePrice", c_double),
        ("OpenSide", c_uint8),
        ("DailyAverageSellPrice", c_double),
        ("DailySellQuantity", c_int64),
        ("DailyAverageBuyPrice", c_double),
        ("DailyBuyQuantity", c_int64),
        ("DailyQuantityD1", c_int64),
        ("DailyQuantityD2", c_int64),
        ("DailyQuantityD3", c_int64),
        ("DailyQuantityBlocked", c_int64),
        ("DailyQuantityPending", c_int64),
        ("DailyQuantityAlloc", c_int64),
        ("DailyQuantityProvision", c_int64),
        ("DailyQuantity", c_int64),
        ("DailyQuantityAvailable", c_int64),
        ("PositionType", c_uint8),
        ("EventID", c_int64),
    ]


class TConnectorOrder(Structure):
    """One order as ``EnumerateAllOrders`` hands it to its proc (valid during that call only): 232 bytes."""

    _fields_ = [
        ("Version", c_uint8),
        ("OrderID", TConnectorOrderIdentifier),
        ("AccountID", TConnectorAccountIdentifier),
        ("AssetID", TConnectorAssetIdentifier),
        ("Quantity", c_int64),
        ("TradedQuantity", c_int64),
        ("LeavesQuantity", c_int64),
        ("Price", c_double),
        ("StopPrice", c_double),
        ("AveragePrice", c_double),
        ("OrderSide", c_uint8),
        ("OrderType", c_uint8),
        ("OrderStatus", c_uint8),
        ("ValidityType", c_uint8),
        ("Date", SystemTime),
        ("LastUpdate", SystemTime),
        ("CloseDate", SystemTime),
        ("ValidityDate", SystemTime),
        ("TextMessage", c_wchar_p),
        ("EventID", c_int64),
    ]


class TConnectorAssetIdentifierOutSafe(Structure):
    _fields_ = [
        ("Version", c_uint8),
        ("Ticker", c_void_p),
        ("TickerLength", c_int32),
        ("Exchange", c_void_p),
        ("ExchangeLength", c_int32),
        ("FeedType", c_uint8),
    ]


class TConnectorOrderOut(Structure):
    """``GetOrderDetails``: the order id in, the order out (two-pass strings): 640 bytes.

    Strings are ``c_void_p``: the binding points them at its own buffers on the second pass.
    """

    _fields_ = [
        ("Version", c_uint8),
        ("OrderID", TConnectorOrderIdentifierSafe),
        ("AccountID", TConnectorAccountIdentifierOut),
        ("AssetID", TConnectorAssetIdentifierOutSafe),
        ("Quantity", c_int64),
        ("TradedQuantity", c_int64),
        ("LeavesQuantity", c_int64),
        ("Price", c_double),
        ("StopPrice", c_double),
        ("AveragePrice", c_double),
        ("OrderSide", c_uint8),
        ("OrderType", c_uint8),
        ("OrderStatus", c_uint8),
        ("ValidityType", c_uint8),
        ("Date", SystemTime),
        ("LastUpdate", SystemTime),
        ("CloseDate", SystemTime),
        ("ValidityDate", SystemTime),
        ("TextMessage", c_void_p),
        ("TextMessageLength", c_int32),
        ("EventID", c_int64),
    ]


class TConnectorTradingMessageResult(Structure):
    """What ``TConnectorTradingMessageResultCallback`` points to (valid during the call only): 64 bytes."""

    _fields_ = [
        ("Version", c_uint8),
        ("BrokerID", c_int32),
        ("OrderID", TConnectorOrderIdentifier),
        ("MessageID", c_int64),
        ("ResultCode", c_uint8),
        ("Message", c_wchar_p),
        ("MessageLength", c_int32),
    ]


# ``TConnectorTrade`` read in one call (faster than 13 attribute reads in the hot callback):
# version, 8 SystemTime fields, number, price, qty, volume, buy agent, sell agent, trade type.
TRADE_LAYOUT = struct.Struct("<Bx8H2xIdqdiiB7x")
assert TRADE_LAYOUT.size == ctypes.sizeof(TConnectorTrade)


def asset_identifier(ticker: str, exchange: str) -> TConnectorAssetIdentifierSafe:
    """A Version-0 identifier for calls that take ``PConnectorAssetIdentifier``; keeps its strings alive."""
    t = ctypes.create_unicode_buffer(ticker)
    e = ctypes.create_unicode_buffer(exchange)
    ident = TConnectorAssetIdentifierSafe(0, ctypes.addressof(t), ctypes.addressof(e), 0)
    ident._keep = (t, e)  # the buffers live as long as the record
    return ident


# -- callback prototypes (§2.3) -----------------------------------------------------------------

TStateCallback = FUNCTYPE(None, c_int32, c_int32)
TProgressCallback = FUNCTYPE(None, TAssetIDRec, c_int32)
TNewDailyCallback = FUNCTYPE(
    None, TAssetIDRec, c_wchar_p,
    c_double, c_double, c_double, c_double, c_double, c_double, c_double, c_double, c_double, c_double,
    c_int32, c_int32, c_int32, c_int32, c_int32, c_int32, c_int32,
)
TConnectorTradeCallback = FUNCTYPE(None, TConnectorAssetIdentifier, c_size_t, c_uint32)
# Delphi Char flags (bHasPrice...) are 16-bit WideChars: c_uint16 reads only the defined bits.
# pArraySell / pArrayBuy stay raw pointers: they are copied and handed back to FreePointer.
TOfferBookCallbackV2 = FUNCTYPE(
    None, TAssetIDRec, c_int32, c_int32, c_int32, c_int64, c_int32, c_int64, c_double,
    c_uint16, c_uint16, c_uint16, c_uint16, c_uint16, c_wchar_p, c_void_p, c_void_p,
)
TInvalidTickerCallback = FUNCTYPE(None, TConnectorAssetIdentifier)
TConnectorPriceDepthCallback = FUNCTYPE(None, TConnectorAssetIdentifier, c_uint8, c_int32, c_uint8)

# Legacy slots of the init functions: declared for the argument lists, always passed as None.
TNewTradeCallback = FUNCTYPE(
    None, TAssetIDRec, c_void_p, c_uint32, c_double, c_double, c_int32, c_int32, c_int32, c_int32, c_uint16
)
THistoryTradeCallback = FUNCTYPE(
    None, TAssetIDRec, c_void_p, c_uint32, c_double, c_double, c_int32, c_int32, c_int32, c_int32
)
TTinyBookCallback = FUNCTYPE(None, TAssetIDRec, c_double, c_int32, c_int32)
TPriceBookCallback = FUNCTYPE(
    None, TAssetIDRec, c_int32, c_int32, c_int32, c_int32, c_int32, c_double, c_void_p, c_void_p
)
TOfferBookCallback = FUNCTYPE(
    None, TAssetIDRec, c_int32, c_int32, c_int32, c_int32, c_int32, c_int64, c_double,
    c_uint16, c_uint16, c_uint16, c_uint16, c_uint16, c_void_p, c_void_p, c_void_p,
)
THistoryCallback = FUNCTYPE(
    None, TAssetIDRec, c_int32, c_int32, c_int32, c_int32, c_int32, c_double, c_double, c_double, c_int64,
    c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p,
)
TOrderChangeCallback = FUNCTYPE(
    None, TAssetIDRec, c_int32, c_int32, c_int32, c_int32, c_int32, c_double, c_double, c_double, c_int64,
    c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p,
)
TAccountCallback = FUNCTYPE(None, c_int32, c_void_p, c_void_p, c_void_p)

# Order events (docs §4.3). The order callback gets the identifier by value, as the vendor Python
# example declares it (Delphi ``const`` record: on Win64 both are a hidden pointer). The trading
# message result callback gets a pointer. The enumeration proc returns the Win32 BOOL as c_bool
# (libffi widens it to the whole register) and takes LPARAM, pointer-sized (c_ssize_t; the vendor
# example's c_long is 32 bits on Win64).
TConnectorOrderCallback = FUNCTYPE(None, TConnectorOrderIdentifier)
TConnectorTradingMessageResultCallback = FUNCTYPE(None, POINTER(TConnectorTradingMessageResult))
TConnectorEnumerateOrdersProc = FUNCTYPE(ctypes.c_bool, POINTER(TConnectorOrder), ctypes.c_ssize_t)

PConnectorTrade = POINTER(TConnectorTrade)
PConnectorPriceGroup = POINTER(TConnectorPriceGroup)
