"""The default risk check (pipelines/risk/limits.py) on its own: sizes and reasons worked out by hand."""

from __future__ import annotations

import pytest

from pipelines.model.messages import Decision
from pipelines.portfolio.interfaces import AccountView
from pipelines.risk.limits import PositionAndLossLimits, RiskLimits


def proposal(action: str, size: int) -> Decision:
    return Decision("WDOZ26-1", "WDOZ26", 0, 1, action, size, 0.5, 0.5, 5400.0, 10, (), {}, {})


def account(position: int, realized: float = 0.0) -> AccountView:
    return AccountView(position, 5400.0 if position else 0.0, realized)


check = PositionAndLossLimits(RiskLimits(max_position=5, max_loss=100.0))


@pytest.mark.parametrize("action, size, position, want", [
    ("BUY", 2, 0, (2, "")),  # room 5
    ("BUY", 2, 3, (2, "")),  # room 2: exactly fits
    ("BUY", 3, 3, (2, "position limit: size 3 -> 2 (position +3, max 5)")),
    ("BUY", 1, 5, (0, "position limit: position +5, max 5")),
    ("SELL", 3, -4, (1, "position limit: size 3 -> 1 (position -4, max 5)")),
    ("SELL", 3, 5, (3, "")),  # reducing a long: room 5 + 5 = 10
    ("SELL", 10, 5, (10, "")),  # flips to -5: still within the limit
])
def test_position_limit(action, size, position, want):
    assert check(proposal(action, size), account(position)) == want


@pytest.mark.parametrize("action, size, position, realized, want", [
    ("BUY", 1, 0, -100.0, (0, "loss limit: realized -100.00 <= -100.00, only reducing trades")),  # at the limit
    ("BUY", 1, 2, -150.0, (0, "loss limit: realized -150.00 <= -100.00, only reducing trades")),
    ("SELL", 1, 2, -150.0, (1, "")),  # reducing passes
    ("SELL", 3, 2, -150.0, (2, "loss limit: size 3 -> 2, reduce only")),  # no flip
    ("BUY", 2, -1, -150.0, (1, "loss limit: size 2 -> 1, reduce only")),
    ("BUY", 2, 0, -99.99, (2, "")),  # not yet at the limit
])
def test_loss_limit(action, size, position, realized, want):
    assert check(proposal(action, size), account(position, realized)) == want


def test_limits_validated():
    assert RiskLimits() == RiskLimits(max_position=5, max_loss=2000.0) == PositionAndLossLimits().limits
    with pytest.raises(ValueError, match="max_position"):
        RiskLimits(max_position=-1)
    with pytest.raises(ValueError, match="max_loss"):
        RiskLimits(max_loss=float("nan"))
