"""ProfitDLL result codes (``NResult``) as named exceptions.

Every NL_* code the DLL documents has its own subclass of :class:`ProfitDLLError`, carrying the
code, its hex form and the function that returned it, so callers can write
``except InvalidTickerError`` instead of comparing magic numbers.

ProfitDLL functions return ``Integer``; declared with ``restype=c_int`` an error comes back
negative (0x80000003 reads as -2147483645). Functions returning ``Int64`` (``SendOrder``...) give
a positive id or the same negative code. :func:`check` accepts both forms, and the unsigned form
too, and passes non-negative results (counts, ids) through.

The module also holds the binding's own failures that are not NL codes: the DLL could not be
loaded, the login was rejected, the connection never became ready, a second initialization in one
process. Messages name functions, states and paths; never credential values.
"""

from __future__ import annotations

NL_OK = 0


class ProfitDLLError(Exception):
    """A ProfitDLL call failed. ``code`` is the unsigned NResult (None when the failure is not an NL code)."""

    nl_name: str | None = None
    meaning: str = ""

    def __init__(self, message: str, code: int | None = None, func: str | None = None):
        super().__init__(message)
        self.code = code
        self.func = func

    @property
    def hex(self) -> str | None:
        return None if self.code is None else f"0x{self.code:08X}"


# -- one class per NL code (docs §5.1) --------------------------------------------------------


class InternalError(ProfitDLLError):
    nl_name, meaning = "NL_INTERNAL_ERROR", "internal error"


class NotInitializedError(ProfitDLLError):
    nl_name, meaning = "NL_NOT_INITIALIZED", "not initialized"


class InvalidArgsError(ProfitDLLError):
    nl_name, meaning = "NL_INVALID_ARGS", "invalid arguments"


class WaitingServerError(ProfitDLLError):
    nl_name, meaning = "NL_WAITING_SERVER", "request sent; retry later or wait for the callback"


class NoLoginError(ProfitDLLError):
    nl_name, meaning = "NL_NO_LOGIN", "no login"


class NoLicenseError(ProfitDLLError):
    nl_name, meaning = "NL_NO_LICENSE", "no licence"


class PasswordHashSha1Error(ProfitDLLError):
    nl_name, meaning = "NL_PASSWORD_HASH_SHA1", "password is not SHA1"


class PasswordHashMd5Error(ProfitDLLError):
    nl_name, meaning = "NL_PASSWORD_HASH_MD5", "password is not MD5"


class OutOfRangeError(ProfitDLLError):
    nl_name, meaning = "NL_OUT_OF_RANGE", "out of range"


class MarketOnlyError(ProfitDLLError):
    nl_name, meaning = "NL_MARKET_ONLY", "licence has no routing"


class NoPositionError(ProfitDLLError):
    nl_name, meaning = "NL_NO_POSITION", "no position"


class NotFoundError(ProfitDLLError):
    nl_name, meaning = "NL_NOT_FOUND", "not found"


class VersionNotSupportedError(ProfitDLLError):
    nl_name, meaning = "NL_VERSION_NOT_SUPPORTED", "struct version not supported"


class OcoNoRulesError(ProfitDLLError):
    nl_name, meaning = "NL_OCO_NO_RULES", "OCO has no rules"


class ExchangeUnknownError(ProfitDLLError):
    nl_name, meaning = "NL_EXCHANGE_UNKNOWN", "unknown exchange"


class NoOcoDefinedError(ProfitDLLError):
    nl_name, meaning = "NL_NO_OCO_DEFINED", "no OCO defined"


class InvalidSerieError(ProfitDLLError):
    nl_name, meaning = "NL_INVALID_SERIE", "invalid series"


class LicenseNotAllowedError(ProfitDLLError):
    nl_name, meaning = "NL_LICENSE_NOT_ALLOWED", "not allowed by the licence"


class NotHardLogoutError(ProfitDLLError):
    nl_name, meaning = "NL_NOT_HARD_LOGOUT", "not in a hard-logout state"


class SerieNoHistoryError(ProfitDLLError):
    nl_name, meaning = "NL_SERIE_NO_HISTORY", "series has no history"


class AssetNoDataError(ProfitDLLError):
    nl_name, meaning = "NL_ASSET_NO_DATA", "asset has no data"


class SerieNoDataError(ProfitDLLError):
    nl_name, meaning = "NL_SERIE_NO_DATA", "series has no data"


class HasStrategyRunningError(ProfitDLLError):
    nl_name, meaning = "NL_HAS_STRATEGY_RUNNING", "a strategy is running"


class SerieNoMoreHistoryError(ProfitDLLError):
    nl_name, meaning = "NL_SERIE_NO_MORE_HISTORY", "no more history"


