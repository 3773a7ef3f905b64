"""Feature engine: incremental event-time features, order-flow analytics, footprint and liquidity."""
