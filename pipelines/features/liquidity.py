"""Book liquidity: spread, depth, imbalances, weighted mid, microprice and a
liquidity score in [0, 1].

Per accepted snapshot, with ``P^B, P^A, Q^B, Q^A`` the best non-empty levels
(size > 0) and ``D^B, D^A`` the summed sizes of the first ``depth_levels`` (5)
non-empty levels:

- ``spread_ticks = (P^A - P^B) / tick_size`` (rounded to 1e-9 ticks);
- ``mid = (P^A + P^B) / 2``;
- ``book_imbalance I = Q^B / (Q^B + Q^A)`` in [0, 1]; ``queue_imbalance = 2I - 1``;
- ``depth_imbalance = (D^B - D^A) / (D^B + D^A)`` in [-1, 1] (the queue-imbalance
  ratio over the top-k sizes);
- ``weighted_mid W = I * P^A + (1 - I) * P^B``;
- ``microprice``: **the weighted mid W**, the standard fallback. Stoikov's g*
  correction needs a fitted transition model on a discretized (I, S) state,
  which this incremental module does not estimate, and W is what it falls back
  to when the state is outside a fitted model.

Liquidity score
    ``score = Phi((z_depth - z_spread) / 2)``, the standard normal CDF of the
    mean of two z-scores, restricted to the book terms (Amihud and Kyle
    lambda are bar/trade features kept elsewhere):
    ``z_depth`` of ``log(1 + D^B + D^A)`` and ``z_spread`` of ``spread_ticks``,
    each against the mean and population std (ddof 0) of the accepted
    two-sided snapshots in the trailing event-time window
    ``score_window_ns`` (30 min, current snapshot included). A zero std gives
    z = 0 (a spread pinned at one tick carries no information). NaN until the
    window holds ``min_score_samples`` (30) snapshots. 0.5 = typical for the
    last 30 minutes; deeper book / tighter spread push it towards 1.

Edge cases: an empty side (no level with size > 0) makes spread, mid, W,
microprice and the score NaN and is counted in ``one_sided``; I and the depth
imbalance stay defined from the sizes (an empty side has size 0) and are NaN
only when both sides are empty. A locked or crossed snapshot
(``P^B >= P^A``; B3 pre-open and closing call) is skipped: the previous values
stay and ``skipped_locked`` / ``skipped_crossed`` count it.
"""

from __future__ import annotations

import math

from pipelines.features.flow import EventTimeWindows, book_levels
from pipelines.model.messages import BookSnapshot
from pipelines.model.clock import NS_PER_MIN

NAN = float("nan")
INF = float("inf")
_SQRT2 = math.sqrt(2.0)


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / _SQRT2))


class LiquidityMonitor:
    def __init__(self, tick_size: float = 0.5, depth_levels: int = 5,
                 score_window_ns: int = 30 * NS_PER_MIN, min_score_samples: int = 30):
        self.tick = tick_size
        self.depth_levels = depth_levels
        self.score_window_ns = score_window_ns
        self.min_score_samples = min_score_samples
        # Per two-sided snapshot: x, x^2, y, y^2 with x = log(1 + depth), y = spread in ticks.
        self._store = EventTimeWindows(4, score_window_ns, typecode="d")
        self._x = NAN
        self._y = NAN
        # (P^B, P^A, Q^B, Q^A, D^B, D^A, spread or None when one-sided) of the last accepted
        # snapshot: values() derives the rest when asked, not on every snapshot
        self._last: tuple | None = None
        self.snapshots = 0
        self.skipped_locked = 0
        self.skipped_crossed = 0
        self.one_sided = 0

    @staticmethod
    def _empty_values() -> dict[str, float]:
        keys = ("spread_ticks", "mid", "bid_depth", "ask_depth", "depth", "book_imbalance",
                "queue_imbalance", "depth_imbalance", "weighted_mid", "microprice")
        return dict.fromkeys(keys, NAN)

    def advance(self, ts: int) -> None:
        self._store.advance(ts)

    def on_book(self, snap: BookSnapshot) -> bool:
        """Update from a snapshot; False when it was skipped (locked or crossed)."""
        m = self.depth_levels
        return self.on_levels(snap.ts_event, *book_levels(snap.bid_px, snap.bid_qty, m, -INF),
                              *book_levels(snap.ask_px, snap.ask_qty, m, INF))

    def on_levels(self, ts: int, bp: tuple, bq: tuple, ap: tuple, aq: tuple) -> bool:
        """:meth:`on_book` on a snapshot's first ``depth_levels`` non-empty levels of each side,
        as :func:`~pipelines.features.flow.book_levels` gives them (bids padded with -inf, asks
        with +inf)."""
        self.snapshots += 1
        pb, pa, qb, qa = bp[0], ap[0], bq[0], aq[0]
        if pb >= pa:
            if pb == pa:
                self.skipped_locked += 1
            else:
                self.skipped_crossed += 1
            self._store.advance(ts)
            return False
        db, da = sum(bq), sum(aq)
        if qb and qa:
            spread = round((pa - pb) / self.tick, 9)
            x = math.log1p(db + da)
            self._x, self._y = x, spread
            self._store.add(ts, (x, x * x, spread, spread * spread))
        else:
            spread = None
            self.one_sided += 1
            self._x = self._y = NAN
            self._store.advance(ts)
        self._last = (pb, pa, qb, qa, db, da, spread)
        return True

    def liquidity_score(self) -> float:
        if self._x != self._x:  # NaN: last accepted snapshot was one-sided (or none yet)
            return NAN
        n, (sx, sxx, sy, syy) = self._store.window(self.score_window_ns)
        if n < self.min_score_samples:
            return NAN
        z_depth = _z(self._x, sx, sxx, n)
        z_spread = _z(self._y, sy, syy, n)
        return normal_cdf((z_depth - z_spread) / 2)

    def values(self) -> dict[str, float]:
        last = self._last
        if last is None:
            out = self._empty_values()
        else:
            pb, pa, qb, qa, db, da, spread = last
            i = qb / (qb + qa) if qb + qa else NAN
            out = dict.fromkeys(("spread_ticks", "mid"), NAN)  # the keys in _empty_values' order
            out["bid_depth"], out["ask_depth"], out["depth"] = db, da, db + da
            out["book_imbalance"] = i
            out["queue_imbalance"] = 2 * i - 1
            out["depth_imbalance"] = (db - da) / (db + da) if db + da else NAN
            if spread is None:  # one-sided: no spread, mid or weighted mid
                out["weighted_mid"] = out["microprice"] = NAN
            else:
                w = i * pa + (1 - i) * pb
                out["spread_ticks"], out["mid"], out["weighted_mid"], out["microprice"] = spread, (pa + pb) / 2, w, w
        out["liquidity_score"] = self.liquidity_score()
        return out

    def state_sizes(self) -> dict[str, int]:
        return {"liquidity_rows": len(self._store)}


def _z(x: float, s: float, ss: float, n: int) -> float:
    mean = s / n
    var = ss / n - mean * mean
    # Float prefix sums leave ~1e-12 relative noise: treat that as zero spread.
    if var <= 1e-12 * max(1.0, mean * mean):
        return 0.0
    return (x - mean) / math.sqrt(var)
