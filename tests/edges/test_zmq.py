"""ZeroMQ edge: a subscriber that knows only pyzmq receives and decodes ticks and book."""

import time

import orjson
import zmq

from pipelines.model.messages import BookSnapshot, Trade
from pipelines.edges.zmq import PORTS, ZmqPublisher
from tests.helpers import wait_for


def test_port_registry_has_one_owner_per_port():
    assert PORTS["tick"] == 5555 and PORTS["book"] == 5556 and PORTS["decision"] == 5561
    assert len(set(PORTS.values())) == len(PORTS)


def test_plain_pyzmq_subscriber_receives_and_decodes():
    pub = ZmqPublisher({"tick": 0, "book": 0})
    assert pub.endpoints["tick"].startswith("tcp://127.0.0.1:")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(pub.endpoints["tick"])
    sub.connect(pub.endpoints["book"])
    sub.setsockopt(zmq.SUBSCRIBE, b"tick.")
    sub.setsockopt(zmq.SUBSCRIBE, b"book.WDOZ26")
    now = time.time_ns()
    tr = Trade("WDOZ26", now, now, 7, 5401.5, 3, 2, 85, 3, 1234)
    bk = BookSnapshot("WDOZ26", now, now, 8, (5401.0, 5400.5), (4, 9), (5401.5,), (2,))
    other = Trade("WINZ26", now, now, 1, 125005.0, 1, 3)
    got = []

    def publish_and_read():  # slow joiner: publish until the subscription is live
        pub.publish([tr, bk, other])
        while sub.poll(50):
            got.append(sub.recv_multipart())

    wait_for(lambda: len(got) >= 3, 5, 0, "the subscription to come up", poll=publish_and_read)
    sub.close()
    ctx.term()
    pub.close()
    by_topic = {f[0]: orjson.loads(f[1]) for f in got}
    assert by_topic[b"tick.WDOZ26"] == {
        "kind": "tick", "symbol": "WDOZ26", "ts_event": now, "ts_recv": now, "seq": 7, "price": 5401.5,
        "qty": 3, "trade_type": 2, "buyer": 85, "seller": 3, "trade_id": 1234,
    }
    assert by_topic[b"book.WDOZ26"]["bid_px"] == [5401.0, 5400.5]
    assert by_topic[b"book.WDOZ26"]["ask_qty"] == [2]
    assert b"tick.WINZ26" in by_topic


def test_slow_subscriber_never_blocks_the_publisher():
    pub = ZmqPublisher({"tick": 0}, sndhwm=10)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 10)
    sub.connect(pub.endpoints["tick"])
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    time.sleep(0.3)
    now = time.time_ns()
    evs = [Trade("WDOZ26", now, now, i, 5400.0, 1, 2) for i in range(1, 50_001)]
    t = time.perf_counter()
    pub.publish(evs)  # nobody reads meanwhile: must return, libzmq drops at the HWM
    assert time.perf_counter() - t < 10
    got = []
    while sub.poll(200):
        got.append(orjson.loads(sub.recv_multipart()[1])["seq"])
    sub.close(); ctx.term(); pub.close()
    assert 0 < len(got) < 50_000  # some arrived, the rest were dropped for this slow reader
    assert got == sorted(got)  # what arrives is in order; gaps show in seq


def test_orders_fills_and_positions_ride_the_decision_socket():
    from pipelines.model.orders import AccountSummary, Fill, Order, OrderEvent, Position, RiskEvent

    pub = ZmqPublisher({"decision": 0})
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(pub.endpoints["decision"])
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    t = 1_795_000_000_000_000_000
    order = Order("acct/run/WDOZ26-7:entry", "acct", "WDOZ26", t, "BUY", 2, "LIMIT", 5400.5)
    event = OrderEvent(order.client_order_id, "acct", "WDOZ26", t + 5, "ACCEPTED", 0, 2, float("nan"))
    fill = Fill(order.client_order_id + "#1", order.client_order_id, "acct", "WDOZ26", t + 9, "BUY", 2, 5400.0,
                "taker", 2.19996, "WDOZ26-7")
    pos = Position("acct", "WDOZ26", t + 9, 2, 5400.0, 5400.0, 0.0, 0.0, 2.19996)
    summary = AccountSummary("acct", t + 9, 0.0, 2.19996, -2.19996, 108000.0, 1)
    halt = RiskEvent("acct", "", t + 10, "state", "HALTED", "manual halt", who="ops@desk")
    got = []

    def publish_and_read():  # slow joiner: publish until the subscription is live
        got.clear()
        pub.publish([order, event, fill, pos, summary, halt])
        while sub.poll(50):
            got.append(sub.recv_multipart())

    wait_for(lambda: len(got) >= 6, 5, 0, "the subscription to come up", poll=publish_and_read)
    stats = pub.stats()
    sub.close()
    ctx.term()
    pub.close()
    frames = [(f[0], orjson.loads(f[1])) for f in got[:6]]
    # an order and its events share order.<SYM>; an account-wide message is named by its account
    assert [(topic, m["kind"]) for topic, m in frames] == [
        (b"order.WDOZ26", "order"), (b"order.WDOZ26", "order_event"), (b"fill.WDOZ26", "fill"),
        (b"position.WDOZ26", "position"), (b"account.acct", "account"), (b"risk.acct", "risk")]
    assert frames[1][1]["avg_fill_price"] is None  # NaN travels as null
    assert (frames[2][1]["price"], frames[2][1]["fees"]) == (5400.0, 2.19996)
    assert stats["unroutable"] == 0  # and no latency sample: they carry no receipt time
