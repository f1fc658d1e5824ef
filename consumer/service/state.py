"""The little state the loop, the lifecycle and the HTTP probes share. One thread writes it (the
loop's: rebalance callbacks run inside consume() there too); the probes only read a few fields, and
the signal handler sets `stopping`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Held:
    fetched_at: float
    messages: list[Any]


def held_records(held: list[Held]) -> int:
    return sum(len(h.messages) for h in held)


@dataclass
class State:
    stopping: bool = False
    paused: bool = False
    subscribed: bool = False
    exit_code: int = 0
    last_tick: float = field(default_factory=time.monotonic)
    assigned: set[tuple[str, int]] = field(default_factory=set)
    # Consumed batches not yet decided, oldest first, each with the time it was fetched: a batch is
    # decided once a sync of the feeds that started after that time has completed (and, with a
    # registry, its schema ids are known), or dropped when its partitions go or the consumer rewinds.
    held: list[Held] = field(default_factory=list)
    registry_error: str | None = None  # the last schema-registry failure, until a look-up succeeds
    # Seconds since the gating feeds last reached their topics' ends, as of the loop's last turn.
    feeds_behind: float = float("inf")

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def request_stop(self, *_: Any) -> None:
        """The signal handler (SIGTERM, SIGINT): the loop ends at its next turn, and shutdown begins."""
        self.stopping = True

    def drop_held(self) -> None:
        """The consumer rewound (an aborted transaction): what the loop holds will be fetched again."""
        self.held = []

    def forget(self, gone: set[tuple[str, int]]) -> None:
        """Partitions that went (revoked or lost): their held records belong to their new owner now."""
        self.assigned -= gone
        for held in self.held:
            held.messages = [m for m in held.messages if (m.topic(), m.partition()) not in gone]
        self.held = [h for h in self.held if h.messages]


def finite(seconds: float) -> float | None:
    return None if seconds == float("inf") else round(seconds, 3)
