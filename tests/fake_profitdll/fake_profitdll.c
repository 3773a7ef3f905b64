/*
 * fake_profitdll.c - a native stand-in for Nelogica's ProfitDLL 4.0 (market data part), for tests.
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
 *   crash     reason
 *   Doubles are printed with %.17g (round-trip exact). Dates of book/daily lines are the exact
 *   wide string sent ("" for an empty string, "-" for NULL).
 *
 * Debug exports (not in the real DLL): FakeThreadAlive(), FakeOutstandingAllocations(),
 * FakeBadFrees(), FakeEventsSent(), FakeMarketEventsSent(), FakeNativeThreadId(),
 * FakeUndelivered().
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

static void lb_reset(const char *kind) {
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
    if (cfg.log_fd < 0) return;
    g_line[g_len++] = '\n';
    size_t off = 0;
    while (off < g_len) {
        ssize_t w = write(cfg.log_fd, g_line + off, g_len - off);
        if (w < 0) { if (errno == EINTR) continue; break; }
        off += (size_t)w;
    }
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
    while (!g_stop && now_s() < t) {
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
    int market_ok = !g_login_failed && cfg.login != LOGIN_NOMARKET;
    double t0 = -1;
    long long paced = 0;
    while (!g_stop) {
        int did = process_commands();
        did |= history_step();
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
                           TNewDailyCallback daily, TProgressCallback progress) {
    if (g_init_used) return NL_INTERNAL_ERROR; /* one init per process, even after DLLFinalize */
    if (!key || !user || !pass || !state) return NL_INVALID_ARGS;
    if (!user[0]) return NL_NO_USER;
    if (!pass[0]) return NL_NO_PASSWORD;
    g_init_used = 1;
    read_config();
    check_credentials(key, user, pass);
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
    return init_common(key, user, pass, state, new_daily, progress);
}

EXPORT int32_t DLLInitializeLogin(const wchar_t *key, const wchar_t *user, const wchar_t *pass, TStateCallback state,
                                  void *history, void *order_change, void *account, void *new_trade,
                                  TNewDailyCallback new_daily, void *price_book, void *offer_book,
                                  void *history_trade, TProgressCallback progress, void *tiny_book) {
    (void)history; (void)order_change; (void)account; (void)new_trade; (void)price_book; (void)offer_book;
    (void)history_trade; (void)tiny_book;
    return init_common(key, user, pass, state, new_daily, progress);
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
