"""The simulated exchange (pipelines/execution/exchange.py): fills, queues, own liquidity, stops,
rejections and bad input, every expected figure worked out by hand beside it."""

from __future__ import annotations

import json
import math
import random

import pytest

from pipelines.execution.config import ExchangeConfig, LatencyConfig
from pipelines.execution.exchange import SimulatedExchange
from pipelines.model.clock import NS_PER_MS
from pipelines.model.messages import BookSnapshot, Trade, TradeType
from pipelines.model.orders import (ACCEPTED, BUY, CANCELLED, DAY, EXPIRED, FILLED, FOK, IOC, LIMIT, MAKER, MARKET,
                                    PARTIALLY_FILLED, REJECTED, SELL, STOP_LIMIT, SUBMITTED, TAKER, Order)
from tests.helpers import T0

WDO, WIN = "WDOZ26", "WINZ26"
MS = NS_PER_MS
NAN = math.nan
SELLER, BUYER, CROSS = TradeType.SELL_AGGRESSOR, TradeType.BUY_AGGRESSOR, TradeType.CROSS
# B3's fee per WDO contract: DOL single fee US$0.97 x mini factor 0.25 x (1 - 16 % day-trade
# reduction) x R$5.40 per US$ = R$1.09998; WIN: R$1.97 x 0.2 x (1 - 35 %) = R$0.2561.
WDO_FEE = 0.97 * 0.25 * (1 - 0.16) * 5.40
WIN_FEE = 1.97 * 0.2 * (1 - 0.35)
ZERO = LatencyConfig()  # constant 0 ms

ASKS = ((100.0, 5), (100.5, 4), (101.0, 10))
BIDS = ((99.5, 10), (99.0, 8))


def exchange(**kw) -> SimulatedExchange:
    kw.setdefault("entry_latency", ZERO)
    kw.setdefault("ack_latency", ZERO)
    return SimulatedExchange(ExchangeConfig(**kw))


def book(ts: int, bids=(), asks=(), symbol: str = WDO) -> BookSnapshot:
    return BookSnapshot(symbol, ts, ts, 0, tuple(float(p) for p, _ in bids), tuple(q for _, q in bids),
                        tuple(float(p) for p, _ in asks), tuple(q for _, q in asks))


def trade(ts: int, price: float, qty: int, aggressor: int = SELLER, symbol: str = WDO) -> Trade:
    return Trade(symbol, ts, ts, 0, float(price), qty, int(aggressor))


def order(coid: str, side: str, qty: int, kind: str = MARKET, price: float = NAN, stop: float = NAN,
          tif: str = DAY, symbol: str = WDO) -> Order:
    return Order(coid, "paper", symbol, T0, side, qty, kind, price, stop, tif)


def market(ex: SimulatedExchange, bids=BIDS, asks=ASKS, last: float = 100.0, t: int = T0, symbol: str = WDO) -> None:
    """A market at ``t``: a cross print at ``last`` (no aggressor: it moves no queue), then the book."""
    ex.on_trade(trade(t, last, 1, CROSS, symbol))
    ex.on_book(book(t, bids, asks, symbol))


def send(ex: SimulatedExchange, o: Order, t: int = T0) -> tuple[list, list]:
    """Submit at ``t`` and let it arrive (zero latency): every event and fill it caused."""
    sub = ex.submit(o, t)
    evs, fills = ex.advance(t)
    return [*sub, *evs], list(fills)


def fills_of(fills) -> list[tuple]:
    return [(f.quantity, f.price, f.liquidity) for f in fills]


def statuses(evs) -> list[tuple]:
    return [(e.status, e.filled_qty, e.leaves_qty) for e in evs]


def queue(ex: SimulatedExchange, coid: str) -> int:
    return next(o.queue_ahead for o in ex.open_orders() if o.order.client_order_id == coid)


# -- taking: market, marketable limit, IOC, FOK ----------------------------------------------------


def test_market_buy_walks_the_visible_book_level_by_level():
    ex = exchange()
    market(ex)
    evs, fills = send(ex, order("m1", BUY, 12))
    # 12 against 5 @ 100.0, 4 @ 100.5, 10 @ 101.0: 5 + 4 + 3.
    assert fills_of(fills) == [(5, 100.0, TAKER), (4, 100.5, TAKER), (3, 101.0, TAKER)]
    assert statuses(evs) == [(SUBMITTED, 0, 12), (ACCEPTED, 0, 12), (PARTIALLY_FILLED, 5, 7),
                             (PARTIALLY_FILLED, 9, 3), (FILLED, 12, 0)]
    assert evs[-1].avg_fill_price == pytest.approx((5 * 100.0 + 4 * 100.5 + 3 * 101.0) / 12)  # 1205 / 12
    assert [f.fees for f in fills] == pytest.approx([5 * WDO_FEE, 4 * WDO_FEE, 3 * WDO_FEE])
    assert [f.fill_id for f in fills] == ["m1#1", "m1#2", "m1#3"]
    assert ex.stats()["fees"] == pytest.approx(12 * WDO_FEE)  # R$13.19976


