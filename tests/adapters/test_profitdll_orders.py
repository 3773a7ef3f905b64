"""ProfitDLL order routing: struct layouts and callback signatures against the documented ones,
the status / result code maps, and the routing binding driven by the native fake broker
(tests/fake_profitdll/fake_profitdll.c), which fires order callbacks from its own pthread.

Every value is compared with what the fake says it did (its sent log: the command as it
arrived, each callback as it was sent, each fill) or with a hand-computed number (average
prices, positions). Crashes run in a child process."""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pipelines.adapters.profitdll import errors as E
from pipelines.adapters.profitdll import order_codes as C
from pipelines.adapters.profitdll import structs as S
from pipelines.adapters.profitdll.binding import ProfitDLL
from pipelines.adapters.profitdll.credentials import Credentials
from pipelines.adapters.profitdll.routing import (
    OrderRouting,
    RawOrder,
    RawOrderError,
    RawPosition,
    RawTradingMessage,
    RoutingAccount,
    SendResult,
    _Strings,
)
from pipelines.model.orders import ACCEPTED, CANCELLED, EXPIRED, FILLED, PARTIALLY_FILLED, REJECTED, SUBMITTED
from tests.helpers import REPO, wait_for
from tests.profitdll_fake import (
    ENV_PREFIX,
    ROUTING_PASSWORD,
    FakeDebug,
    fake_env,
    fresh_copy,
    ns_of,
    read_broker_state,
    read_sent_log,
)

CREDS = Credentials("test-key-0002", "test-user-0002", "test-pass-0002")
ACCOUNTS = "308:1234567,308:1234567:sub1,120:7654321"
MASTER = RoutingAccount(308, "1234567", "", "")
SUB = RoutingAccount(308, "1234567", "sub1", "")
OTHER = RoutingAccount(120, "7654321", "", "")
# WDO ticks 0.5: asks 5000.5, 5001.0 ... 5002.5 (2 each), bids 5000.0 ... 4998.0 (3 each).
BOOK = "WDOZ26:5000.0x3/5000.5x2;WINZ26:130000x5/130005x5"
PW = ROUTING_PASSWORD
POLL_S = 0.002


# -- layouts (docs §3; offsets of the Delphi records with x64 natural alignment) ------------------


def offsets(cls) -> dict[str, int]:
    return {name: getattr(cls, name).offset for name, _ in cls._fields_}


ACCOUNT_OUT = {"Version": 0, "BrokerID": 4, "AccountID": 8, "AccountIDLength": 208, "SubAccountID": 212,
               "SubAccountIDLength": 412, "Reserved": 416}
SEND_ORDER = {"Version": 0, "AccountID": 8, "AssetID": 40, "Password": 72, "OrderType": 80, "OrderSide": 81,
              "Price": 88, "StopPrice": 96, "Quantity": 104, "MessageID": 112}
CHANGE_ORDER = {"Version": 0, "AccountID": 8, "OrderID": 40, "Password": 64, "Price": 72, "StopPrice": 80,
                "Quantity": 88, "MessageID": 96}
CANCEL_ORDER = {"Version": 0, "AccountID": 8, "OrderID": 40, "Password": 64, "MessageID": 72}
CANCEL_ALL = {"Version": 0, "AccountID": 8, "Password": 40}
ZERO_POSITION = {"Version": 0, "AccountID": 8, "AssetID": 40, "Password": 72, "Price": 80, "PositionType": 88,
                 "MessageID": 96}
ORDER = {"Version": 0, "OrderID": 8, "AccountID": 32, "AssetID": 64, "Quantity": 96, "TradedQuantity": 104,
         "LeavesQuantity": 112, "Price": 120, "StopPrice": 128, "AveragePrice": 136, "OrderSide": 144,
         "OrderType": 145, "OrderStatus": 146, "ValidityType": 147, "Date": 148, "LastUpdate": 164,
         "CloseDate": 180, "ValidityDate": 196, "TextMessage": 216, "EventID": 224}
ORDER_OUT = {"Version": 0, "OrderID": 8, "AccountID": 32, "AssetID": 456, "Quantity": 496, "TradedQuantity": 504,
             "LeavesQuantity": 512, "Price": 520, "StopPrice": 528, "AveragePrice": 536, "OrderSide": 544,
             "OrderType": 545, "OrderStatus": 546, "ValidityType": 547, "Date": 548, "LastUpdate": 564,
             "CloseDate": 580, "ValidityDate": 596, "TextMessage": 616, "TextMessageLength": 624, "EventID": 632}
MESSAGE_RESULT = {"Version": 0, "BrokerID": 4, "OrderID": 8, "MessageID": 32, "ResultCode": 40, "Message": 48,
                  "MessageLength": 56}
POSITION = {"Version": 0, "AccountID": 8, "AssetID": 40, "OpenQuantity": 72, "OpenAveragePrice": 80, "OpenSide": 88,
            "DailyAverageSellPrice": 96, "DailySellQuantity": 104, "DailyAverageBuyPrice": 112,
            "DailyBuyQuantity": 120, "DailyQuantityD1": 128, "DailyQuantityD2": 136, "DailyQuantityD3": 144,
            "DailyQuantityBlocked": 152, "DailyQuantityPending": 160, "DailyQuantityAlloc": 168,
            "DailyQuantityProvision": 176, "DailyQuantity": 184, "DailyQuantityAvailable": 192, "PositionType": 200,
            "EventID": 208}
TRADING_ACCOUNT_OUT = {"Version": 0, "AccountID": 8, "BrokerName": 40, "BrokerNameLength": 48, "OwnerName": 56,
                       "OwnerNameLength": 64, "SubOwnerName": 72, "SubOwnerNameLength": 80, "AccountFlags": 84,
                       "AccountType": 88}


