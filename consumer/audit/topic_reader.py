"""Reading spans of topics to their ends for the verifier: every partition of a span assigned at its start,
consumed until the end as it was when asked (the end marked by the partition's EOF event, so that
transaction markers and aborted records at the end are never waited for). Never committed, no group."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from consumer.commands.transactional_pass import PassError, Span
from consumer.operations.clients import Clients
from consumer.operations.settings import Settings

Partition = tuple[str, int]
IDLE_SECONDS = 30.0  # nothing read for this long before a partition's end: the broker is not answering


def reader_config(settings: Settings, committed: bool, group: str) -> dict[str, Any]:
    """A consumer that is only ever assigned: `committed` reads committed records only."""
    return settings.consumer_config(
        {"auto.offset.reset": "earliest", "fetch.max.bytes": 52_428_800, "queued.max.messages.kbytes": 65_536},
        **{
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
        },
    )


def read_spans(clients: Clients, config: dict[str, Any], spans: dict[Partition, Span]) -> Iterator[Any]:
    """The records of `spans` (start inclusive, end exclusive), partition by partition in offset order,
    interleaved across partitions."""
    pending = {tp for tp, s in spans.items() if s.end > s.start}
    if not pending:
        return
    consumer = clients.consumer(config)
    try:
        consumer.assign([TopicPartition(t, p, spans[t, p].start) for t, p in sorted(pending)])
        idle_since = time.monotonic()
        while pending:
            messages = consumer.consume(num_messages=10_000, timeout=0.5)
            if messages:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_SECONDS:
                raise PassError(f"{', '.join(sorted({t for t, _ in pending}))} gave nothing for {IDLE_SECONDS:.0f} s")
            for msg in messages:
                tp = (msg.topic(), msg.partition())
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise PassError(f"cannot read {msg.topic()}: {err.name()}")
                span = spans.get(tp)
                if span is None:
                    continue
                # An EOF before the span's end: read committed, the rest is an open transaction's.
                if tp in pending and (err is not None or msg.offset() + 1 >= span.end):
                    pending.discard(tp)
                if err is None and span.start <= msg.offset() < span.end:
                    yield msg
    finally:
        consumer.close()
