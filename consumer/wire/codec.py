"""Avro values in the Confluent wire framing: magic byte 0, 4-byte big-endian schema id, Avro body.

Schemas are parsed once. Without a schema registry, ids come from `avro/catalog.json`. With one
(`TF_SCHEMA_REGISTRY_URL`), ids come from the registry alone: writer schemas are looked up by id and
cached, the output schemas' ids are registered or looked up by subject (`prepare_write`), and the
catalog's ids mean nothing (a registry's own ids start at 1 too). The reader schemas are always the
local `.avsc` files, by name.

Whatever a registry holds under an id, decoding a value either gives a record of the reader schema's
types or raises a `CodecError` naming why (consumer/wire/writer_schemas.py): the caller dead-letters
that one record. Only an outage of the registry itself (`RegistryUnavailable`) is not a record's fault.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import validate

from consumer.wire import writer_schemas
from consumer.wire.registry import Registry, SchemaIdRefused, UnusableSchema, WriterSchema
from consumer.wire.strict_avro import Check, StrictAvroError, validator
from consumer.wire.writer_schemas import NegativeAnswers

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
HEADER_SIZE = HEADER.size  # 5

POST = "platform.content.v1.Post"
AI_INTERACTION = "platform.content.v1.AiInteraction"
OPTOUT = "platform.privacy.v1.OptOut"
CONSENT = "platform.privacy.v1.Consent"
CONTENT_CHANGE = "platform.content.v1.ContentChange"
ACCOUNT_CHANGE = "platform.accounts.v1.AccountChange"
TRAINING_RECORD = "platform.training.v2.TrainingRecord"  # what the service writes
TRAINING_RECORD_V1 = (
    "platform.training.v1.TrainingRecord"  # retired (catalog id 4): text was a union of a string and a record
)
REVOCATION = "platform.training.v1.Revocation"  # version 2 (catalog id 10) written; version 1 (id 5) read too
OUTPUTS = (TRAINING_RECORD, REVOCATION)


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


class RefusedSchemaError(CodecError):
    """The registry refuses to give this schema id (and answers this service otherwise)."""

    detail = "schema_refused"


class UnusableSchemaError(CodecError):
    """The registry holds the id, but not as an Avro schema this service can read."""

    detail = "unusable_schema"


class SchemaMismatchError(CodecError):
    """The writer schema cannot be read as the reader schema: not a record of its name, a field of
    another type, or values of other types than the reader's (e.g. a local timestamp for an instant)."""

    detail = "schema_mismatch"


class LookupDeferredError(CodecError):
    """The id was not looked up: the batch had more unknown ids than one batch may look up."""

    detail = "schema_lookup_limit"


@dataclass(frozen=True, slots=True)
class SchemaEntry:
    id: int
    name: str
    parsed: Any
    canonical: str
    fingerprint: str
    strict_form: str  # the canonical form plus logical types: what must match for the fast path
    check: Check  # the strict encoding check run before fastavro (see consumer/wire/strict_avro.py)
    text: str = ""  # the .avsc text, for the local schemas: what is registered
    decoding: Any = None  # what fastavro decodes with (writer_schemas.decoding_schema); None: `parsed`


def schema_dir() -> Path:
    return Path(str(resources.files("training_filter_avro")))


def parse_schema_text(text: str) -> Any:
    # A fresh named-type table per schema: two versions of the same record name must not collide.
    return fastavro.parse_schema(json.loads(text), named_schemas={})


def _entry(schema_id: int, parsed: Any, text: str = "", decoding: Any = None) -> SchemaEntry:
    canonical = to_parsing_canonical_form(parsed)
    return SchemaEntry(
        id=schema_id,
        # A registry may hold nameless schemas (a primitive, an array, a map, a union).
        name=str(parsed.get("name", parsed.get("type"))) if isinstance(parsed, dict) else str(parsed)[:64],
        decoding=decoding,
        parsed=parsed,
        canonical=canonical,
        fingerprint=fingerprint(canonical, "CRC-64-AVRO"),
        strict_form=strict_form(parsed),
        check=validator(parsed),
        text=text,
    )


