"""Property tests of the pipeline's entrance: the Validator and the bridge's row decoder.

Events are drawn with every field either good or junk (None, str, bytes, NaN/inf,
negatives, bools, numpy numbers, huge ints, nested lists/dicts, wrong-length arrays,
objects that raise on everything). The properties:

(a) ``Validator.filter`` / ``flush`` and ``decode_rows`` (+ validation) never raise
    (``decode_rows`` only ever raises its documented ProtocolError);
(b) every input is accepted, rejected under one reason, or held:
    accepted + sum(rejected) + held == inputs;
(c) good events interleaved with bad ones come out unchanged and in order;
(d) accepted events have exact builtin types (int times and quantities, float
    prices, tuple arrays).

The expected output and counts are computed here from how each input was drawn,
never from the code under test. Deterministic (derandomized) and quick.
"""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.data import validation as V
from pipelines.adapters.bridge import protocol as P
from pipelines.model.messages import TRADE_TYPE_CODES, BookSnapshot, BookUpdate, Trade, TradeType
from tests.helpers import T0

SYMBOLS = ("WDOZ26", "WINZ26")
STREAM = "WDOZ26"
MS = 1_000_000
S = 1_000 * MS
TOL = 50 * MS
GAP = 7 * 86_400 * S  # the Validator's default max_forward_gap_ns
I64 = 2**63
CODES = sorted(TRADE_TYPE_CODES)

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

EXACT = {
    Trade: (str, int, int, int, float, int, int, int, int, int),
    BookSnapshot: (str, int, int, int, tuple, tuple, tuple, tuple),
    BookUpdate: (str, int, int, int, int, int, int, float, int, int, int),
}


class Nasty:
    """Raises on everything a validator might try: compare, hash, repr, len, iterate, convert, isinstance."""

    def _raise(self, *args):
        raise RuntimeError("nasty")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __repr__ = __len__ = __iter__ = _raise
    __getitem__ = __index__ = __int__ = __float__ = __bool__ = _raise
    __hash__ = None  # unhashable (Hypothesis hashes what it samples, and expects a TypeError then)

    @property
    def __class__(self):
        raise RuntimeError("nasty")


NASTY = Nasty()


@st.composite
def pick(draw, values):
    """One of ``values``; unlike sampled_from it never inspects them (NASTY raises on isinstance)."""
    return values[draw(st.integers(0, len(values) - 1))]


def assert_exact_types(ev):
    assert tuple(map(type, ev)) == EXACT[type(ev)]
    if type(ev) is BookSnapshot:
        for arr, t in zip(ev[4:], (float, int, float, int)):
            assert all(type(x) is t for x in arr)


def total(v: V.Validator) -> int:
    s = v.stats()
    return s["accepted"] + sum(s["rejected"].values()) + s["held"]


# -- good values ------------------------------------------------------------------------

ids = st.integers(-I64, I64 - 1)
qtys = st.integers(1, 10**6)
prices = st.integers(1, 400_000).map(lambda k: k * 0.5)


@st.composite
def book_arrays(draw):
    """Two sides that are strictly ordered, positive and neither crossed nor locked."""
    mid = draw(st.integers(100, 400_000)) * 0.5
    bid_ticks = sorted(draw(st.sets(st.integers(1, 60), max_size=10)))
    ask_ticks = sorted(draw(st.sets(st.integers(0, 60), max_size=10)))
    bq = tuple(draw(st.lists(qtys, min_size=len(bid_ticks), max_size=len(bid_ticks))))
    aq = tuple(draw(st.lists(qtys, min_size=len(ask_ticks), max_size=len(ask_ticks))))
    return tuple(mid - 0.5 * t for t in bid_ticks), bq, tuple(mid + 0.5 * t for t in ask_ticks), aq


@st.composite
def good_event(draw, symbol, ts, recv):
    kind = draw(st.sampled_from((Trade, BookSnapshot, BookUpdate)))
    if kind is Trade:
        return Trade(symbol, ts, recv, 0, draw(prices), draw(qtys), draw(st.sampled_from(CODES)), draw(ids), draw(ids),
                     draw(ids))
    if kind is BookSnapshot:
        return BookSnapshot(symbol, ts, recv, 0, *draw(book_arrays()))
    return BookUpdate(symbol, ts, recv, 0, draw(st.integers(0, 1)), draw(st.integers(0, 4)),
                      draw(st.integers(0, 2**31 - 1)), draw(prices), draw(st.integers(0, 10**6)), draw(ids), draw(ids))


