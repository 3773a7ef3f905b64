"""What the FeatureEngine sends each HMARL receiver (pipelines/hmarl/inputs.py).

The selectors exist for speed, so the claim to check is that a receiver fed the
selection behaves exactly as one fed everything: the agents give the same
signals, the coordinator's clock picks the same vectors, the feedback system
sees every price. The cadence arithmetic is also checked on hand-built cases.
"""

from __future__ import annotations

import pytest

from pipelines.features.engine import SymbolAnalytics
from pipelines.hmarl.agents import AGENTS
from pipelines.hmarl.inputs import AgentInputs, DecisionInputs, PriceInputs, selector
from pipelines.messages import FeatureVector, FlowState, LiquidityState, TapeSignal
from tests.conftest import simulated_events

SYM = "WDOZ26"
MS = 1_000_000


def vec(seq: int, ts: int, price: float = 5400.0) -> FeatureVector:
    return FeatureVector(SYM, ts, ts, seq, price, 1, 1, ("x",), (0.0,))


def flow(seq: int, ts: int) -> FlowState:
    return FlowState(SYM, ts, ts, seq, {})


@pytest.fixture(scope="module")
def analytics() -> list:
    out: list = []
    SymbolAnalytics(SYM, 0.5).on_events(simulated_events(seed=5, rate=400.0, max_events=40_000), out)
    return out


def test_agent_inputs_keep_the_latest_vector_before_each_state():
    v1, v2, v3 = vec(1, 10), vec(2, 20), vec(4, 40)
    f1, tp = flow(2, 20), TapeSignal(SYM, 30, 30, 3, "sweep", 1, 5400.0, 0.5, {})
    sel = AgentInputs()
    assert sel.select([v1, v2, f1, tp]) == [v2, f1, tp]  # v1 superseded; tp has no newer vector
    assert sel.select([v3]) == []  # held until a state needs it
    assert sel.select([flow(5, 50)]) == [v3, flow(5, 50)]  # across batches
    v5 = vec(5, 50)
    assert sel.select([v5, vec(6, 60)]) == [v5]  # same trade as the state just sent: it shapes that vote


def test_agents_fed_the_selection_give_the_same_signals(analytics):
    states = sum(1 for m in analytics if type(m) is not FeatureVector)
    assert 0 < states < len(analytics) // 5  # the selection really is much smaller
    for agent_id, cls in AGENTS.items():
        full, thin, sel = cls(SYM), cls(SYM), AgentInputs()
        got_full, got_thin, sent = [], [], 0
        for i in range(0, len(analytics), 300):
            batch = analytics[i:i + 300]
            got_full += full.on_analytics(batch)
            picked = sel.select(batch)
            sent += len(picked)
            if picked:
                got_thin += thin.on_analytics(picked)
        assert got_full and got_thin == got_full, agent_id
        assert sent <= 2 * states


def test_decision_inputs_pick_the_first_vector_of_each_period():
    sel = DecisionInputs(20 * MS)
    ts = [0, 5 * MS, 19 * MS, 20 * MS, 21 * MS, 59 * MS, 61 * MS, 100 * MS]
    vs = [vec(i + 1, t) for i, t in enumerate(ts)]
    liq = LiquidityState(SYM, 22 * MS, 22 * MS, 5, {})
    picked = sel.select(vs[:5] + [liq]) + sel.select(vs[5:])
    # boundaries: 0 -> next 20 ms; 20 -> 40; 59 (first after 40) -> 60; 61 -> 80; 100 -> 120
    assert [m.ts_event for m in picked] == [0, 20 * MS, 22 * MS, 59 * MS, 61 * MS, 100 * MS]
    assert liq in picked
    with pytest.raises(ValueError, match="cadence"):
        DecisionInputs(0)


def test_decision_inputs_match_the_coordinators_clock(analytics):
    """Every vector selected is one the coordinator would decide on, and no other."""
    every = 250 * MS
    sel, picked = DecisionInputs(every), []
    for i in range(0, len(analytics), 300):
        picked += [m for m in sel.select(analytics[i:i + 300]) if type(m) is FeatureVector]
    nxt, expected = 0, []
    for m in analytics:  # the coordinator's rule, written out here
        if type(m) is FeatureVector and m.ts_event >= nxt:
            expected.append(m.seq)
            nxt = (m.ts_event // every + 1) * every
    assert [m.seq for m in picked] == expected and len(expected) > 100


def test_price_inputs_send_every_price_in_chunks(analytics):
    sel, chunks = PriceInputs(100 * MS), []
    for i in range(0, len(analytics), 50):
        got = sel.select(analytics[i:i + 50])
        if got:
            chunks.append(got)
    flat = [p for c in chunks for p in c] + sel.flush()
    assert flat == [(m.ts_event, m.price) for m in analytics if type(m) is FeatureVector]
    assert all(c[-1][0] - c[0][0] >= 100 * MS for c in chunks)
    assert len(chunks) > 10
    assert sel.flush() == []  # nothing held twice


def test_selector_names_the_kinds():
    assert isinstance(selector("agent", MS), AgentInputs)
    with pytest.raises(ValueError, match="agent, decision, prices"):
        selector("everything", MS)
