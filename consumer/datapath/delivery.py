"""Delivery guarantees: when an input offset may be committed.

`AtLeastOnce` (default): the idempotent producer's acknowledgements release offsets through the
`OffsetTracker`; they are stored with `store_offsets` and committed by librdkafka's auto-commit,
and synchronously on revoke and shutdown. A crash can re-deliver records; none is lost.

`ExactlyOnce`: every batch is produced inside a Kafka transaction that also carries the offsets
of exactly the input records whose outputs are in it (`send_offsets_to_transaction` with the
group's metadata, so a zombie of an older group generation is fenced). Not the consumer's
position: that is past every record consume() returned, including a batch the loop holds unprocessed
while the opt-out feed cannot sync, and committing it would lose those records. Readers with
isolation.level=read_committed see each record once. A failed transaction is aborted, the consumer
rewinds to the last committed offsets, and `on_rewind` tells the loop to drop what it holds (it will
be fetched again).

Outputs the broker refuses for good (offsets.PER_RECORD_ERRORS) never stop the service: at-least-once
hands them to `on_refused`, which writes them again or dead-letters them; exactly-once must abort
the transaction (a refused record makes it abortable), notes them through `on_refused` and re-reads.
Both are passed in at construction (consumer/service/assemble.py), as is `on_rewind`.

With `receipts` (an audit key is set: docs/audit.md), each batch's receipts are written once its
outputs are acknowledged and before its offsets are stored (at least once), or in its transaction,
after its outputs and before the commit (exactly once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.audit.audited_batch import AuditedBatch
from consumer.audit.writer import ReceiptWriter
from consumer.datapath.offsets import OffsetTracker, PendingBatch, ProduceFailed
from consumer.operations.metrics import Metrics

RefusedHandler = Callable[[PendingBatch], None]


class Delivery(Protocol):
    """When an input offset may be committed: the guarantee the loop and the lifecycle work through."""

    name: str

    def open_batch(self, output: str = "training") -> PendingBatch: ...

    def close_batch(self, batch: PendingBatch, consumed: list[tuple[str, int, int]]) -> None: ...

    def tick(self) -> None: ...

    def recover(self, exc: KafkaException) -> bool:
        """produce() raised `exc`, not a record's fault: True when the guarantee recovered (exactly-once
        aborted an abortable transaction and rewound); False when the output cannot go on."""
        ...

    def assigned_partitions(self, partitions: list[TopicPartition]) -> None: ...

    def revoked(self, partitions: list[TopicPartition], flush_seconds: float) -> None: ...

    def lost(self, partitions: list[TopicPartition]) -> None: ...

    def shutdown(self, timeout: float) -> bool: ...

    def take_counts(self) -> tuple[int, int]: ...


class FatalDeliveryError(Exception):
    """The output cannot be written; the service stops without committing past the failure."""


def _name(exc: KafkaException) -> str:
    err = exc.args[0]
    return err.name() if isinstance(err, KafkaError) else type(exc).__name__


class AtLeastOnce:
    name = "at-least-once"

    def __init__(
        self,
        consumer: Any,
        producer: Any,
        metrics: Metrics,
        log: Any,
        on_refused: RefusedHandler | None = None,
        on_rewind: Callable[[], None] = lambda: None,
        receipts: ReceiptWriter | None = None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics
        self.log = log
        self.receipts = receipts
        self.tracker = OffsetTracker(AuditedBatch if receipts is not None else PendingBatch)
        self.assigned: set[tuple[str, int]] = set()
        # Outputs the broker refused for good (None: that stops the service, as for the revocations).
        self.on_refused = on_refused
        self.on_rewind = on_rewind  # exactly-once: the consumer rewound, what the loop holds comes again

    def open_batch(self, output: str = "training") -> PendingBatch:
        return self.tracker.open(output)

    def close_batch(self, batch: PendingBatch, consumed: list[tuple[str, int, int]]) -> None:
        OffsetTracker.seal(batch, consumed)

    def tick(self) -> None:
        """Serve delivery reports and store the offsets they release."""
        self.producer.poll(0)
        self._store()

    def _store(self) -> None:
        for batch in self.tracker.with_rejections():
            if self.on_refused is None:
                raise FatalDeliveryError(f"{batch.rejected[0].error} producing to {batch.rejected[0].output}")
            self.on_refused(batch)
        if self.receipts is not None:
            self._write_receipts()
        try:
            ready = self.tracker.release()
        except ProduceFailed as exc:
            self.metrics.produce_errors.labels(exc.output).inc()
            self.log.error("produce_failed", output=exc.output, error=exc.error)
            raise FatalDeliveryError(str(exc)) from exc
        offsets = [TopicPartition(t, p, o) for (t, p), o in ready.items() if (t, p) in self.assigned]
        if offsets:
            self.consumer.store_offsets(offsets=offsets)

    def _write_receipts(self) -> None:
        """The receipts of the leading batches whose outputs are all acknowledged, in consume order (the
        order of each partition's chain); a batch is done once they are acknowledged too."""
        assert self.receipts is not None
        for batch in self.tracker.leading():
            if not isinstance(batch, AuditedBatch) or not batch.outputs_done:
                break
            if batch.receipts_due:
                self.metrics.audit_receipts.inc(self.receipts.write(batch))

    def take_counts(self) -> tuple[int, int]:
        """(records of the batches' output, dead letters) acknowledged since the last call."""
        counts = (self.tracker.produced, self.tracker.dead_lettered)
        self.tracker.produced = self.tracker.dead_lettered = 0
        return counts

    def settle(self, timeout: float) -> bool:
        """Wait up to `timeout` for every in-flight record, then store what is acknowledged."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = self.producer.flush(max(0.0, deadline - time.monotonic()))
            self._store()  # may write refused outputs again: then wait for those too
            if self.tracker.in_flight() == 0 or time.monotonic() >= deadline:
                return remaining == 0 and self.tracker.in_flight() == 0

    def recover(self, exc: KafkaException) -> bool:
        return False  # the producer cannot go on: nothing is committed past what it had acknowledged

    def commit(self, partitions: list[TopicPartition] | None = None) -> None:
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                self.log.warning("commit_failed", error=_name(exc))

    def assigned_partitions(self, partitions: list[TopicPartition]) -> None:
        self.assigned.update((p.topic, p.partition) for p in partitions)
        if self.receipts is not None:  # each partition's chain goes on from its last receipt
            self.receipts.heads.assigned([(p.topic, p.partition) for p in partitions])

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
        if self.receipts is not None:
            self.receipts.heads.forget(gone)

    def shutdown(self, timeout: float) -> bool:
        complete = self.settle(timeout)
        self.commit()
        return complete


class ExactlyOnce(AtLeastOnce):
    name = "exactly-once"

    def __init__(
        self,
        consumer: Any,
        producer: Any,
        metrics: Metrics,
        log: Any,
        interval_seconds: float,
        timeout: float = 30.0,
        on_refused: RefusedHandler | None = None,
        on_rewind: Callable[[], None] = lambda: None,
        receipts: ReceiptWriter | None = None,
    ) -> None:
        super().__init__(consumer, producer, metrics, log, on_refused, on_rewind, receipts)
        self.interval = interval_seconds
        self.timeout = timeout
        self.in_transaction = False
        self.started = 0.0
        self.batches: list[PendingBatch] = []
        self.offsets: dict[tuple[str, int], int] = {}  # next offsets of the records in this transaction
        try:
            producer.init_transactions(timeout)
        except KafkaException as exc:
            raise FatalDeliveryError(f"cannot initialise transactions: {_name(exc)}") from exc

    def open_batch(self, output: str = "training") -> PendingBatch:
        if not self.in_transaction:
            self.producer.begin_transaction()
            self.in_transaction = True
            self.started = time.monotonic()
        batch = self.tracker.batch_type(output)
        self.batches.append(batch)
        return batch

    def close_batch(self, batch: PendingBatch, consumed: list[tuple[str, int, int]]) -> None:
        offsets = self.offsets
        for topic, partition, offset in consumed:
            if offsets.get((topic, partition), -1) <= offset:
                offsets[topic, partition] = offset + 1
        batch.sealed = True

    def tick(self) -> None:
        self.producer.poll(0)
        if not self.in_transaction:
            return
        if any(b.rejected for b in self.batches):
            self.abort(self._rejected_error())
        elif time.monotonic() - self.started >= self.interval:
            self._commit_transaction()

    def recover(self, exc: KafkaException) -> bool:
        err = exc.args[0]
        if isinstance(err, KafkaError) and not err.fatal():  # a record refused made the transaction abortable
            self.abort(err.name())  # rewinds: what the loop holds is fetched again
            return True
        return False

    def abort(self, error: str) -> None:
        """Abort the open transaction (one the broker has made abortable) and rewind."""
        self.log.warning("transaction_aborted", error=error)
        self.metrics.transactions.labels("failed").inc()
        if self.in_transaction:
            self._abort_and_rewind()

    def _rejected_error(self) -> str:
        return next(b.rejected[0].error for b in self.batches if b.rejected)

    def _commit_transaction(self) -> bool:
        """Commit the open transaction with the offsets of its records; on failure abort and rewind."""
        if not self.in_transaction:
            return True
        heads = dict(self.receipts.heads.heads) if self.receipts is not None else {}
        try:
            if self.receipts is not None and not self._receipts_in_transaction():
                self.receipts.heads.heads = heads
                return False
            offsets = [TopicPartition(t, p, o) for (t, p), o in self.offsets.items()]
            if offsets:
                self.producer.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), self.timeout
                )
            self.producer.commit_transaction(self.timeout)
        except KafkaException as exc:
            err = exc.args[0]
            self.metrics.transactions.labels("failed").inc()
            if isinstance(err, KafkaError) and err.fatal():
                raise FatalDeliveryError(f"transaction failed fatally: {err.name()}") from exc
            self.log.warning("transaction_aborted", error=_name(exc))
            if self.receipts is not None:  # the aborted receipts are not the chain's
                self.receipts.heads.heads = heads
            self._abort_and_rewind()
            return False
        self.metrics.transactions.labels("committed").inc()
        self._finish_batches()
        return True

    def _receipts_in_transaction(self) -> bool:
        """Wait for the transaction's outputs (a receipt says where they went), then write each batch's
        receipts into it. False: an output was refused or not acknowledged in time (aborted, rewound)."""
        assert self.receipts is not None
        if self.producer.flush(self.timeout) > 0 or any(b.rejected or b.error for b in self.batches):
            self.abort(
                "outputs_not_acknowledged" if not any(b.rejected for b in self.batches) else self._rejected_error()
            )
            return False
        for batch in self.batches:
            if isinstance(batch, AuditedBatch):
                self.metrics.audit_receipts.inc(self.receipts.write(batch))
        return True

    def _finish_batches(self) -> None:
        self.in_transaction = False
        self.tracker.produced += sum(b.produced for b in self.batches)
        self.tracker.dead_lettered += sum(b.dead_lettered for b in self.batches)
        self.batches.clear()
        self.offsets = {}

    def _abort_and_rewind(self, exclude: frozenset[tuple[str, int]] = frozenset()) -> None:
        try:
            self.producer.abort_transaction(self.timeout)
        except KafkaException as exc:
            raise FatalDeliveryError(f"cannot abort the transaction: {_name(exc)}") from exc
        for batch in self.batches:
            if batch.rejected and self.on_refused is not None:
                self.on_refused(batch)  # remembers which inputs were refused, for the second reading
        self._finish_batches()
        assignment = [tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) not in exclude]
        if assignment:
            for tp in self.consumer.committed(assignment, timeout=self.timeout):
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else -2))
        # What the loop holds was fetched after the committed offsets: it will be fetched again.
        self.on_rewind()

    def settle(self, timeout: float) -> bool:
        return self._commit_transaction()

    def commit(self, partitions: list[TopicPartition] | None = None) -> None:
        self._commit_transaction()

    def revoked(self, partitions: list[TopicPartition], flush_seconds: float) -> None:
        self._commit_transaction()
        self.lost(partitions)

    def lost(self, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a revoke (the session expired): their new owner may be processing
        them already, so the open transaction, which holds their outputs and offsets, must never commit.
        It is aborted and the partitions still owned are rewound (the loop drops what it holds)."""
        gone = frozenset((p.topic, p.partition) for p in partitions)
        self.assigned -= gone
        if self.receipts is not None:
            self.receipts.heads.forget(set(gone))
        if self.in_transaction:
            self.log.warning("transaction_aborted", error="partitions_lost")
            self.metrics.transactions.labels("failed").inc()
            self._abort_and_rewind(exclude=gone)

    def shutdown(self, timeout: float) -> bool:
        return self._commit_transaction()
