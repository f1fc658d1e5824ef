"""Fault scenarios of the opt-out side: what a review of the feed found could let an objection slip.

Each one publishes an opt-out in a way the feed once mishandled, then posts of that user that would
otherwise be eligible, and checks that none of them reaches the training topic while the rest of a
normal stream arrives complete:

- an open (hanging) transaction on the opt-out topic, then a plain opt-out after it;
- the opt-out topic growing new partitions mid-stream, with opt-outs on the new ones;
- an opt-out deleted by a tombstone and removed by compaction, then a fresh replica;
- a snapshot whose offsets are beyond the end of a re-created opt-out topic.
"""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewPartitions

from consumer.devtools.generator import Generated
from consumer.devtools.local_kafka import LocalKafka
from consumer.devtools.topics import ensure_topics, service_topics
from consumer.wire.codec import OPTOUT
from tests.faults.scenarios import (
    CODEC,
    Row,
    _opted_out,
    _records_of,
    _stream,
    check_output,
    wait_for_output,
)
from tests.harness import ServiceProcess, Topics, produce, read_all


def _optout_value(user_id: str) -> bytes:
    return CODEC.encode(OPTOUT, {"user_id": user_id, "opted_out_at": int(time.time() * 1000), "source": "test"})


def _wait_revoked(service: ServiceProcess, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while service.metric_sum("training_filter_revocations_total") < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} revocations were emitted in {timeout} s")
        time.sleep(0.2)


def _service(broker: LocalKafka, topics: Topics, workdir: Path, **env: str) -> ServiceProcess:
    return ServiceProcess(broker.bootstrap, topics, workdir, env_overrides={"TF_LOG_LEVEL": "info", **env})


def _finish(name: str, broker: LocalKafka, topics: Topics, stream: list[Generated], service: ServiceProcess) -> Row:
    wait_for_output(broker.bootstrap, topics.training, stream, timeout=60)
    service.wait_settled(60)
    alive = service.process is not None and service.process.poll() is None
    code = service.stop()
    row = check_output(name, broker.bootstrap, topics.training, stream, duplicates_allowed=True)
    if not alive or code != 0:
        row.failures.append(f"the service did not keep running (exit status {code})")
    return row


def hanging_transaction(broker: LocalKafka, workdir: Path, records: int, seed: int = 11) -> Row:
    """A transaction is left open on the opt-out topic; an opt-out acknowledged after it must be
    applied before the user's next post is decided (the end offset is the high watermark, not the
    last stable offset that stops at the open transaction)."""
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    service = _service(broker, topics, workdir)
    service.start().wait_ready()
    half = len(stream) // 2
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[:half]))

    hanging = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "transactional.id": f"hanging-{topics.optouts}",
            "transaction.timeout.ms": 300_000,
            "log_level": 3,
        }
    )
    hanging.init_transactions(30)
    hanging.begin_transaction()
    other = next(g for g in stream[:half] if g.expected == "eligible")
    hanging.produce(topics.optouts, _optout_value(other.user_id), other.key)
    hanging.flush(30)  # written, never committed: the last stable offset stays before it

    victim = next(g for g in stream[half:] if g.expected == "eligible" and g.user_id != other.user_id)
    produce(broker.bootstrap, [(topics.optouts, victim.key, _optout_value(victim.user_id))])
    victim_posts = _records_of(generator, victim, topics, 30)
    produce(broker.bootstrap, [(g.topic, g.key, g.value) for g in victim_posts])
    rest = [_opted_out(g) if g.user_id in (victim.user_id, other.user_id) else g for g in stream[half:]]
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[half:]))
    full = stream[:half] + rest + victim_posts
    row = _finish("open transaction on the opt-out topic", broker, topics, full, service)
    hanging.abort_transaction(30)
    row.notes.append(f"{len(victim_posts)} posts of the user who objected after the open transaction")
    return row


def partitions_grow(broker: LocalKafka, workdir: Path, records: int, seed: int = 12) -> Row:
    """The opt-out topic grows from 1 to 3 partitions mid-stream; opt-outs land on the new ones and
    each user's posts, produced right after the opt-out is acknowledged, must all be dropped."""
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    service = _service(broker, topics, workdir)
    service.start().wait_ready()
    half = len(stream) // 2
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[:half]))
    wait_for_output(broker.bootstrap, topics.training, stream[:half], timeout=60)

    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 3})
    for future in admin.create_partitions([NewPartitions(topics.optouts, 3)]).values():
        future.result(30)
    victims = [g for g in stream[half:] if g.expected == "eligible"][:6]
    victim_ids = {v.user_id for v in victims}
    victim_posts: list[Generated] = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "log_level": 3})
    for i, victim in enumerate(victims):
        partition = 1 + i % 2  # a new partition, as a keyed producer would pick once it sees them
        producer.produce(topics.optouts, _optout_value(victim.user_id), victim.key, partition=partition)
        assert producer.flush(30) == 0
        posts = _records_of(generator, victim, topics, 10)
        produce(broker.bootstrap, [(g.topic, g.key, g.value) for g in posts])
        victim_posts += posts
    rest = [_opted_out(g) if g.user_id in victim_ids else g for g in stream[half:]]
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[half:]))
    row = _finish("opt-out topic grows 1 -> 3 partitions", broker, topics, stream[:half] + rest + victim_posts, service)
    row.notes.append(f"{len(victims)} opt-outs on the new partitions, {len(victim_posts)} posts after them")
    return row


