"""The order wire format of the DLL host: commands in on a ROUTER, order updates out on a PUB.

This module owns the order service's ports and every byte it puts on the wire; the host side
(:mod:`pipelines.adapters.bridge.order_service`) and the pipeline side
(:mod:`pipelines.adapters.bridge.order_client`) both speak through it. The conventions are the
market-data bridge's (:mod:`pipelines.adapters.bridge.protocol`): orjson, every message led by the
protocol :data:`VERSION` (one version for the whole bridge), errors raised as
:class:`~pipelines.adapters.bridge.protocol.ProtocolError` /
:class:`~pipelines.adapters.bridge.protocol.VersionMismatch` whose text is one line.

**Commands** (ROUTER, default port :data:`DEFAULT_ORDER_PORT`; the client is a DEALER, one frame
each way, orjson objects; a REQ socket works too, answered in its own envelope)::

    {"v": VERSION, "cmd": <name>, "rid": <request id>, [<arguments>], ["token": <shared token>]}

``rid`` is the client's id of one request. A request re-sent after a timeout is the *same*
bytes, so the same ``rid``: the reply echoes it and the client drops replies to requests it has
given up on. ``coid`` is our client order id (:func:`pipelines.model.orders.client_order_id`);
a ``send`` is identified by it for good (a coid is sent at most once, ever). ``token`` is checked
by the host when it has one (required off 127.0.0.1); it is never echoed, logged or stored.
Commands and their arguments (:data:`COMMANDS`; each is decoded into the NamedTuple named here):

- ``send`` :class:`SendCommand` ``{coid, symbol, side BUY|SELL, type MARKET|LIMIT|STOP_LIMIT,
  quantity, price, stop_price}``: ``price`` null for MARKET, > 0 otherwise; ``stop_price`` > 0
  for STOP_LIMIT, null otherwise.
- ``change`` :class:`ChangeCommand` ``{coid, price, stop_price, quantity}``.
- ``cancel`` :class:`CancelCommand` ``{coid}``; ``cancel_all`` ``{}``.
- ``zero`` :class:`ZeroCommand` ``{symbol, [coid]}``: close the position at market.
- ``orders`` ``{}``: every order of the account at the broker, as order-update bodies.
- ``positions`` :class:`PositionsCommand` ``{symbols}``; ``resync`` :class:`ResyncCommand`
  ``{from_seq, [max_updates]}``; ``status`` ``{}``.

Replies ``{"v": VERSION, "ok": bool, "rid": <echo>, ...}``, with ``"error"`` (one line) when
``ok`` is false; ``"unknown": true`` marks a command whose outcome the host cannot know (it died
inside the DLL call; ``orders`` tells the truth).

**Order updates** (PUB, default port :data:`DEFAULT_ORDER_PUB_PORT`), two frames
``[topic, payload]``, topic :func:`order_topic` = ``ord.<account>|`` for updates and heartbeats
alike (one subscription gets both; the ``|`` keeps ``ord.308:12|`` from matching ``308:123``)::

    [VERSION, "u", incarnation, seq, body]      body: an OrderUpdate or MessageUpdate as an object
    [VERSION, "h", incarnation, ts_ns, last_seq]

Seqs count from 1 per host incarnation (a new incarnation = the host restarted). Updates are
*cumulative* (``filled``, ``avg_price`` of the whole order so far): a consumer derives each fill
from the difference with the previous update of the same order, so a lost or repeated update
never loses or doubles a fill.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import orjson

from pipelines.adapters.bridge.protocol import VERSION, ProtocolError, VersionMismatch, load_request
from pipelines.model.orders import LIMIT, ORDER_TYPES, SIDES, STATUSES, STOP_LIMIT
from pipelines.model.settings import SYMBOL_RE

__all__ = ["VERSION", "ProtocolError", "VersionMismatch"]  # re-exported: one import for both sides

# 5555-5561: pipelines.edges.zmq; 5562/5563: the market-data bridge; the order service takes the next two.
DEFAULT_ORDER_PORT = 5564
DEFAULT_ORDER_PUB_PORT = 5565

ORDER_TOPIC_PREFIX = b"ord."
MAX_REQUEST_BYTES = 64 * 1024  # the ROUTER drops a peer sending more (ZMQ_MAXMSGSIZE): no command is that big
MAX_ID_LEN = 128  # coid, rid, account: longer is not an id of ours
MAX_SYMBOLS = 64  # per positions request
MAX_QUANTITY = 1_000_000  # contracts per order: beyond any B3 futures limit, far below int overflow

UPDATE, HEARTBEAT = "u", "h"
ORDER_KIND, MESSAGE_KIND = "order", "message"


def order_topic(account: str) -> bytes:
    """The PUB topic of one account's order updates and heartbeats."""
    return ORDER_TOPIC_PREFIX + account.encode("utf-8") + b"|"


