"""The little state the loop, the lifecycle and the HTTP probes share. One thread writes it (the
loop's: rebalance callbacks run inside consume() there too); the probes only read a few fields."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class State:
    stopping: bool = False
    paused: bool = False
    subscribed: bool = False
    exit_code: int = 0
    last_tick: float = field(default_factory=time.monotonic)
    assigned: set[tuple[str, int]] = field(default_factory=set)
    # A consumed batch not yet decided: the opt-out feed or the registry could not be brought up to
    # date. It is decided once they are, or dropped when its partitions go or the consumer rewinds.
    held: list[Any] | None = None
    registry_error: str | None = None  # the last schema-registry failure, until a look-up succeeds

    def tick(self) -> None:
        self.last_tick = time.monotonic()
