"""Config fuzz: whatever the file holds, load_config returns a config or raises ConfigError,
whose message is one line starting with the dotted key it is about (a key of the schema, or an
unknown key under a known section) or with ``--config`` for a file that cannot be read or parsed.

Three sources of input, all derandomized: the default config with one to four keys (chosen
over the whole tree, nested sections included) set to junk, deleted, or joined by unknown keys;
arbitrary YAML-ish text (random text, tabs, duplicate keys, top-level lists and scalars, deep
nesting, anchors); and raw bytes. Every key has a default (``config/default.yaml``: "every key
is optional"), so deleting any key is legal and must still give a config.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.config import AppConfig, ConfigError, DEFAULT_CONFIG_PATH, config_from_dict, load_config
from tests.helpers import run_launch

FUZZ = settings(derandomize=True, deadline=None, max_examples=250, suppress_health_check=[HealthCheck.too_slow])
DEFAULT = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def schema_paths(cls: type = AppConfig, prefix: str = "") -> tuple[set[str], set[str]]:
    """(every dotted key, the dotted keys that are sections) of the config dataclasses."""
    keys, sections = set(), {""}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        keys.add(key)
        if dataclasses.is_dataclass(hints[f.name]):
            sub_keys, sub_sections = schema_paths(hints[f.name], key)
            keys |= sub_keys
            sections |= sub_sections | {key}
    return keys, sections


KEYS, SECTIONS = schema_paths()
LEAVES = sorted(KEYS - SECTIONS)


def check_outcome(fn, *args, **kwargs):
    """The property: a config or a one-line ConfigError naming a real key (or the file)."""
    try:
        return fn(*args, **kwargs)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and "\r" not in msg, msg
        assert msg.startswith(f"{e.key}: ") and e.problem, msg
        if e.key in ("--config", "config"):
            return None
        key = re.sub(r"\[\d+\]", "", e.key)
        if key in KEYS:
            return None
        # An unknown (or duplicated unknown) key: its parent must be a known section.
        assert e.problem.startswith("unknown key"), msg
        parent = max((s for s in SECTIONS if s and e.key.startswith(s + ".")), key=len, default="")
        assert parent in SECTIONS and e.key[len(parent) + 1 if parent else 0:] not in KEYS, msg
        return None


# -- strategies ---------------------------------------------------------------------------

SPECIALS = [None, True, False, 0, 1, -1, -0.0, 0.5, 2**31, 2**31 - 1, 2**63, 2**63 - 1, 2**64, -(2**63) - 1, 10**400,
            -(10**400), math.nan, math.inf, -math.inf, 1e308, 5e-324, "", " ", "\t", "\x00", "a\nb", "\u2028", "\ufeff",
            "replay", "bridge", "profitdll", "simulator", "spread", "default", "2026-02-30", "2026-11-23",
            "2026-11-23T09:00:00", "9999-12-31", "0001-01-01T00:00:00+14:00", "tcp://", "ipc://x", "tcp://h:1 x",
            "redis://h:99999/0", "redis://h:x/0", "unix://", "/", ".", "..", "/nonexistent/recordings", "WDOZ26",
            "wdo", "WDOFUT", "ESFUT", "WDOZ99", "order_flow", "tape", "F", "B", "*", "::1", "a b", "[]", "{}", [], {},
            [None], ["WDOZ26", "WDOZ26"], ["tape", "tape"], {"x": 1}, {"": None}, {None: 1}, "x" * 300]
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans()), inner, max_size=3),
    ),
    max_leaves=8,
)
FIELDS: dict[str, dataclasses.Field] = {}
HINTS: dict[str, typing.Any] = {}


def _index_fields(cls: type = AppConfig, prefix: str = "") -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        FIELDS[key], HINTS[key] = f, hints[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            _index_fields(hints[f.name], key)


_index_fields()


def edge_values(path: str) -> list:
    """Values at, just past and far past the documented range or choices of one key."""
    meta = FIELDS[path].metadata
    out: list = list(meta.get("choices", ()))
    for bound, step in ((meta.get("lo"), -1), (meta.get("hi"), 1)):
        if bound is not None:
            out += [bound, bound + step, bound + step * 1e-9, type(bound)(bound) * 10]
    return out


TYPE_JUNK = {  # the wrong values most likely to slip through a check of each kind of key
    float: [10**400, -(10**400), math.nan, math.inf, -math.inf, "1.5", True, None, [], {}, 1e308],
    int: [2**63, -(2**63) - 1, 2**64, 1.5, math.nan, "1", False, None, [1], 10**400],
    str: ["", "\x00", "a\nb", "\t", " ", 1, 0.5, None, True, [], {}, "x" * 300, "2026-02-30"],
    bool: ["yes", "true", 1, 0, None, [], "on"],
    tuple: [[], "WDOZ26", [None], [1], [[]], [{}], ["", ""], ["WDOZ26", "WDOZ26"], {"a": 1}, None],
}


def typed_junk(path: str) -> list:
    """Junk for the type of one key (``str | None`` counts as str, tuples as lists)."""
    tp = HINTS[path]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return TYPE_JUNK[typing.get_origin(tp) or tp]


def _parent(doc: dict, path: list[str]) -> dict:
    node = doc
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    return node


@st.composite
def mutated_defaults(draw) -> dict:
    """The default config with 1-4 keys set to junk, deleted, or joined by unknown keys. Targets and
    kinds of junk come from a (derandomized) Random so that every key gets its turn, not mostly the
    first of the list that Hypothesis's shrinking favours."""
    rnd = draw(st.randoms(use_true_random=False))
    doc = copy.deepcopy(DEFAULT)
    for _ in range(rnd.choice([1, 1, 1, 2, 3, 4])):  # mostly one: a first error masks the later keys
        op = rnd.choice(["set", "set", "typed", "typed", "typed", "edge", "edge", "delete", "unknown", "section"])
        path = rnd.choice(sorted(SECTIONS - {""}) if op == "section" else LEAVES)
        parent = _parent(doc, path.split("."))
        name = path.split(".")[-1]
        if op == "delete":
            parent.pop(name, None)
        elif op == "unknown":
            parent[rnd.choice([name + "s", name.upper(), "", 1, None, True, draw(st.text(max_size=10))])] = 1
        elif op == "edge" and edge_values(path):
            parent[name] = copy.deepcopy(rnd.choice(edge_values(path)))
        elif op == "typed":
            parent[name] = copy.deepcopy(rnd.choice(typed_junk(path)))  # shared lists
        else:
            parent[name] = copy.deepcopy(rnd.choice(SPECIALS)) if rnd.random() < 0.6 else draw(junk)
    return doc


