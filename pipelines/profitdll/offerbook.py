"""ProfitDLL offer book (book by order): the V2 FullBook array parser and the book model.

Array layout (docs/profitdll.md §2.5, V2 offer book), little endian, packed::

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

from pipelines.messages import BookAction, Side

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
    """

    __slots__ = ("sides", "_qty", "_count", "_prices")

    def __init__(self) -> None:
        self.sides: tuple[list[list], list[list]] = ([], [])
        self._qty: tuple[dict[float, int], dict[float, int]] = ({}, {})  # price -> total quantity
        self._count: tuple[dict[float, int], dict[float, int]] = ({}, {})  # price -> orders at that price
        self._prices: tuple[list[float], list[float]] = ([], [])  # distinct prices, ascending

    def _level_add(self, side: int, price: float, qty: int) -> None:
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
        elif action == DELETE:
            order = orders.pop(index)
            self._level_remove(side, order[0], order[1])
        else:
            for order in orders[index:]:
                self._level_remove(side, order[0], order[1])
            del orders[index:]

    def full_book(self, sell: Sequence[Offer], buy: Sequence[Offer]) -> None:
        """Rebuild both sides from FullBook arrays (each worst -> best)."""
        self.sides = ([[o.price, o.qty, o.agent, o.offer_id] for o in buy],
                      [[o.price, o.qty, o.agent, o.offer_id] for o in sell])
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

    def top(self, side: int, depth: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """The best ``depth`` price levels of a side (quantities summed per price), best first."""
        prices = self._prices[side]
        best = prices[:-depth - 1:-1] if side == BID else prices[:depth]
        return tuple(best), tuple(map(self._qty[side].__getitem__, best))

    def snapshot(self, depth: int) -> tuple[tuple, tuple, tuple, tuple]:
        """``(bid_px, bid_qty, ask_px, ask_qty)`` of the best ``depth`` levels, best first."""
        bids = self._prices[BID][:-depth - 1:-1]
        asks = self._prices[ASK][:depth]
        return (tuple(bids), tuple(map(self._qty[BID].__getitem__, bids)),
                tuple(asks), tuple(map(self._qty[ASK].__getitem__, asks)))

    def __len__(self) -> int:
        return len(self.sides[0]) + len(self.sides[1])
