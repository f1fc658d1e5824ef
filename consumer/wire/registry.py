"""The schema registry, as the service uses it: writer schemas looked up by id, output schemas
registered (or, with a read-only credential, looked up by subject), and every failure classified.

With a registry, schema ids come from the registry alone (avro/catalog.json is the no-registry mode):
a real registry hands out ids from 1 up, which would collide with the catalog's. Input schemas are
only ever looked up, never registered. Output schemas are registered from their `.avsc` text under
the subject the deployment's naming strategy gives (`<topic>-value` by default), or looked up there.

What a failure means decides what happens to the record:
- the registry says the id does not exist (404): the record is a dead letter (`unknown_schema`),
  and the id is asked again after a while (consumer/wire/codec.py keeps the answer for a bounded time);
- the registry refuses to give one id (401, 403) while it still answers this credential otherwise
  (`serves_this_credential`): that id's records are dead letters (`schema_refused`), the rest flow;
- the registry refuses everything (expired or revoked credentials): `RegistryRefusesAll`, which is a
  `RegistryUnavailable`: input pauses and alerts, as in an outage;
- anything else (no connection, a timeout, a 5xx): `RegistryUnavailable`, a transient fault. Input
  pauses and /readyz fails, as for the opt-out feed, and nothing is dead-lettered for it.

A writer schema may refer to named types registered under other subjects (schema references); they are
fetched too, dependencies first, up to MAX_REFERENCES of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

SUBJECT_STRATEGIES = ("topic", "record", "topic_record")


class RegistryUnavailable(Exception):
    """The registry could not answer (transient). The message names the failure, never a value."""


class RegistryRefused(Exception):
    """The registry refused this service's credential, or what it asked (a configuration problem)."""


class RegistryRefusesAll(RegistryUnavailable):
    """The registry refuses every request of this credential (e.g. it expired): input pauses."""


class SchemaIdRefused(Exception):
    """The registry refuses to give this one schema id, and answers this credential otherwise."""


class UnusableSchema(Exception):
    """The registry holds the id, but not as an Avro schema this service can read (another schema type,
    a reference that cannot be had, too many references)."""


MAX_REFERENCES = 32  # referenced schemas fetched for one writer schema at most (a bound on work per id)


@dataclass(frozen=True)
class WriterSchema:
    """A writer schema's text and the texts of the schemas it refers to, dependencies first."""

    text: str
    references: tuple[str, ...] = ()


class RegistryMismatch(Exception):
    """The schema the registry holds under a subject is not the one this service writes."""


@dataclass(frozen=True)
class RegistrySettings:
    url: str
    user: str = ""
    password: str = ""
    ca_location: str = ""
    certificate_location: str = ""
    key_location: str = ""
    auto_register: bool = True
    subject_strategy: str = "topic"
    output_version: str = "latest"  # with auto_register off: "latest" or a version number
    timeout_seconds: float = 10.0
    # An id answered "no such id", "refused" or "unusable" is asked again after this long (a schema
    # registered later is found); at most this many such answers are kept.
    retry_seconds: float = 60.0
    negative_cache_size: int = 10_000
    # Unknown ids one batch may look up, most frequent first, and the time it may spend starting
    # look-ups: a flood of random ids costs bounded time and memory (the rest are dead letters).
    lookups_per_batch: int = 20
    lookup_budget_seconds: float = 1.0

    def client_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "url": self.url,
            "timeout": self.timeout_seconds,
            # Failures are the service's to retry (it pauses input and tries again), not the client's:
            # its own retries would hold the loop for seconds.
            "max.retries": 0,
        }
        if self.user:
            config["basic.auth.user.info"] = f"{self.user}:{self.password}"
        if self.ca_location:
            config["ssl.ca.location"] = self.ca_location
        if self.certificate_location:
            config["ssl.certificate.location"] = self.certificate_location
        if self.key_location:
            config["ssl.key.location"] = self.key_location
        return config


def subject_name(strategy: str, topic: str, record_name: str) -> str:
    """The subject of a topic's values under Confluent's naming strategies."""
    if strategy == "topic":
        return f"{topic}-value"
    if strategy == "record":
        return record_name
    if strategy == "topic_record":
        return f"{topic}-{record_name}"
    raise ValueError(f"unknown subject naming strategy {strategy!r}")


def normalised(avsc_text: str) -> str:
    """The .avsc text as registered: the same JSON, compact, its order kept (the registry may
    normalise further)."""
    return json.dumps(json.loads(avsc_text), separators=(",", ":"), ensure_ascii=False)


def _status(exc: SchemaRegistryError) -> int:
    return int(getattr(exc, "http_status_code", 0) or 0)


