"""`check --content-changes FILE --account-changes FILE`: a record decided as the service decides it
now that it has read those changes (docs/retractions.md#what-happens-when-).

The same steps as the hot loop's (consumer/datapath/batch.py with consumer/changes/guard.py), on
decoded fields instead of the fast path's bytes:

1. the record's own facts, with deleted accounts counted as opted out (the service keeps them out
   through the opt-out filter, for good);
2. a refusal looked at again with the account's facts: `opted_out` of a deleted account is
   `account_deleted`; `unknown_age` for want of a birth date of its own is decided with the account's
   (`rules.recheck`), and an admission then still needs the opt-out and consent checks;
3. an admitted record whose id a content change stopped is `content_changed`; one whose author has
   an account change is decided again with the account's facts (`rules.recheck`: stricter only).

tests/unit/test_check_changes.py holds this to the in-process service on the same records and changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from consumer.commands.change_lines import KnownChanges
from rules import Decider, Reason, Source, recheck
from rules.decision import record_fields

_ELIGIBLE = Reason.ELIGIBLE
_ID_FIELDS = {Source.POST: "post_id", Source.AI_INTERACTION: "interaction_id"}


def decide_now(
    decider: Decider,
    source: Source,
    record: Mapping[str, Any],
    latest_ms: int,
    opted_out: Callable[[str], bool],
    consented: Callable[[str], bool] | None,
    known: KnownChanges,
) -> Reason:
    """The record's reason under `decider`, with the changes of `known` applied."""
    fields = record_fields(source, record)
    if fields is None:
        return Reason.MALFORMED
    public, country, birth_day, created_ms, user_id = fields
    deleted = known.deleted

    def kept_out(user: str) -> bool:
        return user in deleted or opted_out(user)

    reason = decider.decide(source, public, country, birth_day, created_ms, latest_ms, user_id, kept_out, consented)
    facts = known.accounts.get(user_id)
    if reason is not _ELIGIBLE:
        if facts is None:
            return reason
        if reason is Reason.OPTED_OUT:
            return Reason.ACCOUNT_DELETED if facts.deleted else reason
        if reason is not Reason.UNKNOWN_AGE or birth_day is not None:
            return reason
        if facts.birth_day is None and not facts.deleted:
            return reason
        reason = recheck(decider, source, facts, created_ms, latest_ms)
        if reason is not _ELIGIBLE:
            return reason
        if kept_out(user_id):
            return Reason.OPTED_OUT
        if decider.opt_in and (consented is None or not consented(user_id)):
            return Reason.NO_CONSENT
    if record[_ID_FIELDS[source]] in known.stopped:
        return Reason.CONTENT_CHANGED
    if facts is not None:
        return recheck(decider, source, facts, created_ms, latest_ms)
    return _ELIGIBLE
