"""The backtest's decisions, orders and fills pinned bit for bit on a fixed input.

The graph's speed work (InProcessGraph, the feature engine, the agents, the consensus, the
feedback system, the execution kernel) must not change a single result: this runs a fixed
input through InProcessGraph and compares the hashes of every Decision, Order and Fill (all
their fields, ``repr`` of the floats: bit for bit) with golden values.

The input does not come from the simulator (which is recalibrated from time to time, and
whose events would change with it): a seeded numpy generator here builds a small L2 book and
its tape (5 levels a side, one-tick spread; buy and sell market orders in persistent regimes
eat the touch, and a touch eaten away moves the book by a tick), and the ML voter's model is
trained here on another seed of the same generator.

The golden hashes were produced by this module's ``__main__`` (``.venv/bin/python -m
tests.backtest.test_pinned_results``) on the code before the speed work. A change to them must
be deliberate: a change of behaviour, said in its commit, never a side effect of making it
faster.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from actors.backtest import InProcessGraph
from pipelines.config import config_from_dict
from pipelines.model.messages import BookSnapshot, Trade
from tests.helpers import SESSION_T0

SYM = "WDOZ26"
TICK = 0.5
LEVELS = 5
RUN_SEED, MODEL_SEED = 11, 12
RUN_EVENTS, MODEL_EVENTS = 20_000, 30_000
RATE = 300.0  # events per second of event time
HORIZON_S, EVERY_MS = 5, 250

GOLDEN = {
    "decisions": "b68172782cddb435d6a5a385c842de115a248b977bb24b7baba7cbe97f166c8f",
    "orders": "b9194f8a84423e289efe6778bae184a01aef85fecdb3436b823ea9d2949265b0",
    "fills": "84c9b804ee88ebb482dc9cba06d7a45f429924d566d1c07c3bd15cf5ef035169",
}
GOLDEN_COUNTS = {"decisions": 236, "orders": 61, "fills": 17}


def book_tape(seed: int, n: int, t0: int = SESSION_T0) -> list:
    """``n`` events (book snapshots and trades, about 1 in 8 a trade) of a seeded one-tick-spread
    book, numbered 1..n, ts_recv = ts_event."""
    rng = np.random.default_rng(seed)
    gaps = np.maximum(1, rng.exponential(1e9 / RATE, n)).astype(np.int64)
    ts = t0 + np.cumsum(gaps)
    u = rng.random(n)  # trade or book change
    side_u = rng.random(n)
    qty_geo = rng.geometric(0.35, n)
    block = rng.random(n) < 0.02
    block_qty = rng.integers(20, 120, n)
    level = rng.integers(0, LEVELS, n)
    delta = rng.integers(-15, 16, n)
    fresh = rng.integers(5, 80, n)
    regime_switch = rng.random(n) < 1 / 1500  # a regime lasts ~1500 events (~5 s)
    regime_draw = rng.integers(0, 3, n)
    brokers = rng.integers(0, 8, (n, 2))
    broker_ids = (3, 308, 386, 85, 120, 72, 27, 8)

    bid = 10_800  # best bid in ticks: 5400.0
    bids = [int(q) for q in rng.integers(5, 80, LEVELS)]
    asks = [int(q) for q in rng.integers(5, 80, LEVELS)]
    buy_share = 0.5
    trade_id = 0
    out: list = []
    for i in range(n):
        t = int(ts[i])
        if regime_switch[i]:
            buy_share = (0.35, 0.5, 0.65)[regime_draw[i]]
        if u[i] < 0.125:
            buy = side_u[i] < buy_share
            q = int(block_qty[i]) if block[i] else int(qty_geo[i])
            book = asks if buy else bids
            px = (bid + 1 if buy else bid) * TICK
            q = min(q, book[0])
            trade_id += 1
            b, s = broker_ids[brokers[i, 0]], broker_ids[brokers[i, 1]]
            out.append(Trade(SYM, t, t, 0, px, q, 2 if buy else 3, b, s, trade_id))
            book[0] -= q
            if book[0] == 0:  # the touch is gone: the book moves a tick the aggressor's way
                if buy:
                    bid += 1
                    asks.pop(0)
                    asks.append(int(fresh[i]))
                    bids.insert(0, int(fresh[(i + 1) % n]))
                    bids.pop()
                else:
                    bid -= 1
                    bids.pop(0)
                    bids.append(int(fresh[i]))
                    asks.insert(0, int(fresh[(i + 1) % n]))
                    asks.pop()
        else:
            book = bids if side_u[i] < 0.5 else asks
            k = int(level[i])
            book[k] = max(1, book[k] + int(delta[i]))
        out.append(BookSnapshot(SYM, t, t, 0, tuple((bid - k) * TICK for k in range(LEVELS)), tuple(bids),
                                tuple((bid + 1 + k) * TICK for k in range(LEVELS)), tuple(asks)))
    return [e._replace(seq=j + 1) for j, e in enumerate(out[:n])]


def train(model_dir) -> None:
    from pipelines.alpha.ml import train_model
    from pipelines.features.engine import SymbolAnalytics
    from pipelines.model.messages import FeatureVector

    out: list = []
    SymbolAnalytics(SYM, TICK).on_events(book_tape(MODEL_SEED, MODEL_EVENTS), out)
    train_model([m for m in out if type(m) is FeatureVector], HORIZON_S * 1_000_000_000, model_dir, "pinned")


def config(model_dir):
    return config_from_dict({
        "symbols": [SYM],
        "recorder": {"enabled": False},
        "features": {"enabled": True},
        "hmarl": {"enabled": True, "model_dir": str(model_dir), "horizon_s": HORIZON_S,
                  "decision_every_ms": EVERY_MS, "threshold": 0.05},
        # Passive entries resting in the book, brackets, a HOLD that flattens: every order kind
        # the policy makes, so the pin covers the exchange's resting orders too.
        "execution": {"enabled": True, "policy": {"style": "passive", "passive_timeout_s": 2.0, "brackets": True,
                                                  "stop_loss_ticks": 4, "take_profit_ticks": 4,
                                                  "hold_flattens": True}},
        # No cooldown or loss limit: they would stop the entries after three losing round trips,
        # and the pin is meant to cover the order path all along the run.
        "risk": {"max_consecutive_losses": 0, "max_daily_loss": 0, "max_drawdown": 0},
    })


def digest(rows: list) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def run(model_dir) -> dict:
    g = InProcessGraph(config(model_dir))
    g.feed(g.admit(book_tape(RUN_SEED, RUN_EVENTS)))
    g.feed(g.end_of_input())
    final = g.finish()
    rows = {"decisions": list(g.decisions), "orders": g.orders(), "fills": g.fills()}
    return {"final": final, "rows": rows, "hashes": {k: digest(v) for k, v in rows.items()}}


@pytest.fixture(scope="module")
def pinned(tmp_path_factory):
    d = tmp_path_factory.mktemp("pinned-model")
    train(d)
    return run(d)


def test_the_input_is_a_valid_market_that_trades_both_ways(pinned):
    events = book_tape(RUN_SEED, RUN_EVENTS)
    trades = [e for e in events if type(e) is Trade]
    assert len(events) == RUN_EVENTS and 0.1 < len(trades) / RUN_EVENTS < 0.12  # 1 in 8 draws is a trade, which adds a book: 1/9
    assert all(a.ts_event <= b.ts_event for a, b in zip(events, events[1:]))  # a trade's book shares its time
    assert all(e.bid_px[0] + TICK == e.ask_px[0] for e in events if type(e) is BookSnapshot)
    feed = pinned["final"]["feed"]
    assert feed["validation"]["rejected"] == {} and feed["events_out"] == RUN_EVENTS
    actions = Counter(d.action for d in pinned["rows"]["decisions"])
    assert set(actions) == {"BUY", "SELL", "HOLD"}, actions
    assert pinned["rows"]["fills"]


def test_decisions_orders_and_fills_are_the_pinned_ones(pinned):
    counts = {k: len(v) for k, v in pinned["rows"].items()}
    assert counts == GOLDEN_COUNTS
    assert pinned["hashes"] == GOLDEN


if __name__ == "__main__":  # prints the golden values (see the module's docstring)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        train(d)
        r = run(d)
    print("GOLDEN =", r["hashes"])
    print("GOLDEN_COUNTS =", {k: len(v) for k, v in r["rows"].items()})
