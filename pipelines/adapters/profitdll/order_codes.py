"""ProfitDLL order status and trading-message result codes, named and mapped to our order lifecycle.

``TConnectorOrderStatus`` (docs §4.3; the order callback's ``GetOrderDetails`` and the
enumeration's ``OrderStatus``) is a FIX-like status; our lifecycle
(:mod:`pipelines.model.orders`) is coarser: SUBMITTED -> ACCEPTED -> PARTIALLY_FILLED* ->
FILLED | CANCELLED | EXPIRED, or SUBMITTED -> REJECTED. :data:`STATUS_LIFECYCLE` maps every
documented code to one of them or to one of two markers:

- :data:`KEEP` (6 PendingCancel, 14 PendingReplace, 9 Suspended, 11 Calculated): a request is
  under way or the order is parked; the order is still what it was, so its status stays. A
  pending cancel that is then refused leaves the order exactly as it was, which a move to
  CANCELLED now could not undo.
- :data:`UNKNOWN` (200 Unknown, and every code the manual does not list): counted in
  :data:`unknown_status_codes` and never moves an order: guessing could turn a live order into
  a dead one in our books while it still trades at the exchange.

:func:`lifecycle_status` applies the map to an order's current status with the rules a stream
of DLL callbacks needs: a terminal order never moves again; a late "sent"/"received" echo
(SUBMITTED codes) never takes an accepted order back; New/Replaced on an order that has already
traded is PARTIALLY_FILLED (a change keeps the fills).

``TConnectorTradingMessageResultCode`` reports what happened to each message sent to the trading
server (``SetTradingMessageResultCallback``). :data:`REJECTION_RESULTS` (3 RejectedMercury,
5 RejectedHades, 7 RejectedBroker, 9 RejectedMarket, 24 BlockedByRisk) are refusals. A
production user of the DLL (docs, FIN notes) *retries* on 1/3/5/7/9/24 because its 204 "client
not logged" rejections came from broker sub-session blips; we do not: for us a rejection is
final, reported with the DLL's text, and a new order is a new decision (a blind retry of an
order the broker refused for margin or price would only be refused again, and a retry of one
that did reach the market could double it). :data:`FIN_RETRYABLE_RESULTS` keeps their list for
reference only.

Names are the manual's enum names without the ``cos``/``mrc`` prefix. The DLL's own text (the
order's ``TextMessage``, the result's ``Message``) is carried unchanged by the binding; nothing
here rewrites it.
"""

from __future__ import annotations

from collections import Counter

from pipelines.model.orders import (
    ACCEPTED,
    CANCELLED,
    EXPIRED,
    FILLED,
    PARTIALLY_FILLED,
    REJECTED,
    SUBMITTED,
    TERMINAL,
)

KEEP = "KEEP"  # the code leaves the order's status as it is
UNKNOWN = "UNKNOWN"  # not a code we can place: counted, never moves an order

# -- TConnectorOrderStatus (manual 4.0.0.42, docs §4.3) -----------------------------------------

ORDER_STATUS_NAMES: dict[int, str] = {
    0: "New",
    1: "PartiallyFilled",
    2: "Filled",
    3: "DoneForDay",
    4: "Canceled",
    5: "Replaced",
    6: "PendingCancel",
    7: "Stopped",
    8: "Rejected",
    9: "Suspended",
    10: "PendingNew",
    11: "Calculated",
    12: "Expired",
    13: "AcceptedForBidding",
    14: "PendingReplace",
    15: "PartiallyFilledCanceled",
    16: "Received",
    17: "PartiallyFilledExpired",
    18: "PartiallyFilledRejected",
    200: "Unknown",
    201: "HadesCreated",
    202: "BrokerSent",
    203: "ClientCreated",
    204: "OrderNotCreated",
    205: "CanceledByAdmin",
    206: "DelayFixGateway",
    207: "ScheduledOrder",
}

STATUS_LIFECYCLE: dict[int, str] = {
    # Not yet accepted by the exchange: created locally, on the way, held by the platform.
    10: SUBMITTED,  # PendingNew
    16: SUBMITTED,  # Received
    201: SUBMITTED,  # HadesCreated (Nelogica's routing layer)
    202: SUBMITTED,  # BrokerSent
    203: SUBMITTED,  # ClientCreated
    206: SUBMITTED,  # DelayFixGateway: held at the FIX gateway, not at the exchange yet
    207: SUBMITTED,  # ScheduledOrder: held by the platform until its time
    # Working at the exchange.
    0: ACCEPTED,  # New
    5: ACCEPTED,  # Replaced: working with the changed price/quantity
    7: ACCEPTED,  # Stopped: FIX "guaranteed a price", still live
    13: ACCEPTED,  # AcceptedForBidding (auction)
    1: PARTIALLY_FILLED,
    2: FILLED,
    # Ended without (all of) the quantity filled.
    4: CANCELLED,  # Canceled
    15: CANCELLED,  # PartiallyFilledCanceled
    205: CANCELLED,  # CanceledByAdmin
    8: REJECTED,  # Rejected
    18: REJECTED,  # PartiallyFilledRejected
    204: REJECTED,  # OrderNotCreated
    3: EXPIRED,  # DoneForDay
    12: EXPIRED,  # Expired
    17: EXPIRED,  # PartiallyFilledExpired
    # The order is what it was while a request is pending or it is parked.
    6: KEEP,  # PendingCancel
    14: KEEP,  # PendingReplace
    9: KEEP,  # Suspended
    11: KEEP,  # Calculated
    200: UNKNOWN,  # Unknown (the DLL's own "don't know")
}
assert set(STATUS_LIFECYCLE) == set(ORDER_STATUS_NAMES)

