"""The opt-out feed: reads the opt-out topic into the Bloom filter, and emits revocations.

`OptOutFeed` is assigned every partition of the opt-out topic (no consumer group: each replica
needs every opt-out) and never commits; its position lives in the filter snapshot. `sync()` asks
the broker for the topic's current end offsets and applies opt-outs until it has reached them: the
service calls it after each consume() and before filtering, so every opt-out acknowledged before a
record was fetched is applied before that record is decided.

`RevocationEmitter` is a consumer group on the same topic: each opt-out record is handled by exactly
one replica, which produces one Revocation and commits only after the broker acknowledged it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumer.codec import OPTOUT, REVOCATION, Codec, CodecError
from consumer.delivery import AtLeastOnce
from consumer.metrics import Metrics
from consumer.optout_filter import OptOutFilter
from consumer.pseudonym import Pseudonymiser

_METADATA_REFRESH_SECONDS = 30.0


class FeedError(Exception):
    """The opt-out topic cannot be read (missing, unauthorised, broker down). No personal data."""


def parse_optout(codec: Codec, msg: Any) -> tuple[bytes | None, int, str]:
    """(user id, opted_out_at in epoch ms, result label) of an opt-out record.

    An undecodable value falls back to the key (the user id by contract) and the Kafka timestamp:
    failing closed means treating the record as the opt-out it most likely is.
    """
    value = msg.value()
    if value is None:
        return None, 0, "tombstone_ignored"  # an objection is never withdrawn by deleting it
    try:
        _, record = codec.decode(value, OPTOUT)
        when = record["opted_out_at"]
        return record["user_id"].encode("utf-8"), int(when.timestamp() * 1000), "applied"
    except CodecError:
        key = msg.key()
        if key:
            return key, int(msg.timestamp()[1]), "undecodable_used_key"
        return None, 0, "undecodable_dropped"


class OptOutFeed:
    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        optout_filter: OptOutFilter,
        codec: Codec,
        metrics: Metrics,
        log: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self.filter = optout_filter
        self.codec = codec
        self.metrics = metrics
        self.log = log
        self.clock = clock
        self.consumer = Consumer(
            {
                **config,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,  # marks the end even when the last offsets are control records
                # An aborted opt-out still filters its user: uncommitted data can only make the filter stricter.
                "isolation.level": "read_uncommitted",
                "fetch.wait.max.ms": 100,
            }
        )
        # End offsets and metadata come from a second client that never fetches: on the feed consumer's
        # own connection they would queue behind its long-polling fetch (up to fetch.wait.max.ms each).
        self.auth_error: str | None = None
        self.ends = Consumer({**config, "enable.auto.commit": False, "error_cb": self._on_error})
        self.positions: dict[int, int] = {}
        self.caught_up_at: float | None = None  # clock time of the end offsets last reached
        self.last_error: str | None = None
        self._metadata_checked = 0.0

    # -- start -----------------------------------------------------------------------------------

    def start(self, offsets: dict[int, int] | None) -> None:
        """Assign every partition, from the snapshot's offsets or from the beginning."""
        partitions = self._partitions(timeout=30.0)
        offsets = offsets or {}
        self.positions = {p: offsets.get(p, 0) for p in partitions}
        self.consumer.assign([TopicPartition(self.topic, p, offsets.get(p, OFFSET_BEGINNING)) for p in partitions])
        self._metadata_checked = self.clock()

    def _partitions(self, timeout: float) -> list[int]:
        """The topic's partitions, asked in short steps so that a credential the broker rejects fails
        at once instead of after the whole timeout."""
        deadline = self.clock() + timeout
        while True:
            self.ends.poll(0)  # serves the error callback; this client is assigned nothing, so it gets no records
            if self.auth_error is not None:
                raise FeedError(f"the broker rejected the credentials: {self.auth_error} (check TF_KAFKA_SASL_*)")
            try:
                metadata = self.ends.list_topics(self.topic, timeout=min(1.0, max(0.1, deadline - self.clock())))
                break
            except KafkaException as exc:
                if self.clock() >= deadline:
                    raise FeedError(f"cannot read metadata of {self.topic}: {exc.args[0].name()}") from exc
        info = metadata.topics.get(self.topic)
        if info is None or info.error is not None or not info.partitions:
            why = info.error.name() if info is not None and info.error is not None else "no such topic"
            raise FeedError(f"opt-out topic {self.topic} is not readable: {why}")
        return sorted(info.partitions)

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (client-level errors, e.g. the broker refusing the credentials)."""
        if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            self.auth_error = err.name()

    def _add_new_partitions(self) -> None:
        """The topic may gain partitions while running; every one must be read."""
        self._metadata_checked = self.clock()
        try:
            partitions = self._partitions(timeout=5.0)
        except FeedError:
            return
        new = [p for p in partitions if p not in self.positions]
        if new:
            for p in new:
                self.positions[p] = 0
            self.consumer.incremental_assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in new])
            self.log.info("optout_partitions_added", topic=self.topic, partitions=new)

    # -- sync ------------------------------------------------------------------------------------

    def sync(self, timeout: float) -> bool:
        """Apply every opt-out up to the topic's current end; False if that takes longer than `timeout`."""
        started = self.clock()
        deadline = started + timeout
        if started - self._metadata_checked > _METADATA_REFRESH_SECONDS:
            self._add_new_partitions()
        ends: dict[int, int] = {}
        try:
            for partition in self.positions:
                remaining = max(0.05, deadline - self.clock())
                _, high = self.ends.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=remaining, cached=False
                )
                ends[partition] = high
        except KafkaException as exc:
            self._failed(exc.args[0].name())
            return False
        while True:
            behind = [p for p, end in ends.items() if self.positions[p] < end]
            if not behind:
                break
            remaining = deadline - self.clock()
            if remaining <= 0:
                self._failed("timeout")
                return False
            if not self._apply(self.consumer.consume(num_messages=10_000, timeout=min(remaining, 0.2))):
                return False
        self.caught_up_at = started
        self.last_error = None
        return True

    def _apply(self, messages: list[Any]) -> bool:
        added = 0
        results: dict[str, int] = {}
        ok = True
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    partition = msg.partition()
                    if msg.offset() > self.positions.get(partition, 0):
                        self.positions[partition] = msg.offset()
                    continue
                self._failed(err.name())
                ok = False
                continue
            self.positions[msg.partition()] = msg.offset() + 1
            user_id, _, result = parse_optout(self.codec, msg)
            results[result] = results.get(result, 0) + 1
            if user_id is not None and self.filter.add(user_id):
                added += 1
        for result, count in results.items():
            self.metrics.optout_records.labels(result).inc(count)
        if added:
            self.metrics.optout_entries.set(self.filter.entries)
            self.metrics.optout_fp_rate.set(self.filter.estimated_fp_rate())
        return ok

    def _failed(self, error: str) -> None:
        if error != self.last_error:
            self.log.warning("optout_feed_error", topic=self.topic, error=error)
        self.last_error = error

    def seconds_behind(self) -> float:
        """Seconds since the feed last reached the topic's end (infinite before the first time)."""
        if self.caught_up_at is None:
            return float("inf")
        return max(0.0, self.clock() - self.caught_up_at)

    def close(self) -> None:
        self.consumer.close()
        self.ends.close()


