"""Realized outcomes: what each signal and decision earned ``horizon_ns`` of event time later.

The FeedbackSystem is the only judge of a voter. It compares the last trade price
at or before ``ts_event + horizon_ns`` with the entry price (``signal.price`` or
``decision.price``) and turns the move ``points = exit - entry`` into

- ``reward`` = clip(direction x confidence x points / scale, -1, 1): the learning
  signal. ``scale`` defaults to 4 ticks of the instrument (WDO 2.0 points, WIN 20
  points), so a 4-tick move in the called direction at full confidence earns 1;
- ``pnl``: money in the instrument's currency (R$ for WDO/WIN) for one contract
  in the signal's direction, or ``size`` contracts for a decision, net of
  ``round_trip_cost`` per contract traded (B3's fees in and out: what the move
  would have earned after costs; the reward stays the move's, the learning signal);
- ``hit``: whether the sign was right; None when there was no direction or no move.

Prices advance the clock (:meth:`FeedbackSystem.on_price`); the wall clock is
never read. A horizon whose exit price is unavailable (no trade at or before it
in the retained history) produces no Feedback, only a ``missing_price`` count:
never a made-up or zero reward, which would teach the voters noise.

With ``journal=True`` the system records which outcomes became pending and
which were resolved (:meth:`FeedbackSystem.take_journal`), so its owner can
mirror the pending set in Valkey and a restarted system picks it up again
(:meth:`FeedbackSystem.restore_pending`).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import Counter
from typing import Iterable, NamedTuple

from pipelines.alpha.learning import REWARD_SCALE_TICKS
from pipelines.model.clock import NS_PER_MIN
from pipelines.model.instruments import UnknownInstrument, instrument_for, point_value_for
from pipelines.model.messages import Decision, Feedback, Signal, signal_problem
from pipelines.model.orders import DecisionOutcome

COORDINATOR = "coordinator"  # the voter name of a decision's feedback
DECISION_DIRECTION = {"BUY": 1, "SELL": -1, "HOLD": 0}


def pending_field(item: "_Tracked") -> str:
    """The name of one pending outcome in the mirrored set: voter, seq, signal time."""
    return f"{item.voter}:{item.seq}:{item.signal_ts}"


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


class _Tracked(NamedTuple):
    """One signal or decision waiting for its horizon."""

    due: int  # ts_event + horizon_ns
    voter: str
    signal_ts: int
    seq: int
    direction: float
    confidence: float
    entry: float
    size: int  # contracts the pnl is for: 1 for a signal
    decision_id: str


class _RunningStats:
    """Count, hits and Welford mean/variance of one voter's rewards."""

    __slots__ = ("count", "hits", "misses", "mean", "m2", "pnl_sum")

    def __init__(self) -> None:
        self.count = self.hits = self.misses = 0
        self.mean = self.m2 = self.pnl_sum = 0.0

    def add(self, fb: Feedback) -> None:
        self.count += 1
        self.hits += fb.hit is True
        self.misses += fb.hit is False
        delta = fb.reward - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (fb.reward - self.mean)
        self.pnl_sum += fb.pnl

    def summary(self) -> dict:
        judged = self.hits + self.misses
        std = math.sqrt(self.m2 / (self.count - 1)) if self.count >= 2 else None  # sample std (ddof=1)
        return {
            "count": self.count,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / judged if judged else None,
            "mean_reward": self.mean if self.count else None,
            "reward_std": std,
            "sharpe": self.mean / std if std else None,
            "pnl_sum": self.pnl_sum,
        }


class DecisionResults:
    """The decisions' realized results from their fills (``DecisionOutcome``, net of costs, from
    the execution actor): count, wins, losses, gross, fees and net sums, mean net per decision.
    Reporting only: learning stays on the horizon outcomes, which event time alone decides."""

    def __init__(self, keep: int = 100_000) -> None:
        self.count = self.wins = self.losses = 0
        self.gross = self.fees = self.net = 0.0
        self.duplicates = self.bad = 0
        self._seen: dict[tuple[str, int], None] = {}  # (decision id, ts_open), insertion ordered
        self._keep = keep

    def add(self, outcomes: Iterable[object]) -> int:
        """Take each outcome once (a re-sent one is counted in ``duplicates``); returns how many were new."""
        new = 0
        for o in outcomes:
            if type(o) is not DecisionOutcome or not all(
                    isinstance(x, (int, float)) and math.isfinite(x) for x in (o.gross_pnl, o.fees, o.net_pnl)):
                self.bad += 1
                continue
            key = (o.decision_id, o.ts_open)
            if key in self._seen:
                self.duplicates += 1
                continue
            self._seen[key] = None
            if len(self._seen) > self._keep:
                self._seen.pop(next(iter(self._seen)))
            new += 1
            self.count += 1
            self.wins += o.net_pnl > 0
            self.losses += o.net_pnl < 0
            self.gross += o.gross_pnl
            self.fees += o.fees
            self.net += o.net_pnl
        return new

    def summary(self) -> dict:
        return {"count": self.count, "wins": self.wins, "losses": self.losses,
                "win_rate": self.wins / self.count if self.count else None, "gross_pnl": self.gross,
                "fees": self.fees, "net_pnl": self.net, "mean_net_pnl": self.net / self.count if self.count else None,
                "duplicates": self.duplicates, "bad": self.bad}


