"""Issue 22 through the real broker, under both guarantees: a deletion published before its record
stops it, a deletion after emission retracts it by record id, an account deletion retracts its author
for good and refuses what comes later, and a restart resumes the change set from its snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.wire.codec import ACCOUNT_CHANGE, CONTENT_CHANGE, REVOCATION, TRAINING_RECORD, Codec
from tests.harness import produce, pseudonym, read_all
from tests.integration.test_service_optouts import post

pytestmark = pytest.mark.integration
CODEC = Codec()
AT = 1_790_000_000_000


def deleted(record_id: str, user: str) -> bytes:
    change = {"record_id": record_id, "user_id": user, "change": "DELETED", "at": AT, "source": "post_service"}
    return CODEC.encode(CONTENT_CHANGE, change)


def account_deleted(user: str) -> bytes:
    change = {"user_id": user, "deleted": True, "birth_date": None, "country": "SE", "at": AT, "source": "erasure"}
    return CODEC.encode(ACCOUNT_CHANGE, change)


def output_ids(kafka: Any, topic: str) -> list[str]:
    return [CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"] for m in read_all(kafka.bootstrap, topic)]


def retractions(kafka: Any, topic: str) -> dict[bytes, dict[str, Any]]:
    return {m.key(): CODEC.decode(m.value(), REVOCATION)[1] for m in read_all(kafka.bootstrap, topic)}


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_changes_stop_what_comes_later_and_retract_what_was_emitted(kafka, topics, new_service, guarantee, tmp_path):
    service = new_service(
        TF_PROCESSING_GUARANTEE=guarantee,
        TF_CHANGES_SNAPSHOT_PATH=str(tmp_path / "changes.snapshot"),
        TF_OPTOUT_SNAPSHOT_PATH=str(tmp_path / "optouts.snapshot"),
    ).start()
    service.wait_ready()
    # Deleted before its record is read: the order race. And a record emitted, then deleted.
    produce(kafka.bootstrap, [(topics.content_changes, b"early", deleted("early", "ann"))])
    produce(kafka.bootstrap, [(topics.posts, b"ann", post(i, "ann")) for i in ("early", "kept", "late")])
    service.wait_processed(3)
    service.wait_settled()
    assert sorted(output_ids(kafka, topics.training)) == ["kept", "late"]
    produce(kafka.bootstrap, [(topics.content_changes, b"late", deleted("late", "ann"))])
    produce(kafka.bootstrap, [(topics.account_changes, b"bea", account_deleted("bea"))])
    produce(
        kafka.bootstrap, [(topics.posts, b"bea", post("bea-1", "bea")), (topics.posts, b"ann", post("late", "ann"))]
    )
    service.wait_processed(5)
    service.wait_settled()
    assert sorted(set(output_ids(kafka, topics.training))) == ["kept", "late"], "nothing new: both stopped"
    assert service.decisions()[("POST", "content_changed")] == 2
    assert service.decisions()[("POST", "account_deleted")] == 1

    got = retractions(kafka, topics.revocations)
    assert (got[b"content/early"]["scope"], got[b"content/early"]["reason"]) == ("RECORD", "content_deleted")
    assert got[b"content/late"]["record_id"] == "late"
    gone = got[b"deleted/" + pseudonym("bea").encode()]
    assert (gone["scope"], gone["reason"], gone["author_pseudonym"]) == ("AUTHOR", "account_deleted", pseudonym("bea"))

    # A restart resumes the change set from the snapshot written at shutdown, and still stops both.
    assert service.stop() == 0
    service.start()
    service.wait_ready()
    assert "change_snapshot_loaded" in [line.get("event") for line in service.log_lines()]
    produce(
        kafka.bootstrap, [(topics.posts, b"ann", post("early", "ann")), (topics.posts, b"bea", post("bea-2", "bea"))]
    )
    service.wait_processed(2)
    service.wait_settled()
    assert sorted(set(output_ids(kafka, topics.training))) == ["kept", "late"]
