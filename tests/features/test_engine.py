"""SymbolAnalytics (pipelines/features/engine.py): what the FeatureEngine actor emits, without Ray.

References are computed here independently: the vectorized batch path for the
65 features, numpy/pandas for counts, cadences and footprint sums.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import pandas as pd
import pytest

from pipelines.features.batch import compute_batch
from pipelines.features.core import FEATURE_NAMES
from pipelines.features.engine import VECTOR_NAMES, SymbolAnalytics
from pipelines.features.flow_set import FLOW_FEATURE_NAMES
from pipelines.model.messages import (
    BookSnapshot,
    FeatureVector,
    FlowState,
    FootprintState,
    LiquidityState,
    TapeSignal,
    Trade,
    from_dict,
    to_dict,
)
from pipelines.edges.zmq import decode, encode
from tests.helpers import simulated_events

SYM = "WDOZ26"
NS_PER_S = 1_000_000_000


@pytest.fixture(scope="module")
def events():
    return simulated_events(seed=5, rate=60.0, max_events=30_000, symbol=SYM)


def run(events, **kw) -> tuple[SymbolAnalytics, list]:
    a = SymbolAnalytics(SYM, 0.5, **kw)
    out: list = []
    a.on_events(events, out)
    return a, out


def of(out, cls):
    return [m for m in out if type(m) is cls]


def test_vector_after_every_trade_matches_batch(events):
    trades = [e for e in events if isinstance(e, Trade)]
    _, out = run(events)
    vectors = of(out, FeatureVector)
    assert [v.seq for v in vectors] == [t.seq for t in trades]
    assert vectors[0].names == VECTOR_NAMES and len(VECTOR_NAMES) == 65 + len(FLOW_FEATURE_NAMES)
    batch = compute_batch(trades, price_quantum=0.5)[list(FEATURE_NAMES)].to_numpy()
    live = np.array([v.values[:65] for v in vectors])
    np.testing.assert_allclose(live, batch, rtol=1e-9, atol=1e-12, equal_nan=True)
    # tape_speed (flow part): prints in (t - 60 s, t] / 60 once 60 s of the day have passed.
    ts = np.array([t.ts_event for t in trades])
    k = VECTOR_NAMES.index("tape_speed")
    for i in range(0, len(trades), 97):
        seen = ts[: i + 1]  # trades later in the tape with the same stamp are not in yet
        expected = (seen > ts[i] - 60 * NS_PER_S).sum() / 60 if ts[i] - ts[0] >= 60 * NS_PER_S else math.nan
        got = vectors[i].values[k]
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, rel=1e-12)


def first_of_each_bucket(ts: np.ndarray, width_ns: int) -> np.ndarray:
    bucket = ts // width_ns
    return np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])


def test_cadences_on_event_time(events):
    _, out = run(events, vector_every_ns=2 * NS_PER_S, state_every_ns=NS_PER_S)
    trades = [e for e in events if isinstance(e, Trade)]
    t_ts = np.array([t.ts_event for t in trades])
    want_vec = [trades[i].seq for i in first_of_each_bucket(t_ts, 2 * NS_PER_S)]
    assert [v.seq for v in of(out, FeatureVector)] == want_vec
    all_ts = np.array([e.ts_event for e in events])
    want_state = [events[i].seq for i in first_of_each_bucket(all_ts, NS_PER_S)]
    assert [m.seq for m in of(out, FlowState)] == want_state
    assert [m.seq for m in of(out, LiquidityState)] == want_state


def test_closed_footprint_bars_match_groupby(events):
    _, out = run(events)
    trades = pd.DataFrame([t._asdict() for t in events if isinstance(t, Trade)])
    trades["minute"] = trades.ts_event // (60 * NS_PER_S) * (60 * NS_PER_S)
    sign = np.where(trades.trade_type == 2, 1, np.where(trades.trade_type == 3, -1, 0))
    trades["signed"] = sign * trades.qty
    g = trades.groupby("minute").agg(volume=("qty", "sum"), delta=("signed", "sum"), high=("price", "max"), low=("price", "min"))
    closed = [m.bar for m in of(out, FootprintState) if m.closed]
    assert len(closed) == len(g) - 1  # the last minute is still forming
    for bar in closed:
        row = g.loc[bar["ts_open"]]
        assert (bar["volume"], bar["delta"], bar["high"], bar["low"]) == (row.volume, row.delta, row.high, row.low)
    # Cumulative delta runs over the session's closed bars.
    assert closed[-1]["cum_delta"] == g.delta.iloc[: len(closed)].sum()


def test_quiet_warm_up_then_live_equals_live_from_start(events):
    """What a restarted engine does: replay quietly, then go on. Outputs after the
    replay point must equal those of an engine that never stopped."""
    cut = len(events) // 2
    _, full = run(events, vector_every_ns=0, state_every_ns=NS_PER_S)
    warm = SymbolAnalytics(SYM, 0.5, vector_every_ns=0, state_every_ns=NS_PER_S)
    warm.on_events(events[:cut], None)
    later: list = []
    warm.on_events(events[cut:], later)
    cut_seq = events[cut - 1].seq
    expected = [m for m in full if m.seq > cut_seq]
    assert len(later) == len(expected) > 100
    for a, b in zip(later, expected):
        assert type(a) is type(b) and a.seq == b.seq
        assert orjson.dumps(to_dict(a)) == orjson.dumps(to_dict(b))  # NaN-safe exact comparison


def test_flow_state_contents(events):
    a, out = run(events)
    last = of(out, FlowState)[-1]
    v = last.values
    for w in ("1m", "5m", "15m", "30m", "60m"):
        for key in (f"ofi_{w}", f"ofi_norm_{w}", f"ofi_ratio_{w}", f"tfi_{w}", f"aggression_ratio_{w}"):
            assert key in v
        r = v[f"ofi_ratio_{w}"]
        assert math.isnan(r) or -1.0 <= r <= 1.0
    assert set(FLOW_FEATURE_NAMES) <= set(v) and "vpin" in v and "cum_delta" in v
    # volume over the 1-minute window: every print in (t - 60 s, t] at the state's clock.
    seen = [e for e in events if isinstance(e, Trade) and e.seq <= last.seq]
    ts = np.array([e.ts_event for e in seen])
    qty = np.array([e.qty for e in seen])
    clock = max(e.ts_event for e in events if e.seq <= last.seq)
    assert v["volume_1m"] == qty[(ts > clock - 60 * NS_PER_S) & (ts <= clock)].sum()
    assert a.stats()["emitted"]["flow"] == len(of(out, FlowState))


def test_wire_round_trip_every_analytics_kind(events):
    _, out = run(events, state_every_ns=NS_PER_S)
    kinds = {type(m) for m in out}
    assert {FeatureVector, FlowState, LiquidityState, FootprintState} <= kinds
    extra = TapeSignal(SYM, 1, 2, 3, "sweep", 1, 5400.5, 0.8, {"levels": 3})
    for m in [next(x for x in out if type(x) is k) for k in kinds] + [extra]:
        topic, payload = decode(encode(m))
        assert topic == f"{m.KIND}.{SYM}"
        back = from_dict(payload)
        assert type(back) is type(m) and back.seq == m.seq
        assert orjson.dumps(to_dict(back)) == orjson.dumps(to_dict(m))
    vec = next(m for m in out if type(m) is FeatureVector)
    payload = orjson.loads(orjson.dumps(to_dict(vec)))
    assert list(payload["values"]) == list(VECTOR_NAMES)
    nan_names = [n for n, x in zip(vec.names, vec.values) if math.isnan(x)]
    assert nan_names and all(payload["values"][n] is None for n in nan_names)  # warm-up: NaN -> null


def test_book_only_advances_footprint_and_states():
    """A quiet tape still closes the minute's bar and ticks the state cadence."""
    t0 = 1_795_000_000 * NS_PER_S // 60 * 60  # a minute boundary
    a = SymbolAnalytics(SYM, 0.5, state_every_ns=NS_PER_S)
    out: list = []
    a.on_events([Trade(SYM, t0 + 1, 0, 1, 5400.0, 3, 2)], out)
    book = BookSnapshot(SYM, t0 + 61 * NS_PER_S, 0, 2, (5399.5,), (10,), (5400.0,), (12,))
    a.on_events([book], out)
    closed = [m for m in out if type(m) is FootprintState and m.closed]
    assert len(closed) == 1 and closed[0].seq == 2 and closed[0].bar["volume"] == 3
    states = [m.seq for m in out if type(m) is FlowState]
    assert states == [1, 2]
    liq = [m for m in out if type(m) is LiquidityState][-1].values
    assert (liq["best_bid"], liq["best_ask"], liq["spread_ticks"]) == (5399.5, 5400.0, 1.0)
