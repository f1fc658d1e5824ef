"""Progress of a long operator command on standard error: records done of the total, the rate and the
time left, every few seconds and once at the end. Counts only: never a record's content."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO


class Progress:
    def __init__(
        self,
        what: str,
        total: int,
        out: IO[str],
        every_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.out = out
        self.every = every_seconds
        self.clock = clock
        self.started = clock()
        self.last_shown = float("-inf")
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
        now = self.clock()
        if now - self.last_shown >= self.every:
            self.last_shown = now
            self.out.write(self.line(now) + "\n")
            self.out.flush()

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        took = max(now - self.started, 1e-9)
        rate = self.done / took
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        left = max(self.total - self.done, 0)
        eta = f", ETA {_duration(left / rate)}" if rate > 0 and left else ""
        return f"{self.what}: {self.done:,} of {self.total:,} records{share}, {rate:,.0f} records/s{eta}"

    def finish(self) -> None:
        self.out.write(self.line() + f", took {_duration(self.clock() - self.started)}\n")
        self.out.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
