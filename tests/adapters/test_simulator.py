"""Tests for the synthetic WDO feed (pipelines/adapters/simulator.py).

Every statistical claim is recomputed here with numpy/pandas from the emitted
events; nothing is mocked. The main sample is 150k events at rate 40 ev/s
(~62 minutes of event time, so several aggressor regimes of minutes each).
"""

from __future__ import annotations

import time
from datetime import datetime, time as dtime, timedelta

import numpy as np
import pandas as pd
import pytest

from pipelines.adapters.config import SimulatorConfig
from pipelines.config import ConfigError, config_from_dict
from pipelines.model.messages import BookSnapshot, Trade, TradeType
from pipelines.adapters.simulator import BROKERS, DAY_PROFILE, MAX_ORDER, MarketSimulator
from pipelines.model.clock import SAO_PAULO, parse_time, to_ns

START = "2026-11-23T09:00:00"  # a Monday, Sao Paulo local time
SYM = "WDOZ26"
BUY, SELL, AUCTION = int(TradeType.BUY_AGGRESSOR), int(TradeType.SELL_AGGRESSOR), int(TradeType.AUCTION)


def drain(sim: MarketSimulator, batch: int = 5000) -> list:
    out: list = []
    while not sim.exhausted:
        out.extend(sim.poll(batch))
    return out


def strip(events: list) -> list:
    """Events without ts_recv (the only field allowed to differ between runs)."""
    return [e._replace(ts_recv=0) for e in events]


def sim_cfg(**kw) -> SimulatorConfig:
    base = dict(seed=11, rate=40.0, speed=0.0, start=START, max_events=150_000)
    base.update(kw)
    return SimulatorConfig(**base)


def local_times(ns) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(ns, dtype=np.int64), utc=True).tz_convert("America/Sao_Paulo")


@pytest.fixture(scope="module")
def run():
    t_before = time.time_ns()
    events = drain(MarketSimulator(sim_cfg(), [SYM]))
    t_after = time.time_ns()
    trades = pd.DataFrame([e._asdict() for e in events if isinstance(e, Trade)])
    books = [e for e in events if isinstance(e, BookSnapshot)]
    return events, trades, books, (t_before, t_after)


def test_stream_shape(run):
    events, trades, books, (t0, t1) = run
    assert len(events) == 150_000
    assert len(trades) + len(books) == len(events)
    assert all(e.symbol == SYM and e.seq == 0 and t0 <= e.ts_recv <= t1 for e in events)
    ts = np.array([e.ts_event for e in events], dtype=np.int64)
    assert np.all(np.diff(ts) >= 0)
    # exponential inter-arrivals with mean 1/rate per event: the span matches n/rate
    mean_gap_s = (ts[-1] - ts[0]) / (len(ts) - 1) / 1e9
    assert mean_gap_s == pytest.approx(1 / 40.0, rel=0.03)
    # trade sizes are integers >= 1; trade ids strictly increase
    assert trades.qty.dtype.kind == "i" and trades.qty.min() >= 1
    assert np.all(np.diff(trades.trade_id.to_numpy()) > 0)


def test_prices_on_tick_grid_and_in_band(run):
    _, trades, books, _ = run
    px = np.concatenate([trades.price.to_numpy(), np.array([b.bid_px + b.ask_px for b in books]).ravel()])
    ticks = px / 0.5
    assert np.max(np.abs(ticks - np.round(ticks))) < 1e-9
    assert px.min() >= 5000.0 and px.max() <= 6000.0
    assert px.max() - px.min() >= 5.0  # the price does move


def test_aggressor_mix(run):
    _, trades, _, _ = run
    share = trades.trade_type.value_counts(normalize=True)
    assert share.get(BUY, 0) + share.get(SELL, 0) >= 0.95
    assert 0.30 <= share.get(BUY, 0) <= 0.70
    assert 0.30 <= share.get(SELL, 0) <= 0.70