def test_market_sell_walks_the_bids():
    ex = exchange()
    market(ex)
    _, fills = send(ex, order("s1", SELL, 12))
    assert fills_of(fills) == [(10, 99.5, TAKER), (2, 99.0, TAKER)]  # 10 @ 99.5, then 2 of the 8 @ 99.0


def test_market_remainder_is_cancelled_by_default():
    ex = exchange()
    market(ex, asks=((100.0, 5), (100.5, 4)))
    evs, fills = send(ex, order("m1", BUY, 12))
    assert fills_of(fills) == [(5, 100.0, TAKER), (4, 100.5, TAKER)]
    assert (evs[-1].status, evs[-1].filled_qty, evs[-1].leaves_qty, evs[-1].reason) == (CANCELLED, 9, 0, "no_liquidity")
    assert ex.open_orders() == []


def test_market_remainder_rests_at_the_last_price_it_filled_at():
    ex = exchange(market_remainder="rest")
    market(ex, asks=((100.0, 5), (100.5, 4)))
    evs, fills = send(ex, order("m1", BUY, 12))
    assert fills_of(fills) == [(5, 100.0, TAKER), (4, 100.5, TAKER)]
    (oo,) = ex.open_orders()
    # 3 left, resting as a buy limit at 100.5; no bid shows at 100.5 (the best is 99.5): nothing ahead.
    assert (oo.state, oo.price, oo.leaves_qty, oo.queue_ahead) == ("resting", 100.5, 3, 0)
    evs, fills = ex.on_trade(trade(T0 + MS, 100.5, 2, SELLER))  # 2 sold at our price: 2 - 0 ahead = 2 ours
    assert fills_of(fills) == [(2, 100.5, MAKER)]
    evs, fills = ex.on_trade(trade(T0 + 2 * MS, 100.0, 1, SELLER))  # through 100.5: the rest fills
    assert fills_of(fills) == [(1, 100.5, MAKER)] and evs[-1].status == FILLED


def test_market_remainder_that_took_nothing_rests_at_the_touch():
    ex = exchange(market_remainder="rest")
    market(ex, asks=((100.0, 5),))
    send(ex, order("m1", BUY, 5))
    evs, fills = send(ex, order("m2", BUY, 5))  # the 5 shown are ours already
    assert fills == [] and ex.open_orders()[0].price == 100.0


def test_ioc_fills_what_it_reaches_and_cancels_the_rest():
    ex = exchange()
    market(ex)
    evs, fills = send(ex, order("i1", BUY, 12, LIMIT, 100.5, tif=IOC))
    assert fills_of(fills) == [(5, 100.0, TAKER), (4, 100.5, TAKER)]  # 101.0 is beyond its limit
    assert (evs[-1].status, evs[-1].filled_qty, evs[-1].reason) == (CANCELLED, 9, "ioc_remainder")
    evs, fills = send(exchange_with_market(), order("i2", SELL, 20, tif=IOC))
    assert fills_of(fills) == [(10, 99.5, TAKER), (8, 99.0, TAKER)]  # 18 of 20 shown
    assert (evs[-1].status, evs[-1].filled_qty) == (CANCELLED, 18)


def exchange_with_market(**kw) -> SimulatedExchange:
    ex = exchange(**kw)
    market(ex)
    return ex


def test_fok_fills_all_or_nothing():
    evs, fills = send(exchange_with_market(), order("f1", BUY, 12, LIMIT, 100.5, tif=FOK))
    assert fills == []  # 5 + 4 = 9 reachable at 100.5 or better < 12
    assert (evs[-1].status, evs[-1].filled_qty, evs[-1].reason) == (CANCELLED, 0, "fok_not_fillable")
    evs, fills = send(exchange_with_market(), order("f2", BUY, 9, LIMIT, 100.5, tif=FOK))
    assert fills_of(fills) == [(5, 100.0, TAKER), (4, 100.5, TAKER)] and evs[-1].status == FILLED


