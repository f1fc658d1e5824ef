"""The one way the data path waits for room in the producer's queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def produce_when_room(
    producer: Any,
    wait: Callable[[], object],
    topic: str,
    value: bytes | None,
    key: bytes | None,
    on_delivery: Callable[[Any, Any], None],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Produce, serving delivery reports (`wait`) while the queue is full (BufferError). Never drops a
    record; any other error is the caller's to handle."""
    while True:
        try:
            producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            wait()
