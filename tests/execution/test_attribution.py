"""Decision outcomes from fills (pipelines/execution/attribution.py): FIFO lots per symbol, each
decision's outcome once none of its contracts is open, net of its share of the fees.

Hand-computed cases with the arithmetic in the comments; a seeded random run checked against
PositionBook and an independent cash-flow recomputation. WDO: R$10 per point; WIN: R$0.20.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipelines.execution.attribution import DecisionLedger, Lot
from pipelines.execution.positions import PositionBook
from pipelines.model.orders import BUY, SELL, TAKER, DecisionOutcome, Fill

ACCT = "paper"
WDO, WIN = "WDOZ26", "WINZ26"
T = 1_795_000_000_000_000_000
S = 1_000_000_000

_n = iter(range(1, 10**9))


def fill(did: str, side: str, qty: int, price: float, fees: float, ts: int, symbol: str = WDO,
         account: str = ACCT) -> Fill:
    k = next(_n)
    return Fill(f"{did}:entry#{k}", f"{did}:entry", account, symbol, ts, side, qty, price, TAKER, fees, did)


def approx(o: DecisionOutcome, **want) -> None:
    """Every field of ``o`` named in ``want``, money to a cent's hundredth."""
    for k, v in want.items():
        got = getattr(o, k)
        assert got == (pytest.approx(v, abs=1e-9) if isinstance(v, float) else v), k


def test_a_decision_closed_by_a_larger_fill_and_the_rest_closed_by_a_third():
    led = DecisionLedger(ACCT)
    assert led.on_fill(fill("d1", BUY, 2, 5000.0, 2.20, T)) == []  # 1.10 per contract
    [o1] = led.on_fill(fill("d2", SELL, 3, 5002.0, 3.30, T + S))
    # d1: 2 x (5002.0 - 5000.0) x R$10 = R$40.00 gross;
    # fees: its buy 2.20 + 2/3 of d2's 3.30 = 2.20 + 2.20 = 4.40; net 40.00 - 4.40 = 35.60
    approx(o1, account=ACCT, symbol=WDO, decision_id="d1", ts_event=T + S, ts_open=T, side=BUY, quantity=2,
           entry_price=5000.0, exit_price=5002.0, gross_pnl=40.0, fees=4.40, net_pnl=35.60, closed_by="d2")
    # d2 is short the 3rd contract at 5002.0
    assert led.open_lots(WDO) == [Lot("d2", SELL, 1, 5002.0, T + S)]
    [o2] = led.on_fill(fill("d3", BUY, 1, 5001.0, 1.10, T + 2 * S))
    # d2: short 1 from 5002.0 to 5001.0: -1 x (5001.0 - 5002.0) x 10 = +10.00;
    # fees 1/3 of 3.30 = 1.10 + d3's 1.10 = 2.20; net 7.80
    approx(o2, decision_id="d2", ts_event=T + 2 * S, ts_open=T + S, side=SELL, quantity=1, entry_price=5002.0,
           exit_price=5001.0, gross_pnl=10.0, fees=2.20, net_pnl=7.80, closed_by="d3")
    assert led.open_lots(WDO) == []
    # d3 only closed: it opened nothing, so it has no outcome of its own
    assert led.stats() == {"counts": {"fills": 3, "outcomes": 2}, "rejected": {}, "open_lots": {},
                           "open_decisions": 0}


