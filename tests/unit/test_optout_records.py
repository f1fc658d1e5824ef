"""Opt-out records of every shape are handled, never raised: one bad record on a compacted topic
that is kept forever would otherwise stop every start-up for good.

The writer schemas here are real ones a registry could hand out (a plain `long` for opted_out_at, a
user id that is optional); the codec decodes them with fastavro as it would in the service.
"""

from __future__ import annotations

import json

import pytest

from consumer.feeds.records import parse_optout
from consumer.wire.codec import OPTOUT, Codec, SchemaCatalog, _entry, parse_schema_text
from tests.fakes import Msg

CODEC = Codec()


def record(value: bytes | None, key: bytes | None = b"u-key") -> Msg:
    """An opt-out record as the feed reads it (its timestamp: when it was written)."""
    return Msg("optouts", value, key, timestamp=1_790_000_000_123)


def codec_with_writer(schema_id: int, change) -> Codec:
    """A codec that knows one more writer schema: the v1 OptOut, changed by `change`."""
    schema = json.loads((SchemaCatalog().directory / "optout.v1.avsc").read_text())
    change(schema)
    codec = Codec()
    codec._writers[schema_id] = _entry(schema_id, parse_schema_text(json.dumps(schema)))
    return codec


def framed(schema_id: int, codec: Codec, record: dict, schema_change) -> bytes:
    import io

    import fastavro

    schema = json.loads((SchemaCatalog().directory / "optout.v1.avsc").read_text())
    schema_change(schema)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parse_schema_text(json.dumps(schema)), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + out.getvalue()


def plain_long(schema: dict) -> None:
    for field in schema["fields"]:
        if field["name"] == "opted_out_at":
            field["type"] = "long"


def optional_user(schema: dict) -> None:
    for field in schema["fields"]:
        if field["name"] == "user_id":
            field["type"] = ["null", "string"]
            field["default"] = None


def test_a_plain_long_opted_out_at_is_an_opt_out():
    codec = codec_with_writer(50, plain_long)
    value = framed(50, codec, {"user_id": "u-1", "opted_out_at": 1_790_000_000_000, "source": "form"}, plain_long)
    users, millis, result = parse_optout(codec, record(value, key=b"u-1"))
    assert (users, millis, result) == ([b"u-1"], 1_790_000_000_000, "applied")


def test_a_record_of_an_unexpected_shape_falls_back_to_its_key():
    codec = codec_with_writer(51, optional_user)
    value = framed(51, codec, {"user_id": None, "opted_out_at": 1_790_000_000_000, "source": "form"}, optional_user)
    # The reader (v1) cannot take a null user id: it does not resolve, the key still opts out.
    users, millis, result = parse_optout(codec, record(value, key=b"u-2"))
    assert users == [b"u-2"] and millis == 1_790_000_000_123
    assert result in ("undecodable_used_key", "unexpected_used_key")


def test_a_user_id_that_differs_from_the_key_opts_out_both():
    value = CODEC.encode(OPTOUT, {"user_id": "u-3", "opted_out_at": 1_790_000_000_000, "source": "form"})
    users, _, result = parse_optout(CODEC, record(value, key=b"someone-else"))
    assert users == [b"u-3", b"someone-else"] and result == "applied"


@pytest.mark.parametrize(
    "value,key,expected",
    [
        (None, b"u-4", ([], "tombstone_ignored")),
        (b"not avro", b"u-5", ([b"u-5"], "undecodable_used_key")),
        (b"not avro", None, ([], "undecodable_dropped")),
        (b"\x00\x00\x00\x03\xe7abc", b"u-6", ([b"u-6"], "undecodable_used_key")),
    ],
)
def test_what_cannot_be_read_fails_closed(value, key, expected):
    users, _, result = parse_optout(CODEC, record(value, key))
    assert (users, result) == expected


def test_a_codec_that_raises_something_unexpected_never_escapes():
    class Odd(Codec):
        def decode(self, data, reader_name=None):  # type: ignore[no-untyped-def]
            return 3, {"user_id": 42, "opted_out_at": object()}

    users, _, result = parse_optout(Odd(), record(b"\x00\x00\x00\x00\x03x", key=b"u-7"))
    assert (users, result) == ([b"u-7"], "unexpected_used_key")
