"""The four specialist agents (pipelines/alpha/: base, learning, one module per agent, registry).

Rules are checked on hand-built analytics with the expected confidence computed
here from the documented formula; the learning layer against the closed form of
Hedge (w_a proportional to exp(eta x cumulative reward_a) while no weight is at
the floor, act and fade paying the trading cost); the agents on simulator output and on the real CME ES tape for a
non-trivial share of non-neutral signals (run ``pytest -s`` to see the shares).
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from pipelines.features.engine import SymbolAnalytics
from pipelines.config import ConfigError, HmarlConfig, config_from_dict
from pipelines.alpha.footprint import FootprintPatternAgent
from pipelines.alpha.learning import ARMS, ContextualHedge
from pipelines.alpha.liquidity import LiquidityAgent
from pipelines.alpha.order_flow import OrderFlowSpecialist
from pipelines.alpha.registry import AGENTS
from pipelines.alpha.tape import TapeReadingAgent
from pipelines.portfolio.consensus import ConsensusConfig, Coordinator
from pipelines.model.messages import (
    Feedback,
    FeatureVector,
    FlowState,
    FootprintState,
    LiquidityState,
    Signal,
    TapeSignal,
    Trade,
)
from pipelines.adapters.files.cme_es import read_cme_es
from tests.helpers import SESSION_T0, simulated_events

SYM = "WDOZ26"
TICK = 0.5
S = 1_000_000_000
PRICE = 5400.0


# -- hand-built analytics ---------------------------------------------------------------

def vec(seq: int, price: float = PRICE, ts: int = SESSION_T0, symbol: str = SYM, **values) -> FeatureVector:
    return FeatureVector(symbol, ts, ts, seq, price, 1, 1, tuple(values), tuple(float(v) for v in values.values()))


def flow(seq: int, ts: int = SESSION_T0, symbol: str = SYM, **values) -> FlowState:
    return FlowState(symbol, ts, ts, seq, dict(values))


def liq(seq: int, ts: int = SESSION_T0, **values) -> LiquidityState:
    base = {"spread_ticks": 1.0, "liquidity_score": 0.5, "depth_imbalance": 0.0, "queue_imbalance": 0.0}
    return LiquidityState(SYM, ts, ts, seq, {**base, **values})


def tape(seq: int, pattern: str, side: int, conf: float, ts: int = SESSION_T0, price: float = PRICE) -> TapeSignal:
    return TapeSignal(SYM, ts, ts, seq, pattern, side, price, conf, {})


def make_bar(minute: int = 0, **kw) -> dict:
    """A quiet closed bar (range 1 tick, no delta, no patterns); override what a test needs."""
    b = dict(ts_open=SESSION_T0 + minute * 60 * S, open=PRICE, high=PRICE + 0.5, low=PRICE, close=PRICE, volume=100,
             ask_volume=50, bid_volume=50, delta=0, cum_delta=0, delta_min=0, delta_max=0,
             levels=[[PRICE, 25, 25, 50], [PRICE + 0.5, 25, 25, 50]], poc=PRICE, value_area_high=PRICE + 0.5,
             value_area_low=PRICE, buy_imbalances=[], sell_imbalances=[], stacked_buy=[], stacked_sell=[],
             unfinished_high=False, unfinished_low=False, absorption=[])
    b.update(kw)
    return b


def closed(seq: int, bar: dict) -> FootprintState:
    return FootprintState(SYM, bar["ts_open"] + 60 * S, bar["ts_open"] + 60 * S, seq, True, bar)


def one(agent, messages) -> Signal:
    out = agent.on_analytics(messages)
    assert len(out) == 1, out
    return out[0]


def mentions(sig: Signal, text: str) -> bool:
    return any(text in r for r in sig.reasons)


# -- common behaviour ------------------------------------------------------------------------

def test_no_price_no_signal_and_foreign_messages_counted():
    a = OrderFlowSpecialist(SYM, learning=False)
    buy = dict(ofi_ratio_1m=0.35, ofi_ratio_5m=0.2)
    assert a.on_analytics([flow(1, **buy)]) == []  # no trade price yet
    other = [flow(2, symbol="WINZ26", **buy), vec(3, symbol="WINZ26"),
             Trade(SYM, SESSION_T0, SESSION_T0, 4, PRICE, 1, 2)]
    assert a.on_analytics(other) == []
    sig = one(a, [vec(5, 5401.5), flow(6, ts=SESSION_T0 + S, **buy)])
    assert (sig.seq, sig.ts_event, sig.price, sig.agent, sig.symbol) == (6, SESSION_T0 + S, 5401.5, "order_flow", SYM)
    st = a.stats()
    assert (st["no_price"], st["ignored_symbol"], st["ignored_kind"], st["messages"]) == (1, 2, 1, 3)


def test_one_signal_per_seq_and_vectors_only_update_the_view():
    a = OrderFlowSpecialist(SYM, learning=False)
    bar = make_bar(absorption=[{"at": "low", "ts_open": SESSION_T0, "price": PRICE, "volume": 40}])
    # One event's outputs share its seq: closed bar, vector, flow state -> one signal, price from the vector.
    out = a.on_analytics([vec(1), closed(2, bar), vec(2, 5402.0), flow(2, ts=SESSION_T0 + 60 * S, ofi_ratio_1m=0.35,
                                                                           ofi_ratio_5m=0.2), vec(3), vec(4)])
    assert len(out) == 1
    sig = out[0]
    assert sig.seq == 2 and sig.price == 5402.0 and sig.ts_event == SESSION_T0 + 60 * S
    assert mentions(sig, "absorption") and mentions(sig, "ofi_ratio_1m=0.35")
    assert sig.confidence == pytest.approx((0.7 + 0.7) / 2)  # two buy votes: their mean
    # A later message with an already used seq gives no second signal for that seq.
    assert a.on_analytics([flow(2, ofi_ratio_1m=0.35, ofi_ratio_5m=0.2)]) == []
    assert a.stats()["stale_seq"] == 1


def test_bad_message_is_counted_not_raised():
    a = FootprintPatternAgent(SYM, learning=False)
    a.on_analytics([vec(1)])
    bar = make_bar()
    del bar["stacked_buy"]
    assert a.on_analytics([closed(2, bar)]) == []
    st = a.stats()
    assert st["bad"] == 1 and "stacked_buy" in st["last_error"]


def test_rule_parameters_override_and_typos_fail():
    a = LiquidityAgent(SYM, learning=False, depth_threshold=0.5)
    assert a.stats()["params"]["depth_threshold"] == 0.5
    assert one(a, [vec(1), liq(2, depth_imbalance=0.4)]).direction == 0
    with pytest.raises(TypeError, match="LiquidityAgent: .*depth_treshold.*rule parameters: depth_threshold"):
        LiquidityAgent(SYM, depth_treshold=0.5)


def test_unknown_symbol_needs_a_tick_size():
    with pytest.raises(KeyError, match="no contract specification"):
        OrderFlowSpecialist("XYZ1")
    assert OrderFlowSpecialist("XYZ1", tick_size=0.25).reward_scale == 1.0


# -- order flow ------------------------------------------------------------------------------

def test_ofi_rule_both_directions():
    a = OrderFlowSpecialist(SYM, learning=False)
    buy = one(a, [vec(1), flow(2, ofi_ratio_1m=0.35, ofi_ratio_5m=0.2)])
    assert buy.direction == 1 and buy.confidence == pytest.approx(min(1, 2 * 0.35))
    assert buy.reasons[0].startswith("ofi_ratio_1m=0.35>=0.3") and "ofi_ratio_5m=0.2 agrees" in buy.reasons[0]
    sell = one(a, [flow(3, ofi_ratio_1m=-0.42, ofi_ratio_5m=-0.1)])
    assert sell.direction == -1 and sell.confidence == pytest.approx(2 * 0.42)
    assert mentions(sell, "ofi_ratio_1m=-0.42<=-0.3")


@pytest.mark.parametrize("values", [
    dict(ofi_ratio_1m=0.35, ofi_ratio_5m=-0.05),  # 5 min disagrees
    dict(ofi_ratio_1m=0.29, ofi_ratio_5m=0.2),  # under the threshold
    dict(ofi_ratio_1m=float("nan"), ofi_ratio_5m=0.2, tfi_1m=float("nan")),  # warming up
    dict(),  # nothing known
])
def test_order_flow_no_rule_fires(values):
    a = OrderFlowSpecialist(SYM, learning=False)
    sig = one(a, [vec(1), flow(2, **values)])
    assert (sig.direction, sig.confidence, sig.raw_direction) == (0, 0, 0) and sig.reasons == ("no rule fired",)


def test_tfi_rule_and_conflicting_votes_net_out():
    a = OrderFlowSpecialist(SYM, learning=False)
    sig = one(a, [vec(1), flow(2, tfi_1m=-0.45, tfi_5m=-0.3)])
    assert sig.direction == -1 and sig.confidence == pytest.approx(0.9) and mentions(sig, "tfi_1m=-0.45")
    sig = one(a, [flow(3, ofi_ratio_1m=0.35, ofi_ratio_5m=0.2, tfi_1m=-0.45, tfi_5m=-0.3)])
    s = 1 * 0.7 - 1 * 0.9  # mean signed vote
    assert sig.direction == -1 and sig.confidence == pytest.approx(abs(s) / 2)


def test_absorption_rule():
    a = OrderFlowSpecialist(SYM, learning=False)
    a.on_analytics([vec(1)])
    low = one(a, [closed(2, make_bar(0, absorption=[{"at": "low", "ts_open": SESSION_T0, "price": 5399.0,
                                                      "volume": 40}]))])
    assert low.direction == 1 and low.confidence == pytest.approx(0.7) and mentions(low, "absorption at the low 5399")
    high = one(a, [closed(3, make_bar(1, absorption=[{"at": "high", "ts_open": SESSION_T0, "price": 5401.0,
                                                       "volume": 33}]))])
    assert high.direction == -1 and high.confidence == pytest.approx(0.7) and mentions(high, "high 5401")


@pytest.mark.parametrize("last_cum_delta, expected", [(450, -1), (600, 0)])
def test_delta_divergence_at_a_new_high(last_cum_delta, expected):
    a = OrderFlowSpecialist(SYM, learning=False)
    a.on_analytics([vec(1)])
    for i in range(5):  # rising highs with rising cumulative delta: no divergence
        sig = one(a, [closed(2 + i, make_bar(i, high=5401.0 + i, low=5399.0 + i, cum_delta=100 * (i + 1)))])
        assert sig.direction == 0
    sig = one(a, [closed(10, make_bar(5, high=5406.0, low=5404.0, cum_delta=last_cum_delta))])
    assert sig.direction == expected
    if expected:
        assert sig.confidence == pytest.approx(0.6)
        assert mentions(sig, "high 5406 > 5-bar high 5405 while cum_delta 450 <= 500")


def test_delta_divergence_at_a_new_low():
    a = OrderFlowSpecialist(SYM, learning=False)
    a.on_analytics([vec(1)])
    for i in range(5):
        one(a, [closed(2 + i, make_bar(i, high=5401.0 - i, low=5399.0 - i, cum_delta=-100 * (i + 1)))])
    sig = one(a, [closed(10, make_bar(5, high=5396.0, low=5393.0, cum_delta=-450))])
    assert sig.direction == 1 and mentions(sig, "low 5393 < 5-bar low 5395 while cum_delta -450 >= -500")


# -- liquidity ---------------------------------------------------------------------------------

def test_book_imbalance_rules():
    # min_confidence 0: the conflicting votes below combine to 0.045, which the default would abstain on.
    a = LiquidityAgent(SYM, learning=False, min_confidence=0.0)
    a.on_analytics([vec(1)])
    sig = one(a, [liq(2, depth_imbalance=0.4)])
    assert sig.direction == 1 and sig.confidence == pytest.approx(0.5 + 0.3 * 0.4)
    assert mentions(sig, "depth_imbalance=0.4>=0.3")
    sig = one(a, [liq(3, queue_imbalance=-0.7)])
    assert sig.direction == -1 and sig.confidence == pytest.approx(0.5 + 0.3 * 0.7)
    sig = one(a, [liq(4, depth_imbalance=0.4, queue_imbalance=-0.7)])
    assert sig.direction == -1 and sig.confidence == pytest.approx(abs(0.62 - 0.71) / 2)
    sig = one(a, [liq(5, queue_imbalance=1.0)])
    assert sig.confidence == pytest.approx(0.8)  # 0.5 + 0.3, under the 0.9 cap


@pytest.mark.parametrize("values, rule, text", [
    (dict(liquidity_score=0.2), "thin_book", "liquidity_score=0.200<0.3"),
    (dict(spread_ticks=3.0), "wide_spread", "spread_ticks=3>2"),
])
def test_liquidity_gates(values, rule, text):
    a = LiquidityAgent(SYM, learning=False)
    sig = one(a, [vec(1), liq(2, depth_imbalance=0.8, **values)])
    assert sig.direction == 0 and mentions(sig, text) and a.stats()["by_rule"] == {rule: 1}


def test_hidden_liquidity_from_icebergs():
    a = LiquidityAgent(SYM, learning=False)
    a.on_analytics([vec(1), tape(2, "iceberg", 1, 0.6, ts=SESSION_T0)])  # an iceberg alone only updates the view
    sig = one(a, [liq(3, ts=SESSION_T0 + 5 * S)])
    assert sig.direction == 1 and sig.confidence == pytest.approx(0.5 + 0.3 * 0.6)
    assert mentions(sig, "iceberg on the bid") and mentions(sig, "5.0 s ago")
    assert one(a, [liq(4, ts=SESSION_T0 + 11 * S)]).direction == 0  # older than 10 s
    a.on_analytics([tape(5, "iceberg", -1, 0.1, ts=SESSION_T0 + 12 * S)])  # too weak to count
    assert one(a, [liq(6, ts=SESSION_T0 + 13 * S)]).direction == 0
    a.on_analytics([tape(7, "sweep", -1, 1.0, ts=SESSION_T0 + 14 * S),
                    tape(8, "iceberg", -1, 1.0, ts=SESSION_T0 + 14 * S)])
    sig = one(a, [liq(9, ts=SESSION_T0 + 15 * S)])
    assert sig.direction == -1 and sig.confidence == pytest.approx(0.8)


# -- tape ----------------------------------------------------------------------------------------

def test_tape_patterns():
    a = TapeReadingAgent(SYM, learning=False)
    a.on_analytics([vec(1)])
    sig = one(a, [tape(2, "sweep", 1, 0.75)])
    assert sig.direction == 1 and sig.confidence == pytest.approx(0.75) and mentions(sig, "sweep side +1")
    sig = one(a, [tape(3, "iceberg", -1, 0.4)])
    assert sig.direction == -1 and sig.confidence == pytest.approx(0.4)
    sig = one(a, [tape(4, "sweep", 1, 0.2)])
    assert sig.direction == 0 and mentions(sig, "confidence 0.200<0.25")


def _moves(r20_ticks: float, r50_ticks: float, r100_ticks: float = 0.0, volume_ratio: float = 1.0) -> dict:
    """FeatureVector returns that are the given moves in ticks at PRICE."""
    return dict(returns_20=r20_ticks * TICK / PRICE, returns_50=r50_ticks * TICK / PRICE,
                returns_100=r100_ticks * TICK / PRICE, volume_ratio_20=volume_ratio)


@pytest.mark.parametrize("speed_60, fast", [(4.0, False), (10.0, True)])
def test_momentum_scaled_by_tape_speed(speed_60, fast):
    a = TapeReadingAgent(SYM, learning=False)
    speeds = dict(tape_speed_60s=speed_60, tape_speed_300s=4.2, tape_speed_900s=4.0)
    sig = one(a, [vec(1, **_moves(3, 5)), flow(2, **speeds)])
    ticks = 3.0
    assert sig.direction == 1
    assert sig.confidence == pytest.approx(min(1, ticks / (2 * 2)) * (1.0 if fast else 0.7))
    assert mentions(sig, "returns_20=+3 ticks") and mentions(sig, f"tape_speed_60s/tape_speed_900s={speed_60 / 4:g}")
    sell = one(a, [vec(3, **_moves(-5, -2)), flow(4, **speeds)])
    assert sell.direction == -1 and sell.confidence == pytest.approx(min(1, 5 / 4) * (1.0 if fast else 0.7))


def test_momentum_needs_the_longer_return_to_agree_and_uses_300s_while_900s_warms():
    a = TapeReadingAgent(SYM, learning=False)
    assert one(a, [vec(1, **_moves(3, -1)), flow(2)]).direction == 0
    sig = one(a, [vec(3, **_moves(2, 1)), flow(4, tape_speed_60s=9.0, tape_speed_300s=3.0,
                                                  tape_speed_900s=float("nan"))])
    assert sig.confidence == pytest.approx(min(1, 2 / 4) * 1.0) and mentions(sig, "tape_speed_60s/tape_speed_300s=3")


@pytest.mark.parametrize("moves, flow_extra, fading", [
    (_moves(3, 5, 10, volume_ratio=0.6), {}, "volume_ratio_20=0.6<0.8"),
    (_moves(3, 5, 10), dict(large_trade_ratio_1m=0.01, large_trade_ratio_5m=0.05),
     "large_trade_ratio_1m=0.01<0.5x0.05"),
])
def test_exhaustion_after_a_move_on_fast_tape(moves, flow_extra, fading):
    a = TapeReadingAgent(SYM, learning=False)
    fast = dict(tape_speed_60s=10.0, tape_speed_900s=4.0)
    sig = one(a, [vec(1, **moves), flow(2, **fast, **flow_extra)])
    assert sig.direction == -1 and sig.confidence == pytest.approx(0.75)
    assert mentions(sig, "returns_100=+10 ticks") and mentions(sig, fading)
    assert a.stats()["by_rule"] == {"exhaustion": 1}
    # The same move on a tape at its usual pace is momentum, not exhaustion.
    slow = one(a, [flow(3, tape_speed_60s=4.0, tape_speed_900s=4.0, **flow_extra)])
    assert slow.direction == 1 and a.stats()["by_rule"]["momentum"] == 1


# -- footprint -------------------------------------------------------------------------------------

def _footprint_signal(bar: dict, prev: dict | None = None) -> Signal:
    a = FootprintPatternAgent(SYM, learning=False)
    a.on_analytics([vec(1)])
    if prev is not None:
        a.on_analytics([closed(2, prev)])
    return one(a, [closed(3, bar)])


@pytest.mark.parametrize("delta, direction", [(40, 1), (-35, -1), (29, 0)])
def test_bar_delta_rule(delta, direction):
    sig = _footprint_signal(make_bar(delta=delta))
    assert sig.direction == direction
    if direction:
        assert sig.confidence == pytest.approx(min(0.9, 0.5 + abs(delta) / 100))
        assert mentions(sig, f"delta/volume ({delta}/100)")


def test_stacked_imbalances():
    sig = _footprint_signal(make_bar(stacked_buy=[[5399.0, 5400.0]]))
    assert sig.direction == 1 and sig.confidence == pytest.approx(0.65) and mentions(sig, "buy=1 sell=0")
    sig = _footprint_signal(make_bar(stacked_buy=[[5399.0, 5400.0]], stacked_sell=[[5401, 5402], [5403, 5404]]))
    assert sig.direction == -1


def test_p_and_b_profiles():
    # 4-point range (8 ticks); POC at 5401.5, 80 % of the volume above the mid 5400.
    levels = [[5398.0, 3, 2, 5], [5399.0, 3, 2, 5], [5400.0, 5, 5, 10], [5401.0, 15, 15, 30],
              [5401.5, 20, 20, 40], [5402.0, 5, 5, 10]]
    p = make_bar(low=5398.0, high=5402.0, poc=5401.5, levels=levels)
    sig = _footprint_signal(p)
    above = sum(v for px, _, _, v in levels if px > 5400.0) / 100
    assert above == 0.8
    assert sig.direction == 1 and sig.confidence == pytest.approx(0.65) and mentions(sig, "P-profile")
    mirrored = [[2 * 5400.0 - px, b, a, v] for px, b, a, v in reversed(levels)]
    b = make_bar(low=5398.0, high=5402.0, poc=5398.5, levels=mirrored)
    sig = _footprint_signal(b)
    assert sig.direction == -1 and mentions(sig, "b-profile")
    narrow = make_bar(low=5398.5, high=5400.0, poc=5400.0, levels=[[5398.5, 1, 1, 2], [5400.0, 40, 40, 80]])
    assert _footprint_signal(narrow).direction == 0  # 3 ticks: too narrow for a shape


def test_unfinished_auction():
    sig = _footprint_signal(make_bar(unfinished_high=True))
    assert sig.direction == 1 and sig.confidence == pytest.approx(0.5)
    assert mentions(sig, "unfinished auction at the high 5400.5")
    assert _footprint_signal(make_bar(unfinished_low=True)).direction == -1
    assert _footprint_signal(make_bar(unfinished_high=True, unfinished_low=True)).direction == 0


@pytest.mark.parametrize("bar, direction, rule", [
    (dict(low=5401.0, high=5402.0, close=5402.0, delta=20), 1, "initiative"),  # above the value area, buyers
    (dict(low=5401.0, high=5402.0, close=5402.0, delta=5), 0, None),  # above, but delta share 0.05 < 0.1
    (dict(low=5398.0, high=5399.0, close=5398.5, delta=-15), -1, "initiative"),
    (dict(low=5400.5, high=5401.5, close=5400.5, delta=0), -1, "responsive"),  # probed above, closed back inside
    (dict(low=5398.5, high=5399.5, close=5399.0, delta=0), 1, "responsive"),
])
def test_initiative_and_responsive(bar, direction, rule):
    # Bars of 2 ticks (no profile shape) against a previous value area 5399-5401.
    prev = make_bar(0, low=5398.5, high=5401.5, value_area_low=5399.0, value_area_high=5401.0)
    cur = make_bar(1, **{"open": 5400.0, **bar})
    sig = _footprint_signal(cur, prev)
    assert sig.direction == direction
    if rule:
        conf = 0.65 if rule == "initiative" else 0.55
        assert sig.confidence == pytest.approx(conf) and mentions(sig, "previous value area 5399-5401")


# -- learning ---------------------------------------------------------------------------------------

CONTEXT_A = dict(ofi_ratio_5m=0.2)  # order flow context "ofi5m+|speed_lo"
CONTEXT_B = dict(ofi_ratio_5m=-0.2)  # "ofi5m-|speed_lo"
TFI_BUY = dict(tfi_1m=0.5, tfi_5m=0.4)  # raw rule: buy, confidence min(1, 2 x 0.5) = 1
TFI_WEAK_BUY = dict(tfi_1m=0.3, tfi_5m=0.2)  # raw rule: buy, confidence min(1, 2 x 0.3) = 0.6
N_FEEDBACK = 200  # 100 per context
COST = 0.5 / 2.0  # default cost per unit of confidence: 1 WDO tick (0.5 points) over the reward scale (2.0 points)


def feedback_for(sig: Signal, points: float, voter: str = "order_flow") -> Feedback:
    reward = max(-1.0, min(1.0, sig.direction * sig.confidence * points / 2.0))
    return Feedback(voter, sig.symbol, sig.ts_event + sig.horizon_ns, sig.ts_event, sig.seq, sig.direction,
                    sig.confidence, sig.price, sig.price + points, points, points * 10.0, reward,
                    None if points == 0 or sig.direction == 0 else points * sig.direction > 0)


def outcome_stream(seed: int = 7) -> list[tuple[dict, float]]:
    """(context, points): the buy rule is right (+points) 80 % of the time in A, wrong 80 % in B,
    interleaved A, B, A, B, ...; points 1.0 -> r = 1 x 1 x 1.0 / 2.0 = 0.5 per outcome."""
    rng = np.random.default_rng(seed)
    a = rng.permutation([1.0] * 80 + [-1.0] * 20)
    b = rng.permutation([-1.0] * 80 + [1.0] * 20)
    out = []
    for pa, pb in zip(a, b):
        out += [(CONTEXT_A, pa), (CONTEXT_B, pb)]
    return out


def train(agent: OrderFlowSpecialist, stream) -> list[Signal]:
    sigs = []
    agent.on_analytics([vec(1)])
    for i, (ctx, points) in enumerate(stream):
        sig = one(agent, [flow(10 + i, ts=SESSION_T0 + i * S, **TFI_BUY, **ctx)])
        sigs.append(sig)
        agent.on_feedback([feedback_for(sig, points)])
    return sigs


def probe(agent: OrderFlowSpecialist, seq: int) -> tuple[Signal, Signal]:
    return (one(agent, [vec(seq), flow(seq, **TFI_BUY, **CONTEXT_A)]),
            one(agent, [flow(seq + 1, **TFI_BUY, **CONTEXT_B)]))


def test_learns_to_act_where_the_rule_works_and_fade_where_it_fails():
    agent = OrderFlowSpecialist(SYM)
    stream = outcome_stream()
    assert len(stream) == N_FEEDBACK
    sigs = train(agent, stream)
    # Unlearned: a three-way tie, which goes to abstain.
    assert (sigs[0].action, sigs[0].direction, sigs[0].confidence) == ("abstain", 0, 0.0)
    # Right 80 % of the time: mean r = 0.6 x 0.5 = 0.3 beats the cost 0.25 (act nets +5 over 100 outcomes).
    assert agent.stats()["feedback_applied"] == N_FEEDBACK
    in_a, in_b = probe(agent, 1000)
    assert (in_a.context, in_a.action, in_a.direction, in_a.raw_direction) == ("ofi5m+|speed_lo", "act", 1, 1)
    assert (in_b.context, in_b.action, in_b.direction, in_b.raw_direction) == ("ofi5m-|speed_lo", "fade", -1, 1)
    assert mentions(in_b, "context ofi5m-|speed_lo: fade")


def test_hedge_weights_follow_the_closed_form():
    """With eta small enough that no weight reaches the floor, Hedge is
    w_a = exp(eta R_a) / sum_b exp(eta R_b), R the cumulative reward of each arm:
    act r - COST, fade -r - COST, abstain 0 per outcome."""
    eta = 0.03
    agent = OrderFlowSpecialist(SYM, eta=eta)
    stream = outcome_stream()
    train(agent, stream)
    for ctx_values, name in ((CONTEXT_A, "ofi5m+|speed_lo"), (CONTEXT_B, "ofi5m-|speed_lo")):
        r = np.array([0.5 * p for c, p in stream if c is ctx_values])
        cum = np.stack([r - COST, -r - COST, np.zeros_like(r)], axis=1).cumsum(axis=0)  # after each outcome
        w = np.exp(eta * cum) / np.exp(eta * cum).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(agent.hedge.weights_of(name), w[-1], rtol=1e-9)
        assert w.min() > 0.02  # no weight ever reached the floor on the way (the closed form holds)
    in_a, in_b = probe(agent, 1000)
    w_a, w_b = agent.hedge.weights_of("ofi5m+|speed_lo"), agent.hedge.weights_of("ofi5m-|speed_lo")
    assert in_a.confidence == pytest.approx(1.0 * w_a[0]) and in_b.confidence == pytest.approx(1.0 * w_b[1])


def test_learning_off_keeps_acting():
    agent = OrderFlowSpecialist(SYM, learning=False)
    sigs = train(agent, outcome_stream())
    assert all(s.action == "act" and s.direction == 1 and s.confidence == 1.0 for s in sigs)
    assert agent.on_feedback([feedback_for(sigs[-1], 1.0)]) == 0
    assert agent.state()["weights"] == {}


def test_flat_outcomes_teach_abstain():
    # No move: trading only pays the cost, act and fade -COST each per outcome, abstain 0.
    agent = OrderFlowSpecialist(SYM)
    train(agent, [(CONTEXT_A, 0.0)] * 50)
    trade = math.exp(0.1 * -50 * COST)
    assert agent.hedge.weights_of("ofi5m+|speed_lo") == pytest.approx([trade / (2 * trade + 1)] * 2
                                                                      + [1 / (2 * trade + 1)], rel=1e-12)
    assert probe(agent, 1000)[0].action == "abstain"


def test_alternating_outcomes_closed_form_abstains():
    """Right, wrong, right, ... (r = +0.5, -0.5, ...): no edge. Act earns +0.25, -0.75, ...
    and fade -0.75, +0.25, ...: each nets -COST per outcome, so abstain (0) ends on top."""
    eta, n = 0.1, 40
    agent = OrderFlowSpecialist(SYM)
    train(agent, [(CONTEXT_A, 1.0 if i % 2 == 0 else -1.0) for i in range(n)])
    trade = math.exp(eta * -n * COST)  # exp(-1); the floor 0.02 is never near
    want = [trade / (2 * trade + 1), trade / (2 * trade + 1), 1 / (2 * trade + 1)]
    assert agent.hedge.weights_of("ofi5m+|speed_lo") == pytest.approx(want, rel=1e-12)
    sig = probe(agent, 1000)[0]
    assert (sig.action, sig.direction, sig.confidence, sig.raw_direction) == ("abstain", 0, 0.0, 1)
    assert mentions(sig, "context ofi5m+|speed_lo: abstain")


def test_zero_mean_noise_mostly_abstains():
    # Moves ~ N(0, 1 point): r = move / 2.0. Act or fade wins only while |mean r| > COST, a 0.5-sigma
    # event after one outcome and ever rarer after (mean of k outcomes: sigma 0.5 / sqrt(k)).
    rng = np.random.default_rng(5)
    agent = OrderFlowSpecialist(SYM)
    agent.on_analytics([vec(1)])
    actions = []
    for i in range(400):
        sig = one(agent, [flow(10 + i, ts=SESSION_T0 + i * S, **TFI_BUY, **(CONTEXT_A, CONTEXT_B)[i % 2])])
        actions.append(sig.action)
        agent.on_feedback([feedback_for(sig, float(rng.normal(0.0, 1.0)))])
    assert actions.count("abstain") > 0.9 * len(actions)
    assert [s.action for s in probe(agent, 1000)] == ["abstain", "abstain"]


@pytest.mark.parametrize("points, action", [(1.0, "act"), (-1.0, "fade"), (0.4, "abstain"), (-0.4, "abstain")])
def test_an_edge_must_beat_the_cost(points, action):
    # The same move every time: r = points / 2.0 = +-0.5 beats the cost 0.25; +-0.2 does not.
    agent = OrderFlowSpecialist(SYM)
    train(agent, [(CONTEXT_A, points)] * 30)
    assert probe(agent, 1000)[0].action == action


def test_the_cost_scales_with_the_confidence_like_the_move():
    """A 0.6-confidence vote, right by 0.75 points (1.5 ticks) each time: the move beats the
    1-tick cost whatever the confidence. Act nets 0.6 x (0.75 - 0.5) / 2.0 = +0.075 per
    outcome, fade 0.6 x (-0.75 - 0.5) / 2.0 = -0.375, abstain 0."""
    agent = OrderFlowSpecialist(SYM)
    agent.on_analytics([vec(1)])
    for i in range(20):
        agent.on_feedback([feedback_for(one(agent, [flow(10 + i, **TFI_WEAK_BUY, **CONTEXT_A)]), 0.75)])
    act, fade = math.exp(0.1 * 20 * 0.075), math.exp(0.1 * 20 * -0.375)
    want = [act / (act + fade + 1), fade / (act + fade + 1), 1 / (act + fade + 1)]
    assert agent.hedge.weights_of("ofi5m+|speed_lo") == pytest.approx(want, rel=1e-12)
    sig = one(agent, [flow(100, **TFI_WEAK_BUY, **CONTEXT_A)])
    assert (sig.action, sig.direction) == ("act", 1) and sig.confidence == pytest.approx(0.6 * want[0])


def test_ties_go_to_abstain_then_act():
    h = ContextualHedge()
    assert h.choose("unseen") == ("abstain", pytest.approx(1 / 3))
    h.load_state({"arms": ["act", "fade", "abstain"], "weights": {
        "x": {"act": 0.4, "fade": 0.4, "abstain": 0.2},
        "y": {"act": 0.4, "fade": 0.2, "abstain": 0.4},
        "z": {"act": 0.2, "fade": 0.4, "abstain": 0.4}}})
    assert [h.choose(c)[0] for c in "xyz"] == ["act", "abstain", "abstain"]
    agent = OrderFlowSpecialist(SYM)
    sig = one(agent, [vec(1), flow(2, **TFI_BUY, **CONTEXT_A)])
    assert (sig.action, sig.direction, sig.confidence, sig.raw_direction) == ("abstain", 0, 0.0, 1)


def test_floor_keeps_every_arm_alive():
    agent = OrderFlowSpecialist(SYM)
    floor = 0.02
    agent.on_analytics([vec(1)])
    for i in range(300):  # always wrong: r = -0.5
        sig = one(agent, [flow(10 + i, **TFI_BUY, **CONTEXT_B)])
        agent.on_feedback([feedback_for(sig, -1.0)])
        assert min(agent.hedge.weights_of("ofi5m-|speed_lo")) >= floor - 1e-12
    act, fade, abstain = agent.hedge.weights_of("ofi5m-|speed_lo")
    assert act == pytest.approx(floor) and abstain == pytest.approx(floor) and fade == pytest.approx(1 - 2 * floor)
    # ... so the arm can come back: right outcomes raise act again
    for i in range(20):
        sig = one(agent, [flow(1000 + i, **TFI_BUY, **CONTEXT_B)])
        agent.on_feedback([feedback_for(sig, 1.0)])
    assert agent.hedge.weights_of("ofi5m-|speed_lo")[0] > floor


def test_feedback_matching():
    agent = OrderFlowSpecialist(SYM)
    agent.on_analytics([vec(1)])
    sig = one(agent, [flow(2, **TFI_BUY, **CONTEXT_A)])
    neutral = one(agent, [flow(3, **CONTEXT_A)])
    fbs = [feedback_for(sig, 1.0, voter="tape"), feedback_for(sig._replace(seq=99), 1.0),
           feedback_for(neutral, 1.0), feedback_for(sig, float("nan"))]
    assert agent.on_feedback(fbs) == 0
    st = agent.stats()
    assert (st["feedback_ignored"], st["feedback_unmatched"], st["feedback_bad"]) == (1, 2, 1)
    sig = one(agent, [flow(4, **TFI_BUY, **CONTEXT_A)])
    assert agent.on_feedback([feedback_for(sig, 1.0), feedback_for(sig, 1.0)]) == 1  # once per signal


def test_abstain_and_min_confidence_still_learn():
    agent = OrderFlowSpecialist(SYM, min_confidence=0.5)
    train(agent, [(CONTEXT_A, 1.0)])  # act +0.25, fade -0.75, abstain 0: act leads
    w_act = math.exp(0.025) / (math.exp(0.025) + math.exp(-0.075) + 1)  # 0.347
    sig = one(agent, [flow(100, **TFI_BUY, **CONTEXT_A)])  # 1.0 x 0.347 < 0.5
    assert sig.reasons[-2].endswith(f"act (weight {w_act:.3f}) -> confidence 1.000 x {w_act:.3f} = {w_act:.3f}")
    assert (sig.direction, sig.action, sig.raw_direction) == (0, "abstain", 1) and mentions(sig, "min_confidence")
    assert agent.on_feedback([feedback_for(sig, 1.0)]) == 1


def test_a_plain_agent_defaults_to_the_configured_min_confidence():
    assert [cls(SYM).min_confidence for cls in AGENTS.values()] == [HmarlConfig().min_confidence] * 4 == [0.1] * 4
    # The conflicting book votes of test_book_imbalance_rules: (0.71 - 0.62) / 2 = 0.045 < 0.1 abstains.
    a = LiquidityAgent(SYM, learning=False)
    a.on_analytics([vec(1)])
    sig = one(a, [liq(2, depth_imbalance=0.4, queue_imbalance=-0.7)])
    assert (sig.direction, sig.confidence, sig.action, sig.raw_direction) == (0, 0.0, "abstain", -1)
    assert sig.reasons[-1] == "confidence 0.045 < min_confidence 0.1 -> neutral"


def test_agent_actor_passes_min_confidence_and_cost_from_the_config():
    from actors.config import ActorConfig
    from actors.hmarl import AgentActor  # no Valkey: the actor class runs as a plain object

    def actor(**cfg) -> AgentActor:
        return AgentActor(ActorConfig(HmarlConfig(**cfg), namespace="test", symbol=SYM), agent_id="order_flow")

    weak = [vec(1), flow(2, **TFI_WEAK_BUY, **CONTEXT_A)]  # raw confidence 0.6
    assert actor(learning=False).on_round(weak)[0].confidence == pytest.approx(0.6)
    sig = actor(learning=False, min_confidence=0.9).on_round(weak)[0]
    assert (sig.action, sig.direction) == ("abstain", 0) and mentions(sig, "min_confidence 0.9")
    # Right by 0.75 points (1.5 ticks) each time: worth acting at a 1-tick cost, not at 2 ticks.
    for cost, action in ((1.0, "act"), (2.0, "abstain")):
        a = actor(agent_cost_ticks=cost, min_confidence=0.0)
        a.on_round([vec(1)])
        for i in range(20):
            a._learn([feedback_for(a.on_round([flow(10 + i, **TFI_BUY, **CONTEXT_A)])[0], 0.75)])
        assert a.on_round([flow(100, **TFI_BUY, **CONTEXT_A)])[0].action == action, cost


def test_state_round_trip():
    agent = OrderFlowSpecialist(SYM)
    train(agent, outcome_stream())
    blob = json.dumps(agent.state())
    fresh = OrderFlowSpecialist(SYM)
    fresh.load_state(json.loads(blob))
    for x, y in zip(probe(agent, 1000), probe(fresh, 1000)):
        assert (x.action, x.direction, x.context) == (y.action, y.direction, y.context)
        assert x.confidence == pytest.approx(y.confidence, rel=1e-12)
    with pytest.raises(ValueError, match="cannot load into 'tape'"):
        TapeReadingAgent(SYM).load_state(json.loads(blob))
    with pytest.raises(ValueError, match="symbol 'WDOZ26' cannot load into 'WINZ26'"):
        OrderFlowSpecialist("WINZ26").load_state(json.loads(blob))
    with pytest.raises(ValueError, match="version 0, expected 1"):
        OrderFlowSpecialist(SYM).load_state({**json.loads(blob), "version": 0})
    bad = json.loads(blob)
    bad["weights"]["ofi5m+|speed_lo"]["act"] = 5.0
    with pytest.raises(ValueError, match="not a distribution"):
        OrderFlowSpecialist(SYM).load_state(bad)


def test_the_coordinator_learns_by_the_same_rule():
    """Voters named after the arms, fed the arms' rewards, end with the arms' weights, bit for bit."""
    h = ContextualHedge(eta=0.1, floor=0.02)
    c = Coordinator(SYM, list(ARMS), ConsensusConfig(eta=0.1, weight_floor=0.02))
    for i, r in enumerate([0.5, 0.5, -0.25, 1.0, 0.9] * 20):  # act earns r - COST, fade -r - COST, abstain 0
        h.update("ctx", r, COST)
        rewards = {"act": max(-1.0, r - COST), "fade": max(-1.0, -r - COST), "abstain": 0.0}
        c.on_feedback([Feedback(arm, SYM, SESSION_T0, SESSION_T0, i, 1.0, 1.0, PRICE, PRICE, 0.0, 0.0, x, None)
                       for arm, x in rewards.items()])
    assert list(c.weights.values()) == h.weights_of("ctx")
    assert min(h.weights_of("ctx")) == 0.02  # the floor was reached on the way


def test_one_registry_for_the_agents_and_the_config():
    assert list(AGENTS) == ["order_flow", "liquidity", "tape", "footprint"] == list(HmarlConfig().agents)
    assert {name: cls.agent_id for name, cls in AGENTS.items()} == {name: name for name in AGENTS}
    with pytest.raises(ConfigError, match=r"hmarl.agents\[1\]: unknown agent 'flow' "
                                          r"\(known: order_flow, liquidity, tape, footprint\)"):
        config_from_dict({"hmarl": {"agents": ["tape", "flow"]}})


def test_hedge_parameters_validated():
    with pytest.raises(ValueError, match="floor"):
        ContextualHedge(floor=0.4)
    with pytest.raises(ValueError, match="eta"):
        ContextualHedge(eta=0)
    with pytest.raises(ValueError, match="cost_ticks"):
        OrderFlowSpecialist(SYM, cost_ticks=-1)


# -- how long a signal counts --------------------------------------------------------------------

def test_a_footprint_vote_counts_until_the_next_bar_closes():
    agent = FootprintPatternAgent(SYM, learning=False)
    agent.on_analytics([vec(1)])
    sig = one(agent, [closed(2, make_bar(delta=40))])  # delta/volume 0.4 -> buy 0.9
    coordinator = Coordinator(SYM, ["footprint"], ConsensusConfig(signal_ttl_ns=5 * S))
    coordinator.on_signals([sig])
    # A one-minute bar's vote: 30 s and 60 s (the edge) after it closed it still counts, 61 s after not.
    at = {dt: coordinator.decide(sig.ts_event + dt * S, 10 + dt, PRICE) for dt in (30, 60, 61)}
    assert (at[30].action, at[30].score) == ("BUY", pytest.approx(0.9))
    assert at[60].action == "BUY" and at[61].action == "HOLD" and at[61].signals == ()
    # A flow-driven agent keeps the coordinator's TTL.
    flow_sig = one(OrderFlowSpecialist(SYM, learning=False), [vec(1), flow(2, **TFI_BUY, **CONTEXT_A)])
    assert (sig.valid_ns, flow_sig.valid_ns) == (60 * S, 0)


# -- simulator and real data ----------------------------------------------------------------------

def _analytics(events, symbol: str, tick: float) -> list:
    a = SymbolAnalytics(symbol, tick, state_every_ns=S)
    out: list = []
    a.on_events(events, out)
    return out


@pytest.fixture(scope="module")
def sim_analytics():
    # 30 events/s of event time (the simulator is calibrated at ~40/s): 60k events span ~33 minutes,
    # enough for 1-minute footprint bars and a warm 300/900 s tape-speed baseline; at 200/s the same
    # event budget would cover 5 minutes (5 bars, the 300 s baseline never warm).
    t = time.perf_counter()
    events = simulated_events(seed=11, rate=30.0, max_events=60_000, symbol=SYM)
    out = _analytics(events, SYM, TICK)
    print(f"\nsimulator: {len(events)} events -> {len(out)} analytics in {time.perf_counter() - t:.2f} s")
    return SYM, out


@pytest.fixture()
def es_analytics(es_file):
    t = time.perf_counter()
    events, _ = read_cme_es(es_file, symbol="ESH22")  # the whole file: ~2.6k events, 61 s of trading
    out = _analytics(events, "ESH22", 0.25)
    print(f"\nCME ES: {len(events)} events -> {len(out)} analytics in {time.perf_counter() - t:.2f} s")
    return "ESH22", out


def _run_all(symbol: str, analytics: list, label: str) -> dict[str, tuple[dict, list[Signal]]]:
    results = {}
    for agent_id, cls in AGENTS.items():
        agent = cls(symbol, learning=False)  # the rules' share: unlearned, the learning layer abstains
        sigs = []
        for i in range(0, len(analytics), 500):  # micro-batches, as the actor receives them
            sigs += agent.on_analytics(analytics[i:i + 500])
        st = agent.stats()
        results[agent_id] = (st, sigs)
        print(f"{label:9s} {agent_id:10s} signals={st['signals']:5d} non-neutral={st['non_neutral']:5d} "
              f"share={st['share_non_neutral']:.3f} rules={st['by_rule']}")
    return results


def _check_signals(st: dict, sigs: list[Signal]) -> None:
    assert st["bad"] == 0 and st["signals"] == len(sigs)
    seqs = [s.seq for s in sigs]
    assert seqs == sorted(set(seqs))  # one signal per seq, in order
    assert all(s.price > 0 and -1 <= s.direction <= 1 and 0 <= s.confidence <= 1 for s in sigs)
    assert st["share_non_neutral"] == pytest.approx(sum(1 for s in sigs if s.direction != 0) / len(sigs))


def test_agents_on_simulator_data(sim_analytics):
    symbol, out = sim_analytics
    closed_bars = sum(1 for m in out if type(m) is FootprintState and m.closed)
    for agent_id, (st, sigs) in _run_all(symbol, out, "simulator").items():
        _check_signals(st, sigs)
        assert st["signals"] >= 30, agent_id
        assert 0.05 < st["share_non_neutral"] < 0.95, (agent_id, st["share_non_neutral"])
        if agent_id == "footprint":
            assert st["signals"] == closed_bars


def test_agents_on_cme_es(es_analytics):
    symbol, out = es_analytics
    closed_bars = sum(1 for m in out if type(m) is FootprintState and m.closed)
    for agent_id, (st, sigs) in _run_all(symbol, out, "CME ES").items():
        _check_signals(st, sigs)
        if agent_id == "footprint":
            # The file spans 61 s: one closed minute bar, so no share can be measured.
            assert st["signals"] == closed_bars == 1
            continue
        assert st["signals"] >= 50, agent_id
        assert 0.05 < st["share_non_neutral"] < 0.95, (agent_id, st["share_non_neutral"])