@pytest.mark.parametrize("classes, size, expected", [
    ((S.TConnectorAccountIdentifierOut,), 424, ACCOUNT_OUT),
    ((S.TConnectorAccountIdentifier, S.TConnectorAccountIdentifierSafe), 32,
     {"Version": 0, "BrokerID": 4, "AccountID": 8, "SubAccountID": 16, "Reserved": 24}),
    ((S.TConnectorOrderIdentifier, S.TConnectorOrderIdentifierSafe), 24,
     {"Version": 0, "LocalOrderID": 8, "ClOrderID": 16}),
    ((S.TConnectorAssetIdentifierOut, S.TConnectorAssetIdentifierOutSafe), 40,
     {"Version": 0, "Ticker": 8, "TickerLength": 16, "Exchange": 24, "ExchangeLength": 32, "FeedType": 36}),
    ((S.TConnectorSendOrder, S.TConnectorSendOrderSafe), 120, SEND_ORDER),
    ((S.TConnectorChangeOrder, S.TConnectorChangeOrderSafe), 104, CHANGE_ORDER),
    ((S.TConnectorCancelOrder, S.TConnectorCancelOrderSafe), 80, CANCEL_ORDER),
    ((S.TConnectorCancelAllOrders, S.TConnectorCancelAllOrdersSafe), 48, CANCEL_ALL),
    ((S.TConnectorZeroPosition, S.TConnectorZeroPositionSafe), 104, ZERO_POSITION),
    ((S.TConnectorOrder,), 232, ORDER),
    ((S.TConnectorOrderOut,), 640, ORDER_OUT),
    ((S.TConnectorTradingMessageResult,), 64, MESSAGE_RESULT),
    ((S.TConnectorTradingAccountPosition,), 216, POSITION),
    ((S.TConnectorTradingAccountOut,), 96, TRADING_ACCOUNT_OUT),
])
def test_routing_struct_layouts_match_the_reference(classes, size, expected):
    for cls in classes:
        assert ctypes.sizeof(cls) == size, cls.__name__
        assert offsets(cls) == expected, cls.__name__


def test_inline_account_strings_are_utf16_on_every_platform():
    # TString0In is 100 Delphi WideChars (2 bytes each); c_wchar is 4 bytes on Linux.
    assert S.TConnectorAccountIdentifierOut.AccountID.size == 200
    rec = S.TConnectorAccountIdentifierOut()
    raw = "Conta-Ω1".encode("utf-16-le")
    ctypes.memmove(ctypes.addressof(rec) + 8, raw, len(raw))
    assert S.utf16_text(rec.AccountID, 8) == "Conta-Ω1"
    assert S.utf16_text(rec.AccountID, 5) == "Conta"
    assert S.utf16_text(rec.AccountID, -1) == "Conta-Ω1"  # no length: up to the NUL


def test_callback_and_function_signatures():
    assert S.TConnectorOrderCallback._restype_ is None
    assert S.TConnectorOrderCallback._argtypes_ == (S.TConnectorOrderIdentifier,)  # by value, as the vendor example
    assert S.TConnectorTradingMessageResultCallback._restype_ is None
    assert S.TConnectorTradingMessageResultCallback._argtypes_ == (ctypes.POINTER(S.TConnectorTradingMessageResult),)
    assert S.TConnectorEnumerateOrdersProc._restype_ is ctypes.c_bool
    assert S.TConnectorEnumerateOrdersProc._argtypes_ == (ctypes.POINTER(S.TConnectorOrder), ctypes.c_ssize_t)
    assert ctypes.sizeof(ctypes.c_ssize_t) == ctypes.sizeof(ctypes.c_void_p)  # LPARAM is pointer-sized
    # Versions the binding sets: V2 SendOrder (MessageID), V1 enums.
    assert (S.SEND_ORDER_VERSION, S.CHANGE_ORDER_VERSION, S.CANCEL_ORDER_VERSION, S.ZERO_POSITION_VERSION) == (2, 1, 1, 2)
    assert (S.ORDER_TYPE_MARKET, S.ORDER_TYPE_LIMIT, S.ORDER_TYPE_STOP_LIMIT) == (1, 2, 4)
    assert (S.ORDER_SIDE_BUY, S.ORDER_SIDE_SELL) == (1, 2)
    assert (S.POSITION_DAY_TRADE, S.POSITION_CONSOLIDATED) == (1, 2)


# -- status and result codes (docs §4.3) ------------------------------------------------------

# Transcribed from the manual's TConnectorOrderStatus, with the lifecycle each one means.
STATUS_TABLE = [
    (0, "New", ACCEPTED), (1, "PartiallyFilled", PARTIALLY_FILLED), (2, "Filled", FILLED),
    (3, "DoneForDay", EXPIRED), (4, "Canceled", CANCELLED), (5, "Replaced", ACCEPTED),
    (6, "PendingCancel", C.KEEP), (7, "Stopped", ACCEPTED), (8, "Rejected", REJECTED), (9, "Suspended", C.KEEP),
    (10, "PendingNew", SUBMITTED), (11, "Calculated", C.KEEP), (12, "Expired", EXPIRED),
    (13, "AcceptedForBidding", ACCEPTED), (14, "PendingReplace", C.KEEP), (15, "PartiallyFilledCanceled", CANCELLED),
    (16, "Received", SUBMITTED), (17, "PartiallyFilledExpired", EXPIRED), (18, "PartiallyFilledRejected", REJECTED),
    (200, "Unknown", C.UNKNOWN), (201, "HadesCreated", SUBMITTED), (202, "BrokerSent", SUBMITTED),
    (203, "ClientCreated", SUBMITTED), (204, "OrderNotCreated", REJECTED), (205, "CanceledByAdmin", CANCELLED),
    (206, "DelayFixGateway", SUBMITTED), (207, "ScheduledOrder", SUBMITTED),
]


@pytest.mark.parametrize("code, name, lifecycle", STATUS_TABLE)
def test_every_documented_order_status_is_named_and_mapped(code, name, lifecycle):
    assert C.order_status_name(code) == name
    assert C.classify_status(code) == lifecycle


def test_status_table_is_complete():
    assert {c for c, _, _ in STATUS_TABLE} == set(C.ORDER_STATUS_NAMES) == set(C.STATUS_LIFECYCLE)


def test_lifecycle_rules():
    assert C.lifecycle_status(10) == SUBMITTED
    assert C.lifecycle_status(0, SUBMITTED) == ACCEPTED
    assert C.lifecycle_status(202, ACCEPTED) == ACCEPTED  # a late "broker sent" echo never goes back
    assert C.lifecycle_status(16, PARTIALLY_FILLED) == PARTIALLY_FILLED
    assert C.lifecycle_status(6, PARTIALLY_FILLED) == PARTIALLY_FILLED  # pending cancel: still what it was
    assert C.lifecycle_status(14, ACCEPTED) == ACCEPTED
    assert C.lifecycle_status(6) == SUBMITTED  # nothing known yet
    assert C.lifecycle_status(5, PARTIALLY_FILLED, traded_qty=2) == PARTIALLY_FILLED  # a change keeps the fills
    assert C.lifecycle_status(5, ACCEPTED, traded_qty=0) == ACCEPTED
    assert C.lifecycle_status(4, FILLED) == FILLED  # terminal stays terminal
    assert C.lifecycle_status(0, REJECTED) == REJECTED
    assert C.lifecycle_status(8, SUBMITTED) == REJECTED
    assert C.lifecycle_status(15, PARTIALLY_FILLED, 3) == CANCELLED


