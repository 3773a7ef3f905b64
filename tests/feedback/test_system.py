"""The FeedbackSystem (pipelines/feedback/system.py): realized outcomes on event time, rewards
and R$ P&L, per-voter performance, voter credits, and pending outcomes across a restart.

No Ray, no Valkey. Expected values are worked out by hand in the comments, or recomputed
here with numpy from the price path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.feedback.system import FeedbackSystem
from pipelines.model.messages import Decision
from tests.helpers import T0, vote

WDO, WIN = "WDOZ26", "WINZ26"
S = 1_000_000_000  # ns per second


def test_wdo_long_signal():
    f = FeedbackSystem(WDO)  # scale = 4 ticks x 0.5 = 2.0 points
    f.track_signal(vote("a", 1, 1.0, price=5400.0))
    f.track_signal(vote("b", 1, 0.5, price=5400.0))
    assert f.on_price(T0 + 10 * S, 5401.0) == []
    assert f.on_price(T0 + 59 * S, 5402.5) == []
    out = f.on_price(T0 + 61 * S, 5410.0)  # exit: the last trade at or before T0 + 60 s, 5402.5
    a, b = sorted(out, key=lambda x: x.voter)
    # points 2.5; pnl 2.5 x R$10 = R$25; reward min(1, 1 x 1.0 x 2.5 / 2.0) = 1.0
    assert (a.points, a.pnl, a.reward, a.hit, a.exit_price, a.ts_event) == (2.5, 25.0, 1.0, True, 5402.5, T0 + 60 * S)
    assert (b.reward, b.pnl) == (0.625, 25.0)  # 0.5 x 2.5 / 2.0 = 0.625; pnl is for one contract either way


def test_win_short_signal():
    f = FeedbackSystem(WIN)  # scale = 4 x 5 = 20 points
    f.track_signal(vote("a", -1, 1.0, price=130000.0, symbol=WIN))
    f.track_signal(vote("b", -1, 0.1, price=130000.0, symbol=WIN))
    a, b = sorted(f.on_price(T0 + 60 * S, 129900.0), key=lambda x: x.voter)
    # points -100; short pnl = -1 x -100 x R$0.20 = +R$20; reward clip(-1 x 1 x -100 / 20 = 5) = 1.0
    assert (a.points, a.pnl, a.reward, a.hit) == (-100.0, pytest.approx(20.0), 1.0, True)
    assert b.reward == pytest.approx(0.5)  # -1 x 0.1 x -100 / 20


def test_decisions_size_three():
    def decision(symbol, action, conf, price, seq):
        return Decision(f"{symbol}-{seq}", symbol, T0, seq, action, 3 if action != "HOLD" else 0, 0.0, conf, price,
                        60 * S, (), {}, {})

    f = FeedbackSystem(WDO)
    f.track_decision(decision(WDO, "BUY", 0.4, 5400.0, 1))
    f.track_decision(decision(WDO, "HOLD", 0.1, 5400.0, 2))
    buy, hold = f.on_price(T0 + 60 * S, 5399.0)
    # BUY 3: points -1, pnl 1 x -1 x R$10 x 3 = -R$30, reward 0.4 x -1 / 2.0 = -0.2
    assert (buy.voter, buy.decision_id, buy.pnl, buy.reward, buy.hit) == ("coordinator", f"{WDO}-1", -30.0,
                                                                         pytest.approx(-0.2), False)
    assert (hold.direction, hold.pnl, hold.reward, hold.hit) == (0.0, 0.0, 0.0, None)
    g = FeedbackSystem(WIN)
    g.track_decision(decision(WIN, "SELL", 0.5, 130000.0, 1))
    (sell,) = g.on_price(T0 + 60 * S, 130050.0)
    # SELL 3: points +50, pnl -1 x 50 x R$0.20 x 3 = -R$30; reward clip(-1 x 0.5 x 50 / 20 = -1.25) = -1
    assert (sell.pnl, sell.reward, sell.hit) == (pytest.approx(-30.0), -1.0, False)


def test_hit_none_cases():
    f = FeedbackSystem(WDO)
    f.track_signal(vote("flat_view", 0, 0.7))  # no direction: tracked, reward 0, hit None
    f.track_signal(vote("no_move", 1, 1.0))
    out = {x.voter: x for x in f.on_price(T0 + 60 * S, 5400.0)}  # exit == entry
    assert {v: (x.reward, x.hit, x.pnl) for v, x in out.items()} == {"flat_view": (0.0, None, 0.0),
                                                                    "no_move": (0.0, None, 0.0)}


def test_missing_price_counted_no_feedback():
    f = FeedbackSystem(WDO)
    f.track_signal(vote("a", 1, 1.0))  # due T0 + 60 s, and no trade at or before it ever arrives
    assert f.on_price(T0 + 61 * S, 5401.0) == []
    assert (f.stats()["missing_price"], f.stats()["evaluated"], f.stats()["pending"]) == (1, 0, 0)
    assert f.performance("a")["count"] == 0


def test_late_registration_covered_or_missing():
    f = FeedbackSystem(WDO, min_history_ns=10 * S)
    f.on_prices((T0 + i * S, 5400.0 + 0.5 * i) for i in range(101))  # now T0 + 100 s
    # History reaches back 10 s: to the last price at or before 90 s.
    f.track_signal(vote("a", 1, 1.0, ts=T0 + 25 * S, price=5412.5, horizon=60 * S))  # due 85 s: not covered
    f.track_signal(vote("b", 1, 1.0, ts=T0 + 35 * S, price=5417.5, horizon=60 * S))  # due 95 s: covered
    assert f.stats()["late"] == 2 and f.stats()["missing_price"] == 1
    (b,) = f.on_price(T0 + 101 * S, 5500.0)  # late outcomes come out with the next price
    assert (b.voter, b.exit_price, b.points) == ("b", 5447.5, 30.0)  # price at 95 s = 5400 + 47.5


def test_bad_input_counted():
    with pytest.raises(ValueError, match="reward_scale_points"):
        FeedbackSystem("XYZ1")
    f = FeedbackSystem("XYZ1", reward_scale_points=1.0)
    assert f.point_value == 1.0  # unknown contract: P&L in points
    f.track_signal(vote("a", 1, 1.0, symbol="XYZ1", price=float("nan")))
    f.track_signal(vote("a", 1, 1.0, symbol=WDO))
    f.track_signal(vote("a", 1, 1.0, symbol="XYZ1"))
    f.track_signal(vote("a", 1, 1.0, symbol="XYZ1"))  # same voter/seq/ts while pending
    f.on_price(T0 + 2 * S, 5400.0)
    f.on_price(T0 + 1 * S, 5400.0)
    f.on_price(T0 + 3 * S, -1.0)
    s = f.stats()
    assert (s["invalid_price"], s["other_symbol"], s["duplicate"], s["out_of_order_price"], s["tracked"],
            s["pending"]) == (2, 1, 1, 1, 1, 1)


def test_performance_matches_numpy():
    f = FeedbackSystem(WDO)
    entries = [5400.0, 5401.0, 5399.0, 5400.0, 5402.0]
    exits = [5401.0, 5400.5, 5396.0, 5400.0, 5403.5]
    dirs = [1, 1, -1, 1, -0.5]
    for i, (p0, d) in enumerate(zip(entries, dirs)):
        f.track_signal(vote("a", d, 0.8, ts=T0 + i * 100 * S, seq=i, price=p0))
    for i, p1 in enumerate(exits):
        f.on_price(T0 + i * 100 * S + 60 * S, p1)
    pts = np.array(exits) - np.array(entries)
    r = np.clip(np.array(dirs) * 0.8 * pts / 2.0, -1, 1)
    hits = np.sign(dirs) == np.sign(pts)
    judged = pts != 0
    p = f.performance("a")
    assert (p["count"], p["hits"], p["misses"]) == (5, int(hits[judged].sum()), int((~hits[judged]).sum()))
    assert p["hit_rate"] == pytest.approx(hits[judged].mean())
    assert p["mean_reward"] == pytest.approx(r.mean()) and p["reward_std"] == pytest.approx(r.std(ddof=1))
    assert p["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1))
    assert p["pnl_sum"] == pytest.approx((np.sign(dirs) * pts * 10.0).sum())
    assert f.performance("nobody")["sharpe"] is None and list(f.all_performance()) == ["a"]


def test_voter_credits_score_each_voter_on_the_decision_round():
    """A decision's outcome credits each voter that took part with its own direction x confidence."""
    from pipelines.model.messages import Decision

    fs = FeedbackSystem("WDOZ26")  # scale 4 ticks = 2.0 points, R$10/point
    votes = ({"agent": "ml", "direction": 0.5, "confidence": 0.8, "weight": 0.4},
             {"agent": "tape", "direction": -1.0, "confidence": 0.25, "weight": 0.6})
    d = Decision("WDOZ26-7", "WDOZ26", 1_000, 7, "BUY", 1, 0.05, 0.05, 5400.0, 10_000, votes, {}, {})
    fs.track_decision(d)
    fbs = fs.on_prices([(5_000, 5401.0), (11_000, 5403.0)])  # exit = last price at or before 11_000: 5403.0
    (coord,) = [f for f in fbs if f.voter == "coordinator"]
    credits = {c.voter: c for c in fs.voter_credits(coord)}
    assert set(credits) == {"ml", "tape"}
    # ml: 0.5 x 0.8 x 3.0 / 2.0 = 0.6 ; tape: -1 x 0.25 x 3.0 / 2.0 = -0.375
    assert credits["ml"].reward == pytest.approx(0.6) and credits["tape"].reward == pytest.approx(-0.375)
    assert credits["ml"].pnl == pytest.approx(30.0) and credits["tape"].pnl == pytest.approx(-30.0)
    assert credits["ml"].hit is True and credits["tape"].hit is False
    assert all(c.seq == 7 and c.decision_id == "WDOZ26-7" for c in credits.values())
    assert fs.voter_credits(coord) == []  # credited once


