"""Feed failures end to end: one bad value never stops the feed, a feed loop that fails is
never reported as a finished source, and runs are sessions (a new run starts flat, --resume
continues one).

The failure these guard against: a book price of None raising TypeError inside validation
killed the feed loop, the launcher printed "feed source exhausted" and exited 0 after 1,365 of
2,637 events, and two events already read never reached Valkey.
"""

from __future__ import annotations

import os

import orjson
import pytest

from actors.config import ActorConfig
from actors.feed import FeedActor, Route
from pipelines.config import config_from_dict
from pipelines.model.messages import BookSnapshot, BookUpdate, Trade
from pipelines.persistence.connection import connect
from pipelines.persistence.events import EventStore
from tests.helpers import T0, Sink, run_launch, simulated_events

pytestmark = [pytest.mark.ray, pytest.mark.slow]


class ExplodingSource:
    """Three good trades, then the source itself fails (a disk, a socket, a bug)."""

    exhausted = False

    def __init__(self, symbol: str):
        self.batches = [[Trade(symbol, T0 + k, 0, 0, 5400.0, 1, 2) for k in range(3)]]

    def poll(self, max_events):
        if self.batches:
            return self.batches.pop()
        raise RuntimeError("disk on fire")

    def wait(self, timeout_s):
        pass

    def close(self):
        pass


def test_a_failing_feed_loop_reports_its_cause_and_still_delivers_what_it_read(ray_session):
    import ray

    sym = "WDOZ26"
    # A batch window far longer than the test: the three trades are still pending when the source fails.
    cfg = config_from_dict({"symbols": [sym], "feed": {"batch_max_ms": 10_000, "batch_max_events": 500}})
    sink = ray.remote(Sink).options(num_cpus=0).remote()
    feed = FeedActor(ActorConfig.for_run(cfg, None, "").with_domain(cfg.feed),
                     [Route("sink", sink, frozenset({"tick"}), None)],
                     open_source=lambda resume_after_ns: ExplodingSource(sym), autostart=False)
    feed.run()
    got = ray.get(sink.received.remote())
    ray.kill(sink)
    assert feed.error == "RuntimeError: disk on fire"
    assert feed.stats()["finished"] is True and feed.stats()["error"] == "RuntimeError: disk on fire"
    assert [(e.seq, e.price) for e in got] == [(1, 5400.0), (2, 5400.0), (3, 5400.0)]


def _launch(cfg_file, tmp_path, *extra, timeout=180):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return run_launch("--config", str(cfg_file), "--address", "local", "--no-dashboard", "--object-store-mb", "100",
                      *extra, cwd=tmp_path, timeout=timeout, env=env)


def _stopped(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("STOPPED ")]
    assert lines, out[-3000:]
    return orjson.loads(lines[-1][len("STOPPED "):])


def test_replay_with_bad_values_keeps_every_good_event_and_exits_0(valkey_server, tmp_path):
    from pipelines.adapters.files.recorder import write_events

    sym = "WDOJ27"
    good = [e for e in simulated_events(seed=3, rate=300, max_events=2000, symbol=sym)]
    bad_book = good[100]._replace(bid_px=(None,) + tuple(good[100].bid_px[1:])) if isinstance(good[100], BookSnapshot) \
        else BookSnapshot(sym, good[100].ts_event, 0, 0, (None, 5399.0), (1, 1), (5401.0,), (1,))
    bad_update = BookUpdate(sym, good[200].ts_event, 0, 0, 0, 0, 0, 5400.0, None)
    write_events(good[:150] + [bad_book] + good[150:250] + [bad_update] + good[250:], tmp_path / "rec")
    _, url = valkey_server
    client = connect(url)
    for kind in ("ticks", "book"):
        client.delete(f"stream:{kind}:{sym}")
    cfg_file = tmp_path / "replay.yaml"
    cfg_file.write_text(
        f"symbols: [{sym}]\n"
        f"feed: {{source: replay, replay: {{path: '{tmp_path / 'rec'}', speed: 0}}}}\n"
        f"valkey: {{url: '{url}'}}\n"
        "zmq: {tick_port: 0, book_port: 0, flow_port: 0, footprint_port: 0, liquidity_port: 0, tape_port: 0,"
        " decision_port: 0}\n"
        "recorder: {enabled: false}\n"
        "hmarl: {enabled: false}\n")
    proc = _launch(cfg_file, tmp_path, "--duration", "120")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "feed source exhausted" in out
    summary = _stopped(out)
    assert summary["rejected"] == {"bad_price": 1, "bad_qty": 1}
    assert summary["events"] == len(good) and summary["feed_error"] is None
    stored = EventStore(client).events_between(sym, 0, 2**63 - 1, kinds=("tick", "book"))
    client.close()
    # Every good event, in order, field by field (seqs restamped 1..N by the feed).
    want = [(type(e).__name__, e.ts_event, e[4:]) for e in good]
    assert [(type(e).__name__, e.ts_event, e[4:]) for e in stored] == want
    assert summary["totals"]["feed.events"] == len(good)


