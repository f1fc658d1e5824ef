"""The real broker: create a topic, produce a framed Avro record, consume and decode it."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.wire.codec import POST, Codec
from tests import samples

pytestmark = pytest.mark.integration


def test_framed_avro_record_through_the_real_broker(kafka, topic_name):
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    futures = admin.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)])
    futures[topic_name].result(timeout=30)
    assert topic_name in admin.list_topics(timeout=10).topics

    codec = Codec()
    value = codec.encode(POST, samples.POST)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    delivered = []
    producer.produce(topic_name, key=b"u-1", value=value, on_delivery=lambda err, msg: delivered.append((err, msg)))
    assert producer.flush(30) == 0
    assert delivered and delivered[0][0] is None

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"g-{topic_name}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic_name])
    try:
        msg = None
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                break
        assert msg is not None and msg.error() is None, "no record came back from the broker"
        assert msg.key() == b"u-1"
        assert msg.value() == value
        schema_id, record = codec.decode(msg.value(), POST)
        assert schema_id == 1
        assert record["post_id"] == "p-1" and record["text"] == samples.POST["text"]
    finally:
        consumer.close()