@st.composite
def presented(draw, ev):
    """``ev`` as a source might hand it over: some numbers numpy (or IntEnum), some arrays lists.
    The Validator should give back ``ev`` itself, with exact builtin types."""
    if not draw(st.booleans()):
        return ev
    out = []
    for i, x in enumerate(ev):
        if i == 0 or not draw(st.booleans()):
            out.append(x)
        elif type(x) is int:
            out.append(TradeType(x) if type(ev) is Trade and i == 6 else np.int64(x))
        elif type(x) is float:
            out.append(np.float64(x))
        else:  # a book array
            conv = np.int64 if x and type(x[0]) is int else np.float64
            out.append([conv(v) for v in x])
    return tuple.__new__(type(ev), out)


# -- junk values, and the reason each one must be rejected with ---------------------------------

ANY_NUMBER_JUNK = [None, "1", b"1", [], {}, [1], {"a": 1}, 1 + 2j, Decimal("1"), NASTY, object(), math.nan]
INT_JUNK = ANY_NUMBER_JUNK + [True, False, 1.5, 2.0, np.float64(3.0), np.bool_(True), I64, 2**70, -(2**70)]
TS_JUNK = INT_JUNK + [0, -1, np.int64(-5)]
NONNEG_JUNK = INT_JUNK + [-1, np.int64(-1)]
PRICE_JUNK = ANY_NUMBER_JUNK + [True, False, 0.0, -1.0, -0.5, math.inf, -math.inf, 10**400, np.float64("nan"),
                                np.float64(-1.0), np.float32("inf"), 0, "5400.0", [5400.0], (5400.0,)]
POS_QTY_JUNK = INT_JUNK + [0, -1, np.int64(0)]
SYMBOL_JUNK = [(None, V.BAD_SYMBOL), (5, V.BAD_SYMBOL), ("", V.BAD_SYMBOL), (b"WDOZ26", V.BAD_SYMBOL),
               (["WDOZ26"], V.BAD_SYMBOL), (NASTY, V.BAD_SYMBOL), ("PETR4", V.UNKNOWN_SYMBOL),
               ("wdoz26", V.UNKNOWN_SYMBOL)]
ID_JUNK = ANY_NUMBER_JUNK + [True, 1.5, I64, -I64 - 1]

# field index -> (junk values, reason), per event type (symbol, index 0, separately)
HEADER_JUNK = {1: (TS_JUNK, V.BAD_TIMESTAMP), 2: (NONNEG_JUNK, V.BAD_FIELD), 3: (NONNEG_JUNK, V.BAD_FIELD)}
FIELD_JUNK = {
    Trade: {**HEADER_JUNK, 4: (PRICE_JUNK, V.BAD_PRICE), 5: (POS_QTY_JUNK, V.BAD_QTY),
            6: (ANY_NUMBER_JUNK + [True, 2.0, 19, 31, 99, -1, 256, np.int64(99)], V.UNKNOWN_TRADE_TYPE),
            7: (ID_JUNK, V.BAD_FIELD), 8: (ID_JUNK, V.BAD_FIELD), 9: (ID_JUNK, V.BAD_FIELD)},
    BookSnapshot: HEADER_JUNK,
    BookUpdate: {**HEADER_JUNK, 4: (ANY_NUMBER_JUNK + [2, -1, True, 0.0, np.int64(3)], V.BAD_SIDE),
                 5: (ANY_NUMBER_JUNK + [5, -1, True, 1.0], V.BAD_ACTION),
                 6: (INT_JUNK + [-1, 2**31], V.BAD_FIELD), 7: (PRICE_JUNK, V.BAD_PRICE),
                 8: (NONNEG_JUNK, V.BAD_QTY), 9: (ID_JUNK, V.BAD_FIELD), 10: (ID_JUNK, V.BAD_FIELD)},
}
NOT_AN_ARRAY = [None, 5, 1.5, "abc", {1.0: 2}, NASTY, object(), np.array([1.0]), range(2)]
QTY_ELEMENT_JUNK = POS_QTY_JUNK


def put(seq, i, x):
    out = list(seq)
    out[i] = x
    return type(seq)(out) if type(seq) is tuple else out