def test_a_marketable_limit_takes_up_to_its_price_then_rests():
    ex = exchange_with_market()
    evs, fills = send(ex, order("l1", BUY, 7, LIMIT, 100.0))
    assert fills_of(fills) == [(5, 100.0, TAKER)]
    (oo,) = ex.open_orders()
    assert (oo.price, oo.leaves_qty, oo.queue_ahead) == (100.0, 2, 0)  # no bid at 100.0: first in line


def test_market_orders_walk_only_within_the_price_band():
    ex = exchange()
    market(ex, asks=((100.0, 5), (102.5, 10)))
    _, fills = send(ex, order("m1", BUY, 8))
    assert fills_of(fills) == [(5, 100.0, TAKER)]  # 2 % of 100.0: 102.5 is beyond 102.0


# -- resting: the queue ----------------------------------------------------------------------------


def test_limit_buy_fills_only_after_the_queue_ahead_trades():
    ex = exchange_with_market()
    send(ex, order("l1", BUY, 2, LIMIT, 99.5))
    assert queue(ex, "l1") == 10  # behind the 10 shown at 99.5
    assert ex.on_trade(trade(T0 + MS, 99.5, 4, SELLER)) == ((), ())
    assert queue(ex, "l1") == 6  # 10 - 4
    evs, fills = ex.on_trade(trade(T0 + 2 * MS, 99.5, 7, SELLER))
    # 7 against 6 ahead: 6 of them, then 1 of ours.
    assert fills_of(fills) == [(1, 99.5, MAKER)]
    assert statuses(evs) == [(PARTIALLY_FILLED, 1, 1)] and evs[0].ts_event == T0 + 2 * MS
    assert queue(ex, "l1") == 0


def test_trades_that_do_not_hit_our_side_leave_the_queue():
    ex = exchange_with_market()
    send(ex, order("l1", BUY, 2, LIMIT, 99.5))
    ex.on_trade(trade(T0 + MS, 99.5, 4, BUYER))  # a buyer at 99.5 takes offers, not bids
    ex.on_trade(trade(T0 + 2 * MS, 99.5, 4, CROSS))  # a cross trade takes nothing from the book
    assert queue(ex, "l1") == 10


def test_risk_averse_book_changes_move_the_queue_only_when_the_level_gets_shorter():
    ex = exchange_with_market()
    send(ex, order("l1", BUY, 2, LIMIT, 99.5))
    ex.on_book(book(T0 + MS, ((99.5, 15), (99.0, 8)), ASKS))
    assert queue(ex, "l1") == 10  # 5 more joined behind us
    ex.on_book(book(T0 + 2 * MS, ((99.5, 12), (99.0, 8)), ASKS))
    assert queue(ex, "l1") == 10  # 3 cancelled: taken to be behind us
    ex.on_book(book(T0 + 3 * MS, ((99.5, 6), (99.0, 8)), ASKS))
    assert queue(ex, "l1") == 6  # only 6 left at the price: at most 6 ahead
    ex.on_book(book(T0 + 4 * MS, ((99.0, 8),), ASKS))
    assert queue(ex, "l1") == 0  # the level is gone from inside the visible range


def test_a_level_beyond_the_visible_depth_has_an_unknown_queue_until_shown():
    ex = exchange_with_market()
    send(ex, order("l1", BUY, 1, LIMIT, 98.0))
    assert queue(ex, "l1") == -1  # the book shows 99.5 and 99.0 only
    ex.on_book(book(T0 + MS, ((99.5, 10), (99.0, 8), (98.5, 2), (98.0, 3)), ASKS))
    assert queue(ex, "l1") == 3


def _first_seed(pred) -> int:
    """The first seed whose first cancel-model draw, random.Random(f"{seed}:queue").random(), satisfies ``pred``."""
    return next(s for s in range(1000) if pred(random.Random(f"{s}:queue").random()))


@pytest.mark.parametrize("advances", [True, False])
def test_probabilistic_cancels_ahead(advances):
    # 10 ahead, then 15 shown (5 behind), then 12: 3 cancelled without a trade. With n = 1 the
    # chance they were ahead is a / (a + b) = 10 / (10 + 5) = 2/3: the order advances to 10 - 3 = 7
    # when the draw is below 2/3 and stays at 10 otherwise.
    seed = _first_seed((lambda u: u < 2 / 3) if advances else (lambda u: u >= 2 / 3))
    ex = exchange_with_market(queue_model="probabilistic", seed=seed)
    send(ex, order("l1", BUY, 2, LIMIT, 99.5))
    ex.on_book(book(T0 + MS, ((99.5, 15), (99.0, 8)), ASKS))
    ex.on_book(book(T0 + 2 * MS, ((99.5, 12), (99.0, 8)), ASKS))
    assert queue(ex, "l1") == (7 if advances else 10)


