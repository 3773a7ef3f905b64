#!/usr/bin/env python3
"""The risk kill switch: halt, resume or flatten an account's trading, or show its risk state.

    python scripts/ctl.py halt --reason "news at 10:30"   # only cancels pass
    python scripts/ctl.py flatten                          # halt, and close every position
    python scripts/ctl.py resume
    python scripts/ctl.py status --account paper

A command goes on the Valkey stream ``hmarl:risk:commands:<account>`` (Valkey as launch.py
finds it: ``valkey.url``, else the embedded server that last ran under ``valkey.data_dir``),
stamped with who sent it (user@host) and when; the risk engine applies it and stores its
state, naming the command. This waits up to ``--wait`` seconds (``risk.ctl_wait_s``) for that
and prints one line. A command nobody applied in time stays queued: the engine applies it
when it next reads its commands.

Exit codes: 0 done; 1 not acknowledged in time, or Valkey unreachable; 2 config error (one
line naming the key); 3 refused by the engine (e.g. resume while the daily loss limit holds).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import re
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from valkey.exceptions import ValkeyError  # noqa: E402

from pipelines.config import ConfigError, load_config  # noqa: E402
from pipelines.model.clock import SAO_PAULO, from_ns  # noqa: E402
from pipelines.persistence.connection import CONN_ERRORS, connect, redact, resolve_password  # noqa: E402
from pipelines.persistence.risk_store import RiskStateUnavailable, read_state, send_command  # noqa: E402
from pipelines.risk.config import account_problem  # noqa: E402

log = logging.getLogger("quantumtrader.ctl")

DONE, NOT_ACKNOWLEDGED, CONFIG_ERROR, REFUSED = 0, 1, 2, 3
POLL_S = 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("halt", "resume", "flatten", "status"))
    p.add_argument("--account", default=None, help="the account (default: risk.account of the config)")
    p.add_argument("--reason", default="", help="why, for the record (halt and flatten)")
    p.add_argument("--config", default=str(REPO / "config" / "default.yaml"),
                   help="YAML config (default: config/default.yaml)")
    p.add_argument("--wait", type=float, default=None,
                   help="seconds to wait for the engine's acknowledgement (default: risk.ctl_wait_s)")
    return p.parse_args(argv)


def valkey_url(cfg) -> str:
    """``valkey.url``, else the URL of the embedded server launch.py last started under
    ``valkey.data_dir`` (its port is in the ``valkey.conf`` it wrote there)."""
    if cfg.valkey.url:
        return cfg.valkey.url
    data_dir = Path(cfg.valkey.data_dir)
    if not data_dir.is_absolute():
        data_dir = REPO / data_dir  # as launch.py resolves it
    try:
        m = re.search(r"^port (\d+)$", (data_dir / "valkey.conf").read_text(), re.MULTILINE)
    except OSError:
        m = None
    if m is None:
        raise ConfigError("valkey.url", f"null (the embedded server), and no embedded server has run under "
                                        f"{data_dir}: start the system with scripts/launch.py, or set valkey.url")
    return f"redis://{cfg.valkey.host}:{m.group(1)}/0"


def whoami() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _time(ns) -> str:
    return from_ns(ns).isoformat(timespec="seconds") if isinstance(ns, int) and ns > 0 else "-"


def status_line(account: str, st: dict | None) -> str:
    if st is None:
        return f"account {account}: no risk state stored (its risk engine has not run)"
    line = f"account {account}: {st.get('state')}"
    if st.get("reason"):
        line += f" ({st['reason']})"
    if st.get("flatten_requested") or st.get("flattening"):
        line += " [flattening]"
    if st.get("changed_by"):
        line += (f"; last change by {st['changed_by']} at {_time(st.get('changed_ts'))} (event time): "
                 f"{st.get('change')}")
    lc = st.get("last_command")
    if isinstance(lc, dict):
        line += f"; last command {lc.get('command')} by {lc.get('who')} sent {lc.get('sent_at') or '-'}: {lc.get('result')}"
    return line


def wait_for_ack(client, account: str, command_id: str, wait_s: float) -> dict | None:
    """The engine's stored ``last_command`` once it names ``command_id``; None after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        st = read_state(client, account) or {}
        lc = st.get("last_command")
        if isinstance(lc, dict) and lc.get("id") == command_id:
            return {**lc, "account_state": st}
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
        risk = cfg.risk
        account = args.account if args.account is not None else risk.account
        problem = account_problem(account)
        if problem is not None:
            raise ConfigError("--account" if args.account is not None else "risk.account", problem)
        wait_s = risk.ctl_wait_s if args.wait is None else args.wait
        if not wait_s > 0:
            raise ConfigError("--wait", f"must be > 0, got {wait_s!r}")
        url = valkey_url(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return CONFIG_ERROR

    client = connect(url, resolve_password(cfg.valkey))
    try:
        if args.command == "status":
            print(status_line(account, read_state(client, account)))
            return DONE
        who, sent_at = whoami(), datetime.now(SAO_PAULO).isoformat(timespec="seconds")
        command_id = send_command(client, account, args.command, who, args.reason, sent_at)
        log.info("%s of account %s sent by %s at %s%s (command %s)", args.command, account, who, sent_at,
                 f": {args.reason}" if args.reason else "", command_id)
        ack = wait_for_ack(client, account, command_id, wait_s)
    except (RiskStateUnavailable, *CONN_ERRORS) as e:
        print(f"valkey unreachable at {redact(url)}: {e}", file=sys.stderr)
        return NOT_ACKNOWLEDGED
    except ValkeyError as e:  # e.g. WRONGTYPE: the key holds something else
        print(f"valkey error at {redact(url)}: {type(e).__name__}: {e}", file=sys.stderr)
        return NOT_ACKNOWLEDGED
    finally:
        client.close()
    if ack is None:
        print(f"{args.command} not acknowledged within {wait_s:g} s: command {command_id} stays queued on "
              f"hmarl:risk:commands:{account} until account {account}'s risk engine reads it")
        return NOT_ACKNOWLEDGED
    if ack.get("result") != "done":
        print(f"{args.command} refused by account {account}'s risk engine: {ack.get('reason')}")
        return REFUSED
    st = ack["account_state"]
    print(f"{args.command} done by {who} at {sent_at}: account {account} is {st.get('state')}"
          + (f" ({st['reason']})" if st.get("reason") else ""))
    return DONE


if __name__ == "__main__":
    sys.exit(main())
