"""The DLL host's order service end to end: scripts/feed_bridge.py as a child process on the
native fake ProfitDLL (tests/fake_profitdll), real ZeroMQ on ephemeral ports, the real client.

The reference is the fake broker's own sent log (FAKE_PROFITDLL_SENT_LOG): each command it
received (``send_order``, ``cancel_order``...), each order callback (``order_cb``) and trading
message result (``msg_result``) it fired, and each fill, written *before* the callback. The
updates the client receives are compared field by field with those lines; lifecycle statuses,
average prices and positions are computed here by hand from the scripted book.

Book used throughout: WDOZ26 best bid 5000.0 x 3, best ask 5000.5 x 2, each further level one
tick (0.5) away with the same quantity.
"""

from __future__ import annotations

import os
import signal

import orjson
import pytest
import zmq

from pipelines.adapters.bridge import orders as O
from pipelines.adapters.bridge.host import HostedBridge
from pipelines.adapters.bridge.order_client import OrderClient
from tests.helpers import REPO, wait_for
from tests.order_host import ACCOUNT, SECRETS, SIDES, SYMBOL, TOKEN, broker_rows
from tests.profitdll_fake import ns_of

# LIFECYCLE: TConnectorOrderStatus -> lifecycle, written from the manual's table (docs §4.3); None: the
# order keeps the status it had (PendingCancel 6, PendingReplace 14).
LIFECYCLE = {10: "SUBMITTED", 0: "ACCEPTED", 5: "ACCEPTED", 1: "PARTIALLY_FILLED", 2: "FILLED", 4: "CANCELLED",
             15: "CANCELLED", 8: "REJECTED", 12: "EXPIRED", 6: None, 14: None}


def order(coid: str, side: str, otype: str, qty: int, price: float | None = None, stop: float | None = None) -> dict:
    return {"coid": coid, "symbol": SYMBOL, "side": side, "type": otype, "quantity": qty, "price": price,
            "stop_price": stop}


def collect(client: OrderClient, got: list, predicate, timeout: float = 10.0) -> list:
    """Poll ``client``'s updates into ``got`` until ``predicate(got)``."""
    def pump():
        got.extend(client.poll_updates(1000, timeout_s=0.02))

    wait_for(lambda: predicate(got), timeout, 0, lambda: f"updates; have {len(got)}: {got[-3:]} {client.stats()}",
             poll=pump)
    return got


def expected_updates(rows: list[dict]) -> list[tuple]:
    """What the host must publish for one DLL process, from the fake's log: one order update per
    order callback of the account, one message update per trading-message result, in order."""
    out, status = [], {}
    for r in rows:
        if r["kind"] == "order_cb" and (r["broker"], r["account"]) == ("308", "1234567"):
            lid, code, traded = int(r["local_id"]), int(r["status"]), int(r["traded"])
            st = LIFECYCLE[code] or status.get(lid, "SUBMITTED")
            if st == "ACCEPTED" and traded:
                st = "PARTIALLY_FILLED"
            status[lid] = st
            out.append(("order", lid, r["cl_ord_id"], r["ticker"], st, code, traded, int(r["leaves"]),
                        float(r["avg"]), float(r["price"]), float(r["stop"]), int(r["qty"]), SIDES[r["side"]],
                        r["text"], ns_of(r["last"])))
        elif r["kind"] == "msg_result":
            out.append(("message", int(r["local_id"]), r["cl_ord_id"], int(r["message_id"]), int(r["code"]),
                        r["message"]))
    return out


def as_tuple(u) -> tuple:
    if u.kind == "order":
        return ("order", u.local_id, u.cl_ord_id, u.symbol, u.status, u.dll_status, u.filled, u.leaves, u.avg_price,
                u.price, u.stop_price, u.quantity, u.side, u.text, u.ts_event)
    return ("message", u.local_id, u.cl_ord_id, u.message_id, u.code, u.text)


# -- live routing on the fake broker ------------------------------------------------------------------