def test_unknown_status_codes_are_counted_and_never_move_an_order():
    before_99, before_200 = C.unknown_status_codes[99], C.unknown_status_codes[200]
    assert C.order_status_name(99) == "Undocumented(99)"
    assert C.classify_status(99) == C.UNKNOWN
    assert C.lifecycle_status(99, ACCEPTED) == ACCEPTED
    assert C.lifecycle_status(99, None) == SUBMITTED
    assert C.lifecycle_status(200, PARTIALLY_FILLED) == PARTIALLY_FILLED
    assert C.unknown_status_codes[99] == before_99 + 2 and C.unknown_status_codes[200] == before_200 + 1


RESULT_TABLE = [(0, "Starting"), (1, "NotConnected"), (2, "SentToHadesProxy"), (3, "RejectedMercury"),
                (4, "SentToHades"), (5, "RejectedHades"), (6, "SentToBroker"), (7, "RejectedBroker"),
                (8, "SentToMarket"), (9, "RejectedMarket"), (10, "Accepted"), (24, "BlockedByRisk"), (200, "Unknown")]


@pytest.mark.parametrize("code, name", RESULT_TABLE)
def test_trading_message_result_codes(code, name):
    assert C.message_result_name(code) == name
    assert C.is_rejection(code) == (code in (3, 5, 7, 9, 24))
    assert (code in C.FIN_RETRYABLE_RESULTS) == (code in (1, 3, 5, 7, 9, 24))
    assert C.message_result_name(99) == "Undocumented(99)"


# -- the fake broker -----------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.setenv(ENV_PREFIX + "STATE_DELAY_US", "20")
    return monkeypatch


class Broker:
    """One fake DLL "process" logged in with routing: the binding, the routing calls, the fake's
    debug exports, and the order events collected so far."""

    def __init__(self, path, log_path):
        self.dll = ProfitDLL(path)
        self.log_path = log_path
        self.dll.initialize_login(CREDS)
        self.dll.wait_ready(10)
        self.routing = OrderRouting(self.dll)
        self.debug = FakeDebug(self.dll.lib)
        self.orders: list[RawOrder] = []
        self.messages: list[RawTradingMessage] = []
        self.errors: list[RawOrderError] = []

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the broker has done everything asked of it; collect the events."""
        wait_for(self.debug.broker_idle, timeout, POLL_S, "the fake broker to be idle")
        for ev in self.dll.pop_events(10**6):
            if type(ev) is RawOrder:
                self.orders.append(ev)
            elif type(ev) is RawTradingMessage:
                self.messages.append(ev)
            elif type(ev) is RawOrderError:
                self.errors.append(ev)

    def rows(self, *kinds: str) -> list[dict[str, str]]:
        return [r for r in read_sent_log(self.log_path) if r["kind"] in kinds]

    def of(self, local_id: int) -> list[RawOrder]:
        return [o for o in self.orders if o.local_id == local_id]

    def close(self) -> None:
        if self.dll.initialized and not self.dll.finalized:
            self.dll.finalize()


@pytest.fixture
def open_broker(fake_so, tmp_path, clean_env):
    """``open_broker(**fake settings)``: a fresh fake DLL instance with routing (a new "process")."""
    opened: list[Broker] = []

    def start(name: str = "broker", **settings) -> Broker:
        log_path = tmp_path / f"{name}.log"
        env = {"accounts": ACCOUNTS, "broker_book": BOOK, "sent_log": log_path, "rate": 0}
        env.update(settings)
        for key in list(os.environ):
            if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "STATE_DELAY_US":
                clean_env.delenv(key)
        for key, value in fake_env(**env).items():
            clean_env.setenv(key, value)
        broker = Broker(fresh_copy(fake_so, tmp_path), log_path)
        opened.append(broker)
        return broker

    yield start
    for broker in opened:
        broker.close()


def side_name(code: int) -> str:
    return {1: "BUY", 2: "SELL"}[code]


def expected_order(row: dict[str, str]) -> dict:
    """What a RawOrder must hold, from the fake's order_cb line (its own record of the callback)."""
    return dict(
        local_id=int(row["local_id"]), cl_ord_id=row["cl_ord_id"], broker_id=int(row["broker"]),
        account_id=row["account"], sub_account_id="" if row["sub"] == "-" else row["sub"], ticker=row["ticker"],
        exchange=row["exch"], side=int(row["side"]), order_type=int(row["type"]), status=int(row["status"]),
        validity=int(row["validity"]), quantity=int(row["qty"]), traded_qty=int(row["traded"]),
        leaves_qty=int(row["leaves"]), price=float(row["price"]), stop_price=float(row["stop"]),
        avg_price=float(row["avg"]), date=0 if row["date"] == "-" else ns_of(row["date"]),
        last_update=0 if row["last"] == "-" else ns_of(row["last"]), text=row["text"], event_id=int(row["event_id"]))


def fields(order: RawOrder) -> dict:
    return {k: v for k, v in order._asdict().items() if k != "ts_recv"}


def test_accounts_with_sub_accounts_and_holders(open_broker):
    b = open_broker()
    # Masters in configuration order, each followed by its sub-accounts; holder names from
    # GetAccountDetails (the fake's owner name is not ASCII: UTF-16 / wchar_t all the way).
    assert b.routing.accounts() == [
        RoutingAccount(308, "1234567", "", "Titular Simulação"),
        RoutingAccount(308, "1234567", "sub1", "Subconta sub1"),
        RoutingAccount(120, "7654321", "", "Titular Simulação"),
    ]


