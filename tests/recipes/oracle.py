"""The truth oracle of the recipe tests: which input records are eligible under the current truth.

Computed from the written contracts alone (docs/policy.md, docs/retractions.md, the .avsc docs), never
from the service's code: no `consumer` and no `rules` import, only the standard library, so a defect
shared by the service and its own rules cannot hide here. Given

- the input records (decoded `Post` and `AiInteraction` values),
- the opt-outs (user ids: an objection is never withdrawn),
- the content changes (`ContentChange` values: each is final for its record id),
- the account changes (`AccountChange` values in topic order: a user's last states the facts, whatever
  its `at`, and a deletion is final),
- the consents (`Consent` values in topic order; used under an opt-in policy only),
- the policy (the text of a policy file) and the time of the decision,

`decide` gives every record id its reason ("eligible" or why not) and `eligible` the eligible ids: what
a reader's table must hold once it has applied every retraction.

A policy backfill (`training-filter backfill --policy NEW.toml`) changes only the policy: the truth
after one is this oracle with the new policy's text.
"""

from __future__ import annotations

import calendar
import datetime as dt
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ELIGIBLE = "eligible"
# docs/policy.md: EL is Greece's EU code and UK is often written for GB.
ALIASES = {"EL": "GR", "UK": "GB"}
# The service's default allowance for a created_at ahead of its clock (TF_CLOCK_SKEW_SECONDS).
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Policy:
    regions: frozenset[str]
    minimum_age: int
    maximum_plausible_age: int
    posts: bool
    ai_interactions: bool
    opt_in: bool

    @classmethod
    def parse(cls, text: str) -> Policy:
        doc = tomllib.loads(text)
        return cls(
            regions=frozenset(country(c) for c in doc["regions"]),
            minimum_age=doc["minimum_age"],
            maximum_plausible_age=doc["maximum_plausible_age"],
            posts=doc["sources"]["post"],
            ai_interactions=doc["sources"]["ai_interaction"],
            opt_in=doc.get("consent_model", "opt_out") == "opt_in",
        )


@dataclass
class Truth:
    policy: Policy
    now: dt.datetime
    records: list[Mapping[str, Any]] = field(default_factory=list)
    optouts: set[str] = field(default_factory=set)
    content_changes: list[Mapping[str, Any]] = field(default_factory=list)
    account_changes: list[Mapping[str, Any]] = field(default_factory=list)
    consents: list[Mapping[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Record:
    record_id: str
    user_id: str
    post: bool
    public: bool
    country: str
    birth: dt.date | None
    created: dt.datetime


def country(raw: str) -> str:
    """A country as the policy compares it (docs/policy.md): stripped, upper case, aliases replaced."""
    if not raw.isascii():
        return raw  # a look-alike never becomes a listed code
    code = raw.strip(" \t\n\r\x0b\x0c").upper()
    return ALIASES.get(code, code)


def _record(value: Mapping[str, Any]) -> _Record:
    if "post_id" in value:
        return _Record(
            value["post_id"],
            value["author_id"],
            True,
            value["visibility"] == "PUBLIC",
            value["author_country"],
            value["author_birth_date"],
            value["created_at"],
        )
    return _Record(
        value["interaction_id"],
        value["user_id"],
        False,
        value["context"] == "DIRECT_WITH_AI",
        value["user_country"],
        value["user_birth_date"],
        value["created_at"],
    )


def age_on(birth: dt.date, day: dt.date) -> int:
    """Whole years on `day`; a 29 February birthday is reached on 1 March in a year without one."""
    birthday = (birth.month, birth.day)
    if birthday == (2, 29) and not calendar.isleap(day.year):
        birthday = (3, 1)
    return day.year - birth.year - ((day.month, day.day) < birthday)


def _age_reason(policy: Policy, birth: dt.date | None, created: dt.datetime) -> str | None:
    day = created.astimezone(dt.UTC).date()
    if birth is None or birth > day:
        return "unknown_age"
    age = age_on(birth, day)
    if age > policy.maximum_plausible_age:
        return "unknown_age"
    if age < policy.minimum_age:
        return "under_age"
    return None


def _facts_reason(policy: Policy, raw_country: str, birth: dt.date | None, created: dt.datetime) -> str | None:
    if country(raw_country) not in policy.regions:
        return "region"
    return _age_reason(policy, birth, created)


def _consent_bounds(consents: Iterable[Mapping[str, Any]]) -> dict[str, dt.datetime | None]:
    """user id -> since when a consent counts (None: all the user's records); absent: no consent now.
    A user's consents are taken in the order of their `at` (topic order on a tie): the latest says
    whether consent is granted, and after a withdrawal only records created at or after the first
    grant that followed it count; a first grant covers earlier content too."""
    by_user: dict[str, list[tuple[dt.datetime, int, bool]]] = {}
    for n, c in enumerate(consents):
        by_user.setdefault(c["user_id"], []).append((c["at"], n, c["granted"]))
    bounds: dict[str, dt.datetime | None] = {}
    for user, events in by_user.items():
        events.sort()
        if not events[-1][2]:
            continue
        since: dt.datetime | None = None
        withdrawn = False
        for at, _, granted in events:
            if not granted:
                withdrawn, since = True, None
            elif withdrawn and since is None:
                since = at
        bounds[user] = since
    return bounds


def decide(truth: Truth) -> dict[str, str]:
    """record id -> "eligible", or the first reason the record is not (the names of docs/policy.md)."""
    policy = truth.policy
    # The last written of a user states the facts, whatever its `at`; a deletion is never undone.
    accounts = {a["user_id"]: a for a in truth.account_changes}
    deleted = {a["user_id"] for a in truth.account_changes if a["deleted"]}
    changed = {c["record_id"] for c in truth.content_changes}
    consents = _consent_bounds(truth.consents)
    latest = truth.now + CLOCK_SKEW
    out: dict[str, str] = {}
    for value in truth.records:
        r = _record(value)
        account = accounts.get(r.user_id)
        own_birth = r.birth
        if own_birth is None and account is not None and r.user_id not in deleted:
            own_birth = account["birth_date"]  # a record without a birth date is decided with its account's
        reason = (
            ("source_excluded" if not (policy.posts if r.post else policy.ai_interactions) else None)
            or ("not_public" if not r.public else None)
            or ("future_dated" if r.created > latest else None)
            or _facts_reason(policy, r.country, own_birth, r.created)
            or ("account_deleted" if r.user_id in deleted else None)
            or (_facts_reason(policy, account["country"], account["birth_date"], r.created) if account else None)
            or ("content_changed" if r.record_id in changed else None)
            or ("opted_out" if r.user_id in truth.optouts else None)
            or (_consent_reason(consents, r) if policy.opt_in else None)
        )
        out[r.record_id] = reason or ELIGIBLE
    return out


def _consent_reason(bounds: dict[str, dt.datetime | None], r: _Record) -> str | None:
    if r.user_id not in bounds:
        return "no_consent"
    since = bounds[r.user_id]
    return "no_consent" if since is not None and r.created < since else None


def eligible(truth: Truth) -> set[str]:
    return {record_id for record_id, reason in decide(truth).items() if reason == ELIGIBLE}
