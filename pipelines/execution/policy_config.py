"""Configuration of the execution policy (:mod:`pipelines.execution.policy`): how a decision
becomes orders. Loaded under the ``execution`` section of the YAML beside the exchange's keys.

Why ``marketable_limit`` is the default style: a decision's edge is measured over a short
horizon (seconds), so an order that does not fill is a lost trade, and WDO and WIN usually
trade with a one-tick spread and depth at the touch, so a limit one tick through the touch
fills almost always at the touch. Unlike a market order its worst price is known (it cannot
walk a thin book), and being IOC it never rests at a price the market has left. ``passive``
earns the spread but fills mostly when the price moves against it and misses the moves the
decision was for; ``market`` pays whatever the visible depth asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.model.contracts import CALENDAR_B3, CALENDARS
from pipelines.model.settings import bounded, choices

MARKET_STYLE, MARKETABLE_LIMIT_STYLE, PASSIVE_STYLE = "market", "marketable_limit", "passive"
STYLES = (MARKET_STYLE, MARKETABLE_LIMIT_STYLE, PASSIVE_STYLE)
ON_TIMEOUT_CROSS, ON_TIMEOUT_CANCEL = "cross", "cancel"


@dataclass(frozen=True)
class PolicyConfig:
    # How entry orders are priced: market; a limit marketable_ticks through the touch (IOC);
    # or a limit at the own side's best price (DAY) that waits passive_timeout_s of event time.
    style: str = field(default=MARKETABLE_LIMIT_STYLE, metadata=choices(*STYLES))
    marketable_ticks: int = field(default=1, metadata=bounded(0, 100))
    passive_timeout_s: float = field(default=5.0, metadata=bounded(0.001, 86_400))
    on_timeout: str = field(default=ON_TIMEOUT_CROSS, metadata=choices(ON_TIMEOUT_CROSS, ON_TIMEOUT_CANCEL))
    # HOLD keeps the position (false) or targets flat (true).
    hold_flattens: bool = False
    # Stop-loss and take-profit around the position's average entry, in ticks (OCO, reduce-only).
    brackets: bool = False
    stop_loss_ticks: int = field(default=10, metadata=bounded(1, 100_000))
    stop_limit_offset_ticks: int = field(default=2, metadata=bounded(0, 1000))  # the stop's limit, beyond the trigger
    take_profit_ticks: int = field(default=20, metadata=bounded(1, 100_000))
    # Minutes before the session's close when working orders are cancelled and the position is
    # closed at market; from then on no new entries until the next session. 0 = never.
    flatten_before_close_min: float = field(default=5.0, metadata=bounded(0, 540))
    flatten_retry_s: float = field(default=5.0, metadata=bounded(0.01, 3600))  # if still open after a flatten
    # No new entries in the first opening_auction_min of the session (the opening auction's
    # uncross and its aftermath), nor within auction_quiet_s of an auction print.
    opening_auction_min: float = field(default=5.0, metadata=bounded(0, 540))
    auction_quiet_s: float = field(default=30.0, metadata=bounded(0, 3600))
    # b3: weekdays without B3 holidays (pipelines.model.contracts); weekdays: every weekday is a
    # session, for the simulator, which lays sessions out on weekdays with no holidays.
    calendar: str = field(default=CALENDAR_B3, metadata=choices(*CALENDARS))
    # How many decision, order and fill ids are remembered to refuse a repeat (a session of
    # one decision a second is ~32,400).
    remember_ids: int = field(default=50_000, metadata=bounded(1, 10_000_000))