class FeedbackSystem:
    """Evaluates tracked signals and decisions of one symbol against later trade prices.

    ``reward_scale_points``: the move (in points) worth a reward of 1 at full
    confidence; default 4 ticks of the instrument, required for an unknown symbol.
    ``point_value``: money per point per contract (default: the instrument's).
    ``min_history_ns``: how far back trade prices are kept at least, so signals
    registered late can still be evaluated; it grows to the longest horizon tracked.
    ``max_history``: hard cap on retained prices (a bounded memory whatever the horizons).
    """

    def __init__(
        self,
        symbol: str,
        *,
        reward_scale_points: float | None = None,
        point_value: float | None = None,
        min_history_ns: int = NS_PER_MIN,
        max_history: int = 1_000_000,
        journal: bool = False,
        round_trip_cost: float = 0.0,
    ) -> None:
        if reward_scale_points is None:
            try:
                reward_scale_points = instrument_for(symbol).tick_size * REWARD_SCALE_TICKS
            except UnknownInstrument as e:
                raise ValueError(f"{e}; pass reward_scale_points for this symbol") from None
        if not (math.isfinite(reward_scale_points) and reward_scale_points > 0):
            raise ValueError(f"reward_scale_points must be a positive number, got {reward_scale_points!r}")
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        if not (math.isfinite(round_trip_cost) and round_trip_cost >= 0):
            raise ValueError(f"round_trip_cost must be a number >= 0, got {round_trip_cost!r}")
        self.round_trip_cost = float(round_trip_cost)
        self.symbol = symbol
        self.scale = float(reward_scale_points)
        self.point_value = point_value_for(symbol, point_value)
        self.max_history = max_history
        self._retention_ns = int(min_history_ns)
        # Price history as two parallel lists with a moving start: bisect needs O(1)
        # random access, which a deque does not give; the dead prefix is compacted.
        self._ts: list[int] = []
        self._px: list[float] = []
        self._start = 0
        self._pending: list[tuple[int, int, _Tracked]] = []  # heap by (due, order of registration)
        self._pending_keys: set[tuple[str, int, int]] = set()
        self._order = 0
        self._ready: list[Feedback] = []  # late registrations evaluated at once, returned by the next on_price
        self._perf: dict[str, _RunningStats] = {}
        self._counts: Counter[str] = Counter()
        self._votes: dict[str, tuple] = {}  # decision_id -> the votes behind it (insertion ordered)
        self.max_votes = 100_000
        # Changes to the pending set since take_journal(): field -> record added, fields resolved.
        self._journal: tuple[dict[str, dict], list[str]] | None = ({}, []) if journal else None

    # -- registration ---------------------------------------------------------

    def track_signal(self, signal: Signal) -> None:
        """Register a signal; a direction of 0 is tracked too (reward 0, hit None)."""
        if signal.symbol != self.symbol:
            self._counts["other_symbol"] += 1
            return
        problem = signal_problem(signal)
        if problem:
            self._counts[f"invalid_{problem}"] += 1
            return
        self._track(_Tracked(signal.ts_event + signal.horizon_ns, signal.agent, signal.ts_event, signal.seq,
                             float(signal.direction), float(signal.confidence), float(signal.price), 1, ""))

    def track_decision(self, decision: Decision) -> None:
        """Register a decision under the voter name ``coordinator``: direction +1 BUY,
        -1 SELL, 0 HOLD; pnl for ``decision.size`` contracts."""
        if decision.symbol != self.symbol:
            self._counts["other_symbol"] += 1
            return
        direction = DECISION_DIRECTION.get(decision.action)
        if direction is None:
            self._counts["invalid_action"] += 1
            return
        if not (math.isfinite(decision.price) and decision.price > 0):
            self._counts["invalid_price"] += 1
            return
        if not (isinstance(decision.horizon_ns, int) and decision.horizon_ns > 0):
            self._counts["invalid_horizon"] += 1
            return
        if decision.size <= 0:
            direction = 0  # nothing was traded: no exposure to the move
        # The votes behind it, for voter_credits() once its outcome is known (bounded, oldest dropped).
        self._votes[decision.decision_id] = tuple(decision.signals)
        while len(self._votes) > self.max_votes:
            self._votes.pop(next(iter(self._votes)))
        self._track(_Tracked(decision.ts_event + decision.horizon_ns, COORDINATOR, decision.ts_event, decision.seq,
                             float(direction), float(decision.confidence), float(decision.price),
                             int(decision.size), decision.decision_id))

    def voter_credits(self, fb: Feedback) -> list[Feedback]:
        """One Feedback per voter that took part in the decision ``fb`` resolved: its
        own direction x confidence at decision time against the same realized move.

        The coordinator learns its voter weights from these, so every voter is
        scored on the same rounds (the decisions), whatever its signal rate; a
        voter that was absent gets nothing for that round."""
        votes = self._votes.pop(fb.decision_id, ())
        out = []
        for v in votes:
            d, c = float(v["direction"]), float(v["confidence"])
            out.append(fb._replace(
                voter=v["agent"], direction=d, confidence=c,
                pnl=self._net(_sign(d), fb.points, 1),
                reward=min(1.0, max(-1.0, d * c * fb.points / self.scale)),
                hit=None if d == 0 or fb.points == 0 else _sign(d) == _sign(fb.points),
            ))
        return out

    def _track(self, item: _Tracked) -> None:
        key = (item.voter, item.seq, item.signal_ts)
        if key in self._pending_keys:
            self._counts["duplicate"] += 1
            return
        self._counts["tracked"] += 1
        self._retention_ns = max(self._retention_ns, item.due - item.signal_ts)
        now = self._ts[-1] if self._ts else None
        if now is not None and item.due <= now:
            # Its horizon has already elapsed: evaluate now, while the history still covers it.
            self._counts["late"] += 1
            self._emit(item, self._ready)
            return
        self._push(item)
        if self._journal is not None:
            record = item._asdict()
            if item.decision_id:
                record["votes"] = list(self._votes.get(item.decision_id, ()))
            self._journal[0][pending_field(item)] = record

    def _push(self, item: _Tracked) -> None:
        self._pending_keys.add((item.voter, item.seq, item.signal_ts))
        heapq.heappush(self._pending, (item.due, self._order, item))
        self._order += 1

    # -- the pending set across restarts ------------------------------------------------

    def take_journal(self) -> tuple[dict[str, dict], list[str]]:
        """(added, resolved) since the last call: the records that became pending (field ->
        JSON-ready dict) and the fields of those resolved. An outcome tracked and resolved
        in between appears in neither. Requires ``journal=True``."""
        if self._journal is None:
            raise RuntimeError("take_journal() needs FeedbackSystem(journal=True)")
        out, self._journal = self._journal, ({}, [])
        return out

    def restore_pending(self, records: dict[str, dict]) -> int:
        """Track again what a previous incarnation left pending (the records of
        :meth:`take_journal`, as mirrored); already-pending ones are skipped and malformed
        ones counted (``bad_pending``). Returns how many were restored. Nothing is journaled:
        the mirror holds them already."""
        restored = 0
        for field, rec in records.items():
            try:
                item = _Tracked(int(rec["due"]), str(rec["voter"]), int(rec["signal_ts"]), int(rec["seq"]),
                                float(rec["direction"]), float(rec["confidence"]), float(rec["entry"]),
                                int(rec["size"]), str(rec["decision_id"]))
                votes = tuple(dict(v) for v in rec.get("votes") or ())
                if pending_field(item) != field or item.due <= item.signal_ts or not math.isfinite(item.entry):
                    raise ValueError("inconsistent record")
            except (KeyError, TypeError, ValueError):
                self._counts["bad_pending"] += 1
                continue
            if (item.voter, item.seq, item.signal_ts) in self._pending_keys:
                continue
            if item.decision_id:
                self._votes[item.decision_id] = votes
            self._retention_ns = max(self._retention_ns, item.due - item.signal_ts)
            self._push(item)
            restored += 1
        self._counts["restored"] += restored
        return restored

    def oldest_pending_ns(self) -> int | None:
        """Event time of the oldest signal or decision still pending (None: none)."""
        return min((entry[2].signal_ts for entry in self._pending), default=None)

    # -- the clock --------------------------------------------------------------

    def on_price(self, ts_event: int, price: float) -> list[Feedback]:
        """Advance event time with a trade; return every Feedback whose horizon elapsed
        (``ts + horizon <= ts_event``), plus late registrations evaluated since the last call."""
        out, self._ready = self._ready, []
        if not (isinstance(price, (int, float)) and math.isfinite(price) and price > 0):
            self._counts["invalid_price"] += 1
            return out
        if self._ts and ts_event < self._ts[-1]:
            self._counts["out_of_order_price"] += 1
            return out
        self._ts.append(ts_event)
        self._px.append(float(price))
        while self._pending and self._pending[0][0] <= ts_event:
            item = heapq.heappop(self._pending)[2]
            self._pending_keys.discard((item.voter, item.seq, item.signal_ts))
            if self._journal is not None:
                field = pending_field(item)
                if self._journal[0].pop(field, None) is None:
                    self._journal[1].append(field)
            self._emit(item, out)
        self._prune(ts_event)
        return out

    def on_prices(self, pairs: Iterable[tuple[int, float]]) -> list[Feedback]:
        """Batch :meth:`on_price` over ``(ts_event, price)`` pairs in time order."""
        out: list[Feedback] = []
        for ts_event, price in pairs:
            out.extend(self.on_price(ts_event, price))
        return out

    def _prune(self, now: int) -> None:
        # Keep every price after now - retention plus the last one at or before it:
        # that one is still "the last trade at or before" any due time in the window.
        cut = bisect_right(self._ts, now - self._retention_ns, lo=self._start) - 1
        self._start = max(self._start, cut, len(self._ts) - self.max_history)
        if self._start > 4096 and self._start * 2 > len(self._ts):
            del self._ts[: self._start], self._px[: self._start]
            self._start = 0

    # -- evaluation ---------------------------------------------------------------

    def _emit(self, item: _Tracked, out: list[Feedback]) -> None:
        i = bisect_right(self._ts, item.due, lo=self._start) - 1
        if i < self._start:
            self._counts["missing_price"] += 1
            return
        exit_price = self._px[i]
        points = exit_price - item.entry
        fb = Feedback(
            voter=item.voter,
            symbol=self.symbol,
            ts_event=item.due,
            signal_ts=item.signal_ts,
            seq=item.seq,
            direction=item.direction,
            confidence=item.confidence,
            entry_price=item.entry,
            exit_price=exit_price,
            points=points,
            pnl=self._net(_sign(item.direction), points, item.size),
            reward=min(1.0, max(-1.0, item.direction * item.confidence * points / self.scale)),
            hit=None if item.direction == 0 or points == 0 else _sign(item.direction) == _sign(points),
            decision_id=item.decision_id,
        )
        self._counts["evaluated"] += 1
        self._perf.setdefault(item.voter, _RunningStats()).add(fb)
        out.append(fb)

    def _net(self, sign: int, points: float, size: int) -> float:
        """R$ of ``size`` contracts on ``sign``'s side over a move of ``points``, after the round trip's costs."""
        return sign * points * self.point_value * size - (self.round_trip_cost * size if sign else 0.0)

    # -- reporting ------------------------------------------------------------------

    def performance(self, voter: str) -> dict:
        """count, hits, misses, hit_rate, mean_reward, reward_std (sample), sharpe
        (mean/std; None with fewer than 2 outcomes or std 0), pnl_sum of ``voter``."""
        return self._perf.get(voter, _RunningStats()).summary()

    def all_performance(self) -> dict[str, dict]:
        return {voter: stats.summary() for voter, stats in sorted(self._perf.items())}

    def stats(self) -> dict:
        return {
            "tracked": self._counts["tracked"],
            "pending": len(self._pending),
            "evaluated": self._counts["evaluated"],
            "missing_price": self._counts["missing_price"],
            "late": self._counts["late"],
            "history": len(self._ts) - self._start,
            "reward_scale_points": self.scale,
            "point_value": self.point_value,
            "round_trip_cost": self.round_trip_cost,
            **{k: v for k, v in self._counts.items() if k not in ("tracked", "evaluated", "missing_price", "late")},
        }
