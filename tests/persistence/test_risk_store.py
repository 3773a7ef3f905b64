"""pipelines.persistence.risk_store against the session's valkey-server: the engine's state
round trip, commands surviving a reader restart, HALTED persisting, the events stream, bad
input. Each test uses an account of its own (the events stream is shared, so it is filtered
by account)."""

from __future__ import annotations

import orjson
import pytest

from pipelines.model.orders import RiskEvent
from pipelines.persistence.connection import connect
from pipelines.persistence.risk_store import (RISK_STREAM, RiskStateUnavailable, RiskStore, command_tail,
                                              commands_key, read_commands, send_command, state_key)
from pipelines.persistence.server import free_port
from pipelines.risk.account import AccountSnapshot
from pipelines.risk.config import RiskConfig
from pipelines.risk.engine import ACTIVE, HALTED, RiskEngine
from tests.helpers import FAST_RECONNECT, SESSION_T0, unique_name

T = SESSION_T0
S = 1_000_000_000


@pytest.fixture()
def store(valkey_server):
    s = RiskStore(valkey_server[1], None, **FAST_RECONNECT)
    yield s
    s.close()


def new_engine(account: str) -> RiskEngine:
    return RiskEngine(AccountSnapshot(account), RiskConfig(account=account))


def serve(engine: RiskEngine, store: RiskStore) -> list[RiskEvent]:
    """What the risk actor does with its commands: apply each, store the state, wait for it."""
    out = []
    for command_id, fields in store.read_commands(engine.account_id, engine.command_cursor):
        out.append(engine.apply_command(command_id, fields))
    store.save_state(engine.account_id, engine.state())
    assert store.commit(5.0)
    return out


def events_of(client, account: str) -> list[dict]:
    return [d for d in (orjson.loads(f[b"json"]) for _id, f in client.xrange(RISK_STREAM)) if d["account"] == account]


def test_state_round_trip_and_halted_persists(store, client):
    acct = unique_name("acct")
    eng = new_engine(acct)
    eng.on_trade("WDOZ26", 5400.0, T)
    eng.halt("ana@box", "news", T)
    store.save_state(acct, eng.state())
    assert store.commit(5.0)
    raw = orjson.loads(client.get(f"hmarl:risk:{acct}"))
    assert raw["state"] == "HALTED" and raw["reason"] == "halt by ana@box: news" and raw["changed_by"] == "ana@box"
    assert client.ttl(f"hmarl:risk:{acct}") == -1  # no TTL
    restarted = new_engine(acct)
    assert restarted.load_state(store.load_state(acct)) is True
    assert (restarted.trading_state, restarted.status().reason) == (HALTED, "halt by ana@box: news")
    assert store.load_state(unique_name("acct")) is None  # never stored


def test_commands_survive_a_reader_restart(valkey_server, client):
    acct = unique_name("acct")
    first = RiskStore(valkey_server[1], None, **FAST_RECONNECT)
    eng = new_engine(acct)
    eng.command_cursor = first.command_tail(acct)  # a fresh engine: nothing older than itself
    c1 = send_command(client, acct, "halt", "ana@box", "one", "2026-11-23T10:00:00-03:00")
    assert [e.state for e in serve(eng, first)] == [HALTED]
    first.close()  # the actor dies; meanwhile two more commands arrive
    c2 = send_command(client, acct, "resume", "bob@box")
    c3 = send_command(client, acct, "flatten", "bob@box", "three")
    second = RiskStore(valkey_server[1], None, **FAST_RECONNECT)
    try:
        again = new_engine(acct)
        assert again.load_state(second.load_state(acct)) and again.command_cursor == c1
        applied = serve(again, second)  # c1 is not applied a second time
        assert [(e.who, e.state, e.reason) for e in applied] == [("bob@box", ACTIVE, "resume"),
                                                                 ("bob@box", HALTED, "flatten: three")]
        stored = second.load_state(acct)
        assert stored["command_cursor"] == c3 and stored["last_command"]["id"] == c3
        assert stored["flatten_requested"] is True
        assert serve(again, second) == []  # nothing left
    finally:
        second.close()


