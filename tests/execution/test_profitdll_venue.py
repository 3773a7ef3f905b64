"""The live venue's translation of the broker's cumulative order snapshots into order events and
fills (pipelines.execution.profitdll_venue), against hand-computed cases. The host and the DLL are
not needed for this part (``apply_update`` reads dicts); the whole path through the host and the
native fake DLL is tested in tests/adapters/test_bridge_orders.py and the system tests."""

from __future__ import annotations

import math

from pipelines.execution.costs import CostModel
from pipelines.execution.profitdll_venue import ProfitDLLVenue
from pipelines.model.orders import (ACCEPTED, BUY, CANCELLED, FILLED, LIMIT, MAKER, MARKET, PARTIALLY_FILLED, SELL,
                                    SUBMITTED, TAKER, Order)

T0 = 1_796_000_000_000_000_000
S = 1_000_000_000
SYM = "WDOZ26"


def venue() -> ProfitDLLVenue:
    v = ProfitDLLVenue(None, "acct", tick_sizes={SYM: 0.5})
    return v


def track(v: ProfitDLLVenue, order: Order) -> None:
    """An order as submit() leaves it when the host accepted it (no link needed for the rest)."""
    from pipelines.execution.profitdll_venue import _Tracked

    t = _Tracked(order)
    t.confirmed = True
    v._orders[order.client_order_id] = t


def upd(coid, status, filled, avg, ts, leaves=0, text=""):
    return {"kind": "order", "coid": coid, "status": status, "filled": filled, "avg_price": avg, "leaves": leaves,
            "ts_event": ts, "text": text, "local_id": 7}


def test_cumulative_snapshots_become_fills_at_the_differences():
    v = venue()
    o = Order("acct/d1:entry", "acct", SYM, T0, BUY, 5, LIMIT, 5000.0, decision_id="d1")
    track(v, o)
    ev, fills = [], []
    v.apply_update(upd(o.client_order_id, ACCEPTED, 0, None, T0 + 1 * S, leaves=5), ev, fills)
    v.apply_update(upd(o.client_order_id, PARTIALLY_FILLED, 2, 5000.0, T0 + 2 * S, leaves=3), ev, fills)
    v.apply_update(upd(o.client_order_id, PARTIALLY_FILLED, 2, 5000.0, T0 + 3 * S, leaves=3), ev, fills)  # again
    v.apply_update(upd(o.client_order_id, PARTIALLY_FILLED, 1, 5000.0, T0 + 3 * S, leaves=4), ev, fills)  # behind
    # two executions between snapshots: 2 @ 5000.0 then 3 more at an average making 5 @ 4999.7 overall:
    # the 3 cost 4999.7 * 5 - 5000.0 * 2 = 14998.5, i.e. 4999.5 each (a tick: snapped)
    v.apply_update(upd(o.client_order_id, FILLED, 5, 4999.7, T0 + 4 * S), ev, fills)
    fee = CostModel().fees(SYM, 1)
    assert [(f.fill_id, f.quantity, f.price, f.liquidity, f.ts_event, f.decision_id) for f in fills] == [
        ("acct/d1:entry#2", 2, 5000.0, MAKER, T0 + 2 * S, "d1"),
        ("acct/d1:entry#5", 3, 4999.5, MAKER, T0 + 4 * S, "d1")]
    assert [f.fees for f in fills] == [2 * fee, 3 * fee] and fee > 0
    assert [(e.status, e.filled_qty, e.leaves_qty) for e in ev] == [
        (ACCEPTED, 0, 5), (PARTIALLY_FILLED, 2, 3), (FILLED, 5, 0)]
    assert ev[-1].avg_fill_price == 4999.7
    assert v.count["updates_behind"] == 1 and not v.working()


def test_market_fills_are_taker_a_late_received_does_not_move_back_and_cancel_keeps_the_text():
    v = venue()
    m = Order("acct/d2:entry", "acct", SYM, T0, SELL, 2, MARKET)
    lim = Order("acct/d3:entry", "acct", SYM, T0, BUY, 1, LIMIT, 4990.0)
    track(v, m)
    track(v, lim)
    ev, fills = [], []
    v.apply_update(upd(m.client_order_id, FILLED, 2, 5001.25, T0 + S), ev, fills)  # not a tick: a merged fill
    v.apply_update(upd(lim.client_order_id, ACCEPTED, 0, None, T0 + S, leaves=1), ev, fills)
    v.apply_update(upd(lim.client_order_id, SUBMITTED, 0, None, T0 + S, leaves=1), ev, fills)
    v.apply_update(upd(lim.client_order_id, CANCELLED, 0, None, T0 + 2 * S, text="Cancelada pelo usuário"), ev, fills)
    assert [(f.quantity, f.price, f.liquidity) for f in fills] == [(2, 5001.25, TAKER)]
    assert [(e.client_order_id, e.status, e.reason) for e in ev] == [
        (m.client_order_id, FILLED, ""), (lim.client_order_id, ACCEPTED, ""),
        (lim.client_order_id, CANCELLED, "Cancelada pelo usuário")]
    assert math.isnan(ev[1].avg_fill_price)


def test_bad_and_foreign_updates_are_counted_and_the_state_round_trips():
    v = venue()
    o = Order("acct/d4:entry", "acct", SYM, T0, BUY, 3, LIMIT, 5000.0)
    track(v, o)
    ev, fills = [], []
    for bad in (None, [], {"coid": o.client_order_id}, upd(o.client_order_id, "NOPE", 0, None, T0),
                upd(o.client_order_id, FILLED, 4, 5000.0, T0), upd(o.client_order_id, FILLED, 3, float("nan"), T0)):
        v.apply_update(bad, ev, fills)
    v.apply_update(upd("someone-else", FILLED, 1, 5000.0, T0), ev, fills)
    assert (ev, fills) == ([], [])
    assert v.count["updates_bad"] == 4 and v.count["updates_not_ours"] == 1 and v.count["updates_other"] == 2
    v.apply_update(upd(o.client_order_id, PARTIALLY_FILLED, 1, 5000.0, T0 + S, leaves=2), ev, fills)
    w = venue()
    w.load_state(v.state())
    more_ev, more = [], []
    w.apply_update(upd(o.client_order_id, FILLED, 3, 5000.5, T0 + 2 * S), more_ev, more)
    # 3 @ 5000.5 after 1 @ 5000.0: the other 2 at (15001.5 - 5000.0) / 2 = 5000.75 -> not a tick, kept
    assert [(f.fill_id, f.quantity, f.price) for f in more] == [("acct/d4:entry#3", 2, 5000.75)]
    assert w.count["updates_bad"] == 4
