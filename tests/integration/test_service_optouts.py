"""Opt-outs win: enforced for every record produced after the opt-out was acknowledged, and before
any input at start-up; each opt-out revoked once."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from confluent_kafka.admin import AdminClient

from consumer.devtools.topics import ensure_topics, service_topics
from consumer.wire.codec import OPTOUT, POST, REVOCATION, TRAINING_RECORD, Codec
from tests.harness import produce, pseudonym, read_all

pytestmark = pytest.mark.integration
CODEC = Codec()


def post(post_id: str, user: str) -> bytes:
    return CODEC.encode(
        POST,
        {
            "post_id": post_id,
            "author_id": user,
            "author_birth_date": 7000,
            "author_country": "SE",
            "visibility": "PUBLIC",
            "kind": "POST",
            "surface": "facebook",
            "language": "sv",
            "text": "hej " * 60,
            "created_at": int(dt.datetime(2026, 10, 1, tzinfo=dt.UTC).timestamp() * 1000),
        },
    )


def optout(user: str) -> bytes:
    return CODEC.encode(OPTOUT, {"user_id": user, "opted_out_at": 1_790_000_000_000, "source": "objection_form"})


def output_ids(kafka, topic: str) -> list[str]:
    return [CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"] for m in read_all(kafka.bootstrap, topic)]


def test_records_after_an_acknowledged_optout_are_dropped_and_revoked_once(kafka, topics, new_service):
    service = new_service().start()
    service.wait_ready()
    before = [(topics.posts, b"alice", post(f"before-{i}", "alice")) for i in range(20)]
    control = [(topics.posts, b"bob", post(f"bob-{i}", "bob")) for i in range(20)]
    produce(kafka.bootstrap, before + control)
    service.wait_processed(40)
    service.wait_settled()
    assert len([i for i in output_ids(kafka, topics.training) if i.startswith("before-")]) == 20

    # The opt-out is acknowledged; every record produced from now on must be dropped, at once.
    produce(kafka.bootstrap, [(topics.optouts, b"alice", optout("alice"))])
    for round_ in range(5):
        produce(
            kafka.bootstrap,
            [(topics.posts, b"alice", post(f"after-{round_}-{i}", "alice")) for i in range(40)]
            + [(topics.posts, b"bob", post(f"bob-after-{round_}-{i}", "bob")) for i in range(10)],
        )
    service.wait_processed(40 + 5 * 50)
    service.wait_settled()
    ids = output_ids(kafka, topics.training)
    assert not [i for i in ids if i.startswith("after-")], "a record produced after the opt-out was emitted"
    assert len([i for i in ids if i.startswith("bob-after-")]) == 50
    assert service.decisions()[("POST", "opted_out")] == 200

    revocations = [CODEC.decode(m.value(), REVOCATION)[1] for m in read_all(kafka.bootstrap, topics.revocations)]
    assert [r["author_pseudonym"] for r in revocations] == [pseudonym("alice")]
    assert service.metric_sum("training_filter_revocations_total") == 1
    assert service.metric_sum("training_filter_optout_filter_entries") == 1


def test_at_start_up_no_input_is_processed_before_the_optouts_are_read(kafka, topics, new_service):
    opted = [f"gone-{i}" for i in range(3000)]
    produce(kafka.bootstrap, [(topics.optouts, u.encode(), optout(u)) for u in opted])
    # Input is already waiting, opted-out users first, before the service exists.
    produce(
        kafka.bootstrap,
        [(topics.posts, u.encode(), post(f"x-{u}", u)) for u in opted[:1000]]
        + [(topics.posts, b"carol", post(f"carol-{i}", "carol")) for i in range(100)],
    )
    service = new_service().start()
    service.wait_ready()
    service.wait_processed(1100)
    service.wait_settled()
    ids = output_ids(kafka, topics.training)
    assert sorted(ids) == sorted(f"carol-{i}" for i in range(100))
    assert service.decisions()[("POST", "opted_out")] == 1000
    caught_up = [line for line in service.log_lines() if line.get("event") == "optout_feed_caught_up"]
    first_assignment = [i for i, line in enumerate(service.log_lines()) if line.get("event") == "partitions_assigned"]
    assert caught_up and caught_up[0]["entries"] == 3000
    assert first_assignment and service.log_lines().index(caught_up[0]) < first_assignment[0]


def test_tombstones_never_withdraw_an_optout(kafka, topics, new_service):
    produce(kafka.bootstrap, [(topics.optouts, b"dave", optout("dave")), (topics.optouts, b"dave", None)])
    service = new_service().start()
    service.wait_ready()
    produce(kafka.bootstrap, [(topics.posts, b"dave", post("dave-1", "dave"))])
    service.wait_processed(1)
    assert service.decisions() == {("POST", "opted_out"): 1}
    assert service.metric_sum("training_filter_optout_feed_records_total", result="tombstone_ignored") == 1


def test_undecodable_optout_falls_back_to_its_key(kafka, topics, new_service):
    produce(kafka.bootstrap, [(topics.optouts, b"erin", b"\x00\x00\x00\x00\x03\xff")])
    service = new_service().start()
    service.wait_ready()
    produce(kafka.bootstrap, [(topics.posts, b"erin", post("erin-1", "erin"))])
    service.wait_processed(1)
    assert service.decisions() == {("POST", "opted_out"): 1}


def test_an_optout_topic_recreated_while_running_is_read_again_from_its_beginning(kafka, topics, new_service):
    """The new topic's opt-outs sit at offsets below the feed's old position: without a re-read they
    would never be waited for, and their users' posts would be emitted."""
    produce(kafka.bootstrap, [(topics.optouts, f"old-{i}".encode(), optout(f"old-{i}")) for i in range(50)])
    service = new_service().start()
    service.wait_ready()

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap, "log_level": 3})
    for future in admin.delete_topics([topics.optouts]).values():
        future.result(30)
    deadline = time.monotonic() + 30
    while topics.optouts in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    ensure_topics(kafka.bootstrap, [s for s in service_topics(topics) if s.name == topics.optouts])
    produce(kafka.bootstrap, [(topics.optouts, b"carol", optout("carol"))])  # offset 0 of the new topic
    produce(
        kafka.bootstrap,
        [(topics.posts, b"carol", post(f"carol-{i}", "carol")) for i in range(30)]
        + [(topics.posts, b"dave", post(f"dave-{i}", "dave")) for i in range(30)],
    )
    service.wait_processed(60, timeout=90)
    service.wait_settled()
    ids = output_ids(kafka, topics.training)
    assert not [i for i in ids if i.startswith("carol-")], "the re-created topic's opt-out was skipped"
    assert len([i for i in ids if i.startswith("dave-")]) == 30
    assert any(line.get("event") == "optout_topic_shrank_rereading" for line in service.log_lines())
