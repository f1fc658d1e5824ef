"""One pass over offset ranges, each batch committed with its outputs: what `training-filter dlq replay`
and `training-filter backfill` run on.

The ranges are read by a consumer group of the command's own, assigned (never subscribed) from the
group's committed offsets, else from each range's start, up to each range's end as it was when the
run began. Each batch is a Kafka transaction of the service's exactly-once guarantee
(consumer/datapath/delivery.py, `ExactlyOnce`): the batch's outputs and the group's next offsets
(`send_offsets_to_transaction`) are committed together or not at all. So a run killed at any moment
is resumed by running it again: the producer's transactional id is the group's name, and initialising
it aborts what the killed run left open; the new run starts at the committed offsets. A run that
reached its ends reads nothing more: a second run emits nothing.

Before a batch is decided, as in the service's loop: with a registry, its schema ids are looked up (an
outage is waited for, never dead-lettered: `Batches.prepare`), then the feeds are synced, so that
every opt-out, change and consent acknowledged before the batch was fetched is applied. A dry run
(`DryRun`) decides and counts and commits nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.commands.progress import Progress
from consumer.datapath.delivery import FatalDeliveryError
from consumer.datapath.offsets import PendingBatch
from consumer.feeds.feeds import Feeds
from consumer.wire.registry import RegistryRefused, RegistryUnavailable

Partition = tuple[str, int]
# Consumer errors that reading on cannot cure.
_FATAL_ERRORS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
    }
)
_WARN_AFTER_SECONDS = 10.0


@dataclass(frozen=True)
class Span:
    start: int  # the first offset of the range
    end: int  # one past its last: the end when the run began


class PassError(Exception):
    """The ranges cannot be read (no such topic, not authorised, no broker): exit status 1. Names the
    error and the topic, never a record."""


class Batches(Protocol):
    """What a command does with a pass's batches."""

    def prepare(self, messages: list[Any]) -> Any:
        """Before the transaction: what `decide` needs; may raise RegistryUnavailable (waited for)."""
        ...

    def decide(self, prepared: Any, batch: PendingBatch) -> Any:
        """Inside the transaction: produce the batch's outputs (tracked by `batch`); returns its counts."""
        ...

    def committed(self, decided: Any) -> None:
        """The batch's transaction is committed: its counts are final."""
        ...


class DryRun:
    """A delivery of nothing: batches are decided and counted, no transaction, no offset committed."""

    name = "dry-run"

    def open_batch(self, output: str = "training") -> PendingBatch:
        return PendingBatch(output)

    def close_batch(self, batch: PendingBatch, consumed: list[tuple[str, int, int]]) -> None:
        batch.sealed = True

    def recover(self, exc: KafkaException) -> bool:
        return False

    def settle(self, timeout: float) -> bool:
        return True

    def shutdown(self, timeout: float) -> bool:
        return True


