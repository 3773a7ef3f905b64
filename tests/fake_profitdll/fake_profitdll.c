/*
 * fake_profitdll.c - a native stand-in for Nelogica's ProfitDLL 4.0 (market data and order routing),
 * for tests.
 *
 * Built as a Linux shared object by tests/profitdll_fake.py (cc -shared -fPIC -pthread -O2).
 * It exports the ProfitDLL functions the binding uses, with the same names, argument lists and
 * struct layouts as the real DLL's declarations (natural alignment; TAssetIDRec is Delphi-packed, 20
 * bytes), wchar_t strings (ctypes c_wchar_p), and it fires every callback FROM ITS OWN pthread
 * (started by DLLInitialize*), like the real DLL's ConnectorThread. On x86-64 Linux there is one
 * calling convention, so the same Python code (CFUNCTYPE there, WINFUNCTYPE on Windows) drives it.
 *
 * Record arguments of callbacks (TAssetIDRec, TConnectorAssetIdentifier) are passed BY VALUE, as
 * the vendor Python example declares them (on Win64 the ABI turns that into a hidden pointer; on
 * SysV the record is copied to the stack; ctypes/libffi handle both). Accessors take pointers.
 * Delphi `Char` flags (bHasPrice...) are 16-bit WideChars: uint16_t here, 0 or 1.
 *
 * One instance per loaded copy of the .so: tests load a fresh copy (a new file) per DLL "process".
 *
 * ---------------------------------------------------------------------------------------------
 * Behaviour
 * ---------------------------------------------------------------------------------------------
 * - Init (either function) returns NL_OK at once and starts the native thread; connection is then
 *   reported through the state callback: the four channels in a seeded, scrambled interleaving
 *   (activation may come before login; routing oscillates among 1,2,4,5 before settling at
 *   FAKE_PROFITDLL_ROUTING_FINAL; market data passes through 1,2 before 4). Routing states are
 *   emitted for both init functions. A second init in the same DLL instance fails with
 *   NL_INTERNAL_ERROR (also after DLLFinalize: one init per process). NULL key/user/password or a
 *   NULL state callback -> NL_INVALID_ARGS; an empty user -> NL_NO_USER, empty password ->
 *   NL_NO_PASSWORD.
 * - Before init (and after finalize) every other export returns NL_NOT_INITIALIZED; NULL string /
 *   pointer arguments give NL_INVALID_ARGS; an exchange letter outside the documented set
 *   (A B D E F K M N O P X Y) gives NL_EXCHANGE_UNKNOWN.
 * - Invalid tickers: SubscribeTicker/SubscribeOfferBook/SubscribePriceDepth/GetHistoryTrades
 *   return NL_OK (validation is the server's, asynchronous) and the native thread then fires the
 *   invalid-ticker callback (by value TConnectorAssetIdentifier). Valid = listed in
 *   FAKE_PROFITDLL_VALID_TICKERS, or WDO/WIN + month letter (FGHJKMNQUVXZ) + 2 digits, or
 *   WDOFUT/WINFUT, on exchange F; anything in FAKE_PROFITDLL_INVALID_TICKERS is invalid.
 * - After a rejected login, subscriptions return NL_NO_LOGIN.
 * - SubscribeTicker(L"__CRASH__", ...) returns NL_OK and the native thread then segfaults (a real
 *   write through a NULL pointer), after writing a `kind=crash` line to the sent log.
 * - Market data per subscribed ticker (round robin over tickers; per-ticker seeded PRNG and clock,
 *   so each ticker's stream is deterministic whatever the interleaving):
 *     SubscribeTicker    -> V2 trades (opaque pointer for TranslateTrade, valid only during the
 *                           callback), ~3% edits (TC_IS_EDIT, an earlier trade number and date
 *                           with a corrected quantity), trade types 2/3 mostly plus 1 (cross),
 *                           4 (auction), 13 (RLP), 0/5/8/12; ~2% quantities above 2^31; daily
 *                           callbacks (the NewDaily callback given to init).
 *     SubscribeOfferBook -> a FullBook first (both packed V2 arrays, malloc'ed; the client must
 *                           FreePointer them), then add / edit (quantity DELTA) / delete /
 *                           deleteFrom updates and occasional regenerated FullBooks.
 *     SubscribePriceDepth-> price-depth callbacks after each book change (update types 1 edit,
 *                           2 delete, 3 insert, and prepare(5)/fullbook(4)/flush(6) around a
 *                           FullBook or deleteFrom); GetPriceDepthSideCount / GetPriceGroup read
 *                           the aggregated book (position 0 = top).
 *   Positions count from the top of the book, as in the real DLL. FullBook arrays list entries worst ->
 *   best (the vendor demos rebuild their worst->best list from them); the date text is single
 *   byte, 23 chars "dd/mm/yyyy hh:mm:ss.zzz" or (20% of entries) 19 chars without milliseconds.
 *   Update dates: add -> the event time, edit -> L"" , delete / deleteFrom / FullBook -> NULL.
 * - GetHistoryTrades(ticker, exch, "DD/MM/YYYY HH:MM:SS", "DD/MM/YYYY HH:MM:SS"): malformed dates
 *   or end < start -> NL_INVALID_ARGS; WDO/WIN range >= 10 days -> NL_INVALID_ARGS; start more
 *   than 30 days before FAKE_PROFITDLL_TODAY -> NL_HISTORY_PERIOD_LIMIT; else NL_OK and the native
 *   thread sends FAKE_PROFITDLL_HISTORY_TRADES trades of the start day through the
 *   SetHistoryTradeCallbackV2 callback (the last one flagged TC_LAST_PACKET=2), progress callbacks
 *   10,20..90 between them, then progress 100.
 * - DLLFinalize stops the native thread and joins it; before exiting, the thread re-emits the
 *   connection-ending states (2,0) (1,0) (0,1) - login result 1 here means "ending", as with the
 *   real DLL. Calling it from inside a callback returns NL_INTERNAL_ERROR (it would join itself).
 *
 * ---------------------------------------------------------------------------------------------
 * Order routing: a small broker (DLLInitializeLogin only)
 * ---------------------------------------------------------------------------------------------
 * After DLLInitializeMarketLogin every routing export returns NL_MARKET_ONLY; after a rejected
 * login NL_NO_LOGIN; before init NL_NOT_INITIALIZED. Records are the real DLL's (asserted below);
 * TString0In strings of TConnectorAccountIdentifierOut are UTF-16 (uint16_t[100]) as on Windows.
 * - Accounts: FAKE_PROFITDLL_ACCOUNTS. GetAccountCount / GetAccounts list the masters,
 *   GetSubAccountCount / GetSubAccounts the subs of one (NL_NOT_FOUND for an unknown master);
 *   GetAccountDetails (two-pass): BrokerName "Corretora Fake", OwnerName "Titular Simulação",
 *   SubOwnerName "Subconta <sub>" for a sub, flags CA_IS_ENABLED (+ CA_IS_SUB_ACCOUNT).
 * - SendOrder (Version 0..2, else NL_VERSION_NOT_SUPPORTED; V0 enums translated; V2 writes the
 *   MessageID): synchronous checks, in order: unknown account -> NL_INVALID_ARGS; NULL/empty
 *   ticker or exchange -> NL_INVALID_ARGS, unknown exchange -> NL_EXCHANGE_UNKNOWN, ticker not
 *   valid (market-data rules above) -> NL_INVALID_TICKER; bad type/side for the version, quantity
 *   <= 0, limit price <= 0 (limit, stop-limit), stop <= 0 (stop-limit) -> NL_INVALID_ARGS; NULL or
 *   empty password -> NL_NO_PASSWORD. Then the order is created at the broker with status 10
 *   PendingNew, persisted, and its positive LocalOrderID returned (ClOrderID "FK<id + 4000000>",
 *   first id 100001; ids keep increasing across processes through the state file). The password
 *   is compared with FAKE_PROFITDLL_ROUTING_PASSWORD and forgotten: only pw_ok=1/0 is kept.
 * - Everything after that happens on the native thread, one callback per step; each order
 *   callback passes a TConnectorOrderIdentifier BY VALUE (LocalOrderID + ClOrderID), the client
 *   reads the order back with GetOrderDetails (an accessor, callable inside the callback); trading
 *   message results pass a POINTER to TConnectorTradingMessageResult:
 *     order PendingNew(10); result 6 SentToBroker; then either
 *     a rejection: status 8 Rejected with the text, leaves 0, result 7 RejectedBroker "invalid
 *       routing password" | 9 RejectedMarket "market closed" (FAKE_PROFITDLL_MARKET=closed) |
 *       9 "invalid price: <p> is not a multiple of the tick <t>" (limit or stop price off the
 *       tick: WDO 0.5, WIN 5, others 0.01) | 24 BlockedByRisk "insufficient margin: position would
 *       reach <n> (max <m>)" (|position + this order + the working orders on its side| above
 *       FAKE_PROFITDLL_MAX_POSITION), checked in that order; or
 *     acceptance: result 10 Accepted, order 0 New (leaves = quantity), then matching.
 * - Matching, against a scripted book per ticker (FAKE_PROFITDLL_BROKER_BOOK; 5 levels per side,
 *   level i is i ticks from the best, every level with the best's quantity). Taken liquidity is
 *   removed from the book. One fill per level, each an order callback: 1 PartiallyFilled, or
 *   2 Filled for the one that completes the order (avg price = volume-weighted, TradedQuantity /
 *   LeavesQuantity updated). Market: takes level after level; what the 5 levels cannot fill is
 *   cancelled (15 PartiallyFilledCanceled, or 4 Canceled if nothing traded, text "no liquidity for
 *   the rest of the market order"). Limit: trades the levels at or better than its price, the rest
 *   rests (0 New, or 1 PartiallyFilled with leaves > 0). Stop-limit: rests untriggered (0 New)
 *   until the best ask >= stop (buy) / best bid <= stop (sell), then works as a limit. Resting
 *   orders trade when FakeBrokerSetBook moves the book through them (on the native thread, in
 *   LocalOrderID order). FAKE_PROFITDLL_FILL_DELAY_MS delays the first matching of an accepted
 *   order (a window to kill the process between acceptance and fill).
 * - Positions per account and asset: signed quantity; average price of the open quantity (more
 *   on the same side: volume-weighted; reducing: unchanged; flipping: the fill's price; flat: 0);
 *   daily buy/sell quantity and average price. GetPositionV2 (Version 0..2; V1+ PositionType 1/2
 *   required, both read the same book here): OpenQuantity = |qty|, OpenSide 1 bought / 2 sold /
 *   0 flat, OpenAveragePrice, Daily* fields, DailyQuantity = bought - sold, DailyQuantityAvailable
 *   = |qty|, EventID (V2) a counter bumped by every fill; an asset never traded -> NL_NO_POSITION.
 * - SendChangeOrderV2 (V0..1; V1 writes MessageID) / SendCancelOrderV2 (V0..1): by LocalOrderID,
 *   else ClOrderID. Synchronous: unknown account or neither id -> NL_INVALID_ARGS, unknown order ->
 *   NL_NOT_FOUND, another account's order -> NL_INVALID_ARGS, quantity <= 0 or price <= 0
 *   (change) -> NL_INVALID_ARGS, no password -> NL_NO_PASSWORD. Then on the native thread: an order
 *   not working -> result 9 "... rejected: the order is not working"; wrong password -> result 7;
 *   cancel: 6 PendingCancel, then 4 Canceled (15 if it had traded), result 10; change: 14
 *   PendingReplace, then 5 Replaced with the new price/stop/quantity (leaves = quantity - traded)
 *   and result 10, then matching again; a change to an off-tick price or to a quantity not above
 *   the traded one is refused: the order goes back to its previous status with the reason as
 *   its text, result 9.
 * - SendCancelAllOrdersV2 (V0): every cancelable order of exactly that account (a master's call
 *   does not touch its subs) goes PendingCancel -> Canceled; a wrong password -> one result 7.
 * - SendZeroPositionV2 (V0..2; V1+ PositionType 1/2; V2 writes MessageID): a flat (or never
 *   traded) asset -> NL_NO_POSITION (what 4.0.0.24 made of it; FIN saw NL_INVALID_ARGS on older
 *   builds); else a new order for |position| on the other side, market when Price = -1, limit at
 *   Price otherwise, returned as its LocalOrderID and processed like any order. Working orders are
 *   left alone.
 * - GetOrderDetails (Version 0..1, two-pass): by LocalOrderID (> 0), else by ClOrderID; unknown ->
 *   NL_NOT_FOUND. A NULL string pointer gets its *Length set; a non-NULL one receives at most
 *   *Length chars and a NUL (the caller allocates Length + 1). A NULL OrderID.ClOrderID is set to
 *   the broker's own string (stable for the life of the process). Dates are B3 local time
 *   (UTC-3) SystemTimes of the real clock; ValidityDate zero; validity 0 (Day).
 * - EnumerateAllOrders(account, version 0..1, lparam, proc): calls proc on the CALLER's thread for
 *   each order of the account (a master: its subs' orders too), in LocalOrderID order, until it
 *   returns false; an unknown account -> NL_OK without calls (as the manual says). The record and
 *   its strings are valid during the call only.
 * - SetDayTrade(on): recorded (kind=set_day_trade) and stamped on later orders (day_trade=).
 * - The broker survives the process (FAKE_PROFITDLL_BROKER_STATE=<file>): every change appends
 *   the changed order or position as one line (one write(2), O_APPEND), so a killed process leaves
 *   whole lines (a torn last line is ignored). At init the file is replayed (last record wins)
 *   and rewritten compacted (tmp + rename); orders, positions, the next LocalOrderID and
 *   MessageID carry over. The scripted book does not (it comes from the environment). Work a
 *   killed process left is redone once the new client's order callback is set (or 0.5 s after
 *   the connection states): PendingNew orders go through the whole flow above (acceptance,
 *   fills), working ones are matched against the new book, a PendingCancel completes, a
 *   PendingReplace falls back to its previous working status.
 * - Crash on command: FAKE_PROFITDLL_CRASH_ON_ORDER=N. The N-th successful SendOrder of the process
 *   returns its LocalOrderID and is persisted as PendingNew; when the native thread picks it up
 *   it writes `kind=crash reason=crash_on_order local_id=<id>` and segfaults (a real write through
 *   NULL) before any callback for it. The next process (same state file) finds it PendingNew and
 *   accepts and fills it from its book, firing the callbacks then: the order was sent once and
 *   its fill is not lost.
 * - Locking: the broker's state is under the DLL's lock; callbacks and enumeration procs are
 *   always invoked without it (the client calls GetOrderDetails from inside them).
 *
 * ---------------------------------------------------------------------------------------------
 * Environment variables (read once, at init)
 * ---------------------------------------------------------------------------------------------
 *   FAKE_PROFITDLL_RATE           market events per second over all tickers (default 5000;
 *                                 0 = as fast as possible). Paced from one anchor, no drift.
 *   FAKE_PROFITDLL_EVENTS         market events (trades + book updates + daily) per ticker, then
 *                                 that ticker's stream stops (default 0 = unlimited).
 *   FAKE_PROFITDLL_SEED           PRNG seed (default 1).
 *   FAKE_PROFITDLL_CRASH_AFTER    segfault (for real) after this many market events in total.
 *   FAKE_PROFITDLL_LOGIN          valid | invalid (0,1) | badpass (0,2) | blocked (0,3) |
 *                                 expired (0,4) | unknown (0,200) | inactive (activation 3,1) |
 *                                 nomarket (market data never reaches 4) |
 *                                 norouting (routing never reaches 2/5). Default valid.
 *   FAKE_PROFITDLL_EXPECT_KEY / _USER / _PASSWORD
 *                                 when set, the credentials passed to init must equal them (wrong
 *                                 key -> activation 1, wrong user -> login 1, wrong password ->
 *                                 login 2). Values are never written anywhere.
 *   FAKE_PROFITDLL_SENT_LOG       path: one line per callback, exactly as sent (format below).
 *                                 Crash-safe: each line is one write(2) on an O_APPEND fd, done
 *                                 BEFORE the callback is invoked, so every event the process saw
 *                                 is in the file even if the process is killed or segfaults.
 *   FAKE_PROFITDLL_LOG_DEPTH      aggregated levels per side written with book lines (default 10).
 *   FAKE_PROFITDLL_DEGRADE_AFTER  after this many market events in total, send market state 6
 *                                 (partial: client not consuming) and, FAKE_PROFITDLL_DEGRADE_EVENTS
 *                                 (default 10) market events later, state 4 again. Events keep
 *                                 flowing in between.
 *   FAKE_PROFITDLL_ROUTING_FINAL  routing state the oscillation settles on (default 5; 2 allowed).
 *   FAKE_PROFITDLL_STATE_DELAY_US pause between initial state callbacks (default 200).
 *   FAKE_PROFITDLL_VALID_TICKERS / FAKE_PROFITDLL_INVALID_TICKERS   comma-separated lists.
 *   FAKE_PROFITDLL_HISTORY_TRADES trades per GetHistoryTrades request (default 200).
 *   FAKE_PROFITDLL_HISTORY_STALL  1: history requests only ever report progress 0 (every 20 ms).
 *   FAKE_PROFITDLL_TODAY          YYYY-MM-DD for the 30-day history limit (default: local date).
 *   FAKE_PROFITDLL_START          YYYY-MM-DD HH:MM:SS, the market clock start (default
 *                                 2025-08-04 09:00:00; each event advances a ticker's clock 0-2 ms).
 *   Order routing:
 *   FAKE_PROFITDLL_ACCOUNTS       "broker:account[:sub],..." (default "308:1234567"); a sub
 *                                 implies its master.
 *   FAKE_PROFITDLL_ROUTING_PASSWORD  the routing password (UTF-8; default "route-Ω-2207").
 *                                 Compared only; never written anywhere (logs say pw_ok=1/0).
 *   FAKE_PROFITDLL_MARKET         open | closed (default open; closed rejects new orders).
 *   FAKE_PROFITDLL_MAX_POSITION   margin limit on |position| (default 10).
 *   FAKE_PROFITDLL_BROKER_BOOK    "TICKER:bid x bidq / ask x askq;..." e.g.
 *                                 "WDOZ26:5000.0x3/5000.5x2" (no spaces).
 *   FAKE_PROFITDLL_BROKER_STATE   path of the broker's state file (default: none, memory only).
 *   FAKE_PROFITDLL_CRASH_ON_ORDER N: segfault on the N-th SendOrder (see above).
 *   FAKE_PROFITDLL_FILL_DELAY_MS  delay before an accepted order is first matched (default 0).
 *
 * ---------------------------------------------------------------------------------------------
 * Sent-log format: one line per callback, fields separated by TABs, each `key=value`:
 * ---------------------------------------------------------------------------------------------
 *   n=<1-based counter over all lines>  kind=<kind>  then, per kind:
 *   state     type result
 *   trade     ticker exch flags number date=YYYY-MM-DD HH:MM:SS.mmm dow price qty vol buy sell type
 *   htrade    same fields as trade (history trades)
 *   progress  ticker exch progress
 *   book      ticker exch action pos side qty agent offer price has=<5 digits P Q D O A> date
 *             [sell=<entries> buy=<entries> sell_bytes buy_bytes   (FullBook only; entries are
 *             price,qty,agent,offer,date joined by ';', worst -> best)]
 *             bids=<px:qty,...> asks=<px:qty,...>  (the fake's own aggregated top levels AFTER
 *             the change, best first, up to FAKE_PROFITDLL_LOG_DEPTH)
 *   depth     ticker exch side pos update [price count qty flags  (level at pos after the change,
 *             for update 1 and 3)] [bid_levels ask_levels  (update 4)]
 *   daily     ticker exch date open high low close vol ajuste maxlimit minlimit volbuyer volseller
 *             qtd negocios contratos qtdbuyer qtdseller negbuyer negseller
 *   invalid   ticker exch
 *   crash     reason [local_id]
 *   Order routing (commands are logged by the caller's thread before they are queued, so a
 *   command's line precedes the callbacks it causes; `result` is the returned id or NL code; the
 *   account fields are broker account sub ("-" for none); strings as passed):
 *   broker_load   orders positions next_id recover   (at init, after the state file)
 *   send_order    result broker account sub ticker exch side type price stop qty version
 *                 message_id pw_ok day_trade   (side/type as passed, i.e. in the version's enums)
 *   change_order  result local_id broker account sub order_local_id order_cl_ord_id price stop
 *                 qty version message_id pw_ok
 *   cancel_order  result local_id broker account sub order_local_id order_cl_ord_id version
 *                 message_id pw_ok
 *   cancel_all    result broker account sub version pw_ok
 *   zero_position result broker account sub ticker exch price position_type version qty
 *                 message_id pw_ok
 *   set_day_trade on
 *   set_book      ticker bid bidq ask askq
 *   order_cb      local_id cl_ord_id broker account sub ticker exch side type status validity qty
 *                 traded leaves price stop avg date last event_id text   (what GetOrderDetails
 *                 answers during that callback; dates B3 local YYYY-MM-DD HH:MM:SS.mmm or "-")
 *   msg_result    local_id cl_ord_id broker message_id code message
 *   fill          local_id cl_ord_id broker account sub ticker side price qty fill_no traded leaves
 *                 avg position position_avg   (the position after the fill)
 *   Doubles are printed with %.17g (round-trip exact). Dates of book/daily lines are the exact
 *   wide string sent ("" for an empty string, "-" for NULL).
 *
 * Debug exports (not in the real DLL): FakeThreadAlive(), FakeOutstandingAllocations(),
 * FakeBadFrees(), FakeEventsSent(), FakeMarketEventsSent(), FakeNativeThreadId(),
 * FakeUndelivered(); broker: FakeBrokerSetBook(const char *ticker, double bid, int64 bidq,
 * double ask, int64 askq) (resets that ticker's scripted book and matches resting orders on the
 * native thread; bid or ask <= 0 = an empty side), FakeBrokerSetMarket(int open),
 * FakeBrokerIdle() (1 when no broker command, delayed match or recovery is pending or running),
 * FakeBrokerOrderCount().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- NResult codes (the real DLL's values) ---------------------------------------------- */
