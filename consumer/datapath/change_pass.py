"""The batch's side of the change set (consumer/changes/guard.py): what a change does to a record's
decision, for the active policy and, with a shadow, the candidate's, and the batch's list of their
differences kept right. Called by `BatchProcessor.process` only when a record hits the change set
(rare), so it is written for clarity, not speed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumer.changes.guard import ChangeGuard
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.datapath.shadow import Pair, Shadow
from rules import Decider, Reason, Source

ELIGIBLE = Reason.ELIGIBLE
# Refusals the change set may relabel or overturn (ChangeGuard.second_look).
SECOND_LOOKS = frozenset({Reason.OPTED_OUT, Reason.UNKNOWN_AGE})


class ChangePass:
    def __init__(
        self,
        guard: ChangeGuard | None,
        decider: Decider,
        shadow: Shadow | None,
        pseudonymiser: Pseudonymiser,
        opted_out: Callable[[bytes], bool],
        consented: Callable[[bytes], bool] | None,
    ) -> None:
        self.guard = guard
        self.decider = decider
        self.shadow = shadow
        self.pseudonym = pseudonymiser.pseudonym
        self.opted_out = opted_out
        self.consented = consented

    def refusal(
        self,
        source: Source,
        value: bytes,
        fields: tuple[Any, ...],
        pseudonym: bytes,
        latest: int,
        differ: list[Pair] | None,
        shadow: Any,
    ) -> Reason | None:
        """Why a record the active policy admits is refused by the change set now, or None."""
        assert self.guard is not None
        refusal = self.guard.refusal(self.decider, source, value, fields, pseudonym, latest)
        if differ is not None and self.shadow is not None:
            shadow_refusal = shadow
            if shadow is ELIGIBLE:
                shadow_refusal = self.guard.refusal(self.shadow.decider, source, value, fields, pseudonym, latest)
            redo_pair(differ, source, ELIGIBLE, shadow, refusal or ELIGIBLE, shadow_refusal or ELIGIBLE)
        return refusal

    def shadow_only(
        self, source: Source, value: bytes, fields: tuple[Any, ...], active: Reason, latest: int, differ: list[Pair]
    ) -> None:
        """A record the active policy refuses and the candidate admits: the candidate's decision with the
        change set too (a deleted record is out under any policy), so its would-add is not overstated."""
        if self.guard is None or self.shadow is None:
            return
        pseudonym = self.pseudonym(fields[1])
        refusal = self.guard.refusal(self.shadow.decider, source, value, fields, pseudonym, latest)
        if refusal is not None:
            redo_pair(differ, source, active, ELIGIBLE, active, refusal)

    def second_look(
        self,
        source: Source,
        reason: Reason,
        fields: tuple[Any, ...],
        latest: int,
        differ: list[Pair] | None,
        shadow: Any,
    ) -> tuple[Reason, Any]:
        """A refusal looked at again with the account's facts: `account_deleted` for an opt-out of a
        deleted account, or a decision with the account's birth date for a record that had none. Both
        policies' reasons now (the shadow's as given when there is none): the batch goes on with them,
        and the list of differences says the same."""
        pseudonym = self.pseudonym(fields[1])
        again = self._again(self.decider, source, reason, fields, pseudonym, latest)
        if differ is not None and self.shadow is not None:
            shadow_again = self._again(self.shadow.decider, source, shadow, fields, pseudonym, latest)
            redo_pair(differ, source, reason, shadow, again, shadow_again)
            return again, shadow_again
        return again, shadow

    def _again(
        self, decider: Decider, source: Source, reason: Reason, fields: tuple[Any, ...], pseudonym: bytes, latest: int
    ) -> Reason:
        assert self.guard is not None
        again = self.guard.second_look(decider, source, reason, fields, pseudonym, latest)
        if again is ELIGIBLE:  # admitted with the account's birth date: the checks recheck() leaves out
            if self.opted_out(fields[1]):
                return Reason.OPTED_OUT
            if decider.opt_in and (self.consented is None or not self.consented(fields[1])):
                return Reason.NO_CONSENT
        return again  # the record id and the consent bound are checked with the records admitted


def redo_pair(
    differ: list[Pair], source: Source, active: Reason, shadow: Reason, again: Reason, shadow_again: Reason
) -> None:
    """A record's two decisions changed (active -> again, shadow -> shadow_again): its entry in the batch's
    list of differences (the last one, if the two differed) made to say so."""
    if shadow is not active:
        differ.pop()
    if shadow_again is not again:
        differ.append((source, again, shadow_again))