def test_cancel_power_weighs_the_queue_ahead():
    # n = 2: a^2 / (a^2 + b^2) = 100 / (100 + 25) = 0.8. A draw in [2/3, 0.8) advances with n = 2, not with n = 1.
    seed = _first_seed(lambda u: 2 / 3 <= u < 0.8)
    for power, expected in ((1.0, 10), (2.0, 7)):
        ex = exchange_with_market(queue_model="probabilistic", seed=seed, cancel_power=power)
        send(ex, order("l1", BUY, 2, LIMIT, 99.5))
        ex.on_book(book(T0 + MS, ((99.5, 15), (99.0, 8)), ASKS))
        ex.on_book(book(T0 + 2 * MS, ((99.5, 12), (99.0, 8)), ASKS))
        assert queue(ex, "l1") == expected, power


def test_trades_at_the_price_explain_part_of_a_drop():
    # 10 ahead, 15 shown; a trade of 4 leaves 6 ahead and 11 in the queue; then 10 shown: 11 - 10 = 1
    # cancelled. Ahead a = 6, behind b = 11 - 6 = 5: p = 6 / 11; the order advances to 5 if the draw is below it.
    seed = _first_seed(lambda u: u < 6 / 11)
    ex = exchange_with_market(queue_model="probabilistic", seed=seed)
    send(ex, order("l1", BUY, 2, LIMIT, 99.5))
    ex.on_book(book(T0 + MS, ((99.5, 15), (99.0, 8)), ASKS))
    ex.on_trade(trade(T0 + 2 * MS, 99.5, 4, SELLER))
    assert queue(ex, "l1") == 6
    ex.on_book(book(T0 + 3 * MS, ((99.5, 10), (99.0, 8)), ASKS))
    assert queue(ex, "l1") == 5


def test_own_orders_at_one_price_keep_their_order():
    ex = exchange_with_market()
    send(ex, order("a", BUY, 2, LIMIT, 99.5))
    send(ex, order("b", BUY, 2, LIMIT, 99.5))
    assert (queue(ex, "a"), queue(ex, "b")) == (10, 10)  # others ahead of each; a is ahead of b too
    evs, fills = ex.on_trade(trade(T0 + MS, 99.5, 13, SELLER))
    # 13: 10 others, then a's 2, then 1 for b.
    assert [(f.client_order_id, f.quantity) for f in fills] == [("a", 2), ("b", 1)]
    assert (queue(ex, "b"), ex.open_orders()[0].leaves_qty) == (0, 1)


def test_a_sell_limit_queues_on_the_offer():
    ex = exchange_with_market()
    send(ex, order("s1", SELL, 3, LIMIT, 100.5))
    assert queue(ex, "s1") == 4
    evs, fills = ex.on_trade(trade(T0 + MS, 100.5, 6, BUYER))  # 4 ahead, then 2 of ours
    assert fills_of(fills) == [(2, 100.5, MAKER)]


# -- sweeps, crossing books, own liquidity -----------------------------------------------------------


def test_a_trade_through_the_price_fills_the_whole_order():
    ex = exchange_with_market()
    send(ex, order("b1", BUY, 3, LIMIT, 99.5))
    send(ex, order("s1", SELL, 2, LIMIT, 101.0))
    evs, fills = ex.on_trade(trade(T0 + MS, 99.0, 1, SELLER))  # 99.0 printed: the 99.5 level was swept
    assert fills_of(fills) == [(3, 99.5, MAKER)] and evs[-1].status == FILLED
    evs, fills = ex.on_trade(trade(T0 + 2 * MS, 101.5, 1, BUYER))
    assert fills_of(fills) == [(2, 101.0, MAKER)]


def test_a_book_reaching_a_resting_price_fills_it_at_its_price():
    ex = exchange_with_market()
    send(ex, order("b1", BUY, 3, LIMIT, 99.5))
    crossed = book(T0 + MS, ((99.0, 8),), ((99.5, 2), (100.0, 5)))
    evs, fills = ex.on_book(crossed)
    assert fills_of(fills) == [(2, 99.5, MAKER)]  # 2 offered at our price
    assert ex.on_book(crossed._replace(ts_event=T0 + 2 * MS)) == ((), ())  # those 2 were ours already


