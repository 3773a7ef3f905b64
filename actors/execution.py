"""ExecutionActor: one account's orders, as an actor around :class:`ExecutionEngine`.

It is a feed destination like the buffers and the FeatureEngine (ticks and books of the
account's symbols, the same ``on_batch(events, prev)`` / :class:`BatchReply` sequence
protocol), and the coordinators send it their decisions (``on_decisions``). Every call's
:class:`~pipelines.execution.engine.Step` goes to Valkey: orders before their events, then
fills and positions (:class:`TradingStore`), the risk events to the risk stream
(:class:`RiskStore`).

One actor per account, not per symbol: the risk limits (total position, daily loss, the kill
switch) are the account's, so one risk engine must see every order and fill of it.

The kill switch: the operator's commands (``scripts/ctl.py``) are read from the account's
command stream, without blocking, before every batch and decision and on every ``ping`` (the
supervisor pings every second, so a halt is applied within about a second even when no market
data flows); each is applied with ``engine.command`` and the risk state stored and committed at
once, which is the acknowledgement ctl waits for.

Restart: the engine's state and the feed position it was taken at are stored together under
``hmarl:execution:<account>`` after every call that sent, changed or filled an order or applied
a command, and otherwise at most every ``STATE_EVERY_S`` of event time. A restarted actor loads
them and the feed re-sends the market data since from its resend window. Each call's writes
(orders, events, fills, positions, outcomes and the state after them) are one MULTI/EXEC
transaction, so a SIGKILL leaves Valkey at the end of a call, never inside one: the fills stored
are exactly those of the stored state, and what the replay makes is new. (The engine is
deterministic, so the replay usually makes the same orders and fills again; it need not, when the
feed's resend window no longer reaches back to the saved position or a decision's call completed
but its state did not reach Valkey.) A
decision already seen makes nothing (the policy remembers decision ids, and client order ids
are derived from them). The risk state stored under ``hmarl:risk:<account>`` is the authority
for the trading state: a restarted system comes back HALTED if it was halted.

Sequencing decisions with market data (``decided``: the symbols whose coordinator sends
decisions): a decision is applied exactly after the market event it was made on, whatever
arrives first, so fills do not depend on timing (:class:`DecisionSequencer` holds the market
data and the decisions until their place is known; its ``overrun`` and ``late_decisions`` count
the only cases where timing can matter). The feed position saved for a restart is that of the
events the engine processed, and the decisions still waiting are saved with it, so a restart
loses neither (the feed re-sends the held events).

Each decision's realized outcome, from its fills and its exit net of B3 costs
(``DecisionOutcome``, :mod:`pipelines.execution.attribution`), is stored
(``hmarl:outcomes:stream``) and sent to its symbol's feedback actor for the per-decision report.

Everything the engine does is published on ZeroMQ 5561 beside the decisions (topics
``order.<SYM>``, ``fill.<SYM>``, ``position.<SYM>``, ``risk.<SYM|ACCOUNT>``,
``account.<ACCOUNT>``, ``outcome.<SYM>``) through the publisher that owns the port.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from actors.config import ActorConfig
from actors.peers import Peer, Runtime
from pipelines.data.sequencing import BatchReply, DecisionSequencer, SeqGate
from pipelines.execution.config import PROFITDLL, ExecutionConfig
from pipelines.execution.engine import ExecutionEngine, Step
from pipelines.model.clock import NS_PER_S
from pipelines.model.messages import Event, from_dict, to_dict
from pipelines.model.orders import CANCELLED, OrderEvent, Position
from pipelines.risk.config import RiskConfig

log = logging.getLogger("quantumtrader.execution")

STATE_VERSION = 2  # 2: the processed feed position and the decisions waiting for their market data
STATE_EVERY_S = 1.0  # event time between state saves when nothing happened to an order
RESTORE_RETRY_S = 10.0  # how long the constructor keeps trying Valkey
COMMIT_S = 2.0  # how long a step waits for its writes (returns at once during an outage)


def execution_name(account: str) -> str:
    return f"execution:{account}"


class ExecutionActor:
    KINDS = frozenset({"tick", "book"})
    BACKPRESSURE = False  # orders are made from the data it has; the feed never waits on Valkey writes

    def __init__(self, config: ActorConfig[ExecutionConfig], *, risk: RiskConfig, symbols: tuple[str, ...],
                 tick_sizes: dict[str, float] | None = None, decided: tuple[str, ...] = (),
                 publisher: str | None = None, feedback: dict[str, str] | None = None, journal: bool = False,
                 runtime: Runtime | None = None, routing: str | None = None):
        """``decided``: the symbols whose coordinator sends decisions (their market data waits for
        them); ``publisher``: the actor that owns ZeroMQ 5561 (None: nothing published);
        ``feedback``: symbol -> its feedback actor, which reports each decision's outcome;
        ``journal``: keep every non-empty Step in ``journal``, in order (a backtest's record; the
        live graph has Valkey and leaves it off); ``runtime``: how other actors are called (None: Ray);
        ``routing``: ``live`` | ``shadow`` when ``execution.venue`` is ``profitdll`` (the launcher's
        --live / --shadow; the DLL host must be in the same mode), else None."""
        cfg = config.domain
        self.account = cfg.account
        self.run_id = config.run_id
        self.incarnation = uuid.uuid4().hex
        # Client order ids name the account and the run: hmarl:order:<id> is one key space for all
        # accounts, and a new run numbers its decisions from 1 again.
        scope = f"{self.account}/{self.run_id}/" if self.run_id else f"{self.account}/"
        self.routing = routing
        self.venue = self._live_venue(cfg, tick_sizes) if cfg.venue == PROFITDLL else None
        self._reconcile_due = self.venue is not None
        self._new_engine = lambda: ExecutionEngine(cfg, risk, tuple(symbols), tick_sizes=tick_sizes, id_scope=scope,
                                                   venue=self.venue)
        self.engine = self._new_engine()
        self.gate = SeqGate()
        self._new_sequencer = lambda: DecisionSequencer(decided, cfg.max_held_events)
        self.sequencer = self._new_sequencer()
        self.publisher = None
        self.feedback: dict = {}
        if publisher or feedback:
            if runtime is None:
                import ray as runtime

            self.publisher = Peer(runtime, publisher, config.namespace) if publisher else None
            self.feedback = {sym: Peer(runtime, name, config.namespace) for sym, name in (feedback or {}).items()}
        self.journal: list[Step] | None = [] if journal else None
        self.published = 0
        self.accepted = 0
        self.decisions = 0
        self.bad_calls: dict[str, int] = {}
        self.commands = 0
        self.saves = 0
        self.unsaved = 0  # commits that did not finish in time (Valkey slow or down; the writes stay queued)
        self.restored = False
        self.restore_error: str | None = None
        self.venue_error: str | None = None
        self._state_every_ns = int(STATE_EVERY_S * NS_PER_S)
        self._saved_at = 0
        self._commit_due = 0  # what the call's _save asked for: 1 commit, 2 commit and acknowledge a command
        self.trading = self.risk_store = None
        url = config.valkey.url
        if url:
            from pipelines.persistence.connection import password_from_env
            from pipelines.persistence.risk_store import RiskStore
            from pipelines.persistence.trading_store import TradingStore, TradingTTL

            password = password_from_env(config.valkey.password_env)
            self.trading = TradingStore(url, password, ttl=TradingTTL(order_s=cfg.ttl_order_s,
                                                                     position_s=cfg.ttl_position_s))
            self.risk_store = RiskStore(url, password, writer_id=f"execution-{self.incarnation[:12]}")
            with self._call():
                self._restore()
        if self.venue is not None:
            self._check_host_mode()
            self._reconcile()

    # -- the live venue ---------------------------------------------------------------

    def _live_venue(self, cfg: ExecutionConfig, tick_sizes: dict[str, float] | None):
        from pipelines.adapters.bridge.order_client import OrderClient
        from pipelines.execution.costs import CostModel
        from pipelines.execution.profitdll_venue import ProfitDLLVenue

        if self.routing not in ("live", "shadow"):
            raise ValueError("execution.venue: profitdll needs routing 'live' or 'shadow' (launch.py --live | --shadow)")
        pd = cfg.profitdll
        client = OrderClient(pd.orders, pd.updates, pd.broker_account, token=os.environ.get(pd.token_env) or None)
        return ProfitDLLVenue(client, cfg.account, costs=CostModel(cfg.exchange.costs), tick_sizes=tick_sizes,
                              request_timeout_s=pd.request_timeout_s)

    def _check_host_mode(self) -> None:
        """The DLL host must route the way the launcher was told: a --shadow run never reaches a
        host that sends to the DLL, a --live run never trusts a shadow host's acknowledgements.
        A host in the other mode, or none answering, halts trading (the operator resumes with ctl)."""
        from pipelines.execution.profitdll_venue import NO_ANSWER

        try:
            status = self.venue.link.request("status", {}, self.venue.timeout_s)
        except NO_ANSWER as e:
            self.venue_error = f"the DLL host does not answer: {e}"
        else:
            host_shadow = bool(status.get("shadow"))
            if host_shadow != (self.routing == "shadow"):
                self.venue_error = (f"the DLL host routes {'in shadow' if host_shadow else 'LIVE'} but this run is "
                                    f"--{self.routing}: start the host with{'out' if not host_shadow else ''} --shadow")
            else:
                self.venue_error = None
        if self.venue_error:
            log.error("execution %s: %s; trading HALTED", self.account, self.venue_error)
            with self._call():
                self._store(self.engine.command("halt", "execution", self.venue_error, self.engine.now))
                self._after(True, ack=True)

    def _reconcile(self) -> None:
        """The broker read and applied (``ExecutionEngine.reconcile``); tried again on the next
        ping while the host does not answer."""
        from pipelines.execution.profitdll_venue import NO_ANSWER

        try:
            with self._call():
                step = self.engine.reconcile(self.engine.now)
                self._store(step)
                self._after(True)
        except NO_ANSWER as e:
            self._reconcile_due = True
            log.warning("execution %s: reconcile with the broker failed (%s); trying again", self.account, e)
            return
        self._reconcile_due = False
        report = self.venue.last_reconcile or {}
        log.info("execution %s: reconciled with the broker: %s", self.account, report)

    def _poll_venue(self) -> None:
        """A live venue's news without market data (fills while the market is quiet), and a
        reconcile after the host restarted or the link came back."""
        if self.venue is None:
            return
        if self._reconcile_due or self.venue.link.take_reconnected():
            self._reconcile()
        with self._call():
            if self._store(self.engine.poll_venue()):
                self._after(True)

    # -- restart ----------------------------------------------------------------------

    def _restore(self) -> None:
        from pipelines.persistence.risk_store import RiskStateUnavailable

        deadline = time.monotonic() + RESTORE_RETRY_S
        saved = risk = None
        while True:
            try:
                saved = self.trading.load_engine_state(self.account)
                if saved is None:
                    raise RiskStateUnavailable("engine state unreadable")
                risk = self.risk_store.load_state(self.account)
                break
            except RiskStateUnavailable as e:
                if time.monotonic() > deadline:
                    # Without the stored state it cannot know whether it was halted: it halts.
                    self.restore_error = str(e)
                    log.error("execution %s: state unavailable, starting HALTED: %s", self.account, e)
                    self.engine.risk.halt("execution", f"state unavailable at start: {e}", self.engine.now)
                    return
                time.sleep(0.2)
        same_run = bool(saved) and saved.get("run_id") == self.run_id
        if saved and not same_run:
            # A new run is a new session of the market (the simulator starts its day again, a
            # replay its file): the paper account starts flat; the kill switch carries over.
            log.info("execution %s: new run %s: the paper account starts flat", self.account, self.run_id)
            self._end_previous_run()
        elif saved:
            try:
                if saved.get("version") != STATE_VERSION:
                    raise ValueError(f"unknown state version {saved.get('version')!r}")
                self.engine.load_state(saved["engine"])
                self.sequencer.load_state(saved, from_dict)
                self.gate.position.update(self.sequencer.processed)
                self._saved_at = self.engine.now
                self.restored = True
            except (ValueError, KeyError, TypeError, AttributeError) as e:  # another symbol set, an old layout
                self.restore_error = f"{type(e).__name__}: {e}"
                log.error("execution %s: saved state ignored: %s", self.account, self.restore_error)
                self.engine = self._new_engine()  # nothing half-loaded
                self.sequencer = self._new_sequencer()
                self.gate = SeqGate()
        if risk is not None:
            # the kill switch's record wins (a bad one halts: its own rule); the day's limits only in the same run
            self.engine.risk.load_state(risk, daily=same_run)
        elif not self.restored:
            self.engine.risk.command_cursor = self.risk_store.command_tail(self.account)
        self._save(commit=True, ack=True)
        if self.restored:
            log.info("execution %s restored: %d working orders, positions %s", self.account,
                     len(self.engine.working()), dict(self.engine.positions.quantities()))

    def _end_previous_run(self) -> None:
        """The records the previous run left: its working orders end (their simulated exchange is
        gone) and its positions are stored flat, so the stores describe this run's account."""
        for order, last in self.trading.load_open_orders(self.account) or ():
            ts = last.ts_event if last is not None else order.ts_event
            filled = last.filled_qty if last is not None else 0
            avg = last.avg_fill_price if last is not None else math.nan
            self.trading.store_order_event(OrderEvent(order.client_order_id, self.account, order.symbol, ts, CANCELLED,
                                                      filled, 0, avg, f"run ended; new run {self.run_id}"))
        for p in self.trading.load_positions(self.account) or ():
            if p.quantity or p.realized_pnl or p.fees:
                self.trading.store_position(Position(self.account, p.symbol, p.ts_event, 0, 0.0, p.last_price,
                                                     0.0, 0.0, 0.0))

    def _save(self, commit: bool, ack: bool = False) -> None:
        if self.trading is None:
            return
        self.saves += 1
        self._saved_at = self.engine.now
        # The position of what the engine processed, not of what was admitted: a restart has the
        # feed re-send the held events.
        self.trading.save_engine_state(self.account, {
            "version": STATE_VERSION, "run_id": self.run_id, "engine": self.engine.state(),
            **self.sequencer.state(to_dict)})
        self.risk_store.save_state(self.account, self.engine.risk.state())
        if commit:  # waited for when the call's transaction has been queued (_call)
            self._commit_due = max(self._commit_due, 2 if ack else 1)

    @contextmanager
    def _call(self) -> Iterator[None]:
        """One call's writes as one transaction (``TradingStore.transaction``): its orders, events,
        fills, positions and outcomes with the engine state saved after them. A SIGKILL mid-call
        leaves all of them in Valkey or none, so the fills stored are always those of the stored
        state: a restarted engine replays from that state, and whatever the replay makes is new.
        Then the commit the call asked for: the trading store's returns at once during an
        outage; the risk store's waits it out, which only a command's acknowledgement is worth
        (ctl waits for the stored state)."""
        if self.trading is None:
            yield
            return
        self._commit_due = 0
        with self.trading.transaction():
            yield
        due, self._commit_due = self._commit_due, 0
        if due and not (self.trading.commit(COMMIT_S) and (due < 2 or self.risk_store.commit(COMMIT_S))):
            self.unsaved += 1

    # -- inputs -----------------------------------------------------------------------

    def on_batch(self, events: list[Event] | bytes, prev: dict[str, int | None]) -> BatchReply:
        with self._call():
            return self._on_batch(events, prev)

    def _on_batch(self, events: list[Event] | bytes, prev: dict[str, int | None]) -> BatchReply:
        ack = self._serve_commands()
        try:
            good, resync = self.gate.admit(events, prev)
        except Exception:  # not a batch of events (the gate reads seq and symbol of each), or not picklable
            self._bad("bad_batch")
            good, resync = [], None
        self.accepted += len(good)
        self.sequencer.add_events(good)
        changed, _sent = self._release()
        self._after(changed or ack, ack)
        return BatchReply(self.incarnation, len(good), self.gate.duplicates, resync)

    def on_decisions(self, decisions: Any, through: Any = None, until: Any = None) -> int:
        """A coordinator's decisions, in order; ``through`` ({symbol: seq}): it has decided on every
        market event up to that seq; ``until`` ({symbol: event time}): its next decision will be on
        an event at or after that time. Returns how many orders were sent in this call (a decision
        whose market data has not come yet sends its orders later)."""
        with self._call():
            return self._on_decisions(decisions, through, until)

    def _on_decisions(self, decisions: Any, through: Any, until: Any) -> int:
        ack = self._serve_commands()
        if not isinstance(decisions, (list, tuple)):
            self._bad("decisions_not_a_list")
            decisions = ()
        self.decisions += len(decisions)
        sent = sum(self._apply(d) for d in self.sequencer.add_decisions(decisions))
        self.sequencer.mark(through, until)
        released, more = self._release()
        # a decision seen must be remembered (its id, or its place in the queue), even one that sent nothing
        self._after(bool(decisions) or released or ack, ack)
        return sent + more

    def _apply(self, d: Any) -> int:
        step = self.engine.on_decision(d)
        self._store(step)
        return len(step.orders)

    def _release(self, everything: bool = False) -> tuple[bool, int]:
        """The work the sequencer hands out now (``everything``: all of it), done in its order.
        Returns whether an order, fill, risk state or waiting decision changed, and how many
        orders the decisions applied here sent."""
        changed, sent = False, 0
        for kind, item in self.sequencer.release(everything):
            if kind == "market":
                changed = self._market(item) or changed
            else:
                sent += self._apply(item)
                changed = True  # out of the waiting queue: the saved state must say so
        return changed, sent

    def _market(self, events: list[Event]) -> bool:
        return bool(events) and self._store(self.engine.on_market(events))

    def command(self, kind: str, who: str, reason: str = "") -> dict:
        """The kill switch by an actor call (``halt`` | ``resume`` | ``flatten``); the risk status after it."""
        self.commands += 1
        with self._call():
            self._store(self.engine.command(kind, who, reason, self.engine.now))
            self._after(True, ack=True)
        return self.engine.risk.status()._asdict()

    def _bad(self, reason: str) -> None:
        self.bad_calls[reason] = self.bad_calls.get(reason, 0) + 1

    def _serve_commands(self) -> bool:
        """The operator's commands waiting on the account's stream, applied in order."""
        if self.risk_store is None:
            return False
        cmds = self.risk_store.read_commands(self.account, self.engine.risk.command_cursor)
        for command_id, fields in cmds:
            self.commands += 1
            self._store(self.engine.command(fields.get("command"), fields.get("who"), fields.get("reason", ""),
                                            self.engine.now, command_id))
        return bool(cmds)

    # -- outputs ----------------------------------------------------------------------

    def _store(self, step: Step) -> bool:
        """``step`` to Valkey (queued) and the journal; whether an order changed."""
        if self.journal is not None and any(step):
            self.journal.append(step)
        if self.trading is not None:
            for o in step.orders:
                self.trading.store_order(o)
            for e in step.order_events:
                self.trading.store_order_event(e)
            for f in step.fills:
                self.trading.store_fill(f)
            for p in step.positions:
                self.trading.store_position(p)
            for o in step.outcomes:
                self.trading.store_outcome(o)
            if step.risk_events:
                self.risk_store.publish(step.risk_events)
        if self.publisher is not None:
            out = [*step.orders, *step.order_events, *step.fills, *step.positions, *step.risk_events, *step.outcomes]
            if step.account is not None:
                out.append(step.account)
            if out:
                self.publisher.call("publish", out)
                self.published += len(out)
        for o in step.outcomes:  # each decision's result net of costs, for the per-decision report
            fb = self.feedback.get(o.symbol)
            if fb is not None:
                fb.call("on_outcomes", [o])
        return bool(step.orders or step.order_events or step.fills or step.risk_events or step.outcomes)

    def _after(self, changed: bool, ack: bool = False) -> None:
        if changed or self.engine.now - self._saved_at >= self._state_every_ns:
            self._save(commit=changed, ack=ack)

    # -- queries and control ----------------------------------------------------------

    def position(self) -> dict[str, int]:
        return dict(self.sequencer.processed)

    def ping(self) -> dict:
        # Serving the command stream here too: the supervisor's ping comes every second, market data or not.
        with self._call():
            if self._serve_commands():
                self._after(True, ack=True)
        self._poll_venue()
        return {"incarnation": self.incarnation, "pid": os.getpid(), "accepted": self.accepted}

    def stats(self) -> dict:
        return {
            **self.engine.stats(),
            "accepted": self.accepted,
            "decisions": self.decisions,
            "commands": self.commands,
            "bad_calls": {**self.bad_calls, **{f"bad_{k}": n for k, n in self.sequencer.bad_marks.items()}},
            "duplicates": self.gate.duplicates,
            "gaps": self.gate.gaps,
            "feed_position": dict(self.sequencer.processed),
            **self.sequencer.stats(),
            "published": self.published,
            "publisher": self.publisher.stats() if self.publisher is not None else None,
            "trading_state": self.engine.risk.trading_state,
            "risk_reason": self.engine.risk.status().reason,
            "account_summary": self.engine.positions.summary(self.engine.now)._asdict(),
            "saves": self.saves,
            "unsaved": self.unsaved,
            "restored": self.restored,
            "restore_error": self.restore_error,
            "routing": self.routing,
            "venue_error": self.venue_error,
            "trading_store": self.trading.stats() if self.trading is not None else None,
            "risk_store": self.risk_store.stats() if self.risk_store is not None else None,
        }

    def close(self, timeout_s: float = 10.0) -> dict:
        """Process what is still held (the coordinators have stopped before this), save the state,
        flush the writes, close the stores; may be called again."""
        with self._call():
            self._release(everything=True)
            self._save(commit=False)
        if self.venue is not None:
            self.venue.link.close()
        if self.trading is not None:
            self.trading.close(timeout_s)
            self.risk_store.close(timeout_s)
            self.trading = self.risk_store = None  # in memory from now on: nothing is lost by a late call
        return self.stats()