class RevocationEmitter:
    """One Revocation per opt-out record, from whichever replica the group gives its partition."""

    def __init__(
        self,
        config: dict[str, Any],
        producer_config: dict[str, Any],
        topic: str,
        revocations_topic: str,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        metrics: Metrics,
        log: Any,
        flush_seconds: float,
    ) -> None:
        self.topic = topic
        self.revocations_topic = revocations_topic
        self.codec = codec
        self.pseudonymiser = pseudonymiser
        self.metrics = metrics
        self.log = log
        self.flush_seconds = flush_seconds
        codec.write_id(REVOCATION, subject=f"{revocations_topic}-value")
        self.producer = Producer({**producer_config, "enable.idempotence": True, "acks": "all", "linger.ms": 20})
        self.consumer = Consumer(
            {
                **config,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        # The same at-least-once bookkeeping as the input: offsets stored only behind acknowledged output.
        self.delivery = AtLeastOnce(self.consumer, self.producer, metrics, log)

    def start(self) -> None:
        self.consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.delivery.assigned_partitions(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.delivery.revoked(partitions, self.flush_seconds)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.delivery.lost(partitions)

    def poll(self) -> None:
        messages = self.consumer.consume(num_messages=1000, timeout=0)
        if messages:
            batch = self.delivery.open_batch("revocations")
            consumed: list[tuple[str, int, int]] = []
            for msg in messages:
                if msg.error() is not None:
                    continue
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None  # always set on a consumed record
                consumed.append((self.topic, partition, offset))
                user_id, opted_out_at, _ = parse_optout(self.codec, msg)
                if user_id is None:
                    continue
                pseudonym = self.pseudonymiser.pseudonym(user_id)
                value = self.codec.encode(
                    REVOCATION, {"author_pseudonym": pseudonym.decode("ascii"), "opted_out_at": opted_out_at}
                )
                batch.expect()
                while True:
                    try:
                        self.producer.produce(self.revocations_topic, value, pseudonym, on_delivery=batch.delivered)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
            self.delivery.close_batch(batch, consumed)
        self.delivery.tick()  # ProduceFailed becomes FatalDeliveryError: the service stops, nothing committed past it
        self._count()

    def _count(self) -> None:
        revoked, _ = self.delivery.take_counts()
        if revoked:
            self.metrics.revocations.inc(revoked)
            self.metrics.produced.labels("revocations").inc(revoked)

    def close(self, timeout: float) -> None:
        self.delivery.shutdown(timeout)
        self._count()
        self.consumer.close()
