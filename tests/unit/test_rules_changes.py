"""rules/changes.py: an account's facts decide again in the direction that fails closed, and say what
they retract."""

from __future__ import annotations

import datetime as dt

from rules import AccountFacts, Decider, Reason, Retraction, Source, account_retraction, load_policy, recheck
from rules.age import MS_PER_DAY, day_from_date

DECIDER = Decider(load_policy())
NOW_MS = day_from_date(dt.date(2026, 12, 3)) * MS_PER_DAY
LATEST = 10**15


def ms(year: int, month: int, day: int) -> int:
    return day_from_date(dt.date(year, month, day)) * MS_PER_DAY


def test_a_corrected_birth_date_refuses_what_was_written_before_the_eighteenth_birthday():
    facts = AccountFacts(False, day_from_date(dt.date(2008, 6, 1)), "DE")
    assert recheck(DECIDER, Source.POST, facts, ms(2026, 5, 31), LATEST) is Reason.UNDER_AGE
    assert recheck(DECIDER, Source.POST, facts, ms(2026, 6, 1), LATEST) is Reason.ELIGIBLE


def test_a_country_corrected_outside_the_regions_refuses_everything():
    facts = AccountFacts(False, day_from_date(dt.date(1990, 1, 1)), "US")
    assert recheck(DECIDER, Source.AI_INTERACTION, facts, ms(2026, 1, 1), LATEST) is Reason.REGION
    assert account_retraction(DECIDER, facts, NOW_MS) == (Retraction.REGION_CORRECTED, None)


def test_an_unknown_birth_date_refuses_and_retracts_everything():
    facts = AccountFacts(False, None, "FR")
    assert recheck(DECIDER, Source.POST, facts, ms(2026, 1, 1), LATEST) is Reason.UNKNOWN_AGE
    assert account_retraction(DECIDER, facts, NOW_MS) == (Retraction.AGE_CORRECTED, None)


def test_a_deleted_account_refuses_and_retracts_everything_for_good():
    facts = AccountFacts(True, day_from_date(dt.date(1990, 1, 1)), "FR")
    assert recheck(DECIDER, Source.POST, facts, ms(2026, 1, 1), LATEST) is Reason.ACCOUNT_DELETED
    assert account_retraction(DECIDER, facts, NOW_MS) == (Retraction.ACCOUNT_DELETED, None)


def test_the_age_bound_is_the_first_day_of_the_minimum_age_and_follows_the_leap_day_rule():
    assert account_retraction(DECIDER, AccountFacts(False, day_from_date(dt.date(2008, 2, 29)), "IT"), NOW_MS) == (
        Retraction.AGE_CORRECTED,
        ms(2026, 3, 1),
    )
    # The bound is exactly where recheck changes its answer.
    facts = AccountFacts(False, day_from_date(dt.date(2008, 2, 29)), "IT")
    assert recheck(DECIDER, Source.POST, facts, ms(2026, 3, 1) - 1, LATEST) is Reason.UNDER_AGE
    assert recheck(DECIDER, Source.POST, facts, ms(2026, 3, 1), LATEST) is Reason.ELIGIBLE


def test_a_future_dated_record_stays_refused_whatever_the_account_says():
    facts = AccountFacts(False, day_from_date(dt.date(1990, 1, 1)), "DE")
    assert recheck(DECIDER, Source.POST, facts, ms(2030, 1, 1), ms(2027, 1, 1)) is Reason.FUTURE_DATED


def test_a_birth_date_past_the_maximum_plausible_age_retracts_everything():
    # 1900-01-01: past the policy's maximum plausible age by now, so records from that age on are refused
    # (unknown_age); a retraction cannot name "created after", so it names all of them.
    placeholder = AccountFacts(False, day_from_date(dt.date(1900, 1, 1)), "DE")
    assert account_retraction(DECIDER, placeholder, NOW_MS) == (Retraction.AGE_CORRECTED, None)
    # An adult whose maximum age is still ahead: only what was written before 18.
    adult = AccountFacts(False, day_from_date(dt.date(1990, 6, 1)), "DE")
    eighteenth = day_from_date(dt.date(2008, 6, 1)) * MS_PER_DAY
    assert account_retraction(DECIDER, adult, NOW_MS) == (Retraction.AGE_CORRECTED, eighteenth)