class RequestTimeout(TimeoutError):
    """No reply within the time the caller gave (every retry included). The command may or may
    not have reached the host: re-sending it with the same ``coid`` is safe (the host dedupes)."""


# -- commands ---------------------------------------------------------------------------------


class SendCommand(NamedTuple):
    coid: str
    symbol: str
    side: str  # BUY | SELL
    order_type: str  # MARKET | LIMIT | STOP_LIMIT (wire name "type")
    quantity: int
    price: float | None  # None for MARKET
    stop_price: float | None  # None unless STOP_LIMIT


class ChangeCommand(NamedTuple):
    coid: str
    price: float | None
    stop_price: float | None
    quantity: int


class CancelCommand(NamedTuple):
    coid: str


class CancelAllCommand(NamedTuple):
    pass


class ZeroCommand(NamedTuple):
    symbol: str
    coid: str | None  # optional: the zeroing order's id (the host makes one when absent)


class OrdersCommand(NamedTuple):
    pass


class PositionsCommand(NamedTuple):
    symbols: tuple[str, ...]


class ResyncCommand(NamedTuple):
    from_seq: int
    max_updates: int | None


class StatusCommand(NamedTuple):
    pass


class Request(NamedTuple):
    """One decoded command: ``body`` is the command's NamedTuple; ``token`` as sent (or None)."""

    cmd: str
    rid: str | None
    body: Any
    token: str | None


# cmd -> its NamedTuple; the arguments each takes are that tuple's fields (wire "type" = order_type).
COMMANDS: dict[str, type] = {
    "send": SendCommand, "change": ChangeCommand, "cancel": CancelCommand, "cancel_all": CancelAllCommand,
    "zero": ZeroCommand, "orders": OrdersCommand, "positions": PositionsCommand, "resync": ResyncCommand,
    "status": StatusCommand,
}
# Commands that create or move an order: the host's rate cap applies to them. Cancels never
# wait for it: they only take risk off.
RATE_CAPPED = frozenset({"send", "change", "zero"})
_ENVELOPE = frozenset({"v", "cmd", "rid", "token"})


