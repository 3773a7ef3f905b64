"""The same recording replayed at several paced speeds and as fast as possible gives the same
decisions (ids, actions, sizes, scores) and the same feedback, bit for bit: the simulator
recording at speed 1, 10 and full speed; the minute of ES at speed 3, 10 and full speed (3, not 1:
a minute of wall time is the suite's biggest single wait, and speed 1 is covered by the other).

Each run is the whole actor graph (feed, buffers, Valkey writer, publishers, the
feature engine, four agents, the ML voter, the coordinator, the feedback system)
on a Valkey database of its own, so nothing learned in one run reaches the next.
Decisions that depend on the replay speed show here: such a pipeline once gave, on the
ES recording, HOLD 49 / BUY 2 / SELL 7 at speed 10 and HOLD 55 / BUY 2 / SELL 1 at full speed.
"""

from __future__ import annotations

import uuid
from collections import Counter

import orjson
import pytest

from pipelines.config import config_from_dict
from pipelines.persistence.connection import connect
from tests.helpers import EPHEMERAL_PORTS, simulated_events, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

_db = iter(range(1, 16))  # the embedded server has 16 databases; 0 is the other tests'


def replay_run(url: str, path, symbol: str, speed: float, model_dir, timeout_s: float) -> dict:
    """One whole-graph replay on a fresh database; what it decided and learned, from Valkey."""
    from actors.wiring import MarketDataGraph

    db_url = f"{url.rstrip('/')}/{next(_db)}"
    client = connect(db_url)
    client.flushdb()
    cfg = config_from_dict({
        "namespace": f"det{uuid.uuid4().hex[:8]}",
        "symbols": [symbol],
        "feed": {"source": "replay", "replay": {"path": str(path), "speed": speed}, "batch_max_ms": 5},
        "zmq": EPHEMERAL_PORTS,
        "recorder": {"enabled": False},
        "features": {"enabled": True},
        "hmarl": {"enabled": True, "model_dir": str(model_dir), "ml_allow_other_market": True,
                  "decision_every_ms": 1000, "horizon_s": 5},
    })
    g = MarketDataGraph(cfg, db_url)
    g.start()
    try:
        wait_for(lambda: g.feed_finished()[0], timeout=timeout_s, what=f"the replay at speed {speed:g}")
        final = g.shutdown()
    finally:
        if g.actors:
            g.shutdown()
    decisions = [orjson.loads(f[b"json"]) for _id, f in client.xrange("hmarl:decisions:stream")]
    feedback = [orjson.loads(f[b"json"]) for _id, f in client.xrange("hmarl:feedback:stream")]
    client.close()
    assert final["feed"]["error"] is None
    return {
        "decisions": [(d["decision_id"], d["ts_event"], d["action"], d["size"], d["score"]) for d in decisions],
        "feedback": sorted((f["voter"], f["seq"], f["signal_ts"], f["exit_price"], f["reward"]) for f in feedback),
        "coordinator": final[f"coordinator:{symbol}"],
    }


def assert_same(runs: dict[float, dict], every_ns: int) -> None:
    base_speed, base = next(iter(runs.items()))
    slots = [d[1] // every_ns for d in base["decisions"]]
    assert slots == sorted(set(slots)), "a decision slot is missing or duplicated"
    for speed, run in runs.items():
        assert run["decisions"] == base["decisions"], f"decisions at speed {speed:g} differ from speed {base_speed:g}"
        assert run["feedback"] == base["feedback"], f"feedback at speed {speed:g} differs from speed {base_speed:g}"
        assert run["coordinator"]["absent"] == {}, speed  # nobody timed out: the rounds never waited in vain


def test_real_es_recording_same_decisions_at_every_speed(ray_session, valkey_server, model_dir, es_file, tmp_path):
    from pipelines.adapters.files.cme_es import import_cme_es

    import_cme_es(es_file, tmp_path / "rec", symbol="ESH22", tz="UTC")
    _, url = valkey_server
    runs = {speed: replay_run(url, tmp_path / "rec", "ESH22", speed, model_dir, timeout_s=180)
            for speed in (10.0, 0.0, 3.0)}
    assert_same(runs, 1_000_000_000)
    first = runs[10.0]
    # 60 s of event time at one decision a second; every voter's outcomes resolved.
    assert len(first["decisions"]) >= 55
    assert Counter(v for v, *_ in first["feedback"])["coordinator"] >= 45
    assert {v for v, *_ in first["feedback"]} >= {"coordinator", "ml"}
    # The running pipeline trades: at least one BUY or SELL over the minute.
    assert {d[2] for d in first["decisions"]} & {"BUY", "SELL"}, Counter(d[2] for d in first["decisions"])


def test_simulator_recording_same_decisions_at_every_speed(ray_session, valkey_server, model_dir, tmp_path):
    from pipelines.adapters.files.recorder import write_events

    # 20 s of a seeded simulated WDO session (400 events/s), recorded in the replay layout.
    write_events(simulated_events(seed=21, rate=400, max_events=8000, symbol="WDOF27"), tmp_path / "rec")
    _, url = valkey_server
    runs = {speed: replay_run(url, tmp_path / "rec", "WDOF27", speed, model_dir, timeout_s=120)
            for speed in (0.0, 10.0, 1.0)}
    assert_same(runs, 1_000_000_000)
    assert len(runs[0.0]["decisions"]) >= 18
    assert Counter(v for v, *_ in runs[0.0]["feedback"])["coordinator"] >= 10
