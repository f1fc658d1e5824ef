"""Topic creation for development, the demo and the tests (production topics are Strimzi
KafkaTopic resources in deploy/kubernetes/)."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.datapath.output_limits import REQUIRED_TOPIC_BYTES
from consumer.operations.settings import DEFAULT_TOPICS, TopicNames


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def service_topics(names: TopicNames = DEFAULT_TOPICS, partitions: int = 4) -> list[TopicSpec]:
    forever = {"retention.ms": "-1"}
    # Room for the output of the largest input a default Java producer writes (consumer/datapath/output_limits.py).
    large = {"max.message.bytes": str(REQUIRED_TOPIC_BYTES)}
    return [
        TopicSpec(names.posts, partitions, {}),
        TopicSpec(names.ai, partitions, {}),
        # Opt-outs are kept forever and compacted by user id: the topic is the register of objections.
        TopicSpec(names.optouts, 1, {"cleanup.policy": "compact", **forever}),
        TopicSpec(names.training, partitions, large),
        # Revocations are permanent, so that a reader starting late still purges.
        TopicSpec(names.revocations, 1, {"cleanup.policy": "compact", **forever}),
        # The change topics are registers too (docs/retractions.md): compacted by record and user id.
        TopicSpec(names.content_changes, 1, {"cleanup.policy": "compact", **forever}),
        TopicSpec(names.account_changes, 1, {"cleanup.policy": "compact", **forever}),
        # The DLQ holds the original values, which are personal data: a bounded retention (14 days).
        TopicSpec(names.dlq, 1, {"retention.ms": str(14 * 24 * 3600 * 1000), **large}),
        # The decision receipts (docs/audit.md): an accountability record, kept long, never compacted.
        TopicSpec(names.audit, 2, {"retention.ms": str(400 * 24 * 3600 * 1000)}),
    ]


def ensure_topics(bootstrap: str, specs: list[TopicSpec], timeout: float = 30.0) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=s.config)
        for s in specs
        if s.name not in existing
    ]
    if not wanted:
        return
    for _name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
