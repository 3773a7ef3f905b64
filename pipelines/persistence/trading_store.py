"""Orders, fills, positions and decision outcomes in Valkey: their key layout and the client,
:class:`TradingStore`.

Keys (JSON is ``orjson.dumps(to_dict(msg))``, NaN stored as ``null``):

- ``hmarl:order:<client order id>``  HASH, TTL ``order_s`` (7 d), refreshed by every write:
  ``order`` the Order (the first one stored wins: an id names one order), ``event`` its latest
  OrderEvent, ``progress`` and ``terminal`` (what "latest" is judged by, see below),
  ``ev:<status>:<filled_qty>`` the stream id of each event stored (the dedupe marker) and
  ``fill:<fill_id>`` each fill of the order (the fill's dedupe marker and record)
- ``hmarl:orders:open:<account>``    SET of the client order ids of the account's orders stored and
  not in a terminal status, kept by the same scripts that store orders and events; no TTL
- ``hmarl:orders:stream``            STREAM of every OrderEvent, ``hmarl:fills:stream`` of every Fill,
  ``hmarl:outcomes:stream`` of every DecisionOutcome, one field ``json``, trimmed to about
  ``stream_maxlen`` (``MAXLEN ~``)
- ``hmarl:outcome:<account>:<SYM>:<decision id>:<ts_open>`` STRING, the DecisionOutcome (the
  outcome's dedupe marker and record), TTL ``order_s``: it lives as long as its orders' records
- ``hmarl:position:<account>:<SYM>`` STRING, the latest Position, TTL ``position_s`` (none by default)
- ``hmarl:positions:<account>``      SET of the symbols with a stored position; no TTL
- ``hmarl:execution:<account>``      STRING, the account's execution engine state (JSON), no TTL:
  what a restarted execution actor continues from (a plain SET, one writer per account)

Stream ids are ``<ms>-<n>`` with ``ms = ts_event // 1_000_000``, raised to the stream's last id
when event time steps backwards (two actors whose clocks differ write one stream): ids follow
event time, so :meth:`TradingStore.fills_since` and :meth:`TradingStore.outcomes_since` seek by
event time.

Writes never block the caller: they are queued on one
:class:`~pipelines.persistence.write_behind.WriteBehind`, which re-sends whole chunks after a
lost connection, so each write is one Lua script that makes a replay harmless:

- an order: ``HSETNX order``; a second store of the same id changes nothing;
- an event: stored once per (client order id, status, filled quantity). It is appended to the
  orders stream, and it becomes the order's ``event`` unless the order is terminal already or the
  event is behind the stored one (fewer contracts filled, or an earlier step at the same fill):
  a late replay never moves an order back;
- a fill: ``HSETNX fill:<fill_id>`` on its order's hash; only a new one is appended to the stream;
- an outcome: ``SET NX`` of its record; only a new one is appended to the stream (a decision
  makes one outcome per part it opened, and each part starts at its own ``ts_open``);
- a position: a plain SET (the latest written is the latest: one writer per account and symbol).

Writes made inside a :meth:`TradingStore.transaction` block are queued as one MULTI/EXEC item,
applied all or nothing: the execution actor stores each call's orders, events, fills, positions
and outcomes with the engine state they led to, so what is stored always belongs to the stored
state, whenever the actor is killed.

An order is in its account's open set while it is stored and not terminal: the scripts add it
(order stored, event not terminal) and remove it (terminal event) atomically with the record, so
a replayed order or event cannot put a finished order back. Scripts never decode JSON (Lua's
cjson would round ``ts_event`` nanoseconds), they only move blobs and compare plain fields.

Reads are synchronous, for a restart: they return None when Valkey is unreachable or answers
with an error (counted in ``stats()["read_errors"]``), never "nothing"; a record that does not decode is skipped and
counted in ``stats()["bad_records"]``. They see what has been written, not what is still queued
(:meth:`TradingStore.commit` waits for that).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass, field
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, NamedTuple, get_type_hints

import orjson
from valkey.exceptions import ResponseError

from pipelines.model.clock import NS_PER_MS
from pipelines.model.messages import to_dict
from pipelines.model.orders import (
    MAKER,
    SIDES,
    STATUSES,
    TAKER,
    TERMINAL,
    TRADING_TYPES,
    DecisionOutcome,
    Fill,
    Order,
    OrderEvent,
    Position,
    order_problem,
)
from pipelines.model.settings import ACCOUNT_RE, INT32_MAX, INT64_MAX, SYMBOL_RE, bounded
from pipelines.persistence.connection import CONN_ERRORS, RateLimit, connect, redact, scan_stream, suppressed_note
from pipelines.persistence.write_behind import Transaction, WriteBehind

log = logging.getLogger("quantumtrader.trading.store")

__all__ = [
    "FILLS_STREAM", "ORDERS_STREAM", "OUTCOMES_STREAM", "BadKeyPart", "TradingStore", "TradingTTL", "engine_state_key",
    "open_orders_key", "order_key", "outcome_key", "position_key", "positions_key", "trading_from_dict",
]

ORDERS_STREAM = "hmarl:orders:stream"
FILLS_STREAM = "hmarl:fills:stream"
OUTCOMES_STREAM = "hmarl:outcomes:stream"

# A client order id, fill id or decision id is part of a key and a member of a set: printable ASCII
# without spaces, bounded (derived ids are short: "<decision id>:<role>#<n>").
_ID_RE = re.compile(r"^[!-~]{1,200}$")
_STREAM_ID_RE = re.compile(r"[0-9]{1,19}-[0-9]{1,19}")  # ms-seq, each below 2^64 (fullmatch)


# -- keys -----------------------------------------------------------------------------


class BadKeyPart(ValueError):
    """A value that cannot be part of a key; ``reason`` (``bad_<what>``) is the stats key."""

    def __init__(self, what: str, value: Any):
        super().__init__(f"bad {what}: {value!r}")
        self.reason = f"bad_{what}"


def _checked(value: Any, pattern: re.Pattern, what: str) -> str:
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    raise BadKeyPart(what, value)


def order_key(client_order_id: str) -> str:
    """``hmarl:order:<client order id>``. Each key builder raises :class:`BadKeyPart` (a ValueError)
    for a part that cannot be in a key: an account outside ``ACCOUNT_RE``, a symbol outside
    ``SYMBOL_RE``, an id that is not 1-200 printable ASCII characters without spaces."""
    client_order_id = _checked(client_order_id, _ID_RE, "client_order_id")
    return f"hmarl:order:{client_order_id}"


def open_orders_key(account: str) -> str:
    """The SET of the account's open client order ids."""
    account = _checked(account, ACCOUNT_RE, "account")
    return f"hmarl:orders:open:{account}"


