"""Outputs the broker refuses for good (offsets.PER_RECORD_ERRORS: too large for a topic, invalid).

They never stop the service. A training record refused at once by produce(), or in a delivery report,
gets one more attempt (it may only have shared a broker batch with the culprit, or the topic limit has
been read again since); after that its input record becomes a headers-only dead letter that points
at it. At-least-once writes the replacements at once (`replace`); exactly-once aborts the transaction,
notes the inputs (`note`) and, reading them again, dead-letters those refused before (`exhausted`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException

from consumer.datapath.dead_letters import DeadLetterWriter, dead_letter_headers
from consumer.datapath.offsets import PER_RECORD_ERRORS, PendingBatch, Provenance
from consumer.datapath.output_limits import OutputLimits
from consumer.datapath.produce import produce_when_room
from consumer.wire.codec import TRAINING_RECORD, Codec, CodecError
from rules import Source

# How often one input record's output may be refused before it is dead-lettered headers-only.
MAX_OUTPUT_ATTEMPTS = 2


class RefusedOutputs:
    def __init__(
        self,
        producer: Any,
        training_topic: str,
        codec: Codec,
        dead_letters: DeadLetterWriter,
        sources: dict[str, Source],
        dlq_causes: dict[tuple[Source, str], int],
        wait: Callable[[], None],
    ) -> None:
        self.producer = producer
        self.training_topic = training_topic
        self.codec = codec
        self.dead_letters = dead_letters
        self.sources = sources  # input topic -> source, for the dead-letter counts
        self.dlq_causes = dlq_causes  # shared with the batch: counted by the service once per turn
        self.wait = wait
        self.training_record_max = 0  # set from the output limits (`set_limits`)
        # Input records whose output the broker refused, and how often.
        self.attempts: dict[Provenance, int] = {}

    def set_limits(self, limits: OutputLimits) -> None:
        self.training_record_max = limits.training_record_max
        self.dead_letters.max_record_bytes = limits.dlq_record_max

    def exhausted(self, provenance: Provenance) -> bool:
        """Was this input record's output refused as often as it may be? (exactly-once, read again)"""
        return self.attempts.get(provenance, 0) >= MAX_OUTPUT_ATTEMPTS

    def at_once(self, exc: KafkaException, msg: Any, source: Source, batch: PendingBatch) -> None:
        """produce() refused a training record at once (e.g. larger than message.max.bytes)."""
        err = exc.args[0]
        if err.code() not in PER_RECORD_ERRORS:
            raise exc
        self.letter(msg, source, batch, err.name(), decided=True)

    def letter(
        self, msg: Any, source: Source, batch: PendingBatch, error: str = "refused_before", decided: bool = False
    ) -> None:
        """An eligible record whose output cannot be written: a headers-only dead letter points at it.
        `decided`: the batch counted it eligible already (its receipt keeps that decision)."""
        provenance = (msg.topic(), msg.partition(), msg.offset())
        self._count(source)
        batch.note_dead_letter(provenance, "output_rejected", "" if decided else "undeliverable")
        headers = dead_letter_headers("undeliverable", "output_rejected", provenance, msg.timestamp()[1], None)
        headers.append(("tf.error", error.encode()))
        self.dead_letters.write(batch, msg.value(), msg.key(), headers, provenance, force_truncate=True)

    def note(self, batch: PendingBatch) -> None:
        """Exactly-once: the transaction of `batch` is aborted and its input read again; remember which
        input records the broker refused, so that a record refused again is dead-lettered instead."""
        for rejected in batch.rejected:
            provenance = rejected.provenance or self.provenance(rejected.value)
            if provenance is not None:
                self.attempts[provenance] = self.attempts.get(provenance, 0) + 1
        batch.rejected.clear()

    def replace(self, batch: PendingBatch) -> None:
        """At-least-once: write again what the broker refused in `batch`'s delivery reports. A training
        record gets one more attempt while it fits the current limits; after that, or for a dead
        letter, a headers-only dead letter."""
        pending, batch.rejected = batch.rejected, []
        for rejected in pending:
            if rejected.output == "dlq":
                assert rejected.provenance is not None and rejected.headers is not None
                headers = [*rejected.headers, ("tf.error", rejected.error.encode())]
                self.dead_letters.write(batch, None, None, headers, rejected.provenance, force_truncate=True)
                continue
            provenance = self.provenance(rejected.value)
            if provenance is None:  # cannot happen for a record this service built; fail loudly, not silently
                raise ValueError("a refused training record without provenance")
            attempts = self.attempts[provenance] = self.attempts.get(provenance, 0) + 1
            size = len(rejected.value or b"") + len(rejected.key or b"")
            if attempts < MAX_OUTPUT_ATTEMPTS and size <= self.training_record_max:
                batch.outstanding += 1
                produce_when_room(
                    self.producer, self.wait, self.training_topic, rejected.value, rejected.key, batch.delivered
                )
                continue
            headers = dead_letter_headers("undeliverable", "output_rejected", provenance, -1, None)
            headers.append(("tf.error", rejected.error.encode()))
            batch.note_dead_letter(provenance, "output_rejected", "")  # its receipt counted it eligible already
            self.dead_letters.write(batch, None, None, headers, provenance, force_truncate=True)
            source = self.sources.get(provenance[0])
            if source is not None:
                self._count(source)

    def provenance(self, value: bytes | None) -> Provenance | None:
        """(source_topic, source_partition, source_offset) of a TrainingRecord this service built."""
        try:
            record = self.codec.decode_own(value, TRAINING_RECORD)  # never a registry look-up
        except CodecError:
            return None
        return record["source_topic"], record["source_partition"], record["source_offset"]

    def _count(self, source: Source) -> None:
        key = (source, "output_rejected")
        self.dlq_causes[key] = self.dlq_causes.get(key, 0) + 1


class RefusalHandler:
    """What the delivery guarantee calls when the broker refused outputs of a batch for good: read the
    topic limits again (a limit lowered since start-up is the likely cause), then write the outputs
    again or dead-letter them (at-least-once), or note them for the re-reading after the abort
    (exactly-once)."""

    def __init__(
        self,
        refused: RefusedOutputs,
        set_limits: Callable[[OutputLimits], None],
        read_limits: Callable[[], OutputLimits],
        exactly_once: bool,
        metrics: Any,
        log: Any,
    ) -> None:
        self.refused = refused
        self.set_limits = set_limits
        self.read_limits = read_limits
        self.exactly_once = exactly_once
        self.metrics = metrics
        self.log = log

    def __call__(self, batch: PendingBatch) -> None:
        for rejected in batch.rejected:
            self.metrics.produce_errors.labels(rejected.output).inc()
        self.log.warning("output_refused", records=len(batch.rejected), error=batch.rejected[0].error)
        self.set_limits(self.read_limits())
        if self.exactly_once:
            self.refused.note(batch)
        else:
            self.refused.replace(batch)
