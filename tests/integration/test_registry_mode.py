"""Registry mode against the real schema registry (Apicurio, Confluent API): ids from the registry
alone, output schemas registered from their .avsc text or looked up with a read-only credential,
input schemas only looked up, and every failure classified (missing id: a dead letter; no answer:
transient; a refused credential: a configuration error)."""

from __future__ import annotations

import copy
import io
import json
import uuid
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from consumer.wire.codec import (
    OPTOUT,
    POST,
    REVOCATION,
    TRAINING_RECORD,
    Codec,
    UnknownSchemaError,
    parse_schema_text,
    schema_dir,
    strict_form,
)
from consumer.wire.registry import (
    Registry,
    RegistryMismatch,
    RegistryRefused,
    RegistrySettings,
    RegistryUnavailable,
    subject_name,
)
from rules import Source
from tests import samples
from tests.fakes import Msg, processor, run
from tests.samples import ADULT_POST

pytestmark = pytest.mark.integration


def avsc(name: str) -> str:
    files = {POST: "post.v1.avsc", OPTOUT: "optout.v1.avsc", TRAINING_RECORD: "training_record.v2.avsc"}
    files[REVOCATION] = "revocation.v2.avsc"
    return (schema_dir() / files[name]).read_text()


def registry_codec(url: str, **settings: Any) -> Codec:
    return Codec(registry=Registry(RegistrySettings(url=url, **settings)))


def register(url: str, subject: str, schema_text: str) -> int:
    return int(SchemaRegistryClient({"url": url}).register_schema(subject, Schema(schema_text, "AVRO")))


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema, named_schemas={}), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


def prepared(codec: Codec) -> Codec:
    tag = uuid.uuid4().hex[:8]
    codec.prepare_write(TRAINING_RECORD, f"training-{tag}-value")
    codec.prepare_write(REVOCATION, f"revocations-{tag}-value")
    return codec


def post_v2() -> dict[str, Any]:
    schema = copy.deepcopy(json.loads(avsc(POST)))
    schema["fields"].insert(3, {"name": "media_url", "type": ["null", "string"], "default": None, "doc": "new"})
    schema["fields"].append({"name": "reactions", "type": "long", "default": 0, "doc": "new"})
    return schema


# -- ids come from the registry alone -----------------------------------------------------------


def test_the_catalog_ids_mean_nothing_with_a_registry(fresh_registry):
    # A fresh registry hands out ids from 1: its id 1 here is an OptOut, the catalog's id 1 a Post.
    optout_id = register(fresh_registry.url, "optouts-value", avsc(OPTOUT))
    assert optout_id == 1
    codec = registry_codec(fresh_registry.url)
    value = b"\x00" + (1).to_bytes(4, "big") + Codec().encode(OPTOUT, samples.OPTOUT)[5:]
    schema_id, record = codec.decode(value, OPTOUT)
    assert schema_id == 1 and record["user_id"] == "u-3"
    with pytest.raises(UnknownSchemaError, match="has no schema id 2"):
        codec.decode(b"\x00\x00\x00\x00\x02" + value[5:], OPTOUT)


def test_output_schemas_are_registered_from_their_avsc_text_and_inputs_never(registry):
    codec = registry_codec(registry.url)
    tag = uuid.uuid4().hex[:8]
    training_id = codec.prepare_write(TRAINING_RECORD, f"training-{tag}-value")
    client = SchemaRegistryClient({"url": registry.url})
    stored = client.get_latest_version(f"training-{tag}-value")
    assert stored.schema_id == training_id
    # What the registry holds is the .avsc (docs included), not fastavro's parsed form.
    assert "__fastavro" not in stored.schema.schema_str
    assert json.loads(stored.schema.schema_str)["doc"] == json.loads(avsc(TRAINING_RECORD))["doc"]
    ours = codec.catalog.by_name(TRAINING_RECORD).strict_form
    assert strict_form(parse_schema_text(stored.schema.schema_str)) == ours, "the fields must keep their order"
    assert codec.header(TRAINING_RECORD) == b"\x00" + training_id.to_bytes(4, "big")
    # Input schemas are never registered: asking for their id is a programming error, not a registration.
    subjects = set(client.get_subjects())
    with pytest.raises(RuntimeError, match="inputs are never registered"):
        codec.header(POST)
    assert set(client.get_subjects()) == subjects


@pytest.mark.parametrize(
    "strategy,expected",
    [
        ("topic", "training.eligible.v1-value"),
        ("record", "platform.training.v2.TrainingRecord"),
        ("topic_record", "training.eligible.v1-platform.training.v2.TrainingRecord"),
    ],
)
def test_subject_naming_strategies(strategy, expected):
    assert subject_name(strategy, "training.eligible.v1", TRAINING_RECORD) == expected


