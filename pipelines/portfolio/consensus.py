"""The coordinator: weighted consensus of the voters and their weights, learned by Hedge.

Consensus. Each voter (specialist agents and ``ml``) sends Signals; the latest
one per voter counts while it is valid (``signal.ts_event <= decision ts <=
signal.ts_event + validity``, validity = ``signal.valid_ns`` or, when that is 0,
``signal_ttl_ns``; a later signal would be look-ahead) and not an abstention
(confidence 0 or action "abstain"). A voter says how long its view holds: a
footprint bar's vote lasts until the next bar closes, not the few seconds of a
flow reading. Over the voters present::

    score = sum_i w_i * d_i * c_i / sum_i w_i

i.e. the absent voters' weight is redistributed over the present ones in
proportion. ``confidence = |score|`` (the weighted agreement of the present
voters, in [0, 1]). BUY if ``score >= threshold``, SELL if ``score <= -threshold``,
else HOLD. The size is ``base_size`` (0 for HOLD), not scaled by confidence: the score
already decides whether to trade, and a fixed size keeps the risk limits easy to reason about.

Orders, fills and risk are not here. The coordinator says what the consensus is
and keeps no position: the execution actor's
:class:`~pipelines.execution.engine.ExecutionEngine` turns each decision into a
target position (BUY size -> +size, SELL size -> -size) and orders, and its
:class:`~pipelines.risk.engine.RiskEngine` enforces the account's position and
loss limits before any order. A decision's ``risk`` stays empty, except for the
HOLD of an invalid price, which says so.

Learning (Hedge, :mod:`pipelines.alpha.learning`). Weights move only with
REALIZED rewards from the FeedbackSystem, never with agreement with the
consensus (that would reward followers, not forecasters): one Hedge step per
feedback batch with each voter's summed reward, floored at ``weight_floor`` (a
voter that was wrong for a while can come back).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from pipelines.alpha.learning import hedge_update, normalized_with_floor
from pipelines.alpha.registry import ML_VOTER
from pipelines.model.clock import NS_PER_S
from pipelines.model.messages import Decision, Feedback, Signal, from_dict, signal_problem, to_dict

STATE_VERSION = 1


@dataclass(frozen=True)
class ConsensusConfig:
    """The defaults are ``HmarlConfig``'s (:meth:`from_hmarl`)."""

    ml_weight: float = 0.40
    # None: the agents share 1 - ml_weight equally (all of the weight when the ML voter is not one).
    agent_weights: dict[str, float] | None = None
    threshold: float = 0.15  # |score| needed for BUY/SELL
    eta: float = 0.1  # Hedge learning rate
    weight_floor: float = 0.02  # least share of the total weight any voter keeps
    base_size: int = 1  # contracts per decision
    signal_ttl_ns: int = 5 * NS_PER_S  # how long a signal with valid_ns 0 counts
    horizon_ns: int = 10 * NS_PER_S

    def __post_init__(self) -> None:
        checks = {
            "ml_weight": 0.0 <= self.ml_weight <= 1.0,
            "threshold": 0.0 <= self.threshold <= 1.0,
            "eta": self.eta >= 0.0,
            "weight_floor": 0.0 <= self.weight_floor < 1.0,
            "base_size": self.base_size >= 1,
            "signal_ttl_ns": self.signal_ttl_ns >= 0,
            "horizon_ns": self.horizon_ns > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ConsensusConfig.{name}: out of range, got {getattr(self, name)!r}")
        for agent, w in (self.agent_weights or {}).items():
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"ConsensusConfig.agent_weights[{agent!r}]: must be >= 0, got {w!r}")

    @classmethod
    def from_hmarl(cls, hmarl: Any) -> ConsensusConfig:
        """The consensus settings of the ``hmarl`` config section (``pipelines.config.HmarlConfig``)."""
        return cls(ml_weight=hmarl.ml_weight, threshold=hmarl.threshold, eta=hmarl.eta,
                   weight_floor=hmarl.weight_floor, base_size=hmarl.base_size,
                   signal_ttl_ns=int(hmarl.signal_ttl_s * NS_PER_S), horizon_ns=int(hmarl.horizon_s * NS_PER_S))


