"""Property-based tests of the eligibility rules against an independent oracle."""

from __future__ import annotations

import calendar
import datetime as dt

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rules import Decider, Reason, Source, load_policy

NO_LIMIT = 1 << 62  # no created_at is ever future_dated here (rules.Decider.decide's latest_ms)

POLICY = load_policy()
DECIDER = Decider(POLICY)
EPOCH = dt.date(1970, 1, 1)
EU_EEA = sorted(POLICY.regions)
OUTSIDE = ["US", "BR", "CH", "GB", "UK", "TR", "JP", "XK", "", "D", "DEU", "ZZ", "??"]


def oracle_age(birth: dt.date, on: dt.date) -> int:
    """Whole years on `on`, counting a 29 February birthday from 1 March in non-leap years."""
    month, day = birth.month, birth.day
    if (month, day) == (2, 29) and not calendar.isleap(on.year):
        month, day = 3, 1
    return on.year - birth.year - ((on.month, on.day) < (month, day))


def oracle(
    public: bool, country: str, birth: dt.date | None, created_ms: int, opted: bool, latest_ms: int = NO_LIMIT
) -> Reason:
    # Only plain ASCII input is normalised, and only ASCII white space is stripped.
    code = country.strip(" \t\n\r\x0b\x0c").upper() if country.isascii() else country
    code = {"EL": "GR", "UK": "GB"}.get(code, code)
    created = EPOCH + dt.timedelta(days=created_ms // 86_400_000)
    checks = [
        (Reason.NOT_PUBLIC, not public),
        (Reason.REGION, code not in POLICY.regions),
        (Reason.FUTURE_DATED, created_ms > latest_ms),
        (Reason.UNKNOWN_AGE, birth is None or birth > created or oracle_age(birth, created) > 120),
        (Reason.UNDER_AGE, birth is not None and oracle_age(birth, created) < 18),
        (Reason.OPTED_OUT, opted),
    ]
    for reason, failed in checks:
        if failed:
            return reason
    return Reason.ELIGIBLE


countries = st.one_of(
    st.sampled_from(EU_EEA),
    st.sampled_from(EU_EEA).map(str.lower),
    st.sampled_from(EU_EEA).map(lambda c: f"  {c.lower()} "),
    st.sampled_from(["EL", "el", " El", "UK", "uk"]),
    st.sampled_from(EU_EEA).map(lambda c: f"\u00a0{c}"),  # a no-break space is not white space to strip
    st.sampled_from(OUTSIDE),
    st.text(max_size=4),
)
births = st.one_of(st.none(), st.dates(min_value=dt.date(1850, 1, 1), max_value=dt.date(2030, 12, 31)))
created = st.integers(
    min_value=int(dt.datetime(1990, 1, 1, tzinfo=dt.UTC).timestamp() * 1000),
    max_value=int(dt.datetime(2035, 1, 1, tzinfo=dt.UTC).timestamp() * 1000),
)
sources = st.sampled_from([Source.POST, Source.AI_INTERACTION])


def day(d: dt.date | None) -> int | None:
    return None if d is None else (d - EPOCH).days


# The deciding clock's bound: far ahead, or around the creation times drawn (the future_dated check).
latest = st.one_of(st.just(NO_LIMIT), created, created.map(lambda ms: ms - 1))


@settings(max_examples=1500)
@given(
    source=sources,
    public=st.booleans(),
    country=countries,
    birth=births,
    created_ms=created,
    opted=st.booleans(),
    latest_ms=latest,
)
@example(
    source=Source.POST,
    public=True,
    country="DE",
    birth=dt.date(2008, 3, 1),
    created_ms=1_772_323_200_000,
    opted=False,
    latest_ms=NO_LIMIT,
)
def test_decision_matches_oracle(source, public, country, birth, created_ms, opted, latest_ms):
    got = DECIDER.decide(source, public, country, day(birth), created_ms, latest_ms, "user-1", lambda _uid: opted)
    assert got == oracle(public, country, birth, created_ms, opted, latest_ms)


@settings(max_examples=1000)
@given(
    source=sources,
    public=st.booleans(),
    country=countries,
    birth=births,
    created_ms=created,
    opted=st.booleans(),
    latest_ms=latest,
)
def test_no_ineligible_record_is_ever_eligible(source, public, country, birth, created_ms, opted, latest_ms):
    got = DECIDER.decide(source, public, country, day(birth), created_ms, latest_ms, "u", lambda _uid: opted)
    created_day = EPOCH + dt.timedelta(days=created_ms // 86_400_000)
    if got is Reason.ELIGIBLE:
        assert public
        assert created_ms <= latest_ms
        assert not opted
        assert birth is not None and birth <= created_day
        assert 18 <= oracle_age(birth, created_day) <= 120
        assert country.isascii()
        code = country.strip(" \t\n\r\x0b\x0c").upper()
        assert {"EL": "GR", "UK": "GB"}.get(code, code) in POLICY.regions


@given(public=st.booleans(), country=countries, birth=births, created_ms=created)
def test_opt_out_is_only_consulted_when_everything_else_passed(public, country, birth, created_ms):
    asked: list[str] = []

    def opted_out(uid: str) -> bool:
        asked.append(uid)
        return True

    got = DECIDER.decide(Source.POST, public, country, day(birth), created_ms, NO_LIMIT, "u-9", opted_out)
    assert (got is Reason.OPTED_OUT) == bool(asked)
    assert asked in ([], ["u-9"])


@given(birth=births.filter(lambda b: b is not None), created_ms=created)
def test_decision_is_deterministic_with_warm_and_cold_memo(birth, created_ms):
    cold = Decider(POLICY).decide(Source.POST, True, "FR", day(birth), created_ms, NO_LIMIT, "u", lambda _u: False)
    warm = DECIDER.decide(Source.POST, True, "FR", day(birth), created_ms, NO_LIMIT, "u", lambda _u: False)
    assert cold == warm
