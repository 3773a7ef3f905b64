"""Wiring: wraps the plain actor classes with ``ray.remote`` and connects them.

The only module that knows about actor options. Every actor is ``num_cpus=0``
(they are I/O-bound and must schedule on any node), named in one namespace,
and restartable (``max_restarts``). The graph for N symbols:

    FeedActor ──> TradeBuffer:<SYM>, CandleBuffer:<SYM>   (ticks of SYM)
              ──> BookBuffer:<SYM>                         (book of SYM)
              ──> FeatureEngine:<SYM>                      (ticks + book of SYM)
              ──> ValkeyWriter, ZmqPublisher, Recorder     (everything)
    FeatureEngine:<SYM> ──> AnalyticsPublisher (ZeroMQ 5557-5560), Valkey flow state
    With execution.enabled and hmarl.enabled (trading):
    FeedActor ──> ExecutionActor execution:<account>    (ticks + book of every symbol)
    CoordinatorActor:<SYM> ──> execution:<account>      (decisions, every round)
    execution:<account> ──> AnalyticsPublisher          (orders, fills, positions: ZeroMQ 5561)

:class:`MarketDataGraph` creates, supervises and tears the graph down; the
launcher and the tests drive it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

from actors.buffers import BookBuffer, CandleBuffer, TradeBuffer
from actors.config import ActorConfig
from actors.execution import ExecutionActor, execution_name
from actors.edges import AnalyticsPublisher, MarketDataPublisher, Recorder, ValkeyWriter
from actors.features import FeatureEngine
from actors.hmarl import AgentActor, CoordinatorActor, FeedbackActor, MLActor, agent_name, coordinator_name, feedback_name, ml_name
from actors.feed import FeedActor, Route
from actors.rounds import RoundPlan
from pipelines.adapters.sources import make_source
from pipelines.alpha.registry import ML_VOTER
from pipelines.config import AppConfig, HmarlConfig
from pipelines.execution.costs import CostModel
from pipelines.model.instruments import tick_size_for
from pipelines.persistence.runs import new_run_id, stage_totals

log = logging.getLogger("quantumtrader.wiring")
REPO = Path(__file__).resolve().parent.parent

FEED = "feed"
VALKEY_WRITER = "valkey_writer"
ZMQ_PUBLISHER = "zmq_publisher"
RECORDER = "recorder"
ANALYTICS_PUBLISHER = "analytics_publisher"
ALL_KINDS = frozenset({"tick", "book", "book_update"})
RECORDED_SOURCES = frozenset({"simulator", "replay"})  # feeds whose event time runs at the reader's pace


def model_path(cfg: HmarlConfig) -> Path:
    """``hmarl.model_dir``, relative to the repository (where ``make run`` trains the starter)."""
    return Path(cfg.model_dir) if Path(cfg.model_dir).is_absolute() else REPO / cfg.model_dir


def buffer_name(kind: str, symbol: str) -> str:
    return f"{kind}:{symbol}"


def features_name(symbol: str) -> str:
    return f"features:{symbol}"


@dataclass
class ActorSpec:
    """How to (re)create one actor: its class, its config and dependencies, and routing."""

    name: str
    cls: type
    config: ActorConfig
    deps: dict = field(default_factory=dict)  # the constructor's keyword arguments beside the config
    kinds: frozenset[str] | None = None  # None: not a feed destination (the feed itself)
    symbols: frozenset[str] | None = None
    options: dict = field(default_factory=dict)


@dataclass
class ActorState:
    handle: Any
    incarnation: str | None = None
    restarts: int = 0  # restarts Ray did (seen as a new incarnation)
    recreated: int = 0  # times we created it anew after it died for good
    down: bool = False  # unreachable at the last ping (a restart under way)


class MarketDataGraph:
    """The whole actor graph (market data, analytics, decisions), for every configured symbol."""

    def __init__(self, cfg: AppConfig, valkey_url: str | None, on_event: Callable[[str], None] | None = None,
                 run_id: str | None = None, routing: str | None = None):
        """``routing``: ``live`` | ``shadow`` for ``execution.venue: profitdll`` (launch.py's
        --live / --shadow), None for paper trading."""
        self.cfg = cfg
        self.routing = routing
        self.valkey_url = valkey_url
        self.on_event = on_event or (lambda msg: log.info(msg))
        self.specs: dict[str, ActorSpec] = {}
        self.actors: dict[str, ActorState] = {}
        self.zmq_endpoints: dict[str, str] = {}
        # Counters survive restarts here: the last totals seen of each actor are carried
        # over when it comes back from zero (pipelines.persistence.runs.stage_totals).
        self._last_totals: dict[str, dict] = {}
        self._carried: Counter = Counter()
        # One session of the system: tags recordings, owns the paper account (``--resume`` passes the last one).
        self.run_id = run_id or new_run_id()
        # What every actor gets from the run; each actor's config adds its own domain's to it.
        self.run = ActorConfig.for_run(cfg, valkey_url, self.run_id)
        self._build_specs()

    @property
    def trading(self) -> bool:
        """Whether the graph trades: an execution actor needs decisions to make orders of."""
        cfg = self.cfg
        return cfg.execution.enabled and cfg.features.enabled and cfg.hmarl.enabled

    def _build_specs(self) -> None:
        cfg, run = self.cfg, self.run
        specs = []
        if self.valkey_url:
            specs.append(ActorSpec(VALKEY_WRITER, ValkeyWriter, run.with_domain(cfg.valkey), kinds=ALL_KINDS))
        # The edges bind sockets and write files: on a known node (the head by default), not wherever Ray puts them.
        on_zmq_node = pinned(cfg.zmq.resource)
        specs.append(ActorSpec(ZMQ_PUBLISHER, MarketDataPublisher, run.with_domain(cfg.zmq), kinds=ALL_KINDS,
                               options=on_zmq_node))
        if cfg.features.enabled:
            specs.append(ActorSpec(ANALYTICS_PUBLISHER, AnalyticsPublisher, run.with_domain(cfg.zmq),
                                   options=dict(on_zmq_node)))
        if cfg.recorder.enabled:
            specs.append(ActorSpec(RECORDER, Recorder, run.with_domain(cfg.recorder), kinds=ALL_KINDS,
                                   options=pinned(cfg.recorder.resource)))
        for sym in cfg.symbols:
            one = frozenset({sym})
            buffers = run.with_domain(cfg.buffers, sym)
            for kind, cls in (("trades", TradeBuffer), ("book", BookBuffer), ("candles", CandleBuffer)):
                specs.append(ActorSpec(buffer_name(kind, sym), cls, buffers, kinds=cls.KINDS, symbols=one))
            if cfg.features.enabled:
                hmarl = self._hmarl_specs(sym) if cfg.hmarl.enabled else []
                plan = None
                if hmarl:
                    plan = RoundPlan(cfg.hmarl.decision_every_ms,
                                     agents=tuple(agent_name(a, sym) for a in cfg.hmarl.agents),
                                     ml=ml_name(sym) if cfg.hmarl.ml_enabled else None,
                                     coordinator=coordinator_name(sym), feedback=feedback_name(sym))
                specs.append(ActorSpec(features_name(sym), FeatureEngine, run.with_domain(cfg.features, sym),
                                       dict(tick_size=self._tick_size(sym), publisher=ANALYTICS_PUBLISHER, rounds=plan),
                                       kinds=FeatureEngine.KINDS, symbols=one))
                specs.extend(hmarl)
        if self.trading:
            specs.append(self._execution_spec())
        self.specs = {s.name: s for s in specs}

    def _execution_spec(self) -> ActorSpec:
        """One ExecutionActor per account, on every symbol: the account's risk limits span them all."""
        cfg = self.cfg
        execution = cfg.execution
        if cfg.feed.source == "simulator" and execution.policy.calendar != "weekdays":
            # The simulator lays its sessions out on every weekday, holidays included: its market's
            # calendar, or the policy would refuse entries on a B3 holiday the simulator trades.
            log.info("execution: the simulator trades every weekday; the policy uses its calendar (weekdays)")
            execution = replace(execution, policy=replace(execution.policy, calendar="weekdays"))
        # A call lost to a restart (a decision) is run again once it is back; the policy dedupes
        # decision ids and the sequence gate market data, so a re-run sends nothing twice.
        return ActorSpec(execution_name(execution.account), ExecutionActor, self.run.with_domain(execution),
                         dict(risk=cfg.risk, symbols=tuple(cfg.symbols),
                              tick_sizes={s: self._tick_size(s) for s in cfg.symbols}, decided=tuple(cfg.symbols),
                              publisher=ANALYTICS_PUBLISHER, feedback={s: feedback_name(s) for s in cfg.symbols},
                              routing=self.routing),
                         kinds=ExecutionActor.KINDS, symbols=frozenset(cfg.symbols),
                         options={"max_task_retries": -1})

    def _tick_size(self, sym: str) -> float:
        """The simulator prices on its own grid; recorded and live data on the contract's."""
        sim_tick = self.cfg.feed.simulator.tick_size
        return sim_tick if self.cfg.feed.source == "simulator" else tick_size_for(sym, sim_tick)

    def _hmarl_specs(self, sym: str) -> list[ActorSpec]:
        """The four agents, the ML voter, the coordinator and the feedback system of one symbol."""
        cfg = self.cfg.hmarl
        if self.cfg.feed.source in RECORDED_SOURCES:
            # Event time is not the market's here: waiting costs nothing, and a round that gave up on
            # a slow or restarting voter would decide otherwise than the same input in a backtest.
            cfg = replace(cfg, round_timeout_s=cfg.recorded_round_timeout_s)
        config = self.run.with_domain(cfg, sym)
        # A round sent to an actor that died is run again once it is back (at least once), however
        # many attempts the restart takes (-1: a finite count was used up by "temporarily
        # unavailable" answers while rounds queued up, and those rounds were lost). The receivers
        # dedupe (decision slots, tracked keys, SET NX in Valkey).
        retry = {"max_task_retries": -1}
        placement: dict = dict(retry)
        if cfg.scheduling == "spread":
            placement["scheduling_strategy"] = "SPREAD"
        if cfg.agent_resource:
            placement["resources"] = {cfg.agent_resource: 0.01}
        specs = [ActorSpec(agent_name(a, sym), AgentActor, config, dict(agent_id=a), options=dict(placement))
                 for a in cfg.agents]
        voters = tuple(cfg.agents)
        if cfg.ml_enabled:
            model_dir = model_path(cfg)
            specs.append(ActorSpec(ml_name(sym), MLActor, config,
                                   dict(model_dir=str(model_dir), feed_source=self.cfg.feed.source),
                                   options=dict(placement)))
            voters += (ML_VOTER,)
        coordinator = dict(voters=voters, publisher=ANALYTICS_PUBLISHER)
        if self.trading:
            coordinator["execution"] = execution_name(self.cfg.execution.account)
        specs.append(ActorSpec(coordinator_name(sym), CoordinatorActor, config, coordinator, options=dict(retry)))
        costs = CostModel(self.cfg.execution.exchange.costs) if self.trading else None
        specs.append(ActorSpec(feedback_name(sym), FeedbackActor, config,
                               dict(tick_size=self._tick_size(sym),
                                    round_trip_cost=costs.fees(sym, 2) if costs is not None else 0.0),
                               options=dict(retry)))
        return specs

    # -- creation ---------------------------------------------------------------

    def _options(self, name: str, extra: dict) -> dict:
        return {
            "name": name,
            "namespace": self.cfg.namespace,
            "num_cpus": 0,
            "max_restarts": self.cfg.supervisor.max_restarts,
            "max_task_retries": 0,  # at-most-once calls; the seq protocol re-sends what was lost
            **extra,
        }

    def _create(self, spec: ActorSpec):
        return ray.remote(spec.cls).options(**self._options(spec.name, spec.options)).remote(spec.config, **spec.deps)

    def routes(self) -> list[Route]:
        return [
            Route(name, self.actors[name].handle, spec.kinds, spec.symbols, getattr(spec.cls, "BULK", False),
                  getattr(spec.cls, "BACKPRESSURE", True), getattr(spec.cls, "STORAGE", False))
            for name, spec in self.specs.items()
            if spec.kinds is not None and name in self.actors
        ]

    def start(self, timeout_s: float = 60.0) -> None:
        """Create the destinations, wait until they are ready, then the feed (which starts streaming)."""
        check_feed_placement(self.cfg)
        for spec in self.specs.values():
            self.actors[spec.name] = ActorState(self._create(spec))
        self._wait_ready(list(self.actors), timeout_s)
        self.zmq_endpoints = ray.get(self.actors[ZMQ_PUBLISHER].handle.endpoints.remote(), timeout=timeout_s)
        if ANALYTICS_PUBLISHER in self.actors:
            self.zmq_endpoints.update(ray.get(self.actors[ANALYTICS_PUBLISHER].handle.endpoints.remote(), timeout=timeout_s))
        feed_spec = self._feed_spec()
        self.specs[FEED] = feed_spec
        self.actors[FEED] = ActorState(self._create(feed_spec))
        self._wait_ready([FEED], max(timeout_s, self.cfg.feed.profitdll.ready_timeout_s + 10))
        for name in self.actors:
            self.actors[name].incarnation = self._ping(name, timeout_s).get("incarnation")

    def _feed_spec(self) -> ActorSpec:
        return ActorSpec(FEED, FeedActor, self.run.with_domain(self.cfg.feed),
                         dict(routes=self.routes(), open_source=partial(make_source, self.cfg.feed, tuple(self.cfg.symbols))),
                         options=feed_options(self.cfg))

    def _wait_ready(self, names: list[str], timeout_s: float) -> None:
        refs = {self.actors[n].handle.__ray_ready__.remote(): n for n in names}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        for ref in ready:
            ray.get(ref)  # raises if a constructor failed
        if pending:
            missing = ", ".join(refs[r] for r in pending)
            raise TimeoutError(
                f"actors not ready after {timeout_s:.0f}s: {missing} "
                "(see `ray status` for pending resource demands)"
            )

    def _ping(self, name: str, timeout_s: float) -> dict:
        return ray.get(self.actors[name].handle.ping.remote(), timeout=timeout_s)

    # -- supervision ------------------------------------------------------------

    def supervise(self) -> list[str]:
        """Ping every actor once. Logs restarts; recreates actors that died for good.
        Returns human-readable notes of what happened."""
        notes = []
        timeout = self.cfg.supervisor.ping_timeout_s
        refs = {name: st.handle.ping.remote() for name, st in self.actors.items()}
        recreate = []
        for name, ref in refs.items():
            st = self.actors[name]
            try:
                info = ray.get(ref, timeout=timeout)
            except ActorDiedError as e:
                notes.append(f"{name} died for good ({_cause(e)}); recreating")
                recreate.append(name)
                continue
            except (RayActorError, GetTimeoutError) as e:
                if not st.down:  # one line per outage, not one per ping
                    notes.append(f"{name} unavailable ({type(e).__name__}); Ray is restarting it")
                st.down = True
                continue
            st.down = False
            inc = info.get("incarnation")
            if st.incarnation is not None and inc != st.incarnation:
                st.restarts += 1
                self._carry(name)
                notes.append(f"{name} restarted by Ray (restart #{st.restarts}, pid {info.get('pid')})")
            st.incarnation = inc
            if name == FEED and info.get("error"):
                notes.append(f"feed error: {info['error']}")
        for name in recreate:
            self._recreate(name)
        for n in notes:
            self.on_event(n)
        return notes

    def _recreate(self, name: str) -> None:
        spec = self.specs[name]
        if name == FEED:
            spec = self.specs[FEED] = self._feed_spec()
        st = self.actors[name]
        self._carry(name)
        st.handle = self._create(spec)
        st.recreated += 1
        st.incarnation = None
        self._wait_ready([name], 60.0)
        if name != FEED and FEED in self.actors:
            try:
                ray.get(self.actors[FEED].handle.set_routes.remote(self.routes()), timeout=30)
            except RayActorError:
                pass  # the feed is down too; its own recreation wires the new handle

    def handle(self, name: str):
        return self.actors[name].handle

    def nodes_of(self, names: list[str], timeout_s: float = 10.0) -> dict[str, str | None]:
        """The IP address of the node each of ``names`` runs on (None when unknown): where
        subscribers connect and where recordings are written."""
        ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
        refs = {name: self.actors[name].handle.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
                for name in names if name in self.actors}
        out = {}
        for name, ref in refs.items():
            try:
                out[name] = ips.get(ray.get(ref, timeout=timeout_s))
            except Exception:
                out[name] = None
        return out

    def feed_finished(self) -> tuple[bool, str | None]:
        """(finished, error): a source that ran out, or a loop that failed (with its cause)."""
        try:
            info = self._ping(FEED, self.cfg.supervisor.ping_timeout_s)
        except RayActorError:
            return False, None
        return bool(info.get("finished")), info.get("error")

    def stats(self, timeout_s: float = 5.0) -> dict[str, Any]:
        refs = {n: st.handle.stats.remote() for n, st in self.actors.items()}
        out = {}
        for n, ref in refs.items():
            try:
                out[n] = ray.get(ref, timeout=timeout_s)
            except Exception as e:
                out[n] = {"error": type(e).__name__}
                continue
            totals = stage_totals({n: out[n]})
            if totals:
                self._last_totals[n] = totals
        return out

    def _carry(self, name: str) -> None:
        """``name`` restarted from zero: what it had counted so far carries over."""
        self._carried.update(self._last_totals.pop(name, {}))

    def totals(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Every stage's counters for the whole run: ``stats`` (a ``stats()`` or the
        ``shutdown()`` result) plus what restarted actors had counted before."""
        now = stage_totals(stats)
        return {k: now.get(k, 0) + self._carried.get(k, 0) for k in sorted(set(now) | set(self._carried))}

    # -- shutdown ---------------------------------------------------------------

    def shutdown(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Drain in order: stop the feed (it sends what is pending and waits for
        acknowledgements), flush Valkey, close sockets and files, remove the actors."""
        final: dict[str, Any] = {}

        def call(name: str, method: str, *args):
            if name not in self.actors:
                return None
            try:
                return ray.get(getattr(self.actors[name].handle, method).remote(*args), timeout=timeout_s)
            except Exception as e:
                log.error("shutdown: %s.%s failed: %s", name, method, e)
                return {"error": f"{type(e).__name__}: {e}"}

        final[FEED] = call(FEED, "stop", timeout_s / 2)
        for sym in self.cfg.symbols:
            final[features_name(sym)] = call(features_name(sym), "close", timeout_s / 4)
        for name, spec in self.specs.items():
            if spec.cls in (AgentActor, MLActor, CoordinatorActor, FeedbackActor):
                final[name] = call(name, "close", timeout_s / 4)
        for name, spec in self.specs.items():  # after the coordinators: their last decisions are in
            if spec.cls is ExecutionActor:
                final[name] = call(name, "close", timeout_s / 4)
        final[ANALYTICS_PUBLISHER] = call(ANALYTICS_PUBLISHER, "close")
        final[VALKEY_WRITER] = call(VALKEY_WRITER, "close", timeout_s / 2)
        final[RECORDER] = call(RECORDER, "close")
        final[ZMQ_PUBLISHER] = call(ZMQ_PUBLISHER, "close")
        for st in self.actors.values():
            try:
                ray.kill(st.handle, no_restart=True)
            except Exception:
                pass
        self.actors.clear()
        return {k: v for k, v in final.items() if v is not None}


