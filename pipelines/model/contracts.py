"""B3 trading calendar and futures contract codes: resolve ``WDOFUT`` / ``WINFUT`` to ``WDOZ26`` etc.

Local dates and the session hours come from :mod:`pipelines.model.clock`; this module
adds the days B3 is closed and the contracts' expiries on top of them.

Calendar (B3 derivatives segment, the days with no trading session)
------------------------------------------------------------------
Since 2022 B3 closes only on **national** holidays plus its own two
year-end days; Sao Paulo's city and state holidays (Jan 25 city anniversary,
Jul 9 Constitutionalist Revolution) are normal trading days (B3 notice of
2020-11-18, applied from the 2022 calendar). The non-trading days are:

- fixed national holidays: Jan 1, Apr 21, May 1, Sep 7, Oct 12, Nov 2, Nov 15,
  Dec 25, and Nov 20 (Black Consciousness Day, national by Law 14.759/2023,
  so only **from 2024**; in 2022-2023 B3 traded on it as a city holiday);
- Easter-based: Carnival Monday and Tuesday (Easter - 48 / - 47 days), Good
  Friday (Easter - 2), Corpus Christi (Easter + 60). Ash Wednesday (Easter -
  46) **is** a trading day with a late open (derivatives pre-open 12:55, trading
  from 13:00): see ``ash_wednesday``;
- Dec 24 when a weekday (no substitute when it falls on a weekend);
- the **last weekday of the year**: Dec 31, or the Friday before when Dec 31
  falls on a weekend (2022: Fri Dec 30; 2023: Fri Dec 29), banks' year-end
  closing.

``PUBLISHED_HOLIDAYS`` holds the weekday non-trading days of each year whose
calendar B3 has published (2022-2026, as reported when B3 announced them; 2024
includes Nov 20, which B3 closed after the law made it national).
``b3_holidays`` returns that table for those years and the rule above for the
others in ``SUPPORTED_YEARS`` (a projection: check B3's calendar when it is
announced, usually in November/December of the year before, and add it to the
table). The tests check that the rule reproduces every published year. Years
outside ``SUPPORTED_YEARS`` raise ``CalendarError`` rather than guess.

Contracts
---------
Month letters F G H J K M N Q U V X Z (Jan..Dec); code = root + letter + two
year digits (``WDOZ26``).

- **WDO / DOL** (US dollar futures, every month): expiry ("data de
  vencimento") is the **first business day of the contract month**; the
  last trading day is the session before it, i.e. the **last business day of
  the previous month** (B3 contract specification). WDOF26 expires
  2026-01-02 (Jan 1 is a holiday) and last trades on 2025-12-30 (Dec 31 is
  closed).
- **WIN / IND** (Ibovespa futures, even months G J M Q V Z): expiry is the
  **Wednesday closest to the 15th** of the contract month (so a day from the
  12th to the 18th); when that day has no session, the next business day.
  The last trading day is the expiry day itself.

``resolve_symbol("WDOFUT", on=d)`` returns the front contract on Sao Paulo
date ``d``: the first contract whose last trading day is on or after ``d``.
On a non-trading day that is the contract that trades on the next session.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import NamedTuple

from pipelines.model.clock import SAO_PAULO, sao_paulo_date, session_bounds_ns, to_ns


class CalendarError(ValueError):
    """A date outside the years this calendar knows."""


class ContractError(ValueError):
    """A contract code or continuous symbol that cannot be parsed or resolved."""


SUPPORTED_YEARS = range(2022, 2031)  # 2022: first year of B3's national-holidays-only calendar
NOV20_NATIONAL_FROM = 2024

MONTH_LETTERS = "FGHJKMNQUVXZ"  # index 0 = January
LETTER_MONTH = {letter: i + 1 for i, letter in enumerate(MONTH_LETTERS)}

_D = date
PUBLISHED_HOLIDAYS: dict[int, frozenset[date]] = {
    2022: frozenset({
        _D(2022, 2, 28), _D(2022, 3, 1),  # Carnival
        _D(2022, 4, 15), _D(2022, 4, 21), _D(2022, 6, 16),  # Good Friday, Tiradentes, Corpus Christi
        _D(2022, 9, 7), _D(2022, 10, 12), _D(2022, 11, 2), _D(2022, 11, 15),
        _D(2022, 12, 30),  # last weekday of the year (Dec 31 is a Saturday)
    }),
    2023: frozenset({
        _D(2023, 2, 20), _D(2023, 2, 21),
        _D(2023, 4, 7), _D(2023, 4, 21), _D(2023, 5, 1), _D(2023, 6, 8),
        _D(2023, 9, 7), _D(2023, 10, 12), _D(2023, 11, 2), _D(2023, 11, 15),
        _D(2023, 12, 25), _D(2023, 12, 29),  # Dec 31 is a Sunday
    }),
    2024: frozenset({
        _D(2024, 1, 1), _D(2024, 2, 12), _D(2024, 2, 13),
        _D(2024, 3, 29), _D(2024, 5, 1), _D(2024, 5, 30),
        _D(2024, 11, 15), _D(2024, 11, 20),
        _D(2024, 12, 24), _D(2024, 12, 25), _D(2024, 12, 31),
    }),
    2025: frozenset({
        _D(2025, 1, 1), _D(2025, 3, 3), _D(2025, 3, 4),
        _D(2025, 4, 18), _D(2025, 4, 21), _D(2025, 5, 1), _D(2025, 6, 19),
        _D(2025, 11, 20),
        _D(2025, 12, 24), _D(2025, 12, 25), _D(2025, 12, 31),
    }),
    2026: frozenset({
        _D(2026, 1, 1), _D(2026, 2, 16), _D(2026, 2, 17),
        _D(2026, 4, 3), _D(2026, 4, 21), _D(2026, 5, 1), _D(2026, 6, 4),
        _D(2026, 9, 7), _D(2026, 10, 12), _D(2026, 11, 2), _D(2026, 11, 20),
        _D(2026, 12, 24), _D(2026, 12, 25), _D(2026, 12, 31),
    }),
}


# -- calendar ------------------------------------------------------------------


def easter_sunday(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian / Meeus-Jones-Butcher algorithm)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7  # noqa: E741 (the algorithm's name)
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return date(year, month, day + 1)


def ash_wednesday(year: int) -> date:
    """Ash Wednesday: a B3 trading day that opens late (13:00), not a holiday."""
    return easter_sunday(year) - timedelta(days=46)


def _check_year(year: int) -> None:
    if year not in SUPPORTED_YEARS:
        raise CalendarError(
            f"B3 calendar not known for {year}: supported years are "
            f"{SUPPORTED_YEARS.start}-{SUPPORTED_YEARS.stop - 1} (pipelines/model/contracts.py)"
        )


def holidays_by_rule(year: int) -> frozenset[date]:
    """The weekday non-trading days of ``year`` by the rule in the module docstring: the projection
    for years whose calendar B3 has not published (the tests hold it to every published year)."""
    easter = easter_sunday(year)
    days = {
        date(year, 1, 1), date(year, 4, 21), date(year, 5, 1), date(year, 9, 7),
        date(year, 10, 12), date(year, 11, 2), date(year, 11, 15), date(year, 12, 25),
        date(year, 12, 24),
        easter - timedelta(days=48), easter - timedelta(days=47),  # Carnival Mon, Tue
        easter - timedelta(days=2),  # Good Friday
        easter + timedelta(days=60),  # Corpus Christi
    }
    if year >= NOV20_NATIONAL_FROM:
        days.add(date(year, 11, 20))
    last = date(year, 12, 31)
    while last.weekday() >= 5:
        last -= timedelta(days=1)
    days.add(last)
    return frozenset(d for d in days if d.weekday() < 5)


def b3_holidays(year: int) -> frozenset[date]:
    """Weekdays of ``year`` with no B3 derivatives session. Raises ``CalendarError`` outside ``SUPPORTED_YEARS``."""
    _check_year(year)
    published = PUBLISHED_HOLIDAYS.get(year)
    return published if published is not None else holidays_by_rule(year)


def is_business_day(d: date) -> bool:
    """True when B3 holds a session on ``d`` (a weekday that is not a holiday)."""
    if isinstance(d, datetime):
        raise TypeError("is_business_day takes a date; convert a datetime with sao_paulo_date() first")
    return d.weekday() < 5 and d not in b3_holidays(d.year)


def next_business_day(d: date) -> date:
    """The first business day strictly after ``d``."""
    d += timedelta(days=1)
    while not is_business_day(d):
        d += timedelta(days=1)
    return d


def previous_business_day(d: date) -> date:
    """The last business day strictly before ``d``."""
    d -= timedelta(days=1)
    while not is_business_day(d):
        d -= timedelta(days=1)
    return d


# -- contract rules ----------------------------------------------------------------


def wdo_expiry(year: int, month: int) -> date:
    """WDO/DOL expiry: the first business day of the contract month."""
    _check_month(month)
    first = date(year, month, 1)
    return first if is_business_day(first) else next_business_day(first)


def wdo_last_trading_day(year: int, month: int) -> date:
    """WDO/DOL last trading day: the session before expiry (last business day of the previous month)."""
    return previous_business_day(wdo_expiry(year, month))


def win_expiry(year: int, month: int) -> date:
    """WIN/IND expiry (even months): the Wednesday closest to the 15th, or the next business day after it."""
    _check_month(month)
    if month % 2:
        raise ContractError(f"WIN/IND contracts exist only for even months, got month {month}")
    fifteenth = date(year, month, 15)
    # weekday(): Mon 0 .. Sun 6; Wednesday is 2. Offsets of -3..+3 days reach the closest one.
    offset = (2 - fifteenth.weekday() + 3) % 7 - 3
    wednesday = fifteenth + timedelta(days=offset)
    return wednesday if is_business_day(wednesday) else next_business_day(wednesday)


def win_last_trading_day(year: int, month: int) -> date:
    """WIN/IND last trading day: the expiry day itself."""
    return win_expiry(year, month)


class ContractRule(NamedTuple):
    months: tuple[int, ...]
    expiry: Callable[[int, int], date]
    last_trading_day: Callable[[int, int], date]


_ALL_MONTHS = tuple(range(1, 13))
_EVEN_MONTHS = (2, 4, 6, 8, 10, 12)
RULES: dict[str, ContractRule] = {
    "WDO": ContractRule(_ALL_MONTHS, wdo_expiry, wdo_last_trading_day),
    "DOL": ContractRule(_ALL_MONTHS, wdo_expiry, wdo_last_trading_day),
    "WIN": ContractRule(_EVEN_MONTHS, win_expiry, win_last_trading_day),
    "IND": ContractRule(_EVEN_MONTHS, win_expiry, win_last_trading_day),
}


def _check_month(month: int) -> None:
    if not 1 <= month <= 12:
        raise ContractError(f"month must be 1..12, got {month!r}")


def _rule(root: str) -> ContractRule:
    try:
        return RULES[root]
    except KeyError:
        raise ContractError(f"unknown contract root {root!r} (known: {', '.join(RULES)})") from None


def contract_code(root: str, year: int, month: int) -> str:
    """``contract_code("WDO", 2026, 12) -> "WDOZ26"``."""
    _check_month(month)
    rule = _rule(root)
    if month not in rule.months:
        raise ContractError(f"{root} has no contract in month {month} (months: {rule.months})")
    if not 2000 <= year <= 2099:
        raise ContractError(f"year must be 2000..2099 for a two-digit code, got {year!r}")
    return f"{root}{MONTH_LETTERS[month - 1]}{year % 100:02d}"


_CODE = re.compile(r"([A-Z][A-Z0-9]{2})([A-Z])(\d{2})")  # roots like WDO, WIN, DI1


def parse_contract(code: str) -> tuple[str, int, int]:
    """``"WDOZ26" -> ("WDO", 2026, 12)``. Raises ``ContractError`` saying what is wrong."""
    if not isinstance(code, str):
        raise ContractError(f"contract code must be a string, got {type(code).__name__}")
    m = _CODE.fullmatch(code)
    if m is None:
        raise ContractError(
            f"not a B3 futures code: {code!r} (expected 3-character root + month letter + 2 year digits, e.g. WDOZ26)"
        )
    root, letter, yy = m.groups()
    if letter not in LETTER_MONTH:
        raise ContractError(f"{code!r}: {letter!r} is not a month letter (F G H J K M N Q U V X Z)")
    month = LETTER_MONTH[letter]
    rule = RULES.get(root)
    if rule is not None and month not in rule.months:
        raise ContractError(f"{code!r}: {root} has no contract in month {letter} ({month})")
    return root, 2000 + int(yy), month


def front_contract(root: str, on: date | datetime | None = None) -> tuple[int, int]:
    """(year, month) of ``root``'s front contract on Sao Paulo date ``on``: the first one still trading then."""
    rule = _rule(root)
    day = sao_paulo_date(on)
    year, month = day.year, day.month
    for _ in range(26):  # at most ~13 months ahead; bounded so a bug cannot loop forever
        if month in rule.months and rule.last_trading_day(year, month) >= day:
            return year, month
        month += 1
        if month == 13:
            year, month = year + 1, 1
    raise ContractError(f"no {root} contract found trading on {day}")  # unreachable with sane rules


