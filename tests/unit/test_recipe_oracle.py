"""The truth oracle of the recipe tests (tests/recipes/oracle.py), checked on its own: each case of
docs/retractions.md's table and of the policy's checks by hand, and against the generator's records,
which are built for a known decision (a second, independent account of the same rules)."""

from __future__ import annotations

import datetime as dt
import io
import json

import fastavro
import pytest

from consumer.devtools.generator import StreamGenerator
from consumer.wire.codec import schema_dir
from rules.policy import default_policy_path
from tests.recipes import oracle

POLICY = default_policy_path().read_text()
OPT_IN = POLICY.replace('version = "', 'consent_model = "opt_in"\nversion = "opt-in-', 1)
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
WRITTEN = dt.datetime(2026, 6, 15, 12, tzinfo=dt.UTC)


def post(post_id: str, user: str = "u1", **fields) -> dict:
    return {
        "post_id": post_id,
        "author_id": user,
        "author_birth_date": dt.date(1990, 5, 1),
        "author_country": "DE",
        "visibility": "PUBLIC",
        "created_at": WRITTEN,
        **fields,
    }


def truth(*records: dict, policy: str = POLICY, **feeds) -> oracle.Truth:
    return oracle.Truth(oracle.Policy.parse(policy), NOW, list(records), **feeds)


def reasons(t: oracle.Truth) -> dict[str, str]:
    return oracle.decide(t)


def test_a_29_february_birthday_is_reached_on_1_march_in_a_common_year():
    born = dt.date(2008, 2, 29)
    assert oracle.age_on(born, dt.date(2026, 2, 28)) == 17
    assert oracle.age_on(born, dt.date(2026, 3, 1)) == 18
    assert oracle.age_on(born, dt.date(2028, 2, 29)) == 20


def test_the_policy_checks():
    t = truth(
        post("ok"),
        post("greek", author_country=" el "),
        post("private", visibility="FRIENDS"),
        post("outside", author_country="US"),
        post("no-birth", author_birth_date=None),
        post("born-later", author_birth_date=dt.date(2027, 1, 1), created_at=WRITTEN),
        post("too-old", author_birth_date=dt.date(1900, 1, 1)),
        post("minor", author_birth_date=dt.date(2010, 1, 1)),
        post("ahead", created_at=NOW + dt.timedelta(hours=1)),
        {
            "interaction_id": "chat",
            "user_id": "u1",
            "user_birth_date": dt.date(1990, 5, 1),
            "user_country": "FR",
            "context": "GROUP_CHAT",
            "created_at": WRITTEN,
        },
    )
    assert reasons(t) == {
        "ok": "eligible",
        "greek": "eligible",
        "private": "not_public",
        "outside": "region",
        "no-birth": "unknown_age",
        "born-later": "unknown_age",
        "too-old": "unknown_age",
        "minor": "under_age",
        "ahead": "future_dated",
        "chat": "not_public",
    }


def test_changes_opt_outs_and_corrections():
    eighteen = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)  # the corrected birth date's 18th birthday
    t = truth(
        post("deleted"),
        post("hidden"),
        post("kept"),
        post("gone", user="u2"),
        post("before-18", user="u3", created_at=eighteen - dt.timedelta(days=1)),
        post("at-18", user="u3", created_at=eighteen),
        post("unknown-then-known", user="u4", author_birth_date=None),
        post("moved", user="u5"),
        post("objected", user="u6"),
        content_changes=[{"record_id": "deleted"}, {"record_id": "hidden"}],
        account_changes=[
            {"user_id": "u2", "deleted": True, "birth_date": None, "country": "DE"},
            {"user_id": "u3", "deleted": False, "birth_date": dt.date(2008, 3, 1), "country": "DE"},
            {"user_id": "u4", "deleted": False, "birth_date": dt.date(1980, 1, 1), "country": "DE"},
            {"user_id": "u5", "deleted": False, "birth_date": dt.date(1980, 1, 1), "country": "US"},
            {"user_id": "u5", "deleted": False, "birth_date": dt.date(1980, 1, 1), "country": "CH"},
        ],
        optouts={"u6"},
    )
    assert reasons(t) == {
        "deleted": "content_changed",
        "hidden": "content_changed",
        "kept": "eligible",
        "gone": "account_deleted",
        "before-18": "under_age",
        "at-18": "eligible",
        "unknown-then-known": "eligible",
        "moved": "region",
        "objected": "opted_out",
    }


def consent(user: str, granted: bool, at: dt.datetime) -> dict:
    return {"user_id": user, "granted": granted, "at": at, "source": "dialog"}


def test_opt_in_consents_withdrawals_and_a_re_grant():
    early, grant = WRITTEN - dt.timedelta(days=10), WRITTEN
    t = truth(
        post("first-grant-covers-earlier", user="a"),
        post("never-consented", user="b"),
        post("withdrawn", user="c"),
        post("before-re-grant", user="d", created_at=grant - dt.timedelta(seconds=1)),
        post("at-re-grant", user="d", created_at=grant),
        post("optout-wins", user="e"),
        policy=OPT_IN,
        consents=[
            consent("a", True, WRITTEN + dt.timedelta(days=30)),
            consent("c", True, early),
            consent("d", True, early),
            consent("c", False, early + dt.timedelta(days=1)),
            consent("d", False, early + dt.timedelta(days=1)),
            consent("d", True, grant),
            consent("e", True, early),
        ],
        optouts={"e"},
    )
    assert reasons(t) == {
        "first-grant-covers-earlier": "eligible",
        "never-consented": "no_consent",
        "withdrawn": "no_consent",
        "before-re-grant": "no_consent",
        "at-re-grant": "eligible",
        "optout-wins": "opted_out",
    }


def test_a_user_s_consents_count_in_the_order_of_their_time():
    """A grant older than a withdrawal (read after it, e.g. from another partition) does not win."""
    t = truth(
        post("p", user="a"),
        policy=OPT_IN,
        consents=[consent("a", False, WRITTEN), consent("a", True, WRITTEN - dt.timedelta(days=1))],
    )
    assert reasons(t) == {"p": "no_consent"}


@pytest.mark.parametrize("seed", [3, 4])
def test_the_oracle_agrees_with_the_generator_s_decisions(seed):
    generator = StreamGenerator(seed=seed, users_per_pool=40)
    records = [g for g in generator.stream(2000) if g.expected != "malformed"]
    schemas = {
        "post": fastavro.parse_schema(json.loads((schema_dir() / "post.v1.avsc").read_text())),
        "ai_interaction": fastavro.parse_schema(json.loads((schema_dir() / "ai_interaction.v1.avsc").read_text())),
    }
    values = [fastavro.schemaless_reader(io.BytesIO(g.value[5:]), schemas[g.source], None) for g in records]
    optouts = {
        v["user_id"]
        for v in (fastavro.schemaless_reader(io.BytesIO(b[5:]), _optout(), None) for _, b in generator.optouts())
    }
    got = oracle.decide(truth(*values, optouts=optouts))
    assert got == {g.record_id: g.expected for g in records}
    assert len(set(got.values())) >= 6, "every reason of the generator's mix"


def _optout():
    return fastavro.parse_schema(json.loads((schema_dir() / "optout.v1.avsc").read_text()))
