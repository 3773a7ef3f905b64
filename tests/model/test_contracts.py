"""B3 calendar and WDO/WIN contract resolution (pipelines/model/contracts.py).

Every expected date below was worked out by hand from a printed calendar and
the rules in the module docstring (sources: B3's published holiday calendars
for 2022-2026 as reported at announcement; B3 WDO/WIN contract specs), not by
running the code. Weekdays are noted in the comments to make them checkable.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from pipelines.model import contracts
from pipelines.model.contracts import (
    CalendarError,
    ContractError,
    ash_wednesday,
    b3_holidays,
    contract_code,
    easter_sunday,
    front_contract,
    is_business_day,
    next_business_day,
    parse_contract,
    previous_business_day,
    resolve_symbol,
    win_expiry,
    win_last_trading_day,
    wdo_expiry,
    wdo_last_trading_day,
)

D = date

# Weekday non-trading days, by hand.
HOLIDAYS = {
    2025: {
        D(2025, 1, 1),  # Wed, New Year
        D(2025, 3, 3), D(2025, 3, 4),  # Mon, Tue Carnival (Easter Apr 20)
        D(2025, 4, 18),  # Good Friday
        D(2025, 4, 21),  # Mon, Tiradentes
        D(2025, 5, 1),  # Thu, Labour Day
        D(2025, 6, 19),  # Thu, Corpus Christi
        # Sep 7 Sun, Oct 12 Sun, Nov 2 Sun, Nov 15 Sat: no weekday effect
        D(2025, 11, 20),  # Thu, Black Consciousness (national since 2024)
        D(2025, 12, 24), D(2025, 12, 25), D(2025, 12, 31),  # Wed, Thu, Wed
    },
    2026: {
        D(2026, 1, 1),  # Thu
        D(2026, 2, 16), D(2026, 2, 17),  # Carnival (Easter Apr 5)
        D(2026, 4, 3),  # Good Friday
        D(2026, 4, 21),  # Tue
        D(2026, 5, 1),  # Fri
        D(2026, 6, 4),  # Thu, Corpus Christi
        D(2026, 9, 7),  # Mon
        D(2026, 10, 12),  # Mon
        D(2026, 11, 2),  # Mon, All Souls (Nov 15 is a Sunday)
        D(2026, 11, 20),  # Fri
        D(2026, 12, 24), D(2026, 12, 25), D(2026, 12, 31),  # Thu, Fri, Thu
    },
    2027: {
        D(2027, 1, 1),  # Fri
        D(2027, 2, 8), D(2027, 2, 9),  # Carnival (Easter Mar 28)
        D(2027, 3, 26),  # Good Friday
        D(2027, 4, 21),  # Wed
        # May 1 Sat
        D(2027, 5, 27),  # Thu, Corpus Christi
        D(2027, 9, 7),  # Tue
        D(2027, 10, 12),  # Tue
        D(2027, 11, 2),  # Tue
        D(2027, 11, 15),  # Mon
        # Nov 20 Sat, Dec 25 Sat
        D(2027, 12, 24), D(2027, 12, 31),  # Fri, Fri
    },
}


@pytest.mark.parametrize("year", sorted(HOLIDAYS))
def test_holidays_per_year(year):
    assert b3_holidays(year) == frozenset(HOLIDAYS[year])


def test_easter_and_ash_wednesday():
    assert [easter_sunday(y) for y in (2022, 2023, 2024, 2025, 2026, 2027)] == [
        D(2022, 4, 17), D(2023, 4, 9), D(2024, 3, 31), D(2025, 4, 20), D(2026, 4, 5), D(2027, 3, 28)
    ]
    assert ash_wednesday(2026) == D(2026, 2, 18)


def test_rule_reproduces_every_published_calendar():
    # The rule computes the years B3 has not published; it must agree with every year it has.
    for year, published in contracts.PUBLISHED_HOLIDAYS.items():
        assert contracts.holidays_by_rule(year) == published, year
    # Year-end substitutes when Dec 31 is a weekend (banks' closing day): 2022 Fri Dec 30, 2023 Fri Dec 29.
    assert D(2022, 12, 30) in b3_holidays(2022) and D(2023, 12, 29) in b3_holidays(2023)
    # Nov 20 became national in 2024; B3 traded on it (a city holiday) in 2023.
    assert is_business_day(D(2023, 11, 20)) and not is_business_day(D(2024, 11, 20))


def test_business_days():
    assert is_business_day(D(2026, 2, 18))  # Ash Wednesday trades (late open)
    assert not is_business_day(D(2026, 2, 17))
    assert is_business_day(D(2027, 1, 25))  # Mon, Sao Paulo anniversary: B3 trades since 2022
    assert is_business_day(D(2025, 7, 9)) and is_business_day(D(2026, 7, 9))  # Wed/Thu, SP state holiday
    assert not is_business_day(D(2026, 3, 7))  # Saturday
    assert next_business_day(D(2026, 2, 13)) == D(2026, 2, 18)  # Fri -> weekend + Carnival -> Ash Wed
    assert previous_business_day(D(2026, 2, 18)) == D(2026, 2, 13)
    assert next_business_day(D(2025, 12, 23)) == D(2025, 12, 26)
    assert next_business_day(D(2026, 12, 30)) == D(2027, 1, 4)  # Dec 31 Thu, Jan 1 Fri, weekend
    assert previous_business_day(D(2026, 1, 2)) == D(2025, 12, 30)
    with pytest.raises(TypeError):
        is_business_day(datetime(2026, 1, 2, 10, 0))


def test_years_outside_the_calendar_raise():
    for year in (2021, 2031):
        with pytest.raises(CalendarError, match=f"not known for {year}"):
            b3_holidays(year)
    with pytest.raises(CalendarError):
        resolve_symbol("WDOFUT", on=D(2035, 3, 1))


# -- WDO ---------------------------------------------------------------------------------

WDO_2026 = {  # month: (expiry = first business day, last trading day = business day before)
    1: (D(2026, 1, 2), D(2025, 12, 30)),  # Jan 1 holiday; Dec 31 closed
    2: (D(2026, 2, 2), D(2026, 1, 30)),  # Feb 1 Sun
    3: (D(2026, 3, 2), D(2026, 2, 27)),  # Mar 1 Sun
    4: (D(2026, 4, 1), D(2026, 3, 31)),
    5: (D(2026, 5, 4), D(2026, 4, 30)),  # May 1 holiday (Fri), weekend
    6: (D(2026, 6, 1), D(2026, 5, 29)),
    7: (D(2026, 7, 1), D(2026, 6, 30)),
    8: (D(2026, 8, 3), D(2026, 7, 31)),  # Aug 1 Sat
    9: (D(2026, 9, 1), D(2026, 8, 31)),
    10: (D(2026, 10, 1), D(2026, 9, 30)),
    11: (D(2026, 11, 3), D(2026, 10, 30)),  # Nov 1 Sun, Nov 2 Mon holiday
    12: (D(2026, 12, 1), D(2026, 11, 30)),
}


@pytest.mark.parametrize("month", range(1, 13))
def test_wdo_expiry_every_month_of_2026(month):
    expiry, last = WDO_2026[month]
    assert wdo_expiry(2026, month) == expiry
    assert wdo_last_trading_day(2026, month) == last


def test_wdo_roll_boundaries():
    # Z26 last trades Mon Nov 30; expires Tue Dec 1.
    assert resolve_symbol("WDOFUT", on=D(2026, 11, 27)) == "WDOZ26"
    assert resolve_symbol("WDOFUT", on=D(2026, 11, 30)) == "WDOZ26"
    assert resolve_symbol("WDOFUT", on=D(2026, 12, 1)) == "WDOF27"
    # Year rollover: F27 expires Mon Jan 4 2027 (Jan 1 Fri holiday), last trades Wed Dec 30.
    assert wdo_expiry(2027, 1) == D(2027, 1, 4)
    assert resolve_symbol("WDOFUT", on=D(2026, 12, 30)) == "WDOF27"
    assert resolve_symbol("WDOFUT", on=D(2026, 12, 31)) == "WDOG27"  # closed day: the contract of the next session
    assert resolve_symbol("WDOFUT", on=D(2027, 1, 4)) == "WDOG27"
    assert resolve_symbol("WDOFUT", on=D(2025, 12, 30)) == "WDOF26"
    assert resolve_symbol("WDOFUT", on=D(2026, 1, 2)) == "WDOG26"
    assert front_contract("WDO", D(2026, 5, 1)) == (2026, 6)  # M26: May is over by its last session Apr 30


# -- WIN ---------------------------------------------------------------------------------

WIN_EXPIRIES = {  # Wednesday closest to the 15th (weekday of the 15th noted)
    (2025, 2): D(2025, 2, 12),  # 15th Sat
    (2025, 4): D(2025, 4, 16),  # Tue
    (2025, 6): D(2025, 6, 18),  # Sun
    (2025, 8): D(2025, 8, 13),  # Fri
    (2025, 10): D(2025, 10, 15),  # Wed
    (2025, 12): D(2025, 12, 17),  # Mon
    (2026, 2): D(2026, 2, 18),  # Sun -> Ash Wednesday, a (late-opening) trading day
    (2026, 4): D(2026, 4, 15),  # Wed
    (2026, 6): D(2026, 6, 17),  # Mon
    (2026, 8): D(2026, 8, 12),  # Sat
    (2026, 10): D(2026, 10, 14),  # Thu
    (2026, 12): D(2026, 12, 16),  # Tue
    (2027, 2): D(2027, 2, 17),  # Mon
    (2027, 4): D(2027, 4, 14),  # Thu
    (2027, 6): D(2027, 6, 16),  # Tue
    (2027, 8): D(2027, 8, 18),  # Sun
    (2027, 10): D(2027, 10, 13),  # Fri
    (2027, 12): D(2027, 12, 15),  # Wed
}


@pytest.mark.parametrize("year_month", sorted(WIN_EXPIRIES))
def test_win_expiry_closest_wednesday(year_month):
    assert win_expiry(*year_month) == WIN_EXPIRIES[year_month]
    assert win_last_trading_day(*year_month) == WIN_EXPIRIES[year_month]


def test_win_expiry_on_a_holiday_wednesday_moves_to_next_business_day():
    # No even-month closest Wednesday is a holiday in 2025-2027 (checked above);
    # Oct 2022: the 15th is a Saturday, closest Wednesday Oct 12 (Nossa Senhora Aparecida) -> Thu Oct 13.
    assert win_expiry(2022, 10) == D(2022, 10, 13)


def test_win_expiry_matches_independent_rule_for_all_supported_years():
    # Independent formulation: the one Wednesday among the 12th..18th, then the next session if closed.
    for year in contracts.SUPPORTED_YEARS:
        for month in (2, 4, 6, 8, 10, 12):
            (wed,) = [D(year, month, d) for d in range(12, 19) if D(year, month, d).weekday() == 2]
            while wed.weekday() >= 5 or wed in b3_holidays(year):
                wed += timedelta(days=1)
            assert win_expiry(year, month) == wed


def test_win_roll_boundaries():
    assert resolve_symbol("WINFUT", on=D(2026, 12, 15)) == "WINZ26"
    assert resolve_symbol("WINFUT", on=D(2026, 12, 16)) == "WINZ26"  # expiry day still trades
    assert resolve_symbol("WINFUT", on=D(2026, 12, 17)) == "WING27"  # year rollover
    assert resolve_symbol("WINFUT", on=D(2026, 2, 16)) == "WING26"  # Carnival (closed): G26 trades next, on Feb 18
    assert resolve_symbol("WINFUT", on=D(2026, 2, 18)) == "WING26"
    assert resolve_symbol("WINFUT", on=D(2026, 2, 19)) == "WINJ26"
    assert resolve_symbol("WINFUT", on=D(2026, 3, 10)) == "WINJ26"  # odd month: the next even one
    assert resolve_symbol("WINFUT", on=D(2025, 12, 18)) == "WING26"


def test_resolve_symbol_inputs():
    # An aware datetime is converted to the Sao Paulo date: 02:00 UTC Dec 1 = 23:00 Nov 30 in Sao Paulo.
    assert resolve_symbol("WDOFUT", on=datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)) == "WDOZ26"
    assert resolve_symbol("WDOFUT", on=datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)) == "WDOF27"
    assert resolve_symbol("WDOFUT", on=datetime(2026, 11, 30, 23, 0)) == "WDOZ26"  # naive = local
    assert resolve_symbol("wdofut", on=D(2026, 11, 30)) == "WDOZ26"
    assert resolve_symbol("DOLFUT", on=D(2026, 11, 30)) == "DOLZ26"
    assert resolve_symbol("INDFUT", on=D(2026, 11, 30)) == "INDZ26"
    for plain in ("WDOZ26", "PETR4", "ESH22", "SIM"):
        assert resolve_symbol(plain, on=D(2026, 11, 30)) == plain
    with pytest.raises(ContractError, match="no expiry rule for root 'ABC'.*WDOFUT"):
        resolve_symbol("ABCFUT", on=D(2026, 11, 30))
    assert isinstance(resolve_symbol("WDOFUT"), str)  # default: today in Sao Paulo


# -- codes -----------------------------------------------------------------------------------


def test_contract_code():
    assert contract_code("WDO", 2026, 12) == "WDOZ26"
    assert contract_code("WDO", 2027, 1) == "WDOF27"
    assert contract_code("WIN", 2026, 2) == "WING26"
    assert [contract_code("WDO", 2030, m)[3] for m in range(1, 13)] == list("FGHJKMNQUVXZ")
    with pytest.raises(ContractError, match="no contract in month 3"):
        contract_code("WIN", 2026, 3)
    with pytest.raises(ContractError, match="month must be 1..12"):
        contract_code("WDO", 2026, 13)
    with pytest.raises(ContractError, match="unknown contract root 'XYZ'"):
        contract_code("XYZ", 2026, 1)


def test_parse_contract():
    assert parse_contract("WDOZ26") == ("WDO", 2026, 12)
    assert parse_contract("WINJ27") == ("WIN", 2027, 4)
    assert parse_contract("DI1F27") == ("DI1", 2027, 1)  # unknown roots parse; only resolution needs a rule
    with pytest.raises(ContractError, match="not a month letter"):
        parse_contract("WDOI26")
    with pytest.raises(ContractError, match="WIN has no contract in month F"):
        parse_contract("WINF26")
    for bad in ("WDOZ2026", "WDO", "wdoz26", "WDOFUT", ""):
        with pytest.raises(ContractError, match="not a B3 futures code"):
            parse_contract(bad)
    with pytest.raises(ContractError, match="must be a string"):
        parse_contract(2026)
