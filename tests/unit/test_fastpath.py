"""The fast Avro path against the reference path, compiled and interpreted.

The reference path is the strict encoding check, then fastavro (consumer/wire/codec.py). The
contract, checked here on every byte string the tests make (valid records, every corner of every
field of both v1 schemas, random and mutated bytes):

- the fast path returns exactly when the reference path accepts the bytes *and* they are the
  canonical encoding of what they hold (every varint minimal: the only freedom the v1 schemas leave
  an encoder), and then its fields equal the reference path's;
- so whenever the reference path rejects the bytes, the fast path misses (FastPathMiss);
- the hot loop emits the same bytes on both paths: the same TrainingRecord, or the same dead letter.
Built records decode with fastavro.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import consumer.datapath.batch as batch
import consumer.datapath.reading as reading
import consumer.wire.fastpath as compiled_or_not
from consumer.wire.codec import AI_INTERACTION, POST, TRAINING_RECORD, Codec, CodecError
from tests import avro_corners, samples
from tests.fakes import Msg, processor, run

CODEC = Codec()
# The same source, loaded as plain Python whether or not the installed module is the compiled one.
_spec = importlib.util.spec_from_file_location(
    "fastpath_interpreted", Path(compiled_or_not.__file__).parent / "fastpath.py"
)
assert _spec and _spec.loader
interpreted = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(interpreted)
MODULES = [
    pytest.param(compiled_or_not, id="compiled"),
    pytest.param(interpreted, id="interpreted"),
]


def test_the_installed_fast_path_is_compiled_from_the_current_source():
    """Otherwise every "compiled" case above tests the interpreted code, or a stale build of it."""
    assert compiled_or_not.COMPILED, "consumer/wire/fastpath.py is not compiled: run make install"
    built = Path(compiled_or_not.__file__).stat().st_mtime
    for source in ("fastpath.py", "fastpath.pxd"):
        changed = (Path(compiled_or_not.__file__).parent / source).stat().st_mtime
        assert built >= changed, f"{source} changed after the build: .venv/bin/pip install -q --no-deps -e ."


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


def _strip_logical(node):
    if isinstance(node, list):
        return [_strip_logical(n) for n in node]
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    return node


# The v1 schemas as plain JSON (for avro_corners), and without logical types (raw ints, no datetime
# range), for the canonical-encoding test.
SCHEMAS = {name: json.loads(CODEC.catalog.by_name(name).text) for name in (POST, AI_INTERACTION)}
RAW_SCHEMAS = {name: fastavro.parse_schema(_strip_logical(s), named_schemas={}) for name, s in SCHEMAS.items()}


def is_canonical(name: str, data: bytes) -> bool:
    """True when the body is exactly what an Avro encoder writes for the values it holds (for bytes
    the reference path accepts)."""
    record = fastavro.schemaless_reader(io.BytesIO(data[5:]), RAW_SCHEMAS[name], None)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, RAW_SCHEMAS[name], record)
    return out.getvalue() == data[5:]


def check_against_reference(module, name: str, data: bytes, label: str = "") -> bool:
    """The contract of the module docstring for one byte string; True when the fast path returned."""
    decode = module.decode_post if name == POST else module.decode_ai_interaction
    try:
        fields = decode(data)
    except module.FastPathMiss:
        fields = None
    try:
        CODEC.decode(data, name)
        accepted = True
    except CodecError as exc:
        accepted = False
        assert fields is None, f"{label}: the fast path accepted bytes the reference path rejects: {exc}"
    if fields is None:
        assert not (accepted and is_canonical(name, data)), f"{label}: the fast path missed on a canonical value"
        return False
    assert is_canonical(name, data), f"{label}: the fast path accepted a non-canonical encoding"
    reference = _reference_raw(name, data)
    assert (fields[1], fields[2], fields[3], fields[4], fields[8]) == expected_fields(name, reference), label
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
@settings(max_examples=800)
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
@settings(max_examples=800)
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


# -- every corner of every field, and the hot loop's output on both paths ------------------------------

CORNER_RECORDS = [
    (POST, samples.POST),  # a birth date, a language, a 3-byte UTF-8 character
    (
        POST,
        {
            **samples.POST,
            "author_birth_date": None,
            "language": None,
            "surface": "",
            "text": "x" * 100,
            "created_at": -1,
        },
    ),
    (AI_INTERACTION, {**samples.AI_INTERACTION, "user_birth_date": 5000, "language": "fr"}),
    (AI_INTERACTION, {**samples.AI_INTERACTION, "prompt": "\U0001f642" * 40, "created_at": avro_corners.MAX_MS}),
]
TOPIC = {POST: "posts", AI_INTERACTION: "ai"}


def _corner_cases() -> list[tuple[str, str, bytes]]:
    cases = []
    for number, (name, record) in enumerate(CORNER_RECORDS, start=1):
        for label, data in avro_corners.corners(CODEC.header(name), SCHEMAS[name], record):
            cases.append((name, f"{name.rsplit('.', 1)[1]} (sample {number}): {label}", data))
    return cases


CORNERS = _corner_cases()


def test_the_corners_cover_every_field_of_both_schemas():
    for name, schema in SCHEMAS.items():
        short = name.rsplit(".", 1)[1]
        labelled = {label.split(": ", 1)[1].split()[0] for n, label, _ in CORNERS if n == name and "cut" not in label}
        assert {f["name"] for f in schema["fields"]} <= labelled, short
    assert len(CORNERS) > 2000


@pytest.mark.parametrize("module", MODULES)
def test_every_corner_of_every_field_agrees_with_the_reference(module):
    accepted = [label for name, label, data in CORNERS if check_against_reference(module, name, data, label)]
    # The records as written, and the in-range replacements (another symbol, another date...).
    assert sum(label.endswith(": as written") for label in accepted) == len(CORNER_RECORDS)
    assert len(accepted) > 50


@pytest.mark.parametrize("module", MODULES)
def test_an_over_long_birth_date_misses_as_the_reference_rejects_it(module):
    """The reported case: 7000 as a 7-byte int (a 2-byte varint padded with zero groups)."""
    parts = avro_corners.tokens(SCHEMAS[POST], {**samples.POST, "author_birth_date": 7000})
    (i,) = [i for i, t in enumerate(parts) if t.role == "int"]
    for size in range(3, 12):
        data = avro_corners.assemble(CODEC.header(POST), parts, {i: avro_corners.varint(14_000, size - 2)})
        with pytest.raises(module.FastPathMiss):
            module.decode_post(data)
        if size > 5:
            with pytest.raises(CodecError, match="longer than its type allows"):
                CODEC.decode(data, POST)


@pytest.mark.parametrize("module", MODULES)
def test_non_minimal_varints_miss_though_the_reference_accepts_them(module):
    """Valid Avro, but not canonical: copied into the output, they would make its bytes depend on
    which path decoded the input. The reference path accepts them and re-encodes canonically."""
    parts = avro_corners.tokens(SCHEMAS[POST], samples.POST)
    for i, token in enumerate(parts):
        if token.role == "utf8":
            continue
        data = avro_corners.assemble(
            CODEC.header(POST), parts, {i: avro_corners.varint(avro_corners.zigzag(token.value), 1)}
        )
        CODEC.decode(data, POST)
        with pytest.raises(module.FastPathMiss):
            module.decode_post(data)


_PROCESSORS: dict[tuple[str, bool], tuple] = {}


def emitted(module, name: str, value: bytes, fast: bool) -> tuple[dict, list]:
    """What the real BatchProcessor (built on `module`) tallies and produces for one input value;
    with `fast` False every value takes the reference path."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch, "fastpath", module)
        patch.setattr(reading, "fastpath", module)  # the routes' decoders
        patch.setattr(batch, "FastPathMiss", module.FastPathMiss)  # the interpreted copy has its own class
        key = (module.__name__, fast)
        if key not in _PROCESSORS:
            _PROCESSORS[key] = processor()
        proc, producer = _PROCESSORS[key]
        producer.sent.clear()
        if not fast:
            for route in proc.routes.values():
                route.fast_headers.clear()
        tally = run(proc, [Msg(TOPIC[name], value, key=b"u", partition=3, offset=12_345_678_901)])
    return tally, list(producer.sent)


