"""The hot loop: one consumed batch in, training records and dead letters out.

A record goes forward through one path: route by topic, read its fields (the fast path when its frame
names exactly the v1 schema, the reference path of consumer/datapath/reading.py otherwise), decide with
`rules.Decider` (or `rules.PairDecider` with a shadow candidate), and, if eligible, build the
minimised, pseudonymised TrainingRecord from the v1 bytes and produce it. A record that cannot be read
becomes a dead letter with its cause (consumer/datapath/dead_letters.py); an output the broker refuses
for good goes to consumer/datapath/refused.py. No logging and no label look-ups per record: decisions
are tallied in a dict and added to cached counter children once per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException

from consumer.changes.guard import ChangeGuard
from consumer.datapath.change_pass import SECOND_LOOKS, ChangePass
from consumer.datapath.dead_letters import DeadLetterWriter
from consumer.datapath.offsets import PendingBatch, Provenance
from consumer.datapath.output_limits import DEFAULT_MAX_VALUE_BYTES, OutputLimits, producer_max_bytes
from consumer.datapath.output_parts import OutputParts
from consumer.datapath.produce import produce_when_room
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.datapath.reading import InvalidFields, ReferenceReader, Route, routes_for
from consumer.datapath.refused import RefusedOutputs
from consumer.datapath.shadow import Pair, Shadow, ShadowPass
from consumer.wire import fastpath
from consumer.wire.codec import TRAINING_RECORD, Codec, CodecError
from consumer.wire.fastpath import FastPathMiss
from rules import DEFAULT_CLOCK_SKEW_MS, Decider, Reason, Source

ELIGIBLE = Reason.ELIGIBLE
MALFORMED = Reason.MALFORMED
ProduceError = BufferError | KafkaException  # what produce() raises that the loop handles


__all__ = ["BatchProcessor", "InvalidFields", "Route"]


@dataclass(frozen=True, slots=True)
class Counts:
    dlq_causes: dict[tuple[Source, str], int]
    undecidable: dict[str, int]
    truncated: int


class BatchProcessor:
    def __init__(
        self,
        *,
        decider: Decider,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        opted_out: Callable[[bytes], bool],
        producer: Any,
        consented: Callable[[bytes], bool] | None = None,
        training_topic: str,
        dlq_topic: str,
        posts_topic: str,
        ai_interactions_topic: str,
        on_backpressure: Callable[[], None],
        limits: OutputLimits | None = None,
        shadow: Shadow | None = None,
        clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS,
        clock: Callable[[], float] = time.time,
        changes: ChangeGuard | None = None,
    ) -> None:
        self.decider = decider
        # The change set's checks of what a policy admits (consumer/changes/guard.py); None: no change set.
        self.changes = changes
        self._change_pass = ChangePass(changes, decider, shadow, pseudonymiser, opted_out, consented)
        self._change_sets = (changes.stopped, changes.accounts, changes.bounds) if changes else (None, {}, {})
        self.shadow = shadow  # a candidate policy, decided beside the active one and only counted
        self._shadow_pass = ShadowPass()
        self.codec = codec
        self.reader = ReferenceReader(codec)
        self.pseudonymiser = pseudonymiser
        self.opted_out = opted_out
        self.consented = consented  # opt-in policies only
        self.producer = producer
        self.training_topic = training_topic
        self.on_backpressure = on_backpressure
        # A record created later than the batch's start plus this is future_dated (rules.Decider.decide).
        self.clock_skew_ms = clock_skew_ms
        self.clock = clock
        self.latest_ms = 0  # of the batch being processed
        self.header = codec.header(TRAINING_RECORD)  # with a registry, prepared by the service at start-up
        self.parts = OutputParts(decider)
        self.routes: dict[str, Route] = routes_for(codec, posts_topic, ai_interactions_topic)
        # Exceptions a record provoked on the reference path, by type (dead-lettered `undecidable`).
        self.undecidable: dict[str, int] = {}
        self.consumer_errors: list[Any] = []
        self.dead_letters = DeadLetterWriter(producer, dlq_topic, 0, on_backpressure)
        self.dlq_causes = self.dead_letters.causes
        sources = {topic: route.source for topic, route in self.routes.items()}
        self.refused = RefusedOutputs(
            producer, training_topic, codec, self.dead_letters, sources, self.dlq_causes, on_backpressure
        )
        if limits is None:  # no broker asked: the producer's own bound, and the broker's default topic limit
            max_value = codec.max_value_bytes or DEFAULT_MAX_VALUE_BYTES
            limits = OutputLimits.compute(max_value, producer_max_bytes(max_value), training_topic, dlq_topic, {})
        self.set_limits(limits)

    def take_counts(self) -> Counts:
        """What was dead-lettered, by (source, cause), the exceptions records provoked, and the letters
        written headers-only, since the last call (the service adds them to its metrics)."""
        counts = Counts(dict(self.dlq_causes), dict(self.undecidable), self.dead_letters.truncated)
        self.dlq_causes.clear()
        self.undecidable.clear()
        self.dead_letters.truncated = 0
        return counts

    @property
    def undeliverable(self) -> dict[Provenance, int]:
        return self.refused.attempts

    def set_limits(self, limits: OutputLimits) -> None:
        self.limits = limits
        self.refused.set_limits(limits)

    def resolve_schemas(self, messages: list[Any]) -> None:
        self.reader.resolve_schemas(messages, self.routes)

    def note_refused(self, batch: PendingBatch) -> None:
        self.refused.note(batch)

    def replace_refused(self, batch: PendingBatch) -> None:
        self.refused.replace(batch)

    def training_provenance(self, value: bytes | None) -> Provenance | None:
        return self.refused.provenance(value)

    # -- the loop --------------------------------------------------------------------------------

    def process(
        self, messages: list[Any], batch: PendingBatch, tally: dict[tuple[Source, str], int]
    ) -> list[tuple[str, int, int]]:
        """Filter one batch; returns the last consumed (topic, partition, offset) of each partition. Written
        for speed: locals instead of attribute look-ups, provenance and offsets kept per run of a partition's
        records (consume() returns them together), produce() with positional arguments (keywords: 0.5 µs)."""
        decide, differ, latest, add_run = self._begin(tally, batch)
        # fmt: off
        opted_out, consented, pseudonym_of = self.opted_out, self.consented, self.pseudonymiser.pseudonym
        produce, training_topic, delivered = self.producer.produce, self.training_topic, batch.delivered
        max_bytes, exhausted, eligible, parts = self.limits.input_max, self.refused.attempts, ELIGIBLE, self.parts
        build, header, country_memo = fastpath.training_record_of, self.header, parts.countries
        changes, (stopped, accounts, bounds) = self._change_pass, self._change_sets
        last: dict[tuple[str, int], int] = {}
        counts: dict[Reason, int] = {}
        # fmt: on
        run_topic, run_partition, run_first, run_offset, route, provenance, produced = None, -1, -1, -1, None, b"", 0
        fields: Any
        for msg in messages:
            if msg.error() is not None:
                self.consumer_errors.append(msg)  # events, not records: the service counts and logs them
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if partition != run_partition or topic != run_topic:  # a new run: flush the one before
                _end_run(run_topic, run_partition, run_first, run_offset, route, last, counts, tally, add_run)
                run_topic, run_partition, run_first = topic, partition, offset
                route, provenance = self.routes.get(topic), parts.provenance(topic, partition)
            run_offset = offset
            if route is None:
                continue  # not subscribed; cannot happen unless the subscription changed under us
            if exhausted and self.refused.exhausted((topic, partition, offset)):
                self.refused.letter(msg, route.source, batch)
                continue
            value = msg.value()
            try:  # the fast path, unless the value is not plain v1 (FastPathMiss: the reference path's answer)
                if value is None or len(value) > max_bytes or value[:5] not in route.fast_headers:
                    raise FastPathMiss
                fields = route.fast_decode(value)
            except FastPathMiss:
                if (fields := self._read(msg, value, route, batch, tally)) is None:
                    continue  # a dead letter
            # fields: (id end, user id, birth day, country, public, spans..., created ms, split) as fastpath reads them
            reason = decide(
                route.source, fields[4], fields[3], fields[2], fields[8], latest, fields[1], opted_out, consented
            )
            shadow = None
            if differ is not None:  # with a shadow policy, `decide` answers (active, shadow)
                reason, shadow = reason
                if shadow is not reason:
                    differ.append((route.source, reason, shadow))
            if reason is not eligible and accounts and reason in SECOND_LOOKS and pseudonym_of(fields[1]) in accounts:
                reason, shadow = changes.second_look(route.source, reason, fields, latest, differ, shadow)
            if reason is not eligible:
                if shadow is eligible and stopped is not None and fields[0] is not None:  # a shadow only
                    changes.shadow_only(route.source, value, fields, reason, latest, differ)  # type: ignore[arg-type]
                counts[reason] = counts.get(reason, 0) + 1
                continue
            if fields[0] is None:  # the reference path: build from the record written as v1
                if (value := self._as_v1(msg, route, fields, batch, tally, differ, shadow)) is None:
                    continue  # a dead letter after all: counted malformed instead
                fields = route.fast_decode(value)
            pseudonym = pseudonym_of(fields[1])
            if stopped is not None and (stopped(value[5 : fields[0]]) or pseudonym in accounts or pseudonym in bounds):
                refusal = changes.refusal(route.source, value, fields, pseudonym, latest, differ, shadow)
                if refusal is not None:
                    counts[refusal] = counts.get(refusal, 0) + 1
                    continue
            counts[eligible] = counts.get(eligible, 0) + 1
            country = country_memo.get(fields[3]) or parts.country(fields[3])
            out = build(header, value, fields, country, pseudonym, provenance, offset)
            produced += 1
            try:
                produce(training_topic, out, pseudonym, -1, delivered)
            except (BufferError, KafkaException) as exc:
                produced = self._produce_failed(exc, produced, batch, msg, route, out, pseudonym)
        batch.outstanding += produced
        _end_run(run_topic, run_partition, run_first, run_offset, route, last, counts, tally, add_run)
        if differ is not None and self.shadow is not None:
            self._shadow_pass.end(self.shadow, tally)
        return [(t, p, o) for (t, p), o in last.items()]

    def _begin(
        self, tally: dict[tuple[Source, str], int], batch: PendingBatch
    ) -> tuple[Callable[..., Any], list[Pair] | None, int, Any]:
        """The batch's decision function and time bound (one clock reading a batch). With a shadow policy
        the pair decider, whose answers are both policies' reasons, and the list of their differences.
        Last, where the batch's receipts are written (docs/audit.md), what keeps the ranges decided."""
        self.latest_ms = int(self.clock() * 1000) + self.clock_skew_ms
        add_run = getattr(batch, "add_run", None)
        if self.shadow is None:
            return self.decider.decide, None, self.latest_ms, add_run
        pair = self._shadow_pass.decider(self.decider, self.shadow)  # never one of an active policy replaced
        return pair.decide, self._shadow_pass.begin(tally), self.latest_ms, add_run

    # -- the reference path and dead letters -------------------------------------------------------

    def _read(
        self, msg: Any, value: bytes | None, route: Route, batch: PendingBatch, tally: dict[tuple[Source, str], int]
    ) -> tuple[Any, ...] | None:
        """The reference path's fields (reading.Read), or None when the record became a dead letter. The
        error boundary of one record: whatever its writer schema or bytes, nothing raises out of the loop."""
        if value is not None and len(value) > self.limits.input_max:  # may be below the codec's own bound
            self._dead_letter(msg, route, "oversized", batch, tally)
            return None
        try:
            return self.reader.read(value, route)
        except CodecError as exc:
            self._dead_letter(msg, route, exc.detail, batch, tally)
        except Exception as exc:  # a defect, or a record no check foresaw: this record only, never the loop
            self._undecidable(msg, route, exc, batch, tally)
        return None

    def _as_v1(
        self,
        msg: Any,
        route: Route,
        fields: tuple[Any, ...],
        batch: PendingBatch,
        tally: dict[tuple[Source, str], int],
        differ: list[Pair] | None,
        shadow: Any,
    ) -> bytes | None:
        """An eligible record of the reference path written as v1, for the one builder; None when v1
        cannot hold it (a dead letter: never an output half-checked, and no longer a shadow difference)."""
        try:
            value = self.reader.as_v1(route, fields[10])
            route.fast_decode(value)
            return value
        except Exception as exc:
            self._undecidable(msg, route, exc, batch, tally)
            if differ is not None and shadow is not ELIGIBLE:
                differ.pop()
            return None

    def _produce_failed(
        self, exc: ProduceError, produced: int, batch: PendingBatch, msg: Any, route: Route, out: bytes, key: bytes
    ) -> int:
        """The queue is full (wait for room) or the broker refused the record for good (the refused
        outputs take it): the batch's count of records produced but not yet added to it."""
        if isinstance(exc, BufferError):
            batch.outstanding += produced
            produce_when_room(self.producer, self.on_backpressure, self.training_topic, out, key, batch.delivered)
            return 0
        self.refused.at_once(exc, msg, route.source, batch)
        return produced - 1

    def _undecidable(
        self, msg: Any, route: Route, exc: Exception, batch: PendingBatch, tally: dict[tuple[Source, str], int]
    ) -> None:
        error = type(exc).__name__
        self.undecidable[error] = self.undecidable.get(error, 0) + 1
        self._dead_letter(msg, route, "undecidable", batch, tally)

    def _dead_letter(
        self, msg: Any, route: Route, cause: str, batch: PendingBatch, tally: dict[tuple[Source, str], int]
    ) -> None:
        # With a shadow: what does not decode is malformed under every policy (counted from `tally`).
        key = (route.source, MALFORMED)
        tally[key] = tally.get(key, 0) + 1
        refused_before = (msg.topic(), msg.partition(), msg.offset()) in self.refused.attempts
        self.dead_letters.malformed(msg, route.source, cause, batch, truncate=refused_before)


def _end_run(
    topic: str | None,
    partition: int,
    first: int,
    offset: int,
    route: Route | None,
    last: dict[tuple[str, int], int],
    counts: dict[Reason, int],
    tally: dict[tuple[Source, str], int],
    add_run: Callable[[str, int, int, int, dict[Reason, int]], None] | None,
) -> None:
    """A run of one partition's records is over: its last offset, and its decisions into the tally
    (and, with receipts, into the batch's range of that partition)."""
    if topic is None:
        return
    last[topic, partition] = offset
    if add_run is not None:
        add_run(topic, partition, first, offset, counts)
    if route is not None:
        for reason, count in counts.items():
            key = (route.source, reason)
            tally[key] = tally.get(key, 0) + count
    counts.clear()
