"""Whatever a real registry holds or answers, one record's fate is decided per record: read against the
reader schema, or a dead letter with its cause; never an exception out of the loop, never a stall.

Against the real schema registry (Apicurio, Confluent API), and a proxy in front of it that refuses or
hides single ids or refuses every request (tests/registry_proxy.py)."""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import io
import json
import random
import time
import uuid
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from consumer.operations.metrics import DLQ_CAUSES
from consumer.wire.codec import TRAINING_RECORD, Codec, schema_dir
from consumer.wire.registry import Registry, RegistrySettings, RegistryUnavailable
from rules import Source
from tests.fakes import Msg, processor, run
from tests.samples import ADULT_POST

pytestmark = pytest.mark.integration

POST_V1 = json.loads((schema_dir() / "post.v1.avsc").read_text())
NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)


def post_record(**changes: Any) -> dict[str, Any]:
    return {**ADULT_POST, "created_at": NOW, **changes}


def register(url: str, schema: Any, references: list[SchemaReference] | None = None) -> int:
    subject = f"answers-{uuid.uuid4().hex[:12]}-value"
    client = SchemaRegistryClient({"url": url})
    return int(client.register_schema(subject, Schema(json.dumps(schema), "AVRO", references or [])))


def framed(schema_id: int, schema: Any, record: Any, named: dict[str, Any] | None = None) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema, named_schemas=named or {}), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


def codec_for(url: str, **settings: Any) -> Codec:
    codec = Codec(registry=Registry(RegistrySettings(url=url, **settings)))
    tag = uuid.uuid4().hex[:8]
    codec.prepare_write(TRAINING_RECORD, f"training-{tag}-value")
    return codec


def decide(codec: Codec, values: list[bytes]) -> tuple[dict[tuple[Source, str], int], list[tuple[str, Any]]]:
    """Each value through the real BatchProcessor (resolve, then process): (tally, [(topic, cause or record)])."""
    proc, producer = processor(codec)
    messages = [Msg("posts", v, offset=i) for i, v in enumerate(values)]
    proc.resolve_schemas(messages)
    tally = run(proc, messages)
    outcomes = []
    for topic, value, _key, headers in producer.sent:
        if topic == "dlq":
            outcomes.append(("dlq", dict(headers)["tf.cause"].decode()))
        else:
            outcomes.append(("training", codec.decode(value, TRAINING_RECORD)[1]))
    return tally, outcomes


def variant(tag: str) -> dict[str, Any]:
    """Post v1 plus an optional field of its own: a schema of its own id, read as v1 by resolution."""
    schema = copy.deepcopy(POST_V1)
    schema["fields"].append({"name": f"variant_{tag}", "type": ["null", "string"], "default": None})
    return schema


def with_field(schema: dict[str, Any], name: str, kind: Any) -> dict[str, Any]:
    changed = copy.deepcopy(schema)
    for f in changed["fields"]:
        if f["name"] == name:
            f["type"] = kind
            if not (isinstance(kind, list) and kind[0] == "null"):
                f.pop("default", None)  # a null default must go with a union that starts with null
    return changed


# -- logical types ------------------------------------------------------------------------------


def test_a_uuid_annotated_string_is_read_as_the_string_it_is(registry):
    """fastavro decodes it to a uuid.UUID, which the output encoder refused: the service exited 1."""
    schema = with_field(POST_V1, "post_id", {"type": "string", "logicalType": "uuid"})
    schema = with_field(schema, "text", {"type": "string", "logicalType": "uuid"})
    post_id, text = str(uuid.uuid4()), str(uuid.uuid4())
    value = framed(register(registry.url, schema), schema, post_record(post_id=post_id, text=text))
    tally, outcomes = decide(codec_for(registry.url), [value])
    assert tally == {(Source.POST, "eligible"): 1}
    assert outcomes[0][1]["record_id"] == post_id and outcomes[0][1]["text"] == text


