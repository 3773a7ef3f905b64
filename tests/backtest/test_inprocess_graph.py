"""The live graph's decision path in one process (actors.backtest.InProcessGraph).

A seeded simulator session (seed 3, 300 events/s, 20,000 events: about 67 s of event time)
through the feature engine, the four agents, the ML voter, the coordinator (a decision every
250 ms, threshold 0.05), the feedback system and the execution actor. The same input must give
the same decisions and fills, whatever the run and whatever the micro-batch size; the decision
slots are checked against the feature vectors computed here directly from the same events.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import replace

import pytest

from actors.backtest import InProcessGraph, backtest_feed
from actors.config import ActorConfig
from actors.execution import ExecutionActor
from pipelines.config import config_from_dict
from pipelines.execution.config import ExecutionConfig
from pipelines.features.engine import SymbolAnalytics
from pipelines.model.clock import NS_PER_MS
from pipelines.model.messages import FeatureVector, Trade
from pipelines.risk.config import RiskConfig
from tests.helpers import SESSION_T0, simulated_events

SYM = "WDOZ26"
START = "2025-11-24T10:00:00-03:00"  # a Monday, an hour into the session (past the opening auction)
SEED, RATE, EVENTS = 3, 300, 20_000
EVERY_MS = 250


def config(model_dir=None, hmarl: bool = True, **feed):
    return config_from_dict({
        "symbols": [SYM],
        "feed": {"simulator": {"seed": SEED, "rate": RATE, "start": START, "max_events": EVENTS}, **feed},
        "recorder": {"enabled": False},
        "features": {"enabled": True},
        "hmarl": {"enabled": True, "model_dir": str(model_dir), "horizon_s": 5, "decision_every_ms": EVERY_MS,
                  "threshold": 0.05} if hmarl else {"enabled": False},
        "execution": {"enabled": hmarl},
    })


def run(cfg, batch: int) -> dict:
    g = InProcessGraph(cfg, batch=batch)
    final = g.run()
    decisions = [(d.decision_id, d.action, d.size, d.score) for d in g.decisions]
    fills = [(f.fill_id, f.side, f.quantity, f.price) for f in g.fills()]
    return {"graph": g, "final": final, "decisions": decisions, "fills": fills,
            "decisions_hash": digest(decisions), "fills_hash": digest(fills)}


def digest(rows: list) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.fixture(scope="module")
def runs(model_dir):
    cfg = config(model_dir)
    return {"first": run(cfg, 500), "again": run(cfg, 500), "small_batches": run(cfg, 50)}


def test_the_same_input_gives_the_same_decisions_and_fills(runs):
    a, b = runs["first"], runs["again"]
    assert a["decisions"] and a["fills"]
    assert a["decisions_hash"] == b["decisions_hash"]
    assert a["fills_hash"] == b["fills_hash"]


def test_the_micro_batch_size_changes_nothing(runs):
    a, small = runs["first"], runs["small_batches"]
    assert small["graph"].batches == math.ceil(EVENTS / 50) and a["graph"].batches == EVENTS // 500
    assert small["decisions_hash"] == a["decisions_hash"]
    assert small["fills_hash"] == a["fills_hash"]


def test_every_action_is_decided_and_orders_are_filled(runs):
    r = runs["first"]
    actions = Counter(a for _id, a, _size, _score in r["decisions"])
    assert set(actions) == {"BUY", "SELL", "HOLD"}, actions
    assert len(r["fills"]) >= 1
    for _id, side, qty, price in r["fills"]:
        assert side in ("BUY", "SELL") and qty >= 1
        assert price % 0.5 == 0  # the simulator's tick
    assert len({f[0] for f in r["fills"]}) == len(r["fills"])
    # the journal holds what the engine counted, and the coordinator decided what was kept
    final = r["final"]
    (ex,) = [v for k, v in final.items() if k.startswith("execution:")]
    assert ex["counts"]["fills"] == len(r["fills"])
    assert final[f"coordinator:{SYM}"]["actions"] == dict(actions)
    signed = sum(q if side == "BUY" else -q for _id, side, q, _p in r["fills"])
    assert ex["positions"].get(SYM, 0) == signed


def test_one_decision_per_decision_slot_on_its_first_vector(runs):
    """Computed here: the feature vectors of the same events; the first one in each 250 ms slot
    of event time is the one decided on (none missing, none twice)."""
    cfg = config(hmarl=False)
    f = cfg.features
    out: list = []
    SymbolAnalytics(SYM, cfg.feed.simulator.tick_size, vector_every_ns=int(f.vector_every_ms * NS_PER_MS),
                    state_every_ns=int(f.state_every_ms * NS_PER_MS), vpin_bucket_volume=f.vpin_bucket_volume,
                    ).on_events(simulated_events(SEED, RATE, EVENTS, SYM, START), out)
    every_ns = EVERY_MS * 1_000_000
    first: dict[int, int] = {}
    for m in out:
        if type(m) is FeatureVector:
            first.setdefault(m.ts_event // every_ns, m.ts_event)
    decided = [d.ts_event for d in runs["first"]["graph"].decisions]
    assert decided == sorted(first.values())


def test_every_event_reaches_every_destination_once_in_order(runs):
    g = runs["small_batches"]["graph"]
    final = runs["small_batches"]["final"]
    feed = final["feed"]
    assert feed["events_out"] == EVENTS and feed["seq"] == {SYM: EVENTS}
    assert feed["refused"] == {} and feed["bad_events"] == {} and feed["call_errors"] == {}
    assert feed["validation"]["rejected"] == {}
    engine = final[f"features:{SYM}"]
    assert (engine["accepted"], engine["position"], engine["gaps"], engine["duplicates"]) == (EVENTS, EVENTS, 0, 0)
    (name,) = [k for k in final if k.startswith("execution:")]
    assert final[name]["accepted"] == EVENTS and final[name]["gaps"] == 0 and final[name]["duplicates"] == 0
    # the feed's prev: per destination, the last seq it was sent (here: everything)
    assert g.sent_upto == {f"features:{SYM}": {SYM: EVENTS}, name: {SYM: EVENTS}}
    # nothing was published or written: no publisher, no Valkey
    assert final[f"features:{SYM}"]["publisher"] is None and final[f"features:{SYM}"]["flow_store"] is None
    assert final[name]["publisher"] is None and final[name]["trading_store"] is None


def test_bad_events_are_rejected_and_counted_as_in_the_live_feed():
    g = InProcessGraph(config(hmarl=False), batch=2)
    ms = 1_000_000
    t = [Trade(SYM, SESSION_T0 + i * ms, SESSION_T0 + i * ms, 0, 5400.0 + 0.5 * i, 1, 2) for i in range(6)]
    raw = [t[0], t[1], t[2]._replace(price=float("nan")), t[3]._replace(symbol="WINZ26"),
           t[4]._replace(ts_event=t[4].ts_event - 5_000 * ms), t[5]]
    numbered = g.admit(raw)
    # t0, t1, t5 pass (t5 is 5 ms after t1); numbered 1, 2, 3 as the feed numbers them
    assert [(e.ts_event, e.seq) for e in numbered] == [(t[0].ts_event, 1), (t[1].ts_event, 2), (t[5].ts_event, 3)]
    assert g.stats()["validation"]["rejected"] == {"bad_price": 1, "unknown_symbol": 1, "time_backwards": 1}
    g.feed([*numbered, "junk", t[0]._replace(seq=0), t[0]._replace(symbol="WINZ26", seq=9)])
    assert g.bad_events == {"not_a_market_event": 1, "not_numbered": 1, "unknown_symbol": 1}
    assert (g.batches, len(g.pending)) == (1, 1)  # two events a batch: the third waits for finish()
    final = g.finish()
    assert final[f"features:{SYM}"]["accepted"] == 3 and final["feed"]["events_out"] == 3
    g.feed(numbered[:1])
    assert g.bad_events["after_finish"] == 1
    assert g.finish()[f"features:{SYM}"] == final[f"features:{SYM}"]  # closing again changes nothing


def test_a_backtest_reads_a_finite_recorded_or_simulated_source_as_fast_as_it_goes():
    feed = backtest_feed(config(hmarl=False, replay={"speed": 1.0}).feed)
    assert feed.simulator.speed == 0.0 and feed.replay.speed == 0.0
    endless = config(hmarl=False).feed
    endless = replace(endless, simulator=replace(endless.simulator, max_events=0))
    with pytest.raises(ValueError, match="max_events"):
        backtest_feed(endless)
    # a session with an end is finite too (a simulated day: profile day, 09:00-18:00)
    day = replace(endless, simulator=replace(endless.simulator, end="2025-11-24T18:00:00-03:00"))
    assert backtest_feed(day).simulator.end == "2025-11-24T18:00:00-03:00"
    with pytest.raises(ValueError, match="feed.source"):
        backtest_feed(replace(feed, source="bridge"))
    with pytest.raises(ValueError, match="batch"):
        InProcessGraph(config(hmarl=False), batch=0)


def test_the_live_execution_actor_keeps_no_journal():
    live = ExecutionActor(ActorConfig(ExecutionConfig()), risk=RiskConfig(), symbols=(SYM,))
    assert live.journal is None
