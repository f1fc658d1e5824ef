"""Avro values in the Confluent wire framing: magic byte 0, 4-byte big-endian schema id, Avro body.

Schemas are parsed once. Without a schema registry, ids come from `avro/catalog.json`; with one
(`SCHEMA_REGISTRY_URL`), unknown ids are fetched through confluent-kafka's client and cached.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from consumer.strict_avro import Check, StrictAvroError, validator

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
HEADER_SIZE = HEADER.size  # 5

POST = "platform.content.v1.Post"
AI_INTERACTION = "platform.content.v1.AiInteraction"
OPTOUT = "platform.privacy.v1.OptOut"
TRAINING_RECORD = "platform.training.v1.TrainingRecord"
REVOCATION = "platform.training.v1.Revocation"


class CodecError(Exception):
    """A value could not be decoded. `detail` is a short, fixed label safe for logs and DLQ headers."""

    detail = "undecodable"


class FramingError(CodecError):
    """Not Confluent framing: too short, or the first byte is not the magic byte 0."""

    detail = "bad_framing"


class UnknownSchemaError(CodecError):
    """The schema id is neither in the catalog nor (when configured) in the schema registry."""

    detail = "unknown_schema"


class BodyError(CodecError):
    """The Avro body does not decode against its writer schema (truncated, trailing bytes, bad data),
    or the writer schema cannot be resolved to the expected reader schema."""

    detail = "bad_body"


class OversizedError(CodecError):
    detail = "oversized"


@dataclass(frozen=True, slots=True)
class SchemaEntry:
    id: int
    name: str
    parsed: Any
    canonical: str
    fingerprint: str
    strict_form: str  # the canonical form plus logical types: what must match for the fast path
    check: Check  # the strict encoding check run before fastavro (see consumer/strict_avro.py)


class Registry(Protocol):
    def get_schema(self, schema_id: int) -> Any: ...
    def register_schema(self, subject_name: str, schema: Any) -> int: ...


def schema_dir() -> Path:
    return Path(str(resources.files("training_filter_avro")))


def parse_schema_text(text: str) -> Any:
    # A fresh named-type table per schema: two versions of the same record name must not collide.
    return fastavro.parse_schema(json.loads(text), named_schemas={})


def _entry(schema_id: int, parsed: Any) -> SchemaEntry:
    canonical = to_parsing_canonical_form(parsed)
    return SchemaEntry(
        id=schema_id,
        name=parsed["name"] if isinstance(parsed, dict) else str(parsed),
        parsed=parsed,
        canonical=canonical,
        fingerprint=fingerprint(canonical, "CRC-64-AVRO"),
        strict_form=strict_form(parsed),
        check=validator(parsed),
    )


_STRICT_KEYS = ("type", "name", "fields", "symbols", "items", "values", "size", "logicalType", "precision", "scale")


def strict_form(schema: Any) -> str:
    """Parsing Canonical Form drops logical types, so a writer whose created_at is
    `local-timestamp-millis` has the same canonical form as v1's `timestamp-millis`, yet its values
    mean another instant. This form keeps them: equal strict forms decode to equal values."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: node[k] for k in _STRICT_KEYS if k in node}
        for key in ("type", "items", "values"):
            if key in out:
                out[key] = walk(out[key])
        if "fields" in out:
            out["fields"] = [{"name": f["name"], "type": walk(f["type"])} for f in out["fields"]]
        return out

    return json.dumps(walk(schema), sort_keys=True, separators=(",", ":"))


