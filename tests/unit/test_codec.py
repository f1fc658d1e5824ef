"""The codec: Confluent framing, every schema round-trips, malformed values raise typed errors."""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from consumer.audit.receipts import RECEIPT, RECIPIENTS, VERIFICATION
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
    BodyError,
    Codec,
    CodecError,
    FramingError,
    OversizedError,
    SchemaCatalog,
    SchemaMismatchError,
    UnknownSchemaError,
)
from tests import samples

CODEC = Codec()
UTC = dt.UTC


def as_decoded(record):
    """What fastavro returns for our logical types."""
    out = dict(record)
    for key in ("author_birth_date", "user_birth_date", "birth_date"):
        if out.get(key) is not None:
            out[key] = dt.date(1970, 1, 1) + dt.timedelta(days=out[key])
    for key in ("created_at", "opted_out_at", "at", "created_before"):
        if out.get(key) is not None:
            out[key] = dt.datetime.fromtimestamp(out[key] / 1000, UTC)
    return out


@pytest.mark.parametrize(
    "name,record",
    [
        (POST, samples.POST),
        (AI_INTERACTION, samples.AI_INTERACTION),
        (OPTOUT, samples.OPTOUT),
        (TRAINING_RECORD, samples.TRAINING_RECORD),
        (TRAINING_RECORD, samples.TRAINING_RECORD_AI),
        (REVOCATION, samples.REVOCATION),
        (REVOCATION, samples.RECORD_RETRACTION),
        (REVOCATION, samples.BOUNDED_RETRACTION),
        (CONTENT_CHANGE, samples.CONTENT_CHANGE),
        (ACCOUNT_CHANGE, samples.ACCOUNT_CHANGE),
    ],
)
def test_every_schema_round_trips_with_framing(name, record):
    data = CODEC.encode(name, record)
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert schema_id == SchemaCatalog().by_name(name).id
    got_id, decoded = CODEC.decode(data, name)
    assert got_id == schema_id
    assert decoded == as_decoded(record)


def test_catalog_ids_are_the_documented_ones():
    catalog = SchemaCatalog()
    assert [(e.id, e.name) for e in catalog.entries()] == [
        (1, POST),
        (2, AI_INTERACTION),
        (3, OPTOUT),
        (4, TRAINING_RECORD_V1),
        (5, REVOCATION),
        (6, TRAINING_RECORD),
        (7, CONSENT),
        (8, CONTENT_CHANGE),
        (9, ACCOUNT_CHANGE),
        (10, REVOCATION),
        (11, RECEIPT),
        (12, VERIFICATION),
        (13, RECIPIENTS),
    ]


def test_every_union_of_the_outputs_is_null_and_one_type():
    """Flink's Avro formats and Spark's from_avro take only [null, T] unions."""

    def unions(node):
        if isinstance(node, list):
            yield node
            for branch in node:
                yield from unions(branch)
        elif isinstance(node, dict):
            for key in ("type", "items", "values"):
                if key in node:
                    yield from unions(node[key])
            for field in node.get("fields", []):
                yield from unions(field["type"])

    for name in (TRAINING_RECORD, REVOCATION):
        for union in unions(SchemaCatalog().by_name(name).parsed):
            assert len(union) == 2 and union[0] == "null", (name, union)


def test_every_field_has_a_doc_and_the_contract_names():
    catalog = SchemaCatalog()
    expected = {
        POST: [
            "post_id",
            "author_id",
            "author_birth_date",
            "author_country",
            "visibility",
            "kind",
            "surface",
            "language",
            "text",
            "created_at",
        ],
        AI_INTERACTION: [
            "interaction_id",
            "user_id",
            "user_birth_date",
            "user_country",
            "context",
            "surface",
            "language",
            "prompt",
            "response",
            "created_at",
        ],
        OPTOUT: ["user_id", "opted_out_at", "source"],
        TRAINING_RECORD: [
            "record_id",
            "source",
            "text",
            "prompt",
            "response",
            "language",
            "country",
            "created_at",
            "author_pseudonym",
            "policy_version",
            "source_topic",
            "source_partition",
            "source_offset",
        ],
        REVOCATION: [
            "author_pseudonym",
            "opted_out_at",
            "scope",
            "reason",
            "record_id",
            "created_before",
            "lifted",
        ],
        CONTENT_CHANGE: ["record_id", "user_id", "change", "replaced_by", "at", "source"],
        ACCOUNT_CHANGE: ["user_id", "deleted", "birth_date", "country", "at", "source"],
    }
    for name, fields in expected.items():
        schema = catalog.by_name(name).parsed
        assert [f["name"] for f in schema["fields"]] == fields
        assert all(f.get("doc") for f in schema["fields"]), name
        assert schema["name"].count(".") >= 2  # namespaced


