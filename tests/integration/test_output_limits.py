"""Output size limits against the real broker: the service reads the output topics' limits at
start-up, and a record the broker refuses later (a topic limit lowered while it runs) becomes a dead
letter instead of stopping the service, in both guarantees."""

from __future__ import annotations

import base64
import datetime as dt
import os
import time

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from consumer.wire.codec import POST, TRAINING_RECORD, Codec
from tests.harness import produce, read_all

pytestmark = pytest.mark.integration
CODEC = Codec()


def post(post_id: str, text_bytes: int) -> bytes:
    return CODEC.encode(
        POST,
        {
            "post_id": post_id,
            "author_id": f"author-{post_id}",
            "author_birth_date": 7000,
            "author_country": "SE",
            "visibility": "PUBLIC",
            "kind": "POST",
            "surface": "facebook",
            "language": "sv",
            # Random text: lz4 cannot shrink it, so the broker sees (about) its full size.
            "text": base64.b64encode(os.urandom(text_bytes))[:text_bytes].decode(),
            "created_at": int(dt.datetime(2026, 10, 1, tzinfo=dt.UTC).timestamp() * 1000),
        },
    )


def set_max_message_bytes(bootstrap: str, topic: str, value: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET)],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def test_start_up_reads_the_output_topics_limits(kafka, topics, new_service):
    set_max_message_bytes(kafka.bootstrap, topics.training, 300_000)
    service = new_service(TF_PROCESSING_GUARANTEE="at-least-once").start()
    service.wait_ready()
    (warning,) = [line for line in service.log_lines() if line.get("event") == "output_limits_lower_the_input_limit"]
    assert 250_000 < warning["input_max_bytes"] < 300_000
    assert warning["topic_max_message_bytes"][topics.training] == 300_000
    # An input the training topic could not take is a dead letter (oversized), decided at once.
    produce(kafka.bootstrap, [(topics.posts, b"a", post("fits", 1000)), (topics.posts, b"b", post("too-big", 299_000))])
    service.wait_processed(2)
    service.wait_settled()
    assert [
        CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"] for m in read_all(kafka.bootstrap, topics.training)
    ] == ["fits"]
    (letter,) = read_all(kafka.bootstrap, topics.dlq)
    assert dict(letter.headers())["tf.cause"] == b"oversized"
    assert service.metric_sum("training_filter_dlq_records_total", cause="oversized") == 1


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_a_record_the_broker_refuses_later_is_dead_lettered_and_the_service_goes_on(
    kafka, topics, new_service, guarantee
):
    service = new_service(TF_PROCESSING_GUARANTEE=guarantee).start()
    service.wait_ready()
    produce(kafka.bootstrap, [(topics.posts, b"a", post("before", 1000))])
    service.wait_processed(1)
    service.wait_settled()
    # The topic's limit drops below what the service read at start-up: the broker refuses the record.
    set_max_message_bytes(kafka.bootstrap, topics.training, 100_000)
    produce(kafka.bootstrap, [(topics.posts, b"b", post("refused", 200_000))])
    produce(kafka.bootstrap, [(topics.posts, b"c", post("after", 1000))])
    expected = {"before", "after"}
    deadline = time.monotonic() + 60
    ids: list[str] = []
    while time.monotonic() < deadline:
        ids = [
            CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"] for m in read_all(kafka.bootstrap, topics.training)
        ]
        if expected <= set(ids) and read_all(kafka.bootstrap, topics.dlq):
            break
        time.sleep(0.5)
    assert set(ids) == expected, ids
    if guarantee == "exactly-once":
        assert len(ids) == len(set(ids)), "the aborted transaction's re-reading repeated a record"
    letters = read_all(kafka.bootstrap, topics.dlq)
    assert len(letters) == 1
    headers = dict(letters[0].headers())
    assert letters[0].value() is None
    if guarantee == "at-least-once":
        # Refused in a delivery report: written once more, refused again, then a headers-only letter.
        assert headers["tf.cause"] == b"output_rejected" and headers["tf.error"] == b"MSG_SIZE_TOO_LARGE"
    else:
        # The transaction is aborted; the limits are read again, so the second reading finds it oversized.
        assert headers["tf.cause"] == b"oversized"
    assert headers["tf.truncated"] == b"key,value,headers"
    assert service.process is not None and service.process.poll() is None, "the service stopped"
    assert service.metric_sum("training_filter_produce_errors_total") >= 1
    assert service.stop() == 0
