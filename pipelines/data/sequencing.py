"""Sequence numbers between actors: dedupe, gap detection and resend.

Why: Ray restarts a crashed actor by re-running its constructor, so it comes
back with whatever it could rebuild (from Valkey) and calls made while it was
down are lost. Every batch therefore carries, per symbol, the seq of the last
event the sender previously sent to *this* receiver (``prev``). A receiver
whose position is behind ``prev`` knows it missed events and refuses the batch
with a resync request; the sender re-sends from its :class:`ResendWindow`.
Receivers drop any event with ``seq <= position`` (duplicates from resends or
at-least-once retries), so resending more than needed is harmless.

``prev[symbol] is None`` means "accept unconditionally": used when the window
no longer reaches back far enough, after counting the loss.
"""

from __future__ import annotations

import pickle
from collections import deque
from typing import Any, Callable, Iterable, NamedTuple

from pipelines.model.messages import Event


class BatchReply(NamedTuple):
    """What a receiver answers to ``on_batch``."""

    incarnation: str  # changes when the actor process is restarted
    accepted: int  # events appended
    duplicates: int  # events dropped as seq <= position
    resync_from: dict[str, int] | None  # symbol -> position, when a gap was seen


class SeqGate:
    """Receiver side: per-symbol position, dedupe and gap detection."""

    def __init__(self, positions: dict[str, int] | None = None):
        self.position: dict[str, int] = dict(positions or {})
        self.duplicates = 0
        self.gaps = 0
        self.forced = 0  # batches accepted despite a gap the sender could not fill

    def admit(self, events: Iterable[Event] | bytes, prev: dict[str, int | None]) -> tuple[list[Event], dict[str, int] | None]:
        """The events to apply, in order; or ([], resync request) on a gap.

        ``events`` may come pickled (bytes): the feed serializes each batch once
        for all the receivers that want it.
        """
        if isinstance(events, bytes):
            events = pickle.loads(events)
        pos = self.position
        gap = {s: pos.get(s, 0) for s, p in prev.items() if p is not None and p > pos.get(s, 0)}
        if gap:
            self.gaps += 1
            return [], gap
        self.forced += sum(1 for p in prev.values() if p is None)
        out = []
        for ev in events:
            if ev.seq <= pos.get(ev.symbol, 0):
                self.duplicates += 1
                continue
            pos[ev.symbol] = ev.seq
            out.append(ev)
        return out, None