def test_partial_fills_close_oldest_first_and_the_outcome_waits_for_the_last_contract():
    led = DecisionLedger(ACCT)
    led.on_fill(fill("d1", BUY, 1, 5000.0, 1.10, T))
    led.on_fill(fill("d1", BUY, 2, 5001.0, 2.20, T + 1))  # the same decision's second fill
    assert led.on_fill(fill("d2", SELL, 1, 5003.0, 1.10, T + S)) == []  # d1 still has 2 open
    # the first lot (1 @ 5000.0) went first
    assert led.open_lots(WDO) == [Lot("d1", BUY, 2, 5001.0, T + 1)]
    [o] = led.on_fill(fill("d3", SELL, 2, 5004.0, 2.20, T + 2 * S))
    # entry (5000.0 + 2 x 5001.0) / 3 = 15002 / 3; exit (5003.0 + 2 x 5004.0) / 3 = 15011 / 3
    # gross: 1 x (5003 - 5000) + 2 x (5004 - 5001) = 9 points x R$10 = 90.00
    # fees: 1.10 + 2.20 (opening) + 1.10 (d2's fill, all its contract was d1's) + 2.20 (d3's) = 6.60
    approx(o, decision_id="d1", ts_event=T + 2 * S, ts_open=T, side=BUY, quantity=3, entry_price=15002 / 3,
           exit_price=15011 / 3, gross_pnl=90.0, fees=6.60, net_pnl=83.40, closed_by="d2,d3")


def test_a_flip_in_one_fill_closes_everything_then_opens_the_rest_for_the_flipping_decision():
    led = DecisionLedger(ACCT)
    led.on_fill(fill("d1", BUY, 1, 5000.0, 1.10, T))
    led.on_fill(fill("d0", BUY, 1, 5000.5, 1.10, T + 1))
    o1, o0 = led.on_fill(fill("d2", SELL, 4, 4999.0, 4.40, T + S))  # closes 2, opens 2 short
    # d1: (4999.0 - 5000.0) x 10 = -10.00; fees 1.10 + 1/4 of 4.40 = 2.20; net -12.20
    approx(o1, decision_id="d1", side=BUY, quantity=1, gross_pnl=-10.0, fees=2.20, net_pnl=-12.20, closed_by="d2")
    # d0: (4999.0 - 5000.5) x 10 = -15.00; fees 1.10 + 1.10 = 2.20; net -17.20
    approx(o0, decision_id="d0", side=BUY, quantity=1, gross_pnl=-15.0, fees=2.20, net_pnl=-17.20, closed_by="d2")
    assert led.open_lots(WDO) == [Lot("d2", SELL, 2, 4999.0, T + S)]
    # d2's own take-profit (its orders carry its decision id) buys the 2 back at 4998.0
    [o2] = led.on_fill(fill("d2", BUY, 2, 4998.0, 2.20, T + 2 * S))
    # d2: -2 x (4998.0 - 4999.0) x 10 = +20.00; fees 2/4 of 4.40 = 2.20 + 2.20 = 4.40; net 15.60
    approx(o2, decision_id="d2", ts_event=T + 2 * S, ts_open=T + S, side=SELL, quantity=2, entry_price=4999.0,
           exit_price=4998.0, gross_pnl=20.0, fees=4.40, net_pnl=15.60, closed_by="d2")


def test_a_decision_that_opens_again_makes_a_further_outcome_and_symbols_are_apart():
    led = DecisionLedger(ACCT)
    led.on_fill(fill("d1", BUY, 1, 5000.0, 1.0, T))
    led.on_fill(fill("w1", SELL, 1, 120000.0, 0.25, T, symbol=WIN))  # another symbol: its own lots
    [a] = led.on_fill(fill("x", SELL, 1, 5001.0, 1.0, T + S))
    led.on_fill(fill("d1", BUY, 1, 5002.0, 1.0, T + 2 * S))  # the same id opens again
    [b] = led.on_fill(fill("y", SELL, 1, 5000.0, 1.0, T + 3 * S))
    # first part: (5001 - 5000) x 10 = 10.00, fees 2.00; second: (5000 - 5002) x 10 = -20.00, fees 2.00
    approx(a, decision_id="d1", ts_open=T, ts_event=T + S, gross_pnl=10.0, net_pnl=8.0, closed_by="x")
    approx(b, decision_id="d1", ts_open=T + 2 * S, ts_event=T + 3 * S, gross_pnl=-20.0, net_pnl=-22.0, closed_by="y")
    assert led.open_lots(WIN) == [Lot("w1", SELL, 1, 120000.0, T)]


