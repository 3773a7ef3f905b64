"""The coordinator: weighted consensus of the voters, a risk check, and Hedge learning.

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
else HOLD. The size is ``base_size``, not scaled by confidence: the score already
decides whether to trade, and a fixed size keeps the risk limits easy to reason about.

Risk. A hook ``(proposal, RiskState) -> (size, reason)`` may reduce the size
(never raise it); size 0 turns the decision into a HOLD carrying the reason.
The default, :func:`default_risk_check`, enforces the position limit and the
realized-loss limit on the position the coordinator simulates from
:meth:`Coordinator.apply_decision` (fills at ``decision.price``, R$ P&L via
:mod:`pipelines.model.instruments`).

Learning (Hedge). Weights move only with REALIZED rewards from the
FeedbackSystem, never with agreement with the consensus (that would reward
followers, not forecasters): ``w_v *= exp(eta * reward)`` for every feedback of
a batch, then the weights are renormalized to total 1 and floored at
``weight_floor`` (a voter that was wrong for a while can come back).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, NamedTuple

from pipelines.feedback.system import ML_VOTER, point_value_for, signal_problem
from pipelines.model.messages import Decision, Feedback, Signal, from_dict, to_dict

AGENTS_SHARE = 0.60  # the agents' total initial weight when agent_weights is None
STATE_VERSION = 1


@dataclass(frozen=True)
class ConsensusConfig:
    ml_weight: float = 0.40
    agent_weights: dict[str, float] | None = None  # None: AGENTS_SHARE split equally over the agents
    threshold: float = 0.15  # |score| needed for BUY/SELL
    eta: float = 0.5  # Hedge learning rate
    weight_floor: float = 0.02  # least share of the total weight any voter keeps
    max_position: int = 5  # contracts, either side
    max_loss: float = 2000.0  # realized loss (currency) after which only reducing trades pass
    base_size: int = 1  # contracts per decision
    signal_ttl_ns: int = 5 * 10**9  # how long a signal with valid_ns 0 counts
    horizon_ns: int = 60 * 10**9

    def __post_init__(self) -> None:
        checks = {
            "ml_weight": 0.0 <= self.ml_weight <= 1.0,
            "threshold": 0.0 <= self.threshold <= 1.0,
            "eta": self.eta >= 0.0,
            "weight_floor": 0.0 <= self.weight_floor < 1.0,
            "max_position": self.max_position >= 0,
            "max_loss": self.max_loss >= 0.0,
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


class RiskState(NamedTuple):
    """What a risk hook sees: the simulated position and the limits."""

    position: int  # signed contracts
    avg_price: float  # average entry price of the open position (0 when flat)
    realized_pnl: float  # currency
    max_position: int
    max_loss: float


RiskHook = Callable[[Decision, RiskState], tuple[int, str]]


def default_risk_check(proposal: Decision, state: RiskState) -> tuple[int, str]:
    """Loss limit: once ``realized_pnl <= -max_loss`` only trades that reduce the
    open position pass, cut to its size (no flip). Position limit: a trade that
    would take ``|position|`` past ``max_position`` is cut to the room left, or
    blocked when there is none."""
    side = 1 if proposal.action == "BUY" else -1
    size = proposal.size
    if state.realized_pnl <= -state.max_loss:
        reducing = state.position * side < 0
        if not reducing:
            return 0, f"loss limit: realized {state.realized_pnl:.2f} <= -{state.max_loss:.2f}, only reducing trades"
        if size > abs(state.position):
            return abs(state.position), f"loss limit: size {size} -> {abs(state.position)}, reduce only"
        return size, ""
    room = state.max_position - side * state.position
    if size <= room:
        return size, ""
    if room <= 0:
        return 0, f"position limit: position {state.position:+d}, max {state.max_position}"
    return room, f"position limit: size {size} -> {room} (position {state.position:+d}, max {state.max_position})"


def normalized_with_floor(weights: dict[str, float], floor: float) -> dict[str, float]:
    """Scale to total 1, then raise every weight below ``floor`` to it and scale the
    others down proportionally so the total stays 1 (repeated while that pushes
    another one under the floor)."""
    total = sum(weights.values())
    w = {k: v / total for k, v in weights.items()}
    pinned: set[str] = set()
    while True:
        low = [k for k, v in w.items() if k not in pinned and v < floor]
        if not low:
            return w
        pinned.update(low)
        free_total = sum(v for k, v in w.items() if k not in pinned)
        budget = 1.0 - floor * len(pinned)
        w = {k: floor if k in pinned else v * budget / free_total for k, v in w.items()}


def initial_weights(voters: list[str], cfg: ConsensusConfig) -> dict[str, float]:
    """``ml`` gets ``ml_weight``, the agents ``agent_weights`` (default AGENTS_SHARE
    split equally); then normalized to total 1 and floored."""
    agents = [v for v in voters if v != ML_VOTER]
    if cfg.agent_weights is None:
        raw = {a: AGENTS_SHARE / len(agents) for a in agents}
    else:
        if set(cfg.agent_weights) != set(agents):
            raise ValueError(f"agent_weights must name exactly the agents {sorted(agents)}, "
                             f"got {sorted(cfg.agent_weights)}")
        raw = {a: float(cfg.agent_weights[a]) for a in agents}
    if ML_VOTER in voters:
        raw[ML_VOTER] = cfg.ml_weight
    if sum(raw.values()) <= 0:
        raise ValueError("initial weights sum to 0: give some voter a positive weight")
    return normalized_with_floor({v: raw[v] for v in voters}, cfg.weight_floor)


class Coordinator:
    """Consensus, risk and weight learning for one symbol. Plain Python, event time only."""

    def __init__(
        self,
        symbol: str,
        voters: list[str],
        cfg: ConsensusConfig = ConsensusConfig(),
        risk_hook: RiskHook | None = None,
        *,
        point_value: float | None = None,
    ) -> None:
        if not voters or len(set(voters)) != len(voters):
            raise ValueError(f"voters must be a non-empty list of distinct names, got {voters!r}")
        if cfg.weight_floor * len(voters) > 1.0:
            raise ValueError(f"weight_floor {cfg.weight_floor} x {len(voters)} voters exceeds the total weight 1")
        self.symbol = symbol
        self.voters = list(voters)
        self.cfg = cfg
        self.risk_hook: RiskHook = risk_hook or default_risk_check
        self.point_value = point_value_for(symbol, point_value)
        self._weights = initial_weights(self.voters, cfg)
        self._latest: dict[str, Signal] = {}
        self._position = 0
        self._avg_price = 0.0
        self._realized = 0.0
        self._last_applied_seq: int | None = None
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
        """The consensus at ``ts_event`` (see the module docstring), after the risk hook."""
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
        proposal = self._decision(ts_event, seq, action, 0 if action == "HOLD" else self.cfg.base_size,
                                  score, price, tuple(signals), market, "")
        if action == "HOLD":
            return self._record(proposal)
        try:
            size, reason = self.risk_hook(proposal, self.risk_state())
            size = max(0, min(int(size), proposal.size))  # a hook may reduce, never enlarge
        except Exception as e:  # a broken hook must block trading, not the coordinator
            self._counts["risk_hook_error"] += 1
            size, reason = 0, f"risk hook error: {type(e).__name__}: {e}"
        if size == 0:
            return self._record(proposal._replace(action="HOLD", size=0, risk=reason or "risk: size 0"))
        return self._record(proposal._replace(size=size, risk=reason))

    def _counts_at(self, s: Signal, ts_event: int) -> bool:
        fresh = s.ts_event <= ts_event <= s.ts_event + (s.valid_ns or self.cfg.signal_ttl_ns)
        return fresh and s.confidence > 0 and s.action != "abstain"

    def _decision(self, ts_event, seq, action, size, score, price, signals, market, risk) -> Decision:
        return Decision(
            decision_id=f"{self.symbol}-{seq}",  # from (symbol, seq): a re-sent decision keeps its id
            symbol=self.symbol, ts_event=ts_event, seq=seq, action=action, size=size, score=score,
            confidence=abs(score), price=price, horizon_ns=self.cfg.horizon_ns, signals=signals,
            weights=dict(self._weights), market=market, risk=risk,
        )

    def _record(self, decision: Decision) -> Decision:
        self._counts[f"decisions_{decision.action}"] += 1
        if decision.risk:
            self._counts["risk_adjusted"] += 1
        return decision

    # -- simulated position ------------------------------------------------------------

    def apply_decision(self, decision: Decision) -> None:
        """Mark ``decision`` filled at its price: update position, average price and
        realized P&L. Idempotent: a decision whose seq was already applied is ignored."""
        if decision.symbol != self.symbol:
            self._counts["fill_other_symbol"] += 1
            return
        if self._last_applied_seq is not None and decision.seq <= self._last_applied_seq:
            self._counts["fill_duplicate"] += 1
            return
        self._last_applied_seq = decision.seq
        if decision.action not in ("BUY", "SELL") or decision.size <= 0:
            return
        qty = decision.size if decision.action == "BUY" else -decision.size
        pos, price = self._position, float(decision.price)
        if pos == 0 or (pos > 0) == (qty > 0):  # opening or adding: new average price
            self._avg_price = (self._avg_price * abs(pos) + price * abs(qty)) / abs(pos + qty)
        else:  # reducing, closing or flipping: realize the closed part
            closed = min(abs(qty), abs(pos))
            self._realized += closed * (price - self._avg_price) * (1 if pos > 0 else -1) * self.point_value
            if pos + qty == 0:
                self._avg_price = 0.0
            elif (pos + qty > 0) != (pos > 0):
                self._avg_price = price  # flipped: the remainder opened at this price
        self._position = pos + qty
        self._counts["fills"] += 1

    def risk_state(self) -> RiskState:
        return RiskState(self._position, self._avg_price, self._realized, self.cfg.max_position, self.cfg.max_loss)

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
            # exp(eta * sum) relative to the largest exponent: the same ratios, no overflow.
            exps = {v: self.cfg.eta * reward_sums.get(v, 0.0) for v in self._weights}
            top = max(exps.values())
            grown = {v: w * math.exp(exps[v] - top) for v, w in self._weights.items()}
            if sum(grown.values()) > 0:
                self._weights = normalized_with_floor(grown, self.cfg.weight_floor)
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
        """JSON-able snapshot (weights, simulated position, latest signals) for Valkey."""
        return {
            "version": STATE_VERSION,
            "symbol": self.symbol,
            "weights": dict(self._weights),
            "position": self._position,
            "avg_price": self._avg_price,
            "realized_pnl": self._realized,
            "last_applied_seq": self._last_applied_seq,
            "signals": [to_dict(s) for s in self._latest.values()],
        }

    def new_account(self) -> None:
        """A fresh paper account (a new run): flat, no P&L, no fill seen, no signal held;
        the learned weights stay."""
        self._position, self._avg_price, self._realized = 0, 0.0, 0.0
        self._last_applied_seq = None
        self._latest.clear()

    def load_state(self, d: dict) -> None:
        """Restore :meth:`state`. Saved weights of voters no longer configured are
        dropped; voters new since keep their initial weight; then renormalized and floored."""
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
        self._weights = normalized_with_floor(merged, self.cfg.weight_floor)
        self._position = int(d["position"])
        self._avg_price = float(d["avg_price"])
        self._realized = float(d["realized_pnl"])
        self._last_applied_seq = d["last_applied_seq"]
        self._latest.clear()
        self.on_signals([from_dict(s) for s in d.get("signals", [])])

    def stats(self) -> dict:
        return {
            "weights": dict(self._weights),
            "position": self._position,
            "avg_price": self._avg_price,
            "realized_pnl": self._realized,
            "latest_signals": len(self._latest),
            **dict(self._counts),
        }
