"""Retractions (Revocation v2, docs/retractions.md): what the service writes on the revocations topic
when the truth changes, and the one replica that writes each.

`RetractionEmitter` is a consumer group on the opt-out topic, the change topics and, under an opt-in
active policy, the consent topic: each of their records is handled by exactly one replica, which
produces its retractions (keyed by what they retract, `key`) and commits only after the broker
acknowledged them. A crash between the two repeats some, which a reader tolerates.

- an opt-out: the author, for good (key `<pseudonym>`, as version 1);
- a consent withdrawal: the author (key `consent/<pseudonym>`); a grant after a withdrawal: the same
  key, now only what was created before the first grant since the withdrawal (the consent mirror says
  whether the user withdrew before, and since when they are eligible again: `regrant_bound`; asked
  again while it has not read that far);
- a content change: the record (key `content/<record_id>`);
- an account change: what the account's facts retract under the active policy (key `account/<pseudonym>`;
  a deletion `deleted/<pseudonym>`, which nothing replaces).

A record whose schema cannot be had now is read again (the partition is sought back), never turned
into a retraction without its author. The revocations topic is also the ledger the mirrors read back
(consumer/optouts/applier.py, consumer/consents/applier.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

from consumer.changes.records import DEFERRED, parse_account_change, parse_content_change
from consumer.datapath.delivery import AtLeastOnce
from consumer.datapath.offsets import PendingBatch
from consumer.datapath.produce import produce_when_room
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.feeds.records import parse_consent, parse_optout
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.wire.codec import REVOCATION, Codec
from consumer.wire.registry import RegistryUnavailable
from rules import DEFAULT_CLOCK_SKEW_MS, Decider, Retraction, account_retraction

REVOCATION_QUEUE_KBYTES = 16_384
# (pseudonym, grant's at, its topic, partition, offset) -> the bound (ms), NO_BOUND (a first grant), or
# None: the consent mirror has not read that far (ask again).
RegrantBound = Callable[[bytes, int, str, int, int], "int | None"]
NO_BOUND = -1


def key(reason: Retraction, pseudonym: bytes, record_id: str | None = None) -> bytes:
    """The Kafka key of a retraction: its subject and the source that writes it (docs/retractions.md#keys)."""
    if reason is Retraction.OPTED_OUT:
        return pseudonym
    if reason is Retraction.CONSENT_WITHDRAWN:
        return b"consent/" + pseudonym
    if reason is Retraction.ACCOUNT_DELETED:
        # A key of its own, which nothing else writes: a later change of the account (a sync restating
        # it) must not replace the deletion on the compacted topic, where the ledger finds it.
        return b"deleted/" + pseudonym
    if reason in (Retraction.AGE_CORRECTED, Retraction.REGION_CORRECTED):
        return b"account/" + pseudonym
    assert record_id is not None
    prefix = b"policy/" if reason is Retraction.POLICY_CHANGED else b"content/"
    return prefix + record_id.encode("utf-8")


def value(
    reason: Retraction,
    pseudonym: bytes,
    at_ms: int,
    record_id: str | None = None,
    created_before: int | None = None,
    lifted: bool = False,
) -> dict[str, Any]:
    """A Revocation v2 record (AUTHOR scope unless a record id is given)."""
    return {
        "author_pseudonym": pseudonym.decode("ascii"),
        "opted_out_at": at_ms,
        "scope": "AUTHOR" if record_id is None else "RECORD",
        "reason": str(reason),
        "record_id": record_id,
        "created_before": created_before,
        "lifted": lifted,
    }


@dataclass(frozen=True)
class Sources:
    """The topics whose records are retracted, and where the retractions go."""

    optouts: str
    content_changes: str
    account_changes: str
    revocations: str
    consents: str | None = None  # under an opt-in active policy only

    @property
    def subscribed(self) -> list[str]:
        topics = [self.optouts, self.content_changes, self.account_changes]
        return topics if self.consents is None else [*topics, self.consents]


Retractions = list[tuple[bytes, dict[str, Any]]]  # (key, value)


class RetractionEmitter:
    """The retractions of every record of `sources`, from whichever replica the group gives its partition."""

    def __init__(
        self,
        clients: Clients,
        config: dict[str, Any],
        producer_config: dict[str, Any],
        sources: Sources,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        decider: Decider,
        metrics: Metrics,
        log: Any,
        flush_seconds: float,
        regrant_bound: RegrantBound | None = None,
        clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS,
    ) -> None:
        self.sources = sources
        self.codec = codec
        self.pseudonym = pseudonymiser.pseudonym
        self.decider = decider  # the active policy: what an account's facts retract
        self.skew_ms = clock_skew_ms  # with the clock, the latest created_at a record can have (as the batch)
        self.regrant_bound = regrant_bound
        self.metrics = metrics
        self.log = log
        self.flush_seconds = flush_seconds
        self.producer = clients.producer(
            {
                **producer_config,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                # Retractions are small: a bounded queue instead of librdkafka's 1 GiB (in the memory budget).
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
        self._by_reason: dict[str, int] = {}

    def start(self) -> None:
        self.consumer.subscribe(
            self.sources.subscribed, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
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
            # The batch's schema ids, within the registry's per-batch bounds; the records of ids left
            # over are read again (the opt-outs go by their key).
            with contextlib.suppress(RegistryUnavailable):
                self.codec.resolve_values(m.value() for m in messages if m.error() is None)
            batch = self.delivery.open_batch("revocations")
            consumed: list[tuple[str, int, int]] = []
            again: set[tuple[str, int]] = set()
            for msg in messages:
                if msg.error() is not None or (msg.topic(), msg.partition()) in again:
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                retractions = self._retractions(msg)
                if retractions is None:  # read it again later
                    again.add((topic, partition))
                    self.consumer.seek(TopicPartition(topic, partition, offset))
                    continue
                consumed.append((topic, partition, offset))
                for k, v in retractions:
                    self._produce(batch, k, v)
            self.delivery.close_batch(batch, consumed)
        self.delivery.tick()  # ProduceFailed becomes FatalDeliveryError: the service stops, nothing committed past it
        self._count()

    def _retractions(self, msg: Any) -> Retractions | None:
        """The record's retractions; None to read it again later."""
        topic = msg.topic()
        if topic == self.sources.optouts:
            users, at_ms, _ = parse_optout(self.codec, msg, lookup=False)
            return [self._author(Retraction.OPTED_OUT, u, at_ms) for u in users]
        try:
            if topic == self.sources.content_changes:
                return self._content(msg)
            if topic == self.sources.account_changes:
                return self._account(msg)
            return self._consent(msg)
        except DEFERRED:
            return None

    def _author(self, reason: Retraction, user_id: bytes, at_ms: int, before: int | None = None) -> tuple[bytes, Any]:
        pseudonym = self.pseudonym(user_id)
        return key(reason, pseudonym), value(reason, pseudonym, at_ms, created_before=before)

    def _content(self, msg: Any) -> Retractions:
        changed = parse_content_change(self.codec, msg, defer=True)
        pseudonym = self.pseudonym(changed.user_id) if changed.user_id is not None else b""
        return [
            (key(changed.reason, pseudonym, r), value(changed.reason, pseudonym, changed.at_ms, record_id=r))
            for r in changed.record_ids
        ]

    def _account(self, msg: Any) -> Retractions:
        changed = parse_account_change(self.codec, msg)
        out = []
        for user_id, facts in changed.accounts:
            reason, before = account_retraction(self.decider, facts, int(time.time() * 1000) + self.skew_ms)
            out.append(self._author(reason, user_id, changed.at_ms, before))
        return out

    def _consent(self, msg: Any) -> Retractions | None:
        users, granted, at_ms, _ = parse_consent(self.codec, msg, lookup=False)
        if not granted:
            return [self._author(Retraction.CONSENT_WITHDRAWN, u, at_ms) for u in users]
        out = []
        for user_id in users:  # after a withdrawal, a grant retracts what was written before it counts from
            bound = self._regrant_bound(self.pseudonym(user_id), at_ms, msg)
            if bound is None:
                return None
            if bound != NO_BOUND:
                out.append(self._author(Retraction.CONSENT_WITHDRAWN, user_id, at_ms, before=bound))
        return out

    def _regrant_bound(self, pseudonym: bytes, at_ms: int, msg: Any) -> int | None:
        if self.regrant_bound is None:
            return NO_BOUND
        return self.regrant_bound(pseudonym, at_ms, msg.topic(), msg.partition(), msg.offset())

    def _produce(self, batch: PendingBatch, k: bytes, v: dict[str, Any]) -> None:
        encoded = self.codec.encode(REVOCATION, v)
        reason = v["reason"]
        delivered = batch.delivered

        def on_delivery(err: Any, msg: Any) -> None:
            if err is None:
                self._by_reason[reason] = self._by_reason.get(reason, 0) + 1
            delivered(err, msg)

        batch.expect()
        produce_when_room(self.producer, self._wait, self.sources.revocations, encoded, k, on_delivery)

    def _wait(self) -> None:
        self.producer.poll(0.05)

    def _count(self) -> None:
        revoked, _ = self.delivery.take_counts()
        if revoked:
            self.metrics.produced.labels("revocations").inc(revoked)
        for reason, count in self._by_reason.items():
            self.metrics.revocations.labels(reason).inc(count)
        self._by_reason.clear()

    def close(self, timeout: float) -> None:
        self.delivery.shutdown(timeout)
        self._count()
        self.consumer.close()
