"""A known clean topic for the recipes, written by the real service.

What a reader of `training.eligible.v1` meets, all of it on purpose:

1. **at-least-once output**: a first service instance (at-least-once) decides a generated stream of posts
   and AI interactions (eligible, private, minors, outside the region, unknown age, opted out);
2. **a late opt-out**: after that, two authors whose records were already emitted opt out: their
   revocations follow their records on the revocations topic;
3. **a record decided before the opt-out, arriving after the revocation**: one of those records is
   written to the clean topic again, after the revocation (what a re-delivery does);
4. **exactly-once output and repeats**: a second instance, in exactly-once mode and another consumer
   group, decides the whole input again: every record still eligible appears a second time, each in a
   committed transaction (the late opt-outs are in its filter now, so their records are not repeated);
5. **an aborted transaction** on the clean topic with records no reader may see (`aborted-*`).

So a correct reader returns exactly the generated eligible record ids, once each, minus every record
of the two late authors. In registry mode the inputs are framed with the ids the registry gives their
subjects and the service runs with TF_SCHEMA_REGISTRY_URL; without a registry, with avro/catalog.json's.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from consumer.devtools.generator import StreamGenerator
from consumer.wire.codec import OPTOUT, Codec, schema_dir
from tests.harness import ServiceProcess, Topics, produce, pseudonym, read_all

MIX = {"eligible": 0.55, "not_public": 0.15, "region": 0.08, "unknown_age": 0.07, "under_age": 0.08, "opted_out": 0.07}
RECORDS = 400
LATE_AUTHORS = 2
ABORTED = 3


@dataclass
class CleanStream:
    """The topics, and what a correct reader must return from them."""

    topics: Topics
    registry_url: str | None
    expected_ids: set[str]  # eligible, minus the records of the late authors
    late_pseudonyms: set[str]
    revoked_ids: set[str]  # eligible records of the late authors (emitted, then revoked)
    training_schema_id: int
    facts: dict[str, int] = field(default_factory=dict)  # what the raw topic holds (for the report)

    def env(self) -> dict[str, str]:
        env = {
            "TRAINING_TOPIC": self.topics.training,
            "REVOCATIONS_TOPIC": self.topics.revocations,
            "AVRO_DIR": str(schema_dir()),
        }
        if self.registry_url:
            env["SCHEMA_REGISTRY_URL"] = self.registry_url
        return env


def _reframe(value: bytes, ids: dict[int, int]) -> bytes:
    """A catalog-framed value with the registry's id for the same schema."""
    return b"\x00" + ids[int.from_bytes(value[1:5], "big")].to_bytes(4, "big") + value[5:]


def _register_inputs(url: str, topics: Topics) -> dict[int, int]:
    """Registers the input schemas (their .avsc text) under `<topic>-value`: catalog id -> registry id."""
    client = SchemaRegistryClient({"url": url})
    ids = {}
    for catalog_id, topic, file in (
        (1, topics.posts, "post.v1.avsc"),
        (2, topics.ai, "ai_interaction.v1.avsc"),
        (3, topics.optouts, "optout.v1.avsc"),
    ):
        ids[catalog_id] = client.register_schema(f"{topic}-value", Schema((schema_dir() / file).read_text(), "AVRO"))
    return ids


def read_uncommitted(bootstrap: str, topic: str, timeout: float = 30.0) -> list[bytes]:
    """Every value of the topic, aborted transactions included (what read_committed must hide)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            "log_level": 3,
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        idle_since = time.monotonic()
        # Transaction markers take offsets but are never delivered: read until 2 s pass without a record.
        while ends and time.monotonic() - idle_since < 2.0 and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            idle_since = time.monotonic()
            if msg.value() is not None:
                out.append(msg.value())
        return out
    finally:
        consumer.close()


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.3)


def _late_optouts(bootstrap: str, topics: Topics, eligible: list[Any], ids: dict[int, int]) -> set[str]:
    """The first LATE_AUTHORS authors of emitted records opt out now."""
    authors: list[str] = []
    for r in eligible:
        if r.user_id not in authors:
            authors.append(r.user_id)
        if len(authors) == LATE_AUTHORS:
            break
    codec = Codec()
    optouts = []
    for u in sorted(authors):
        value = codec.encode(OPTOUT, {"user_id": u, "opted_out_at": 1_790_000_000_000, "source": "late"})
        optouts.append((topics.optouts, u.encode(), _reframe(value, ids)))
    produce(bootstrap, optouts)
    return set(authors)


def _aborted_transaction(bootstrap: str, topics: Topics, sample: bytes) -> int:
    """ABORTED training records written in a transaction that is aborted: no read_committed reader may
    see them. Returns the TrainingRecord's schema id (that of `sample`, an emitted record)."""
    training_schema_id = int.from_bytes(sample[1:5], "big")
    v2 = fastavro.parse_schema(json.loads((schema_dir() / "training_record.v2.avsc").read_text()))
    template = fastavro.schemaless_reader(io.BytesIO(sample[5:]), v2, None)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"aborter-{uuid.uuid4().hex[:8]}", "log_level": 3}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(ABORTED):
        body = io.BytesIO()
        fastavro.schemaless_writer(body, v2, {**template, "record_id": f"aborted-{i}", "author_pseudonym": "f" * 64})
        producer.produce(topics.training, b"\x00" + training_schema_id.to_bytes(4, "big") + body.getvalue(), b"f" * 64)
    producer.flush(30)
    producer.abort_transaction(30)
    return training_schema_id