def test_orders_round_trip_field_by_field_with_the_fake_broker(dll_host, tmp_path):
    sent = tmp_path / "sent.log"
    host = dll_host.host("host", "--routing", "--log-level", "DEBUG", fake={"sent_log": sent})
    c = dll_host.client(host)
    got: list = []
    wait_for(lambda: c.poll_updates(10, 0.05) == [] and c.heartbeats, 5, 0, "a heartbeat")

    # Market BUY 3 takes the ask level by level: 2 @ 5000.5, then 1 @ 5001.0.
    r1 = dll_host.ask(c, "send", order("d1:entry", "BUY", "MARKET", 3))
    collect(c, got, lambda g: any(u.kind == "order" and u.status == "FILLED" for u in g))
    # Limit BUY 2 @ 5001.0: the 1 left at 5001.0 fills, the other rests (5001.5 is above the limit).
    r2 = dll_host.ask(c, "send", order("d2:entry", "BUY", "LIMIT", 2, 5001.0))
    collect(c, got, lambda g: any(u.kind == "order" and u.coid == "d2:entry" and u.dll_status == 1 for u in g))
    r3 = dll_host.ask(c, "send", order("d3:tp", "SELL", "LIMIT", 2, 5010.0))  # rests: the best bid is 5000.0
    collect(c, got, lambda g: any(u.kind == "order" and u.coid == "d3:tp" and u.status == "ACCEPTED" for u in g))
    rc = dll_host.ask(c, "cancel", {"coid": "d2:entry"})
    collect(c, got, lambda g: any(u.kind == "order" and u.coid == "d2:entry" and u.status == "CANCELLED" for u in g))
    # Refused by the broker, each with its own words: off the tick grid; beyond the margin (4 + 7 > 10).
    r4 = dll_host.ask(c, "send", order("d4:entry", "BUY", "LIMIT", 1, 5000.3))
    r5 = dll_host.ask(c, "send", order("d5:entry", "BUY", "MARKET", 7))
    collect(c, got, lambda g: sum(u.kind == "order" and u.status == "REJECTED" for u in g) == 2)
    positions = dll_host.ask(c, "positions", {"symbols": [SYMBOL]})
    listed = dll_host.ask(c, "orders")

    replies = [r1, r2, r3, r4, r5]
    assert all(r["ok"] and not r["duplicate"] and not r["shadow"] for r in replies + [rc]), replies
    coid_of = {r["local_id"]: r["coid"] for r in replies}
    assert len(coid_of) == 5
    rows = broker_rows(sent)
    expected = expected_updates(rows)
    collect(c, got, lambda g: len(g) >= len(expected))
    # Every update once, seq 1..n, and each equal to the fake's callback, field by field.
    assert [u.seq for u in got] == list(range(1, len(got) + 1))
    assert len({u.incarnation for u in got}) == 1 and got[0].incarnation == host.info["order_incarnation"]
    assert [as_tuple(u) for u in got] == expected
    assert all(u.coid == coid_of[u.local_id] and u.shadow is False for u in got)
    # What the fake received is what was asked for (SendOrder V2, the password accepted).
    sends = [r for r in rows if r["kind"] == "send_order"]
    assert [(r["side"], r["type"], float(r["price"]), float(r["stop"]), int(r["qty"]), r["version"], r["pw_ok"],
             int(r["result"]), int(r["message_id"])) for r in sends] == [
        ("1", "1", -1.0, -1.0, 3, "2", "1", r1["local_id"], r1["message_id"]),
        ("1", "2", 5001.0, -1.0, 2, "2", "1", r2["local_id"], r2["message_id"]),
        ("2", "2", 5010.0, -1.0, 2, "2", "1", r3["local_id"], r3["message_id"]),
        ("1", "2", 5000.3, -1.0, 1, "2", "1", r4["local_id"], r4["message_id"]),
        ("1", "1", -1.0, -1.0, 7, "2", "1", r5["local_id"], r5["message_id"])]
    assert [(int(r["order_local_id"]), int(r["message_id"])) for r in rows if r["kind"] == "cancel_order"] == [
        (r2["local_id"], rc["message_id"])]

    last = {u.coid: u for u in got if u.kind == "order"}
    # Hand-computed: d1 (2 x 5000.5 + 5001.0) / 3; d2 filled 1 of 2 then cancelled.
    assert (last["d1:entry"].status, last["d1:entry"].filled) == ("FILLED", 3)
    assert last["d1:entry"].avg_price == pytest.approx((2 * 5000.5 + 5001.0) / 3, abs=1e-9)
    assert (last["d2:entry"].status, last["d2:entry"].filled, last["d2:entry"].leaves,
            last["d2:entry"].avg_price) == ("CANCELLED", 1, 0, 5001.0)
    assert (last["d3:tp"].status, last["d3:tp"].leaves) == ("ACCEPTED", 2)
    assert "invalid price" in last["d4:entry"].text and "insufficient margin" in last["d5:entry"].text
    statuses = {coid: [u.status for u in got if u.kind == "order" and u.coid == coid] for coid in coid_of.values()}
    assert statuses["d1:entry"] == ["SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED", "FILLED"]
    assert statuses["d2:entry"] == ["SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED", "PARTIALLY_FILLED", "CANCELLED"]
    rejections = [(u.coid, u.name) for u in got if u.kind == "message" and u.rejection]
    assert rejections == [("d4:entry", "RejectedMarket"), ("d5:entry", "BlockedByRisk")]
    # The position: 3 + 1 bought at (2 x 5000.5 + 2 x 5001.0) / 4; the fake's last fill says the same.
    fills = [r for r in rows if r["kind"] == "fill"]
    pos = positions["positions"][SYMBOL]
    assert (pos["quantity"], pos["avg_price"]) == (4, pytest.approx(5000.75, abs=1e-9))
    assert (pos["quantity"], pos["avg_price"]) == (int(fills[-1]["position"]), float(fills[-1]["position_avg"]))
    assert sum(int(f["qty"]) for f in fills) == 4
    # `orders`: the broker's list, each with our coid and the state of its last update.
    assert sorted((o["coid"], o["status"], o["filled"]) for o in listed["orders"]) == sorted(
        (u.coid, u.status, u.filled) for u in last.values())
    assert host.stop() == 0
    dll_host.assert_no_secrets()