def check_both_paths(module, name: str, value: bytes, label: str = "") -> bool:
    """True when the value was emitted to the training topic."""
    fast = emitted(module, name, value, fast=True)
    assert fast == emitted(module, name, value, fast=False), label
    return any(topic == "training" for topic, *_ in fast[1])


@pytest.mark.parametrize("module", MODULES)
def test_the_hot_loop_emits_the_same_bytes_on_both_paths_for_every_corner(module):
    emitted_count = sum(check_both_paths(module, name, data, label) for name, label, data in CORNERS)
    assert emitted_count > 50


@pytest.mark.parametrize("module", MODULES)
@settings(max_examples=400)
@given(record=posts | interactions, data=st.data())
def test_padded_varints_anywhere_agree_and_emit_the_same_bytes(module, record, data):
    name = POST if "post_id" in record else AI_INTERACTION
    parts = avro_corners.tokens(SCHEMAS[name], record)
    padding = st.sampled_from([0, 0, 0, 0, 1, 2, 4, 9])
    replaced = {
        i: avro_corners.varint(avro_corners.zigzag(t.value), data.draw(padding))
        for i, t in enumerate(parts)
        if t.role != "utf8"
    }
    value = avro_corners.assemble(CODEC.header(name), parts, replaced)
    check_against_reference(module, name, value)
    check_both_paths(module, name, value)


@pytest.mark.parametrize("module", MODULES)
@settings(max_examples=300)
@given(record=posts | interactions, adult=st.booleans())
def test_valid_records_emit_the_same_bytes_on_both_paths(module, record, adult):
    name = POST if "post_id" in record else AI_INTERACTION
    prefix = "author" if name == POST else "user"
    record = {**record, f"{prefix}_country": "SE"}
    if adult:  # else mostly an unknown or under age: decided, but not emitted
        record.update({f"{prefix}_birth_date": 0, "created_at": 1_767_225_600_000})
    check_both_paths(module, name, CODEC.encode(name, record))
