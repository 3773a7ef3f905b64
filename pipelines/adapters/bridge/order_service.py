"""OrderService: the order side of the DLL host. Commands in on a ROUTER, order updates out on a PUB.

It runs in the DLL host process (``scripts/feed_bridge.py --routing``), on its own thread beside
the market-data :class:`~pipelines.adapters.bridge.server.BridgeServer`, and is the only code
that calls the DLL's routing functions (:class:`~pipelines.adapters.profitdll.routing.OrderRouting`).
Wire format: :mod:`pipelines.adapters.bridge.orders`.

**Order events.** The DLL's order callbacks enqueue ``RawOrder`` / ``RawTradingMessage`` on the
same queue as market data; the market-data session hands them here (``on_dll_event``, from the
bridge thread). Each becomes one update with the next seq of this incarnation: our coid (from the
journal: LocalOrderID or ClOrderID -> coid), our lifecycle status (``order_codes``, applied to the
order's previous status) beside the DLL's code, name and text, and the order's *cumulative*
``filled`` / ``avg_price``. Fills are not computed here: the consumer (the execution venue)
derives each fill from the difference between two updates of an order, so an update lost in a
restart or delivered twice never loses or doubles a fill. A ring keeps the last ``ring_updates``
updates for ``resync``; heartbeats carry the last seq so a lost final update shows as a gap.

**Journal** (:class:`Journal`): append-only JSON lines, one ``fsync`` per line, in a state
directory outside the repository. ``intent`` (cmd, coid, rid, arguments; never the password or
the token) is written *before* the DLL call, ``result`` (local id, message id, or the error code
and name) after it. Commands that create an order (``send``, ``zero``) are keyed by coid: a coid
is sent at most once, ever, and a send re-sent with it (a client retry after a time-out, or the
same decision after a restart of either side) is answered from the journal without calling the
DLL. ``change`` / ``cancel`` / ``cancel_all`` are keyed by the request id ``rid`` (the same bytes
re-sent carry the same rid): two different changes of one order are two calls. Orders are
named by the broker's ClOrderID (``clord`` lines) and by LocalOrderIDs, which are trusted within
one DLL session only (:class:`Journal`).

**Recovery** (:meth:`OrderService.recover`, at start-up, before the first command): an intent
without a result means the host died inside the DLL call, so the order may or may not be at the
broker. Until recovered, a retry of it is answered ``{"ok": false, "unknown": true}``. The rule:
the account's orders at the broker (``EnumerateAllOrders``) that no journal record names (by
ClOrderID or LocalOrderID) are matched to such send intents by (symbol, side, type, quantity,
and price for priced orders), in journal order against the broker's creation order (date, then
LocalOrderID); a match is *adopted* (its result written: the order is ours, its updates carry
the coid), an intent without a match is marked *not sent*: the broker is the truth, and a retry
of that coid is refused with ``not_sent: true`` rather than sent (the decision it came from is
old now; the strategy decides again, with a new coid). A hand-placed order with exactly the same
parameters could be adopted in its place: the rule cannot tell them apart. When the intents are
pending, the broker's list is read until it stops changing for ``recover_settle_s`` (the DLL
loads the day's orders after login). Pending change / cancel / cancel-all intents get the result
"unknown": ``orders`` shows what became of the order. After recovery every order of the account
at the broker is published once as an update, so the stream alone brings a consumer up to date.

**Rate cap** (:class:`TokenBucket`): ``send``, ``change`` and ``zero`` take a token
(``max_orders_per_s``, ``burst``); without one they are refused (``rate limit``, counted) and
not journaled, so a later retry can pass. Cancels and cancel-all are never capped: they only
take risk off, and the kill switch must work when everything else has gone wrong. The cap is
the host's own: it holds whatever the callers upstream do.

**Security.** The routing password (:class:`Secret`) exists only in this process: it goes into
each DLL call and nowhere else: not in a log line, the journal, a reply or an update. A shared
``token`` (required by ``feed_bridge`` when a port listens beyond 127.0.0.1) is compared with
``hmac.compare_digest``; a missing or wrong one is refused and counted; it is never logged,
journaled or echoed.

**Shadow** (:class:`ShadowRouter`): everything above runs (journal, rate cap, dedupe, replies,
updates), but no DLL routing call is made: each order is logged and acknowledged, its update says
ACCEPTED with ``shadow: true`` and text ``shadow: not sent``; a cancel gives CANCELLED; positions
are flat. The shadow journal is a separate file, so a later live run never takes a coid the
shadow run used for "already sent".
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import re
import secrets as pysecrets
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import orjson
import zmq

from pipelines.adapters.bridge import orders as O
from pipelines.adapters.profitdll.credentials import CredentialsError, inside, read_file
from pipelines.adapters.profitdll.errors import NoPositionError, ProfitDLLError
from pipelines.adapters.profitdll.order_codes import (
    is_rejection,
    lifecycle_status,
    message_result_name,
    order_status_name,
)
from pipelines.adapters.profitdll.routing import (
    ORDER_TYPE_CODES,
    ORDER_TYPE_NAMES,
    SIDE_CODES,
    SIDE_NAMES,
    RawOrder,
    RawOrderError,
    RawPosition,
    RawTradingMessage,
    RoutingAccount,
)
from pipelines.model.orders import MARKET, TERMINAL

log = logging.getLogger("quantumtrader.bridge.orders")

ENV_ROUTING_PASSWORD = "PROFIT_ROUTING_PASSWORD"
ENV_BRIDGE_TOKEN = "PROFIT_BRIDGE_TOKEN"
ENV_CREDENTIALS_FILE = "PROFIT_CREDENTIALS_FILE"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_STATE_ROOT = Path("~/.quantumtrader/bridge")
SHADOW_TEXT = "shadow: not sent"
_ACCOUNT_RE = re.compile(r"^(\d{1,9}):([^:\s]{1,64})(?::([^:\s]{1,64}))?$")

# DLL status codes the shadow router reports (TConnectorOrderStatus): New, Replaced, Canceled.
_NEW, _REPLACED, _CANCELED = 0, 5, 4


class ConfigError(ValueError):
    """A setting of the order service is unusable; the message is one line and names no secret."""


# -- secrets ------------------------------------------------------------------------------------


class Secret:
    """A value that must never be shown: ``repr``/``str`` hide it; :meth:`reveal` hands it to the one
    call that needs it (the DLL call, the token comparison)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str) or not value:
            raise ConfigError("a secret must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __reduce__(self):  # no pickling it into another process or a file
        raise TypeError("a Secret cannot be pickled")


class OrderSecrets(NamedTuple):
    routing_password: Secret | None
    token: Secret | None

    def values(self) -> list[str]:
        """The plain values, for the log redaction of this process only."""
        return [s.reveal() for s in self if s is not None]


def outside_repository(path: Path, what: str, repo_root: Path = REPO_ROOT) -> Path:
    """``path`` made absolute; :class:`ConfigError` when it (or its symlink target) lies in the repository."""
    given = Path(os.path.abspath(path.expanduser()))
    root = Path(os.path.abspath(repo_root))
    if inside(given, root) or inside(given, root.resolve()) or inside(given.resolve(), root.resolve()):
        raise ConfigError(f"refusing {what} {given}: it lies inside the repository {root}; keep it outside "
                          "so it can never be committed")
    return given


def load_order_secrets(file: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                       repo_root: Path = REPO_ROOT) -> OrderSecrets:
    """The routing password (``PROFIT_ROUTING_PASSWORD``) and the bridge token
    (``PROFIT_BRIDGE_TOKEN``): each from the credentials file (``file``, else
    ``$PROFIT_CREDENTIALS_FILE``) when it has the name, else from the environment. The file must
    lie outside the repository. Missing values are None: the caller decides what needs them."""
    env = os.environ if env is None else env
    if file is None and env.get(ENV_CREDENTIALS_FILE):
        file = env[ENV_CREDENTIALS_FILE]
    names = (ENV_ROUTING_PASSWORD, ENV_BRIDGE_TOKEN)
    values = {}
    if file is not None:
        try:
            values = read_file(Path(file).expanduser(), repo_root, names)
        except CredentialsError as e:
            raise ConfigError(str(e)) from None
    got = [values.get(n) or env.get(n) or None for n in names]
    return OrderSecrets(*(Secret(v) if v else None for v in got))


def parse_account(text: str) -> tuple[int, str, str]:
    """``BROKER:ACCOUNT[:SUB]`` -> (broker id, account id, sub-account id or "")."""
    m = _ACCOUNT_RE.match(text or "")
    if not m:
        raise ConfigError(f"--account must be BROKER:ACCOUNT[:SUB] (e.g. 308:1234567), got {text!r}")
    return int(m.group(1)), m.group(2), m.group(3) or ""


def default_state_dir(account: str) -> Path:
    """``~/.quantumtrader/bridge/<broker>-<account>[-<sub>]``."""
    return DEFAULT_STATE_ROOT.expanduser() / re.sub(r"[^A-Za-z0-9_.-]", "-", account.replace(":", "-"))


# -- the journal --------------------------------------------------------------------------------


class Entry:
    """One journaled command: its intent and, once the call returned, its result."""

    __slots__ = ("intent", "result")

    def __init__(self, intent: dict):
        self.intent = intent
        self.result: dict | None = None


class Journal:
    """Append-only, fsync'ed JSON lines (module docstring). Lines: ``intent``, ``result``, and
    ``clord`` (the ClOrderID and LocalOrderID seen for a coid).

    Names of orders: the ClOrderID is the broker's permanent name of an order; the LocalOrderID
    is the DLL's, possibly per DLL session (a new host process may number orders from the same
    start again). So LocalOrderIDs are trusted only within this process: those read from the
    file go to :attr:`old_local_to_coid`, which :meth:`OrderService.recover` checks against the
    broker's orders (by ClOrderID, or by the order's symbol, side and type) and then clears;
    :attr:`local_to_coid` holds the LocalOrderIDs valid now (results of this process, orders
    re-bound at recovery). Message ids likewise only count for this process.

    A torn last line (the host died mid-write) or any unreadable line is skipped and counted
    (``bad_lines``); the file is read whole at start (a line per command: small)."""

    def __init__(self, path: Path):
        self.path = path
        self.orders: dict[str, Entry] = {}  # coid -> the command that created the order (send, zero)
        self.requests: dict[str, Entry] = {}  # rid -> change / cancel / cancel_all
        self.records: list[dict] = []  # every record, in order (the shadow router replays them)
        self.clord_to_coid: dict[str, str] = {}
        self.coid_clord: dict[str, str] = {}  # the latest ClOrderID of each coid
        self.local_to_coid: dict[int, str] = {}  # valid in this DLL session
        self.coid_local: dict[str, int] = {}
        self.old_local_to_coid: dict[int, str] = {}  # from the file: unconfirmed until recovery
        self.message_to_coid: dict[int, str] = {}  # this process's messages
        self.bad_lines = 0
        self._loading = True
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._load()
        self._loading = False
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if path.stat().st_size and not self._ends_with_newline():
            os.write(self._fd, b"\n")  # a torn last line stays alone on its line

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = orjson.loads(line)
                    if not isinstance(rec, dict) or rec.get("t") not in ("intent", "result", "clord"):
                        raise ValueError("not a journal record")
                    self._apply(rec)
                except (ValueError, TypeError, KeyError) as e:
                    self.bad_lines += 1
                    log.warning("journal %s line %d skipped: %s", self.path.name, n, str(e)[:80])

    def _apply(self, rec: dict) -> None:
        t, coid, rid = rec["t"], rec.get("coid"), rec.get("rid")
        if t == "clord":
            cl = rec.get("cl_ord_id")
            if type(coid) is str and type(cl) is str and cl:
                self.clord_to_coid[cl] = coid
                self.coid_clord[coid] = cl
                self._local(rec.get("local_id"), coid)
            self.records.append(rec)
            return
        keyed_by_coid = rec["cmd"] in ("send", "zero")
        book, key = (self.orders, coid) if keyed_by_coid else (self.requests, rid)
        if t == "intent":
            if key is not None:
                book[key] = Entry(rec)
        else:
            entry = book.get(key) if key is not None else None
            if entry is not None:
                entry.result = rec
            if rec.get("ok") and type(coid) is str:
                if keyed_by_coid:
                    self._local(rec.get("local_id"), coid)
                if type(rec.get("message_id")) is int and rec["message_id"] > 0 and not self._loading:
                    self.message_to_coid[rec["message_id"]] = coid
        self.records.append(rec)

    def _local(self, local_id: Any, coid: str) -> None:
        if type(local_id) is int and local_id > 0:
            if self._loading:
                self.old_local_to_coid[local_id] = coid
            else:
                self.bind(local_id, coid)

    def bind(self, local_id: int, coid: str) -> None:
        """``local_id`` names ``coid``'s order in this DLL session."""
        old = self.coid_local.get(coid)
        if old is not None and old != local_id:
            self.local_to_coid.pop(old, None)
        self.local_to_coid[local_id] = coid
        self.coid_local[coid] = local_id

    def _append(self, rec: dict) -> dict:
        rec["ts"] = time.time_ns()
        data = orjson.dumps(rec) + b"\n"
        os.write(self._fd, data)  # one write(2) on an O_APPEND fd: whole lines, in order
        os.fsync(self._fd)
        self._apply(rec)
        return rec

    def intent(self, cmd: str, coid: str | None, rid: str | None, args: dict) -> dict:
        return self._append({"t": "intent", "cmd": cmd, "coid": coid, "rid": rid, "args": args})

    def result(self, cmd: str, coid: str | None, rid: str | None, **fields: Any) -> dict:
        return self._append({"t": "result", "cmd": cmd, "coid": coid, "rid": rid, **fields})

    def clord(self, coid: str, cl_ord_id: str, local_id: int) -> None:
        """Remember the broker's names of one of our orders (a line when the ClOrderID is new)."""
        if cl_ord_id and self.coid_clord.get(coid) != cl_ord_id:
            self._append({"t": "clord", "coid": coid, "cl_ord_id": cl_ord_id, "local_id": local_id})
        elif local_id > 0:
            self.bind(local_id, coid)

    def coid_of(self, local_id: int, cl_ord_id: str) -> str | None:
        coid = self.clord_to_coid.get(cl_ord_id) if cl_ord_id else None
        return coid if coid is not None else self.local_to_coid.get(local_id)

    def order_ids(self, coid: str) -> tuple[int, str] | None:
        """(LocalOrderID valid now or -1, ClOrderID or "") to name ``coid``'s order in a change or a
        cancel; None when neither is known (never sent, or refused)."""
        local_id, cl = self.coid_local.get(coid, -1), self.coid_clord.get(coid, "")
        return None if local_id == -1 and not cl else (local_id, cl)

    def pending_orders(self) -> list[Entry]:
        return [e for e in self.orders.values() if e.result is None]

    def pending_requests(self) -> list[Entry]:
        return [e for e in self.requests.values() if e.result is None]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# -- the rate cap --------------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; :meth:`take` spends one if there is one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if not (rate > 0 and math.isfinite(rate)) or burst < 1:
            raise ConfigError(f"the order rate cap needs a rate > 0 and a burst >= 1, got {rate!r}/s burst {burst!r}")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# -- routers: the DLL, or nothing (shadow) ---------------------------------------------------------


class DllRouter:
    """The routing calls of one account through :class:`OrderRouting`, with the password."""

    shadow = False

    def __init__(self, routing, account: RoutingAccount, password: Secret, exchange: str = "F"):
        self.routing = routing
        self.account = account
        self._password = password
        self.exchange = exchange

    def __repr__(self) -> str:
        return f"DllRouter(account={self.account.broker_id}:{self.account.account_id}, exchange={self.exchange!r})"

    def send(self, c: O.SendCommand) -> tuple[int, int]:
        r = self.routing.send_order(self.account, c.symbol, self.exchange, c.side, c.order_type, c.quantity,
                                    O.dll_price(c.price), O.dll_price(c.stop_price), self._password.reveal())
        return r.local_id, r.message_id

    def change(self, local_id: int, cl_ord_id: str, c: O.ChangeCommand) -> int:
        return self.routing.change_order(self.account, local_id, cl_ord_id, c.price, O.dll_price(c.stop_price),
                                         c.quantity, self._password.reveal())

    def cancel(self, local_id: int, cl_ord_id: str) -> int:
        return self.routing.cancel_order(self.account, local_id, cl_ord_id, self._password.reveal())

    def cancel_all(self) -> None:
        self.routing.cancel_all_orders(self.account, self._password.reveal())

    def zero(self, symbol: str) -> int:
        return self.routing.zero_position(self.account, symbol, self.exchange, self._password.reveal())

    def orders(self) -> list[RawOrder]:
        return self.routing.all_orders(self.account)

    def order_details(self, local_id: int, cl_ord_id: str) -> RawOrder:
        return self.routing.order_details(local_id, cl_ord_id)

    def position(self, symbol: str) -> RawPosition:
        return self.routing.position(self.account, symbol, self.exchange)


class ShadowRouter:
    """No DLL call: orders are acknowledged, kept here and reported as the DLL would (status New,
    then Canceled/Replaced), each through ``emit`` (the service's inbox), with text
    :data:`SHADOW_TEXT`. Rebuilt from the shadow journal at start, so ``orders`` survives a restart."""

    shadow = True

    def __init__(self, account: RoutingAccount, emit: Callable[[Any], None], exchange: str = "F"):
        self.account = account
        self.exchange = exchange
        self.emit = emit
        self._orders: dict[int, RawOrder] = {}
        self._next_id = 1

    def __repr__(self) -> str:
        return f"ShadowRouter(account={self.account.broker_id}:{self.account.account_id}, orders={len(self._orders)})"

    def rebuild(self, journal: Journal) -> None:
        """The shadow orders the journal acknowledged, with the changes and cancels after them."""
        emit, self.emit = self.emit, lambda item: None  # a replay publishes nothing
        try:
            for rec in journal.records:
                if rec.get("t") != "result" or not rec.get("ok"):
                    continue
                coid, cmd = rec.get("coid"), rec.get("cmd")
                intent = journal.orders.get(coid) if cmd in ("send", "zero") else journal.requests.get(rec.get("rid"))
                args = intent.intent.get("args", {}) if intent is not None else {}
                lid = rec.get("local_id")
                if cmd == "send" and type(lid) is int:
                    self._new(lid, args.get("symbol", ""), args.get("side", "BUY"), args.get("type", MARKET),
                              args.get("quantity", 0), args.get("price"), args.get("stop_price"))
                elif cmd == "change" and type(rec.get("local_id")) is int:
                    self._change(rec["local_id"], args.get("price"), args.get("stop_price"), args.get("quantity", 0))
                elif cmd == "cancel" and type(lid) is int:
                    self._cancel(lid)
                elif cmd == "cancel_all":
                    self.cancel_all()
        finally:
            self.emit = emit

    def _record(self, lid: int, **changes: Any) -> RawOrder:
        o = self._orders[lid]._replace(**changes, last_update=time.time_ns(), event_id=self._orders[lid].event_id + 1)
        self._orders[lid] = o
        self.emit(o)
        return o

    def _new(self, lid: int, symbol: str, side: str, order_type: str, quantity: int, price, stop) -> None:
        now = time.time_ns()
        acc = self.account
        self._orders[lid] = RawOrder(
            lid, f"SHADOW{lid}", acc.broker_id, acc.account_id, acc.sub_account_id, symbol, self.exchange,
            SIDE_CODES.get(side, 0), ORDER_TYPE_CODES.get(order_type, 0), _NEW, 0, quantity, 0, quantity,
            O.dll_price(price), O.dll_price(stop), 0.0, now, now, SHADOW_TEXT, 1, now)
        self._next_id = max(self._next_id, lid + 1)
        self.emit(self._orders[lid])

    def _change(self, lid: int, price, stop, quantity: int) -> None:
        if lid in self._orders and self._orders[lid].status not in (_CANCELED,):
            self._record(lid, status=_REPLACED, price=O.dll_price(price), stop_price=O.dll_price(stop),
                         quantity=quantity, leaves_qty=quantity)

    def _cancel(self, lid: int) -> None:
        if lid in self._orders and self._orders[lid].status != _CANCELED:
            self._record(lid, status=_CANCELED, leaves_qty=0)

    def send(self, c: O.SendCommand) -> tuple[int, int]:
        lid = self._next_id
        log.info("shadow: order %s %s %d %s %s @ %s acknowledged, not sent to the DLL", c.coid, c.side, c.quantity,
                 c.symbol, c.order_type, c.price)
        self._new(lid, c.symbol, c.side, c.order_type, c.quantity, c.price, c.stop_price)
        return lid, 0

    def change(self, local_id: int, cl_ord_id: str, c: O.ChangeCommand) -> int:
        log.info("shadow: change of %s to %d @ %s acknowledged, not sent to the DLL", c.coid, c.quantity, c.price)
        self._change(local_id, c.price, c.stop_price, c.quantity)
        return 0

    def cancel(self, local_id: int, cl_ord_id: str) -> int:
        log.info("shadow: cancel of local order %d acknowledged, not sent to the DLL", local_id)
        self._cancel(local_id)
        return 0

    def cancel_all(self) -> None:
        for lid in list(self._orders):
            self._cancel(lid)

    def zero(self, symbol: str) -> int:
        raise NoPositionError("shadow: no position (nothing is ever sent)", func="SendZeroPositionV2")

    def orders(self) -> list[RawOrder]:
        return list(self._orders.values())

    def order_details(self, local_id: int, cl_ord_id: str) -> RawOrder:
        return self._orders[local_id]

    def position(self, symbol: str) -> RawPosition:
        return RawPosition(symbol, self.exchange, 0, 0.0, 0, 0, 0.0, 0, 0.0, 0, 1, 0)


# -- the service ------------------------------------------------------------------------------------


def _error_fields(e: BaseException) -> dict:
    """What a failed DLL call's reply and journal carry: one line, the NL code and name when there is one."""
    fields: dict[str, Any] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    if isinstance(e, ProfitDLLError) and e.code is not None:
        fields["code"] = e.code
        fields["code_name"] = e.nl_name
    return fields


class OrderService:
    """Serves one account's order commands and publishes its order updates (module docstring).

    Construct it (binds both sockets), give it a router with :meth:`attach`, then :meth:`recover`,
    then run :meth:`run` on a thread. ``account`` is the ``BROKER:ACCOUNT[:SUB]`` text (the
    update topic); ``token`` when set must come with every command.
    """

    def __init__(self, account: str, command_addr: str, pub_addr: str, *, journal: Journal,
                 token: Secret | None = None, max_orders_per_s: float = 5.0, burst: int = 10,
                 heartbeat_s: float = 1.0, ring_updates: int = 10_000, resync_max_updates: int = 2_000,
                 recover_settle_s: float = 2.0, sndhwm: int = 100_000):
        if heartbeat_s <= 0 or ring_updates < 1 or resync_max_updates < 1:
            raise ConfigError("heartbeat_s, ring_updates and resync_max_updates must be positive")
        broker, acct, sub = parse_account(account)
        self.account = account
        self.routing_account = RoutingAccount(broker, acct, sub, "")
        self.topic = O.order_topic(account)
        self.journal = journal
        self._token = token
        self.bucket = TokenBucket(max_orders_per_s, burst)
        self.heartbeat_s = heartbeat_s
        self.resync_max_updates = resync_max_updates
        self.recover_settle_s = recover_settle_s
        self.router: DllRouter | ShadowRouter | None = None
        self.incarnation = f"{os.getpid():x}-{pysecrets.token_hex(4)}"
        self.last_seq = 0
        self._ring: deque[tuple[int, dict]] = deque(maxlen=ring_updates)
        self._inbox: deque = deque()
        self._status: dict[int, str] = {}  # local id -> our lifecycle status last published
        self._seen: dict[int, tuple[int, int]] = {}  # local id -> (traded, last update) last published
        self.recovered = False
        self.counts: Counter[str] = Counter()

        self._ctx = zmq.Context.instance()
        self._router_sock = self._ctx.socket(zmq.ROUTER)
        self._pub = self._ctx.socket(zmq.PUB)
        try:
            self._router_sock.setsockopt(zmq.LINGER, 0)
            self._router_sock.setsockopt(zmq.MAXMSGSIZE, O.MAX_REQUEST_BYTES)
            self._pub.setsockopt(zmq.LINGER, 0)
            self._pub.setsockopt(zmq.SNDHWM, sndhwm)
            self._router_sock.bind(command_addr)
            self._pub.bind(pub_addr)
        except zmq.ZMQError as e:
            self.close()
            raise OSError(f"order service cannot bind {command_addr} / {pub_addr}: {e}") from None
        self.command_endpoint = self._router_sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.pub_endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._poller = zmq.Poller()
        self._poller.register(self._router_sock, zmq.POLLIN)

    def __repr__(self) -> str:
        return (f"OrderService(account={self.account!r}, commands={self.command_endpoint!r}, "
                f"updates={self.pub_endpoint!r}, router={self.router!r})")

    @property
    def shadow(self) -> bool:
        return self.router is not None and self.router.shadow

    def attach(self, router: DllRouter | ShadowRouter) -> None:
        self.router = router

    # -- DLL events (the bridge thread calls this; the deque is the hand-over) -------------------

    def on_dll_event(self, item: Any) -> None:
        self._inbox.append(item)

    # -- recovery -----------------------------------------------------------------------------------

    def recover(self) -> dict:
        """Settle what a previous host left pending, then publish the account's orders (module doc).
        Returns a summary (also logged). A broker that cannot be read leaves the intents pending
        (answered "unknown") and is retried at the next start."""
        journal, router = self.journal, self.router
        if router is None:
            raise RuntimeError("OrderService.recover() before attach()")
        if router.shadow:
            router.rebuild(journal)
        pending = journal.pending_orders()
        summary = {"pending": len(pending), "adopted": 0, "not_sent": 0, "unknown_requests": 0, "orders": 0}
        try:
            broker = self._broker_orders(settle=bool(pending) and not router.shadow)
        except (ProfitDLLError, ValueError) as e:
            log.error("recovery: the broker's orders cannot be read (%s); %d pending intents stay unknown",
                      _error_fields(e)["error"], len(pending))
            self.counts["recover_failures"] += 1
            self.journal.old_local_to_coid.clear()  # unconfirmed: ClOrderIDs still name our orders
            self.recovered = True  # commands are served; pending sends are answered "unknown"
            return summary
        self._rebind(broker)
        unnamed = sorted((o for o in broker if journal.coid_of(o.local_id, o.cl_ord_id) is None),
                         key=lambda o: (o.date, o.local_id))
        for entry in pending:  # journal order = the order the intents were written
            coid, args = entry.intent["coid"], entry.intent.get("args", {})
            match = next((o for o in unnamed if self._matches(o, entry.intent["cmd"], args)), None)
            if match is not None and not router.shadow:
                unnamed.remove(match)
                journal.result(entry.intent["cmd"], coid, entry.intent.get("rid"), ok=True, local_id=match.local_id,
                               message_id=0, adopted=True)
                journal.clord(coid, match.cl_ord_id, match.local_id)
                summary["adopted"] += 1
                log.warning("recovery: order %s was at the broker (local id %d): adopted", coid, match.local_id)
            else:
                journal.result(entry.intent["cmd"], coid, entry.intent.get("rid"), ok=False, not_sent=True,
                               error="not sent: the host died inside the DLL call and the broker has no such order")
                summary["not_sent"] += 1
                log.warning("recovery: order %s is not at the broker: marked not sent", coid)
        for entry in journal.pending_requests():
            journal.result(entry.intent["cmd"], entry.intent.get("coid"), entry.intent.get("rid"), ok=False,
                           unknown=True, error="the host died inside the DLL call; the outcome is unknown: read `orders`")
            summary["unknown_requests"] += 1
        for o in broker:
            self._on_order(o)
        summary["orders"] = len(broker)
        self.counts.update({f"recovered_{k}": v for k, v in summary.items() if k != "orders"})
        self.recovered = True
        log.info("recovery: %s", summary)
        return summary

    def _broker_orders(self, settle: bool) -> list[RawOrder]:
        """This account's orders at the broker; with ``settle``, read until the list has not
        changed for ``recover_settle_s`` (the DLL loads the day's orders after login)."""
        orders = self._ours(self.router.orders())
        if not settle or self.recover_settle_s <= 0:
            return orders
        stable_since = time.monotonic()
        deadline = stable_since + 10 * self.recover_settle_s
        while time.monotonic() - stable_since < self.recover_settle_s and time.monotonic() < deadline:
            time.sleep(min(0.25, self.recover_settle_s / 4))
            again = self._ours(self.router.orders())
            if [(o.local_id, o.status, o.traded_qty) for o in again] != [(o.local_id, o.status, o.traded_qty) for o in orders]:
                stable_since = time.monotonic()
            orders = again
        return orders

    def _ours(self, orders: list[RawOrder]) -> list[RawOrder]:
        acc = self.routing_account
        return [o for o in orders if o.broker_id == acc.broker_id and o.account_id == acc.account_id
                and (o.sub_account_id or "") == acc.sub_account_id]

    def _rebind(self, broker: list[RawOrder]) -> None:
        """Name the broker's orders for this DLL session: by ClOrderID when the journal has it;
        else by a LocalOrderID from the file when that order has our intent's symbol, side and
        type (an id of an older DLL session may name another order now: counted, not used).
        LocalOrderIDs from the file are forgotten afterwards: an order no longer at the broker
        cannot be confused with a new one that the DLL happens to number the same."""
        journal = self.journal
        for o in broker:
            coid = journal.clord_to_coid.get(o.cl_ord_id) if o.cl_ord_id else None
            if coid is None:
                coid = journal.old_local_to_coid.get(o.local_id)
                entry = journal.orders.get(coid) if coid is not None else None
                args = entry.intent.get("args", {}) if entry is not None else {}
                # Symbol, side and type only: a change may have moved the price and quantity since.
                if entry is not None and o.ticker == args.get("symbol") and (
                        entry.intent["cmd"] == "zero"
                        or (SIDE_NAMES.get(o.side), ORDER_TYPE_NAMES.get(o.order_type)) == (args.get("side"),
                                                                                          args.get("type"))):
                    journal.clord(coid, o.cl_ord_id, o.local_id)
                elif coid is not None:
                    self.counts["recover_id_mismatch"] += 1
                    coid = None
            if coid is not None:
                journal.bind(o.local_id, coid)
        journal.old_local_to_coid.clear()

    @staticmethod
    def _matches(o: RawOrder, cmd: str, args: dict) -> bool:
        if cmd == "zero":
            return o.ticker == args.get("symbol") and o.order_type == ORDER_TYPE_CODES[MARKET]
        otype = args.get("type")
        if (o.ticker, SIDE_NAMES.get(o.side), ORDER_TYPE_NAMES.get(o.order_type), o.quantity) != \
                (args.get("symbol"), args.get("side"), otype, args.get("quantity")):
            return False
        return otype == MARKET or (args.get("price") is not None and abs(o.price - args["price"]) < 1e-9)

    # -- the loop -----------------------------------------------------------------------------------

    def run(self, stop: threading.Event, idle_ms: int = 2) -> None:
        """Serve until ``stop`` is set: DLL events -> updates, heartbeats, commands."""
        next_hb = time.monotonic()
        while not stop.is_set():
            self._drain_inbox()
            now = time.monotonic()
            if now >= next_hb:
                self._heartbeat()
                next_hb = now + self.heartbeat_s
            if self._poller.poll(0 if self._inbox else idle_ms):
                self._serve_commands()
        self._drain_inbox()

    def _drain_inbox(self, limit: int = 1000) -> None:
        inbox = self._inbox
        for _ in range(min(limit, len(inbox))):
            item = inbox.popleft()
            try:
                kind = type(item)
                if kind is RawOrder:
                    self._on_order(item)
                elif kind is RawTradingMessage:
                    self._on_message(item)
                elif kind is RawOrderError:
                    self._on_order_error(item)
                else:
                    self.counts["unknown_events"] += 1
            except Exception as e:  # one event we cannot place must not stop the service
                self.counts["event_errors"] += 1
                log.warning("order event skipped: %s: %s", type(e).__name__, str(e)[:200])

    def _heartbeat(self) -> None:
        self.counts["heartbeats"] += 1
        self._pub.send_multipart(O.encode_heartbeat(self.topic, self.incarnation, time.time_ns(), self.last_seq),
                                 flags=zmq.NOBLOCK)

    def _publish(self, update: O.OrderUpdate | O.MessageUpdate) -> None:
        self.last_seq += 1
        body = O.update_body(update)
        self._ring.append((self.last_seq, body))
        try:
            self._pub.send_multipart(O.encode_update(self.topic, self.incarnation, self.last_seq, body), flags=zmq.NOBLOCK)
        except zmq.Again:  # a subscriber's queue is full: it sees the gap and resyncs from the ring
            self.counts["publish_dropped"] += 1
        self.counts["updates"] += 1

    def _on_order(self, o: RawOrder) -> None:
        acc = self.routing_account
        if o.broker_id != acc.broker_id or o.account_id != acc.account_id or (o.sub_account_id or "") != acc.sub_account_id:
            self.counts["other_account_orders"] += 1
            return
        seen = self._seen.get(o.local_id)
        if seen is not None and (o.traded_qty < seen[0] or o.last_update < seen[1]):
            # Older than what went out already: a callback queued behind the snapshot published at
            # recovery. Cumulative updates never go backwards.
            self.counts["stale_order_events"] += 1
            return
        self._seen[o.local_id] = (o.traded_qty, o.last_update)
        coid = self.journal.coid_of(o.local_id, o.cl_ord_id)
        if coid is not None:
            self.journal.clord(coid, o.cl_ord_id, o.local_id)
        status = lifecycle_status(o.status, self._status.get(o.local_id), o.traded_qty)
        self._status[o.local_id] = status
        ts = o.last_update or o.date or o.ts_recv or time.time_ns()
        self._publish(O.OrderUpdate(
            0, self.incarnation, coid, o.local_id, o.cl_ord_id, o.ticker, status, o.status, order_status_name(o.status),
            o.traded_qty, o.leaves_qty if status not in TERMINAL else 0, float(o.avg_price), float(o.price),
            float(o.stop_price), o.quantity, SIDE_NAMES.get(o.side, f"UNKNOWN({o.side})"), o.text, ts, self.shadow))

    def _on_message(self, m: RawTradingMessage) -> None:
        coid = self.journal.coid_of(m.local_id, m.cl_ord_id) if (m.local_id > 0 or m.cl_ord_id) else None
        if coid is None and m.message_id > 0:
            coid = self.journal.message_to_coid.get(m.message_id)  # results with LocalOrderID 0 (docs §4.3)
        self._publish(O.MessageUpdate(
            0, self.incarnation, coid, m.local_id, m.message_id, m.cl_ord_id, m.result_code,
            message_result_name(m.result_code), is_rejection(m.result_code), m.message, m.ts_recv or time.time_ns(),
            self.shadow))

    def _on_order_error(self, e: RawOrderError) -> None:
        """The callback could not read the order: read it now (outside the callback)."""
        try:
            order = self.router.order_details(e.local_id, e.cl_ord_id)
        except Exception as exc:
            self.counts["order_read_errors"] += 1
            log.warning("order %d (%s) could not be read: %s; the next `orders` shows it", e.local_id, e.cl_ord_id,
                        _error_fields(exc)["error"])
            return
        self._on_order(order)

    # -- commands -----------------------------------------------------------------------------------

    def _serve_commands(self, max_commands: int = 16) -> None:
        for _ in range(max_commands):
            try:
                frames = self._router_sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:  # a ROUTER always prefixes the peer's identity; nothing to answer
                self.counts["bad_frames"] += 1
                continue
            self.counts["commands"] += 1
            # A DEALER sends [payload]; a REQ socket (a one-shot script) [b"", payload], and wants
            # its empty delimiter back. The reply goes out in the envelope it came in.
            envelope = frames[:2] if len(frames) == 3 and frames[1] == b"" else frames[:1]
            reply = self._answer(frames[len(envelope):])
            try:
                self._router_sock.send_multipart([*envelope, reply], flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                self.counts["replies_dropped"] += 1

    def _answer(self, frames: list[bytes]) -> bytes:
        rid = None
        try:
            if len(frames) != 1:
                raise O.ProtocolError(f"expected one frame, got {len(frames)}")
            rid = O.peek_rid(frames[0])
            req = O.decode_command(frames[0])
        except O.ProtocolError as e:
            return self._bad(rid, str(e))
        if not self._authorized(req.token):
            self.counts["bad_tokens"] += 1
            log.warning("order service: %s refused: missing or wrong token", req.cmd)
            return O.error_reply(rid, "refused: missing or wrong token")
        try:
            return getattr(self, f"_cmd_{req.cmd}")(req.rid, req.body)
        except Exception as e:  # a failure answering one command must not stop the service
            self.counts["command_errors"] += 1
            log.error("order command %s failed: %s", req.cmd, _error_fields(e)["error"])
            return O.error_reply(rid, _error_fields(e)["error"])

    def _authorized(self, given: str | None) -> bool:
        if self._token is None:
            return True
        if given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8"), self._token.reveal().encode("utf-8"))

    def _bad(self, rid: str | None, problem: str) -> bytes:
        self.counts["bad_commands"] += 1
        log.warning("order service: bad command: %s", problem)
        return O.error_reply(rid, problem)

    def _no_router(self, rid: str | None) -> bytes | None:
        if self.router is None or not self.recovered:
            return O.error_reply(rid, "order routing is not ready yet")
        return None

    def _over_rate(self, rid: str | None, cmd: str) -> bytes | None:
        if self.bucket.take():
            return None
        self.counts["rate_limited"] += 1
        log.warning("order service: %s refused by the rate cap (%g/s, burst %d)", cmd, self.bucket.rate,
                    self.bucket.burst)
        return O.error_reply(rid, f"rate limit: at most {self.bucket.rate:g} orders/s (burst {self.bucket.burst}) "
                                  "through this host; not sent")

    def _from_journal(self, rid: str | None, entry: Entry, **extra: Any) -> bytes:
        """The answer to a command the journal already holds (a retry): never a second DLL call."""
        self.counts["duplicates"] += 1
        res = entry.result
        if res is None:
            return O.error_reply(rid, "the outcome of this command is unknown (the host died inside the DLL call); "
                                      "read `orders`", unknown=True, duplicate=True, **extra)
        fields = {k: v for k, v in res.items() if k not in ("t", "cmd", "rid", "ts", "ok")}
        if res.get("ok") and res.get("coid") in self.journal.coid_local:
            fields["local_id"] = self.journal.coid_local[res["coid"]]  # the id valid in this DLL session
        return O.encode_reply(bool(res.get("ok")), rid, duplicate=True, shadow=self.shadow, **fields)

    def _call(self, cmd: str, coid: str | None, rid: str | None, args: dict, fn: Callable[[], dict]) -> tuple[bool, dict]:
        """Intent, the DLL call, result: (ok, the result's fields)."""
        self.journal.intent(cmd, coid, rid, args)
        self.counts["shadow_acks" if self.shadow else "dll_calls"] += 1
        try:
            fields, ok = fn(), True
        except (ProfitDLLError, ValueError, KeyError) as e:
            fields, ok = _error_fields(e), False
            self.counts["dll_errors"] += 1
            log.warning("order %s %s: %s", cmd, coid or "", fields["error"])
        self.journal.result(cmd, coid, rid, ok=ok, **fields)
        return ok, fields

    def _cmd_send(self, rid: str | None, c: O.SendCommand) -> bytes:
        entry = self.journal.orders.get(c.coid)
        if entry is not None:
            return self._from_journal(rid, entry, coid=c.coid)
        refused = self._no_router(rid) or self._over_rate(rid, "send")
        if refused is not None:
            return refused
        args = {"symbol": c.symbol, "side": c.side, "type": c.order_type, "quantity": c.quantity, "price": c.price,
                "stop_price": c.stop_price}

        def send() -> dict:
            local_id, message_id = self.router.send(c)
            return {"local_id": local_id, "message_id": message_id}

        if not self.shadow:
            log.info("order %s: %s %d %s %s price %s stop %s -> SendOrder", c.coid, c.side, c.quantity, c.symbol,
                     c.order_type, c.price, c.stop_price)
        ok, fields = self._call("send", c.coid, rid, args, send)
        return O.encode_reply(ok, rid, coid=c.coid, duplicate=False, shadow=self.shadow, **fields)

    def _known_order(self, rid: str | None, cmd: str, coid: str) -> tuple[int, str] | bytes:
        ids = self.journal.order_ids(coid)
        if ids is None:
            self.counts["unknown_coid"] += 1
            return O.error_reply(rid, f"{cmd}: no order {coid!r} was sent through this host", coid=coid)
        return ids

    def _request_entry(self, rid: str | None) -> Entry | None:
        return self.journal.requests.get(rid) if rid is not None else None

    def _cmd_change(self, rid: str | None, c: O.ChangeCommand) -> bytes:
        entry = self._request_entry(rid)
        if entry is not None:
            return self._from_journal(rid, entry, coid=c.coid)
        refused = self._no_router(rid)
        if refused is not None:
            return refused
        known = self._known_order(rid, "change", c.coid)
        if isinstance(known, bytes):
            return known
        refused = self._over_rate(rid, "change")
        if refused is not None:
            return refused
        local_id, cl_ord_id = known
        args = {"price": c.price, "stop_price": c.stop_price, "quantity": c.quantity}
        ok, fields = self._call("change", c.coid, rid, args,
                                lambda: {"message_id": self.router.change(local_id, cl_ord_id, c),
                                         "local_id": local_id})
        return O.encode_reply(ok, rid, coid=c.coid, duplicate=False, shadow=self.shadow, **fields)

    def _cmd_cancel(self, rid: str | None, c: O.CancelCommand) -> bytes:
        entry = self._request_entry(rid)
        if entry is not None:
            return self._from_journal(rid, entry, coid=c.coid)
        refused = self._no_router(rid)
        if refused is not None:
            return refused
        known = self._known_order(rid, "cancel", c.coid)
        if isinstance(known, bytes):
            return known
        local_id, cl_ord_id = known
        ok, fields = self._call("cancel", c.coid, rid, {},
                                lambda: {"message_id": self.router.cancel(local_id, cl_ord_id), "local_id": local_id})
        return O.encode_reply(ok, rid, coid=c.coid, duplicate=False, shadow=self.shadow, **fields)

    def _cmd_cancel_all(self, rid: str | None, c: O.CancelAllCommand) -> bytes:
        entry = self._request_entry(rid)
        if entry is not None:
            return self._from_journal(rid, entry)
        refused = self._no_router(rid)
        if refused is not None:
            return refused
        log.warning("order service: cancel all orders of %s", self.account)

        def cancel_all() -> dict:
            self.router.cancel_all()
            return {}

        ok, fields = self._call("cancel_all", None, rid, {}, cancel_all)
        return O.encode_reply(ok, rid, duplicate=False, shadow=self.shadow, **fields)

    def _cmd_zero(self, rid: str | None, c: O.ZeroCommand) -> bytes:
        coid = c.coid or f"zero:{c.symbol}:{rid or time.time_ns()}"
        entry = self.journal.orders.get(coid)
        if entry is not None:
            return self._from_journal(rid, entry, coid=coid)
        refused = self._no_router(rid) or self._over_rate(rid, "zero")
        if refused is not None:
            return refused
        log.warning("order service: zero the %s position of %s (%s)", c.symbol, self.account, coid)

        def zero() -> dict:
            try:
                return {"local_id": self.router.zero(c.symbol), "message_id": 0}
            except NoPositionError:
                return {"flat": True, "local_id": None}  # nothing to close: done

        ok, fields = self._call("zero", coid, rid, {"symbol": c.symbol}, zero)
        return O.encode_reply(ok, rid, coid=coid, duplicate=False, shadow=self.shadow, **fields)

    def _cmd_orders(self, rid: str | None, c: O.OrdersCommand) -> bytes:
        refused = self._no_router(rid)
        if refused is not None:
            return refused
        try:
            broker = self._ours(self.router.orders())
        except (ProfitDLLError, ValueError) as e:
            return O.error_reply(rid, _error_fields(e)["error"])
        out = []
        for o in broker:
            coid = self.journal.coid_of(o.local_id, o.cl_ord_id)
            status = lifecycle_status(o.status, self._status.get(o.local_id), o.traded_qty)
            out.append(O.update_body(O.OrderUpdate(
                0, self.incarnation, coid, o.local_id, o.cl_ord_id, o.ticker, status, o.status,
                order_status_name(o.status), o.traded_qty, o.leaves_qty if status not in TERMINAL else 0,
                float(o.avg_price), float(o.price), float(o.stop_price), o.quantity,
                SIDE_NAMES.get(o.side, f"UNKNOWN({o.side})"), o.text, o.last_update or o.date, self.shadow)))
        return O.encode_reply(True, rid, orders=out, shadow=self.shadow, last_seq=self.last_seq)

    def _cmd_positions(self, rid: str | None, c: O.PositionsCommand) -> bytes:
        refused = self._no_router(rid)
        if refused is not None:
            return refused
        out = {}
        try:
            for sym in c.symbols:
                p = self.router.position(sym)
                out[sym] = {"quantity": p.open_qty, "avg_price": p.open_avg_price if p.open_qty else 0.0,
                            "open_side": p.open_side, "daily_buy_qty": p.daily_buy_qty,
                            "daily_buy_avg_price": p.daily_buy_avg_price, "daily_sell_qty": p.daily_sell_qty,
                            "daily_sell_avg_price": p.daily_sell_avg_price, "position_type": p.position_type}
        except (ProfitDLLError, ValueError) as e:
            return O.error_reply(rid, _error_fields(e)["error"])
        return O.encode_reply(True, rid, positions=out, shadow=self.shadow)

    def _cmd_resync(self, rid: str | None, c: O.ResyncCommand) -> bytes:
        self.counts["resyncs"] += 1
        ring = self._ring
        first_available = ring[0][0] if ring else self.last_seq + 1
        gone = c.from_seq < first_available
        if gone:
            self.counts["resyncs_gone"] += 1
        limit = min(self.resync_max_updates, c.max_updates or self.resync_max_updates)
        start = max(c.from_seq, first_available)
        updates = [[seq, body] for seq, body in ring if seq >= start][:limit]
        return O.encode_reply(True, rid, incarnation=self.incarnation, from_seq=c.from_seq, updates=updates, gone=gone,
                              first_available=first_available, last_seq=self.last_seq)

    def _cmd_status(self, rid: str | None, c: O.StatusCommand) -> bytes:
        return O.encode_reply(True, rid, **self.stats())

    # -- stats / close ------------------------------------------------------------------------------

    def stats(self) -> dict:
        return {"incarnation": self.incarnation, "account": self.account, "shadow": self.shadow,
                "routing": self.router is not None, "recovered": self.recovered, "last_seq": self.last_seq,
                "first_available": self._ring[0][0] if self._ring else self.last_seq + 1,
                "commands": self.counts["commands"], "counts": dict(self.counts),
                "journal": {"path": str(self.journal.path), "bad_lines": self.journal.bad_lines,
                            "orders": len(self.journal.orders)},
                "rate_cap": {"per_s": self.bucket.rate, "burst": self.bucket.burst}}

    def close(self) -> None:
        for name in ("_router_sock", "_pub"):
            sock = getattr(self, name, None)
            if sock is not None and not sock.closed:
                sock.close(linger=0)