def tombstone_then_fresh_replica(broker: LocalKafka, workdir: Path, records: int, seed: int = 13) -> Row:
    """An opt-out, then a tombstone for it; compaction removes both from the topic. The running
    replica and a fresh one (no snapshot, rebuilding from the topics) must agree: the objection
    stands (the revocations topic remembers it)."""
    topics = Topics.unique(broker.bootstrap, compacting_optouts=True)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    first = _service(broker, topics, workdir)
    first.start().wait_ready()
    victim = next(g for g in stream if g.expected == "eligible")
    produce(broker.bootstrap, [(topics.optouts, victim.key, _optout_value(victim.user_id))])
    _wait_revoked(first, len(generator.optouts()) + 1)
    produce(broker.bootstrap, [(topics.optouts, victim.key, None)])  # the tombstone

    # Compaction removes the opt-out, then (after delete.retention.ms) the tombstone itself. The
    # cleaner only takes closed segments: fillers roll them (segment.ms is 100 ms on this topic).
    deadline = time.monotonic() + 90
    while True:
        produce(broker.bootstrap, [(topics.optouts, b"filler", _optout_value("filler"))])
        keys = [m.key() for m in read_all(broker.bootstrap, topics.optouts)]
        if victim.key not in keys:
            break
        if time.monotonic() > deadline:
            raise AssertionError("compaction did not remove the opt-out and its tombstone in 90 s")
        time.sleep(1.0)

    second = _service(broker, topics, workdir)  # the same group, no snapshot: rebuilds from the topics
    second.start().wait_ready()
    victim_posts = _records_of(generator, victim, topics, 40)
    marked = [_opted_out(g) if g.user_id == victim.user_id else g for g in stream]
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream + victim_posts))
    full = marked + victim_posts
    wait_for_output(broker.bootstrap, topics.training, full, timeout=60)
    second.wait_settled(60)
    second_share = second.metric_sum("training_filter_records_total")
    tombstones = first.metric_sum("training_filter_optout_feed_records_total", result="tombstone_ignored")
    rebuilt = second.metric_sum("training_filter_optout_feed_records_total", result="revocation_applied")
    row = _finish("tombstone + compaction, then a fresh replica", broker, topics, full, first)
    if second.stop() != 0:
        row.failures.append("the fresh replica did not stop cleanly")
    if not second_share:
        row.failures.append("the fresh replica decided nothing: the scenario did not exercise it")
    if tombstones < 1:
        row.failures.append("the tombstone was not counted")
    row.notes.append(
        f"fresh replica decided {int(second_share)} records; it rebuilt {int(rebuilt)} revocations; "
        f"tombstones counted by the first: {int(tombstones)}"
    )
    return row


def snapshot_of_a_recreated_topic(broker: LocalKafka, workdir: Path, records: int, seed: int = 14) -> Row:
    """The opt-out topic is deleted and re-created with other opt-outs while the service is down; its
    snapshot's offsets are now beyond the new topic's end. Resuming from them would skip the new
    opt-outs: the service must rebuild from the beginning."""
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    snapshot = workdir / f"snapshot-{topics.optouts}"
    service = _service(broker, topics, workdir, TF_OPTOUT_SNAPSHOT_PATH=str(snapshot))
    service.start().wait_ready()
    _wait_revoked(service, len(generator.optouts()))  # the objections are in the revocations topic too
    assert service.stop() == 0 and snapshot.is_file()

    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 3})
    for future in admin.delete_topics([topics.optouts]).values():
        future.result(30)
    deadline = time.monotonic() + 30
    while topics.optouts in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    spec = next(s for s in service_topics(topics) if s.name == topics.optouts)
    ensure_topics(broker.bootstrap, [spec])
    victims = [g for g in stream if g.expected == "eligible"][:5]
    victim_ids = {v.user_id for v in victims}
    produce(broker.bootstrap, [(topics.optouts, v.key, _optout_value(v.user_id)) for v in victims])

    service.start().wait_ready()
    marked = [_opted_out(g) if g.user_id in victim_ids else g for g in stream]
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream))
    row = _finish("snapshot ahead of a re-created opt-out topic", broker, topics, marked, service)
    reasons = [
        line.get("reason") for line in service.log_lines() if line.get("event") == "optout_snapshot_offsets_not_used"
    ]
    if not reasons:
        row.failures.append("the snapshot's offsets were used")
    row.notes.append(f"snapshot not used: {reasons[0] if reasons else '-'}")
    return row
