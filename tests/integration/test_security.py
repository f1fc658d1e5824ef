"""Security: no personal data in logs or metric labels; SASL/SCRAM over TLS with exactly the
documented ACLs, the service's (receipts on), the operator commands' and the auditors'; the audit topic
append-only for all of them; bad credentials and a missing permission fail safely."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourcePatternType,
    ResourceType,
)

from consumer.audit.receipts import RECEIPT, chain_hash, parse_key
from consumer.devtools.generator import StreamGenerator
from consumer.devtools.local_kafka import LocalKafka, LocalKafkaError
from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.operations.acls import audit_acls, audit_group, operations_acls
from consumer.wire.codec import TRAINING_RECORD, Codec
from tests.faults.scenarios import SERVICE_PASSWORD, SERVICE_USER, grant, secure_env
from tests.harness import HMAC_KEY, ServiceProcess, Topics, produce, read_all
from tests.integration.test_backfill import policy_file, policy_retractions, posts, publish

pytestmark = pytest.mark.integration
CODEC = Codec()
OPERATIONS_USER = "tf-operations"  # the operator commands' own user (deploy/kubernetes/kafka)
OPERATIONS_PASSWORD = "tf-operations-test-password"
AUDIT_USER = "tf-audit"  # the auditors' own user (deploy/kubernetes/kafka/kafkauser-audit.yaml)
AUDIT_PASSWORD = "tf-audit-test-password"
AUDIT_KEY = "audit-key-for-the-security-tests-0123456789"


def test_no_user_id_birth_date_text_or_key_in_any_log_line_or_metric(kafka, topics, new_service):
    generator = StreamGenerator(seed=31, users_per_pool=300, posts_topic=topics.posts, ai_topic=topics.ai)
    produce(kafka.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    stream = list(generator.stream(3000))
    service = new_service(TF_LOG_LEVEL="debug", TF_LOG_SUMMARY_SECONDS="1").start()
    service.wait_ready()
    produce(kafka.bootstrap, ((g.topic, g.key, g.value) for g in stream))
    service.wait_processed(len(stream))
    service.wait_settled()
    time.sleep(1.5)  # at least one summary line after the stream
    metrics_text = service.get("/metrics")[1].decode()
    assert service.stop() == 0
    log_text = service.log_path.read_text()
    assert '"event":"summary"' in log_text and '"event":"batch"' in log_text

    secrets = set()
    for pool in generator.pools.values():
        for user in pool:
            secrets.add(user.user_id)
            if user.birth_day is not None:
                secrets.add((dt.date(1970, 1, 1) + dt.timedelta(days=user.birth_day)).isoformat())
    snippets = set()
    for g in stream:
        if g.expected == "malformed":
            continue
        record = CODEC.decode(
            g.value, "platform.content.v1.Post" if g.source == "post" else "platform.content.v1.AiInteraction"
        )[1]
        text = record.get("text") or record["prompt"]
        snippets.add(text[20:60])  # 40 characters: several words, never a log token by chance
    secrets.add(HMAC_KEY.decode())
    for haystack, where in ((log_text, "log"), (metrics_text, "metrics")):
        leaked = [s for s in secrets | snippets if s and s in haystack]
        assert not leaked, f"personal data in the {where}: {leaked[:3]}"
    # Metric label values come from fixed sets and topic/partition numbers only.
    for label_value in re.findall(r'="([^"]*)"', metrics_text):
        assert label_value in _allowed_label_values(topics) or label_value.isdigit() or _is_version(label_value), (
            label_value
        )


def _allowed_label_values(topics: Topics) -> set[str]:
    from consumer.operations.metric_table import CHANGE_RESULTS
    from consumer.operations.metrics import CONSENT_RESULTS, DLQ_CAUSES, OPTOUT_RESULTS, OUTPUTS
    from rules import REASONS, Retraction, Source, load_policy

    return (
        {str(r) for r in REASONS}
        | {str(s) for s in Source}
        | set(OUTPUTS)
        | set(DLQ_CAUSES)
        | set(OPTOUT_RESULTS)
        | set(CONSENT_RESULTS)
        | set(CHANGE_RESULTS)
        | {str(r) for r in Retraction}
        | {"records", "accounts"}
        | {
            "assign",
            "revoke",
            "lost",
            "load",
            "save",
            "ok",
            "failed",
            "unusable",
            "committed",
            "compiled",
            "interpreted",
            "at-least-once",
            "exactly-once",
            "CPython",
            "Linux",
            load_policy().version,
            topics.posts,
            topics.ai,
            "+Inf",
        }
    )


def _is_version(value: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+|[0-9.e+-]+", value))


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[LocalKafka]:
    try:
        broker = LocalKafka(
            secure=True,
            scram_users={
                SERVICE_USER: SERVICE_PASSWORD,
                OPERATIONS_USER: OPERATIONS_PASSWORD,
                AUDIT_USER: AUDIT_PASSWORD,
            },
        ).start()
    except LocalKafkaError as exc:
        pytest.fail(f"the secure local broker did not start: {exc}", pytrace=False)
    yield broker
    broker.cleanup()


def with_audit_topic(broker: LocalKafka, topics: Topics) -> Topics:
    """The test's topics with an audit topic of their own, created as deploy/kubernetes/kafka declares it
    (deleted by age, never compacted)."""
    audited = dataclasses.replace(topics, audit=f"audit-{topics.posts.removeprefix('posts-')}")
    ensure_topics(broker.bootstrap, [TopicSpec(audited.audit, 3, {"cleanup.policy": "delete"})])
    return audited


def audit_env(topics: Topics) -> dict[str, str]:
    return {"TF_AUDIT_TOPIC": topics.audit, "TF_AUDIT_KEY": AUDIT_KEY}


def receipt_chains(broker: LocalKafka, topic: str) -> dict[tuple[str, int], list[tuple[bytes, dict[str, Any]]]]:
    """The audit topic's receipts by input partition, in the order written (one audit partition each)."""
    chains: dict[tuple[str, int], list[tuple[bytes, dict[str, Any]]]] = {}
    for m in read_all(broker.bootstrap, topic):
        if parse_key(m.key()) is None:  # the record of recipients, kept beside the receipts
            continue
        r = CODEC.decode_own(m.value(), RECEIPT)
        chains.setdefault((r["input_topic"], r["input_partition"]), []).append((m.value(), r))
    return chains