def test_win_at_twenty_centavos_a_point():
    led = DecisionLedger(ACCT)
    led.on_fill(fill("d1", SELL, 3, 120000.0, 0.75, T, symbol=WIN))
    assert led.on_fill(fill("d2", BUY, 1, 119950.0, 0.25, T + S, symbol=WIN)) == []
    [o] = led.on_fill(fill("d3", BUY, 2, 120010.0, 0.50, T + 2 * S, symbol=WIN))
    # short 3 from 120000: 1 x (120000 - 119950) x 0.20 = 10.00; 2 x (120000 - 120010) x 0.20 = -4.00
    # gross 6.00; fees 0.75 + 0.25 + 0.50 = 1.50; net 4.50; exit (119950 + 2 x 120010) / 3 = 119990
    approx(o, symbol=WIN, side=SELL, quantity=3, entry_price=120000.0, exit_price=119990.0, gross_pnl=6.0,
           fees=1.50, net_pnl=4.50, closed_by="d2,d3")


def test_closed_by_lists_each_decision_once_in_the_order_seen():
    led = DecisionLedger(ACCT)
    led.on_fill(fill("d1", BUY, 4, 5000.0, 0.0, T))
    for k, did in enumerate(("a", "b", "a")):
        assert led.on_fill(fill(did, SELL, 1, 5000.0, 0.0, T + k + 1)) == []
    [o] = led.on_fill(fill("c", SELL, 1, 5000.0, 0.0, T + 9))
    assert o.closed_by == "a,b,c"


SCRIPT = [("d1", BUY, 2, 5000.0), ("d2", BUY, 1, 5001.5), ("d3", SELL, 1, 5003.0), ("d4", SELL, 4, 5002.0),
          ("d5", BUY, 1, 5000.0), ("d2", BUY, 3, 4999.5), ("d6", SELL, 2, 5004.0)]


def scripted() -> list[Fill]:
    return [fill(did, side, q, px, 1.1 * q, T + k * S) for k, (did, side, q, px) in enumerate(SCRIPT)]


def test_a_restart_in_the_middle_gives_the_same_outcomes():
    fills = scripted()
    whole = DecisionLedger(ACCT)
    expected = [o for f in fills for o in whole.on_fill(f)]
    assert len(expected) >= 3
    for cut in range(1, len(fills)):
        first = DecisionLedger(ACCT)
        before = [o for f in fills[:cut] for o in first.on_fill(f)]
        saved = json.dumps(first.state(), allow_nan=False)
        second = DecisionLedger(ACCT)
        second.load_state(json.loads(saved))
        assert second.open_lots(WDO) == first.open_lots(WDO)
        after = [o for f in fills[cut:] for o in second.on_fill(f)]
        assert before + after == expected, cut
        assert second.stats() == whole.stats()


def test_a_state_of_another_account_or_unreadable_is_refused_and_changes_nothing():
    led = DecisionLedger(ACCT)
    led.on_fill(fill("d1", BUY, 1, 5000.0, 1.0, T))
    with pytest.raises(ValueError, match="account"):
        led.load_state(DecisionLedger("other").state())
    for bad in (None, {}, {"version": 1, "account": ACCT}, {**led.state(), "lots": {WDO: [1, [["d1", "x", 1.0, 0]]]}},
                {**led.state(), "tallies": [[WDO]]}, {**led.state(), "lots": []},
                {**led.state(), "tallies": []},  # a lot without its decision
                {**led.state(), "lots": {}},  # a decision with contracts open but no lot
                {**led.state(), "lots": {WDO: [-1, [["d1", 1, 5000.0, T]]]}}):  # a long decision in a short lot
        with pytest.raises(ValueError):
            led.load_state(bad)
    assert led.open_lots(WDO) == [Lot("d1", BUY, 1, 5000.0, T)]


