"""The DLL host (scripts/feed_bridge.py on the native fake ProfitDLL) as the order tests run it:
a child process with its own environment, stdout and stderr kept in files so every byte it
printed can be searched, and the clients and replies of one test kept for the leak search.

Used by tests/adapters/test_bridge_orders.py (the host's order service), tests/execution/
test_live_routing.py (engine + live venue + host in one process) and tests/system/
test_live_trading.py (the whole graph).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from pipelines.adapters.bridge.order_client import OrderClient
from tests.helpers import REPO, wait_for
from tests.profitdll_fake import CREDENTIALS, fake_env, fresh_copy, read_sent_log

ACCOUNT = "308:1234567"
SYMBOL = "WDOZ26"
BOOK = f"{SYMBOL}:5000.0x3/5000.5x2"
LOCAL = "tcp://127.0.0.1:0"
# Distinctive on purpose: any occurrence in an output is a leak, not a coincidence.
ROUTING_PASSWORD = "rt-Ω-9981-routing"
TOKEN = "tok-Ω-6612-shared"
SECRETS = {**CREDENTIALS, "PROFIT_ROUTING_PASSWORD": ROUTING_PASSWORD, "PROFIT_BRIDGE_TOKEN": TOKEN}
SIDES = {"1": "BUY", "2": "SELL"}
# -- the host process -------------------------------------------------------------------------------


class Host:
    """scripts/feed_bridge.py as HostedBridge runs it (credentials in its environment, stdin
    held open), stdout and stderr in files so every byte it printed can be searched."""

    def __init__(self, tmp: Path, name: str, args: list[str], env: dict[str, str]):
        self.name = name
        self.out_path, self.err_path = tmp / f"{name}.out", tmp / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "feed_bridge.py"), *args],
                                         stdin=subprocess.PIPE, stdout=out, stderr=err, env=env, cwd=REPO)
        self.info: dict | None = None

    def wait_ready(self, timeout: float = 30.0) -> dict:
        def ready():
            for line in self.out_path.read_text("utf-8", "replace").splitlines():
                if line.startswith("READY "):
                    return json.loads(line[6:])
            assert self.proc.poll() is None, f"{self.name} exited ({self.proc.returncode}): {self.text()[-2000:]}"
            return None

        self.info = wait_for(ready, timeout, 0.02, f"{self.name} to be ready")
        return self.info

    def client(self, token: str | None = None, **kw) -> OrderClient:
        orders, pub = self.info["orders"], self.info["order_pub"]
        # A host bound to 0.0.0.0 reports that address; this machine reaches it on loopback.
        orders, pub = (ep.replace("tcp://0.0.0.0:", "tcp://127.0.0.1:") for ep in (orders, pub))
        return OrderClient(orders, pub, ACCOUNT, token=token, **kw)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def text(self) -> str:
        return (self.out_path.read_bytes() + self.err_path.read_bytes()).decode("utf-8", "replace")


class Run:
    """The hosts and clients of one test, and everything they produced (for the leak search)."""

    def __init__(self, tmp: Path, so: Path | None):
        self.tmp, self.so = tmp, so
        self.hosts: list[Host] = []
        self.clients: list[OrderClient] = []
        self.replies: list[dict] = []

    def host(self, name: str, *args: str, fake: dict | None = None, env: dict | None = None, source: str = "profitdll",
             ready: bool = True) -> Host:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_PROFITDLL_", "PROFIT_"))}
        base.update(CREDENTIALS)
        base["PROFIT_ROUTING_PASSWORD"] = ROUTING_PASSWORD
        base.update(env or {})
        cmd = ["--source", source, "--symbols", SYMBOL, "--pub", LOCAL, "--rep", LOCAL, "--orders", LOCAL,
               "--order-pub", LOCAL, "--account", ACCOUNT, "--exit-with-parent", "--heartbeat-s", "0.2", *args]
        if "--state-dir" not in args:  # never the default in the home directory
            cmd += ["--state-dir", str(self.tmp / f"state-{name}")]
        if source == "profitdll":
            cmd += ["--dll-path", str(fresh_copy(self.so, self.tmp))]
            base.update(fake_env(**{"rate": 300, "events": 100, "state_delay_us": 20, "broker_book": BOOK,
                                    "routing_password": ROUTING_PASSWORD, **(fake or {})}))
        else:
            cmd += ["--sim-rate", "200", "--sim-max-events", "200"]
        h = Host(self.tmp, name, cmd, base)
        self.hosts.append(h)
        if ready:
            h.wait_ready()
        return h

    def client(self, host: Host, token: str | None = None, **kw) -> OrderClient:
        c = host.client(token, **kw)
        self.clients.append(c)
        return c

    def ask(self, client: OrderClient, cmd: str, args: dict | None = None, timeout_s: float = 5.0) -> dict:
        reply = client.request(cmd, args or {}, timeout_s=timeout_s)
        self.replies.append(reply)
        return reply

    def close(self) -> None:
        for c in self.clients:
            c.close()
        for h in self.hosts:
            h.stop()

    def assert_no_secrets(self) -> None:
        """No secret in any host's stdout/stderr, any file under the test's directory (journals,
        sent logs), or any reply."""
        needles = {name: v.encode("utf-8") for name, v in SECRETS.items()}
        blobs = {"replies": orjson.dumps(self.replies)}
        for p in self.tmp.rglob("*"):
            if p.is_file() and not p.name.endswith(".so") and p.name != "profit.env":  # the user's own secrets file
                blobs[str(p)] = p.read_bytes()
        leaks = {where: [n for n, b in needles.items() if b in data] for where, data in blobs.items()}
        assert {w: n for w, n in leaks.items() if n} == {}





def broker_rows(path: Path) -> list[dict]:
    """The fake's order lines (no market data)."""
    if not path.exists():
        return []
    return [r for r in read_sent_log(path) if r["kind"] not in ("trade", "book", "daily", "depth", "state",
                                                                 "progress", "invalid")]
