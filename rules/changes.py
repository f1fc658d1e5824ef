"""What a change to the truth does to a decision, and what it retracts. Pure: no Kafka, no I/O.

A record id names one version of a piece of content, so a content change (deleted, made non-public,
replaced by an edit) is final for its id: the shell keeps the ids in a set and refuses them
(`Reason.CONTENT_CHANGED`). An account change states the account's facts as they are now; they are
applied in the direction that fails closed (`recheck`): a record the policy admits on its own facts is
decided again with its account's, and a record refused only for want of a birth date is decided with
the account's birth date, if there is one. A record its own facts refuse stays refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rules.age import MS_PER_DAY, NEVER
from rules.decision import Decider, Reason, Source


class Retraction(StrEnum):
    """Why a retraction was written (Revocation.reason): no personal data in it."""

    OPTED_OUT = "opted_out"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    ACCOUNT_DELETED = "account_deleted"
    AGE_CORRECTED = "age_corrected"
    REGION_CORRECTED = "region_corrected"
    CONTENT_DELETED = "content_deleted"
    MADE_NON_PUBLIC = "made_non_public"
    EDITED = "edited"
    POLICY_CHANGED = "policy_changed"


# ContentChange.change symbol -> the retraction's reason.
CONTENT_RETRACTIONS: dict[str, Retraction] = {
    "DELETED": Retraction.CONTENT_DELETED,
    "MADE_NON_PUBLIC": Retraction.MADE_NON_PUBLIC,
    "EDITED": Retraction.EDITED,
}
# Retractions a reader never replaces, and the service keeps in the opt-out filter for good.
PERMANENT: frozenset[Retraction] = frozenset({Retraction.OPTED_OUT, Retraction.ACCOUNT_DELETED})


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """An account as its latest AccountChange states it. `birth_day`: days since 1970-01-01, or None
    (unknown); `country` as given (normalised by the policy)."""

    deleted: bool
    birth_day: int | None
    country: str


def _never(_: object) -> bool:
    return False


def _always(_: object) -> bool:
    return True


def recheck(decider: Decider, source: Source, facts: AccountFacts, created_ms: int, latest_ms: int) -> Reason:
    """The reason for a record whose own facts passed (or lacked only a birth date), decided again with
    its account's facts. The opt-out and consent checks are the caller's (they passed already)."""
    if facts.deleted:
        return Reason.ACCOUNT_DELETED
    return decider.decide(source, True, facts.country, facts.birth_day, created_ms, latest_ms, b"", _never, _always)


def account_retraction(decider: Decider, facts: AccountFacts, latest_ms: int) -> tuple[Retraction, int | None]:
    """What an account's facts retract of its author's records, under `decider`'s policy: (reason,
    created_before in ms; None: all of them). Deleted: all, for good. A country outside the regions,
    or an unknown or impossible birth date: all (while those are the facts). A birth date by which the
    author is past the policy's maximum plausible age by `latest_ms` (the latest creation time a record
    can have now): all too, since a retraction cannot name "created after", and records from that age
    on are refused. Otherwise the records created before the author reached the minimum age."""
    if facts.deleted:
        return Retraction.ACCOUNT_DELETED, None
    if decider.allowed_country(facts.country) is None:
        return Retraction.REGION_CORRECTED, None
    bounds = decider.age_bounds(facts.birth_day) if facts.birth_day is not None else None
    if bounds is None or bounds[0] >= NEVER or bounds[1] * MS_PER_DAY <= latest_ms:
        return Retraction.AGE_CORRECTED, None
    return Retraction.AGE_CORRECTED, bounds[0] * MS_PER_DAY


__all__ = ["CONTENT_RETRACTIONS", "PERMANENT", "AccountFacts", "Retraction", "account_retraction", "recheck"]
