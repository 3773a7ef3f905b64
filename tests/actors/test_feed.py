"""The FeedActor without Ray: a seeded simulator day through the feed to in-process destinations.

The expected events come from running the same seeded simulator directly
(``simulated_events``), numbered 1, 2, ... as the feed numbers them; every destination
must get exactly its part of them, once, in seq order, whatever happens to it on the way.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from functools import partial

from actors.config import ActorConfig
from actors.feed import FeedActor, Route
from pipelines.adapters.sources import make_source
from pipelines.config import config_from_dict
from pipelines.data.sequencing import SeqGate
from tests.helpers import SESSION_START, Sink, simulated_events, wait_for
from actors.inprocess import InProcessRay

SYM = "WDOZ26"
TICK, BOOK = frozenset({"tick"}), frozenset({"book"})


class RestartingSink(Sink):
    """Loses everything at its ``restart_at``-th batch, as a restarted actor process would."""

    def __init__(self, restart_at: int):
        super().__init__()
        self.restart_at = restart_at
        self.incarnations = [self.incarnation]

    def on_batch(self, events, prev):
        if self.batches + 1 == self.restart_at:
            self.incarnation, self.gate, self.events = uuid.uuid4().hex, SeqGate(), []
            self.incarnations.append(self.incarnation)
        return super().on_batch(events, prev)


class FailingSink(Sink):
    """Batches ``fail`` (1-based) raise: calls lost in an outage."""

    def __init__(self, fail: range):
        super().__init__()
        self.fail = fail

    def on_batch(self, events, prev):
        self.batches += 1
        if self.batches in self.fail:
            raise RuntimeError("restarting")
        self.batches -= 1
        return super().on_batch(events, prev)


class ScriptedSource:
    """A source the test feeds by hand: what it is given, then exhausted once ``end()``."""

    def __init__(self):
        self.chunks: queue.Queue = queue.Queue()
        self.ended = False

    def poll(self, max_events):
        try:
            return self.chunks.get_nowait()
        except queue.Empty:
            return []

    def wait(self, timeout_s):
        time.sleep(min(timeout_s, 0.001))

    @property
    def exhausted(self):
        return self.ended and self.chunks.empty()

    def end(self):
        self.ended = True

    def close(self):
        pass


def app_config(n: int, **feed):
    return config_from_dict({"symbols": [SYM], "feed": {
        "source": "simulator",
        "simulator": {"seed": 5, "rate": 1000, "speed": 0, "start": SESSION_START, "max_events": n},
        **feed}})


def make_feed(cfg, routes, rt, source=None) -> FeedActor:
    open_source = partial(make_source, cfg.feed, tuple(cfg.symbols)) if source is None else (lambda resume_after_ns: source)
    return FeedActor(ActorConfig.for_run(cfg, None, "plain").with_domain(cfg.feed), routes, open_source=open_source,
                     autostart=False, runtime=rt)


def expected(n: int, kinds=None) -> list:
    evs = simulated_events(seed=5, rate=1000, max_events=n, symbol=SYM, start=SESSION_START)
    return evs if kinds is None else [e for e in evs if e.KIND in kinds]


def sent(events: list) -> list:
    """Events as compared here: the simulator stamps ts_recv with the wall clock of the run."""
    return [e._replace(ts_recv=0) for e in events]


def test_every_destination_gets_exactly_its_events_once_in_seq_order():
    n = 3000
    cfg = app_config(n, batch_max_events=200)
    rt = InProcessRay()
    ticks, books, everything = Sink(), Sink(), Sink()
    routes = [Route("ticks", rt.handle(ticks), TICK, frozenset({SYM})),
              Route("books", rt.handle(books), BOOK, None),
              Route("all", rt.handle(everything), frozenset({"tick", "book", "book_update"}), None, bulk=True)]
    feed = make_feed(cfg, routes, rt)
    feed.run()
    all_events = expected(n)
    assert len(all_events) == n
    assert sent(ticks.events) == sent(expected(n, TICK)) and len(ticks.events) > 0
    assert sent(books.events) == sent(expected(n, BOOK)) and len(books.events) > 0
    assert sent(everything.events) == sent(all_events)
    stats = feed.stats()
    assert (stats["events_out"], stats["seq"], stats["finished"], stats["error"]) == (n, {SYM: n}, True, None)
    assert stats["validation"]["accepted"] == n and stats["validation"]["rejected"] == {}
    # A micro-batch holds at most 200 events; the fast routes got every one, the bulk route fewer, larger ones.
    assert stats["batches"] >= n // 200 and ticks.batches <= stats["batches"]
    assert everything.batches <= stats["batches"]
    assert stats["inflight"] == {"ticks": 0, "books": 0, "all": 0}
    assert feed.ping()["node"] is None and feed.ping()["events_out"] == n  # no Ray here: no node to name


def test_a_destination_that_restarts_gets_what_it_lost_from_the_resend_window():
    n = 2000
    cfg = app_config(n, batch_max_events=100)
    rt = InProcessRay()
    sink = RestartingSink(restart_at=6)
    feed = make_feed(cfg, [Route("ticks", rt.handle(sink), TICK, None)], rt)
    feed.run()
    # The new incarnation started at 0, refused the next batch (its prev was 5 batches on) and was
    # re-sent everything from the window (20,000 events: the whole day).
    assert len(sink.incarnations) == 2
    assert sent(sink.events) == sent(expected(n, TICK))
    assert feed.stats()["resyncs"] == {"ticks": 1} and feed.stats()["unrecoverable_gaps"] == 0
    assert feed.incarnations["ticks"] == sink.incarnations[-1]


def test_batches_lost_in_an_outage_are_counted_and_sent_again():
    n = 2000
    cfg = app_config(n, batch_max_events=100)
    rt = InProcessRay()
    sink = FailingSink(fail=range(3, 6))  # its 3rd, 4th and 5th batches are lost
    feed = make_feed(cfg, [Route("ticks", rt.handle(sink), TICK, None)], rt)
    feed.run()
    assert sent(sink.events) == sent(expected(n, TICK))
    assert feed.stats()["route_errors"] == {"ticks": 3}
    assert feed.stats()["resyncs"] == {"ticks": 1}


def test_a_route_without_backpressure_is_skipped_while_it_hangs_then_caught_up():
    n = 3000
    cfg = app_config(n, batch_max_events=100, max_inflight_batches=2)
    events = expected(n)
    source = ScriptedSource()
    rt = InProcessRay()
    fast, slow = Sink(), Sink()
    slow_handle = rt.handle(slow)
    routes = [Route("fast", rt.handle(fast), TICK, None),
              Route("analytics", slow_handle, TICK, None, backpressure=False)]
    feed = make_feed(cfg, routes, rt, source=source)
    slow_handle.hold()  # hangs from now on: takes the calls, answers none
    asked = slow_handle.calls  # the feed asked each destination for its position
    for i in range(0, 1000, 100):
        source.chunks.put([e._replace(seq=0) for e in events[i:i + 100]])  # the feed numbers them
    feed.start()
    try:
        wait_for(lambda: feed.stats()["behind"].get("analytics"), 30, 0.005, "the hung destination to fall behind")
        behind = feed.stats()["behind"]["analytics"]
        assert behind > 0 and slow_handle.calls - asked == 2  # two calls in flight, the rest skipped
        assert len(fast.events) > 0  # market data flowed on meanwhile
        slow_handle.release()
        for i in range(1000, n, 100):
            source.chunks.put([e._replace(seq=0) for e in events[i:i + 100]])
        source.end()
        wait_for(lambda: feed.finished, 30, 0.005, "the feed to finish")
    finally:
        stats = feed.stop(10.0)
    want = [e for e in events if e.KIND == "tick"]
    assert fast.events == want and slow.events == want
    assert stats["catch_ups"]["analytics"] >= 1 and stats["error"] is None
    assert "analytics" not in stats["behind"] and stats["resyncs"] == {}


def test_a_restarted_feed_continues_after_the_highest_seq_a_destination_holds():
    n = 500
    cfg = app_config(n)
    rt = InProcessRay()
    ahead, fresh = Sink({SYM: 41}), Sink()  # one destination saw seq 41 from the feed before it died
    feed = make_feed(cfg, [Route("ahead", rt.handle(ahead), TICK, None),
                           Route("fresh", rt.handle(fresh), TICK, None)], rt)
    assert feed.position() == {SYM: 41}
    feed.run()
    want = sent(e._replace(seq=e.seq + 41) for e in expected(n) if e.KIND == "tick")
    assert sent(ahead.events) == want  # numbering goes on from 42: no seq is ever used twice
    # A destination at 0 is a new one (nothing of the previous numbering to continue): it starts at 42.
    assert sent(fresh.events) == want and feed.stats()["unrecoverable_gaps"] == 0 and feed.stats()["resyncs"] == {}
    assert feed.stats()["seq"] == {SYM: n + 41}


def test_stop_ends_an_endless_source_and_flushes_what_was_read():
    cfg = app_config(0, batch_max_events=10_000, batch_max_ms=10_000)  # nothing is due before stop
    source = ScriptedSource()
    rt = InProcessRay()
    sink = Sink()
    feed = make_feed(cfg, [Route("ticks", rt.handle(sink), TICK, None)], rt, source=source)
    events = expected(300)
    source.chunks.put([e._replace(seq=0) for e in events])
    feed.start()
    wait_for(source.chunks.empty, 30, 0.005, "the feed to read every chunk")
    time.sleep(0.05)
    assert sink.events == []  # read, still pending in the batch
    stats = feed.stop(10.0)
    assert sink.events == [e for e in events if e.KIND == "tick"]
    assert stats["finished"] is True and stats["events_out"] == 300
    assert not any(t.name == "feed-loop" and t.is_alive() for t in threading.enumerate())
