"""Latency models (pipelines/execution/latency.py) and what they do to orders on the simulated
exchange: an order meets the book of its arrival, not of its decision."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest

from pipelines.execution.config import ExchangeConfig, LatencyConfig
from pipelines.execution.exchange import SimulatedExchange
from pipelines.execution.latency import LatencyModel
from pipelines.model.clock import NS_PER_MS
from pipelines.model.messages import BookSnapshot, Trade, TradeType
from pipelines.model.orders import ACCEPTED, BUY, CANCELLED, LIMIT, MARKET, TAKER, Order
from tests.helpers import T0

WDO = "WDOZ26"
MS = NS_PER_MS
BIDS = ((99.5,), (10,))


def book(ts: int, asks: tuple[tuple[float, int], ...]) -> BookSnapshot:
    return BookSnapshot(WDO, ts, ts, 0, *BIDS, tuple(p for p, _ in asks), tuple(q for _, q in asks))


def model(leg: str = "entry", seed: int = 7, **kw) -> LatencyModel:
    return LatencyModel(LatencyConfig(**kw), seed, leg)


# -- the models ---------------------------------------------------------------------------------


def test_constant():
    m = model(ms=20.0)
    assert [m.draw_ns() for _ in range(3)] == [20 * MS] * 3
    assert model(ms=20.0, max_ms=5.0).draw_ns() == 5 * MS  # capped


def test_lognormal_quantiles():
    m = model(model="lognormal", median_ms=2.0, sigma=0.5)
    assert m.quantile_ns(0.5) == 2 * MS  # the median
    # One standard deviation up: 2 ms x e^0.5 = 3.2974425 ms.
    assert m.quantile_ns(NormalDist().cdf(1.0)) == pytest.approx(2 * MS * math.exp(0.5), abs=1)
    assert model(model="lognormal", median_ms=2.0, sigma=0.5, max_ms=3.0).quantile_ns(0.99) == 3 * MS


def test_lognormal_draws_follow_the_seeded_uniforms():
    m = model(model="lognormal", median_ms=2.0, sigma=0.5, seed=7)
    u = random.Random("7:entry")  # the documented stream of the entry leg with seed 7
    expected = [round(2.0 * math.exp(0.5 * NormalDist().inv_cdf(u.random())) * MS) for _ in range(5)]
    assert [m.draw_ns() for _ in range(5)] == expected


def test_empirical_quantiles_interpolate_linearly():
    m = model(model="empirical", quantiles_ms=(5.0, 1.0, 2.0))  # sorted: 1, 2, 5 ms at u = 0, 1/2, 1
    assert m.quantile_ns(0.25) == 1.5 * MS  # halfway from 1 to 2
    assert m.quantile_ns(0.75) == 3.5 * MS  # halfway from 2 to 5
    assert m.quantile_ns(0.0) == 1 * MS and m.quantile_ns(1.0) == 5 * MS
    assert model(model="empirical", quantiles_ms=(4.0,)).quantile_ns(0.3) == 4 * MS


def test_empirical_draws_have_the_configured_median():
    m = model(model="empirical", quantiles_ms=(1.0, 2.0, 5.0), seed=3)
    draws = [m.draw_ns() for _ in range(20_000)]
    below = sum(d <= 2 * MS for d in draws) / len(draws)
    assert below == pytest.approx(0.5, abs=0.02)  # half the mass lies below the middle quantile
    assert min(draws) >= 1 * MS and max(draws) <= 5 * MS


def test_seeds_and_legs_give_their_own_streams():
    def draws(seed, leg):
        m = model(leg, seed, model="lognormal", median_ms=2.0, sigma=0.5)
        return [m.draw_ns() for _ in range(5)]

    assert draws(7, "entry") == draws(7, "entry")
    assert draws(7, "entry") != draws(8, "entry")
    assert draws(7, "entry") != draws(7, "ack")


def test_state_restores_the_stream():
    a = model(model="lognormal", median_ms=2.0, sigma=0.5)
    a.draw_ns()
    b = model(model="lognormal", median_ms=2.0, sigma=0.5, seed=99)
    b.load_state(a.state())
    assert [a.draw_ns() for _ in range(3)] == [b.draw_ns() for _ in range(3)]


# -- on the exchange ------------------------------------------------------------------------------


def exchange(entry: LatencyConfig, ack: LatencyConfig = LatencyConfig(), **kw) -> SimulatedExchange:
    ex = SimulatedExchange(ExchangeConfig(entry_latency=entry, ack_latency=ack, **kw))
    ex.on_trade(Trade(WDO, T0, T0, 0, 100.0, 1, int(TradeType.CROSS)))
    ex.on_book(book(T0, ((100.0, 5),)))
    return ex


def test_with_20_ms_entry_latency_an_order_meets_the_book_of_20_ms_later():
    ex = exchange(LatencyConfig(ms=20.0))
    ex.submit(Order("m1", "paper", WDO, T0, BUY, 3), T0)  # decided on the book of T0: 5 @ 100.0
    assert ex.on_book(book(T0 + 10 * MS, ((100.5, 5),))) == ((), ())  # on its way: this book it will see
    evs, fills = ex.on_book(book(T0 + 30 * MS, ((101.0, 5),)))  # arrived at +20 ms, before this one
    assert [(f.quantity, f.price, f.liquidity) for f in fills] == [(3, 100.5, TAKER)]
    assert evs[0].status == ACCEPTED and evs[0].ts_event == T0 + 20 * MS


def test_an_arrival_sees_the_events_stamped_at_its_arrival():
    ex = exchange(LatencyConfig(ms=20.0))
    ex.submit(Order("m1", "paper", WDO, T0, BUY, 3), T0)
    ex.on_book(book(T0 + 20 * MS, ((100.5, 5),)))  # stamped exactly at the arrival
    _, fills = ex.advance(T0 + 20 * MS)
    assert [f.price for f in fills] == [100.5]


def test_a_cancel_never_overtakes_its_order():
    # Entry latencies from 0.1 to 50 ms: a cancel sent right after its order may draw the shorter
    # one, but the session to the venue keeps them in order, so the order always arrives first.
    for seed in range(50):
        ex = exchange(LatencyConfig(model="empirical", quantiles_ms=(0.1, 50.0)), seed=seed)
        ex.submit(Order("l1", "paper", WDO, T0, BUY, 1, LIMIT, 99.0), T0)
        ex.cancel("l1", T0)
        evs, _ = ex.advance(T0 + 200 * MS)
        assert [e.status for e in evs] == [ACCEPTED, CANCELLED], seed
        assert ex.stats()["cancel_rejected"] == {}


def test_random_latencies_are_the_same_for_the_same_seed():
    def run(seed):
        ex = exchange(LatencyConfig(model="lognormal", median_ms=2.0, sigma=1.0),
                      LatencyConfig(model="lognormal", median_ms=1.0, sigma=1.0), seed=seed)
        for i in range(5):
            ex.submit(Order(f"m{i}", "paper", WDO, T0, BUY, 1, MARKET), T0 + i * MS)
        evs, fills = ex.advance(T0 + 10_000 * MS)
        return [e.ts_event for e in evs] + [f.ts_event for f in fills]

    assert run(5) == run(5) and run(5) != run(6)


def test_market_data_delay_for_the_driver():
    ex = SimulatedExchange(ExchangeConfig(market_data_latency=LatencyConfig(ms=5.0)))
    assert ex.market_data_delay_ns() == 5 * MS
    assert SimulatedExchange().market_data_delay_ns() == 0  # live paper data already arrives late
