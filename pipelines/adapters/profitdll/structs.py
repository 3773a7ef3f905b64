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


class TConnectorSendOrder(Structure):
    """Declared for layout checks only: this binding does not route orders."""

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

PConnectorTrade = POINTER(TConnectorTrade)
PConnectorPriceGroup = POINTER(TConnectorPriceGroup)