def test_a_send_retried_with_its_coid_reaches_the_dll_once(dll_host, tmp_path):
    sent = tmp_path / "sent.log"
    host = dll_host.host("host", "--routing", fake={"sent_log": sent})
    c = dll_host.client(host)
    args = order("d7:entry", "SELL", "LIMIT", 1, 5012.0)
    # A client that times out at once and re-sends the same bytes: the host may get 1-4 copies.
    try:
        c.request("send", args, timeout_s=0.002, retries=3)
    except O.RequestTimeout:
        pass
    first = dll_host.ask(c, "send", args)  # the caller tries again later, with the same coid
    # The same request bytes twice on a raw DEALER, back to back (a retry racing the first answer).
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(host.info["orders"])
    payload = O.encode_command("send", rid="fixed-rid-1", **args)
    dealer.send(payload)
    dealer.send(payload)
    raw = [O.decode_reply(dealer.recv()) for _ in range(2) if dealer.poll(5000)]
    dealer.close()
    dll_host.replies.extend(raw)
    assert first["ok"] and first["duplicate"] is True and len(raw) == 2
    assert {r["local_id"] for r in [first, *raw]} == {first["local_id"]} and all(r["duplicate"] for r in raw)
    wait_for(lambda: any(r["kind"] == "order_cb" and r["status"] == "0" for r in broker_rows(sent)), 5)
    sends = [r for r in broker_rows(sent) if r["kind"] == "send_order"]
    assert len(sends) == 1 and int(sends[0]["result"]) == first["local_id"]
    status = dll_host.ask(c, "status")
    assert status["counts"]["dll_calls"] == 1 and status["counts"]["duplicates"] >= 3
    dll_host.assert_no_secrets()


