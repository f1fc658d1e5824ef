"""What a `training-filter backfill` covers, from its options: the new policy, the range of the input
topics (by time, by offsets, or the input records the clean topic names: its provenance), and the
name of the run (its consumer group and transactional id), the same for the same command, so that the
command run again after a kill resumes it and run again after it finished emits nothing more.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, TopicPartition

from consumer.commands.guarded import UsageError
from consumer.commands.jsonl import JsonRecordError, epoch_ms
from consumer.commands.offset_ranges import TIMEOUT_SECONDS, Ranges, by_offsets, by_time, whole
from consumer.commands.transactional_pass import Partition, PassError, Span
from consumer.feeds.ends import BrokerQueries
from consumer.operations.acls import backfill_group_prefix
from consumer.wire.codec import TRAINING_RECORD, Codec, CodecError
from rules import Policy, PolicyError, load_policy

Offsets = dict[Partition, tuple[int, int]]


@dataclass(frozen=True)
class Scope:
    policy: Policy  # the new one
    policy_text: bytes
    since_ms: int | None
    until_ms: int | None
    offsets: Offsets  # explicit ranges, first and last offsets (empty: every partition)
    from_training: bool  # the input records the clean topic names
    admit: bool

    def group(self, group_id: str, active: Policy) -> str:
        """The run's name: the same options (and policies) give the same name, hence the same progress."""
        identity = {
            "active": active.version,
            "new": hashlib.sha256(self.policy_text).hexdigest(),
            "since": self.since_ms,
            "until": self.until_ms,
            "offsets": sorted(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in self.offsets.items()),
            "from_training": self.from_training,
            "admit": self.admit,
        }
        return f"{backfill_group_prefix(group_id)}{hashlib.sha256(orjson.dumps(identity)).hexdigest()[:12]}"


def scope_of(args: Any, active: Policy | None) -> Scope:
    """The options checked; a wrong one is a UsageError (exit status 2) that says what to fix."""
    path = Path(args.policy)
    try:
        text = path.read_bytes()
        policy = load_policy(path)
    except OSError as exc:
        raise UsageError(f"--policy {path}: cannot read it ({exc.strerror or type(exc).__name__})") from exc
    except (PolicyError, UnicodeDecodeError) as exc:
        raise UsageError(f"--policy {path}: {exc}") from exc
    if policy == active:
        raise UsageError(f"--policy {path} is the active policy (TF_POLICY_FILE): a backfill under it changes nothing")
    if active is not None and policy.version == active.version:
        raise UsageError(
            f"--policy {path}: its version {policy.version!r} is the active policy's, but its rules differ: give the "
            "new policy its own version (every record it admits carries it)"
        )
    since, until = time_bounds(args)
    offsets = parse_offsets(args.offsets or [])
    if offsets and (since is not None or until is not None or args.from_training):
        raise UsageError("--offsets is a range of its own: give it without --since, --until and --from-training")
    if args.from_training and args.admit:
        raise UsageError(
            "--admit needs a range of the input topics: the clean topic names only what was admitted (drop "
            "--from-training)"
        )
    return Scope(policy, text, since, until, offsets, bool(args.from_training), bool(args.admit))


def time_bounds(args: Any) -> tuple[int | None, int | None]:
    """--since and --until in epoch ms (ISO-8601 with an offset, or epoch ms), checked: a UsageError
    says what to fix."""
    try:
        since = epoch_ms(args.since, "--since") if args.since is not None else None
        until = epoch_ms(args.until, "--until") if args.until is not None else None
    except JsonRecordError as exc:
        raise UsageError(str(exc)) from exc
    if since is not None and until is not None and until <= since:
        raise UsageError("--until must be later than --since")
    return since, until


def parse_offsets(given: list[str]) -> Offsets:
    """--offsets TOPIC:PARTITION:FIRST-LAST, each checked (a UsageError says what to fix)."""
    out: Offsets = {}
    for item in given:
        try:
            topic, partition, span = item.rsplit(":", 2)
            first, last = span.split("-", 1)
            tp, bounds = (topic, int(partition)), (int(first), int(last))
        except ValueError as exc:
            raise UsageError(f"--offsets {item!r}: give TOPIC:PARTITION:FIRST-LAST, e.g. posts.v1:0:1000-1999") from exc
        if not topic or bounds[0] < 0 or bounds[1] < bounds[0] or tp in out:
            raise UsageError(f"--offsets {item!r}: need 0 <= FIRST <= LAST, once per partition")
        out[tp] = bounds
    return out


def input_ranges(scope: Scope, queries: BrokerQueries, consumer: Any, inputs: list[str]) -> Ranges:
    """The input range of an input-topic backfill (not `from_training`)."""
    ranges = whole(queries, inputs)
    if scope.offsets:
        unknown = sorted({t for t, _ in scope.offsets} - set(inputs))
        if unknown:
            raise UsageError(f"--offsets names {', '.join(unknown)}, not an input topic ({', '.join(inputs)})")
        return by_offsets(ranges, scope.offsets)
    return by_time(ranges, consumer, scope.since_ms, scope.until_ms)


def provenance(
    scope: Scope, queries: BrokerQueries, consumer: Any, codec: Codec, training: str, inputs: list[str]
) -> tuple[Ranges, dict[Partition, set[int]]]:
    """The input records the clean topic names (within --since/--until of its own records): the ranges
    that hold them, and their offsets. Read with `consumer` (assigned, never committed)."""
    clean = by_time(whole(queries, [training]), consumer, scope.since_ms, scope.until_ms)
    wanted: dict[Partition, set[int]] = {}
    for value in _values(consumer, clean.spans):
        try:
            record = codec.decode_own(value, TRAINING_RECORD)
        except CodecError:
            continue  # not a TrainingRecord: nothing to decide again
        if record["source_topic"] in inputs:
            wanted.setdefault((record["source_topic"], record["source_partition"]), set()).add(record["source_offset"])
    ranges = whole(queries, inputs)
    spans: dict[Partition, Span] = {}
    missing = 0
    for tp, offsets in wanted.items():
        span = ranges.spans.get(tp)
        if span is None:
            missing += len(offsets)
            continue
        missing += sum(1 for o in offsets if o < span.start)
        spans[tp] = Span(max(min(offsets), span.start), max(span.start, min(max(offsets) + 1, span.end)))
    return Ranges(spans, missing, ranges.log_start), wanted


def _values(consumer: Any, spans: dict[Partition, Span]) -> Iterator[bytes | None]:
    """The values of `spans`, read to their ends (the end of a partition marked by its EOF event)."""
    pending = {tp for tp, s in spans.items() if s.end > s.start}
    consumer.assign([TopicPartition(t, p, spans[t, p].start) for t, p in sorted(pending)])
    idle_since = time.monotonic()
    while pending:
        messages = consumer.consume(num_messages=10_000, timeout=0.5)
        if messages:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > TIMEOUT_SECONDS:
            raise PassError(f"the clean topic gave nothing for {TIMEOUT_SECONDS:.0f} s before its end")
        for msg in messages:
            tp = (msg.topic(), msg.partition())
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise PassError(f"cannot read {msg.topic()}: {err.name()}")
            if tp in pending and msg.offset() + (0 if err is not None else 1) >= spans[tp].end:
                pending.discard(tp)
            if err is None and msg.offset() < spans[tp].end:
                yield msg.value()
    consumer.unassign()
