"""Analytics consumers over real ZeroMQ sockets on ephemeral ports, and the flow alert rules."""

import time

import numpy as np
import orjson
import pytest
import zmq

from pipelines.edges.consumers import Alert, FlowAlertSystem, FlowConsumer, LiquidityConsumer, MultiStreamConsumer
from pipelines.model.messages import FeatureVector, FlowState, FootprintState, LiquidityState, TapeSignal
from pipelines.edges.zmq import decode, encode
from tests.helpers import T0, wait_for

NAN = float("nan")
PROBE = "PROBE"


@pytest.fixture()
def pub():
    from pipelines.edges.zmq import ZmqPublisher

    p = ZmqPublisher({"flow": 0, "footprint": 0, "liquidity": 0, "tape": 0})
    yield p
    p.close()


def flow(seq, sym="WDOZ26", **values):
    return FlowState(sym, T0 + seq, T0 + seq, seq, values)


def liq(seq, sym="WDOZ26", **values):
    return LiquidityState(sym, T0 + seq, T0 + seq, seq, values)


def footprint(seq, closed, sym="WDOZ26"):
    bar = {"symbol": sym, "ts_open": T0, "open": 5400.0, "close": 5400.5 + seq, "volume": seq,
           "levels": [[5400.0, 1, 2, 3]]}
    return FootprintState(sym, T0 + seq, T0 + seq, seq, closed, bar)


def tape(seq, pattern="sweep", side=1, conf=0.9, sym="WDOZ26"):
    return TapeSignal(sym, T0 + seq, T0 + seq, seq, pattern, side, 5401.0, conf, {"levels": 3})


def wire(msg):
    """The payload a subscriber sees (NaN -> None)."""
    return decode(encode(msg))[1]


def pump(consumer, ms=20):
    if consumer.running:
        time.sleep(ms / 1000)
    else:
        consumer.poll(ms)


def pump_until(consumer, cond, timeout=5.0):
    """Pump the consumer until ``cond()`` holds."""
    wait_for(cond, timeout, 0, lambda: f"the condition; counts {consumer.counts()}", poll=lambda: pump(consumer))


def join(send, consumer):
    """Slow joiner: send probes until every stream has received one, drain the stragglers;
    the counts then, to subtract."""
    def probe():
        send()
        pump(consumer)

    wait_for(lambda: all(c["received"] for c in consumer.counts().values()), 5, 0, "the subscription to become live",
             poll=probe)
    before = consumer.counts()
    while True:
        pump(consumer, 50)
        now = consumer.counts()
        if now == before:
            return now
        before = now


def delta(consumer, base):
    return {s: {k: v - base[s][k] for k, v in c.items()} for s, c in consumer.counts().items()}


# -- FlowConsumer -----------------------------------------------------------------


def test_flow_consumer_ofi_measures_and_nan(pub):
    with FlowConsumer("WDOZ26", endpoint=pub.endpoints["flow"]) as fc:
        join(lambda: pub.publish([flow(0, ofi_ratio_5m=0.0)]), fc)
        pub.publish([flow(1, ofi_5m=-42.0, ofi_norm_5m=3.25, ofi_ratio_5m=-0.4, ofi_ratio_1m=NAN, ofi_norm_60m=1.5)])
        pump_until(fc, lambda: fc.latest()["seq"] == 1)
        assert fc.get_ofi("5m", "raw") == -42.0
        assert fc.get_ofi("5m") == 3.25  # norm by default
        assert fc.get_ofi("5m", "ratio") == -0.4
        assert fc.get_ofi("60m", "norm", symbol="WDOZ26") == 1.5
        assert fc.get_ofi("1m", "ratio") is None  # NaN on the wire
        assert fc.get_ofi("15m", "ratio") is None  # absent
        assert fc.get_ofi("5m", symbol="WINZ26") is None
        with pytest.raises(ValueError, match="window '2m'.*1m, 5m, 15m, 30m, 60m"):
            fc.get_ofi("2m")
        with pytest.raises(ValueError, match="measure 'z'.*raw, norm, ratio"):
            fc.get_ofi("5m", "z")


def test_flow_callbacks_in_order_and_a_raising_callback_is_counted(pub):
    with FlowConsumer("WDOZ26", endpoint=pub.endpoints["flow"]) as fc:
        base = join(lambda: pub.publish([flow(0)]), fc)
        seen = []

        def bad(p):
            if p["seq"] == 3:
                raise RuntimeError("user bug")

        fc.on_flow(lambda p: seen.append(p["seq"]))
        fc.on_flow(bad)
        pub.publish([flow(i, ofi_ratio_5m=i / 10) for i in range(1, 7)])
        pump_until(fc, lambda: delta(fc, base)["flow"]["received"] == 6)
        assert seen == [1, 2, 3, 4, 5, 6]  # every callback runs, in order
        assert delta(fc, base) == {"flow": {"received": 6, "processed": 5, "errors": 1}}
        assert fc.latest()["seq"] == 6 and fc.get_ofi("5m", "ratio") == 0.6


