"""The eligibility decision: cheapest check first; the first failing check names the reason."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from rules.age import MS_PER_DAY, date_from_day, day_from_date, nth_birthday
from rules.countries import normalise_country
from rules.policy import Policy


class Reason(StrEnum):
    MALFORMED = "malformed"
    SOURCE_EXCLUDED = "source_excluded"
    NOT_PUBLIC = "not_public"
    REGION = "region"
    FUTURE_DATED = "future_dated"
    UNKNOWN_AGE = "unknown_age"
    UNDER_AGE = "under_age"
    OPTED_OUT = "opted_out"
    NO_CONSENT = "no_consent"
    # The truth changed after the record was written (rules/changes.py): the record was deleted, made
    # non-public or replaced by an edit, or its author's account was deleted.
    CONTENT_CHANGED = "content_changed"
    ACCOUNT_DELETED = "account_deleted"
    ELIGIBLE = "eligible"


REASONS: tuple[Reason, ...] = tuple(Reason)
# The default allowance for a record's created_at ahead of the deciding clock (TF_CLOCK_SKEW_SECONDS).
DEFAULT_CLOCK_SKEW_MS = 300_000
_SOURCE_EXCLUDED = Reason.SOURCE_EXCLUDED
_NOT_PUBLIC = Reason.NOT_PUBLIC
_REGION = Reason.REGION
_FUTURE_DATED = Reason.FUTURE_DATED
_UNKNOWN_AGE = Reason.UNKNOWN_AGE
_UNDER_AGE = Reason.UNDER_AGE
_OPTED_OUT = Reason.OPTED_OUT
_NO_CONSENT = Reason.NO_CONSENT
_ELIGIBLE = Reason.ELIGIBLE


class Source(StrEnum):
    POST = "POST"
    AI_INTERACTION = "AI_INTERACTION"


# Bounds on the memo tables: hostile input with millions of distinct countries or birth dates must
# not grow memory without limit. Real data has a few hundred countries and ~45k plausible birth dates.
_COUNTRY_MEMO_MAX = 4096
_BIRTH_MEMO_MAX = 100_000

OptedOut = Callable[[Any], bool]
Consented = Callable[[Any], bool]


class Decider:
    """Applies one `Policy`. Pure: the same inputs always give the same reason.

    The hot loop calls `decide` with primitive, already-decoded fields (countries and user ids may be
    the raw UTF-8 bytes sliced from the Avro body); `decide_record` adapts a decoded Avro record.
    """

    __slots__ = (
        "_birth_memo",
        "_country_memo",
        "_include",
        "_max_age",
        "_min_age",
        "_opt_in",
        "policy",
        "regions",
    )

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.regions = policy.regions
        self._min_age = policy.minimum_age
        self._max_age = policy.maximum_plausible_age
        self._opt_in = policy.consent_model == "opt_in"
        self._include = {Source.POST: policy.include_posts, Source.AI_INTERACTION: policy.include_ai_interactions}
        self._country_memo: dict[str | bytes, str | None] = {}
        self._birth_memo: dict[int, tuple[int, int]] = {}

    # -- building blocks -------------------------------------------------------------------------

    def includes(self, source: Source) -> bool:
        """Whether the policy takes records of `source` at all."""
        return self._include[source]

    @property
    def opt_in(self) -> bool:
        """Whether eligibility needs a consent (consent_model = "opt_in")."""
        return self._opt_in

    def allowed_country(self, raw: str | bytes) -> str | None:
        """The normalised country code when it is in the policy's regions, else None."""
        memo = self._country_memo
        code = memo.get(raw, False)
        if code is not False:
            return code  # type: ignore[return-value]
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
        else:
            text = raw
        normal = normalise_country(text)
        result = normal if normal in self.regions else None
        if len(memo) < _COUNTRY_MEMO_MAX:
            memo[raw] = result
        return result

    def age_bounds(self, birth_day: int) -> tuple[int, int] | None:
        """(first day of the minimum age, first day of an implausible age), or None if no such date."""
        bounds = self._birth_memo.get(birth_day)
        if bounds is None:
            birth = date_from_day(birth_day)
            if birth is None:
                return None
            bounds = (nth_birthday(birth, self._min_age), nth_birthday(birth, self._max_age + 1))
            if len(self._birth_memo) < _BIRTH_MEMO_MAX:
                self._birth_memo[birth_day] = bounds
        return bounds

    # -- the decision ----------------------------------------------------------------------------

    def decide(
        self,
        source: Source,
        public: bool,
        raw_country: str | bytes,
        birth_day: int | None,
        created_ms: int,
        latest_ms: int,
        user_id: str | bytes,
        opted_out: OptedOut,
        consented: Consented | None = None,
    ) -> Reason:
        """The reason for one well-formed record.

        `public` is visibility == PUBLIC for a post and context == DIRECT_WITH_AI for an interaction;
        `birth_day` is days since 1970-01-01 or None; `latest_ms` is the latest plausible creation time
        (the caller's clock plus its skew allowance: the rules read no clock), because the age check
        runs at `created_at` and a post dated years ahead would make a child an adult. `opted_out(user_id)`
        is asked last because it
        is the only check that consults shared state (with an opt-in policy, `consented(user_id)`
        after it: an opt-out wins over a consent). Under opt-in, no consent test means no consent.
        """
        if not self._include[source]:
            return _SOURCE_EXCLUDED
        if not public:
            return _NOT_PUBLIC
        # Memo look-ups inlined and reasons bound to module names (an enum attribute look-up costs
        # 0.1 µs): this runs once per record in the hot loop.
        code = self._country_memo.get(raw_country, False)
        if code is False:
            code = self.allowed_country(raw_country)
        if code is None:
            return _REGION
        if created_ms > latest_ms:
            return _FUTURE_DATED
        if birth_day is None:
            return _UNKNOWN_AGE
        created_day = created_ms // MS_PER_DAY  # the UTC calendar day; floor division keeps pre-1970 right
        if birth_day > created_day:
            return _UNKNOWN_AGE
        bounds = self._birth_memo.get(birth_day)
        if bounds is None:
            bounds = self.age_bounds(birth_day)
        if bounds is None or created_day >= bounds[1]:
            return _UNKNOWN_AGE
        if created_day < bounds[0]:
            return _UNDER_AGE
        if opted_out(user_id):
            return _OPTED_OUT
        if self._opt_in and (consented is None or not consented(user_id)):
            return _NO_CONSENT
        return _ELIGIBLE

    def decide_record(
        self,
        source: Source,
        record: Mapping[str, Any],
        latest_ms: int,
        opted_out: OptedOut,
        consented: Consented | None = None,
    ) -> Reason:
        """The reason for a record decoded by fastavro (or parsed from JSON into the same types)."""
        fields = record_fields(source, record)
        if fields is None:
            return Reason.MALFORMED
        public, country, birth_day, created_ms, user_id = fields
        return self.decide(source, public, country, birth_day, created_ms, latest_ms, user_id, opted_out, consented)


