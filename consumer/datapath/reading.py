"""Reading an input record: the routes of the two input topics, the reference path, and the batch's
schema look-ups.

The hot loop (consumer/datapath/batch.py) reads a value whose 5-byte frame names exactly the v1 schema
with the fast path (consumer/wire/fastpath.py: byte spans, no Python object per field). Anything else
takes the reference path here: the codec decodes it against its writer schema, resolved to v1, and
`record_fields` checks what the rules need. For an eligible record, `as_v1` writes the record as v1 and
reads its spans with the fast path, so that one builder makes every TrainingRecord.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumer.wire import fastpath
from consumer.wire.codec import AI_INTERACTION, POST, Codec, CodecError
from rules import Source
from rules.decision import record_fields


class InvalidFields(CodecError):
    """The record decoded, but a field the rules or the output need is missing or of another type."""

    detail = "invalid_fields"


@dataclass
class Route:
    """How to read the records of one input topic."""

    topic: str
    source: Source
    schema_name: str
    fast_decode: Callable[[bytes], tuple]
    fast_headers: set[bytes]  # 5-byte frames whose schema is exactly v1: the fast path applies


_NO_FRAME = b"\x00\x00\x00\x00\x00"

# What the reference path read, in the fast path's layout (fastpath._decode) without the spans, so that
# the hot loop decides both alike: (None, user id as bytes, birth day, raw country, public, None, None,
# None, created ms, None, the decoded record).
Read = tuple[Any, ...]


def routes_for(codec: Codec, posts_topic: str, ai_interactions_topic: str) -> dict[str, Route]:
    return {
        posts_topic: Route(posts_topic, Source.POST, POST, fastpath.decode_post, codec.reader_frames(POST)),
        ai_interactions_topic: Route(
            ai_interactions_topic,
            Source.AI_INTERACTION,
            AI_INTERACTION,
            fastpath.decode_ai_interaction,
            codec.reader_frames(AI_INTERACTION),
        ),
    }


class ReferenceReader:
    """The reference path: every failure is a CodecError naming the cause (or, for a record no check
    foresaw, any exception: the caller dead-letters that record alone)."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def read(self, value: bytes | None, route: Route) -> Read:
        # Never a registry request here: the batch's ids were looked up before it (`resolve_schemas`).
        schema_id, record = self.codec.decode(value, route.schema_name, lookup=False)
        if value is not None and self.codec.is_reader_schema(schema_id, route.schema_name):
            route.fast_headers.add(value[:5])  # e.g. a registry id for the v1 schema: fast from now on
        fields = record_fields(route.source, record)
        if fields is None:
            raise InvalidFields("a required field is missing or of another type")
        public, country, birth_day, created_ms, user_id = fields
        return (None, user_id.encode("utf-8"), birth_day, country, public, None, None, None, created_ms, None, record)

    def as_v1(self, route: Route, record: dict[str, Any]) -> bytes:
        """The record written as v1, behind 5 placeholder framing bytes: the fast path reads its spans
        (which never include the frame) to build its TrainingRecord."""
        return _NO_FRAME + self.codec.encode_body(route.schema_name, record)

    def resolve_schemas(self, messages: list[Any], routes: dict[str, Route]) -> None:
        """With a registry: look up the batch's schema ids not yet known before any record is decided,
        so that a registry outage holds the whole batch (RegistryUnavailable) instead of dead-lettering
        records it merely could not look up. Bounded: the most frequent ids first, at most
        `lookups_per_batch` of them within `lookup_budget_seconds` (registry.RegistrySettings); records of
        ids left over are dead letters (`schema_lookup_limit`), so a flood of random ids cannot stall the
        loop. Ids that turn out to be exactly v1 take the fast path from now on."""
        codec = self.codec
        if codec.registry is None:
            return
        values = []
        for msg in messages:
            route = routes.get(msg.topic())
            value = msg.value()
            if route is not None and value is not None and value[:5] not in route.fast_headers:
                values.append(value)
        if values:
            codec.resolve_values(values)
            for route in routes.values():
                route.fast_headers |= codec.reader_frames(route.schema_name)