def test_a_missing_replay_path_is_one_line_and_exit_2(tmp_path):
    cfg_file = tmp_path / "replay.yaml"
    cfg_file.write_text("feed: {source: replay, replay: {path: /nonexistent/recordings}}\n")
    proc = _launch(cfg_file, tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("config error: feed.replay.path: no such folder")


def test_a_new_run_keeps_the_learned_weights_and_reads_a_state_saved_with_a_paper_account(
        ray_session, valkey_server, model_dir, tmp_path):
    """The coordinator once kept a paper account in its saved state; positions are now the
    execution actor's (whose new run starts flat: tests/actors/test_execution.py). A state saved
    then still loads, its weights kept in a new run and in the same one."""
    import ray

    from actors.config import ActorConfig, ValkeyLink
    from actors.hmarl import CoordinatorActor
    from pipelines.config import HmarlConfig
    from pipelines.persistence.hmarl_store import agent_state_key

    _, url = valkey_server
    sym = "WDOK27"
    client = connect(url)
    key = agent_state_key(f"coordinator:{sym}", "state")
    weights = {"ml": 0.1, "order_flow": 0.6, "liquidity": 0.1, "tape": 0.1, "footprint": 0.1}
    # What a run of the earlier version left: short 5, R$-300 realized, learned weights.
    client.set(key, orjson.dumps({"version": 1, "symbol": sym, "weights": weights, "position": -5, "avg_price": 5400.0,
                                  "realized_pnl": -300.0, "last_applied_seq": 900, "signals": [],
                                  "run_id": "run-one", "last_slot": 1_795_500_000}))
    voters = ("order_flow", "liquidity", "tape", "footprint", "ml")

    def coordinator_stats(run_id):
        config = ActorConfig(HmarlConfig(), namespace="ns", run_id=run_id, symbol=sym, valkey=ValkeyLink(url))
        actor = ray.remote(CoordinatorActor).options(num_cpus=0).remote(config, voters=voters)
        try:
            return ray.get(actor.stats.remote())
        finally:
            ray.kill(actor)

    fresh, resumed = coordinator_stats("run-two"), coordinator_stats("run-one")
    client.close()
    for stats in (fresh, resumed):
        assert stats["restored"] and stats["restore_error"] is None
        assert stats["weights"] == pytest.approx(weights)
        assert "position" not in stats and "realized_pnl" not in stats


def test_resume_without_an_earlier_run_is_one_line_and_exit_2(valkey_server, tmp_path):
    _, url = valkey_server
    cfg_file = tmp_path / "resume.yaml"
    cfg_file.write_text(f"namespace: never-ran-{os.getpid()}\nvalkey: {{url: '{url}'}}\n")
    proc = _launch(cfg_file, tmp_path, "--resume", timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == f"config error: --resume: no earlier run recorded in namespace 'never-ran-{os.getpid()}'"
