"""`training-filter audit verify`'s reading (docs/audit.md#verifying): what the window covers, and the
topics read for it, each once.

1. The window: every input partition's offsets by time (`offsets_for_times`) or as given.
2. The audit topic, from a little before the window (receipts are written after the records they
   cover were appended): every receipt signed, and each input partition's chain checked
   (consumer/audit/receipt_log.py). The receipts whose ranges meet the window are checked; the input
   read is the window widened to their whole ranges.
3. The feed topics, whole, as the mirrors read them (consumer/audit/feed_state.py), and the
   revocations topic's latest value per key.
4. The training topic from a little before the window: every record whose provenance is in the input
   read, by digest (consumer/audit/emitted.py); one elsewhere that no receipt covers, appended in the
   window, is `injected`. The dead-letter topic from as far back: the eligible records whose output
   the broker refused for good (their `output_rejected` letters), which are not on the training topic.

Then consumer/audit/verify_pass.py decides each receipt again and compares.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import IO, Any

from consumer.audit.coverage import Interval, merged
from consumer.audit.emitted import EmittedIndex, provenance_of, refused_output
from consumer.audit.feed_state import FeedStore
from consumer.audit.findings import Findings
from consumer.audit.receipt_log import Receipt, ReceiptLog
from consumer.audit.topic_reader import read_spans, reader_config
from consumer.commands.guarded import UsageError
from consumer.commands.offset_ranges import Ranges, by_offsets, by_time, whole
from consumer.commands.transactional_pass import Partition, PassError, Span
from consumer.feeds.ends import BrokerQueries, FeedError
from consumer.operations.clients import Clients
from consumer.operations.settings import Settings
from consumer.wire.codec import Codec

# Receipts and training records are written after the input they concern was appended, by another
# clock: they are read from this long before the window's first input record.
MARGIN_MS = 3_600_000
# Receipts read before that too, so that the first receipt of the window has its predecessor to link to.
CONTEXT_RECEIPTS = 1000
TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Window:
    since_ms: int | None = None
    until_ms: int | None = None
    offsets: dict[Partition, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Read:
    """What the topics held, for the pass."""

    window: dict[Partition, Span]
    log_start: dict[Partition, int]
    receipts: list[Receipt]  # signed ones meeting the window
    covered: dict[Partition, list[Interval]]  # by every signed receipt read
    hull: dict[Partition, Span]  # the input read: the window and the ranges of its receipts
    store: FeedStore
    in_force: dict[bytes, bytes | None]  # the revocations topic's latest value per key
    emitted: EmittedIndex
    audit_receipts: int = 0


class Reading:
    def __init__(self, settings: Settings, audit_key: bytes, audit_topic: str, clients: Clients, codec: Codec):
        self.s = settings
        self.key = audit_key
        self.audit_topic = audit_topic
        self.clients = clients
        self.codec = codec
        self.queries = BrokerQueries(
            clients, {"bootstrap.servers": settings.bootstrap_servers, **settings.kafka_common}
        )
        self.lookup = clients.consumer(reader_config(settings, True, f"{settings.group_id}-audit-verify"))

    def close(self) -> None:
        self.lookup.close()
        self.queries.close()

    def config(self, committed: bool) -> dict[str, Any]:
        return reader_config(self.s, committed, f"{self.s.group_id}-audit-verify")

    def read(self, window: Window, findings: Findings, err: IO[str]) -> Read:
        ranges = self._window(window, findings)
        t0 = window.since_ms if window.since_ms is not None else self._first_time(ranges)
        log = self._receipts(t0, findings)
        err.write(f"audit verify: {log.read:,} receipts read from {self.audit_topic}\n")
        receipts, hull = _meeting(log.receipts, ranges)
        covered: dict[Partition, list[Interval]] = {}
        for r in log.receipts:
            covered.setdefault(r.input, []).append((r.first, r.last))
        covered = {tp: merged(c) for tp, c in covered.items()}
        for tp, span in hull.items():
            hull[tp] = Span(max(span.start, ranges.log_start.get(tp, 0)), span.end)
        store = self._feeds(receipts)
        in_force = self._in_force()
        emitted = self._training(t0, window, hull, covered, findings)
        err.write(f"audit verify: {emitted.records:,} training records read from {self.s.training_topic}\n")
        self._refused(t0, hull, emitted)
        return Read(ranges.spans, ranges.log_start, receipts, covered, hull, store, in_force, emitted, log.read)

    def _window(self, window: Window, findings: Findings) -> Ranges:
        inputs = self.s.input_topics
        ranges = whole(self.queries, inputs)
        if window.offsets:
            unknown = sorted({t for t, _ in window.offsets} - set(inputs))
            if unknown:
                raise UsageError(f"--offsets names {', '.join(unknown)}, not an input topic ({', '.join(inputs)})")
            ranges = by_offsets(ranges, window.offsets)
            if ranges.not_retained:
                findings.add(
                    "not_retained",
                    None,
                    None,
                    None,
                    f"{ranges.not_retained:,} offsets asked for are below "
                    "their partitions' log start: the input topic's retention no longer holds them",
                )
            return ranges
        return by_time(ranges, self.lookup, window.since_ms, window.until_ms)

    def _first_time(self, ranges: Ranges) -> int:
        """The earliest timestamp of the window's first records (the window given by offsets)."""
        firsts = {tp: Span(s.start, s.start + 1) for tp, s in ranges.spans.items() if s.end > s.start}
        stamps = [m.timestamp()[1] for m in read_spans(self.clients, self.config(True), firsts)]
        return min(stamps) if stamps else int(time.time() * 1000)

    def _spans_from(self, topic: str, at_ms: int, context: int) -> tuple[dict[Partition, Span], set[int]]:
        """`topic`'s partitions from the first record at `at_ms` (less `context` records) to their ends,
        and the partitions that start at their log start."""
        try:
            partitions = [(topic, p) for p in self.queries.partitions(topic, TIMEOUT_SECONDS)]
            starts = self.queries.start_offsets(partitions, TIMEOUT_SECONDS)
            ends = self.queries.end_offsets(partitions, TIMEOUT_SECONDS)
        except FeedError as exc:
            raise PassError(str(exc)) from exc
        from confluent_kafka import TopicPartition

        found = self.lookup.offsets_for_times([TopicPartition(t, p, max(0, at_ms)) for t, p in partitions], timeout=10)
        spans, from_start = {}, set()
        for tp in found:
            key = (tp.topic, tp.partition)
            at = ends[key] if tp.offset < 0 else tp.offset
            start = max(starts[key], at - context)
            spans[key] = Span(start, ends[key])
            if start == starts[key]:
                from_start.add(tp.partition)
        return spans, from_start

    def _receipts(self, t0: int, findings: Findings) -> ReceiptLog:
        spans, from_start = self._spans_from(self.audit_topic, t0 - MARGIN_MS, CONTEXT_RECEIPTS)
        log = ReceiptLog(self.codec, self.key, self.audit_topic, from_start, findings)
        for msg in read_spans(self.clients, self.config(True), spans):
            log.add(msg)
        return log

    def _feeds(self, receipts: list[Receipt]) -> FeedStore:
        s = self.s
        gating = [s.optouts_topic, s.content_changes_topic, s.account_changes_topic]
        every = set(gating) | ({s.consent_topic} if s.consent_topic else set())
        uncommitted = set(gating) | {f["topic"] for r in receipts for f in r.record["feeds"] if f["feed"] != "consents"}
        committed = every | {f["topic"] for r in receipts for f in r.record["feeds"] if f["feed"] == "consents"}
        store = FeedStore()
        for is_committed, topics in ((False, uncommitted), (True, committed)):
            spans = whole(self.queries, sorted(topics)).spans
            store.add(is_committed, read_spans(self.clients, self.config(is_committed), spans))
        return store

    def emitter_committed(self) -> dict[tuple[str, int], int]:
        """How far the service's retraction emitter (its group `<TF_GROUP_ID>-revocations`) has committed on
        each feed partition: every record before is retracted (consumer/changes/retractions.py)."""
        from confluent_kafka import TopicPartition

        s = self.s
        topics = [s.optouts_topic, s.content_changes_topic, s.account_changes_topic]
        topics += [s.consent_topic] if s.consent_topic else []
        try:
            parts = [TopicPartition(t, p) for t in topics for p in self.queries.partitions(t, TIMEOUT_SECONDS)]
        except FeedError as exc:
            raise PassError(str(exc)) from exc
        group = self.clients.consumer({**self.config(True), "group.id": f"{s.group_id}-revocations"})
        try:
            found = group.committed(parts, timeout=TIMEOUT_SECONDS)
        finally:
            group.close()
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def _in_force(self) -> dict[bytes, bytes | None]:
        topic = self.s.revocations_topic
        latest: dict[bytes, bytes | None] = {}
        for msg in read_spans(self.clients, self.config(True), whole(self.queries, [topic]).spans):
            key = msg.key()
            if key is not None:
                latest[key] = msg.value()
        return latest

    def _refused(self, t0: int, hull: dict[Partition, Span], index: EmittedIndex) -> None:
        """The `output_rejected` letters on the dead-letter topic naming input records that are read."""
        spans, _ = self._spans_from(self.s.dlq_topic, t0 - MARGIN_MS, 0)
        for msg in read_spans(self.clients, self.config(True), spans):
            where = refused_output(msg)
            span = hull.get(where[:2]) if where is not None else None
            if where is not None and span is not None and span.start <= where[2] < span.end:
                index.refused.add(where)

    def _training(
        self,
        t0: int,
        window: Window,
        hull: dict[Partition, Span],
        covered: dict[Partition, list[Interval]],
        findings: Findings,
    ) -> EmittedIndex:
        topic = self.s.training_topic
        index = EmittedIndex(topic)
        inputs = set(self.s.input_topics)
        spans, _ = self._spans_from(topic, t0 - MARGIN_MS, 0)
        for msg in read_spans(self.clients, self.config(True), spans):
            index.records += 1
            where = provenance_of(self.codec, msg, topic, inputs, findings)
            if where is None:
                continue
            tp, offset = (where[0], where[1]), where[2]
            span = hull.get(tp)
            if span is not None and span.start <= offset < span.end:
                index.add(where, msg)
            elif not _within(covered.get(tp, []), offset) and _in_window(window, msg.timestamp()[1]):
                findings.add(
                    "injected",
                    topic,
                    msg.partition(),
                    msg.offset(),
                    f"its provenance ({tp[0]} partition "
                    f"{tp[1]} offset {offset}) is covered by no receipt: the service did not write it",
                )
        return index


def _meeting(receipts: list[Receipt], ranges: Ranges) -> tuple[list[Receipt], dict[Partition, Span]]:
    """The receipts whose ranges meet the window, and the window widened to their ranges."""
    hull = {tp: Span(s.start, s.end) for tp, s in ranges.spans.items() if s.end > s.start}
    meeting = []
    for r in receipts:
        span = ranges.spans.get(r.input)
        if span is None or span.end <= span.start or r.last < span.start or r.first >= span.end:
            continue
        meeting.append(r)
        h = hull[r.input]
        hull[r.input] = Span(min(h.start, r.first), max(h.end, r.last + 1))
    return meeting, hull


def _within(covered: list[Interval], offset: int) -> bool:
    return any(first <= offset <= last for first, last in covered)


def _in_window(window: Window, stamp: int) -> bool:
    if window.offsets:
        return False
    return (window.since_ms is None or stamp >= window.since_ms) and (
        window.until_ms is None or stamp < window.until_ms
    )