def registry_entry(schema_id: int, found: WriterSchema) -> SchemaEntry:
    """The entry of a writer schema from a registry; UnusableSchemaError if it is not usable Avro."""
    try:
        schema = json.loads(found.text)
        if found.references:
            schema = writer_schemas.inline_references(schema, [json.loads(t) for t in found.references])
        parsed = fastavro.parse_schema(schema, named_schemas={})
        decoding = fastavro.parse_schema(writer_schemas.decoding_schema(schema), named_schemas={})
        return _entry(schema_id, parsed, decoding=decoding)
    except Exception as exc:  # not JSON, not Avro, a name it cannot resolve, a type strict_avro cannot check
        raise UnusableSchemaError(f"schema id {schema_id} is not a usable Avro schema: {type(exc).__name__}") from exc


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
            text = (self.directory / item["file"]).read_text(encoding="utf-8")
            entry = _entry(int(item["id"]), parse_schema_text(text), text)
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
        # With a registry, no catalog id: its ids would be read as whatever the catalog calls them.
        self._writers: dict[int, SchemaEntry] = {} if registry else {e.id: e for e in self.catalog.entries()}
        # Ids the registry answered without a usable schema, asked again after a while (bounded).
        settings = registry.settings if registry is not None else None
        self._answers = NegativeAnswers(
            settings.retry_seconds if settings is not None else 60.0,
            settings.negative_cache_size if settings is not None else 10_000,
        )
        self._value_checks: dict[tuple[int, str], bool] = {}
        self._write_ids: dict[str, int] = {}
        self._headers: dict[str, bytes] = {}

    # -- schemas ---------------------------------------------------------------------------------

    def writer(self, schema_id: int, lookup: bool = True) -> SchemaEntry:
        """The writer schema of an id, or a CodecError naming why there is none. With a registry,
        `lookup=False` never asks it (LookupDeferredError for an id not known yet), and
        RegistryUnavailable (not a CodecError: nothing is decided) when it cannot be asked."""
        entry = self._writers.get(schema_id)
        if entry is not None:
            return entry
        if self.registry is None:
            raise UnknownSchemaError(f"schema id {schema_id} is not in avro/catalog.json and no registry is set")
        answered = self._answers.get(schema_id)
        if answered is not None:
            raise answered(f"schema id {schema_id}: the registry's recent answer ({answered.detail})")  # type: ignore[attr-defined]
        if not lookup:
            raise LookupDeferredError(f"schema id {schema_id} was not looked up in this batch")
        return self._look_up(schema_id)

    def _look_up(self, schema_id: int) -> SchemaEntry:
        assert self.registry is not None
        try:
            found = self.registry.writer_schema(schema_id)
            if found is None:
                raise UnknownSchemaError(f"the schema registry has no schema id {schema_id}")
            entry = registry_entry(schema_id, found)
        except SchemaIdRefused as exc:
            self._answers.put(schema_id, RefusedSchemaError)
            raise RefusedSchemaError(str(exc)) from exc
        except UnusableSchema as exc:
            self._answers.put(schema_id, UnusableSchemaError)
            raise UnusableSchemaError(str(exc)) from exc
        except CodecError as exc:
            self._answers.put(schema_id, type(exc))
            raise
        self._writers[schema_id] = entry
        return entry

    def known(self, schema_id: int) -> bool:
        """True when decoding a value of this id needs no registry look-up."""
        return schema_id in self._writers or self.registry is None or self._answers.get(schema_id) is not None

    def resolve(
        self, schema_ids: list[int], max_lookups: int | None = None, budget_seconds: float | None = None
    ) -> int:
        """Look the ids up in the order given, at most `max_lookups` of them and none started after
        `budget_seconds`; returns how many were asked. RegistryUnavailable if the registry cannot be asked."""
        deadline = time.monotonic() + budget_seconds if budget_seconds is not None else None
        asked = 0
        for schema_id in schema_ids:
            if self.known(schema_id):
                continue
            if max_lookups is not None and asked >= max_lookups:
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            asked += 1
            with contextlib.suppress(CodecError):
                self._look_up(schema_id)
        return asked

    def resolve_values(self, values: Iterable[bytes | None]) -> None:
        """Look up the unknown schema ids of framed values, the most frequent first, within the registry's
        per-batch bounds (RegistrySettings.lookups_per_batch, lookup_budget_seconds). Values whose id is
        left over then decode (lookup=False) as LookupDeferredError. RegistryUnavailable when it cannot
        be asked."""
        if self.registry is None:
            return
        unknown: Counter[int] = Counter()
        for value in values:
            if value is not None and len(value) >= HEADER_SIZE and value[0] == MAGIC_BYTE:
                schema_id = int.from_bytes(value[1:5], "big")
                if not self.known(schema_id):
                    unknown[schema_id] += 1
        if unknown:
            s = self.registry.settings
            self.resolve([i for i, _ in unknown.most_common()], s.lookups_per_batch, s.lookup_budget_seconds)

    def is_reader_schema(self, schema_id: int, name: str) -> bool:
        """True when the writer schema of `schema_id` is exactly (canonically) the reader schema `name`."""
        entry = self._writers.get(schema_id)
        return entry is not None and entry.strict_form == self.catalog.by_name(name).strict_form

    def reader_frames(self, name: str) -> set[bytes]:
        """The 5-byte frames known to carry exactly the reader schema `name`: the catalog's id without
        a registry; with one, the ids looked up so far that turned out to be it."""
        return {HEADER.pack(MAGIC_BYTE, i) for i in self._writers if self.is_reader_schema(i, name)}

    def prepare_write(self, name: str, subject: str) -> int:
        """The id to frame output schema `name` with. With a registry: registered under `subject` from
        the .avsc text, or looked up there (registry.RegistrySettings.auto_register). Raises the
        registry's exceptions (RegistryUnavailable, RegistryRefused, RegistryMismatch)."""
        entry = self.catalog.by_name(name)
        schema_id = entry.id
        if self.registry is not None:
            schema_id = self.registry.output_id(
                subject, entry.text, lambda text: strict_form(parse_schema_text(text)) == entry.strict_form
            )
            self._writers[schema_id] = _entry(schema_id, entry.parsed, entry.text)
        self._write_ids[name] = schema_id
        self._headers[name] = HEADER.pack(MAGIC_BYTE, schema_id)
        return schema_id

    def write_id(self, name: str) -> int:
        """The id values of schema `name` are framed with (prepared first in registry mode)."""
        cached = self._write_ids.get(name)
        if cached is not None:
            return cached
        if self.registry is not None:
            raise RuntimeError(
                f"no id for {name}: in registry mode call prepare_write first (inputs are never registered)"
            )
        return self.prepare_write(name, "")

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

    def encode_body(self, name: str, record: dict[str, Any]) -> bytes:
        """The Avro body of `record` under the local schema `name`, without framing (no id needed: in
        registry mode the input schemas have none of the service's own)."""
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self.catalog.by_name(name).parsed, record)
        return out.getvalue()

    def decode(
        self, data: bytes | None, reader_name: str | None = None, lookup: bool = True
    ) -> tuple[int, dict[str, Any]]:
        """(writer schema id, record) of a framed value, resolved to `reader_name` when given.

        Values above `max_value_bytes` (the service's input limit; none by default) are OversizedError.
        Every failure is a `CodecError` subclass (with a registry, RegistryUnavailable too); nothing else
        escapes. `lookup=False`: never ask the registry here (see `writer`).
        """
        schema_id, start = split_frame(data)
        assert data is not None
        if self.max_value_bytes is not None and len(data) > self.max_value_bytes:
            raise OversizedError(f"value of {len(data)} bytes exceeds the {self.max_value_bytes}-byte limit")
        writer = self.writer(schema_id, lookup)
        reader = wanted = None
        if reader_name is not None:
            wanted = self.catalog.by_name(reader_name)
            # Strict forms, not canonical ones: those drop logical types, which change decoded values.
            if wanted.strict_form != writer.strict_form:
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
            record = fastavro.schemaless_reader(stream, writer.decoding or writer.parsed, reader)
        except SchemaResolutionError as exc:
            raise SchemaMismatchError(f"schema id {schema_id} cannot be read as {reader_name}") from exc
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError...
            raise BodyError(f"Avro body does not decode as schema id {schema_id}: {type(exc).__name__}") from exc
        if stream.tell() != len(data):
            raise BodyError(f"{len(data) - stream.tell()} trailing bytes after the Avro body")
        if not isinstance(record, dict):
            raise SchemaMismatchError(f"schema id {schema_id} is not a record schema")
        checked = wanted is not None and reader is not None and self._check_values(writer, wanted)
        if checked and not validate(record, wanted.parsed, raise_errors=False):  # type: ignore[union-attr]
            raise SchemaMismatchError(f"schema id {schema_id} gives values of other types than {reader_name}'s")
        return schema_id, record

    def decode_own(self, data: bytes | None, name: str) -> dict[str, Any]:
        """A value this service framed itself with schema `name`: read with the local schema, whatever id
        frames it, without a registry look-up (an outage must not stop the re-writing of a refused output)."""
        if data is None or len(data) < HEADER_SIZE:
            raise FramingError("value shorter than the 5-byte Confluent header")
        stream = io.BytesIO(data)
        stream.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(stream, self.catalog.by_name(name).parsed, None)
        except Exception as exc:
            raise BodyError(f"not a {name} this service wrote: {type(exc).__name__}") from exc
        if not isinstance(record, dict):
            raise BodyError(f"not a {name} this service wrote")
        return record

    def _check_values(self, writer: SchemaEntry, wanted: SchemaEntry) -> bool:
        key = (writer.id, wanted.name)
        needed = self._value_checks.get(key)
        if needed is None:
            needed = writer_schemas.needs_value_check(writer.decoding or writer.parsed, wanted.parsed)
            self._value_checks[key] = needed
        return needed
