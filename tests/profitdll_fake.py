"""Build and drive the native fake ProfitDLL (tests/fake_profitdll/fake_profitdll.c) for tests.

- :func:`build_fake_dll` compiles the C source with the system compiler
  (``cc -shared -fPIC -pthread -O2``) into ``dest_dir``, cached by the source's hash, and
  returns the ``.so`` path. It raises :class:`FakeDLLUnavailable` when there is no compiler or
  the platform is not Linux; :func:`fake_dll_or_skip` turns that into ``pytest.skip``.
- :func:`fresh_copy` copies the built library to a new file: the dynamic loader gives every
  distinct file its own globals, so each copy behaves like a new process's DLL (the real DLL, and
  the fake, accept one init per process).
- :func:`read_sent_log` parses the fake's ``FAKE_PROFITDLL_SENT_LOG`` (one ``key=value``
  tab-separated line per callback; format in the C file's header).
- :class:`FakeDebug` reads the fake's debug exports (thread alive, outstanding FullBook
  allocations...) and drives its broker (``set_book``, ``set_market``, ``broker_idle``).
- :func:`read_broker_state` parses the broker's state file (``FAKE_PROFITDLL_BROKER_STATE``:
  one record per line, the last record of an order or position wins).
- :data:`CREDENTIALS` are the login values the graph tests give the fake and then search for;
  :data:`ROUTING_PASSWORD` the fake's default routing password (searched for the same way).

All behaviour switches are ``FAKE_PROFITDLL_*`` environment variables read at init (see the C
file's header); :data:`ENV_PREFIX` and :func:`fake_env` help build them.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

# Login values for the fake, distinctive on purpose: any occurrence in a log file, a Ray session
# dir or Valkey is a leak, not a coincidence.
CREDENTIALS = {"PROFIT_KEY": "key-Ω-4821-activation", "PROFIT_USER": "user-Ω-5530",
               "PROFIT_PASSWORD": "pw-Ω-7319"}
# The fake broker's routing password when FAKE_PROFITDLL_ROUTING_PASSWORD is not set.
ROUTING_PASSWORD = "route-Ω-2207"

SOURCE = Path(__file__).resolve().parent / "fake_profitdll" / "fake_profitdll.c"
DEFAULT_BUILD_DIR = Path(__file__).resolve().parent / "_build" / "fake_profitdll"
CFLAGS = ("-shared", "-fPIC", "-pthread", "-O2")
ENV_PREFIX = "FAKE_PROFITDLL_"


class FakeDLLUnavailable(RuntimeError):
    """The fake cannot be built here (no C compiler, or not Linux)."""


def find_compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc and shutil.which(cc):
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def build_fake_dll(dest_dir: str | os.PathLike = DEFAULT_BUILD_DIR) -> Path:
    """Compile the fake into ``dest_dir`` (once per source version) and return the ``.so`` path."""
    if not sys.platform.startswith("linux"):
        raise FakeDLLUnavailable(f"the fake ProfitDLL is a Linux shared object; this is {sys.platform}")
    cc = find_compiler()
    if cc is None:
        raise FakeDLLUnavailable("no C compiler (cc, gcc or clang; or $CC) to build the fake ProfitDLL")
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(CFLAGS).encode()).hexdigest()[:16]
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"fake_profitdll-{digest}.so"
    if out.exists():
        return out
    tmp = dest / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    proc = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {SOURCE.name} failed ({cc}):\n{proc.stderr}")
    os.replace(tmp, out)  # atomic: concurrent builders all end with one complete file
    return out


def fake_dll_or_skip(dest_dir: str | os.PathLike = DEFAULT_BUILD_DIR) -> Path:
    """:func:`build_fake_dll`, or ``pytest.skip`` with the reason when it cannot be built here."""
    try:
        return build_fake_dll(dest_dir)
    except FakeDLLUnavailable as e:
        import pytest

        pytest.skip(str(e))


def fresh_copy(built: str | os.PathLike, dest_dir: str | os.PathLike, name: str | None = None) -> Path:
    """A new file with the fake's code: a fresh DLL instance (own globals, one init) when loaded."""
    dest = Path(dest_dir) / (name or f"ProfitDLL-{uuid.uuid4().hex[:12]}.so")
    shutil.copyfile(built, dest)
    return dest


def fake_env(**settings) -> dict[str, str]:
    """``fake_env(rate=0, events=100)`` -> ``{"FAKE_PROFITDLL_RATE": "0", "FAKE_PROFITDLL_EVENTS": "100"}``."""
    return {ENV_PREFIX + key.upper(): str(value) for key, value in settings.items()}


def read_sent_log(path: str | os.PathLike) -> list[dict[str, str]]:
    """The fake's sent log as dicts (values are strings; ``n`` and ``kind`` always present)."""
    rows = []
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            rows.append(dict(field.split("=", 1) for field in line.split("\t")))
    return rows


