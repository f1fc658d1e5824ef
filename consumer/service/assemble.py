"""Start-up, part one: every part of the service built from the settings, in the order they depend on
each other, into one frozen `Parts`. Nothing is completed after construction: each part is given its
collaborators when it is made.

1. the wire format (codec, with the registry if any), the policy's decider, the pseudonymiser;
2. the feeds (consumer/service/feed_parts.py): the opt-out and change mirrors and, under an opt-in
   policy, the consent mirror, each from its snapshot when one matches, assigned every partition
   (their catch-up comes later, lifecycle.py);
3. the output schemas' ids (a registry that cannot be reached is waited for) and the size limits;
4. the producer, the batch processor, the input consumer and the delivery guarantee;
5. the retraction emitter, the snapshots, the feeds' sync thread, and the rebalance callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer

from consumer.audit.writer import ChainHeads, ReceiptWriter
from consumer.changes.guard import ChangeGuard
from consumer.changes.retractions import RetractionEmitter, Sources
from consumer.consents.applier import history_query
from consumer.datapath.batch import BatchProcessor
from consumer.datapath.delivery import AtLeastOnce, Delivery, ExactlyOnce
from consumer.datapath.output_limits import OutputLimits, describe_topic_limits, required_topic_bytes
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.datapath.refused import RefusalHandler
from consumer.datapath.shadow import Shadow
from consumer.feeds.background import BackgroundSync
from consumer.feeds.feeds import Feeds
from consumer.feeds.snapshots import Snapshots
from consumer.operations import logs
from consumer.operations.acls import audit_group
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.operations.settings import ConfigError, Settings
from consumer.service import lifecycle
from consumer.service.client_configs import client, input_consumer_config, producer_config, producer_max_for
from consumer.service.feed_parts import FeedBuilder
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
    build = Builder(s, clients, codec, pseudonymiser, metrics, log)
    feeds = FeedBuilder(s, clients, codec, pseudonymiser, metrics, log, build.kafka_log, lambda: state.stopping).feeds()
    lifecycle.prepare_writes(codec, s, state, metrics, log)
    limits = build.output_limits()
    producer = client(
        clients.producer, Producer, producer_config(s, limits, producer_max_for(s), build.kafka_log), "producer", s
    )
    processor = build.processor(producer, limits, feeds)
    receipts = build.receipts(producer) if s.audit_key is not None else None
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
            receipts=receipts,
        )
    else:
        delivery = AtLeastOnce(consumer, producer, metrics, log, on_refused=on_refused, receipts=receipts)
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
        revocations=build.retraction_emitter(feeds),
        snapshots=Snapshots(
            feeds,
            s.optout_snapshot_path,
            s.consent_snapshot_path,
            s.optout_snapshot_interval_seconds,
            pseudonymiser.key_check(),
            metrics,
            log,
            changes_path=s.changes_snapshot_path,
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
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.codec = codec
        self.pseudonymiser = pseudonymiser
        self.metrics = metrics
        self.log = log
        self.kafka_log = {"logger": logs.kafka_logger()}

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
        # Under an opt-in active policy, what a user wrote before the grant that followed a withdrawal stays out.
        bounds = feeds.consents.applier.history.since if feeds.consents is not None and feeds.gate else None
        assert feeds.changes is not None
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
            changes=ChangeGuard(feeds.changes.members, bounds),
        )

    def receipts(self, producer: Any) -> ReceiptWriter:
        """The decision receipts' writer (docs/audit.md), with a reader of the audit topic for the chain's
        heads. The topic must exist: its partition count places each input partition's receipts."""
        s = self.settings
        metadata = producer.list_topics(s.audit_topic, timeout=10.0).topics.get(s.audit_topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise ConfigError(
                f"TF_AUDIT_TOPIC={s.audit_topic}: the audit topic does not exist or cannot be described "
                "(create it as deploy/kubernetes/kafka does, and grant Describe and Write on it)"
            )
        reader = self.clients.consumer(
            s.consumer_config(
                **{
                    "group.id": audit_group(s.group_id, "chain"),  # never joined, never committed: assign only
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                    **self.kafka_log,
                }
            )
        )
        heads = ChainHeads(reader, s.audit_topic, len(metadata.partitions), self.log)
        return ReceiptWriter(producer, self.codec, s, heads)

    def retraction_emitter(self, feeds: Feeds) -> RetractionEmitter:
        s = self.settings
        # Withdrawals are retracted only where consents admitted records: under an opt-in active policy.
        opt_in = s.policy.consent_model == "opt_in" and feeds.consents is not None
        sources = Sources(
            optouts=s.optouts_topic,
            content_changes=s.content_changes_topic,
            account_changes=s.account_changes_topic,
            revocations=s.revocations_topic,
            consents=s.consent_topic if opt_in else None,
        )
        return RetractionEmitter(
            self.clients,
            s.consumer_config(
                **{"group.id": f"{s.group_id}-revocations", "auto.offset.reset": s.revocations_start, **self.kafka_log}
            ),
            s.producer_config(**self.kafka_log),
            sources,
            self.codec,
            self.pseudonymiser,
            Decider(s.policy),
            self.metrics,
            self.log,
            s.revoke_flush_seconds,
            regrant_bound=history_query(feeds.consents) if opt_in and feeds.consents is not None else None,
            clock_skew_ms=int(s.clock_skew_seconds * 1000),
        )


def membership(contains: Callable[[bytes], Any], pseudonymiser: Pseudonymiser) -> Callable[[bytes], bool]:
    """The rules' membership test (opt-outs, consents): the sets hold pseudonyms (memoised HMACs)."""
    pseudonym = pseudonymiser.pseudonym

    def test(user_id: bytes) -> bool:
        return bool(contains(pseudonym(user_id)))

    return test
