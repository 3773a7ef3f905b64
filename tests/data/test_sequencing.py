"""The sequence protocol: dedupe, gap detection, resend windows."""

from pipelines.model.messages import Trade
from pipelines.data.sequencing import ResendWindow, SeqGate, SlotGate


def t(sym, seq):
    return Trade(sym, 1_000 + seq, 0, seq, 5400.0, 1, 2)


def test_gate_drops_duplicates_and_keeps_order():
    g = SeqGate()
    out, gap = g.admit([t("A", 1), t("A", 2), t("A", 3)], {"A": 0})
    assert gap is None and [e.seq for e in out] == [1, 2, 3]
    out, gap = g.admit([t("A", 2), t("A", 3), t("A", 4)], {"A": 1})
    assert gap is None and [e.seq for e in out] == [4]
    assert g.duplicates == 2 and g.position == {"A": 4}


def test_gate_refuses_a_batch_after_a_gap_and_reports_its_position():
    g = SeqGate({"A": 10})
    out, gap = g.admit([t("A", 21), t("A", 22)], {"A": 20})  # sender sent up to 20 before; we hold 10
    assert out == [] and gap == {"A": 10}
    assert g.position == {"A": 10}  # nothing applied
    out, gap = g.admit([t("A", s) for s in range(11, 23)], {"A": 10})
    assert gap is None and [e.seq for e in out] == list(range(11, 23))


def test_gate_accepts_forced_batches_when_sender_cannot_fill_the_gap():
    g = SeqGate({"A": 10})
    out, gap = g.admit([t("A", 50)], {"A": None})
    assert gap is None and [e.seq for e in out] == [50] and g.forced == 1


def test_gate_positions_are_per_symbol():
    g = SeqGate()
    out, _ = g.admit([t("A", 1), t("B", 1), t("A", 2), t("B", 1)], {})
    assert [(e.symbol, e.seq) for e in out] == [("A", 1), ("B", 1), ("A", 2)]


def test_window_resends_what_a_receiver_missed_and_knows_when_it_cannot():
    w = ResendWindow(capacity=5)
    w.extend([t("A", s) for s in range(1, 9)])  # keeps 4..8; evicted up to 3
    evs, complete = w.since("A", 5, lambda e: True)
    assert [e.seq for e in evs] == [6, 7, 8] and complete
    evs, complete = w.since("A", 3, lambda e: True)
    assert [e.seq for e in evs] == [4, 5, 6, 7, 8] and complete
    evs, complete = w.since("A", 1, lambda e: True)
    assert [e.seq for e in evs] == [4, 5, 6, 7, 8] and not complete  # 2, 3 are gone
    evs, _ = w.since("A", 0, lambda e: e.seq % 2 == 0)
    assert [e.seq for e in evs] == [4, 6, 8]


def test_end_to_end_restart_recovers_every_event_in_order():
    """A receiver restarts holding only part of the stream; gate + window restore it exactly."""
    window = ResendWindow(capacity=1000)
    all_events = [t("A", s) for s in range(1, 301)]
    received = []
    gate = SeqGate()
    sent_upto = 0
    for i in range(0, 300, 50):
        batch = all_events[i : i + 50]
        window.extend(batch)
        if i == 150:  # receiver crashed before this batch; restored from storage up to seq 120
            gate = SeqGate({"A": 120})
            received = received[:120]
        out, gap = gate.admit(batch, {"A": sent_upto})
        if gap:
            missing, complete = window.since("A", gap["A"], lambda e: True)
            assert complete
            out, gap = gate.admit(missing, {"A": gap["A"]})
            assert gap is None
        received.extend(out)
        sent_upto = batch[-1].seq
    assert [e.seq for e in received] == list(range(1, 301))


def test_slot_gate_decides_rounds_that_come_back_out_of_order_once_each():
    gate = SlotGate(window=4)
    assert gate.admit(100)  # the first slot: nothing before it counts as open
    assert not gate.admit(99)
    # A restart re-runs 101..103, and 103 comes first: 101 and 102 are still decided, once.
    assert [gate.admit(s) for s in (103, 101, 102, 101, 103, 102)] == [True, True, True, False, False, False]
    # A jump of 10 slots keeps only the last 4 open (a re-run never reaches further back).
    assert gate.admit(113)
    assert gate.state() == {"last_slot": 113, "open_slots": [109, 110, 111, 112]}
    assert [gate.admit(s) for s in (108, 109, 112)] == [False, True, True]
    restored = SlotGate(window=4)
    restored.load_state(gate.state())
    assert [restored.admit(s) for s in (110, 110, 111, 112, 113, 114)] == [True, False, True, False, False, True]


def test_decision_sequencer_hands_out_each_decision_right_after_its_event():
    from pipelines.data.sequencing import DecisionSequencer
    from pipelines.model.messages import Decision, Trade

    def tr(seq, ts):
        return Trade("S", ts, ts, seq, 100.0, 1, 2)

    def dec(seq, ts):
        return Decision(f"S-{seq}", "S", ts, seq, "BUY", 1, 0.5, 0.5, 100.0, 10, (), {}, {})

    def kinds(work):
        return [(k, [e.seq for e in x] if k == "market" else x.seq) for k, x in work]

    q = DecisionSequencer(decided=("S",), max_held=100)
    q.add_events([tr(1, 10), tr(2, 20), tr(3, 30), tr(4, 40)])
    assert q.release() == []  # nothing known of the coordinator yet: all held
    assert q.add_decisions([dec(2, 20)]) == []  # waits for its place
    q.mark({"S": 2}, {"S": 35})  # decided up to seq 2; the next decision comes at or after ts 35
    # events 1, 2, then the decision made on 2, then 3 (ts 30 < 35); 4 (ts 40) waits
    assert kinds(q.release()) == [("market", [1, 2]), ("decision", 2), ("market", [3])]
    saved = q.state(lambda d: d._asdict())
    again = DecisionSequencer(decided=("S",))
    again.load_state(saved, lambda d: Decision(**d))
    assert (again.processed, again.through, again.until) == ({"S": 3}, {"S": 2}, {"S": 35})
    # a decision on seq 3, the last event handed out: due at once, on time; one on seq 1 is late
    assert [d.seq for d in q.add_decisions([dec(3, 30)])] == [3] and q.stats()["late_decisions"] == 0
    assert [d.seq for d in q.add_decisions([dec(1, 10)])] == [1] and q.stats()["late_decisions"] == 1
    q.mark("bad", None)
    assert q.bad_marks == {"through": 1}
    assert kinds(q.release(everything=True)) == [("market", [4])]