def test_every_order_field_round_trips_through_the_fake(open_broker):
    b = open_broker()
    t0 = time.time_ns()
    sent = [  # hand-chosen values: account, ticker, side, type, quantity, price, stop
        (MASTER, "WDOZ26", "BUY", "LIMIT", 3, 4990.5, None),  # below the ask: rests
        (SUB, "WINZ26", "SELL", "STOP_LIMIT", 2, 120000.0, 120005.0),  # bid 130000 is above the stop: waits
        (OTHER, "WDOZ26", "SELL", "MARKET", 1, None, None),  # takes the 5000.0 bid
    ]
    results = [b.routing.send_order(acc, t, "F", side, typ, q, px, stop, PW) for acc, t, side, typ, q, px, stop in sent]
    b.settle()
    t1 = time.time_ns()
    assert [type(r) for r in results] == [SendResult] * 3
    assert len({r.local_id for r in results}) == 3 and len({r.message_id for r in results}) == 3

    # The command as the DLL received it: exactly the values sent, V2 enums, -1 for "no price".
    rows = b.rows("send_order")
    assert len(rows) == 3
    for (acc, ticker, side, typ, qty, px, stop), res, row in zip(sent, results, rows):
        assert row["result"] == str(res.local_id) and row["message_id"] == str(res.message_id)
        assert (int(row["broker"]), row["account"], row["sub"]) == (acc.broker_id, acc.account_id,
                                                                   acc.sub_account_id or "-")
        assert (row["ticker"], row["exch"]) == (ticker, "F")
        assert int(row["side"]) == {"BUY": 1, "SELL": 2}[side]
        assert int(row["type"]) == {"MARKET": 1, "LIMIT": 2, "STOP_LIMIT": 4}[typ]
        assert float(row["price"]) == (-1.0 if px is None else px)
        assert float(row["stop"]) == (-1.0 if stop is None else stop)
        assert (int(row["qty"]), row["version"], row["pw_ok"]) == (qty, "2", "1")

    # Every order callback: the RawOrder read inside it equals the fake's record, field by field.
    cb_rows = b.rows("order_cb")
    assert len(b.orders) == len(cb_rows) > 0
    for order, row in zip(b.orders, cb_rows):
        assert fields(order) == expected_order(row)
        assert t0 - 10**9 < order.date <= t1 + 10**9  # B3 local time converted back to UTC ns
    msg_rows = b.rows("msg_result")
    assert [(m.local_id, m.cl_ord_id, m.broker_id, m.message_id, m.result_code, m.message) for m in b.messages] == [
        (int(r["local_id"]), r["cl_ord_id"], int(r["broker"]), int(r["message_id"]), int(r["code"]), r["message"])
        for r in msg_rows]
    # The lifecycle of each: PendingNew, New, then the market order's fill.
    assert [o.status for o in b.of(results[0].local_id)] == [10, 0]
    assert [o.status for o in b.of(results[1].local_id)] == [10, 0]
    assert [o.status for o in b.of(results[2].local_id)] == [10, 0, 2]
    assert [m.result_code for m in b.messages if m.local_id == results[0].local_id] == [6, 10]

    # GetOrderDetails outside callbacks, by LocalOrderID and by ClOrderID, answers the same.
    for res, (acc, ticker, side, typ, qty, px, stop) in zip(results, sent):
        last = b.of(res.local_id)[-1]
        by_id = b.routing.order_details(res.local_id)
        by_cl = b.routing.order_details(-1, last.cl_ord_id)
        assert fields(by_id) == fields(by_cl) == fields(last)
        assert (by_id.account_id, by_id.sub_account_id, by_id.broker_id) == (acc.account_id, acc.sub_account_id,
                                                                            acc.broker_id)
        assert (by_id.ticker, side_name(by_id.side), by_id.quantity) == (ticker, side, qty)

    # Callbacks came from the fake's own native thread, never a Python thread.
    native = b.debug.native_thread_id()
    assert b.dll.callback_thread_ids == {native}
    assert native not in {t.native_id for t in threading.enumerate()}
    stats = b.dll.stats()
    assert stats["received"]["order"] == len(cb_rows) and stats["received"]["trading_message"] == len(msg_rows)
    assert stats["handler_errors"] == {} and stats["decode_errors"] == {}


def test_market_order_takes_the_book_level_by_level(open_broker):
    b = open_broker(max_position=20)
    buy = b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "MARKET", 7, None, None, PW)
    b.settle()
    # Asks 5000.5, 5001.0, 5001.5, 5002.0 with 2 each: 2 + 2 + 2 + 1.
    fills = b.rows("fill")
    assert [(float(r["price"]), int(r["qty"])) for r in fills] == [(5000.5, 2), (5001.0, 2), (5001.5, 2), (5002.0, 1)]
    steps = b.of(buy.local_id)
    assert [(o.status, o.traded_qty, o.leaves_qty) for o in steps] == [
        (10, 0, 7), (0, 0, 7), (1, 2, 5), (1, 4, 3), (1, 6, 1), (2, 7, 0)]
    avg_buy = (2 * 5000.5 + 2 * 5001.0 + 2 * 5001.5 + 1 * 5002.0) / 7  # 35008 / 7
    assert steps[-1].avg_price == pytest.approx(avg_buy, abs=1e-9)
    assert [C.lifecycle_status(o.status) for o in steps] == [SUBMITTED, ACCEPTED, PARTIALLY_FILLED, PARTIALLY_FILLED,
                                                             PARTIALLY_FILLED, FILLED]

    # A limit sell that crosses the 5000.0 bid (3): fills 3 there, reduces the long.
    b.routing.send_order(MASTER, "WDOZ26", "F", "SELL", "LIMIT", 3, 5000.0, None, PW)
    b.settle()
    pos = b.routing.position(MASTER, "WDOZ26", "F")
    assert pos == RawPosition("WDOZ26", "F", 4, pytest.approx(avg_buy, abs=1e-9), 1, 7, pytest.approx(avg_buy, abs=1e-9),
                              3, 5000.0, 4, 1, pos.event_id)

    # A market sell of 13 against what is left of the bids (4999.5 ... 4998.0, 3 each = 12): 12 trade,
    # the last contract is cancelled for want of liquidity. Position 4 -> 1 -> -2 (flip: avg 4999.0)
    # -> -5 (avg (2*4999.0 + 3*4998.5)/5 = 4998.7) -> -8 (avg (5*4998.7 + 3*4998.0)/8 = 4998.4375).
    sell = b.routing.send_order(MASTER, "WDOZ26", "F", "SELL", "MARKET", 13, float("nan"), -1, PW)
    b.settle()
    last = b.of(sell.local_id)[-1]
    assert (last.status, last.traded_qty, last.leaves_qty) == (15, 12, 0)
    assert last.text == "no liquidity for the rest of the market order"
    assert C.lifecycle_status(last.status, PARTIALLY_FILLED, last.traded_qty) == CANCELLED
    assert last.avg_price == pytest.approx((3 * 4999.5 + 3 * 4999.0 + 3 * 4998.5 + 3 * 4998.0) / 12, abs=1e-9)
    pos = b.routing.position(MASTER, "WDOZ26", "F")
    assert (pos.open_qty, pos.open_side) == (-8, 2)
    assert pos.open_avg_price == pytest.approx(4998.4375, abs=1e-9)
    assert (pos.daily_buy_qty, pos.daily_sell_qty, pos.daily_qty) == (7, 15, -8)
    assert pos.daily_sell_avg_price == pytest.approx((3 * 5000.0 + 3 * 4999.5 + 3 * 4999.0 + 3 * 4998.5 + 3 * 4998.0) / 15,
                                                     abs=1e-9)
    # The fake's own fill log agrees with the position we were told.
    assert int(b.rows("fill")[-1]["position"]) == -8