@st.composite
def bad_book(draw, ev):
    """``ev`` (a good BookSnapshot) with one thing wrong in its arrays, and the reason."""
    bp, bq, ap, aq = ev[4:]
    sides = [(4, bp, bq, True), (6, ap, aq, False)]
    options = ["not_array", "longer"]
    if bp or ap:
        options += ["price", "qty"]
    if len(bp) >= 2 or len(ap) >= 2:
        options.append("unsorted")
    if bp and ap:
        options += ["crossed", "locked"]
    what = draw(st.sampled_from(options))
    arrays = list(ev[4:])
    if what == "not_array":
        arrays[draw(st.integers(0, 3))] = draw(pick(NOT_AN_ARRAY))
        reason = V.BAD_BOOK_SHAPE
    elif what == "longer":
        k = draw(st.sampled_from((0, 2)))
        arrays[k] = arrays[k] + (arrays[k][-1] - 0.5 if arrays[k] else 1.0,)
        reason = V.BAD_BOOK_SHAPE
    elif what in ("price", "qty"):
        k, px, qty, _ = draw(st.sampled_from([s for s in sides if s[1]]))
        if what == "price":
            arrays[k - 4] = put(px, draw(st.integers(0, len(px) - 1)), draw(pick(PRICE_JUNK)))
            reason = V.BAD_PRICE
        else:
            arrays[k - 3] = put(qty, draw(st.integers(0, len(qty) - 1)), draw(pick(QTY_ELEMENT_JUNK)))
            reason = V.BAD_QTY
    elif what == "unsorted":
        k, px, _, _ = draw(st.sampled_from([s for s in sides if len(s[1]) >= 2]))
        arrays[k - 4], reason = px[::-1], V.UNSORTED_BOOK
    else:  # the best bid at or above the best ask; the bid side stays ordered
        arrays[0] = put(bp, 0, ap[0] + (0.5 if what == "crossed" else 0.0))
        reason = V.CROSSED_BOOK if what == "crossed" else V.LOCKED_BOOK
    return tuple.__new__(BookSnapshot, (*ev[:4], *arrays)), reason


@st.composite
def bad_event(draw, ev):
    """``ev`` (a good event) with one field junk, and the reason it must be rejected with."""
    fields = FIELD_JUNK[type(ev)]
    choices = ["symbol", *fields]
    if type(ev) is BookSnapshot:
        choices.append("book")
    what = draw(st.sampled_from(choices))
    if what == "symbol":
        junk, reason = draw(pick(SYMBOL_JUNK))
        return tuple.__new__(type(ev), (junk, *ev[1:])), reason
    if what == "book":
        return draw(bad_book(ev))
    values, reason = fields[what]
    return tuple.__new__(type(ev), put(ev, what, draw(pick(values)))), reason


# What JSON (orjson) can carry: ints within i64/u64, text without lone surrogates; NaN/inf become null.
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
json_ints = st.integers(-(2**63), 2**64 - 1)
json_like = st.recursive(
    st.none() | st.booleans() | json_ints | st.floats() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=3),
    max_leaves=12,
)
not_an_event = json_like | pick([NASTY, object(), b"\x00\x01", 3 + 4j, Decimal("nan"), np.int64(1),
                                            np.float64("nan"), ("WDOZ26", T0, T0, 0, 5400.0, 1, 2)])


# -- a stream of good and bad events, with its expected outcome --------------------------------


@st.composite
def scenario(draw, max_ahead):
    """Events for SYMBOLS mixing good ones (times arranged to be valid) with junk and with
    time faults. Returns (inputs, the good events as they must come out, expected rejections,
    expected held before flush)."""
    hwm: dict[str, int] = {}
    pending_jump = {s: 0 for s in SYMBOLS}  # unconfirmed jumps held per symbol (never 3 that agree)
    jumps = Counter()
    inputs, good, rejected = [], [], Counter()
    for _ in range(draw(st.integers(0, 40))):
        sym = draw(st.sampled_from(SYMBOLS))
        last = hwm.get(sym)
        kinds = ["good", "good", "good", "bad", "not_event"]
        if last is not None:
            kinds += ["backwards", "jump"]
        if max_ahead is not None:
            kinds.append("future")
        kind = draw(st.sampled_from(kinds))
        if last is None:
            ts = T0 + draw(st.integers(0, 10**15))
        else:
            ts = last + draw(st.one_of(st.integers(-TOL, 10 * S), st.integers(-TOL, GAP)))
        if max_ahead is None:
            recv = draw(st.integers(0, I64 - 1))
        else:
            recv = ts + draw(st.integers(-max_ahead, S))  # ts - recv <= max_ahead
        if kind == "good":
            ev = draw(good_event(sym, ts, recv))
            inputs.append(draw(presented(ev)))
            good.append(ev)
            rejected[V.TIME_JUMP] += pending_jump[sym]  # the normal range: a held jump was not real
            pending_jump[sym] = 0
            hwm[sym] = max(ts, last if last is not None else ts)
        elif kind == "bad":
            ev, reason = draw(bad_event(draw(good_event(sym, ts, recv))))
            inputs.append(ev)
            rejected[reason] += 1
        elif kind == "not_event":
            inputs.append(draw(not_an_event))
            rejected[V.UNKNOWN_EVENT] += 1
        elif kind == "backwards":
            ts = last - TOL - draw(st.integers(1, 10**12))
            inputs.append(draw(good_event(sym, ts, ts)))
            rejected[V.TIME_BACKWARDS] += 1
        elif kind == "jump":
            # Far beyond the gap, and 10 gaps past any earlier jump of the symbol: never agrees
            # with a held one, so it replaces it (that one: time_jump) and is itself held.
            jumps[sym] += 1
            ts = last + (jumps[sym] + 1) * 10 * GAP
            inputs.append(draw(good_event(sym, ts, ts)))
            rejected[V.TIME_JUMP] += pending_jump[sym]
            pending_jump[sym] = 1
        else:  # future: stamped further ahead of its receipt than the clock bound allows
            inputs.append(draw(good_event(sym, ts, ts - max_ahead - draw(st.integers(1, 10**12)))))
            rejected[V.FUTURE_TIME] += 1
    held = sum(pending_jump.values())
    rejected[V.TIME_JUMP] += held  # flush() decides them: unconfirmed
    return inputs, good, rejected, held


