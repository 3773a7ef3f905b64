"""ProfitDLL binding: struct layouts, NL codes, the offer-book model, and the whole binding driven
by the native fake DLL (tests/fake_profitdll/fake_profitdll.c) firing callbacks from its own
pthread. Every decoded value is compared with what the fake says it sent (its sent log) or with
hand-computed references; crash tests run in a child process."""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from datetime import date, datetime

import pytest

from pipelines.adapters.profitdll.credentials import Credentials
from pipelines.model.messages import BookSnapshot, Trade
from pipelines.adapters.profitdll import errors as E
from pipelines.adapters.profitdll import structs as S
from pipelines.adapters.profitdll.binding import (
    ProfitDLL,
    RawBook,
    RawDaily,
    RawDepth,
    RawInvalidTicker,
    RawState,
    RawTrade,
    resolve_dll_path,
)
from pipelines.adapters.profitdll.offerbook import (
    BookError,
    Offer,
    OfferArrayError,
    OfferBook,
    parse_offer_array_v2,
    parse_offer_orders_v2,
)
from pipelines.adapters.profitdll.session import ProfitSession
from tests.helpers import REPO, wait_for
from tests.profitdll_fake import (
    ENV_PREFIX,
    FakeDebug,
    fake_env,
    fresh_copy,
    levels_of,
    ns_of,
    ns_of_ddmm,
    read_sent_log,
)

CREDS = Credentials("test-key-0001", "test-user-0001", "test-pass-0001")
# The fake fires callbacks from its own thread, thousands a second, into bounded queues: waits
# check (and pump the session) every 2 ms.
POLL_S = 0.002


# -- struct layouts (the real DLL's records) ---------------------------------------------------


def offsets(cls) -> dict[str, int]:
    return {name: getattr(cls, name).offset for name, _ in cls._fields_}


@pytest.mark.parametrize("cls, size, expected", [
    (S.TAssetIDRec, 20, {"ticker": 0, "bolsa": 8, "feed": 16}),
    (S.TAssetIDRecSafe, 20, {"ticker": 0, "bolsa": 8, "feed": 16}),
    (S.TConnectorAssetIdentifier, 32, {"Version": 0, "Ticker": 8, "Exchange": 16, "FeedType": 24}),
    (S.TConnectorAssetIdentifierSafe, 32, {"Version": 0, "Ticker": 8, "Exchange": 16, "FeedType": 24}),
    (S.TConnectorAssetIdentifierOut, 40, {"Version": 0, "Ticker": 8, "TickerLength": 16, "Exchange": 24,
                                          "ExchangeLength": 32, "FeedType": 36}),
    (S.TConnectorAccountIdentifier, 32, {"Version": 0, "BrokerID": 4, "AccountID": 8, "SubAccountID": 16,
                                         "Reserved": 24}),
    (S.TConnectorOrderIdentifier, 24, {"Version": 0, "LocalOrderID": 8, "ClOrderID": 16}),
    (S.SystemTime, 16, {"wYear": 0, "wMonth": 2, "wDayOfWeek": 4, "wDay": 6, "wHour": 8, "wMinute": 10,
                        "wSecond": 12, "wMilliseconds": 14}),
    (S.TConnectorTrade, 64, {"Version": 0, "TradeDate": 2, "TradeNumber": 20, "Price": 24, "Quantity": 32,
                             "Volume": 40, "BuyAgent": 48, "SellAgent": 52, "TradeType": 56}),
    (S.TConnectorPriceGroup, 40, {"Version": 0, "Price": 8, "Count": 16, "Quantity": 24, "PriceGroupFlags": 32}),
    (S.TConnectorSendOrder, 120, {"Version": 0, "AccountID": 8, "AssetID": 40, "Password": 72, "OrderType": 80,
                                  "OrderSide": 81, "Price": 88, "StopPrice": 96, "Quantity": 104, "MessageID": 112}),
])
def test_struct_layouts_match_the_reference(cls, size, expected):
    assert ctypes.sizeof(cls) == size
    assert offsets(cls) == expected


def test_int64_fields_are_64_bit():
    assert S.TConnectorTrade.Quantity.size == 8
    assert S.TConnectorPriceGroup.Quantity.size == 8
    trade = S.TConnectorTrade(Version=0, Quantity=2**40 + 3)
    assert trade.Quantity == 2**40 + 3


def test_trade_layout_reads_what_ctypes_wrote():
    t = S.TConnectorTrade(Version=0, TradeNumber=4_000_000_123, Price=5432.5, Quantity=3_000_000_000,
                          Volume=1.25e12, BuyAgent=85, SellAgent=-7, TradeType=13)
    t.TradeDate = S.SystemTime(2025, 8, 1, 4, 9, 30, 15, 999)
    assert S.TRADE_LAYOUT.unpack_from(t) == (0, 2025, 8, 1, 4, 9, 30, 15, 999, 4_000_000_123, 5432.5,
                                             3_000_000_000, 1.25e12, 85, -7, 13)


def test_callback_switch_matches_platform():
    if sys.platform == "win32":  # pragma: no cover
        assert S.FUNCTYPE is ctypes.WINFUNCTYPE and S.LIBRARY is ctypes.WinDLL
    else:
        assert S.FUNCTYPE is ctypes.CFUNCTYPE and S.LIBRARY is ctypes.CDLL


# -- NL codes (the real DLL's NResult values) ------------------------------------------------