def position_key(account: str, symbol: str) -> str:
    """The account's latest Position in ``symbol``."""
    account, symbol = _checked(account, ACCOUNT_RE, "account"), _checked(symbol, SYMBOL_RE, "symbol")
    return f"hmarl:position:{account}:{symbol}"


def positions_key(account: str) -> str:
    """The SET of the symbols the account has a stored position in."""
    account = _checked(account, ACCOUNT_RE, "account")
    return f"hmarl:positions:{account}"


def outcome_key(account: str, symbol: str, decision_id: str, ts_open: int) -> str:
    """The outcome of the part of ``decision_id`` that opened at ``ts_open`` (event time, ns)."""
    account, symbol = _checked(account, ACCOUNT_RE, "account"), _checked(symbol, SYMBOL_RE, "symbol")
    decision_id = _checked(decision_id, _ID_RE, "decision_id")
    if type(ts_open) is not int or not 0 <= ts_open <= INT64_MAX:
        raise BadKeyPart("ts_open", ts_open)
    return f"hmarl:outcome:{account}:{symbol}:{decision_id}:{ts_open}"


def engine_state_key(account: str) -> str:
    """The account's execution engine state."""
    account = _checked(account, ACCOUNT_RE, "account")
    return f"hmarl:execution:{account}"