#define NL_OK 0
#define NLC(x) ((int32_t)(0x80000000u | (x)))
#define NL_INTERNAL_ERROR NLC(0x01)
#define NL_NOT_INITIALIZED NLC(0x02)
#define NL_INVALID_ARGS NLC(0x03)
#define NL_NO_LOGIN NLC(0x05)
#define NL_OUT_OF_RANGE NLC(0x09)
#define NL_NOT_FOUND NLC(0x0C)
#define NL_VERSION_NOT_SUPPORTED NLC(0x0D)
#define NL_EXCHANGE_UNKNOWN NLC(0x0F)
#define NL_NO_PASSWORD NLC(0x1C)
#define NL_NO_USER NLC(0x1D)
#define NL_HISTORY_PERIOD_LIMIT NLC(0x2E)

#define TC_IS_EDIT 1u
#define TC_LAST_PACKET 2u
#define OB_LAST_PACKET 1u

/* ---- records (the real DLL's layouts) ---------------------------------------------------- */
#pragma pack(push, 1)
typedef struct {
    wchar_t *ticker;
    wchar_t *bolsa;
    int32_t feed;
} TAssetIDRec;
#pragma pack(pop)

typedef struct {
    uint8_t Version;
    wchar_t *Ticker;
    wchar_t *Exchange;
    uint8_t FeedType;
} TConnectorAssetIdentifier;

typedef struct {
    uint16_t wYear, wMonth, wDayOfWeek, wDay, wHour, wMinute, wSecond, wMilliseconds;
} SystemTime;

typedef struct {
    uint8_t Version;
    SystemTime TradeDate;
    uint32_t TradeNumber;
    double Price;
    int64_t Quantity;
    double Volume;
    int32_t BuyAgent;
    int32_t SellAgent;
    uint8_t TradeType;
} TConnectorTrade;

typedef struct {
    uint8_t Version;
    double Price;
    uint32_t Count;
    int64_t Quantity;
    uint32_t PriceGroupFlags;
} TConnectorPriceGroup;

_Static_assert(sizeof(TAssetIDRec) == 20, "TAssetIDRec is packed, 20 bytes");
_Static_assert(sizeof(TConnectorAssetIdentifier) == 32, "TConnectorAssetIdentifier");
_Static_assert(sizeof(SystemTime) == 16, "SystemTime");
_Static_assert(sizeof(TConnectorTrade) == 64, "TConnectorTrade");
_Static_assert(offsetof(TConnectorTrade, TradeNumber) == 20, "TradeNumber");
_Static_assert(offsetof(TConnectorTrade, Quantity) == 32, "Quantity");
_Static_assert(offsetof(TConnectorTrade, TradeType) == 56, "TradeType");
_Static_assert(sizeof(TConnectorPriceGroup) == 40, "TConnectorPriceGroup");

/* ---- callback types ---------------------------------------------------------------------- */
typedef void (*TStateCallback)(int32_t, int32_t);
typedef void (*TProgressCallback)(TAssetIDRec, int32_t);
typedef void (*TNewDailyCallback)(TAssetIDRec, const wchar_t *, double, double, double, double, double, double,
                                  double, double, double, double, int32_t, int32_t, int32_t, int32_t, int32_t,
                                  int32_t, int32_t);
typedef void (*TConnectorTradeCallback)(TConnectorAssetIdentifier, size_t, uint32_t);
typedef void (*TOfferBookCallbackV2)(TAssetIDRec, int32_t, int32_t, int32_t, int64_t, int32_t, int64_t, double,
                                     uint16_t, uint16_t, uint16_t, uint16_t, uint16_t, const wchar_t *, void *,
                                     void *);
typedef void (*TInvalidTickerCallback)(TConnectorAssetIdentifier);
typedef void (*TPriceDepthCallback)(TConnectorAssetIdentifier, uint8_t, int32_t, uint8_t);

/* ---- configuration --------------------------------------------------------------------- */
enum { LOGIN_VALID, LOGIN_INVALID, LOGIN_BADPASS, LOGIN_BLOCKED, LOGIN_EXPIRED, LOGIN_UNKNOWN, LOGIN_INACTIVE,
       LOGIN_NOMARKET, LOGIN_NOROUTING };

static struct {
    double rate;
    long long events;
    uint64_t seed;
    long long crash_after;
    int login;
    int log_fd;
    int log_depth;
    long long degrade_after, degrade_events;
    int routing_final;
    int state_delay_us;
    char valid[2048], invalid[2048];
    int hist_trades, hist_stall;
    int today_y, today_m, today_d;
    int start_y, start_m, start_d;
    long long start_ms; /* ms since midnight */
} cfg;

/* ---- global state ---------------------------------------------------------------------- */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* tickers, commands, allocations */
static pthread_cond_t g_wake;
static pthread_t g_thread;
static volatile int g_thread_alive;   /* 1 from pthread_create until joined */
static volatile int g_initialized;    /* between a successful init and DLLFinalize */
static volatile int g_init_used;      /* one init per instance, ever */
static volatile int g_stop;
static volatile int g_login_failed;
static volatile long g_native_tid;
static long long g_lines;             /* sent-log counter (n=) */
static long long g_market_sent;       /* market events over all tickers */
static long long g_undelivered;
static int * volatile g_crash_ptr = NULL;
static int g_bcmd_n; /* broker commands queued for the native thread (g_lock) */

static TStateCallback cb_state;
static TProgressCallback cb_progress;
static TNewDailyCallback cb_daily;
static TConnectorTradeCallback cb_trade, cb_htrade;
static TOfferBookCallbackV2 cb_book;
static TInvalidTickerCallback cb_invalid;
static TPriceDepthCallback cb_depth;

#define LOAD(p) __atomic_load_n(&(p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n(&(p), (v), __ATOMIC_RELEASE)

/* credentials check (copied at init, compared, then wiped) */
static int g_cred_result_type = -1, g_cred_result = 0;

/* ---- PRNG (splitmix64) ----------------------------------------------------------------- */
static uint64_t sm64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint32_t rnd(uint64_t *s, uint32_t n) { return n ? (uint32_t)(sm64(s) % n) : 0; }
static double rnd01(uint64_t *s) { return (double)(sm64(s) >> 11) * (1.0 / 9007199254740992.0); }
static uint64_t fnv1a(const char *p) {
    uint64_t h = 1469598103934665603ull;
    while (*p) { h ^= (unsigned char)*p++; h *= 1099511628211ull; }
    return h;
}

/* ---- small string helpers -------------------------------------------------------------- */
static void to_ascii(const wchar_t *w, char *out, size_t cap) {
    size_t i = 0;
    for (; w && w[i] && i + 1 < cap; i++) out[i] = (w[i] > 32 && w[i] < 127) ? (char)w[i] : '?';
    out[i] = 0;
}
static void to_wide(const char *a, wchar_t *out, size_t cap) {
    size_t i = 0;
    for (; a[i] && i + 1 < cap; i++) out[i] = (wchar_t)(unsigned char)a[i];
    out[i] = 0;
}
/* UTF-8 -> wchar_t (UTF-32 on Linux); invalid bytes map to U+FFFD. */
static void utf8_to_wide(const char *s, wchar_t *out, size_t cap) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (*p && n + 1 < cap) {
        uint32_t c = *p++;
        int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
        if (c >= 0x80 && c < 0xC0) { out[n++] = 0xFFFD; continue; }
        if (extra) c &= (0x3F >> extra);
        for (int k = 0; k < extra; k++) {
            if ((*p & 0xC0) != 0x80) { c = 0xFFFD; break; }
            c = (c << 6) | (*p++ & 0x3F);
        }
        out[n++] = (wchar_t)c;
    }
    out[n] = 0;
}
static int in_list(const char *list, const char *name) {
    size_t len = strlen(name);
    const char *p = list;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t l = comma ? (size_t)(comma - p) : strlen(p);
        if (l == len && strncmp(p, name, len) == 0) return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}
static const char *env_str(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return (v && *v) ? v : dflt;
}
static long long env_ll(const char *name, long long dflt) {
    const char *v = getenv(name);
    return (v && *v) ? strtoll(v, NULL, 10) : dflt;
}

/* ---- sent log ------------------------------------------------------------------------------ */
static char g_line[1 << 18];
static size_t g_len;
/* One line at a time: order commands log from the caller's thread, callbacks from the native
 * thread. lb_reset takes the lock, lb_flush releases it (every line is reset ... flush). */
static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;

static void lb_reset(const char *kind) {
    pthread_mutex_lock(&g_log_lock);
    g_lines++;
    g_len = (size_t)snprintf(g_line, sizeof g_line, "n=%lld\tkind=%s", g_lines, kind);
}
static void lb_add(const char *fmt, ...) {
    if (g_len >= sizeof g_line - 2) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(g_line + g_len, sizeof g_line - g_len - 1, fmt, ap);
    va_end(ap);
    if (k > 0) g_len += (size_t)k;
    if (g_len > sizeof g_line - 2) g_len = sizeof g_line - 2;
}
static void lb_wstr(const char *key, const wchar_t *w) {
    char tmp[256];
    if (!w) { lb_add("\t%s=-", key); return; }
    size_t i = 0;
    for (; w[i] && i + 1 < sizeof tmp; i++) tmp[i] = (w[i] < 128 && w[i] != '\t' && w[i] != '\n') ? (char)w[i] : '?';
    tmp[i] = 0;
    lb_add("\t%s=%s", key, tmp);
}
static void lb_flush(void) {
    if (cfg.log_fd >= 0) {
        g_line[g_len++] = '\n';
        size_t off = 0;
        while (off < g_len) {
            ssize_t w = write(cfg.log_fd, g_line + off, g_len - off);
            if (w < 0) { if (errno == EINTR) continue; break; }
            off += (size_t)w;
        }
    }
    pthread_mutex_unlock(&g_log_lock);
}
#define LOGGING (cfg.log_fd >= 0)


/* ---- time ------------------------------------------------------------------------------ */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
static struct timespec abs_ts(double t) {
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    if (ts.tv_nsec < 0) ts.tv_nsec = 0;
    return ts;
}
/* Sleep until monotonic time t; DLLFinalize wakes it. */
static void wait_until(double t) {
    pthread_mutex_lock(&g_lock);
    while (!g_stop && now_s() < t && !g_bcmd_n) { /* an order command does not wait for the pacing */
        struct timespec ts = abs_ts(t);
        pthread_cond_timedwait(&g_wake, &g_lock, &ts);
    }
    pthread_mutex_unlock(&g_lock);
}
/* Sleep up to dt seconds or until anything signals (subscribe, command, finalize). */
static void idle_wait(double dt) {
    pthread_mutex_lock(&g_lock);
    if (!g_stop) {
        struct timespec ts = abs_ts(now_s() + dt);
        pthread_cond_timedwait(&g_wake, &g_lock, &ts);
    }
    pthread_mutex_unlock(&g_lock);
}

/* Civil calendar (proleptic Gregorian), days since 1970-01-01. */
static long long days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (unsigned)(m + (m > 2 ? -3 : 9)) + 2) / 5 + (unsigned)d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}
static void civil_from_days(long long z, int *y, int *m, int *d) {
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long yy = (long long)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yy + (*m <= 2));
}
#define MS_PER_DAY 86400000LL

static void systime_from_ms(long long t_ms, SystemTime *st) {
    long long day = t_ms / MS_PER_DAY, ms = t_ms % MS_PER_DAY;
    int y, m, d;
    civil_from_days(day, &y, &m, &d);
    st->wYear = (uint16_t)y;
    st->wMonth = (uint16_t)m;
    st->wDay = (uint16_t)d;
    st->wDayOfWeek = (uint16_t)(((day % 7) + 11) % 7); /* 1970-01-01 was a Thursday; Sunday = 0 */
    st->wHour = (uint16_t)(ms / 3600000);
    st->wMinute = (uint16_t)(ms / 60000 % 60);
    st->wSecond = (uint16_t)(ms / 1000 % 60);
    st->wMilliseconds = (uint16_t)(ms % 1000);
}
/* "dd/mm/yyyy hh:mm:ss.zzz" (23 chars) or without ".zzz" (19). */
static int fmt_date(long long t_ms, int with_ms, char *out, size_t cap) {
    SystemTime st;
    systime_from_ms(t_ms, &st);
    if (with_ms)
        return snprintf(out, cap, "%02u/%02u/%04u %02u:%02u:%02u.%03u", st.wDay, st.wMonth, st.wYear, st.wHour,
                        st.wMinute, st.wSecond, st.wMilliseconds);
    return snprintf(out, cap, "%02u/%02u/%04u %02u:%02u:%02u", st.wDay, st.wMonth, st.wYear, st.wHour, st.wMinute,
                    st.wSecond);
}
/* Strict "DD/MM/YYYY HH:MM:SS" -> ms since epoch (naive local); -1 if malformed. */
static long long parse_request_date(const wchar_t *w) {
    char a[32];
    if (!w || wcslen(w) != 19) return -1;
    to_ascii(w, a, sizeof a);
    static const char shape[] = "dd/dd/dddd dd:dd:dd";
    for (int i = 0; i < 19; i++) {
        if (shape[i] == 'd' ? (a[i] < '0' || a[i] > '9') : (a[i] != shape[i] && !(shape[i] == ' ' && a[i] == '?')))
            return -1;
    }
    int d = atoi(a), m = atoi(a + 3), y = atoi(a + 6), hh = atoi(a + 11), mi = atoi(a + 14), ss = atoi(a + 17);
    if (m < 1 || m > 12 || d < 1 || d > 31 || hh > 23 || mi > 59 || ss > 59) return -1;
    return days_from_civil(y, m, d) * MS_PER_DAY + ((hh * 60LL + mi) * 60 + ss) * 1000;
}

/* ---- tickers and their books ------------------------------------------------------------ */
#define MAX_TICKERS 64
#define MAX_ORDERS 160
#define NAME_W 40

typedef struct {
    int64_t px; /* in ticks */
    int64_t qty;
    int32_t agent;
    int64_t offer;
    char date[24];
    int dlen;
} Order;
typedef struct {
    Order o[MAX_ORDERS];
    int n;
} BookSide; /* best first: o[0] is position 0 */
typedef struct {
    int64_t px;
    uint32_t count;
    int64_t qty;
} Level;
typedef struct {
    uint32_t number;
    long long t_ms;
    double price, volume;
    int64_t qty;
    int32_t buy, sell;
    uint8_t type;
} TradeRec;

typedef struct {
    int used;
    wchar_t name[NAME_W], exch[8];
    char name_a[NAME_W], exch_a[8];
    int sub_ticker, sub_book, sub_depth, book_synced;
    long long sent;
    uint64_t rng;
    double tick, mult;
    int64_t center;
    uint32_t next_trade_no;
    int64_t next_offer;
    long long t_ms;
    BookSide bid, ask;
    TradeRec recent[16];
    int n_recent, recent_pos;
    int have_trade;
    int64_t open_px, high_px, low_px, close_px, qtd, qbuy, qsell;
    double vol, vol_buy, vol_sell, last_price;
    int32_t neg, negbuy, negsell;
    int64_t last_auction_qty;
} Ticker;

static Ticker g_tk[MAX_TICKERS];
static int g_rr;
static const int32_t AGENTS[] = {3, 8, 27, 39, 72, 85, 120, 308, 386, 1099};

static int is_future_root(const char *a) { return strncmp(a, "WDO", 3) == 0 || strncmp(a, "WIN", 3) == 0; }
static int ticker_valid(const char *a, const char *exch) {
    if (in_list(cfg.invalid, a)) return 0;
    if (in_list(cfg.valid, a)) return 1;
    if (!is_future_root(a) || strcmp(exch, "F") != 0 || strlen(a) != 6) return 0;
    if (strcmp(a + 3, "FUT") == 0) return 1;
    return strchr("FGHJKMNQUVXZ", a[3]) && a[3] && a[4] >= '0' && a[4] <= '9' && a[5] >= '0' && a[5] <= '9';
}
static int known_exchange(const wchar_t *e) {
    return e[0] && e[1] == 0 && e[0] < 128 && strchr("ABDEFKMNOPXY", (int)e[0]) != NULL;
}
static Ticker *find_ticker(const wchar_t *t, const wchar_t *e) {
    for (int i = 0; i < MAX_TICKERS; i++)
        if (g_tk[i].used && wcscmp(g_tk[i].name, t) == 0 && wcscmp(g_tk[i].exch, e) == 0) return &g_tk[i];
    return NULL;
}
static Ticker *add_ticker(const wchar_t *t, const wchar_t *e) {
    for (int i = 0; i < MAX_TICKERS; i++) {
        Ticker *tk = &g_tk[i];
        if (tk->used) continue;
        memset(tk, 0, sizeof *tk);
        tk->used = 1;
        wcsncpy(tk->name, t, NAME_W - 1);
        wcsncpy(tk->exch, e, 7);
        to_ascii(t, tk->name_a, sizeof tk->name_a);
        to_ascii(e, tk->exch_a, sizeof tk->exch_a);
        tk->rng = cfg.seed ^ fnv1a(tk->name_a) ^ (fnv1a(tk->exch_a) << 1);
        if (strncmp(tk->name_a, "WDO", 3) == 0) { tk->tick = 0.5; tk->mult = 10.0; tk->center = 10800; }
        else if (strncmp(tk->name_a, "WIN", 3) == 0) { tk->tick = 5.0; tk->mult = 0.2; tk->center = 26000; }
        else { tk->tick = 0.01; tk->mult = 1.0; tk->center = 3000; }
        tk->next_trade_no = 1000 + rnd(&tk->rng, 1000);
        tk->next_offer = 10000000000LL + rnd(&tk->rng, 1000000);
        tk->t_ms = days_from_civil(cfg.start_y, cfg.start_m, cfg.start_d) * MS_PER_DAY + cfg.start_ms;
        return tk;
    }
    return NULL;
}

static int better_or_equal(int side, int64_t a, int64_t b) { return side == 0 ? a >= b : a <= b; }
static int levels(const BookSide *s, Level *out, int max) {
    int n = 0;
    for (int i = 0; i < s->n; i++) {
        if (n > 0 && out[n - 1].px == s->o[i].px) {
            out[n - 1].count++;
            out[n - 1].qty += s->o[i].qty;
        } else {
            if (n == max) break;
            out[n].px = s->o[i].px;
            out[n].count = 1;
            out[n].qty = s->o[i].qty;
            n++;
        }
    }
    return n;
}
static int level_index(const BookSide *s, int64_t px) {
    int lvl = -1;
    for (int i = 0; i < s->n; i++) {
        if (i == 0 || s->o[i].px != s->o[i - 1].px) lvl++;
        if (s->o[i].px == px) return lvl;
    }
    return -1;
}
static void insert_at(BookSide *s, int pos, const Order *o) {
    memmove(&s->o[pos + 1], &s->o[pos], sizeof(Order) * (size_t)(s->n - pos));
    s->o[pos] = *o;
    s->n++;
}
static void remove_at(BookSide *s, int pos) {
    memmove(&s->o[pos], &s->o[pos + 1], sizeof(Order) * (size_t)(s->n - pos - 1));
    s->n--;
}
static int64_t new_order_price(Ticker *tk, int side) {
    BookSide *opp = side ? &tk->bid : &tk->ask;
    if (side == 0) return (opp->n ? opp->o[0].px : tk->center + 1) - 1 - rnd(&tk->rng, 12);
    return (opp->n ? opp->o[0].px : tk->center - 1) + 1 + rnd(&tk->rng, 12);
}
static void make_order(Ticker *tk, int side, long long t_ms, int with_ms, Order *o) {
    o->px = new_order_price(tk, side);
    o->qty = rnd(&tk->rng, 100) < 3 ? (1LL << 31) + rnd(&tk->rng, 1000) : 1 + rnd(&tk->rng, 100);
    o->agent = AGENTS[rnd(&tk->rng, 10)];
    o->offer = tk->next_offer++;
    o->dlen = fmt_date(t_ms, with_ms, o->date, sizeof o->date);
}
static int add_position(const BookSide *s, int side, int64_t px) {
    int pos = 0;
    while (pos < s->n && better_or_equal(side, s->o[pos].px, px)) pos++;
    return pos; /* behind the orders already at this price (time priority) */
}
static void recenter(Ticker *tk) {
    if (tk->bid.n && tk->ask.n) tk->center = (tk->bid.o[0].px + tk->ask.o[0].px) / 2;
}
static void seed_book(Ticker *tk) {
    for (int side = 0; side < 2; side++) {
        BookSide *s = side ? &tk->ask : &tk->bid;
        int k = 10 + (int)rnd(&tk->rng, 20);
        for (int i = 0; i < k && s->n < MAX_ORDERS; i++) {
            Order o;
            make_order(tk, side, tk->t_ms - (long long)rnd(&tk->rng, 3600000), rnd(&tk->rng, 5) != 0, &o);
            insert_at(s, add_position(s, side, o.px), &o);
        }
    }
}