class ResendWindow:
    """Sender side: the last ``capacity`` events (all kinds, all symbols), in seq order per symbol."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._events: deque[Event] = deque()
        # Per symbol, the highest seq evicted: the window is complete for seq > this.
        self._evicted_upto: dict[str, int] = {}
        self.unrecoverable = 0  # events a receiver missed that the window no longer held

    def extend(self, events: Iterable[Event]) -> None:
        if self.capacity <= 0:
            return
        buf = self._events
        buf.extend(events)
        while len(buf) > self.capacity:
            ev = buf.popleft()
            self._evicted_upto[ev.symbol] = ev.seq

    def since(self, symbol: str, position: int, want: Callable[[Event], bool]) -> tuple[list[Event], bool]:
        """Events of ``symbol`` with seq > position that ``want`` accepts, and
        whether the window is complete back to ``position``."""
        complete = self._evicted_upto.get(symbol, 0) <= position
        evs = [e for e in self._events if e.symbol == symbol and e.seq > position and want(e)]
        return evs, complete


class SlotGate:
    """Decision-clock slots decided once each, even when rounds come back out of order.

    Ray re-runs the rounds a restarted actor had queued, and not always in the order they
    were submitted: a "highest slot so far" rule would then drop the earlier rounds for
    good. The gate also remembers the slots it jumped over within the last ``window``
    slots (a re-run reaches back only as far as the rounds in flight), decides them when
    they come, and refuses any slot decided already.
    """

    def __init__(self, window: int = 64):
        self.window = window
        self.last = -1  # the highest slot decided
        self.open: set[int] = set()  # slots below ``last`` not decided yet, within the window

    def admit(self, slot: int) -> bool:
        """True (and the slot counts as decided) if ``slot`` was not decided before."""
        if slot > self.last:
            if self.last >= 0:  # nothing is known to be open before the first slot
                self.open.update(range(max(self.last + 1, slot - self.window), slot))
            self.last = slot
            self.open = {s for s in self.open if s >= slot - self.window}
            return True
        if slot in self.open:
            self.open.discard(slot)
            return True
        return False

    def state(self) -> dict:
        return {"last_slot": self.last, "open_slots": sorted(self.open)}

    def load_state(self, d: dict) -> None:
        self.last = int(d.get("last_slot", -1))
        self.open = {int(s) for s in d.get("open_slots", ())}


class DecisionSequencer:
    """Puts one account's decisions in their place in its market data, whatever arrives first.

    Market data comes from the feed and decisions from the coordinators, two callers with their
    own delays. A decision is due right after the market event it was made on (its ``seq``: that
    of the trade its feature vector closed on) and before the next one. For the symbols in
    ``decided`` (those with a coordinator), market events are held until the coordinator has said
    what it decided up to them (``mark``: ``through`` the last seq its round covered, ``until`` its
    next decision-clock boundary: the next decision is made on the first vector at or after it,
    so events before it need not wait), and a decision that comes before its market data waits
    for it. :meth:`release` hands out the work in that order.

    Held events are bounded (``max_held``): past the bound the oldest go on without their
    decisions (``overrun``), and a decision that comes after later market data was processed is
    handed out at once (``late``). Events are taken in arrival order across symbols, so one that
    goes back in time behind a held one waits too.
    """

    def __init__(self, decided: Iterable[str] = (), max_held: int = 100_000):
        self.decided = frozenset(decided)
        self.max_held = max_held
        self.held: deque[Event] = deque()  # admitted, not yet handed out
        self.waiting: dict[str, deque[Any]] = {}  # decisions waiting for their market data
        self.through: dict[str, int] = {}
        self.until: dict[str, int] = {}
        self.processed: dict[str, int] = {}  # per symbol, the seq of the last event handed out
        self.overrun = 0
        self.late = 0
        self.bad_marks: dict[str, int] = {}

    def add_events(self, events: Iterable[Event]) -> None:
        self.held.extend(events)

    def add_decisions(self, decisions: Iterable[Any]) -> list[Any]:
        """Queue each decision for its place; returns those due now, in order (not sequenced:
        another symbol or a malformed one, for the caller to count; or late)."""
        now = []
        for d in decisions:
            sym, seq = getattr(d, "symbol", None), getattr(d, "seq", None)
            if sym not in self.decided or type(seq) is not int:
                now.append(d)
            elif seq <= self.processed.get(sym, 0) and not self.waiting.get(sym):
                self.late += seq < self.processed.get(sym, 0)  # its market data went on without it
                now.append(d)
            else:
                self.waiting.setdefault(sym, deque()).append(d)
        return now

    def mark(self, through: Any = None, until: Any = None) -> None:
        """What a coordinator has decided up to (``{symbol: seq}``) and where its next decision
        can be (``{symbol: event time}``); marks only move forward."""
        for marks, name, into in ((through, "through", self.through), (until, "until", self.until)):
            if isinstance(marks, dict):
                for sym, m in marks.items():
                    if sym in self.decided and type(m) is int and m > into.get(sym, 0):
                        into[sym] = m
            elif marks is not None:
                self.bad_marks[name] = self.bad_marks.get(name, 0) + 1

    def release(self, everything: bool = False) -> list[tuple[str, Any]]:
        """The work that can be done now, in order: ``("market", [events])`` and ``("decision",
        d)`` items (``everything``: all of it, at the end of a run)."""
        held, waiting, out = self.held, self.waiting, []
        # locals: read for every held event
        decided, through, until, processed = self.decided, self.through, self.until, self.processed
        run: list[Event] = []
        while held:
            ev = held[0]
            sym = ev.symbol
            q = waiting.get(sym)
            if q and q[0].seq < ev.seq:  # decided on an earlier event: before this one
                if run:
                    out.append(("market", run))
                    run = []
                out.append(("decision", q.popleft()))
                continue
            ts = ev.ts_event if type(ev.ts_event) is int else None  # a bad time goes on: the engine counts it
            if (sym in decided and ev.seq > through.get(sym, 0) and ts is not None
                    and ts >= until.get(sym, 0) and not everything):
                if len(held) <= self.max_held:
                    break
                self.overrun += 1  # the coordinator is not keeping up: on without its decisions
            run.append(held.popleft())
            processed[sym] = ev.seq
        if run:
            out.append(("market", run))
        for sym, q in waiting.items():  # made on an event already handed out (or, at the end, any)
            while q and (everything or q[0].seq <= self.processed.get(sym, 0)):
                self.late += q[0].seq < self.processed.get(sym, 0)  # later market data went on without it
                out.append(("decision", q.popleft()))
        return out

    def state(self, encode: Callable[[Any], dict]) -> dict:
        """The marks, the processed position and the waiting decisions (``encode``d); the held
        events are not kept: the feed re-sends them from the processed position."""
        return {"processed": dict(self.processed), "through": dict(self.through), "until": dict(self.until),
                "waiting": [encode(d) for q in self.waiting.values() for d in q]}

    def load_state(self, d: dict, decode: Callable[[dict], Any]) -> None:
        processed = {s: int(q) for s, q in d["processed"].items()}
        through = {s: int(q) for s, q in d["through"].items()}
        until = {s: int(q) for s, q in d.get("until", {}).items()}
        waiting: dict[str, deque[Any]] = {}
        for item in d["waiting"]:
            dec = decode(item)
            waiting.setdefault(dec.symbol, deque()).append(dec)
        self.processed, self.through, self.until, self.waiting = processed, through, until, waiting
        self.held.clear()

    def stats(self) -> dict:
        return {"held": len(self.held), "waiting_decisions": sum(len(q) for q in self.waiting.values()),
                "overrun": self.overrun, "late_decisions": self.late}