def test_two_orders_cannot_take_the_same_displayed_lots():
    ex = exchange()
    market(ex, asks=((100.0, 5),))
    ex.submit(order("m1", BUY, 5), T0)
    ex.submit(order("m2", BUY, 5), T0)
    evs, fills = ex.advance(T0)
    assert sum(f.quantity for f in fills) == 5  # not 10
    assert [(e.client_order_id, e.reason) for e in evs if e.status == CANCELLED] == [("m2", "no_liquidity")]
    ex.on_book(book(T0 + MS, BIDS, ((100.0, 5),)))  # the feed still shows the 5: they are ours
    assert send(ex, order("m3", BUY, 5), T0 + MS)[1] == []
    ex.on_book(book(T0 + 2 * MS, BIDS, ((100.5, 4),)))  # 100.0 left the book ...
    ex.on_book(book(T0 + 3 * MS, BIDS, ((100.0, 5),)))  # ... and 5 new lots came
    assert fills_of(send(ex, order("m4", BUY, 5), T0 + 3 * MS)[1]) == [(5, 100.0, TAKER)]


def test_a_partly_taken_level_shows_the_rest():
    ex = exchange_with_market()
    send(ex, order("m1", BUY, 3))
    _, fills = send(ex, order("m2", BUY, 4))
    assert fills_of(fills) == [(2, 100.0, TAKER), (2, 100.5, TAKER)]  # 5 - 3 = 2 left at 100.0


# -- stop-limit ----------------------------------------------------------------------------------------


def test_a_stop_limit_triggers_on_a_trade_at_its_stop_then_works_as_a_limit():
    ex = exchange()
    market(ex, bids=((99.0, 3), (98.5, 5), (98.0, 4)), asks=((99.5, 5),), last=99.5)
    evs, _ = send(ex, order("sl", SELL, 5, STOP_LIMIT, price=98.5, stop=99.0))
    assert statuses(evs) == [(SUBMITTED, 0, 5), (ACCEPTED, 0, 5)] and ex.open_orders()[0].state == "stop"
    assert ex.on_trade(trade(T0 + MS, 99.5, 1, BUYER)) == ((), ())  # above the stop
    evs, fills = ex.on_trade(trade(T0 + 2 * MS, 99.0, 1, SELLER))  # at the stop
    assert fills_of(fills) == [(3, 99.0, TAKER), (2, 98.5, TAKER)]  # a sell limit at 98.5 takes 3 + 2
    assert ex.stats()["stops_triggered"] == 1


def test_a_stop_already_reached_triggers_on_arrival():
    ex = exchange_with_market()  # last 100.0
    _, fills = send(ex, order("sb", BUY, 2, STOP_LIMIT, price=100.0, stop=99.5))
    assert fills_of(fills) == [(2, 100.0, TAKER)]


# -- latency stamps, cancels, expiry -------------------------------------------------------------------


def test_acknowledgements_are_stamped_with_the_ack_latency():
    ex = exchange(ack_latency=LatencyConfig(ms=3.0))
    market(ex)
    evs, fills = send(ex, order("m1", BUY, 1))
    assert [e.ts_event for e in evs] == [T0, T0 + 3 * MS, T0 + 3 * MS]  # SUBMITTED now; ACCEPTED, FILLED at +3 ms
    assert fills[0].ts_event == T0 + 3 * MS
    send(ex, order("l1", BUY, 1, LIMIT, 99.5))
    _, fills = ex.on_trade(trade(T0 + 10 * MS, 99.0, 1, SELLER))
    assert fills[0].ts_event == T0 + 13 * MS  # the sweep at +10 ms, told 3 ms later


def test_a_cancel_takes_effect_when_it_arrives():
    ex = exchange(entry_latency=LatencyConfig(ms=2.0), ack_latency=LatencyConfig(ms=1.0))
    market(ex)
    ex.submit(order("l1", BUY, 2, LIMIT, 99.5), T0)
    ex.advance(T0 + 2 * MS)  # arrives at +2 ms, behind 10
    assert ex.cancel("l1", T0 + 10 * MS) == []  # reaches the venue at +12 ms
    _, fills = ex.on_trade(trade(T0 + 11 * MS, 99.5, 11, SELLER))  # still working: 11 - 10 = 1 fills
    assert fills_of(fills) == [(1, 99.5, MAKER)]
    evs, _ = ex.on_trade(trade(T0 + 13 * MS, 100.0, 1, BUYER))
    # Arrived at +12 ms, told 1 ms later.
    assert [(e.status, e.filled_qty, e.ts_event, e.reason) for e in evs] == [(CANCELLED, 1, T0 + 13 * MS,
                                                                             "client_cancel")]
    ex.cancel("l1", T0 + 20 * MS)
    ex.cancel("nope", T0 + 20 * MS)
    assert ex.stats()["cancel_rejected"] == {"too_late": 1, "unknown_order": 1}
    assert ex.open_orders() == []


