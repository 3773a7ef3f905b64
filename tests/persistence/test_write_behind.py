"""pipelines.persistence.write_behind against a real embedded valkey-server.

No mocks. The reply-error test writes keys of its own on the session server; the tests of a
server that is down use a server of their own, or a port nobody listens on.
Expected values are built here from the inputs, not read back from the code under test.
"""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from pipelines.persistence.connection import connect
from pipelines.persistence.server import free_port
from pipelines.persistence.write_behind import Transaction, WriteBehind
from tests.helpers import FAST_RECONNECT, wait_for


def test_reply_errors_counted_not_fatal_and_duplicates(valkey_server, client):
    k = f"wb:{uuid.uuid4().hex}"
    wb = WriteBehind(valkey_server[1], None, chunk=3, **FAST_RECONNECT)  # errors land in several chunks
    wb.submit([("SET", k + ":s", "not a number"), ("INCR", k + ":s"), ("RPUSH", k + ":l", 1)])
    wb.submit([("INCR", k + ":s"), ("SET", k + ":v", b"ok"), ("RPUSH", k + ":l", 2)])
    wb.submit([("XADD", k + ":x", "5-1", "f", "a"), ("XADD", k + ":x", "5-1", "f", "b"), ("RPUSH", k + ":l", 3)])
    assert wb.flush(10)
    s = wb.stats()
    wb.close()
    assert (s["submitted"], s["written"], s["duplicates"], s["dropped"], s["queued"]) == (9, 6, 1, 0, 0)
    assert list(s["errors"].values()) == [2]  # both INCRs, under one reason
    assert "not an integer" in s["last_error"]
    assert client.lrange(k + ":l", 0, -1) == [b"1", b"2", b"3"]
    assert client.get(k + ":v") == b"ok" and client.get(k + ":s") == b"not a number"
    assert [f for _i, f in client.xrange(k + ":x")] == [{b"f": b"a"}]
    with pytest.raises(RuntimeError, match="closed"):
        wb.submit([("SET", k, 1)])


def test_a_transaction_is_one_item_applied_all_or_nothing(valkey_server, client):
    k = f"wb:{uuid.uuid4().hex}"
    wb = WriteBehind(valkey_server[1], None, chunk=2, **FAST_RECONNECT)  # a transaction of 3 is still one item
    wb.submit([("RPUSH", k + ":l", 1),
               Transaction([("SET", k + ":a", "1"), ("RPUSH", k + ":l", 2), ("SET", k + ":b", "2")]),
               # a wrong arity is refused while queueing: EXEC aborts and none of it is applied
               Transaction([("SET", k + ":c", "3"), ("SET", k + ":d")]),
               # a command that fails when run fails alone (Valkey has no rollback): the rest is applied
               Transaction([("SET", k + ":s", "x"), ("INCR", k + ":s"), ("RPUSH", k + ":l", 3)])])
    assert wb.flush(10)
    s = wb.stats()
    wb.close()
    assert (s["submitted"], s["written"], s["dropped"], s["queued"]) == (4, 2, 0, 0)
    assert sum(s["errors"].values()) == 2
    assert client.lrange(k + ":l", 0, -1) == [b"1", b"2", b"3"]
    assert (client.get(k + ":a"), client.get(k + ":b"), client.get(k + ":c"), client.get(k + ":s")) == (
        b"1", b"2", None, b"x")


def test_full_queue_drops_oldest_while_down(own_valkey):
    srv = own_valkey(port=free_port("127.0.0.1"), start=False)
    wb = WriteBehind(srv.url, None, max_queue=50, chunk=20, **FAST_RECONNECT)
    n, per_call = 130, 13
    t = time.perf_counter()
    for i in range(0, n, per_call):
        wb.submit([("RPUSH", "wb:q", j) for j in range(i, i + per_call)])
    elapsed = time.perf_counter() - t
    try:
        s = wb.stats()
        assert elapsed < 0.25, elapsed  # vs. a 1 s socket timeout if submit touched the network
        assert (s["dropped"], s["queued"], s["connected"]) == (n - 50, 50, False)
        assert not wb.flush(0.2)
        srv.start()
        assert wb.flush(10)
        s = wb.stats()
        assert (s["written"], s["dropped"], s["connected"]) == (50, n - 50, True)
        c = connect(srv.url)
        assert c.lrange("wb:q", 0, -1) == [str(j).encode() for j in range(n - 50, n)]  # the newest 50
        c.close()
    finally:
        wb.close(1)


def test_close_while_down_gives_up_and_hides_password(caplog):
    caplog.set_level(logging.INFO)
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port('127.0.0.1')}/0"
    wb = WriteBehind(url, "s3cret-pw", **FAST_RECONNECT)
    wb.submit([("SET", "k", i) for i in range(40)])
    wait_for(lambda: wb.stats()["connection_errors"], 5, 0.01, "a failed connection")
    t = time.perf_counter()
    assert wb.close(0.2) is False
    assert time.perf_counter() - t < 3
    s = wb.stats()
    assert s["errors"] == {"unwritten at close": 40} and s["written"] == 0 and s["connection_errors"] >= 1
    assert "no connection to redis://:***@127.0.0.1" in caplog.text
    assert "s3cret-pw" not in caplog.text
