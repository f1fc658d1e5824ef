"""The service in registry mode with standard writers and readers, against the real broker and the
real schema registry: inputs written by confluent-kafka's AvroSerializer (ids the registry assigns,
several schema versions), the clean topic and the revocations read by AvroDeserializer with
read_committed, in both guarantees; a registry outage; a read-only credential over TLS with basic
auth; an opt-out written with a schema the contract does not describe."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from consumer.wire.codec import schema_dir
from consumer.wire.registry import normalised
from tests.harness import produce, pseudonym

pytestmark = pytest.mark.integration

CREATED = int(dt.datetime(2026, 10, 1, tzinfo=dt.UTC).timestamp() * 1000)
ADULT = 7000  # born 1989-03-03


def avsc(file: str, extra_fields: list[dict[str, Any]] | None = None, change: Any = None) -> str:
    schema = json.loads((schema_dir() / file).read_text())
    schema["fields"] += extra_fields or []
    if change is not None:
        change(schema)
    return json.dumps(schema)


POST_V2 = avsc(
    "post.v1.avsc",
    [{"name": "edited_at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": None}],
)


def serializer(url: str, schema_text: str) -> AvroSerializer:
    return AvroSerializer(SchemaRegistryClient({"url": url}), schema_text, conf={"auto.register.schemas": True})


def encode(ser: AvroSerializer, topic: str, record: dict[str, Any]) -> bytes:
    return ser(record, SerializationContext(topic, MessageField.VALUE))


def post(post_id: str, user: str, visibility: str = "PUBLIC", **extra: Any) -> dict[str, Any]:
    return {
        "post_id": post_id,
        "author_id": user,
        "author_birth_date": ADULT,
        "author_country": "SE",
        "visibility": visibility,
        "kind": "POST",
        "surface": "facebook",
        "language": "sv",
        "text": f"hej from {post_id} " * 10,
        "created_at": CREATED,
        **extra,
    }


def interaction(interaction_id: str, user: str, context: str = "DIRECT_WITH_AI") -> dict[str, Any]:
    return {
        "interaction_id": interaction_id,
        "user_id": user,
        "user_birth_date": ADULT,
        "user_country": "FI",
        "context": context,
        "surface": "whatsapp",
        "language": None,
        "prompt": f"question {interaction_id}",
        "response": f"answer {interaction_id}",
        "created_at": CREATED,
    }


def read_with_deserializer(bootstrap: str, url: str, topic: str, timeout: float = 30.0) -> list[tuple[int, dict]]:
    """(schema id, value) of every committed record, decoded by confluent-kafka's AvroDeserializer."""
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": url}))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
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
        out: list[tuple[int, dict]] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while set(ends) - done and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.offset() >= ends.get(msg.partition(), 0):
                    done.add(msg.partition())
                continue
            value = msg.value()
            out.append(
                (int.from_bytes(value[1:5], "big"), deserialize(value, SerializationContext(topic, MessageField.VALUE)))
            )
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                done.add(msg.partition())
        return out
    finally:
        consumer.close()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_standard_serializers_in_and_standard_deserializers_out(kafka, registry, topics, new_service, guarantee):
    url = registry.url
    sr = SchemaRegistryClient({"url": url})
    v1 = serializer(url, avsc("post.v1.avsc"))
    v2 = serializer(url, POST_V2)
    ai = serializer(url, avsc("ai_interaction.v1.avsc"))
    optouts = serializer(url, avsc("optout.v1.avsc"))
    produce(
        kafka.bootstrap,
        [
            (
                topics.optouts,
                b"u-opted",
                encode(optouts, topics.optouts, {"user_id": "u-opted", "opted_out_at": CREATED, "source": "form"}),
            )
        ],
    )
    records = (
        [(topics.posts, b"u-a", encode(v1, topics.posts, post(f"v1-{i}", "u-a"))) for i in range(5)]
        + [
            (topics.posts, b"u-b", encode(v2, topics.posts, post(f"v2-{i}", "u-b", edited_at=CREATED)))
            for i in range(5)
        ]
        + [(topics.posts, b"u-a", encode(v1, topics.posts, post(f"private-{i}", "u-a", "FRIENDS"))) for i in range(3)]
        + [(topics.posts, b"u-opted", encode(v2, topics.posts, post(f"opted-{i}", "u-opted"))) for i in range(3)]
        + [(topics.ai, b"u-c", encode(ai, topics.ai, interaction(f"ai-{i}", "u-c"))) for i in range(4)]
        + [(topics.ai, b"u-c", encode(ai, topics.ai, interaction("group", "u-c", "GROUP_CHAT")))]
    )
    input_ids = sorted({int.from_bytes(v[1:5], "big") for _t, _k, v in records})
    service = new_service(TF_SCHEMA_REGISTRY_URL=url, TF_PROCESSING_GUARANTEE=guarantee).start()
    service.wait_ready(90)
    produce(kafka.bootstrap, records)
    service.wait_processed(len(records))
    service.wait_settled()
    assert service.metric_sum("training_filter_dlq_records_total") == 0

    training = read_with_deserializer(kafka.bootstrap, url, topics.training)
    expected = {f"v1-{i}" for i in range(5)} | {f"v2-{i}" for i in range(5)} | {f"ai-{i}" for i in range(4)}
    assert {r["record_id"] for _i, r in training} == expected
    assert len(training) == len(expected), "read_committed: each record once"
    output_id = sr.get_latest_version(f"{topics.training}-value").schema_id
    revocation_id = sr.get_latest_version(f"{topics.revocations}-value").schema_id
    assert {i for i, _r in training} == {output_id}, "framed with the id the registry gave the TrainingRecord"
    for _i, r in training:
        if r["source"] == "POST":
            assert r["text"].startswith("hej from") and r["prompt"] is None and r["response"] is None
            assert r["author_pseudonym"] == pseudonym("u-a" if r["record_id"].startswith("v1") else "u-b")
        else:
            assert r["text"] is None and r["prompt"].startswith("question") and r["response"].startswith("answer")
            assert r["author_pseudonym"] == pseudonym("u-c")
        assert r["country"] in ("SE", "FI") and r["source_topic"] in (topics.posts, topics.ai)

    wait_for(lambda: read_with_deserializer(kafka.bootstrap, url, topics.revocations), 30, "a revocation")
    revocations = read_with_deserializer(kafka.bootstrap, url, topics.revocations)
    assert [(i, r["author_pseudonym"]) for i, r in revocations] == [(revocation_id, pseudonym("u-opted"))]
    # The service registered its two output subjects (one version each) and nothing under the inputs'
    # (they are only looked up): asked subject by subject, since a registry lists at most 1,000 subjects.
    for subject in (f"{topics.training}-value", f"{topics.revocations}-value"):
        assert sr.get_versions(subject) == [1], subject
    assert sr.get_versions(f"{topics.posts}-value") == [1, 2]  # the test's own v1 and v2
    for topic in (topics.ai, topics.optouts):
        assert sr.get_versions(f"{topic}-value") == [1], topic
    print(f"\nregistry ids ({guarantee}): inputs {input_ids}, TrainingRecord {output_id}, Revocation {revocation_id}")


