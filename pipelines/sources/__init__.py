"""Feed sources behind one interface (see base.FeedSource), chosen by ``feed.source``."""

from __future__ import annotations

from pipelines.config import AppConfig
from pipelines.sources.base import FeedSource


def make_source(cfg: AppConfig, resume_after_ns: dict[str, int] | None = None) -> FeedSource:
    """The configured source for ``cfg.symbols``. ``resume_after_ns`` lets a restarted
    simulator continue its clock after the last event already stored."""
    kind = cfg.feed.source
    if kind == "simulator":
        from pipelines.sources.simulator import MarketSimulator

        return MarketSimulator(cfg.feed.simulator, cfg.symbols, resume_after_ns=resume_after_ns or None)
    if kind == "replay":
        from pipelines.sources.replay import ReplaySource

        return ReplaySource(cfg.feed.replay, cfg.symbols, resume_after_ns=resume_after_ns or None)
    raise ValueError(f"feed.source {kind!r} is not available in this build")
