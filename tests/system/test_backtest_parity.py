"""Live ≡ backtest: a recording replayed through the Ray graph (``feed.source: replay``) and
the same recording through the one-process backtest give the same decisions (ids, actions,
sizes, scores) and the same fills.

The recording: 75 s of simulated WDO (seed 3, 300 events/s), written in the recorder's layout.
Both runs share one config (the backtest's, built by ``backtest_config``) and one run id (the
fills' ids carry it); the Ray graph adds only its transport: Valkey, ZeroMQ, a namespace."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from actors.backtest_run import BacktestInput, backtest_config, fill_rows, run_backtest
from actors.wiring import MarketDataGraph
from pipelines.adapters.files.recorder import write_events
from pipelines.persistence.trading_store import TradingStore
from tests.helpers import EPHEMERAL_PORTS, FAST_RECONNECT, ZmqCollector, simulated_events, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SEED, RATE, SECONDS = 3, 300, 75
HMARL_ACTORS = ("agent", "ml", "coordinator", "feedback")
HMARL = {"horizon_s": 5, "decision_every_ms": 250, "threshold": 0.05, "ml_allow_other_market": True}


def test_a_recording_gives_the_same_decisions_and_fills_in_the_ray_graph_and_the_backtest(
        ray_session, valkey_server, tmp_path, model_dir):
    _, url = valkey_server
    rec = tmp_path / "rec"
    events = simulated_events(SEED, RATE, RATE * SECONDS)
    assert (events[-1].ts_event - events[0].ts_event) / 1e9 >= 60
    write_events(events, rec)
    account = f"p{uuid.uuid4().hex[:10]}"
    source = BacktestInput("recordings", path=str(rec))
    cfg, _ = backtest_config(source, overrides={"hmarl": {**HMARL, "model_dir": str(model_dir)},
                                                "execution": {"account": account}, "risk": {"account": account}})
    run_id = f"parity-{uuid.uuid4().hex[:8]}"

    backtest = run_backtest(cfg, source, run_id=run_id)
    assert backtest.stats["decisions"]["BUY"] + backtest.stats["decisions"]["SELL"] > 0
    assert len(backtest.tables["fills"]) >= 2, "the recording must trade for the comparison to mean anything"
    ml = backtest.final[f"ml:{cfg.symbols[0]}"]
    assert ml["signals_sent"] > 0, "the ML voter takes part"

    # A round timeout far below what a round takes here: on a live feed voters would be counted
    # absent and the decisions would differ. On a recorded feed the round waits for them.
    live_cfg = dataclasses.replace(cfg, namespace=f"t{uuid.uuid4().hex[:8]}",
                                   zmq=dataclasses.replace(cfg.zmq, **EPHEMERAL_PORTS),
                                   hmarl=dataclasses.replace(cfg.hmarl, round_timeout_s=0.01))
    graph = MarketDataGraph(live_cfg, url, run_id=run_id)
    graph.start()
    sub = ZmqCollector(graph.zmq_endpoints["decision"], prefix=b"decision.")
    try:
        wait_for(lambda: graph.feed_finished()[0], timeout=120, what="the replay to finish")
        final = graph.shutdown()
    finally:
        sub.close()
    assert not (final.get("feed") or {}).get("error")
    assert not any((final.get(n) or {}).get("absent") for n in final if n.split(":")[0] in HMARL_ACTORS)

    sym = cfg.symbols[0]
    published = sorted((d for _topic, d in sub.items), key=lambda d: d["seq"])
    assert [(d["decision_id"], d["action"], d["size"], d["score"]) for d in published] == [
        (r.decision_id, r.action, int(r.size), float(r.score)) for r in backtest.tables["decisions"].itertuples()]
    assert {d["symbol"] for d in published} == {sym}

    store = TradingStore(url, **FAST_RECONNECT)
    try:
        live_fills = store.fills_since(0, account=account)
    finally:
        store.close()
    assert fill_rows(live_fills) == [(r.fill_id, int(r.ts_event), r.side, int(r.quantity), float(r.price), float(r.fees))
                                     for r in backtest.tables["fills"].itertuples()]