LOGICAL_CASES = {
    # created_at in microseconds: the same instant, read as the reader's milliseconds
    "timestamp-micros": (("created_at", {"type": "long", "logicalType": "timestamp-micros"}), NOW, "eligible"),
    # a local timestamp is not an instant: refused, never misread by hours
    "local-timestamp-millis": (
        ("created_at", {"type": "long", "logicalType": "local-timestamp-millis"}),
        NOW.replace(tzinfo=None),
        "schema_mismatch",
    ),
    # a time of day where the reader wants a date of birth
    "time-millis": (("author_birth_date", {"type": "int", "logicalType": "time-millis"}), dt.time(1, 2), "mismatch"),
    "time-micros": (("created_at", {"type": "long", "logicalType": "time-micros"}), dt.time(1, 2), "mismatch"),
    "decimal": (
        ("text", {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}),
        decimal.Decimal("12.34"),
        "schema_mismatch",
    ),
    "duration": (
        ("text", {"type": "fixed", "name": "D", "size": 12, "logicalType": "duration"}),
        b"\0" * 12,
        "mismatch",
    ),
}


@pytest.mark.parametrize("case", sorted(LOGICAL_CASES))
def test_logical_types_are_read_or_refused_never_raised(registry, case):
    (name, kind), field_value, expected = LOGICAL_CASES[case]
    schema = with_field(POST_V1, name, kind)
    value = framed(register(registry.url, schema), schema, post_record(**{name: field_value}))
    tally, outcomes = decide(codec_for(registry.url), [value])
    assert sum(tally.values()) == 1
    if expected == "eligible":
        assert tally == {(Source.POST, "eligible"): 1}
        assert outcomes[0][1]["created_at"] == NOW
    else:
        assert outcomes[0][0] == "dlq" and outcomes[0][1] in ("schema_mismatch", "invalid_fields")


