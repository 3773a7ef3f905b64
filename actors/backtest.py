"""InProcessGraph: the live graph's decision path in one process, without Ray.

A backtest that ran other code than the live graph would prove nothing about it, so this runs
the live graph's own actor classes (FeatureEngine, the agents, the ML voter, the coordinator,
the feedback system and the ExecutionActor), built from the specs :class:`MarketDataGraph`
builds (:mod:`actors.wiring`), on the in-process runtime (:mod:`actors.inprocess`): every actor
call runs at once, in the caller's thread. Only the transport differs from the live graph.

Left out, because nothing on the decision path reads them: the buffers, the recorder, the
publishers (ZeroMQ) and Valkey (every actor keeps its state in memory; nothing is written).

The input goes the FeedActor's way: :meth:`InProcessGraph.admit` validates raw events with the
feed's :class:`Validator` (bad ones rejected and counted by reason) and numbers them per symbol;
:meth:`InProcessGraph.feed` hands numbered events to every destination that wants them, in
micro-batches of ``batch`` events, each with the ``prev`` map the feed sends (per symbol, the
last seq sent to that destination). The batch size changes nothing but speed: the decision
rounds and the execution actor's sequencer make every result a function of event time.
:meth:`InProcessGraph.run` polls the configured source (simulator or replay, as fast as it
goes) until it is exhausted.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Iterable

from actors.execution import ExecutionActor
from actors.feed import Route, feed_validator
from actors.features import FeatureEngine
from actors.hmarl import AgentActor, CoordinatorActor, FeedbackActor, MLActor
from actors.inprocess import InProcessRay
from actors.wiring import MarketDataGraph
from pipelines.adapters.base import FeedSource
from pipelines.adapters.config import FeedConfig
from pipelines.adapters.sources import make_source
from pipelines.config import AppConfig
from pipelines.data.sequencing import BatchReply
from pipelines.execution.engine import Step
from pipelines.model.messages import BookSnapshot, BookUpdate, Decision, Event, Trade
from pipelines.model.orders import Fill, Order

log = logging.getLogger("quantumtrader.backtest")

HMARL = (AgentActor, MLActor, CoordinatorActor, FeedbackActor)
DECISION_PATH = (FeatureEngine, *HMARL, ExecutionActor)
MARKET_EVENTS = (Trade, BookSnapshot, BookUpdate)
POLL_EVENTS = 10_000
SOURCE_WAIT_S = 0.001  # a source with nothing yet (a replay reading its next file) is asked again after this
_new = tuple.__new__


class _KeepDecisions:
    """The coordinator, with every decision its rounds make kept in ``into`` (in order)."""

    def __init__(self, coordinator: CoordinatorActor, into: list[Decision]):
        self._coordinator = coordinator
        self._into = into

    def on_round(self, *args, **kwargs) -> list[Decision]:
        made = self._coordinator.on_round(*args, **kwargs)
        self._into.extend(made)
        return made

    def __getattr__(self, name: str) -> Any:
        return getattr(self._coordinator, name)


def backtest_feed(feed: FeedConfig) -> FeedConfig:
    """``feed`` with its recorded or simulated source as fast as it goes (the backtest's pace is
    the code's, event time drives everything). Raises ValueError for a source that never ends."""
    if feed.source not in ("simulator", "replay"):
        raise ValueError(f"feed.source: a backtest reads the simulator or a replay, not {feed.source!r}")
    if feed.source == "simulator" and feed.simulator.max_events <= 0 and feed.simulator.end is None:
        raise ValueError("feed.simulator.end or max_events: a backtest needs a finite simulator session")
    return replace(feed, simulator=replace(feed.simulator, speed=0.0), replay=replace(feed.replay, speed=0.0))


class InProcessGraph:
    """One symbol set's decision path, fed by the caller; ``finish()`` closes it."""

    def __init__(self, cfg: AppConfig, *, run_id: str = "backtest", batch: int | None = None):
        """``batch``: events per micro-batch (default ``feed.batch_max_events``)."""
        if batch is not None and (type(batch) is not int or batch < 1):
            raise ValueError(f"batch: must be an int >= 1, got {batch!r}")
        self.cfg = cfg
        self.batch = batch or cfg.feed.batch_max_events
        self.runtime = InProcessRay()
        self.decisions: list[Decision] = []
        specs = MarketDataGraph(cfg, None, run_id=run_id).specs
        self.specs = {name: s for name, s in specs.items() if s.cls in DECISION_PATH}
        self.actors: dict[str, Any] = {}  # name -> the actor object
        self.routes: list[Route] = []
        for name, spec in self.specs.items():
            deps = dict(spec.deps)
            if "publisher" in deps:
                deps["publisher"] = None  # ZeroMQ is no part of a backtest
            if spec.cls is ExecutionActor:
                deps["journal"] = True
            obj = self.actors[name] = spec.cls(spec.config, **deps, runtime=self.runtime)
            handle = self.runtime.handle(_KeepDecisions(obj, self.decisions) if spec.cls is CoordinatorActor else obj,
                                         name)
            if spec.kinds is not None:  # a feed destination, in the live feed's route order
                self.routes.append(Route(name, handle, spec.kinds, spec.symbols))
        f = cfg.feed
        # As the live feed validates a recorded or simulated source: ts_recv is no arrival's wall
        # clock there, so no bound on how far ahead of it an event is stamped.
        self.validator = feed_validator(f, cfg.symbols, live=False)
        self.seq: dict[str, int] = {s: 0 for s in cfg.symbols}
        self.sent_upto: dict[str, dict[str, int]] = {r.name: {} for r in self.routes}
        self.pending: list[Event] = []
        self.events_out = 0
        self.batches = 0
        self.bad_events: dict[str, int] = {}  # what feed() was given that is no numbered market event
        self.refused: dict[str, int] = {}  # batches a destination refused or failed on (none expected in process)
        self.finished = False
        self._final: dict[str, Any] = {}

    # -- input ------------------------------------------------------------------------

    def admit(self, events: Iterable[Any]) -> list[Event]:
        """``events`` validated and numbered per symbol, as the live feed does; rejected ones are
        counted in ``stats()["validation"]``."""
        return self._number(self.validator.filter(events))

    def end_of_input(self) -> list[Event]:
        """At the end of the source: what the validator still held is decided (an unconfirmed jump
        is rejected and counted); the events that this accepts, numbered."""
        return self._number(self.validator.flush())

    def _number(self, good: list[Event]) -> list[Event]:
        seq, out = self.seq, []
        append = out.append
        for ev in good:
            row = list(ev)  # the cheapest copy to change one field of
            row[3] = seq[ev.symbol] = seq.get(ev.symbol, 0) + 1  # field 3 is seq, as in the feed
            append(_new(type(ev), row))
        return out

    def feed(self, events: Iterable[Any]) -> None:
        """Numbered market events, in order: delivered in micro-batches of ``batch``; a partial one
        waits for the next call (``finish`` delivers it). Anything else, or anything after
        ``finish``, is dropped and counted."""
        if self.finished:
            for _ev in events:
                self._bad("after_finish")
            return
        pending = self.pending
        for ev in events:
            if type(ev) not in MARKET_EVENTS:
                self._bad("not_a_market_event")
            elif type(ev.seq) is not int or ev.seq < 1:
                self._bad("not_numbered")
            elif ev.symbol not in self.seq:
                self._bad("unknown_symbol")
            else:
                pending.append(ev)
                if len(pending) >= self.batch:
                    self._dispatch(pending)
                    pending = self.pending = []

    def run(self, source: FeedSource | None = None) -> dict[str, Any]:
        """Every event of ``source`` (default: the configured one, see :func:`backtest_feed`)
        through the graph, then ``finish()``; returns its final stats. If it is interrupted (an
        exception, Ctrl-C) the source is closed and the exception goes on; ``finish()`` then
        still closes the graph on what was fed."""
        if source is None:
            source = make_source(backtest_feed(self.cfg.feed), tuple(self.cfg.symbols))
        try:
            while not source.exhausted:
                events = source.poll(POLL_EVENTS)
                if events:
                    self.feed(self.admit(events))
                else:
                    source.wait(SOURCE_WAIT_S)
        finally:
            source.close()
        self.feed(self.end_of_input())
        return self.finish()

    def _bad(self, reason: str) -> None:
        self.bad_events[reason] = self.bad_events.get(reason, 0) + 1

    def _dispatch(self, batch: list[Event]) -> None:
        """One micro-batch to each destination that wants part of it, with the feed's ``prev``."""
        self.batches += 1
        self.events_out += len(batch)
        kinds = {type(e).KIND for e in batch}
        symbols = {e.symbol for e in batch}
        for route in self.routes:
            if all(route.wants_key(k, s) for k in kinds for s in symbols):
                # the usual case: the route wants all of it (no per-event test); a list of its own, as
                # the live feed's pickled batch is, whatever the destination does with it
                part = list(batch)
            else:
                part = [e for e in batch if route.wants(e)]
            if not part:
                continue
            upto = self.sent_upto[route.name]
            prev = {s: upto.get(s, 0) for s in {e.symbol for e in part}}
            for e in part:
                if e.seq > upto.get(e.symbol, 0):
                    upto[e.symbol] = e.seq
            try:
                reply = BatchReply(*self.runtime.get(route.handle.on_batch.remote(part, prev)))
            except Exception as e:  # counted on the handle too; the run goes on as the live feed's does
                self._refused(route.name, f"{type(e).__name__}: {e}")
                continue
            if reply.resync_from:  # nothing is lost in process: a refusal is a bug, said once per destination
                self._refused(route.name, f"asked for a resend from {reply.resync_from}")

    def _refused(self, name: str, why: str) -> None:
        self.refused[name] = self.refused.get(name, 0) + 1
        if self.refused[name] == 1:
            log.error("backtest: %s refused a batch (%s)", name, why)

    # -- results ----------------------------------------------------------------------

    @property
    def steps(self) -> list[Step]:
        """Every non-empty Step of the execution actors, in order (none without execution)."""
        return [s for a in self.actors.values() if isinstance(a, ExecutionActor) for s in a.journal or ()]

    def orders(self) -> list[Order]:
        return [o for s in self.steps for o in s.orders]

    def fills(self) -> list[Fill]:
        return [f for s in self.steps for f in s.fills]

    def stats(self) -> dict[str, Any]:
        """The input's side, shaped like the live feed's stats (``stage_totals`` reads it)."""
        return {"events_out": self.events_out, "batches": self.batches, "seq": dict(self.seq),
                "validation": self.validator.stats(), "bad_events": dict(self.bad_events),
                "refused": dict(self.refused), "pending": len(self.pending), "finished": self.finished,
                "call_errors": {name: h.errors for name, h in self.runtime.named.items() if h.errors}}

    def finish(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Deliver the partial batch, then close in the live shutdown's order (the feature
        engines, whose last round reaches the agents and the feedback system; the HMARL actors;
        the execution actors, after the coordinators' last decisions); each actor's final stats
        by name, and ``feed``: the input's. May be called again (returns the same)."""
        if not self.finished:
            if self.pending:
                self._dispatch(self.pending)
                self.pending = []
            self._final = {}
            for group in ((FeatureEngine,), HMARL, (ExecutionActor,)):
                for name, spec in self.specs.items():
                    if spec.cls in group:
                        self._final[name] = self._close(name, timeout_s)
            self.finished = True
        return {"feed": self.stats(), **self._final}

    def _close(self, name: str, timeout_s: float) -> dict:
        try:
            return self.runtime.get(self.runtime.named[name].close.remote(timeout_s))
        except Exception as e:
            log.error("backtest: %s.close failed: %s", name, e)
            return {"error": f"{type(e).__name__}: {e}"}