def test_change_and_zero_position_through_the_host(dll_host, tmp_path):
    sent = tmp_path / "sent.log"
    host = dll_host.host("host", "--routing", fake={"sent_log": sent})
    c = dll_host.client(host)
    got: list = []
    assert dll_host.ask(c, "send", order("c1:tp", "SELL", "LIMIT", 2, 5010.0))["ok"]
    collect(c, got, lambda g: any(u.kind == "order" and u.status == "ACCEPTED" for u in g))
    # One change, its request bytes sent twice (a retry): the DLL gets it once.
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(host.info["orders"])
    payload = O.encode_command("change", rid="change-1", coid="c1:tp", price=5009.5, stop_price=None, quantity=3)
    dealer.send(payload)
    dealer.send(payload)
    changed = [O.decode_reply(dealer.recv()) for _ in range(2) if dealer.poll(5000)]
    dealer.close()
    dll_host.replies.extend(changed)
    assert [(r["ok"], r["duplicate"]) for r in changed] == [(True, False), (True, True)]
    collect(c, got, lambda g: any(u.kind == "order" and u.dll_status == 5 for u in g))
    replaced = [u for u in got if u.kind == "order" and u.dll_status == 5][0]
    assert (replaced.coid, replaced.status, replaced.price, replaced.quantity, replaced.leaves) == \
        ("c1:tp", "ACCEPTED", 5009.5, 3, 3)
    # Long 2 (at the best ask 5000.5), then zeroed: a market sell of 2 at the best bid 5000.0.
    assert dll_host.ask(c, "send", order("c2:entry", "BUY", "MARKET", 2))["ok"]
    collect(c, got, lambda g: any(u.kind == "order" and u.coid == "c2:entry" and u.status == "FILLED" for u in g))
    zero = dll_host.ask(c, "zero", {"symbol": SYMBOL, "coid": "k1:flat"})
    assert zero["ok"] and zero["local_id"] > 0
    collect(c, got, lambda g: any(u.kind == "order" and u.coid == "k1:flat" and u.status == "FILLED" for u in g))
    flat = [u for u in got if u.kind == "order" and u.coid == "k1:flat"][-1]
    assert (flat.side, flat.filled, flat.avg_price, flat.local_id) == ("SELL", 2, 5000.0, zero["local_id"])
    assert dll_host.ask(c, "positions", {"symbols": [SYMBOL]})["positions"][SYMBOL]["quantity"] == 0
    again = dll_host.ask(c, "zero", {"symbol": SYMBOL})  # nothing left to close: done, not an error
    assert again["ok"] and again.get("flat") is True
    rows = broker_rows(sent)
    assert [(float(r["price"]), int(r["qty"])) for r in rows if r["kind"] == "change_order"] == [(5009.5, 3)]
    assert [r["result"] for r in rows if r["kind"] == "zero_position"][0] == str(zero["local_id"])
    assert [as_tuple(u) for u in got] == expected_updates(rows)[:len(got)]
    dll_host.assert_no_secrets()


@pytest.mark.slow
def test_host_killed_between_order_and_fill_neither_resends_nor_loses_the_fill(dll_host, tmp_path):
    state, broker = tmp_path / "state", tmp_path / "broker.state"
    logs = [tmp_path / "sent-1.log", tmp_path / "sent-2.log"]
    common = ["--routing", "--state-dir", str(state), "--recover-settle-s", "0.3"]
    # The fake persists the order, then its native thread segfaults before any callback for it.
    first = dll_host.host("host-1", *common, fake={"sent_log": logs[0], "broker_state": broker, "crash_on_order": 1})
    c = dll_host.client(first)
    wait_for(lambda: c.poll_updates(10, 0.05) == [] and c.heartbeats, 5, 0, "a heartbeat")  # knows incarnation 1
    try:
        reply = dll_host.ask(c, "send", order("d9:entry", "BUY", "MARKET", 2), timeout_s=3.0)
        assert reply["ok"]
    except O.RequestTimeout:  # the host may die before it answers: the outcome is the broker's to tell
        pass
    wait_for(lambda: first.proc.poll() is not None, 15, 0.05, "the host to crash")
    assert first.proc.returncode == -signal.SIGSEGV
    assert broker_rows(logs[0])[-1]["kind"] == "crash"

    second = dll_host.host("host-2", *common, fake={"sent_log": logs[1], "broker_state": broker})
    c.retarget(second.info["orders"], second.info["order_pub"])
    got: list = []
    # The fake fills the order left working as the new DLL process starts; the host recognises it.
    collect(c, got, lambda g: any(u.kind == "order" and u.coid == "d9:entry" and u.status == "FILLED" for u in g))
    assert c.take_reconnected() is True and c.incarnation == second.info["order_incarnation"]
    again = dll_host.ask(c, "send", order("d9:entry", "BUY", "MARKET", 2))
    listed = dll_host.ask(c, "orders")
    positions = dll_host.ask(c, "positions", {"symbols": [SYMBOL]})

    rows = [r for log in logs for r in broker_rows(log)]
    sends = [r for r in rows if r["kind"] == "send_order"]
    assert len(sends) == 1  # in both processes' logs together
    lid = int(sends[0]["result"])
    assert again["ok"] and again["duplicate"] and again["local_id"] == lid
    mine = [o for o in listed["orders"] if o["coid"] == "d9:entry"]
    # Hand-computed: 2 at the best ask 5000.5 (its level holds 2), cumulative in one snapshot.
    assert [(o["local_id"], o["status"], o["filled"], o["avg_price"]) for o in mine] == [(lid, "FILLED", 2, 5000.5)]
    fills = [r for r in rows if r["kind"] == "fill"]
    assert [(int(f["local_id"]), int(f["qty"]), float(f["price"])) for f in fills] == [(lid, 2, 5000.5)]
    pos = positions["positions"][SYMBOL]
    assert (pos["quantity"], pos["avg_price"]) == (int(fills[-1]["position"]), float(fills[-1]["position_avg"])) \
        == (2, 5000.5)
    dll_host.assert_no_secrets()


