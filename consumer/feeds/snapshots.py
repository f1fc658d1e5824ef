"""The feeds' snapshots: each set with its mirror's offsets and topic ids, written every
TF_OPTOUT_SNAPSHOT_INTERVAL_SECONDS (in the background) and once more at shutdown, atomically
(consumer/optouts/filter.py `write_snapshot`), so that a restart loads the sets and resumes the
mirrors instead of reading the topics again."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from consumer.consents import snapshot as consent_snapshot
from consumer.feeds.feeds import Feeds
from consumer.operations.metrics import Metrics
from consumer.optouts.filter import write_snapshot

Job = tuple[str, Path, dict[str, Any], bytes]  # (kind, path, header, body)


class Snapshots:
    def __init__(
        self,
        feeds: Feeds,
        optout_path: Path | None,
        consent_path: Path | None,
        interval: float,
        key_check: str,
        metrics: Metrics,
        log: Any,
        changes_path: Path | None = None,
    ) -> None:
        self.feeds = feeds
        self.path = optout_path
        self.consent_path = consent_path if feeds.consents is not None else None
        self.changes_path = changes_path if feeds.changes is not None else None
        self.interval = interval
        self.key_check = key_check
        self.metrics = metrics
        self.log = log
        self.last = time.monotonic()
        self.thread: threading.Thread | None = None

    @property
    def wanted(self) -> bool:
        return self.path is not None or self.consent_path is not None or self.changes_path is not None

    def due(self, now: float) -> None:
        if self.wanted and now - self.last >= self.interval:
            self.write(background=True)

    def final(self, timeout: float) -> None:
        """At shutdown: after a snapshot under way, one more (only of feeds that caught up once)."""
        if self.thread is not None:
            self.thread.join(timeout)
        if self.feeds.optouts.caught_up_at is not None:
            self.write(background=False)

    def write(self, background: bool) -> None:
        if not self.wanted or (self.thread is not None and self.thread.is_alive()):
            return
        self.last = time.monotonic()
        jobs = self._jobs()
        if background:
            self.thread = threading.Thread(target=self._write, args=(jobs,), name="feed-snapshot", daemon=True)
            self.thread.start()
        else:
            self._write(jobs)

    def _jobs(self) -> list[Job]:
        """Each snapshot's offsets and set of one moment, taken under its mirror's lock (the mirrors sync
        on their own thread). The opt-out filter's last: a deleted account goes into it as its change is
        read (consumer/changes/applier.py), so every deletion within the change snapshot's offsets is in
        the opt-out snapshot taken after it."""
        jobs: list[Job] = []
        changes = self.feeds.changes
        if self.changes_path is not None and changes is not None and changes.caught_up_at is not None:
            with changes.lock:
                header = changes.members.header(dict(changes.positions), changes.topic_ids, self.key_check)
                jobs.append(("change", self.changes_path, header, changes.members.snapshot_bytes()))
        consents = self.feeds.consents
        if self.consent_path is not None and consents is not None and consents.caught_up_at is not None:
            with consents.lock:
                members, history = consents.members, consents.applier.history
                header = consent_snapshot.header(
                    members, history, dict(consents.positions), consents.topic_ids, self.key_check
                )
                jobs.append(("consent", self.consent_path, header, consent_snapshot.body(members, history)))
        if self.path is not None:
            optouts = self.feeds.optouts
            with optouts.lock:
                header = optouts.members.header(dict(optouts.positions), optouts.topic_ids, self.key_check)
                jobs.append(("optout", self.path, header, optouts.members.snapshot_bytes()))
        return jobs

    def _write(self, jobs: list[Job]) -> None:
        for kind, path, header, body in jobs:
            started = time.monotonic()
            try:
                write_snapshot(path, header, body)
            except OSError as exc:
                self.metrics.snapshots.labels("save", "failed").inc()
                self.log.warning(f"{kind}_snapshot_failed", error=exc.strerror or type(exc).__name__, path=str(path))
                continue
            self.metrics.snapshots.labels("save", "ok").inc()
            self.metrics.snapshot_seconds.labels("save").set(time.monotonic() - started)
            self.log.info(f"{kind}_snapshot_saved", entries=header["entries"], path=str(path))