def resolve_symbol(symbol: str, on: date | datetime | None = None) -> str:
    """``"WDOFUT"`` -> the front contract code on ``on`` (Sao Paulo date; default today).

    Symbols not ending in ``FUT`` are returned unchanged. An unknown ``*FUT``
    root raises ``ContractError``.
    """
    if not symbol.upper().endswith("FUT"):
        return symbol
    root = symbol.upper()[:-3]
    if root not in RULES:
        raise ContractError(
            f"cannot resolve {symbol!r}: no expiry rule for root {root!r} "
            f"(known: {', '.join(r + 'FUT' for r in RULES)})"
        )
    year, month = front_contract(root, on)
    return contract_code(root, year, month)


CALENDAR_B3, CALENDAR_WEEKDAYS = "b3", "weekdays"  # "weekdays": every Monday-Friday (simulated sessions)
CALENDARS = (CALENDAR_B3, CALENDAR_WEEKDAYS)
ASH_WEDNESDAY_OPEN = time(13, 0)  # B3's derivatives open late on Ash Wednesday


def trading_session(day: date, calendar: str = CALENDAR_B3) -> tuple[int, int] | None:
    """``day``'s session as (open_ns, close_ns) in event time, or None when there is none (a
    weekend or, on the B3 calendar, a holiday). Raises :class:`CalendarError` for a year the
    B3 calendar does not know: trading code treats that as closed, the safe side."""
    if day.weekday() >= 5:
        return None
    open_ns, close_ns = session_bounds_ns(day)
    if calendar == CALENDAR_B3:
        if not is_business_day(day):
            return None
        if day == ash_wednesday(day.year):
            open_ns = to_ns(datetime.combine(day, ASH_WEDNESDAY_OPEN, tzinfo=SAO_PAULO))
    return open_ns, close_ns