def test_resting_limit_and_stop_limit_fill_when_the_book_moves(open_broker):
    b = open_broker()
    buy = b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "LIMIT", 2, 4999.0, None, PW)
    stop = b.routing.send_order(MASTER, "WDOZ26", "F", "SELL", "STOP_LIMIT", 1, 4989.5, 4990.0, PW)
    b.settle()
    assert b.of(buy.local_id)[-1].status == 0 and b.of(stop.local_id)[-1].status == 0
    # The ask comes down to the limit with 1 contract: 1 fills; the next ask (4999.5) is above it.
    b.debug.set_book("WDOZ26", 4998.0, 5, 4999.0, 1)
    b.settle()
    o = b.of(buy.local_id)[-1]
    assert (o.status, o.traded_qty, o.leaves_qty, o.avg_price) == (1, 1, 1, 4999.0)
    # Through it: the rest fills at 4998.5; avg (4999.0 + 4998.5) / 2.
    b.debug.set_book("WDOZ26", 4998.0, 5, 4998.5, 5)
    b.settle()
    o = b.of(buy.local_id)[-1]
    assert (o.status, o.traded_qty, o.leaves_qty, o.avg_price) == (2, 2, 0, 4998.75)
    assert b.of(stop.local_id)[-1].status == 0  # bid 4998.0 is above the 4990.0 stop: not triggered
    # Bid down to the stop: triggered, a limit sell at 4989.5 that the 4990.0 bid fills.
    b.debug.set_book("WDOZ26", 4990.0, 2, 4990.5, 2)
    b.settle()
    s = b.of(stop.local_id)[-1]
    assert (s.status, s.traded_qty, s.avg_price, s.stop_price, s.price) == (2, 1, 4990.0, 4990.0, 4989.5)
    assert [r["ticker"] for r in b.rows("set_book")] == ["WDOZ26"] * 3
    pos = b.routing.position(MASTER, "WDOZ26", "F")
    assert (pos.open_qty, pos.open_avg_price) == (1, 4998.75)  # bought 2 @ 4998.75, sold 1: avg unchanged


def test_change_cancel_cancel_all_and_zero_position(open_broker):
    b = open_broker()
    rest = b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "LIMIT", 2, 4995.0, None, PW)
    b.settle()
    cl = b.of(rest.local_id)[-1].cl_ord_id
    msg = b.routing.change_order(MASTER, rest.local_id, "", 4996.0, None, 3, PW)
    b.settle()
    steps = b.of(rest.local_id)
    assert [o.status for o in steps[-2:]] == [14, 5]  # PendingReplace, Replaced
    assert (steps[-1].price, steps[-1].quantity, steps[-1].leaves_qty) == (4996.0, 3, 3)
    assert C.lifecycle_status(14, ACCEPTED) == ACCEPTED and C.lifecycle_status(5, ACCEPTED) == ACCEPTED
    assert [(m.message_id, m.result_code) for m in b.messages if m.message_id == msg] == [(msg, 10)]
    change_row = b.rows("change_order")[-1]
    assert (change_row["order_local_id"], change_row["price"], change_row["qty"], change_row["message_id"]) == (
        str(rest.local_id), "4996", "3", str(msg))

    # Off the tick: the change is refused, the order stays as it was, the DLL's reason kept.
    msg2 = b.routing.change_order(MASTER, -1, cl, 4996.3, None, 3, PW)
    b.settle()
    last = b.of(rest.local_id)[-1]
    assert (last.status, last.price) == (5, 4996.0)
    assert last.text.startswith("change rejected: invalid price")
    refused = [m for m in b.messages if m.message_id == msg2]
    assert [m.result_code for m in refused] == [9] and refused[0].message == last.text

    msg3 = b.routing.cancel_order(MASTER, -1, cl, PW)
    b.settle()
    assert [o.status for o in b.of(rest.local_id)[-2:]] == [6, 4]  # PendingCancel, Canceled
    assert b.of(rest.local_id)[-1].leaves_qty == 0
    assert [m.result_code for m in b.messages if m.message_id == msg3] == [10]
    msg4 = b.routing.cancel_order(MASTER, rest.local_id, "", PW)  # again: nothing left to cancel
    b.settle()
    assert [(m.result_code, m.message) for m in b.messages if m.message_id == msg4] == [
        (9, "cancel rejected: the order is not working")]

    # Cancel-all: both resting orders of the account, none of another account's.
    a = b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "LIMIT", 1, 4980.0, None, PW)
    c = b.routing.send_order(MASTER, "WINZ26", "F", "SELL", "LIMIT", 1, 131000.0, None, PW)
    other = b.routing.send_order(OTHER, "WDOZ26", "F", "BUY", "LIMIT", 1, 4980.0, None, PW)
    b.settle()
    b.routing.cancel_all_orders(MASTER, PW)
    b.settle()
    assert [o.status for o in b.of(a.local_id)[-2:]] == [6, 4] and [o.status for o in b.of(c.local_id)[-2:]] == [6, 4]
    assert b.of(other.local_id)[-1].status == 0
    assert b.rows("cancel_all")[-1]["result"] == "0"

    # Zero position: a market order for the whole position, on the other side.
    b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "MARKET", 2, None, None, PW)
    b.settle()
    assert b.routing.position(MASTER, "WDOZ26", "F").open_qty == 2
    zero = b.routing.zero_position(MASTER, "WDOZ26", "F", PW)
    b.settle()
    closing = b.of(zero)[-1]
    assert (closing.side, closing.order_type, closing.quantity, closing.status) == (2, 1, 2, 2)
    zrow = b.rows("zero_position")[-1]
    assert (zrow["result"], zrow["price"], zrow["position_type"], zrow["version"], zrow["qty"]) == (
        str(zero), "-1", "1", "2", "2")
    pos = b.routing.position(MASTER, "WDOZ26", "F")
    assert (pos.open_qty, pos.open_side, pos.open_avg_price) == (0, 0, 0.0)
    with pytest.raises(E.NoPositionError, match="SendZeroPositionV2"):
        b.routing.zero_position(MASTER, "WDOZ26", "F", PW)
    # Never traded: GetPositionV2 says NL_NO_POSITION, which reads as flat.
    assert b.routing.position(SUB, "WINZ26", "F") == RawPosition("WINZ26", "F", 0, 0.0, 0, 0, 0.0, 0, 0.0, 0, 1, 0)


