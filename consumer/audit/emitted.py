"""The training topic as the verifier compares it: each record's provenance (input topic, partition,
offset) and a digest of its Avro body, so that a record is matched with what the re-decision of its input
builds, field for field (record id, provenance, text, pseudonym, policy version), not only by id. And
the eligible records whose output the broker refused for good: the dead-letter topic's `output_rejected`
letters, by the provenance their tf.source.* headers name (consumer/datapath/refused.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from consumer.audit.findings import Findings
from consumer.wire.codec import TRAINING_RECORD, Codec

Provenance = tuple[str, int, int]


def digest(value: bytes) -> bytes:
    """Of the body: the 5-byte frame names a schema id, which a registry assigns."""
    return hashlib.blake2b(value[5:], digest_size=16).digest()


@dataclass
class Emitted:
    """A training record: where it is, and whether a receipt's re-decision accounted for it."""

    partition: int
    offset: int
    digest: bytes
    matched: bool = False


def provenance_of(
    codec: Codec, msg: Any, training_topic: str, inputs: set[str], findings: Findings
) -> Provenance | None:
    """A training record's provenance; None (and `injected`) for one that is not a TrainingRecord of an
    input topic."""
    try:
        record = codec.decode_own(msg.value(), TRAINING_RECORD)
        where = (str(record["source_topic"]), int(record["source_partition"]), int(record["source_offset"]))
    except Exception:
        findings.add(
            "injected",
            training_topic,
            msg.partition(),
            msg.offset(),
            "not a TrainingRecord the service "
            "writes: no receipt can account for it; remove it, and find out who can write to this topic",
        )
        return None
    if where[0] not in inputs:
        findings.add(
            "injected",
            training_topic,
            msg.partition(),
            msg.offset(),
            f"its provenance names {where[0]}, not an input topic: no receipt can account for it",
        )
        return None
    return where


def refused_output(msg: Any) -> Provenance | None:
    """The input record a dead letter names when it is an eligible record's output that the broker
    refused for good (`tf.cause: output_rejected`); None for any other letter."""
    headers = dict(msg.headers() or [])
    if headers.get("tf.cause") != b"output_rejected":
        return None
    try:
        return (
            headers["tf.source.topic"].decode(),
            int(headers["tf.source.partition"]),
            int(headers["tf.source.offset"]),
        )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None  # not a letter the service writes: it accounts for nothing


@dataclass
class EmittedIndex:
    training_topic: str
    by_provenance: dict[Provenance, list[Emitted]] = field(default_factory=dict)
    records: int = 0
    refused: set[Provenance] = field(default_factory=set)  # output_rejected letters on the DLQ

    def add(self, where: Provenance, msg: Any) -> None:
        self.by_provenance.setdefault(where, []).append(Emitted(msg.partition(), msg.offset(), digest(msg.value())))

    def match(self, where: Provenance, wanted: bytes) -> bool:
        """Mark the records at `where` whose body is `wanted`; whether there was one."""
        found = False
        for e in self.by_provenance.get(where, ()):
            if e.digest == wanted:
                e.matched = found = True
        return found
