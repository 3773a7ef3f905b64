"""The simulated exchange's benchmark: book and trade events per second with resting orders.

A seeded synthetic WDO market is built first, with the event mix of our simulator's feed
(:mod:`pipelines.adapters.simulator`): limit adds (55 %) and cancels (35 %) each followed by
one 10-level snapshot, and market orders (10 %) that walk the opposite side, print one trade
per price and then a snapshot; 0.5 to 2 ms of event time apart. The timed loop feeds it to
:class:`pipelines.execution.exchange.SimulatedExchange` one event at a time while ``n_orders``
limit orders rest on both sides within the visible depth, each replaced by a new one when it
ends, so the count stays put and the queue, sweep and crossing paths all run; every
``REQUOTE_EVERY`` events the orders the price left more than the visible depth behind are
cancelled (and replaced), as a quoting strategy would.
"""

from __future__ import annotations

import random
import time

from pipelines.execution.config import ExchangeConfig
from pipelines.execution.exchange import SimulatedExchange
from pipelines.model.clock import NS_PER_MS
from pipelines.model.messages import BookSnapshot, Trade, TradeType
from pipelines.model.orders import BUY, LIMIT, SELL, TERMINAL, Order

SYMBOL = "WDOZ26"
TICK = 0.5
DEPTH = 10
T0 = 1_795_957_200_000_000_000  # 2026-11-23 10:00 Sao Paulo: the timestamps only need to grow
REQUOTE_EVERY = 1000  # events between two sweeps of the resting orders the price moved away from


def synthetic_market(n_events: int, seed: int) -> list:
    """At least ``n_events`` trades and snapshots of one WDO symbol, trimmed to ``n_events``."""
    rng = random.Random(seed)
    bids = {10_800 - k: rng.randint(5, 60) for k in range(DEPTH + 5)}  # integer ticks -> quantity
    asks = {10_801 + k: rng.randint(5, 60) for k in range(DEPTH + 5)}
    events: list = []
    ts = T0
    while len(events) < n_events:
        ts += rng.randint(1, 4) * NS_PER_MS // 2
        x = rng.random()
        buy_side = rng.random() < 0.5
        book, other = (bids, asks) if buy_side else (asks, bids)
        if x < 0.55:  # a limit add at a geometric distance from the touch
            touch = max(book) if buy_side else min(book)
            k = min(int(rng.expovariate(0.5)), DEPTH + 2)
            if min(asks) - max(bids) > 1 and rng.random() < 0.5:
                k = -1  # into a spread a sweep left open
            tick = touch - k if buy_side else touch + k
            book[tick] = book.get(tick, 0) + rng.randint(1, 10)
        elif x < 0.9:  # a cancel of part of a level (up to all of it: big levels lose more)
            tick = rng.choice(sorted(book, reverse=buy_side)[:DEPTH])
            book[tick] -= rng.randint(1, book[tick])
            if not book[tick]:
                del book[tick]
        else:  # a market order (a buyer when buy_side) taking from the other side: one trade per price
            qty = min(int(rng.expovariate(0.25)) + 1, 60)
            tt = int(TradeType.BUY_AGGRESSOR if buy_side else TradeType.SELL_AGGRESSOR)
            while qty and other:
                tick = min(other) if buy_side else max(other)  # the touch of the side it takes from
                take = min(qty, other[tick])
                events.append(Trade(SYMBOL, ts, ts, len(events), tick * TICK, take, tt))
                qty -= take
                other[tick] -= take
                if not other[tick]:
                    del other[tick]
        for side, far in ((bids, -1), (asks, 1)):  # levels near the touch only, and always enough of them
            touch = max(side) if far < 0 else min(side)
            for tick in [t for t in side if abs(t - touch) > DEPTH + 5]:
                del side[tick]
            while len(side) < DEPTH + 5:
                edge = min(side) if far < 0 else max(side)
                side[edge + far] = rng.randint(5, 60)
        bt = sorted(bids, reverse=True)[:DEPTH]
        at = sorted(asks)[:DEPTH]
        events.append(BookSnapshot(SYMBOL, ts, ts, len(events), tuple(t * TICK for t in bt),
                                   tuple(bids[t] for t in bt), tuple(t * TICK for t in at), tuple(asks[t] for t in at)))
    return events[:n_events]


def bench_exchange(n_events: int = 200_000, n_orders: int = 10, seed: int = 13) -> dict:
    """Feed ``n_events`` market events to an exchange holding ``n_orders`` resting orders.

    Returns ``events_per_s`` and ``us_per_event`` on the loop's CPU time (one core; what other
    processes take from the machine does not count), ``wall_events_per_s``, ``fills``,
    ``orders_submitted`` (the initial ones and their replacements) and the settings. The
    replacements of filled orders are part of the timed loop."""
    events = synthetic_market(n_events, seed)
    ex = SimulatedExchange(ExchangeConfig(seed=seed))
    rng = random.Random(seed + 1)
    ids = iter(range(1 << 62))

    def place(ts: int, best_bid: float) -> None:
        side = BUY if rng.random() < 0.5 else SELL
        k = rng.randrange(DEPTH)
        price = best_bid - k * TICK if side == BUY else best_bid + (k + 1) * TICK
        ex.submit(Order(f"bench:{next(ids)}", "bench", SYMBOL, ts, side, rng.randint(1, 5), LIMIT, price), ts)

    first = next(e for e in events if type(e) is BookSnapshot)
    ex.on_trade(Trade(SYMBOL, T0 - 2, T0 - 2, 0, first.bid_px[0], 1, int(TradeType.CROSS)))
    ex.on_book(first._replace(ts_event=T0 - 1))
    for _ in range(n_orders):
        place(T0 - 1, first.bid_px[0])
    best_bid = first.bid_px[0]
    fills = 0
    cancelling: set[str] = set()
    on_trade, on_book = ex.on_trade, ex.on_book
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i, ev in enumerate(events):
        if type(ev) is Trade:
            evs, fl = on_trade(ev)
        else:
            best_bid = ev.bid_px[0]
            evs, fl = on_book(ev)
        if evs:
            fills += len(fl)
            for e in evs:
                if e.status in TERMINAL:  # keep n_orders working
                    place(ev.ts_event, best_bid)
        if i % REQUOTE_EVERY == 0:  # a quoting strategy cancels what the market left behind
            for oo in ex.open_orders():
                coid = oo.order.client_order_id
                if abs(oo.price - best_bid) > DEPTH * TICK and coid not in cancelling:
                    cancelling.add(coid)
                    ex.cancel(coid, ev.ts_event)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    stats = ex.stats()
    assert stats["fills"] == fills and stats["open_orders"] == n_orders, stats
    return {"n_events": n_events, "resting_orders": n_orders, "events_per_s": n_events / cpu,
            "us_per_event": cpu / n_events * 1e6, "wall_events_per_s": n_events / wall, "fills": fills,
            "orders_submitted": stats["submitted"], "seed": seed}
