"""The Kafka ACLs training-filter needs, and nothing more: one list for the service (`required_acls`), one
for the operator commands `dlq replay` and `backfill` (`operations_acls`) and one for the auditors'
commands `audit verify` and `report` (`audit_acls`), each run as a Kafka user of its own; the Strimzi
KafkaUsers in deploy/kubernetes/kafka and the security tests are checked against them. The consumer
group and transactional id names the code uses are made here too, so that the lists cannot drift from
them."""

from __future__ import annotations

from dataclasses import dataclass

from consumer.operations.settings import DEFAULT_TOPICS, TopicNames


@dataclass(frozen=True)
class Acl:
    resource_type: str  # TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER
    name: str
    pattern: str  # LITERAL or PREFIXED
    operation: str  # READ, WRITE, DESCRIBE, DESCRIBE_CONFIGS, IDEMPOTENT_WRITE


FEEDS = ("optout", "change", "consent")


def feed_group(group_id: str, feed: str) -> str:
    """The group.id of a feed's consumer (assigned, never committing; librdkafka still asks for the
    group's coordinator, hence an ACL)."""
    return f"{group_id}-{feed}-feed"


def replay_group(group_id: str) -> str:
    """`dlq replay`'s consumer group, and its producer's transactional id."""
    return f"{group_id}-dlq-replay"


def backfill_group_prefix(group_id: str) -> str:
    """What every `backfill` run's group (and transactional id) starts with: a hash of its options follows."""
    return f"{group_id}-backfill-"


def audit_group(group_id: str, command: str) -> str:
    """The group.id of an audit command's consumer (`verify`, `report`; the service's own `chain`, which
    reads the receipts' chain heads back): assigned, never committed."""
    return f"{group_id}-audit-{command}"


def audit_group_prefix(group_id: str) -> str:
    """What every audit_group starts with: the auditors' user may read under it, and nothing else."""
    return audit_group(group_id, "")


def _read(topic: str) -> list[Acl]:
    return [Acl("TOPIC", topic, "LITERAL", "READ"), Acl("TOPIC", topic, "LITERAL", "DESCRIBE")]


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
        acls += _read(topic)
    for topic in (topics.training, topics.revocations, topics.dlq):
        acls += [Acl("TOPIC", topic, "LITERAL", "WRITE"), Acl("TOPIC", topic, "LITERAL", "DESCRIBE")]
    # The revocations topic is also read: the register of every objection, by pseudonym (optout_feed.py).
    acls.append(Acl("TOPIC", topics.revocations, "LITERAL", "READ"))
    # The audit topic, append-only: Write (the receipts), Describe (its partition count places them) and
    # Read (the chain's head of each assigned partition, by assignment under the "-audit-chain" group,
    # consumer/audit/writer.py). Never Delete (DeleteRecords), Alter or AlterConfigs: the service cannot
    # take back, truncate or shorten the retention of what it has said it decided.
    acls += [Acl("TOPIC", topics.audit, "LITERAL", op) for op in ("WRITE", "DESCRIBE", "READ")]
    # The output topics' max.message.bytes sets the input size limit (output_limits.py).
    for topic in (topics.training, topics.dlq):
        acls.append(Acl("TOPIC", topic, "LITERAL", "DESCRIBE_CONFIGS"))
    # The input group, and the "-optout-feed", "-revocations" and "-audit-chain" groups derived from it.
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