def pinned(resource: str | None) -> dict:
    """Actor options that keep an actor on the nodes offering ``resource`` (a tiny share, so
    any number of actors fit on it); {} for any node."""
    return {"resources": {resource: 0.001}} if resource else {}


class PlacementError(RuntimeError):
    """No node of the cluster can host an actor as configured (one line, for the user)."""


def feed_options(cfg: AppConfig) -> dict:
    """The feed actor's placement: with the ProfitDLL it must run on the Windows node,
    which offers the custom resource ``feed.profitdll.resource``."""
    resource = cfg.feed.profitdll.resource
    if cfg.feed.source == "profitdll" and resource:
        return {"resources": {resource: 1}}
    return {}


def check_feed_placement(cfg: AppConfig) -> None:
    """Fail at once, plainly, when no node offers the feed's resource: Ray would
    otherwise keep the actor pending forever."""
    need = feed_options(cfg).get("resources")
    if not need:
        return
    (resource, amount), = need.items()
    have = ray.cluster_resources().get(resource, 0)
    if have < amount:
        raise PlacementError(
            f"feed.source profitdll needs a node offering the Ray resource {resource!r} and none does "
            f"(cluster has {have:g}). On the Windows machine with Profit run: "
            f"ray start --address <head>:6379 --resources '{{\"{resource}\": 1}}' "
            "(Ray supports Windows nodes in a multi-node cluster only with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1, "
            "at your own risk), or run scripts/feed_bridge.py there and use feed.source: bridge; "
            "or set feed.profitdll.resource: null to run the DLL host on any node.")


def _cause(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else type(err).__name__
