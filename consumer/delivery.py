"""Delivery guarantees: when an input offset may be committed.

`AtLeastOnce` (default): the idempotent producer's acknowledgements release offsets through the
`OffsetTracker`; they are stored with `store_offsets` and committed by librdkafka's auto-commit,
and synchronously on revoke and shutdown. A crash can re-deliver records; none is lost.

`ExactlyOnce`: every batch is produced inside a Kafka transaction that also carries the consumed
offsets (`send_offsets_to_transaction` with the group's metadata, so a zombie of an older group
generation is fenced). Readers with isolation.level=read_committed see each record once. A failed
transaction is aborted and the consumer rewinds to the last committed offsets.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker, PendingBatch, ProduceFailed


class FatalDeliveryError(Exception):
    """The output cannot be written; the service stops without committing past the failure."""


def _name(exc: KafkaException) -> str:
    err = exc.args[0]
    return err.name() if isinstance(err, KafkaError) else type(exc).__name__


class AtLeastOnce:
    name = "at-least-once"

    def __init__(self, consumer: Any, producer: Any, metrics: Metrics, log: Any) -> None:
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics
        self.log = log
        self.tracker = OffsetTracker()
        self.assigned: set[tuple[str, int]] = set()

    def open_batch(self, output: str = "training") -> PendingBatch:
        return self.tracker.open(output)

    def close_batch(self, batch: PendingBatch, consumed: list[tuple[str, int, int]]) -> None:
        OffsetTracker.seal(batch, consumed)

    def tick(self) -> None:
        """Serve delivery reports and store the offsets they release."""
        self.producer.poll(0)
        self._store()

    def _store(self) -> None:
        try:
            ready = self.tracker.release()
        except ProduceFailed as exc:
            self.metrics.produce_errors.labels(exc.output).inc()
            self.log.error("produce_failed", output=exc.output, error=exc.error)
            raise FatalDeliveryError(str(exc)) from exc
        offsets = [TopicPartition(t, p, o) for (t, p), o in ready.items() if (t, p) in self.assigned]
        if offsets:
            self.consumer.store_offsets(offsets=offsets)

    def take_counts(self) -> tuple[int, int]:
        """(records of the batches' output, dead letters) acknowledged since the last call."""
        counts = (self.tracker.produced, self.tracker.dead_lettered)
        self.tracker.produced = self.tracker.dead_lettered = 0
        return counts

    def settle(self, timeout: float) -> bool:
        """Wait up to `timeout` for every in-flight record, then store what is acknowledged."""
        remaining = self.producer.flush(timeout)
        self._store()
        return remaining == 0

    def commit(self, partitions: list[TopicPartition] | None = None) -> None:
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                self.log.warning("commit_failed", error=_name(exc))

    def assigned_partitions(self, partitions: list[TopicPartition]) -> None:
        self.assigned.update((p.topic, p.partition) for p in partitions)

    def revoked(self, partitions: list[TopicPartition], flush_seconds: float) -> None:
        """Before partitions go: finish in-flight records (bounded), store, commit synchronously."""
        complete = self.settle(flush_seconds)
        if not complete:
            self.log.warning("revoke_flush_incomplete", in_flight=self.tracker.in_flight())
        self.commit()
        self.lost(partitions)

    def lost(self, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self.tracker.forget(gone)
        self.assigned -= gone

    def shutdown(self, timeout: float) -> bool:
        complete = self.settle(timeout)
        self.commit()
        return complete


class ExactlyOnce(AtLeastOnce):
    name = "exactly-once"

    def __init__(
        self, consumer: Any, producer: Any, metrics: Metrics, log: Any, interval_seconds: float, timeout: float = 30.0
    ) -> None:
        super().__init__(consumer, producer, metrics, log)
        self.interval = interval_seconds
        self.timeout = timeout
        self.in_transaction = False
        self.started = 0.0
        self.batches: list[PendingBatch] = []
        try:
            producer.init_transactions(timeout)
        except KafkaException as exc:
            raise FatalDeliveryError(f"cannot initialise transactions: {_name(exc)}") from exc

    def open_batch(self, output: str = "training") -> PendingBatch:
        if not self.in_transaction:
            self.producer.begin_transaction()
            self.in_transaction = True
            self.started = time.monotonic()
        batch = PendingBatch(output)
        self.batches.append(batch)
        return batch

    def close_batch(self, batch: PendingBatch, consumed: list[tuple[str, int, int]]) -> None:
        batch.sealed = True

    def tick(self) -> None:
        self.producer.poll(0)
        if self.in_transaction and time.monotonic() - self.started >= self.interval:
            self._commit_transaction()

    def _commit_transaction(self) -> bool:
        """Commit the open transaction with the consumer's positions; on failure abort and rewind."""
        if not self.in_transaction:
            return True
        try:
            positions = [tp for tp in self.consumer.position(self.consumer.assignment()) if tp.offset >= 0]
            if positions:
                self.producer.send_offsets_to_transaction(
                    positions, self.consumer.consumer_group_metadata(), self.timeout
                )
            self.producer.commit_transaction(self.timeout)
        except KafkaException as exc:
            err = exc.args[0]
            self.metrics.transactions.labels("failed").inc()
            if isinstance(err, KafkaError) and err.fatal():
                raise FatalDeliveryError(f"transaction failed fatally: {err.name()}") from exc
            self.log.warning("transaction_aborted", error=_name(exc))
            self._abort_and_rewind()
            return False
        self.metrics.transactions.labels("committed").inc()
        self._finish_batches()
        return True

    def _finish_batches(self) -> None:
        self.in_transaction = False
        self.tracker.produced += sum(b.produced for b in self.batches)
        self.tracker.dead_lettered += sum(b.dead_lettered for b in self.batches)
        self.batches.clear()

    def _abort_and_rewind(self) -> None:
        try:
            self.producer.abort_transaction(self.timeout)
        except KafkaException as exc:
            raise FatalDeliveryError(f"cannot abort the transaction: {_name(exc)}") from exc
        self._finish_batches()
        assignment = self.consumer.assignment()
        if assignment:
            for tp in self.consumer.committed(assignment, timeout=self.timeout):
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else -2))

    def settle(self, timeout: float) -> bool:
        return self._commit_transaction()

    def commit(self, partitions: list[TopicPartition] | None = None) -> None:
        self._commit_transaction()

    def revoked(self, partitions: list[TopicPartition], flush_seconds: float) -> None:
        self._commit_transaction()
        self.lost(partitions)

    def lost(self, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self.assigned -= gone

    def shutdown(self, timeout: float) -> bool:
        return self._commit_transaction()