NL_TABLE = [  # (hex, name) transcribed from the reference table
    (0x80000001, "INTERNAL_ERROR"), (0x80000002, "NOT_INITIALIZED"), (0x80000003, "INVALID_ARGS"),
    (0x80000004, "WAITING_SERVER"), (0x80000005, "NO_LOGIN"), (0x80000006, "NO_LICENSE"),
    (0x80000007, "PASSWORD_HASH_SHA1"), (0x80000008, "PASSWORD_HASH_MD5"), (0x80000009, "OUT_OF_RANGE"),
    (0x8000000A, "MARKET_ONLY"), (0x8000000B, "NO_POSITION"), (0x8000000C, "NOT_FOUND"),
    (0x8000000D, "VERSION_NOT_SUPPORTED"), (0x8000000E, "OCO_NO_RULES"), (0x8000000F, "EXCHANGE_UNKNOWN"),
    (0x80000010, "NO_OCO_DEFINED"), (0x80000011, "INVALID_SERIE"), (0x80000012, "LICENSE_NOT_ALLOWED"),
    (0x80000013, "NOT_HARD_LOGOUT"), (0x80000014, "SERIE_NO_HISTORY"), (0x80000015, "ASSET_NO_DATA"),
    (0x80000016, "SERIE_NO_DATA"), (0x80000017, "HAS_STRATEGY_RUNNING"), (0x80000018, "SERIE_NO_MORE_HISTORY"),
    (0x80000019, "SERIE_MAX_COUNT"), (0x8000001A, "DUPLICATE_RESOURCE"), (0x8000001B, "UNSIGNED_CONTRACT"),
    (0x8000001C, "NO_PASSWORD"), (0x8000001D, "NO_USER"), (0x8000001E, "FILE_ALREADY_EXISTS"),
    (0x8000001F, "INVALID_TICKER"), (0x80000020, "NOT_MASTER_ACCOUNT"), (0x8000002E, "HISTORY_PERIOD_LIMIT"),
]


@pytest.mark.parametrize("code, name", NL_TABLE)
def test_every_nl_code_maps_to_its_named_exception(code, name):
    signed = code - 2**32
    for form in (signed, code):  # restype c_int gives the signed form; the unsigned one is accepted too
        with pytest.raises(E.ProfitDLLError) as info:
            E.check(form, "SubscribeTicker")
        exc = info.value
        assert type(exc) is not E.ProfitDLLError
        assert exc.nl_name == f"NL_{name}"
        assert exc.code == code and exc.hex == f"0x{code:08X}" and exc.func == "SubscribeTicker"
        assert f"NL_{name}" in str(exc) and f"0x{code:08X}" in str(exc) and "SubscribeTicker" in str(exc)
        assert str(signed) in str(exc)


def test_nl_classes_are_distinct_and_named():
    classes = [E.NL_ERRORS[code] for code, _ in NL_TABLE]
    assert len(set(classes)) == len(NL_TABLE) == len(E.NL_ERRORS)
    assert E.NL_ERRORS[0x80000003] is E.InvalidArgsError
    assert E.NL_ERRORS[0x8000001F] is E.InvalidTickerError
    assert E.NL_ERRORS[0x8000002E] is E.HistoryPeriodLimitError


def test_check_passes_ok_and_counts_and_reports_unknown_codes():
    assert E.check(0, "f") == 0
    assert E.check(17, "GetPriceDepthSideCount") == 17
    assert E.check(2**40, "SendOrder") == 2**40  # a positive Int64 id
    with pytest.raises(E.InvalidArgsError):
        E.check(-2147483645, "SendOrder")  # Int64 return, sign-extended NL code
    with pytest.raises(E.ProfitDLLError) as info:
        E.check(-2147483615, "GetFoo")  # 0x80000021: not in the table
    assert type(info.value) is E.ProfitDLLError
    assert info.value.hex == "0x80000021" and "0x80000021" in str(info.value) and "GetFoo" in str(info.value)


# -- offer arrays and the book model (hand-built references) ----------------------------------


def offer_array(entries, flags=1, extra=b""):
    body = b"".join(struct.pack("<dqiqH", p, q, a, o, len(d)) + d for p, q, a, o, d in entries) + extra
    total = 8 + len(body) + 4
    return struct.pack("<ii", len(entries), total) + body + struct.pack("<I", flags)


def test_offer_array_walks_variable_date_lengths():
    data = offer_array([
        (5400.5, 3_000_000_000, 85, 10_000_000_001, b"04/08/2025 09:00:00.123"),
        (5401.0, 7, 3, 10_000_000_002, b"04/08/2025 09:00:01"),
        (5401.5, 1, 120, 2**40, b""),
    ], flags=3)
    assert len(data) == 8 + 3 * 30 + 23 + 19 + 0 + 4
    entries, flags = parse_offer_array_v2(data)
    assert flags == 3
    assert entries == [
        Offer(5400.5, 3_000_000_000, 85, 10_000_000_001, "04/08/2025 09:00:00.123"),
        Offer(5401.0, 7, 3, 10_000_000_002, "04/08/2025 09:00:01"),
        Offer(5401.5, 1, 120, 2**40, ""),
    ]
    assert parse_offer_array_v2(offer_array([])) == ([], 1)


@pytest.mark.parametrize("data, message", [
    (b"\x00" * 11, "shorter than"),
    (struct.pack("<ii", 0, 99) + struct.pack("<I", 1), "header says 99 bytes"),
    (struct.pack("<ii", 2, 42) + struct.pack("<dqiqH", 1.0, 1, 1, 1, 0) + struct.pack("<I", 1), "entry 1 of 2"),
    (offer_array([(1.0, 1, 1, 1, b"ab")], extra=b"zz"), "2 unexplained bytes"),
    (struct.pack("<ii", 1, 8 + 30 + 4) + struct.pack("<dqiqH", 1.0, 1, 1, 1, 9) + struct.pack("<I", 1),
     "date of 9 bytes"),
    (struct.pack("<ii", -1, 12) + struct.pack("<I", 1), "negative entry count"),
])
def test_offer_array_errors_are_specific(data, message):
    with pytest.raises(OfferArrayError, match=message):
        parse_offer_array_v2(data)
    with pytest.raises(OfferArrayError, match=message):  # the FullBook fast path says the same
        parse_offer_orders_v2(data)


