"""The reference path holds Avro to the specification, as the fast path does.

fastavro reads an enum or union index as a Python list index: a negative index counts from the end,
so 0x09 (zig-zag -5) as a Post's visibility decoded as PUBLIC and 0x01 (-1) as ONLY_ME. Every
encoding the specification forbids must be malformed on both paths, and the fast path must be taken
only for a writer schema that means exactly what v1 means, logical types included.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import consumer.wire.fastpath as fastpath
from consumer.wire.codec import AI_INTERACTION, POST, BodyError, Codec, SchemaCatalog, _entry, parse_schema_text
from consumer.wire.strict_avro import StrictAvroError, validator
from rules import Source
from tests import samples
from tests.fakes import Msg, processor, run

CODEC = Codec()
ADULT_PUBLIC = {**samples.POST, "visibility": "FRIENDS"}


def _index_of(name: str, record: dict, field: str, other: object) -> int:
    """Where `field` is encoded: the first byte that differs when only that field changes."""
    a = CODEC.encode(name, record)
    b = CODEC.encode(name, {**record, field: other})
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)


def _with_byte(name: str, record: dict, field: str, other: object, byte: int) -> bytes:
    data = bytearray(CODEC.encode(name, record))
    data[_index_of(name, record, field, other)] = byte
    return bytes(data)


NEGATIVE_INDEXES = [
    pytest.param(POST, ADULT_PUBLIC, "visibility", "ONLY_ME", 0x09, id="visibility -5 (would read PUBLIC)"),
    pytest.param(POST, ADULT_PUBLIC, "visibility", "ONLY_ME", 0x01, id="visibility -1 (would read ONLY_ME)"),
    pytest.param(POST, ADULT_PUBLIC, "kind", "CAPTION", 0x05, id="kind -3"),
    pytest.param(
        AI_INTERACTION,
        {**samples.AI_INTERACTION, "context": "GROUP_CHAT"},
        "context",
        "DIRECT_WITH_AI",
        0x03,
        id="context -2 (would read DIRECT_WITH_AI)",
    ),
    pytest.param(POST, samples.POST, "language", None, 0x01, id="language union -1"),
    pytest.param(POST, samples.POST, "author_birth_date", None, 0x01, id="birth date union -1"),
    pytest.param(POST, samples.POST, "author_birth_date", None, 0x04, id="birth date union 2 (of 2)"),
]


@pytest.mark.parametrize("name,record,field,other,byte", NEGATIVE_INDEXES)
def test_indexes_outside_the_schema_are_malformed_on_both_paths(name, record, field, other, byte):
    data = _with_byte(name, record, field, other, byte)
    with pytest.raises(BodyError, match="encoding rule"):
        CODEC.decode(data, name)
    decode = fastpath.decode_post if name == POST else fastpath.decode_ai_interaction
    with pytest.raises(fastpath.FastPathMiss):
        decode(data)


def test_the_hot_loop_sends_negative_indexes_to_the_dlq():
    proc, producer = processor()
    data = _with_byte(POST, ADULT_PUBLIC, "visibility", "ONLY_ME", 0x09)
    tally = run(proc, [Msg("posts", data)])
    assert tally == {(Source.POST, "malformed"): 1}
    assert [s[0] for s in producer.sent] == ["dlq"]


@pytest.mark.parametrize(
    "schema,body,rule",
    [
        ("boolean", b"\x02", "boolean"),
        ("int", b"\x80\x80\x80\x80\x10", "32-bit"),
        ("int", b"\x80\x80\x80\x80\x80\x01", "longer"),
        ("long", b"\xff" * 9 + b"\x02", "long range"),
        ("string", b"\x01", "negative length"),
        ("string", b"\x06ab", "beyond the end"),
        ("string", b"\x02\xff", "UTF-8"),
        ("bytes", b"\x03", "negative length"),
        ({"type": "array", "items": "int"}, b"\x03\x01\x02\x00", "negative block size"),
        ({"type": "array", "items": "int"}, b"\x01\x08\x02\x00", "block size does not match"),
        ({"type": "fixed", "name": "F", "size": 4}, b"\x00\x00", "truncated"),
    ],
)
def test_each_encoding_rule(schema, body, rule):
    check = validator(schema)
    with pytest.raises(StrictAvroError, match=rule):
        check(body, 0)


@pytest.mark.parametrize(
    "schema,body",
    [
        ("boolean", b"\x01"),
        ("int", b"\xfe\xff\xff\xff\x0f"),
        ({"type": "array", "items": "int"}, b"\x04\x02\x04\x00"),
        ({"type": "array", "items": "int"}, b"\x03\x04\x02\x04\x00"),  # a block with its size: 2 items, 2 bytes
        ({"type": "map", "values": "string"}, b"\x02\x02k\x02v\x00"),
        ({"type": "fixed", "name": "F", "size": 2}, b"ab"),
    ],
)
def test_valid_encodings_pass(schema, body):
    assert validator(schema)(body, 0) == len(body)


def test_recursive_records_are_checked():
    schema = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}],
    }
    check = validator(parse_schema_text(json.dumps(schema)))
    assert check(b"\x02\x02\x04\x00", 0) == 4
    with pytest.raises(StrictAvroError, match="union"):
        check(b"\x02\x03", 0)


# -- the differential fuzz: on v1 bytes the two paths accept exactly the same values --------------

enum_and_union_bytes = st.sampled_from([0x01, 0x03, 0x05, 0x07, 0x09, 0x7F, 0x04, 0x06, 0x08, 0x0A])


@settings(max_examples=800)
@given(record=st.sampled_from([samples.POST, ADULT_PUBLIC, samples.AI_INTERACTION]), data=st.data())
def test_fast_and_reference_paths_accept_the_same_v1_bytes(record, data):
    """Mutated bytes: the fast path returns exactly when the reference path accepts a canonical encoding
    (tests/unit/test_fastpath.py's contract), with the same fields."""
    from tests.unit.test_fastpath import check_against_reference

    name = POST if "post_id" in record else AI_INTERACTION
    value = bytearray(CODEC.encode(name, record))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        i = data.draw(st.integers(min_value=5, max_value=len(value) - 1))
        value[i] = data.draw(enum_and_union_bytes | st.integers(min_value=0, max_value=255))
    check_against_reference(fastpath, name, bytes(value), "mutated")


# -- the fast path is for exactly v1, logical types included ----------------------------------------


def test_a_writer_with_another_logical_type_is_not_taken_for_v1():
    parsed = copy.deepcopy(json.loads((SchemaCatalog().directory / "post.v1.avsc").read_text()))
    for field in parsed["fields"]:
        if field["name"] == "created_at":
            field["type"] = {"type": "long", "logicalType": "local-timestamp-millis"}
    local = parse_schema_text(json.dumps(parsed))
    codec = Codec()
    codec._writers[41] = _entry(41, local)
    assert codec.is_reader_schema(1, POST)
    assert not codec.is_reader_schema(41, POST), "local-timestamp-millis is not timestamp-millis"