def _id(cmd: str, name: str, value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if type(value) is not str or not value:
        raise ProtocolError(f"{cmd}: {name} must be a non-empty string, got {_shown(value)}")
    if len(value) > MAX_ID_LEN or not value.isprintable():
        raise ProtocolError(f"{cmd}: {name} must be at most {MAX_ID_LEN} printable characters")
    return value


def _symbol(cmd: str, value: Any) -> str:
    if type(value) is not str or not SYMBOL_RE.match(value):
        raise ProtocolError(f"{cmd}: bad symbol {_shown(value)} (expected 2-12 of A-Z 0-9, e.g. WDOZ26)")
    return value


def _quantity(cmd: str, value: Any) -> int:
    if type(value) is not int or not 0 < value <= MAX_QUANTITY:
        raise ProtocolError(f"{cmd}: quantity must be an integer 1..{MAX_QUANTITY}, got {_shown(value)}")
    return value


def _price(cmd: str, name: str, value: Any, required: bool) -> float | None:
    """A positive finite price, or None where the order type takes none (null on the wire)."""
    if value is None:
        if required:
            raise ProtocolError(f"{cmd}: {name} is required for this order")
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
        raise ProtocolError(f"{cmd}: {name} must be a positive number, got {_shown(value)}")
    if not required:
        raise ProtocolError(f"{cmd}: {name} must be null for this order type, got {_shown(value)}")
    return float(value)


def _shown(value: Any) -> str:
    """A short, one-line rendering of a bad value for an error message."""
    text = repr(value)
    return (text[:40] + "...") if len(text) > 43 else text


def _decode_body(cmd: str, a: dict) -> Any:
    if cmd == "send":
        side, otype = a.get("side"), a.get("type")
        if side not in SIDES:
            raise ProtocolError(f"send: side must be BUY or SELL, got {_shown(side)}")
        if otype not in ORDER_TYPES:
            raise ProtocolError(f"send: type must be one of {', '.join(ORDER_TYPES)}, got {_shown(otype)}")
        return SendCommand(_id(cmd, "coid", a.get("coid")), _symbol(cmd, a.get("symbol")), side, otype,
                           _quantity(cmd, a.get("quantity")),
                           _price(cmd, "price", a.get("price"), otype in (LIMIT, STOP_LIMIT)),
                           _price(cmd, "stop_price", a.get("stop_price"), otype == STOP_LIMIT))
    if cmd == "change":
        stop = a.get("stop_price")
        return ChangeCommand(_id(cmd, "coid", a.get("coid")), _price(cmd, "price", a.get("price"), True),
                             _price(cmd, "stop_price", stop, stop is not None), _quantity(cmd, a.get("quantity")))
    if cmd == "cancel":
        return CancelCommand(_id(cmd, "coid", a.get("coid")))
    if cmd == "zero":
        return ZeroCommand(_symbol(cmd, a.get("symbol")), _id(cmd, "coid", a.get("coid"), optional=True))
    if cmd == "positions":
        symbols = a.get("symbols")
        if type(symbols) is not list or not 0 < len(symbols) <= MAX_SYMBOLS:
            raise ProtocolError(f"positions: symbols must be a list of 1..{MAX_SYMBOLS} symbols")
        return PositionsCommand(tuple(dict.fromkeys(_symbol(cmd, s) for s in symbols)))
    if cmd == "resync":
        first, most = a.get("from_seq"), a.get("max_updates")
        if type(first) is not int or first < 1:
            raise ProtocolError(f"resync: from_seq must be an integer >= 1, got {_shown(first)}")
        if most is not None and (type(most) is not int or most < 1):
            raise ProtocolError(f"resync: max_updates must be an integer >= 1, got {_shown(most)}")
        return ResyncCommand(first, most)
    return COMMANDS[cmd]()  # cancel_all, orders, status: no arguments


def _allowed_args(cmd: str) -> set[str]:
    fields = set(COMMANDS[cmd]._fields)
    if cmd == "send":
        fields = (fields - {"order_type"}) | {"type"}
    return fields


def encode_command(cmd: str, rid: str | None = None, token: str | None = None, **args: Any) -> bytes:
    """The request bytes. ``args`` use the wire names (``type`` for the order type)."""
    msg: dict[str, Any] = {"v": VERSION, "cmd": cmd}
    if rid is not None:
        msg["rid"] = rid
    msg.update(args)
    if token is not None:
        msg["token"] = token
    return orjson.dumps(msg)


def peek_rid(payload: bytes) -> str | None:
    """The request id of a request that may be malformed (to address the error reply), or None."""
    if len(payload) > MAX_REQUEST_BYTES:
        return None
    try:
        req = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    rid = req.get("rid") if isinstance(req, dict) else None
    return rid if type(rid) is str and 0 < len(rid) <= MAX_ID_LEN and rid.isprintable() else None


def decode_command(payload: bytes) -> Request:
    """A :class:`Request` from the request bytes. Raises :class:`ProtocolError` naming what is
    wrong (never quoting the token), :class:`VersionMismatch` for another protocol version."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise ProtocolError(f"request of {len(payload)} bytes is over the {MAX_REQUEST_BYTES} byte limit")
    req = load_request(payload)
    cmd = req.get("cmd")
    if type(cmd) is not str or cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {_shown(cmd)} (known: {', '.join(COMMANDS)})")
    rid = _id(cmd, "rid", req.get("rid"), optional=True)
    token = req.get("token")
    if token is not None and type(token) is not str:
        raise ProtocolError(f"{cmd}: token must be a string")
    args = {k: v for k, v in req.items() if k not in _ENVELOPE}
    unexpected = sorted(set(args) - _allowed_args(cmd))
    if unexpected:
        raise ProtocolError(f"{cmd}: unexpected argument(s) {', '.join(_shown(k) for k in unexpected[:5])}")
    return Request(cmd, rid, _decode_body(cmd, args), token)


def encode_reply(ok: bool, rid: str | None, **fields: Any) -> bytes:
    return orjson.dumps({"v": VERSION, "ok": ok, "rid": rid, **fields}, default=str)


def error_reply(rid: str | None, problem: str, **fields: Any) -> bytes:
    return encode_reply(False, rid, error=problem, **fields)


def decode_reply(payload: bytes) -> dict:
    """A reply object. Raises :class:`VersionMismatch` or :class:`ProtocolError`."""
    try:
        rep = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ProtocolError("reply is not JSON") from None
    if not isinstance(rep, dict) or type(rep.get("ok")) is not bool:
        raise ProtocolError("reply is not an order-service reply object")
    if rep.get("v") != VERSION:
        raise VersionMismatch(rep.get("v"))
    return rep


# -- order updates ----------------------------------------------------------------------------


class OrderUpdate(NamedTuple):
    """One order's state at the broker after a DLL order callback (or a snapshot the host read).

    ``status`` is our lifecycle status (:mod:`pipelines.model.orders`), ``dll_status`` the DLL's
    ``TConnectorOrderStatus`` code and ``dll_status_name`` its name; ``text`` the DLL's own text.
    ``filled``/``avg_price`` are cumulative for the whole order. ``coid`` is None for an order
    the host cannot tie to one of ours (placed by hand in Profit, or before its journal)."""

    seq: int
    incarnation: str
    coid: str | None
    local_id: int
    cl_ord_id: str
    symbol: str
    status: str
    dll_status: int
    dll_status_name: str
    filled: int
    leaves: int
    avg_price: float
    price: float
    stop_price: float
    quantity: int
    side: str
    text: str
    ts_event: int
    shadow: bool
    kind: str = ORDER_KIND  # a field too, so ``_asdict()`` says what it is

    KIND = ORDER_KIND


class MessageUpdate(NamedTuple):
    """A trading-message result (``SetTradingMessageResultCallback``): what the trading server
    did with one message we sent; ``code``/``name`` the DLL's result code and its name,
    ``rejection`` true for a final refusal, ``text`` the DLL's own words."""

    seq: int
    incarnation: str
    coid: str | None
    local_id: int
    message_id: int
    cl_ord_id: str
    code: int
    name: str
    rejection: bool
    text: str
    ts_event: int
    shadow: bool
    kind: str = MESSAGE_KIND

    KIND = MESSAGE_KIND


class OrderHeartbeat(NamedTuple):
    incarnation: str
    ts_ns: int
    last_seq: int


UPDATE_TYPES: dict[str, type] = {ORDER_KIND: OrderUpdate, MESSAGE_KIND: MessageUpdate}
# Field types of each update body (seq and incarnation come from the header).
_BODY_TYPES: dict[str, dict[str, tuple]] = {
    ORDER_KIND: {"coid": (str, type(None)), "local_id": (int,), "cl_ord_id": (str,), "symbol": (str,),
                 "status": (str,), "dll_status": (int,), "dll_status_name": (str,), "filled": (int,),
                 "leaves": (int,), "avg_price": (float, int), "price": (float, int), "stop_price": (float, int),
                 "quantity": (int,), "side": (str,), "text": (str,), "ts_event": (int,), "shadow": (bool,)},
    MESSAGE_KIND: {"coid": (str, type(None)), "local_id": (int,), "message_id": (int,), "cl_ord_id": (str,),
                   "code": (int,), "name": (str,), "rejection": (bool,), "text": (str,), "ts_event": (int,),
                   "shadow": (bool,)},
}


def update_body(update: OrderUpdate | MessageUpdate) -> dict:
    """The wire object of an update: its fields without seq and incarnation, plus its kind."""
    body = update._asdict()
    del body["seq"], body["incarnation"]
    return body


def encode_update(topic: bytes, incarnation: str, seq: int, body: dict) -> list[bytes]:
    """The two frames of one update (``body`` from :func:`update_body`)."""
    return [topic, orjson.dumps([VERSION, UPDATE, incarnation, seq, body])]


def encode_heartbeat(topic: bytes, incarnation: str, ts_ns: int, last_seq: int) -> list[bytes]:
    return [topic, orjson.dumps([VERSION, HEARTBEAT, incarnation, ts_ns, last_seq])]


def decode_body(incarnation: str, seq: int, body: Any) -> OrderUpdate | MessageUpdate:
    """An update from its wire object (a ``resync`` reply carries these too)."""
    if not isinstance(body, dict):
        raise ProtocolError("update body is not an object")
    kind = body.get("kind")
    types = _BODY_TYPES.get(kind) if type(kind) is str else None
    if types is None:
        raise ProtocolError(f"unknown update kind {_shown(kind)}")
    values = []
    for name, allowed in types.items():
        v = body.get(name)
        # bool is an int subclass: an exact type test keeps True out of the int fields.
        if type(v) not in allowed:
            raise ProtocolError(f"{kind} update: field {name!r} is {type(v).__name__}")
        values.append(float(v) if allowed[0] is float else v)
    if kind == ORDER_KIND and body["status"] not in STATUSES:
        raise ProtocolError(f"order update: unknown status {_shown(body['status'])}")
    return UPDATE_TYPES[kind](seq, incarnation, *values)


def decode_order_message(frames: list[bytes]) -> OrderUpdate | MessageUpdate | OrderHeartbeat:
    """A PUB message from its frames. Raises :class:`VersionMismatch` or :class:`ProtocolError`."""
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames (topic, payload), got {len(frames)}")
    try:
        msg = orjson.loads(frames[1])
    except orjson.JSONDecodeError as e:
        raise ProtocolError(f"payload is not JSON: {e}") from None
    if not isinstance(msg, list) or len(msg) < 2:
        raise ProtocolError("payload is not an order-service message array")
    if msg[0] != VERSION:
        raise VersionMismatch(msg[0])
    kind = msg[1]
    if kind == UPDATE and len(msg) == 5:
        _, _, inc, seq, body = msg
        if type(inc) is str and type(seq) is int and seq >= 1:
            return decode_body(inc, seq, body)
        raise ProtocolError("malformed order update header")
    if kind == HEARTBEAT and len(msg) == 5:
        _, _, inc, ts, last = msg
        if type(inc) is str and type(ts) is int and type(last) is int and last >= 0:
            return OrderHeartbeat(inc, ts, last)
        raise ProtocolError("malformed order heartbeat")
    raise ProtocolError(f"unknown message kind {_shown(kind)}")


# What a MARKET order's absent prices are in the DLL's terms (docs §4.2: market Price = -1,
# non-stop StopPrice = -1).
NO_PRICE = -1.0


def dll_price(value: float | None) -> float:
    return NO_PRICE if value is None else value


def is_local_endpoint(endpoint: str) -> bool:
    """True for an endpoint only this machine can reach through TCP loopback (127.0.0.1 / localhost / ::1)."""
    return endpoint.startswith(("tcp://127.0.0.1:", "tcp://localhost:", "tcp://[::1]:"))

