"""Writing decision receipts (docs/audit.md): one per input partition of a batch, signed, chained to the
previous receipt of that partition, on the audit topic.

The chain's heads (the hash of each owned partition's last receipt) are kept in memory and, when a
partition is assigned, read from the audit topic: its last receipt there, whoever wrote it. Receipts
of an input partition always go to one audit partition (crc32 of the key modulo the partition count,
chosen here rather than by librdkafka so that the head can be looked up in that partition alone);
the audit topic must not gain partitions while receipts are written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import socket
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from consumer import __version__
from consumer.audit.audited_batch import AuditedBatch
from consumer.audit.receipts import RECEIPT, chain_hash, parse_key, receipt_key
from consumer.feeds.ends import FeedError
from consumer.operations.settings import Settings
from consumer.wire.codec import Codec

# How far back a head is looked for, at most, when a partition is assigned: a window that doubles.
FIRST_WINDOW, HEAD_LOOKUP_SECONDS = 256, 30.0


class AuditTopicError(FeedError):
    """The audit topic cannot be used: its receipts cannot be read back (the service stops, exit 1)."""


def audit_partition(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


class ChainHeads:
    """The hash of the last receipt of each owned input partition, read back from the audit topic."""

    def __init__(self, reader: Any, topic: str, partitions: int, log: Any, clock: Callable[[], float] = time.monotonic):
        self.reader = reader  # a consumer (read committed) that is only ever assigned, never committed
        self.topic = topic
        self.partitions = partitions
        self.log = log
        self.clock = clock
        self.heads: dict[tuple[str, int], str | None] = {}

    def assigned(self, partitions: list[tuple[str, int]]) -> None:
        wanted = [tp for tp in partitions if tp not in self.heads]
        by_audit: dict[int, set[bytes]] = {}
        for topic, partition in wanted:
            key = receipt_key(topic, partition)
            by_audit.setdefault(audit_partition(key, self.partitions), set()).add(key)
        for audit, keys in by_audit.items():
            found = self._last_of(audit, keys)
            for key in keys:
                named = parse_key(key)
                assert named is not None
                self.heads[named] = found.get(key)

    def forget(self, partitions: set[tuple[str, int]]) -> None:
        for tp in partitions:
            self.heads.pop(tp, None)

    def _last_of(self, audit: int, keys: set[bytes]) -> dict[bytes, str]:
        """The hash of the last value of each key in one audit partition, reading back from its end in
        windows that double until every key is found or the partition's start is reached."""
        low, high = self.reader.get_watermark_offsets(TopicPartition(self.topic, audit), timeout=10.0)
        found: dict[bytes, str] = {}
        end, window, deadline = high, FIRST_WINDOW, self.clock() + HEAD_LOOKUP_SECONDS
        while end > low and len(found) < len(keys):
            start = max(low, end - window)
            found = {**self._read(audit, start, end, keys - found.keys()), **found}
            end, window = start, window * 2
            if self.clock() > deadline:
                self.log.warning("audit_chain_head_not_found", audit_partition=audit, missing=len(keys) - len(found))
                break
        return found

    def _read(self, audit: int, start: int, end: int, keys: set[bytes]) -> dict[bytes, str]:
        """The last value's hash of each of `keys` among offsets [start, end) of one audit partition. The
        reader reports the end of a partition (enable.partition.eof): read committed, that is where the
        committed records end, so markers and aborted receipts are never waited for."""
        self.reader.assign([TopicPartition(self.topic, audit, start)])
        last: dict[bytes, str] = {}
        deadline, done = self.clock() + HEAD_LOOKUP_SECONDS, False
        try:
            while not done and self.clock() < deadline:
                for msg in self.reader.consume(num_messages=1000, timeout=0.5):
                    err = msg.error()
                    if err is not None and err.code() != KafkaError._PARTITION_EOF and not err.retriable():
                        # Without Read on the audit topic every chain would restart unseen: stop instead.
                        raise AuditTopicError(
                            f"TF_AUDIT_TOPIC={self.topic}: cannot read the last receipts back ({err.name()}); "
                            "the service needs Read on the audit topic (consumer/operations/acls.py)"
                        )
                    if err is not None:
                        done = done or err.code() == KafkaError._PARTITION_EOF
                    elif msg.offset() >= end:
                        done = True
                    elif msg.key() in keys and msg.value() is not None:
                        last[msg.key()] = chain_hash(msg.value())
        finally:
            self.reader.unassign()
        return last


