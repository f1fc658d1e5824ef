"""The input records of the window, read once, in the order receipts need them: one consumer assigned
every input partition of the window, each partition's records kept from the first offset a receipt
still to be checked starts at (a repeat goes back to its range's start). Receipts are checked in the
order they were decided, which is how the service consumed the partitions: the buffers stay short.
Every offset read is noted, for the coverage check (consumer/audit/coverage.py)."""

from __future__ import annotations

from array import array
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from consumer.commands.transactional_pass import PassError, Span
from consumer.operations.clients import Clients

Partition = tuple[str, int]
IDLE_SECONDS = 30.0


class InputBuffers:
    def __init__(
        self,
        clients: Clients,
        config: dict[str, Any],
        spans: dict[Partition, Span],
        firsts: dict[Partition, list[int]],
        on_read: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.spans = {tp: s for tp, s in spans.items() if s.end > s.start}
        self.remaining = {tp: sorted(f) for tp, f in firsts.items()}  # the first offsets of receipts to check
        self.buffers: dict[Partition, deque[Any]] = {tp: deque() for tp in self.spans}
        self.seen: dict[Partition, array[int]] = {tp: array("q") for tp in self.spans}
        self.done: set[Partition] = set()
        self.read = 0
        self.on_read = on_read
        self.consumer = clients.consumer(config) if self.spans else None
        if self.consumer is not None:
            self.consumer.assign([TopicPartition(t, p, s.start) for (t, p), s in sorted(self.spans.items())])

    def take(self, tp: Partition, first: int, last: int) -> list[Any]:
        """The records of offsets [first, last] of `tp` (those the partition still holds), and the receipt
        that needed them checked off."""
        span = self.spans.get(tp)
        if span is None:
            return []
        while tp not in self.done and not self._reached(tp, last):
            self._consume()
        out = [m for m in self.buffers[tp] if first <= m.offset() <= last]
        starts = self.remaining.get(tp, [])
        i = bisect_left(starts, first)
        if i < len(starts) and starts[i] == first:
            del starts[i]
        keep_from = starts[0] if starts else last + 1
        buffer = self.buffers[tp]
        while buffer and buffer[0].offset() < keep_from:
            buffer.popleft()
        return out

    def add_receipt(self, tp: Partition, first: int) -> None:
        insort(self.remaining.setdefault(tp, []), first)

    def drain(self) -> None:
        """Read every partition to its end (the offsets no receipt needed, for the coverage check)."""
        while len(self.done) < len(self.spans):
            self._consume()
            for buffer in self.buffers.values():
                buffer.clear()

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    def _reached(self, tp: Partition, last: int) -> bool:
        seen = self.seen[tp]
        return bool(seen) and seen[-1] >= min(last, self.spans[tp].end - 1)

    def _consume(self) -> None:
        assert self.consumer is not None
        waited = 0.0
        while True:
            messages = self.consumer.consume(num_messages=10_000, timeout=0.5)
            if messages:
                break
            waited += 0.5
            if waited > IDLE_SECONDS:
                raise PassError(f"the input topics gave nothing for {IDLE_SECONDS:.0f} s before the window's end")
        read = 0
        for msg in messages:
            tp = (msg.topic(), msg.partition())
            span = self.spans.get(tp)
            err = msg.error()
            if span is None:
                continue
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise PassError(f"cannot read {msg.topic()}: {err.name()}")
                self.done.add(tp)  # read committed: what is left is an open transaction's
                continue
            offset = msg.offset()
            if offset >= span.end:
                self.done.add(tp)
                continue
            if offset < span.start or tp in self.done:
                continue
            self.buffers[tp].append(msg)
            self.seen[tp].append(offset)
            read += 1
            if offset + 1 >= span.end:
                self.done.add(tp)
        self.read += read
        self.on_read(self.read)
