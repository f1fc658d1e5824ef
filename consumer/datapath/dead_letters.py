"""Dead letters: the input's original key and value, with headers that say why and where from.

Every dead letter is sized before it is produced. One the DLQ cannot take (a value near the input
limit plus a large key or headers, or an oversized value) is written without its key, value and
original headers: only the `tf.*` headers, `tf.truncated` and the original sizes, which point at
the input record (kept by the input topic's retention). So no dead letter is ever refused for its
size, and none stops the service.

Headers a sender set in the `tf.` namespace are not copied: they would spoof the service's own
for readers that take the first or the last value of a header.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException

from consumer.datapath.offsets import PER_RECORD_ERRORS, PendingBatch, Provenance
from consumer.datapath.produce import produce_when_room

Headers = list[tuple[str, bytes]]


class UndeliverableError(Exception):
    """Not even a headers-only dead letter can be produced: the DLQ itself is unusable."""


def dead_letter_headers(
    reason: str, cause: str, provenance: Provenance, timestamp: int, original: Headers | None
) -> Headers:
    topic, partition, offset = provenance
    headers: Headers = [
        ("tf.reason", reason.encode()),
        ("tf.cause", cause.encode()),
        ("tf.source.topic", topic.encode()),
        ("tf.source.partition", str(partition).encode()),
        ("tf.source.offset", str(offset).encode()),
        ("tf.source.timestamp", str(timestamp).encode()),
    ]
    if original:
        headers.extend(h for h in original if not h[0].lower().startswith("tf."))
    return headers


def _size(value: bytes | None, key: bytes | None, headers: Headers) -> int:
    return len(value or b"") + len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers)


def truncated(headers: Headers, value: bytes | None, key: bytes | None) -> Headers:
    """The tf.* headers of a letter that does not fit, with what was left out and its size."""
    own = [h for h in headers if h[0].startswith("tf.")]
    return [
        *own,
        ("tf.truncated", b"key,value,headers"),
        ("tf.original.value.bytes", str(len(value or b"")).encode()),
        ("tf.original.key.bytes", str(len(key or b"")).encode()),
    ]


class DeadLetterWriter:
    def __init__(self, producer: Any, topic: str, max_record_bytes: int, on_backpressure: Callable[[], None]) -> None:
        self.producer = producer
        self.topic = topic
        self.max_record_bytes = max_record_bytes
        self.on_backpressure = on_backpressure
        self.truncated = 0  # letters written headers-only, for the metrics
        self.causes: dict[tuple[Any, str], int] = {}  # (source, cause) -> letters, counted by the service

    def malformed(self, msg: Any, source: Any, cause: str, batch: PendingBatch, truncate: bool = False) -> None:
        """An input record that cannot be decided: its original key, value and headers, and why."""
        key = (source, cause)
        self.causes[key] = self.causes.get(key, 0) + 1
        provenance = (msg.topic(), msg.partition(), msg.offset())
        batch.note_dead_letter(provenance, cause, "malformed")
        headers = dead_letter_headers("malformed", cause, provenance, msg.timestamp()[1], msg.headers())
        self.write(batch, msg.value(), msg.key(), headers, provenance, force_truncate=truncate)

    def write(
        self,
        batch: PendingBatch,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        provenance: Provenance,
        force_truncate: bool = False,
    ) -> None:
        cut = force_truncate or _size(value, key, headers) > self.max_record_bytes
        if cut:
            headers, value, key = truncated(headers, value, key), None, None
            self.truncated += 1
        batch.outstanding += 1
        report = batch.dead_letter_report(provenance, headers, cut)
        while True:
            try:
                produce_when_room(self.producer, self.on_backpressure, self.topic, value, key, report, headers)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() not in PER_RECORD_ERRORS:
                    batch.outstanding -= 1
                    raise  # not this letter's problem (e.g. an abortable transaction): the caller decides
                if cut:
                    batch.outstanding -= 1
                    raise UndeliverableError(f"{err.name()} producing a headers-only dead letter") from exc
            # librdkafka refused it at once (its own message.max.bytes): the headers-only letter.
            headers, value, key, cut = truncated(headers, value, key), None, None, True
            self.truncated += 1
            report = batch.dead_letter_report(provenance, headers, True)
