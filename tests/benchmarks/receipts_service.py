"""What decision receipts cost the real service (issue 23: at most 3 % more CPU per record): the service
without an audit key against the same service writing receipts to an audit topic of its own,
alternating, on the benchmark's input.

Result: `receipts_service` (the paired CPU ratio, its spread, both variants' figures, and how many
receipts the runs wrote per million records).
"""

from __future__ import annotations

import statistics
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from tests.benchmarks.harness import Harness, paired_cpu_ratios, summarise
from tests.benchmarks.service import alternating_runs

AUDIT_KEY = "bench-audit-key-0123456789abcdef-0123"


def run(h: Harness, repetitions: int) -> dict[str, Any]:
    audit = h.topic("audit-receipts", 2, {"retention.ms": "3600000"})
    with_receipts = {"TF_AUDIT_KEY": AUDIT_KEY, "TF_AUDIT_TOPIC": audit}
    runs = alternating_runs(h, "receipts", {"without": {}, "with": with_receipts}, repetitions)
    paired = paired_cpu_ratios(runs["without"], runs["with"])
    written = _records(h.bootstrap, audit)
    assert written > 0, "the runs with an audit key wrote no receipt"
    return {
        "repetitions": repetitions,
        "receipts_written": written,
        "records_decided_with_receipts": sum(run["records"] for run in runs["with"]),
        "without": summarise(runs["without"]),
        "with": summarise(runs["with"]),
        "cpu_ratio_paired": statistics.median(paired),
        "cpu_ratio_paired_min_max": [paired[0], paired[-1]],
    }


def _records(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-receipts-count", "log_level": 3})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()