def initial_weights(voters: list[str], cfg: ConsensusConfig) -> dict[str, float]:
    """``ml`` gets ``ml_weight``, the agents ``agent_weights`` (default: the rest of the
    weight split equally); then normalized to total 1 and floored."""
    agents = [v for v in voters if v != ML_VOTER]
    if cfg.agent_weights is None:
        share = 1.0 - cfg.ml_weight if ML_VOTER in voters else 1.0
        raw = {a: share / len(agents) for a in agents}
    else:
        if set(cfg.agent_weights) != set(agents):
            raise ValueError(f"agent_weights must name exactly the agents {sorted(agents)}, "
                             f"got {sorted(cfg.agent_weights)}")
        raw = {a: float(cfg.agent_weights[a]) for a in agents}
    if ML_VOTER in voters:
        raw[ML_VOTER] = cfg.ml_weight
    if sum(raw.values()) <= 0:
        raise ValueError("initial weights sum to 0: give some voter a positive weight")
    return dict(zip(voters, normalized_with_floor([raw[v] for v in voters], cfg.weight_floor)))


class Coordinator:
    """Consensus and weight learning for one symbol. Plain Python, event time only."""

    def __init__(self, symbol: str, voters: list[str], cfg: ConsensusConfig = ConsensusConfig()) -> None:
        if not voters or len(set(voters)) != len(voters):
            raise ValueError(f"voters must be a non-empty list of distinct names, got {voters!r}")
        if cfg.weight_floor * len(voters) > 1.0:
            raise ValueError(f"weight_floor {cfg.weight_floor} x {len(voters)} voters exceeds the total weight 1")
        self.symbol = symbol
        self.voters = list(voters)
        self.cfg = cfg
        self._weights = initial_weights(self.voters, cfg)
        self._latest: dict[str, Signal] = {}
        # Feedback already learned from, so a re-sent batch does not count twice.
        self._seen_feedback: set[tuple[str, int, int]] = set()
        self._seen_order: deque[tuple[str, int, int]] = deque()
        self._counts: Counter[str] = Counter()

    # -- inputs ---------------------------------------------------------------------

    def on_signals(self, signals: list[Signal]) -> None:
        """Keep the latest signal per voter (by ts_event, then seq)."""
        for s in signals:
            if not isinstance(s, Signal):
                self._counts["not_a_signal"] += 1
            elif s.symbol != self.symbol:
                self._counts["other_symbol"] += 1
            elif s.agent not in self._weights:
                self._counts["unknown_voter"] += 1
            elif problem := signal_problem(s):
                self._counts[f"invalid_{problem}"] += 1
            elif (prev := self._latest.get(s.agent)) and (s.ts_event, s.seq) < (prev.ts_event, prev.seq):
                self._counts["superseded"] += 1
            else:
                self._latest[s.agent] = s
                self._counts["signals"] += 1

    def decide(self, ts_event: int, seq: int, price: float, market: dict | None = None) -> Decision:
        """The consensus at ``ts_event`` (see the module docstring)."""
        market = {**(market or {}), "price": price}
        if not (isinstance(price, (int, float)) and math.isfinite(price) and price > 0):
            self._counts["invalid_price"] += 1
            return self._decision(ts_event, seq, "HOLD", 0, 0.0, price, (), market, "invalid price")
        present = [s for v in self.voters if (s := self._latest.get(v)) and self._counts_at(s, ts_event)]
        total = sum(self._weights[s.agent] for s in present)
        if total <= 0:  # only zero-weight voters (weight_floor 0): nobody to listen to
            present = []
        signals = []
        for s in present:
            w = self._weights[s.agent] / total
            signals.append({"agent": s.agent, "direction": s.direction, "confidence": s.confidence,
                            "weight": w, "contribution": w * s.direction * s.confidence, "reasons": s.reasons})
        score = sum(d["contribution"] for d in signals)
        if not present:
            self._counts["no_voter_present"] += 1
        action = "BUY" if score >= self.cfg.threshold else "SELL" if score <= -self.cfg.threshold else "HOLD"
        return self._decision(ts_event, seq, action, 0 if action == "HOLD" else self.cfg.base_size,
                              score, price, tuple(signals), market)

    def _counts_at(self, s: Signal, ts_event: int) -> bool:
        fresh = s.ts_event <= ts_event <= s.ts_event + (s.valid_ns or self.cfg.signal_ttl_ns)
        return fresh and s.confidence > 0 and s.action != "abstain"

    def _decision(self, ts_event, seq, action, size, score, price, signals, market, risk="") -> Decision:
        self._counts[f"decisions_{action}"] += 1
        return Decision(
            decision_id=f"{self.symbol}-{seq}",  # from (symbol, seq): a re-sent decision keeps its id
            symbol=self.symbol, ts_event=ts_event, seq=seq, action=action, size=size, score=score,
            confidence=abs(score), price=price, horizon_ns=self.cfg.horizon_ns, signals=signals,
            weights=dict(self._weights), market=market, risk=risk,
        )

    # -- learning ---------------------------------------------------------------------------

    def on_feedback(self, feedbacks: list[Feedback]) -> dict[str, float]:
        """Hedge update from realized rewards; returns the new weights. Feedback for
        voters outside this coordinator (e.g. ``coordinator`` itself) changes nothing."""
        reward_sums: dict[str, float] = {}
        for fb in feedbacks:
            if not isinstance(fb, Feedback):
                self._counts["not_a_feedback"] += 1
                continue
            key = (fb.voter, fb.seq, fb.signal_ts)
            if fb.symbol != self.symbol:
                self._counts["feedback_other_symbol"] += 1
            elif fb.voter not in self._weights:
                self._counts["feedback_not_a_voter"] += 1
            elif not (isinstance(fb.reward, (int, float)) and -1.0 <= fb.reward <= 1.0):  # NaN fails too
                self._counts["feedback_invalid_reward"] += 1
            elif key in self._seen_feedback:
                self._counts["feedback_duplicate"] += 1
            else:
                self._remember(key)
                reward_sums[fb.voter] = reward_sums.get(fb.voter, 0.0) + fb.reward
                self._counts["feedback_applied"] += 1
        if reward_sums:
            names = list(self._weights)
            new = hedge_update([self._weights[v] for v in names], [reward_sums.get(v, 0.0) for v in names],
                               self.cfg.eta, self.cfg.weight_floor)
            if new is not None:
                self._weights = dict(zip(names, new))
                self._counts["weight_updates"] += 1
        return dict(self._weights)

    def _remember(self, key: tuple[str, int, int], keep: int = 100_000) -> None:
        self._seen_feedback.add(key)
        self._seen_order.append(key)
        if len(self._seen_order) > keep:
            self._seen_feedback.discard(self._seen_order.popleft())

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    # -- persistence and reporting ----------------------------------------------------------

    def state(self) -> dict:
        """JSON-able snapshot (weights, latest signals) for Valkey."""
        return {
            "version": STATE_VERSION,
            "symbol": self.symbol,
            "weights": dict(self._weights),
            "signals": [to_dict(s) for s in self._latest.values()],
        }

    def new_run(self) -> None:
        """A new run: no signal held (the last run's would not be valid now); the learned weights stay."""
        self._latest.clear()

    def load_state(self, d: dict) -> None:
        """Restore :meth:`state`. Saved weights of the same voters are taken as they are.
        Otherwise saved weights of voters no longer configured are dropped, voters new
        since keep their initial weight, and the result is renormalized and floored. Other keys
        are ignored: states saved when the coordinator still kept a paper account carry its
        position and P&L, which now live in the execution actor."""
        if d.get("version") != STATE_VERSION or d.get("symbol") != self.symbol:
            raise ValueError(f"state is for {d.get('symbol')!r} version {d.get('version')!r}, "
                             f"expected {self.symbol!r} version {STATE_VERSION}")
        saved = d.get("weights") or {}
        bad = [v for v, w in saved.items() if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0)]
        if bad:
            raise ValueError(f"state weights must be finite and >= 0; bad for {bad}")
        merged = {v: float(saved.get(v, w)) for v, w in self._weights.items()}
        if sum(merged.values()) <= 0:
            raise ValueError("state weights sum to 0")
        # Saved weights were normalized and floored when saved: doing it again would move their
        # last bits, and a restored coordinator would no longer decide and learn exactly as the
        # one that saved. Only a changed voter set, or a floor raised since, needs it.
        if set(saved) != set(merged) or abs(sum(merged.values()) - 1.0) > 1e-9 \
                or min(merged.values()) < self.cfg.weight_floor:
            merged = dict(zip(merged, normalized_with_floor(list(merged.values()), self.cfg.weight_floor)))
        self._weights = merged
        self._latest.clear()
        self.on_signals([from_dict(s) for s in d.get("signals", [])])

    def stats(self) -> dict:
        return {
            "weights": dict(self._weights),
            "latest_signals": len(self._latest),
            **dict(self._counts),
        }
