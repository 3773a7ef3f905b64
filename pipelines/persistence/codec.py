"""Market-data events as stream fields, and RESP command encoding.

Values are stored as flat stream fields (ints as decimal text, floats as
``repr`` text, which round-trips exactly; book levels as orjson arrays), always
with a ``kind`` field, so ``valkey-cli XRANGE`` output is readable by a human.

One codec per field: (encode: value -> bytes, decode: bytes|str -> value). The
stream writer's hot path (:meth:`EventCodec.resp_fields`) and the public
:func:`encode_fields` use the same encoders, so what the tests check is what
gets written.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipelines.model.messages import BookSnapshot, BookUpdate, Event, Trade

__all__ = ["EventCodec", "decode_fields", "encode_fields", "event_codec", "resp_bulk", "resp_command"]


def resp_bulk(b: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(b), b)


def resp_command(*args: bytes | str | int) -> bytes:
    """RESP encoding of one command (for the few non-hot-path commands packed by hand)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(resp_bulk(a))
    return b"".join(out)


def _enc_int(v: Any) -> bytes:
    return b"%d" % v


def _enc_float(v: Any) -> bytes:
    # repr() is the shortest text that parses back to the same double.
    # float() first: a numpy float64 would otherwise repr as "np.float64(...)".
    return repr(float(v)).encode()


def _enc_text(v: str) -> bytes:
    return v.encode()


def _enc_array(v: Any) -> bytes:
    # orjson writes floats in shortest round-trip form too; numpy arrays accepted.
    return orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY)


def _dec_text(v: bytes | str) -> str:
    return v.decode() if type(v) is bytes else v  # type: ignore[union-attr]


def _dec_array(v: bytes | str) -> tuple:
    return tuple(orjson.loads(v))


_INT = (_enc_int, int)  # int() parses bytes directly
_FLOAT = (_enc_float, float)  # so does float()
_TEXT = (_enc_text, _dec_text)
_ARRAY = (_enc_array, _dec_array)

_HEADER = (("symbol", _TEXT), ("ts_event", _INT), ("ts_recv", _INT), ("seq", _INT))
_FIELDS: dict[type, tuple] = {
    Trade: _HEADER
    + (
        ("price", _FLOAT),
        ("qty", _INT),
        ("trade_type", _INT),
        ("buyer", _INT),
        ("seller", _INT),
        ("trade_id", _INT),
    ),
    BookSnapshot: _HEADER + (("bid_px", _ARRAY), ("bid_qty", _ARRAY), ("ask_px", _ARRAY), ("ask_qty", _ARRAY)),
    BookUpdate: _HEADER
    + (
        ("side", _INT),
        ("action", _INT),
        ("position", _INT),
        ("price", _FLOAT),
        ("qty", _INT),
        ("agent", _INT),
        ("offer_id", _INT),
    ),
}
for _cls, _fields in _FIELDS.items():  # the codec must follow the NamedTuple field order
    assert tuple(name for name, _ in _fields) == _cls._fields, _cls


class EventCodec:
    """Precomputed per-type encoding: field names, encoders, decoders, RESP template."""

    __slots__ = ("cls", "kind", "names", "encoders", "decoders", "resp_tmpl", "nargs", "defaults")

    def __init__(self, cls: type, fields: tuple):
        self.cls = cls
        self.kind: str = cls.KIND
        self.names = tuple(name for name, _ in fields)
        self.encoders = tuple(enc for _, (enc, _dec) in fields)
        self.decoders = tuple((name.encode(), name, dec) for name, (_enc, dec) in fields)
        self.defaults = cls._field_defaults
        # RESP for "kind <KIND> name1 <v1> name2 <v2> ...": constant parts are
        # baked in, values are filled with one %-format call per event.
        parts = [resp_bulk(b"kind"), resp_bulk(self.kind.encode())]
        for name in self.names:
            parts.append(resp_bulk(name.encode()))
            parts.append(b"$%d\r\n%s\r\n")
        self.resp_tmpl = b"".join(parts)
        self.nargs = 2 + 2 * len(self.names)  # RESP arguments resp_fields() adds to a command

    def encode_values(self, event: Any) -> list[bytes]:
        return [enc(v) for enc, v in zip(self.encoders, event)]

    def resp_fields(self, event: Any) -> bytes:
        """The field/value part of an XADD command, RESP-encoded."""
        args: list[Any] = []
        append = args.append
        for enc, v in zip(self.encoders, event):
            b = enc(v)
            append(len(b))
            append(b)
        return self.resp_tmpl % tuple(args)


_CODEC_BY_TYPE: dict[type, EventCodec] = {cls: EventCodec(cls, f) for cls, f in _FIELDS.items()}
_CODEC_BY_KIND: dict[bytes, EventCodec] = {c.kind.encode(): c for c in _CODEC_BY_TYPE.values()}


def event_codec(event_type: type) -> EventCodec:
    """The codec of a storable event type; TypeError for any other type."""
    try:
        return _CODEC_BY_TYPE[event_type]
    except KeyError:
        raise TypeError(f"not a storable event: {event_type.__name__}") from None


def encode_fields(event: Event) -> dict[str, bytes]:
    """The stream fields for ``event``: ``kind`` plus one field per message field.

    Trades and book updates are fully flat; a book snapshot's four level
    arrays are orjson arrays. Values are bytes (decimal ints, ``repr`` floats).
    """
    codec = event_codec(type(event))
    out: dict[str, bytes] = {"kind": codec.kind.encode()}
    out.update(zip(codec.names, codec.encode_values(event)))
    return out


def decode_fields(fields: dict[bytes, bytes] | dict[str, str]) -> Event:
    """Exact inverse of :func:`encode_fields` (bytes keys as valkey-py returns them;
    str keys from a ``decode_responses=True`` client work too). A field missing
    from an older entry takes the message's default."""
    kind = fields.get(b"kind")  # type: ignore[call-overload]
    if kind is None:
        kind = fields.get("kind")  # type: ignore[call-overload]
        if kind is None:
            raise ValueError("stream entry has no 'kind' field")
        fields = {k.encode(): v for k, v in fields.items()}  # type: ignore[union-attr]
        kind = kind.encode()
    try:
        codec = _CODEC_BY_KIND[kind]
    except KeyError:
        raise ValueError(f"unknown event kind {kind!r}") from None
    try:
        return codec.cls(*[dec(fields[bname]) for bname, _name, dec in codec.decoders])
    except KeyError:
        values = []
        for bname, name, dec in codec.decoders:
            if bname in fields:
                values.append(dec(fields[bname]))
            elif name in codec.defaults:
                values.append(codec.defaults[name])
            else:
                raise ValueError(f"{codec.kind} entry lacks required field {name!r}") from None
        return codec.cls(*values)
