"""The service's own parts, for the operator commands that decide records again outside the loop
(`training-filter dlq replay`, `training-filter backfill`): the same settings (TF_*), codec and
registry, pseudonymiser, feeds, output limits and batch processor as `training-filter run`, built by
the same builders (consumer/service/assemble.py, feed_parts.py), and the feeds caught up as at
start-up (consumer/service/lifecycle.py). So a record decided again is decided exactly as the service
would decide it now: today's policy, opt-outs, changes and consents.

What the commands add is theirs: a consumer group and a transactional producer of their own
(`pass_consumer`, `transactional_producer`: its transactional id is the group's name, so a run
started again fences the one before and aborts what that one left open), and `Diverted`, the
producer the batch processor writes through, which keeps what the command must not write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer

from consumer.datapath.batch import BatchProcessor
from consumer.datapath.delivery import ExactlyOnce
from consumer.datapath.output_limits import OutputLimits
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.datapath.refused import RefusalHandler
from consumer.feeds.ends import BrokerQueries
from consumer.feeds.feeds import Feeds
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.operations.settings import Settings
from consumer.service import lifecycle
from consumer.service.assemble import Builder
from consumer.service.client_configs import client, producer_config, producer_max_for
from consumer.service.feed_parts import FeedBuilder
from consumer.service.state import State
from consumer.wire.codec import Codec
from consumer.wire.registry import Registry

Output = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]  # topic, value, key, headers


@dataclass(frozen=True)
class DecidingParts:
    settings: Settings
    clients: Clients
    state: State  # `stopping`: set by the signal handlers, ends every wait
    metrics: Metrics  # the service's metrics object (its gauges are set by the feeds; nothing serves them)
    log: Any
    codec: Codec
    pseudonymiser: Pseudonymiser
    feeds: Feeds  # caught up; synced again before each batch
    limits: OutputLimits
    builder: Builder

    def processor(self, producer: Any, settings: Settings | None = None, gate: bool | None = None) -> BatchProcessor:
        """A batch processor as the service builds it, with `settings` (another policy, a shadow) and the
        consent bounds of re-granted consents only where `gate` says its policy is opt-in."""
        s = settings or self.settings
        feeds = self.feeds
        if gate is not None:  # a view of the same mirrors: what the processor reads, not what is synced
            feeds = Feeds(feeds.optouts, feeds.consents, gate=gate, changes=feeds.changes)
        build = Builder(s, self.clients, self.codec, self.pseudonymiser, self.metrics, self.log)
        return build.processor(producer, self.limits, feeds)

    def delivery(self, consumer: Any, producer: Any, processor: BatchProcessor, on_rewind: Callable[[], None]) -> Any:
        """The service's exactly-once guarantee over the command's consumer and producer: each batch's
        outputs and the group's next offsets in one transaction; outputs the broker refuses for good
        handled by the processor's refused outputs, as the service does (a refused output's record is
        read again, and dead-lettered the second time)."""
        s = self.settings
        on_refused = RefusalHandler(
            processor.refused, processor.set_limits, self.builder.output_limits, True, self.metrics, self.log
        )
        return ExactlyOnce(
            consumer,
            producer,
            self.metrics,
            self.log,
            s.transaction_interval_ms / 1000,
            on_refused=on_refused,
            on_rewind=on_rewind,
        )

    def pass_consumer(self, group: str) -> Any:
        """A consumer of the command's own group: assigned by the command, offsets committed only in its
        transactions, committed records only, and the end of each partition marked."""
        s = self.settings
        config = s.consumer_config(
            {"auto.offset.reset": "earliest", "fetch.max.bytes": 52_428_800},
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                **self.builder.kafka_log,
            },
        )
        return client(self.clients.consumer, Consumer, config, f"{group} consumer", s)

    def transactional_producer(self, transactional_id: str) -> Any:
        """The output producer of the service, made transactional under `transactional_id`."""
        s = dataclasses.replace(self.settings, processing_guarantee="exactly-once", transactional_id=transactional_id)
        config = producer_config(s, self.limits, producer_max_for(s), self.builder.kafka_log)
        return client(self.clients.producer, Producer, config, f"{transactional_id} producer", s)

    def queries(self) -> BrokerQueries:
        """A client for the topics' partitions and offsets (no group, never fetches)."""
        s = self.settings
        return BrokerQueries(self.clients, {"bootstrap.servers": s.bootstrap_servers, **s.kafka_common})

    def close(self) -> None:
        close_quietly(self.log, self.feeds.close)


def assemble_deciding(
    settings: Settings, clients: Clients, state: State, log: Any, gate: bool | None = None
) -> DecidingParts:
    """Every part a command needs to decide records as the service does, the feeds caught up. `gate`:
    whether the consents gate (None: as the active policy says). Raises ConfigError (exit status 2) and
    FeedError as start-up does."""
    s = settings
    metrics = Metrics()
    codec = Codec(registry=Registry(s.registry) if s.registry is not None else None, max_value_bytes=s.max_value_bytes)
    pseudonymiser = Pseudonymiser(s.hmac_key)
    builder = Builder(s, clients, codec, pseudonymiser, metrics, log)
    feeds = FeedBuilder(s, clients, codec, pseudonymiser, metrics, log, builder.kafka_log, lambda: state.stopping)
    built = feeds.feeds(gate)
    try:
        lifecycle.prepare_writes(codec, s, state, metrics, log)
        limits = builder.output_limits()
        lifecycle.catch_up_feeds(built, state, metrics, log)
    except BaseException:
        close_quietly(log, built.close)
        raise
    return DecidingParts(s, clients, state, metrics, log, codec, pseudonymiser, built, limits, builder)


def close_quietly(log: Any, close: Callable[[], None]) -> None:
    try:
        close()
    except Exception as exc:  # closing must not hide the outcome; the type only
        log.warning("close_failed", error=type(exc).__name__)


class Diverted:
    """The producer a batch processor writes through for a command: records for the topics in `through`
    go to `producer` (the command's transactional one); every other record is kept in `kept`, and
    acknowledged at once, as if the broker had taken it (the processor's bookkeeping stays as in the
    service). A dead letter of a replay stays where it is; the outputs a backfill compares are kept."""

    def __init__(self, producer: Any | None, through: Iterable[str] = ()) -> None:
        self.producer = producer
        self.through = frozenset(through) if producer is not None else frozenset()
        self.kept: list[Output] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: Callable[[Any, Any], None] | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if topic in self.through:
            extra = {"headers": headers} if headers is not None else {}
            self.producer.produce(topic, value, key, partition, on_delivery, **extra)  # type: ignore[union-attr]
            return
        self.kept.append((topic, value, key, headers))
        if on_delivery is not None:
            on_delivery(None, None)

    def poll(self, timeout: float = 0) -> int:
        return int(self.producer.poll(timeout)) if self.producer is not None else 0

    def take(self) -> list[Output]:
        kept, self.kept = self.kept, []
        return kept


def cause_of(headers: list[tuple[str, bytes]] | None) -> str:
    """The `tf.cause` of a dead letter the batch processor wrote (kept by `Diverted`)."""
    return dict(headers or []).get("tf.cause", b"unknown").decode("utf-8", "replace")
