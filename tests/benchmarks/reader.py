"""Latency reader: consumes an output topic and records when each record id arrived.

    python -m tests.benchmarks.reader BOOTSTRAP TOPIC EXPECTED TIMEOUT OUT_FILE

The id is the first Avro string of the value (post_id for a passed-through Post, record_id for a
TrainingRecord). Times are time.monotonic(), which is system-wide on Linux, so the load generator
in another process can compare them with its send times.
"""

from __future__ import annotations

import os
import sys
import time

import orjson
from confluent_kafka import Consumer


def first_string(value: bytes) -> str:
    size = value[5] >> 1  # ids are short: a one-byte length
    return value[6 : 6 + size].decode()


def main(bootstrap: str, topic: str, expected: int, timeout: float, out_file: str) -> None:
    os.sched_setaffinity(0, {int(os.environ.get("BENCH_CPU", "1"))})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
            "log_level": 3,
        }
    )
    consumer.subscribe([topic])
    arrivals: dict[str, float] = {}
    received = 0
    deadline = time.monotonic() + timeout
    print("ready", flush=True)
    while received < expected and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=1000, timeout=0.05):
            if msg.error() is None and msg.value():
                received += 1
                try:
                    arrivals[first_string(msg.value())] = time.monotonic()
                except (IndexError, UnicodeDecodeError):
                    pass  # a passed-through corrupt record: counted, not timed
    consumer.close()
    with open(out_file, "wb") as handle:
        handle.write(orjson.dumps({"received": received, "expected": expected, "arrivals": arrivals}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