def test_an_added_field_of_any_logical_type_is_dropped_by_resolution(registry):
    schema = copy.deepcopy(POST_V1)
    schema["fields"].append({"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4}})
    schema["fields"].append({"name": "trace", "type": {"type": "string", "logicalType": "uuid"}})
    value = framed(register(registry.url, schema), schema, post_record(price=decimal.Decimal(7), trace=uuid.uuid4()))
    tally, outcomes = decide(codec_for(registry.url), [value])
    assert tally == {(Source.POST, "eligible"): 1} and "price" not in outcomes[0][1]


# -- nameless, recursive and referring schemas ----------------------------------------------------

NAMELESS = {
    "string": ("string", "a string"),
    "long": ("long", 5),
    "array": ({"type": "array", "items": "long"}, [1, 2]),
    "map": ({"type": "map", "values": "string"}, {"a": "b"}),
    "union": (["null", "string"], "x"),
}


@pytest.mark.parametrize("case", sorted(NAMELESS))
def test_a_nameless_writer_schema_is_a_dead_letter(registry, case):
    """The codec's schema entry took parsed["name"] of every schema: KeyError, exit 1, forever."""
    schema, datum = NAMELESS[case]
    schema_id = register(registry.url, schema)
    good = framed(register(registry.url, POST_V1), POST_V1, post_record())
    tally, outcomes = decide(codec_for(registry.url), [framed(schema_id, schema, datum), good])
    assert outcomes[0] == ("dlq", "schema_mismatch")
    assert tally == {(Source.POST, "malformed"): 1, (Source.POST, "eligible"): 1}


def test_a_recursive_writer_schema_is_read_or_refused(registry):
    schema = copy.deepcopy(POST_V1)
    schema["fields"].append({"name": "reply_to", "type": ["null", "platform.content.v1.Post"], "default": None})
    nested = post_record(post_id="p-0", reply_to=None)
    value = framed(register(registry.url, schema), schema, post_record(reply_to=nested))
    tally, outcomes = decide(codec_for(registry.url), [value])
    assert tally == {(Source.POST, "eligible"): 1} and outcomes[0][1]["record_id"] == "p-1"


def test_a_writer_schema_with_references_is_read(registry):
    """The visibility enum registered under a subject of its own and referred to by the post schema."""
    client = SchemaRegistryClient({"url": registry.url})
    visibility = next(f["type"] for f in POST_V1["fields"] if f["name"] == "visibility")
    enum = {**visibility, "namespace": "platform.content.v1"}
    subject = f"visibility-{uuid.uuid4().hex[:8]}"
    client.register_schema(subject, Schema(json.dumps(enum), "AVRO"))
    version = client.get_latest_version(subject).version
    schema = with_field(POST_V1, "visibility", "platform.content.v1.Visibility")
    schema_id = register(registry.url, schema, [SchemaReference("platform.content.v1.Visibility", subject, version)])
    named: dict[str, Any] = {}
    fastavro.parse_schema(enum, named_schemas=named)
    tally, outcomes = decide(codec_for(registry.url), [framed(schema_id, schema, post_record(), named)])
    assert tally == {(Source.POST, "eligible"): 1}, outcomes


# -- the registry's answers -----------------------------------------------------------------------


def test_one_refused_id_dead_letters_its_records_and_every_other_id_flows(registry, registry_proxy):
    """A 403 for one id was taken for an outage: input paused for good, valid ids included."""
    proxy = registry_proxy()
    codec = codec_for(proxy.url)
    refused_schema, allowed_schema = variant("refused"), variant("allowed")
    refused, allowed = register(registry.url, refused_schema), register(registry.url, allowed_schema)
    proxy.refused_ids.add(refused)
    values = [framed(refused, refused_schema, post_record()), framed(allowed, allowed_schema, post_record())] * 3
    tally, outcomes = decide(codec, values)
    assert tally == {(Source.POST, "malformed"): 3, (Source.POST, "eligible"): 3}
    assert [o[1] for o in outcomes if o[0] == "dlq"] == ["schema_refused"] * 3


def test_a_registry_that_refuses_everything_is_an_outage(registry, registry_proxy):
    proxy = registry_proxy()
    codec = codec_for(proxy.url)
    schema = variant("all")
    schema_id = register(registry.url, schema)
    proxy.refuse_everything = True
    proc, _producer = processor(codec)
    with pytest.raises(RegistryUnavailable, match="refuses this credential"):
        proc.resolve_schemas([Msg("posts", framed(schema_id, schema, post_record()))])
    assert not codec.known(schema_id), "nothing is remembered of an outage"


def test_a_missing_id_is_asked_again_after_the_retry_time(registry, registry_proxy):
    """A 404 was remembered forever: the id's records were dead letters until a restart."""
    proxy = registry_proxy()
    codec = codec_for(proxy.url, retry_seconds=1.0)
    schema = variant("late")
    schema_id = register(registry.url, schema)
    value = framed(schema_id, schema, post_record())
    proxy.hidden_ids.add(schema_id)  # not registered yet, as far as the service can tell
    assert decide(codec, [value])[1] == [("dlq", "unknown_schema")]
    proxy.hidden_ids.clear()  # registered now
    assert decide(codec, [value])[1] == [("dlq", "unknown_schema")], "within the retry time: the answer stands"
    time.sleep(1.2)
    tally, _ = decide(codec, [value])
    assert tally == {(Source.POST, "eligible"): 1}


def test_a_flood_of_random_ids_costs_bounded_lookups_time_and_memory(registry, registry_proxy):
    proxy = registry_proxy()
    codec = codec_for(proxy.url, lookups_per_batch=10, negative_cache_size=50)
    schema = variant("flood")
    good_id = register(registry.url, schema)
    good = framed(good_id, schema, post_record())
    body = good[5:]
    rng = random.Random(9)
    flood = [b"\x00" + rng.randrange(10**6, 2**31).to_bytes(4, "big") + body for _ in range(2000)]
    before = len(proxy.schema_lookups())
    started = time.monotonic()
    tally, outcomes = decide(codec, [*flood, *([good] * 5)])  # the real id is the most frequent
    took = time.monotonic() - started
    lookups = proxy.schema_lookups()[before:]
    assert len(lookups) <= 10 and good_id in lookups
    assert tally[Source.POST, "eligible"] == 5 and tally[Source.POST, "malformed"] == 2000
    causes = {o[1] for o in outcomes if o[0] == "dlq"}
    assert causes <= {"unknown_schema", "schema_lookup_limit"}
    assert len(codec._answers) <= 50
    assert took < 10, f"the flood took {took:.1f} s"


# -- generated writer schemas -------------------------------------------------------------------

_TYPES: dict[str, tuple[Any, Any]] = {
    "string": ("string", lambda r: r.choice(["", "x", "héllo", "a" * 40])),
    "int": ("int", lambda r: r.randrange(-(2**31), 2**31)),
    "long": ("long", lambda r: r.randrange(-(2**63), 2**63)),
    "float": ("float", lambda r: r.random()),
    "double": ("double", lambda r: r.random()),
    "boolean": ("boolean", lambda r: r.random() < 0.5),
    "bytes": ("bytes", lambda r: r.randbytes(r.randrange(8))),
    "null": ("null", lambda r: None),
    "uuid": ({"type": "string", "logicalType": "uuid"}, lambda r: uuid.UUID(int=r.getrandbits(128))),
    "date": ({"type": "int", "logicalType": "date"}, lambda r: dt.date(1950, 1, 1) + dt.timedelta(r.randrange(25000))),
    "time-millis": ({"type": "int", "logicalType": "time-millis"}, lambda r: dt.time(r.randrange(24))),
    "time-micros": ({"type": "long", "logicalType": "time-micros"}, lambda r: dt.time(r.randrange(24))),
    "timestamp-millis": ({"type": "long", "logicalType": "timestamp-millis"}, lambda r: NOW),
    "timestamp-micros": ({"type": "long", "logicalType": "timestamp-micros"}, lambda r: NOW),
    "local-timestamp-millis": (
        {"type": "long", "logicalType": "local-timestamp-millis"},
        lambda r: NOW.replace(tzinfo=None),
    ),
    "decimal": (
        {"type": "bytes", "logicalType": "decimal", "precision": 8, "scale": 2},
        lambda r: decimal.Decimal(r.randrange(10**6)) / 100,
    ),
    "array": ({"type": "array", "items": "long"}, lambda r: [r.randrange(100) for _ in range(r.randrange(3))]),
    "map": ({"type": "map", "values": "string"}, lambda r: {"k": "v"}),
}


@st.composite
def writer_schemas(draw: Any) -> tuple[Any, Any]:
    """(writer schema, a record of it): Post v1 with fields retyped, added or removed, or a nameless schema."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    if draw(st.integers(0, 9)) == 0:
        kind, make = _TYPES[draw(st.sampled_from(sorted(_TYPES)))]
        return kind, make(rng)
    schema = copy.deepcopy(POST_V1)
    record = post_record()
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["retype", "nullable", "add", "remove"]))
        field = draw(st.sampled_from([f["name"] for f in schema["fields"]]))
        type_name = draw(st.sampled_from(sorted(_TYPES)))
        kind, make = _TYPES[type_name]
        if action == "retype":
            schema = with_field(schema, field, copy.deepcopy(kind))
            record[field] = make(rng)
        elif action == "nullable":
            schema = with_field(schema, field, ["null", copy.deepcopy(kind)])
            record[field] = make(rng) if rng.random() < 0.5 else None
        elif action == "add":
            name = f"extra_{len(schema['fields'])}"
            schema["fields"].append({"name": name, "type": ["null", copy.deepcopy(kind)], "default": None})
            record[name] = make(rng)
        else:
            schema["fields"] = [f for f in schema["fields"] if f["name"] != field]
            record.pop(field, None)
    return schema, record


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(generated=writer_schemas())
def test_any_registered_writer_schema_is_decided_or_dead_lettered_per_record(registry, generated):
    """The error boundary is per record: each generated writer schema, registered in the real registry,
    frames a record; the batch decides it or dead-letters it with a declared cause, and a good record
    behind it in the same batch is still emitted."""
    schema, record = generated
    try:
        fastavro.parse_schema(schema, named_schemas={})
        schema_id = register(registry.url, schema)
    except (SchemaRegistryError, fastavro.schema.SchemaParseException, ValueError, TypeError):
        assume(False)  # neither fastavro nor the registry holds it: no producer could write it
    try:
        value = framed(schema_id, schema, record)
    except (ValueError, TypeError, AttributeError, OverflowError):
        assume(False)
    good = framed(register(registry.url, POST_V1), POST_V1, post_record(post_id="good"))
    tally, outcomes = decide(codec_for(registry.url), [value, good])
    assert sum(tally.values()) == 2
    emitted = [o[1] for o in outcomes if o[0] == "training"]
    assert [r["record_id"] for r in emitted].count("good") == 1
    for topic, outcome in outcomes:
        if topic == "dlq":
            assert outcome in DLQ_CAUSES
        elif outcome["record_id"] != "good":  # emitted: it was read as a Post with the values written
            assert outcome["record_id"] == as_read(record["post_id"]) and outcome["text"] == as_read(record["text"])


def as_read(value: Any) -> str:
    """A value as a reader of a string reads it: Avro promotes bytes to string (as UTF-8)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
