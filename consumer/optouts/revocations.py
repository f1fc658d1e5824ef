"""Revocations: one per opt-out record (and, under an opt-in policy, one per consent withdrawal), so
that readers of the training topic purge what they took.

`RevocationEmitter` is a consumer group on the opt-out topic: each opt-out record is handled by
exactly one replica, which produces one Revocation (keyed by the pseudonym) and commits only after
the broker acknowledged it. The revocations topic is also the register the opt-out mirror reads back
(consumer/optouts/applier.py): an objection a tombstone deleted is still there.
"""

from __future__ import annotations

import contextlib
from typing import Any

from confluent_kafka import TopicPartition

from consumer.datapath.delivery import AtLeastOnce
from consumer.datapath.offsets import PendingBatch
from consumer.datapath.produce import produce_when_room
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.feeds.records import parse_consent, parse_optout
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.wire.codec import REVOCATION, Codec, LookupDeferredError
from consumer.wire.registry import RegistryRefused, RegistryUnavailable

REVOCATION_QUEUE_KBYTES = 16_384


class RevocationEmitter:
    """One Revocation per opt-out record, from whichever replica the group gives its partition."""

    def __init__(
        self,
        clients: Clients,
        config: dict[str, Any],
        producer_config: dict[str, Any],
        topic: str,
        revocations_topic: str,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        metrics: Metrics,
        log: Any,
        flush_seconds: float,
        consent_topic: str | None = None,
    ) -> None:
        self.topic = topic
        # Opt-in policies: a consent withdrawal is revoked like an opt-out (consumer/consents/applier.py).
        self.consent_topic = consent_topic
        self.revocations_topic = revocations_topic
        self.codec = codec
        self.pseudonymiser = pseudonymiser
        self.metrics = metrics
        self.log = log
        self.flush_seconds = flush_seconds
        self.producer = clients.producer(
            {
                **producer_config,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                # Revocations are small: a bounded queue instead of librdkafka's 1 GiB (in the memory budget).
                "queue.buffering.max.kbytes": REVOCATION_QUEUE_KBYTES,
            }
        )
        self.consumer = clients.consumer(
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
        topics = [self.topic] if self.consent_topic is None else [self.topic, self.consent_topic]
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.delivery.assigned_partitions(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.delivery.revoked(partitions, self.flush_seconds)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.delivery.lost(partitions)

    def poll(self) -> None:
        messages = self.consumer.consume(num_messages=1000, timeout=0)
        if messages:
            # The batch's schema ids, within the registry's per-batch bounds; in an outage the records of
            # ids not looked up are read again (consents) or go by their key (opt-outs).
            with contextlib.suppress(RegistryUnavailable):
                self.codec.resolve_values(m.value() for m in messages if m.error() is None)
            batch = self.delivery.open_batch("revocations")
            consumed: list[tuple[str, int, int]] = []
            again: set[tuple[str, int]] = set()
            for msg in messages:
                if msg.error() is not None:
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic is not None and partition is not None and offset is not None  # set on a consumed record
                if topic == self.consent_topic:
                    if (topic, partition) in again:
                        continue
                    try:
                        users, granted, opted_out_at, _ = parse_consent(self.codec, msg, lookup=False)
                    except (RegistryUnavailable, RegistryRefused, LookupDeferredError):  # read it again later
                        again.add((topic, partition))
                        self.consumer.seek(TopicPartition(topic, partition, offset))
                        continue
                    if granted:
                        users = []  # a grant revokes nothing
                else:
                    users, opted_out_at, _ = parse_optout(self.codec, msg, lookup=False)
                consumed.append((topic, partition, offset))
                self._revoke(batch, users, opted_out_at)
            self.delivery.close_batch(batch, consumed)
        self.delivery.tick()  # ProduceFailed becomes FatalDeliveryError: the service stops, nothing committed past it
        self._count()

    def _revoke(self, batch: PendingBatch, users: list[bytes], opted_out_at: int) -> None:
        for user_id in users:
            pseudonym = self.pseudonymiser.pseudonym(user_id)
            value = self.codec.encode(
                REVOCATION, {"author_pseudonym": pseudonym.decode("ascii"), "opted_out_at": opted_out_at}
            )
            batch.expect()
            produce_when_room(self.producer, self._wait, self.revocations_topic, value, pseudonym, batch.delivered)

    def _wait(self) -> None:
        self.producer.poll(0.05)

    def _count(self) -> None:
        revoked, _ = self.delivery.take_counts()
        if revoked:
            self.metrics.revocations.inc(revoked)
            self.metrics.produced.labels("revocations").inc(revoked)

    def close(self, timeout: float) -> None:
        self.delivery.shutdown(timeout)
        self._count()
        self.consumer.close()
