"""At-least-once bookkeeping: an input offset is stored only after every record produced for it,
and for every earlier input record of its partition, is acknowledged by the broker.

Each consumed batch becomes a `PendingBatch` that counts its outstanding deliveries. Batches
complete in consume order; the tracker releases the next offsets of a completed batch, and of all
completed batches before it, never past a batch still in flight or one that failed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError

TopicPartition = tuple[str, int]
Provenance = tuple[str, int, int]  # the input record's topic, partition and offset

# Errors of one record that retrying cannot cure: the broker will never take it as it is. They
# become dead letters; any other delivery error stops the service (nothing is committed past it).
PER_RECORD_ERRORS = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.RECORD_LIST_TOO_LARGE}
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An output the broker refused for good. `provenance` is known for dead letters; a training
    record carries its own in its value."""

    output: str  # "training" or "dlq"
    value: bytes | None
    key: bytes | None
    provenance: Provenance | None
    headers: list[tuple[str, bytes]] | None  # a dead letter's: delivery reports do not carry them
    error: str


class ProduceFailed(Exception):
    """A record could not be delivered even after the producer's retries; the service must stop
    without committing past it. Carries only the error name and the output."""

    def __init__(self, error: str, output: str) -> None:
        super().__init__(f"{error} producing to {output}")
        self.error = error
        self.output = output


class PendingBatch:
    __slots__ = (
        "dead_lettered",
        "error",
        "error_output",
        "next_offsets",
        "output",
        "outstanding",
        "produced",
        "rejected",
        "sealed",
    )

    def __init__(self, output: str = "training") -> None:
        self.output = output  # what `delivered` reports on: the training topic, or the revocations topic
        self.next_offsets: dict[TopicPartition, int] = {}
        self.outstanding = 0
        self.produced = 0  # acknowledged records of `output`
        self.dead_lettered = 0  # acknowledged dead letters
        self.sealed = False
        self.error: str | None = None
        self.error_output = ""
        self.rejected: list[Rejected] = []  # outputs to dead-letter before the batch can complete

    def expect(self) -> None:
        """Call before each produce() whose delivery callback is `self.delivered`."""
        self.outstanding += 1

    def delivered(self, err: Any, msg: Any) -> None:
        """Delivery report of a record of `output` (runs inside producer.poll()/flush() on this thread)."""
        self.outstanding -= 1
        if err is None:
            self.produced += 1
        elif self.output == "training" and err.code() in PER_RECORD_ERRORS:
            self.rejected.append(Rejected("training", msg.value(), msg.key(), None, None, err.name()))
        elif self.error is None:
            self.error, self.error_output = err.name(), self.output

    def dead_letter_report(
        self, provenance: Provenance, headers: list[tuple[str, bytes]], truncated: bool
    ) -> Callable[[Any, Any], None]:
        """The delivery callback of one dead letter (rare enough for a closure each)."""

        def report(err: Any, msg: Any) -> None:
            self.outstanding -= 1
            if err is None:
                self.dead_lettered += 1
            elif not truncated and err.code() in PER_RECORD_ERRORS:
                self.rejected.append(Rejected("dlq", None, None, provenance, headers, err.name()))
            elif self.error is None:  # not even the headers-only letter was taken: the DLQ is unusable
                self.error, self.error_output = err.name(), "dlq"

        return report

    @property
    def done(self) -> bool:
        return self.sealed and self.outstanding == 0 and not self.rejected

    # What a batch with receipts keeps (consumer/audit/audited_batch.py); nothing here.
    def note_dead_letter(self, provenance: Provenance, cause: str, decision: str) -> None:
        pass

    def forget(self, partitions: set[TopicPartition]) -> None:
        pass


class OffsetTracker:
    def __init__(self, batch_type: type[PendingBatch] = PendingBatch) -> None:
        self.batch_type = batch_type
        self._batches: deque[PendingBatch] = deque()
        self.produced = 0  # acknowledged records (training or revocations) of released batches, for the metrics
        self.dead_lettered = 0

    def open(self, output: str = "training") -> PendingBatch:
        batch = self.batch_type(output)
        self._batches.append(batch)
        return batch

    @staticmethod
    def seal(batch: PendingBatch, consumed: Iterable[tuple[str, int, int]]) -> None:
        """Record the consumed (topic, partition, offset) of the batch; it may now complete."""
        nexts = batch.next_offsets
        for topic, partition, offset in consumed:
            key = (topic, partition)
            if nexts.get(key, -1) <= offset:
                nexts[key] = offset + 1
        batch.sealed = True

    def release(self) -> dict[TopicPartition, int]:
        """Next offsets that may be stored now: those of the leading run of completed batches.

        Raises ProduceFailed as soon as any batch has a failed delivery.
        """
        ready: dict[TopicPartition, int] = {}
        batches = self._batches
        for batch in batches:  # a handful in flight at most
            if batch.error is not None:
                raise ProduceFailed(batch.error, batch.error_output)
        while batches:
            head = batches[0]
            if not head.done:
                break
            ready.update(head.next_offsets)
            self.produced += head.produced
            self.dead_lettered += head.dead_lettered
            batches.popleft()
        return ready

    def leading(self) -> list[PendingBatch]:
        """The batches in consume order (receipts are written in that order)."""
        return list(self._batches)

    def with_rejections(self) -> list[PendingBatch]:
        return [b for b in self._batches if b.rejected]

    def in_flight(self) -> int:
        return sum(b.outstanding for b in self._batches)

    def clear(self) -> None:
        self._batches.clear()

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop the offsets of partitions no longer owned (revoked or lost): never store them."""
        for batch in self._batches:
            for key in partitions:
                batch.next_offsets.pop(key, None)
            batch.forget(partitions)

    def __len__(self) -> int:
        return len(self._batches)