/* ---- allocations handed to the client (FullBook arrays) ---------------------------------- */
typedef struct {
    void *p;
    size_t size;
} Alloc;
static Alloc *g_allocs;
static size_t g_nallocs, g_cap_allocs;
static long long g_bad_frees;

static void register_alloc(void *p, size_t size) {
    pthread_mutex_lock(&g_lock);
    if (g_nallocs == g_cap_allocs) {
        size_t cap = g_cap_allocs ? g_cap_allocs * 2 : 64;
        Alloc *n = realloc(g_allocs, cap * sizeof *n);
        if (n) { g_allocs = n; g_cap_allocs = cap; }
    }
    if (g_nallocs < g_cap_allocs) g_allocs[g_nallocs++] = (Alloc){p, size};
    pthread_mutex_unlock(&g_lock);
}
static void put_bytes(uint8_t **w, const void *src, size_t n) { memcpy(*w, src, n); *w += n; }
/* Packed V2 offer array: int32 count, int32 total bytes, entries worst -> best, u32 flags. */
static void *build_offer_array(const BookSide *s, double tick, size_t *bytes) {
    size_t total = 8 + 4;
    for (int i = 0; i < s->n; i++) total += 8 + 8 + 4 + 8 + 2 + (size_t)s->o[i].dlen;
    uint8_t *buf = malloc(total), *w = buf;
    if (!buf) return NULL;
    int32_t count = s->n, tot = (int32_t)total;
    uint32_t flags = OB_LAST_PACKET;
    put_bytes(&w, &count, 4);
    put_bytes(&w, &tot, 4);
    for (int i = s->n - 1; i >= 0; i--) {
        const Order *o = &s->o[i];
        double price = (double)o->px * tick;
        uint16_t len = (uint16_t)o->dlen;
        put_bytes(&w, &price, 8);
        put_bytes(&w, &o->qty, 8);
        put_bytes(&w, &o->agent, 4);
        put_bytes(&w, &o->offer, 8);
        put_bytes(&w, &len, 2);
        put_bytes(&w, o->date, len);
    }
    put_bytes(&w, &flags, 4);
    *bytes = total;
    register_alloc(buf, total);
    return buf;
}

/* ---- senders: log the line, then invoke the callback (native thread only) ---------------- */
static long long g_callbacks;

static void send_state(int type, int result) {
    if (LOGGING) {
        lb_reset("state");
        lb_add("\ttype=%d\tresult=%d", type, result);
        lb_flush();
    }
    TStateCallback cb = LOAD(cb_state);
    if (cb) { g_callbacks++; cb(type, result); }
}

static void crash_now(const char *reason) {
    if (LOGGING) {
        lb_reset("crash");
        lb_add("\treason=%s", reason);
        lb_flush();
    }
    *g_crash_ptr = 42; /* a real SIGSEGV, from this native thread */
    abort();
}

#define TRADE_MAGIC 0x54524144u
typedef struct {
    uint32_t magic;
    TradeRec rec;
} TradeHandle; /* what the opaque a_pTrade points to; lives on this thread's stack */

static void send_trade(const wchar_t *name, const wchar_t *exch, const TradeRec *r, uint32_t flags, int history) {
    TConnectorTradeCallback cb = history ? LOAD(cb_htrade) : LOAD(cb_trade);
    if (!cb) { g_undelivered++; return; }
    if (LOGGING) {
        SystemTime st;
        char a[NAME_W], e[8];
        systime_from_ms(r->t_ms, &st);
        to_ascii(name, a, sizeof a);
        to_ascii(exch, e, sizeof e);
        lb_reset(history ? "htrade" : "trade");
        lb_add("\tticker=%s\texch=%s\tflags=%u\tnumber=%u\tdate=%04u-%02u-%02u %02u:%02u:%02u.%03u\tdow=%u", a, e, flags,
               r->number, st.wYear, st.wMonth, st.wDay, st.wHour, st.wMinute, st.wSecond, st.wMilliseconds,
               st.wDayOfWeek);
        lb_add("\tprice=%.17g\tqty=%lld\tvol=%.17g\tbuy=%d\tsell=%d\ttype=%u", r->price, (long long)r->qty, r->volume,
               r->buy, r->sell, r->type);
        lb_flush();
    }
    TradeHandle h;
    h.magic = TRADE_MAGIC;
    h.rec = *r;
    TConnectorAssetIdentifier a = {0, (wchar_t *)name, (wchar_t *)exch, 0};
    g_callbacks++;
    cb(a, (size_t)&h, flags);
    __atomic_store_n(&h.magic, 0, __ATOMIC_SEQ_CST); /* the pointer is dead after the callback */
}

static void send_progress(const wchar_t *name, const wchar_t *exch, int progress) {
    TProgressCallback cb = LOAD(cb_progress);
    if (!cb) { g_undelivered++; return; }
    if (LOGGING) {
        char a[NAME_W], e[8];
        to_ascii(name, a, sizeof a);
        to_ascii(exch, e, sizeof e);
        lb_reset("progress");
        lb_add("\tticker=%s\texch=%s\tprogress=%d", a, e, progress);
        lb_flush();
    }
    TAssetIDRec r = {(wchar_t *)name, (wchar_t *)exch, 0};
    g_callbacks++;
    cb(r, progress);
}

static void send_invalid(const wchar_t *name, const wchar_t *exch) {
    TInvalidTickerCallback cb = LOAD(cb_invalid);
    if (!cb) { g_undelivered++; return; }
    if (LOGGING) {
        lb_reset("invalid");
        lb_wstr("ticker", name);
        lb_wstr("exch", exch);
        lb_flush();
    }
    TConnectorAssetIdentifier a = {0, (wchar_t *)name, (wchar_t *)exch, 0};
    g_callbacks++;
    cb(a);
}

static void log_levels(const Ticker *tk) {
    Level lv[MAX_ORDERS];
    for (int side = 0; side < 2; side++) {
        int n = levels(side ? &tk->ask : &tk->bid, lv, cfg.log_depth);
        lb_add(side ? "\tasks=" : "\tbids=");
        for (int i = 0; i < n; i++) lb_add("%s%.17g:%lld", i ? "," : "", (double)lv[i].px * tk->tick, (long long)lv[i].qty);
    }
}
static void log_entries(const char *key, const BookSide *s, double tick) {
    lb_add("\t%s=", key);
    for (int i = s->n - 1; i >= 0; i--) {
        const Order *o = &s->o[i];
        lb_add("%s%.17g,%lld,%d,%lld,%.*s", i == s->n - 1 ? "" : ";", (double)o->px * tick, (long long)o->qty, o->agent,
               (long long)o->offer, o->dlen, o->date);
    }
}

static void send_book(Ticker *tk, int action, int pos, int side, int64_t qty, int32_t agent, int64_t offer,
                      double price, const uint16_t has[5], const wchar_t *date) {
    TOfferBookCallbackV2 cb = LOAD(cb_book);
    if (!tk->sub_book) return;
    if (!cb) { g_undelivered++; return; }
    void *sell = NULL, *buy = NULL;
    size_t sell_bytes = 0, buy_bytes = 0;
    if (action == 4) {
        sell = build_offer_array(&tk->ask, tk->tick, &sell_bytes);
        buy = build_offer_array(&tk->bid, tk->tick, &buy_bytes);
    }
    if (LOGGING) {
        lb_reset("book");
        lb_add("\tticker=%s\texch=%s\taction=%d\tpos=%d\tside=%d\tqty=%lld\tagent=%d\toffer=%lld\tprice=%.17g"
               "\thas=%u%u%u%u%u",
               tk->name_a, tk->exch_a, action, pos, side, (long long)qty, agent, (long long)offer, price, has[0], has[1],
               has[2], has[3], has[4]);
        lb_wstr("date", date);
        if (action == 4) {
            log_entries("sell", &tk->ask, tk->tick);
            log_entries("buy", &tk->bid, tk->tick);
            lb_add("\tsell_bytes=%zu\tbuy_bytes=%zu", sell_bytes, buy_bytes);
        }
        log_levels(tk);
        lb_flush();
    }
    TAssetIDRec r = {tk->name, tk->exch, 0};
    g_callbacks++;
    cb(r, action, pos, side, qty, agent, offer, price, has[0], has[1], has[2], has[3], has[4], date, sell, buy);
}

static void send_depth(Ticker *tk, int side, int pos, int update) {
    TPriceDepthCallback cb = LOAD(cb_depth);
    if (!tk->sub_depth) return;
    if (!cb) { g_undelivered++; return; }
    if (LOGGING) {
        lb_reset("depth");
        lb_add("\tticker=%s\texch=%s\tside=%d\tpos=%d\tupdate=%d", tk->name_a, tk->exch_a, side, pos, update);
        Level lv[MAX_ORDERS];
        if ((update == 1 || update == 3) && side <= 1) {
            int n = levels(side ? &tk->ask : &tk->bid, lv, MAX_ORDERS);
            if (pos >= 0 && pos < n)
                lb_add("\tprice=%.17g\tcount=%u\tqty=%lld\tflags=0", (double)lv[pos].px * tk->tick, lv[pos].count,
                       (long long)lv[pos].qty);
        }
        if (update == 4)
            lb_add("\tbid_levels=%d\task_levels=%d", levels(&tk->bid, lv, MAX_ORDERS), levels(&tk->ask, lv, MAX_ORDERS));
        lb_flush();
    }
    TConnectorAssetIdentifier a = {0, tk->name, tk->exch, 0};
    g_callbacks++;
    cb(a, (uint8_t)side, pos, (uint8_t)update);
}

static void send_daily(Ticker *tk) {
    TNewDailyCallback cb = LOAD(cb_daily);
    if (!cb) { g_undelivered++; return; }
    char d[32];
    wchar_t wd[32];
    fmt_date(tk->t_ms, 1, d, sizeof d);
    to_wide(d, wd, 32);
    double c = (double)tk->center * tk->tick;
    double open = tk->have_trade ? (double)tk->open_px * tk->tick : c;
    double high = tk->have_trade ? (double)tk->high_px * tk->tick : c;
    double low = tk->have_trade ? (double)tk->low_px * tk->tick : c;
    double close = tk->have_trade ? (double)tk->close_px * tk->tick : c;
    double maxl = open * 1.05, minl = open * 0.95;
    int32_t qtd = (int32_t)(tk->qtd & 0x7fffffff), contratos = 100000 + (int32_t)rnd(&tk->rng, 1000);
    int32_t qbuy = (int32_t)(tk->qbuy & 0x7fffffff), qsell = (int32_t)(tk->qsell & 0x7fffffff);
    if (LOGGING) {
        lb_reset("daily");
        lb_add("\tticker=%s\texch=%s\tdate=%s", tk->name_a, tk->exch_a, d);
        lb_add("\topen=%.17g\thigh=%.17g\tlow=%.17g\tclose=%.17g\tvol=%.17g\tajuste=%.17g\tmaxlimit=%.17g"
               "\tminlimit=%.17g\tvolbuyer=%.17g\tvolseller=%.17g",
               open, high, low, close, tk->vol, close, maxl, minl, tk->vol_buy, tk->vol_sell);
        lb_add("\tqtd=%d\tnegocios=%d\tcontratos=%d\tqtdbuyer=%d\tqtdseller=%d\tnegbuyer=%d\tnegseller=%d", qtd, tk->neg,
               contratos, qbuy, qsell, tk->negbuy, tk->negsell);
        lb_flush();
    }
    TAssetIDRec r = {tk->name, tk->exch, 0};
    g_callbacks++;
    cb(r, wd, open, high, low, close, tk->vol, close, maxl, minl, tk->vol_buy, tk->vol_sell, qtd, tk->neg, contratos, qbuy,
       qsell, tk->negbuy, tk->negsell);
}

/* ---- market event generators (native thread) --------------------------------------------- */
static uint8_t pick_trade_type(uint64_t *rng) {
    uint32_t u = rnd(rng, 100);
    static const uint8_t other[] = {0, 5, 8, 12};
    if (u < 38) return 2;
    if (u < 76) return 3;
    if (u < 82) return 1;
    if (u < 88) return 4;
    if (u < 94) return 13;
    return other[rnd(rng, 4)];
}
static void new_trade(Ticker *tk) {
    TradeRec r;
    r.type = pick_trade_type(&tk->rng);
    int64_t px;
    pthread_mutex_lock(&g_lock);
    if (r.type == 2 && tk->ask.n) px = tk->ask.o[0].px;
    else if (r.type == 3 && tk->bid.n) px = tk->bid.o[0].px;
    else {
        if (!tk->bid.n && !tk->ask.n && rnd01(&tk->rng) < 0.2) tk->center += rnd(&tk->rng, 2) ? 1 : -1;
        px = tk->bid.n ? tk->bid.o[0].px : tk->center;
    }
    pthread_mutex_unlock(&g_lock);
    r.qty = rnd(&tk->rng, 100) < 2 ? (1LL << 31) + rnd(&tk->rng, 1u << 20) : 1 + rnd(&tk->rng, 50);
    r.number = tk->next_trade_no++;
    r.t_ms = tk->t_ms;
    r.price = (double)px * tk->tick;
    r.volume = r.price * (double)r.qty * tk->mult;
    r.buy = AGENTS[rnd(&tk->rng, 10)];
    r.sell = AGENTS[rnd(&tk->rng, 10)];
    tk->recent[tk->recent_pos] = r;
    tk->recent_pos = (tk->recent_pos + 1) % 16;
    if (tk->n_recent < 16) tk->n_recent++;
    if (!tk->have_trade) { tk->open_px = tk->high_px = tk->low_px = px; tk->have_trade = 1; }
    if (px > tk->high_px) tk->high_px = px;
    if (px < tk->low_px) tk->low_px = px;
    tk->close_px = px;
    tk->last_price = r.price;
    tk->vol += r.volume;
    tk->qtd += r.qty;
    tk->neg++;
    if (r.type == 2) { tk->vol_buy += r.volume; tk->qbuy += r.qty; tk->negbuy++; }
    if (r.type == 3) { tk->vol_sell += r.volume; tk->qsell += r.qty; tk->negsell++; }
    if (r.type == 4) tk->last_auction_qty = r.qty;
    send_trade(tk->name, tk->exch, &r, 0, 0);
}
static void edit_trade(Ticker *tk) {
    if (!tk->n_recent) { new_trade(tk); return; }
    int k = (int)rnd(&tk->rng, (uint32_t)tk->n_recent);
    TradeRec *r = &tk->recent[k];
    int64_t q = r->qty + (int64_t)(1 + rnd(&tk->rng, 5)) * (rnd(&tk->rng, 2) ? 1 : -1);
    r->qty = q >= 1 ? q : r->qty + 1;
    r->volume = r->price * (double)r->qty * tk->mult;
    TradeRec copy = *r;
    send_trade(tk->name, tk->exch, &copy, TC_IS_EDIT, 0);
}

static void full_book(Ticker *tk, int regenerate) {
    pthread_mutex_lock(&g_lock);
    if (regenerate) { tk->bid.n = 0; tk->ask.n = 0; }
    if (!tk->bid.n && !tk->ask.n) seed_book(tk);
    recenter(tk);
    pthread_mutex_unlock(&g_lock);
    static const uint16_t none[5] = {0, 0, 0, 0, 0};
    send_book(tk, 4, 0, 0, 0, 0, 0, 0.0, none, NULL);
    send_depth(tk, 254, 0, 5);
    send_depth(tk, 254, 0, 4);
    send_depth(tk, 254, 0, 6);
}

static void book_update(Ticker *tk) {
    int side = (int)rnd(&tk->rng, 2);
    BookSide *s = side ? &tk->ask : &tk->bid;
    int action;
    if (s->n < 8) action = 0;
    else if (s->n > 60) action = 2;
    else {
        uint32_t u = rnd(&tk->rng, 100);
        action = u < 40 ? 0 : u < 70 ? 1 : u < 92 ? 2 : (s->n > 10 ? 3 : 2);
    }
    uint16_t has[5] = {1, 1, 0, 1, 1};
    wchar_t wdate[32];
    const wchar_t *date = NULL;
    int64_t qty = 0, offer = 0;
    int32_t agent = 0;
    double price = 0;
    int pos = 0, dupdate = -1, dpos = 0;
    pthread_mutex_lock(&g_lock);
    if (action == 0) {
        Order o;
        make_order(tk, side, tk->t_ms, 1, &o);
        int existed = level_index(s, o.px) >= 0;
        pos = add_position(s, side, o.px);
        insert_at(s, pos, &o);
        dupdate = existed ? 1 : 3;
        dpos = level_index(s, o.px);
        has[2] = 1;
        to_wide(o.date, wdate, 32);
        date = wdate;
        qty = o.qty; agent = o.agent; offer = o.offer; price = (double)o.px * tk->tick;
    } else if (action == 1) {
        pos = (int)rnd(&tk->rng, (uint32_t)s->n);
        Order *o = &s->o[pos];
        int64_t delta = (int64_t)rnd(&tk->rng, (uint32_t)(o->qty > 50 ? 70 : o->qty + 20)) - (o->qty > 50 ? 49 : o->qty - 1);
        if (delta == 0) delta = 1;
        o->qty += delta;
        dupdate = 1;
        dpos = level_index(s, o->px);
        date = L"";
        qty = delta; agent = o->agent; offer = o->offer; price = (double)o->px * tk->tick;
    } else if (action == 2) {
        pos = (int)rnd(&tk->rng, (uint32_t)s->n);
        Order o = s->o[pos];
        int before = level_index(s, o.px);
        remove_at(s, pos);
        int after = level_index(s, o.px);
        dupdate = after >= 0 ? 1 : 2;
        dpos = after >= 0 ? after : before;
        qty = o.qty; agent = o.agent; offer = o.offer; price = (double)o.px * tk->tick;
    } else {
        pos = (int)rnd(&tk->rng, 3);
        for (int i = 0; i <= pos; i++) remove_at(s, 0);
        memset(has, 0, sizeof has);
        dupdate = 4;
    }
    recenter(tk);
    pthread_mutex_unlock(&g_lock);
    send_book(tk, action, pos, side, qty, agent, offer, price, has, date);
    if (dupdate == 4) {
        send_depth(tk, side, 0, 5);
        send_depth(tk, side, 0, 4);
        send_depth(tk, side, 0, 6);
    } else {
        send_depth(tk, side, dpos, dupdate);
    }
}

/* ---- commands from API calls, executed on the native thread ------------------------------- */
enum { CMD_INVALID = 1, CMD_CRASH = 2 };
typedef struct {
    int type;
    wchar_t name[NAME_W], exch[8];
} Cmd;
static Cmd g_cmds[64];
static int g_cmd_head, g_cmd_n;

static void push_cmd(int type, const wchar_t *name, const wchar_t *exch) { /* g_lock held */
    if (g_cmd_n == 64) return;
    Cmd *c = &g_cmds[(g_cmd_head + g_cmd_n++) % 64];
    c->type = type;
    wcsncpy(c->name, name ? name : L"", NAME_W - 1);
    c->name[NAME_W - 1] = 0;
    wcsncpy(c->exch, exch ? exch : L"", 7);
    c->exch[7] = 0;
    pthread_cond_broadcast(&g_wake);
}
static int process_commands(void) {
    int did = 0;
    for (;;) {
        Cmd c;
        pthread_mutex_lock(&g_lock);
        if (!g_cmd_n) { pthread_mutex_unlock(&g_lock); return did; }
        c = g_cmds[g_cmd_head];
        g_cmd_head = (g_cmd_head + 1) % 64;
        g_cmd_n--;
        pthread_mutex_unlock(&g_lock);
        if (c.type == CMD_CRASH) crash_now("__CRASH__");
        if (c.type == CMD_INVALID) send_invalid(c.name, c.exch);
        did = 1;
    }
}

/* ---- history requests --------------------------------------------------------------------- */
typedef struct {
    wchar_t name[NAME_W], exch[8];
    long long day;
    int count, sent, decile;
    uint64_t rng;
    double tick, mult, last_stall;
} Job;
static Job g_jobs[16];
static int g_job_head, g_job_n;

