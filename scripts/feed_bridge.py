#!/usr/bin/env python
"""The feed bridge: hosts a market-data producer in its own process and publishes it over ZeroMQ.

ProfitDLL crashes the process that hosts it and allows one login per process, so
it lives here, alone, with no Ray. On Windows the user runs this script next to
Profit and points the pipeline at it (``source: bridge``); on one machine the
pipeline starts it itself (``source: profitdll``, see ``pipelines.adapters.bridge.host``).

    python scripts/feed_bridge.py --source profitdll --symbols WDOFUT \\
        --credentials-file C:\\secure\\profit.env --bind 0.0.0.0
    python scripts/feed_bridge.py --source simulator --symbols WDOZ26 --sim-rate 5000

Credentials come only from PROFIT_KEY / PROFIT_USER / PROFIT_PASSWORD or from
``--credentials-file`` (outside the repository), never from the command line,
and their values are scrubbed from every log line. The wire has no
authentication or encryption: binding anything but 127.0.0.1 is for a trusted
network (or an SSH tunnel / VPN) only.

Orders (``--routing``): the same process logs in with ``DLLInitializeLogin`` (market data and
routing) and serves the account's orders (``pipelines.adapters.bridge.order_service``): commands
on ``--orders`` (ROUTER, default 5564), order updates on ``--order-pub`` (PUB, default 5565).
``--account BROKER:ACCOUNT[:SUB]`` must be one of the login's routing accounts. The routing
password comes from PROFIT_ROUTING_PASSWORD (or the same name in ``--credentials-file``), stays
in this process and is scrubbed from every log line; the journal that makes retries safe lives in
``--state-dir`` (default ~/.quantumtrader/bridge/<account>, outside the repository). An order port
bound beyond 127.0.0.1 requires PROFIT_BRIDGE_TOKEN (environment or file), which every command
must then carry. ``--shadow`` runs all of it but calls no DLL routing function: orders are logged
and acknowledged (it needs no routing password; without ``--routing`` the login stays
market-data only).

    python scripts/feed_bridge.py --source profitdll --symbols WDOFUT --routing \
        --account 308:1234567 --credentials-file C:\secure\profit.env

Once serving it prints one line ``READY {json}`` (endpoints, incarnation, pid,
streams; ``orders`` / ``order_pub`` with the order service) to stdout; logs go to stderr. Exit codes: 0 after SIGTERM/SIGINT (the
producer is closed, i.e. DLLFinalize), 2 on a configuration error that no restart
can fix (bad arguments, missing credentials, DLL not found, login refused; one line
on stderr), 1 when the producer fails otherwise (e.g. not ready in time).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.adapters.bridge.protocol import DEFAULT_PUB_PORT, DEFAULT_REP_PORT  # noqa: E402
from pipelines.adapters.bridge.orders import (DEFAULT_ORDER_PORT, DEFAULT_ORDER_PUB_PORT,  # noqa: E402
                                              is_local_endpoint)
from pipelines.model.settings import SYMBOL_RE  # noqa: E402
from pipelines.adapters.profitdll.credentials import redact  # noqa: E402

log = logging.getLogger("feed_bridge")
_LOADED_DLL = False  # set once a ProfitSession exists in this process
ACCOUNTS_WAIT_S = 10.0  # the DLL lists the routing accounts shortly after routing connects


class ConfigError(Exception):
    """A bad command line or environment; the message is one line."""


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; one line is enough
        raise ConfigError(message)


class ScrubbingFormatter(logging.Formatter):
    """Hides every credential value in the finished line (message, args and traceback alike)."""

    def __init__(self, fmt: str, secrets: list[str]):
        super().__init__(fmt)
        self.secrets = secrets  # filled in once the credentials are loaded

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _OneLineParser(prog="feed_bridge", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", choices=("profitdll", "simulator"), default="profitdll")
    p.add_argument("--symbols", nargs="+", required=True, help="contract codes (WDOZ26) or WDOFUT / WINFUT")
    p.add_argument("--pub", default=str(DEFAULT_PUB_PORT), help="PUB port or tcp:// endpoint (port 0 = any free port)")
    p.add_argument("--rep", default=str(DEFAULT_REP_PORT), help="REP port or tcp:// endpoint")
    p.add_argument("--bind", default="127.0.0.1", help="address a bare --pub/--rep port binds to")
    p.add_argument("--dll-path", default=None, help="ProfitDLL file (else PROFITDLL_PATH)")
    p.add_argument("--credentials-file", default=None, help="file with PROFIT_KEY/USER/PASSWORD, outside the repo")
    p.add_argument("--exchange", default="F", help="exchange letter for subscriptions (F = BMF)")
    p.add_argument("--book-depth", type=int, default=10)
    p.add_argument("--heartbeat-s", type=float, default=1.0)
    p.add_argument("--ring-events", type=int, default=100_000, help="events kept per stream for resync")
    p.add_argument("--batch-max-events", type=int, default=250)
    p.add_argument("--batch-max-ms", type=float, default=2.0)
    p.add_argument("--sim-rate", type=float, default=2000.0, help="simulator events/s of event time")
    p.add_argument("--sim-speed", type=float, default=1.0, help="simulator event time per wall time; 0 = max")
    p.add_argument("--sim-seed", type=int, default=42)
    p.add_argument("--sim-start", default=None, help="ISO time of the simulator's first event")
    p.add_argument("--sim-max-events", type=int, default=0, help="stop producing after N events (0 = endless)")
    p.add_argument("--exit-with-parent", action="store_true", help="exit when stdin closes (the parent died)")
    p.add_argument("--routing", action="store_true", help="log in with routing and serve orders (needs --account)")
    p.add_argument("--shadow", action="store_true", help="serve orders without sending any to the DLL")
    p.add_argument("--account", default=None, help="routing account BROKER:ACCOUNT[:SUB]")
    p.add_argument("--orders", default=str(DEFAULT_ORDER_PORT), help="order command (ROUTER) port or endpoint")
    p.add_argument("--order-pub", default=str(DEFAULT_ORDER_PUB_PORT), help="order update (PUB) port or endpoint")
    p.add_argument("--state-dir", default=None, help="order journal folder, outside the repository "
                                                     "(default ~/.quantumtrader/bridge/<account>)")
    p.add_argument("--max-orders-per-s", type=float, default=5.0, help="the host's own order rate cap")
    p.add_argument("--order-burst", type=int, default=10, help="orders allowed at once under the rate cap")
    p.add_argument("--day-trade", action="store_true", help="SetDayTrade(1): tag orders as day trade")
    p.add_argument("--order-ring-updates", type=int, default=10_000, help="order updates kept for resync")
    p.add_argument("--recover-settle-s", type=float, default=2.0,
                   help="after a crash inside an order call: how long the broker's order list must stay unchanged")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = p.parse_args(argv)
    if args.heartbeat_s <= 0 or args.ring_events < 1 or args.batch_max_events < 1 or args.batch_max_ms < 0:
        raise ConfigError("--heartbeat-s, --ring-events, --batch-max-events must be positive")
    if not 1 <= args.book_depth <= 50:
        raise ConfigError(f"--book-depth must be 1..50, got {args.book_depth}")
    for s in args.symbols:
        if not SYMBOL_RE.match(s):
            raise ConfigError(f"--symbols: bad symbol {s!r} (expected 2-12 of A-Z 0-9, e.g. WDOZ26 or WDOFUT)")
    args.pub = endpoint(args.pub, args.bind, "--pub")
    args.rep = endpoint(args.rep, args.bind, "--rep")
    args.orders_on = args.routing or args.shadow
    if args.orders_on:
        if args.routing and args.source != "profitdll":
            raise ConfigError("--routing needs --source profitdll")
        if not args.account:
            raise ConfigError("--routing / --shadow need --account BROKER:ACCOUNT[:SUB]")
        from pipelines.adapters.bridge.order_service import ConfigError as OrderConfigError, parse_account

        try:
            parse_account(args.account)
        except OrderConfigError as e:
            raise ConfigError(str(e)) from None
        if not (args.max_orders_per_s > 0 and args.order_burst >= 1 and args.recover_settle_s >= 0
                and args.order_ring_updates >= 1):
            raise ConfigError("--max-orders-per-s must be > 0, --order-burst and --order-ring-updates >= 1, "
                              "--recover-settle-s >= 0")
        args.orders = endpoint(args.orders, args.bind, "--orders")
        args.order_pub = endpoint(args.order_pub, args.bind, "--order-pub")
    elif args.account or args.day_trade:
        raise ConfigError("--account / --day-trade only make sense with --routing or --shadow")
    return args


def endpoint(value: str, bind: str, flag: str) -> str:
    if value.isdigit():
        port = int(value)
        if port > 65535:
            raise ConfigError(f"{flag}: port {port} out of range")
        return f"tcp://{bind}:{port}"
    if not value.startswith(("tcp://", "ipc://")):
        raise ConfigError(f"{flag}: expected a port or a tcp:// endpoint, got {value!r}")
    return value


def make_resolver(today):
    """sym -> contract code: WDOFUT/WINFUT through pipelines.model.contracts, other codes as they are."""
    cache: dict[str, str] = {}

    def resolve(sym: str) -> str:
        if not sym.endswith("FUT"):
            return sym
        if sym not in cache:
            try:
                from pipelines.model.contracts import resolve_symbol
            except ImportError as e:
                raise ConfigError(f"cannot resolve {sym}: pipelines.model.contracts is not available ({e})") from None
            try:
                cache[sym] = resolve_symbol(sym, on=today)
            except (ValueError, KeyError) as e:
                raise ConfigError(f"cannot resolve {sym}: {e}") from None
        return cache[sym]

    return resolve


class SessionProducer:
    """A ProfitSession seen as the producer the BridgeServer polls (it never runs out)."""

    exhausted = False

    def __init__(self, session, symbols: list[str]):
        self.session = session
        self.symbols = tuple(symbols)
        self.poll = getattr(session, "poll", None) or session.drain

    def subscribe(self, symbol: str) -> None:
        self.session.subscribe(symbol)

    def unsubscribe(self, symbol: str) -> None:
        self.session.unsubscribe(symbol)

    def stats(self) -> dict:
        return self.session.stats()

    def close(self) -> None:
        self.session.close()


def make_producer(args: argparse.Namespace, symbols: list[str], secrets: list[str]):
    if args.source == "simulator":
        from pipelines.adapters.config import SimulatorConfig
        from pipelines.adapters.simulator import MarketSimulator

        try:
            cfg = SimulatorConfig(seed=args.sim_seed, rate=args.sim_rate, speed=args.sim_speed, start=args.sim_start,
                                  book_depth=max(5, args.book_depth), max_events=args.sim_max_events)
            return MarketSimulator(cfg, symbols)
        except ValueError as e:
            raise ConfigError(f"simulator: {e}") from None
    from pipelines.adapters.profitdll.credentials import CredentialsError, load_credentials

    try:
        creds = load_credentials(file=args.credentials_file)
    except CredentialsError as e:
        raise ConfigError(str(e)) from None
    secrets.extend(creds.values())  # the log formatter and error lines hide them from here on
    from pipelines.adapters.profitdll.session import ProfitSession

    session = ProfitSession(creds, symbols, dll_path=args.dll_path, exchange=args.exchange, book_depth=args.book_depth,
                            routing=args.routing)
    global _LOADED_DLL
    _LOADED_DLL = True
    return SessionProducer(session, symbols)


def order_settings(args: argparse.Namespace, secrets: list[str]):
    """The order service's secrets and journal, checked before anything is loaded (ConfigError)."""
    from pipelines.adapters.bridge.order_service import (ConfigError as OrderConfigError, Journal, default_state_dir,
                                                         load_order_secrets, outside_repository)

    try:
        order_secrets = load_order_secrets(args.credentials_file)
        secrets.extend(order_secrets.values())  # hidden from every log line from here on
        if args.routing and not args.shadow and order_secrets.routing_password is None:
            raise ConfigError("--routing needs the routing password: set PROFIT_ROUTING_PASSWORD in the environment "
                              "or the credentials file")
        beyond = [ep for ep in (args.orders, args.order_pub) if not is_local_endpoint(ep)]
        if beyond and order_secrets.token is None:
            raise ConfigError(f"order endpoints beyond 127.0.0.1 ({', '.join(beyond)}) need a shared token: "
                              "set PROFIT_BRIDGE_TOKEN in the environment or the credentials file")
        state_dir = outside_repository(Path(args.state_dir) if args.state_dir else default_state_dir(args.account),
                                       "--state-dir")
        name = "shadow-journal.jsonl" if args.shadow else "journal.jsonl"
        journal = Journal(state_dir / name)
    except OrderConfigError as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"--state-dir: cannot use the order journal: {e}") from None
    return order_secrets, journal