def test_an_intent_without_result_is_adopted_or_marked_not_sent_at_restart(dll_host, tmp_path):
    """The journal as a host dying inside SendOrder leaves it: an intent, no result."""
    state, broker = tmp_path / "state", tmp_path / "broker.state"
    logs = [tmp_path / "sent-1.log", tmp_path / "sent-2.log"]
    common = ["--routing", "--state-dir", str(state), "--recover-settle-s", "0.3"]
    first = dll_host.host("host-1", *common, fake={"sent_log": logs[0], "broker_state": broker})
    c = dll_host.client(first)
    sent = dll_host.ask(c, "send", order("d11:entry", "SELL", "LIMIT", 1, 5020.0))
    wait_for(lambda: any(r["kind"] == "order_cb" and r["status"] == "0" for r in broker_rows(logs[0])), 5)
    c.close()
    assert first.stop() == 0
    journal = state / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    kept = [ln for ln in lines if not (b'"t":"result"' in ln or b'"t":"clord"' in ln)]
    # A second intent the broker never saw (the host died before the DLL had it).
    ghost = {"t": "intent", "cmd": "send", "coid": "d12:entry", "rid": "r-ghost", "ts": 1,
             "args": {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "quantity": 1, "price": 4990.0,
                      "stop_price": None}}
    journal.write_bytes(b"".join(kept) + orjson.dumps(ghost) + b"\n" + b'{"t":"res')  # and a torn last line

    second = dll_host.host("host-2", *common, fake={"sent_log": logs[1], "broker_state": broker})
    c2 = dll_host.client(second)
    adopted = dll_host.ask(c2, "send", order("d11:entry", "SELL", "LIMIT", 1, 5020.0))
    ghost_reply = dll_host.ask(c2, "send", order("d12:entry", "BUY", "LIMIT", 1, 4990.0))
    status = dll_host.ask(c2, "status")
    assert adopted["ok"] and adopted["duplicate"] and adopted["adopted"] and adopted["local_id"] == sent["local_id"]
    assert not ghost_reply["ok"] and ghost_reply["not_sent"] and "not sent" in ghost_reply["error"]
    assert status["journal"]["bad_lines"] == 1
    assert status["counts"]["recovered_adopted"] == 1 and status["counts"]["recovered_not_sent"] == 1
    assert status["counts"].get("dll_calls", 0) == 0
    rows = [r for log in logs for r in broker_rows(log)]
    assert len([r for r in rows if r["kind"] == "send_order"]) == 1
    # The adopted order's snapshot went out at start-up, with its coid.
    got = collect(c2, [], lambda g: any(u.kind == "order" and u.coid == "d11:entry" for u in g))
    assert [(u.seq, u.local_id, u.status) for u in got if u.kind == "order"][0] == (1, sent["local_id"], "ACCEPTED")
    dll_host.assert_no_secrets()