def chunks(items, sizes):
    i = 0
    for n in sizes:
        yield items[i:i + n]
        i += n
    yield items[i:]


@FUZZ
@given(st.sampled_from([None, 2 * S]).flatmap(lambda a: st.tuples(st.just(a), scenario(a))),
       st.lists(st.integers(0, 12), max_size=6))
def test_good_events_pass_unchanged_and_every_bad_one_is_counted_with_its_reason(case, sizes):
    max_ahead, (inputs, good, rejected, held) = case
    v = V.Validator(TOL, symbols=SYMBOLS, max_ahead_ns=max_ahead)
    out = []
    for part in chunks(inputs, sizes):  # state carries across calls
        out += v.filter(part)
    assert total(v) == len(inputs)
    assert v.stats()["held"] == held
    out += v.flush()
    assert v.stats()["held"] == 0 and total(v) == len(inputs)
    assert out == good
    assert v.rejected == rejected
    for ev in out:
        assert_exact_types(ev)


@st.composite
def anything_event(draw):
    """A Trade/BookSnapshot/BookUpdate (or a wrong-length tuple of its type) with each field
    drawn from good values or junk, or something that is no event at all."""
    cls = draw(st.sampled_from((Trade, BookSnapshot, BookUpdate)))
    which = draw(st.sampled_from(["fields", "fields", "length", "other"]))
    if which == "other":
        return draw(not_an_event)
    n = len(cls._fields) if which == "fields" else draw(st.integers(0, 14))
    good = draw(good_event(draw(st.sampled_from(SYMBOLS)), T0 + draw(st.integers(0, 10**12)), T0))
    fields = []
    for i in range(n):
        if i < len(good) and type(good) is cls and draw(st.booleans()):
            fields.append(good[i])
        else:
            fields.append(draw(pick(TS_JUNK + PRICE_JUNK + NOT_AN_ARRAY) | json_like))
    return tuple.__new__(cls, fields)


@FUZZ
@given(st.lists(anything_event(), max_size=30), st.booleans())
def test_filter_never_raises_and_counts_every_input_whatever_it_is(events, with_symbols):
    v = V.Validator(TOL, symbols=SYMBOLS if with_symbols else None, max_ahead_ns=S if with_symbols else None)
    out = v.filter(events)
    out += v.flush()
    assert v.accepted == len(out)
    assert total(v) == len(events) and v.stats()["held"] == 0
    for ev in out:
        assert_exact_types(ev)


# -- the bridge's wire rows ------------------------------------------------------------------------