def test_offer_book_actions_follow_the_position_mapping():
    book = OfferBook()
    B = 0
    # Bids arrive best-first at the top: position counts from the top of the book.
    book.apply(0, B, 0, 100.0, 5, 1, 11)  # [100]
    book.apply(0, B, 1, 99.0, 7, 2, 12)  # below the best: [99, 100]
    book.apply(0, B, 0, 101.0, 1, 3, 13)  # new best: [99, 100, 101]
    book.apply(0, B, 2, 100.0, 4, 4, 14)  # behind the 100 already there: [99, 100(14), 100(11), 101]
    assert [o[3] for o in book.sides[B]] == [12, 14, 11, 13]  # worst -> best
    assert book.top(B, 10) == ((101.0, 100.0, 99.0), (1, 9, 7))
    book.apply(1, B, 1, 100.0, -2)  # edit = delta on position 1 (offer 11)
    assert book.sides[B][2] == [100.0, 3, 1, 11]
    book.apply(1, B, 1, 100.0, 50, has_qty=False)  # no quantity in the update: unchanged
    assert book.top(B, 2) == ((101.0, 100.0), (1, 7))
    book.apply(2, B, 3, 99.0, 7)  # delete position 3 (the worst)
    assert [o[3] for o in book.sides[B]] == [14, 11, 13]
    book.apply(3, B, 1, 0.0, 0)  # deleteFrom 1: drops positions 0 and 1
    assert [o[3] for o in book.sides[B]] == [14]
    assert book.top(B, 5) == ((100.0,), (4,))
    # Asks: best = lowest.
    book.full_book(sell=[Offer(103.0, 2, 1, 21, ""), Offer(102.0, 3, 1, 22, ""), Offer(102.0, 4, 1, 23, "")],
                   buy=[Offer(98.0, 1, 1, 31, ""), Offer(99.0, 6, 1, 32, "")])
    assert book.top(1, 10) == ((102.0, 103.0), (7, 2))
    assert book.top(0, 10) == ((99.0, 98.0), (6, 1))
    assert book.top(0, 1) == ((99.0,), (6,))
    assert len(book) == 5


@pytest.mark.parametrize("action, position", [(0, 3), (1, 2), (2, 2), (3, 5), (2, -1), (9, 0)])
def test_offer_book_rejects_actions_that_do_not_fit(action, position):
    book = OfferBook()
    book.apply(0, 0, 0, 10.0, 1)
    book.apply(0, 0, 0, 11.0, 1)
    before = [list(o) for o in book.sides[0]]
    with pytest.raises(BookError):
        book.apply(action, 0, position, 10.0, 1)
    assert book.sides[0] == before and book.top(0, 5) == ((11.0, 10.0), (1, 1))


@pytest.mark.parametrize("prices", [(float("nan"),), (5400.0, float("nan"))])
def test_offer_book_refuses_nan_prices_and_stays_consistent(prices):
    book = OfferBook()
    book.apply(0, 0, 0, 10.0, 1)
    before = book.snapshot(5)
    with pytest.raises(BookError):
        if len(prices) == 1:
            book.apply(0, 0, 0, prices[0], 3)
        else:
            book.full_book(sell=[Offer(p, 1, 1, i, "") for i, p in enumerate(prices)], buy=[])
    assert book.snapshot(5) == before
    book.apply(0, 0, 0, 11.0, 2)  # and keeps working
    assert book.top(0, 5) == ((11.0, 10.0), (2, 1))


# -- loader ----------------------------------------------------------------------------------