def test_a_fresh_engine_skips_older_commands(store, client):
    acct = unique_name("acct")
    assert store.command_tail(acct) == "0-0"
    old = send_command(client, acct, "halt", "ana@box")
    eng = new_engine(acct)
    eng.command_cursor = command_tail(client, acct)
    assert eng.command_cursor == old and serve(eng, store) == [] and eng.trading_state == ACTIVE


def test_events_stream_once_each(valkey_server, client):
    acct = unique_name("acct")
    evs = [RiskEvent(acct, "WDOZ26", T, "denied", "ACTIVE", "max_order_qty: 6 contracts (max 5)", "d1:entry",
                     "max_order_qty"),
           RiskEvent(acct, "", T + S, "state", "HALTED", "halt: news", "", "ana@box")]
    a = RiskStore(valkey_server[1], None, writer_id="w-" + acct, **FAST_RECONNECT)
    a.publish(evs)
    assert a.commit(5.0)
    a.close()
    want = [{"account": acct, "symbol": "WDOZ26", "ts_event": T, "action": "denied", "state": "ACTIVE",
             "reason": "max_order_qty: 6 contracts (max 5)", "client_order_id": "d1:entry", "who": "max_order_qty",
             "kind": "risk"},
            {"account": acct, "symbol": "", "ts_event": T + S, "action": "state", "state": "HALTED",
             "reason": "halt: news", "client_order_id": "", "who": "ana@box", "kind": "risk"}]
    assert events_of(client, acct) == want
    # the same writer numbering from 1 again is what a re-sent chunk looks like: not appended twice
    b = RiskStore(valkey_server[1], None, writer_id="w-" + acct, **FAST_RECONNECT)
    b.publish(evs)
    assert b.commit(5.0)
    b.close()
    assert events_of(client, acct) == want


def test_bad_input_is_counted(store, client):
    acct = unique_name("acct")
    store.save_state("no:colons", {"a": 1})
    store.save_state("stream", {"a": 1})
    store.save_state(acct, ["not", "a", "dict"])
    store.save_state(acct, {"x": object()})
    store.publish(["junk", None])
    assert store.commit(5.0)
    assert store.stats()["rejected"] == {"state": 4, "event": 2}
    assert client.get(f"hmarl:risk:{acct}") is None
    client.set(state_key(acct), b"garbage")
    with pytest.raises(RiskStateUnavailable, match="no JSON object"):
        store.load_state(acct)
    client.xadd(commands_key(acct), {"json": b"{not json"})
    client.xadd(commands_key(acct), {"other": b"1"})
    assert [fields for _id, fields in read_commands(client, acct, "0-0")] == [{}, {}]
    eng = new_engine(acct)
    for command_id, fields in store.read_commands(acct, "0-0"):
        assert eng.apply_command(command_id, fields).action == "denied"
    assert eng.trading_state == ACTIVE and eng.stats()["denied"] == {"unknown_command": 2}
    with pytest.raises(ValueError, match="bad account"):
        send_command(client, "a b", "halt", "ana@box")


def test_unreachable_server():
    url = f"redis://127.0.0.1:{free_port('127.0.0.1')}/0"
    s = RiskStore(url, None, **FAST_RECONNECT)
    try:
        with pytest.raises(RiskStateUnavailable, match="unreachable"):
            s.load_state("paper")
        assert s.read_commands("paper", "0-0") == [] and s.stats()["read_errors"] == 1
        s.save_state("paper", {"state": "HALTED"})  # queued, never raises
        assert s.commit(0.5) is False
    finally:
        s.close(0.5)
    c = connect(url, socket_timeout=0.5)
    with pytest.raises(Exception):
        send_command(c, "paper", "halt", "ana@box")