class TransactionalPass:
    def __init__(
        self,
        consumer: Any,
        delivery: Any,
        feeds: Feeds,
        spans: dict[Partition, Span],
        log: Any,
        stopping: Callable[[], bool],
        batch_size: int = 2000,
        sync_timeout: float = 1.0,
        commit_timeout: float = 60.0,
    ) -> None:
        self.consumer = consumer
        self.delivery = delivery
        self.feeds = feeds
        self.spans = spans
        self.log = log
        self.stopping = stopping
        self.batch_size = batch_size
        self.sync_timeout = sync_timeout
        self.commit_timeout = commit_timeout
        self.next: dict[Partition, int] = {}  # the committed position of each partition
        self.first: dict[Partition, int] = {}  # where this run started
        self.pending: set[Partition] = set()  # partitions not yet read to their end
        self.resumed = False  # the group had committed offsets: this run goes on from a killed or stopped one
        self.not_retained = 0  # offsets between the committed ones and the ranges' starts

    # -- the start ---------------------------------------------------------------------------------

    def begin(self) -> int:
        """Position every range at the group's committed offset (else its start) and assign it; returns
        the records left to read. Call after the producer's transactions are initialised: that aborts a
        killed run's open transaction, whose offsets must not be taken for committed."""
        partitions = [TopicPartition(t, p) for t, p in self.spans]
        try:
            committed = self.consumer.committed(partitions, timeout=30) if partitions else []
        except KafkaException as exc:
            raise PassError(f"cannot read the committed offsets of the group: {exc.args[0].name()}") from exc
        at = {(tp.topic, tp.partition): tp.offset for tp in committed}
        for tp, span in self.spans.items():
            offset = at.get(tp, -1)
            self.resumed = self.resumed or offset >= 0
            if 0 <= offset < span.start:  # removed by the topic's retention before this run could read them
                self.not_retained += span.start - offset
            self.next[tp] = self.first[tp] = max(offset, span.start) if offset >= 0 else span.start
            if self.next[tp] < span.end:
                self.pending.add(tp)
        self.consumer.assign([TopicPartition(t, p, self.next[t, p]) for t, p in sorted(self.pending)])
        return self.left()

    def left(self) -> int:
        return sum(self.spans[tp].end - self.next[tp] for tp in self.pending)

    def read(self) -> int:
        """Records (offsets) read and committed by this run."""
        return sum(min(self.next[tp], self.spans[tp].end) - self.first[tp] for tp in self.spans)

    # -- the batches ---------------------------------------------------------------------------------

    def run_showing(self, batches: Batches, what: str, err: IO[str]) -> bool:
        """`begin`, then `run` with its progress on `err`, and the last progress line."""
        progress = Progress(what, self.begin(), err)
        finished = self.run(batches, progress)
        progress.finish()
        return finished

    def run(self, batches: Batches, progress: Progress | None = None) -> bool:
        """Every range to its end, batch by batch; True when done, False when stopped before."""
        stopped = False
        while self.pending and not stopped:
            messages = self._fetch()
            # A stop ends the run between batches; the batch fetched last, maybe the last of a range, is
            # not committed then: the run is not finished even if every range was fetched to its end.
            stopped = self.stopping() or (bool(messages) and not self._batch(batches, messages))
            if progress is not None:
                progress.update(self.read())
        self.delivery.shutdown(self.commit_timeout)
        if stopped:
            return False
        self.next.update({tp: max(self.next[tp], span.end) for tp, span in self.spans.items()})
        return True

    def _batch(self, batches: Batches, messages: list[Any]) -> bool:
        """Decide one batch and commit it; False when a stop came first (nothing of it committed)."""
        prepared = self._prepare(batches, messages)
        if prepared is None or not self._sync():
            return False
        batch = self.delivery.open_batch()
        try:
            decided = batches.decide(prepared, batch)
        except KafkaException as exc:
            # Not a record's fault: a transaction the broker made abortable is aborted and the batch
            # read again (`rewound`); anything else stops the run, nothing committed past it.
            if self.delivery.recover(exc):
                return True
            raise FatalDeliveryError(f"{exc.args[0].name()} producing an output") from exc
        self.delivery.close_batch(batch, [(m.topic(), m.partition(), m.offset()) for m in messages])
        if self.delivery.settle(self.commit_timeout):
            for m in messages:
                tp = (m.topic(), m.partition())
                self.next[tp] = max(self.next[tp], m.offset() + 1)
            batches.committed(decided)
        return True

    def rewound(self) -> None:
        """The delivery aborted a transaction and rewound: read again from the committed positions."""
        self.pending = {tp for tp, span in self.spans.items() if self.next[tp] < span.end}
        self.consumer.assign([TopicPartition(t, p, self.next[t, p]) for t, p in sorted(self.pending)])

    def _fetch(self) -> list[Any]:
        """The records of one consume() within the ranges; partitions that reached their end are done."""
        kept = []
        for msg in self.consumer.consume(num_messages=self.batch_size, timeout=0.5):
            tp = (msg.topic(), msg.partition())
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if tp in self.pending and msg.offset() >= self.spans[tp].end:
                        self._done(tp)  # past the last record: control records, or records compacted away
                    continue
                self._consumer_error(err, msg)
                continue
            if tp not in self.pending:
                continue
            offset, span = msg.offset(), self.spans[tp]
            if offset >= span.end:
                self._done(tp)
                continue
            kept.append(msg)
            if offset + 1 >= span.end:
                self._done(tp)
        return kept

    def _done(self, tp: Partition) -> None:
        self.pending.discard(tp)
        self.consumer.pause([TopicPartition(*tp)])

    def _consumer_error(self, err: KafkaError, msg: Any) -> None:
        if err.fatal() or err.code() in _FATAL_ERRORS:
            raise PassError(f"cannot read {msg.topic() or 'the topics'}: {err.name()}")
        self.log.warning("consumer_error", error=err.name(), topic=msg.topic())

    # -- before a batch: the registry and the feeds ----------------------------------------------------

    def _prepare(self, batches: Batches, messages: list[Any]) -> Any:
        since, said = time.monotonic(), None
        while True:
            try:
                return batches.prepare(messages)
            except (RegistryUnavailable, RegistryRefused) as exc:
                if said != str(exc):
                    said = str(exc)
                    self.log.warning("schema_registry_unavailable", error=said)
                if self.stopping():
                    return None
                time.sleep(min(1.0, max(0.1, time.monotonic() - since)))

    def _sync(self) -> bool:
        """The feeds synced after the batch was fetched: what was acknowledged before it is applied."""
        since, warned = time.monotonic(), False
        while not self.feeds.sync(self.sync_timeout):
            if self.stopping():
                return False
            if not warned and time.monotonic() - since > _WARN_AFTER_SECONDS:
                warned = True
                self.log.warning(
                    "feeds_behind", error=self.feeds.last_error, seconds=round(self.feeds.seconds_behind(), 1)
                )
        return True
