"""The message schema: every event that travels between actors.

This module owns the message types. Each is a ``typing.NamedTuple``: typed,
immutable, and about 3.5x cheaper to pickle than a frozen dataclass, which
matters because every micro-batch is pickled once per actor hop.

Common header on every event:

- ``symbol``   contract code, e.g. ``WDOZ26``
- ``ts_event`` exchange event time, integer nanoseconds since the Unix epoch
  (UTC). All pipeline logic (candles, windows, calendars) uses this clock.
- ``ts_recv``  local receive time, integer nanoseconds (wall clock). Used only
  to measure latency; never for windows or decisions.
- ``seq``      per-source sequence number, strictly increasing per symbol
  across all event kinds of that source. Receivers drop ``seq <= last``.

Trade type codes are ProfitDLL's ``TTradeType`` enumeration, value for value, so
the DLL adapter passes them through unchanged.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any, NamedTuple, Union


class TradeType(IntEnum):
    """ProfitDLL trade type codes (TTradeType)."""

    ZERO = 0
    CROSS = 1
    BUY_AGGRESSOR = 2  # buyer lifted the offer
    SELL_AGGRESSOR = 3  # seller hit the bid
    AUCTION = 4
    SURVEILLANCE = 5
    EXPIT = 6
    OPTIONS_EXERCISE = 7
    OTC = 8
    DERIVATIVE_TERM = 9
    INDEX = 10
    BTC = 11
    ON_BEHALF = 12
    RLP = 13
    BBT = 14
    RFQ = 15
    MPT = 16
    TAC = 17
    TAA = 18
    UNKNOWN = 32
    UPDATE = 33
    MID = 34
    OFF_EXCHANGE = 35


TRADE_TYPE_CODES = frozenset(int(t) for t in TradeType)


class Side(IntEnum):
    """Book side, ProfitDLL convention (0 buy/bid, 1 sell/ask)."""

    BID = 0
    ASK = 1


class BookAction(IntEnum):
    """Offer-book action, ProfitDLL ``TConnectorActionType``."""

    ADD = 0
    EDIT = 1
    DELETE = 2
    DELETE_FROM = 3
    FULL_BOOK = 4


class Trade(NamedTuple):
    """One print on the tape."""

    symbol: str
    ts_event: int
    ts_recv: int
    seq: int
    price: float
    qty: int
    trade_type: int
    buyer: int = 0  # buying broker (agent) id, 0 when unknown
    seller: int = 0  # selling broker (agent) id, 0 when unknown
    trade_id: int = 0  # exchange trade number

    KIND = "tick"

    @property
    def aggressor(self) -> int:
        """+1 buyer aggressor, -1 seller aggressor, 0 otherwise (auction, cross, RLP...)."""
        if self.trade_type == TradeType.BUY_AGGRESSOR:
            return 1
        if self.trade_type == TradeType.SELL_AGGRESSOR:
            return -1
        return 0


class BookSnapshot(NamedTuple):
    """Top-N levels of the price book after an event. Index 0 is the best level."""

    symbol: str
    ts_event: int
    ts_recv: int
    seq: int
    bid_px: tuple[float, ...]
    bid_qty: tuple[int, ...]
    ask_px: tuple[float, ...]
    ask_qty: tuple[int, ...]

    KIND = "book"

    @property
    def best_bid(self) -> float | None:
        return self.bid_px[0] if self.bid_px else None

    @property
    def best_ask(self) -> float | None:
        return self.ask_px[0] if self.ask_px else None


class BookUpdate(NamedTuple):
    """One offer-book change as ProfitDLL reports it (position counts from the top)."""

    symbol: str
    ts_event: int
    ts_recv: int
    seq: int
    side: int
    action: int
    position: int
    price: float
    qty: int
    agent: int = 0
    offer_id: int = 0

    KIND = "book_update"


# The fields every one-minute bar on event time starts with: a Candle here, a footprint
# bar (pipelines.features.footprint) there. Declared once so the two cannot drift apart.
BAR_HEAD: tuple[tuple[str, type], ...] = (
    ("symbol", str),
    ("ts_open", int),  # the minute's start, ns
    ("open", float),
    ("high", float),
    ("low", float),
    ("close", float),
    ("volume", int),
)


class Candle(NamedTuple("Candle", [*BAR_HEAD, ("buy_volume", int), ("sell_volume", int), ("trades", int),
                                   ("seq", int)])):
    """A one-minute OHLCV bar built from trades on event time.

    ``ts_open`` is the minute's start (ns). ``buy_volume``/``sell_volume`` are
    aggressor volumes (trade types 2/3); other prints count in ``volume`` only.
    ``seq`` is the sequence number of the last trade folded in.
    """

    __slots__ = ()
    KIND = "candle"


# -- analytics: what the FeatureEngine emits ------------------------------------
# Same header as the events. ``seq`` is the seq of the event after which the
# message was computed, so several messages may share one seq; subscribers
# order by (seq, kind). Values are NaN while a feature warms up (JSON: null).


class FeatureVector(NamedTuple("FeatureVector", [
    # symbol, ts_event, ts_recv, seq, price, qty: those of the trade after which it was computed,
    # declared by Trade so the two stay one layout
    *((name, Trade.__annotations__[name]) for name in Trade._fields[:6]),
    ("aggressor", int),  # +1 buyer, -1 seller, 0 auction/cross/other
    ("names", tuple[str, ...]),
    ("values", tuple[float, ...]),
])):
    """The full feature vector after one trade: the 65 core + the flow-enhanced set.

    ``names`` is one shared tuple (pickled once per batch); the wire form turns
    ``names`` + ``values`` into one ``values`` object."""

    __slots__ = ()
    KIND = "features"

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.values))


class _NamedValues(NamedTuple):
    """The layout the flow and liquidity states share: the header and named values.
    They differ only in their kind (and what the values mean)."""

    symbol: str
    ts_event: int
    ts_recv: int
    seq: int
    values: dict[str, float]


class FlowState(_NamedValues):
    """Order flow over the event-time windows: OFI (raw, normalized, ratio), trade flow,
    aggression, size categories, tape speed, VPIN and the flow-enhanced features."""

    __slots__ = ()
    KIND = "flow"


class LiquidityState(_NamedValues):
    """Top of book and depth: spread in ticks, depth, imbalances, microprice, liquidity score."""

    __slots__ = ()
    KIND = "liquidity"


class FootprintState(NamedTuple):
    """One footprint bar: ``closed`` True once its minute is over, False for the forming bar."""

    symbol: str
    ts_event: int
    ts_recv: int
    seq: int
    closed: bool
    bar: dict[str, Any]

    KIND = "footprint"


class TapeSignal(NamedTuple):
    """A detected tape pattern (``pattern``: "sweep" or "iceberg") with its confidence in [0, 1]."""

    symbol: str
    ts_event: int
    ts_recv: int
    seq: int
    pattern: str
    side: int  # +1 buy side, -1 sell side
    price: float
    confidence: float
    details: dict[str, Any]

    KIND = "tape"


# -- decisions: agents, ML, coordinator, feedback -------------------------------


class Signal(NamedTuple):
    """One voter's view after an event: direction in [-1, 1], confidence in [0, 1].

    ``price`` is the last trade price when the signal was formed: the entry
    reference for its realized outcome ``horizon_ns`` of event time later.
    ``raw_direction`` is the rule's direction before the learning layer chose
    ``action`` ("act" keeps it, "fade" flips it, "abstain" zeroes it) in the
    discretized ``context``. ``valid_ns``: how long after ``ts_event`` the
    signal still describes the market (a footprint bar's vote holds until the
    next bar closes); 0 = the coordinator's ``signal_ttl_ns``. Last, with a
    default, so older constructors and saved signals without it still work."""

    agent: str
    symbol: str
    ts_event: int
    seq: int
    direction: float
    confidence: float
    horizon_ns: int
    price: float
    reasons: tuple[str, ...]
    context: str = ""
    action: str = "act"
    raw_direction: float = 0.0
    valid_ns: int = 0

    KIND = "signal"


def signal_problem(signal: Signal) -> str | None:
    """Why a signal cannot be used ("direction", "confidence", "price", "horizon", "valid_ns"), or None."""
    d, c = signal.direction, signal.confidence
    if not (isinstance(d, (int, float)) and math.isfinite(d) and -1.0 <= d <= 1.0):
        return "direction"
    if not (isinstance(c, (int, float)) and math.isfinite(c) and 0.0 <= c <= 1.0):
        return "confidence"
    if not (isinstance(signal.price, (int, float)) and math.isfinite(signal.price) and signal.price > 0):
        return "price"
    if not (isinstance(signal.horizon_ns, int) and signal.horizon_ns > 0):
        return "horizon"
    if not (isinstance(signal.valid_ns, int) and not isinstance(signal.valid_ns, bool) and signal.valid_ns >= 0):
        return "valid_ns"
    return None


class Decision(NamedTuple):
    """The coordinator's consensus. ``decision_id`` is derived from (symbol, seq), so
    the same inputs give the same id and a re-sent decision is idempotent."""

    decision_id: str
    symbol: str
    ts_event: int
    seq: int
    action: str  # "BUY" | "SELL" | "HOLD"
    size: int  # contracts
    score: float  # sum of weight x direction x confidence over the voters present
    confidence: float
    price: float
    horizon_ns: int
    signals: tuple[dict, ...]  # agent, direction, confidence, weight, reasons of each contributing voter
    weights: dict[str, float]  # every voter's weight at decision time
    market: dict[str, float]  # market state the decision saw
    risk: str = ""  # "" from the coordinator; "invalid price" on the HOLD of a bad price (orders are risk-checked by the execution actor)
    ts_recv: int = 0  # receive time of the market event that triggered it (latency measurement only)

    KIND = "decision"


class Feedback(NamedTuple):
    """A realized outcome: ``horizon`` after a signal or decision, from trade prices.

    ``points`` = exit - entry price; ``reward`` is the voter's signed, scaled
    return (direction x confidence x points / scale, clipped to [-1, 1]);
    ``pnl`` is money for ``size`` contracts in the instrument's currency
    (R$ for WDO/WIN), for a decision; a signal's pnl is for one contract in
    its direction."""

    voter: str  # agent id, "ml", or "coordinator" for a decision
    symbol: str
    ts_event: int  # event time the horizon elapsed
    signal_ts: int
    seq: int  # seq of the signal or decision
    direction: float
    confidence: float
    entry_price: float
    exit_price: float
    points: float
    pnl: float
    reward: float
    hit: bool | None  # None: flat outcome or no direction
    decision_id: str = ""

    KIND = "feedback"


Event = Union[Trade, BookSnapshot, BookUpdate]
Analytics = Union[FeatureVector, FlowState, LiquidityState, FootprintState, TapeSignal]
EVENT_TYPES: dict[str, type] = {
    t.KIND: t
    for t in (Trade, BookSnapshot, BookUpdate, Candle, FeatureVector, FlowState, LiquidityState, FootprintState, TapeSignal,
              Signal, Decision, Feedback)
}


def to_dict(msg: Any) -> dict[str, Any]:
    """Flat dict with a ``kind`` field; the wire form for ZeroMQ and Valkey.
    A FeatureVector's ``names`` + ``values`` become one ``values`` object."""
    d = msg._asdict()
    d["kind"] = msg.KIND
    if "names" in d:
        d["values"] = dict(zip(d.pop("names"), d["values"]))
    return d


def from_dict(d: dict[str, Any]) -> Any:
    """Inverse of :func:`to_dict`. Tuples come back from JSON as lists, NaN as None."""
    cls = EVENT_TYPES[d["kind"]]
    if "names" in cls._fields and isinstance(d.get("values"), dict):
        vals = d["values"]
        d = {**d, "names": tuple(vals), "values": tuple(float("nan") if v is None else v for v in vals.values())}
    values = []
    for name in cls._fields:
        v = d[name] if name in d else cls._field_defaults[name]
        if isinstance(v, list):
            v = tuple(v)
        values.append(v)
    return cls(*values)
