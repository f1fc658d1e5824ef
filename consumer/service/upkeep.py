"""What the loop does when a turn is over: counts into metrics, the periodic summary log line, and
the opt-out filter's snapshot (in the background, and once more at shutdown)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from consumer.consents import snapshot as consent_snapshot
from consumer.consents.feed import ConsentFeed, GatedFeeds
from consumer.datapath.batch import BatchProcessor
from consumer.datapath.delivery import AtLeastOnce
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations.metrics import Metrics
from consumer.operations.settings import Settings
from consumer.optouts.feed import OptOutFeed
from consumer.optouts.filter import write_snapshot
from consumer.service.lifecycle import finite
from consumer.service.state import State


class Snapshots:
    """The filter and the feed's offsets (and, under an opt-in policy, the consent set and its feed's),
    written every TF_OPTOUT_SNAPSHOT_INTERVAL_SECONDS and at shutdown (atomically: consumer/optouts/filter.py)."""

    def __init__(
        self,
        settings: Settings,
        feed: OptOutFeed | GatedFeeds,
        pseudonymiser: Pseudonymiser,
        metrics: Metrics,
        log: Any,
        consents: ConsentFeed | None = None,
    ) -> None:
        self.path = settings.optout_snapshot_path
        self.consents = consents
        self.consent_path = settings.consent_snapshot_path if consents is not None else None
        self.interval = settings.optout_snapshot_interval_seconds
        self.feed = feed
        self.key_check = pseudonymiser.key_check()
        self.metrics = metrics
        self.log = log
        self.last = time.monotonic()
        self.thread: threading.Thread | None = None

    def due(self, now: float) -> None:
        if (self.path is not None or self.consent_path is not None) and now - self.last >= self.interval:
            self.write(background=True)

    def final(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)
        self.write(background=False)

    def write(self, background: bool) -> None:
        if (self.path is None and self.consent_path is None) or (self.thread is not None and self.thread.is_alive()):
            return
        self.last = time.monotonic()
        # Each snapshot's offsets and set of one moment: the feeds sync on their own thread.
        # The consents first: under an opt-in policy a withdrawal goes into the opt-out filter as it
        # is read (consumer/consents/feed.py), so every withdrawal within the consent snapshot's
        # offsets is in the opt-out snapshot taken after it.
        jobs: list[tuple[str, Path, dict[str, Any], bytes]] = []
        consents = self.consents
        if self.consent_path is not None and consents is not None and consents.caught_up_at is not None:
            with consents.lock:
                header = consent_snapshot.header(
                    consents.filter, dict(consents.positions), consents.topic_ids, self.key_check
                )
                jobs.append(("consent", self.consent_path, header, consent_snapshot.body(consents.filter)))
        if self.path is not None:
            with self.feed.lock:
                optout_filter = self.feed.filter
                header = optout_filter.header(dict(self.feed.positions), self.feed.topic_ids, self.key_check)
                jobs.append(("optout", self.path, header, optout_filter.snapshot_bytes()))

        def write() -> None:
            for kind, path, header, body in jobs:
                started = time.monotonic()
                try:
                    write_snapshot(path, header, body)
                except OSError as exc:
                    self.metrics.snapshots.labels("save", "failed").inc()
                    self.log.warning(
                        f"{kind}_snapshot_failed", error=exc.strerror or type(exc).__name__, path=str(path)
                    )
                    continue
                self.metrics.snapshots.labels("save", "ok").inc()
                self.metrics.snapshot_seconds.labels("save").set(time.monotonic() - started)
                self.log.info(f"{kind}_snapshot_saved", entries=header["entries"], path=str(path))

        if background:
            self.thread = threading.Thread(target=write, name="optout-snapshot", daemon=True)
            self.thread.start()
        else:
            write()


class Upkeep:
    def __init__(
        self,
        settings: Settings,
        state: State,
        metrics: Metrics,
        log: Any,
        delivery: AtLeastOnce,
        processor: BatchProcessor,
        feed: OptOutFeed | GatedFeeds,
        snapshots: Snapshots,
        ready: Any,
    ) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.log = log
        self.delivery = delivery
        self.processor = processor
        self.feed = feed
        self.snapshots = snapshots
        self.ready = ready
        self.decisions: dict[str, int] = {}  # since the last summary line
        self.consumer_errors: dict[str, int] = {}
        self._last_summary = time.monotonic()

    def after_turn(self) -> None:
        now = time.monotonic()
        m = self.metrics
        produced, dead = self.delivery.take_counts()
        if produced:
            m.produced.labels("training").inc(produced)
        if dead:
            m.produced.labels("dlq").inc(dead)
        processor = self.processor
        if processor.dlq_causes:
            for (source, cause), count in processor.dlq_causes.items():
                m.dlq.labels(str(source), cause).inc(count)
            processor.dlq_causes.clear()
        if processor.undecidable:
            # A record that provoked an exception on the reference path: dead-lettered, the loop went on.
            # The exception's type only (its message could quote the record).
            self.log.warning("records_undecidable", errors=dict(processor.undecidable))
            processor.undecidable.clear()
        if processor.dead_letters.truncated:
            m.dlq_truncated.inc(processor.dead_letters.truncated)
            processor.dead_letters.truncated = 0
        ready, _ = self.ready()
        m.ready.set(1 if ready else 0)
        if now - self._last_summary >= self.settings.log_summary_seconds:
            self._summary(now)
        self.snapshots.due(now)

    def _summary(self, now: float) -> None:
        elapsed = now - self._last_summary
        total = sum(self.decisions.values())
        self.log.info(
            "summary",
            records=total,
            records_per_second=round(total / elapsed, 1),
            decisions=dict(self.decisions),
            assigned_partitions=len(self.state.assigned),
            optout_entries=self.feed.filter.entries,
            **({"consent_entries": self.feed.consents.filter.entries} if isinstance(self.feed, GatedFeeds) else {}),
            optout_feed_seconds_behind=finite(self.feed.seconds_behind()),
            paused=self.state.paused,
            consumer_errors=self.consumer_errors or None,
        )
        self.decisions = {}
        self.consumer_errors = {}
        self._last_summary = now
