"""What the effectiveness report reads (consumer/commands/report.py): the audit topic's records, the
opt-out, change and consent topics' records, and the retractions, from the start of the window to
the topics' ends as they were when the report began, committed records only.

Each audit record is decoded by its key's kind (receipt/, verification/, recipients/) and, with an
audit key, its signature checked (consumer/audit/receipts.py): a record not signed correctly is
counted and left out, never drawn. The privacy topics' keys are the user ids and record ids the
retractions' keys are made of (docs/retractions.md): a user id is pseudonymised with the service's
key here and goes no further: no user id or pseudonym is in the report.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.audit import receipts as contract
from consumer.audit.report_series import (
    Discrepancy,
    Inputs,
    Origin,
    Provenance,
    Receipt,
    Recipient,
    Retraction,
    Snapshot,
    Verification,
)
from consumer.commands.transactional_pass import PassError
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations.acls import audit_group
from consumer.operations.clients import Clients
from consumer.operations.settings import Settings
from consumer.wire.codec import CONSENT, REVOCATION, Codec, CodecError
from consumer.wire.registry import RegistryRefused, RegistryUnavailable

READ_TIMEOUT_SECONDS = 120.0
Read = tuple[bytes | None, bytes | None, int]  # key, value, broker timestamp (ms)


def millis(value: Any) -> int:
    """A decoded timestamp-millis (fastavro gives an aware datetime) in epoch milliseconds."""
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value)


class TopicReader:
    """Reads a topic from a time to its end (as it was when asked), with one consumer for every topic."""

    def __init__(self, clients: Clients, settings: Settings, timeout: float = READ_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout
        self.consumer = clients.consumer(
            settings.consumer_config(
                {"log_level": 3},
                **{
                    # Assigned, never subscribed, never committed: the group only names the reader, under
                    # the prefix the auditors' KafkaUser may read (acls.audit_acls).
                    "group.id": f"{audit_group(settings.group_id, 'report')}-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                },
            )
        )

    def close(self) -> None:
        self.consumer.close()

    def read(self, topic: str, since_ms: int) -> list[Read]:
        try:
            ends = self._ends(topic)
            starts = self.consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in ends], timeout=self.timeout
            )
        except KafkaException as exc:
            raise PassError(f"cannot read {topic}: {exc.args[0].name()}") from exc
        wanted = {tp.partition: ends[tp.partition] for tp in starts if 0 <= tp.offset < ends[tp.partition]}
        if not wanted:
            return []
        self.consumer.assign(
            [TopicPartition(topic, tp.partition, tp.offset) for tp in starts if tp.partition in wanted]
        )
        try:
            return self._drain(topic, wanted)
        finally:
            self.consumer.unassign()

    def _ends(self, topic: str) -> dict[int, int]:
        metadata = self.consumer.list_topics(topic, timeout=self.timeout)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise PassError(f"cannot read {topic}: {info.error.name() if info is not None else 'no such topic'}")
        return {
            p: self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout, cached=False)[1]
            for p in info.partitions
        }

    def _drain(self, topic: str, wanted: dict[int, int]) -> list[Read]:
        out: list[Read] = []
        left = dict(wanted)
        deadline = time.monotonic() + self.timeout
        while left:
            if time.monotonic() > deadline:
                raise PassError(f"could not read {topic} to its end within {self.timeout:.0f} s (an open transaction?)")
            for msg in self.consumer.consume(1000, 0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        left.pop(msg.partition(), None)
                        continue
                    raise PassError(f"cannot read {topic}: {error.name()}")
                if msg.partition() in left:
                    out.append((msg.key(), msg.value(), msg.timestamp()[1]))
                    if msg.offset() + 1 >= left[msg.partition()]:
                        del left[msg.partition()]
        return out


@dataclass
class AuditRecords:
    receipts: list[Receipt]
    verifications: list[Verification]
    snapshots: list[Snapshot]
    bad_signatures: int = 0
    undecodable: int = 0


_KINDS = {b"receipt/": contract.RECEIPT, b"verification/": contract.VERIFICATION, b"recipients/": contract.RECIPIENTS}


def audit_records(codec: Codec, audit_key: bytes | None, records: list[Read]) -> AuditRecords:
    out = AuditRecords([], [], [])
    for key, value, _ in records:
        schema = next((s for prefix, s in _KINDS.items() if key and key.startswith(prefix)), None)
        if schema is None or value is None:
            continue  # another kind of record, or a tombstone: not the report's
        try:
            record = codec.decode_own(value, schema)
        except CodecError:
            out.undecodable += 1
            continue
        if audit_key is not None and not contract.signed_by(codec, audit_key, record, schema):
            out.bad_signatures += 1
            continue
        if schema == contract.RECEIPT:
            out.receipts.append(receipt(record))
        elif schema == contract.VERIFICATION:
            out.verifications.append(verification(record))
        else:
            out.snapshots.append(snapshot(record))
    return out


def receipt(record: dict[str, Any]) -> Receipt:
    return Receipt(
        decided_at=millis(record["decided_at"]),
        input_topic=record["input_topic"],
        input_partition=record["input_partition"],
        first_offset=record["first_offset"],
        last_offset=record["last_offset"],
        decisions=tuple((c["name"], c["records"]) for c in record["decisions"]),
        dead_letters=tuple((c["name"], c["records"]) for c in record["dead_letters"]),
    )


def verification(record: dict[str, Any]) -> Verification:
    optional = {k: None if record[k] is None else millis(record[k]) for k in ("window_from", "window_until")}
    return Verification(
        started_at=millis(record["started_at"]),
        finished_at=millis(record["finished_at"]),
        receipts=record["receipts"],
        records=record["records"],
        passed=record["passed"],
        discrepancies=tuple(
            Discrepancy(d["kind"], d["topic"], d["partition"], d["offset"], d["detail"])
            for d in record["discrepancies"]
        ),
        discrepancy_count=record["discrepancy_count"],
        **optional,
    )


def snapshot(record: dict[str, Any]) -> Snapshot:
    return Snapshot(
        taken_at=millis(record["taken_at"]),
        replica=record["replica"],
        recipients=tuple(
            Recipient(r["group"], r["reads_revocations"], r["unacknowledged"], r["oldest_unacknowledged_seconds"])
            for r in record["recipients"]
        ),
    )


def retractions(codec: Codec, records: list[Read]) -> tuple[list[Retraction], int]:
    """The revocations topic's retractions (version 1 read as opted_out), and how many did not decode."""
    out, bad = [], 0
    for key, value, at in records:
        if value is None or key is None:
            continue
        try:
            _, record = codec.decode(value, REVOCATION)
        except (CodecError, RegistryUnavailable, RegistryRefused):
            bad += 1
            continue
        out.append(Retraction(at, key.decode("utf-8", "replace"), str(record.get("reason") or "opted_out")))
    return out, bad


