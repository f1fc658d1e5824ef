"""The real schema registry (Apicurio Registry 2.4.2, in memory, Confluent API) with confluent-kafka's own
client: the ids it assigns, compatibility rules, AvroSerializer/AvroDeserializer through the real broker,
and basic auth and TLS through the loopback proxy (tests/registry_proxy.py)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro.schema import to_parsing_canonical_form

from consumer.audit.receipts import RECEIPT, RECIPIENTS, VERIFICATION
from consumer.operations.settings import DEFAULT_TOPICS
from consumer.wire.codec import (
    ACCOUNT_CHANGE,
    AI_INTERACTION,
    CONSENT,
    CONTENT_CHANGE,
    OPTOUT,
    POST,
    REVOCATION,
    TRAINING_RECORD,
    TRAINING_RECORD_V1,
    parse_schema_text,
    schema_dir,
)
from tests import samples

pytestmark = pytest.mark.integration

# The topic whose `<topic>-value` subject each project schema belongs to (TopicNameStrategy).
TOPIC_OF = {
    POST: DEFAULT_TOPICS.posts,
    AI_INTERACTION: DEFAULT_TOPICS.ai,
    OPTOUT: DEFAULT_TOPICS.optouts,
    TRAINING_RECORD: DEFAULT_TOPICS.training,
    REVOCATION: DEFAULT_TOPICS.revocations,
    CONSENT: "privacy.consents.v1",  # TF_CONSENT_TOPIC has no default; the README's example name
    CONTENT_CHANGE: "content.changes.v1",  # docs/retractions.md's names
    ACCOUNT_CHANGE: "accounts.changes.v1",
    RECEIPT: DEFAULT_TOPICS.audit,
}
# The audit topic's other records are registered under their record names (consumer/service/lifecycle.py):
# one <topic>-value subject cannot hold unrelated schemas.
BY_RECORD_NAME = (VERIFICATION, RECIPIENTS)


def subject_of(name: str) -> str:
    return name if name in BY_RECORD_NAME else f"{TOPIC_OF[name]}-value"


def project_schemas() -> list[tuple[str, str]]:
    """(full name, schema text) of every avro/*.avsc in use, in the order of avro/catalog.json: the newest
    version of each record name (Revocation v2, not v1), and not the retired TrainingRecord v1."""
    directory = schema_dir()
    catalog = json.loads((directory / "catalog.json").read_text())
    assert {Path(item["file"]).name for item in catalog["schemas"]} == {p.name for p in directory.glob("*.avsc")}
    newest = {item["name"]: item for item in catalog["schemas"] if item["name"] != TRAINING_RECORD_V1}
    return [
        (item["name"], (directory / item["file"]).read_text())
        for item in catalog["schemas"]
        if newest.get(item["name"]) is item
    ]


def canonical(schema_text: str) -> str:
    return str(to_parsing_canonical_form(parse_schema_text(schema_text)))


def post_schema(extra_fields: list[dict[str, Any]] | None = None) -> str:
    schema = json.loads((schema_dir() / "post.v1.avsc").read_text())
    schema["fields"] += extra_fields or []
    return json.dumps(schema)


# A compatible evolution: a new optional field with a default (old values read with it as null).
EDITED_AT = {
    "name": "edited_at",
    "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
    "default": None,
}
# An incompatible one under BACKWARD: a new required field, which values written before it lack.
REGION_CODE = {"name": "region_code", "type": "string"}


def client(url: str, **conf: Any) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url, **conf})


def test_a_fresh_registry_gives_the_project_schemas_ids_from_1(fresh_registry):
    sr = client(fresh_registry.url)
    assert sr.get_subjects() == []
    # Apicurio's default compatibility; a Confluent registry's is BACKWARD, so tests set what they need.
    assert sr.get_compatibility() == "NONE"

    ids: dict[str, int] = {}
    for name, text in project_schemas():
        subject = subject_of(name)
        ids[subject] = sr.register_schema(subject, Schema(text, "AVRO"))
    print(f"\nids assigned by a fresh registry: {ids}")
    assert list(ids.values()) == list(range(1, len(TOPIC_OF) + len(BY_RECORD_NAME) + 1))
    assert len(ids) == len(TOPIC_OF) + len(BY_RECORD_NAME) == 11
    assert sorted(sr.get_subjects()) == sorted(ids)

    texts = dict(project_schemas())
    for name, text in texts.items():
        subject = subject_of(name)
        schema_id = ids[subject]
        assert canonical(sr.get_schema(schema_id).schema_str) == canonical(text)
        latest = sr.get_latest_version(subject)
        assert (latest.schema_id, latest.version) == (schema_id, 1)
        # Registering the same schema again is idempotent: same id, no new version.
        assert client(fresh_registry.url).register_schema(subject, Schema(text, "AVRO")) == schema_id
        assert sr.get_versions(subject) == [1]

    # Ids are content ids: the same schema under another subject gets the same id.
    assert (
        sr.register_schema("another-topic-value", Schema(texts[POST], "AVRO")) == ids[f"{DEFAULT_TOPICS.posts}-value"]
    )


def test_backward_compatibility_refuses_a_required_field_and_accepts_an_optional_one(registry, topic_name):
    sr = client(registry.url)
    subject = f"{topic_name}-value"
    v1 = sr.register_schema(subject, Schema(post_schema(), "AVRO"))
    sr.set_compatibility(subject, "BACKWARD")
    assert sr.get_compatibility(subject) == "BACKWARD"

    incompatible = Schema(post_schema([REGION_CODE]), "AVRO")
    assert sr.test_compatibility(subject, incompatible) is False
    with pytest.raises(SchemaRegistryError) as refused:
        sr.register_schema(subject, incompatible)
    assert refused.value.http_status_code == 409, refused.value

    compatible = Schema(post_schema([EDITED_AT]), "AVRO")
    assert sr.test_compatibility(subject, compatible) is True
    v2 = sr.register_schema(subject, compatible)
    print(f"\nids assigned under BACKWARD: v1={v1} v2={v2} (the incompatible change got none)")
    assert v2 != v1
    assert sr.get_versions(subject) == [1, 2]
    latest = sr.get_latest_version(subject)
    assert (latest.schema_id, latest.version) == (v2, 2)
    assert canonical(latest.schema.schema_str) == canonical(compatible.schema_str)


def _topic(kafka, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(timeout=30)


def _consume(kafka, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages = []
    try:
        for _ in range(120):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                messages.append(msg)
                if len(messages) == count:
                    break
    finally:
        consumer.close()
    assert len(messages) == count, f"read {len(messages)} of {count} records from {topic}"
    return messages


def _as_read(record: dict[str, Any]) -> dict[str, Any]:
    """A raw-typed sample as fastavro returns it: logical dates and timestamps as date and datetime."""
    out = dict(record)
    if out.get("author_birth_date") is not None:
        out["author_birth_date"] = dt.date(1970, 1, 1) + dt.timedelta(days=out["author_birth_date"])
    out["created_at"] = dt.datetime.fromtimestamp(out["created_at"] / 1000, tz=dt.UTC)
    return out


def test_avro_serializer_and_deserializer_through_the_real_broker(kafka, registry, topic_name):
    _topic(kafka, topic_name)
    sr = client(registry.url)
    subject = f"{topic_name}-value"
    records = [
        samples.POST,
        {**samples.POST, "post_id": "p-2", "author_birth_date": None, "language": None},
        {**samples.POST, "post_id": "p-3", "visibility": "FRIENDS", "kind": "COMMENT"},
    ]
    serializer = AvroSerializer(sr, post_schema())  # registers the schema under <topic>-value
    context = SerializationContext(topic_name, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    for record in records:
        producer.produce(topic_name, key=record["author_id"].encode(), value=serializer(record, context))
    assert producer.flush(30) == 0

    registered = sr.get_latest_version(subject)
    print(f"\nid the serializer registered for {subject}: {registered.schema_id}")
    messages = _consume(kafka, topic_name, len(records))
    for msg in messages:  # Confluent framing: magic byte 0, then the registry's id
        assert msg.value()[0] == 0 and int.from_bytes(msg.value()[1:5], "big") == registered.schema_id
    deserializer = AvroDeserializer(sr)  # the writer schema comes from the registry, by id
    assert [deserializer(m.value(), context) for m in messages] == [_as_read(r) for r in records]

    # Evolution through the broker: v2 adds an optional field; a v2 reader reads v1 and v2 values.
    sr.set_compatibility(subject, "BACKWARD")
    v2_text = post_schema([EDITED_AT])
    v2_serializer = AvroSerializer(sr, v2_text)
    edited = {**samples.POST, "post_id": "p-4", "edited_at": 1_767_225_700_000}
    producer.produce(topic_name, value=v2_serializer(edited, context))
    assert producer.flush(30) == 0
    v2 = client(registry.url).get_latest_version(subject)  # a new client: `sr` caches the latest version
    assert (v2.version, v2.schema_id != registered.schema_id) == (2, True)
    print(f"id of the evolved schema (version 2): {v2.schema_id}")
    messages = _consume(kafka, topic_name, len(records) + 1)
    assert int.from_bytes(messages[-1].value()[1:5], "big") == v2.schema_id
    reader = AvroDeserializer(sr, v2_text)
    decoded = [reader(m.value(), context) for m in messages]
    assert [d["edited_at"] for d in decoded[:-1]] == [None] * len(records)
    assert decoded[-1]["edited_at"] == dt.datetime.fromtimestamp(1_767_225_700, tz=dt.UTC)


def test_basic_auth_through_the_proxy(registry, registry_proxy, topic_name):
    proxy = registry_proxy(users={"training-filter": "writer-secret"}, read_only={"auditor": "reader-secret"})
    subject = f"{topic_name}-value"
    schema = Schema(post_schema(), "AVRO")

    writer = client(proxy.url, **{"basic.auth.user.info": "training-filter:writer-secret"})
    schema_id = writer.register_schema(subject, schema)
    print(f"\nid registered through the basic-auth proxy: {schema_id}")
    assert client(registry.url).get_latest_version(subject).schema_id == schema_id  # it reached the registry

    for who, conf in (
        ("wrong password", {"basic.auth.user.info": "training-filter:guess"}),
        ("unknown user", {"basic.auth.user.info": "mallory:writer-secret"}),
        ("no credentials", {}),
    ):
        with pytest.raises(SchemaRegistryError) as denied:
            client(proxy.url, **conf).get_subjects()
        assert denied.value.http_status_code == 401, who
        with pytest.raises(SchemaRegistryError) as denied:
            client(proxy.url, **conf).register_schema(subject, schema)
        assert denied.value.http_status_code == 401, who

    reader = client(proxy.url, **{"basic.auth.user.info": "auditor:reader-secret"})
    assert reader.get_latest_version(subject).schema_id == schema_id
    assert canonical(reader.get_schema(schema_id).schema_str) == canonical(schema.schema_str)
    assert reader.lookup_schema(subject, schema).schema_id == schema_id  # a POST that only reads
    for refused in (
        lambda: reader.register_schema(subject, Schema(post_schema([EDITED_AT]), "AVRO")),
        lambda: reader.set_compatibility(subject, "NONE"),
        lambda: reader.delete_subject(subject),
    ):
        with pytest.raises(SchemaRegistryError) as forbidden:
            refused()
        assert forbidden.value.http_status_code == 403
    assert client(registry.url).get_versions(subject) == [1]  # nothing the reader tried got through

    by_user = {(s.user, s.status) for s in proxy.requests}
    assert {("training-filter", 200), (None, 401), ("auditor", 200), ("auditor", 403)} <= by_user


def _cause_chain(exc: BaseException) -> str:
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def test_tls_through_the_proxy(registry, registry_proxy, tls_files, topic_name):
    proxy = registry_proxy(users={"training-filter": "writer-secret"}, tls=tls_files)
    assert proxy.url.startswith("https://127.0.0.1:")
    auth = {"basic.auth.user.info": "training-filter:writer-secret", "max.retries": 0}
    subject = f"{topic_name}-value"

    trusted = client(proxy.url, **auth, **{"ssl.ca.location": str(tls_files.ca)})
    schema_id = trusted.register_schema(subject, Schema(post_schema(), "AVRO"))
    print(f"\nid registered over TLS: {schema_id}")
    assert trusted.get_latest_version(subject).schema_id == schema_id

    with pytest.raises(Exception) as untrusted:  # the default trust store does not know the test CA
        client(proxy.url, **auth).get_subjects()
    assert "CERTIFICATE_VERIFY_FAILED" in _cause_chain(untrusted.value)
    forwarded, errors = len(proxy.requests), proxy.connection_errors
    with pytest.raises(Exception) as plain:  # plain HTTP to the TLS port: no handshake, no answer
        client(proxy.url.replace("https://", "http://"), **auth).get_subjects()
    assert len(proxy.requests) == forwarded, _cause_chain(plain.value)
    assert proxy.connection_errors > errors  # counted before the proxy hung up


def test_client_certificates_through_the_proxy(registry, registry_proxy, tls_files, topic_name):
    proxy = registry_proxy(tls=tls_files, require_client_cert=True)
    tls = {"ssl.ca.location": str(tls_files.ca), "max.retries": 0}

    with pytest.raises(Exception) as refused:
        client(proxy.url, **tls).get_subjects()
    assert proxy.requests == [], _cause_chain(refused.value)
    # The client may read the proxy's alert before the proxy's thread has counted the failed handshake.
    deadline = time.monotonic() + 5
    while proxy.connection_errors == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.connection_errors >= 1

    with_cert = client(
        proxy.url,
        **tls,
        **{"ssl.certificate.location": str(tls_files.client_cert), "ssl.key.location": str(tls_files.client_key)},
    )
    schema_id = with_cert.register_schema(f"{topic_name}-value", Schema(post_schema(), "AVRO"))
    print(f"\nid registered with a client certificate: {schema_id}")
    assert with_cert.get_versions(f"{topic_name}-value") == [1]  # asked of its subject: a listing stops at 1,000
    assert [s.status for s in proxy.requests] == [200, 200]
