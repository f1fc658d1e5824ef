"""The Kafka ACLs training-filter needs, and nothing more: one list that the Strimzi KafkaUser in
deploy/kubernetes/ and the security tests are both checked against."""

from __future__ import annotations

from dataclasses import dataclass

from consumer.operations.settings import DEFAULT_TOPICS, TopicNames


@dataclass(frozen=True)
class Acl:
    resource_type: str  # TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER
    name: str
    pattern: str  # LITERAL or PREFIXED
    operation: str  # READ, WRITE, DESCRIBE, DESCRIBE_CONFIGS, IDEMPOTENT_WRITE


def required_acls(
    group_id: str = "training-filter",
    topics: TopicNames = DEFAULT_TOPICS,
    transactional_id_prefix: str | None = "training-filter",
    consent_topic: str | None = None,
) -> list[Acl]:
    acls = []
    # The consent topic (TF_CONSENT_TOPIC) only where a policy is opt-in; it is read like the opt-out
    # topic, by assignment (consumer/feeds/mirror.py), so it needs no group of its own.
    # The change topics likewise, by the change mirror; and by the "-revocations" group, which retracts.
    read = (
        topics.posts,
        topics.ai,
        topics.optouts,
        topics.content_changes,
        topics.account_changes,
        *((consent_topic,) if consent_topic else ()),
    )
    for topic in read:
        acls += [Acl("TOPIC", topic, "LITERAL", "READ"), Acl("TOPIC", topic, "LITERAL", "DESCRIBE")]
    for topic in (topics.training, topics.revocations, topics.dlq):
        acls += [Acl("TOPIC", topic, "LITERAL", "WRITE"), Acl("TOPIC", topic, "LITERAL", "DESCRIBE")]
    # The revocations topic is also read: the register of every objection, by pseudonym (optout_feed.py).
    acls.append(Acl("TOPIC", topics.revocations, "LITERAL", "READ"))
    # The output topics' max.message.bytes sets the input size limit (output_limits.py).
    for topic in (topics.training, topics.dlq):
        acls.append(Acl("TOPIC", topic, "LITERAL", "DESCRIBE_CONFIGS"))
    # The input group, and the "-optout-feed" and "-revocations" groups derived from it.
    acls.append(Acl("GROUP", group_id, "PREFIXED", "READ"))
    # The record of recipients (consumer/audit/recipients.py): Describe on every group lets ListGroups
    # list them all (KIP-231: without Describe on the cluster, only the groups one may Describe) and
    # OffsetFetch read their offsets; Describe on the cluster would also show every ACL. "*" is
    # Kafka's wildcard of a literal pattern. Only the offsets on topics the service describes anyway
    # (the training and revocations topics) are answered.
    acls.append(Acl("GROUP", "*", "LITERAL", "DESCRIBE"))
    # The idempotent producer (brokers before 3.0 ask for this; later ones accept topic WRITE instead).
    acls.append(Acl("CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE"))
    if transactional_id_prefix:  # exactly-once only
        acls += [
            Acl("TRANSACTIONAL_ID", transactional_id_prefix, "PREFIXED", "WRITE"),
            Acl("TRANSACTIONAL_ID", transactional_id_prefix, "PREFIXED", "DESCRIBE"),
        ]
    return acls
