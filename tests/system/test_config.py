"""Config: defaults load; every bad value is one line naming the key; launch exits 2."""

import pytest

from pipelines.config import ConfigError, config_from_dict, load_config
from tests.helpers import REPO, run_launch, simulated_events


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
    assert cfg.hmarl.ml_allow_other_market is False
    # paper trading is on by default and the file's keys equal the embedded defaults
    assert cfg.execution.enabled is True and cfg.execution.account == cfg.risk.account == "paper"
    assert (cfg.execution.ttl_order_s, cfg.execution.ttl_position_s) == (7 * 86_400, None)


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
        ({"hmarl": {"ml_allow_other_market": "yes"}}, "hmarl.ml_allow_other_market", "true or false"),
        ({"hmarl": {"ml_allow_other_markets": True}}, "hmarl.ml_allow_other_markets", "did you mean ml_allow_other_market"),
        ({"risk": {"account": "my account"}}, "risk.account", "letters, digits"),
        ({"risk": {"reducing_at": 0}}, "risk.reducing_at", "must be >= 0.01"),
        ({"risk": {"calendar": "nyse"}}, "risk.calendar", "must be one of b3, weekdays"),
        ({"hmarl": {"retention_days": -1}}, "hmarl.retention_days", "must be >= 0"),
        ({"execution": {"enabled": "on"}}, "execution.enabled", "true or false"),
        ({"execution": {"ttl_order": 60}}, "execution.ttl_order", "did you mean ttl_order_s"),
        ({"execution": {"exchange": {"queue_model": "fifo"}}}, "execution.exchange.queue_model", "must be one of"),
        ({"execution": {"account": "a:b"}}, "execution.account", "letters, digits"),
        ({"execution": {"enabled": True, "account": "other"}}, "execution.account", "must equal risk.account"),
        ({"execution": {"exchange": {"costs": {"wdo": {}}}}}, "execution.exchange.costs.wdo.single_fee", "required"),
    ],
)
def test_bad_values_name_the_key(raw, key, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert err.value.key == key
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


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


def test_live_trading_needs_the_config_and_the_command_line(tmp_path):
    """Paper is the default; real orders need execution.venue: profitdll, an account, the risk
    engine on, and --live (or --shadow) -- each missing piece is one line and exit 2, before
    anything starts."""
    live = tmp_path / "live.yaml"
    live.write_text('execution:\n  venue: profitdll\n  profitdll:\n    broker_account: "308:1234567"\n')
    r = run_launch("--config", str(live))
    assert r.returncode == 2 and r.stderr.strip() == (
        "config error: execution.venue: profitdll sends real orders: add --live (or --shadow to rehearse)")
    r = run_launch("--live")  # the default config trades on paper
    assert r.returncode == 2 and r.stderr.strip() == (
        "config error: execution.venue: --live needs execution.venue: profitdll (it is simulated)")
    no_account = tmp_path / "no_account.yaml"
    no_account.write_text("execution:\n  venue: profitdll\n")
    r = run_launch("--config", str(no_account), "--live")
    assert r.returncode == 2 and r.stderr.startswith("config error: execution.profitdll.broker_account: expected")
    unguarded = tmp_path / "unguarded.yaml"
    unguarded.write_text(live.read_text() + "risk:\n  enabled: false\n")
    r = run_launch("--config", str(unguarded), "--live")
    assert r.returncode == 2 and r.stderr.startswith("config error: risk.enabled: must be true")
    assert "READY" not in r.stdout


def test_the_progress_line_says_when_orders_are_real():
    import importlib.util

    spec = importlib.util.spec_from_file_location("launch_script", REPO / "scripts" / "launch.py")
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    base = {"counts": {"orders": 2}, "account": "acct", "trading_state": "ACTIVE"}
    assert launch.execution_summary("execution:acct", base).startswith("acct orders=2 ")
    assert launch.execution_summary("execution:acct", {**base, "routing": "live"}).startswith("acct [LIVE] orders=2 ")
    assert launch.execution_summary("execution:acct", {**base, "routing": "shadow"}).startswith(
        "acct [shadow] orders=2 ")


def test_launch_rejects_a_bad_symbol_override():
    r = run_launch("--symbol", "wdo z26")
    assert r.returncode == 2 and r.stderr.startswith("config error: symbols[0]:")


# -- feed.replay.path: checked before anything starts --------------------------------------


def replay_yaml(tmp_path, path, symbols=("WDOZ26",), **replay):
    extra = "".join(f"    {k}: {v}\n" for k, v in replay.items())
    cfg = tmp_path / "replay.yaml"
    cfg.write_text(f"symbols: [{', '.join(symbols)}]\nfeed:\n  source: replay\n  replay:\n    path: {path}\n{extra}"
                   "recorder:\n  enabled: false\n")
    return cfg


def recorded(root, symbol="WDOZ26", n=200):
    from pipelines.adapters.files.recorder import write_events

    write_events(simulated_events(seed=3, rate=100.0, max_events=n, symbol=symbol), root)
    return root


def test_a_missing_replay_path_names_the_key(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        load_config(replay_yaml(tmp_path, tmp_path / "nowhere"))
    assert str(err.value).startswith("feed.replay.path: no such folder: ")
    assert str(tmp_path / "nowhere") in str(err.value) and "\n" not in str(err.value)
    # Relative: against the working directory, as ReplaySource (Path(cfg.path)) reads it.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(replay_yaml(tmp_path, "rel/recs"))
    assert str(err.value) == (f"feed.replay.path: no such folder: 'rel/recs' (relative to the working directory "
                              f"{str(tmp_path)!r}, as the replay feed reads it)")
    recorded(tmp_path / "rel" / "recs")
    assert load_config(replay_yaml(tmp_path, "rel/recs")).feed.replay.path == "rel/recs"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"^feed\.replay\.path: not a folder: 'afile'"):
        load_config(replay_yaml(tmp_path, "afile"))


def test_a_replay_path_without_the_symbol_names_the_key_and_the_layout(tmp_path):
    root = recorded(tmp_path / "recs", "WINZ26")
    with pytest.raises(ConfigError) as err:
        load_config(replay_yaml(tmp_path, root, ("WINZ26", "WDOZ26")))
    msg = str(err.value)
    assert msg.startswith(f"feed.replay.path: {str(root)!r} holds no recording of WDOZ26 (looked for ")
    assert f"{root}/<tick|book|book_update>/symbol=WDOZ26/date=YYYY-MM-DD/*.parquet" in msg
    assert load_config(replay_yaml(tmp_path, root, ("WINZ26",))).symbols == ("WINZ26",)


def test_the_replay_check_agrees_with_the_replay_source(tmp_path):
    """Same folder, same verdict: load_config passes exactly when ReplaySource opens it."""
    from pipelines.adapters.config import ReplayConfig
    from pipelines.adapters.files.replay import ReplayError, ReplaySource

    full = recorded(tmp_path / "full")
    dot_only = tmp_path / "dot" / "tick" / "symbol=WDOZ26" / "date=2026-11-23"
    dot_only.mkdir(parents=True)
    (dot_only / ".part-1.parquet").write_bytes(b"")
    bad_date = tmp_path / "baddate" / "tick" / "symbol=WDOZ26" / "date=yesterday"
    bad_date.mkdir(parents=True)
    (bad_date / "part-1.parquet").write_bytes(b"")
    other_kind = tmp_path / "kind" / "trades" / "symbol=WDOZ26" / "date=2026-11-23"
    other_kind.mkdir(parents=True)
    (other_kind / "part-1.parquet").write_bytes(b"")
    for root, ok in [(full, True), (tmp_path / "dot", False), (tmp_path / "baddate", False), (tmp_path / "kind", False),
                     (tmp_path / "empty", False)]:
        root.mkdir(exist_ok=True)
        try:
            ReplaySource(ReplayConfig(path=str(root), speed=0), ["WDOZ26"]).close()
            source_ok = True
        except ReplayError:
            source_ok = False
        try:
            load_config(replay_yaml(tmp_path, root))
            config_ok = True
        except ConfigError as e:
            assert e.key == "feed.replay.path"
            config_ok = False
        assert (source_ok, config_ok) == (ok, ok), root


def test_replay_time_window_is_checked(tmp_path):
    root = recorded(tmp_path / "recs")  # simulated_events start 2026-11-23
    cfg = load_config(replay_yaml(tmp_path, root, start="2026-11-23", end="2026-11-23"))
    assert (cfg.feed.replay.start, cfg.feed.replay.end) == ("2026-11-23", "2026-11-23")  # one whole day
    with pytest.raises(ConfigError, match=r"^feed\.replay\.start: .* holds recordings of WDOZ26 from 2026-11-23 to "
                                          r"2026-11-23, none from start 2026-11-24 to end None$"):
        load_config(replay_yaml(tmp_path, root, start="2026-11-24"))
    with pytest.raises(ConfigError, match=r"^feed\.replay\.end: must be after feed\.replay\.start"):
        load_config(replay_yaml(tmp_path, root, start="2026-11-23T12:00:00", end="2026-11-23T11:00:00"))
    with pytest.raises(ConfigError, match=r"^feed\.replay\.start: expected an ISO date"):
        load_config(replay_yaml(tmp_path, root, start="2026-02-30"))


def test_launch_with_a_missing_replay_path_fails_in_one_line_before_starting_anything(tmp_path):
    import time

    cfg = replay_yaml(tmp_path, "no/such/recordings")
    t0 = time.monotonic()
    r = run_launch("--config", str(cfg), "--address", "local", "--no-dashboard", cwd=tmp_path)
    elapsed = time.monotonic() - t0
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.splitlines() == [
        f"config error: feed.replay.path: no such folder: 'no/such/recordings' (relative to the working directory "
        f"{str(tmp_path)!r}, as the replay feed reads it)"]
    assert r.stdout == "" and elapsed < 10  # no Ray, no Valkey: the old failure came 13 s later, from the feed actor