# Codes seen that could not be placed (UNKNOWN), by code: never reset, read by stats/tests.
unknown_status_codes: Counter[int] = Counter()


def order_status_name(code: int) -> str:
    """``'Filled'`` for 2; ``'Undocumented(99)'`` for a code the manual does not list."""
    return ORDER_STATUS_NAMES.get(code, f"Undocumented({code})")


def classify_status(code: int) -> str:
    """The lifecycle status a DLL code means on its own, or :data:`KEEP` / :data:`UNKNOWN`."""
    return STATUS_LIFECYCLE.get(code, UNKNOWN)


def lifecycle_status(code: int, current: str | None = None, traded_qty: int = 0) -> str:
    """The order's lifecycle status after a DLL status ``code``, given its ``current`` status
    (None: we knew nothing of it yet) and the quantity it has traded so far.

    Rules (module docstring): terminal stays terminal; KEEP and UNKNOWN keep ``current``
    (SUBMITTED for an order we knew nothing of; UNKNOWN is counted); a SUBMITTED code never
    takes an ACCEPTED / PARTIALLY_FILLED order back; ACCEPTED with ``traded_qty > 0`` is
    PARTIALLY_FILLED.
    """
    if current in TERMINAL:
        return current
    mapped = STATUS_LIFECYCLE.get(code, UNKNOWN)
    if mapped == UNKNOWN:
        unknown_status_codes[code] += 1
        return current or SUBMITTED
    if mapped == KEEP:
        return current or SUBMITTED
    if mapped == SUBMITTED and current in (ACCEPTED, PARTIALLY_FILLED):
        return current
    if mapped == ACCEPTED and traded_qty > 0:
        return PARTIALLY_FILLED
    return mapped


# -- TConnectorTradingMessageResultCode (manual 4.0.0.42) ----------------------------------------

MESSAGE_RESULT_NAMES: dict[int, str] = {
    0: "Starting",
    1: "NotConnected",
    2: "SentToHadesProxy",
    3: "RejectedMercury",
    4: "SentToHades",
    5: "RejectedHades",
    6: "SentToBroker",
    7: "RejectedBroker",
    8: "SentToMarket",
    9: "RejectedMarket",
    10: "Accepted",
    11: "MarginTypeChangeRejected",
    12: "PositionModeChangeRejected",
    13: "NeedUpdateFromServer",
    17: "SentToWallet",
    24: "BlockedByRisk",
    50: "SubAccount",
    51: "SubAccountPlan",
    52: "SubAccountResetLimit",
    53: "SubAccountBrokerage",
    54: "SubAccountBrokeragePrefix",
    55: "SubAccountGroup",
    56: "SubAccountGroupInsertion",
    60: "RiskGroup",
    61: "RiskPrefix",
    62: "RiskAccount",
    63: "ResetPasswordResult",
    70: "FinEditTradeResultSuccess",
    71: "FinTradeResultError",
    74: "SubAccountPrefixSuccess",
    75: "SubAccountPrefixError",
    76: "FinancialLossSuccess",
    77: "InvalidData",
    78: "InvalidWalletTransfer",
    79: "SubAccountAssetsUpdateSuccess",
    80: "SubAccountAssetsUpdateError",
    200: "Unknown",
}

MESSAGE_ACCEPTED = 10
MESSAGE_NOT_CONNECTED = 1
# Refusals of an order message, final for us (module docstring).
REJECTION_RESULTS = frozenset({3, 5, 7, 9, 24})
# What FIN retries (docs §4.3 field notes); reference only, we never retry a refusal.
FIN_RETRYABLE_RESULTS = frozenset({1, 3, 5, 7, 9, 24})
# Steps on the way (the message travels): neither an answer nor a refusal.
IN_FLIGHT_RESULTS = frozenset({0, 2, 4, 6, 8, 17})


def message_result_name(code: int) -> str:
    """``'RejectedBroker'`` for 7; ``'Undocumented(99)'`` for a code the manual does not list."""
    return MESSAGE_RESULT_NAMES.get(code, f"Undocumented({code})")


def is_rejection(code: int) -> bool:
    """A final refusal of the message (3, 5, 7, 9, 24)."""
    return code in REJECTION_RESULTS
