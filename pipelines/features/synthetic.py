"""A seeded synthetic trade tape for tests and benchmarks (not a market model)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.model.clock import (
    NS_PER_MS,
    NS_PER_S,
    SAO_PAULO,
    SESSION_CLOSE_S,
    SESSION_OPEN_S,
    next_session_day,
    parse_time,
    session_bounds_ns,
    to_ns,
)


def make_synthetic_trades(n: int, seed: int = 7, start: str = "2026-03-02T09:00:00-03:00",
                          mean_gap_ms: float = 20.0, symbol: str = "WDOJ26") -> pd.DataFrame:
    """A seeded WDO-like tape for tests and benchmarks (not a market model).

    Prices on a 0.5 grid near 5400 (random walk, mostly unchanged), sizes 1-300
    heavy-tailed, types 2/3 with ~1% auction (4) and ~0.5% cross (1) prints,
    ~60 broker ids with skewed popularity and ~2% unknown (0), exponential gaps
    rounded to the millisecond (so some trades share a timestamp). Trading
    stops at 18:00 Sao Paulo and resumes at 09:00 on the next weekday.
    """
    rng = np.random.default_rng(seed)
    steps = rng.choice([-2, -1, 0, 1, 2], size=n, p=[0.01, 0.14, 0.70, 0.14, 0.01])
    steps[0] = 0
    price = 5400.0 + 0.5 * np.cumsum(steps)
    qty = np.minimum(300, np.floor(rng.pareto(1.3, size=n) * 3.0).astype(np.int64) + 1)
    ttype = rng.choice([2, 3, 4, 1], size=n, p=[0.495, 0.49, 0.01, 0.005])
    popularity = 1.0 / np.arange(1, 61) ** 1.1
    popularity /= popularity.sum()
    buyer = rng.choice(np.arange(1, 61), size=n, p=popularity) * 3 + 1  # sparse ids like B3 codes
    seller = rng.choice(np.arange(1, 61), size=n, p=popularity) * 3 + 1
    buyer[rng.random(n) < 0.02] = 0
    seller[rng.random(n) < 0.02] = 0
    gaps = np.rint(rng.exponential(mean_gap_ms, size=n)).astype(np.int64) * NS_PER_MS
    gaps[0] = 0
    # session time (ns since the first trade), laid onto 09:00-18:00 of consecutive weekdays
    session_ns = (SESSION_CLOSE_S - SESSION_OPEN_S) * NS_PER_S
    first = parse_time(start)
    offset0 = to_ns(first) - session_bounds_ns(first.astimezone(SAO_PAULO).date())[0]
    day_k, within = np.divmod(np.cumsum(gaps) + offset0, session_ns)
    opens = []
    day = first.astimezone(SAO_PAULO).date()
    for _ in range(int(day_k[-1]) + 1 if n else 0):
        opens.append(session_bounds_ns(day)[0])
        day = next_session_day(day)
    ts = np.asarray(opens, dtype=np.int64)[day_k] + within if n else np.zeros(0, dtype=np.int64)
    return pd.DataFrame({
        "symbol": symbol, "ts_event": ts, "ts_recv": ts, "seq": np.arange(1, n + 1), "price": price,
        "qty": qty, "trade_type": ttype, "buyer": buyer, "seller": seller, "trade_id": np.arange(1, n + 1),
    })
