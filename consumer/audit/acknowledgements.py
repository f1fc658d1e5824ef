"""What a recipient has acknowledged of the revocations topic, from offsets alone: pure arithmetic, no
Kafka (consumer/audit/recipients.py asks the broker for the numbers).

A recipient is a consumer group with a committed offset on the training topic. Kafka keeps, per
group and partition, the offset the group will read next: every revocation before it has been read
and committed, which is as near to "acknowledged" as Kafka can say, and every one from it to the
partition's end has not. So per revocations partition the count not yet acknowledged is
end - committed, and the oldest unacknowledged revocation is the record AT the committed offset:
its timestamp says how long the recipient has sat on it. A group with no committed offset on a
partition has acknowledged nothing there, from the log start on; a group with none on any partition
does not read the revocations topic at all, which is the worst case Art. 19 knows.

A recipient may read the revocations under a group of its own, named after the training group: the
recipes (docs/recipes/) read the training topic as `G` and the revocations as `G-retractions`. So a
recipient's acknowledgements are those of `G` on the revocations topic, or else of the first of its
companions (COMPANIONS) that committed there.

The counts are offsets. Under exactly-once a transaction's commit marker takes an offset too, so a
count may exceed the revocations by the markers, never fall short of them; a partition where nothing
readable lies between the committed offset and the end (only markers) counts 0.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

# How long a recipient may sit on a revocation (docs/recipients.md says why): the bound of the
# TrainingFilterRecipientSitsOnRevocations alert and of `training-filter audit recipients`.
BOUND_SECONDS = 3600

# The groups whose commits on the revocations topic count for a recipient G: G itself, then these.
COMPANIONS = ("-retractions", "-revocations")

# What the scan found at an offset: the record's timestamp (epoch ms), or NOTHING_THERE when no
# readable record lies between that offset and the partition's end (transaction markers only).
NOTHING_THERE = None


@dataclass(frozen=True)
class PartitionAck:
    """One revocations partition, as one recipient stands on it."""

    partition: int
    committed: int | None  # None: the group has committed nothing here
    start: int  # the log start offset
    end: int  # the offset the next revocation will get (last stable offset)
    unacknowledged: int
    oldest_timestamp_ms: int | None  # of the oldest unacknowledged revocation; None: nothing to wait on

    @property
    def oldest_offset(self) -> int | None:
        return None if self.unacknowledged == 0 else first_unacknowledged(self.committed, self.start)


@dataclass(frozen=True)
class Recipient:
    """One consumer group that reads the training topic, and what it has acknowledged."""

    group: str
    partitions: tuple[PartitionAck, ...]
    acknowledged_by: str = ""  # the group whose commits on the revocations topic count (default: `group`)

    @property
    def reads_revocations(self) -> bool:
        """Has the group committed on any revocations partition? (An empty topic: none to read.)"""
        return any(p.committed is not None for p in self.partitions)

    @property
    def unacknowledged(self) -> int:
        return sum(p.unacknowledged for p in self.partitions)

    @property
    def oldest_timestamp_ms(self) -> int | None:
        stamps = [p.oldest_timestamp_ms for p in self.partitions if p.oldest_timestamp_ms is not None]
        return min(stamps) if stamps else None

    def oldest_seconds(self, now_ms: int) -> float:
        """How long the oldest unacknowledged revocation has waited (0 when none waits). A clock behind
        the producer's makes it 0, never negative."""
        oldest = self.oldest_timestamp_ms
        return 0.0 if oldest is None else max(0, now_ms - oldest) / 1000


def acknowledging_group(group: str, readers: Collection[str]) -> str:
    """The group whose revocations offsets count for the recipient `group`: itself if it committed on the
    revocations topic, else its first companion that did, else itself (it acknowledged nothing)."""
    for candidate in (group, *(group + suffix for suffix in COMPANIONS)):
        if candidate in readers:
            return candidate
    return group


def first_unacknowledged(committed: int | None, start: int) -> int:
    """Where the oldest revocation a group has not acknowledged lies: its committed offset, or the log
    start when it committed nothing or its offset has been deleted by retention since."""
    return start if committed is None else max(committed, start)


def pending(committed: int | None, start: int, end: int) -> int:
    """Offsets from the group's committed offset (the log start without one) to the end. Records
    retention deleted before the group read them count too: they were never acknowledged."""
    return max(0, end - (start if committed is None else committed))


def to_read(committed: Mapping[int, int], starts: Mapping[int, int], ends: Mapping[int, int]) -> set[tuple[int, int]]:
    """The (partition, offset) of each partition's oldest unacknowledged revocation: whose timestamp
    the scan must read."""
    wanted = set()
    for partition, end in ends.items():
        start = starts[partition]
        if pending(committed.get(partition), start, end) > 0:
            wanted.add((partition, first_unacknowledged(committed.get(partition), start)))
    return wanted


def assess(
    group: str,
    committed: Mapping[int, int],
    starts: Mapping[int, int],
    ends: Mapping[int, int],
    timestamps: Mapping[tuple[int, int], int | None],
    acknowledged_by: str = "",
) -> Recipient:
    """The recipient `group` on every revocations partition of `ends`. `committed`: the committed
    offsets there of `acknowledged_by` (the recipient or its companion; absent: none); `timestamps`:
    what the scan read at each offset of `to_read` (a missing one is an error of the caller: a
    KeyError, never a silent 0)."""
    partitions = []
    for partition in sorted(ends):
        start, end, offset = starts[partition], ends[partition], committed.get(partition)
        count = pending(offset, start, end)
        stamp = None
        if count:
            stamp = timestamps[partition, first_unacknowledged(offset, start)]
            if stamp is NOTHING_THERE:
                count = 0
        partitions.append(PartitionAck(partition, offset, start, end, count, stamp))
    return Recipient(group, tuple(partitions), acknowledged_by or group)


def problems(recipient: Recipient, bound_seconds: float, now_ms: int) -> list[str]:
    """Why a recipient falls short of Art. 19, in words for the operator (empty: it does not)."""
    found = []
    # On a topic with nothing to acknowledge no group can have committed there: nothing to say yet.
    if not recipient.reads_revocations and recipient.unacknowledged > 0:
        found.append("does not read the revocations topic (no committed offset there)")
    waited = recipient.oldest_seconds(now_ms)
    if waited > bound_seconds:
        found.append(f"has sat on a revocation for {waited:.0f} s, longer than the bound of {bound_seconds:.0f} s")
    return found