# -- config ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TradingTTL:
    """Expiry in seconds per key family; None: never expires. An order outlives its session by
    days, for restarts and reports; a position is the account's state and is kept."""

    order_s: int | None = field(default=7 * 86_400, metadata=bounded(1, INT32_MAX))
    position_s: int | None = field(default=None, metadata=bounded(1, INT32_MAX))


# -- JSON and input checks ------------------------------------------------------------


class _Rejected(ValueError):
    """A record this store does not write; the message is the reason (a stats key)."""


def _require(ok: bool, reason: str) -> None:
    if not ok:
        raise _Rejected(reason)


# Per message type: each field's Python type, from the NamedTuple's annotations.
_TYPES: dict[type, tuple[tuple[str, Any], ...]] = {
    cls: tuple(get_type_hints(cls).items()) for cls in TRADING_TYPES.values()
}


def _fits(value: Any, t: Any) -> bool:
    """Whether ``value`` is a ``t`` as JSON can carry it: NaN is a float (null), infinity is not."""
    if t is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if t is float:
        return isinstance(value, (int, float)) and not math.isinf(value)
    if t is int:  # what JSON (orjson), Valkey and numpy take
        return isinstance(value, int) and -INT64_MAX - 1 <= value <= INT64_MAX
    return isinstance(value, t)


def trading_from_dict(d: Any) -> NamedTuple:
    """A trading message (:data:`pipelines.model.orders.TRADING_TYPES`) from its JSON dict:
    ``null`` floats come back as NaN, a missing field takes its default. ValueError for anything
    else (an unknown kind, a missing or mistyped field)."""
    cls = TRADING_TYPES.get(d.get("kind")) if isinstance(d, dict) else None
    if cls is None:
        raise ValueError("not a trading record")
    values = []
    for name, t in _TYPES[cls]:
        if name not in d and name not in cls._field_defaults:
            raise ValueError(f"{cls.KIND}.{name}: missing")
        v = d[name] if name in d else cls._field_defaults[name]
        if v is None and t is float:
            v = math.nan
        if not _fits(v, t):
            raise ValueError(f"{cls.KIND}.{name}: bad value {v!r}")
        values.append(float(v) if t is float else v)
    return cls(*values)


def _check_shape(msg: Any, cls: type) -> None:
    """Reject ``msg`` unless it is a ``cls`` JSON can hold, stamped with an event time, for an
    account and symbol that can be key parts."""
    _require(isinstance(msg, cls), "wrong_type")
    for (name, t), v in zip(_TYPES[cls], msg):
        _require(_fits(v, t), f"bad_{name}")
    _require(msg.ts_event >= 0, "bad_ts_event")
    try:
        _checked(msg.account, ACCOUNT_RE, "account")
        _checked(msg.symbol, SYMBOL_RE, "symbol")
    except BadKeyPart as e:
        raise _Rejected(e.reason) from None


def _blob(msg: NamedTuple) -> bytes:
    try:
        return orjson.dumps(to_dict(msg))
    except orjson.JSONEncodeError:  # e.g. a str with a lone surrogate: no UTF-8 for it
        raise _Rejected("not_json") from None


def _ms(msg: NamedTuple) -> int:
    return msg.ts_event // NS_PER_MS


# -- Lua --------------------------------------------------------------------------------

# The stream id for event time ARGV ms (decimal text, compared as text: no Lua number rounding),
# never below the stream's last id.
_EVENT_ID_LUA = """
local function event_id(stream, ms)
  if redis.call('EXISTS', stream) == 1 then
    local info = redis.call('XINFO', 'STREAM', stream)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local top = string.match(info[i + 1], '^(%d+)-')
        if #top > #ms or (#top == #ms and top > ms) then ms = top end
      end
    end
  end
  return ms .. '-*'
end
"""

# An order's place in its account's open set follows its hash (stored, and not terminal), then
# the hash's TTL is refreshed ('' = none).
_SETTLE_LUA = """
local function settle(key, open, id, ttl)
  if redis.call('HEXISTS', key, 'terminal') == 1 then
    redis.call('SREM', open, id)
  elseif redis.call('HEXISTS', key, 'order') == 1 then
    redis.call('SADD', open, id)
  end
  if ttl ~= '' then redis.call('EXPIRE', key, ttl) end
end
"""

