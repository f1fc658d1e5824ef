"""Fault scenarios of the output side: large records, and exactly-once while the feed is out.

- Values around every size limit (999,999 / 1,000,001 / 1,048,576 / 2,000,000 bytes), eligible and
  undecodable: the ones that fit reach the training topic or the DLQ whole, the rest become
  headers-only dead letters; the service never stops.
- The opt-out feed of one replica goes out (its READ permission on the opt-out topic is revoked),
  so it holds a fetched batch undecided; a second replica joins (KEDA scales out on the growing lag),
  then the first is killed with SIGKILL: nothing may be lost, in exactly-once mode nothing repeated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import signal
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from consumer.devtools.generator import Generated, StreamGenerator
from consumer.devtools.local_kafka import LocalKafka
from consumer.wire.codec import POST
from tests.faults.scenarios import (
    CODEC,
    FAST_FAILOVER,
    SECOND_PASSWORD,
    SECOND_USER,
    SERVICE_USER,
    Row,
    _stream,
    check_output,
    grant,
    secure_env,
    wait_for_output,
)
from tests.harness import ServiceProcess, Topics, produce, read_all

SIZES = (999_999, 1_000_001, 1_048_576, 2_000_000)
LIMIT = 1_048_576  # TF_MAX_VALUE_BYTES's default
BIG_PRODUCER = {"message.max.bytes": 2_200_000}
BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # the test's producer may write what the service must refuse


def sized_post(generator: StreamGenerator, size: int) -> Generated:
    """An eligible post whose framed value is exactly `size` bytes."""
    g = generator.record("eligible", "post")
    record = CODEC.decode(g.value, POST)[1]
    record["author_birth_date"] = (record["author_birth_date"] - dt.date(1970, 1, 1)).days
    record["created_at"] = int(record["created_at"].timestamp() * 1000)
    base = len(CODEC.encode(POST, {**record, "text": ""}))
    for cut in range(1, 6):
        n = size - base + 1 - cut
        value = CODEC.encode(POST, {**record, "text": "x" * n})
        if len(value) == size:
            return Generated(g.topic, g.key, value, g.record_id, g.user_id, "eligible", "post")
    raise AssertionError(f"no post of exactly {size} bytes")


def undecodable(topic: str, size: int, serial: int) -> Generated:
    """Framed as a Post (schema id 1), with a body that breaks the encoding at its first byte."""
    value = b"\x00\x00\x00\x00\x01" + b"\xff" * (size - 5)
    return Generated(topic, f"big-{serial}".encode(), value, None, f"big-{serial}", "malformed", "post")


def large_values(broker: LocalKafka, workdir: Path, records: int, guarantee: str, seed: int = 21) -> Row:
    topics = Topics.unique(broker.bootstrap, input_config={"max.message.bytes": "2200000"})
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    big: list[Generated] = []
    for i, size in enumerate(SIZES):
        post = sized_post(generator, size)
        big.append(post if size <= LIMIT else dataclasses.replace(post, expected="malformed"))
        big.append(undecodable(topics.posts, size, i))
    service = ServiceProcess(
        broker.bootstrap,
        topics,
        workdir,
        env_overrides={"TF_PROCESSING_GUARANTEE": guarantee, "TF_LOG_LEVEL": "info", "TF_BATCH_SIZE": "200"},
    )
    service.start().wait_ready()
    half = len(stream) // 2
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[:half]))
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in big), **BIG_PRODUCER)
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[half:]))
    full = stream + big
    wait_for_output(broker.bootstrap, topics.training, full, timeout=90)
    service.wait_settled(60)
    alive = service.process is not None and service.process.poll() is None
    runs = service.runs
    code = service.stop()
    row = check_output(f"values near 1 MB and 2 MB ({guarantee})", broker.bootstrap, topics.training, full, True)
    if not alive or code != 0 or runs != 1:
        row.failures.append(f"the service stopped (alive {alive}, exit status {code})")

    letters = {}
    for msg in read_all(broker.bootstrap, topics.dlq):
        headers = dict(msg.headers() or [])
        where = (int(headers["tf.source.partition"]), int(headers["tf.source.offset"]))
        letters[where] = (msg.value(), headers)
    offsets = {
        m.value(): (m.partition(), m.offset())
        for m in read_all(broker.bootstrap, topics.posts)
        if len(m.value() or b"") >= 999_999
    }
    for g in big:
        if g.expected == "eligible":
            continue
        value, headers = letters.get(offsets[g.value], (None, None))
        if headers is None:
            row.failures.append(f"no dead letter for the {len(g.value)}-byte input")
            continue
        whole = len(g.value) <= LIMIT
        if whole and value != g.value:
            row.failures.append(f"the {len(g.value)}-byte dead letter is not the original value")
        if not whole and (value is not None or headers.get("tf.truncated") != b"key,value,headers"):
            row.failures.append(f"the {len(g.value)}-byte dead letter is not headers-only")
    row.notes.append(
        f"sizes {', '.join(str(s) for s in SIZES)}: eligible up to {LIMIT} emitted, undecodable up to {LIMIT} "
        f"dead-lettered whole, 2,000,000 dead-lettered headers-only; the broker's default limit is "
        f"{BROKER_DEFAULT_MAX_MESSAGE_BYTES}"
    )
    return row


def _revoke_topic(admin: AdminClient, topic: str, user: str) -> None:
    """Every permission of `user` on `topic` (READ and DESCRIBE: its end offsets cannot be asked either)."""
    revoke = AclBindingFilter(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        f"User:{user}",
        "*",
        AclOperation.ANY,
        AclPermissionType.ALLOW,
    )
    for future in admin.delete_acls([revoke]).values():
        future.result(30)


def _two_replicas(
    broker: LocalKafka, topics: Topics, workdir: Path, group: str, guarantee: str
) -> tuple[ServiceProcess, ServiceProcess]:
    """Replicas A and B of one group, each with a credential (and a transactional id) of its own."""
    tag = uuid.uuid4().hex[:6]
    common = {
        **FAST_FAILOVER,
        "TF_PROCESSING_GUARANTEE": guarantee,
        "TF_BATCH_SIZE": "200",
        "TF_LOG_LEVEL": "info",
        "TF_OPTOUT_MAX_LAG_SECONDS": "2",
        "TF_TRANSACTION_INTERVAL_MS": "3000",
    }
    first = ServiceProcess(
        broker.secure_bootstrap,
        topics,
        workdir,
        group=group,
        env_overrides={**common, **secure_env(broker), "TF_TRANSACTIONAL_ID": f"training-filter-{tag}-a"},
    )
    second = ServiceProcess(
        broker.secure_bootstrap,
        topics,
        workdir,
        group=group,
        env_overrides={
            **common,
            **secure_env(broker, SECOND_USER, SECOND_PASSWORD),
            "TF_TRANSACTIONAL_ID": f"training-filter-{tag}-b",
        },
    )
    return first, second


def outage_scale_out_kill(broker: LocalKafka, workdir: Path, records: int, guarantee: str, seed: int = 22) -> Row:
    """Replica A's feed goes out while it holds a fetched batch; replica B joins; A is killed.

    In exactly-once mode A's transactions collect for 3 s, so one is still open when A first holds a
    batch it cannot decide: committing the consumer's position then (or at the revoke B's joining
    causes) would commit past the held records, and the kill would lose them.
    """
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 3})
    group = f"tf-{topics.posts}"
    grant(admin, topics, group, SERVICE_USER)
    grant(admin, topics, group, SECOND_USER)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    first, second = _two_replicas(broker, topics, workdir, group, guarantee)
    first.start().wait_ready(90)
    third = len(stream) // 3
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[:third]))
    first.wait_processed(third, timeout=60)

    _revoke_topic(admin, topics.optouts, SERVICE_USER)  # A's feed is out; B's credential still reads it
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[third : 2 * third]))
    deadline = time.monotonic() + 30
    while first.metric_sum("training_filter_input_paused") != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    paused = first.metric_sum("training_filter_input_paused") == 1
    time.sleep(3.5)  # past A's transaction interval while it holds its batch
    second.start().wait_ready(90)
    deadline = time.monotonic() + 30
    while second.metric_sum("training_filter_records_total") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    shared = second.metric_sum("training_filter_records_total")
    first.stop(signal.SIGKILL)
    grant(admin, topics, group, SERVICE_USER)
    first.start().wait_ready(90)
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[2 * third :]))
    wait_for_output(broker.bootstrap, topics.training, stream, timeout=120)
    first.wait_settled(60)
    second.wait_settled(60)
    codes = (second.stop(), first.stop())
    row = check_output(
        f"feed out + scale-out + kill -9 ({guarantee})",
        broker.bootstrap,
        topics.training,
        stream,
        duplicates_allowed=guarantee == "at-least-once",
    )
    if not paused:
        row.failures.append("replica A never paused: the outage was not exercised")
    if not shared:
        row.failures.append("replica B decided nothing: no rebalance was exercised")
    if codes != (0, 0):
        row.failures.append(f"exit statuses {codes}")
    row.notes.append(f"replica B decided {int(shared)} records while A held its batch; A killed, restarted")
    return row
