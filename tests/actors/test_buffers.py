"""Buffers without Ray: capacity, order, dedupe; candles equal a pandas resample."""

import numpy as np
import pandas as pd
import pytest

from actors.buffers import BookBuffer, CandleBuffer, TradeBuffer
from actors.config import ActorConfig
from pipelines.data.config import BufferConfig
from pipelines.model.messages import BookSnapshot, Trade
from tests.helpers import T0


def make_trades(n, seed=7, span_s=900):
    rng = np.random.default_rng(seed)
    ts = np.sort(T0 + rng.integers(0, span_s * 1_000_000_000, n))
    price = 5400 + 0.5 * np.cumsum(rng.choice([-1, 0, 1], n))
    qty = rng.geometric(0.4, n)
    tt = rng.choice([2, 3, 4], n, p=[0.48, 0.48, 0.04])
    return [Trade("WDOZ26", int(ts[i]), 0, i + 1, float(price[i]), int(qty[i]), int(tt[i])) for i in range(n)]


def test_trade_buffer_keeps_the_last_capacity_in_order_and_drops_duplicates():
    buf = TradeBuffer(ActorConfig(BufferConfig(trades=1000), symbol="WDOZ26"))
    trades = make_trades(2500)
    for i in range(0, 2500, 100):
        buf.on_batch(trades[i : i + 100], {"WDOZ26": trades[i - 1].seq if i else 0})
    reply = buf.on_batch(trades[2400:2500], {"WDOZ26": 2500})  # a resend of the last batch
    assert reply.accepted == 0 and reply.duplicates == 100
    snap = buf.snapshot()
    assert len(snap) == 1000
    assert [t.seq for t in snap] == list(range(1501, 2501))
    assert buf.snapshot(3) == trades[-3:]


def test_book_buffer_capacity_100():
    buf = BookBuffer(ActorConfig(BufferConfig(book=100), symbol="WDOZ26"))
    books = [BookSnapshot("WDOZ26", T0 + i, 0, i + 1, (5400.0,), (i + 1,), (5400.5,), (3,)) for i in range(250)]
    buf.on_batch(books, {"WDOZ26": 0})
    assert [b.seq for b in buf.snapshot()] == list(range(151, 251))


def test_buffer_refuses_a_batch_after_a_gap():
    buf = TradeBuffer(ActorConfig(BufferConfig(trades=10), symbol="WDOZ26"))
    trades = make_trades(30)
    buf.on_batch(trades[:10], {"WDOZ26": 0})
    reply = buf.on_batch(trades[20:], {"WDOZ26": 20})
    assert reply.resync_from == {"WDOZ26": 10}
    assert [t.seq for t in buf.snapshot()] == list(range(1, 11))


def pandas_candles(trades):
    df = pd.DataFrame(t._asdict() for t in trades)
    df.index = pd.to_datetime(df.ts_event, unit="ns", utc=True)
    df["buy"] = np.where(df.trade_type == 2, df.qty, 0)
    df["sell"] = np.where(df.trade_type == 3, df.qty, 0)
    r = df.resample("1min")
    out = pd.DataFrame({
        "open": r.price.first(), "high": r.price.max(), "low": r.price.min(), "close": r.price.last(),
        "volume": r.qty.sum(), "buy_volume": r.buy.sum(), "sell_volume": r.sell.sum(), "trades": r.price.count(),
    })
    return out[out.trades > 0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_candles_equal_a_pandas_resample(seed):
    trades = make_trades(5000, seed=seed, span_s=1800)
    # leave a quiet gap of several minutes: pandas yields empty rows there, we yield no candle
    trades = [t for t in trades if not (T0 + 600e9 <= t.ts_event < T0 + 840e9)]
    buf = CandleBuffer(ActorConfig(BufferConfig(candles=200), symbol="WDOZ26"))
    for i in range(0, len(trades), 333):
        buf.on_batch(trades[i : i + 333], {"WDOZ26": trades[i - 1].seq if i else 0})
    ours = buf.snapshot(include_open=True)
    ref = pandas_candles(trades)
    assert len(ours) == len(ref)
    got = pd.DataFrame([c._asdict() for c in ours])
    assert list(pd.to_datetime(got.ts_open, unit="ns", utc=True)) == list(ref.index)
    for col in ["open", "high", "low", "close", "volume", "buy_volume", "sell_volume", "trades"]:
        np.testing.assert_array_equal(got[col].to_numpy(), ref[col].to_numpy(), err_msg=col)
    assert buf.current().ts_open == int(ref.index[-1].value)
    assert len(buf.snapshot()) == len(ref) - 1  # closed candles only


def test_candle_buffer_keeps_200_closed_candles():
    trades = [Trade("WDOZ26", T0 + m * 60_000_000_000, 0, m + 1, 5400.0, 1, 2) for m in range(260)]
    buf = CandleBuffer(ActorConfig(BufferConfig(candles=200), symbol="WDOZ26"))
    buf.on_batch(trades, {"WDOZ26": 0})
    snap = buf.snapshot()
    assert len(snap) == 200
    assert snap[0].ts_open == T0 + 59 * 60_000_000_000 and snap[-1].ts_open == T0 + 258 * 60_000_000_000
