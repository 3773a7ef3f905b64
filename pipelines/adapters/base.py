"""The feed-source interface every source implements (simulator, replay, profitdll)."""

from __future__ import annotations

from typing import Protocol, Sequence

from pipelines.model.messages import Event

# The shortest sleep of a paced source's wait(): at high rates the feed then polls
# events in bursts (they go out in micro-batches anyway) instead of one at a time.
MIN_WAIT_S = 0.0002


class FeedSource(Protocol):
    """A source of normalized events, polled by the FeedActor.

    ``poll`` returns the events that are due now (respecting the source's pacing),
    at most ``max_events``, in event-time order per symbol, each with ``seq=0``
    (the FeedActor stamps sequence numbers after validation) and ``ts_recv`` set
    to the local wall clock when the event was produced/received. It returns an
    empty list when nothing is due yet. ``exhausted`` is True once a finite
    source (replay, or a simulator with ``max_events``) has nothing more to give.

    ``wait(timeout_s)`` blocks until events may be due or ``timeout_s`` has passed,
    whichever comes first (it may return early; it never consumes events). The
    FeedActor calls it when a poll came back empty, so an idle feed sleeps until
    the next event instead of waking every millisecond to look.
    """

    symbols: Sequence[str]

    def poll(self, max_events: int) -> list[Event]: ...

    def wait(self, timeout_s: float) -> None: ...

    @property
    def exhausted(self) -> bool: ...

    def close(self) -> None: ...