def routing_account(session, account: str):
    """The login's routing account named by ``--account`` (waits for the DLL to list them); ConfigError if absent."""
    import time

    from pipelines.adapters.bridge.order_service import parse_account
    from pipelines.adapters.profitdll.errors import ProfitDLLError

    broker, acct, sub = parse_account(account)
    deadline = time.monotonic() + ACCOUNTS_WAIT_S
    problem = "the DLL lists no routing account"
    while True:
        try:
            accounts = session.routing.accounts()
            for a in accounts:
                if (a.broker_id, a.account_id, a.sub_account_id) == (broker, acct, sub):
                    return a
            if accounts:
                listed = ", ".join(f"{a.broker_id}:{a.account_id}" + (f":{a.sub_account_id}" if a.sub_account_id
                                                                        else "") for a in accounts)
                raise ConfigError(f"--account {account} is not a routing account of this login (it has: {listed})")
        except ProfitDLLError as e:
            problem = f"listing the routing accounts failed: {type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise ConfigError(f"--account {account}: {problem} after {ACCOUNTS_WAIT_S:g} s")
        time.sleep(0.2)


def serve_orders(service, stop: threading.Event, failures: list) -> None:
    """The order service's thread: a failure stops the whole host (exit 1, restarted by its supervisor)."""
    try:
        service.run(stop)
    except Exception as e:
        log.error("order service failed: %s: %s", type(e).__name__, e)
        failures.append(e)
        stop.set()


