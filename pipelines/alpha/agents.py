"""The four specialist agents and their shared learning layer.

Each agent folds the FeatureEngine's analytics of one symbol and, after each
message it reacts to, emits one :class:`Signal`. Rules vote; the learning
layer decides whether to follow, fade or ignore the vote in the current
market context.

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
    footprint: one minute, the bar length. It votes once per closed bar and its
    view holds until the next bar closes, whose signal then replaces it; the
    coordinator's 5 s TTL counted it in about 5 decisions of 60. The others
    keep 0 (the coordinator's ``signal_ttl_s``): they signal again on every
    state (each ``features.state_every_ms``, 1 s), neutral when no rule fires,
    so the next signal replaces theirs within a second. That includes the
    tape agent's sweep and iceberg votes: a longer validity would never be
    used, as the next FlowState's signal supersedes them.

Rules (defaults below; each agent's ``Params`` record holds them, constructor keywords override)
    order_flow, on FlowState:
      ofi   |ofi_ratio_1m| >= 0.3 and ofi_ratio_5m of the same sign -> its sign,
            confidence min(1, 2 |ofi_ratio_1m|) (original: OFI > 0.3, conf 2 ofi_1m)
      tfi   the same on tfi_1m / tfi_5m (signed aggressive volume share)
    order_flow, on a closed FootprintState:
      absorption  each confirmed absorption: at the low -> buy, at the high -> sell, 0.7
      divergence  bar high above the previous 5 bars' highs while the bar's
                  cum_delta <= their max cum_delta -> sell, 0.6 (mirror at lows -> buy)
    liquidity, on LiquidityState (gates first: liquidity_score < 0.3 or
    spread_ticks > 2 -> neutral):
      depth_imbalance  |depth_imbalance| >= 0.3 -> its sign, min(0.9, 0.5 + 0.3 |x|)
      queue_imbalance  |queue_imbalance| >= 0.5 -> its sign, same shape
      hidden_liquidity the latest iceberg TapeSignal with confidence >= 0.25,
                       within 10 s: its side (+1 hidden bid),
                       min(0.9, 0.5 + 0.3 iceberg confidence)
    tape, on TapeSignal:
      sweep / iceberg  confidence >= 0.25 -> its side, its confidence
    tape, on FlowState (speed ratio = tape_speed_60s / the 900 s baseline,
    or the 300 s one while the 900 s warms up; fast when >= 2):
      exhaustion  |returns_100| >= 8 ticks, fast tape and falling participation
                  (volume_ratio_20 < 0.8 or large_trade_ratio_1m < 0.5 x
                  large_trade_ratio_5m) -> against the move, 0.75
      momentum    (only if no exhaustion) |returns_20| >= 2 ticks with
                  returns_50 of the same sign -> its sign,
                  min(1, ticks / 4) x (1 if fast else 0.7)
    footprint, on a closed FootprintState:
      delta       |delta / volume| >= 0.3 -> sign of delta, min(0.9, 0.5 + |share|)
      stacked     more stacked buy than sell imbalance runs -> buy, 0.65 (mirror)
      profile     range >= 4 ticks; P: POC in the upper third and >= 60 % of
                  the volume above mid-range -> buy 0.65; b: mirror -> sell
      unfinished  unfinished auction at the high only -> buy 0.5 (price tends to
                  revisit it); at the low only -> sell
      initiative  close above the previous bar's value area with
                  delta / volume >= 0.1 -> buy 0.65 (mirror below)
      responsive  close inside the previous value area after the high probed
                  above it -> sell 0.55 (mirror at the low -> buy)

Learning (:class:`ContextualHedge`)
    Each agent maps its current view to a small discrete context (6 per agent):
    order_flow ofi5m{+,0,-} (|ofi_ratio_5m| > 0.05) x speed_{hi,lo} (60 s
    print rate at or above its baseline); liquidity spread_{tight,wide} x
    score_{low,mid,high} (< 0.4, > 0.6); tape {sweep,iceberg,flow} (what
    triggered it) x speed_{hi,lo}; footprint {up,down,flat} bar x volume_{hi,lo}
    against the mean of the previous 10 bars. Per context, full-information Hedge over the
    arms act / fade / abstain: once a signal's outcome is known every arm's
    reward is known. With m = raw_direction x points (the move in the vote's
    direction), c = ``cost_ticks`` ticks (the round-trip cost, in points) and
    scale = 4 ticks of the instrument (WDO 2.0 points, WIN 20, ES 1.0):
    act earns raw_confidence x (m - c) / scale, fade raw_confidence x (-m - c)
    / scale, each clipped to [-1, 1], and abstain 0 (no trade, no cost). The
    confidence is the exposure, so it scales the cost as it scales the move:
    act beats abstain where the confidence-weighted mean move in the vote's
    direction exceeds c, whatever the rule's confidence level; where the rule
    has no edge both trading arms lose c per outcome and abstain wins.
    Weights w_a *= exp(eta reward_a), renormalized to sum 1, then every weight
    below ``floor`` is raised to it and the rest rescaled, so no arm dies and
    all can recover. The chosen arm is the argmax, ties -> abstain, then act,
    then fade: an unlearned context (1/3 each) abstains until its outcomes show
    an edge beyond the cost. That costs no learning, since every outcome,
    abstained signals' included, gives every arm's reward. Emitted direction
    = raw direction x (+1 act, -1 fade, 0 abstain); emitted confidence =
    raw confidence x the chosen arm's weight (weights sum to 1); abstain and
    neutral signals have confidence 0. ``learning=False`` always acts at the
    raw confidence and learns nothing. A final confidence below
    ``min_confidence`` (config ``hmarl.min_confidence``) makes the signal
    neutral ("abstain"); it still learns. Defaults: eta 0.1, floor 0.02,
    cost_ticks 1 (config ``hmarl.agent_cost_ticks``). The raw direction,
    confidence and context of the last 10,000 signals with a raw direction
    wait for their Feedback (matched by voter and seq); the learning needs a
    Feedback for abstained and faded signals too, since the reward is
    recomputed from the raw vote.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Iterable, NamedTuple

from pipelines.features.flow import SessionDay
from pipelines.model.instruments import instrument_for
from pipelines.model.messages import Feedback, FeatureVector, FlowState, FootprintState, LiquidityState, Signal, TapeSignal
from pipelines.model.clock import NS_PER_MIN

NAN = float("nan")
NS_PER_S = 1_000_000_000
ARMS = ("act", "fade", "abstain")  # the order of the saved weights
ARM_SIGN = {"act": 1, "fade": -1, "abstain": 0}
TIE_RANK = {"abstain": 2, "act": 1, "fade": 0}  # argmax ties: no trade without evidence of an edge
REWARD_SCALE_TICKS = 4
# Round trip, in ticks of the instrument: aggressive entry and exit cross the spread once, one tick
# on WDO and WIN in liquid hours, and B3 fees and brokerage add a fraction of a tick (WDO's tick is
# R$5). The rewards are moves between trade prices, which never see the spread, hence this charge.
COST_TICKS = 1.0
HEDGE_ETA = 0.1
HEDGE_FLOOR = 0.02
MAX_PENDING = 10_000  # signals awaiting feedback, per agent
STATE_VERSION = 1  # of the learning state layout (Valkey hmarl:agent:<id>:learning)
SPEED_CONTEXT_RATIO = 1.0  # context bucket speed_hi: 60 s print rate at or above its baseline
SCORE_CONTEXT_BOUNDS = (0.4, 0.6)  # liquidity context buckets score_low / score_mid / score_high
_ANALYTICS = (FeatureVector, FlowState, LiquidityState, FootprintState, TapeSignal)


class ConfidenceShape(NamedTuple):
    """confidence = min(cap, base + slope |x|) for a rule on a signed level x."""

    base: float
    slope: float
    cap: float = 1.0

    def of(self, x: float) -> float:
        return min(self.cap, self.base + self.slope * abs(x))


FLOW_SHAPE = ConfidenceShape(0.0, 2.0)  # original order flow: min(2 ofi, 1)
BOOK_SHAPE = ConfidenceShape(0.5, 0.3, 0.9)  # original liquidity: 0.5 + 0.3 imbalance, capped at 0.9
BAR_DELTA_SHAPE = ConfidenceShape(0.5, 1.0, 0.9)


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


def _num(values: dict, key: str) -> float:
    """A value as float; missing or None (JSON null) -> NaN."""
    v = values.get(key)
    return NAN if v is None else float(v)


def _side(direction: int) -> str:
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
    return [Vote(rule, d, conf, f"{name}={x:.4g}{op}{d * threshold:g}{note} -> {_side(d)} {conf:.3f}")]


def tape_speed_ratio(values: dict) -> tuple[float, str]:
    """Print rate of the last 60 s / the 900 s baseline (the 300 s one while 900 s warms up)."""
    fast = _num(values, "tape_speed_60s")
    for base in ("tape_speed_900s", "tape_speed_300s"):
        b = _num(values, base)
        if b > 0:
            return fast / b, base
    return NAN, ""


class ContextualHedge:
    """Full-information Hedge over ``ARMS``, one weight vector per context (module docstring)."""

    def __init__(self, eta: float = HEDGE_ETA, floor: float = HEDGE_FLOOR):
        if not eta > 0:
            raise ValueError(f"Hedge learning rate eta must be > 0, got {eta!r}")
        if not 0 <= floor < 1 / len(ARMS):
            raise ValueError(f"Hedge weight floor must be in [0, 1/{len(ARMS)}), got {floor!r}")
        self.eta = eta
        self.floor = floor
        self.weights: dict[str, list[float]] = {}
        self.updates: dict[str, int] = {}

    def weights_of(self, context: str) -> list[float]:
        return self.weights.get(context) or [1 / len(ARMS)] * len(ARMS)

    def choose(self, context: str) -> tuple[str, float]:
        """The argmax arm (ties by ``TIE_RANK``: abstain first) and its weight."""
        w = self.weights_of(context)
        best = max(range(len(ARMS)), key=lambda i: (w[i], TIE_RANK[ARMS[i]]))
        return ARMS[best], w[best]

    def update(self, context: str, r: float, cost: float = 0.0) -> None:
        """One outcome: ``r`` the act arm's gross reward, ``cost`` what trading it cost (reward units).
        Act earns r - cost, fade -r - cost (both clipped to [-1, 1]), abstain 0."""
        rewards = [max(-1.0, min(1.0, ARM_SIGN[a] * r - cost)) if ARM_SIGN[a] else 0.0 for a in ARMS]
        w = [wi * math.exp(self.eta * ra) for wi, ra in zip(self.weights_of(context), rewards)]
        self.weights[context] = self._floored([wi / sum(w) for wi in w])
        self.updates[context] = self.updates.get(context, 0) + 1

    def _floored(self, w: list[float]) -> list[float]:
        # Raise the weights under the floor to it and rescale the others into what is left;
        # repeat in case the rescale pushed another one under (at most len(ARMS) rounds).
        low: set[int] = set()
        while True:
            new_low = {i for i, wi in enumerate(w) if wi < self.floor} - low
            if not new_low:
                return w
            low |= new_low
            rest = sum(wi for i, wi in enumerate(w) if i not in low)
            share = (1 - self.floor * len(low)) / rest
            w = [self.floor if i in low else wi * share for i, wi in enumerate(w)]

    def state(self) -> dict:
        return {"arms": list(ARMS), "eta": self.eta, "floor": self.floor,
                "weights": {c: dict(zip(ARMS, w)) for c, w in self.weights.items()}, "updates": dict(self.updates)}

    def load_state(self, d: dict) -> None:
        """Load the weights (eta and floor stay this instance's: they are configuration)."""
        if list(d.get("arms", ())) != list(ARMS):
            raise ValueError(f"learning state has arms {d.get('arms')!r}, expected {list(ARMS)}")
        weights = {}
        for context, w in d["weights"].items():
            row = [float(w[a]) for a in ARMS]
            if any(not x >= 0 for x in row) or abs(sum(row) - 1) > 1e-6:
                raise ValueError(f"learning state: weights of context {context!r} are not a distribution: {w!r}")
            weights[context] = self._floored(row)
        self.weights = weights
        self.updates = {c: int(n) for c, n in d.get("updates", {}).items()}


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

    def __init__(self, symbol: str, *, horizon_ns: int = 60 * NS_PER_S, learning: bool = True,
                 min_confidence: float = 0.0, cost_ticks: float = COST_TICKS, tick_size: float | None = None,
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


def _speed_bucket(flow: dict) -> str:
    """'hi' when the last minute's print rate is at or above its baseline, else 'lo' (also while warming up)."""
    ratio, _ = tape_speed_ratio(flow)
    return "hi" if ratio >= SPEED_CONTEXT_RATIO else "lo"


class OrderFlowParams(NamedTuple):
    ofi_threshold: float = 0.3
    tfi_threshold: float = 0.3
    absorption_confidence: float = 0.7
    divergence_bars: int = 5
    divergence_confidence: float = 0.6
    context_ofi_band: float = 0.05  # |ofi_ratio_5m| under it is the flat context bucket


class OrderFlowSpecialist(Agent):
    agent_id = "order_flow"
    Params = OrderFlowParams

    def __init__(self, symbol: str, **kw):
        super().__init__(symbol, **kw)
        self._bars: deque[tuple[float, float, float]] = deque(maxlen=self.p.divergence_bars)  # (high, low, cum_delta)
        self._day = SessionDay()  # cum_delta restarts each session day
        self._flow: dict = {}

    def _votes(self, m) -> list[Vote] | None:
        if type(m) is FlowState:
            v = self._flow = m.values
            return (level_vote("ofi", "ofi_ratio_1m", _num(v, "ofi_ratio_1m"), self.p.ofi_threshold, FLOW_SHAPE,
                               confirm=("ofi_ratio_5m", _num(v, "ofi_ratio_5m")))
                    + level_vote("tfi", "tfi_1m", _num(v, "tfi_1m"), self.p.tfi_threshold, FLOW_SHAPE,
                                 confirm=("tfi_5m", _num(v, "tfi_5m"))))
        if type(m) is FootprintState and m.closed:
            return self._absorption(m.bar) + self._divergence(m.bar)
        return None

    def _absorption(self, bar: dict) -> list[Vote]:
        votes = []
        for a in bar["absorption"]:
            d = 1 if a["at"] == "low" else -1
            votes.append(Vote("absorption", d, self.p.absorption_confidence,
                              f"absorption at the {a['at']} {a['price']:g} ({a['volume']} aggressive contracts, "
                              f"held) -> {_side(d)} {self.p.absorption_confidence:g}"))
        return votes

    def _divergence(self, bar: dict) -> list[Vote]:
        high, low, cd = float(bar["high"]), float(bar["low"]), float(bar["cum_delta"])
        if self._day.update(int(bar["ts_open"])):
            self._bars.clear()
        prior = list(self._bars)
        self._bars.append((high, low, cd))
        if len(prior) < self._bars.maxlen:
            return []
        n, conf = len(prior), self.p.divergence_confidence
        prior_high, prior_low = max(p[0] for p in prior), min(p[1] for p in prior)
        max_cd, min_cd = max(p[2] for p in prior), min(p[2] for p in prior)
        votes = []
        if high > prior_high and cd <= max_cd:
            votes.append(Vote("divergence", -1, conf, f"high {high:g} > {n}-bar high {prior_high:g} while "
                                                      f"cum_delta {cd:g} <= {max_cd:g} -> sell {conf:g}"))
        if low < prior_low and cd >= min_cd:
            votes.append(Vote("divergence", 1, conf, f"low {low:g} < {n}-bar low {prior_low:g} while "
                                                     f"cum_delta {cd:g} >= {min_cd:g} -> buy {conf:g}"))
        return votes

    def _context(self) -> str:
        x = _num(self._flow, "ofi_ratio_5m")
        band = self.p.context_ofi_band
        sign = "+" if x > band else "-" if x < -band else "0"
        return f"ofi5m{sign}|speed_{_speed_bucket(self._flow)}"


class LiquidityParams(NamedTuple):
    depth_threshold: float = 0.3
    queue_threshold: float = 0.5
    min_liquidity_score: float = 0.3
    max_spread_ticks: float = 2.0
    hidden_ttl_ns: int = 10 * NS_PER_S
    min_iceberg_confidence: float = 0.25


class LiquidityAgent(Agent):
    agent_id = "liquidity"
    Params = LiquidityParams

    def __init__(self, symbol: str, **kw):
        super().__init__(symbol, **kw)
        self._iceberg: TapeSignal | None = None
        self._book: dict = {}

    def _votes(self, m) -> list[Vote] | None:
        if type(m) is TapeSignal:
            if m.pattern == "iceberg" and m.side in (1, -1) and m.confidence >= self.p.min_iceberg_confidence:
                self._iceberg = m
            return None
        if type(m) is not LiquidityState:
            return None
        v = self._book = m.values
        score, spread = _num(v, "liquidity_score"), _num(v, "spread_ticks")
        gates = []
        if score < self.p.min_liquidity_score:
            gates.append(Vote("thin_book", 0, 0.0, f"liquidity_score={score:.3f}<{self.p.min_liquidity_score:g} "
                                                   "-> neutral (thin book)"))
        if spread > self.p.max_spread_ticks:
            gates.append(Vote("wide_spread", 0, 0.0, f"spread_ticks={spread:g}>{self.p.max_spread_ticks:g} "
                                                     "-> neutral (wide spread)"))
        if gates:
            return gates
        return (level_vote("depth_imbalance", "depth_imbalance", _num(v, "depth_imbalance"), self.p.depth_threshold,
                           BOOK_SHAPE)
                + level_vote("queue_imbalance", "queue_imbalance", _num(v, "queue_imbalance"),
                             self.p.queue_threshold, BOOK_SHAPE)
                + self._hidden(m.ts_event))

    def _hidden(self, ts: int) -> list[Vote]:
        ice = self._iceberg
        if ice is None or not 0 <= ts - ice.ts_event <= self.p.hidden_ttl_ns:
            return []
        conf = BOOK_SHAPE.of(float(ice.confidence))
        where = "bid (hidden buyer)" if ice.side > 0 else "ask (hidden seller)"
        return [Vote("hidden_liquidity", ice.side, conf,
                     f"iceberg on the {where} at {ice.price:g}, confidence {ice.confidence:.3f}, "
                     f"{(ts - ice.ts_event) / NS_PER_S:.1f} s ago -> {_side(ice.side)} {conf:.3f}")]

    def _context(self) -> str:
        spread = _num(self._book, "spread_ticks")
        score = _num(self._book, "liquidity_score")
        low, high = SCORE_CONTEXT_BOUNDS
        level = "low" if score < low else "high" if score > high else "mid"
        return f"spread_{'tight' if spread <= 1 else 'wide'}|score_{level}"


class TapeParams(NamedTuple):
    min_pattern_confidence: float = 0.25
    fast_ratio: float = 2.0
    momentum_ticks: float = 2.0
    slow_tape_factor: float = 0.7
    exhaustion_move_ticks: float = 8.0
    exhaustion_volume_ratio: float = 0.8
    exhaustion_large_share: float = 0.5
    exhaustion_confidence: float = 0.75


class TapeReadingAgent(Agent):
    agent_id = "tape"
    VECTOR_INPUTS = ("returns_20", "returns_50", "returns_100", "volume_ratio_20")
    Params = TapeParams

    def __init__(self, symbol: str, **kw):
        super().__init__(symbol, **kw)
        self._flow: dict = {}
        self._trigger = "flow"

    def _votes(self, m) -> list[Vote] | None:
        if type(m) is TapeSignal:
            self._trigger = m.pattern
            return self._pattern(m)
        if type(m) is FlowState:
            self._flow = m.values
            self._trigger = "flow"
            return self._exhaustion() or self._momentum()
        return None

    def _pattern(self, t: TapeSignal) -> list[Vote]:
        conf = float(t.confidence)
        what = f"{t.pattern} side {t.side:+d} at {t.price:g} confidence {conf:.3f}"
        if conf >= self.p.min_pattern_confidence and t.side in (1, -1):
            return [Vote(t.pattern, t.side, conf, f"{what}>={self.p.min_pattern_confidence:g} -> {_side(t.side)}")]
        return [Vote(f"weak_{t.pattern}", 0, 0.0, f"{what}<{self.p.min_pattern_confidence:g} -> neutral")]

    def _ticks(self, name: str) -> float:
        return self.vector[name] * self.price / self.tick

    def _speed(self) -> tuple[bool, str]:
        ratio, base = tape_speed_ratio(self._flow)
        fast = ratio >= self.p.fast_ratio
        text = f"tape_speed_60s/{base}={ratio:.3g}" if base else "tape speed warming up"
        return fast, f"{text} ({'fast' if fast else 'not fast'}, threshold {self.p.fast_ratio:g})"

    def _exhaustion(self) -> list[Vote]:
        p = self.p
        move = self._ticks("returns_100")
        fast, speed = self._speed()
        if not (abs(move) >= p.exhaustion_move_ticks and fast):
            return []
        vr = self.vector["volume_ratio_20"]
        large_1m, large_5m = _num(self._flow, "large_trade_ratio_1m"), _num(self._flow, "large_trade_ratio_5m")
        if vr < p.exhaustion_volume_ratio:
            fading = f"volume_ratio_20={vr:.3g}<{p.exhaustion_volume_ratio:g}"
        elif large_1m < p.exhaustion_large_share * large_5m:
            fading = f"large_trade_ratio_1m={large_1m:.3g}<{p.exhaustion_large_share:g}x{large_5m:.3g}"
        else:
            return []
        d, conf = (-1 if move > 0 else 1), p.exhaustion_confidence
        reason = (f"returns_100={move:+.3g} ticks (|move|>={p.exhaustion_move_ticks:g}), {speed}, {fading} "
                  f"-> {_side(d)} {conf:g}")
        return [Vote("exhaustion", d, conf, reason)]

    def _momentum(self) -> list[Vote]:
        move, confirm = self._ticks("returns_20"), self._ticks("returns_50")
        if not abs(move) >= self.p.momentum_ticks or not move * confirm > 0:
            return []
        d = 1 if move > 0 else -1
        fast, speed = self._speed()
        factor = 1.0 if fast else self.p.slow_tape_factor
        conf = min(1.0, abs(move) / (2 * self.p.momentum_ticks)) * factor
        return [Vote("momentum", d, conf, f"returns_20={move:+.3g} ticks (|move|>={self.p.momentum_ticks:g}, "
                                          f"returns_50={confirm:+.3g} ticks agrees), {speed} x{factor:g} "
                                          f"-> {_side(d)} {conf:.3f}")]

    def _context(self) -> str:
        return f"{self._trigger}|speed_{_speed_bucket(self._flow)}"


class FootprintParams(NamedTuple):
    delta_share: float = 0.3
    stacked_confidence: float = 0.65
    profile_min_ticks: float = 4.0
    profile_volume_share: float = 0.6
    profile_confidence: float = 0.65
    unfinished_confidence: float = 0.5
    initiative_confidence: float = 0.65
    initiative_delta_share: float = 0.1
    responsive_confidence: float = 0.55
    volume_lookback: int = 10


class FootprintPatternAgent(Agent):
    agent_id = "footprint"
    Params = FootprintParams
    VALID_NS = NS_PER_MIN  # a closed one-minute bar's vote holds until the next bar closes

    def __init__(self, symbol: str, **kw):
        super().__init__(symbol, **kw)
        self._prev: dict | None = None
        self._volumes: deque[float] = deque(maxlen=self.p.volume_lookback)
        self._context_key = "flat|volume_lo"

    def _votes(self, m) -> list[Vote] | None:
        if type(m) is not FootprintState or not m.closed:
            return None
        b = m.bar
        volume = float(b["volume"])
        votes = []
        if volume > 0:
            votes += level_vote("delta", f"delta/volume ({b['delta']}/{b['volume']})", b["delta"] / volume,
                                self.p.delta_share, BAR_DELTA_SHAPE)
        votes += self._stacked(b) + self._profile(b) + self._unfinished(b)
        if self._prev is not None:
            votes += self._auction(b, self._prev)
        self._set_context(b, volume)
        self._prev = b
        return votes

    def _stacked(self, b: dict) -> list[Vote]:
        nb, ns = len(b["stacked_buy"]), len(b["stacked_sell"])
        if nb == ns:
            return []
        d, conf = (1 if nb > ns else -1), self.p.stacked_confidence
        return [Vote("stacked", d, conf, f"stacked imbalances buy={nb} sell={ns} -> {_side(d)} {conf:g}")]

    def _profile(self, b: dict) -> list[Vote]:
        high, low = float(b["high"]), float(b["low"])
        if (high - low) / self.tick < self.p.profile_min_ticks:
            return []
        pos = (float(b["poc"]) - low) / (high - low)
        mid = (high + low) / 2
        total = sum(lv[3] for lv in b["levels"])
        upper = sum(lv[3] for lv in b["levels"] if lv[0] > mid) / total
        lower = sum(lv[3] for lv in b["levels"] if lv[0] < mid) / total
        conf, share = self.p.profile_confidence, self.p.profile_volume_share
        where = f"POC {b['poc']:g} at {pos:.2f} of the range {low:g}-{high:g}"
        if pos >= 2 / 3 and upper >= share:
            return [Vote("profile", 1, conf, f"P-profile: {where}, {upper:.0%} of volume above mid -> buy {conf:g}")]
        if pos <= 1 / 3 and lower >= share:
            return [Vote("profile", -1, conf, f"b-profile: {where}, {lower:.0%} of volume below mid -> sell {conf:g}")]
        return []

    def _unfinished(self, b: dict) -> list[Vote]:
        hi, lo = bool(b["unfinished_high"]), bool(b["unfinished_low"])
        if hi == lo:
            return []
        d, conf = (1 if hi else -1), self.p.unfinished_confidence
        at = f"high {b['high']:g}" if hi else f"low {b['low']:g}"
        reason = f"unfinished auction at the {at} (both sides traded) -> {_side(d)} {conf:g}"
        return [Vote("unfinished", d, conf, reason)]

    def _auction(self, b: dict, prev: dict) -> list[Vote]:
        vah, val = float(prev["value_area_high"]), float(prev["value_area_low"])
        close, delta, volume = float(b["close"]), b["delta"], float(b["volume"])
        va = f"previous value area {val:g}-{vah:g}"
        share = delta / volume if volume > 0 else 0.0
        d = 1 if close > vah else -1 if close < val else 0
        if d:
            if not share * d >= self.p.initiative_delta_share:
                return []
            conf = self.p.initiative_confidence
            return [Vote("initiative", d, conf, f"close {close:g} {'>' if d > 0 else '<'} {va} with delta/volume "
                                                f"{share:+.3f} ({delta:+}) -> {_side(d)} {conf:g}")]
        votes = []
        conf = self.p.responsive_confidence
        if float(b["high"]) > vah:
            votes.append(Vote("responsive", -1, conf, f"high {b['high']:g} probed above {va}, close {close:g} "
                                                      f"back inside -> sell {conf:g}"))
        if float(b["low"]) < val:
            votes.append(Vote("responsive", 1, conf, f"low {b['low']:g} probed below {va}, close {close:g} "
                                                     f"back inside -> buy {conf:g}"))
        return votes

    def _set_context(self, b: dict, volume: float) -> None:
        o, c = float(b["open"]), float(b["close"])
        bar = "up" if c > o else "down" if c < o else "flat"
        avg = sum(self._volumes) / len(self._volumes) if self._volumes else NAN
        self._context_key = f"{bar}|volume_{'hi' if volume > avg else 'lo'}"
        self._volumes.append(volume)

    def _context(self) -> str:
        return self._context_key


AGENTS: dict[str, type[Agent]] = {
    cls.agent_id: cls for cls in (OrderFlowSpecialist, LiquidityAgent, TapeReadingAgent, FootprintPatternAgent)
}