def test_persistent_imbalance_regimes(run):
    _, trades, _, _ = run
    agg = trades[trades.trade_type.isin([BUY, SELL])]
    sign = np.where(agg.trade_type.to_numpy() == BUY, 1.0, -1.0)
    buys = (sign > 0).astype(float)
    n_win = len(buys) // 500
    assert n_win >= 20
    window_share = buys[: n_win * 500].reshape(n_win, 500).mean(axis=1)
    assert window_share.std() > 2 * np.sqrt(0.25 / 500)
    lag1 = np.corrcoef(sign[:-1], sign[1:])[0, 1]
    assert lag1 > 0.1


def test_price_moves_with_order_flow(run):
    _, trades, _, _ = run
    agg = trades[trades.trade_type.isin([BUY, SELL])].copy()
    agg["signed"] = np.where(agg.trade_type == BUY, 1, -1) * agg.qty
    agg["minute"] = agg.ts_event // 60_000_000_000
    per_min = agg.groupby("minute").agg(flow=("signed", "sum"), first=("price", "first"), last=("price", "last"))
    assert len(per_min) >= 30
    assert np.corrcoef(per_min.flow, per_min["last"] - per_min["first"])[0, 1] > 0.3


def test_trade_size_distribution(run):
    _, trades, _, _ = run
    qty = trades.qty.to_numpy()
    assert 1 <= np.median(qty) <= 5
    assert np.mean((qty >= 1) & (qty <= 5)) >= 0.70
    assert np.sum(qty >= 50) >= 10  # rare large blocks
    assert qty.max() <= MAX_ORDER == 300


def test_book_well_formed(run):
    _, _, books, _ = run
    bid_px = np.array([b.bid_px for b in books])
    ask_px = np.array([b.ask_px for b in books])
    bid_q = np.array([b.bid_qty for b in books])
    ask_q = np.array([b.ask_qty for b in books])
    assert bid_px.shape == ask_px.shape == bid_q.shape == ask_q.shape == (len(books), 5)
    assert np.all(np.diff(bid_px, axis=1) < 0) and np.all(np.diff(ask_px, axis=1) > 0)
    assert np.all(bid_q > 0) and np.all(ask_q > 0)
    assert np.all(bid_px[:, 0] < ask_px[:, 0])  # never crossed or locked


def test_book_depth_config_respected():
    books = [e for e in drain(MarketSimulator(sim_cfg(book_depth=12, max_events=5000), [SYM])) if e.KIND == "book"]
    assert books and all(len(b.bid_px) == len(b.ask_qty) == 12 for b in books)
    assert all(b.bid_px[0] < b.ask_px[0] for b in books)


def test_sweeps_print_one_trade_per_level_then_one_snapshot(run):
    events, trades, _, _ = run
    agg = trades[trades.trade_type.isin([BUY, SELL])]
    levels = agg.groupby("ts_event").price.nunique()
    assert (levels >= 3).sum() >= 5
    # within one market order, prices walk away from the touch, one print per price
    for _, g in agg[agg.ts_event.isin(levels[levels >= 2].index)].groupby("ts_event"):
        steps = np.diff(g.price.to_numpy())
        assert np.all(steps > 0) if g.trade_type.iloc[0] == BUY else np.all(steps < 0)
    # every aggressor trade is followed by a trade of the same order or its snapshot
    for a, b in zip(events, events[1:]):
        if isinstance(a, Trade) and a.trade_type in (BUY, SELL):
            assert b.ts_event == a.ts_event
            assert isinstance(b, BookSnapshot) or b.trade_type == a.trade_type


def test_iceberg_refills(run):
    events, _, _, _ = run
    # An order prints once per price, so a print larger than the size displayed
    # at that price just before is only possible if hidden size refilled it.
    hidden_fills = 0
    last = None
    for e in events:
        if isinstance(e, BookSnapshot):
            last = e
        elif last is not None and e.trade_type in (BUY, SELL):
            px, qty = (last.ask_px, last.ask_qty) if e.trade_type == BUY else (last.bid_px, last.bid_qty)
            if e.price in px and e.qty > qty[px.index(e.price)]:
                hidden_fills += 1
    assert hidden_fills >= 5