def main(argv: list[str] | None = None) -> int:
    secrets: list[str] = []
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter("%(asctime)s feed_bridge[%(process)d] %(levelname)s %(message)s", secrets))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    try:
        args = parse_args(argv)
        logging.getLogger().setLevel(args.log_level)
        from pipelines.model.clock import SAO_PAULO

        resolve = make_resolver(datetime.now(SAO_PAULO).date())
        symbols = list(dict.fromkeys(resolve(s) for s in args.symbols))
        order_secrets, journal = order_settings(args, secrets) if args.orders_on else (None, None)
        producer = make_producer(args, symbols, secrets)
    except ConfigError as e:
        print(redact(f"feed_bridge: error: {e}", secrets), file=sys.stderr, flush=True)
        return 2

    from pipelines.adapters.bridge.server import BridgeServer

    stop = threading.Event()
    server = service = service_thread = None
    failures: list = []
    try:
        try:
            server = BridgeServer(producer, args.pub, args.rep, heartbeat_s=args.heartbeat_s, ring_events=args.ring_events,
                                  batch_max_events=args.batch_max_events, batch_max_ms=args.batch_max_ms,
                                  resolve=resolve)
            if args.orders_on:
                from pipelines.adapters.bridge.order_service import OrderService

                service = OrderService(args.account, args.orders, args.order_pub, journal=journal,
                                       token=order_secrets.token, max_orders_per_s=args.max_orders_per_s,
                                       burst=args.order_burst, heartbeat_s=args.heartbeat_s,
                                       ring_updates=args.order_ring_updates, recover_settle_s=args.recover_settle_s)
        except OSError as e:
            print(f"feed_bridge: error: {e}", file=sys.stderr, flush=True)
            return 2
        for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGBREAK", None)):
            if sig is not None:
                signal.signal(sig, lambda *_: stop.set())
        if args.exit_with_parent:
            threading.Thread(target=_watch_stdin, args=(stop,), name="parent-watch", daemon=True).start()
        session = getattr(producer, "session", None)
        if session is not None:
            from pipelines.adapters.profitdll.errors import ProfitDLLLoadError, ProfitLoginError

            if service is not None:
                session.order_sink = service.on_dll_event  # order events never enter the market-data stream
            try:
                session.start()  # DLL load, login, callbacks, readiness, subscriptions
            except (ProfitDLLLoadError, ProfitLoginError) as e:
                # No retry can fix these, and repeated bad logins may block the account.
                print(redact(f"feed_bridge: error: {type(e).__name__}: {e}", secrets), file=sys.stderr, flush=True)
                return 2
        if service is not None:
            try:
                start_orders(args, service, session, order_secrets)
            except ConfigError as e:
                print(redact(f"feed_bridge: error: {e}", secrets), file=sys.stderr, flush=True)
                return 2
            service_thread = threading.Thread(target=serve_orders, args=(service, stop, failures), name="orders",
                                              daemon=True)
            service_thread.start()
        ready = {"pub": server.pub_endpoint, "rep": server.rep_endpoint, "incarnation": server.incarnation,
                 "pid": os.getpid(), "source": args.source, "streams": symbols}
        if service is not None:
            ready.update(orders=service.command_endpoint, order_pub=service.pub_endpoint,
                         order_incarnation=service.incarnation, shadow=args.shadow, account=args.account)
        print("READY " + json.dumps(ready), flush=True)
        log.info("serving %s on %s (commands on %s), incarnation %s", ",".join(symbols), server.pub_endpoint,
                 server.rep_endpoint, server.incarnation)
        if not all(ep.startswith(("tcp://127.", "tcp://localhost:", "ipc://")) for ep in (args.pub, args.rep)):
            log.warning("listening beyond this machine: the bridge has no authentication or encryption; "
                        "use it on a trusted network, a VPN or an SSH tunnel only")
        if service is not None and not all(is_local_endpoint(ep) for ep in (args.orders, args.order_pub)):
            log.warning("order service listening beyond this machine: commands need the shared token, but nothing "
                        "is encrypted and anyone who reaches the update port can read the order updates; "
                        "use a trusted network, a VPN or an SSH tunnel")
        server.run(stop)
        log.info("stopping: %s", json.dumps({k: v for k, v in server.stats().items() if k != "last_seq"}))
        if service is not None:
            log.info("order service: %s", json.dumps(service.stats()["counts"]))
        return 1 if failures else 0
    except Exception as e:  # the producer failed: say what, in one line, and let the host restart us
        log.error("bridge failed: %s: %s", type(e).__name__, e)
        return 1
    finally:
        stop.set()
        if service_thread is not None:
            service_thread.join(5)
        if service is not None:
            service.close()
        if journal is not None:
            journal.close()
        if server is not None:
            server.close()
        try:
            producer.close()  # DLLFinalize for ProfitDLL
        except Exception as e:
            log.error("closing the producer failed: %s: %s", type(e).__name__, e)