def test_a_read_only_credential_looks_the_outputs_up_and_cannot_register(registry, registry_proxy):
    tag = uuid.uuid4().hex[:8]
    subject = f"training-{tag}-value"
    proxy = registry_proxy(users={"admin": "admin-pw"}, read_only={"reader": "reader-pw"})
    admin_id = registry_codec(proxy.url, user="admin", password="admin-pw").prepare_write(TRAINING_RECORD, subject)

    reader = registry_codec(proxy.url, user="reader", password="reader-pw", auto_register=False)
    assert reader.prepare_write(TRAINING_RECORD, subject) == admin_id
    pinned = registry_codec(proxy.url, user="reader", password="reader-pw", auto_register=False, output_version="1")
    assert pinned.prepare_write(TRAINING_RECORD, subject) == admin_id

    with pytest.raises(RegistryRefused, match=r"HTTP 403.*AUTO_REGISTER=false"):
        registry_codec(proxy.url, user="reader", password="reader-pw").prepare_write(REVOCATION, f"r-{tag}-value")
    with pytest.raises(RegistryRefused, match="HTTP 401"):
        registry_codec(proxy.url, user="reader", password="wrong", auto_register=False).prepare_write(
            TRAINING_RECORD, subject
        )
    with pytest.raises(RegistryRefused, match="has no version latest"):
        reader.prepare_write(REVOCATION, f"nothing-{tag}-value")


def test_a_subject_holding_another_schema_is_a_mismatch(registry):
    subject = f"training-{uuid.uuid4().hex[:8]}-value"
    register(registry.url, subject, avsc(REVOCATION))  # someone registered the wrong schema there
    with pytest.raises(RegistryMismatch, match="not the schema this service writes"):
        registry_codec(registry.url, auto_register=False).prepare_write(TRAINING_RECORD, subject)


def test_an_unreachable_registry_is_transient_not_a_missing_schema(fresh_registry):
    url = fresh_registry.url
    optout_id = register(url, "o-value", avsc(OPTOUT))
    codec = registry_codec(url, timeout_seconds=2)
    fresh_registry.stop()
    with pytest.raises(RegistryUnavailable):
        codec.writer(optout_id)
    with pytest.raises(RegistryUnavailable):
        codec.prepare_write(TRAINING_RECORD, "t-value")
    assert not codec.known(optout_id), "an id that could not be asked is not taken for missing"


# -- the hot loop with registry ids ---------------------------------------------------------------


def test_a_newer_schema_version_with_added_fields_is_resolved_and_decided(registry, topic_name):
    v2 = post_v2()
    schema_id = register(registry.url, f"{topic_name}-value", json.dumps(v2))
    codec = prepared(registry_codec(registry.url))
    value = framed(schema_id, v2, {**ADULT_POST, "media_url": "https://x", "reactions": 7})
    proc, producer = processor(codec)
    proc.resolve_schemas([Msg("posts", value, offset=5)])
    assert run(proc, [Msg("posts", value, offset=5)]) == {(Source.POST, "eligible"): 1}
    record = codec.decode(producer.sent[0][1], TRAINING_RECORD)[1]  # framed with the id the registry gave
    assert record["record_id"] == "p-1" and record["text"] == "hallo welt" and record["source_offset"] == 5
    assert "media_url" not in record


def test_a_newer_version_that_adds_an_enum_symbol_fails_closed(registry, topic_name):
    v2 = post_v2()
    for f in v2["fields"]:
        if f["name"] == "visibility":
            f["type"]["symbols"] = [*f["type"]["symbols"], "CLOSE_FRIENDS"]
    schema_id = register(registry.url, f"{topic_name}-value", json.dumps(v2))
    codec = prepared(registry_codec(registry.url))
    value = framed(schema_id, v2, {**ADULT_POST, "visibility": "CLOSE_FRIENDS", "media_url": None, "reactions": 0})
    proc, producer = processor(codec)
    proc.resolve_schemas([Msg("posts", value)])
    assert run(proc, [Msg("posts", value)]) == {(Source.POST, "malformed"): 1}
    assert producer.sent[0][0] == "dlq"


def test_a_registry_id_whose_schema_is_exactly_v1_joins_the_fast_path(registry, topic_name):
    schema_id = register(registry.url, f"{topic_name}-value", avsc(POST))
    codec = prepared(registry_codec(registry.url))
    proc, _producer = processor(codec)
    value = b"\x00" + schema_id.to_bytes(4, "big") + Codec().encode(POST, ADULT_POST)[5:]
    assert value[:5] not in proc.routes["posts"].fast_headers
    proc.resolve_schemas([Msg("posts", value)])
    assert value[:5] in proc.routes["posts"].fast_headers
    assert run(proc, [Msg("posts", value), Msg("posts", value, offset=1)]) == {(Source.POST, "eligible"): 2}


def test_an_id_the_registry_does_not_have_is_a_dead_letter(registry):
    codec = prepared(registry_codec(registry.url))
    proc, producer = processor(codec)
    value = b"\x00" + (987_654).to_bytes(4, "big") + Codec().encode(POST, ADULT_POST)[5:]
    proc.resolve_schemas([Msg("posts", value)])  # the registry answers: no such id
    assert run(proc, [Msg("posts", value)]) == {(Source.POST, "malformed"): 1}
    assert dict(producer.sent[0][3])["tf.cause"] == b"unknown_schema"