# KEYS: order, open set   ARGV: blob, ttl, id
_ORDER_LUA = _SETTLE_LUA + """
if redis.call('HSETNX', KEYS[1], 'order', ARGV[1]) == 0 then return 0 end
settle(KEYS[1], KEYS[2], ARGV[3], ARGV[2])
return 1
"""

# KEYS: order, orders stream, open set
# ARGV: blob, ttl, id, marker field, progress, terminal ('1' | '0'), event ms, maxlen
_EVENT_LUA = _EVENT_ID_LUA + _SETTLE_LUA + """
local key = KEYS[1]
if redis.call('HEXISTS', key, ARGV[4]) == 1 then return 0 end
local sid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], event_id(KEYS[2], ARGV[7]), 'json', ARGV[1])
redis.call('HSET', key, ARGV[4], sid)
local cur = redis.call('HMGET', key, 'progress', 'terminal')
if not cur[2] and (ARGV[6] == '1' or not cur[1] or tonumber(ARGV[5]) >= tonumber(cur[1])) then
  redis.call('HSET', key, 'event', ARGV[1], 'progress', ARGV[5])
  if ARGV[6] == '1' then redis.call('HSET', key, 'terminal', '1') end
end
settle(key, KEYS[3], ARGV[3], ARGV[2])
return 1
"""

# KEYS: order, fills stream   ARGV: blob, ttl, fill field, event ms, maxlen
_FILL_LUA = _EVENT_ID_LUA + """
if redis.call('HSETNX', KEYS[1], ARGV[3], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], event_id(KEYS[2], ARGV[4]), 'json', ARGV[1])
if ARGV[2] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS: outcome, outcomes stream   ARGV: blob, ttl, event ms, maxlen
_OUTCOME_LUA = _EVENT_ID_LUA + """
if ARGV[2] ~= '' then
  if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
