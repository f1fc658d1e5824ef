"""The offset ranges an operator command reads (consumer/commands/transactional_pass.py): every partition of
some topics from the log start to the end as it is now, narrowed by time or by explicit offsets.

The input's retention decides what can still be read: a range that starts before a partition's log start
starts at the log start, and what was cut off is counted (`Ranges.not_retained`), never silently taken for
read. Asked of the broker in batched requests (consumer/feeds/ends.py: one metadata request a topic, one
ListOffsets per broker).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from consumer.commands.transactional_pass import Partition, PassError, Span
from consumer.feeds.ends import BrokerQueries, FeedError

TIMEOUT_SECONDS = 30.0


@dataclass
class Ranges:
    spans: dict[Partition, Span]
    not_retained: int = 0  # offsets asked for below a partition's log start
    log_start: dict[Partition, int] = field(default_factory=dict)

    def total(self) -> int:
        return sum(max(0, s.end - s.start) for s in self.spans.values())


def whole(queries: BrokerQueries, topics: list[str]) -> Ranges:
    """Every partition of `topics`, from its log start to its current end (the high watermark)."""
    try:
        partitions = [(t, p) for t in topics for p in queries.partitions(t, TIMEOUT_SECONDS)]
        starts = queries.start_offsets(partitions, TIMEOUT_SECONDS)
        ends = queries.end_offsets(partitions, TIMEOUT_SECONDS)
    except FeedError as exc:
        raise PassError(str(exc)) from exc
    spans = {tp: Span(starts[tp], max(starts[tp], ends[tp])) for tp in partitions}
    return Ranges(spans, log_start=dict(starts))


def by_time(ranges: Ranges, consumer: Any, since_ms: int | None, until_ms: int | None) -> Ranges:
    """Only the records whose timestamps are in [since_ms, until_ms): the first offset of each bound
    (offsets_for_times), within the partitions' current ranges."""
    if since_ms is None and until_ms is None:
        return ranges
    starts = _offsets_for_time(consumer, ranges, since_ms)
    ends = _offsets_for_time(consumer, ranges, until_ms)
    spans = {}
    for tp, span in ranges.spans.items():
        start = starts.get(tp, span.start)
        end = ends.get(tp, span.end)
        spans[tp] = Span(start, max(start, end))
    return Ranges(spans, ranges.not_retained, ranges.log_start)


def _offsets_for_time(consumer: Any, ranges: Ranges, at_ms: int | None) -> dict[Partition, int]:
    if at_ms is None:
        return {}
    asked = [TopicPartition(t, p, at_ms) for t, p in ranges.spans]
    try:
        found = consumer.offsets_for_times(asked, timeout=TIMEOUT_SECONDS)
    except KafkaException as exc:
        raise PassError(f"cannot look up offsets by time: {exc.args[0].name()}") from exc
    out = {}
    for tp in found:
        span = ranges.spans[tp.topic, tp.partition]
        # -1: no record at or after the time; the range ends (or starts) at the end.
        out[tp.topic, tp.partition] = span.end if tp.offset < 0 else min(max(tp.offset, span.start), span.end)
    return out


def by_offsets(ranges: Ranges, asked: dict[Partition, tuple[int, int]]) -> Ranges:
    """Only the partitions asked for, each from its first to its last offset (both included), within
    what is retained: offsets below the log start are counted as not retained."""
    spans, cut = {}, 0
    for tp, (first, last) in asked.items():
        span = ranges.spans.get(tp)
        if span is None:
            raise PassError(f"{tp[0]} has no partition {tp[1]}")
        start = max(first, span.start)
        cut += max(0, min(last + 1, span.start) - first)
        spans[tp] = Span(start, max(start, min(last + 1, span.end)))
    return Ranges(spans, ranges.not_retained + cut, ranges.log_start)