def test_brokers(run):
    _, trades, _, _ = run
    assert (trades.buyer != 0).all() and (trades.seller != 0).all()
    ids = set(trades.buyer) | set(trades.seller)
    assert ids <= set(BROKERS) and len(ids) >= 8
    counts = pd.concat([trades.buyer, trades.seller]).value_counts()
    assert counts.iloc[0] >= 3 * counts.iloc[len(counts) // 2]  # skewed popularity


def test_session_clock_crosses_into_next_weekday():
    # Friday 17:59, 1000 ev/s: ~60k events reach 18:00, the rest run on Monday.
    events = drain(MarketSimulator(sim_cfg(rate=1000.0, start="2026-11-27T17:59:00", max_events=100_000), [SYM]))
    loc = local_times([e.ts_event for e in events])
    assert loc.day_of_week.max() < 5
    tod = loc.hour * 3600 + loc.minute * 60 + loc.second
    assert tod.min() >= 9 * 3600 and tod.max() < 18 * 3600
    days = sorted(set(loc.date))
    assert [str(d) for d in days] == ["2026-11-27", "2026-11-30"]
    first_monday = int(np.argmax(loc.date == days[1]))
    assert loc[first_monday] - pd.Timestamp("2026-11-30 09:00", tz="America/Sao_Paulo") < pd.Timedelta(seconds=1)
    assert events[first_monday].trade_type == AUCTION  # opening print
    assert np.all(np.diff([e.ts_event for e in events]) >= 0)


def test_start_is_moved_into_a_session():
    def first_ts(start):
        return MarketSimulator(sim_cfg(start=start, max_events=1), [SYM]).poll(1)[0].ts_event

    monday_open = to_ns(datetime(2026, 11, 30, 9, 0, tzinfo=SAO_PAULO))
    assert first_ts("2026-11-28T12:00:00") == monday_open  # Saturday
    assert first_ts("2026-11-30T07:30:00") == monday_open  # before the open
    assert first_ts("2026-11-27T18:30:00") == monday_open  # after Friday's close
    assert first_ts("2026-11-30T10:15:00-03:00") == to_ns(parse_time("2026-11-30T10:15:00-03:00"))
    # start=None: today's 10:00 Sao Paulo, or the next weekday's (after the opening auction)
    day = datetime.now(SAO_PAULO).date()
    while day.weekday() >= 5:
        day += timedelta(days=1)
    assert first_ts(None) == to_ns(datetime.combine(day, dtime(10, 0), tzinfo=SAO_PAULO))


def test_deterministic_under_seed():
    a = strip(drain(MarketSimulator(sim_cfg(max_events=20_000), [SYM, "WINZ26"])))
    b = strip(drain(MarketSimulator(sim_cfg(max_events=20_000), [SYM, "WINZ26"])))
    c = strip(drain(MarketSimulator(sim_cfg(seed=12, max_events=20_000), [SYM, "WINZ26"])))
    assert a == b
    assert a != c


def test_symbols_are_independent_and_merged_in_time_order():
    merged = strip(drain(MarketSimulator(sim_cfg(max_events=20_000), [SYM, "WINZ26"])))
    ts = [e.ts_event for e in merged]
    assert ts == sorted(ts)
    wdo = [e for e in merged if e.symbol == SYM]
    win = [e for e in merged if e.symbol == "WINZ26"]
    assert 8_000 < len(wdo) < 12_000
    alone = strip(drain(MarketSimulator(sim_cfg(max_events=len(wdo)), [SYM])))
    assert alone == wdo  # a symbol's stream does not depend on the others
    assert [e.price for e in wdo if e.KIND == "tick"][:50] != [e.price for e in win if e.KIND == "tick"][:50]


def test_small_polls_split_actions_without_loss():
    whole = strip(MarketSimulator(sim_cfg(max_events=3000), [SYM]).poll(10_000))
    sim = MarketSimulator(sim_cfg(max_events=3000), [SYM])
    pieces: list = []
    while not sim.exhausted:
        got = sim.poll(1)
        assert len(got) == 1
        pieces.extend(got)
    assert len(whole) == 3000 and strip(pieces) == whole
    assert sim.poll(10) == [] and sim.exhausted


def test_pacing_at_speed_one():
    sim = MarketSimulator(sim_cfg(rate=2000.0, speed=1.0, max_events=0), [SYM])
    t0 = time.monotonic_ns()
    first = sim.poll(100_000)
    assert 1 <= len(first) < 100  # not everything at once
    origin = first[0].ts_event
    n = len(first)
    while time.monotonic_ns() - t0 < 1_000_000_000:
        time.sleep(0.005)
        got = sim.poll(100_000)
        limit = time.monotonic_ns() - t0
        assert all(e.ts_event - origin <= limit for e in got)  # nothing released early
        n += len(got)
    assert 1700 <= n <= 2300
    assert not sim.exhausted


def test_wait_sleeps_until_the_next_event_is_due():
    sim = MarketSimulator(sim_cfg(rate=40.0, speed=1.0, max_events=0), [SYM])
    t0 = time.monotonic()
    n = len(sim.poll(1000))  # starts the pacing clock
    waits, empty = [], 0
    while time.monotonic() - t0 < 1.0:
        w0 = time.monotonic()
        sim.wait(5.0)  # events come every ~25 ms: never the whole timeout
        waits.append(time.monotonic() - w0)
        got = sim.poll(1000)
        n += len(got)
        empty += not got
    assert 20 <= n <= 120  # ~40 events/s paced, not all at once
    assert max(waits) < 1.0
    assert empty <= 2  # woke when something was due, not to look
    assert len(waits) >= 15  # slept between events instead of spinning or oversleeping

    fast = MarketSimulator(sim_cfg(rate=40.0, speed=0.0), [SYM])
    fast.poll(10)
    t0 = time.monotonic()
    fast.wait(5.0)  # unpaced: always due
    assert time.monotonic() - t0 < 0.5


def test_resume_after_continues_strictly_after():
    first = drain(MarketSimulator(sim_cfg(max_events=5000), [SYM]))
    cut = first[2500]
    resume = {SYM: cut.ts_event}
    again = strip(drain(MarketSimulator(sim_cfg(max_events=5000), [SYM], resume_after_ns=resume)))
    assert all(e.ts_event > cut.ts_event for e in again)
    assert again[0].ts_event - cut.ts_event < 1_000_000_000  # continues, does not skip ahead
    assert again == strip(drain(MarketSimulator(sim_cfg(max_events=5000), [SYM], resume_after_ns=resume)))
    assert again != strip(first[2501:])  # re-seeded from the resume time
    first_ids = [e.trade_id for e in first[:2501] if isinstance(e, Trade)]
    again_ids = [e.trade_id for e in again if isinstance(e, Trade)]
    assert min(again_ids) > max(first_ids)
    # resuming at Friday's close continues on Monday's open
    late = to_ns(parse_time("2026-11-27T17:59:59.999"))
    nxt = MarketSimulator(sim_cfg(max_events=10), [SYM], resume_after_ns={SYM: late}).poll(10)
    assert local_times([nxt[0].ts_event])[0] >= pd.Timestamp("2026-11-30 09:00", tz="America/Sao_Paulo")


def test_end_stops_the_feed_at_that_event_time():
    end = to_ns(parse_time("2026-11-23T09:01:00"))
    sim = MarketSimulator(sim_cfg(end="2026-11-23T09:01:00", max_events=0), [SYM, "WINZ26"])
    events = drain(sim)
    assert sim.exhausted and sim.poll(100) == []
    ts = np.array([e.ts_event for e in events])
    assert ts.max() < end and end - ts.max() < 1_000_000_000  # exclusive, and nothing left out before it
    # 60 s at 40 events/s per symbol: 4800 expected (Poisson sd ~70; whole actions, so a bit more)
    assert 4400 <= len(events) <= 5400
    # an end in the overnight gap: the feed stops at Friday's 18:00 close
    late = drain(MarketSimulator(sim_cfg(start="2026-11-27T17:59:00", end="2026-11-27T21:00:00", rate=100.0,
                                         max_events=0), [SYM]))
    assert local_times([late[-1].ts_event])[0] < pd.Timestamp("2026-11-27 18:00", tz="America/Sao_Paulo")
    assert 5000 <= len(late) <= 7000  # one minute at 100 events/s, then nothing


@pytest.mark.parametrize("end, problem", [
    ("2026-11-23T09:00:00", "feed.simulator.end: must be after feed.simulator.start"),
    ("2026-11-22T12:00:00", "feed.simulator.end: must be after feed.simulator.start"),
    ("tomorrow", "feed.simulator.end: expected an ISO date or datetime"),
    ("2026-11-23T08:30:00-03:00", "feed.simulator.end: must be after feed.simulator.start"),
])
def test_a_bad_end_is_rejected_in_one_line(end, problem):
    with pytest.raises(ValueError) as err:
        MarketSimulator(sim_cfg(end=end), [SYM])
    assert str(err.value).startswith(problem) and "\n" not in str(err.value)


def test_an_end_before_any_session_time_is_rejected():
    # Saturday noon to Sunday noon: start is moved to Monday's open, so nothing would ever be emitted
    with pytest.raises(ValueError, match="^feed.simulator.end: no session time .* between"):
        MarketSimulator(sim_cfg(start="2026-11-28T12:00:00", end="2026-11-29T12:00:00"), [SYM])


def test_the_shortest_end_gives_the_first_action_only():
    # 1 µs after the open: the opening print and the first action's snapshot, all at 09:00:00
    events = drain(MarketSimulator(sim_cfg(end="2026-11-23T09:00:00.000001", max_events=0), [SYM]))
    assert events and {e.ts_event for e in events} == {to_ns(parse_time(START))}
    assert events[0].trade_type == AUCTION and isinstance(events[-1], BookSnapshot)


def test_profile_is_a_checked_config_key():
    cfg = config_from_dict({"feed": {"simulator": {"profile": "day", "end": "2026-11-23T18:00:00"}}})
    assert cfg.feed.simulator.profile == "day" and cfg.feed.simulator.end == "2026-11-23T18:00:00"
    assert config_from_dict({}).feed.simulator.profile == "flat"
    with pytest.raises(ConfigError, match="feed.simulator.profile: must be one of flat, day"):
        config_from_dict({"feed": {"simulator": {"profile": "week"}}})


def test_day_profile_sets_the_pace_by_hour():
    # 11:59:30 -> 12:00:30 crosses from the 11:00 hour into the quieter 12:00 one
    events = drain(MarketSimulator(sim_cfg(profile="day", rate=200.0, start="2026-11-23T11:59:30",
                                           end="2026-11-23T12:00:30", max_events=0), [SYM]))
    noon = to_ns(parse_time("2026-11-23T12:00:00"))
    before = sum(e.ts_event < noon for e in events)
    after = len(events) - before
    # 30 s at 200 x multiplier events/s on each side (~6000 and ~4500: the ratio's sd is ~0.02)
    assert after / before == pytest.approx(DAY_PROFILE[3] / DAY_PROFILE[2], abs=0.08)
    assert DAY_PROFILE[3] < 0.9 * DAY_PROFILE[2]
    assert strip(events) == strip(drain(MarketSimulator(sim_cfg(profile="day", rate=200.0, start="2026-11-23T11:59:30",
                                                                end="2026-11-23T12:00:30", max_events=0), [SYM])))


def test_close_stops_the_feed():
    sim = MarketSimulator(sim_cfg(max_events=0), [SYM])
    assert len(sim.poll(100)) == 100 and not sim.exhausted
    sim.close()
    assert sim.poll(100) == [] and sim.exhausted