@pytest.mark.parametrize("fault", ["outage", "refuses-everything"])
def test_a_registry_outage_pauses_input_and_loses_nothing(kafka, registry, registry_proxy, topics, new_service, fault):
    """An outage, or a registry that refuses every request of the credential (it expired): input pauses
    and nothing is dead-lettered for it; afterwards every record is emitted."""
    url = registry.url
    proxy = registry_proxy()
    v1 = serializer(url, avsc("post.v1.avsc"))
    service = new_service(TF_SCHEMA_REGISTRY_URL=proxy.url, TF_SCHEMA_REGISTRY_TIMEOUT_SECONDS="2").start()
    service.wait_ready(90)
    produce(
        kafka.bootstrap,
        [(topics.posts, b"u-a", encode(v1, topics.posts, post(f"before-{i}", "u-a"))) for i in range(5)],
    )
    service.wait_processed(5)

    # From now on the service cannot reach the registry, or it refuses the service everything (403).
    proxy.down, proxy.refuse_everything = (True, False) if fault == "outage" else (False, True)
    started = time.monotonic()
    # A new schema version, registered (directly) while the service cannot look it up.
    v3 = serializer(url, avsc("post.v1.avsc", [{"name": "mood", "type": ["null", "string"], "default": None}]))
    during = [(topics.posts, b"u-b", encode(v3, topics.posts, post(f"new-{i}", "u-b", mood="calm"))) for i in range(5)]
    during += [(topics.posts, b"u-a", encode(v1, topics.posts, post(f"old-{i}", "u-a"))) for i in range(3)]
    produce(kafka.bootstrap, during)
    wait_for(lambda: service.metric_sum("training_filter_input_paused") == 1, 30, "input paused")
    paused_after = time.monotonic() - started
    assert service.get("/readyz")[0] == 503
    assert service.metric_sum("training_filter_schema_registry_available") == 0
    time.sleep(2)
    assert service.metric_sum("training_filter_dlq_records_total") == 0, "nothing dead-lettered for an outage"
    # The v1 records' schema is known (cached): a batch of theirs alone may be decided; the v3 ones never are.
    decided = service.metric_sum("training_filter_records_total")
    assert 5 <= decided <= 8, f"{decided} decided: a record of the unknown schema was decided during the outage"
    during_ids = {r["record_id"] for _i, r in read_with_deserializer(kafka.bootstrap, url, topics.training)}
    assert not {i for i in during_ids if i.startswith("new-")}, "a record of the unknown schema was emitted"

    proxy.down = proxy.refuse_everything = False
    service.wait_processed(13)
    service.wait_settled()
    wait_for(lambda: service.get("/readyz")[0] == 200, 30, "ready again")
    ids = {r["record_id"] for _i, r in read_with_deserializer(kafka.bootstrap, url, topics.training)}
    assert ids == {f"before-{i}" for i in range(5)} | {f"new-{i}" for i in range(5)} | {f"old-{i}" for i in range(3)}
    assert service.metric_sum("training_filter_dlq_records_total") == 0
    events = [line["event"] for line in service.log_lines()]
    assert "schema_registry_unavailable" in events and "schema_registry_available" in events
    print(f"\nregistry outage: input paused {paused_after:.1f} s after it began; 13 of 13 emitted, 0 dead letters")