def test_the_rate_cap_refuses_past_the_burst_and_cancels_still_pass(dll_host, tmp_path):
    sent = tmp_path / "sent.log"
    host = dll_host.host("host", "--routing", "--max-orders-per-s", "0.2", "--order-burst", "3", fake={"sent_log": sent})
    c = dll_host.client(host)
    replies = [dll_host.ask(c, "send", order(f"r{i}:entry", "SELL", "LIMIT", 1, 5015.0 + i)) for i in range(5)]
    assert [r["ok"] for r in replies] == [True, True, True, False, False]
    assert all("rate limit" in r["error"] for r in replies[3:])
    collect(c, [], lambda g: sum(u.kind == "order" and u.status == "ACCEPTED" for u in g) == 3)  # working
    cancels = [dll_host.ask(c, "cancel", {"coid": f"r{i}:entry"}) for i in range(3)]
    cancel_all = dll_host.ask(c, "cancel_all")
    assert all(r["ok"] for r in cancels) and cancel_all["ok"]
    status = dll_host.ask(c, "status")
    assert status["counts"]["rate_limited"] == 2
    wait_for(lambda: sum(r["kind"] == "order_cb" and r["status"] == "4" for r in broker_rows(sent)) == 3, 5)
    rows = broker_rows(sent)
    assert [r["kind"] for r in rows if r["kind"] in ("send_order", "cancel_order", "cancel_all")] == \
        ["send_order"] * 3 + ["cancel_order"] * 3 + ["cancel_all"]
    dll_host.assert_no_secrets()


def test_beyond_loopback_the_token_is_required_and_checked(dll_host, tmp_path):
    sent = tmp_path / "sent.log"
    # No token: refused at start, one line, exit 2 (before any DLL is loaded).
    bare = dll_host.host("no-token", "--routing", "--orders", "tcp://0.0.0.0:0", fake={"sent_log": sent}, ready=False)
    assert bare.proc.wait(30) == 2
    err = bare.err_path.read_text()
    assert len(err.strip().splitlines()) == 1 and "PROFIT_BRIDGE_TOKEN" in err and not sent.exists()

    # Everything from a credentials file this time (the environment has none of it).
    creds = tmp_path / "profit.env"
    creds.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()), encoding="utf-8")
    creds.chmod(0o600)
    host = dll_host.host("token", "--routing", "--orders", "tcp://0.0.0.0:0", "--order-pub", "tcp://0.0.0.0:0",
                    "--credentials-file", str(creds), env={k: "" for k in SECRETS},
                    fake={"sent_log": sent, "market": "closed"})
    anonymous, wrong, right = dll_host.client(host), dll_host.client(host, token="tok-wrong"), dll_host.client(host, token=TOKEN)
    r_anon = dll_host.ask(anonymous, "send", order("t1:entry", "BUY", "MARKET", 1))
    r_wrong = dll_host.ask(wrong, "status")
    r_right = dll_host.ask(right, "send", order("t1:entry", "BUY", "MARKET", 1))
    assert not r_anon["ok"] and not r_wrong["ok"] and "token" in r_anon["error"] and "token" in r_wrong["error"]
    assert r_right["ok"] and r_right["duplicate"] is False  # the refused attempt was never journaled
    # The fake's market is closed: the broker rejects, and the update carries its reason.
    got = collect(right, [], lambda g: any(u.kind == "order" and u.status == "REJECTED" for u in g))
    rejected = [u for u in got if u.kind == "order" and u.status == "REJECTED"][0]
    assert rejected.coid == "t1:entry" and rejected.text == "market closed"
    status = dll_host.ask(right, "status")
    assert status["counts"]["bad_tokens"] == 2
    assert len([r for r in broker_rows(sent) if r["kind"] == "send_order"]) == 1
    dll_host.assert_no_secrets()
    assert "tok-wrong" not in host.text()