def test_symbol_filter_ignores_other_symbols(pub):
    with FlowConsumer("WDOZ26", endpoint=pub.endpoints["flow"]) as fc:
        base = join(lambda: pub.publish([flow(0)]), fc)
        pub.publish([flow(1, "WINZ26"), flow(2, "WDOZ26"), flow(3, "WINZ26"), flow(4, "WDOZ26X")])
        pub.publish([flow(5, "WDOZ26")])
        pump_until(fc, lambda: (fc.latest() or {}).get("seq") == 5)
        pump(fc, 50)
        assert fc.latest("WINZ26") is None and fc.latest("WDOZ26X") is None
        assert fc.latest("WDOZ26")["seq"] == 5
        assert delta(fc, base)["flow"] == {"received": 2, "processed": 2, "errors": 0}


def test_garbage_frames_are_counted_and_do_not_stop_the_consumer(caplog):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    try:
        with FlowConsumer(endpoint=sock.getsockopt_string(zmq.LAST_ENDPOINT)) as fc:
            base = join(lambda: sock.send_multipart(encode(flow(0))), fc)
            sock.send_multipart([b"flow.WDOZ26", b"{not json"])
            sock.send_multipart([b"flow.WDOZ26"])  # one frame only
            sock.send_multipart([b"flow.WDOZ26", b"[1, 2]"])  # not an object
            sock.send_multipart([b"flow.WDOZ26", orjson.dumps({"kind": "tape", "symbol": "WDOZ26"})])  # wrong kind
            sock.send_multipart(encode(flow(9, ofi_ratio_5m=0.5)))
            pump_until(fc, lambda: delta(fc, base)["flow"]["received"] == 5)
            assert delta(fc, base) == {"flow": {"received": 5, "processed": 1, "errors": 4}}
            assert fc.get_ofi("5m", "ratio") == 0.5
            errors_logged = [r for r in caplog.records if r.name == "quantumtrader.consumers"]
            assert len(errors_logged) == 1  # rate-limited: the first error only, within LOG_EVERY_S
    finally:
        sock.close()


# -- LiquidityConsumer ------------------------------------------------------------


def test_liquidity_profile_matches_numpy_and_skips_nulls(pub):
    rng = np.random.default_rng(7)
    n = 40
    spread = rng.integers(1, 5, n).astype(float)
    depth = rng.integers(10, 500, n).astype(float)
    imb = rng.uniform(-1, 1, n)
    score = rng.uniform(0, 1, n)
    spread[[3, 17]] = NAN
    depth[[5]] = NAN
    imb[[0, 1, 2]] = NAN
    score[-1] = NAN  # the latest score is the last non-null one
    rows = zip(spread.tolist(), depth.tolist(), imb.tolist(), score.tolist())
    msgs = [liq(i, spread_ticks=s, depth=d, book_imbalance=b, liquidity_score=q, mid=5400.0)
            for i, (s, d, b, q) in enumerate(rows, 1)]
    with LiquidityConsumer(endpoint=pub.endpoints["liquidity"]) as lc:
        join(lambda: pub.publish([liq(0, PROBE, spread_ticks=99.0)]), lc)
        pub.publish(msgs)
        pump_until(lc, lambda: (lc.latest("WDOZ26") or {}).get("seq") == n)
        prof = lc.profile("WDOZ26")
        assert prof["samples"] == n
        assert prof["spread_ticks_mean"] == pytest.approx(np.nanmean(spread))
        assert prof["spread_ticks_min"] == np.nanmin(spread) and prof["spread_ticks_max"] == np.nanmax(spread)
        assert prof["depth_mean"] == pytest.approx(np.nanmean(depth))
        assert prof["depth_min"] == np.nanmin(depth) and prof["depth_max"] == np.nanmax(depth)
        assert prof["book_imbalance_mean"] == pytest.approx(np.nanmean(imb))
        assert prof["liquidity_score"] == pytest.approx(score[-2])
        assert prof["missing"] == {"spread_ticks": 2, "depth": 1, "book_imbalance": 3, "liquidity_score": 1}
        assert lc.profile() == prof  # default: the last symbol seen
        assert lc.profile("WINZ26") is None
        assert lc.profile(PROBE)["spread_ticks_max"] == 99.0


# -- MultiStreamConsumer ----------------------------------------------------------


