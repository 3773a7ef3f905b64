"""Feed sources behind one interface (see base.FeedSource), chosen by ``feed.source``."""

from __future__ import annotations

from pipelines.adapters.base import FeedSource
from pipelines.adapters.config import FeedConfig


def make_source(feed: FeedConfig, symbols: tuple[str, ...],
                resume_after_ns: dict[str, int] | None = None) -> FeedSource:
    """The source ``feed.source`` names, for ``symbols``. ``resume_after_ns`` lets a restarted
    simulator continue its clock after the last event already stored."""
    kind = feed.source
    if kind == "simulator":
        from pipelines.adapters.simulator import MarketSimulator

        return MarketSimulator(feed.simulator, symbols, resume_after_ns=resume_after_ns or None)
    if kind == "replay":
        from pipelines.adapters.files.replay import ReplaySource

        return ReplaySource(feed.replay, symbols, resume_after_ns=resume_after_ns or None)
    if kind == "profitdll":
        # The DLL crashes its host and allows one login per process: it runs in a
        # supervised child (scripts/feed_bridge.py), read through the bridge protocol.
        from pipelines.adapters.bridge.host import HostedBridge

        pd = feed.profitdll
        args = ["--exchange", pd.exchange, "--book-depth", str(pd.book_depth)]
        if pd.dll_path:
            args += ["--dll-path", pd.dll_path]
        if pd.credentials_file:
            args += ["--credentials-file", pd.credentials_file]
        return HostedBridge(symbols, source="profitdll", bridge_args=args, ready_timeout_s=pd.ready_timeout_s,
                            heartbeat_timeout_s=pd.heartbeat_timeout_s, backoff_initial_s=pd.backoff_initial_s,
                            backoff_max_s=pd.backoff_max_s)
    if kind == "bridge":
        from pipelines.adapters.bridge.client import BridgeClient

        b = feed.bridge
        return BridgeClient(b.pub, b.rep, symbols, heartbeat_timeout_s=b.heartbeat_timeout_s,
                            request_timeout_s=b.request_timeout_s)
    raise ValueError(f"feed.source {kind!r} is not available in this build")
