"""`training-filter produce` and `training-filter tail`: JSON Lines in and out of topics."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from consumer.commands.change_lines import CHANGE_SOURCES, require_ids
from consumer.commands.jsonl import JsonRecordError, dumps, parse_line, to_avro
from consumer.datapath.produce import produce_when_room
from consumer.wire.codec import AI_INTERACTION, CONSENT, OPTOUT, POST, Codec, CodecError
from consumer.wire.registry import Registry, RegistryMismatch, RegistryRefused, RegistrySettings, RegistryUnavailable

SOURCES = {
    "post": (POST, "author_id"),
    "ai_interaction": (AI_INTERACTION, "user_id"),
    "optout": (OPTOUT, "user_id"),
    "consent": (CONSENT, "user_id"),
    **CHANGE_SOURCES,  # keyed by their subject: the record id, the user id (docs/retractions.md)
}


def produce_lines(
    bootstrap: str,
    topic: str,
    source: str,
    lines: IO[bytes],
    errors: IO[str],
    extra_config: dict[str, str] | None = None,
    registry: RegistrySettings | None = None,
) -> int:
    """Publish each JSON line as a framed Avro value keyed by its user id (a content change: by its
    record id). Bad lines are reported on stderr by line number (never their content) and skipped;
    exit status 1 if there were any.

    With a registry, the schema's id is the registry's: registered under `<topic>-value` (as a
    producer's serializer would), or with auto-registration off, the subject's latest version."""
    name, key_field = SOURCES[source]
    codec = Codec(registry=Registry(registry) if registry is not None else None)
    if registry is not None:
        try:
            codec.prepare_write(name, f"{topic}-value")
        except (RegistryUnavailable, RegistryRefused, RegistryMismatch) as exc:
            print(f"schema registry: {exc}", file=errors)
            return 2
    schema = codec.catalog.by_name(name).parsed
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20, **(extra_config or {})}
    )
    failures: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(err.name())

    bad = sent = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = to_avro(parse_line(line), schema)
            require_ids(source, record)
        except JsonRecordError as exc:
            bad += 1
            print(f"line {number}: {exc}", file=errors)
            continue
        value = codec.encode(name, record)
        key = record[key_field].encode("utf-8")
        produce_when_room(producer, lambda: producer.poll(0.1), topic, value, key, delivered)
        sent += 1
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        print(
            f"{remaining + len(failures)} records were not delivered: {sorted(set(failures)) or 'timeout'}", file=errors
        )
        return 1
    print(f"produced {sent} records to {topic}" + (f"; {bad} lines rejected" if bad else ""), file=errors)
    return 1 if bad else 0


def tail(
    bootstrap: str,
    topic: str,
    max_records: int | None,
    timeout: float,
    out: IO[bytes],
    extra_config: dict[str, str] | None = None,
    registry: RegistrySettings | None = None,
) -> int:
    """Print the topic's records from the beginning as JSON Lines, decoded when they are framed Avro
    (schema ids from the registry when one is set, else from avro/catalog.json).

    Stops after `max_records`, or when no record arrived for `timeout` seconds. Reads committed data
    only (isolation.level=read_committed), so exactly-once output shows as readers see it.
    """
    codec = Codec(registry=Registry(registry) if registry is not None else None)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "training-filter-tail",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **(extra_config or {}),
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
    except KafkaException as exc:
        print(f"cannot read {topic}: {exc}", file=sys.stderr)
        return 1
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        print(f"topic {topic} does not exist or is not readable", file=sys.stderr)
        return 1
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in info.partitions])
    count = 0
    last = time.monotonic()
    try:
        while max_records is None or count < max_records:
            msg = consumer.poll(0.2)
            if msg is None:
                if time.monotonic() - last >= timeout:
                    break
                continue
            if msg.error() is not None:
                continue
            last = time.monotonic()
            out.write(dumps(describe(codec, msg)) + b"\n")
            count += 1
    finally:
        out.flush()
        consumer.close()
    return 0


def describe(codec: Codec, msg: Any) -> dict[str, Any]:
    key = msg.key()
    entry: dict[str, Any] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": msg.timestamp()[1],
        "key": _text_or_bytes(key),
        "headers": [[k, _text_or_bytes(v)] for k, v in (msg.headers() or [])] or None,
    }
    value = msg.value()
    try:
        schema_id, record = codec.decode(value)
        entry["schema_id"] = schema_id
        entry["value"] = record
    except CodecError as exc:
        entry["undecodable"] = exc.detail
        entry["value_base64"] = value
    except (RegistryUnavailable, RegistryRefused) as exc:
        entry["undecodable"] = "schema_registry_unavailable"
        entry["error"] = str(exc)
        entry["value_base64"] = value
    return entry


def _text_or_bytes(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data  # serialised as base64 by jsonl.dumps