def test_a_read_only_credential_over_tls_with_basic_auth(
    kafka, registry, registry_proxy, tls_files, topics, new_service, tmp_path
):
    proxy = registry_proxy(users={"admin": "admin-pw"}, read_only={"svc": "svc-pw"}, tls=tls_files)
    admin = SchemaRegistryClient(
        {"url": proxy.url, "basic.auth.user.info": "admin:admin-pw", "ssl.ca.location": str(tls_files.ca)}
    )
    for topic, file in ((topics.training, "training_record.v2.avsc"), (topics.revocations, "revocation.v2.avsc")):
        admin.register_schema(f"{topic}-value", Schema(normalised((schema_dir() / file).read_text()), "AVRO"))
    password = tmp_path / "registry-password"
    password.write_text("svc-pw\n")
    env = {
        "TF_SCHEMA_REGISTRY_URL": proxy.url,
        "TF_SCHEMA_REGISTRY_USER": "svc",
        "TF_SCHEMA_REGISTRY_PASSWORD_FILE": str(password),
        "TF_SCHEMA_REGISTRY_CA_LOCATION": str(tls_files.ca),
    }
    # A read-only credential cannot register: with auto-registration on, start-up says so and stops.
    refused = new_service(**env).start()
    assert refused.process is not None and refused.process.wait(60) == 2
    assert "TF_SCHEMA_REGISTRY_AUTO_REGISTER=false" in refused.log_path.read_text()
    assert "svc-pw" not in refused.log_path.read_text()

    service = new_service(**env, TF_SCHEMA_REGISTRY_AUTO_REGISTER="false").start()
    service.wait_ready(90)
    v1 = serializer(registry.url, avsc("post.v1.avsc"))
    produce(kafka.bootstrap, [(topics.posts, b"u-a", encode(v1, topics.posts, post("tls-1", "u-a")))])
    service.wait_processed(1)
    service.wait_settled()
    assert [r["record_id"] for _i, r in read_with_deserializer(kafka.bootstrap, registry.url, topics.training)] == [
        "tls-1"
    ]
    users = {seen.user for seen in proxy.requests}
    assert "svc" in users and all(
        seen.status != 403 for seen in proxy.requests if seen.user == "svc" and seen.method == "GET"
    )


def test_an_optout_of_an_unexpected_schema_never_stops_the_service(kafka, registry, topics, new_service):
    """A registry writer schema whose opted_out_at is a plain long (no logical type): decoded, the value
    is an int where the contract has a timestamp. On a compacted topic kept forever, a crash here would
    be on every start-up, for good. The user is still opted out, and the service still starts."""

    def plain_long(schema: dict[str, Any]) -> None:
        for field in schema["fields"]:
            if field["name"] == "opted_out_at":
                field["type"] = "long"

    odd = serializer(registry.url, avsc("optout.v1.avsc", change=plain_long))
    produce(
        kafka.bootstrap,
        [
            (
                topics.optouts,
                b"u-odd",
                encode(odd, topics.optouts, {"user_id": "u-odd", "opted_out_at": CREATED, "source": "form"}),
            )
        ],
    )
    v1 = serializer(registry.url, avsc("post.v1.avsc"))
    for run in range(2):  # and again after a restart: the record is still there
        service = new_service(TF_SCHEMA_REGISTRY_URL=registry.url).start()
        service.wait_ready(90)
        produce(
            kafka.bootstrap,
            [
                (topics.posts, b"u-odd", encode(v1, topics.posts, post(f"odd-{run}", "u-odd"))),
                (topics.posts, b"u-a", encode(v1, topics.posts, post(f"ok-{run}", "u-a"))),
            ],
        )
        service.wait_processed(2 * (run + 1))  # a new group each run: it reads the posts from the start
        service.wait_settled()
        assert service.decisions().get(("POST", "opted_out")) == run + 1
        assert service.stop() == 0
    ids = {r["record_id"] for _i, r in read_with_deserializer(kafka.bootstrap, registry.url, topics.training)}
    assert ids == {"ok-0", "ok-1"}
