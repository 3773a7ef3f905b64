"""The feed-source interface every source implements (simulator, replay, profitdll)."""

from __future__ import annotations

from typing import Protocol, Sequence

from pipelines.messages import Event


class FeedSource(Protocol):
    """A source of normalized events, polled by the FeedActor.

    ``poll`` returns the events that are due now (respecting the source's pacing),
    at most ``max_events``, in event-time order per symbol, each with ``seq=0``
    (the FeedActor stamps sequence numbers after validation) and ``ts_recv`` set
    to the local wall clock when the event was produced/received. It returns an
    empty list when nothing is due yet. ``exhausted`` is True once a finite
    source (replay, or a simulator with ``max_events``) has nothing more to give.
    """

    symbols: Sequence[str]

    def poll(self, max_events: int) -> list[Event]: ...

    @property
    def exhausted(self) -> bool: ...

    def close(self) -> None: ...
