"""The opt-out feed synced on a thread of its own, so the loop never waits on the broker's round trips.

A sync is a metadata request and an end-offsets request before any opt-out is read: done inline before
each batch, the loop sat idle through both for every batch, which cost about a third of the
throughput. Here the loop hands over the time it fetched a batch (`request`), goes on deciding the
batch before it, and decides the new one once a sync that *started after* that time has completed
(`covered`). That sync asked for the end offsets after the batch was fetched, so every opt-out
acknowledged before the batch was fetched has been applied: the promise of the inline sync, kept.

Between requests the thread still syncs every `idle_seconds`, which keeps `seconds_behind` (readiness,
the lag alert) current and applies opt-outs as they come.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol


class Syncable(Protocol):
    @property
    def caught_up_at(self) -> float | None: ...

    def sync(self, timeout: float, everything: bool = False) -> bool: ...


class SyncThreadDied(Exception):
    """The sync thread stopped on an unexpected error: nothing more can be confirmed (fail closed)."""


class BackgroundSync:
    def __init__(
        self,
        feed: Syncable,
        timeout: float,
        log: Any,
        idle_seconds: float = 0.1,
        name: str = "optout",
    ) -> None:
        self.feed = feed
        self.name = name
        self.timeout = timeout
        self.log = log
        self.idle_seconds = idle_seconds
        self._cond = threading.Condition()
        self._wanted = float("-inf")  # the latest fetch time a sync must start after
        self._confirmed = feed.caught_up_at if feed.caught_up_at is not None else float("-inf")
        self._stopping = False
        # When the sync under way (or the last one) started: a batch fetched after it waits for the next.
        self.started_at = float("-inf")
        self.died: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"{name}-sync", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def request(self, fetched_at: float) -> None:
        """A batch was fetched at `fetched_at`: a sync starting after it is wanted."""
        with self._cond:
            if fetched_at > self._wanted:
                self._wanted = fetched_at
                self._cond.notify_all()

    def covered(self, fetched_at: float) -> bool:
        """Has a sync that started after `fetched_at` completed?"""
        if self.died is not None:
            raise SyncThreadDied(type(self.died).__name__) from self.died
        return self._confirmed >= fetched_at

    def wait(self, fetched_at: float, timeout: float) -> bool:
        """`covered(fetched_at)`, waiting up to `timeout` seconds for it."""
        if timeout > 0 and not self.covered(fetched_at):
            with self._cond:
                self._cond.wait_for(
                    lambda: self._confirmed >= fetched_at or self.died is not None or self._stopping, timeout
                )
        return self.covered(fetched_at)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _due(self) -> bool:
        # A fetch not yet covered: the last sync started before it, or failed.
        return self._stopping or self._wanted > self._confirmed

    def _run(self) -> None:
        try:
            first = True
            while True:
                with self._cond:
                    if not first:
                        self._cond.wait_for(self._due, self.idle_seconds)
                    first = False
                    if self._stopping:
                        return
                    self.started_at = time.monotonic()
                if self.feed.sync(self.timeout):
                    with self._cond:
                        confirmed = self.feed.caught_up_at
                        if confirmed is not None and confirmed > self._confirmed:
                            self._confirmed = confirmed
                        self._cond.notify_all()
                else:
                    # The broker is down or slow; the loop pauses input. Do not hammer it.
                    with self._cond:
                        self._cond.wait_for(lambda: self._stopping, min(self.idle_seconds, 0.1))
        except BaseException as exc:  # a defect: the loop raises it at its next look (fail closed)
            self.log.error(f"{self.name}_sync_thread_died", error=type(exc).__name__)
            with self._cond:
                self.died = exc
                self._cond.notify_all()