class ReceiptWriter:
    """Produces a batch's receipts with the service's producer (inside its transaction, exactly once)."""

    def __init__(
        self,
        producer: Any,
        codec: Codec,
        settings: Settings,
        heads: ChainHeads,
        replica: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.audit_key is not None
        self.producer = producer
        self.codec = codec
        self.key = settings.audit_key
        self.topic = settings.audit_topic
        self.training_topic = settings.training_topic
        self.heads = heads
        self.clock = clock
        s = settings
        shadow = s.shadow_policy
        self.static = {
            "guarantee": s.processing_guarantee,
            "policy_version": s.policy.version,
            "policy_sha256": s.policy_sha256,
            "shadow_policy_version": shadow.version if shadow is not None else None,
            "shadow_policy_sha256": s.shadow_policy_sha256 if shadow is not None else None,
            "clock_skew_ms": int(s.clock_skew_seconds * 1000),
            "service_version": __version__,
            "replica": replica or socket.gethostname(),
        }
        self.written = 0  # receipts produced, for the metrics

    def write(self, batch: AuditedBatch) -> int:
        """The batch's receipts, one per input partition it still owns, in partition order: how many."""
        batch.receipts_due = False
        if not batch.ranges:
            return 0
        written_at = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        spans = {**{(self.training_topic, p): span for p, span in batch.training_spans.items()}, **batch.spans}
        outputs = [
            {"topic": t, "partition": p, "first_offset": first, "last_offset": last, "records": n}
            for (t, p), (first, last, n) in sorted(spans.items())
        ]
        feeds = [
            {"feed": feed, "topic": t, "partition": p, "next_offset": offset} for feed, t, p, offset in batch.feeds
        ]
        batch_id, before = uuid.uuid4().hex, self.written
        decided_at = dt.datetime.fromtimestamp(batch.decided_at_ms / 1000, dt.UTC)
        for (topic, partition), found in sorted(batch.ranges.items()):
            if (topic, partition) not in self.heads.heads:
                continue  # no longer owned: its next owner decides it again
            record = {
                "input_topic": topic,
                "input_partition": partition,
                "first_offset": found.first,
                "last_offset": found.last,
                "records": found.records,
                "decisions": _counts(found.decisions),
                "dead_letters": _counts(found.dead_letters),
                "batch_id": batch_id,
                "outputs": outputs,
                "feeds": feeds,
                "decided_at": decided_at,
                "written_at": written_at,
                "previous_sha256": self.heads.heads[topic, partition],
                **self.static,
                "hmac_sha256": "",
            }
            value = signed_value(self.codec, self.key, record)
            key = receipt_key(topic, partition)
            batch.outstanding += 1
            self.producer.produce(
                self.topic,
                value,
                key,
                partition=audit_partition(key, self.heads.partitions),
                on_delivery=batch.receipt_report,
            )
            self.heads.heads[topic, partition] = chain_hash(value)
            self.written += 1
        return self.written - before


def signed_value(codec: Codec, key: bytes, record: dict[str, Any]) -> bytes:
    """The framed value of `record` signed: what `codec.encode(RECEIPT, sign(...))` gives, encoded once.
    `hmac_sha256` is the schema's last field, so the body with it empty is the body before it plus the
    empty string's one byte (0), and the signed value is that prefix plus the digest as an Avro string."""
    body = codec.encode_body(RECEIPT, record)  # with hmac_sha256 ""
    assert body[-1:] == b"\x00", "hmac_sha256 must be the receipt schema's last field, empty here"
    digest = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
    return codec.header(RECEIPT) + body[:-1] + b"\x80\x01" + digest  # 64: zig-zag varint 128


def _counts(counts: dict[Any, int]) -> list[dict[str, Any]]:
    named: dict[str, int] = {}
    for what, n in counts.items():  # Reason members and their names (str() of a Reason is its name)
        named[str(what)] = named.get(str(what), 0) + n
    return [{"name": name, "records": n} for name, n in sorted(named.items()) if n]
