"""What the service's own clients are told: the output producer's and the input consumer's librdkafka
configurations, with the reason for each value; the properties the delivery guarantees rest on are set
last, over the operator's TF_*KAFKA_* settings, and an operator setting that tries to change them stops
start-up (consumer/operations/kafka_settings.py lists them). Module functions, so that
consumer/service/preflight.py can make each client kind from the real configuration, without bootstrap
servers, before any connection, and consumer/service/assemble.py makes the clients themselves.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException

from consumer.datapath.output_limits import (
    OutputLimits,
    producer_max_bytes,
)
from consumer.operations import kafka_settings
from consumer.operations.settings import ConfigError, Settings

PRODUCER_QUEUE_KBYTES = 131_072  # 128 MiB of records waiting for the broker: bounded memory (and budgeted)
TRANSACTION_TIMEOUT_MS = 60_000  # exactly-once, unless TF_PRODUCER_KAFKA_TRANSACTION_TIMEOUT_MS says otherwise


def check_overrides(settings: Settings) -> None:
    """The pass-through may not set what the delivery guarantees or a setting own (load_settings
    refuses them too; this guards Settings made another way)."""
    problems = kafka_settings.override_problems(settings.kafka_sources)
    if problems:
        raise ConfigError(problems)


def client(
    make: Callable[[dict[str, Any]], Any], kind: Any, config: dict[str, Any], what: str, settings: Settings
) -> Any:
    """Make a client (`make`: Clients.consumer or .producer); a property librdkafka rejects is a
    configuration error naming its variable (`kind`, Consumer or Producer, is librdkafka's class to
    find it with)."""
    try:
        return make(config)
    except (KafkaException, TypeError, ValueError) as exc:
        reason = kafka_settings.reason(exc)
        role = "consumer" if kind is Consumer else "producer"
        rejection = kafka_settings.rejection(kind, role, what, reason, settings.kafka_sources, OWN_PROPERTIES)
        raise ConfigError(rejection) from exc


# The librdkafka properties that settings of the table set, for messages about a refused configuration.
OWN_PROPERTIES = {
    "group.id": "TF_GROUP_ID",
    "transactional.id": "TF_TRANSACTIONAL_ID",
    "statistics.interval.ms": "TF_STATISTICS_INTERVAL_MS",
    "auto.offset.reset": "TF_REVOCATIONS_START",
    "message.max.bytes": "TF_MAX_VALUE_BYTES",
    "batch.size": "TF_MAX_VALUE_BYTES",
}


def producer_max_for(s: Settings) -> int:
    """The producer's message.max.bytes: the operator's, or what TF_MAX_VALUE_BYTES needs."""
    configured = {**s.kafka_common, **s.kafka_producer}.get("message.max.bytes")
    return int(configured) if configured else producer_max_bytes(s.max_value_bytes)


def producer_config(s: Settings, limits: OutputLimits, max_bytes: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The output producer's librdkafka configuration (`extra`: the logger)."""
    config = s.producer_config(
        {
            # Batching for throughput; lz4 because text compresses well and lz4 costs little CPU.
            "linger.ms": 5,
            # Never a batch the output topics refuse: the broker would fail every record in it.
            "batch.size": min(1_000_000, limits.training_record_max, limits.dlq_record_max),
            "message.max.bytes": max_bytes,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 200_000,
            "queue.buffering.max.kbytes": PRODUCER_QUEUE_KBYTES,
            "message.timeout.ms": 300_000,  # retries ride out a broker restart of up to five minutes
        },
        **{"enable.idempotence": True, "acks": "all", **extra},
    )
    if s.exactly_once:
        config["transactional.id"] = s.transactional_id or f"{s.group_id}-{socket.gethostname()}"
        # librdkafka requires message.timeout.ms <= transaction.timeout.ms; a minute bounds how long an
        # abandoned transaction can hold back read_committed readers if its replica never returns.
        config.setdefault("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
        config["message.timeout.ms"] = min(int(config["message.timeout.ms"]), int(config["transaction.timeout.ms"]))
    return config


def input_consumer_config(s: Settings, on_stats: Callable[[str], None], extra: dict[str, Any]) -> dict[str, Any]:
    """The input consumer's librdkafka configuration (`extra`: the logger)."""
    return s.consumer_config(
        {
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 4_194_304,
            "statistics.interval.ms": s.statistics_interval_ms,
            "stats_cb": on_stats,
        },
        **{
            "group.id": s.group_id,
            "enable.auto.commit": not s.exactly_once,
            "auto.commit.interval.ms": 1000,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            **extra,
        },
    )
