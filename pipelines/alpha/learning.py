"""The learning rule of the voters: floored multiplicative weights (Hedge).

Two learners use it. Each agent (:class:`ContextualHedge`) weighs the arms
act / fade / abstain of its vote, one weight vector per market context; the
coordinator (``pipelines.portfolio.consensus``) weighs the voters. Both see
every arm's reward once an outcome is known (full information), so both run
the same step (:func:`hedge_update`)::

    w_i *= exp(eta * reward_i); renormalize to total 1; floor

The exponentials are taken relative to the largest exponent (the same ratios,
and a batch of many rewards at a high ``eta`` cannot overflow). The floor
raises every weight below ``floor`` to it and rescales the others into what is
left, so no arm or voter dies and every one can recover.

Rewards are in units of :data:`REWARD_SCALE_TICKS` ticks of the instrument: the
FeedbackSystem's rewards and the agents' arm rewards share that scale.

The agents' arms (:class:`ContextualHedge`)
    With m = raw_direction x points (the move in the vote's direction), c =
    ``cost_ticks`` ticks (the round-trip cost, in points) and scale = 4 ticks of
    the instrument (WDO 2.0 points, WIN 20, ES 1.0): act earns raw_confidence x
    (m - c) / scale, fade raw_confidence x (-m - c) / scale, each clipped to
    [-1, 1], and abstain 0 (no trade, no cost). The confidence is the exposure,
    so it scales the cost as it scales the move: act beats abstain where the
    confidence-weighted mean move in the vote's direction exceeds c, whatever the
    rule's confidence level; where the rule has no edge both trading arms lose c
    per outcome and abstain wins. The chosen arm is the argmax, ties -> abstain,
    then act, then fade: an unlearned context (1/3 each) abstains until its
    outcomes show an edge beyond the cost. That costs no learning, since every
    outcome, abstained signals' included, gives every arm's reward. Defaults:
    eta 0.1, floor 0.02.
"""

from __future__ import annotations

import math
from typing import Sequence

REWARD_SCALE_TICKS = 4  # a move of this many ticks, called at full confidence, earns reward 1
ARMS = ("act", "fade", "abstain")  # the order of the saved weights
ARM_SIGN = {"act": 1, "fade": -1, "abstain": 0}
TIE_RANK = {"abstain": 2, "act": 1, "fade": 0}  # argmax ties: no trade without evidence of an edge
HEDGE_ETA = 0.1
HEDGE_FLOOR = 0.02


def with_floor(weights: Sequence[float], floor: float) -> list[float]:
    """Weights that sum to 1 with every one below ``floor`` raised to it and the
    others scaled down proportionally so the total stays 1 (repeated while that
    pushes another one under the floor: at most ``len(weights)`` rounds)."""
    w = list(weights)
    pinned: set[int] = set()
    while True:
        low = [i for i, v in enumerate(w) if i not in pinned and v < floor]
        if not low:
            return w
        pinned.update(low)
        free_total = sum(v for i, v in enumerate(w) if i not in pinned)
        budget = 1.0 - floor * len(pinned)
        w = [floor if i in pinned else v * budget / free_total for i, v in enumerate(w)]


def normalized_with_floor(weights: Sequence[float], floor: float) -> list[float]:
    """Scale to total 1, then :func:`with_floor`."""
    total = sum(weights)
    return with_floor([v / total for v in weights], floor)


def hedge_update(weights: Sequence[float], rewards: Sequence[float], eta: float, floor: float) -> list[float] | None:
    """One Hedge step: ``w_i * exp(eta * rewards_i)``, normalized and floored; None
    when nothing would be left to normalize (every weight 0)."""
    exps = [eta * r for r in rewards]
    top = max(exps)
    grown = [w * math.exp(e - top) for w, e in zip(weights, exps)]
    if not sum(grown) > 0:
        return None
    return normalized_with_floor(grown, floor)


class ContextualHedge:
    """Hedge over ``ARMS``, one weight vector per context (module docstring)."""

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
        w = hedge_update(self.weights_of(context), rewards, self.eta, self.floor)
        if w is not None:
            self.weights[context] = w
        self.updates[context] = self.updates.get(context, 0) + 1

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
            weights[context] = with_floor(row, self.floor)
        self.weights = weights
        self.updates = {c: int(n) for c, n in d.get("updates", {}).items()}
