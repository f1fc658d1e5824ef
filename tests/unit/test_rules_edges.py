"""The named edge cases of the eligibility rules."""

from __future__ import annotations

import datetime as dt

import pytest

from rules import Decider, Policy, PolicyError, Reason, Source, load_policy, parse_policy
from rules.countries import normalise_country

NO_LIMIT = 1 << 62  # no created_at is ever future_dated here (rules.Decider.decide's latest_ms)

POLICY = load_policy()
EPOCH = dt.date(1970, 1, 1)


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def decide(
    birth: str | None,
    created: str,
    country: str = "DE",
    public: bool = True,
    opted: bool = False,
    source: Source = Source.POST,
    policy: Policy = POLICY,
) -> Reason:
    birth_day = None if birth is None else (dt.date.fromisoformat(birth) - EPOCH).days
    return Decider(policy).decide(source, public, country, birth_day, ms(created), NO_LIMIT, "u", lambda _u: opted)


def test_eighteenth_birthday_itself_is_adult():
    assert decide("2008-06-15", "2026-06-15T00:00:00+00:00") is Reason.ELIGIBLE


def test_day_before_eighteenth_birthday_is_under_age():
    assert decide("2008-06-15", "2026-06-14T23:59:59.999+00:00") is Reason.UNDER_AGE


def test_leap_day_birthday_reaches_18_on_1_march_in_non_leap_year():
    assert decide("2008-02-29", "2026-02-28T12:00:00+00:00") is Reason.UNDER_AGE
    assert decide("2008-02-29", "2026-03-01T00:00:00+00:00") is Reason.ELIGIBLE


def test_leap_day_birthday_reaches_18_on_29_february_in_leap_year():
    assert decide("2012-02-29", "2030-02-28T23:00:00+00:00") is Reason.UNDER_AGE
    assert decide("2012-02-29", "2030-03-01T00:00:00+00:00") is Reason.ELIGIBLE
    assert decide("2014-02-28", "2032-02-28T00:00:00+00:00") is Reason.ELIGIBLE
    assert decide("2012-02-29", "2032-02-29T00:00:00+00:00") is Reason.ELIGIBLE  # 20th birthday, leap year


def test_age_day_is_the_utc_calendar_day():
    # 23:30 on the day before the birthday in UTC is already the birthday in Berlin: UTC decides.
    assert decide("2008-06-15", "2026-06-15T01:30:00+02:00") is Reason.UNDER_AGE
    assert decide("2008-06-15", "2026-06-14T23:59:59.999+00:00") is Reason.UNDER_AGE
    assert decide("2008-06-15", "2026-06-15T00:00:00.000+00:00") is Reason.ELIGIBLE
    assert decide("2008-06-15", "2026-06-14T22:00:00-02:00") is Reason.ELIGIBLE


@pytest.mark.parametrize("raw,expected", [("el", "GR"), ("EL", "GR"), (" uk ", "GB"), ("de", "DE"), ("\tFr\n", "FR")])
def test_country_normalisation(raw, expected):
    assert normalise_country(raw) == expected


def test_el_is_greece_and_uk_is_outside_the_eea():
    assert decide("1990-01-01", "2026-01-01T00:00:00+00:00", country="el") is Reason.ELIGIBLE
    assert decide("1990-01-01", "2026-01-01T00:00:00+00:00", country="UK") is Reason.REGION
    assert decide("1990-01-01", "2026-01-01T00:00:00+00:00", country="no") is Reason.ELIGIBLE


def test_non_ascii_look_alike_never_normalises_into_a_region():
    assert normalise_country("\u0131s") == "\u0131s"  # dotless i would upper-case to "IS"
    assert decide("1990-01-01", "2026-01-01T00:00:00+00:00", country="\u0131s") is Reason.REGION


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000", "\u200b", "\x85", "\x1c"])
def test_non_ascii_spaces_are_not_stripped_into_a_region(space):
    # Only ASCII white space is stripped: a non-breaking or ideographic space makes the code non-ASCII.
    for raw in (f"{space}DE", f"DE{space}", f"{space}de{space}"):
        assert normalise_country(raw) != "DE"
        assert decide("1990-01-01", "2026-01-01T00:00:00+00:00", country=raw) is Reason.REGION
        assert Decider(load_policy()).allowed_country(raw.encode()) is None


def test_age_120_is_plausible_and_121_is_not():
    assert decide("1906-01-01", "2026-12-31T00:00:00+00:00") is Reason.ELIGIBLE  # 120
    assert decide("1905-01-01", "2026-01-01T00:00:00+00:00") is Reason.UNKNOWN_AGE  # 121 that day
    assert decide("1905-01-02", "2026-01-01T00:00:00+00:00") is Reason.ELIGIBLE  # still 120


def test_birth_date_after_created_at_is_unknown_age():
    assert decide("2026-01-02", "2026-01-01T00:00:00+00:00") is Reason.UNKNOWN_AGE
    assert decide("2026-01-01", "2026-01-01T00:00:00+00:00") is Reason.UNDER_AGE  # born that day: age 0


