"""At-least-once bookkeeping: offsets are released only behind acknowledged batches, in order."""

from __future__ import annotations

import pytest

from consumer.offsets import OffsetTracker, ProduceFailed


class Err:
    def name(self) -> str:
        return "_MSG_TIMED_OUT"


def test_offsets_wait_for_every_delivery_of_the_batch():
    tracker = OffsetTracker()
    batch = tracker.open()
    batch.outstanding += 2
    OffsetTracker.seal(batch, [("t", 0, 10), ("t", 0, 11), ("t", 1, 5)])
    assert tracker.release() == {}
    batch.delivered(None, None)
    assert tracker.release() == {}
    batch.delivered(None, None)
    assert tracker.release() == {("t", 0): 12, ("t", 1): 6}
    assert tracker.produced == 2


def test_a_later_batch_never_releases_past_an_earlier_one_in_flight():
    tracker = OffsetTracker()
    first, second = tracker.open(), tracker.open()
    first.outstanding += 1
    OffsetTracker.seal(first, [("t", 0, 1)])
    OffsetTracker.seal(second, [("t", 0, 2), ("t", 1, 9)])
    assert tracker.release() == {}
    first.delivered(None, None)
    assert tracker.release() == {("t", 0): 3, ("t", 1): 10}


def test_a_batch_without_outputs_completes_at_once():
    tracker = OffsetTracker()
    batch = tracker.open()
    OffsetTracker.seal(batch, [("t", 3, 40)])
    assert tracker.release() == {("t", 3): 41}


def test_a_failed_delivery_stops_everything():
    tracker = OffsetTracker()
    batch = tracker.open()
    batch.outstanding += 2
    OffsetTracker.seal(batch, [("t", 0, 1)])
    batch.delivered(Err(), None)
    with pytest.raises(ProduceFailed, match="_MSG_TIMED_OUT"):
        tracker.release()


def test_revoked_partitions_are_forgotten():
    tracker = OffsetTracker()
    batch = tracker.open()
    batch.outstanding += 1
    OffsetTracker.seal(batch, [("t", 0, 1), ("t", 1, 1)])
    tracker.forget({("t", 1)})
    batch.delivered(None, None)
    assert tracker.release() == {("t", 0): 2}
