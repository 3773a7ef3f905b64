"""What the four specialist agents share: votes, combining them, and the :class:`Agent` base.

Each agent folds the FeatureEngine's analytics of one symbol and, after each
message it reacts to, emits one :class:`Signal`. Rules vote; the learning
layer (:mod:`pipelines.alpha.learning`) decides whether to follow, fade or
ignore the vote in the current market context. The rules and contexts of each
agent are in its own module (``order_flow``, ``liquidity``, ``tape``,
``footprint``); :mod:`pipelines.alpha.registry` names them.

Votes and the raw signal
    A rule that fires gives a :class:`Vote` (direction +1 buy / -1 sell,
    confidence in [0, 1], and a reason naming its inputs, values and
    threshold). Gates give a note (direction 0) that explains a neutral
    signal. Raw direction = sign(S), raw confidence = |S| / n with
    S = sum(direction x confidence) over the n directional votes: the mean
    signed vote, so agreeing rules keep their mean confidence and
    disagreeing ones cancel. No directional vote: direction 0, confidence 0.

One signal per seq
    Messages are grouped by ``seq`` (the FeatureEngine stamps every output of
    one event with that event's seq): the rules of every message of the group
    the agent reacts to vote together, and the group gives at most one signal
    with that seq and the latest ``ts_event`` of those messages, so feedback
    matches by (agent, seq) without ambiguity. A FeatureVector only updates
    the agent's view (last price, returns); ``Signal.price`` is the last
    trade price seen once the whole group is read; no signal until a price is
    known. A group whose seq is not above the last emitted one is dropped
    (counted). Messages of other symbols or kinds are ignored and counted;
    a message whose fields do not parse is counted as bad.

Validity (``Signal.valid_ns``, how long the coordinator counts a signal)
    An agent that votes once per closed bar says so (``VALID_NS``: its view
    holds until the next bar closes). The others keep 0 (the coordinator's
    ``signal_ttl_s``): they signal again on every state (each
    ``features.state_every_ms``, 1 s), neutral when no rule fires, so the next
    signal replaces theirs within a second; a longer validity would never be used.

From the raw vote to the signal
    Each agent maps its current view to a small discrete context; the context's
    learned arm decides. Emitted direction = raw direction x (+1 act, -1 fade,
    0 abstain); emitted confidence = raw confidence x the chosen arm's weight
    (weights sum to 1); abstain and neutral signals have confidence 0.
    ``learning=False`` always acts at the raw confidence and learns nothing. A
    final confidence below ``min_confidence`` (config ``hmarl.min_confidence``)
    makes the signal neutral ("abstain"); it still learns. The trading cost the
    arms pay is ``cost_ticks`` (config ``hmarl.agent_cost_ticks``, default 1).
    The raw direction, confidence and context of the last 10,000 signals with a
    raw direction wait for their Feedback (matched by voter and seq); the
    learning needs a Feedback for abstained and faded signals too, since the
    reward is recomputed from the raw vote.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Iterable, NamedTuple

from pipelines.alpha.learning import ARM_SIGN, ARMS, HEDGE_ETA, HEDGE_FLOOR, REWARD_SCALE_TICKS, ContextualHedge
from pipelines.model.clock import NS_PER_S
from pipelines.model.instruments import instrument_for
from pipelines.model.messages import Feedback, FeatureVector, FlowState, FootprintState, LiquidityState, Signal, TapeSignal

NAN = float("nan")
# Round trip, in ticks of the instrument: aggressive entry and exit cross the spread once, one tick
# on WDO and WIN in liquid hours, and B3 fees and brokerage add a fraction of a tick (WDO's tick is
# R$5). The rewards are moves between trade prices, which never see the spread, hence this charge.
COST_TICKS = 1.0
# A final confidence below this abstains (also the default of config hmarl.min_confidence): such a
# signal could not carry a decision (the consensus threshold) on its own, yet as a present voter it
# would take a share of the weight and dilute the others.
MIN_CONFIDENCE = 0.1
MAX_PENDING = 10_000  # signals awaiting feedback, per agent
STATE_VERSION = 1  # of the learning state layout (Valkey hmarl:agent:<id>:learning)
SPEED_CONTEXT_RATIO = 1.0  # context bucket speed_hi: 60 s print rate at or above its baseline
_ANALYTICS = (FeatureVector, FlowState, LiquidityState, FootprintState, TapeSignal)


class ConfidenceShape(NamedTuple):
    """confidence = min(cap, base + slope |x|) for a rule on a signed level x."""

    base: float
    slope: float
    cap: float = 1.0

    def of(self, x: float) -> float:
        return min(self.cap, self.base + self.slope * abs(x))


class Vote(NamedTuple):
    rule: str
    direction: int  # +1 buy, -1 sell, 0 a note explaining a neutral outcome (a gate)
    confidence: float
    reason: str


def combine(votes: Iterable[Vote]) -> tuple[int, float]:
    """(raw direction, raw confidence) = (sign S, |S| / n), S the sum of signed votes."""
    directional = [v for v in votes if v.direction]
    s = sum(v.direction * v.confidence for v in directional)
    if not directional or s == 0:
        return 0, 0.0
    return (1 if s > 0 else -1), min(1.0, abs(s) / len(directional))


def as_float(values: dict, key: str) -> float:
    """A value as float; missing or None (JSON null) -> NaN."""
    v = values.get(key)
    return NAN if v is None else float(v)


def side_name(direction: int) -> str:
    return "buy" if direction > 0 else "sell"


def level_vote(rule: str, name: str, x: float, threshold: float, shape: ConfidenceShape,
               confirm: tuple[str, float] | None = None) -> list[Vote]:
    """|x| >= threshold (and ``confirm``'s value of the same sign) -> sign(x) with
    confidence ``shape.of(x)``. NaN never fires."""
    if not abs(x) >= threshold:
        return []
    d = 1 if x > 0 else -1
    note = ""
    if confirm is not None:
        cname, cx = confirm
        if not cx * d > 0:
            return []
        note = f" ({cname}={cx:.4g} agrees)"
    conf = shape.of(x)
    op = ">=" if d > 0 else "<="
    return [Vote(rule, d, conf, f"{name}={x:.4g}{op}{d * threshold:g}{note} -> {side_name(d)} {conf:.3f}")]


def tape_speed_ratio(values: dict) -> tuple[float, str]:
    """Print rate of the last 60 s / the 900 s baseline (the 300 s one while 900 s warms up)."""
    fast = as_float(values, "tape_speed_60s")
    for base in ("tape_speed_900s", "tape_speed_300s"):
        b = as_float(values, base)
        if b > 0:
            return fast / b, base
    return NAN, ""


def speed_bucket(flow: dict) -> str:
    """'hi' when the last minute's print rate is at or above its baseline, else 'lo' (also while warming up)."""
    ratio, _ = tape_speed_ratio(flow)
    return "hi" if ratio >= SPEED_CONTEXT_RATIO else "lo"


class NoParams(NamedTuple):
    pass


class Agent:
    """Shared machinery: grouping by seq, the view from FeatureVectors, combining votes,
    the learning layer, feedback matching and counters. Subclasses define ``agent_id``,
    ``VECTOR_INPUTS``, ``_votes`` and ``_context``."""

    agent_id = ""
    Params: type = NoParams  # the rules' thresholds and confidences, with their defaults
    VECTOR_INPUTS: tuple[str, ...] = ()  # FeatureVector values the agent keeps
    VALID_NS = 0  # Signal.valid_ns (module docstring, Validity); 0 = the coordinator's TTL

    def __init__(self, symbol: str, *, horizon_ns: int = 10 * NS_PER_S, learning: bool = True,
                 min_confidence: float = MIN_CONFIDENCE, cost_ticks: float = COST_TICKS, tick_size: float | None = None,
                 eta: float = HEDGE_ETA, floor: float = HEDGE_FLOOR, max_pending: int = MAX_PENDING, **params):
        if not horizon_ns > 0:
            raise ValueError(f"horizon_ns must be > 0, got {horizon_ns!r}")
        if not 0 <= min_confidence <= 1:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
        if not 0 <= cost_ticks < math.inf:
            raise ValueError(f"cost_ticks must be a finite number >= 0, got {cost_ticks!r}")
        try:
            self.p = self.Params(**params)
        except TypeError as e:
            raise TypeError(f"{type(self).__name__}: {e} (rule parameters: {', '.join(self.Params._fields)})") from None
        self.symbol = symbol
        self.tick = float(tick_size) if tick_size else instrument_for(symbol).tick_size
        self.reward_scale = REWARD_SCALE_TICKS * self.tick
        self.horizon_ns = int(horizon_ns)
        self.learning = learning
        self.min_confidence = min_confidence
        self.cost_ticks = float(cost_ticks)
        self.hedge = ContextualHedge(eta, floor)
        self.max_pending = max_pending
        self._pending: OrderedDict[int, tuple[str, int, float]] = OrderedDict()  # seq -> (context, dir, conf)
        self.price = NAN
        self.vector: dict[str, float] = {n: NAN for n in self.VECTOR_INPUTS}
        self._vector_names: tuple | None = None
        self._vector_index: list[tuple[str, int]] = []
        self._last_seq = -1
        self.counts = {k: 0 for k in ("messages", "ignored_symbol", "ignored_kind", "bad", "no_price", "stale_seq",
                                      "signals", "non_neutral", "feedback_applied", "feedback_ignored",
                                      "feedback_unmatched", "feedback_bad", "pending_evicted")}
        self.by_rule: dict[str, int] = {}
        self.by_action = {a: 0 for a in ARMS}
        self.last_error = ""

    # -- subclass hooks ---------------------------------------------------------------

    def _votes(self, msg) -> list[Vote] | None:
        """The rules' votes on a message the agent reacts to; None: it only updates the view."""
        raise NotImplementedError

    def _context(self) -> str:
        raise NotImplementedError

    # -- analytics in, signals out ----------------------------------------------------

    def on_analytics(self, messages: list) -> list[Signal]:
        out: list[Signal] = []
        group: list | None = None  # [seq, ts_event, votes] of the messages reacted to
        group_seq = None
        c = self.counts
        for m in messages:
            if not isinstance(m, _ANALYTICS):
                c["ignored_kind"] += 1
                continue
            if m.symbol != self.symbol:
                c["ignored_symbol"] += 1
                continue
            c["messages"] += 1
            if m.seq != group_seq:
                if group is not None:
                    self._emit(group, out)
                group, group_seq = None, m.seq
            try:
                if type(m) is FeatureVector:
                    self._read_vector(m)
                    continue
                votes = self._votes(m)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                c["bad"] += 1
                self.last_error = f"{type(m).__name__} seq {m.seq}: {e!r}"
                continue
            if votes is None:
                continue
            if group is None:
                group = [m.seq, m.ts_event, []]
            group[1] = max(group[1], m.ts_event)
            group[2].extend(votes)
        if group is not None:
            self._emit(group, out)
        return out

    def _read_vector(self, v: FeatureVector) -> None:
        if v.names is not self._vector_names:  # one shared names tuple: index it once
            pos = {n: i for i, n in enumerate(v.names)}
            self._vector_index = [(n, pos[n]) for n in self.VECTOR_INPUTS if n in pos]
            self._vector_names = v.names
        price = float(v.price)
        if price > 0:
            self.price = price
        for n, i in self._vector_index:
            self.vector[n] = float(v.values[i])

    def _emit(self, group: list, out: list[Signal]) -> None:
        seq, ts, votes = group
        c = self.counts
        if not self.price > 0:
            c["no_price"] += 1
            return
        if seq <= self._last_seq:
            c["stale_seq"] += 1
            return
        self._last_seq = seq
        for v in votes:
            self.by_rule[v.rule] = self.by_rule.get(v.rule, 0) + 1
        raw_dir, raw_conf = combine(votes)
        context = self._context()
        reasons = [v.reason for v in votes] or ["no rule fired"]
        action, direction, conf = "act", 0, 0.0
        if raw_dir:
            action, weight = self.hedge.choose(context) if self.learning else ("act", 1.0)
            direction = raw_dir * ARM_SIGN[action]
            conf = raw_conf * weight if direction else 0.0
            outcome = f"confidence {raw_conf:.3f} x {weight:.3f} = {conf:.3f}" if direction else "neutral"
            reasons.append(f"context {context}: {action} (weight {weight:.3f}) -> {outcome}")
            if direction and conf < self.min_confidence:
                reasons.append(f"confidence {conf:.3f} < min_confidence {self.min_confidence:g} -> neutral")
                action, direction, conf = "abstain", 0, 0.0
            self.by_action[action] += 1
            if self.learning:
                self._remember(seq, (context, raw_dir, raw_conf))
        c["signals"] += 1
        c["non_neutral"] += direction != 0
        out.append(Signal(self.agent_id, self.symbol, ts, seq, float(direction), conf, self.horizon_ns, self.price,
                          tuple(reasons), context, action, float(raw_dir), self.VALID_NS))

    def _remember(self, seq: int, entry: tuple[str, int, float]) -> None:
        self._pending[seq] = entry
        if len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.counts["pending_evicted"] += 1

    # -- learning -----------------------------------------------------------------------

    def on_feedback(self, feedbacks: list[Feedback]) -> int:
        """Learn from the realized outcomes of this agent's signals; returns how many applied."""
        c = self.counts
        applied = 0
        for fb in feedbacks:
            if getattr(fb, "voter", None) != self.agent_id or getattr(fb, "symbol", None) != self.symbol:
                c["feedback_ignored"] += 1
                continue
            entry = self._pending.pop(fb.seq, None)
            if entry is None:
                c["feedback_unmatched"] += 1
                continue
            try:
                points = float(fb.points)
            except (TypeError, ValueError):
                points = NAN
            if not math.isfinite(points):
                c["feedback_bad"] += 1
                continue
            context, raw_dir, raw_conf = entry
            r = raw_dir * raw_conf * points / self.reward_scale
            self.hedge.update(context, r, raw_conf * self.cost_ticks / REWARD_SCALE_TICKS)
            applied += 1
        c["feedback_applied"] += applied
        return applied

    def state(self) -> dict:
        """The learning layer, JSON-able (Valkey ``hmarl:agent:<id>:learning``)."""
        return {"agent": self.agent_id, "symbol": self.symbol, "version": STATE_VERSION, "cost_ticks": self.cost_ticks,
                **self.hedge.state()}

    def load_state(self, d: dict) -> None:
        """Load a state saved by :meth:`state` of the same agent, symbol and layout version."""
        if d.get("agent") != self.agent_id:
            raise ValueError(f"learning state of agent {d.get('agent')!r} cannot load into {self.agent_id!r}")
        if d.get("symbol") != self.symbol:
            raise ValueError(f"learning state of symbol {d.get('symbol')!r} cannot load into {self.symbol!r}")
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"learning state version {d.get('version')!r}, expected {STATE_VERSION}")
        self.hedge.load_state(d)

    def stats(self) -> dict:
        c = self.counts
        h = self.hedge
        return {
            "agent": self.agent_id,
            "symbol": self.symbol,
            **c,
            "share_non_neutral": c["non_neutral"] / c["signals"] if c["signals"] else 0.0,
            "by_rule": dict(self.by_rule),
            "by_action": dict(self.by_action),
            "pending": len(self._pending),
            "last_error": self.last_error,
            "params": self.p._asdict(),
            "learning": {
                "enabled": self.learning,
                "cost_ticks": self.cost_ticks,
                "min_confidence": self.min_confidence,
                "contexts": {ctx: {"weights": dict(zip(ARMS, h.weights_of(ctx))), "choice": h.choose(ctx)[0],
                                   "updates": h.updates.get(ctx, 0)} for ctx in sorted(h.weights)},
            },
        }