@pytest.mark.parametrize(
    "data,error,message",
    [
        (None, FramingError, "shorter than"),
        (b"", FramingError, "shorter than"),
        (b"\x00\x00\x00", FramingError, "shorter than"),
        (b"\x01\x00\x00\x00\x01abc", FramingError, "magic byte"),
        (b'{"json": true}', FramingError, "magic byte"),
        (b"\x00\x00\x00\x03\xe7abc", UnknownSchemaError, "schema id 999"),
    ],
)
def test_malformed_framing_raises_typed_errors(data, error, message):
    with pytest.raises(error, match=message):
        CODEC.decode(data, POST)


def test_truncated_body_raises_body_error():
    data = CODEC.encode(POST, samples.POST)
    for cut in (6, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(BodyError):
            CODEC.decode(data[:cut], POST)


def test_trailing_bytes_raise_body_error():
    data = CODEC.encode(POST, samples.POST)
    with pytest.raises(BodyError, match="trailing"):
        CODEC.decode(data + b"\x00", POST)


def test_wrong_record_type_for_the_topic_is_a_schema_mismatch():
    optout = CODEC.encode(OPTOUT, samples.OPTOUT)
    with pytest.raises(SchemaMismatchError):
        CODEC.decode(optout, POST)


def test_unknown_enum_symbol_in_body_raises_body_error():
    data = bytearray(CODEC.encode(POST, samples.POST))
    # visibility follows post_id, author_id, birth date and country; find it by re-encoding with ONLY_ME.
    other = CODEC.encode(POST, {**samples.POST, "visibility": "ONLY_ME"})
    index = next(i for i, (a, b) in enumerate(zip(data, other, strict=True)) if a != b)
    data[index] = 0x7E  # symbol 63: not in the enum
    with pytest.raises(BodyError):
        CODEC.decode(bytes(data), POST)


def test_oversized_value_raises():
    small = Codec(max_value_bytes=64)
    data = small.encode(POST, {**samples.POST, "text": "x" * 100})
    with pytest.raises(OversizedError):
        small.decode(data, POST)


def test_all_codec_errors_share_a_base_and_a_fixed_label():
    for cls in (FramingError, UnknownSchemaError, BodyError, OversizedError):
        assert issubclass(cls, CodecError)
        assert cls.detail.replace("_", "").isalpha()


def test_every_dead_letter_cause_is_a_declared_metric_label():
    import consumer.datapath.reading  # noqa: F401 - its own CodecError (invalid_fields)
    from consumer.operations.metrics import DLQ_CAUSES

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    details = {cls.detail for cls in subclasses(CodecError)} | {"undecidable", "output_rejected"}
    assert details == set(DLQ_CAUSES)


@pytest.mark.parametrize("retraction", [samples.REVOCATION, samples.RECORD_RETRACTION, samples.BOUNDED_RETRACTION])
def test_a_version_1_reader_reads_every_version_2_retraction_as_a_revocation(retraction):
    """Revocation v2 keeps v1's record name and adds fields with defaults: a reader holding only the v1
    schema resolves it and sees the pseudonym and the time (and purges the author: the safe side)."""
    import io

    import fastavro

    v1 = next(e for e in SchemaCatalog().entries() if e.id == 5).parsed
    data = CODEC.encode(REVOCATION, retraction)
    assert data[1:5] == (10).to_bytes(4, "big")
    read = fastavro.schemaless_reader(io.BytesIO(data[5:]), CODEC.catalog.by_name(REVOCATION).parsed, v1)
    assert read == as_decoded(
        {"author_pseudonym": retraction["author_pseudonym"], "opted_out_at": retraction["opted_out_at"]}
    )
