"""Outbox and Peer without Ray: bounded calls in flight, stalls, outages, lazy lookup."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

from actors import peers
from actors.peers import Outbox, Peer, node_id, reconstructed
from tests.helpers import REPO
from actors.inprocess import InProcessRay


class Doubler:
    def __init__(self):
        self.seen: list[int] = []

    def double(self, x: int) -> int:
        self.seen.append(x)
        return 2 * x


class Flaky:
    """Fails while ``down``: a receiver in an outage (restarting, or a bug)."""

    def __init__(self):
        self.down = False

    def echo(self, x):
        if self.down:
            raise RuntimeError("restarting")
        return x


def test_outbox_collects_the_answers_in_call_order():
    rt = InProcessRay()
    h = rt.handle(Doubler())
    box = Outbox(rt, max_inflight=8, label="doubler")
    refs = [box.send(h.double, x) for x in (1, 2, 3)]
    assert [rt.get(r) for r in refs] == [2, 4, 6]  # each send hands back its own result's ref
    # Sends reap only from half of max_inflight in flight on: all three answers are still to collect.
    assert box.reap() == [2, 4, 6] and box.reap() == []
    assert box.stats() == {"sent": 3, "failed": 0, "stalled": 0, "inflight": 0}
    assert h.obj.seen == [1, 2, 3]


def test_a_hung_receiver_slows_the_sender_by_the_stall_timeout_never_stops_it(monkeypatch):
    monkeypatch.setattr(peers, "STALL_TIMEOUT_S", 0.05)
    rt = InProcessRay()
    h = rt.handle(Doubler(), held=True)  # takes the calls, answers none
    box = Outbox(rt, max_inflight=4)
    for x in range(1, 7):
        box.send(h.double, x)
    # Calls 5 and 6 each found 4 in flight, waited for the oldest, and stopped tracking it.
    assert box.stats() == {"sent": 6, "failed": 0, "stalled": 2, "inflight": 4}
    h.release()
    assert box.reap() == [6, 8, 10, 12]  # the answers of calls 3..6, the ones still tracked
    assert h.obj.seen == [1, 2, 3, 4, 5, 6]  # the receiver still ran every call, in order


def test_an_outage_is_counted_and_logged_once_at_each_end(caplog):
    rt = InProcessRay()
    h = rt.handle(Flaky())
    box = Outbox(rt, max_inflight=100, label="flaky")
    with caplog.at_level(logging.WARNING, logger="quantumtrader.peers"):
        box.send(h.echo, 1)
        h.obj.down = True
        for x in (2, 3, 4):
            box.send(h.echo, x)
        h.obj.down = False
        box.send(h.echo, 5)
        assert box.reap() == [1, 5]
    assert box.stats()["failed"] == 3 and box.stats()["inflight"] == 0
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["flaky: calls failing (RuntimeError); counting until it answers again",
                     "flaky: answering again after 3 failed calls"]


def test_drain_waits_for_the_calls_in_flight():
    rt = InProcessRay()
    h = rt.handle(Doubler(), held=True)
    box = Outbox(rt, max_inflight=16)
    for x in range(5):
        box.send(h.double, x)
    timer = threading.Timer(0.1, h.release)
    timer.start()
    box.drain(timeout_s=10.0)
    timer.join()
    assert box.stats()["inflight"] == 0 and h.obj.seen == [0, 1, 2, 3, 4]


def test_peer_looks_a_receiver_up_when_first_needed_and_again_after_a_failed_lookup(caplog, monkeypatch):
    rt = InProcessRay()
    lookups: list[tuple] = []
    real_lookup = rt.get_actor
    monkeypatch.setattr(rt, "get_actor", lambda name, namespace=None: lookups.append((name, namespace))
                        or real_lookup(name, namespace))
    peer = Peer(rt, "doubler:WDOZ26", namespace="ns")
    with caplog.at_level(logging.WARNING, logger="quantumtrader.peers"):
        assert peer.call("double", 1) is None  # not created yet: counted, never raised
        assert peer.call("double", 2) is None
    assert peer.stats()["unreachable"] == 2
    assert [r.getMessage() for r in caplog.records] == ["doubler:WDOZ26 unreachable (1 times): ValueError"]
    receiver = rt.handle(Doubler(), name="doubler:WDOZ26").obj
    assert [rt.get(peer.call("double", x)) for x in (3, 4, 5)] == [6, 8, 10]
    # One lookup per failed call, then one for the receiver, kept while it answers.
    assert lookups == [("doubler:WDOZ26", "ns")] * 3
    assert receiver.seen == [3, 4, 5]
    peer.drain(1.0)
    assert peer.stats() == {"sent": 3, "failed": 0, "stalled": 0, "inflight": 0, "unreachable": 2, "relookups": 0}


def test_peer_picks_up_a_receiver_recreated_under_its_name(monkeypatch):
    """Calls on a dead actor's handle are accepted and fail later: once answers fail, the peer
    looks the name up again and reaches the actor the supervisor created in its place."""
    monkeypatch.setattr("actors.peers.RELOOKUP_S", 0.0)
    rt = InProcessRay()
    first = rt.handle(Doubler(), name="d")
    peer = Peer(rt, "d", namespace=None, max_inflight=2)  # reaps answers on every call
    assert rt.get(peer.call("double", 1)) == 2
    first.kill()
    assert peer.call("double", 2) is not None  # accepted by the dead handle; fails when read
    replacement = rt.handle(Doubler(), name="d").obj
    peer.call("double", 3)  # reaps the failure: the outbox is failing now
    assert rt.get(peer.call("double", 4)) == 8  # looked up again: the new actor answers
    assert replacement.seen == [4]
    assert peer.stats()["relookups"] == 1 and peer.stats()["failed"] >= 1


def test_a_call_the_receiver_cannot_answer_counts_as_failed():
    rt = InProcessRay()
    rt.handle(Doubler(), name="d")
    peer = Peer(rt, "d", namespace=None)
    assert rt.get(peer.call("double", 21)) == 42
    assert peer.call("triple", 1) is not None  # the call is made; it fails at the receiver
    peer.drain(1.0)
    assert peer.stats()["failed"] == 1


def test_node_and_restart_questions_do_not_start_ray_outside_it():
    """Asking Ray for the runtime context outside an actor would start a local Ray (node id) or
    fail (reconstructed): an actor class used as a plain object must get None / False instead."""
    code = ("import ray\nfrom actors.peers import node_id, reconstructed\n"
            "print(node_id(ray), reconstructed(ray), ray.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "False", "False"]
    rt = InProcessRay()  # never asked for a context (it would raise)
    assert (node_id(rt), reconstructed(rt)) == (None, False)