def probes():
    names = ("x",)
    return [flow(0, PROBE), liq(0, PROBE), footprint(0, False, PROBE), tape(0, sym=PROBE),
            FeatureVector(PROBE, T0, T0, 0, 1.0, 1, 1, names, (0.0,))]


def publish_session(pub):
    names = ("ret_1", "vol_5")
    feats = [FeatureVector("WDOZ26", T0 + i, T0 + i, i, 5400.0, 2, 1, names, (0.1 * i, NAN)) for i in (1, 2)]
    pub.publish([flow(1, ofi_ratio_5m=0.2), flow(2, ofi_ratio_5m=0.3), flow(3, ofi_ratio_5m=0.4)] + feats)
    pub.publish([footprint(1, False), footprint(2, True), footprint(3, True), footprint(4, False)])
    pub.publish([liq(i, spread_ticks=float(i)) for i in range(1, 6)])
    pub.publish([tape(i, "sweep" if i % 2 else "iceberg", side=-1) for i in range(1, 7)])
    pub.publish([flow(1, "WINZ26"), liq(10, "WINZ26"), tape(11, sym="WINZ26")])


EXPECTED = {"flow": 6, "footprint": 4, "liquidity": 6, "tape": 7}


def check_session(msc, base):
    total = sum(EXPECTED.values())
    pump_until(msc, lambda: sum(c["received"] for c in delta(msc, base).values()) == total)
    assert delta(msc, base) == {s: {"received": n, "processed": n, "errors": 0} for s, n in EXPECTED.items()}
    v = msc.view("WDOZ26")
    assert v["flow"] == {"ofi_ratio_5m": 0.4}
    assert v["liquidity"] == {"spread_ticks": 5.0}
    assert v["footprint"]["close"] == 5404.5 and v["closed_bars"] == 2
    assert [t["seq"] for t in v["tape"]] == [3, 4, 5, 6]  # tape_history=4
    assert v["tape"][-1]["pattern"] == "iceberg" and v["tape"][-1]["side"] == -1
    assert v["features"] == {"ret_1": pytest.approx(0.2), "vol_5": None}
    assert v["ts_event"] == T0 + 6
    w = msc.view("WINZ26")
    assert w["ts_event"] == T0 + 11 and w["features"] is None and len(w["tape"]) == 1
    assert msc.view("NOPE") == {"flow": None, "liquidity": None, "footprint": None, "closed_bars": 0,
                                "tape": [], "features": None, "ts_event": None}


def test_multistream_view_and_exact_counts(pub):
    with MultiStreamConsumer(endpoints=pub.endpoints, include_features=True, tape_history=4) as msc:
        base = join(lambda: pub.publish(probes()), msc)
        publish_session(pub)
        check_session(msc, base)
        assert msc.symbols() == [PROBE, "WDOZ26", "WINZ26"]


def test_multistream_background_thread(pub):
    msc = MultiStreamConsumer(endpoints=pub.endpoints, include_features=True, tape_history=4).start()
    try:
        assert msc.running
        with pytest.raises(RuntimeError):
            msc.poll()
        base = join(lambda: pub.publish(probes()), msc)
        publish_session(pub)
        check_session(msc, base)
        msc.stop()
        assert not msc.running
        pub.publish([flow(7, ofi_ratio_5m=0.9)])
        assert msc.poll(2000) == 1  # the sockets go on in the caller's thread
        assert msc.view("WDOZ26")["flow"] == {"ofi_ratio_5m": 0.9}
    finally:
        msc.close()


def test_multistream_without_features_does_not_subscribe_them(pub):
    with MultiStreamConsumer(symbols=["WDOZ26"], endpoints=pub.endpoints) as msc:
        base = join(lambda: pub.publish([m._replace(symbol="WDOZ26") for m in probes()]), msc)
        pub.publish([FeatureVector("WDOZ26", T0, T0, 1, 1.0, 1, 1, ("a",), (1.0,)), flow(1, ofi_ratio_5m=0.1)])
        pump_until(msc, lambda: delta(msc, base)["flow"]["received"] >= 1)
        pump(msc, 50)
        assert delta(msc, base)["flow"] == {"received": 1, "processed": 1, "errors": 0}
        with pytest.raises(ValueError):
            msc.on("features", print)


# -- FlowAlertSystem --------------------------------------------------------------


def test_ofi_alerts_with_hysteresis():
    fa = FlowAlertSystem()
    seq = [0.1, 0.75, 0.8, 0.5, 0.72, -0.71, -0.9, None, -0.3, -0.7, 0.69, 0.7]
    got = {}
    for i, x in enumerate(seq):
        alerts = fa.process("flow", wire(flow(i, ofi_ratio_5m=NAN if x is None else x)))
        if alerts:
            got[i] = [(a.kind, a.side, a.value, a.threshold) for a in alerts]
    assert got == {1: [("ofi", 1, 0.75, 0.7)], 4: [("ofi", 1, 0.72, 0.7)], 5: [("ofi", -1, -0.71, 0.7)],
                   9: [("ofi", -1, -0.7, 0.7)], 11: [("ofi", 1, 0.7, 0.7)]}
    assert fa.counts == {"ofi": 5}


