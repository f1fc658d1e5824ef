"""How large a record the service may produce, and so how large an input value it may accept.

Three limits must agree, or one large record stops the service: librdkafka refuses a record above
its `message.max.bytes` (default 1,000,000) when produce() is called, and the broker refuses a batch
above the topic's `max.message.bytes` (default 1,048,588) in the delivery report, failing every
record of that batch. A default Java producer writes values up to about 1,048,576 bytes
(`max.request.size`), so that is the default input limit (TF_MAX_VALUE_BYTES); the service's
producer allows that plus `HEADROOM` (the output fields a value does not carry: pseudonym, policy
version, provenance; the DLQ's headers), and the output topics need `HEADROOM` more again for batch
framing and lz4's worst case (`REQUIRED_TOPIC_BYTES`). The shipped topics (consumer/devtools/topics.py, the
Strimzi KafkaTopics) set exactly that.

At start-up the service asks the broker for the output topics' real `max.message.bytes`. If a topic
allows less, the input limit is lowered to what its output can carry, and larger inputs become
dead letters (`oversized`) instead of records the broker would reject. A dead letter too large for
the DLQ is written without its key and value (headers only, `tf.truncated`), pointing at the input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, ResourceType

HEADROOM = 64 * 1024
DEFAULT_MAX_VALUE_BYTES = 1_048_576  # what a default Java producer can write (max.request.size)
BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # Kafka's message.max.bytes when a topic sets none
_FRAMING = 1024  # record batch and record headers
_OUTPUT_FIELDS = 4096  # what a TrainingRecord adds to the input value's bytes, with room to spare


def producer_max_bytes(max_value_bytes: int) -> int:
    """The producer's message.max.bytes for an input limit."""
    return max_value_bytes + HEADROOM


def required_topic_bytes(max_value_bytes: int) -> int:
    """The max.message.bytes the training and DLQ topics need for an input limit."""
    return producer_max_bytes(max_value_bytes) + HEADROOM


REQUIRED_TOPIC_BYTES = required_topic_bytes(DEFAULT_MAX_VALUE_BYTES)  # 1,179,648: what the shipped topics set


def record_limit(producer_max: int, topic_max: int) -> int:
    """The largest key + value + headers that fits both the producer and the topic, once batched and
    compressed (lz4 can grow incompressible data by up to 1/255)."""
    return max(0, min(producer_max, (topic_max - _FRAMING) * 250 // 251))


@dataclass(frozen=True)
class OutputLimits:
    input_max: int  # values above this are dead letters (oversized)
    training_record_max: int  # largest TrainingRecord (value + key) the training topic takes
    dlq_record_max: int  # largest dead letter (value + key + headers); above it, headers only
    topic_max: dict[str, int | None]  # what the broker said of each output topic (None: not known)

    @classmethod
    def compute(
        cls,
        max_value_bytes: int,
        producer_max: int,
        training_topic: str,
        dlq_topic: str,
        described: dict[str, int | None],
    ) -> OutputLimits:
        training_t = described.get(training_topic) or BROKER_DEFAULT_MAX_MESSAGE_BYTES
        dlq_t = described.get(dlq_topic) or BROKER_DEFAULT_MAX_MESSAGE_BYTES
        training = record_limit(producer_max, training_t)
        return cls(
            input_max=max(0, min(max_value_bytes, training - _OUTPUT_FIELDS)),
            training_record_max=training,
            dlq_record_max=record_limit(producer_max, dlq_t),
            topic_max=dict(described),
        )


def describe_topic_limits(admin: Any, topics: Iterable[str], timeout: float = 10.0) -> dict[str, int | None]:
    """Each topic's effective max.message.bytes (asked of `admin`, an AdminClient), or None where the
    broker does not say (no such topic, or no DESCRIBE_CONFIGS permission): the caller then assumes
    the broker default."""
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
    out: dict[str, int | None] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entries = future.result(timeout)
            entry = entries.get("max.message.bytes")
            out[resource.name] = int(entry.value) if entry is not None and entry.value is not None else None
        except (KafkaException, ValueError):
            out[resource.name] = None
    return out
