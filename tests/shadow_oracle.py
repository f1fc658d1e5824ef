"""An independent statement of the eligibility rules, for checking the shadow counts: plain calendar
arithmetic on the decoded record (fastavro's reference decoder), written from the README's rules
table, not from rules/decision.py. The tests compare the service's (active, shadow) counts to this
applied to the generator's records under both policies."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from typing import Any

from consumer.devtools.generator import Generated
from consumer.wire.codec import AI_INTERACTION, POST, Codec, CodecError
from rules import Policy

_CODEC = Codec()
_ALIASES = {"EL": "GR", "UK": "GB"}
SOURCE_LABEL = {"post": "POST", "ai_interaction": "AI_INTERACTION"}


def expected_decision(policy: Policy, source: str, record: dict[str, Any], opted_out: bool) -> str:
    if source == "post":
        included, public = policy.include_posts, record["visibility"] == "PUBLIC"
        birth, country = record["author_birth_date"], record["author_country"]
    else:
        included, public = policy.include_ai_interactions, record["context"] == "DIRECT_WITH_AI"
        birth, country = record["user_birth_date"], record["user_country"]
    if not included:
        return "source_excluded"
    if not public:
        return "not_public"
    code = country.strip(" \t\n\r\f\v").upper()
    if _ALIASES.get(code, code) not in policy.regions:
        return "region"
    created = record["created_at"].astimezone(dt.UTC).date()
    if birth is None or birth > created:
        return "unknown_age"
    # Whole years; (month, day) order makes a 29 February birthday count from 1 March in other years.
    age = created.year - birth.year - ((created.month, created.day) < (birth.month, birth.day))
    if age > policy.maximum_plausible_age:
        return "unknown_age"
    if age < policy.minimum_age:
        return "under_age"
    if opted_out:
        return "opted_out"
    return "eligible"


def decide_generated(policy: Policy, g: Generated, opted: set[str]) -> str:
    """The decision for one generated record: malformed when the reference codec cannot decode it."""
    try:
        _, record = _CODEC.decode(g.value, POST if g.source == "post" else AI_INTERACTION)
    except CodecError:
        return "malformed"
    user = record["author_id"] if g.source == "post" else record["user_id"]
    return expected_decision(policy, g.source, record, user in opted)


def expected_pairs(
    active: Policy, shadow: Policy, stream: Iterable[Generated], opted: set[str]
) -> Counter[tuple[str, str, str]]:
    """(source label, active decision, shadow decision) -> records."""
    return Counter(
        (SOURCE_LABEL[g.source], decide_generated(active, g, opted), decide_generated(shadow, g, opted)) for g in stream
    )
