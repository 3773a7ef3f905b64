"""The account limits are evaluated on every market event, but a call whose day P&L equals the
last one evaluated does no work (RiskEngine.on_account): these cases pin that the limits still
trip on the first call that breaches them, and again on a new day with the same P&L.

max_daily_loss 1000, reducing_at 0.8 (the default): REDUCING at P&L <= -800, HALTED at <= -1000;
max_drawdown 300: HALTED when the day's peak minus the P&L reaches 300."""

from __future__ import annotations

from pipelines.risk.engine import ACTIVE, HALTED, REDUCING
from tests.risk.test_engine import DAY, MIN, S, T, WDO, Account, engine


def states(eng, acct, pnls: list[float], t0: int) -> list[tuple[int, str, str]]:
    """(call index, who, state) of every state event, one on_account call per P&L, a second apart."""
    out = []
    for k, pnl in enumerate(pnls):
        acct.pnl = pnl
        out += [(k, ev.who, ev.state) for ev in eng.on_account(t0 + k * S)]
    return out


def test_daily_loss_trips_on_the_first_call_that_reaches_each_level():
    eng, acct = engine(Account(WDOZ26=1), max_daily_loss=1000.0, max_drawdown=0.0)  # a position: no flatten completes
    # -799.99 five times: above -800, nothing; -800.0 is the first call at the reducing level (call 5);
    # repeated, nothing more; -1000.0 at call 8 halts
    pnls = [-799.99] * 5 + [-800.0] * 3 + [-1000.0] * 3
    assert states(eng, acct, pnls, T) == [(5, "daily_loss", REDUCING), (8, "daily_loss", HALTED)]
    assert eng.flatten_requested


def test_the_same_loss_trips_again_on_the_next_day():
    eng, acct = engine(Account(WDOZ26=1), max_daily_loss=1000.0, max_drawdown=0.0)
    assert states(eng, acct, [-1000.0], T) == [(0, "daily_loss", HALTED)]
    eng.acknowledge_flatten()
    # The position was not closed: the new day starts with the same -1000.0 of unrealized P&L. The
    # new day resets the limits (ACTIVE), and the first evaluation of the day halts again.
    acct.pnl = -1000.0
    evs = eng.on_account(T + DAY)
    assert [(ev.who, ev.state) for ev in evs] == [("session_day", ACTIVE), ("daily_loss", HALTED)]


def test_drawdown_trips_when_the_pnl_first_reaches_peak_minus_the_limit():
    eng, acct = engine(Account(WDOZ26=1), max_daily_loss=0.0, max_drawdown=300.0)
    # peak 250.0 at call 1; 250 - 300 = -50.0: -49.5 (twice) is not there yet, -50.0 at call 4 is
    pnls = [100.0, 250.0, -49.5, -49.5, -50.0, -50.0]
    assert states(eng, acct, pnls, T) == [(4, "drawdown", HALTED)]
    assert eng.stats()["peak_pnl"] == 250.0


def test_a_flatten_completes_at_the_next_call_even_with_the_pnl_unchanged():
    acct = Account(WDOZ26=1)
    eng, _ = engine(acct, max_daily_loss=1000.0)
    assert states(eng, acct, [-10.0, -10.0], T) == []
    eng.flatten("ana@box", T + 2 * S)
    acct.q = {WDO: 0}  # closed, at the same P&L
    evs = eng.on_account(T + 3 * S)
    assert [(ev.who, ev.state, ev.reason) for ev in evs] == [
        ("flatten", HALTED, "flatten complete: every position is flat")]


def test_a_cooldown_ends_on_the_first_call_after_it_with_the_pnl_unchanged():
    eng, acct = engine(max_consecutive_losses=1, cooldown_min=1.0, max_daily_loss=1000.0)
    acct.pnl = -20.0
    eng.on_account(T)
    [ev] = eng.on_trade_closed(-20.0, T)
    assert ev.state == REDUCING
    assert eng.on_account(T + MIN - 1) == []
    [ev] = eng.on_account(T + MIN)
    assert (ev.who, ev.state, ev.reason) == ("cooldown", ACTIVE, "cooldown over")
