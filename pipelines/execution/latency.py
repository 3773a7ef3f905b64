"""Latency models: how long an order takes to reach the venue, an acknowledgement to come
back, and market data to reach the strategy.

Each model maps a uniform draw ``u`` in (0, 1) to a latency through its quantile function
(:meth:`quantile_ns`), so one seeded ``random.Random`` per leg makes every run with the same
seed draw the same latencies, and a test can compute a draw by hand:

- constant: ``ms``;
- lognormal: ``median x exp(sigma x z)``, ``z`` the standard normal quantile of ``u``;
- empirical: the configured quantiles (``q_0`` the minimum ... ``q_k`` the maximum, equally
  spaced in probability), linear between neighbours: ``u`` in ``[i/k, (i+1)/k]`` gives
  ``q_i + (u k - i) (q_(i+1) - q_i)``.

Every draw is capped at ``max_ms``. Each leg's generator is seeded with ``"<seed>:<leg>"``
(a string seed hashes the same on every platform and Python run), so switching one leg's
model does not change what the others draw.
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist

from pipelines.execution.config import CONSTANT, EMPIRICAL, LOGNORMAL, LatencyConfig
from pipelines.model.clock import NS_PER_MS

_NORMAL = NormalDist()
_U_MIN = 1e-12  # keeps the normal quantile finite at the ends of [0, 1)


class LatencyModel:
    """Draws latencies in integer nanoseconds for one leg."""

    def __init__(self, cfg: LatencyConfig, seed: int, leg: str):
        self.cfg = cfg
        self.leg = leg
        self._rng = random.Random(f"{seed}:{leg}")
        self._max_ns = int(round(cfg.max_ms * NS_PER_MS))
        self._constant_ns = min(int(round(cfg.ms * NS_PER_MS)), self._max_ns) if cfg.model == CONSTANT else None
        self._quantiles = sorted(float(q) for q in cfg.quantiles_ms) or [0.0]

    def quantile_ns(self, u: float) -> int:
        """The latency whose cumulative probability is ``u`` (clamped into (0, 1)), capped."""
        cfg = self.cfg
        u = min(max(u, _U_MIN), 1.0 - _U_MIN)
        if cfg.model == LOGNORMAL:
            ms = cfg.median_ms * math.exp(cfg.sigma * _NORMAL.inv_cdf(u))
        elif cfg.model == EMPIRICAL:
            q = self._quantiles
            k = len(q) - 1
            if k == 0:
                ms = q[0]
            else:
                i = min(int(u * k), k - 1)
                ms = q[i] + (u * k - i) * (q[i + 1] - q[i])
        else:
            ms = cfg.ms
        return min(int(round(ms * NS_PER_MS)), self._max_ns)

    def draw_ns(self) -> int:
        """The next latency of this leg (a constant model draws no random number)."""
        if self._constant_ns is not None:
            return self._constant_ns
        return self.quantile_ns(self._rng.random())

    def state(self) -> list:
        version, internal, gauss = self._rng.getstate()
        return [version, list(internal), gauss]

    def load_state(self, s: list) -> None:
        self._rng.setstate((s[0], tuple(s[1]), s[2]))