def test_pending_outcomes_survive_a_restart_through_the_journal():
    """What a crashed FeedbackSystem left pending, mirrored from its journal (as the actor
    mirrors it in Valkey), resolves in a fresh one exactly as if nothing had happened."""
    votes = ({"agent": "tape", "direction": -1.0, "confidence": 0.5, "weight": 0.6},)
    d = Decision("WDOZ26-9", WDO, T0 + 2 * S, 9, "BUY", 2, 0.3, 0.3, 5400.5, 60 * S, votes, {}, {})
    before = FeedbackSystem(WDO, journal=True)
    mirror: dict[str, dict] = {}

    def sync():
        added, resolved = before.take_journal()
        mirror.update(added)
        for field in resolved:
            del mirror[field]

    before.track_signal(vote("a", 1, 1.0, price=5400.0, seq=1))  # due T0 + 60 s
    before.track_signal(vote("b", -1, 0.5, ts=T0 + 1 * S, price=5400.0, seq=2, horizon=5 * S))  # due T0 + 6 s
    before.track_decision(d)  # due T0 + 62 s
    sync()
    assert sorted(mirror) == [f"a:1:{T0}", f"b:2:{T0 + S}", f"coordinator:9:{T0 + 2 * S}"]
    assert mirror[f"coordinator:9:{T0 + 2 * S}"]["votes"] == list(votes)
    assert before.on_price(T0 + 3 * S, 5399.0) == []
    (b,) = before.on_price(T0 + 7 * S, 5398.5)  # b resolves: exit 5399.0, points -1.0, a short hit
    sync()
    assert (b.voter, b.exit_price, b.hit) == ("b", 5399.0, True) and sorted(mirror) == [f"a:1:{T0}", f"coordinator:9:{T0 + 2 * S}"]
    before.track_signal(vote("c", 1, 1.0, ts=T0 + 8 * S, price=5399.0, seq=3, horizon=1 * S))
    assert before.on_price(T0 + 10 * S, 5398.0)[0].voter == "c"  # tracked and resolved between two syncs
    sync()
    assert sorted(mirror) == [f"a:1:{T0}", f"coordinator:9:{T0 + 2 * S}"]  # c never reached the mirror

    # The process dies here. A fresh system gets the mirror (through JSON, as Valkey holds it).
    after = FeedbackSystem(WDO, journal=True)
    restored = json.loads(json.dumps(mirror))
    restored["junk:1:2"] = {"voter": "junk"}
    assert after.restore_pending(restored) == 2
    assert after.stats()["bad_pending"] == 1 and after.stats()["pending"] == 2
    assert after.oldest_pending_ns() == T0
    assert after.take_journal() == ({}, [])  # the mirror already holds them
    out = after.on_prices([(T0 + 30 * S, 5401.0), (T0 + 61 * S, 5402.0), (T0 + 63 * S, 5404.0)])
    a, coord = sorted(out, key=lambda x: x.voter)
    # a: exit 5401.0 (last at or before T0 + 60 s), points 1.0, reward 1 x 1 x 1.0 / 2.0 = 0.5, R$10
    assert (a.voter, a.exit_price, a.points, a.reward, a.pnl) == ("a", 5401.0, 1.0, 0.5, 10.0)
    # BUY 2 at 5400.5, exit 5402.0 (T0 + 61 s <= due T0 + 62 s): points 1.5, pnl 1.5 x R$10 x 2 = R$30,
    # reward 0.3 x 1.5 / 2.0 = 0.225
    assert (coord.voter, coord.points, coord.pnl, coord.reward) == ("coordinator", 1.5, 30.0, pytest.approx(0.225))
    (credit,) = after.voter_credits(coord)  # the votes came back too: tape -1 x 0.5 x 1.5 / 2.0
    assert (credit.voter, credit.reward) == ("tape", pytest.approx(-0.375))
    assert after.take_journal() == ({}, [f"a:1:{T0}", f"coordinator:9:{T0 + 2 * S}"])
    with pytest.raises(RuntimeError, match="journal=True"):
        FeedbackSystem(WDO).take_journal()