def origins(records: list[Read], keys: Callable[[bytes], tuple[str, ...]]) -> list[Origin]:
    """Every keyed record (not a tombstone) as an origin at its broker time."""
    return [Origin(at, keys(key)) for key, value, at in records if key and value is not None]


def withdrawals(codec: Codec, records: list[Read], keys: Callable[[bytes], tuple[str, ...]]) -> list[Origin]:
    """Consent withdrawals: `granted: false`, or a tombstone (docs/retractions.md)."""
    out = []
    for key, value, at in records:
        if not key:
            continue
        if value is not None:
            try:
                if codec.decode(value, CONSENT)[1].get("granted", True):
                    continue
            except (CodecError, RegistryUnavailable, RegistryRefused):
                continue
        out.append(Origin(at, keys(key)))
    return out


def read_inputs(
    reader: TopicReader,
    codec: Codec,
    settings: Settings,
    audit: tuple[str, bytes | None],
    since_ms: int,
) -> tuple[Inputs, Provenance]:
    topic, audit_key = audit
    found = audit_records(codec, audit_key, reader.read(topic, since_ms))
    pseudonyms = Pseudonymiser(settings.hmac_key)

    def pseudonym(user_id: bytes) -> str:
        return pseudonyms.pseudonym(user_id).decode("ascii")

    optouts = origins(reader.read(settings.optouts_topic, since_ms), lambda k: (pseudonym(k),))
    content = origins(reader.read(settings.content_changes_topic, since_ms), lambda k: ("content/" + k.decode(),))
    accounts = origins(
        reader.read(settings.account_changes_topic, since_ms),
        lambda k: (f"deleted/{pseudonym(k)}", f"account/{pseudonym(k)}"),
    )
    consents: list[Origin] = []
    if settings.consent_topic:
        consents = withdrawals(
            codec, reader.read(settings.consent_topic, since_ms), lambda k: (f"consent/{pseudonym(k)}",)
        )
    revoked, bad = retractions(codec, reader.read(settings.revocations_topic, since_ms))
    read = {"opt-outs": len(optouts), "content changes": len(content), "account changes": len(accounts)}
    if settings.consent_topic:
        read["consent withdrawals"] = len(consents)
    inputs = Inputs(
        receipts=tuple(found.receipts),
        verifications=tuple(found.verifications),
        snapshots=tuple(found.snapshots),
        optouts=tuple(optouts),
        changes=tuple(content + accounts + consents),
        retractions=tuple(revoked),
    )
    provenance = Provenance(
        audit_topic=topic,
        signatures_checked=audit_key is not None,
        bad_signatures=found.bad_signatures,
        undecodable=found.undecodable + bad,
        origins={**read, "retractions": len(revoked)},
    )
    return inputs, provenance