def record_fields(source: Source, record: Mapping[str, Any]) -> tuple[bool, str, int | None, int, str] | None:
    """(public, country, birth day, created ms, user id) of a decoded record, or None if malformed.

    Accepts what fastavro yields for the logical types (datetime.date, aware datetime) and the raw
    Avro values (int days, int milliseconds).
    """
    try:
        if source is Source.POST:
            record_id = record["post_id"]
            user_id = record["author_id"]
            birth = record.get("author_birth_date")
            country = record["author_country"]
            public = record["visibility"] == "PUBLIC"
            if record["visibility"] not in _VISIBILITY:
                return None
        else:
            record_id = record["interaction_id"]
            user_id = record["user_id"]
            birth = record.get("user_birth_date")
            country = record["user_country"]
            public = record["context"] == "DIRECT_WITH_AI"
            if record["context"] not in _CONTEXTS:
                return None
        created = record["created_at"]
    except (KeyError, TypeError):
        return None
    if not (isinstance(record_id, str) and isinstance(user_id, str) and isinstance(country, str)):
        return None
    birth_day = _as_day(birth)
    if birth_day is _INVALID:
        return None
    created_ms = _as_epoch_ms(created)
    if created_ms is None:
        return None
    return public, country, birth_day, created_ms, user_id


_VISIBILITY = frozenset({"PUBLIC", "FRIENDS", "FRIENDS_OF_FRIENDS", "CUSTOM", "ONLY_ME"})
_CONTEXTS = frozenset({"DIRECT_WITH_AI", "GROUP_CHAT"})
_INVALID = object()


def _as_day(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dt.datetime):  # a datetime is a date subclass; it is not a date here
        return _INVALID
    if isinstance(value, dt.date):
        return day_from_date(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _INVALID


def _as_epoch_ms(value: Any) -> int | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return None  # a naive instant is ambiguous: fail closed
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

__all__ = ["DEFAULT_CLOCK_SKEW_MS", "REASONS", "Decider", "Reason", "Source", "record_fields"]