def test_ofi_hysteresis_is_per_symbol_and_uses_the_configured_window():
    fa = FlowAlertSystem(ofi_threshold=0.5, ofi_window="15m")
    assert fa.process("flow", wire(flow(1, "WDOZ26", ofi_ratio_15m=0.6, ofi_ratio_5m=0.99)))[0].symbol == "WDOZ26"
    assert fa.process("flow", wire(flow(2, "WINZ26", ofi_ratio_15m=0.6)))[0].symbol == "WINZ26"
    assert fa.process("flow", wire(flow(3, "WDOZ26", ofi_ratio_15m=0.9))) == []
    assert fa.process("flow", wire(flow(4, "WDOZ26", ofi_ratio_5m=0.9))) == []  # 15m absent: no alert
    with pytest.raises(ValueError):
        FlowAlertSystem(ofi_window="2m")


def large(seq, n, ratio, base, delta=0):
    return wire(flow(seq, orders_n_1m=n, large_trade_ratio_1m=ratio, large_trade_ratio_60m=base, delta_1m=delta))


def test_large_trade_spikes():
    fa = FlowAlertSystem()  # factor 3, min ratio 0.1, min orders 5
    cases = [
        (large(1, 10, 0.25, 0.125), False),  # 0.25 < 3 x 0.125
        (large(2, 10, 0.375, 0.125, delta=-7), True),  # 0.375 >= 0.375: spike, sell side
        (large(3, 10, 0.50, 0.125), False),  # same excursion
        (large(4, 10, 0.20, 0.125), False),  # re-armed
        (large(5, 4, 0.90, 0.125), False),  # too few orders (and re-armed)
        (large(6, 5, 0.90, 0.125, delta=3), True),
        (large(7, 5, 0.05, NAN), False),  # baseline null: min ratio 0.1 only
        (large(8, 5, 0.12, NAN), True),
        (large(9, 5, NAN, NAN), False),  # null never alerts
        (large(10, NAN, 0.9, NAN), False),
    ]
    alerts = []
    for payload, expect in cases:
        got = fa.process("flow", payload)
        assert bool(got) == expect, payload["seq"]
        alerts += got
    assert [(a.ts_event - T0, a.side, a.value, a.threshold) for a in alerts] == [
        (2, -1, 0.375, 0.375), (6, 1, 0.90, 0.375), (8, 0, 0.12, 0.1)]
    assert all(a.kind == "large_trades" for a in alerts) and fa.counts == {"large_trades": 3}


def test_sweep_and_iceberg_confidence_filter():
    fa = FlowAlertSystem(min_pattern_confidence=0.6)
    seen = []
    fa.on_alert(seen.append)
    out = [fa.process("tape", wire(t)) for t in (
        tape(1, "sweep", 1, 0.59), tape(2, "sweep", 1, 0.6), tape(3, "iceberg", -1, 0.95), tape(4, "iceberg", -1, NAN))]
    assert [len(o) for o in out] == [0, 1, 1, 0]
    assert [(a.kind, a.side, a.value) for a in seen] == [("sweep", 1, 0.6), ("iceberg", -1, 0.95)]
    assert "sweep buy at 5401.0" in seen[0].message and "iceberg sell at 5401.0" in seen[1].message
    assert fa.counts == {"sweep": 1, "iceberg": 1}
    assert fa.process("liquidity", wire(liq(5, spread_ticks=1.0))) == []


def test_alerts_end_to_end_over_sockets(pub):
    with MultiStreamConsumer(endpoints=pub.endpoints) as msc:
        fa = FlowAlertSystem(msc)
        base = join(lambda: pub.publish(probes()), msc)  # the probe sweeps alert too: before we listen
        alerts: list[Alert] = []
        fa.on_alert(alerts.append)
        pub.publish([flow(1, ofi_ratio_5m=0.8), flow(2, ofi_ratio_5m=0.9), tape(3, "iceberg", -1, 0.7),
                     tape(4, "sweep", 1, 0.1), flow(5, ofi_ratio_5m=-0.75)])
        pump_until(msc, lambda: len(alerts) == 3)
        pump(msc, 50)
        assert sorted((a.kind, a.side, a.ts_event - T0) for a in alerts) == [
            ("iceberg", -1, 3), ("ofi", -1, 5), ("ofi", 1, 1)]
        assert delta(msc, base)["flow"] == {"received": 3, "processed": 3, "errors": 0}