def test_shadow_acknowledges_orders_and_sends_nothing_to_the_dll(dll_host, tmp_path):
    sent = tmp_path / "sent.log"
    host = dll_host.host("shadow", "--shadow", "--state-dir", str(tmp_path / "state"), fake={"sent_log": sent},
                    env={"PROFIT_ROUTING_PASSWORD": ""})  # shadow needs no routing password
    c = dll_host.client(host)
    r1 = dll_host.ask(c, "send", order("s1:entry", "BUY", "MARKET", 2))
    r2 = dll_host.ask(c, "send", order("s2:entry", "SELL", "LIMIT", 1, 5010.0))
    rc = dll_host.ask(c, "cancel", {"coid": "s2:entry"})
    positions = dll_host.ask(c, "positions", {"symbols": [SYMBOL]})
    got = collect(c, [], lambda g: len(g) >= 3)
    assert all(r["ok"] and r["shadow"] for r in (r1, r2, rc))
    assert [(u.seq, u.coid, u.status, u.text, u.shadow) for u in got] == [
        (1, "s1:entry", "ACCEPTED", "shadow: not sent", True), (2, "s2:entry", "ACCEPTED", "shadow: not sent", True),
        (3, "s2:entry", "CANCELLED", "shadow: not sent", True)]
    assert positions["positions"][SYMBOL]["quantity"] == 0
    assert host.stop() == 0
    kinds = {r["kind"] for r in broker_rows(sent)}
    assert not kinds & {"send_order", "cancel_order", "cancel_all", "zero_position", "change_order"}, kinds
    assert (tmp_path / "state" / "shadow-journal.jsonl").exists()
    assert not (tmp_path / "state" / "journal.jsonl").exists()  # a later live run never sees shadow coids
    assert "shadow: order s1:entry BUY 2 WDOZ26 MARKET" in host.text()
    dll_host.assert_no_secrets()


# -- the protocol under bad input and lost updates (shadow over the simulator: no DLL needed) ----------


def test_bad_commands_of_any_shape_get_clear_refusals_and_the_host_serves_on(dll_host, tmp_path):
    host = dll_host.host("sim", "--shadow", "--state-dir", str(tmp_path / "state"), source="simulator")
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(host.info["orders"])
    send = {"v": 1, "cmd": "send", "rid": "x", **order("b1", "BUY", "LIMIT", 1, 5000.0)}
    bad = [
        [b"not json"], [b"[1, 2]"], [b'{"cmd": "status"}'], [orjson.dumps({**send, "v": 99})],
        [orjson.dumps({"v": 1, "cmd": "explode"})], [orjson.dumps({**send, "quantity": True})],
        [orjson.dumps({**send, "quantity": 1.5})], [orjson.dumps({**send, "quantity": 0})],
        [b'{"v": 1, "cmd": "send", "price": NaN}'], [orjson.dumps({**send, "side": "buy"})],
        [orjson.dumps({**send, "price": -5})], [orjson.dumps({**send, "type": "MARKET"})],
        [orjson.dumps({**send, "coid": "x" * 500})], [orjson.dumps({**send, "symbol": "wdo!"})],
        [orjson.dumps({**send, "extra": 1})], [orjson.dumps({"v": 1, "cmd": "positions", "symbols": "WDOZ26"})],
        [orjson.dumps({"v": 1, "cmd": "resync", "from_seq": 0})], [orjson.dumps({**send, "token": 5})],
        [b"two", b"frames"],
    ]
    replies = []
    for frames in bad:
        dealer.send_multipart(frames)
        assert dealer.poll(5000), frames
        replies.append(O.decode_reply(dealer.recv()))
    assert all(r["ok"] is False and "\n" not in r["error"] and r["error"] for r in replies), replies
    assert replies[3]["error"].startswith("bridge protocol version mismatch")
    dealer.send(b"x" * (O.MAX_REQUEST_BYTES + 1))  # over ZMQ_MAXMSGSIZE: libzmq drops this peer, no reply
    assert not dealer.poll(300)
    dealer.close()
    # A plain REQ socket (what a one-shot script uses) is answered in its own envelope.
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(host.info["orders"])
    req.send(O.encode_command("status", rid="req-1"))
    assert req.poll(5000)
    assert O.decode_reply(req.recv())["rid"] == "req-1"
    req.close()
    c = dll_host.client(host)
    ok = dll_host.ask(c, "send", order("b2", "BUY", "LIMIT", 1, 5000.0))
    status = dll_host.ask(c, "status")
    assert ok["ok"] and status["counts"]["bad_commands"] == len(bad)
    assert host.proc.poll() is None


