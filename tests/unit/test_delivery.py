"""The delivery guarantees' bookkeeping, on the in-memory Kafka of tests/fakes.py (the fault suite and
the integration tests run the same code against the real broker).

Exactly-once commits with each transaction the offsets of exactly the records whose outputs are in
it: never the consumer's position, which is past records the loop holds undecided while the opt-out
feed cannot sync. After an abort the consumer rewinds and the loop drops what it holds.
"""

from __future__ import annotations

from confluent_kafka import TopicPartition

from consumer.datapath.delivery import ExactlyOnce
from consumer.operations.logs import get
from consumer.operations.metrics import Metrics
from tests.fakes import FakeConsumer, FakeKafka, FakeProducer, Group


def clients() -> tuple[FakeProducer, FakeConsumer]:
    """A transactional producer, and a consumer of posts/0 and posts/1 whose position is past a held
    batch (offsets 10-19 of p0) that was never processed; posts/0 has 3 committed, posts/1 nothing."""
    kafka = FakeKafka()
    kafka.create_topic("posts", 2)
    kafka.groups["g"] = Group(committed={("posts", 0): 3})
    consumer = FakeConsumer(kafka, {"group.id": "g"})
    consumer.assign([TopicPartition("posts", 0, 20), TopicPartition("posts", 1, 7)])
    return FakeProducer(kafka, {"transactional.id": "t"}), consumer


def eos(producer: FakeProducer, consumer: FakeConsumer, on_rewind=lambda: None) -> ExactlyOnce:
    return ExactlyOnce(consumer, producer, Metrics(), get("test"), interval_seconds=0.0, on_rewind=on_rewind)


def test_a_transaction_carries_the_offsets_of_its_own_records_not_the_position():
    producer, consumer = clients()
    delivery = eos(producer, consumer)
    batch = delivery.open_batch()
    delivery.close_batch(batch, [("posts", 0, 9), ("posts", 1, 6)])  # processed up to 9 and 6
    delivery.tick()  # the loop now holds offsets 10-19 of p0: the position (20) must not be committed
    assert producer.sent_offsets == [[("posts", 0, 10), ("posts", 1, 7)]]
    assert producer.calls == ["init", "begin", "commit"]


def test_a_transaction_with_no_records_of_a_partition_commits_nothing_for_it():
    producer, consumer = clients()
    delivery = eos(producer, consumer)
    first = delivery.open_batch()
    delivery.close_batch(first, [("posts", 1, 3)])
    second = delivery.open_batch()
    delivery.close_batch(second, [("posts", 1, 5)])
    assert delivery.shutdown(1.0)
    assert producer.sent_offsets == [[("posts", 1, 6)]]


def test_an_aborted_transaction_rewinds_and_tells_the_loop_to_drop_what_it_holds():
    producer, consumer = clients()
    producer.fail_commit = True
    dropped: list[bool] = []
    delivery = eos(producer, consumer, on_rewind=lambda: dropped.append(True))
    batch = delivery.open_batch()
    delivery.close_batch(batch, [("posts", 0, 9)])
    delivery.tick()
    assert producer.calls[-1] == "abort"
    # Back to the committed offsets (the beginning where nothing is committed yet)...
    assert consumer.seeks == [("posts", 0, 3), ("posts", 1, -2)]
    # ...and what the loop held was fetched after them: it is dropped, to be fetched again.
    assert dropped == [True]
    # The next transaction starts clean: nothing of the aborted one is committed with it.
    producer.fail_commit = False
    again = delivery.open_batch()
    delivery.close_batch(again, [("posts", 0, 4)])
    delivery.tick()
    assert producer.sent_offsets[-1] == [("posts", 0, 5)]


def test_losing_partitions_with_a_transaction_open_aborts_it_and_commits_nothing_of_them():
    """Lost partitions (a session that timed out) may be processed by their new owner already. Committing
    the open transaction afterwards would commit their outputs and offsets too: duplicates for
    read_committed readers, and offsets moved under the new owner. So the transaction is aborted, the
    partitions still owned are rewound, and what the loop holds is dropped."""
    producer, consumer = clients()
    dropped: list[bool] = []
    delivery = eos(producer, consumer, on_rewind=lambda: dropped.append(True))
    delivery.assigned_partitions([TopicPartition("posts", 0), TopicPartition("posts", 1)])
    batch = delivery.open_batch()
    delivery.close_batch(batch, [("posts", 0, 9), ("posts", 1, 6)])  # outputs of both in the transaction
    delivery.lost([TopicPartition("posts", 0)])
    assert producer.calls == ["init", "begin", "abort"]
    assert consumer.seeks == [("posts", 1, -2)], "only the partition still owned is rewound"
    assert dropped == [True]
    delivery.tick()
    assert delivery.shutdown(1.0)
    assert producer.sent_offsets == [], "nothing of the aborted transaction, nor of the lost partition, committed"
    again = delivery.open_batch()
    delivery.close_batch(again, [("posts", 1, 2)])
    delivery.tick()
    assert producer.sent_offsets == [[("posts", 1, 3)]]


def test_losing_partitions_outside_a_transaction_aborts_nothing():
    producer, consumer = clients()
    delivery = eos(producer, consumer)
    delivery.lost([TopicPartition("posts", 0)])
    assert producer.calls == ["init"] and consumer.seeks == []
