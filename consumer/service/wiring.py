"""Building the service's parts from its settings: the opt-out feed and filter (from a snapshot when
one matches), the output schemas' ids, the size limits, the producer, the input consumer, the
delivery guarantee, the batch processor and the revocation emitter.

Everything librdkafka is told lives here, with the reason for each value; the properties the
delivery guarantees rest on are set last, over the operator's TF_*KAFKA_* settings, and an operator
setting that tries to change them stops start-up (consumer/operations/kafka_settings.py lists them).
The configurations are built by module functions, so that consumer/service/preflight.py can make
each client kind from the real configuration, without bootstrap servers, before any connection.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from consumer.consents import fingerprints
from consumer.consents import snapshot as consent_snapshot
from consumer.consents.feed import ConsentFeed
from consumer.consents.fingerprints import ConsentSet
from consumer.datapath.batch import BatchProcessor
from consumer.datapath.delivery import AtLeastOnce, ExactlyOnce
from consumer.datapath.output_limits import (
    OutputLimits,
    describe_topic_limits,
    producer_max_bytes,
    required_topic_bytes,
)
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.datapath.shadow import Shadow
from consumer.operations import kafka_settings, logs
from consumer.operations.metrics import Metrics
from consumer.operations.settings import ConfigError, Settings
from consumer.optouts.feed import OptOutFeed
from consumer.optouts.filter import LoadedSnapshot, OptOutFilter, SnapshotError, load_snapshot
from consumer.optouts.revocations import RevocationEmitter
from consumer.wire.codec import Codec
from rules import Decider

PRODUCER_QUEUE_KBYTES = 131_072  # 128 MiB of records waiting for the broker: bounded memory (and budgeted)
TRANSACTION_TIMEOUT_MS = 60_000  # exactly-once, unless TF_PRODUCER_KAFKA_TRANSACTION_TIMEOUT_MS says otherwise


def check_overrides(settings: Settings) -> None:
    """The pass-through may not set what the delivery guarantees or a setting own (load_settings
    refuses them too; this guards Settings made another way)."""
    problems = kafka_settings.override_problems(settings.kafka_sources)
    if problems:
        raise ConfigError(problems)


def client(kind: Any, config: dict[str, Any], what: str, settings: Settings | None = None) -> Any:
    """Create a librdkafka client; a property it rejects is a configuration error naming its variable."""
    try:
        return kind(config)
    except (KafkaException, TypeError, ValueError) as exc:
        reason = kafka_settings.reason(exc)
        sources = settings.kafka_sources if settings is not None else ()
        role = "consumer" if kind is Consumer else "producer"
        raise ConfigError(kafka_settings.rejection(kind, role, what, reason, sources, OWN_PROPERTIES)) from exc


# The librdkafka properties that settings of the table set, for messages about a refused configuration.
OWN_PROPERTIES = {
    "group.id": "TF_GROUP_ID",
    "transactional.id": "TF_TRANSACTIONAL_ID",
    "statistics.interval.ms": "TF_STATISTICS_INTERVAL_MS",
    "auto.offset.reset": "TF_REVOCATIONS_START",
    "message.max.bytes": "TF_MAX_VALUE_BYTES",
    "batch.size": "TF_MAX_VALUE_BYTES",
}


def producer_max_for(s: Settings) -> int:
    """The producer's message.max.bytes: the operator's, or what TF_MAX_VALUE_BYTES needs."""
    configured = {**s.kafka_common, **s.kafka_producer}.get("message.max.bytes")
    return int(configured) if configured else producer_max_bytes(s.max_value_bytes)


def producer_config(s: Settings, limits: OutputLimits, max_bytes: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The output producer's librdkafka configuration (`extra`: the logger)."""
    config = s.producer_config(
        {
            # Batching for throughput; lz4 because text compresses well and lz4 costs little CPU.
            "linger.ms": 5,
            # Never a batch the output topics refuse: the broker would fail every record in it.
            "batch.size": min(1_000_000, limits.training_record_max, limits.dlq_record_max),
            "message.max.bytes": max_bytes,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 200_000,
            "queue.buffering.max.kbytes": PRODUCER_QUEUE_KBYTES,
            "message.timeout.ms": 300_000,  # retries ride out a broker restart of up to five minutes
        },
        **{"enable.idempotence": True, "acks": "all", **extra},
    )
    if s.exactly_once:
        config["transactional.id"] = s.transactional_id or f"{s.group_id}-{socket.gethostname()}"
        # librdkafka requires message.timeout.ms <= transaction.timeout.ms; a minute bounds how long an
        # abandoned transaction can hold back read_committed readers if its replica never returns.
        config.setdefault("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
        config["message.timeout.ms"] = min(int(config["message.timeout.ms"]), int(config["transaction.timeout.ms"]))
    return config


def input_consumer_config(s: Settings, on_stats: Callable[[str], None], extra: dict[str, Any]) -> dict[str, Any]:
    """The input consumer's librdkafka configuration (`extra`: the logger)."""
    return s.consumer_config(
        {
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 4_194_304,
            "statistics.interval.ms": s.statistics_interval_ms,
            "stats_cb": on_stats,
        },
        **{
            "group.id": s.group_id,
            "enable.auto.commit": not s.exactly_once,
            "auto.commit.interval.ms": 1000,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            **extra,
        },
    )


def opted_out(optout_filter: OptOutFilter, pseudonymiser: Pseudonymiser) -> Callable[[bytes], bool]:
    """The rules' membership test: the filter holds pseudonyms (memoised HMACs of user ids)."""
    return _membership(optout_filter.contains, pseudonymiser)


def consented(consents: ConsentSet, pseudonymiser: Pseudonymiser) -> Callable[[bytes], bool]:
    """The rules' consent test (opt-in policies): the consent set holds pseudonyms too."""
    return _membership(consents.contains, pseudonymiser)


def _membership(contains: Callable[[bytes], Any], pseudonymiser: Pseudonymiser) -> Callable[[bytes], bool]:
    pseudonym = pseudonymiser.pseudonym

    def test(user_id: bytes) -> bool:
        return bool(contains(pseudonym(user_id)))

    return test


@dataclass
class Wiring:
    """Builds the parts; holds what they are built from."""

    settings: Settings
    codec: Codec
    pseudonymiser: Pseudonymiser
    metrics: Metrics
    log: Any

    def __post_init__(self) -> None:
        self.kafka_log = {"logger": logs.kafka_logger()}
        self.producer_max = 0
        self.optout_restored_at: float | None = None  # saved_at of the opt-out snapshot resumed, if any

    # -- the opt-out side ------------------------------------------------------------------------

    def optout_feed(self, stopping: Callable[[], bool]) -> OptOutFeed:
        """The feed, assigned and positioned (from the snapshot's offsets when they can be used)."""
        s = self.settings
        optout_filter, snapshot = self._load_filter()
        feed = OptOutFeed(
            s.consumer_config(**{"group.id": f"{s.group_id}-optout-feed"}, **self.kafka_log),
            s.optouts_topic,
            s.revocations_topic,
            optout_filter,
            self.codec,
            self.pseudonymiser,
            self.metrics,
            self.log,
            stopping=stopping,
        )
        self.metrics.feed_lag(feed.seconds_behind)
        feed.start(*((snapshot.offsets, snapshot.topic_ids) if snapshot is not None else (None, None)))
        if snapshot is not None and feed.reset_reason is None:
            self.optout_restored_at = snapshot.saved_at
        f = feed.filter  # a new, empty one if the snapshot's offsets could not be used
        self.metrics.optout_capacity.set(f.capacity)
        self.metrics.optout_bytes.set(f.size_bytes)
        self.metrics.optout_entries.set(f.entries)
        self.metrics.optout_fp_rate.set(f.estimated_fp_rate())
        return feed

    def _load_filter(self) -> tuple[OptOutFilter, LoadedSnapshot | None]:
        s = self.settings
        if s.optout_snapshot_path is not None:
            started = time.monotonic()
            try:
                loaded = load_snapshot(
                    s.optout_snapshot_path,
                    s.optout_capacity,
                    s.optout_fp_rate,
                    [s.optouts_topic, s.revocations_topic],
                    self.pseudonymiser.key_check(),
                )
            except SnapshotError as exc:
                self.metrics.snapshots.labels("load", "unusable").inc()
                self.log.info("optout_snapshot_not_used", reason=str(exc), path=str(s.optout_snapshot_path))
            else:
                took = time.monotonic() - started
                self.metrics.snapshots.labels("load", "ok").inc()
                self.metrics.snapshot_seconds.labels("load").set(took)
                self.log.info(
                    "optout_snapshot_loaded",
                    entries=loaded.filter.entries,
                    seconds=round(took, 3),
                    age_seconds=round(time.time() - loaded.saved_at, 1),
                    partitions=len(loaded.offsets),
                )
                return loaded.filter, loaded
        return OptOutFilter(s.optout_capacity, s.optout_fp_rate), None

    # -- the consent side (opt-in policies) --------------------------------------------------------

    def consent_feed(self, stopping: Callable[[], bool]) -> ConsentFeed:
        """The consent feed, assigned and positioned (from its snapshot's offsets when they can be used)."""
        s = self.settings
        assert s.consent_topic is not None  # load_settings requires it when a policy is opt-in
        consents, snapshot = self._load_consents()
        feed = ConsentFeed(
            s.consumer_config(**{"group.id": f"{s.group_id}-consent-feed"}, **self.kafka_log),
            s.consent_topic,
            consents,
            self.codec,
            self.pseudonymiser,
            self.metrics,
            self.log,
            stopping=stopping,
        )
        gates = "true" if s.policy.consent_model == "opt_in" else "false"  # else only the shadow is opt-in
        self.metrics.feed_lag(feed.seconds_behind, "consent", {"gates_input": gates})
        feed.start(*((snapshot.offsets, snapshot.topic_ids) if snapshot is not None else (None, None)))
        c = feed.filter
        self.metrics.consent_capacity.set(c.capacity)
        self.metrics.consent_bytes.set(c.size_bytes)
        self.metrics.consent_entries.set(c.entries)
        self.metrics.consent_false_admission.set(c.false_admission_probability())
        # The figure the opt-in promise rests on: the chance that a user who never consented is admitted.
        self.log.info(
            "consent_set",
            capacity=c.capacity,
            slots=c.slots,
            bytes=c.size_bytes,
            entries=c.entries,
            fingerprint_bits=c.slots.bit_length() - 1 + 48,
            false_admission_probability_at_capacity=c.false_admission_probability(c.capacity),
            compiled=fingerprints.COMPILED,
        )
        return feed

    def _load_consents(self) -> tuple[ConsentSet, LoadedSnapshot | None]:
        s = self.settings
        if s.consent_snapshot_path is not None and s.consent_topic is not None:
            started = time.monotonic()
            try:
                loaded = consent_snapshot.load(
                    s.consent_snapshot_path, s.consent_capacity, [s.consent_topic], self.pseudonymiser.key_check()
                )
                self._check_withdrawals_kept(loaded)
            except SnapshotError as exc:
                self.metrics.snapshots.labels("load", "unusable").inc()
                self.log.info("consent_snapshot_not_used", reason=str(exc), path=str(s.consent_snapshot_path))
            else:
                self.metrics.snapshots.labels("load", "ok").inc()
                self.log.info(
                    "consent_snapshot_loaded",
                    entries=loaded.filter.entries,
                    seconds=round(time.monotonic() - started, 3),
                    partitions=len(loaded.offsets),
                )
                return loaded.filter, loaded  # type: ignore[return-value]
        return ConsentSet(s.consent_capacity), None

    def _check_withdrawals_kept(self, loaded: LoadedSnapshot) -> None:
        """Under an opt-in active policy the opt-out filter holds every withdrawal the consent feed
        has read (consumer/consents/feed.py); the consent snapshot's offsets skip those withdrawals,
        so it is resumed only with an opt-out filter restored from a snapshot saved after it (they
        are saved in that order). Else a user whose grant was read after their withdrawal would be
        admitted until the withdrawal's revocation is read back. (Without an opt-out snapshot path
        the filter is rebuilt from the topics at every start and the consent snapshot is resumed
        as before: docs/operating.md (the feeds' syncs) says what that leaves open.)"""
        s = self.settings
        if s.policy.consent_model != "opt_in" or s.optout_snapshot_path is None:
            return
        if self.optout_restored_at is None:
            raise SnapshotError("the opt-out filter was not restored from a snapshot: the consents are read again")
        if loaded.saved_at > self.optout_restored_at:
            raise SnapshotError("it is newer than the opt-out snapshot: the consents are read again")

    def revocation_emitter(self) -> RevocationEmitter:
        s = self.settings
        return RevocationEmitter(
            s.consumer_config(
                **{"group.id": f"{s.group_id}-revocations", "auto.offset.reset": s.revocations_start, **self.kafka_log}
            ),
            s.producer_config(**self.kafka_log),
            s.optouts_topic,
            s.revocations_topic,
            self.codec,
            self.pseudonymiser,
            self.metrics,
            self.log,
            s.revoke_flush_seconds,
            # Withdrawals are revoked only where consents admitted records: under an opt-in active policy.
            consent_topic=s.consent_topic if s.policy.consent_model == "opt_in" else None,
        )

    # -- the data path ---------------------------------------------------------------------------

    def output_limits(self) -> OutputLimits:
        """Input and output size limits that agree with the producer and the output topics (see
        consumer/datapath/output_limits.py). Asked of the broker at start-up and after a refused record."""
        s = self.settings
        self.producer_max = producer_max_for(s)
        admin = {"bootstrap.servers": s.bootstrap_servers, **s.kafka_common, **self.kafka_log}
        described = describe_topic_limits(admin, [s.training_topic, s.dlq_topic])
        limits = OutputLimits.compute(s.max_value_bytes, self.producer_max, s.training_topic, s.dlq_topic, described)
        needed = required_topic_bytes(s.max_value_bytes)
        short = {t: v for t, v in described.items() if v is None or v < needed}
        if short or limits.input_max < s.max_value_bytes:
            self.log.warning(
                "output_limits_lower_the_input_limit",
                input_max_bytes=limits.input_max,
                configured_max_value_bytes=s.max_value_bytes,
                topic_max_message_bytes=described,
                needed_max_message_bytes=needed,
                detail="larger inputs go to the DLQ as oversized; raise the topics' max.message.bytes "
                "(None: not readable, grant DESCRIBE_CONFIGS) or the producer's message.max.bytes",
            )
        else:
            self.log.info("output_limits", input_max_bytes=limits.input_max, topic_max_message_bytes=described)
        return limits

    def producer(self, limits: OutputLimits) -> Any:
        config = producer_config(self.settings, limits, self.producer_max, self.kafka_log)
        return client(Producer, config, "producer", self.settings)

    def input_consumer(self, on_stats: Callable[[str], None]) -> Any:
        config = input_consumer_config(self.settings, on_stats, self.kafka_log)
        return client(Consumer, config, "input consumer", self.settings)

    def delivery(self, consumer: Any, producer: Any) -> AtLeastOnce:
        s = self.settings
        if s.exactly_once:
            return ExactlyOnce(consumer, producer, self.metrics, self.log, s.transaction_interval_ms / 1000)
        return AtLeastOnce(consumer, producer, self.metrics, self.log)

    def processor(
        self,
        decider: Any,
        optout_filter: OptOutFilter,
        producer: Any,
        limits: OutputLimits,
        consents: ConsentSet | None = None,
    ) -> BatchProcessor:
        s = self.settings
        shadow = None
        if s.shadow_policy is not None:  # TF_SHADOW_POLICY_FILE: decided beside the active policy, counted only
            shadow = Shadow(Decider(s.shadow_policy), self.metrics.shadow_sink(s.shadow_policy.version))
        return BatchProcessor(
            decider=decider,
            codec=self.codec,
            pseudonymiser=self.pseudonymiser,
            opted_out=opted_out(optout_filter, self.pseudonymiser),
            consented=consented(consents, self.pseudonymiser) if consents is not None else None,
            producer=producer,
            training_topic=s.training_topic,
            dlq_topic=s.dlq_topic,
            posts_topic=s.posts_topic,
            ai_interactions_topic=s.ai_interactions_topic,
            on_backpressure=lambda: producer.poll(0.05),
            limits=limits,
            shadow=shadow,
            clock_skew_ms=int(s.clock_skew_seconds * 1000),
        )
