"""The fast Avro path against the reference codec (fastavro), compiled and interpreted.

Soundness: whenever the fast path returns, its fields equal fastavro's; when the bytes are odd it
may refuse (FastPathMiss), and then the reference codec decides. Built records decode with fastavro.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import consumer.wire.fastpath as compiled_or_not
from consumer.wire.codec import AI_INTERACTION, POST, TRAINING_RECORD, Codec, CodecError

CODEC = Codec()
# The same source, loaded as plain Python whether or not the installed module is the compiled one.
_spec = importlib.util.spec_from_file_location(
    "fastpath_interpreted", Path(compiled_or_not.__file__).parent / "fastpath.py"
)
assert _spec and _spec.loader
interpreted = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(interpreted)
MODULES = [
    pytest.param(compiled_or_not, id="compiled" if compiled_or_not.COMPILED else "as-installed"),
    pytest.param(interpreted, id="interpreted"),
]

texts = st.text(max_size=300) | st.text(alphabet="abc", min_size=60, max_size=70)
# Valid values: what the reference codec can turn into datetime objects (years 1 to 9999).
longs = st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999)
dates = st.none() | st.integers(min_value=-719_162, max_value=2_932_896)

posts = st.fixed_dictionaries(
    {
        "post_id": texts,
        "author_id": texts,
        "author_birth_date": dates,
        "author_country": texts,
        "visibility": st.sampled_from(["PUBLIC", "FRIENDS", "FRIENDS_OF_FRIENDS", "CUSTOM", "ONLY_ME"]),
        "kind": st.sampled_from(["POST", "COMMENT", "CAPTION"]),
        "surface": texts,
        "language": st.none() | texts,
        "text": texts,
        "created_at": longs,
    }
)
interactions = st.fixed_dictionaries(
    {
        "interaction_id": texts,
        "user_id": texts,
        "user_birth_date": dates,
        "user_country": texts,
        "context": st.sampled_from(["DIRECT_WITH_AI", "GROUP_CHAT"]),
        "surface": texts,
        "language": st.none() | texts,
        "prompt": texts,
        "response": texts,
        "created_at": longs,
    }
)


def expected_fields(name: str, record: dict) -> tuple:
    if name == POST:
        return (
            record["author_id"].encode(),
            record["author_birth_date"],
            record["author_country"].encode(),
            record["visibility"] == "PUBLIC",
            record["created_at"],
        )
    return (
        record["user_id"].encode(),
        record["user_birth_date"],
        record["user_country"].encode(),
        record["context"] == "DIRECT_WITH_AI",
        record["created_at"],
    )


def check_against_reference(module, name: str, data: bytes) -> bool:
    decode = module.decode_post if name == POST else module.decode_ai_interaction
    try:
        fields = decode(data)
    except module.FastPathMiss:
        return False
    try:
        CODEC.decode(data, name)
    except CodecError as exc:  # pragma: no cover - a failure here is the bug this test looks for
        raise AssertionError(f"fast path accepted bytes the reference codec rejects: {exc}") from exc
    reference = _reference_raw(name, data)
    assert (fields[1], fields[2], fields[3], fields[4], fields[8]) == expected_fields(name, reference)
    return True


def _reference_raw(name: str, data: bytes) -> dict:
    """The reference codec's record, with dates and timestamps back as the raw Avro ints."""
    _, record = CODEC.decode(data, name)
    out = dict(record)
    for key in ("author_birth_date", "user_birth_date"):
        if out.get(key) is not None:
            out[key] = (out[key] - dt.date(1970, 1, 1)).days
    out["created_at"] = _ms(out["created_at"])
    return out


@pytest.mark.parametrize("module", MODULES)
@settings(max_examples=400)
@given(record=posts)
def test_post_fields_equal_reference(module, record):
    data = CODEC.encode(POST, record)
    assert check_against_reference(module, POST, data)


@pytest.mark.parametrize("module", MODULES)
@settings(max_examples=400)
@given(record=interactions)
def test_interaction_fields_equal_reference(module, record):
    assert check_against_reference(module, AI_INTERACTION, CODEC.encode(AI_INTERACTION, record))


@pytest.mark.parametrize("module", MODULES)
@settings(max_examples=1500)
@given(record=posts | interactions, data=st.data())
def test_mutated_bytes_are_refused_or_decoded_exactly(module, record, data):
    name = POST if "post_id" in record else AI_INTERACTION
    value = bytearray(CODEC.encode(name, record))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and len(value) > 5:
            i = data.draw(st.integers(min_value=5, max_value=len(value) - 1))
            value[i] = data.draw(st.integers(min_value=0, max_value=255))
        elif action == "cut" and len(value) > 6:
            del value[data.draw(st.integers(min_value=6, max_value=len(value) - 1)) :]
        else:
            i = data.draw(st.integers(min_value=5, max_value=len(value)))
            value[i:i] = data.draw(st.binary(min_size=1, max_size=3))
    check_against_reference(module, name, bytes(value))