static int history_step(void) {
    Job *j;
    pthread_mutex_lock(&g_lock);
    j = g_job_n ? &g_jobs[g_job_head] : NULL;
    pthread_mutex_unlock(&g_lock);
    if (!j) return 0;
    if (cfg.hist_stall) { /* the server never answers: progress 0 forever */
        double t = now_s();
        if (t - j->last_stall >= 0.02) { send_progress(j->name, j->exch, 0); j->last_stall = t; }
        return 0;
    }
    if (j->sent < j->count) {
        TradeRec r;
        int i = j->sent;
        r.number = (uint32_t)(i + 1);
        r.t_ms = j->day * MS_PER_DAY + 9 * 3600000LL + (long long)i * (8 * 3600000LL / j->count);
        r.type = pick_trade_type(&j->rng);
        r.qty = rnd(&j->rng, 100) < 2 ? (1LL << 31) + rnd(&j->rng, 1000) : 1 + rnd(&j->rng, 50);
        r.price = (double)(j->tick == 0.5 ? 10800 : j->tick == 5.0 ? 26000 : 3000) * j->tick +
                  (double)((int)rnd(&j->rng, 21) - 10) * j->tick;
        r.volume = r.price * (double)r.qty * j->mult;
        r.buy = AGENTS[rnd(&j->rng, 10)];
        r.sell = AGENTS[rnd(&j->rng, 10)];
        send_trade(j->name, j->exch, &r, i == j->count - 1 ? TC_LAST_PACKET : 0, 1);
        j->sent++;
        int p = j->sent * 100 / j->count;
        if (p < 100 && p / 10 > j->decile) {
            j->decile = p / 10;
            send_progress(j->name, j->exch, j->decile * 10);
        }
        return 1;
    }
    send_progress(j->name, j->exch, 100);
    pthread_mutex_lock(&g_lock);
    g_job_head = (g_job_head + 1) % 16;
    g_job_n--;
    pthread_mutex_unlock(&g_lock);
    return 1;
}

/* ---- connection states -------------------------------------------------------------------- */
static void initial_states(uint64_t *rng) {
    int seq[4][40], len[4] = {0, 0, 0, 0}, at[4] = {0, 0, 0, 0};
    int login = 0, activation = 0, market_final = 4;
    switch (cfg.login) {
    case LOGIN_INVALID: login = 1; break;
    case LOGIN_BADPASS: login = 2; break;
    case LOGIN_BLOCKED: login = 3; break;
    case LOGIN_EXPIRED: login = 4; break;
    case LOGIN_UNKNOWN: login = 200; break;
    case LOGIN_INACTIVE: activation = 1; break;
    default: break;
    }
    if (g_cred_result_type == 0) login = g_cred_result;
    if (g_cred_result_type == 3) activation = g_cred_result;
    int failed = login != 0 || activation != 0;
    if (failed) market_final = 3;
    seq[0][len[0]++] = login;
    seq[3][len[3]++] = activation;
    int osc = 6 + (int)rnd(rng, 7);
    for (int i = 0; i < osc; i++) {
        static const int r_all[] = {1, 2, 4, 5}, r_no[] = {1, 4};
        seq[1][len[1]++] = cfg.login == LOGIN_NOROUTING ? r_no[rnd(rng, 2)] : r_all[rnd(rng, 4)];
    }
    seq[1][len[1]++] = cfg.login == LOGIN_NOROUTING ? 4 : failed ? 0 : cfg.routing_final;
    seq[2][len[2]++] = 1;
    seq[2][len[2]++] = 2;
    if (cfg.login != LOGIN_NOMARKET) seq[2][len[2]++] = market_final;
    int left = len[0] + len[1] + len[2] + len[3];
    while (left > 0 && !g_stop) {
        int ch;
        do ch = (int)rnd(rng, 4); while (at[ch] >= len[ch]);
        send_state(ch, seq[ch][at[ch]++]);
        left--;
        if (cfg.state_delay_us > 0) usleep((useconds_t)cfg.state_delay_us);
    }
    if (failed) g_login_failed = 1;
}

/* ==== the broker: order routing (DLLInitializeLogin only) ================================ */
/* Behaviour and env vars are documented in the header comment ("Order routing"). */
#define NL_WAITING_SERVER NLC(0x04)
#define NL_MARKET_ONLY NLC(0x0A)
#define NL_NO_POSITION NLC(0x0B)
#define NL_INVALID_TICKER NLC(0x1F)

/* ---- routing records (the real DLL's layouts, x64 natural alignment) ---------------------- */
typedef struct {
    uint8_t Version;
    int32_t BrokerID;
    wchar_t *AccountID;
    wchar_t *SubAccountID;
    int64_t Reserved;
} TConnectorAccountIdentifier;

typedef struct { /* TString0In = array[0..99] of WideChar: UTF-16 code units, inline */
    uint8_t Version;
    int32_t BrokerID;
    uint16_t AccountID[100];
    int32_t AccountIDLength;
    uint16_t SubAccountID[100];
    int32_t SubAccountIDLength;
    int64_t Reserved;
} TConnectorAccountIdentifierOut;

typedef struct {
    uint8_t Version;
    wchar_t *Ticker;
    int32_t TickerLength;
    wchar_t *Exchange;
    int32_t ExchangeLength;
    uint8_t FeedType;
} TConnectorAssetIdentifierOut;

typedef struct {
    uint8_t Version;
    int64_t LocalOrderID;
    wchar_t *ClOrderID;
} TConnectorOrderIdentifier;

typedef struct {
    uint8_t Version;
    TConnectorAccountIdentifier AccountID;
    TConnectorAssetIdentifier AssetID;
    wchar_t *Password;
    uint8_t OrderType;
    uint8_t OrderSide;
    double Price;
    double StopPrice;
    int64_t Quantity;
    int64_t MessageID; /* V2 */
} TConnectorSendOrder;

typedef struct {
    uint8_t Version;
    TConnectorAccountIdentifier AccountID;
    TConnectorOrderIdentifier OrderID;
    wchar_t *Password;
    double Price;
    double StopPrice;
    int64_t Quantity;
    int64_t MessageID; /* V1 */
} TConnectorChangeOrder;

typedef struct {
    uint8_t Version;
    TConnectorAccountIdentifier AccountID;
    TConnectorOrderIdentifier OrderID;
    wchar_t *Password;
    int64_t MessageID; /* V1 */
} TConnectorCancelOrder;

typedef struct {
    uint8_t Version;
    TConnectorAccountIdentifier AccountID;
    wchar_t *Password;
} TConnectorCancelAllOrders;

typedef struct {
    uint8_t Version;
    TConnectorAccountIdentifier AccountID;
    TConnectorAssetIdentifier AssetID;
    wchar_t *Password;
    double Price;
    uint8_t PositionType; /* V1 */
    int64_t MessageID;    /* V2 */
} TConnectorZeroPosition;

typedef struct {
    uint8_t Version;
    TConnectorAccountIdentifier AccountID;
    wchar_t *BrokerName;
    int32_t BrokerNameLength;
    wchar_t *OwnerName;
    int32_t OwnerNameLength;
    wchar_t *SubOwnerName;
    int32_t SubOwnerNameLength;
    uint32_t AccountFlags;
    uint8_t AccountType; /* V1 */
} TConnectorTradingAccountOut;

typedef struct {
    uint8_t Version;
    TConnectorAccountIdentifier AccountID;
    TConnectorAssetIdentifier AssetID;
    int64_t OpenQuantity;
    double OpenAveragePrice;
    uint8_t OpenSide;
    double DailyAverageSellPrice;
    int64_t DailySellQuantity;
    double DailyAverageBuyPrice;
    int64_t DailyBuyQuantity;
    int64_t DailyQuantityD1, DailyQuantityD2, DailyQuantityD3, DailyQuantityBlocked, DailyQuantityPending,
        DailyQuantityAlloc, DailyQuantityProvision, DailyQuantity, DailyQuantityAvailable;
    uint8_t PositionType; /* V1 */
    int64_t EventID;      /* V2 */
} TConnectorTradingAccountPosition;

typedef struct {
    uint8_t Version;
    TConnectorOrderIdentifier OrderID;
    TConnectorAccountIdentifier AccountID;
    TConnectorAssetIdentifier AssetID;
    int64_t Quantity, TradedQuantity, LeavesQuantity;
    double Price, StopPrice, AveragePrice;
    uint8_t OrderSide, OrderType, OrderStatus, ValidityType;
    SystemTime Date, LastUpdate, CloseDate, ValidityDate;
    wchar_t *TextMessage;
    int64_t EventID; /* V1 */
} TConnectorOrder;

typedef struct {
    uint8_t Version;
    TConnectorOrderIdentifier OrderID;
    TConnectorAccountIdentifierOut AccountID;
    TConnectorAssetIdentifierOut AssetID;
    int64_t Quantity, TradedQuantity, LeavesQuantity;
    double Price, StopPrice, AveragePrice;
    uint8_t OrderSide, OrderType, OrderStatus, ValidityType;
    SystemTime Date, LastUpdate, CloseDate, ValidityDate;
    wchar_t *TextMessage;
    int32_t TextMessageLength;
    int64_t EventID; /* V1 */
} TConnectorOrderOut;

typedef struct {
    uint8_t Version;
    int32_t BrokerID;
    TConnectorOrderIdentifier OrderID;
    int64_t MessageID;
    uint8_t ResultCode;
    wchar_t *Message;
    int32_t MessageLength;
} TConnectorTradingMessageResult;

_Static_assert(sizeof(TConnectorAccountIdentifier) == 32, "TConnectorAccountIdentifier");
_Static_assert(sizeof(TConnectorAccountIdentifierOut) == 424, "TConnectorAccountIdentifierOut");
_Static_assert(offsetof(TConnectorAccountIdentifierOut, SubAccountID) == 212, "SubAccountID");
_Static_assert(offsetof(TConnectorAccountIdentifierOut, Reserved) == 416, "Reserved");
_Static_assert(sizeof(TConnectorOrderIdentifier) == 24, "TConnectorOrderIdentifier");
_Static_assert(sizeof(TConnectorSendOrder) == 120, "TConnectorSendOrder");
_Static_assert(offsetof(TConnectorSendOrder, MessageID) == 112, "SendOrder.MessageID");
_Static_assert(sizeof(TConnectorChangeOrder) == 104, "TConnectorChangeOrder");
_Static_assert(sizeof(TConnectorCancelOrder) == 80, "TConnectorCancelOrder");
_Static_assert(sizeof(TConnectorCancelAllOrders) == 48, "TConnectorCancelAllOrders");
_Static_assert(sizeof(TConnectorZeroPosition) == 104, "TConnectorZeroPosition");
_Static_assert(offsetof(TConnectorZeroPosition, PositionType) == 88, "ZeroPosition.PositionType");
_Static_assert(sizeof(TConnectorTradingAccountOut) == 96, "TConnectorTradingAccountOut");
_Static_assert(sizeof(TConnectorTradingAccountPosition) == 216, "TConnectorTradingAccountPosition");
_Static_assert(offsetof(TConnectorTradingAccountPosition, PositionType) == 200, "Position.PositionType");
_Static_assert(sizeof(TConnectorOrder) == 232, "TConnectorOrder");
_Static_assert(offsetof(TConnectorOrder, Date) == 148, "Order.Date");
_Static_assert(offsetof(TConnectorOrder, TextMessage) == 216, "Order.TextMessage");
_Static_assert(sizeof(TConnectorOrderOut) == 640, "TConnectorOrderOut");
_Static_assert(offsetof(TConnectorOrderOut, AssetID) == 456, "OrderOut.AssetID");
_Static_assert(offsetof(TConnectorOrderOut, TextMessageLength) == 624, "OrderOut.TextMessageLength");
_Static_assert(sizeof(TConnectorTradingMessageResult) == 64, "TConnectorTradingMessageResult");
_Static_assert(offsetof(TConnectorTradingMessageResult, Message) == 48, "MessageResult.Message");

typedef void (*TConnectorOrderCallback)(TConnectorOrderIdentifier);
typedef void (*TConnectorTradingMessageResultCallback)(const TConnectorTradingMessageResult *);
typedef _Bool (*TConnectorEnumerateOrdersProc)(const TConnectorOrder *, intptr_t);

static TConnectorOrderCallback cb_order;
static TConnectorTradingMessageResultCallback cb_msg;

/* ---- broker configuration and state ----------------------------------------------------- */
#define MAX_ACCOUNTS 16
#define ACC_W 64
#define TEXT_W 160
#define CHUNK 1024
#define MAX_CHUNKS 256 /* 262144 orders per broker state */
#define MAX_POSITIONS 256
#define MAX_BOOKS 32
#define BOOK_LEVELS 5
#define ID_BASE 100001LL   /* first LocalOrderID ever */
#define CL_BASE 4000000LL  /* ClOrderID "FK<local id + CL_BASE>": a different number on purpose */
#define MSG_BASE 700001LL
#define B3_UTC_OFFSET_MS (3 * 3600000LL) /* America/Sao_Paulo: UTC-3 (no DST since 2019) */

static struct {
    wchar_t password[256];
    int market_closed;
    long long max_position;
    long long crash_on_order;
    long long fill_delay_ms;
    char state_path[1024];
    char book[2048];
    char accounts[1024];
} bcfg;

typedef struct {
    int32_t broker;
    char account[ACC_W], sub[ACC_W];
} Account;

enum { ST_NEW = 0, ST_PARTIAL = 1, ST_FILLED = 2, ST_CANCELED = 4, ST_REPLACED = 5, ST_PENDING_CANCEL = 6,
       ST_REJECTED = 8, ST_PENDING_NEW = 10, ST_PENDING_REPLACE = 14, ST_PARTIAL_CANCELED = 15 };
enum { TYPE_MARKET = 1, TYPE_LIMIT = 2, TYPE_STOP_LIMIT = 4 };
enum { SIDE_BUY = 1, SIDE_SELL = 2 };
enum { MR_SENT_TO_BROKER = 6, MR_REJECTED_BROKER = 7, MR_REJECTED_MARKET = 9, MR_ACCEPTED = 10,
       MR_BLOCKED_BY_RISK = 24 };

typedef struct {
    int used;
    int64_t local_id, message_id, event_id;
    char cl[24];
    wchar_t cl_w[24]; /* stable storage: handed out as ClOrderID pointers */
    int acc;
    char ticker[NAME_W], exch[8];
    int side, type, status, validity;
    int64_t qty, traded, leaves;
    double price, stop, avg;
    long long date_ms, last_ms, close_ms; /* B3 local ms since the epoch; 0 = none */
    char text[TEXT_W];
    int pw_ok, triggered, fills, day_trade;
    int crash; /* not persisted: this process crashes on it */
} BOrder;

typedef struct {
    int acc;
    char ticker[NAME_W], exch[8];
    int64_t qty; /* signed */
    double avg;
    int64_t buy_qty, sell_qty;
    double buy_avg, sell_avg;
    int64_t event_id;
} BPos;

typedef struct {
    char ticker[NAME_W];
    double tick;
    double bid, ask; /* best prices; level i is i ticks away */
    int64_t bidq[BOOK_LEVELS], askq[BOOK_LEVELS];
} BBook;

static Account g_acc[MAX_ACCOUNTS];
static int g_nacc;
static BOrder *g_chunks[MAX_CHUNKS];
static int64_t g_next_id = ID_BASE, g_next_msg = MSG_BASE, g_next_event = 1;
static BPos g_pos[MAX_POSITIONS];
static int g_npos;
static BBook g_books[MAX_BOOKS];
static int g_nbooks;
static int g_routing;        /* initialized with DLLInitializeLogin */
static int g_day_trade;
static long long g_sent_orders; /* SendOrder calls accepted by this process (crash-on-order counter) */
static int g_journal_fd = -1;
static volatile int g_broker_busy;
static long long g_broker_loaded_orders, g_broker_loaded_positions;

/* commands for the native thread (g_lock) */
enum { BC_NEW = 1, BC_CANCEL, BC_CHANGE, BC_CANCEL_ALL, BC_REFUSE_ALL, BC_MATCH_TICKER };
typedef struct {
    int type;
    int64_t id, msg;
    int acc, pw_ok;
    double price, stop;
    int64_t qty;
    char ticker[NAME_W];
} BCmd;
#define MAX_BCMDS 8192
static BCmd g_bcmds[MAX_BCMDS];
static int g_bcmd_head;
#define MAX_DUE 4096
static int64_t g_due_id[MAX_DUE];
static double g_due_t[MAX_DUE];
static int g_ndue;
static int g_recover_pending; /* set at init when the state file left work; run once callbacks exist */
static double g_states_done_t;

/* ---- small helpers ------------------------------------------------------------------------ */
static double tick_of(const char *ticker) {
    return strncmp(ticker, "WDO", 3) == 0 ? 0.5 : strncmp(ticker, "WIN", 3) == 0 ? 5.0 : 0.01;
}
static int on_grid(double px, double tick) { /* no libm: the .so links nothing but libc and pthread */
    double k = px / tick;
    double d = k - (double)(long long)(k + (k >= 0 ? 0.5 : -0.5));
    return (d < 0 ? -d : d) < 1e-6;
}
static long long b3_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - B3_UTC_OFFSET_MS;
}
static int wide_eq_ascii(const wchar_t *w, const char *a) {
    if (!w) return a[0] == 0;
    size_t i = 0;
    for (; a[i]; i++)
        if (w[i] != (wchar_t)(unsigned char)a[i]) return 0;
    return w[i] == 0;
}
static int wide_ascii_ok(const wchar_t *w, size_t cap) { /* printable ASCII, shorter than cap */
    if (!w) return 0;
    size_t i = 0;
    for (; w[i]; i++)
        if (i + 1 >= cap || w[i] <= 32 || w[i] >= 127) return 0;
    return 1;
}
static void ascii_to_utf16(const char *a, uint16_t *out, int32_t *len) {
    int n = 0;
    for (; a[n] && n < 99; n++) out[n] = (uint16_t)(unsigned char)a[n];
    out[n] = 0;
    *len = n;
}
/* Two-pass string out: NULL buffer -> the length only; else at most *len chars and a NUL
 * (the caller's buffer holds *len + 1, as the vendor example allocates). */
static void out_wstr(wchar_t *buf, int32_t *len, const wchar_t *src) {
    int32_t n = (int32_t)wcslen(src);
    if (buf) {
        int32_t k = n < *len ? n : *len;
        if (k < 0) k = 0;
        wmemcpy(buf, src, (size_t)k);
        buf[k] = 0;
    }
    *len = n;
}
static void out_astr(wchar_t *buf, int32_t *len, const char *src) {
    wchar_t w[TEXT_W + 8];
    to_wide(src, w, TEXT_W + 8);
    out_wstr(buf, len, w);
}
static void systime_or_zero(long long ms, SystemTime *st) {
    if (ms) systime_from_ms(ms, st);
    else memset(st, 0, sizeof *st);
}
static void fmt_ms(long long ms, char *out, size_t cap) {
    if (!ms) { snprintf(out, cap, "-"); return; }
    SystemTime st;
    systime_from_ms(ms, &st);
    snprintf(out, cap, "%04u-%02u-%02u %02u:%02u:%02u.%03u", st.wYear, st.wMonth, st.wDay, st.wHour, st.wMinute,
             st.wSecond, st.wMilliseconds);
}

/* ---- accounts ---------------------------------------------------------------------------- */
static int account_index(int32_t broker, const char *account, const char *sub) {
    for (int i = 0; i < g_nacc; i++)
        if (g_acc[i].broker == broker && !strcmp(g_acc[i].account, account) && !strcmp(g_acc[i].sub, sub)) return i;
    return -1;
}
static int add_account(int32_t broker, const char *account, const char *sub) {
    int i = account_index(broker, account, sub);
    if (i >= 0 || g_nacc == MAX_ACCOUNTS || !account[0]) return i;
    g_acc[g_nacc].broker = broker;
    snprintf(g_acc[g_nacc].account, ACC_W, "%s", account);
    snprintf(g_acc[g_nacc].sub, ACC_W, "%s", sub);
    return g_nacc++;
}
/* "broker:account[:sub],..." */
static void parse_accounts(const char *spec) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char acc[ACC_W] = "", sub[ACC_W] = "";
        int broker = 0;
        if (sscanf(tok, "%d:%63[^:]:%63s", &broker, acc, sub) >= 2) {
            if (sub[0]) add_account(broker, acc, ""); /* a sub-account implies its master */
            add_account(broker, acc, sub);
        }
    }
}
/* The account a record names: BrokerID + AccountID + SubAccountID (NULL or "" = the master). */
static int find_account(const TConnectorAccountIdentifier *id) {
    if (!id || !id->AccountID) return -1;
    for (int i = 0; i < g_nacc; i++) {
        const Account *a = &g_acc[i];
        if (a->broker != id->BrokerID || !wide_eq_ascii(id->AccountID, a->account)) continue;
        int want_master = !id->SubAccountID || !id->SubAccountID[0];
        if (want_master ? a->sub[0] == 0 : wide_eq_ascii(id->SubAccountID, a->sub)) return i;
    }
    return -1;
}
static int same_master(int i, int j) {
    return g_acc[i].broker == g_acc[j].broker && !strcmp(g_acc[i].account, g_acc[j].account);
}

/* ---- orders, positions, books ------------------------------------------------------------ */
static BOrder *order_slot(int64_t local_id, int create) { /* g_lock held */
    if (local_id < ID_BASE) return NULL;
    int64_t k = local_id - ID_BASE;
    if (k >= (int64_t)MAX_CHUNKS * CHUNK) return NULL;
    BOrder **chunk = &g_chunks[k / CHUNK];
    if (!*chunk) {
        if (!create) return NULL;
        *chunk = calloc(CHUNK, sizeof(BOrder));
        if (!*chunk) return NULL;
    }
    BOrder *o = &(*chunk)[k % CHUNK];
    return (create || o->used) ? o : NULL;
}
static BOrder *find_order(int64_t local_id, const wchar_t *cl) { /* g_lock held */
    if (local_id > 0) return order_slot(local_id, 0);
    if (!cl || cl[0] != L'F' || cl[1] != L'K') return NULL;
    char a[24];
    to_ascii(cl, a, sizeof a);
    BOrder *o = order_slot(strtoll(a + 2, NULL, 10) - CL_BASE, 0);
    return o && wcscmp(o->cl_w, cl) == 0 ? o : NULL;
}
static int working(const BOrder *o) { return o && o->used && (o->status == ST_NEW || o->status == ST_PARTIAL ||
                                                               o->status == ST_REPLACED); }
