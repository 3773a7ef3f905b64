"""scripts/ctl.py as a subprocess against the session's Valkey, with a plain risk engine served
by a thread of the test (what the risk actor does: read commands, apply, store the state)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import pytest

from pipelines.persistence.risk_store import RiskStore
from pipelines.risk.account import AccountSnapshot
from pipelines.risk.config import RiskConfig
from pipelines.risk.engine import RiskEngine
from tests.helpers import FAST_RECONNECT, REPO, SESSION_T0, unique_name

WHO = r"\S+@\S+"
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"


def ctl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "ctl.py"), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture()
def config(tmp_path, valkey_server):
    path = tmp_path / "ctl.yaml"
    path.write_text(f"valkey:\n  url: {valkey_server[1]}\n")
    return str(path)


class Served:
    """A risk engine whose commands a thread applies, storing the state after each round."""

    def __init__(self, url: str, account: str, pnl: float = 0.0):
        snap = AccountSnapshot(account)
        self.engine = RiskEngine(snap, RiskConfig(account=account, max_daily_loss=1000.0))
        self.engine.on_trade("WDOZ26", 5400.0, SESSION_T0)
        if pnl:
            from pipelines.model.orders import AccountSummary

            snap.apply(AccountSummary(account, SESSION_T0, pnl, 0.0, pnl, 0.0, 0))
            self.engine.on_account(SESSION_T0)
        self.store = RiskStore(url, None, **FAST_RECONNECT)
        self.engine.command_cursor = self.store.command_tail(account)
        self.store.save_state(account, self.engine.state())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        eng = self.engine
        while not self._stop.is_set():
            commands = self.store.read_commands(eng.account_id, eng.command_cursor, block_ms=100)
            for command_id, fields in commands:
                eng.apply_command(command_id, fields)
            if commands:
                self.store.save_state(eng.account_id, eng.state())
                self.store.commit(5.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.store.close()


@pytest.fixture()
def served(valkey_server):
    made: list[Served] = []

    def make(account: str, pnl: float = 0.0) -> Served:
        made.append(Served(valkey_server[1], account, pnl))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_halt_status_flatten_resume(config, served):
    acct = unique_name("acct")
    s = served(acct)
    r = ctl("halt", "--account", acct, "--reason", "news at 10:30", "--config", config, "--wait", "10")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"halt done by ({WHO}) at {TIME}: account {acct} is HALTED \(halt by \1: news at 10:30\)\n",
                        r.stdout), r.stdout
    assert f"halt of account {acct} sent by " in r.stderr  # logged: who and when
    assert s.engine.trading_state == "HALTED"

    r = ctl("status", "--account", acct, "--config", config)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"account {acct}: HALTED \(halt by ({WHO}): news at 10:30\); last change by \1 at "
                        r"2026-11-23T10:00:00-03:00 \(event time\): halt: news at 10:30; "
                        rf"last command halt by \1 sent {TIME}: done\n", r.stdout), r.stdout

    r = ctl("flatten", "--account", acct, "--config", config, "--wait", "10")
    assert r.returncode == 0 and " is HALTED (flatten by " in r.stdout, r.stdout + r.stderr
    assert s.engine.flatten_requested
    assert "[flattening]" in ctl("status", "--account", acct, "--config", config).stdout

    r = ctl("resume", "--account", acct, "--config", config, "--wait", "10")
    assert r.returncode == 0 and r.stdout.endswith(f"account {acct} is ACTIVE\n"), r.stdout + r.stderr


def test_not_acknowledged_exits_1(config):
    acct = unique_name("acct")  # no engine serves it
    r = ctl("halt", "--account", acct, "--config", config, "--wait", "0.5")
    assert r.returncode == 1
    assert r.stdout == (f"halt not acknowledged within 0.5 s: command {r.stdout.split('command ')[1].split()[0]} "
                        f"stays queued on hmarl:risk:commands:{acct} until account {acct}'s risk engine reads it\n")
    r = ctl("status", "--account", acct, "--config", config)
    assert (r.returncode, r.stdout) == (0, f"account {acct}: no risk state stored (its risk engine has not run)\n")


def test_refused_resume_exits_3(config, served):
    acct = unique_name("acct")
    served(acct, pnl=-1000.0)  # the daily loss limit: HALTED for the day
    r = ctl("resume", "--account", acct, "--config", config, "--wait", "10")
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stdout == (f"resume refused by account {acct}'s risk engine: resume_refused: daily loss: day P&L "
                        "-1000.00 reached the limit -1000.00 (holds until the next session day)\n")


def test_config_errors_exit_2(tmp_path, config):
    r = ctl("halt", "--account", "a b", "--config", config)
    assert r.returncode == 2
    assert r.stderr == "config error: --account: expected 1-32 letters, digits, '_' or '-', got 'a b'\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("valkey:\n  url: 5\n")
    r = ctl("status", "--config", str(bad))
    assert r.returncode == 2 and r.stderr.startswith("config error: valkey.url: "), r.stderr
    embedded = tmp_path / "embedded.yaml"
    embedded.write_text(f"valkey:\n  data_dir: {tmp_path / 'nothing'}\n")
    r = ctl("status", "--config", str(embedded))
    assert r.returncode == 2
    assert r.stderr.startswith("config error: valkey.url: null (the embedded server), and no embedded server has run")
    r = ctl("halt", "--config", config, "--wait", "0")
    assert (r.returncode, r.stderr) == (2, "config error: --wait: must be > 0, got 0.0\n")


def test_finds_the_embedded_server_by_its_data_dir(tmp_path, valkey_server, served):
    server, _url = valkey_server
    if server is None:
        pytest.skip("the session Valkey is an external one (QT_TEST_VALKEY_URL)")
    acct = unique_name("acct")
    served(acct)
    cfg = tmp_path / "embedded.yaml"
    cfg.write_text(f"valkey:\n  data_dir: {server.data_dir}\n")  # url null: the server that ran there
    r = ctl("status", "--account", acct, "--config", str(cfg))
    assert (r.returncode, r.stdout) == (0, f"account {acct}: ACTIVE\n"), r.stderr
