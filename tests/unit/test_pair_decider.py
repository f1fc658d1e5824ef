"""`PairDecider` against its definition: each half equals that policy's own `Decider.decide`, on
generated policies (ages, regions, sources, consent models) and generated records, and it asks the
opt-out filter and the consent set at most once, and only when one of the policies needs the answer."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from rules import Decider, PairDecider, Policy, Reason, Source

NO_LIMIT = 1 << 62  # no created_at is ever future_dated here (rules.Decider.decide's latest_ms)

EPOCH = dt.date(1970, 1, 1)
COUNTRIES = ["DE", "FR", "IE", "PL", "US", "GB", "CH", "EL", "UK"]


def policies() -> st.SearchStrategy[Policy]:
    @st.composite
    def build(draw: st.DrawFn) -> Policy:
        minimum = draw(st.integers(0, 30))
        return Policy(
            version=f"v{draw(st.integers(0, 9))}",
            regions=frozenset(draw(st.sets(st.sampled_from(["DE", "FR", "IE", "PL", "US", "GB", "GR"]), min_size=1))),
            minimum_age=minimum,
            maximum_plausible_age=draw(st.integers(minimum, 150)),
            include_posts=draw(st.booleans()),
            include_ai_interactions=draw(st.booleans()),
            consent_model=draw(st.sampled_from(["opt_out", "opt_in"])),
        )

    return build()


countries = st.one_of(
    st.sampled_from(COUNTRIES),
    st.sampled_from(COUNTRIES).map(lambda c: f" {c.lower()} "),
    st.sampled_from(COUNTRIES).map(str.encode),
    st.text(max_size=3),
    st.binary(max_size=3),
)
# Days around the representable range (years 1 to 9999) as well as ordinary birthdays.
birth_days = st.one_of(
    st.none(),
    st.integers(-30_000, 25_000),
    st.integers(-719_170, -719_150),
    st.integers(2_932_880, 2_932_900),
    st.integers(2_870_000, 2_932_896),  # born in years 9829 to 9999: some bounds fall past 9999
)
created = st.one_of(
    st.integers(
        int(dt.datetime(1950, 1, 1, tzinfo=dt.UTC).timestamp() * 1000),
        int(dt.datetime(2040, 1, 1, tzinfo=dt.UTC).timestamp() * 1000),
    ),
    # The last representable days, where a birthday bound may be NEVER (past year 9999).
    st.integers(2_932_000, 2_932_896).map(lambda day: day * 86_400_000),
)


class Answer:
    """A membership test that remembers how often it was asked."""

    def __init__(self, value: bool) -> None:
        self.value = value
        self.calls = 0

    def __call__(self, _user_id: object) -> bool:
        self.calls += 1
        return self.value


def needs(reason: Reason, step: Reason) -> bool:
    """Whether a policy whose answer is `reason` asked the filter of `step` (opt-out, then consent)."""
    order = [Reason.OPTED_OUT, Reason.NO_CONSENT, Reason.ELIGIBLE]
    return reason in order and order.index(reason) >= order.index(step)


@settings(max_examples=1200, deadline=None)
@given(
    active=policies(),
    shadow=policies(),
    source=st.sampled_from(list(Source)),
    public=st.booleans(),
    country=countries,
    birth_day=birth_days,
    created_ms=created,
    opted=st.booleans(),
    consent=st.one_of(st.none(), st.booleans()),
    repeat=st.integers(1, 2),
    ahead=st.sampled_from([None, 0, -1, 1]),
)
def test_each_half_is_that_policys_own_decision(
    active, shadow, source, public, country, birth_day, created_ms, opted, consent, repeat, ahead
):
    # The time bound: none, exactly created_at, one ms before it (future_dated), one after.
    latest_ms = NO_LIMIT if ahead is None else created_ms + ahead
    one, other = Decider(active), Decider(shadow)
    pair = PairDecider(Decider(active), Decider(shadow))
    consented = None if consent is None else Answer(consent)
    for _ in range(repeat):  # the second time from the memos
        optout = Answer(opted)
        if consented is not None:
            consented.calls = 0
        got = pair.decide(source, public, country, birth_day, created_ms, latest_ms, b"u", optout, consented)
        expected = (
            one.decide(
                source,
                public,
                country,
                birth_day,
                created_ms,
                latest_ms,
                b"u",
                Answer(opted),
                consented and Answer(consent),
            ),
            other.decide(
                source,
                public,
                country,
                birth_day,
                created_ms,
                latest_ms,
                b"u",
                Answer(opted),
                consented and Answer(consent),
            ),
        )
        assert got == expected
        assert all(type(r) is Reason for r in got)
        if source in {s for s in Source if active_includes(active, s) and active_includes(shadow, s)}:
            asked = any(needs(r, Reason.OPTED_OUT) for r in got)
            assert optout.calls == (1 if asked else 0)
            if consented is not None:
                wanted = any(
                    policy.consent_model == "opt_in" and needs(r, Reason.NO_CONSENT)
                    for policy, r in zip((active, shadow), got, strict=True)
                )
                assert consented.calls == (1 if wanted else 0)


def active_includes(policy: Policy, source: Source) -> bool:
    return policy.include_posts if source is Source.POST else policy.include_ai_interactions


def test_a_pair_of_the_same_policy_answers_twice_the_same():
    policy = Policy("v", frozenset({"DE"}), 18, 120, True, True)
    pair = PairDecider(Decider(policy), Decider(policy))
    day = (dt.date(2000, 2, 29) - EPOCH).days
    for created_ms, expected in (
        (int(dt.datetime(2018, 2, 28, tzinfo=dt.UTC).timestamp() * 1000), Reason.UNDER_AGE),
        (int(dt.datetime(2018, 3, 1, tzinfo=dt.UTC).timestamp() * 1000), Reason.ELIGIBLE),
    ):
        assert pair.decide(Source.POST, True, b"de", day, created_ms, NO_LIMIT, b"u", lambda _: False) == (
            expected,
            expected,
        )


def test_the_hot_loop_never_decides_with_a_replaced_active_policy():
    """BatchProcessor keeps its PairDecider between batches; replacing the active decider rebuilds it."""
    from consumer.datapath.shadow import Shadow
    from tests.fakes import processor

    proc, _ = processor(opted_out=lambda _: False)
    proc.shadow = Shadow(Decider(Policy("shadow", frozenset({"DE"}), 18, 120, True, True)))
    proc.process([], _pending(), {})
    first = proc._shadow_pass.pair
    assert first is not None and first.active is proc.decider
    proc.process([], _pending(), {})
    assert proc._shadow_pass.pair is first, "kept, memos and all, while the policies stay the same"
    proc.decider = Decider(Policy("replaced", frozenset({"FR"}), 30, 120, True, True))
    proc.process([], _pending(), {})
    pair = proc._shadow_pass.pair
    assert pair is not None and pair.active is proc.decider and pair is not first


def _pending():
    from consumer.datapath.offsets import PendingBatch

    return PendingBatch()