static int cancelable(const BOrder *o) {
    return working(o) || (o && o->used && (o->status == ST_PENDING_NEW || o->status == ST_PENDING_CANCEL ||
                                           o->status == ST_PENDING_REPLACE));
}
static BPos *find_pos(int acc, const char *ticker, const char *exch, int create) { /* g_lock held */
    for (int i = 0; i < g_npos; i++)
        if (g_pos[i].acc == acc && !strcmp(g_pos[i].ticker, ticker) && !strcmp(g_pos[i].exch, exch)) return &g_pos[i];
    if (!create || g_npos == MAX_POSITIONS) return NULL;
    BPos *p = &g_pos[g_npos++];
    memset(p, 0, sizeof *p);
    p->acc = acc;
    snprintf(p->ticker, NAME_W, "%s", ticker);
    snprintf(p->exch, 8, "%s", exch);
    return p;
}
static BBook *find_book(const char *ticker, int create) { /* g_lock held */
    for (int i = 0; i < g_nbooks; i++)
        if (!strcmp(g_books[i].ticker, ticker)) return &g_books[i];
    if (!create || g_nbooks == MAX_BOOKS) return NULL;
    BBook *b = &g_books[g_nbooks++];
    memset(b, 0, sizeof *b);
    snprintf(b->ticker, NAME_W, "%s", ticker);
    b->tick = tick_of(ticker);
    return b;
}
static void set_book(BBook *b, double bid, int64_t bidq, double ask, int64_t askq) {
    b->bid = bid;
    b->ask = ask;
    for (int i = 0; i < BOOK_LEVELS; i++) {
        b->bidq[i] = bid > 0 && bidq > 0 ? bidq : 0;
        b->askq[i] = ask > 0 && askq > 0 ? askq : 0;
    }
}
/* "TICKER:bid x bidq / ask x askq;..." e.g. "WDOZ26:5000.0x3/5000.5x2" */
static void parse_books(const char *spec) {
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        char ticker[NAME_W];
        double bid = 0, ask = 0;
        long long bq = 0, aq = 0;
        if (sscanf(tok, "%39[^:]:%lfx%lld/%lfx%lld", ticker, &bid, &bq, &ask, &aq) == 5) {
            BBook *b = find_book(ticker, 1);
            if (b) set_book(b, bid, bq, ask, aq);
        }
    }
}
/* Signed position after a fill; average price of the open quantity (0 when flat). */
static void apply_fill(BPos *p, int side, int64_t q, double px) {
    if (side == SIDE_BUY) {
        p->buy_avg = (p->buy_avg * (double)p->buy_qty + px * (double)q) / (double)(p->buy_qty + q);
        p->buy_qty += q;
    } else {
        p->sell_avg = (p->sell_avg * (double)p->sell_qty + px * (double)q) / (double)(p->sell_qty + q);
        p->sell_qty += q;
    }
    int64_t s = side == SIDE_BUY ? q : -q;
    int64_t old = p->qty, now = old + s;
    if (old == 0 || (old > 0) == (s > 0)) {
        int64_t a = old < 0 ? -old : old;
        p->avg = (p->avg * (double)a + px * (double)q) / (double)(a + q); /* opening more */
    } else if ((old > 0 && now < 0) || (old < 0 && now > 0)) {
        p->avg = px; /* flipped: the rest opened at this fill */
    }
    if (now == 0) p->avg = 0;
    p->qty = now;
    p->event_id = g_next_event++;
}

/* ---- persistence: a journal of whole records, compacted at init ------------------------------ */
/* Every change appends the changed record as ONE write(2) of one line (O_APPEND): a killed or
 * crashed process leaves whole lines; a torn last line (no newline) is ignored at load. At init
 * the journal is replayed (last record per order / position wins) and rewritten compacted
 * (write tmp + rename). An append per change instead of a rewrite of the whole state keeps a
 * change O(1) when thousands of orders are sent (the orders benchmark). */
static void journal_write(const char *line, size_t n) {
    if (g_journal_fd < 0) return;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(g_journal_fd, line + off, n - off);
        if (w < 0) { if (errno == EINTR) continue; return; }
        off += (size_t)w;
    }
}
static int fmt_order_record(const BOrder *o, char *buf, size_t cap) {
    const Account *a = &g_acc[o->acc];
    return snprintf(buf, cap,
                    "kind=order\tlocal_id=%lld\tmessage_id=%lld\tevent=%lld\tcl=%s\tbroker=%d\taccount=%s\tsub=%s"
                    "\tticker=%s\texch=%s\tside=%d\ttype=%d\tstatus=%d\tvalidity=%d\tqty=%lld\ttraded=%lld"
                    "\tleaves=%lld\tprice=%.17g\tstop=%.17g\tavg=%.17g\tdate=%lld\tlast=%lld\tclose=%lld\tpw_ok=%d"
                    "\ttriggered=%d\tfills=%d\tday_trade=%d\ttext=%s\n",
                    (long long)o->local_id, (long long)o->message_id, (long long)o->event_id, o->cl, a->broker,
                    a->account, a->sub, o->ticker, o->exch, o->side, o->type, o->status, o->validity,
                    (long long)o->qty, (long long)o->traded, (long long)o->leaves, o->price, o->stop, o->avg,
                    o->date_ms, o->last_ms, o->close_ms, o->pw_ok, o->triggered, o->fills, o->day_trade, o->text);
}
static int fmt_pos_record(const BPos *p, char *buf, size_t cap) {
    const Account *a = &g_acc[p->acc];
    return snprintf(buf, cap,
                    "kind=pos\tbroker=%d\taccount=%s\tsub=%s\tticker=%s\texch=%s\tqty=%lld\tavg=%.17g\tbuy_qty=%lld"
                    "\tbuy_avg=%.17g\tsell_qty=%lld\tsell_avg=%.17g\tevent=%lld\n",
                    a->broker, a->account, a->sub, p->ticker, p->exch, (long long)p->qty, p->avg,
                    (long long)p->buy_qty, p->buy_avg, (long long)p->sell_qty, p->sell_avg, (long long)p->event_id);
}
static void journal_order(const BOrder *o) { /* g_lock held */
    char buf[1024];
    int n = fmt_order_record(o, buf, sizeof buf);
    if (n > 0) journal_write(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}
static void journal_pos(const BPos *p) { /* g_lock held */
    char buf[512];
    int n = fmt_pos_record(p, buf, sizeof buf);
    if (n > 0) journal_write(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}
static void journal_ids(void) { /* g_lock held; message ids that no order record carries */
    char buf[128];
    int n = snprintf(buf, sizeof buf, "kind=ids\tnext_msg=%lld\n", (long long)g_next_msg);
    journal_write(buf, (size_t)n);
}

static const char *rec_get(char **keys, char **vals, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (!strcmp(keys[i], key)) return vals[i];
    return "";
}
static void load_line(char *line) {
    char *keys[40], *vals[40];
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, "\t", &save); tok && n < 40; tok = strtok_r(NULL, "\t", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = 0;
        keys[n] = tok;
        vals[n++] = eq + 1;
    }
#define G(k) rec_get(keys, vals, n, k)
#define GL(k) strtoll(G(k), NULL, 10)
#define GD(k) strtod(G(k), NULL)
    const char *kind = G("kind");
    if (!strcmp(kind, "ids")) {
        if (GL("next_msg") > g_next_msg) g_next_msg = GL("next_msg");
        return;
    }
    int acc = add_account((int32_t)GL("broker"), G("account"), G("sub"));
    if (acc < 0) return;
    if (!strcmp(kind, "order")) {
        int64_t id = GL("local_id");
        BOrder *o = order_slot(id, 1);
        if (!o) return;
        memset(o, 0, sizeof *o);
        o->used = 1;
        o->local_id = id;
        o->message_id = GL("message_id");
        o->event_id = GL("event");
        snprintf(o->cl, sizeof o->cl, "%s", G("cl"));
        to_wide(o->cl, o->cl_w, 24);
        o->acc = acc;
        snprintf(o->ticker, NAME_W, "%s", G("ticker"));
        snprintf(o->exch, 8, "%s", G("exch"));
        o->side = (int)GL("side"); o->type = (int)GL("type"); o->status = (int)GL("status");
        o->validity = (int)GL("validity");
        o->qty = GL("qty"); o->traded = GL("traded"); o->leaves = GL("leaves");
        o->price = GD("price"); o->stop = GD("stop"); o->avg = GD("avg");
        o->date_ms = GL("date"); o->last_ms = GL("last"); o->close_ms = GL("close");
        o->pw_ok = (int)GL("pw_ok"); o->triggered = (int)GL("triggered"); o->fills = (int)GL("fills");
        o->day_trade = (int)GL("day_trade");
        snprintf(o->text, TEXT_W, "%s", G("text"));
        if (id >= g_next_id) g_next_id = id + 1;
        if (o->message_id >= g_next_msg) g_next_msg = o->message_id + 1;
        if (o->event_id >= g_next_event) g_next_event = o->event_id + 1;
    } else if (!strcmp(kind, "pos")) {
        BPos *p = find_pos(acc, G("ticker"), G("exch"), 1);
        if (!p) return;
        p->qty = GL("qty"); p->avg = GD("avg");
        p->buy_qty = GL("buy_qty"); p->buy_avg = GD("buy_avg");
        p->sell_qty = GL("sell_qty"); p->sell_avg = GD("sell_avg");
        p->event_id = GL("event");
        if (p->event_id >= g_next_event) g_next_event = p->event_id + 1;
    }
#undef G
#undef GL
#undef GD
}
/* Replay the journal, rewrite it compacted (tmp + rename), reopen it for appends. Init only. */
static void broker_load_state(void) {
    if (!bcfg.state_path[0]) return;
    FILE *f = fopen(bcfg.state_path, "r");
    if (f) {
        char line[4096];
        while (fgets(line, sizeof line, f)) {
            size_t len = strlen(line);
            if (!len || line[len - 1] != '\n') continue; /* torn last line of a killed process */
            line[len - 1] = 0;
            load_line(line);
        }
        fclose(f);
    }
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", bcfg.state_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return;
    g_journal_fd = fd;
    journal_ids();
    for (int64_t id = ID_BASE; id < g_next_id; id++) {
        BOrder *o = order_slot(id, 0);
        if (o) { journal_order(o); g_broker_loaded_orders++; }
    }
    for (int i = 0; i < g_npos; i++) { journal_pos(&g_pos[i]); g_broker_loaded_positions++; }
    close(fd);
    g_journal_fd = -1;
    if (rename(tmp, bcfg.state_path) != 0) return;
    g_journal_fd = open(bcfg.state_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    for (int64_t id = ID_BASE; id < g_next_id; id++) {
        BOrder *o = order_slot(id, 0);
        if (o && (o->status == ST_PENDING_NEW || working(o) || o->status == ST_PENDING_CANCEL ||
                  o->status == ST_PENDING_REPLACE))
            g_recover_pending = 1;
    }
}

static void broker_read_config(void) {
    const char *pw = getenv("FAKE_PROFITDLL_ROUTING_PASSWORD");
    utf8_to_wide(pw ? pw : "route-\xce\xa9-2207", bcfg.password, 256);
    bcfg.market_closed = strcmp(env_str("FAKE_PROFITDLL_MARKET", "open"), "closed") == 0;
    bcfg.max_position = env_ll("FAKE_PROFITDLL_MAX_POSITION", 10);
    bcfg.crash_on_order = env_ll("FAKE_PROFITDLL_CRASH_ON_ORDER", 0);
    bcfg.fill_delay_ms = env_ll("FAKE_PROFITDLL_FILL_DELAY_MS", 0);
    snprintf(bcfg.state_path, sizeof bcfg.state_path, "%s", env_str("FAKE_PROFITDLL_BROKER_STATE", ""));
    snprintf(bcfg.book, sizeof bcfg.book, "%s", env_str("FAKE_PROFITDLL_BROKER_BOOK", ""));
    snprintf(bcfg.accounts, sizeof bcfg.accounts, "%s", env_str("FAKE_PROFITDLL_ACCOUNTS", "308:1234567"));
    parse_accounts(bcfg.accounts);
    parse_books(bcfg.book);
}

/* ---- sent-log lines of the broker --------------------------------------------------------- */
static void log_account(int acc) {
    if (acc < 0 || acc >= g_nacc) { lb_add("\tbroker=-\taccount=-\tsub=-"); return; }
    lb_add("\tbroker=%d\taccount=%s\tsub=%s", g_acc[acc].broker, g_acc[acc].account,
           g_acc[acc].sub[0] ? g_acc[acc].sub : "-");
}
static void log_account_id(const TConnectorAccountIdentifier *id) {
    if (!id) { lb_add("\tbroker=-\taccount=-\tsub=-"); return; }
    lb_add("\tbroker=%d", id->BrokerID);
    lb_wstr("account", id->AccountID);
    lb_wstr("sub", id->SubAccountID);
}

/* ---- callbacks (native thread, never under g_lock: the client reads back with GetOrderDetails) */
static void emit_order(const BOrder *s) {
    TConnectorOrderCallback cb = LOAD(cb_order);
    if (LOGGING) {
        char d[48], l[48];
        fmt_ms(s->date_ms, d, sizeof d);
        fmt_ms(s->last_ms, l, sizeof l);
        lb_reset("order_cb");
        lb_add("\tlocal_id=%lld\tcl_ord_id=%s", (long long)s->local_id, s->cl);
        log_account(s->acc);
        lb_add("\tticker=%s\texch=%s\tside=%d\ttype=%d\tstatus=%d\tvalidity=%d\tqty=%lld\ttraded=%lld\tleaves=%lld"
               "\tprice=%.17g\tstop=%.17g\tavg=%.17g\tdate=%s\tlast=%s\tevent_id=%lld\ttext=%s",
               s->ticker, s->exch, s->side, s->type, s->status, s->validity, (long long)s->qty, (long long)s->traded,
               (long long)s->leaves, s->price, s->stop, s->avg, d, l, (long long)s->event_id, s->text);
        lb_flush();
    }
    if (!cb) { g_undelivered++; return; }
    pthread_mutex_lock(&g_lock);
    BOrder *o = order_slot(s->local_id, 0);
    wchar_t *cl = o ? o->cl_w : NULL; /* stable storage */
    pthread_mutex_unlock(&g_lock);
    TConnectorOrderIdentifier id = {0, s->local_id, cl};
    g_callbacks++;
    cb(id);
}
static void emit_msg(const BOrder *s, int64_t msg_id, int code, const char *text) {
    TConnectorTradingMessageResultCallback cb = LOAD(cb_msg);
    int32_t broker = s && s->acc >= 0 ? g_acc[s->acc].broker : 0;
    if (LOGGING) {
        lb_reset("msg_result");
        lb_add("\tlocal_id=%lld\tcl_ord_id=%s\tbroker=%d\tmessage_id=%lld\tcode=%d\tmessage=%s",
               s ? (long long)s->local_id : 0LL, s ? s->cl : "-", broker, (long long)msg_id, code, text);
        lb_flush();
    }
    if (!cb) { g_undelivered++; return; }
    wchar_t w[TEXT_W + 8], cl[24];
    to_wide(text, w, TEXT_W + 8);
    to_wide(s ? s->cl : "", cl, 24);
    TConnectorTradingMessageResult r;
    memset(&r, 0, sizeof r);
    r.Version = 0;
    r.BrokerID = broker;
    r.OrderID.LocalOrderID = s ? s->local_id : 0;
    r.OrderID.ClOrderID = s ? cl : NULL;
    r.MessageID = msg_id;
    r.ResultCode = (uint8_t)code;
    r.Message = w;
    r.MessageLength = (int32_t)wcslen(w);
    g_callbacks++;
    cb(&r);
}
static void crash_on_order(int64_t id) {
    if (LOGGING) {
        lb_reset("crash");
        lb_add("\treason=crash_on_order\tlocal_id=%lld", (long long)id);
        lb_flush();
    }
    *g_crash_ptr = 42; /* a real SIGSEGV on the native thread, before any callback for the order */
    abort();
}

/* ---- the broker's work, on the native thread -------------------------------------------- */
static int push_bcmd(const BCmd *c) { /* g_lock held */
    if (g_bcmd_n == MAX_BCMDS) return 0;
    g_bcmds[(g_bcmd_head + g_bcmd_n++) % MAX_BCMDS] = *c;
    pthread_cond_broadcast(&g_wake);
    return 1;
}
static int bcmd_room(void) { return g_bcmd_n < MAX_BCMDS; } /* g_lock held */

/* Why a new order is refused (its result code), or 0. g_lock held. */
static int reject_reason(const BOrder *o, char *why, size_t cap) {
    if (!o->pw_ok) { snprintf(why, cap, "invalid routing password"); return MR_REJECTED_BROKER; }
    if (bcfg.market_closed) { snprintf(why, cap, "market closed"); return MR_REJECTED_MARKET; }
    double tick = tick_of(o->ticker);
    if (o->type != TYPE_MARKET && !on_grid(o->price, tick)) {
        snprintf(why, cap, "invalid price: %.17g is not a multiple of the tick %g", o->price, tick);
        return MR_REJECTED_MARKET;
    }
    if (o->type == TYPE_STOP_LIMIT && !on_grid(o->stop, tick)) {
        snprintf(why, cap, "invalid price: stop %.17g is not a multiple of the tick %g", o->stop, tick);
        return MR_REJECTED_MARKET;
    }
    /* Margin: the position if this order and every working order on the same side filled. */
    BPos *p = find_pos(o->acc, o->ticker, o->exch, 0);
    int64_t worst = (p ? p->qty : 0) + (o->side == SIDE_BUY ? o->qty : -o->qty);
    for (int64_t id = ID_BASE; id < g_next_id; id++) {
        BOrder *w = order_slot(id, 0);
        if (w && w != o && working(w) && w->acc == o->acc && w->side == o->side && !strcmp(w->ticker, o->ticker))
            worst += w->side == SIDE_BUY ? w->leaves : -w->leaves;
    }
    if ((worst < 0 ? -worst : worst) > bcfg.max_position) {
        snprintf(why, cap, "insufficient margin: position would reach %lld (max %lld)", (long long)worst,
                 bcfg.max_position);
        return MR_BLOCKED_BY_RISK;
    }
    return 0;
}

static void broker_match(int64_t id);

static void schedule_match(int64_t id) {
    if (bcfg.fill_delay_ms > 0) {
        pthread_mutex_lock(&g_lock);
        int queued = g_ndue < MAX_DUE;
        if (queued) {
            g_due_id[g_ndue] = id;
            g_due_t[g_ndue++] = now_s() + (double)bcfg.fill_delay_ms / 1000.0;
        }
        pthread_mutex_unlock(&g_lock);
        if (queued) return;
    }
    broker_match(id);
}

static void broker_new(int64_t id) {
    BOrder s;
    pthread_mutex_lock(&g_lock);
    BOrder *o = order_slot(id, 0);
    if (!o || o->status != ST_PENDING_NEW) { pthread_mutex_unlock(&g_lock); return; }
    int crash = o->crash;
    s = *o;
    pthread_mutex_unlock(&g_lock);
    if (crash) crash_on_order(id);
    emit_order(&s); /* PendingNew */
    emit_msg(&s, s.message_id, MR_SENT_TO_BROKER, "sent to broker");
    char why[TEXT_W];
    pthread_mutex_lock(&g_lock);
    o = order_slot(id, 0);
    if (o->status != ST_PENDING_NEW) { pthread_mutex_unlock(&g_lock); return; } /* cancelled meanwhile */
    int code = reject_reason(o, why, sizeof why);
    o->last_ms = b3_now_ms();
    if (code) {
        o->status = ST_REJECTED;
        o->leaves = 0;
        o->close_ms = o->last_ms;
        snprintf(o->text, TEXT_W, "%s", why);
    } else {
        o->status = ST_NEW;
        o->leaves = o->qty - o->traded;
    }
    journal_order(o);
    s = *o;
    pthread_mutex_unlock(&g_lock);
    if (code) {
        emit_msg(&s, s.message_id, code, why);
        emit_order(&s);
        return;
    }
    emit_msg(&s, s.message_id, MR_ACCEPTED, "accepted");
    emit_order(&s);
    schedule_match(id);
}

static int stop_hit(const BOrder *o, const BBook *b) {
    if (!b) return 0;
    if (o->side == SIDE_BUY) return b->ask > 0 && b->ask >= o->stop - 1e-9;
    return b->bid > 0 && b->bid <= o->stop + 1e-9;
}
/* The best level of the book this order can trade with now, or -1. */
static int crossing_level(const BOrder *o, const BBook *b, double *px) {
    if (!b) return -1;
    for (int i = 0; i < BOOK_LEVELS; i++) {
        double p = o->side == SIDE_BUY ? b->ask + i * b->tick : b->bid - i * b->tick;
        int64_t q = o->side == SIDE_BUY ? b->askq[i] : b->bidq[i];
        if (q <= 0 || p <= 0) continue;
        if (o->type != TYPE_MARKET && (o->side == SIDE_BUY ? p > o->price + 1e-9 : p < o->price - 1e-9)) return -1;
        *px = p;
        return i;
    }
    return -1;
}
/* Trade the order against the scripted book, one level (one fill, one callback) at a time. */
static void broker_match(int64_t id) {
    for (;;) {
        BOrder s;
        BPos ps;
        double px = 0;
        int64_t q = 0;
        pthread_mutex_lock(&g_lock);
        BOrder *o = order_slot(id, 0);
        if (!working(o)) { pthread_mutex_unlock(&g_lock); return; }
        BBook *b = find_book(o->ticker, 0);
        if (o->type == TYPE_STOP_LIMIT && !o->triggered) {
            if (!stop_hit(o, b)) { pthread_mutex_unlock(&g_lock); return; }
            o->triggered = 1; /* from here on a limit order at o->price */
            journal_order(o);
        }
        int lvl = crossing_level(o, b, &px);
        if (lvl < 0) {
            if (o->type == TYPE_MARKET) { /* nothing left to take: the rest of a market order dies */
                o->status = o->traded ? ST_PARTIAL_CANCELED : ST_CANCELED;
                o->leaves = 0;
                o->last_ms = o->close_ms = b3_now_ms();
                snprintf(o->text, TEXT_W, "no liquidity for the rest of the market order");
                journal_order(o);
                s = *o;
                pthread_mutex_unlock(&g_lock);
                emit_order(&s);
                return;
            }
            pthread_mutex_unlock(&g_lock);
            return;
        }
        int64_t *avail = o->side == SIDE_BUY ? &b->askq[lvl] : &b->bidq[lvl];
        q = *avail < o->leaves ? *avail : o->leaves;
        *avail -= q;
        o->avg = (o->avg * (double)o->traded + px * (double)q) / (double)(o->traded + q);
        o->traded += q;
        o->leaves -= q;
        o->fills++;
        o->status = o->leaves == 0 ? ST_FILLED : ST_PARTIAL;
        o->last_ms = b3_now_ms();
        if (o->leaves == 0) o->close_ms = o->last_ms;
        BPos *p = find_pos(o->acc, o->ticker, o->exch, 1);
        if (p) {
            apply_fill(p, o->side, q, px);
            o->event_id = p->event_id;
            journal_pos(p);
            ps = *p;
        } else {
            memset(&ps, 0, sizeof ps);
        }
        journal_order(o);
        s = *o;
        pthread_mutex_unlock(&g_lock);
        if (LOGGING) {
            lb_reset("fill");
            lb_add("\tlocal_id=%lld\tcl_ord_id=%s", (long long)s.local_id, s.cl);
            log_account(s.acc);
            lb_add("\tticker=%s\tside=%d\tprice=%.17g\tqty=%lld\tfill_no=%d\ttraded=%lld\tleaves=%lld\tavg=%.17g"
                   "\tposition=%lld\tposition_avg=%.17g",
                   s.ticker, s.side, px, (long long)q, s.fills, (long long)s.traded, (long long)s.leaves, s.avg,
                   (long long)ps.qty, ps.avg);
            lb_flush();
        }
        emit_order(&s);
    }
}

static void broker_cancel(int64_t id, int64_t msg, int pw_ok) {
    BOrder s;
    pthread_mutex_lock(&g_lock);
    BOrder *o = order_slot(id, 0);
    if (!o) { pthread_mutex_unlock(&g_lock); return; }
    s = *o;
    if (!cancelable(o) || !pw_ok) {
        pthread_mutex_unlock(&g_lock);
        emit_msg(&s, msg, pw_ok ? MR_REJECTED_MARKET : MR_REJECTED_BROKER,
                 pw_ok ? "cancel rejected: the order is not working" : "invalid routing password");
        return;
    }
    o->status = ST_PENDING_CANCEL;
    o->last_ms = b3_now_ms();
    journal_order(o);
    s = *o;
    pthread_mutex_unlock(&g_lock);
    emit_order(&s);
    pthread_mutex_lock(&g_lock);
    o->status = o->traded ? ST_PARTIAL_CANCELED : ST_CANCELED;
    o->leaves = 0;
    o->last_ms = o->close_ms = b3_now_ms();
    snprintf(o->text, TEXT_W, "canceled by the client");
    journal_order(o);
    s = *o;
    pthread_mutex_unlock(&g_lock);
    emit_msg(&s, msg, MR_ACCEPTED, "accepted");
    emit_order(&s);
}

static void broker_change(const BCmd *c) {
    BOrder s;
    char why[TEXT_W] = "";
    pthread_mutex_lock(&g_lock);
    BOrder *o = order_slot(c->id, 0);
    if (!o) { pthread_mutex_unlock(&g_lock); return; }
    s = *o;
    if (!working(o) || !c->pw_ok) {
        pthread_mutex_unlock(&g_lock);
        emit_msg(&s, c->msg, c->pw_ok ? MR_REJECTED_MARKET : MR_REJECTED_BROKER,
                 c->pw_ok ? "change rejected: the order is not working" : "invalid routing password");
        return;
    }
    int before = o->status;
    o->status = ST_PENDING_REPLACE;
    o->last_ms = b3_now_ms();
    journal_order(o);
    s = *o;
    pthread_mutex_unlock(&g_lock);
    emit_order(&s);
    pthread_mutex_lock(&g_lock);
    double tick = tick_of(o->ticker);
    if (o->type != TYPE_MARKET && !on_grid(c->price, tick))
        snprintf(why, sizeof why, "change rejected: invalid price: %.17g is not a multiple of the tick %g", c->price,
                 tick);
    else if (o->type == TYPE_STOP_LIMIT && !o->triggered && !on_grid(c->stop, tick))
        snprintf(why, sizeof why, "change rejected: invalid price: stop %.17g is not a multiple of the tick %g",
                 c->stop, tick);
    else if (c->qty <= o->traded)
        snprintf(why, sizeof why, "change rejected: quantity %lld is not above the %lld traded", (long long)c->qty,
                 (long long)o->traded);
    if (why[0]) {
        o->status = before; /* the order is what it was */
        snprintf(o->text, TEXT_W, "%s", why);
    } else {
        if (o->type != TYPE_MARKET) o->price = c->price;
        if (o->type == TYPE_STOP_LIMIT) o->stop = c->stop;
        o->qty = c->qty;
        o->leaves = c->qty - o->traded;
        o->status = ST_REPLACED;
        o->text[0] = 0;
    }
    o->last_ms = b3_now_ms();
    journal_order(o);
    s = *o;
    pthread_mutex_unlock(&g_lock);
    emit_msg(&s, c->msg, why[0] ? MR_REJECTED_MARKET : MR_ACCEPTED, why[0] ? why : "accepted");
    emit_order(&s);
    if (!why[0]) broker_match(c->id);
}

/* Ids (ascending = time priority) of the orders a predicate selects, copied under g_lock. */
static int collect_ids(int64_t *out, int cap, int (*want)(const BOrder *, const void *), const void *arg) {
    int n = 0;
    pthread_mutex_lock(&g_lock);
    for (int64_t id = ID_BASE; id < g_next_id && n < cap; id++) {
        BOrder *o = order_slot(id, 0);
        if (o && want(o, arg)) out[n++] = id;
    }
    pthread_mutex_unlock(&g_lock);
    return n;
}
static int want_account_cancel(const BOrder *o, const void *arg) { return cancelable(o) && o->acc == *(const int *)arg; }
static int want_ticker_working(const BOrder *o, const void *arg) { return working(o) && !strcmp(o->ticker, (const char *)arg); }
static int want_recovery(const BOrder *o, const void *arg) {
    (void)arg;
    return o->status == ST_PENDING_NEW || working(o) || o->status == ST_PENDING_CANCEL ||
           o->status == ST_PENDING_REPLACE;
}

static void broker_recover(void) {
    static int64_t ids[MAX_BCMDS];
    int n = collect_ids(ids, MAX_BCMDS, want_recovery, NULL);
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&g_lock);
        BOrder *o = order_slot(ids[i], 0);
        int status = o->status;
        if (status == ST_PENDING_REPLACE) { /* the change never completed: the order stands as it was */
            o->status = o->traded ? ST_PARTIAL : ST_NEW;
            journal_order(o);
        }
        int64_t msg = 0;
        pthread_mutex_unlock(&g_lock);
        if (status == ST_PENDING_NEW) broker_new(ids[i]);
        else if (status == ST_PENDING_CANCEL) broker_cancel(ids[i], msg, 1);
        else broker_match(ids[i]);
    }
}