# JSON-safe junk per row position (row = [kind, ts_event, ts_recv, *fields after seq]).
JSON_JUNK = [None, "1", "", [], {}, [1], {"a": 1}, [[1.0]], math.nan, math.inf]
JSON_INT_JUNK = JSON_JUNK + [True, False, 1.5, I64, 2**64 - 1]
JSON_PRICE_JUNK = JSON_JUNK + [True, 0.0, -1.0, 0, "5400.0", [5400.0]]
JSON_ARRAY_JUNK = [None, 5, 1.5, True, "abc", {"a": 1}, [None], [[1.0]], ["1"], [-1.0], [math.nan], [0], [True]]
ROW_JUNK = {
    0: {1: JSON_INT_JUNK + [0, -1], 2: JSON_INT_JUNK, 3: JSON_PRICE_JUNK, 4: JSON_INT_JUNK + [0, -1],
        5: JSON_INT_JUNK + [19, 99, -1], 6: JSON_INT_JUNK, 7: JSON_INT_JUNK, 8: JSON_INT_JUNK},
    1: {1: JSON_INT_JUNK + [0, -1], 2: JSON_INT_JUNK, 3: JSON_ARRAY_JUNK, 4: JSON_ARRAY_JUNK, 5: JSON_ARRAY_JUNK,
        6: JSON_ARRAY_JUNK},
    2: {1: JSON_INT_JUNK + [0, -1], 2: JSON_INT_JUNK, 3: JSON_INT_JUNK + [2, -1], 4: JSON_INT_JUNK + [5, -1],
        5: JSON_INT_JUNK + [-1, 2**31], 6: JSON_PRICE_JUNK, 7: JSON_INT_JUNK + [-1], 8: JSON_INT_JUNK,
        9: JSON_INT_JUNK},
}
not_a_kind = st.one_of(json_ints.filter(lambda k: k not in (0, 1, 2)), st.booleans(), st.floats(), text, st.none(),
                       st.lists(st.integers(0, 2), max_size=2))


@st.composite
def wire_scenario(draw):
    """Rows of one stream: good events' rows (times valid) among junk rows. Returns (rows, good events, bad count)."""
    rows, good, bad = [], [], 0
    last = None
    for _ in range(draw(st.integers(0, 30))):
        ts = T0 + draw(st.integers(0, 10**12)) if last is None else last + draw(st.integers(0, 10 * S))
        ev = draw(good_event(STREAM, ts, draw(st.integers(0, I64 - 1))))
        row = list(P.encode_rows([ev])[0])
        kind = draw(st.sampled_from(["good", "good", "field", "length", "kind", "json"]))
        if kind == "good":
            rows.append(row)
            good.append(ev)
            last = ts
            continue
        bad += 1
        if kind == "field":
            i = draw(st.sampled_from(sorted(ROW_JUNK[row[0]])))
            row[i] = draw(st.sampled_from(ROW_JUNK[row[0]][i]))
        elif kind == "length":
            row = row[:draw(st.integers(0, len(row) - 1))] if draw(st.booleans()) else row + draw(
                st.lists(json_like, min_size=1, max_size=3))
        elif kind == "kind":
            row[0] = draw(not_a_kind)
        else:  # any JSON value; a list is made to lead with something that is no kind code
            row = draw(json_like)
            if isinstance(row, list):
                row = [draw(not_a_kind), *row]
        rows.append(row)
    return rows, good, bad


def decode_like_the_client(rows):
    """What BridgeClient does: the events of every row, a Malformed in place of each bad one."""
    try:
        events = P.decode_rows(STREAM, rows)
    except P.BadRows as e:
        events = e.events
    assert len(events) == len(rows)  # one per row: seqs still line up
    return events


@FUZZ
@given(wire_scenario(), st.booleans())
def test_wire_rows_decode_and_validate_without_raising_and_good_rows_pass(case, through_orjson):
    rows, good, bad = case
    if through_orjson:  # as the wire carries them (NaN and inf become null)
        rows = orjson.loads(orjson.dumps(rows))
    v = V.Validator(TOL, symbols=[STREAM])
    out = v.filter(decode_like_the_client(rows))
    out += v.flush()
    assert out == [ev._replace(seq=0) for ev in good]
    assert v.accepted == len(good) and sum(v.rejected.values()) == bad and v.stats()["held"] == 0
    for ev in out:
        assert_exact_types(ev)


@FUZZ
@given(st.lists(json_like | pick([NASTY, object(), (0, T0), b"row"]), max_size=20))
def test_arbitrary_rows_never_raise_anything_but_a_protocol_error(rows):
    v = V.Validator(TOL)
    out = v.filter(decode_like_the_client(rows))
    assert total(v) == len(rows)
    for ev in out:
        assert_exact_types(ev)


def test_rows_that_are_not_a_list_are_a_protocol_error():
    for rows in (None, 5, "rows", {"a": [0]}, NASTY):
        try:
            P.decode_rows(STREAM, rows)
        except P.BadRows:
            raise AssertionError("nothing to line up: a plain ProtocolError") from None
        except P.ProtocolError:
            continue
        raise AssertionError(f"no ProtocolError for {type(rows).__name__}")
