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
them and the feed re-sends the market data since from its resend window; the engine is
deterministic, so the replay makes the same orders and fills, which the stores keep once. A
decision already seen makes nothing (the policy remembers decision ids, and client order ids
are derived from them). The risk state stored under ``hmarl:risk:<account>`` is the authority
for the trading state: a restarted system comes back HALTED if it was halted.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

from actors.config import ActorConfig
from pipelines.data.sequencing import BatchReply, SeqGate
from pipelines.execution.config import ExecutionConfig
from pipelines.execution.engine import ExecutionEngine, Step
from pipelines.model.clock import NS_PER_S
from pipelines.model.messages import Event
from pipelines.risk.config import RiskConfig

log = logging.getLogger("quantumtrader.execution")

STATE_VERSION = 1
STATE_EVERY_S = 1.0  # event time between state saves when nothing happened to an order
RESTORE_RETRY_S = 10.0  # how long the constructor keeps trying Valkey
COMMIT_S = 2.0  # how long a step waits for its writes (returns at once during an outage)


def execution_name(account: str) -> str:
    return f"execution:{account}"


class ExecutionActor:
    KINDS = frozenset({"tick", "book"})
    BACKPRESSURE = False  # orders are made from the data it has; the feed never waits on Valkey writes

    def __init__(self, config: ActorConfig[ExecutionConfig], *, risk: RiskConfig, symbols: tuple[str, ...],
                 tick_sizes: dict[str, float] | None = None):
        cfg = config.domain
        self.account = cfg.account
        self.incarnation = uuid.uuid4().hex
        self.engine = ExecutionEngine(cfg, risk, tuple(symbols), tick_sizes=tick_sizes)
        self.gate = SeqGate()
        self.accepted = 0
        self.decisions = 0
        self.bad_calls: dict[str, int] = {}
        self.commands = 0
        self.saves = 0
        self.unsaved = 0  # commits that did not finish in time (Valkey slow or down; the writes stay queued)
        self.restored = False
        self.restore_error: str | None = None
        self._state_every_ns = int(STATE_EVERY_S * NS_PER_S)
        self._saved_at = 0
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
            self._restore()

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
        if saved:
            try:
                if saved.get("version") != STATE_VERSION:
                    raise ValueError(f"unknown state version {saved.get('version')!r}")
                self.engine.load_state(saved["engine"])
                self.gate.position.update({s: int(q) for s, q in saved["gate"].items()})
                self._saved_at = self.engine.now
                self.restored = True
            except (ValueError, KeyError, TypeError, AttributeError) as e:  # another symbol set, an old layout
                self.restore_error = f"{type(e).__name__}: {e}"
                log.error("execution %s: saved state ignored: %s", self.account, self.restore_error)
        if risk is not None:
            self.engine.risk.load_state(risk)  # the kill switch's record wins (a bad one halts: its own rule)
        elif not self.restored:
            self.engine.risk.command_cursor = self.risk_store.command_tail(self.account)
        self._save(commit=True, ack=True)
        if self.restored:
            log.info("execution %s restored: %d working orders, positions %s", self.account,
                     len(self.engine.working()), dict(self.engine.positions.quantities()))

    def _save(self, commit: bool, ack: bool = False) -> None:
        if self.trading is None:
            return
        self.saves += 1
        self._saved_at = self.engine.now
        self.trading.save_engine_state(self.account, {"version": STATE_VERSION, "engine": self.engine.state(),
                                                      "gate": dict(self.gate.position)})
        self.risk_store.save_state(self.account, self.engine.risk.state())
        # The trading store's commit returns at once during an outage; the risk store's waits it
        # out, which only a command's acknowledgement is worth (ctl waits for the stored state).
        if commit and not (self.trading.commit(COMMIT_S) and (not ack or self.risk_store.commit(COMMIT_S))):
            self.unsaved += 1

    # -- inputs -----------------------------------------------------------------------

    def on_batch(self, events: list[Event] | bytes, prev: dict[str, int | None]) -> BatchReply:
        ack = self._serve_commands()
        changed = ack
        try:
            good, resync = self.gate.admit(events, prev)
        except Exception:  # not a batch of events (the gate reads seq and symbol of each), or not picklable
            self._bad("bad_batch")
            good, resync = [], None
        if good:
            self.accepted += len(good)
            changed = self._store(self.engine.on_market(good)) or changed
        self._after(changed, ack)
        return BatchReply(self.incarnation, len(good), self.gate.duplicates, resync)

    def on_decisions(self, decisions: Any) -> int:
        """The coordinator's decisions, in order; returns how many orders they sent."""
        ack = self._serve_commands()
        sent = 0
        if not isinstance(decisions, (list, tuple)):
            self._bad("decisions_not_a_list")
            decisions = ()
        for d in decisions:
            self.decisions += 1
            step = self.engine.on_decision(d)
            sent += len(step.orders)
            self._store(step)
        # a decision seen must be remembered (its id), even one that sent nothing
        self._after(bool(decisions) or ack, ack)
        return sent

    def command(self, kind: str, who: str, reason: str = "") -> dict:
        """The kill switch by an actor call (``halt`` | ``resume`` | ``flatten``); the risk status after it."""
        self.commands += 1
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
        """``step`` to Valkey (queued); whether an order changed."""
        if self.trading is not None:
            for o in step.orders:
                self.trading.store_order(o)
            for e in step.order_events:
                self.trading.store_order_event(e)
            for f in step.fills:
                self.trading.store_fill(f)
            for p in step.positions:
                self.trading.store_position(p)
            if step.risk_events:
                self.risk_store.publish(step.risk_events)
        return bool(step.orders or step.order_events or step.fills or step.risk_events)

    def _after(self, changed: bool, ack: bool = False) -> None:
        if changed or self.engine.now - self._saved_at >= self._state_every_ns:
            self._save(commit=changed, ack=ack)

    # -- queries and control ----------------------------------------------------------

    def position(self) -> dict[str, int]:
        return dict(self.gate.position)

    def ping(self) -> dict:
        # Serving the command stream here too: the supervisor's ping comes every second, market data or not.
        if self._serve_commands():
            self._after(True, ack=True)
        return {"incarnation": self.incarnation, "pid": os.getpid(), "accepted": self.accepted}

    def stats(self) -> dict:
        return {
            **self.engine.stats(),
            "accepted": self.accepted,
            "decisions": self.decisions,
            "commands": self.commands,
            "bad_calls": dict(self.bad_calls),
            "duplicates": self.gate.duplicates,
            "gaps": self.gate.gaps,
            "feed_position": dict(self.gate.position),
            "trading_state": self.engine.risk.trading_state,
            "saves": self.saves,
            "unsaved": self.unsaved,
            "restored": self.restored,
            "restore_error": self.restore_error,
            "trading_store": self.trading.stats() if self.trading is not None else None,
            "risk_store": self.risk_store.stats() if self.risk_store is not None else None,
        }

    def close(self, timeout_s: float = 10.0) -> dict:
        """Save the state, flush the writes, close the stores; may be called again."""
        if self.trading is not None:
            self._save(commit=False)
            self.trading.close(timeout_s)
            self.risk_store.close(timeout_s)
            self.trading = self.risk_store = None  # in memory from now on: nothing is lost by a late call
        return self.stats()