static int broker_step(void) {
    BCmd c;
    int64_t due = 0;
    pthread_mutex_lock(&g_lock);
    /* Work a previous process left (state file): once the client's order callback is set, or
     * half a second after the connection states, so its events have somewhere to go. */
    if (g_recover_pending && g_states_done_t > 0 && (LOAD(cb_order) || now_s() - g_states_done_t > 0.5)) {
        g_recover_pending = 0;
        g_broker_busy = 1;
        pthread_mutex_unlock(&g_lock);
        broker_recover();
        g_broker_busy = 0;
        return 1;
    }
    double t = now_s();
    for (int i = 0; i < g_ndue; i++) {
        if (g_due_t[i] <= t) {
            due = g_due_id[i];
            g_due_id[i] = g_due_id[g_ndue - 1];
            g_due_t[i] = g_due_t[--g_ndue];
            break;
        }
    }
    if (!due && !g_bcmd_n) { pthread_mutex_unlock(&g_lock); return 0; }
    if (!due) {
        c = g_bcmds[g_bcmd_head];
        g_bcmd_head = (g_bcmd_head + 1) % MAX_BCMDS;
        g_bcmd_n--;
    }
    g_broker_busy = 1;
    pthread_mutex_unlock(&g_lock);
    if (due) {
        broker_match(due);
    } else if (c.type == BC_NEW) {
        broker_new(c.id);
    } else if (c.type == BC_CANCEL) {
        broker_cancel(c.id, c.msg, c.pw_ok);
    } else if (c.type == BC_CHANGE) {
        broker_change(&c);
    } else if (c.type == BC_CANCEL_ALL) {
        static int64_t ids[MAX_BCMDS];
        int n = collect_ids(ids, MAX_BCMDS, want_account_cancel, &c.acc);
        for (int i = 0; i < n; i++) broker_cancel(ids[i], 0, 1);
    } else if (c.type == BC_REFUSE_ALL) {
        BOrder none;
        memset(&none, 0, sizeof none);
        none.acc = c.acc;
        snprintf(none.cl, sizeof none.cl, "-");
        emit_msg(&none, 0, MR_REJECTED_BROKER, "invalid routing password");
    } else if (c.type == BC_MATCH_TICKER) {
        static int64_t ids[MAX_BCMDS];
        int n = collect_ids(ids, MAX_BCMDS, want_ticker_working, c.ticker);
        for (int i = 0; i < n; i++) broker_match(ids[i]);
    }
    g_broker_busy = 0;
    return 1;
}

/* ---- exports: routing --------------------------------------------------------------------- */
static int32_t routing_check(void) {
    if (!g_initialized) return NL_NOT_INITIALIZED;
    if (!g_routing) return NL_MARKET_ONLY; /* DLLInitializeMarketLogin: no routing */
    if (g_login_failed) return NL_NO_LOGIN;
    return NL_OK;
}
static int password_ok(const wchar_t *pw) { return pw && wcscmp(pw, bcfg.password) == 0; }

EXPORT int32_t SetOrderCallback(TConnectorOrderCallback cb) {
    if (!g_initialized) return NL_NOT_INITIALIZED;
    STORE(cb_order, cb);
    return NL_OK;
}
EXPORT int32_t SetTradingMessageResultCallback(TConnectorTradingMessageResultCallback cb) {
    if (!g_initialized) return NL_NOT_INITIALIZED;
    STORE(cb_msg, cb);
    return NL_OK;
}

EXPORT int32_t SetDayTrade(int32_t on) {
    int32_t r = routing_check();
    if (r != NL_OK) return r;
    g_day_trade = on != 0;
    if (LOGGING) {
        lb_reset("set_day_trade");
        lb_add("\ton=%d", on);
        lb_flush();
    }
    return NL_OK;
}

static int32_t asset_check(const TConnectorAssetIdentifier *a, char *ticker, char *exch) {
    if (!a->Ticker || !a->Exchange || !a->Ticker[0]) return NL_INVALID_ARGS;
    if (!known_exchange(a->Exchange)) return NL_EXCHANGE_UNKNOWN;
    if (!wide_ascii_ok(a->Ticker, NAME_W)) return NL_INVALID_TICKER;
    to_ascii(a->Ticker, ticker, NAME_W);
    to_ascii(a->Exchange, exch, 8);
    return ticker_valid(ticker, exch) ? NL_OK : NL_INVALID_TICKER;
}

/* A new order at the broker: persisted PendingNew now, the rest on the native thread. g_lock held. */
static BOrder *create_order(int acc, const char *ticker, const char *exch, int side, int type, int64_t qty,
                            double price, double stop, int pw_ok, int64_t msg) {
    BOrder *o = order_slot(g_next_id, 1);
    if (!o) return NULL;
    memset(o, 0, sizeof *o);
    o->used = 1;
    o->local_id = g_next_id++;
    o->message_id = msg;
    snprintf(o->cl, sizeof o->cl, "FK%lld", (long long)(o->local_id + CL_BASE));
    to_wide(o->cl, o->cl_w, 24);
    o->acc = acc;
    snprintf(o->ticker, NAME_W, "%s", ticker);
    snprintf(o->exch, 8, "%s", exch);
    o->side = side;
    o->type = type;
    o->status = ST_PENDING_NEW;
    o->validity = 0; /* Day */
    o->qty = qty;
    o->leaves = qty;
    o->price = type == TYPE_MARKET ? -1.0 : price;
    o->stop = type == TYPE_STOP_LIMIT ? stop : -1.0;
    o->date_ms = o->last_ms = b3_now_ms();
    o->pw_ok = pw_ok;
    o->day_trade = g_day_trade;
    journal_order(o);
    return o;
}

/* Command lines are written before the command is queued for the native thread (under g_lock:
 * g_lock -> log lock is the only nesting of the two), so a command's line always precedes the
 * callbacks it causes. */
static void log_send_order(const TConnectorSendOrder *r, long long result, int pw_ok) {
    if (!LOGGING) return;
    lb_reset("send_order");
    lb_add("\tresult=%lld", result);
    log_account_id(r ? &r->AccountID : NULL);
    if (r) {
        lb_wstr("ticker", r->AssetID.Ticker);
        lb_wstr("exch", r->AssetID.Exchange);
        lb_add("\tside=%d\ttype=%d\tprice=%.17g\tstop=%.17g\tqty=%lld\tversion=%d\tmessage_id=%lld",
               r->OrderSide, r->OrderType, r->Price, r->StopPrice, (long long)r->Quantity, r->Version,
               r->Version >= 2 ? (long long)r->MessageID : 0LL);
    }
    lb_add("\tpw_ok=%d\tday_trade=%d", pw_ok, g_day_trade);
    lb_flush();
}

EXPORT int64_t SendOrder(TConnectorSendOrder *r) {
    int32_t res = routing_check();
    int logged = 0;
    char ticker[NAME_W] = "-", exch[8] = "-";
    int acc = -1, side = 0, type = 0, pw_ok = 0;
    int64_t id = 0;
    if (res == NL_OK && !r) res = NL_INVALID_ARGS;
    if (res == NL_OK && r->Version > 2) res = NL_VERSION_NOT_SUPPORTED;
    if (res == NL_OK && (acc = find_account(&r->AccountID)) < 0) res = NL_INVALID_ARGS;
    if (res == NL_OK) res = asset_check(&r->AssetID, ticker, exch);
    if (res == NL_OK) {
        if (r->Version == 0) { /* V0 enums: 0 limit, 1 stop(-limit), 2 market; 0 buy, 1 sell */
            type = r->OrderType == 0 ? TYPE_LIMIT : r->OrderType == 1 ? TYPE_STOP_LIMIT : r->OrderType == 2 ? TYPE_MARKET : 0;
            side = r->OrderSide == 0 ? SIDE_BUY : r->OrderSide == 1 ? SIDE_SELL : 0;
        } else {
            type = (r->OrderType == 1 || r->OrderType == 2 || r->OrderType == 4) ? r->OrderType : 0;
            side = (r->OrderSide == 1 || r->OrderSide == 2) ? r->OrderSide : 0;
        }
        if (!type || !side || r->Quantity <= 0) res = NL_INVALID_ARGS;
        else if (type != TYPE_MARKET && !(r->Price > 0)) res = NL_INVALID_ARGS;
        else if (type == TYPE_STOP_LIMIT && !(r->StopPrice > 0)) res = NL_INVALID_ARGS;
        else if (!r->Password || !r->Password[0]) res = NL_NO_PASSWORD;
    }
    if (res == NL_OK) {
        pw_ok = password_ok(r->Password); /* compared, never copied or logged */
        pthread_mutex_lock(&g_lock);
        BOrder *o = bcmd_room() ? create_order(acc, ticker, exch, side, type, r->Quantity, r->Price, r->StopPrice,
                                               pw_ok, r->Version >= 2 ? g_next_msg++ : 0) : NULL;
        if (!o) {
            res = NL_WAITING_SERVER;
        } else {
            id = o->local_id;
            if (r->Version >= 2) r->MessageID = o->message_id;
            g_sent_orders++;
            if (bcfg.crash_on_order > 0 && g_sent_orders == bcfg.crash_on_order) o->crash = 1;
            log_send_order(r, (long long)id, pw_ok);
            logged = 1;
            BCmd c = {BC_NEW, id, 0, acc, pw_ok, 0, 0, 0, ""};
            push_bcmd(&c);
        }
        pthread_mutex_unlock(&g_lock);
    }
    if (!logged) log_send_order(r, (long long)res, pw_ok);
    return res == NL_OK ? id : (int64_t)res;
}

/* The order a change/cancel names, checked against the account. g_lock held. */
static int32_t named_order(const TConnectorAccountIdentifier *acc_id, const TConnectorOrderIdentifier *oid,
                           BOrder **out) {
    int acc = find_account(acc_id);
    if (acc < 0) return NL_INVALID_ARGS;
    if (oid->LocalOrderID <= 0 && (!oid->ClOrderID || !oid->ClOrderID[0])) return NL_INVALID_ARGS;
    BOrder *o = find_order(oid->LocalOrderID, oid->ClOrderID);
    if (!o) return NL_NOT_FOUND;
    if (o->acc != acc) return NL_INVALID_ARGS;
    *out = o;
    return NL_OK;
}

static void log_change_order(const TConnectorChangeOrder *r, int32_t res, int64_t id, int64_t msg, int pw_ok) {
    if (!LOGGING) return;
    lb_reset("change_order");
    lb_add("\tresult=%d\tlocal_id=%lld", res, (long long)id);
    log_account_id(r ? &r->AccountID : NULL);
    if (r) {
        lb_add("\torder_local_id=%lld", (long long)r->OrderID.LocalOrderID);
        lb_wstr("order_cl_ord_id", r->OrderID.ClOrderID);
        lb_add("\tprice=%.17g\tstop=%.17g\tqty=%lld\tversion=%d", r->Price, r->StopPrice, (long long)r->Quantity,
               r->Version);
    }
    lb_add("\tmessage_id=%lld\tpw_ok=%d", (long long)msg, pw_ok);
    lb_flush();
}

EXPORT int32_t SendChangeOrderV2(TConnectorChangeOrder *r) {
    int32_t res = routing_check();
    int logged = 0;
    int pw_ok = 0;
    int64_t id = 0, msg = 0;
    if (res == NL_OK && !r) res = NL_INVALID_ARGS;
    if (res == NL_OK && r->Version > 1) res = NL_VERSION_NOT_SUPPORTED;
    if (res == NL_OK && (r->Quantity <= 0 || !(r->Price > 0))) res = NL_INVALID_ARGS;
    if (res == NL_OK && (!r->Password || !r->Password[0])) res = NL_NO_PASSWORD;
    if (res == NL_OK) {
        pw_ok = password_ok(r->Password);
        pthread_mutex_lock(&g_lock);
        BOrder *o = NULL;
        res = named_order(&r->AccountID, &r->OrderID, &o);
        if (res == NL_OK && !bcmd_room()) res = NL_WAITING_SERVER;
        if (res == NL_OK) {
            id = o->local_id;
            msg = g_next_msg++;
            journal_ids();
            if (r->Version >= 1) r->MessageID = msg;
            log_change_order(r, res, id, msg, pw_ok);
            logged = 1;
            BCmd c = {BC_CHANGE, id, msg, o->acc, pw_ok, r->Price, r->StopPrice, r->Quantity, ""};
            push_bcmd(&c);
        }
        pthread_mutex_unlock(&g_lock);
    }
    if (!logged) log_change_order(r, res, id, msg, pw_ok);
    return res;
}

