"""Config: defaults load; every bad value is one line naming the key; launch exits 2."""

import subprocess
import sys

import pytest

from pipelines.config import ConfigError, config_from_dict, load_config
from tests.conftest import REPO


def test_default_config_loads_with_the_documented_defaults():
    cfg = load_config()
    assert cfg.symbols == ("WDOZ26",)
    assert (cfg.buffers.trades, cfg.buffers.book, cfg.buffers.candles) == (1000, 100, 200)
    assert (cfg.zmq.tick_port, cfg.zmq.book_port, cfg.zmq.host) == (5555, 5556, "127.0.0.1")
    assert cfg.valkey.url is None and cfg.valkey.maxlen == 100_000
    assert cfg.feed.source == "simulator"
    assert cfg.zmq.ports() == {"tick": 5555, "book": 5556, "flow": 5557, "footprint": 5558, "liquidity": 5559, "tape": 5560,
                                 "decision": 5561}
    assert cfg.features.enabled and cfg.features.vector_every_ms == 0 and cfg.features.flow_state_ttl_s == 3600


@pytest.mark.parametrize(
    "raw,key,fragment",
    [
        ({"feed": {"simulator": {"rate": "fast"}}}, "feed.simulator.rate", "expected a number"),
        ({"feed": {"simulator": {"rate": 0}}}, "feed.simulator.rate", "must be >= 1"),
        ({"feed": {"source": "ftp"}}, "feed.source", "must be one of"),
        ({"feed": {"batch_max_events": 1.5}}, "feed.batch_max_events", "expected an integer"),
        ({"buffers": {"trades": -1}}, "buffers.trades", "must be >= 1"),
        ({"zmq": {"tick_port": 70000}}, "zmq.tick_port", "must be <= 65535"),
        ({"zmq": {"tick_port": 6000, "book_port": 6000}}, "zmq.book_port", "one owner per port"),
        ({"zmq": {"tape_port": 5555}}, "zmq.tape_port", "same port as zmq.tick_port"),
        ({"features": {"state_every_ms": 0}}, "features.state_every_ms", "must be >= 1"),
        ({"features": {"vector_every": 5}}, "features.vector_every", "unknown key"),
        ({"valkey": {"url": "http://x"}}, "valkey.url", "redis://"),
        ({"valkey": {"maxlenn": 5}}, "valkey.maxlenn", "unknown key"),
        ({"symbols": ["wdo"]}, "symbols[0]", "upper-case"),
        ({"symbols": []}, "symbols", "non-empty list"),
        ({"recorder": {"enabled": "yes"}}, "recorder.enabled", "true or false"),
        ({"feed": {"simulator": {"start": "tomorrow"}}}, "feed.simulator.start", "ISO"),
        ({"feed": {"source": "dde"}}, "feed.source", "bridge"),
        ({"feed": {"bridge": {"pub": "localhost:5562"}}}, "feed.bridge.pub", "ZeroMQ endpoint"),
        ({"feed": {"profitdll": {"exchange": "X"}}}, "feed.profitdll.exchange", "F"),
        ({"feed": {"profitdll": {"backoff_initial_s": 9, "backoff_max_s": 1}}}, "feed.profitdll.backoff_initial_s",
         "must not exceed"),
        ({"feed": {"profitdll": {"password": "x"}}}, "feed.profitdll.password", "unknown key"),
    ],
)
def test_bad_values_name_the_key(raw, key, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert err.value.key == key
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def run_launch(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "launch.py"), *args], capture_output=True, text=True, timeout=60)


def test_launch_with_a_bad_config_prints_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("feed:\n  simulator:\n    rate: -5\n")
    r = run_launch("--config", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip() == "config error: feed.simulator.rate: must be >= 1, got -5.0"
    assert "READY" not in r.stdout


def test_launch_with_a_missing_or_broken_config_exits_2(tmp_path):
    r = run_launch("--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and r.stderr.startswith("config error: --config: file not found")
    broken = tmp_path / "broken.yaml"
    broken.write_text("feed: [unclosed\n")
    r = run_launch("--config", str(broken))
    assert r.returncode == 2 and "invalid YAML" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_launch_rejects_a_bad_symbol_override():
    r = run_launch("--symbol", "wdo z26")
    assert r.returncode == 2 and r.stderr.startswith("config error: symbols[0]:")
