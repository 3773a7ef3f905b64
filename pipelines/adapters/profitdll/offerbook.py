"""ProfitDLL offer book (book by order): the V2 FullBook array parser and the book model.

Array layout (the DLL's V2 offer book), little endian, packed::

    header   int32 count, int32 total bytes (header and trailer included)
    entry    f64 price, i64 qty, i32 agent, i64 offer id, u16 n, n bytes of date text
    trailer  u32 flags (OB_LAST_PACKET = 1)

The date length varies, so the parser walks the u16 prefixes (the manual's fixed trailer offsets
assume a 23-character date). The text is single-byte; it is decoded as latin-1, which never fails
and is exact for the ASCII digits the DLL writes.

The model keeps, per side, a list ordered **worst -> best** like the vendor demos: position ``p``
(counted from the top of the book) is index ``len - 1 - p``. Actions (``TConnectorActionType``):

    add         insert at index len - p
    edit        add the quantity to the stored one (a delta), when bHasQtd is set
    delete      remove index len - 1 - p
    deleteFrom  drop positions 0..p (truncate from index len - 1 - p to the end)
    fullBook    rebuild both sides from the arrays (array order = list order, worst first)

An action whose position does not fit the current book raises :class:`BookError`; the caller
counts it and goes on (the book may then differ from the DLL's until the next FullBook).
"""

from __future__ import annotations

import struct
from bisect import bisect_left, insort
from typing import NamedTuple, Sequence

from pipelines.model.messages import BookAction, Side

OFFER_HEADER = struct.Struct("<ii")
OFFER_ENTRY_V2 = struct.Struct("<dqiqH")  # 30 bytes, then the date text
OFFER_TRAILER = struct.Struct("<I")
_tuple_new = tuple.__new__  # builds the NamedTuple without its generated __new__ (hot in FullBooks)


class OfferArrayError(ValueError):
    """A FullBook array whose sizes do not add up."""


class BookError(ValueError):
    """An offer-book action that does not fit the current book."""


class Offer(NamedTuple):
    price: float
    qty: int
    agent: int
    offer_id: int
    date: str


def parse_offer_array_v2(data: bytes) -> tuple[list[Offer], int]:
    """The entries (in array order) and the trailer flags of one V2 offer array."""
    size = len(data)
    if size < OFFER_HEADER.size + OFFER_TRAILER.size:
        raise OfferArrayError(f"offer array of {size} bytes is shorter than its header and trailer (12 bytes)")
    count, total = OFFER_HEADER.unpack_from(data, 0)
    if total != size:
        raise OfferArrayError(f"offer array header says {total} bytes, {size} were read")
    if count < 0:
        raise OfferArrayError(f"offer array header has a negative entry count ({count})")
    end = size - OFFER_TRAILER.size
    pos = OFFER_HEADER.size
    entry = OFFER_ENTRY_V2
    entries: list[Offer] = []
    for i in range(count):
        if pos + entry.size > end:
            raise OfferArrayError(f"offer array entry {i} of {count} runs past the trailer at byte {end}")
        price, qty, agent, offer_id, n = entry.unpack_from(data, pos)
        pos += entry.size
        if pos + n > end:
            raise OfferArrayError(f"offer array entry {i}: date of {n} bytes runs past the trailer at byte {end}")
        entries.append(_tuple_new(Offer, (price, qty, agent, offer_id, data[pos:pos + n].decode("latin-1"))))
        pos += n
    if pos != end:
        raise OfferArrayError(f"offer array has {end - pos} unexplained bytes after its {count} entries")
    (flags,) = OFFER_TRAILER.unpack_from(data, end)
    return entries, flags


def parse_offer_orders_v2(data: bytes) -> list[list]:
    """The orders of one V2 offer array as ``[price, qty, agent, offer_id]`` lists (array order),
    what :meth:`OfferBook.full_book_orders` takes. Same checks as :func:`parse_offer_array_v2`,
    without decoding the dates nobody reads: a FullBook holds every order of the instrument, and
    this is the hot part of rebuilding the book. A malformed array raises the same specific
    :class:`OfferArrayError` (worked out by :func:`parse_offer_array_v2`, on that rare path)."""
    size = len(data)
    if size >= OFFER_HEADER.size + OFFER_TRAILER.size:
        count, total = OFFER_HEADER.unpack_from(data, 0)
        if total == size and count >= 0:
            end = size - OFFER_TRAILER.size
            pos = OFFER_HEADER.size
            unpack = OFFER_ENTRY_V2.unpack_from
            step = OFFER_ENTRY_V2.size
            orders: list[list] = []
            append = orders.append
            try:
                for _ in range(count):
                    price, qty, agent, offer_id, n = unpack(data, pos)
                    pos += step + n
                    append([price, qty, agent, offer_id])
            except struct.error:
                pos = -1  # ran past the data: reported below
            # pos only grows, so an entry or date that ran past the trailer anywhere leaves pos != end.
            if pos == end:
                return orders
    parse_offer_array_v2(data)  # raises the specific error
    raise OfferArrayError("offer array sizes do not add up")  # pragma: no cover - both checks agree


# Plain ints: the model runs once per book callback, and IntEnum member lookups cost more.
ADD, EDIT, DELETE, DELETE_FROM, FULL_BOOK = (int(a) for a in BookAction)
BID, ASK = int(Side.BID), int(Side.ASK)