static void log_cancel_order(const TConnectorCancelOrder *r, int32_t res, int64_t id, int64_t msg, int pw_ok) {
    if (!LOGGING) return;
    lb_reset("cancel_order");
    lb_add("\tresult=%d\tlocal_id=%lld", res, (long long)id);
    log_account_id(r ? &r->AccountID : NULL);
    if (r) {
        lb_add("\torder_local_id=%lld", (long long)r->OrderID.LocalOrderID);
        lb_wstr("order_cl_ord_id", r->OrderID.ClOrderID);
        lb_add("\tversion=%d", r->Version);
    }
    lb_add("\tmessage_id=%lld\tpw_ok=%d", (long long)msg, pw_ok);
    lb_flush();
}

EXPORT int32_t SendCancelOrderV2(TConnectorCancelOrder *r) {
    int32_t res = routing_check();
    int logged = 0;
    int pw_ok = 0;
    int64_t id = 0, msg = 0;
    if (res == NL_OK && !r) res = NL_INVALID_ARGS;
    if (res == NL_OK && r->Version > 1) res = NL_VERSION_NOT_SUPPORTED;
    if (res == NL_OK && (!r->Password || !r->Password[0])) res = NL_NO_PASSWORD;
    if (res == NL_OK) {
        pw_ok = password_ok(r->Password);
        pthread_mutex_lock(&g_lock);
        BOrder *o = NULL;
        res = named_order(&r->AccountID, &r->OrderID, &o);
        if (res == NL_OK && !bcmd_room()) res = NL_WAITING_SERVER;
        if (res == NL_OK) {
            id = o->local_id;
            msg = g_next_msg++;
            journal_ids();
            if (r->Version >= 1) r->MessageID = msg;
            log_cancel_order(r, res, id, msg, pw_ok);
            logged = 1;
            BCmd c = {BC_CANCEL, id, msg, o->acc, pw_ok, 0, 0, 0, ""};
            push_bcmd(&c);
        }
        pthread_mutex_unlock(&g_lock);
    }
    if (!logged) log_cancel_order(r, res, id, msg, pw_ok);
    return res;
}

static void log_cancel_all(const TConnectorCancelAllOrders *r, int32_t res, int pw_ok) {
    if (!LOGGING) return;
    lb_reset("cancel_all");
    lb_add("\tresult=%d", res);
    log_account_id(r ? &r->AccountID : NULL);
    lb_add("\tversion=%d\tpw_ok=%d", r ? r->Version : -1, pw_ok);
    lb_flush();
}

EXPORT int32_t SendCancelAllOrdersV2(TConnectorCancelAllOrders *r) {
    int32_t res = routing_check();
    int logged = 0;
    int pw_ok = 0, acc = -1;
    if (res == NL_OK && !r) res = NL_INVALID_ARGS;
    if (res == NL_OK && r->Version > 0) res = NL_VERSION_NOT_SUPPORTED;
    if (res == NL_OK && (acc = find_account(&r->AccountID)) < 0) res = NL_INVALID_ARGS;
    if (res == NL_OK && (!r->Password || !r->Password[0])) res = NL_NO_PASSWORD;
    if (res == NL_OK) {
        pw_ok = password_ok(r->Password);
        pthread_mutex_lock(&g_lock);
        /* A wrong password refuses the request as a whole: one trading message result, no order
         * touched (sent from the native thread, like every callback). */
        BCmd c = {pw_ok ? BC_CANCEL_ALL : BC_REFUSE_ALL, 0, 0, acc, pw_ok, 0, 0, 0, ""};
        if (!bcmd_room()) {
            res = NL_WAITING_SERVER;
        } else {
            log_cancel_all(r, res, pw_ok);
            logged = 1;
            push_bcmd(&c);
        }
        pthread_mutex_unlock(&g_lock);
    }
    if (!logged) log_cancel_all(r, res, pw_ok);
    return res;
}

static void log_zero_position(const TConnectorZeroPosition *r, long long result, int64_t qty, int64_t msg, int pw_ok) {
    if (!LOGGING) return;
    lb_reset("zero_position");
    lb_add("\tresult=%lld", result);
    log_account_id(r ? &r->AccountID : NULL);
    if (r) {
        lb_wstr("ticker", r->AssetID.Ticker);
        lb_wstr("exch", r->AssetID.Exchange);
        lb_add("\tprice=%.17g\tposition_type=%d\tversion=%d", r->Price, r->Version >= 1 ? r->PositionType : -1,
               r->Version);
    }
    lb_add("\tqty=%lld\tmessage_id=%lld\tpw_ok=%d", (long long)qty, (long long)msg, pw_ok);
    lb_flush();
}

EXPORT int64_t SendZeroPositionV2(TConnectorZeroPosition *r) {
    int32_t res = routing_check();
    int logged = 0;
    char ticker[NAME_W] = "-", exch[8] = "-";
    int acc = -1, pw_ok = 0, ptype = 1;
    int64_t id = 0, msg = 0, qty = 0;
    if (res == NL_OK && !r) res = NL_INVALID_ARGS;
    if (res == NL_OK && r->Version > 2) res = NL_VERSION_NOT_SUPPORTED;
    if (res == NL_OK && (acc = find_account(&r->AccountID)) < 0) res = NL_INVALID_ARGS;
    if (res == NL_OK) res = asset_check(&r->AssetID, ticker, exch);
    if (res == NL_OK && r->Version >= 1) {
        ptype = r->PositionType;
        if (ptype != 1 && ptype != 2) res = NL_INVALID_ARGS;
    }
    if (res == NL_OK && !(r->Price == -1.0 || r->Price > 0)) res = NL_INVALID_ARGS;
    if (res == NL_OK && (!r->Password || !r->Password[0])) res = NL_NO_PASSWORD;
    if (res == NL_OK) {
        pw_ok = password_ok(r->Password);
        pthread_mutex_lock(&g_lock);
        BPos *p = find_pos(acc, ticker, exch, 0);
        if (!p || p->qty == 0) {
            res = NL_NO_POSITION; /* flat: nothing to zero (the 4.0.0.24 code; FIN saw NL_INVALID_ARGS before) */
        } else {
            qty = p->qty > 0 ? p->qty : -p->qty;
            int type = r->Price == -1.0 ? TYPE_MARKET : TYPE_LIMIT;
            msg = r->Version >= 2 ? g_next_msg++ : 0;
            BOrder *o = bcmd_room() ? create_order(acc, ticker, exch, p->qty > 0 ? SIDE_SELL : SIDE_BUY, type, qty,
                                                   r->Price, -1.0, pw_ok, msg) : NULL;
            if (!o) {
                res = NL_WAITING_SERVER;
            } else {
                id = o->local_id;
                if (r->Version >= 2) r->MessageID = msg;
                log_zero_position(r, (long long)id, qty, msg, pw_ok);
                logged = 1;
                BCmd c = {BC_NEW, id, 0, acc, pw_ok, 0, 0, 0, ""};
                push_bcmd(&c);
            }
        }
        pthread_mutex_unlock(&g_lock);
    }
    if (!logged) log_zero_position(r, (long long)res, qty, msg, pw_ok);
    return res == NL_OK ? id : (int64_t)res;
}

EXPORT int32_t GetAccountCount(void) {
    int32_t r = routing_check();
    if (r != NL_OK) return r;
    int n = 0;
    for (int i = 0; i < g_nacc; i++) n += g_acc[i].sub[0] == 0;
    return n;
}
/* Masters (sub == NULL) or the subs of one master, in configuration order, into Out records. */
static int32_t fill_accounts(int master, int start_src, int start_dst, int count, TConnectorAccountIdentifierOut *arr) {
    if (!arr || start_src < 0 || start_dst < 0 || count < 0) return NL_INVALID_ARGS;
    int k = 0, seen = 0;
    for (int i = 0; i < g_nacc && k < count; i++) {
        int is_sub = g_acc[i].sub[0] != 0;
        if (master < 0 ? is_sub : (!is_sub || !same_master(i, master))) continue;
        if (seen++ < start_src) continue;
        TConnectorAccountIdentifierOut *o = &arr[start_dst + k++];
        if (o->Version != 0) return NL_VERSION_NOT_SUPPORTED;
        o->BrokerID = g_acc[i].broker;
        ascii_to_utf16(g_acc[i].account, o->AccountID, &o->AccountIDLength);
        ascii_to_utf16(g_acc[i].sub, o->SubAccountID, &o->SubAccountIDLength);
        o->Reserved = 0;
    }
    return k;
}
EXPORT int32_t GetAccounts(int32_t start_src, int32_t start_dst, int32_t count, TConnectorAccountIdentifierOut *arr) {
    int32_t r = routing_check();
    return r != NL_OK ? r : fill_accounts(-1, start_src, start_dst, count, arr);
}
EXPORT int32_t GetSubAccountCount(const TConnectorAccountIdentifier *master) {
    int32_t r = routing_check();
    if (r != NL_OK) return r;
    int m = find_account(master);
    if (m < 0 || g_acc[m].sub[0]) return NL_NOT_FOUND;
    int n = 0;
    for (int i = 0; i < g_nacc; i++) n += g_acc[i].sub[0] && same_master(i, m);
    return n;
}
EXPORT int32_t GetSubAccounts(const TConnectorAccountIdentifier *master, int32_t start_src, int32_t start_dst,
                              int32_t count, TConnectorAccountIdentifierOut *arr) {
    int32_t r = routing_check();
    if (r != NL_OK) return r;
    int m = find_account(master);
    if (m < 0 || g_acc[m].sub[0]) return NL_NOT_FOUND;
    return fill_accounts(m, start_src, start_dst, count, arr);
}
EXPORT int32_t GetAccountDetails(TConnectorTradingAccountOut *a) {
    int32_t r = routing_check();
    if (r != NL_OK) return r;
    if (!a) return NL_INVALID_ARGS;
    if (a->Version > 1) return NL_VERSION_NOT_SUPPORTED;
    int i = find_account(&a->AccountID);
    if (i < 0) return NL_NOT_FOUND;
    wchar_t sub_owner[ACC_W + 16] = L"";
    if (g_acc[i].sub[0]) {
        wchar_t w[ACC_W];
        to_wide(g_acc[i].sub, w, ACC_W);
        swprintf(sub_owner, ACC_W + 16, L"Subconta %ls", w);
    }
    out_wstr(a->BrokerName, &a->BrokerNameLength, L"Corretora Fake");
    out_wstr(a->OwnerName, &a->OwnerNameLength, L"Titular Simula\u00e7\u00e3o");
    out_wstr(a->SubOwnerName, &a->SubOwnerNameLength, sub_owner);
    a->AccountFlags = 2u /* CA_IS_ENABLED */ | (g_acc[i].sub[0] ? 1u /* CA_IS_SUB_ACCOUNT */ : 0u);
    if (a->Version >= 1) a->AccountType = g_acc[i].sub[0] ? 3 /* cutSubAccount */ : 0 /* cutOwner */;
    return NL_OK;
}

EXPORT int32_t GetPositionV2(TConnectorTradingAccountPosition *p) {
    int32_t r = routing_check();
    if (r != NL_OK) return r;
    if (!p) return NL_INVALID_ARGS;
    if (p->Version > 2) return NL_VERSION_NOT_SUPPORTED;
    if (p->Version >= 1 && p->PositionType != 1 && p->PositionType != 2) return NL_INVALID_ARGS;
    int acc = find_account(&p->AccountID);
    if (acc < 0) return NL_INVALID_ARGS;
    char ticker[NAME_W], exch[8];
    r = asset_check(&p->AssetID, ticker, exch);
    if (r != NL_OK) return r;
    pthread_mutex_lock(&g_lock);
    BPos *pos = find_pos(acc, ticker, exch, 0);
    if (!pos) { pthread_mutex_unlock(&g_lock); return NL_NO_POSITION; }
    BPos s = *pos;
    pthread_mutex_unlock(&g_lock);
    /* One book per account and asset: day trade and consolidated read the same numbers here. */
    p->OpenQuantity = s.qty < 0 ? -s.qty : s.qty;
    p->OpenSide = s.qty > 0 ? 1 : s.qty < 0 ? 2 : 0;
    p->OpenAveragePrice = s.avg;
    p->DailyAverageSellPrice = s.sell_avg;
    p->DailySellQuantity = s.sell_qty;
    p->DailyAverageBuyPrice = s.buy_avg;
    p->DailyBuyQuantity = s.buy_qty;
    p->DailyQuantityD1 = p->DailyQuantityD2 = p->DailyQuantityD3 = 0;
    p->DailyQuantityBlocked = p->DailyQuantityPending = p->DailyQuantityAlloc = p->DailyQuantityProvision = 0;
    p->DailyQuantity = s.buy_qty - s.sell_qty;
    p->DailyQuantityAvailable = p->OpenQuantity;
    if (p->Version >= 2) p->EventID = s.event_id;
    return NL_OK;
}

EXPORT int32_t GetOrderDetails(TConnectorOrderOut *out) {
    int32_t r = routing_check();
    if (r != NL_OK) return r;
    if (!out) return NL_INVALID_ARGS;
    if (out->Version > 1) return NL_VERSION_NOT_SUPPORTED;
    pthread_mutex_lock(&g_lock);
    BOrder *o = find_order(out->OrderID.LocalOrderID, out->OrderID.ClOrderID);
    if (!o) { pthread_mutex_unlock(&g_lock); return NL_NOT_FOUND; }
    BOrder s = *o;
    wchar_t *cl = o->cl_w;
    Account a = g_acc[s.acc];
    pthread_mutex_unlock(&g_lock);
    out->OrderID.LocalOrderID = s.local_id;
    if (!out->OrderID.ClOrderID) out->OrderID.ClOrderID = cl; /* the DLL's own, stable string */
    out->AccountID.BrokerID = a.broker;
    ascii_to_utf16(a.account, out->AccountID.AccountID, &out->AccountID.AccountIDLength);
    ascii_to_utf16(a.sub, out->AccountID.SubAccountID, &out->AccountID.SubAccountIDLength);
    out->AccountID.Reserved = 0;
    out_astr(out->AssetID.Ticker, &out->AssetID.TickerLength, s.ticker);
    out_astr(out->AssetID.Exchange, &out->AssetID.ExchangeLength, s.exch);
    out->AssetID.FeedType = 0;
    out->Quantity = s.qty;
    out->TradedQuantity = s.traded;
    out->LeavesQuantity = s.leaves;
    out->Price = s.price;
    out->StopPrice = s.stop;
    out->AveragePrice = s.avg;
    out->OrderSide = (uint8_t)s.side;
    out->OrderType = (uint8_t)s.type;
    out->OrderStatus = (uint8_t)s.status;
    out->ValidityType = (uint8_t)s.validity;
    systime_or_zero(s.date_ms, &out->Date);
    systime_or_zero(s.last_ms, &out->LastUpdate);
    systime_or_zero(s.close_ms, &out->CloseDate);
    memset(&out->ValidityDate, 0, sizeof out->ValidityDate);
    out_astr(out->TextMessage, &out->TextMessageLength, s.text);
    if (out->Version >= 1) out->EventID = s.event_id;
    return NL_OK;
}

EXPORT int32_t EnumerateAllOrders(const TConnectorAccountIdentifier *acc_id, uint8_t version, intptr_t param,
                                  TConnectorEnumerateOrdersProc proc) {
    int32_t r = routing_check();
    if (r != NL_OK) return r;
    if (!acc_id || !proc) return NL_INVALID_ARGS;
    if (version > 1) return NL_VERSION_NOT_SUPPORTED;
    int acc = find_account(acc_id);
    if (acc < 0) return NL_OK; /* the manual: success even when nothing is loaded for the account */
    int master = g_acc[acc].sub[0] == 0;
    pthread_mutex_lock(&g_lock);
    int64_t end = g_next_id;
    pthread_mutex_unlock(&g_lock);
    for (int64_t id = ID_BASE; id < end; id++) {
        /* One order at a time, copied under g_lock and handed over without it (the proc is the
         * caller's code: it may need the GIL, which our native thread may hold). */
        BOrder s;
        pthread_mutex_lock(&g_lock);
        BOrder *o = order_slot(id, 0);
        int take = o && (master ? same_master(o->acc, acc) : o->acc == acc);
        wchar_t *cl = take ? o->cl_w : NULL;
        if (take) s = *o;
        pthread_mutex_unlock(&g_lock);
        if (!take) continue;
        const Account *a = &g_acc[s.acc];
        wchar_t account[ACC_W], sub[ACC_W], ticker[NAME_W], exch[8], text[TEXT_W + 8];
        to_wide(a->account, account, ACC_W);
        to_wide(a->sub, sub, ACC_W);
        to_wide(s.ticker, ticker, NAME_W);
        to_wide(s.exch, exch, 8);
        to_wide(s.text, text, TEXT_W + 8);
        TConnectorOrder rec;
        memset(&rec, 0, sizeof rec);
        rec.Version = version;
        rec.OrderID.LocalOrderID = s.local_id;
        rec.OrderID.ClOrderID = cl;
        rec.AccountID.BrokerID = a->broker;
        rec.AccountID.AccountID = account;
        rec.AccountID.SubAccountID = a->sub[0] ? sub : NULL;
        rec.AssetID.Ticker = ticker;
        rec.AssetID.Exchange = exch;
        rec.Quantity = s.qty;
        rec.TradedQuantity = s.traded;
        rec.LeavesQuantity = s.leaves;
        rec.Price = s.price;
        rec.StopPrice = s.stop;
        rec.AveragePrice = s.avg;
        rec.OrderSide = (uint8_t)s.side;
        rec.OrderType = (uint8_t)s.type;
        rec.OrderStatus = (uint8_t)s.status;
        rec.ValidityType = (uint8_t)s.validity;
        systime_or_zero(s.date_ms, &rec.Date);
        systime_or_zero(s.last_ms, &rec.LastUpdate);
        systime_or_zero(s.close_ms, &rec.CloseDate);
        rec.TextMessage = text;
        if (version >= 1) rec.EventID = s.event_id;
        if (!proc(&rec, param)) break;
    }
    return NL_OK;
}

/* ---- debug exports of the broker (tests only) ------------------------------------------- */
EXPORT int32_t FakeBrokerSetBook(const char *ticker, double bid, int64_t bidq, double ask, int64_t askq) {
    if (!g_initialized) return NL_NOT_INITIALIZED;
    if (!ticker || !ticker[0] || strlen(ticker) >= NAME_W) return NL_INVALID_ARGS;
    pthread_mutex_lock(&g_lock);
    BBook *b = find_book(ticker, 1);
    int ok = b != NULL && bcmd_room();
    if (ok) {
        set_book(b, bid, bidq, ask, askq);
        if (LOGGING) {
            lb_reset("set_book");
            lb_add("\tticker=%s\tbid=%.17g\tbidq=%lld\task=%.17g\taskq=%lld", ticker, bid, (long long)bidq, ask,
                   (long long)askq);
            lb_flush();
        }
        BCmd c = {BC_MATCH_TICKER, 0, 0, -1, 1, 0, 0, 0, ""};
        snprintf(c.ticker, NAME_W, "%s", ticker);
        push_bcmd(&c);
    }
    pthread_mutex_unlock(&g_lock);
    return ok ? NL_OK : NL_INTERNAL_ERROR;
}
EXPORT int32_t FakeBrokerSetMarket(int32_t open) {
    bcfg.market_closed = !open;
    return NL_OK;
}
/* 1 when the broker has nothing left to do: no command queued, no delayed match, no recovery. */
EXPORT int32_t FakeBrokerIdle(void) {
    pthread_mutex_lock(&g_lock);
    int idle = g_bcmd_n == 0 && g_ndue == 0 && !g_recover_pending && !g_broker_busy;
    pthread_mutex_unlock(&g_lock);
    return idle;
}
EXPORT int64_t FakeBrokerOrderCount(void) {
    pthread_mutex_lock(&g_lock);
    int64_t n = 0;
    for (int64_t id = ID_BASE; id < g_next_id; id++) n += order_slot(id, 0) != NULL;
    pthread_mutex_unlock(&g_lock);
    return n;
}

