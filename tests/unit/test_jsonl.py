"""JSON Lines <-> Avro (consumer/commands/jsonl.py): every type of every schema in avro/, both ways.

`tail` prints a record as JSON (`describe`, then `dumps`), and `produce` and `check` read JSON into
Avro (`to_avro`). For every schema of the catalog, random records are printed as `tail` prints them
and read back as `produce` reads them, and must encode to the same bytes. Errors name the field,
never the value.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import uuid
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.commands.check import decisions
from consumer.commands.jsonl import JsonRecordError, dumps, parse_line, to_avro
from consumer.commands.topic_io import describe
from consumer.wire.codec import CONSENT, Codec, SchemaCatalog
from rules import load_policy
from tests import samples
from tests.avro_corners import MAX_DAY, MAX_MS, MIN_DAY, MIN_MS
from tests.fakes import Msg

CATALOG = SchemaCatalog()
CODEC = Codec(CATALOG)
SCHEMAS = {entry.name: json.loads(entry.text) for entry in CATALOG.entries()}

# Every primitive, and the logical types, enums, unions and nested records the catalog uses: a
# schema no topic has, so that the converter is complete beyond what the catalog needs today.
EVERY_TYPE = {
    "type": "record",
    "name": "EveryType",
    "namespace": "test.jsonl",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "raw", "type": "bytes"},
        {"name": "s", "type": "string"},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "maybe", "type": ["null", "boolean"], "default": None},
        {
            "name": "inner",
            "type": [
                "string",
                {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": ["null", "long"]}]},
            ],
        },
    ],
}


def raw_values(kind: Any) -> st.SearchStrategy[Any]:
    """Raw Avro values (int days, int milliseconds) of a schema node."""
    if isinstance(kind, list):
        return st.one_of([raw_values(branch) for branch in kind])
    if isinstance(kind, dict):
        logical = kind.get("logicalType")
        if logical == "date":
            return st.integers(MIN_DAY, MAX_DAY)
        if logical == "timestamp-millis":
            return st.integers(MIN_MS, MAX_MS)
        assert logical is None, f"no strategy for logical type {logical}: add one (and support it in jsonl.py)"
        if kind["type"] == "enum":
            return st.sampled_from(kind["symbols"])
        if kind["type"] == "record":
            return st.fixed_dictionaries({f["name"]: raw_values(f["type"]) for f in kind["fields"]})
        if kind["type"] == "array":
            return st.lists(raw_values(kind["items"]), max_size=3)
        return raw_values(kind["type"])
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(width=32, allow_nan=False, allow_infinity=False),
        "double": st.floats(allow_nan=False, allow_infinity=False),
        "bytes": st.binary(max_size=20),
        "string": st.text(max_size=20),
    }[kind]


def _tail_then_produce(schema: dict[str, Any], value: bytes, codec: Codec) -> bytes:
    """`tail`'s JSON line of a framed value, read back as `produce` reads it, encoded again."""
    line = dumps(describe(codec, Msg("t", value)))
    printed = parse_line(line)["value"]
    parsed = fastavro.parse_schema(schema, named_schemas={})
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, to_avro(printed, parsed))
    return value[:5] + out.getvalue()


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@settings(max_examples=150)
@given(data=st.data())
def test_tail_prints_every_schema_so_that_produce_reads_back_the_same_bytes(name, data):
    record = data.draw(raw_values(SCHEMAS[name]))
    value = CODEC.encode(name, record)
    assert _tail_then_produce(SCHEMAS[name], value, CODEC) == value


def test_the_round_trip_covers_every_schema_file():
    """The round trip runs over the catalog; a schema file outside it would go untested."""
    files = {path.name for path in CATALOG.directory.glob("*.avsc")}
    listed = {item["file"] for item in json.loads((CATALOG.directory / "catalog.json").read_text())["schemas"]}
    assert files == listed


def _catalog_with(tmp_path: Path, schema: dict[str, Any]) -> SchemaCatalog:
    (tmp_path / "s.avsc").write_text(json.dumps(schema))
    (tmp_path / "catalog.json").write_text(
        json.dumps({"schemas": [{"id": 90, "name": f"{schema['namespace']}.{schema['name']}", "file": "s.avsc"}]})
    )
    return SchemaCatalog(tmp_path)


@pytest.fixture(scope="module")
def every_type_codec(tmp_path_factory) -> Codec:
    return Codec(_catalog_with(tmp_path_factory.mktemp("every"), EVERY_TYPE))


@settings(max_examples=300)
@given(data=st.data())
def test_every_avro_primitive_round_trips(every_type_codec, data):
    value = every_type_codec.encode("test.jsonl.EveryType", data.draw(raw_values(EVERY_TYPE)))
    assert _tail_then_produce(EVERY_TYPE, value, every_type_codec) == value


def _parsed(name: str) -> dict[str, Any]:
    return CATALOG.by_name(name).parsed


def test_the_readme_consent_example_converts():
    line = '{"user_id":"u1","granted":true,"at":"2026-12-01T09:00:00Z","source":"consent_dialog"}'
    record = to_avro(parse_line(line), _parsed(CONSENT))
    assert record == {"user_id": "u1", "granted": True, "at": 1_796_115_600_000, "source": "consent_dialog"}
    assert to_avro({**record, "granted": False}, _parsed(CONSENT))["granted"] is False