class Registry:
    """A thin, classifying layer over confluent-kafka's SchemaRegistryClient."""

    def __init__(self, settings: RegistrySettings, client: Any = None) -> None:
        self.settings = settings
        self.client = client if client is not None else SchemaRegistryClient(settings.client_config())
        # An output subject that this credential could read at start-up: asked when one id is refused.
        self.known_subject: str | None = None

    def writer_schema(self, schema_id: int) -> WriterSchema | None:
        """The writer schema of `schema_id` with its references, or None when the registry says there is
        no such id. Raises SchemaIdRefused, RegistryRefusesAll, RegistryUnavailable or UnusableSchema."""
        try:
            schema = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            status = _status(exc)
            if status == 404:
                return None
            if status in (401, 403):
                self._refused(f"looking up schema id {schema_id}: HTTP {status}")
                raise SchemaIdRefused(f"the registry refused to give schema id {schema_id}: HTTP {status}") from exc
            raise RegistryUnavailable(f"HTTP {status} looking up schema id {schema_id}") from exc
        except Exception as exc:  # no connection, TLS failure, timeout: the client raises its transport's errors
            raise RegistryUnavailable(f"{type(exc).__name__} looking up schema id {schema_id}") from exc
        if (schema.schema_type or "AVRO").upper() != "AVRO":
            raise UnusableSchema(f"schema id {schema_id} is a {schema.schema_type} schema, not Avro")
        return WriterSchema(str(schema.schema_str), self._references(schema_id, schema.references or []))

    def _references(self, schema_id: int, references: list[Any]) -> tuple[str, ...]:
        """The texts of the referenced schemas, each after the ones it refers to (depth first)."""
        texts: list[str] = []
        seen: set[tuple[str, int]] = set()

        def visit(refs: list[Any]) -> None:
            for ref in refs:
                key = (str(ref.subject), int(ref.version or -1))
                if key in seen:
                    continue
                seen.add(key)
                if len(seen) > MAX_REFERENCES:
                    raise UnusableSchema(f"schema id {schema_id} refers to more than {MAX_REFERENCES} schemas")
                found = self._referenced(schema_id, ref)
                visit(list(found.schema.references or []))
                texts.append(str(found.schema.schema_str))

        visit(references)
        return tuple(texts)

    def _referenced(self, schema_id: int, ref: Any) -> Any:
        try:
            return self.client.get_version(ref.subject, ref.version if ref.version is not None else "latest")
        except SchemaRegistryError as exc:
            status = _status(exc)
            if status == 404:
                raise UnusableSchema(f"schema id {schema_id} refers to a subject version the registry lacks") from exc
            if status in (401, 403):
                self._refused(f"reading a schema that schema id {schema_id} refers to: HTTP {status}")
                raise SchemaIdRefused(f"the registry refused a reference of schema id {schema_id}") from exc
            raise RegistryUnavailable(f"HTTP {status} looking up a reference of schema id {schema_id}") from exc
        except Exception as exc:
            raise RegistryUnavailable(f"{type(exc).__name__} looking up a reference of schema id {schema_id}") from exc

    def _refused(self, what: str) -> None:
        """A refusal of one request: RegistryRefusesAll unless the registry still serves this credential."""
        if not self.serves_this_credential():
            raise RegistryRefusesAll(f"the registry refuses this credential: {what} and a known subject")

    def serves_this_credential(self) -> bool:
        """Does the registry still answer this credential? Asked of the output subject this service
        registered or looked up at start-up (its latest version, never from the client's cache), or,
        before that, of the subject list. A transport failure raises RegistryUnavailable."""
        try:
            if self.known_subject is not None:
                self.client.get_version(self.known_subject, "latest")
            else:
                self.client.get_subjects()
            return True
        except SchemaRegistryError as exc:
            if _status(exc) in (401, 403):
                return False
            if _status(exc) == 404:
                return True  # it answered: the subject is gone, the credential is not refused
            raise RegistryUnavailable(f"HTTP {_status(exc)} asking the registry for a known subject") from exc
        except Exception as exc:
            raise RegistryUnavailable(f"{type(exc).__name__} asking the registry for a known subject") from exc

    def output_id(self, subject: str, avsc_text: str, matches: Any) -> int:
        """The id to frame an output schema with: registered under `subject`, or (auto-registration
        off) the subject's latest or pinned version. Either way, the schema the registry then holds
        under that id must be the service's own (`matches(schema_text)`): readers decode with it."""
        s = self.settings
        try:
            if s.auto_register:
                # Normalised here, not by the registry: Apicurio 2.4's normalize=true sorts a record's
                # fields by name, which changes the binary encoding the schema describes.
                schema_id = int(self.client.register_schema(subject, Schema(normalised(avsc_text), "AVRO")))
                stored = str(self.client.get_schema(schema_id).schema_str)
                version = "just registered"
            else:
                if s.output_version == "latest":
                    found = self.client.get_latest_version(subject)
                else:
                    found = self.client.get_version(subject, int(s.output_version))
                if found.schema_id is None:
                    raise RegistryUnavailable(f"the registry gave no schema id for subject {subject}")
                schema_id, stored, version = (
                    int(found.schema_id),
                    str(found.schema.schema_str),
                    f"version {found.version}",
                )
        except SchemaRegistryError as exc:
            status = _status(exc)
            if status in (401, 403):
                what = "register a schema under" if s.auto_register else "read"
                hint = (
                    " (a read-only credential: set TF_SCHEMA_REGISTRY_AUTO_REGISTER=false and register the schema "
                    "once with a credential that may)"
                    if s.auto_register
                    else ""
                )
                raise RegistryRefused(
                    f"the registry does not let this credential {what} subject {subject}: HTTP {status}{hint}"
                ) from exc
            if status == 404:
                raise RegistryRefused(
                    f"subject {subject} has no version {s.output_version}: register the service's schema there "
                    "first, or set TF_SCHEMA_REGISTRY_AUTO_REGISTER=true"
                ) from exc
            if status == 409:
                raise RegistryRefused(
                    f"the registry refused the schema for subject {subject} as incompatible (HTTP 409): the subject "
                    "holds an incompatible earlier version; see docs/output-contract.md, Output schema versions"
                ) from exc
            raise RegistryUnavailable(f"HTTP {status} for subject {subject}") from exc
        except RegistryUnavailable:
            raise
        except Exception as exc:
            raise RegistryUnavailable(f"{type(exc).__name__} for subject {subject}") from exc
        if not matches(stored):
            raise RegistryMismatch(
                f"subject {subject} ({version}) is not the schema this service writes: register it (avro/ holds "
                "the .avsc) or pin TF_SCHEMA_REGISTRY_OUTPUT_VERSION to the version that is"
            )
        self.known_subject = subject
        return schema_id