class OfferBook:
    """One instrument's book by order.

    ``sides[BID]`` / ``sides[ASK]``: lists of ``[price, qty, agent, offer_id]`` ordered worst ->
    best, as the DLL's positions address them. Alongside, each side keeps its price levels
    (total quantity and order count per price, and the sorted distinct prices), updated with
    every action, so a top-N snapshot costs O(N) instead of a walk over the orders. Levels are
    keyed by price, so a side is reported in price order whatever the order list looks like.

    The last snapshot of each side is kept until an action changes one of its levels: most
    actions touch one side, often below the top levels, and a snapshot is taken after every
    action (immutable tuples, so snapshots share them safely).
    """

    __slots__ = ("sides", "_qty", "_count", "_prices", "_top")

    def __init__(self) -> None:
        self.sides: tuple[list[list], list[list]] = ([], [])
        self._qty: tuple[dict[float, int], dict[float, int]] = ({}, {})  # price -> total quantity
        self._count: tuple[dict[float, int], dict[float, int]] = ({}, {})  # price -> orders at that price
        self._prices: tuple[list[float], list[float]] = ([], [])  # distinct prices, ascending
        self._top: list = [None, None]  # per side: (depth, prices, quantities) of the last snapshot

    def _touch(self, side: int, price: float) -> None:
        """Forget a side's kept snapshot when a change at ``price`` may alter its top levels:
        the snapshot is not full, or ``price`` is not worse than its worst level (NaN too)."""
        top = self._top[side]
        if top is not None:
            px = top[1]
            if len(px) < top[0] or not px or not (price < px[-1] if side == BID else price > px[-1]):
                self._top[side] = None

    def _level_add(self, side: int, price: float, qty: int) -> None:
        self._touch(side, price)
        counts = self._count[side]
        n = counts.get(price)
        if n is None:
            counts[price] = 1
            self._qty[side][price] = qty
            insort(self._prices[side], price)
        else:
            counts[price] = n + 1
            self._qty[side][price] += qty

    def _level_remove(self, side: int, price: float, qty: int) -> None:
        self._touch(side, price)
        counts = self._count[side]
        n = counts[price] - 1
        if n == 0:
            del counts[price]
            del self._qty[side][price]
            prices = self._prices[side]
            del prices[bisect_left(prices, price)]
        else:
            counts[price] = n
            self._qty[side][price] -= qty

    def apply(self, action: int, side: int, position: int, price: float, qty: int,
              agent: int = 0, offer_id: int = 0, has_qty: bool = True) -> None:
        """One add/edit/delete/deleteFrom as the DLL reports it. FullBook goes to :meth:`full_book`."""
        if side != BID and side != ASK:
            raise BookError(f"offer-book side {side} is neither 0 (buy) nor 1 (sell)")
        orders = self.sides[side]
        n = len(orders)
        if action == ADD:
            if not 0 <= position <= n:
                raise BookError(f"add at position {position} on a side of {n} orders")
            if price != price:  # NaN has no place in the sorted level prices: it would corrupt them
                raise BookError("add with a price that is not a number")
            orders.insert(n - position, [price, qty, agent, offer_id])
            self._level_add(side, price, qty)
            return
        if action != EDIT and action != DELETE and action != DELETE_FROM:
            raise BookError(f"unknown offer-book action {action}")
        if not 0 <= position < n:
            name = BookAction(action).name.lower()
            raise BookError(f"{name} at position {position} on a side of {n} orders")
        index = n - 1 - position
        if action == EDIT:
            if has_qty:
                order = orders[index]
                order[1] += qty
                self._qty[side][order[0]] += qty
                self._touch(side, order[0])
        elif action == DELETE:
            order = orders.pop(index)
            self._level_remove(side, order[0], order[1])
        else:
            for order in orders[index:]:
                self._level_remove(side, order[0], order[1])
            del orders[index:]

    def full_book(self, sell: Sequence[Offer], buy: Sequence[Offer]) -> None:
        """Rebuild both sides from FullBook arrays (each worst -> best)."""
        self.full_book_orders([[o.price, o.qty, o.agent, o.offer_id] for o in sell],
                              [[o.price, o.qty, o.agent, o.offer_id] for o in buy])

    def full_book_orders(self, sell: list[list], buy: list[list]) -> None:
        """:meth:`full_book` from ``[price, qty, agent, offer_id]`` lists (as
        :func:`parse_offer_orders_v2` returns them), which the book takes over."""
        for order in (*sell, *buy):
            if order[0] != order[0]:
                raise BookError("FullBook with a price that is not a number")
        self.sides = (buy, sell)
        self._qty = ({}, {})
        self._count = ({}, {})
        for side in (BID, ASK):
            qtys, counts = self._qty[side], self._count[side]
            for price, qty, _agent, _offer in self.sides[side]:
                if price in counts:
                    counts[price] += 1
                    qtys[price] += qty
                else:
                    counts[price] = 1
                    qtys[price] = qty
        self._prices = (sorted(self._count[BID]), sorted(self._count[ASK]))
        self._top = [None, None]

    def top(self, side: int, depth: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """The best ``depth`` price levels of a side (quantities summed per price), best first."""
        prices = self._prices[side]
        best = prices[:-depth - 1:-1] if side == BID else prices[:depth]
        return tuple(best), tuple(map(self._qty[side].__getitem__, best))

    def snapshot(self, depth: int) -> tuple[tuple, tuple, tuple, tuple]:
        """``(bid_px, bid_qty, ask_px, ask_qty)`` of the best ``depth`` levels, best first."""
        top = self._top
        bid = top[BID]
        if bid is None or bid[0] != depth:
            px = tuple(self._prices[BID][:-depth - 1:-1])
            bid = top[BID] = (depth, px, tuple(map(self._qty[BID].__getitem__, px)))
        ask = top[ASK]
        if ask is None or ask[0] != depth:
            px = tuple(self._prices[ASK][:depth])
            ask = top[ASK] = (depth, px, tuple(map(self._qty[ASK].__getitem__, px)))
        return bid[1], bid[2], ask[1], ask[2]

    def __len__(self) -> int:
        return len(self.sides[0]) + len(self.sides[1])