def test_pnl_is_net_of_the_round_trip_cost_and_the_reward_is_not():
    fee = 0.97 * 0.25 * (1 - 0.16) * 5.40  # B3's WDO fee per contract in R$ (1.09998)
    f = FeedbackSystem(WDO, round_trip_cost=2 * fee)
    f.track_decision(Decision(f"{WDO}-1", WDO, T0, 1, "BUY", 3, 0.4, 0.4, 5400.0, 60 * S,
                              ({"agent": "a", "direction": 1, "confidence": 0.5},
                               {"agent": "b", "direction": 0, "confidence": 0.0}), {}, {}))
    f.track_decision(Decision(f"{WDO}-2", WDO, T0, 2, "HOLD", 0, 0.0, 0.1, 5400.0, 60 * S, (), {}, {}))
    buy, hold = f.on_price(T0 + 60 * S, 5401.0)
    # BUY 3, +1 point: R$10 x 3 = R$30 gross, minus 3 contracts x 2 x R$1.09998 = R$6.59988 -> R$23.40012
    assert buy.pnl == pytest.approx(30.0 - 6 * fee) and buy.reward == pytest.approx(0.4 * 1.0 / 2.0)
    assert hold.pnl == 0.0  # nothing traded, nothing paid
    a, b = f.voter_credits(buy)
    # voter a: one contract long: R$10 - 2 x R$1.09998; voter b had no direction: no trade, no cost
    assert (a.pnl, b.pnl) == (pytest.approx(10.0 - 2 * fee), 0.0)
    with pytest.raises(ValueError, match="round_trip_cost"):
        FeedbackSystem(WDO, round_trip_cost=float("nan"))


def test_decision_results_from_fills_are_summed_once_each():
    from pipelines.feedback.system import DecisionResults
    from pipelines.model.orders import DecisionOutcome

    def outcome(did, ts_open, gross, fees):
        return DecisionOutcome("acct", WDO, did, ts_open + S, ts_open, "BUY", 1, 5400.0, 5400.0 + gross / 10, gross,
                               fees, gross - fees, "x")

    r = DecisionResults()
    won, lost = outcome("d1", T0, 20.0, 2.2), outcome("d2", T0 + S, -10.0, 2.2)
    assert r.add([won, lost, won, "junk", won._replace(net_pnl=float("nan"))]) == 2
    s = r.summary()
    # net: (20 - 2.2) + (-10 - 2.2) = 5.6 over 2 decisions, one win, one loss
    assert (s["count"], s["wins"], s["losses"], s["duplicates"], s["bad"]) == (2, 1, 1, 1, 2)
    assert (s["net_pnl"], s["gross_pnl"], s["fees"], s["mean_net_pnl"]) == \
        (pytest.approx(5.6), pytest.approx(10.0), pytest.approx(4.4), pytest.approx(2.8))