def build(bootstrap: str, registry_url: str | None, workdir: Path, seed: int = 11) -> CleanStream:
    topics = Topics.unique(bootstrap)
    generator = StreamGenerator(
        seed=seed, users_per_pool=25, posts_topic=topics.posts, ai_topic=topics.ai, mix=MIX, text_bytes=(40, 200)
    )
    ids = _register_inputs(registry_url, topics) if registry_url else {1: 1, 2: 2, 3: 3}
    records = list(generator.stream(RECORDS))
    optouts = generator.optouts()
    env = {"TF_SCHEMA_REGISTRY_URL": registry_url} if registry_url else {}

    # 1. at-least-once
    first = ServiceProcess(bootstrap, topics, workdir, env_overrides=env).start()
    second = ServiceProcess(
        bootstrap, topics, workdir, env_overrides={**env, "TF_PROCESSING_GUARANTEE": "exactly-once"}
    )
    try:
        first.wait_ready(90)
        produce(bootstrap, [(topics.optouts, k, _reframe(v, ids)) for k, v in optouts])
        produce(bootstrap, [(r.topic, r.key, _reframe(r.value, ids)) for r in records])
        first.wait_processed(len(records))
        first.wait_settled()
        decisions = first.decisions()
        eligible = [r for r in records if r.expected == "eligible"]
        assert sum(v for (_s, d), v in decisions.items() if d == "eligible") == len(eligible), decisions
        assert first.metric_sum("training_filter_dlq_records_total") == 0

        # 2. two authors of emitted records opt out
        late = _late_optouts(bootstrap, topics, eligible, ids)
        late_pseudonyms = {pseudonym(u) for u in late}
        revocations_expected = len(optouts) + len(late)
        _wait(lambda: len(read_all(bootstrap, topics.revocations)) >= revocations_expected, 60, "the late revocations")

        # 3. a record of a late author, decided before the opt-out, arrives after its revocation
        clean = read_all(bootstrap, topics.training)
        assert len(clean) == len(eligible), "the first instance emitted each eligible record once"
        late_values = [m for m in clean if m.key().decode() in late_pseudonyms]
        assert late_values, "the late authors have emitted records"
        produce(bootstrap, [(topics.training, late_values[0].key(), late_values[0].value())])
        assert first.stop() == 0

        # 4. exactly-once, another group: everything again
        second.start().wait_ready(90)
        still = [r for r in eligible if r.user_id not in late]
        second.wait_processed(len(records))
        second.wait_settled()
        assert sum(v for (_s, d), v in second.decisions().items() if d == "eligible") == len(still)
        assert second.stop() == 0
    finally:
        first.kill()
        second.kill()

    # 5. an aborted transaction with records no reader may see
    training_schema_id = _aborted_transaction(bootstrap, topics, clean[0].value())

    all_eligible = {r.record_id for r in eligible}
    revoked_ids = {r.record_id for r in eligible if r.user_id in late}
    committed = read_all(bootstrap, topics.training)
    raw = read_uncommitted(bootstrap, topics.training)
    facts = {
        "input records": len(records),
        "eligible": len(all_eligible),
        "clean topic, committed": len(committed),
        "clean topic, with the aborted transaction": len(raw),
        "revocations": len(read_all(bootstrap, topics.revocations)),
        "records of revoked authors on the clean topic": sum(m.key().decode() in late_pseudonyms for m in committed),
    }
    # The stream is what the docstring says, or the recipes prove nothing.
    assert len(committed) == len(eligible) + 1 + len(still), facts
    assert len(raw) >= len(committed) + ABORTED, facts
    assert facts["records of revoked authors on the clean topic"] == len(revoked_ids) + 1, facts
    return CleanStream(
        topics=topics,
        registry_url=registry_url,
        expected_ids=all_eligible - revoked_ids,
        late_pseudonyms=late_pseudonyms,
        revoked_ids=revoked_ids,
        training_schema_id=training_schema_id,
        facts=facts,
    )