@pytest.mark.parametrize("case, settings, order, code, text", [
    ("invalid price", {}, ("LIMIT", 2, 5000.3), 9, "invalid price: 5000.3000000000002 is not a multiple of the tick 0.5"),
    ("market closed", {"market": "closed"}, ("LIMIT", 2, 5000.0), 9, "market closed"),
    ("insufficient margin", {"max_position": 2}, ("MARKET", 3, None), 24,
     "insufficient margin: position would reach 3 (max 2)"),
    ("wrong password", {"routing_password": "another-route-pw"}, ("MARKET", 1, None), 7, "invalid routing password"),
])
def test_rejections_carry_the_dlls_reason(open_broker, case, settings, order, code, text):
    b = open_broker(**settings)
    typ, qty, px = order
    res = b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", typ, qty, px, None, PW)
    b.settle()
    last = b.of(res.local_id)[-1]
    assert (last.status, last.leaves_qty, last.traded_qty) == (8, 0, 0)
    assert last.text == text == b.rows("order_cb")[-1]["text"]
    assert C.lifecycle_status(last.status, SUBMITTED) == REJECTED
    results = [(m.result_code, m.message) for m in b.messages if m.local_id == res.local_id]
    assert results == [(6, "sent to broker"), (code, text)]
    assert C.is_rejection(code)
    assert b.rows("fill") == []
    assert b.routing.position(MASTER, "WDOZ26", "F").open_qty == 0


def test_errors_the_dll_returns_are_named(open_broker):
    b = open_broker()
    stranger = RoutingAccount(999, "0000001", "", "")
    with pytest.raises(E.InvalidArgsError, match="SendOrder"):
        b.routing.send_order(stranger, "WDOZ26", "F", "BUY", "MARKET", 1, None, None, PW)
    with pytest.raises(E.ExchangeUnknownError, match="SendOrder"):
        b.routing.send_order(MASTER, "WDOZ26", "Q", "BUY", "MARKET", 1, None, None, PW)
    with pytest.raises(E.InvalidTickerError, match="SendOrder"):
        b.routing.send_order(MASTER, "PETR4", "F", "BUY", "MARKET", 1, None, None, PW)
    with pytest.raises(E.NotFoundError, match="GetOrderDetails"):
        b.routing.order_details(999_999_999)
    with pytest.raises(E.NotFoundError, match="SendCancelOrderV2"):
        b.routing.cancel_order(MASTER, 999_999_999, "", PW)
    res = b.routing.send_order(OTHER, "WDOZ26", "F", "BUY", "LIMIT", 1, 4900.0, None, PW)
    with pytest.raises(E.InvalidArgsError, match="SendCancelOrderV2"):  # another account's order
        b.routing.cancel_order(MASTER, res.local_id, "", PW)
    b.settle()
    assert [r["result"] for r in b.rows("send_order")][:3] == [str(-2147483645), str(-2147483633), str(-2147483617)]


def raw_send_order(b: Broker, version: int, order_type: int, side: int, quantity: int = 1) -> tuple[int, int]:
    """SendOrder with a record built by hand (what the binding never sends: other versions, V0 enums)."""
    keep = [ctypes.create_unicode_buffer(text) for text in ("1234567", "WDOZ26", "F", PW)]
    rec = S.TConnectorSendOrderSafe(Version=version, OrderType=order_type, OrderSide=side, Price=-1.0, StopPrice=-1.0,
                                    Quantity=quantity, MessageID=-7)
    rec.AccountID.BrokerID = 308
    rec.AccountID.AccountID = ctypes.addressof(keep[0])
    rec.AssetID.Ticker, rec.AssetID.Exchange = ctypes.addressof(keep[1]), ctypes.addressof(keep[2])
    rec.Password = ctypes.addressof(keep[3])
    return b.dll.lib.SendOrder(ctypes.byref(rec)), rec.MessageID


def test_struct_version_decides_the_enums(open_broker):
    b = open_broker()
    assert raw_send_order(b, 3, 1, 1) == (-2147483635, -7)  # NL_VERSION_NOT_SUPPORTED
    assert raw_send_order(b, 1, 0, 1)[0] == -2147483645  # V1 has no type 0
    assert raw_send_order(b, 1, 1, 0)[0] == -2147483645  # nor side 0
    assert raw_send_order(b, 2, 1, 1, quantity=0)[0] == -2147483645
    local_id, message_id = raw_send_order(b, 0, 2, 0)  # V0: type 2 = market, side 0 = buy; no MessageID
    assert local_id > 0 and message_id == -7
    v1_id, v1_message = raw_send_order(b, 1, 1, 2)  # V1: market sell; still no MessageID
    assert v1_id == local_id + 1 and v1_message == -7
    b.settle()
    # The broker answers in the V1 enums whatever the version sent (the manual: "synchronized with GetOrderDetails").
    v0 = b.routing.order_details(local_id)
    assert (v0.order_type, v0.side, v0.quantity) == (1, 1, 1)
    assert [r["version"] for r in b.rows("send_order")] == ["3", "1", "1", "2", "0", "1"]


BAD_ARGUMENTS = [
    ("side", dict(side="HOLD")), ("order_type", dict(order_type="ICEBERG")), ("quantity", dict(quantity=0)),
    ("quantity", dict(quantity=True)), ("quantity", dict(quantity=1.5)), ("quantity", dict(quantity=-3)),
    ("price", dict(order_type="LIMIT", price=float("nan"))), ("price", dict(order_type="LIMIT", price=-5000.0)),
    ("price", dict(order_type="LIMIT", price=float("inf"))), ("price", dict(price=5000.0)),
    ("stop_price", dict(order_type="LIMIT", price=5000.0, stop_price=4990.0)),
    ("stop_price", dict(order_type="STOP_LIMIT", price=5000.0, stop_price=None)),
    ("password", dict(password="")), ("password", dict(password=None)), ("password", dict(password="a\0b")),
    ("ticker", dict(ticker="")), ("ticker", dict(ticker="WDO\0Z26")), ("ticker", dict(ticker="W" * 65)),
    ("ticker", dict(ticker=b"WDOZ26")), ("exchange", dict(exchange="")), ("account", dict(account="308:1234567")),
    ("account_id", dict(account=RoutingAccount(308, "", "", ""))),
    ("broker_id", dict(account=RoutingAccount("308", "1234567", "", ""))),
]