def start_orders(args: argparse.Namespace, service, session, order_secrets) -> None:
    """Give the order service its router (the DLL, or shadow) and let it recover what a previous
    host left pending. ConfigError when the account is not one of the login's."""
    from pipelines.adapters.bridge.order_service import DllRouter, ShadowRouter

    account = service.routing_account
    if args.routing:
        account = routing_account(session, args.account)
    if args.shadow:
        service.attach(ShadowRouter(account, service.on_dll_event, args.exchange))
        log.info("shadow: orders for %s are logged and acknowledged, never sent to the DLL", args.account)
    else:
        service.attach(DllRouter(session.routing, account, order_secrets.routing_password, args.exchange))
        if args.day_trade:
            session.routing.set_day_trade(True)
            log.info("SetDayTrade(1): orders are tagged as day trade")
    service.recover()
    log.info("order service for %s: commands on %s, updates on %s, incarnation %s%s", args.account,
             service.command_endpoint, service.pub_endpoint, service.incarnation, " (shadow)" if args.shadow else "")


def _watch_stdin(stop: threading.Event) -> None:
    """The parent holds our stdin open; EOF means it is gone, and so should we be."""
    try:
        # os.read, not sys.stdin.buffer.read: a thread blocked inside the buffered
        # reader makes interpreter shutdown abort (SIGABRT) while stdin is still open.
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()


def _exit(code: int) -> None:
    """Exit. On Windows with the DLL loaded, TerminateProcess: its native threads can keep the
    process alive after DLLFinalize even through os._exit."""
    if os.name == "nt" and _LOADED_DLL:
        import ctypes

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        kernel32 = ctypes.windll.kernel32
        kernel32.TerminateProcess(kernel32.GetCurrentProcess(), code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