class SchemaCatalog:
    """The local schemas: the reader schemas the service is built for, and the id catalog."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or schema_dir()
        catalog = json.loads((self.directory / "catalog.json").read_text(encoding="utf-8"))
        self._by_id: dict[int, SchemaEntry] = {}
        self._by_name: dict[str, SchemaEntry] = {}
        for item in catalog["schemas"]:
            parsed = parse_schema_text((self.directory / item["file"]).read_text(encoding="utf-8"))
            entry = _entry(int(item["id"]), parsed)
            if entry.name != item["name"]:
                raise ValueError(f"catalog.json: id {item['id']} names {item['name']}, file holds {entry.name}")
            if entry.id in self._by_id:
                raise ValueError(f"catalog.json: schema id {entry.id} is listed twice")
            self._by_id[entry.id] = entry
            # The newest id of a name is the one the service writes and reads into.
            self._by_name[entry.name] = entry

    def by_name(self, name: str) -> SchemaEntry:
        return self._by_name[name]

    def entries(self) -> list[SchemaEntry]:
        return list(self._by_id.values())


def split_frame(data: bytes | None) -> tuple[int, int]:
    """(schema id, offset of the Avro body), or FramingError."""
    if data is None or len(data) < HEADER_SIZE:
        raise FramingError("value shorter than the 5-byte Confluent header")
    if data[0] != MAGIC_BYTE:
        raise FramingError("first byte is not the Confluent magic byte 0")
    return int.from_bytes(data[1:5], "big"), HEADER_SIZE


class Codec:
    """Encodes and decodes framed values. Thread-compatible: use one per thread."""

    def __init__(
        self,
        catalog: SchemaCatalog | None = None,
        registry: Registry | None = None,
        max_value_bytes: int | None = None,
    ) -> None:
        self.catalog = catalog or SchemaCatalog()
        self.registry = registry
        self.max_value_bytes = max_value_bytes
        self._writers: dict[int, SchemaEntry] = {e.id: e for e in self.catalog.entries()}
        self._write_ids: dict[str, int] = {}
        self._headers: dict[str, bytes] = {}

    # -- schemas ---------------------------------------------------------------------------------

    def writer(self, schema_id: int) -> SchemaEntry:
        entry = self._writers.get(schema_id)
        if entry is not None:
            return entry
        if self.registry is None:
            raise UnknownSchemaError(f"schema id {schema_id} is not in avro/catalog.json and no registry is set")
        try:
            found = self.registry.get_schema(schema_id)
            parsed = parse_schema_text(found.schema_str)
        except Exception as exc:  # the registry client raises several types; all mean "unknown here"
            raise UnknownSchemaError(f"schema id {schema_id} could not be fetched from the registry: {exc}") from exc
        entry = _entry(schema_id, parsed)
        self._writers[schema_id] = entry
        return entry

    def is_reader_schema(self, schema_id: int, name: str) -> bool:
        """True when the writer schema of `schema_id` is exactly (canonically) the reader schema `name`."""
        entry = self._writers.get(schema_id)
        return entry is not None and entry.strict_form == self.catalog.by_name(name).strict_form

    def write_id(self, name: str, subject: str | None = None) -> int:
        """The id to frame `name` with: registered under `subject` when a registry is set."""
        cached = self._write_ids.get(name)
        if cached is not None:
            return cached
        entry = self.catalog.by_name(name)
        schema_id = entry.id
        if self.registry is not None:
            from confluent_kafka.schema_registry import Schema

            schema_id = self.registry.register_schema(
                subject or f"{name}-value", Schema(json.dumps(entry.parsed), "AVRO")
            )
            self._writers[schema_id] = _entry(schema_id, entry.parsed)
        self._write_ids[name] = schema_id
        self._headers[name] = HEADER.pack(MAGIC_BYTE, schema_id)
        return schema_id

    def header(self, name: str) -> bytes:
        """The 5 framing bytes for values of schema `name`."""
        header = self._headers.get(name)
        if header is None:
            self.write_id(name)
            header = self._headers[name]
        return header

    # -- values ----------------------------------------------------------------------------------

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self.header(name))
        fastavro.schemaless_writer(out, self.catalog.by_name(name).parsed, record)
        return out.getvalue()

    def decode(self, data: bytes | None, reader_name: str | None = None) -> tuple[int, dict[str, Any]]:
        """(writer schema id, record) of a framed value, resolved to `reader_name` when given.

        Values above `max_value_bytes` (the service's input limit; none by default) are OversizedError.
        Every failure is a `CodecError` subclass; nothing else escapes.
        """
        schema_id, start = split_frame(data)
        assert data is not None
        if self.max_value_bytes is not None and len(data) > self.max_value_bytes:
            raise OversizedError(f"value of {len(data)} bytes exceeds the {self.max_value_bytes}-byte limit")
        writer = self.writer(schema_id)
        reader = None
        if reader_name is not None:
            wanted = self.catalog.by_name(reader_name)
            if wanted.canonical != writer.canonical:
                reader = wanted.parsed
        try:
            end = writer.check(data, start)
        except StrictAvroError as exc:
            raise BodyError(f"Avro body breaks an encoding rule of schema id {schema_id}: {exc}") from exc
        if end != len(data):
            raise BodyError(f"{len(data) - end} trailing bytes after the Avro body")
        stream = io.BytesIO(data)
        stream.seek(start)
        try:
            record = fastavro.schemaless_reader(stream, writer.parsed, reader)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, SchemaResolutionError...
            raise BodyError(f"Avro body does not decode as schema id {schema_id}: {type(exc).__name__}") from exc
        if stream.tell() != len(data):
            raise BodyError(f"{len(data) - stream.tell()} trailing bytes after the Avro body")
        if not isinstance(record, dict):
            raise BodyError("Avro body is not a record")
        return schema_id, record