def test_updates_are_resynced_in_order_and_what_left_the_ring_is_counted_lost(dll_host, tmp_path):
    host = dll_host.host("sim", "--shadow", "--state-dir", str(tmp_path / "state"), "--order-ring-updates", "4",
                    source="simulator")
    early = dll_host.client(host)
    wait_for(lambda: early.poll_updates(10, 0.05) == [] and early.heartbeats, 5, 0, "a heartbeat")
    for i in range(3):
        assert dll_host.ask(early, "send", order(f"g{i}", "SELL", "LIMIT", 1, 5020.0 + i))["ok"]
    for i in range(3):
        assert dll_host.ask(early, "cancel", {"coid": f"g{i}"})["ok"]
    seen = collect(early, [], lambda g: len(g) >= 6)
    assert [u.seq for u in seen] == [1, 2, 3, 4, 5, 6] and early.lost_updates == 0
    # A client that starts now asks for seq 1..6 (catch-up): 3..6 are still in the ring of 4.
    late = dll_host.client(host)
    caught = collect(late, [], lambda g: len(g) >= 4)
    wait_for(lambda: late.poll_updates(10, 0.05) == [] and late.resyncs_requested, 5, 0)
    assert [u.seq for u in caught] == [3, 4, 5, 6]
    assert [as_tuple(u) for u in caught] == [as_tuple(u) for u in seen[2:]]
    assert (late.lost_updates, late.resyncs_gone, late.recovered_updates) == (2, 1, 4)
    assert late.take_reconnected() is False  # one incarnation: nothing to reconcile


def test_config_errors_are_one_line_and_exit_2(dll_host, tmp_path):
    def fails(name, *args, env=None, source="profitdll"):
        h = dll_host.host(name, *args, env=env, source=source, ready=False)
        assert h.proc.wait(30) == 2, h.text()
        # The error is one line (a refusal after the login sits among the login's own log lines).
        errors = [ln for ln in h.err_path.read_text().splitlines() if ln.startswith("feed_bridge: error: ")]
        assert len(errors) == 1 and "Traceback" not in h.text(), h.text()
        return errors[0]

    assert "PROFIT_ROUTING_PASSWORD" in fails("no-password", "--routing", env={"PROFIT_ROUTING_PASSWORD": ""})
    assert "inside the repository" in fails("state-in-repo", "--shadow", "--state-dir", str(REPO / "state"),
                                            source="simulator")
    assert "--routing needs --source profitdll" in fails("sim-routing", "--routing", source="simulator")
    err = fails("other-account", "--routing", "--account", "308:7654321")
    assert "not a routing account" in err and "308:1234567" in err
    assert not (REPO / "state").exists()


def test_hosted_bridge_passes_the_order_flags_and_a_restart_is_seen_by_the_client(tmp_path):
    """The supervised host (what the pipeline runs): its order endpoints are ephemeral and
    reported; after a SIGKILL the new child's are, and the client sees a new incarnation."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_PROFITDLL_", "PROFIT_"))}
    bridge = HostedBridge([SYMBOL], source="simulator", env=env, heartbeat_s=0.2, backoff_initial_s=0.1,
                          bridge_args=["--shadow", "--account", ACCOUNT, "--state-dir", str(tmp_path / "state"),
                                       "--sim-max-events", "100"])
    client = None
    try:
        first = bridge.order_endpoints
        assert first is not None and all(ep.startswith("tcp://127.0.0.1:") for ep in first)
        client = OrderClient(*first, ACCOUNT)
        assert client.request("send", order("h1", "BUY", "LIMIT", 1, 5000.0))["ok"]
        collect(client, [], lambda g: len(g) == 1)
        os.kill(bridge.child_pid, signal.SIGKILL)
        wait_for(lambda: bridge.poll(100) is not None and bridge.restarts and bridge.order_endpoints != first
                 and bridge.child_pid, 30, 0.05, "the restarted host")
        client.retarget(*bridge.order_endpoints)
        # The journal survived: the same coid is answered from it, not acknowledged again.
        again = client.request("send", order("h1", "BUY", "LIMIT", 1, 5000.0))
        assert again["ok"] and again["duplicate"]
        got = collect(client, [], lambda g: any(u.coid == "h1" for u in g))  # the rebuilt shadow book
        assert client.take_reconnected() is True and client.incarnation_changes == 1
        assert got[0].seq == 1 and got[0].incarnation == client.incarnation
    finally:
        if client is not None:
            client.close()
        bridge.close()
