"""Calendar arithmetic for the age checks, on day numbers (days since 1970-01-01, as Avro `date`)."""

from __future__ import annotations

import calendar
import datetime as dt

MS_PER_DAY = 86_400_000
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
# A birthday that falls after the last representable date is "never" for any real created_at.
NEVER = 1 << 62


def date_from_day(day: int) -> dt.date | None:
    """The calendar date of a day number, or None when it is outside years 1 to 9999."""
    try:
        return dt.date.fromordinal(day + _EPOCH_ORDINAL)
    except (ValueError, OverflowError):
        return None


def day_from_date(date: dt.date) -> int:
    return date.toordinal() - _EPOCH_ORDINAL


def nth_birthday(birth: dt.date, years: int) -> int:
    """Day number on which someone born on `birth` turns `years` old.

    A 29 February birthday is reached on 1 March in non-leap years.
    """
    year = birth.year + years
    if year > dt.MAXYEAR:
        return NEVER
    if birth.month == 2 and birth.day == 29 and not calendar.isleap(year):
        return day_from_date(dt.date(year, 3, 1))
    return day_from_date(dt.date(year, birth.month, birth.day))
