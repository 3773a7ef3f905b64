"""How every domain declares its frozen config: field bounds and choices that
:mod:`pipelines.config` checks when it loads YAML (a value out of range is an error naming its key)."""

from __future__ import annotations

import re
from typing import Any

INT64_MAX = 2**63 - 1  # the implicit upper bound of every integer key (Valkey, numpy and Ray take int64)
INT32_MAX = 2**31 - 1  # ZeroMQ socket options are C ints; Valkey TTLs in seconds stay far from overflow
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,12}$")  # a contract code like WDOZ26, or an alias like WDOFUT
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # an account name is one Valkey key part: no ':' or spaces


def bounded(lo: float | None = None, hi: float | None = None, **extra: Any) -> dict:
    """Field metadata: the value must lie in [lo, hi] (None: unbounded on that side)."""
    return {"lo": lo, "hi": hi, **extra}


def choices(*values: str) -> dict:
    """Field metadata: the value must be one of ``values``."""
    return {"choices": values}