@pytest.mark.parametrize("what, changes", BAD_ARGUMENTS, ids=[f"{w}-{i}" for i, (w, _) in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments_are_refused_before_any_native_call(open_broker, what, changes):
    b = open_broker()
    args = dict(account=MASTER, ticker="WDOZ26", exchange="F", side="BUY", order_type="MARKET", quantity=1,
                price=None, stop_price=None, password=PW)
    args.update(changes)
    with pytest.raises(ValueError) as info:
        b.routing.send_order(**args)
    message = str(info.value)
    assert "\n" not in message and (what in message or what.replace("_", " ") in message)
    assert PW not in message
    b.settle()
    assert b.rows("send_order") == []  # nothing reached the DLL


def test_other_calls_check_their_arguments(open_broker):
    b = open_broker()
    for call in (lambda: b.routing.change_order(MASTER, -1, "", 5000.0, None, 1, PW),  # no id at all
                 lambda: b.routing.change_order(MASTER, 100001, "", 0.0, None, 1, PW),
                 lambda: b.routing.change_order(MASTER, 100001, "", 5000.0, None, 0, PW),
                 lambda: b.routing.cancel_order(MASTER, 0, "", PW),
                 lambda: b.routing.cancel_order(MASTER, 100001, "", ""),
                 lambda: b.routing.cancel_all_orders(MASTER, None),
                 lambda: b.routing.zero_position(MASTER, "WDOZ26", "F", PW, position_type=3),
                 lambda: b.routing.zero_position(MASTER, "WDOZ26", "F", PW, price=-2.0),
                 lambda: b.routing.position(MASTER, "WDOZ26", "F", position_type=0),
                 lambda: b.routing.order_details(None, None),
                 lambda: b.routing.set_day_trade(1)):
        with pytest.raises(ValueError):
            call()
    b.settle()
    assert b.rows("change_order", "cancel_order", "cancel_all", "zero_position", "set_day_trade") == []


def test_day_trade_flag_and_market_only_login(open_broker, fake_so, tmp_path, clean_env):
    b = open_broker()
    b.routing.set_day_trade(True)
    b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "LIMIT", 1, 4900.0, None, PW)
    b.settle()
    assert b.rows("set_day_trade")[-1]["on"] == "1" and b.rows("send_order")[-1]["day_trade"] == "1"
    # The market-data login has no routing: the order callbacks are not registered, and the
    # routing calls are refused by the DLL (NL_MARKET_ONLY), not silently dropped.
    clean_env.setenv(ENV_PREFIX + "SENT_LOG", str(tmp_path / "market-only.log"))
    dll = ProfitDLL(fresh_copy(fake_so, tmp_path))
    dll.initialize_market_login(CREDS)
    try:
        dll.wait_ready(10)
        with pytest.raises(E.MarketOnlyError, match="SendOrder"):
            OrderRouting(dll).send_order(MASTER, "WDOZ26", "F", "BUY", "MARKET", 1, None, None, PW)
    finally:
        dll.finalize()


def test_enumeration_lists_every_order_and_the_broker_outlives_the_process(open_broker, tmp_path):
    state = tmp_path / "broker.state"
    b = open_broker("first", broker_state=state)
    filled = b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "MARKET", 2, None, None, PW)
    resting = b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "LIMIT", 1, 4990.0, None, PW)
    on_sub = b.routing.send_order(SUB, "WINZ26", "F", "BUY", "LIMIT", 1, 129000.0, None, PW)
    rejected = b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "LIMIT", 1, 4990.2, None, PW)
    b.settle()
    ids = [filled.local_id, resting.local_id, on_sub.local_id, rejected.local_id]
    assert ids == sorted(ids)
    listed = b.routing.all_orders(MASTER)  # a master's enumeration includes its sub-accounts' orders
    assert [o.local_id for o in listed] == ids
    for o in listed:
        assert fields(o) == fields(b.routing.order_details(o.local_id))
    assert [o.status for o in listed] == [2, 0, 0, 8]
    assert [o.local_id for o in b.routing.all_orders(SUB)] == [on_sub.local_id]
    assert b.routing.all_orders(OTHER) == []
    position = b.routing.position(MASTER, "WDOZ26", "F")
    b.close()

    # A new "process" on the same state file: same orders, same position, ids go on increasing.
    # Its book (ask 4990.5) does not reach the resting buy at 4990.0 yet.
    b2 = open_broker("second", broker_state=state, broker_book="WDOZ26:4989.0x1/4990.5x4")
    assert b2.rows("broker_load")[0]["orders"] == "4"
    b2.settle()  # the recovery pass: nothing crosses
    assert b2.orders == []
    assert [fields(o) for o in b2.routing.all_orders(MASTER)] == [fields(o) for o in listed]
    assert b2.routing.position(MASTER, "WDOZ26", "F") == position
    b2.debug.set_book("WDOZ26", 4989.0, 1, 4990.0, 4)  # now it does: the old process's order fills here
    b2.settle()
    assert [(o.local_id, o.status, o.avg_price) for o in b2.orders] == [(resting.local_id, 2, 4990.0)]
    nxt = b2.routing.send_order(MASTER, "WDOZ26", "F", "SELL", "LIMIT", 1, 5100.0, None, PW)
    assert nxt.local_id == ids[-1] + 1

    # The enumeration proc can stop early by returning False.
    seen = []

    @S.TConnectorEnumerateOrdersProc
    def first_two(p_order, _param):
        seen.append(p_order.contents.OrderID.LocalOrderID)
        return len(seen) < 2

    account = ctypes.create_unicode_buffer("1234567")
    ident = S.TConnectorAccountIdentifierSafe(0, 308, ctypes.addressof(account), None, 0)
    assert b2.dll.lib.EnumerateAllOrders(ctypes.byref(ident), 1, 0, first_two) == 0
    assert seen == ids[:2]
    b2.settle()
    assert sorted(read_broker_state(state)["orders"]) == ids + [nxt.local_id]