def test_expire_ends_every_working_order():
    ex = exchange_with_market()
    send(ex, order("l1", BUY, 1, LIMIT, 99.5))
    send(ex, order("sl", SELL, 1, STOP_LIMIT, price=98.5, stop=99.0))
    evs = ex.expire(T0 + MS)
    assert [(e.client_order_id, e.status, e.reason) for e in evs] == [("l1", EXPIRED, "end_of_day"),
                                                                     ("sl", EXPIRED, "end_of_day")]
    assert ex.open_orders() == [] and ex.stats()["expired"] == 2


def test_an_order_sent_behind_the_market_data_arrives_at_the_latest_market_time():
    ex = exchange()
    market(ex)
    ex.on_book(book(T0 + 5 * MS, BIDS, ((101.0, 10),)))
    ex.submit(order("m1", BUY, 1), T0)  # decided at T0, but the venue is at +5 ms already
    evs, fills = ex.advance(T0 + 5 * MS)
    assert fills_of(fills) == [(1, 101.0, TAKER)] and evs[0].ts_event == T0 + 5 * MS
    assert ex.stats()["late_arrivals"] == 1


def test_win_fees_and_grid():
    ex = exchange()
    market(ex, bids=((129995.0, 3),), asks=((130000.0, 4), (130005.0, 6)), last=130000.0, symbol=WIN)
    _, fills = send(ex, order("w1", BUY, 6, symbol=WIN))
    assert fills_of(fills) == [(4, 130000.0, TAKER), (2, 130005.0, TAKER)]
    assert [f.fees for f in fills] == pytest.approx([4 * WIN_FEE, 2 * WIN_FEE])  # R$1.0244, R$0.5122


def test_on_market_applies_a_batch_in_order():
    ex = exchange()
    ex.submit(order("l1", BUY, 1, LIMIT, 99.5), T0 + MS)  # arrives at +1 ms: after the book of T0
    evs, fills = ex.on_market([trade(T0, 100.0, 1, CROSS), book(T0, BIDS, ASKS), trade(T0 + 2 * MS, 99.0, 1, SELLER)])
    assert [e.status for e in evs] == [ACCEPTED, FILLED] and fills_of(fills) == [(1, 99.5, MAKER)]


# -- rejections and bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("bad, reason", [
    (order("q0", BUY, 0), "bad_quantity"),
    (order("qn", BUY, -3), "bad_quantity"),
    (order("nan", BUY, 1, LIMIT, NAN), "bad_price"),
    (order("stop", BUY, 1, STOP_LIMIT, 100.0, NAN), "bad_stop_price"),
    (order("tick", BUY, 1, LIMIT, 100.3), "off_tick"),  # WDO: 0.5
    (order("wtick", BUY, 1, LIMIT, 130002.0, symbol=WIN), "off_tick"),  # WIN: 5
    (order("stick", BUY, 1, STOP_LIMIT, 100.0, 100.2), "off_tick"),
    (order("sym", BUY, 1, symbol="XYZ9"), "unknown_symbol"),
    (order("nosym", BUY, 1, symbol=None), "bad_symbol"),
    (order("side", "HOLD", 1), "bad_side"),
    (None, "not_an_order"),
    ("BUY 1 WDO", "not_an_order"),
    (tuple.__new__(Order, ("short",)), "not_an_order"),
])
def test_bad_orders_are_rejected_with_a_reason_and_counted(bad, reason):
    ex = exchange_with_market()
    (ev,) = ex.submit(bad, T0)
    assert (ev.status, ev.reason, ev.filled_qty, ev.leaves_qty) == (REJECTED, reason, 0, 0)
    assert ex.stats()["rejected"] == {reason: 1} and ex.open_orders() == []


def test_a_bad_time_and_a_duplicate_id_are_rejected():
    ex = exchange_with_market()
    assert ex.submit(order("t", BUY, 1), "now")[0].reason == "bad_time"
    assert ex.submit(order("d", BUY, 1), T0)[0].status == SUBMITTED
    (ev,) = ex.submit(order("d", SELL, 2), T0)
    assert (ev.status, ev.reason, ev.client_order_id) == (REJECTED, "duplicate_client_order_id", "d")
    assert ex.stats()["rejected"] == {"bad_time": 1, "duplicate_client_order_id": 1}


