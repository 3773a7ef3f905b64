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
from typing import Callable, Iterable, NamedTuple

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
