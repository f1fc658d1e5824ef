"""The hot loop's checks against the change set (consumer/changes/changeset.py) and, under an opt-in
policy, the consent bounds of re-granted consents (consumer/consents/applier.py).

Asked only of records a policy admits, after the pseudonym is computed (the output needs it anyway):
the loop itself does the cheap part inline (one Bloom look-up of the record id's bytes, two dict
look-ups when those dicts are not empty) and calls `refusal` only on a hit. The two second looks at
refused records are rare: a record refused `opted_out` whose account was deleted is counted
`account_deleted`, and one refused `unknown_age` for want of a birth date of its own is decided with
its account's, if the account has one.
"""

from __future__ import annotations

from typing import Any

from consumer.changes.changeset import ChangeSet
from rules import Decider, Reason, Source, recheck

_ELIGIBLE = Reason.ELIGIBLE


class ChangeGuard:
    __slots__ = ("accounts", "bounds", "stopped")

    def __init__(self, changes: ChangeSet, consent_bounds: dict[bytes, int] | None = None) -> None:
        # The sets themselves, not copies: their mirrors update them in place (under their locks, between
        # batches: consumer/feeds/mirror.py).
        self.stopped = changes.records.contains  # Avro-encoded record id -> bool
        self.accounts = changes.accounts  # pseudonym -> AccountFacts
        self.bounds = consent_bounds if consent_bounds is not None else {}  # pseudonym -> consented from (ms)

    def refusal(
        self, decider: Decider, source: Source, value: bytes, fields: tuple[Any, ...], pseudonym: bytes, latest_ms: int
    ) -> Reason | None:
        """Why a record `decider` admits is refused now, or None. `fields` in the fast path's layout of
        the v1 `value` (the record id is value[5:fields[0]], created_at fields[8])."""
        if self.stopped(value[5 : fields[0]]):
            return Reason.CONTENT_CHANGED
        facts = self.accounts.get(pseudonym)
        if facts is not None:
            reason = recheck(decider, source, facts, fields[8], latest_ms)
            if reason is not _ELIGIBLE:
                return reason
        since = self.bounds.get(pseudonym)
        if since is not None and fields[8] < since:
            return Reason.NO_CONSENT  # written before the grant that followed a withdrawal
        return None

    def second_look(
        self,
        decider: Decider,
        source: Source,
        reason: Reason,
        fields: tuple[Any, ...],
        pseudonym: bytes,
        latest_ms: int,
    ) -> Reason:
        """A refused record's reason, looked at again with its account's facts (see the module docstring).
        An admission here still needs the caller's opt-out and consent checks."""
        facts = self.accounts.get(pseudonym)
        if facts is None:
            return reason
        if reason is Reason.OPTED_OUT:
            return Reason.ACCOUNT_DELETED if facts.deleted else reason
        if reason is Reason.UNKNOWN_AGE and fields[2] is None and (facts.birth_day is not None or facts.deleted):
            return recheck(decider, source, facts, fields[8], latest_ms)
        return reason