def test_venue_rejections_at_arrival():
    ex = exchange()
    evs, _ = send(ex, order("w", BUY, 1, symbol=WIN))  # WIN is known, but nothing of it was seen
    assert (evs[-1].status, evs[-1].reason) == (REJECTED, "no_market_data")
    market(ex)  # last 100.0; 2 %: 98.0 .. 102.0
    assert send(ex, order("in", BUY, 1, LIMIT, 102.0))[0][-1].status != REJECTED
    evs, _ = send(ex, order("out", SELL, 1, LIMIT, 102.5))
    assert (evs[-1].status, evs[-1].reason) == (REJECTED, "price_band")
    evs, _ = send(ex, order("sout", SELL, 1, STOP_LIMIT, 99.0, 97.5))
    assert evs[-1].reason == "price_band"
    assert ex.stats()["rejected"] == {"no_market_data": 1, "price_band": 2}


def test_a_band_in_ticks():
    ex = exchange_with_market(price_band_pct=0.0, price_band_ticks=4)  # 4 x 0.5 = 2 points
    assert send(ex, order("in", BUY, 1, LIMIT, 98.0))[0][-1].status == ACCEPTED
    assert send(ex, order("out", BUY, 1, LIMIT, 97.5))[0][-1].reason == "price_band"


def test_a_simulated_symbol_trades_on_its_configured_tick():
    ex = exchange(simulated_symbols=("SIMX",), simulated_tick_size=0.25)
    market(ex, bids=((99.75, 1),), asks=((100.25, 2),), symbol="SIMX")
    assert ex.submit(order("ok", BUY, 1, LIMIT, 100.25, symbol="SIMX"), T0)[0].status == SUBMITTED
    assert ex.submit(order("off", BUY, 1, LIMIT, 100.3, symbol="SIMX"), T0)[0].reason == "off_tick"
    assert fills_of(ex.advance(T0)[1]) == [(1, 100.25, TAKER)]


def test_bad_market_data_is_counted_and_changes_nothing():
    ex = exchange_with_market()
    bad = [
        trade(T0 + MS, NAN, 1), trade(T0 + MS, -1.0, 1), trade(T0 + MS, 100.0, 0),
        trade(T0 + MS, 100.0, 1, symbol="XYZ9"),
        Trade(None, T0, T0, 0, 100.0, 1, 2), Trade(WDO, "t", T0, 0, 100.0, 1, 2), Trade(WDO, T0, T0, 0, "100", 1, 2),
        tuple.__new__(Trade, (WDO, T0)), "junk", None,
        book(T0 + MS, ((100.5, 1),), ASKS),  # crossed: bid 100.5 above the ask 100.0
        book(T0 + MS, ((99.0, 1), (99.5, 1)), ASKS),  # bids not descending
        book(T0 + MS, ((99.5, 0),), ASKS),  # a level of 0
        book(T0 + MS, ((99.5, 2.0),), ASKS),  # a float quantity
        book(T0 + MS, ((NAN, 2),), ASKS),
        BookSnapshot(WDO, T0 + MS, T0, 0, (99.5,), (1, 2), (100.0,), (1,)),  # arrays of different lengths
        BookSnapshot(WDO, T0 + MS, T0, 0, [99.5], [1], (100.0,), (1,)),  # lists, not tuples
        BookSnapshot(WDO, T0 + MS, T0, 0, ("a",), (1,), (100.0,), (1,)),
    ]
    for ev in bad:
        assert (ex.on_trade(ev) if type(ev) is not BookSnapshot else ex.on_book(ev)) == ((), ())
    assert ex.on_market(bad) == ([], [])
    assert ex.on_market(42) == ([], [])
    counted = ex.stats()["bad_market_data"]
    assert sum(counted.values()) == 2 * len(bad) + 1 and counted["bad_batch"] == 1
    # Each list twice: one crossed book, one unknown symbol, three trade prices (NaN, -1.0, "100") per pass.
    assert counted["crossed_book"] == 2 and counted["unknown_symbol"] == 2 and counted["bad_price"] == 6
    assert ex.stats()["market_events"] == 2  # the good market of exchange_with_market only
    _, fills = send(ex, order("m1", BUY, 12))  # the book is the good one still
    assert fills_of(fills) == [(5, 100.0, TAKER), (4, 100.5, TAKER), (3, 101.0, TAKER)]


def test_bad_cancel_and_expire_requests_do_not_raise():
    ex = exchange_with_market()
    assert ex.cancel(None, T0) == [] and ex.cancel("x", None) == []
    assert ex.expire("soon") == [] and ex.advance(None) == ((), ())
    assert ex.stats()["cancel_rejected"] == {"bad_request": 2} and ex.stats()["bad_requests"] == 1


