"""What the consent set cannot hold: who withdrew, and since when a re-granted consent counts
(docs/retractions.md#consent-withdrawn-then-granted-again).

A user who withdrew consent and granted it again is eligible only for records created at or after
the new grant: `since[pseudonym]` is that grant's time, and the hot loop refuses their earlier
records (consumer/changes/guard.py). `withdrawn[pseudonym]` is the latest withdrawal known, which
also puts a grant older than it in its place. A first grant's time is not kept (it would cost every
consented user an entry), so a withdrawal read after a newer grant withdraws: records of one user in
two partitions (the consent topic grew, which docs/retractions.md says not to do) fail closed, the
user out until their next grant.

Both are learnt from the consent topic and, for what compaction took from it, from the `consent/`
retractions on the revocations topic (the emitter wrote one per withdrawal and one per re-grant).
A re-grant read before its withdrawal's retraction is held back (`since` = BLOCKED: nothing counts)
until the re-grant's own retraction says since when. Bounded by `capacity` users: a withdrawal that
does not fit is reported to the caller, which keeps the user out for good instead (fail closed), and
counted in `kept_out` (saved with the snapshot: consumer/service/feed_parts.py resumes one that kept
users out only beside the opt-out filter that holds them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

BLOCKED = 1 << 62  # `since` of a re-grant whose time is not known yet: no record is old enough to count
# What one user costs in the two dicts (keys, values, slots): for the memory budget.
USER_BYTES = 250


class ConsentHistory:
    __slots__ = ("capacity", "kept_out", "since", "withdrawn")

    def __init__(
        self,
        capacity: int,
        withdrawn: dict[bytes, int] | None = None,
        since: dict[bytes, int] | None = None,
        kept_out: int = 0,
    ):
        self.capacity = capacity
        self.withdrawn: dict[bytes, int] = withdrawn if withdrawn is not None else {}
        self.since: dict[bytes, int] = since if since is not None else {}
        self.kept_out = kept_out  # users kept out through the opt-out filter instead (no room here)

    def __len__(self) -> int:
        return len(self.withdrawn)

    def clear(self) -> None:
        """In place: the hot loop holds `since` (consumer/changes/guard.py)."""
        self.withdrawn.clear()
        self.since.clear()
        self.kept_out = 0

    def withdraw(self, pseudonym: bytes, at_ms: int) -> bool:
        """A withdrawal at `at_ms`; False if it does not fit (the caller keeps the user out instead)."""
        known = self.withdrawn.get(pseudonym)
        if known is None and len(self.withdrawn) >= self.capacity:
            return False
        self.withdrawn[pseudonym] = at_ms if known is None else max(known, at_ms)
        self.since.pop(pseudonym, None)
        return True

    def grant(self, pseudonym: bytes, at_ms: int) -> bool:
        """A grant at `at_ms`: False if it is older than the latest withdrawal (ignore it); else True,
        and after a withdrawal it counts for records created from `at_ms` on."""
        known = self.withdrawn.get(pseudonym)
        if known is None:
            return True  # a first grant: the user's earlier content too, as before
        if at_ms <= known:
            return False
        if self._counted(pseudonym, known, at_ms) is None:
            self.since[pseudonym] = at_ms
        return True

    def _counted(self, pseudonym: bytes, known: int, at_ms: int) -> int | None:
        """The grant after the latest withdrawal (`known`) that counts already, if it is not later than
        `at_ms`: the first that followed the withdrawal; a repeat of it moves nothing."""
        current = self.since.get(pseudonym)
        if current is not None and current != BLOCKED and known < current <= at_ms:
            return current
        return None

    def regrant_bound(self, pseudonym: bytes, at_ms: int) -> int | None:
        """What a grant at `at_ms` makes eligible from, if the user withdrew before it (None: a first
        grant, or a withdrawal after it supersedes it): the first grant since that withdrawal."""
        known = self.withdrawn.get(pseudonym)
        if known is None or known >= at_ms:
            return None
        counted = self._counted(pseudonym, known, at_ms)
        return at_ms if counted is None else counted

    def withdrawal_retracted(self, pseudonym: bytes, at_ms: int, granted: bool) -> bool:
        """A `consent/` retraction of a withdrawal (created_before null) read back. `granted`: the consent
        set holds the user, by a grant whose time may not be known here (then nothing counts until the
        re-grant's retraction says since when). False if it does not fit."""
        known = self.withdrawn.get(pseudonym)
        if known is None and len(self.withdrawn) >= self.capacity:
            return False
        self.withdrawn[pseudonym] = at_ms if known is None else max(known, at_ms)
        current = self.since.get(pseudonym)
        if granted and (current is None or (current != BLOCKED and current <= at_ms)):
            self.since[pseudonym] = BLOCKED
        return True

    def regrant_retracted(self, pseudonym: bytes, since_ms: int) -> bool:
        """A `consent/` retraction of a re-grant (created_before = the grant's time) read back. False if
        it does not fit."""
        known = self.withdrawn.get(pseudonym)
        if known is None:
            if len(self.withdrawn) >= self.capacity:
                return False
            self.withdrawn[pseudonym] = since_ms - 1  # some withdrawal before it: older grants are stale
        elif known >= since_ms:
            return True  # withdrawn again after this re-grant: the later withdrawal stands
        if self._counted(pseudonym, self.withdrawn[pseudonym], since_ms) is None:
            self.since[pseudonym] = since_ms
        return True

    # -- snapshots ---------------------------------------------------------------------------------

    def rows(self) -> Iterator[list[Any]]:
        for pseudonym, at in self.withdrawn.items():
            yield [pseudonym.decode("ascii"), at, self.since.get(pseudonym)]

    @classmethod
    def from_rows(cls, capacity: int, rows: list[list[Any]], kept_out: int) -> ConsentHistory:
        withdrawn = {p.encode("ascii"): int(at) for p, at, _ in rows}
        since = {p.encode("ascii"): int(s) for p, _, s in rows if s is not None}
        return cls(capacity, withdrawn, since, kept_out)