class FakeDebug:
    """The fake's debug exports, on an already loaded library (``ProfitDLL.lib``) or a path."""

    def __init__(self, lib_or_path):
        lib = ctypes.CDLL(str(lib_or_path)) if isinstance(lib_or_path, (str, os.PathLike)) else lib_or_path
        self.lib = lib
        lib.FakeThreadAlive.restype = ctypes.c_int32
        for name in ("FakeOutstandingAllocations", "FakeBadFrees", "FakeEventsSent", "FakeMarketEventsSent",
                     "FakeUndelivered", "FakeNativeThreadId", "FakeBrokerOrderCount"):
            getattr(lib, name).restype = ctypes.c_int64
        lib.FakeBrokerSetBook.restype = ctypes.c_int32
        lib.FakeBrokerSetBook.argtypes = [ctypes.c_char_p, ctypes.c_double, ctypes.c_int64, ctypes.c_double,
                                          ctypes.c_int64]
        lib.FakeBrokerSetMarket.restype = ctypes.c_int32
        lib.FakeBrokerSetMarket.argtypes = [ctypes.c_int32]
        lib.FakeBrokerIdle.restype = ctypes.c_int32

    def thread_alive(self) -> bool:
        return bool(self.lib.FakeThreadAlive())

    def outstanding_allocations(self) -> int:
        return self.lib.FakeOutstandingAllocations()

    def bad_frees(self) -> int:
        return self.lib.FakeBadFrees()

    def events_sent(self) -> int:
        return self.lib.FakeEventsSent()

    def market_events_sent(self) -> int:
        return self.lib.FakeMarketEventsSent()

    def undelivered(self) -> int:
        return self.lib.FakeUndelivered()

    def native_thread_id(self) -> int:
        return self.lib.FakeNativeThreadId()

    # -- the broker --------------------------------------------------------------------------

    def set_book(self, ticker: str, bid: float, bid_qty: int, ask: float, ask_qty: int) -> None:
        """Reset ``ticker``'s scripted book (5 levels a tick apart, each with the best's quantity);
        resting orders it crosses trade on the DLL's thread. 0 for a price or quantity = empty side."""
        result = self.lib.FakeBrokerSetBook(ticker.encode("ascii"), bid, bid_qty, ask, ask_qty)
        if result != 0:
            raise RuntimeError(f"FakeBrokerSetBook({ticker!r}) failed: {result}")

    def set_market(self, open_: bool) -> None:
        self.lib.FakeBrokerSetMarket(1 if open_ else 0)

    def broker_idle(self) -> bool:
        """True when the broker has no command, delayed match or recovery left to run."""
        return bool(self.lib.FakeBrokerIdle())

    def broker_order_count(self) -> int:
        return self.lib.FakeBrokerOrderCount()


def read_broker_state(path: str | os.PathLike) -> dict[str, dict]:
    """The fake broker's state file: ``{"orders": {local_id: record}, "positions": {(broker,
    account, sub, ticker, exch): record}}``, records as dicts of strings, the last line of each
    order / position winning (the file is a journal). A torn last line is ignored, as the fake does."""
    orders: dict[int, dict[str, str]] = {}
    positions: dict[tuple[str, ...], dict[str, str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                continue
            rec = dict(field.split("=", 1) for field in line.rstrip("\n").split("\t") if "=" in field)
            if rec.get("kind") == "order":
                orders[int(rec["local_id"])] = rec
            elif rec.get("kind") == "pos":
                positions[(rec["broker"], rec["account"], rec["sub"], rec["ticker"], rec["exch"])] = rec
    return {"orders": orders, "positions": positions}


# -- reference parsers of the sent log's fields (independent of the binding: zoneinfo + strptime) --

B3 = ZoneInfo("America/Sao_Paulo")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def ns_of(text: str) -> int:
    """'YYYY-MM-DD HH:MM:SS.mmm', B3 local time (a trade's SystemTime) -> ns UTC."""
    dt = datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=B3)
    return (dt - EPOCH) // timedelta(microseconds=1) * 1000


def ns_of_ddmm(text: str) -> int:
    """'DD/MM/YYYY HH:MM:SS[.mmm]', B3 local time (an offer's date) -> ns UTC."""
    fmt = "%d/%m/%Y %H:%M:%S.%f" if len(text) == 23 else "%d/%m/%Y %H:%M:%S"
    dt = datetime.strptime(text, fmt).replace(tzinfo=B3)
    return (dt - EPOCH) // timedelta(microseconds=1) * 1000


def levels_of(text: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """'px:qty,px:qty' (the fake's aggregated levels, best first) -> (prices, quantities)."""
    pairs = [p.split(":") for p in text.split(",") if p]
    return tuple(float(p) for p, _ in pairs), tuple(int(q) for _, q in pairs)
