"""Start-up, part one: every part of the service built from the settings, in the order they depend on
each other, into one frozen `Parts`. Nothing is completed after construction: each part is given its
collaborators when it is made.

1. the wire format (codec, with the registry if any), the policy's decider, the pseudonymiser;
2. the feeds: the opt-out mirror and, under an opt-in policy, the consent mirror, each from its
   snapshot when one matches, assigned every partition (their catch-up comes later, lifecycle.py);
3. the output schemas' ids (a registry that cannot be reached is waited for) and the size limits;
4. the producer, the batch processor, the input consumer and the delivery guarantee;
5. the revocation emitter, the snapshots, the feeds' sync thread, and the rebalance callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer

from consumer.consents import fingerprints
from consumer.consents import snapshot as consent_snapshot
from consumer.consents.applier import consent_mirror
from consumer.consents.fingerprints import ConsentSet
from consumer.datapath.batch import BatchProcessor
from consumer.datapath.delivery import AtLeastOnce, Delivery, ExactlyOnce
from consumer.datapath.output_limits import OutputLimits, describe_topic_limits, required_topic_bytes
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.datapath.refused import RefusalHandler
from consumer.datapath.shadow import Shadow
from consumer.feeds.background import BackgroundSync
from consumer.feeds.feeds import Feeds
from consumer.feeds.mirror import TopicMirror
from consumer.feeds.snapshots import Snapshots
from consumer.operations import logs
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.operations.settings import Settings
from consumer.optouts.applier import OptOutApplier, optout_mirror, revoker
from consumer.optouts.filter import LoadedSnapshot, OptOutFilter, SnapshotError, load_snapshot
from consumer.optouts.revocations import RevocationEmitter
from consumer.service import lifecycle
from consumer.service.client_configs import client, input_consumer_config, producer_config, producer_max_for
from consumer.service.parts import Parts
from consumer.service.rebalances import Rebalances, Stats
from consumer.service.state import State
from consumer.wire.codec import Codec
from consumer.wire.registry import Registry
from rules import Decider


def assemble(settings: Settings, clients: Clients, state: State, metrics: Metrics, log: Any) -> Parts:
    """Every part, in the order start-up needs them (see the module docstring)."""
    s = settings
    codec = Codec(registry=Registry(s.registry) if s.registry is not None else None, max_value_bytes=s.max_value_bytes)
    pseudonymiser = Pseudonymiser(s.hmac_key)
    build = Builder(s, clients, codec, pseudonymiser, metrics, log, lambda: state.stopping)
    feeds = build.feeds()
    lifecycle.prepare_writes(codec, s, state, metrics, log)
    limits = build.output_limits()
    producer = client(
        clients.producer, Producer, producer_config(s, limits, producer_max_for(s), build.kafka_log), "producer", s
    )
    processor = build.processor(producer, limits, feeds)
    consumer = client(
        clients.consumer,
        Consumer,
        input_consumer_config(s, Stats(state, metrics).on_stats, build.kafka_log),
        "input consumer",
        s,
    )
    on_refused = RefusalHandler(
        processor.refused, processor.set_limits, build.output_limits, s.exactly_once, metrics, log
    )
    delivery: Delivery
    if s.exactly_once:
        delivery = ExactlyOnce(
            consumer,
            producer,
            metrics,
            log,
            s.transaction_interval_ms / 1000,
            on_refused=on_refused,
            on_rewind=state.drop_held,
        )
    else:
        delivery = AtLeastOnce(consumer, producer, metrics, log, on_refused=on_refused)
    sync_timeout = min(1.0, s.optout_max_lag_seconds / 2)
    return Parts(
        settings=s,
        state=state,
        metrics=metrics,
        log=log,
        codec=codec,
        feeds=feeds,
        syncer=BackgroundSync(feeds, sync_timeout, log),
        consumer=consumer,
        producer=producer,
        delivery=delivery,
        processor=processor,
        revocations=build.revocation_emitter(),
        snapshots=Snapshots(
            feeds,
            s.optout_snapshot_path,
            s.consent_snapshot_path,
            s.optout_snapshot_interval_seconds,
            pseudonymiser.key_check(),
            metrics,
            log,
        ),
        rebalances=Rebalances(s, state, metrics, delivery, log),
    )


class Builder:
    """The parts whose making takes more than a line, each from what it is made of."""

    def __init__(
        self,
        settings: Settings,
        clients: Clients,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        metrics: Metrics,
        log: Any,
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.codec = codec
        self.pseudonymiser = pseudonymiser
        self.metrics = metrics
        self.log = log
        self.stopping = stopping
        self.kafka_log = {"logger": logs.kafka_logger()}
        self.optout_restored_at: float | None = None  # saved_at of the opt-out snapshot resumed, if any

    # -- the feeds ----------------------------------------------------------------------------------

    def feeds(self) -> Feeds:
        """The opt-out mirror, and the consent mirror under an opt-in policy (active: both gate input;
        only the shadow's: the consents are read but do not gate, nor keep anyone out)."""
        s = self.settings
        optouts, applier = self.optout_mirror()
        consents = None
        opt_in = s.policy.consent_model == "opt_in"
        if s.consent_topic is not None:
            consents = self.consent_mirror(s.consent_topic, revoker(optouts.lock, applier) if opt_in else None)
        return Feeds(optouts, consents, gate=opt_in, log=self.log, sync_timeout=min(1.0, s.optout_max_lag_seconds / 2))

    def optout_mirror(self) -> tuple[TopicMirror[OptOutApplier], OptOutApplier]:
        s = self.settings
        members, snapshot = self._load_optouts()
        config = s.consumer_config(**{"group.id": f"{s.group_id}-optout-feed"}, **self.kafka_log)
        mirror = optout_mirror(
            self.clients,
            config,
            s.optouts_topic,
            s.revocations_topic,
            members,
            self.codec,
            self.pseudonymiser,
            self.metrics,
            self.log,
            self.stopping,
        )
        applier = mirror.applier
        self.metrics.feed_lag(mirror.seconds_behind)
        mirror.start(*((snapshot.offsets, snapshot.topic_ids) if snapshot is not None else (None, None)))
        if snapshot is not None and mirror.reset_reason is None:
            self.optout_restored_at = snapshot.saved_at
        f = applier.members  # a new, empty one if the snapshot's offsets could not be used
        self.metrics.optout_capacity.set(f.capacity)
        self.metrics.optout_bytes.set(f.size_bytes)
        self.metrics.optout_entries.set(f.entries)
        self.metrics.optout_fp_rate.set(f.estimated_fp_rate())
        return mirror, applier

    def _load_optouts(self) -> tuple[OptOutFilter, LoadedSnapshot | None]:
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

    def consent_mirror(self, topic: str, keep_out: Callable[[list[bytes]], None] | None) -> TopicMirror[Any]:
        s = self.settings
        members, snapshot = self._load_consents(topic)
        config = s.consumer_config(**{"group.id": f"{s.group_id}-consent-feed"}, **self.kafka_log)
        mirror = consent_mirror(
            self.clients,
            config,
            topic,
            members,
            self.codec,
            self.pseudonymiser,
            self.metrics,
            self.log,
            keep_out,
            self.stopping,
        )
        gates = "true" if s.policy.consent_model == "opt_in" else "false"  # else only the shadow is opt-in
        self.metrics.feed_lag(mirror.seconds_behind, "consent", {"gates_input": gates})
        mirror.start(*((snapshot.offsets, snapshot.topic_ids) if snapshot is not None else (None, None)))
        c = mirror.members
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
        return mirror

    def _load_consents(self, topic: str) -> tuple[ConsentSet, LoadedSnapshot | None]:
        s = self.settings
        if s.consent_snapshot_path is not None:
            started = time.monotonic()
            try:
                loaded = consent_snapshot.load(
                    s.consent_snapshot_path, s.consent_capacity, [topic], self.pseudonymiser.key_check()
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
        """Under an opt-in active policy the opt-out filter holds every withdrawal the consent mirror
        has read (consumer/consents/applier.py); the consent snapshot's offsets skip those withdrawals,
        so it is resumed only with an opt-out filter restored from a snapshot saved after it (they
        are saved in that order). Else a user whose grant was read after their withdrawal would be
        admitted until the withdrawal's revocation is read back. (Without an opt-out snapshot path
        the filter is rebuilt from the topics at every start and the consent snapshot is resumed
        as before: docs/operating.md, the feeds' syncs, says what that leaves open.)"""
        s = self.settings
        if s.policy.consent_model != "opt_in" or s.optout_snapshot_path is None:
            return
        if self.optout_restored_at is None:
            raise SnapshotError("the opt-out filter was not restored from a snapshot: the consents are read again")
        if loaded.saved_at > self.optout_restored_at:
            raise SnapshotError("it is newer than the opt-out snapshot: the consents are read again")

    # -- the outputs --------------------------------------------------------------------------------

    def output_limits(self) -> OutputLimits:
        """Input and output size limits that agree with the producer and the output topics (see
        consumer/datapath/output_limits.py). Asked of the broker at start-up and after a refused record."""
        s = self.settings
        admin = self.clients.admin({"bootstrap.servers": s.bootstrap_servers, **s.kafka_common, **self.kafka_log})
        described = describe_topic_limits(admin, [s.training_topic, s.dlq_topic])
        limits = OutputLimits.compute(s.max_value_bytes, producer_max_for(s), s.training_topic, s.dlq_topic, described)
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

    def processor(self, producer: Any, limits: OutputLimits, feeds: Feeds) -> BatchProcessor:
        s = self.settings
        shadow = None
        if s.shadow_policy is not None:  # TF_SHADOW_POLICY_FILE: decided beside the active policy, counted only
            shadow = Shadow(Decider(s.shadow_policy), self.metrics.shadow_sink(s.shadow_policy.version))
        consents = feeds.consents.members if feeds.consents is not None else None
        return BatchProcessor(
            decider=Decider(s.policy),
            codec=self.codec,
            pseudonymiser=self.pseudonymiser,
            opted_out=membership(feeds.optouts.members.contains, self.pseudonymiser),
            consented=membership(consents.contains, self.pseudonymiser) if consents is not None else None,
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

    def revocation_emitter(self) -> RevocationEmitter:
        s = self.settings
        return RevocationEmitter(
            self.clients,
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


def membership(contains: Callable[[bytes], Any], pseudonymiser: Pseudonymiser) -> Callable[[bytes], bool]:
    """The rules' membership test (opt-outs, consents): the sets hold pseudonyms (memoised HMACs)."""
    pseudonym = pseudonymiser.pseudonym

    def test(user_id: bytes) -> bool:
        return bool(contains(pseudonym(user_id)))

    return test