def test_bad_fills_are_counted_and_ignored():
    led = DecisionLedger(ACCT)
    good = fill("d1", BUY, 1, 5000.0, 1.0, T)
    bad = [("not_a_fill", None), ("not_a_fill", good._asdict()), ("other_account", good._replace(account="x")),
           ("bad_quantity", good._replace(quantity=0)), ("bad_quantity", good._replace(quantity=-1)),
           ("bad_quantity", good._replace(quantity=1.0)), ("bad_quantity", good._replace(quantity=True)),
           ("bad_price", good._replace(price=math.nan)), ("bad_price", good._replace(price=0.0)),
           ("bad_price", good._replace(price=math.inf)), ("bad_price", good._replace(price="5000")),
           ("bad_side", good._replace(side="LONG")), ("bad_symbol", good._replace(symbol="")),
           ("bad_fees", good._replace(fees=math.nan)), ("bad_time", good._replace(ts_event=-1)),
           ("bad_time", good._replace(ts_event=1.5)),
           ("bad_decision_id", good._replace(decision_id="", client_order_id="")),
           ("bad_decision_id", good._replace(decision_id=None))]
    for _reason, f in bad:
        assert led.on_fill(f) == []
    want: dict[str, int] = {}
    for reason, _f in bad:
        want[reason] = want.get(reason, 0) + 1
    assert led.stats()["rejected"] == want
    assert led.open_lots(WDO) == [] and led.stats()["counts"] == {}
    # a fill without a decision id is its order's: the lots still add up to the position
    led.on_fill(good._replace(decision_id=""))
    assert led.open_lots(WDO) == [Lot("d1:entry", BUY, 1, 5000.0, T)]


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_outcomes_agree_with_the_position_book_on_a_random_run(seed):
    """Whenever the position is flat or has just flipped, the outcomes' gross P&L is the book's
    realized P&L, and both are the fills' cash flows plus the open quantity at the last fill's
    price (what the flipping fill opened is worth its own price)."""
    rng = np.random.default_rng(seed)
    led, book = DecisionLedger(ACCT), PositionBook(ACCT)
    outcomes: list[DecisionOutcome] = []
    cash = fees = 0.0
    pos = checked = 0
    for k in range(600):
        side = BUY if rng.random() < min(0.9, max(0.1, 0.5 - pos / 16)) else SELL  # drawn back toward flat
        qty = int(rng.integers(1, 6))
        price = 5000.0 + 0.5 * int(rng.integers(-40, 41))
        f = fill(f"d{int(rng.integers(0, 12))}", side, qty, price, 1.1 * qty, T + k * S)
        outcomes += led.on_fill(f)
        book.apply(f)
        sign = 1 if side == BUY else -1
        cash -= sign * qty * price * 10.0
        fees += f.fees
        was, pos = pos, pos + sign * qty
        lots = led.open_lots(WDO)
        assert sum(x.quantity for x in lots) == abs(pos)
        assert all(x.side == (BUY if pos > 0 else SELL) for x in lots)
        if pos == 0 or (was != 0 and (pos > 0) != (was > 0)):
            checked += 1
            expected = cash + pos * price * 10.0
            assert sum(o.gross_pnl for o in outcomes) == pytest.approx(expected, abs=1e-6)
            assert book.position(WDO).realized_pnl == pytest.approx(expected, abs=1e-6)
            # every fee is in an outcome, but the open lot's share of the flipping fill
            open_fee = abs(pos) / qty * f.fees if pos else 0.0
            assert sum(o.fees for o in outcomes) == pytest.approx(fees - open_fee, abs=1e-6)
    assert checked >= 20
    assert all(o.net_pnl == pytest.approx(o.gross_pnl - o.fees) for o in outcomes)
    assert all(o.ts_open <= o.ts_event and o.quantity > 0 for o in outcomes)
