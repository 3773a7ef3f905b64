"""The feed bridge: a market-data producer (ProfitDLL, or the simulator) in a process of its own,
streamed to the pipeline over ZeroMQ with per-stream sequence numbers, heartbeats and resync.

- ``protocol``: the wire format and default ports (PUB 5562, REP 5563)
- ``server``:   ``BridgeServer``, run by ``scripts/feed_bridge.py`` next to the producer
- ``client``:   ``BridgeClient``, a FeedSource reading a bridge (``source: bridge``)
- ``host``:     ``HostedBridge``, a FeedSource that runs and supervises a local bridge
                process (``source: profitdll``)
"""