def write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
    return path


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_config")


@FUZZ
@given(doc=mutated_defaults())
def test_mutated_default_config_loads_or_names_the_key(fuzz_dir, doc):
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    check_outcome(load_config, write(fuzz_dir / "mutated.yaml", text))
    check_outcome(config_from_dict, doc)  # the same values without a YAML round trip


@FUZZ
@given(doc=mutated_defaults(), extra=st.sampled_from([{1, 2}, b"\x00bytes", (1, 2), frozenset(), object(), 1j]))
def test_values_yaml_could_not_write_are_refused_too(doc, extra):
    """config_from_dict takes Python values: sets (!!set), bytes (!!binary), tuples..."""
    doc.setdefault("feed", {})
    if isinstance(doc["feed"], dict):
        doc["feed"]["batch_max_ms"] = extra
    check_outcome(config_from_dict, doc)


yaml_lines = st.sampled_from([
    "feed:", "  source: replay", "  simulator:", "    rate: 5", "    rate: 6", "\tsource: x", "symbols: [WDOZ26]",
    "symbols: WDOZ26", "symbols:", "- WDOZ26", "- 1", "feed: [unclosed", "{", "}", "]", "key: value", ": :",
    "hmarl: {agents: [tape, tape]}", "zmq: {tick_port: 0x_}", "zmq: {tick_port: 0b2}", "a: &x [*x]", "b: *nope",
    "feed: !!python/object:os.system {}", "feed: !!binary aGVsbG8=", "feed: !!set {a, b}", "x: 2026-02-30",
    "feed: {simulator: {start: 2026-11-23 09:00:00}}", "feed: {replay: {start: 2026-11-24, end: 2026-11-23}}",
    "valkey: {url: 'redis://h:port'}", "---", "...", "%YAML 1.1", "? [a, b]\n: 1", "<<: {namespace: x}",
    "namespace: \"\\0\"", "recorder: {path: \"a\\tb\"}", "features: {enabled: false}", "hmarl: {enabled: false}",
    "feed: {source: replay, replay: {path: /}}", "supervisor: {max_restarts: 99999999999999999999}", "[" * 400,
])
yaml_docs = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(yaml_lines, st.text(max_size=30)), max_size=8).map("\n".join),
    st.lists(yaml_lines, min_size=1, max_size=8).map("\n".join),
    junk.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),  # top-level lists, scalars, odd mappings
    mutated_defaults().map(lambda d: yaml.safe_dump(d, sort_keys=False) + "feed:\n  source: bridge\n"),  # duplicate
)


