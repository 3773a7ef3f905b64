"""Configuration of this domain (the loader is :mod:`pipelines.config`): the risk engine's limits.

Defaults suit one retail account trading WDO and WIN minis (a few contracts, a day's loss
of about R$1,000). Money is R$; times are event time. A limit set to 0 is off where its
comment says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.model.contracts import CALENDAR_B3, CALENDARS
from pipelines.model.settings import ACCOUNT_RE, INT32_MAX, bounded, choices

# Account names become Valkey key parts (hmarl:risk:<account>): no separators, and not the
# name of the other key directly under hmarl:risk: (the events stream).
RESERVED_ACCOUNTS = frozenset({"stream"})


def account_problem(account: object) -> str | None:
    """Why ``account`` cannot name an account, or None."""
    if not isinstance(account, str) or not ACCOUNT_RE.match(account):
        return f"expected 1-32 letters, digits, '_' or '-', got {account!r}"
    if account in RESERVED_ACCOUNTS:
        return f"{account!r} is reserved (it names another key under hmarl:risk:)"
    return None


@dataclass(frozen=True)
class RiskConfig:
    # False: no pre-trade checks and no account limits; the manual kill switch still works.
    enabled: bool = True
    account: str = "paper"  # the account this engine guards (one engine per account)

    # -- pre-trade ------------------------------------------------------------------------
    # Contracts either side after the order and the account's other working orders fill.
    max_position: int = field(default=5, metadata=bounded(0, 100_000))  # per symbol
    max_total_position: int = field(default=10, metadata=bounded(0, 1_000_000))  # sum over symbols
    max_order_qty: int = field(default=5, metadata=bounded(1, 100_000))
    # R$ per order: quantity x price x point value (5 WDO at 6,000 points = R$300,000). 0 = off.
    max_notional: float = field(default=300_000.0, metadata=bounded(0, None))
    # Per second of event time, sliding window; only orders the engine let through count.
    max_orders_per_s: int = field(default=10, metadata=bounded(1, INT32_MAX))
    max_cancels_per_s: int = field(default=20, metadata=bounded(1, INT32_MAX))  # modifies and cancels
    # Limit and stop prices within this % of the symbol's last trade. 0 = off.
    price_band_pct: float = field(default=1.0, metadata=bounded(0, 100))
    # No new entries when the symbol has not traded for this long. 0 = off.
    stale_after_s: float = field(default=10.0, metadata=bounded(0, 86_400))
    session_hours: bool = True  # no new entries outside the session
    # b3: weekdays that are not B3 holidays (pipelines/model/contracts.py); weekdays: every
    # weekday, for simulated sessions laid out on any date.
    calendar: str = field(default=CALENDAR_B3, metadata=choices(*CALENDARS))

    # -- account limits (re-evaluated on every mark and fill) ----------------------------
    # Day P&L net of fees, realized + unrealized: at -max_daily_loss x reducing_at only
    # reducing orders pass; at -max_daily_loss the account halts and flattens. 0 = off.
    max_daily_loss: float = field(default=1000.0, metadata=bounded(0, None))
    reducing_at: float = field(default=0.8, metadata=bounded(0.01, 1))
    # Fall of the day's net P&L from its intraday peak (at least 0) that halts and flattens.
    # Above max_daily_loss, so it binds after a gain, not from the open. 0 = off.
    max_drawdown: float = field(default=1500.0, metadata=bounded(0, None))
    # This many losing round trips in a row: no new entries for cooldown_min. 0 = off.
    max_consecutive_losses: int = field(default=3, metadata=bounded(0, 1000))
    cooldown_min: float = field(default=30.0, metadata=bounded(0, 1440))

    max_events: int = field(default=1000, metadata=bounded(1, 1_000_000))  # kept for the caller to drain
    ctl_wait_s: float = field(default=5.0, metadata=bounded(0.1, 3600))  # ctl.py waits this long for the ack

