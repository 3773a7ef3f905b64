"""Configuration of this domain (the loader is :mod:`pipelines.config`). The simulated
exchange: how market orders treat what the visible book cannot fill, the queue model, the
price band, which symbols it trades beyond the known contracts, its latencies and its costs."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.execution.costs import CostsConfig
from pipelines.execution.policy_config import PolicyConfig
from pipelines.model.settings import INT32_MAX, INT64_MAX, bounded, choices

CONSTANT, LOGNORMAL, EMPIRICAL = "constant", "lognormal", "empirical"
CANCEL_REMAINDER, REST_REMAINDER = "cancel", "rest"
RISK_AVERSE, PROBABILISTIC = "risk_averse", "probabilistic"


@dataclass(frozen=True)
class LatencyConfig:
    """One leg's latency: ``constant`` (``ms``), ``lognormal`` (``median_ms`` and ``sigma``, the
    standard deviation of its logarithm) or ``empirical`` (``quantiles_ms``: equally spaced
    quantiles from the minimum to the maximum, interpolated linearly). Every draw is capped at
    ``max_ms``: a lognormal's tail is unbounded, a venue's time-out is not."""

    model: str = field(default=CONSTANT, metadata=choices(CONSTANT, LOGNORMAL, EMPIRICAL))
    ms: float = field(default=0.0, metadata=bounded(0, 60_000))
    median_ms: float = field(default=1.0, metadata=bounded(0, 60_000))
    sigma: float = field(default=0.5, metadata=bounded(0, 5))
    quantiles_ms: tuple[float, ...] = field(default=(0.5, 1.0, 2.0, 5.0), metadata=bounded(0, 60_000))
    max_ms: float = field(default=1000.0, metadata=bounded(0, 60_000))


@dataclass(frozen=True)
class ExchangeConfig:
    # A market order's part the visible depth cannot fill: "cancel" it (CANCELLED, no_liquidity),
    # or "rest" it as a limit at the last price it filled at (the touch if it filled nothing), as
    # B3 turns the remainder of a market order into a limit at its last execution price.
    market_remainder: str = field(default=CANCEL_REMAINDER, metadata=choices(CANCEL_REMAINDER, REST_REMAINDER))
    # "risk_averse": a resting order advances only on trades at its price; "probabilistic": a drop
    # of the displayed quantity not explained by trades also advances it, with probability
    # a^n / (a^n + b^n) (a: quantity ahead of it, b: behind it, n: cancel_power; n = 1 is the
    # share ahead).
    queue_model: str = field(default=RISK_AVERSE, metadata=choices(RISK_AVERSE, PROBABILISTIC))
    cancel_power: float = field(default=1.0, metadata=bounded(0, 10))
    # Orders priced farther than this from the last trade are rejected (price_band); market orders
    # walk the book only within it. 0 turns a band off; with both on, the narrower one holds.
    price_band_pct: float = field(default=2.0, metadata=bounded(0, 100))
    price_band_ticks: int = field(default=0, metadata=bounded(0, 1_000_000))
    # Symbols without a contract specification (pipelines.model.instruments) that the exchange
    # still trades, on this tick; any other unknown symbol is rejected (unknown_symbol).
    simulated_symbols: tuple[str, ...] = ()
    simulated_tick_size: float = field(default=0.5, metadata=bounded(1e-9, 1e9))
    # Client -> venue, venue -> client, and venue -> strategy for market data. The market-data
    # leg is for the driver that feeds the strategy (a backtest); in live paper trading the data
    # already arrives late, so it is 0 by default.
    entry_latency: LatencyConfig = field(default_factory=lambda: LatencyConfig(ms=5.0))
    ack_latency: LatencyConfig = field(default_factory=lambda: LatencyConfig(ms=5.0))
    market_data_latency: LatencyConfig = field(default_factory=LatencyConfig)
    seed: int = field(default=13, metadata=bounded(0, INT64_MAX))
    costs: CostsConfig = field(default_factory=CostsConfig)


SIMULATED, PROFITDLL = "simulated", "profitdll"


@dataclass(frozen=True)
class ProfitDLLVenueConfig:
    """The live venue (:mod:`pipelines.execution.profitdll_venue`): the DLL host's order endpoints
    (``scripts/feed_bridge.py --routing``) and the broker account it routes for. The routing
    password never appears here: it stays in the host's process."""

    orders: str = "tcp://127.0.0.1:5564"  # the host's command socket (ROUTER)
    updates: str = "tcp://127.0.0.1:5565"  # the host's order updates (PUB)
    broker_account: str | None = None  # BROKER:ACCOUNT[:SUB], as the host's --account; required for live trading
    token_env: str = "PROFIT_BRIDGE_TOKEN"  # the variable holding the host's shared token (a host off 127.0.0.1)
    request_timeout_s: float = field(default=2.0, metadata=bounded(0.05, 60))


@dataclass(frozen=True)
class ExecutionConfig:
    """One account's execution (:class:`pipelines.execution.engine.ExecutionEngine`): how its
    decisions become orders (``policy``) and the venue they are sent to (``exchange``: the
    simulated one, for paper trading and backtests)."""

    # False: no execution actor; the coordinators' decisions are published and stored, nothing is traded.
    enabled: bool = True
    account: str = "paper"  # the account's name, one Valkey key part (hmarl:position:<account>:<SYM>)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # Where orders go: the simulated exchange (paper trading, the default) or the broker through
    # ProfitDLL, which also needs --live (or --shadow) on the launcher's command line.
    venue: str = field(default=SIMULATED, metadata=choices(SIMULATED, PROFITDLL))
    exchange: ExchangeConfig = field(default_factory=ExchangeConfig)
    profitdll: ProfitDLLVenueConfig = field(default_factory=ProfitDLLVenueConfig)
    # Valkey expiry of hmarl:order:<id> (orders outlive their session, for restarts and reports)
    # and of hmarl:position:<account>:<SYM> (null: kept, it is the account's state).
    ttl_order_s: int = field(default=7 * 86_400, metadata=bounded(1, INT32_MAX))
    ttl_position_s: int | None = field(default=None, metadata=bounded(1, INT32_MAX))
    # Market events the execution actor holds while it waits for the coordinators' decisions on
    # them (so fills do not depend on timing); past this, the oldest go on without them. It must
    # cover how far the rounds may lag the feed: the feed's resend window plus a few rounds.
    max_held_events: int = field(default=100_000, metadata=bounded(1, 10_000_000))
