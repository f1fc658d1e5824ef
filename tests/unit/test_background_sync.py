"""The sync thread's promise: a batch fetched at t is covered only by a sync that started after t."""

from __future__ import annotations

import threading
import time

import pytest

from consumer.feeds.background import BackgroundSync, SyncThreadDied


class Log:
    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, object]]] = []

    def error(self, event: str, **fields: object) -> None:
        self.errors.append((event, fields))


class GatedFeed:
    """A feed whose syncs run only when the test lets them, recording when each one started."""

    def __init__(self) -> None:
        self.caught_up_at: float | None = None
        self.starts: list[float] = []
        self.gate = threading.Semaphore(0)
        self.results: list[bool] = []
        self.fail_with: BaseException | None = None

    def sync(self, timeout: float, everything: bool = False) -> bool:
        started = time.monotonic()
        self.starts.append(started)
        assert self.gate.acquire(timeout=5), "the test never released this sync"
        if self.fail_with is not None:
            raise self.fail_with
        ok = self.results.pop(0) if self.results else True
        if ok:
            self.caught_up_at = started
        return ok


def wait_until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_a_sync_that_started_before_the_fetch_does_not_cover_it() -> None:
    feed = GatedFeed()
    syncer = BackgroundSync(feed, timeout=1.0, log=Log(), idle_seconds=60)
    syncer.start()
    try:
        wait_until(lambda: len(feed.starts) == 1)  # the first (idle) sync is under way
        fetched_at = time.monotonic()
        syncer.request(fetched_at)
        feed.gate.release()  # the sync that started before the fetch completes...
        wait_until(lambda: len(feed.starts) == 2)  # ...and, being asked for, another one starts at once
        assert not syncer.covered(fetched_at)
        assert not syncer.wait(fetched_at, 0.05)
        assert feed.starts[1] >= fetched_at
        feed.gate.release()
        assert syncer.wait(fetched_at, 5.0)
    finally:
        for _ in range(3):
            feed.gate.release()
        syncer.stop()


def test_a_failed_sync_covers_nothing_and_the_next_success_does() -> None:
    feed = GatedFeed()
    feed.results = [False, True]
    syncer = BackgroundSync(feed, timeout=1.0, log=Log(), idle_seconds=60)
    fetched_at = time.monotonic()
    syncer.request(fetched_at)
    syncer.start()
    try:
        feed.gate.release()
        wait_until(lambda: len(feed.starts) == 2)
        assert not syncer.covered(fetched_at)
        feed.gate.release()
        assert syncer.wait(fetched_at, 5.0)
    finally:
        for _ in range(3):
            feed.gate.release()
        syncer.stop()


def test_a_thread_that_dies_fails_closed() -> None:
    feed = GatedFeed()
    feed.fail_with = RuntimeError("a defect")
    log = Log()
    syncer = BackgroundSync(feed, timeout=1.0, log=log, idle_seconds=60)
    syncer.start()
    fetched_at = time.monotonic()
    syncer.request(fetched_at)
    feed.gate.release()
    with pytest.raises(SyncThreadDied):
        syncer.wait(fetched_at, 5.0)
    assert log.errors == [("optout_sync_thread_died", {"error": "RuntimeError"})]
    syncer.stop()


def test_idle_syncs_keep_the_feed_current_without_requests() -> None:
    feed = GatedFeed()
    syncer = BackgroundSync(feed, timeout=1.0, log=Log(), idle_seconds=0.02)
    syncer.start()
    try:
        for _ in range(3):
            feed.gate.release()
        wait_until(lambda: len(feed.starts) >= 4)
    finally:
        for _ in range(3):
            feed.gate.release()
        syncer.stop()
    assert not syncer.thread.is_alive()
