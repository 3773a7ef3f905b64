"""What the FeatureEngine sends each HMARL receiver (pipelines/alpha/inputs.py).

The selectors exist for speed, so the claim to check is that a receiver fed the
selection behaves exactly as one fed everything. The decision rounds
(actors/rounds.py) must not depend on how the engine's output is batched: the
coordinator's clock picks the same vectors, the feedback system sees every
price, and each round is chained to exactly the results it may see.
"""

from __future__ import annotations

import pytest

from pipelines.features.engine import SymbolAnalytics
from pipelines.alpha.registry import AGENTS
from pipelines.alpha.inputs import AgentInputs
from pipelines.model.messages import FeatureVector, FlowState, FootprintState, LiquidityState, TapeSignal
from tests.helpers import simulated_events

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


class _Ref:
    def __init__(self, name: str, n: int):
        self.key = (name, n)


class _RecordingRay:
    """Just enough of Ray's API for DecisionRounds: every call is recorded, in order, with
    its arguments (payloads unpickled, ObjectRefs as the (actor, call number) they stand for)."""

    def __init__(self):
        self.calls: list = []
        self.n: dict[str, int] = {}

    def get_actor(self, name, namespace):
        ray = self

        class Handle:
            def __getattr__(self, method):
                class Method:
                    @staticmethod
                    def remote(*args):
                        ray.n[name] = ray.n.get(name, 0) + 1
                        ray.calls.append((name, method, tuple(ray.plain(a) for a in args)))
                        return _Ref(name, ray.n[name])
                return Method()
        return Handle()

    @staticmethod
    def plain(a):
        import pickle
        if isinstance(a, bytes):
            return tuple(pickle.loads(a))
        if isinstance(a, list):
            return tuple(r.key for r in a)
        return a

    def wait(self, refs, num_returns, timeout):
        return list(refs), []

    def get(self, ref):
        return None


def _rounds(analytics, chunk: int, every_ns: int):
    from actors.rounds import DecisionRounds

    ray = _RecordingRay()
    r = DecisionRounds(ray, "ns", every_ns, 1_000_000, agents=("a1", "a2"), ml="ml", coordinator="coord",
                       feedback="fb")
    for i in range(0, len(analytics), chunk):
        r.on_output(analytics[i:i + chunk])
    r.close()
    return ray.calls


def test_decision_rounds_do_not_depend_on_the_batching(analytics):
    """The engine's batches follow the feed's wall-clock micro-batches; the rounds must not."""
    every = 250 * MS
    small, large = _rounds(analytics, 7, every), _rounds(analytics, 997, every)
    assert repr(small) == repr(large)  # repr: states hold NaN while they warm up, and NaN != NaN
    # The coordinator decides on exactly the vectors of the decision clock, written out here.
    nxt, boundaries = 0, []
    for m in analytics:
        if type(m) is FeatureVector and m.ts_event >= nxt:
            boundaries.append(m)
            nxt = (m.ts_event // every + 1) * every
    coord = [args for name, method, args in small if name == "coord"]
    assert len(boundaries) > 100 and repr([args[0][-1] for args in coord]) == repr(boundaries)
    assert all(type(m) in (FlowState, LiquidityState) for args in coord for m in args[0][:-1])
    # Every trade price reaches the feedback system once, in order.
    prices = [p for name, _m, args in small if name == "fb" for p in args[0]]
    assert prices == [(m.ts_event, m.price) for m in analytics if type(m) is FeatureVector]
    # Every tape signal and closed footprint bar reaches it once too: it keeps their outcomes.
    patterns = [m for name, _m, args in small if name == "fb" and args[3] is not None for m in args[3]]
    assert repr(patterns) == repr([m for m in analytics if type(m) is TapeSignal
                                   or (type(m) is FootprintState and m.closed)])
    assert patterns, "the simulated stream holds no pattern"
    # The agents read what AgentInputs selects from the whole stream, in order.
    got = [m for name, _m, args in small if name == "a1" for m in args[0]]
    assert repr(got) == repr(AgentInputs().select(analytics))


def test_decision_rounds_chain_each_round_to_the_results_it_may_see(analytics):
    calls = _rounds(analytics[:3000], 50, 250 * MS)
    rounds = [c for c in calls if c[0] == "coord"]
    assert len(rounds) >= 3
    # Round k (1-based call numbers): agents get F(k-1); feedback gets the voters of round k and D(k-1);
    # the coordinator gets the voters of round k and F(k-1).
    k = 3
    agent_k = [c for c in calls if c[0] == "a1"][k - 1]
    fb_k = [c for c in calls if c[0] == "fb"][k - 1]
    coord_k = rounds[k - 1]
    voters_k = (("a1", k), ("a2", k), ("ml", k))
    assert agent_k[2][1] == (("fb", k - 1),)
    assert fb_k[2][1:3] == (voters_k, (("coord", k - 1),))
    assert coord_k[2][1:] == (voters_k, (("fb", k - 1),))
    with pytest.raises(ValueError, match="cadence"):
        _rounds([], 1, 0)