/* ---- the native thread --------------------------------------------------------------------- */
static Ticker *pick_ticker(void) {
    Ticker *found = NULL;
    pthread_mutex_lock(&g_lock);
    for (int k = 0; k < MAX_TICKERS; k++) {
        Ticker *tk = &g_tk[(g_rr + k) % MAX_TICKERS];
        if (tk->used && (tk->sub_ticker || tk->sub_book || tk->sub_depth) && (cfg.events <= 0 || tk->sent < cfg.events)) {
            found = tk;
            g_rr = (g_rr + k + 1) % MAX_TICKERS;
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return found;
}

static void market_step(Ticker *tk) {
    tk->t_ms += rnd(&tk->rng, 3);
    int want_book = tk->sub_book || tk->sub_depth, want_trades = tk->sub_ticker;
    if (want_book && !tk->book_synced) {
        full_book(tk, 0);
        tk->book_synced = 1;
    } else {
        double r = rnd01(&tk->rng);
        if (want_trades && want_book) {
            if (r < 0.40) new_trade(tk);
            else if (r < 0.43) edit_trade(tk);
            else if (r < 0.45) send_daily(tk);
            else if (r < 0.47) full_book(tk, 1);
            else book_update(tk);
        } else if (want_trades) {
            if (r < 0.90) new_trade(tk);
            else if (r < 0.95) edit_trade(tk);
            else send_daily(tk);
        } else {
            if (r < 0.03) full_book(tk, 1);
            else book_update(tk);
        }
    }
    tk->sent++;
    g_market_sent++;
    if (cfg.degrade_after > 0 && g_market_sent == cfg.degrade_after) send_state(2, 6);
    if (cfg.degrade_after > 0 && g_market_sent == cfg.degrade_after + cfg.degrade_events) send_state(2, 4);
    if (cfg.crash_after > 0 && g_market_sent >= cfg.crash_after) crash_now("crash_after");
}

static void *thread_main(void *arg) {
    (void)arg;
    g_native_tid = (long)syscall(SYS_gettid);
    uint64_t rng = cfg.seed ^ 0x5EEDC0FFEEULL;
    initial_states(&rng);
    pthread_mutex_lock(&g_lock);
    g_states_done_t = now_s();
    pthread_mutex_unlock(&g_lock);
    int market_ok = !g_login_failed && cfg.login != LOGIN_NOMARKET;
    double t0 = -1;
    long long paced = 0;
    while (!g_stop) {
        int did = process_commands();
        did |= history_step();
        if (g_routing && !g_login_failed) did |= broker_step();
        Ticker *tk = market_ok ? pick_ticker() : NULL;
        if (!tk) {
            t0 = -1; /* re-anchor the pacing when the stream resumes */
            if (!did) idle_wait(0.005);
            continue;
        }
        if (cfg.rate > 0) {
            double now = now_s();
            if (t0 < 0) { t0 = now; paced = 0; }
            double due = t0 + (double)paced / cfg.rate;
            if (now < due) {
                if (did) continue; /* keep serving history/commands while waiting */
                wait_until(due);
                if (g_stop) break;
            }
            paced++;
        }
        market_step(tk);
    }
    /* DLLFinalize: the connection ends; login result 1 here means "ending", not a bad user. */
    send_state(2, 0);
    send_state(1, 0);
    send_state(0, 1);
    return NULL;
}

/* ---- configuration ----------------------------------------------------------------------- */
static void read_config(void) {
    const char *v;
    cfg.rate = strtod(env_str("FAKE_PROFITDLL_RATE", "5000"), NULL);
    cfg.events = env_ll("FAKE_PROFITDLL_EVENTS", 0);
    cfg.seed = (uint64_t)env_ll("FAKE_PROFITDLL_SEED", 1);
    cfg.crash_after = env_ll("FAKE_PROFITDLL_CRASH_AFTER", 0);
    v = env_str("FAKE_PROFITDLL_LOGIN", "valid");
    cfg.login = !strcmp(v, "invalid") ? LOGIN_INVALID : !strcmp(v, "badpass") ? LOGIN_BADPASS
              : !strcmp(v, "blocked") ? LOGIN_BLOCKED : !strcmp(v, "expired") ? LOGIN_EXPIRED
              : !strcmp(v, "unknown") ? LOGIN_UNKNOWN : !strcmp(v, "inactive") ? LOGIN_INACTIVE
              : !strcmp(v, "nomarket") ? LOGIN_NOMARKET : !strcmp(v, "norouting") ? LOGIN_NOROUTING : LOGIN_VALID;
    cfg.log_fd = -1;
    v = getenv("FAKE_PROFITDLL_SENT_LOG");
    if (v && *v) cfg.log_fd = open(v, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    cfg.log_depth = (int)env_ll("FAKE_PROFITDLL_LOG_DEPTH", 10);
    if (cfg.log_depth < 1) cfg.log_depth = 1;
    if (cfg.log_depth > MAX_ORDERS) cfg.log_depth = MAX_ORDERS;
    cfg.degrade_after = env_ll("FAKE_PROFITDLL_DEGRADE_AFTER", 0);
    cfg.degrade_events = env_ll("FAKE_PROFITDLL_DEGRADE_EVENTS", 10);
    cfg.routing_final = (int)env_ll("FAKE_PROFITDLL_ROUTING_FINAL", 5);
    cfg.state_delay_us = (int)env_ll("FAKE_PROFITDLL_STATE_DELAY_US", 200);
    snprintf(cfg.valid, sizeof cfg.valid, "%s", env_str("FAKE_PROFITDLL_VALID_TICKERS", ""));
    snprintf(cfg.invalid, sizeof cfg.invalid, "%s", env_str("FAKE_PROFITDLL_INVALID_TICKERS", ""));
    cfg.hist_trades = (int)env_ll("FAKE_PROFITDLL_HISTORY_TRADES", 200);
    if (cfg.hist_trades < 0) cfg.hist_trades = 0;
    cfg.hist_stall = (int)env_ll("FAKE_PROFITDLL_HISTORY_STALL", 0);
    time_t now = time(NULL);
    struct tm lt;
    localtime_r(&now, &lt);
    cfg.today_y = lt.tm_year + 1900; cfg.today_m = lt.tm_mon + 1; cfg.today_d = lt.tm_mday;
    v = getenv("FAKE_PROFITDLL_TODAY");
    if (v && *v) sscanf(v, "%d-%d-%d", &cfg.today_y, &cfg.today_m, &cfg.today_d);
    int hh = 9, mi = 0, ss = 0;
    cfg.start_y = 2025; cfg.start_m = 8; cfg.start_d = 4;
    v = getenv("FAKE_PROFITDLL_START");
    if (v && *v) sscanf(v, "%d-%d-%d %d:%d:%d", &cfg.start_y, &cfg.start_m, &cfg.start_d, &hh, &mi, &ss);
    cfg.start_ms = ((hh * 60LL + mi) * 60 + ss) * 1000;
    broker_read_config();
}

/* Wrong expected credentials -> the state the real server would answer. Never logged. */
static void check_credentials(const wchar_t *key, const wchar_t *user, const wchar_t *pass) {
    static const char *names[3] = {"FAKE_PROFITDLL_EXPECT_KEY", "FAKE_PROFITDLL_EXPECT_USER",
                                   "FAKE_PROFITDLL_EXPECT_PASSWORD"};
    const wchar_t *given[3] = {key, user, pass};
    static const int type[3] = {3, 0, 0}, result[3] = {1, 1, 2};
    wchar_t want[512];
    g_cred_result_type = -1;
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(names[i]);
        if (!v) continue;
        utf8_to_wide(v, want, 512);
        int ok = wcscmp(want, given[i]) == 0;
        memset(want, 0, sizeof want);
        if (!ok && g_cred_result_type < 0) { g_cred_result_type = type[i]; g_cred_result = result[i]; }
    }
}

/* ---- exports: initialization ------------------------------------------------------------- */
static int32_t init_common(const wchar_t *key, const wchar_t *user, const wchar_t *pass, TStateCallback state,
                           TNewDailyCallback daily, TProgressCallback progress, int routing) {
    if (g_init_used) return NL_INTERNAL_ERROR; /* one init per process, even after DLLFinalize */
    if (!key || !user || !pass || !state) return NL_INVALID_ARGS;
    if (!user[0]) return NL_NO_USER;
    if (!pass[0]) return NL_NO_PASSWORD;
    g_init_used = 1;
    read_config();
    check_credentials(key, user, pass);
    g_routing = routing;
    if (routing) {
        broker_load_state();
        if (LOGGING) {
            lb_reset("broker_load");
            lb_add("\torders=%lld\tpositions=%lld\tnext_id=%lld\trecover=%d", g_broker_loaded_orders,
                   g_broker_loaded_positions, (long long)g_next_id, g_recover_pending);
            lb_flush();
        }
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g_wake, &ca);
    pthread_condattr_destroy(&ca);
    STORE(cb_state, state);
    STORE(cb_daily, daily);
    STORE(cb_progress, progress);
    g_stop = 0;
    g_initialized = 1;
    if (pthread_create(&g_thread, NULL, thread_main, NULL) != 0) {
        g_initialized = 0;
        return NL_INTERNAL_ERROR;
    }
    g_thread_alive = 1;
    return NL_OK;
}

EXPORT int32_t DLLInitializeMarketLogin(const wchar_t *key, const wchar_t *user, const wchar_t *pass,
                                        TStateCallback state, void *new_trade, TNewDailyCallback new_daily,
                                        void *price_book, void *offer_book, void *history_trade,
                                        TProgressCallback progress, void *tiny_book) {
    (void)new_trade; (void)price_book; (void)offer_book; (void)history_trade; (void)tiny_book;
    return init_common(key, user, pass, state, new_daily, progress, 0);
}

EXPORT int32_t DLLInitializeLogin(const wchar_t *key, const wchar_t *user, const wchar_t *pass, TStateCallback state,
                                  void *history, void *order_change, void *account, void *new_trade,
                                  TNewDailyCallback new_daily, void *price_book, void *offer_book,
                                  void *history_trade, TProgressCallback progress, void *tiny_book) {
    (void)history; (void)order_change; (void)account; (void)new_trade; (void)price_book; (void)offer_book;
    (void)history_trade; (void)tiny_book;
    return init_common(key, user, pass, state, new_daily, progress, 1);
}

EXPORT int32_t DLLFinalize(void) {
    if (!g_initialized) return NL_NOT_INITIALIZED;
    if (g_thread_alive && pthread_equal(pthread_self(), g_thread)) return NL_INTERNAL_ERROR;
    pthread_mutex_lock(&g_lock);
    g_stop = 1;
    pthread_cond_broadcast(&g_wake);
    pthread_mutex_unlock(&g_lock);
    pthread_join(g_thread, NULL);
    g_thread_alive = 0;
    g_initialized = 0;
    STORE(cb_state, NULL); STORE(cb_daily, NULL); STORE(cb_progress, NULL); STORE(cb_trade, NULL);
    STORE(cb_htrade, NULL); STORE(cb_book, NULL); STORE(cb_invalid, NULL); STORE(cb_depth, NULL);
    STORE(cb_order, NULL); STORE(cb_msg, NULL);
    pthread_mutex_lock(&g_lock);
    if (g_journal_fd >= 0) { close(g_journal_fd); g_journal_fd = -1; } /* queued broker work stays PendingNew */
    pthread_mutex_unlock(&g_lock);
    if (cfg.log_fd >= 0) { close(cfg.log_fd); cfg.log_fd = -1; }
    return NL_OK;
}

/* ---- exports: callback setters ----------------------------------------------------------- */
#define SETTER(fn, type, var)                                  \
    EXPORT int32_t fn(type cb) {                               \
        if (!g_initialized) return NL_NOT_INITIALIZED;         \
        STORE(var, cb);                                        \
        return NL_OK;                                          \
    }
SETTER(SetStateCallback, TStateCallback, cb_state)
SETTER(SetTradeCallbackV2, TConnectorTradeCallback, cb_trade)
SETTER(SetHistoryTradeCallbackV2, TConnectorTradeCallback, cb_htrade)
SETTER(SetOfferBookCallbackV2, TOfferBookCallbackV2, cb_book)
SETTER(SetInvalidTickerCallback, TInvalidTickerCallback, cb_invalid)
SETTER(SetPriceDepthCallback, TPriceDepthCallback, cb_depth)
SETTER(SetDailyCallback, TNewDailyCallback, cb_daily)
SETTER(SetSerieProgressCallback, TProgressCallback, cb_progress)

/* ---- exports: subscriptions -------------------------------------------------------------- */
static int32_t check_ticker_args(const wchar_t *t, const wchar_t *e) {
    if (!g_initialized) return NL_NOT_INITIALIZED;
    if (!t || !e || !t[0]) return NL_INVALID_ARGS;
    if (!known_exchange(e)) return NL_EXCHANGE_UNKNOWN;
    if (g_login_failed) return NL_NO_LOGIN;
    return NL_OK;
}
enum { SUB_TICKER, SUB_BOOK, SUB_DEPTH };

static int32_t subscription(const wchar_t *t, const wchar_t *e, int what, int on) {
    int32_t r = check_ticker_args(t, e);
    if (r != NL_OK) return r;
    pthread_mutex_lock(&g_lock);
    if (on && what == SUB_TICKER && wcscmp(t, L"__CRASH__") == 0) {
        push_cmd(CMD_CRASH, t, e);
        pthread_mutex_unlock(&g_lock);
        return NL_OK;
    }
    Ticker *tk = find_ticker(t, e);
    if (!tk && on) {
        char a[NAME_W * 2], ea[8];
        to_ascii(t, a, sizeof a);
        to_ascii(e, ea, sizeof ea);
        if (wcslen(t) >= NAME_W || !ticker_valid(a, ea)) {
            push_cmd(CMD_INVALID, t, e);
            pthread_mutex_unlock(&g_lock);
            return NL_OK;
        }
        tk = add_ticker(t, e);
        if (!tk) { pthread_mutex_unlock(&g_lock); return NL_INTERNAL_ERROR; }
    }
    if (tk) {
        if (what == SUB_TICKER) tk->sub_ticker = on;
        if (what == SUB_BOOK) { tk->sub_book = on; if (on) tk->book_synced = 0; }
        if (what == SUB_DEPTH) tk->sub_depth = on;
    }
    pthread_cond_broadcast(&g_wake);
    pthread_mutex_unlock(&g_lock);
    return NL_OK;
}

EXPORT int32_t SubscribeTicker(const wchar_t *t, const wchar_t *e) { return subscription(t, e, SUB_TICKER, 1); }
EXPORT int32_t UnsubscribeTicker(const wchar_t *t, const wchar_t *e) { return subscription(t, e, SUB_TICKER, 0); }
EXPORT int32_t SubscribeOfferBook(const wchar_t *t, const wchar_t *e) { return subscription(t, e, SUB_BOOK, 1); }
EXPORT int32_t UnsubscribeOfferBook(const wchar_t *t, const wchar_t *e) { return subscription(t, e, SUB_BOOK, 0); }

static int32_t check_asset(const TConnectorAssetIdentifier *a) {
    if (!g_initialized) return NL_NOT_INITIALIZED;
    if (!a || !a->Ticker || !a->Exchange) return NL_INVALID_ARGS;
    if (a->Version != 0) return NL_VERSION_NOT_SUPPORTED;
    return NL_OK;
}
EXPORT int32_t SubscribePriceDepth(const TConnectorAssetIdentifier *a) {
    int32_t r = check_asset(a);
    return r != NL_OK ? r : subscription(a->Ticker, a->Exchange, SUB_DEPTH, 1);
}
EXPORT int32_t UnsubscribePriceDepth(const TConnectorAssetIdentifier *a) {
    int32_t r = check_asset(a);
    return r != NL_OK ? r : subscription(a->Ticker, a->Exchange, SUB_DEPTH, 0);
}

/* ---- exports: accessors (meant to be called inside callbacks) ------------------------------ */
EXPORT int32_t TranslateTrade(size_t p_trade, TConnectorTrade *out) {
    if (!g_initialized) return NL_NOT_INITIALIZED;
    if (!p_trade || !out) return NL_INVALID_ARGS;
    const TradeHandle *h = (const TradeHandle *)p_trade;
    if (__atomic_load_n(&h->magic, __ATOMIC_SEQ_CST) != TRADE_MAGIC) return NL_INVALID_ARGS;
    if (out->Version != 0) return NL_VERSION_NOT_SUPPORTED;
    systime_from_ms(h->rec.t_ms, &out->TradeDate);
    out->TradeNumber = h->rec.number;
    out->Price = h->rec.price;
    out->Quantity = h->rec.qty;
    out->Volume = h->rec.volume;
    out->BuyAgent = h->rec.buy;
    out->SellAgent = h->rec.sell;
    out->TradeType = h->rec.type;
    return NL_OK;
}

EXPORT int32_t FreePointer(void *p, int32_t size) {
    if (!p) return NL_INVALID_ARGS;
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < g_nallocs; i++) {
        if (g_allocs[i].p != p) continue;
        if ((size_t)size != g_allocs[i].size) g_bad_frees++;
        g_allocs[i] = g_allocs[--g_nallocs];
        pthread_mutex_unlock(&g_lock);
        free(p);
        return NL_OK;
    }
    g_bad_frees++;
    pthread_mutex_unlock(&g_lock);
    return NL_INVALID_ARGS;
}

static Ticker *depth_ticker(const TConnectorAssetIdentifier *a) { /* g_lock held */
    Ticker *tk = find_ticker(a->Ticker, a->Exchange);
    return tk && tk->sub_depth ? tk : NULL;
}
EXPORT int32_t GetPriceDepthSideCount(const TConnectorAssetIdentifier *a, uint8_t side) {
    int32_t r = check_asset(a);
    if (r != NL_OK) return r;
    if (side > 1) return NL_INVALID_ARGS;
    Level lv[MAX_ORDERS];
    pthread_mutex_lock(&g_lock);
    Ticker *tk = depth_ticker(a);
    int n = tk ? levels(side ? &tk->ask : &tk->bid, lv, MAX_ORDERS) : -1;
    pthread_mutex_unlock(&g_lock);
    return tk ? n : NL_NOT_FOUND;
}
EXPORT int32_t GetPriceGroup(const TConnectorAssetIdentifier *a, uint8_t side, int32_t pos, TConnectorPriceGroup *pg) {
    int32_t r = check_asset(a);
    if (r != NL_OK) return r;
    if (!pg || side > 1) return NL_INVALID_ARGS;
    if (pg->Version != 0) return NL_VERSION_NOT_SUPPORTED;
    Level lv[MAX_ORDERS];
    pthread_mutex_lock(&g_lock);
    Ticker *tk = depth_ticker(a);
    if (!tk) { pthread_mutex_unlock(&g_lock); return NL_NOT_FOUND; }
    int n = levels(side ? &tk->ask : &tk->bid, lv, MAX_ORDERS);
    double tick = tk->tick;
    pthread_mutex_unlock(&g_lock);
    if (pos < 0 || pos >= n) return NL_OUT_OF_RANGE;
    pg->Price = (double)lv[pos].px * tick;
    pg->Count = lv[pos].count;
    pg->Quantity = lv[pos].qty;
    pg->PriceGroupFlags = 0;
    return NL_OK;
}
EXPORT int32_t GetTheoreticalValues(const TConnectorAssetIdentifier *a, double *price, int64_t *qty) {
    int32_t r = check_asset(a);
    if (r != NL_OK) return r;
    if (!price || !qty) return NL_INVALID_ARGS;
    pthread_mutex_lock(&g_lock);
    Ticker *tk = find_ticker(a->Ticker, a->Exchange);
    if (tk) { *price = tk->have_trade ? tk->last_price : (double)tk->center * tk->tick; *qty = tk->last_auction_qty; }
    pthread_mutex_unlock(&g_lock);
    return tk ? NL_OK : NL_NOT_FOUND;
}

/* ---- exports: history ---------------------------------------------------------------------- */
EXPORT int32_t GetHistoryTrades(const wchar_t *t, const wchar_t *e, const wchar_t *start, const wchar_t *end) {
    int32_t r = check_ticker_args(t, e);
    if (r != NL_OK) return r;
    long long s_ms = parse_request_date(start), e_ms = parse_request_date(end);
    if (s_ms < 0 || e_ms < 0 || e_ms < s_ms) return NL_INVALID_ARGS;
    char a[NAME_W * 2], ea[8];
    to_ascii(t, a, sizeof a);
    to_ascii(e, ea, sizeof ea);
    if (is_future_root(a) && e_ms - s_ms >= 10 * MS_PER_DAY) return NL_INVALID_ARGS;
    if (s_ms / MS_PER_DAY < days_from_civil(cfg.today_y, cfg.today_m, cfg.today_d) - 30) return NL_HISTORY_PERIOD_LIMIT;
    pthread_mutex_lock(&g_lock);
    if (wcslen(t) >= NAME_W || !ticker_valid(a, ea)) {
        push_cmd(CMD_INVALID, t, e);
        pthread_mutex_unlock(&g_lock);
        return NL_OK;
    }
    if (g_job_n == 16) { pthread_mutex_unlock(&g_lock); return NLC(0x04); /* NL_WAITING_SERVER */ }
    Job *j = &g_jobs[(g_job_head + g_job_n) % 16];
    memset(j, 0, sizeof *j);
    wcsncpy(j->name, t, NAME_W - 1);
    wcsncpy(j->exch, e, 7);
    j->day = s_ms / MS_PER_DAY;
    j->count = cfg.hist_trades;
    j->rng = cfg.seed ^ fnv1a(a) ^ (uint64_t)j->day;
    j->tick = strncmp(a, "WDO", 3) == 0 ? 0.5 : strncmp(a, "WIN", 3) == 0 ? 5.0 : 0.01;
    j->mult = strncmp(a, "WDO", 3) == 0 ? 10.0 : strncmp(a, "WIN", 3) == 0 ? 0.2 : 1.0;
    g_job_n++;
    pthread_cond_broadcast(&g_wake);
    pthread_mutex_unlock(&g_lock);
    return NL_OK;
}

/* ---- debug exports (tests only; not in the real DLL) ------------------------------------- */
EXPORT int32_t FakeThreadAlive(void) { return g_thread_alive; }
EXPORT int64_t FakeOutstandingAllocations(void) {
    pthread_mutex_lock(&g_lock);
    int64_t n = (int64_t)g_nallocs;
    pthread_mutex_unlock(&g_lock);
    return n;
}
EXPORT int64_t FakeBadFrees(void) { return g_bad_frees; }
EXPORT int64_t FakeEventsSent(void) { return g_callbacks; }
EXPORT int64_t FakeMarketEventsSent(void) { return g_market_sent; }
EXPORT int64_t FakeUndelivered(void) { return g_undelivered; }
EXPORT int64_t FakeNativeThreadId(void) { return g_native_tid; }