@pytest.mark.parametrize("module", MODULES)
@given(body=st.binary(max_size=200))
def test_random_bytes_never_escape_as_other_errors(module, body):
    data = b"\x00\x00\x00\x00\x01" + body
    for name in (POST, AI_INTERACTION):
        check_against_reference(module, name, data)


@pytest.mark.parametrize("module", MODULES)
@settings(max_examples=300)
@given(
    record=posts | interactions,
    offset=st.integers(min_value=0, max_value=(1 << 63) - 1),
    partition=st.integers(min_value=0, max_value=100_000),
)
def test_built_training_record_decodes_with_fastavro(module, record, offset, partition):
    is_post = "post_id" in record
    name = POST if is_post else AI_INTERACTION
    data = CODEC.encode(name, record)
    f = (module.decode_post if is_post else module.decode_ai_interaction)(data)
    provenance = module.avro_string("policy-1") + module.avro_string("posts.v1") + module.zigzag_varint(partition)
    out = module.training_record(
        CODEC.header(TRAINING_RECORD),
        data,
        f[0],
        f[5],
        f[6],
        f[9],
        f[7],
        module.avro_string("SE"),
        b"f" * 64,
        provenance,
        offset,
    )
    _, got = CODEC.decode(out, TRAINING_RECORD)
    assert got["record_id"] == (record["post_id"] if is_post else record["interaction_id"])
    assert got["source"] == ("POST" if is_post else "AI_INTERACTION")
    if is_post:
        assert (got["text"], got["prompt"], got["response"]) == (record["text"], None, None)
    else:
        assert (got["text"], got["prompt"], got["response"]) == (None, record["prompt"], record["response"])
    assert got["language"] == record["language"]
    assert got["country"] == "SE"
    assert _reference_raw(name, data)["created_at"] == _ms(got["created_at"])
    assert got["author_pseudonym"] == "f" * 64
    assert (got["policy_version"], got["source_topic"]) == ("policy-1", "posts.v1")
    assert (got["source_partition"], got["source_offset"]) == (partition, offset)


def _ms(when) -> int:
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


@pytest.mark.parametrize("value", [0, 1, -1, 63, 64, -65, 1 << 40, (1 << 63) - 1, -(1 << 63)])
def test_zigzag_matches_fastavro(value):
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", value)
    assert compiled_or_not.zigzag_varint(value) == out.getvalue() == interpreted.zigzag_varint(value)


def _post_with_raw_text(module, text: bytes) -> bytes:
    """A framed Post whose text field holds exactly `text` (possibly not UTF-8)."""
    head = CODEC.encode(
        POST,
        {
            "post_id": "p",
            "author_id": "u",
            "author_birth_date": None,
            "author_country": "DE",
            "visibility": "PUBLIC",
            "kind": "POST",
            "surface": "s",
            "language": None,
            "text": "",
            "created_at": 0,
        },
    )
    # The empty text is the byte 0x00 before the created_at varint (0x00): replace it.
    assert head.endswith(b"\x00\x00")
    return head[:-2] + module.zigzag_varint(len(text)) + text + b"\x00"


utf8_edge_bytes = st.lists(
    st.sampled_from(
        [
            b"a",
            b"\x7f",
            b"\xc2\x80",
            b"\xdf\xbf",
            b"\xe0\xa0\x80",
            b"\xed\x9f\xbf",
            b"\xed\xa0\x80",
            b"\xef\xbf\xbf",
            b"\xf0\x90\x80\x80",
            b"\xf4\x8f\xbf\xbf",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\xc1\xbf",
            b"\xe0\x9f\xbf",
            b"\xf0\x8f\xbf\xbf",
            b"\xf5\x80\x80\x80",
            b"\xff",
            b"\x80",
            b"\xc2",
            b"\xe2\x82",
            b"\xf0\x9f\x99",
            "\U0001f642".encode(),
            "ß".encode(),
        ]
    ),
    max_size=12,
).map(b"".join)


@pytest.mark.parametrize("module", MODULES)
@settings(max_examples=1500)
@given(text=st.binary(max_size=40) | utf8_edge_bytes)
def test_utf8_validation_matches_python(module, text):
    value = _post_with_raw_text(module, text)
    try:
        text.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    try:
        module.decode_post(value)
        accepted = True
    except module.FastPathMiss:
        accepted = False
    assert accepted == valid
