"""A batch that keeps what its receipts say (docs/audit.md): per input partition the range decided and
the decisions, where its outputs went, and the feeds' positions it was decided with.

The hot loop adds to it once per run of a partition's records (`add_run`), not per record; only the
delivery report of an output does per-record work (its partition and offset), and only when receipts
are written. A batch with receipts to write is not done, so its offsets are not stored, until they
are acknowledged too (at least once), or it joins its transaction's commit (exactly once).
"""

from __future__ import annotations

from typing import Any

from consumer.datapath.offsets import PendingBatch, Provenance, TopicPartition

MALFORMED = "malformed"  # the decision of an input record that became a dead letter
UNDELIVERABLE = "undeliverable"  # an eligible record whose output the broker refused until it was given up


class Range:
    """One input partition's part of the batch."""

    __slots__ = ("dead_letters", "decisions", "first", "last")

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.decisions: dict[Any, int] = {}  # by Reason, or by name (dead letters): str() of either
        self.dead_letters: dict[str, int] = {}

    @property
    def records(self) -> int:
        return sum(self.decisions.values())


class AuditedBatch(PendingBatch):
    __slots__ = ("batch_id", "decided_at_ms", "feeds", "ranges", "receipts_due", "spans", "training_spans")

    def __init__(self, output: str = "training") -> None:
        super().__init__(output)
        self.ranges: dict[TopicPartition, Range] = {}
        # Training partition -> [first offset, last offset, records] of the records acknowledged (one
        # producer delivers a partition's records in the order produced: the last is the highest).
        self.training_spans: dict[int, list[int]] = {}
        # (topic, partition) -> the same, of the dead letters (rare: kept the general way).
        self.spans: dict[TopicPartition, list[int]] = {}
        self.feeds: list[tuple[str, str, int, int]] = []  # (feed, topic, partition, next offset)
        self.decided_at_ms = 0
        self.batch_id = ""
        self.receipts_due = True  # not yet written

    def delivered(self, err: Any, msg: Any) -> None:
        """A training record's delivery report: PendingBatch's, and where it went (inlined: per record)."""
        if err is not None:
            PendingBatch.delivered(self, err, msg)
            return
        self.outstanding -= 1
        self.produced += 1
        offset = msg.offset()
        span = self.training_spans.get(msg.partition())
        if span is None:
            self.training_spans[msg.partition()] = [offset, offset, 1]
        else:
            span[1] = offset
            span[2] += 1

    def dead_letter_report(self, provenance: Provenance, headers: list[tuple[str, bytes]], truncated: bool) -> Any:
        report = super().dead_letter_report(provenance, headers, truncated)

        def spanned(err: Any, msg: Any) -> None:
            report(err, msg)
            if err is None:
                self._span(msg.topic(), msg.partition(), msg.offset())

        return spanned

    def receipt_report(self, err: Any, msg: Any) -> None:
        """The delivery report of one of this batch's receipts."""
        self.outstanding -= 1
        if err is not None and self.error is None:
            self.error, self.error_output = err.name(), "audit"

    def _span(self, topic: str, partition: int, offset: int) -> None:
        span = self.spans.get((topic, partition))
        if span is None:
            self.spans[topic, partition] = [offset, offset, 1]
        else:  # in order within a partition, but an output written again may come later
            if offset > span[1]:
                span[1] = offset
            elif offset < span[0]:
                span[0] = offset
            span[2] += 1

    # -- what the hot loop and the dead-letter writer tell it -------------------------------------

    def add_run(self, topic: str, partition: int, first: int, last: int, counts: dict[Any, int]) -> None:
        """A run of one partition's records decided: `counts` by Reason (named when written)."""
        found = self.ranges.get((topic, partition))
        if found is None:
            found = self.ranges[topic, partition] = Range(first, last)
        else:  # a dead letter inside the run may have opened its range already
            if first < found.first:
                found.first = first
            if last > found.last:
                found.last = last
        decisions = found.decisions
        for reason, count in counts.items():
            decisions[reason] = decisions.get(reason, 0) + count

    def note_dead_letter(self, provenance: Provenance, cause: str, decision: str) -> None:
        topic, partition, offset = provenance
        found = self.ranges.get((topic, partition))
        if found is None:
            found = self.ranges[topic, partition] = Range(offset, offset)
        else:
            found.first, found.last = min(found.first, offset), max(found.last, offset)
        if decision:  # empty: the record's decision is counted already (eligible, its output refused)
            found.decisions[decision] = found.decisions.get(decision, 0) + 1
        found.dead_letters[cause] = found.dead_letters.get(cause, 0) + 1

    def forget(self, partitions: set[TopicPartition]) -> None:
        for key in partitions:
            self.ranges.pop(key, None)

    @property
    def outputs_done(self) -> bool:
        return self.sealed and self.outstanding == 0 and not self.rejected and self.error is None

    @property
    def done(self) -> bool:
        return self.outputs_done and not self.receipts_due