@pytest.mark.parametrize("wrong", [1, 0, "true", "false", None, [], {}])
def test_a_boolean_is_only_true_or_false(wrong):
    with pytest.raises(JsonRecordError, match="field 'granted' must be true or false"):
        to_avro({"user_id": "u", "granted": wrong, "at": 0, "source": "s"}, _parsed(CONSENT))


SECRET = "4711-SECRET"


def _wrong_values(kind: Any) -> list[Any]:
    """Values of the wrong type for a field, each carrying SECRET somewhere a message could echo it."""
    wrong: list[Any] = [{"k": SECRET}, [SECRET]]
    text_ok = kind == "string" or (isinstance(kind, list) and "string" in kind)
    if not text_ok:
        wrong.append(SECRET)
    branches = kind if isinstance(kind, list) else [kind]
    if not any(b == "long" or (isinstance(b, dict) and b.get("logicalType") == "timestamp-millis") for b in branches):
        wrong.append(471_147_114_711)
    return wrong


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_errors_name_the_field_and_never_the_value(name):
    parsed = _parsed(name)
    good = json.loads(dumps(fastavro.schemaless_reader(io.BytesIO(CODEC.encode(name, _sample(name))[5:]), parsed)))
    for field in SCHEMAS[name]["fields"]:
        for wrong in _wrong_values(field["type"]):
            with pytest.raises(JsonRecordError) as err:
                to_avro({**good, field["name"]: wrong}, parsed)
            message = str(err.value)
            assert f"'{field['name']}" in message, message
            assert SECRET not in message and "4711" not in message, message


def _sample(name: str) -> dict[str, Any]:
    by_name = {
        "platform.content.v1.Post": samples.POST,
        "platform.content.v1.AiInteraction": samples.AI_INTERACTION,
        "platform.privacy.v1.OptOut": samples.OPTOUT,
        "platform.privacy.v1.Consent": {"user_id": "u", "granted": True, "at": 0, "source": "s"},
        "platform.training.v2.TrainingRecord": samples.TRAINING_RECORD,
        "platform.training.v1.Revocation": samples.REVOCATION,
        "platform.content.v1.ContentChange": samples.CONTENT_CHANGE,
        "platform.accounts.v1.AccountChange": samples.ACCOUNT_CHANGE,
        "platform.audit.v1.DecisionReceipt": samples.RECEIPT,
        "platform.audit.v1.VerificationResult": samples.VERIFICATION,
        "platform.audit.v1.RecipientsSnapshot": samples.RECIPIENTS,
        "platform.training.v1.TrainingRecord": {
            **samples.TRAINING_RECORD,
            "source": "AI_INTERACTION",
            "text": {"prompt": "p", "response": "r"},
        },
    }
    return by_name[name]


@pytest.mark.parametrize(
    "millis", [MIN_MS - 1, MAX_MS + 1, 2**63 - 1, -(2**63), "9999-12-31T23:30:00-01:00", "0001-01-01T00:30:00+01:00"]
)
def test_a_timestamp_the_service_cannot_decode_is_refused_and_malformed_in_check(millis):
    """The service dead-letters a created_at outside years 1 to 9999 (malformed); `check` must not
    decide it otherwise, and `produce` must not write what no reader of the schema decodes."""
    line = {**samples.POST, "author_birth_date": "1990-01-01", "created_at": millis}
    with pytest.raises(JsonRecordError, match="field 'created_at' is outside years 1 to 9999"):
        to_avro(line, _parsed("platform.content.v1.Post"))
    (decision,) = decisions([orjson.dumps(line)], "post", load_policy(), frozenset(), CATALOG)
    assert decision == {"id": "p-1", "decision": "malformed"}


@pytest.mark.parametrize(
    "text", ["2026-13-01", "2026-02-30", "20260101", "2026-1-01", "\u0662\u0660\u0662\u0666-01-01"]
)
def test_dates_are_calendar_dates_in_ascii_digits(text):
    with pytest.raises(JsonRecordError, match="field 'author_birth_date'"):
        to_avro({**samples.POST, "author_birth_date": text}, _parsed("platform.content.v1.Post"))


def test_tail_prints_the_types_fastavro_returns_for_other_writer_schemas(tmp_path):
    """A DLQ holds whatever producers wrote; `tail` must print any record, never crash on one."""
    schema = {
        "type": "record",
        "name": "Other",
        "namespace": "test.jsonl",
        "fields": [
            {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
            {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "t", "type": {"type": "int", "logicalType": "time-millis"}},
            {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
            {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "counts", "type": {"type": "map", "values": "long"}},
            {"name": "ratio", "type": "double"},
        ],
    }
    codec = Codec(_catalog_with(tmp_path, schema))
    record = {
        "price": decimal.Decimal("12.34"),
        "id": str(uuid.UUID(int=7)),
        "t": dt.time(12, 30, 1),
        "us": dt.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=dt.UTC),
        "local": dt.datetime(2026, 1, 1, 8, 0),
        "digest": b"\x00\x01\x02\x03",
        "tags": ["a", "b"],
        "counts": {"x": 1},
        "ratio": 0.5,
    }
    printed = orjson.loads(dumps(describe(codec, Msg("dlq", codec.encode("test.jsonl.Other", record)))))
    assert printed["value"]["price"] == "12.34"
    assert printed["value"]["digest"] == "AAECAw=="
    assert printed["value"]["us"] == "2026-01-01T00:00:00.123456+00:00"
    assert printed["value"]["tags"] == ["a", "b"] and printed["value"]["counts"] == {"x": 1}
