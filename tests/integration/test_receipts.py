"""Decision receipts (docs/audit.md) written by the real service to the real broker, in both delivery
guarantees: every input offset that holds a record is covered, each receipt is signed and chained to
the one before it in its partition, its eligible count is what reached the training topic from its
range; a replica killed with SIGKILL and started again goes on with the chain, and whatever it decides
again is a repeat of a range, never a gap."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.audit.receipts import RECEIPT, chain_hash, parse_key, signed_by
from consumer.devtools.generator import StreamGenerator
from consumer.wire.codec import TRAINING_RECORD, Codec
from tests.harness import Topics, produce, read_all

pytestmark = pytest.mark.integration
CODEC = Codec()
AUDIT_KEY = "audit-key-for-the-receipts-tests-0123"


def chains(kafka: Any, topics: Topics) -> dict[tuple[str, int], list[tuple[bytes, dict[str, Any]]]]:
    out: dict[tuple[str, int], list[tuple[bytes, dict[str, Any]]]] = {}
    for msg in sorted(read_all(kafka.bootstrap, topics.audit), key=lambda m: (m.partition(), m.offset())):
        named = parse_key(msg.key())
        assert named is not None, msg.key()
        out.setdefault(named, []).append((msg.value(), CODEC.decode_own(msg.value(), RECEIPT)))
    return out


def offsets_with_records(kafka: Any, topic: str) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for msg in read_all(kafka.bootstrap, topic):
        out.setdefault(msg.partition(), set()).add(msg.offset())
    return out


def check_chains(kafka: Any, topics: Topics, repeats_allowed: bool) -> dict[tuple[str, int], int]:
    """Every receipt signed and linked; every offset with a record covered; returns receipted eligible
    counts by input partition."""
    eligible: Counter[tuple[str, int]] = Counter()
    found = chains(kafka, topics)
    for topic in (topics.posts, topics.ai):
        for partition, offsets in offsets_with_records(kafka, topic).items():
            chain = found.get((topic, partition), [])
            assert chain, f"{topic}/{partition} has records and no receipt"
            covered: set[int] = set()
            previous = None
            for value, r in chain:
                assert signed_by(CODEC, AUDIT_KEY.encode(), r), "every receipt is signed with the audit key"
                assert r["previous_sha256"] == previous, f"{topic}/{partition}: the chain is unbroken"
                previous = chain_hash(value)
                span = set(range(r["first_offset"], r["last_offset"] + 1))
                if not repeats_allowed:
                    assert not span & covered, f"{topic}/{partition}: exactly once, no range twice"
                covered |= span
                assert sum(c["records"] for c in r["decisions"]) == r["records"]
                eligible[topic, partition] += sum(c["records"] for c in r["decisions"] if c["name"] == "eligible")
            assert offsets <= covered, f"{topic}/{partition}: offsets {sorted(offsets - covered)[:5]} not receipted"
    return eligible


def emitted_by_partition(kafka: Any, topics: Topics) -> Counter[tuple[str, int]]:
    out: Counter[tuple[str, int]] = Counter()
    for msg in read_all(kafka.bootstrap, topics.training):
        r = CODEC.decode(msg.value(), TRAINING_RECORD)[1]
        out[r["source_topic"], r["source_partition"]] += 1
    return out


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_the_real_service_receipts_every_record_it_decides(kafka, topics, new_service, guarantee):
    generator = StreamGenerator(seed=23, users_per_pool=200, posts_topic=topics.posts, ai_topic=topics.ai)
    produce(kafka.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    stream = list(generator.stream(3000))
    service = new_service(TF_AUDIT_KEY=AUDIT_KEY, TF_PROCESSING_GUARANTEE=guarantee).start()
    service.wait_ready()
    produce(kafka.bootstrap, ((g.topic, g.key, g.value) for g in stream))
    service.wait_processed(len(stream))
    service.wait_settled()
    service.stop()
    eligible = check_chains(kafka, topics, repeats_allowed=False)
    assert eligible == emitted_by_partition(kafka, topics), "receipted eligible = emitted, by input partition"
    assert sum(eligible.values()) == sum(1 for g in stream if g.expected == "eligible")
    receipts = [r for chain in chains(kafka, topics).values() for _, r in chain]
    assert {r["guarantee"] for r in receipts} == {guarantee}
    ends = {(f["topic"], f["partition"]): f["next_offset"] for f in receipts[-1]["feeds"] if f["feed"] == "optouts"}
    assert ends[topics.optouts, 0] == len(list(generator.optouts())), "the opt-out feed's position, read to its end"


def test_a_replica_killed_and_started_again_goes_on_with_the_chain(kafka, topics, new_service):
    generator = StreamGenerator(seed=29, users_per_pool=200, posts_topic=topics.posts, ai_topic=topics.ai)
    stream = list(generator.stream(6000))
    service = new_service(TF_AUDIT_KEY=AUDIT_KEY, TF_BATCH_SIZE="200").start()
    service.wait_ready()
    produce(kafka.bootstrap, ((g.topic, g.key, g.value) for g in stream[:3000]))
    service.wait_processed(1000)
    service.kill()  # SIGKILL: receipts acknowledged past the last committed offsets are decided again
    produce(kafka.bootstrap, ((g.topic, g.key, g.value) for g in stream[3000:]))
    service.start()
    service.wait_ready()
    _wait_committed_to_the_end(kafka, topics, service.group)
    receipted = check_chains(kafka, topics, repeats_allowed=True)
    assert sum(receipted.values()) >= sum(1 for g in stream if g.expected == "eligible")
    committed = _committed(kafka, topics, service.group)
    for (topic, partition), chain in chains(kafka, topics).items():
        assert max(r["last_offset"] for _, r in chain) + 1 >= committed.get((topic, partition), 0)


def _wait_committed_to_the_end(kafka: Any, topics: Topics, group: str, timeout: float = 120.0) -> None:
    """Until the group has committed every input record (receipts are acknowledged before that)."""
    ends = {
        (t, p): max(offsets) + 1
        for t in (topics.posts, topics.ai)
        for p, offsets in offsets_with_records(kafka, t).items()
    }
    deadline = time.monotonic() + timeout
    while _committed(kafka, topics, group) != ends:
        assert time.monotonic() < deadline, f"not committed to the end: {_committed(kafka, topics, group)} of {ends}"
        time.sleep(0.5)


def _committed(kafka: Any, topics: Topics, group: str) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": group, "log_level": 3})
    try:
        parts = [TopicPartition(t, p) for t in (topics.posts, topics.ai) for p in range(4)]
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(parts, timeout=10) if tp.offset >= 0}
    finally:
        consumer.close()