def operations_acls(
    group_id: str = "training-filter",
    topics: TopicNames = DEFAULT_TOPICS,
    consent_topic: str | None = None,
) -> list[Acl]:
    """The KafkaUser "training-filter-operations" of `dlq replay` and `backfill` (consumer/commands): what
    the service's user has not and must not have (Read on the DLQ and the training topic), and none of
    the service's own groups. Both commands build the service's feeds and decide as it does
    (decide_again.py), then run a transactional pass under a group of their own."""
    acls = []
    # The feeds, caught up as at start-up: opt-outs and the revocation register, the change topics (and
    # their `content/` ledger, the revocations again), the consents where a policy is opt-in. A backfill
    # reads the input topics; a replay the DLQ; `backfill --from-training` the clean topic's provenance.
    read = (
        topics.posts,
        topics.ai,
        topics.optouts,
        topics.revocations,
        topics.content_changes,
        topics.account_changes,
        *((consent_topic,) if consent_topic else ()),
        topics.dlq,
        topics.training,
    )
    for topic in read:
        acls += _read(topic)
    # A replay writes TrainingRecords; a backfill retractions and, with --admit, TrainingRecords. Neither
    # writes a dead letter: what still fails stays where it is (consumer/commands/decide_again.Diverted).
    for topic in (topics.training, topics.revocations):
        acls.append(Acl("TOPIC", topic, "LITERAL", "WRITE"))
    # The output limits are asked of the output topics as the service asks them (output_limits.py).
    for topic in (topics.training, topics.dlq):
        acls.append(Acl("TOPIC", topic, "LITERAL", "DESCRIBE_CONFIGS"))
    # The feeds' groups, named as the service's (literal: not the service's input group), and the passes'.
    for feed in FEEDS if consent_topic else FEEDS[:2]:
        acls.append(Acl("GROUP", feed_group(group_id, feed), "LITERAL", "READ"))
    acls.append(Acl("GROUP", replay_group(group_id), "LITERAL", "READ"))
    acls.append(Acl("GROUP", backfill_group_prefix(group_id), "PREFIXED", "READ"))
    # Each pass is a transactional producer whose id is its group's name.
    acls.append(Acl("CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE"))
    for name, pattern in ((replay_group(group_id), "LITERAL"), (backfill_group_prefix(group_id), "PREFIXED")):
        acls += [
            Acl("TRANSACTIONAL_ID", name, pattern, "WRITE"),
            Acl("TRANSACTIONAL_ID", name, pattern, "DESCRIBE"),
        ]
    return acls


def audit_acls(
    group_id: str = "training-filter",
    topics: TopicNames = DEFAULT_TOPICS,
    consent_topic: str | None = None,
) -> list[Acl]:
    """The KafkaUser "training-filter-audit" of `audit verify` and `report` (docs/audit.md), the auditors':
    Read on everything they re-read to check a decision, and Write on the audit topic alone, where the
    verifier appends its signed result. It writes no record, retraction or dead letter, and joins no
    group of the service: an auditor can check the service, never act as it."""
    acls = []
    # The verifier re-reads the input ranges, rebuilds the feeds (opt-outs, changes, consents where a
    # policy is opt-in), compares the emitted records and revocations, counts the dead letters; the
    # report reads the receipts and the feeds' and revocations' timestamps.
    read = (
        topics.posts,
        topics.ai,
        topics.optouts,
        *((consent_topic,) if consent_topic else ()),
        topics.content_changes,
        topics.account_changes,
        topics.training,
        topics.revocations,
        topics.dlq,
        topics.audit,
    )
    for topic in read:
        acls += _read(topic)
    # Append-only, as the service's: never Delete, Alter or AlterConfigs on the audit topic.
    acls.append(Acl("TOPIC", topics.audit, "LITERAL", "WRITE"))
    # Its consumers are assigned and commit nothing; librdkafka still asks for their group's coordinator.
    acls.append(Acl("GROUP", audit_group_prefix(group_id), "PREFIXED", "READ"))
    # The verifier asks how far the service's retraction emitter has committed (a retraction is owed
    # for every feed record it passed): Describe on that one group lets it fetch the offsets, not join.
    acls.append(Acl("GROUP", f"{group_id}-revocations", "LITERAL", "DESCRIBE"))
    # An idempotent producer for the result (brokers before 3.0 ask for this; it lets it write nothing).
    acls.append(Acl("CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE"))
    return acls