class SerieMaxCountError(ProfitDLLError):
    nl_name, meaning = "NL_SERIE_MAX_COUNT", "series at its data limit"


class DuplicateResourceError(ProfitDLLError):
    nl_name, meaning = "NL_DUPLICATE_RESOURCE", "duplicate resource"


class UnsignedContractError(ProfitDLLError):
    nl_name, meaning = "NL_UNSIGNED_CONTRACT", "unsigned contract"


class NoPasswordError(ProfitDLLError):
    nl_name, meaning = "NL_NO_PASSWORD", "no password"


class NoUserError(ProfitDLLError):
    nl_name, meaning = "NL_NO_USER", "no user"


class FileAlreadyExistsError(ProfitDLLError):
    nl_name, meaning = "NL_FILE_ALREADY_EXISTS", "file already exists"


class InvalidTickerError(ProfitDLLError):
    nl_name, meaning = "NL_INVALID_TICKER", "invalid ticker"


class NotMasterAccountError(ProfitDLLError):
    nl_name, meaning = "NL_NOT_MASTER_ACCOUNT", "not a master account"


class HistoryPeriodLimitError(ProfitDLLError):
    nl_name, meaning = "NL_HISTORY_PERIOD_LIMIT", "history start older than 30 days"


NL_ERRORS: dict[int, type[ProfitDLLError]] = {
    0x80000001: InternalError,
    0x80000002: NotInitializedError,
    0x80000003: InvalidArgsError,
    0x80000004: WaitingServerError,
    0x80000005: NoLoginError,
    0x80000006: NoLicenseError,
    0x80000007: PasswordHashSha1Error,
    0x80000008: PasswordHashMd5Error,
    0x80000009: OutOfRangeError,
    0x8000000A: MarketOnlyError,
    0x8000000B: NoPositionError,
    0x8000000C: NotFoundError,
    0x8000000D: VersionNotSupportedError,
    0x8000000E: OcoNoRulesError,
    0x8000000F: ExchangeUnknownError,
    0x80000010: NoOcoDefinedError,
    0x80000011: InvalidSerieError,
    0x80000012: LicenseNotAllowedError,
    0x80000013: NotHardLogoutError,
    0x80000014: SerieNoHistoryError,
    0x80000015: AssetNoDataError,
    0x80000016: SerieNoDataError,
    0x80000017: HasStrategyRunningError,
    0x80000018: SerieNoMoreHistoryError,
    0x80000019: SerieMaxCountError,
    0x8000001A: DuplicateResourceError,
    0x8000001B: UnsignedContractError,
    0x8000001C: NoPasswordError,
    0x8000001D: NoUserError,
    0x8000001E: FileAlreadyExistsError,
    0x8000001F: InvalidTickerError,
    0x80000020: NotMasterAccountError,
    0x8000002E: HistoryPeriodLimitError,
}


def is_error(result: int) -> bool:
    """True for an NResult error in either its signed (negative) or unsigned 32-bit form."""
    return result < 0 or 0x80000000 <= result <= 0xFFFFFFFF


def error_for(result: int, func: str) -> ProfitDLLError:
    """The exception for an error result of ``func`` (signed, unsigned or sign-extended Int64)."""
    code = result & 0xFFFFFFFF
    signed = code - (1 << 32) if code & 0x80000000 else code
    cls = NL_ERRORS.get(code)
    if cls is None:
        return ProfitDLLError(f"{func} failed: unknown ProfitDLL result 0x{code:08X} ({signed})", code, func)
    return cls(f"{func} failed: {cls.nl_name} (0x{code:08X}, {signed}): {cls.meaning}", code, func)


def check(result: int, func: str) -> int:
    """``result`` when it is NL_OK or a non-negative count/id; raises the named exception otherwise."""
    if is_error(result):
        raise error_for(result, func)
    return result


# -- failures of the binding itself (not NL codes) ----------------------------------------------


class ProfitDLLLoadError(ProfitDLLError):
    """The DLL file was not given, not found, or could not be loaded."""


class AlreadyInitializedError(ProfitDLLError):
    """A second DLLInitialize* in one process: ProfitDLL allows one login per process."""


class ProfitLoginError(ProfitDLLError):
    """The server rejected the login or the activation key (state callback, not a return code)."""

    def __init__(self, message: str, state_type: int, result: int):
        super().__init__(message)
        self.state_type = state_type
        self.result = result


class ProfitNotReady(ProfitDLLError):
    """The four connection states did not all become valid within the timeout."""

    def __init__(self, message: str, missing: tuple[str, ...]):
        super().__init__(message)
        self.missing = missing


class HistoryTimeoutError(ProfitDLLError):
    """A GetHistoryTrades request did not complete in time (the DLL has no cancel call)."""