def test_an_order_that_cannot_be_read_stops_the_enumeration_with_a_clear_error(open_broker, clean_env):
    from pipelines.adapters.profitdll import routing as R

    b = open_broker()
    for price in (4900.0, 4900.5, 4901.0):
        b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "LIMIT", 1, price, None, PW)
    b.settle()
    calls = []
    real = R.order_from_record

    def second_is_corrupt(record):
        calls.append(record.OrderID.LocalOrderID)
        if len(calls) == 2:
            raise UnicodeDecodeError("utf-16-le", b"\xd8", 0, 1, "lone surrogate")
        return real(record)

    clean_env.setattr(R, "order_from_record", second_is_corrupt)
    with pytest.raises(E.ProfitDLLError, match="EnumerateAllOrders: an order could not be read"):
        b.routing.all_orders(MASTER)
    assert len(calls) == 2 and b.routing.enumerate_errors == 1  # the proc said stop; nothing escaped into C
    clean_env.setattr(R, "order_from_record", real)
    assert [o.price for o in b.routing.all_orders(MASTER)] == [4900.0, 4900.5, 4901.0]


def test_password_never_leaves_the_call(open_broker, tmp_path, caplog):
    secret = "rota-Ω-secreta-5512"
    state = tmp_path / "pw.state"
    b = open_broker(routing_password=secret, broker_state=state)
    caplog.set_level(logging.DEBUG)
    texts = []
    res = b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "MARKET", 1, None, None, secret)
    b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "MARKET", 1, None, None, "wrong-" + secret)
    b.routing.cancel_all_orders(MASTER, secret)
    for call in (lambda: b.routing.send_order(RoutingAccount(1, "x", "", ""), "WDOZ26", "F", "BUY", "MARKET", 1,
                                              None, None, secret),
                 lambda: b.routing.send_order(MASTER, "WDOZ26", "F", "BUY", "MARKET", 1, None, None, secret + "\0"),
                 lambda: b.routing.cancel_order(MASTER, 999_999_999, "", secret),
                 lambda: b.routing.change_order(MASTER, 999_999_999, "", 5000.0, None, 1, secret)):
        with pytest.raises(Exception) as info:
            call()
        texts += [str(info.value), repr(info.value)]
    b.settle()
    texts += [repr(b.routing), repr(b.dll), repr(res), caplog.text, str(b.dll.stats())]
    texts += [repr(o) for o in b.orders] + [repr(m) for m in b.messages]
    b.close()
    files = [b.log_path.read_bytes(), state.read_bytes()]
    for form in (secret, secret.replace("Ω", "?")):
        assert not any(form in t for t in texts)
        assert not any(form.encode() in f for f in files)
    # Compared by the DLL, kept as a flag only (the unknown account's call never got that far).
    assert [r["pw_ok"] for r in read_sent_log(b.log_path) if r["kind"] == "send_order"] == ["1", "0", "0"]
    # The buffer the DLL read the password from is zeroed once the call returns.
    strings = _Strings()
    strings.ptr(secret)
    buf = strings._buffers[0]
    strings.wipe()
    assert buf.value == "" and bytes(buf) == b"\0" * ctypes.sizeof(buf)


def test_callback_failures_are_counted_and_name_the_order(fake_so, tmp_path, clean_env):
    dll = ProfitDLL(fresh_copy(fake_so, tmp_path), pin_thread_state=False)
    dll.initialize_login(CREDS)
    try:
        dll.wait_ready(10)
        dll._on_order(S.TConnectorOrderIdentifier(0, 123_456_789, "FK-none"))  # the DLL does not know it
        dll._on_trading_message(None)
        events = [e for e in dll.pop_events(1000) if type(e) is RawOrderError]
        assert [(e.local_id, e.cl_ord_id) for e in events] == [(123_456_789, "FK-none")]
        assert "NL_NOT_FOUND" in events[0].error
        stats = dll.stats()
        assert stats["decode_errors"] == {"order": 1, "trading_message": 1}
        assert stats["handler_errors"] == {}
    finally:
        dll.finalize()


# -- a crash between the order and its fill: only a child process can show it ------------------

CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from pipelines.adapters.profitdll.binding import ProfitDLL
    from pipelines.adapters.profitdll.credentials import Credentials
    from pipelines.adapters.profitdll.routing import OrderRouting, RoutingAccount
    dll = ProfitDLL(sys.argv[1])
    dll.initialize_login(Credentials("k", "u", "p"))
    dll.wait_ready(20)
    routing = OrderRouting(dll)
    routing.send_order(RoutingAccount(308, "1234567", "", ""), "WDOZ26", "F", "BUY", "MARKET", 3, None, None,
                       {pw!r})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        dll.pop_events(10000)
        time.sleep(0.001)
    sys.exit(3)  # the DLL was supposed to crash the process
""")


def test_crash_on_order_then_a_new_process_fills_it_once(open_broker, fake_so, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), pw=PW))
    state, log_path = tmp_path / "crash.state", tmp_path / "child.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(fake_env(sent_log=log_path, broker_state=state, accounts=ACCOUNTS, broker_book=BOOK,
                        crash_on_order=1, state_delay_us=20, rate=0))
    proc = subprocess.run([sys.executable, str(script), str(fresh_copy(fake_so, tmp_path))], env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGSEGV, proc.stderr.decode()[-2000:]
    rows = read_sent_log(log_path)
    sent = [r for r in rows if r["kind"] == "send_order"]
    assert len(sent) == 1
    local_id = int(sent[0]["result"])
    assert (rows[-1]["kind"], rows[-1]["reason"], rows[-1]["local_id"]) == ("crash", "crash_on_order", str(local_id))
    assert not [r for r in rows if r["kind"] in ("order_cb", "msg_result", "fill")]  # it died before any callback
    assert read_broker_state(state)["orders"][local_id]["status"] == "10"  # at the broker, not yet worked

    # The next process: the order is the broker's, not sent again; it is accepted and filled there.
    b = open_broker("after", broker_state=state)
    b.settle()
    assert b.rows("send_order") == []
    assert [o.status for o in b.of(local_id)] == [10, 0, 1, 2]
    done = b.of(local_id)[-1]
    # Asks 5000.5 x2 then 5001.0: avg (2 * 5000.5 + 5001.0) / 3.
    assert (done.traded_qty, done.avg_price) == (3, pytest.approx((2 * 5000.5 + 5001.0) / 3, abs=1e-9))
    assert [o.local_id for o in b.routing.all_orders(MASTER)] == [local_id]
    assert b.debug.broker_order_count() == 1
    pos = b.routing.position(MASTER, "WDOZ26", "F")
    assert (pos.open_qty, pos.open_avg_price) == (3, pytest.approx((2 * 5000.5 + 5001.0) / 3, abs=1e-9))
    assert not math.isnan(pos.open_avg_price)