def test_the_service_over_sasl_ssl_with_exactly_the_documented_acls(secure_broker, tmp_path):
    """With receipts on, over a restart: the audit topic's Write and Describe of required_acls place the
    receipts, and its Read lets the restarted service find each chain's head and go on from it."""
    topics = with_audit_topic(secure_broker, Topics.unique(secure_broker.bootstrap))
    admin = AdminClient({"bootstrap.servers": secure_broker.bootstrap})
    group = f"tf-{topics.posts}"
    grant(admin, topics, group)
    generator = StreamGenerator(seed=32, users_per_pool=100, posts_topic=topics.posts, ai_topic=topics.ai)
    produce(secure_broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    stream = list(generator.stream(1500))
    env = {**secure_env(secure_broker), **audit_env(topics)}
    service = ServiceProcess(secure_broker.secure_bootstrap, topics, tmp_path, group=group, env_overrides=env)
    logs, written = [], []
    for part in (stream[:750], stream[750:]):
        service.start().wait_ready(90)
        produce(secure_broker.bootstrap, ((g.topic, g.key, g.value) for g in part))
        service.wait_processed(len(part))
        service.wait_settled()
        assert service.stop() == 0
        logs.append(service.log_path.read_text())
        written.append(sum(len(chain) for chain in receipt_chains(secure_broker, topics.audit).values()))
    ids = {
        CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"]
        for m in read_all(secure_broker.bootstrap, topics.training)
    }
    assert ids == {g.record_id for g in stream if g.expected == "eligible"}
    assert read_all(secure_broker.bootstrap, topics.revocations), "revocations need their ACLs too"
    chains = receipt_chains(secure_broker, topics.audit)
    assert sum(r["records"] for chain in chains.values() for _, r in chain) >= len(stream), "every record receipted"
    assert 0 < written[0] < written[1], "both runs wrote receipts"
    for named, chain in chains.items():
        for (before, _), (_, after) in itertools.pairwise(chain):
            assert after["previous_sha256"] == chain_hash(before), f"{named}: the chain breaks"
    for log in logs:
        assert SERVICE_PASSWORD not in log and AUDIT_KEY not in log
        assert "AUTHORIZATION_FAILED" not in log and "audit_chain_head_not_found" not in log


def test_the_record_of_recipients_needs_the_documented_group_describe_and_says_so_without_it(secure_broker):
    """`audit recipients` over SASL_SSL with exactly the documented ACLs lists a recipient; without the
    Describe on every group it fails naming the permission, never reports an empty record."""
    topics = Topics.unique(secure_broker.bootstrap)
    admin = AdminClient({"bootstrap.servers": secure_broker.bootstrap})
    group = f"tf-{topics.posts}"
    grant(admin, topics, group)
    recipient = f"ml-{topics.posts}"
    produce(secure_broker.bootstrap, [(topics.training, b"k", b"v"), (topics.revocations, b"k", b"v")])
    reader = Consumer({"bootstrap.servers": secure_broker.bootstrap, "group.id": recipient, "log_level": 3})
    reader.commit(offsets=[TopicPartition(topics.training, 0, 1), TopicPartition(topics.revocations, 0, 1)],
                  asynchronous=False)  # fmt: skip
    reader.close()
    env = {
        **os.environ,
        **topics.env(),
        **secure_env(secure_broker),
        "TF_BOOTSTRAP_SERVERS": secure_broker.secure_bootstrap,
        "TF_GROUP_ID": group,
    }
    command = [sys.executable, "-m", "consumer.cli", "audit", "recipients", "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    (line,) = [orjson.loads(text) for text in done.stdout.splitlines()]
    assert (line["group"], line["reads_revocations"], line["unacknowledged"]) == (recipient, True, 0)

    describe_groups = AclBindingFilter(
        ResourceType.GROUP,
        "*",
        ResourcePatternType.LITERAL,
        f"User:{SERVICE_USER}",
        "*",
        AclOperation.DESCRIBE,
        AclPermissionType.ALLOW,
    )
    for future in admin.delete_acls([describe_groups]).values():
        assert future.result(30), "the documented ACLs include Describe on every group"
    try:
        time.sleep(2)  # let the broker's authorizer see the change
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert (done.returncode, done.stdout) == (1, ""), done.stderr
        assert "GROUP_AUTHORIZATION_FAILED" in done.stderr and 'Describe on the group "*"' in done.stderr
    finally:
        grant(admin, topics, group)


def client_config(broker: LocalKafka, user: str, password: str, **extra: Any) -> dict[str, Any]:
    """A librdkafka client of `user`, with the settings secure_env gives the service."""
    return {
        "bootstrap.servers": broker.secure_bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(broker.ca_path),
        "log_level": 3,
        **extra,
    }


def read_as(config: dict[str, Any], topics: list[str], timeout: float = 60.0) -> dict[str, int]:
    """Every record of `topics` read by assignment (as the audit commands read), counted by topic; a
    partition's error (an authorization failure) fails the test."""
    consumer = Consumer({**config, "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(timeout=10).topics
        wanted = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in metadata[t].partitions]
        consumer.assign(wanted)
        counts, open_partitions = dict.fromkeys(topics, 0), {(tp.topic, tp.partition) for tp in wanted}
        deadline = time.monotonic() + timeout
        while open_partitions and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                open_partitions.discard((message.topic(), message.partition()))
                continue
            counts[message.topic()] += 1
        assert not open_partitions, f"not read to the end: {sorted(open_partitions)}"
        return counts
    finally:
        consumer.close()


def refused(future: Any) -> str:
    """The error a request's future fails with (the test fails if it succeeds)."""
    with pytest.raises(KafkaException) as raised:
        future.result(30)
    return raised.value.args[0].name()


def test_the_auditors_read_what_they_verify_and_nobody_can_delete_or_reconfigure_receipts(secure_broker):
    """audit_acls() on a broker that enforces them (the KafkaUser training-filter-audit): every topic the
    verifier re-reads is readable under an `-audit-` group, its result can be appended to the audit
    topic, and nothing else can be written. Neither it nor the service may delete receipts
    (DeleteRecords) or shorten the audit topic's retention (AlterConfigs): the topic is append-only."""
    topics = with_audit_topic(secure_broker, Topics.unique(secure_broker.bootstrap))
    admin = AdminClient({"bootstrap.servers": secure_broker.bootstrap})
    group = f"tf-{topics.posts}"
    grant(admin, topics, group)
    grant(admin, topics, group, AUDIT_USER, audit_acls(group, topics))
    reread = [
        topics.posts,
        topics.ai,
        topics.optouts,
        topics.content_changes,
        topics.account_changes,
        topics.training,
        topics.revocations,
        topics.dlq,
        topics.audit,
    ]
    produce(secure_broker.bootstrap, [(topic, b"k", b"v") for topic in reread])
    auditor = client_config(secure_broker, AUDIT_USER, AUDIT_PASSWORD)
    assert read_as({**auditor, "group.id": audit_group(group, "verify")}, reread) == dict.fromkeys(reread, 1)

    produce(secure_broker.secure_bootstrap, [(topics.audit, b"verification/1", b"result")], **auditor)
    errors: list[str] = []
    writer = Producer({**auditor, "enable.idempotence": True})
    for topic in (topics.training, topics.revocations, topics.dlq):
        writer.produce(topic, b"forged", b"k", on_delivery=lambda e, m: errors.append(e.name()) if e else None)
    writer.flush(60)
    assert errors == ["TOPIC_AUTHORIZATION_FAILED"] * 3, "the auditors may write the audit topic alone"

    retention = ConfigResource(
        ResourceType.TOPIC,
        topics.audit,
        incremental_configs=[ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)],
    )
    for user, password in ((SERVICE_USER, SERVICE_PASSWORD), (AUDIT_USER, AUDIT_PASSWORD)):
        as_user = AdminClient(client_config(secure_broker, user, password))
        (deleted,) = as_user.delete_records([TopicPartition(topics.audit, 0, OFFSET_END)]).values()
        assert refused(deleted) == "TOPIC_AUTHORIZATION_FAILED", user
        (altered,) = as_user.incremental_alter_configs([retention]).values()
        assert refused(altered) in {"TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED"}, user
    assert len(read_all(secure_broker.bootstrap, topics.audit)) == 2, "every receipt is still there"


def test_wrong_password_fails_start_up_without_leaking_it(secure_broker, tmp_path):
    topics = Topics.unique(secure_broker.bootstrap)
    service = ServiceProcess(
        secure_broker.secure_bootstrap,
        topics,
        tmp_path,
        env_overrides={**secure_env(secure_broker), "TF_KAFKA_SASL_PASSWORD": "not-the-password-123"},
    )
    service.start()
    assert service.process is not None
    code = service.process.wait(90)
    assert code == 1
    log = service.log_path.read_text()
    assert "the broker rejected the credentials" in log
    assert "not-the-password-123" not in log


def test_a_write_permission_removed_stops_the_service_and_loses_nothing(secure_broker, tmp_path):
    topics = Topics.unique(secure_broker.bootstrap)
    admin = AdminClient({"bootstrap.servers": secure_broker.bootstrap})
    group = f"tf-{topics.posts}"
    grant(admin, topics, group)
    generator = StreamGenerator(seed=33, users_per_pool=100, posts_topic=topics.posts, ai_topic=topics.ai)
    produce(secure_broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    stream = list(generator.stream(2000))
    env = {**secure_env(secure_broker), "TF_BATCH_SIZE": "100"}
    service = ServiceProcess(secure_broker.secure_bootstrap, topics, tmp_path, group=group, env_overrides=env)
    service.start().wait_ready(90)
    produce(secure_broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[:1000]))
    service.wait_processed(1000)
    service.wait_settled()
    no_write = AclBindingFilter(
        ResourceType.TOPIC,
        topics.training,
        ResourcePatternType.LITERAL,
        f"User:{SERVICE_USER}",
        "*",
        AclOperation.WRITE,
        AclPermissionType.ALLOW,
    )
    for future in admin.delete_acls([no_write]).values():
        future.result(30)
    time.sleep(2)  # let the broker's authorizer see the change
    produce(secure_broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[1000:]))
    assert service.process is not None
    assert service.process.wait(120) == 1, "a record that cannot be delivered must stop the service"
    assert "produce_failed" in service.log_path.read_text()

    grant(admin, topics, group)
    restarted = ServiceProcess(secure_broker.secure_bootstrap, topics, tmp_path, group=group, env_overrides=env)
    restarted.start().wait_ready(90)
    eligible = {g.record_id for g in stream if g.expected == "eligible"}
    deadline = time.monotonic() + 90
    ids: set[str] = set()
    while time.monotonic() < deadline and not eligible <= ids:
        ids = {
            CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"]
            for m in read_all(secure_broker.bootstrap, topics.training)
        }
        time.sleep(1)
    assert restarted.stop() == 0
    assert eligible - ids == set(), "records were lost when the output could not be written"
    assert ids - eligible == set()


def test_the_operator_commands_run_with_exactly_the_operations_acls(secure_broker, tmp_path):
    """`dlq replay` and `backfill --from-training` as a user granted operations_acls() and nothing else
    (the KafkaUser training-filter-operations), on a broker that enforces ACLs. The service's user
    cannot replay: it has no Read on the DLQ, which is why the commands have a user of their own."""
    topics = Topics.unique(secure_broker.bootstrap)
    admin = AdminClient({"bootstrap.servers": secure_broker.bootstrap})
    group = f"tf-{topics.posts}"
    grant(admin, topics, group)
    grant(admin, topics, group, OPERATIONS_USER, operations_acls(group, topics))
    records = posts(2)  # u-25 and u-40 eligible; minors and an opted-out minor refused
    publish(secure_broker, topics, records)
    produce(secure_broker.bootstrap, [(topics.posts, b"u-x", b"\x00not an avro record")])
    service = ServiceProcess(
        secure_broker.secure_bootstrap, topics, tmp_path, group=group, env_overrides=secure_env(secure_broker)
    )
    service.start().wait_ready(90)
    service.wait_processed(len(records) + 1)
    service.wait_settled()
    assert service.stop() == 0

    def command(user: str, password: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        env = {
            **os.environ,
            **topics.env(),
            "TF_BOOTSTRAP_SERVERS": secure_broker.secure_bootstrap,
            "TF_GROUP_ID": group,
            "TF_HMAC_KEY": HMAC_KEY.decode(),
            "TF_OPTOUT_CAPACITY": "200000",
            **secure_env(secure_broker, user, password),
        }
        cli = [sys.executable, "-m", "consumer.cli", *args, "--json"]
        return subprocess.run(cli, env=env, capture_output=True, timeout=150, check=False)

    def summary(result: subprocess.CompletedProcess[bytes]) -> dict:
        assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
        # A feed without its group's ACL still reads (assigned), but warns of it on every sync.
        assert b"AUTHORIZATION_FAILED" not in result.stderr, result.stderr.decode(errors="replace")[-3000:]
        return orjson.loads(result.stdout)

    denied = command(SERVICE_USER, SERVICE_PASSWORD, "dlq", "replay")
    assert denied.returncode == 1, denied.stderr.decode(errors="replace")[-3000:]
    assert b"AUTHORIZATION_FAILED" in denied.stderr

    replayed = summary(command(OPERATIONS_USER, OPERATIONS_PASSWORD, "dlq", "replay"))
    assert (replayed["letters"], replayed["replayed"], sum(replayed["still_undecodable"].values())) == (1, 0, 1)
    strict = policy_file(tmp_path, 30, "strict-30")
    backfilled = summary(
        command(OPERATIONS_USER, OPERATIONS_PASSWORD, "backfill", "--from-training", "--policy", str(strict))
    )
    assert (backfilled["decided"], backfilled["retracted"]) == (4, 2)  # u-40's stay; u-25's two retracted
    assert sorted(k for k, _ in policy_retractions(secure_broker, topics)) == [b"policy/u-25/0", b"policy/u-25/1"]
