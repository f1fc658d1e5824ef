"""At-least-once bookkeeping: offsets are released only behind acknowledged batches, in order."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from consumer.datapath.offsets import OffsetTracker, ProduceFailed


def Err() -> KafkaError:
    return KafkaError(KafkaError._MSG_TIMED_OUT)


class Sent:
    """What a delivery report's message offers: the value and key that were produced."""

    def __init__(self, value: bytes, key: bytes) -> None:
        self._value, self._key = value, key

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key


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


def test_an_output_the_broker_refuses_for_good_holds_the_batch_until_replaced():
    tracker = OffsetTracker()
    batch = tracker.open()
    batch.outstanding += 2
    OffsetTracker.seal(batch, [("t", 0, 1)])
    batch.delivered(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), Sent(b"v", b"k"))
    batch.delivered(None, None)
    assert tracker.release() == {}, "not past a refused output"
    assert tracker.with_rejections() == [batch]
    ((rejected),) = batch.rejected
    assert (rejected.output, rejected.value, rejected.key, rejected.error) == (
        "training",
        b"v",
        b"k",
        "MSG_SIZE_TOO_LARGE",
    )
    batch.rejected.clear()  # replaced by a dead letter, which is then acknowledged
    assert tracker.release() == {("t", 0): 2}


def test_a_dead_letter_the_dlq_refuses_is_kept_for_a_headers_only_one_and_then_it_is_fatal():
    tracker = OffsetTracker()
    batch = tracker.open()
    OffsetTracker.seal(batch, [("t", 0, 1)])
    headers = [("tf.reason", b"malformed")]
    batch.outstanding += 1
    batch.dead_letter_report(("t", 0, 1), headers, False)(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    assert batch.rejected[0].provenance == ("t", 0, 1) and batch.rejected[0].headers == headers
    batch.rejected.clear()
    batch.outstanding += 1
    batch.dead_letter_report(("t", 0, 1), headers, True)(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    with pytest.raises(ProduceFailed, match="MSG_SIZE_TOO_LARGE producing to dlq"):
        tracker.release()