elseif not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], event_id(KEYS[2], ARGV[3]), 'json', ARGV[1])
return 1
"""

# How far along its life an event is: 4 x filled + the step's rank. An event is the order's
# latest unless a stored one is further along (or terminal).
_RANK = {"SUBMITTED": 0, "ACCEPTED": 1, "PARTIALLY_FILLED": 2}


# -- the store ------------------------------------------------------------------------------


class TradingStore:
    """Client of the trading key layout (see the module docstring).

    Writes are queued (never block, never raise for Valkey); bad records are counted in
    ``stats()["rejected"]`` (``"<kind>: <reason>"``) and dropped. Reads are synchronous and
    return None while Valkey is unreachable. ``write_behind_kwargs`` go to the writer
    (``max_queue``, ``chunk``, ``socket_timeout_s``, ``reconnect_*``)."""

    PAGE = 1_000  # stream entries per round trip of a scan

    def __init__(self, url: str, password: str | None = None, *, ttl: TradingTTL = TradingTTL(),
                 stream_maxlen: int = 100_000, **write_behind_kwargs: Any):
        if stream_maxlen < 1:
            raise ValueError(f"stream_maxlen must be >= 1, got {stream_maxlen}")
        for name in ("order_s", "position_s"):
            v = getattr(ttl, name)
            if v is not None and not (isinstance(v, int) and 1 <= v <= INT32_MAX):
                raise ValueError(f"ttl.{name} must be None or an integer in [1, {INT32_MAX}], got {v!r}")
        self.ttl = ttl
        self._url = url
        self._maxlen = stream_maxlen
        self._order_ttl = "" if ttl.order_s is None else str(ttl.order_s)
        self._client = connect(url, password, socket_timeout=write_behind_kwargs.get("socket_timeout_s", 2.0))
        self._wb = WriteBehind(url, password, name="trading-store", **write_behind_kwargs)
        del password  # only the clients' connection kwargs keep it
        self._counts: dict[str, dict[str, int]] = {"rejected": {}, "read_errors": {}, "bad_records": {}}
        self._ratelimit = RateLimit(10.0)
        self._lock = threading.Lock()  # counters: an actor may store from one thread and read from another
        self._group: list[tuple] | None = None  # the writes of an open transaction() block

    # -- writes -------------------------------------------------------------------------

    def store_order(self, order: Order) -> None:
        """The order in ``hmarl:order:<id>`` (first one wins) and its account's open set, queued."""
        try:
            _require((problem := order_problem(order)) is None, str(problem))
            _check_shape(order, Order)
            key, blob = self._order_key(order.client_order_id), _blob(order)
        except _Rejected as e:
            return self._count("rejected", f"order: {e}", "order not stored: %s", e)
        self._submit([("EVAL", _ORDER_LUA, 2, key, open_orders_key(order.account), blob, self._order_ttl,
                          order.client_order_id)])

    def store_order_event(self, event: OrderEvent) -> None:
        """The event on ``hmarl:orders:stream`` and, unless it is behind, as the order's latest;
        the open set follows. Once per (client order id, status, filled quantity), queued."""
        try:
            _check_shape(event, OrderEvent)
            _require(event.status in STATUSES, "bad_status")
            _require(event.filled_qty >= 0 and event.leaves_qty >= 0, "bad_quantity")
            key, blob = self._order_key(event.client_order_id), _blob(event)
        except _Rejected as e:
            return self._count("rejected", f"order event: {e}", "order event not stored: %s", e)
        terminal = event.status in TERMINAL
        progress = 4 * event.filled_qty + (3 if terminal else _RANK[event.status])
        self._submit([("EVAL", _EVENT_LUA, 3, key, ORDERS_STREAM, open_orders_key(event.account),
                          blob, self._order_ttl,
                          event.client_order_id, f"ev:{event.status}:{event.filled_qty}", progress,
                          "1" if terminal else "0", _ms(event), self._maxlen)])

    def store_fill(self, fill: Fill) -> None:
        """The fill on ``hmarl:fills:stream`` and in its order's hash, once per ``fill_id``, queued."""
        try:
            _check_shape(fill, Fill)
            _require(fill.side in SIDES, "bad_side")
            _require(fill.quantity > 0, "bad_quantity")
            _require(math.isfinite(fill.price) and fill.price > 0, "bad_price")
            _require(math.isfinite(fill.fees), "bad_fees")
            _require(fill.liquidity in (MAKER, TAKER), "bad_liquidity")
            _require(isinstance(fill.fill_id, str) and _ID_RE.fullmatch(fill.fill_id) is not None, "bad_fill_id")
            key, blob = self._order_key(fill.client_order_id), _blob(fill)
        except _Rejected as e:
            return self._count("rejected", f"fill: {e}", "fill not stored: %s", e)
        self._submit([("EVAL", _FILL_LUA, 2, key, FILLS_STREAM, blob, self._order_ttl,
                          f"fill:{fill.fill_id}", _ms(fill), self._maxlen)])

    def store_position(self, position: Position) -> None:
        """SET ``hmarl:position:<account>:<SYM>`` (TTL ``position_s``) and index the symbol, queued."""
        try:
            _check_shape(position, Position)
            blob = _blob(position)
        except _Rejected as e:
            return self._count("rejected", f"position: {e}", "position not stored: %s", e)
        expiry = () if self.ttl.position_s is None else ("EX", self.ttl.position_s)
        self._submit([("SET", position_key(position.account, position.symbol), blob, *expiry),
                         ("SADD", positions_key(position.account), position.symbol)])

    def store_outcome(self, outcome: DecisionOutcome) -> None:
        """The outcome on ``hmarl:outcomes:stream`` and under its key, once per (account, symbol,
        decision id, ``ts_open``), queued."""
        try:
            _check_shape(outcome, DecisionOutcome)
            _require(outcome.side in SIDES, "bad_side")
            _require(outcome.quantity > 0, "bad_quantity")
            _require(outcome.ts_open >= 0, "bad_ts_open")
            for name in ("entry_price", "exit_price"):
                _require(math.isfinite(getattr(outcome, name)) and getattr(outcome, name) > 0, f"bad_{name}")
            for name in ("gross_pnl", "fees", "net_pnl"):
                _require(math.isfinite(getattr(outcome, name)), f"bad_{name}")
            key = outcome_key(outcome.account, outcome.symbol, outcome.decision_id, outcome.ts_open)
            blob = _blob(outcome)
        except BadKeyPart as e:
            return self._count("rejected", f"outcome: {e.reason}", "outcome not stored: %s", e)
        except _Rejected as e:
            return self._count("rejected", f"outcome: {e}", "outcome not stored: %s", e)
        self._submit([("EVAL", _OUTCOME_LUA, 2, key, OUTCOMES_STREAM, blob, self._order_ttl, _ms(outcome),
                          self._maxlen)])

    def save_engine_state(self, account: str, state: dict) -> None:
        """SET ``hmarl:execution:<account>`` (no TTL) to ``state`` as JSON, queued."""
        try:
            key = engine_state_key(account)
            _require(isinstance(state, dict), "not_a_dict")
            blob = orjson.dumps(state)
        except (BadKeyPart, _Rejected, TypeError, orjson.JSONEncodeError) as e:
            reason = getattr(e, "reason", None) or (str(e) if isinstance(e, _Rejected) else "not_json")
            return self._count("rejected", f"engine state: {reason}", "engine state not stored: %s", e)
        self._submit([("SET", key, blob)])

    def load_engine_state(self, account: str) -> dict | None:
        """The stored engine state; {} when none is stored; None when Valkey is unreachable or the
        key holds no JSON object (counted): "unknown", never "nothing"."""
        key = self._valid(engine_state_key, account)
        if key is None:
            return None
        found = self._read("engine state", lambda: [self._client.get(key)])
        if found is None:
            return None
        if found[0] is None:
            return {}
        d = self._json("engine state", found[0])
        if not isinstance(d, dict):
            if d is not None:
                self._count("bad_records", "engine state", "a stored %s is no JSON object", "engine state")
            return None
        return d

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The writes made inside go to Valkey as one :class:`Transaction` when the block ends
        (all or nothing): an actor that stores a step's fills and the state it reached after
        them can never leave the fills without the state, or the state without the fills."""
        if self._group is not None:  # nested: the outer block sends everything
            yield
            return
        self._group = []
        try:
            yield
        finally:
            ops, self._group = self._group, None
            if ops:
                self._wb.submit([Transaction(ops)])

    def _submit(self, ops: list[tuple]) -> None:
        if self._group is not None:
            self._group.extend(ops)
        else:
            self._wb.submit(ops)

    def commit(self, timeout_s: float = 2.0) -> bool:
        """Wait for the writes queued so far while Valkey is reachable; return False at once when
        it is not: an order must survive a crash of its actor right after it was sent, but the
        actor must not wait out an outage (the queue keeps the writes then)."""
        return self._wb.connected and self._wb.flush(timeout_s)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait (during an outage too) until every write queued before this call is finished."""
        return self._wb.flush(timeout_s)

    # -- reads ----------------------------------------------------------------------------

    def load_open_orders(self, account: str) -> list[tuple[Order, OrderEvent | None]] | None:
        """The account's orders not in a terminal status, each with its latest event (None when
        only the order was stored), oldest order first. None when Valkey is unreachable. An id
        whose order expired is dropped from the open set."""
        try:
            open_key = open_orders_key(account)
        except ValueError:
            self._count("rejected", "read: bad account", "bad account to read: %r", account)
            return []

        def fetch() -> list[tuple[bytes, list]]:
            ids = sorted(i.decode("utf-8", "replace") for i in self._client.smembers(open_key))
            keys = {i: k for i in ids if (k := self._valid(order_key, i)) is not None}
            pipe = self._client.pipeline(transaction=False)
            for k in keys.values():
                pipe.hmget(k, "order", "event")
            return list(zip(keys, pipe.execute())) if keys else []

        rows = self._read("open orders", fetch)
        if rows is None:
            return None
        out, gone = [], []
        for coid, (order_raw, event_raw) in rows:
            if order_raw is None:
                gone.append(coid)
                continue
            order = self._decode("order", order_raw, Order)
            event = None if event_raw is None else self._decode("order event", event_raw, OrderEvent)
            if order is not None:
                out.append((order, event))
        if gone and self._read("open orders", lambda: self._client.srem(open_key, *gone)) is None:
            return None
        return sorted(out, key=lambda pair: (pair[0].ts_event, pair[0].client_order_id))

    def load_positions(self, account: str) -> list[Position] | None:
        """The account's stored positions, by symbol; None when Valkey is unreachable."""
        try:
            index = positions_key(account)
        except ValueError:
            self._count("rejected", "read: bad account", "bad account to read: %r", account)
            return []

        def fetch() -> list:
            symbols = sorted(s.decode("utf-8", "replace") for s in self._client.smembers(index))
            keys = [k for s in symbols if (k := self._valid(lambda sym: position_key(account, sym), s)) is not None]
            return self._client.mget(keys) if keys else []

        blobs = self._read("positions", fetch)
        if blobs is None:
            return None
        return [p for p in (self._decode("position", b, Position) for b in blobs if b is not None) if p is not None]

    def order(self, client_order_id: str) -> dict | None:
        """``{"order": ..., "event": ..., "fills": [...]}`` as JSON gives them back (NaN as None;
        fills by event time), or None when nothing is stored under the id or Valkey is unreachable."""
        try:
            key = order_key(client_order_id)
        except ValueError:
            return None
        h = self._read("order", lambda: self._client.hgetall(key))
        if not h:
            return None
        fields = {k.decode(): v for k, v in h.items()}
        out: dict[str, Any] = {name: self._json("order", fields.get(name)) for name in ("order", "event")}
        fills = [self._json("fill", v) for k, v in fields.items() if k.startswith("fill:")]
        out["fills"] = sorted((f for f in fills if isinstance(f, dict) and isinstance(f.get("ts_event"), int)),
                              key=lambda f: (f["ts_event"], str(f.get("fill_id"))))
        return out

    def fill_entries_since(self, cursor: int | str, *, account: str | None = None,
                           symbol: str | None = None) -> list[tuple[str, Fill]] | None:
        """``(stream id, Fill)`` of the fills stream in stream order, from ``cursor``: an event time
        in ns (fills with ``ts_event >= cursor``) or a stream id (the entries after it, e.g. the
        last one a restarted actor had processed). Optionally of one account and symbol. None when
        Valkey is unreachable; [] (counted) for a cursor of neither kind."""
        return self._entries_since(FILLS_STREAM, "fill", Fill, cursor, account, symbol)

    def outcome_entries_since(self, cursor: int | str, *, account: str | None = None,
                              symbol: str | None = None) -> list[tuple[str, DecisionOutcome]] | None:
        """``(stream id, DecisionOutcome)`` of the outcomes stream, from ``cursor`` (an event time
        in ns, or a stream id), as :meth:`fill_entries_since` reads the fills stream."""
        return self._entries_since(OUTCOMES_STREAM, "outcome", DecisionOutcome, cursor, account, symbol)

    def outcomes_since(self, cursor: int | str, *, account: str | None = None,
                       symbol: str | None = None) -> list[DecisionOutcome] | None:
        """The outcomes of :meth:`outcome_entries_since`, without their stream ids."""
        entries = self.outcome_entries_since(cursor, account=account, symbol=symbol)
        return None if entries is None else [o for _i, o in entries]

    def fills_since(self, cursor: int | str, *, account: str | None = None,
                    symbol: str | None = None) -> list[Fill] | None:
        """The fills of :meth:`fill_entries_since`, without their stream ids."""
        entries = self.fill_entries_since(cursor, account=account, symbol=symbol)
        return None if entries is None else [f for _i, f in entries]

    def recent_fills(self, n: int = 10) -> list[Fill] | None:
        """The newest ``n`` fills of the stream, newest first; None when Valkey is unreachable."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            return []
        entries = self._read("fills", lambda: self._client.xrevrange(FILLS_STREAM, "+", "-", count=n))
        return None if entries is None else [f for _i, f in self._decoded("fill", Fill, entries)]

    # -- lifecycle ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The writer's counters (per Valkey op); rejected records, failed reads and records that
        did not decode, by reason."""
        with self._lock:
            own = {k: dict(v) for k, v in self._counts.items()}
        return {"write_behind": self._wb.stats(), **own}

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush (up to ``timeout_s``), stop the writer, close the connection; may be called again."""
        ok = self._wb.close(timeout_s)
        self._client.close()
        return ok

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _order_key(client_order_id: Any) -> str:
        try:
            return order_key(client_order_id)
        except BadKeyPart as e:
            raise _Rejected(e.reason) from None

    def _count(self, counter: str, reason: str, msg: str, *args: Any) -> None:
        """Count under ``reason``; log at most one line per reason and interval."""
        with self._lock:
            c = self._counts[counter]
            c[reason] = c.get(reason, 0) + 1
            suppressed = self._ratelimit(f"{counter}:{reason}")
        if suppressed is not None:
            log.warning("trading store: " + msg + "%s", *args, suppressed_note(suppressed))

    def _read(self, what: str, fetch: Callable[[], Any]) -> Any:
        """``fetch()``, or None (counted) when Valkey is unreachable or answers with an error
        (a key of another type: someone else wrote it)."""
        try:
            return fetch()
        except (*CONN_ERRORS, ResponseError) as e:
            self._count("read_errors", what, "reading %s from %s failed (%s: %s)", what, redact(self._url),
                        type(e).__name__, e)
            return None

    def _valid(self, build: Callable[[str], str], part: str) -> str | None:
        """``build(part)``, or None (counted) when a stored name cannot be a key part."""
        try:
            return build(part)
        except BadKeyPart as e:
            self._count("bad_records", "key part", "a stored name is no key part (%s)", e)
            return None

    def _json(self, what: str, raw: bytes | None) -> Any:
        """``raw`` decoded; None when absent, or (counted) when someone else wrote no JSON there."""
        try:
            return None if raw is None else orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._count("bad_records", what, "a stored %s is not JSON", what)
            return None

    def _decode(self, what: str, raw: bytes | None, cls: type) -> Any:
        """The ``cls`` stored as ``raw``, or None (counted) for anything else."""
        try:
            msg = trading_from_dict(orjson.loads(raw))  # TypeError: no value at all
            if type(msg) is cls:
                return msg
            problem = f"a {type(msg).__name__}"
        except (TypeError, ValueError) as e:  # orjson.JSONDecodeError is a ValueError
            problem = str(e)
        self._count("bad_records", what, "a stored %s does not decode (%s)", what, problem)
        return None

    def _entries_since(self, stream: str, what: str, cls: type, cursor: Any, account: str | None,
                       symbol: str | None) -> list[tuple[str, Any]] | None:
        """The ``cls`` records of ``stream`` from ``cursor`` (see :meth:`fill_entries_since`)."""
        if isinstance(cursor, int) and not isinstance(cursor, bool) and cursor >= 0:
            start, min_ts = f"{cursor // NS_PER_MS}-0", cursor
        elif isinstance(cursor, str) and _STREAM_ID_RE.fullmatch(cursor):
            start, min_ts = "(" + cursor, 0
        else:
            self._count("rejected", "read: bad cursor", f"bad {what}s cursor: %r", cursor)
            return []

        def fetch() -> list[tuple[bytes, dict]]:
            return list(scan_stream(self._client.xrange, stream, start, "+", count=100, max_count=self.PAGE))

        entries = self._read(f"{what}s", fetch)
        if entries is None:
            return None
        return [(i, r) for i, r in self._decoded(what, cls, entries)
                if r.ts_event >= min_ts and account in (None, r.account) and symbol in (None, r.symbol)]

    def _decoded(self, what: str, cls: type, entries: Iterable[tuple[bytes, dict]]) -> list[tuple[str, Any]]:
        """``(stream id, record)`` of the entries whose ``json`` decodes to a ``cls`` (others counted)."""
        out = []
        for entry_id, fields in entries:
            r = self._decode(what, fields.get(b"json"), cls)
            if r is not None:
                out.append((entry_id.decode(), r))
        return out
