"""The record of recipients kept over time (docs/audit.md): after each scan, the running service appends
a signed RecipientsSnapshot (avro/audit_recipients.v1.avsc) to the audit topic, so that the
effectiveness report can plot each recipient's acknowledgement lag over a window, long after the
gauges have moved on. Only with an audit key; consumer group names only, no personal data.

Its own small idempotent producer, not the data path's: that one may be transactional (exactly once),
and a snapshot belongs to no batch. A snapshot that cannot be written is logged and counted like a
failed scan; the data path never waits for it.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

from consumer.audit.acknowledgements import Recipient
from consumer.audit.receipts import RECIPIENTS, sign
from consumer.wire.codec import Codec

KEY_PREFIX = b"recipients/"


class RecipientsRecorder:
    def __init__(self, producer: Any, codec: Codec, audit_key: bytes, topic: str, replica: str | None = None):
        self.producer = producer
        self.codec = codec
        self.key = audit_key
        self.topic = topic
        self.replica = replica or socket.gethostname()
        self.failed = 0

    def record(self, recipients: list[Recipient], now_ms: int) -> None:
        snapshot = {
            "taken_at": dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC),
            "replica": self.replica,
            "recipients": [
                {
                    "group": r.group,
                    "reads_revocations": r.reads_revocations,
                    "unacknowledged": r.unacknowledged,
                    "oldest_unacknowledged_seconds": r.oldest_seconds(now_ms) if r.unacknowledged else None,
                }
                for r in recipients
            ],
            "hmac_sha256": "",
        }
        value = self.codec.encode(RECIPIENTS, sign(self.codec, self.key, snapshot, RECIPIENTS))
        self.producer.produce(self.topic, value, KEY_PREFIX + self.replica.encode(), on_delivery=self._delivered)
        self.producer.poll(0)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def close(self, timeout: float = 5.0) -> None:
        self.producer.flush(timeout)