# -- state ------------------------------------------------------------------------------------------------


def test_state_round_trip_keeps_queues_takes_and_stops():
    ex = exchange_with_market(queue_model="probabilistic")
    send(ex, order("l1", BUY, 2, LIMIT, 99.5))
    send(ex, order("m1", BUY, 3))  # takes 3 of the 5 at 100.0
    send(ex, order("sl", SELL, 1, STOP_LIMIT, price=98.5, stop=99.0))
    ex.on_trade(trade(T0 + MS, 99.5, 4, SELLER))  # l1: 10 - 4 = 6 ahead
    restored = exchange(queue_model="probabilistic")
    restored.load_state(json.loads(json.dumps(ex.state())))
    assert restored.open_orders() == ex.open_orders()
    assert restored.stats() == ex.stats()
    assert queue(restored, "l1") == 6
    _, fills = restored.on_trade(trade(T0 + 2 * MS, 99.5, 7, SELLER))  # 7 - 6 = 1 of ours
    assert fills_of(fills) == [(1, 99.5, MAKER)]
    _, fills = send(restored, order("m2", BUY, 3), T0 + 2 * MS)
    assert fills_of(fills) == [(2, 100.0, TAKER), (1, 100.5, TAKER)]  # 5 - 3 taken before the restart
    assert restored.submit(order("l1", BUY, 1), T0 + 2 * MS)[0].reason == "duplicate_client_order_id"
    _, fills = restored.on_trade(trade(T0 + 3 * MS, 99.0, 1, SELLER))  # l1 swept (1 left) and the stop fires
    assert fills_of(fills) == [(1, 99.5, MAKER), (1, 99.5, TAKER)]  # the stop sells 1 to the best bid shown, 99.5


# -- invariants on a long random run, and the benchmark ---------------------------------------------


def test_random_orders_on_a_synthetic_market_keep_the_books_straight():
    from pipelines.execution.benchmark import synthetic_market

    rng = random.Random(5)
    ex = exchange(queue_model="probabilistic", market_remainder="rest",
                  entry_latency=LatencyConfig(model="lognormal", median_ms=1.0, sigma=1.0),
                  ack_latency=LatencyConfig(model="empirical", quantiles_ms=(0.1, 1.0, 3.0)))
    sent: dict[str, tuple[Order, int]] = {}
    events, fills = [], []
    for i, ev in enumerate(synthetic_market(20_000, 5)):
        r = ex.on_trade(ev) if type(ev) is Trade else ex.on_book(ev)
        events += r[0]
        fills += r[1]
        if i % 7 == 0 and type(ev) is BookSnapshot:
            side = rng.choice((BUY, SELL))
            kind = rng.choice((MARKET, LIMIT, LIMIT, STOP_LIMIT))
            px = ev.bid_px[0] + 0.5 * rng.randint(-6, 6)
            o = Order(f"o{i}", "paper", WDO, ev.ts_event, side, rng.randint(1, 20), kind,
                      px if kind != MARKET else NAN, px + (0.5 if side == BUY else -0.5) if kind == STOP_LIMIT else NAN,
                      rng.choice((DAY, DAY, IOC, FOK)))
            sent[o.client_order_id] = (o, ev.ts_event)
            events += ex.submit(o, ev.ts_event)
        if i % 50 == 0 and sent:
            ex.cancel(rng.choice(list(sent)), ev.ts_event)
    st = ex.stats()
    assert st["bad_market_data"] == {} and "internal_error" not in st["rejected"]
    assert st["fills"] == len(fills) > 100 and sum(f.quantity for f in fills) == st["filled_qty"]
    for coid, (o, t) in sent.items():
        mine = [f for f in fills if f.client_order_id == coid]
        evs = [e for e in events if e.client_order_id == coid]
        filled = sum(f.quantity for f in mine)
        assert filled <= o.quantity and evs[-1].filled_qty == filled, coid
        assert all(f.ts_event >= t for f in mine) and [e.ts_event for e in evs] == sorted(e.ts_event for e in evs)
        assert (evs[-1].status == FILLED) == (filled == o.quantity), coid
        if mine and o.order_type != MARKET:  # never worse than its limit
            assert all((f.price <= o.price) if o.side == BUY else (f.price >= o.price) for f in mine), coid


def test_bench_exchange_reports_its_figures():
    from pipelines.execution.benchmark import bench_exchange

    r = bench_exchange(3_000, 10, 1)
    assert r["n_events"] == 3_000 and r["resting_orders"] == 10 and r["events_per_s"] > 0
    assert r["orders_submitted"] >= 10