def test_loader_needs_a_path_and_never_searches_the_cwd(tmp_path, monkeypatch, fake_so):
    monkeypatch.delenv("PROFITDLL_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    fresh_copy(fake_so, tmp_path, "ProfitDLL64.dll")  # planted in the working directory
    with pytest.raises(E.ProfitDLLLoadError) as info:
        resolve_dll_path(None, env={})
    assert "dll_path" in str(info.value) and "PROFITDLL_PATH" in str(info.value)
    with pytest.raises(E.ProfitDLLLoadError, match=r"\$PROFITDLL_PATH"):
        resolve_dll_path(None, env={"PROFITDLL_PATH": str(tmp_path / "nope.dll")})
    assert resolve_dll_path(None, env={"PROFITDLL_PATH": str(tmp_path)}) == tmp_path / "ProfitDLL64.dll"
    assert resolve_dll_path("ProfitDLL64.dll", env={}).is_absolute()


# -- the fake DLL ------------------------------------------------------------------------------


@pytest.fixture
def fake(fake_so, tmp_path, monkeypatch):
    """A fresh fake DLL instance (new file) and a clean FAKE_PROFITDLL_* environment."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.setenv(ENV_PREFIX + "STATE_DELAY_US", "20")
    return fresh_copy(fake_so, tmp_path)


def set_fake(monkeypatch, **settings):
    for key, value in fake_env(**settings).items():
        monkeypatch.setenv(key, value)


def task_count() -> int:
    return len(os.listdir("/proc/self/task"))





def entries_of(text: str) -> list[Offer]:
    out = []
    for e in filter(None, text.split(";")):
        p, q, a, o, d = e.split(",", 4)
        out.append(Offer(float(p), int(q), int(a), int(o), d))
    return out


MARKET_KINDS = ("trade", "book", "daily")


def test_session_stream_matches_what_the_fake_sent(fake, tmp_path, monkeypatch):
    """Two symbols, every trade and book snapshot exactly once, in order, every field right."""
    log_path = tmp_path / "sent.log"
    per_ticker = 3000
    set_fake(monkeypatch, rate=0, events=per_ticker, seed=7, sent_log=log_path, log_depth=10)
    tasks_before = task_count()
    session = ProfitSession(CREDS, ["WDOQ25", "WINV25"], dll_path=str(fake), book_depth=10, ready_timeout_s=10)
    assert not session.exhausted
    session.start()
    debug = FakeDebug(session.dll.lib)
    assert debug.thread_alive()
    out: list = []
    wait_for(lambda: debug.market_events_sent() >= 2 * per_ticker, 20, POLL_S, "the fake to send everything",
             poll=lambda: out.extend(session.poll(500)))
    session.close()
    session.close()  # idempotent
    out.extend(session.poll(10**6))
    assert session.exhausted
    assert not debug.thread_alive()
    assert task_count() == tasks_before  # DLLFinalize joined its thread
    assert debug.outstanding_allocations() == 0 and debug.bad_frees() == 0  # every FullBook array freed

    rows = read_sent_log(log_path)
    market = [r for r in rows if r["kind"] in MARKET_KINDS]
    assert len(market) == 2 * per_ticker
    # A book row leaves as a snapshot only once its ticker has an exchange time: a trade before
    # it, or an add (action 0) carrying its order time, this row included.
    sent, timed, held_back = [], set(), 0
    for r in rows:
        if r["kind"] == "trade" and r["flags"] == "0":
            timed.add(r["ticker"])
            sent.append(r)
        elif r["kind"] == "book":
            if r["action"] == "0":
                timed.add(r["ticker"])
            if r["ticker"] in timed:
                sent.append(r)
            else:
                held_back += 1
    assert [(e.KIND, e.symbol) for e in out] == [("tick" if r["kind"] == "trade" else "book", r["ticker"])
                                                  for r in sent]
    last_ts: dict[str, int] = {}
    big = 0
    for ev, r in zip(out, sent):
        assert ev.seq == 0 and ev.ts_recv > 0
        if r["kind"] == "trade":
            assert type(ev) is Trade
            assert ev == Trade(r["ticker"], ns_of(r["date"]), ev.ts_recv, 0, float(r["price"]), int(r["qty"]),
                               int(r["type"]), int(r["buy"]), int(r["sell"]), int(r["number"]))
            last_ts[r["ticker"]] = max(last_ts.get(r["ticker"], 0), ev.ts_event)
            big += ev.qty > 2**31
        else:
            assert type(ev) is BookSnapshot
            if r["action"] == "0":
                last_ts[r["ticker"]] = max(last_ts.get(r["ticker"], 0), ns_of_ddmm(r["date"]))
            bid_px, bid_qty = levels_of(r["bids"])
            ask_px, ask_qty = levels_of(r["asks"])
            assert (ev.bid_px, ev.bid_qty, ev.ask_px, ev.ask_qty) == (bid_px, bid_qty, ask_px, ask_qty)
            assert ev.ts_event == last_ts[r["ticker"]]
    assert big > 0  # int64 quantities above 2^31 went through
    kinds = {r["kind"] for r in rows}
    assert {"state", "trade", "book", "daily"} <= kinds
    # Coverage of the stream itself: edits, auctions, cross, RLP, both aggressors, all book actions.
    trades = [r for r in rows if r["kind"] == "trade"]
    assert {"1", "2", "3", "4", "13"} <= {r["type"] for r in trades}
    assert {r["action"] for r in rows if r["kind"] == "book"} == {"0", "1", "2", "3", "4"}
    edits = [r for r in trades if r["flags"] == "1"]
    assert len(edits) > 0 and len(session.edits) == min(len(edits), 1000)
    assert list(session.edits) == [
        Trade(r["ticker"], ns_of(r["date"]), e.ts_recv, 0, float(r["price"]), int(r["qty"]), int(r["type"]),
              int(r["buy"]), int(r["sell"]), int(r["number"])) for e, r in zip(session.edits, edits[-1000:])]
    for ticker in ("WDOQ25", "WINV25"):
        d = [r for r in rows if r["kind"] == "daily" and r["ticker"] == ticker][-1]
        got = session.last_daily[ticker]
        assert (got.date, got.open, got.close, got.volume, got.quantity, got.trades_seller) == (
            d["date"], float(d["open"]), float(d["close"]), float(d["vol"]), int(d["qtd"]), int(d["negseller"]))
    stats = session.stats()
    assert stats["trades"] == len([r for r in trades if r["flags"] == "0"])
    assert stats["trade_edits"] == len(edits)
    assert stats["books"] + stats["books_before_exchange_time"] == len([r for r in rows if r["kind"] == "book"])
    assert stats["books_before_exchange_time"] == held_back
    assert stats["received"]["state"] == len([r for r in rows if r["kind"] == "state"])
    assert stats["dropped"] == 0 and stats["decode_errors"] == 0 and stats["handler_errors"] == 0
    assert stats["book_errors"] == 0 and stats["queued"] == 0
    # The last states are the ones DLLFinalize re-emits: login 1 there means "ending", not rejected.
    assert [(r["type"], r["result"]) for r in rows[-3:]] == [("2", "0"), ("1", "0"), ("0", "1")]
    assert stats["ready"] is True


def test_callbacks_run_on_the_dlls_own_native_thread(fake, monkeypatch):
    set_fake(monkeypatch, rate=0, events=200)
    session = ProfitSession(CREDS, ["WDOQ25"], dll_path=str(fake), ready_timeout_s=10)
    session.start()
    debug = FakeDebug(session.dll.lib)
    wait_for(lambda: debug.market_events_sent() >= 200, 20, POLL_S, "200 market callbacks")
    native = debug.native_thread_id()
    python_threads = {t.native_id for t in threading.enumerate()}
    session.close()
    assert session.dll.callback_thread_ids == {native}
    assert native not in python_threads and native != threading.get_native_id()


def test_raw_callbacks_match_the_sent_log_field_by_field(fake, tmp_path, monkeypatch):
    """Binding level: the whole callback sequence (states, trades, books with FullBook arrays,
    price depth read inside the callback, daily, invalid ticker) against the fake's log."""
    log_path = tmp_path / "sent.log"
    set_fake(monkeypatch, rate=0, events=1500, seed=11, sent_log=log_path, log_depth=3)
    dll = ProfitDLL(fake)
    dll.initialize_market_login(CREDS)
    dll.wait_ready(10)
    dll.subscribe_ticker("WDOQ25", "F")
    dll.subscribe_offer_book("WDOQ25", "F")
    dll.subscribe_price_depth("WDOQ25", "F")
    dll.subscribe_ticker("PETR4", "F")  # not a valid ticker on F: invalid-ticker callback
    debug = FakeDebug(dll.lib)
    wait_for(lambda: debug.market_events_sent() >= 1500, 20, POLL_S, "1500 market callbacks")
    dll.finalize()
    raw = dll.pop_events(10**6)
    rows = read_sent_log(log_path)
    assert len(raw) == len(rows)
    assert debug.outstanding_allocations() == 0
    expected_type = {"state": RawState, "trade": RawTrade, "book": RawBook, "daily": RawDaily, "depth": RawDepth,
                     "invalid": RawInvalidTicker}
    seen = set()
    for ev, r in zip(raw, rows):
        assert type(ev) is expected_type[r["kind"]], (ev, r)
        seen.add(r["kind"])
        if r["kind"] == "state":
            assert (ev.state_type, ev.result) == (int(r["type"]), int(r["result"]))
        elif r["kind"] == "trade":
            stamp = f"{ev.year:04d}-{ev.month:02d}-{ev.day:02d} {ev.hour:02d}:{ev.minute:02d}:{ev.second:02d}." \
                    f"{ev.millisecond:03d}"
            assert (ev.ticker, ev.exchange, ev.flags, ev.number, stamp, ev.day_of_week) == (
                r["ticker"], r["exch"], int(r["flags"]), int(r["number"]), r["date"], int(r["dow"]))
            assert ev.day_of_week == (datetime.strptime(r["date"][:10], "%Y-%m-%d").isoweekday() % 7)
            assert (ev.price, ev.qty, ev.volume, ev.buy_agent, ev.sell_agent, ev.trade_type) == (
                float(r["price"]), int(r["qty"]), float(r["vol"]), int(r["buy"]), int(r["sell"]), int(r["type"]))
        elif r["kind"] == "book":
            has = tuple(int(c) for c in r["has"])
            assert (ev.ticker, ev.exchange, ev.action, ev.position, ev.side, ev.qty, ev.agent, ev.offer_id, ev.price,
                    (ev.has_price, ev.has_qty, ev.has_date, ev.has_offer_id, ev.has_agent)) == (
                r["ticker"], r["exch"], int(r["action"]), int(r["pos"]), int(r["side"]), int(r["qty"]),
                int(r["agent"]), int(r["offer"]), float(r["price"]), has)
            assert ev.date == ("" if r["date"] == "-" else r["date"])
            if r["action"] == "4":
                assert len(ev.sell_array) == int(r["sell_bytes"]) and len(ev.buy_array) == int(r["buy_bytes"])
                assert parse_offer_array_v2(ev.sell_array) == (entries_of(r["sell"]), 1)
                assert parse_offer_array_v2(ev.buy_array) == (entries_of(r["buy"]), 1)
                seen.add("fullbook")
            else:
                assert ev.sell_array is None and ev.buy_array is None
        elif r["kind"] == "depth":
            assert (ev.ticker, ev.side, ev.position, ev.update_type) == (
                r["ticker"], int(r["side"]), int(r["pos"]), int(r["update"]))
            if "price" in r:
                assert ev.levels == ((int(r["side"]), int(r["pos"]), float(r["price"]), int(r["count"]),
                                      int(r["qty"]), 0),)
            elif r["update"] == "4":
                sides = (0, 1) if r["side"] == "254" else (int(r["side"]),)
                want = sum(min(int(r["bid_levels" if s == 0 else "ask_levels"]), 50) for s in sides)
                assert len(ev.levels) == want and [lv.position for lv in ev.levels if lv.side == sides[0]] == \
                    list(range(min(int(r["bid_levels" if sides[0] == 0 else "ask_levels"]), 50)))
            else:
                assert ev.levels == ()
        elif r["kind"] == "daily":
            assert (ev.ticker, ev.date, ev.open, ev.high, ev.low, ev.close, ev.volume, ev.adjustment, ev.max_limit,
                    ev.min_limit, ev.volume_buyer, ev.volume_seller) == (
                r["ticker"], r["date"], *(float(r[k]) for k in ("open", "high", "low", "close", "vol", "ajuste",
                                                                 "maxlimit", "minlimit", "volbuyer", "volseller")))
            assert (ev.quantity, ev.trades, ev.open_contracts, ev.quantity_buyer, ev.quantity_seller,
                    ev.trades_buyer, ev.trades_seller) == tuple(
                int(r[k]) for k in ("qtd", "negocios", "contratos", "qtdbuyer", "qtdseller", "negbuyer", "negseller"))
        elif r["kind"] == "invalid":
            assert (ev.ticker, ev.exchange) == (r["ticker"], r["exch"]) == ("PETR4", "F")
    assert {"state", "trade", "book", "fullbook", "depth", "daily", "invalid"} <= seen
    assert dll.invalid_tickers == {"PETR4": 1}
    assert dll.stats()["handler_errors"] == {} and dll.stats()["decode_errors"] == {}


def test_readiness_waits_for_all_four_channels_in_any_order(fake, tmp_path, monkeypatch):
    log_path = tmp_path / "sent.log"
    set_fake(monkeypatch, seed=3, sent_log=log_path, routing_final=2)
    dll = ProfitDLL(fake)
    dll.initialize_market_login(CREDS)
    dll.wait_ready(10)
    dll.finalize()
    states = [(int(r["type"]), int(r["result"])) for r in read_sent_log(log_path) if r["kind"] == "state"][:-3]
    routing = [v for t, v in states if t == 1]
    market = [v for t, v in states if t == 2]
    assert len(set(routing)) > 1 and routing[-1] == 2  # oscillated before settling
    assert market == [1, 2, 4]
    assert [t for t, _ in states] != sorted(t for t, _ in states)  # channels interleaved
    assert dll.ready and dll.latched == {0: True, 1: True, 2: True, 3: True}


def test_readiness_rule_latches_and_tracks_degraded_state(fake):
    """The state handler itself, fed a hand-written sequence (not initialized: nothing native runs)."""
    dll = ProfitDLL(fake)
    feed = [(1, 1), (1, 2), (3, 0), (1, 4), (2, 1), (2, 2), (0, 0), (1, 1)]
    for state_type, result in feed:
        dll._on_state(state_type, result)
        assert not dll.ready
    dll._on_state(2, 4)
    assert dll.ready  # routing latched at its first 2 even though it went back to 1
    dll._on_state(2, 6)
    assert dll.degraded and dll.degraded_episodes == 1
    dll._on_state(2, 6)
    dll._on_state(2, 4)
    assert not dll.degraded and dll.degraded_episodes == 1
    dll._tearing_down = True
    dll._on_state(0, 1)  # finalize's "ending" code is no login error
    assert dll.login_error is None
    assert [e.result for e in dll.pop_events(100)] == [r for _, r in feed] + [4, 6, 6, 4, 1]


def test_degraded_episode_from_the_dll(fake, monkeypatch):
    set_fake(monkeypatch, rate=0, events=400, degrade_after=100, degrade_events=20)
    session = ProfitSession(CREDS, ["WDOQ25"], dll_path=str(fake), ready_timeout_s=10)
    session.start()
    debug = FakeDebug(session.dll.lib)
    wait_for(lambda: debug.market_events_sent() >= 400, 20, POLL_S, "400 market callbacks",
             poll=lambda: session.poll(1000))
    stats = session.stats()
    session.close()
    assert stats["degraded_episodes"] == 1 and stats["degraded"] is False and stats["ready"] is True


@pytest.mark.parametrize("login, missing", [("nomarket", ("market data",)), ("norouting", ("routing",))])
def test_not_ready_names_the_missing_states(fake, monkeypatch, login, missing):
    set_fake(monkeypatch, login=login)
    tasks_before = task_count()
    session = ProfitSession(CREDS, ["WDOQ25"], dll_path=str(fake), ready_timeout_s=0.5)
    with pytest.raises(E.ProfitNotReady) as info:
        session.start()
    assert info.value.missing == missing
    assert missing[0] in str(info.value)
    assert ("WAITING (2)" if login == "nomarket" else "BROKER_CONNECTING (4)") in str(info.value)
    assert not FakeDebug(session.dll.lib).thread_alive() and task_count() == tasks_before


SECRET = Credentials("KEY-7f3a9c51", "user-b41d77@example.com", "pw-Zq9!çãoé")


@pytest.mark.parametrize("settings, expected", [
    ({"expect_password": "something-else"}, "INVALID_PASS (2)"),
    ({"expect_user": "another-user"}, "LOGIN_INVALID (1)"),
    ({"expect_key": "another-key"}, "ACTIVATE_INVALID (1)"),
    ({"login": "blocked"}, "BLOCKED_PASS (3)"),
])
def test_rejected_login_is_clear_and_never_shows_credentials(fake, tmp_path, monkeypatch, caplog, settings, expected):
    log_path = tmp_path / "sent.log"
    set_fake(monkeypatch, sent_log=log_path, **settings)
    caplog.set_level("DEBUG")
    session = ProfitSession(SECRET, ["WDOQ25"], dll_path=str(fake), ready_timeout_s=10)
    with pytest.raises(E.ProfitLoginError) as info:
        session.start()
    assert expected in str(info.value)
    assert not FakeDebug(session.dll.lib).thread_alive()  # start() finalized before raising
    shown = "\n".join([str(info.value), repr(info.value), repr(session), str(session.stats()), repr(session.dll),
                       caplog.text, *(str(r.__dict__) for r in caplog.records), log_path.read_text()])
    for value in SECRET.values():
        assert value not in shown


def test_right_credentials_reach_the_dll_in_order(fake, monkeypatch):
    set_fake(monkeypatch, expect_key=SECRET.key, expect_user=SECRET.user, expect_password=SECRET.password)
    session = ProfitSession(SECRET, [], dll_path=str(fake), ready_timeout_s=10)
    session.start()  # a wrong order or a mangled wide string would be rejected
    assert session.stats()["ready"]
    session.close()


def test_invalid_tickers_are_counted(fake, tmp_path, monkeypatch, caplog):
    log_path = tmp_path / "sent.log"
    set_fake(monkeypatch, rate=0, events=50, sent_log=log_path, invalid_tickers="WDOU25")
    session = ProfitSession(CREDS, ["WDOQ25", "XYZ123", "WDOU25"], dll_path=str(fake), ready_timeout_s=10)
    session.start()
    wait_for(lambda: session.stats()["received"].get("invalid_ticker", 0) >= 4 and
             FakeDebug(session.dll.lib).market_events_sent() >= 50, 20, POLL_S, "the invalid-ticker callbacks")
    out = session.poll(10**6)
    session.close()
    invalid = [(r["ticker"], r["exch"]) for r in read_sent_log(log_path) if r["kind"] == "invalid"]
    assert invalid == [("XYZ123", "F")] * 2 + [("WDOU25", "F")] * 2  # SubscribeTicker + SubscribeOfferBook
    assert session.stats()["invalid_tickers"] == {"XYZ123": 2, "WDOU25": 2}
    assert {e.symbol for e in out} == {"WDOQ25"}
    assert "invalid ticker 'XYZ123'" in caplog.text


def test_full_queue_drops_and_counts_but_frees_every_array(fake, monkeypatch):
    set_fake(monkeypatch, rate=0, events=2000)
    dll = ProfitDLL(fake, queue_max=100)
    dll.initialize_market_login(CREDS)
    dll.wait_ready(10)
    dll.subscribe_ticker("WINV25")
    dll.subscribe_offer_book("WINV25")
    debug = FakeDebug(dll.lib)
    wait_for(lambda: debug.market_events_sent() >= 2000, 20, POLL_S, "2000 market callbacks")
    dll.finalize()
    received = dll.received
    queued = len(dll.events)
    assert queued == 100
    assert dll.dropped == received["state"] + received["trade"] + received["book"] + received["daily"] - queued
    assert debug.outstanding_allocations() == 0 and debug.bad_frees() == 0


def test_finalize_joins_and_later_calls_fail_clearly(fake, monkeypatch):
    set_fake(monkeypatch, rate=2000)
    tasks_before = task_count()
    dll = ProfitDLL(fake)
    with pytest.raises(E.NotInitializedError, match="SubscribeTicker"):
        dll.subscribe_ticker("WDOQ25")  # before init
    dll.initialize_market_login(CREDS)
    dll.wait_ready(10)
    dll.subscribe_ticker("WDOQ25")
    debug = FakeDebug(dll.lib)
    wait_for(lambda: debug.market_events_sent() >= 20, 20, POLL_S, "20 market callbacks")
    assert debug.thread_alive() and task_count() == tasks_before + 1
    dll.finalize()
    dll.finalize()  # idempotent
    assert not debug.thread_alive() and task_count() == tasks_before
    with pytest.raises(E.NotInitializedError):
        dll.subscribe_ticker("WDOQ25")


def raw_market_login(dll: ProfitDLL, key, user, password) -> int:
    """DLLInitializeMarketLogin called directly (bypassing the binding's one-init guard)."""
    t = dll._thunks
    return dll.lib.DLLInitializeMarketLogin(key, user, password, t["state"], None, t["daily"], None, None, None,
                                            t["progress"], None)


def test_second_init_in_one_process_fails_clearly(fake, monkeypatch):
    dll = ProfitDLL(fake)
    dll.initialize_market_login(CREDS)
    with pytest.raises(E.AlreadyInitializedError, match="one login per process"):
        ProfitDLL(fake).initialize_market_login(CREDS)
    # The DLL itself refuses too (the guard above never lets the binding get there).
    assert raw_market_login(dll, "k", "u", "p") == -2147483647  # NL_INTERNAL_ERROR
    dll.finalize()


def test_fake_error_returns_map_to_named_exceptions(fake, monkeypatch):
    dll = ProfitDLL(fake)
    lib = dll.lib
    with pytest.raises(E.NoUserError):
        E.check(raw_market_login(dll, "k", "", "p"), "DLLInitializeMarketLogin")
    with pytest.raises(E.InvalidArgsError):
        E.check(raw_market_login(dll, "k", None, "p"), "DLLInitializeMarketLogin")
    dll.initialize_market_login(CREDS)
    dll.wait_ready(10)
    with pytest.raises(E.InvalidArgsError):
        E.check(lib.SubscribeTicker(None, "F"), "SubscribeTicker")
    with pytest.raises(E.ExchangeUnknownError):
        dll.subscribe_ticker("WDOQ25", "Q")
    with pytest.raises(E.InvalidArgsError):
        E.check(lib.TranslateTrade(0, ctypes.byref(S.TConnectorTrade())), "TranslateTrade")
    group = S.TConnectorPriceGroup(Version=1)
    dll.subscribe_price_depth("WDOQ25")
    with pytest.raises(E.VersionNotSupportedError):
        E.check(lib.GetPriceGroup(ctypes.byref(S.asset_identifier("WDOQ25", "F")), 0, 0, ctypes.byref(group)),
                "GetPriceGroup")
    assert lib.FreePointer(None, 0) == -2147483645
    dll.finalize()


def test_history_one_day_per_request_with_progress(fake, tmp_path, monkeypatch):
    log_path = tmp_path / "sent.log"
    set_fake(monkeypatch, today="2025-08-10", history_trades=300, sent_log=log_path)
    dll = ProfitDLL(fake)
    dll.initialize_market_login(CREDS)
    dll.wait_ready(10)
    progress: list[int] = []
    trades = dll.get_history_trades("WDOQ25", "F", date(2025, 8, 8), on_progress=progress.append, timeout_s=20)
    with pytest.raises(E.HistoryPeriodLimitError, match="GetHistoryTrades"):
        dll.request_history_day("WDOQ25", "F", date(2025, 6, 30))
    with pytest.raises(E.InvalidArgsError):  # a 10-day WDO range is refused: hence one day per request
        E.check(dll.lib.GetHistoryTrades("WDOQ25", "F", "01/08/2025 00:00:00", "11/08/2025 00:00:00"), "x")
    dll.finalize()
    rows = [r for r in read_sent_log(log_path) if r["kind"] == "htrade"]
    assert len(trades) == len(rows) == 300
    for t, r in zip(trades, rows):
        assert (t.number, t.price, t.qty, t.volume, t.buy_agent, t.sell_agent, t.trade_type, t.flags) == (
            int(r["number"]), float(r["price"]), int(r["qty"]), float(r["vol"]), int(r["buy"]), int(r["sell"]),
            int(r["type"]), int(r["flags"]))
        assert (t.year, t.month, t.day) == (2025, 8, 8)
    assert trades[-1].flags & S.TC_LAST_PACKET and not any(t.flags for t in trades[:-1])
    assert progress == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert dll.events and all(type(e) is RawState for e in dll.events)  # history never mixes into the live queue


def test_history_that_never_completes_times_out(fake, monkeypatch):
    set_fake(monkeypatch, today="2025-08-10", history_stall=1)
    dll = ProfitDLL(fake)
    dll.initialize_market_login(CREDS)
    dll.wait_ready(10)
    with pytest.raises(E.HistoryTimeoutError, match="last progress 0"):
        dll.get_history_trades("WDOQ25", "F", date(2025, 8, 8), timeout_s=0.3)
    dll.finalize()


def test_malformed_data_is_counted_and_the_good_data_flows(fake):
    """Crafted raw events in a real (uninitialized) ProfitDLL's queue, through the session."""
    session = ProfitSession(CREDS, ["WDOQ25"], dll_path=str(fake))
    session.dll = ProfitDLL(fake)
    q = session.dll.events

    def trade(number, month=8, minute=0):
        return RawTrade(1, "WDOQ25", "F", 0, 2025, month, 1, 4, 10, minute, 0, 5, number, 5400.0, 2, 10.0, 3, 8, 2)

    def book(action, position, side=0, price=5400.0, qty=1, date="", sell=None, buy=None):
        return RawBook(2, "WDOQ25", "F", action, position, side, qty, 1, 9, price, 1, 1, int(bool(date)), 1, 1, date,
                       sell, buy)

    q.extend([
        trade(1),
        trade(2, month=13),  # not a date
        trade(3, minute=61),
        book(0, 0, date="04/08/2025 10:00:00.250"),
        book(2, 5),  # delete beyond the book
        book(0, 0, price=5399.5, date="31/02/2025 10:00:00.000"),  # bad date: the add itself is kept
        book(4, 0, sell=b"\x00" * 5, buy=offer_array([])),  # corrupt FullBook array
        book(9, 0),  # unknown action
        trade(4),
    ])
    out = session.poll(100)
    assert [type(e).__name__ for e in out] == ["Trade", "BookSnapshot", "BookSnapshot", "Trade"]
    assert [e.trade_id for e in out if type(e) is Trade] == [1, 4]
    assert out[1].bid_px == (5400.0,) and out[2].bid_px == (5400.0, 5399.5) and out[2].bid_qty == (1, 1)
    assert out[1].ts_event == ns_of("2025-08-04 10:00:00.250")
    stats = session.stats()
    assert stats["book_errors"] == 3
    assert stats["decode_errors"] == 2 + 3 + 1
    assert stats["decode_errors_by_kind"]["RawTrade"] == 2 and stats["decode_errors_by_kind"]["book_date"] == 1


def test_subscribe_and_unsubscribe_at_runtime(fake, monkeypatch):
    set_fake(monkeypatch, rate=20000, events=100)
    session = ProfitSession(CREDS, ["WDOQ25"], dll_path=str(fake), ready_timeout_s=10)
    session.start()
    session.subscribe("WINZ25")
    debug = FakeDebug(session.dll.lib)
    out: list = []
    wait_for(lambda: debug.market_events_sent() >= 200, 20, POLL_S, "200 market callbacks",
             poll=lambda: out.extend(session.poll(1000)))
    session.unsubscribe("WDOQ25")
    assert session.symbols == ["WINZ25"]
    session.close()
    out.extend(session.poll(10**6))
    assert {e.symbol for e in out} == {"WDOQ25", "WINZ25"}


# -- crashes: the DLL's thread segfaults; only a child process can show it -----------------------

CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from pipelines.adapters.profitdll.credentials import Credentials
    from pipelines.adapters.profitdll.session import ProfitSession
    session = ProfitSession(Credentials("k", "u", "p"), ["WDOQ25"], dll_path=sys.argv[1], ready_timeout_s=20)
    session.start()
    if sys.argv[2] == "command":
        session.dll.subscribe_ticker("__CRASH__", "F")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        session.poll(10000)
        time.sleep(0.001)
    sys.exit(3)  # the DLL was supposed to crash the process
""")


@pytest.mark.parametrize("mode", ["command", "crash_after"])
def test_dll_segfault_kills_the_process_with_the_signal(fake, tmp_path, mode):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO)))
    log_path = tmp_path / "sent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(fake_env(rate=0, sent_log=log_path, **({"crash_after": 500} if mode == "crash_after" else {})))
    proc = subprocess.run([sys.executable, str(script), str(fake), mode], env=env, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGSEGV, proc.stderr.decode()[-2000:]
    rows = read_sent_log(log_path)
    assert rows[-1]["kind"] == "crash"
    if mode == "crash_after":  # every event sent before the crash is in the log (crash-safe writes)
        assert rows[-1]["reason"] == "crash_after"
        assert len([r for r in rows if r["kind"] in MARKET_KINDS]) == 500
    else:
        assert rows[-1]["reason"] == "__CRASH__"


# -- throughput sanity (printed, not asserted on time) -------------------------------------------


def test_throughput_at_full_speed(fake, monkeypatch, capsys):
    n = 50_000
    set_fake(monkeypatch, rate=0, events=n)
    session = ProfitSession(CREDS, ["WDOQ25"], dll_path=str(fake), ready_timeout_s=10)
    session.start()
    debug = FakeDebug(session.dll.lib)
    t0 = time.perf_counter()
    out = 0

    def pump():
        nonlocal out
        out += len(session.poll(5000))

    wait_for(lambda: debug.market_events_sent() >= n and not session.dll.events, 60, POLL_S, "every event polled",
             poll=pump)
    elapsed = time.perf_counter() - t0
    session.close()
    stats = session.stats()
    assert stats["dropped"] == 0 and stats["decode_errors"] == 0
    assert out == stats["trades"] + stats["books"]
    assert stats["trades"] + stats["trade_edits"] + stats["books"] + stats["books_before_exchange_time"] \
        + stats["daily"] == n
    with capsys.disabled():
        print(f"\n[profitdll fake] {n} market events through callbacks + poll in {elapsed:.2f} s: "
              f"{n / elapsed:,.0f} events/s")