def test_a_record_dated_ahead_of_the_clock_is_future_dated():
    """The age check runs at created_at: a 14-year-old's post stamped 2040 was eligible."""
    decider = Decider(POLICY)
    now = ms("2026-12-03T10:00:00+00:00")
    born_2012 = (dt.date(2012, 5, 1) - EPOCH).days
    stamped_2040 = ms("2040-01-01T00:00:00+00:00")
    assert decider.decide(Source.POST, True, "DE", born_2012, stamped_2040, now, "u", lambda _u: False) is (
        Reason.FUTURE_DATED
    )
    adult = (dt.date(1990, 5, 1) - EPOCH).days
    assert decider.decide(Source.POST, True, "DE", adult, now + 1, now, "u", lambda _u: False) is Reason.FUTURE_DATED
    assert decider.decide(Source.POST, True, "DE", adult, now, now, "u", lambda _u: False) is Reason.ELIGIBLE
    # After the cheaper checks, before the age checks (which it makes meaningful).
    assert decider.decide(Source.POST, True, "US", adult, now + 1, now, "u", lambda _u: False) is Reason.REGION
    assert decider.decide(Source.POST, True, "DE", None, now + 1, now, "u", lambda _u: False) is Reason.FUTURE_DATED


def test_missing_birth_date_is_unknown_age():
    assert decide(None, "2026-01-01T00:00:00+00:00") is Reason.UNKNOWN_AGE


def test_out_of_range_birth_day_is_unknown_age_not_a_crash():
    decider = Decider(POLICY)
    for birth_day in (-(1 << 31), (1 << 31) - 1, -719_163, 2_932_897):
        got = decider.decide(
            Source.POST, True, "DE", birth_day, ms("2026-01-01T00:00:00+00:00"), NO_LIMIT, "u", lambda _u: False
        )
        assert got is Reason.UNKNOWN_AGE


def test_reasons_come_in_order():
    created = "2026-01-01T00:00:00+00:00"
    assert decide("2015-01-01", created, country="US", public=False, opted=True) is Reason.NOT_PUBLIC
    assert decide("2015-01-01", created, country="US", opted=True) is Reason.REGION
    assert decide(None, created, opted=True) is Reason.UNKNOWN_AGE
    assert decide("2015-01-01", created, opted=True) is Reason.UNDER_AGE
    assert decide("1990-01-01", created, opted=True) is Reason.OPTED_OUT
    assert decide("1990-01-01", created) is Reason.ELIGIBLE


def test_excluded_source_comes_before_everything_else():
    policy = parse_policy(
        'version = "t"\nregions = ["DE"]\nminimum_age = 18\nmaximum_plausible_age = 120\n'
        "[sources]\npost = true\nai_interaction = false\n"
    )
    assert (
        decide("1990-01-01", "2026-01-01T00:00:00+00:00", source=Source.AI_INTERACTION, public=False, policy=policy)
        is Reason.SOURCE_EXCLUDED
    )
    assert decide("1990-01-01", "2026-01-01T00:00:00+00:00", policy=policy) is Reason.ELIGIBLE


def test_bytes_and_str_countries_agree():
    decider = Decider(POLICY)
    for raw in ["de", "EL", "UK", "xx", " se "]:
        assert decider.allowed_country(raw) == decider.allowed_country(raw.encode())
    assert decider.allowed_country(b"\xff\xfe") is None


def policy_text(regions='["DE"]', minimum="18", maximum="120", sources="post = true\nai_interaction = true") -> str:
    return (
        f'version = "v"\nregions = {regions}\nminimum_age = {minimum}\nmaximum_plausible_age = {maximum}\n'
        f"[sources]\n{sources}\n"
    )


@pytest.mark.parametrize(
    "text,message",
    [
        ("version = 1", "'version' must be a str"),
        (policy_text(regions='["DE", "XYZ"]'), "not an ISO 3166-1 alpha-2"),
        (policy_text(minimum="30", maximum="20"), "minimum_age <= maximum_plausible_age"),
        (policy_text(sources="post = true"), "sources.ai_interaction"),
        ("version = [", "not valid TOML"),
        (policy_text(minimum="true"), "'minimum_age' must be a int"),
        (policy_text(regions="[]"), "at least one country"),
        (policy_text() + "surprise = 1\n", "unknown source"),
    ],
)
def test_invalid_policies_say_what_to_fix(text, message):
    with pytest.raises(PolicyError, match=message):
        parse_policy(text)


def test_default_policy_is_versioned_and_covers_eu_and_eea():
    assert POLICY.version
    assert len(POLICY.regions) == 30
    assert {"IS", "LI", "NO", "GR", "DE"} <= POLICY.regions
    assert "GB" not in POLICY.regions and "CH" not in POLICY.regions
    assert (POLICY.minimum_age, POLICY.maximum_plausible_age) == (18, 120)


def test_record_adapter_rejects_wrong_types_as_malformed():
    decider = Decider(POLICY)
    good = {
        "post_id": "p",
        "author_id": "u",
        "author_birth_date": dt.date(1990, 1, 1),
        "author_country": "DE",
        "visibility": "PUBLIC",
        "kind": "POST",
        "surface": "s",
        "language": None,
        "text": "t",
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }
    assert decider.decide_record(Source.POST, good, NO_LIMIT, lambda _u: False) is Reason.ELIGIBLE
    for key, bad in [
        ("author_id", 5),
        ("visibility", "SECRET"),
        ("created_at", dt.datetime(2026, 1, 1)),
        ("author_birth_date", "1990-01-01"),
        ("author_country", None),
    ]:
        assert decider.decide_record(Source.POST, {**good, key: bad}, NO_LIMIT, lambda _u: False) is Reason.MALFORMED
    missing = dict(good)
    del missing["created_at"]
    assert decider.decide_record(Source.POST, missing, NO_LIMIT, lambda _u: False) is Reason.MALFORMED


def test_a_policy_file_that_is_not_text_is_a_policy_error(tmp_path):
    """`check --policy <binary>` crashed with UnicodeDecodeError."""
    binary = tmp_path / "policy.toml"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(binary)