@FUZZ
@given(text=yaml_docs)
def test_arbitrary_yaml_text_loads_or_names_the_key(fuzz_dir, text):
    check_outcome(load_config, write(fuzz_dir / "text.yaml", text))


@FUZZ
@given(data=st.binary(max_size=120))
def test_arbitrary_bytes_load_or_name_the_file(fuzz_dir, data):
    check_outcome(load_config, write(fuzz_dir / "bytes.yaml", data))


@FUZZ
@given(symbols=st.lists(st.text(max_size=14), max_size=3))
def test_symbol_overrides_load_or_name_the_key(symbols):
    """launch.py --symbol X --symbol Y becomes overrides={"symbols": [X, Y]}."""
    check_outcome(load_config, None, {"symbols": symbols} if symbols else None)


def test_the_property_finds_what_it_should():
    """Each fuzz family reaches both outcomes; a few fixed cases that used to crash."""
    assert check_outcome(load_config) is not None
    for raw, key in [
        ({"feed": {"simulator": {"rate": 10**400}}}, "feed.simulator.rate"),  # OverflowError in float()
        ({"recorder": {"path": "a\x00b"}}, "recorder.path"),  # ValueError in Path.resolve()
        ({"valkey": {"url": "redis://h:99999/0"}}, "valkey.url"),
        ({"zmq": {"sndhwm": 2**31}}, "zmq.sndhwm"),
        ({"feed": {"replay": {"end": "9999-12-31"}}}, "feed.replay.end"),  # date + 1 day overflows
        ({"hmarl": {"agents": ["tape", "tape"]}}, "hmarl.agents[1]"),
        ({"feed": {"simulator": {"start": "9999-01-01"}}}, "feed.simulator.start"),
        ({"a\nb": 1}, "'a\\nb'"),
    ]:
        with pytest.raises(ConfigError) as err:
            config_from_dict(raw)
        assert err.value.key == key and "\n" not in str(err.value)


@pytest.mark.parametrize("text,key", [
    ("x: 2026-02-30\n", "x"),  # PyYAML: bare ValueError
    ("zmq:\n  tick_port: 0x_\n", "--config"),  # PyYAML: bare ValueError
    ("\x00", "--config"),
    ("[" * 2000, "--config"),  # RecursionError
    ("feed:\n  source: replay\nfeed:\n  source: bridge\n", "feed"),  # duplicate key, silently dropped before
    ("feed:\n  replay:\n    start: 2026-11-23\n", None),  # a YAML date is read as the string it is
])
def test_yaml_that_used_to_crash_or_pass_silently(tmp_path, text, key):
    path = write(tmp_path / "c.yaml", text)
    if key is None:
        assert load_config(path).feed.replay.start == "2026-11-23"
        return
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key and "\n" not in str(err.value)


BAD_FILES = {
    "replay.yaml": "feed:\n  source: replay\n  replay:\n    path: /nonexistent/qt-recordings\n",
    "binary.yaml": b"\xff\xfe\x00\x01garbage",
    "list.yaml": "- feed\n- symbols\n",
    "duplicate.yaml": "hmarl:\n  threshold: 0.2\nhmarl:\n  threshold: 0.3\n",
    "overflow.yaml": "feed:\n  simulator:\n    rate: " + "9" * 400 + "\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_launch_prints_one_line_and_exits_2(tmp_path, name):
    path = write(tmp_path / name, BAD_FILES[name])
    r = run_launch("--config", str(path), "--address", "local", "--no-dashboard", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: "), r.stderr[-2000:]
    assert "READY" not in r.stdout and "Ray" not in r.stdout + r.stderr
