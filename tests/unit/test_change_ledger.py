"""The change mirror reads the revocations topic (the ledger) back into its stopped records: a content
change that compaction removed from its topic (a tombstone after it) still stops its record, through
its `content/<record_id>` retraction; no other retraction stops a record id (consumer/changes/applier.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from consumer.changes import retractions as emitter
from consumer.changes.applier import ChangeApplier
from consumer.changes.changeset import ChangeSet
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations.metrics import Metrics
from consumer.wire.codec import REVOCATION
from rules import Retraction
from tests.fakes import Msg
from tests.service_fixture import CODEC, InProcessService, emitted_ids, feed, settings
from tests.unit.test_service_changes import content_change, eligible_posts, key_of, with_optouts

PSEUDONYM = b"a" * 64


def applier() -> tuple[ChangeApplier, Metrics]:
    metrics = Metrics()
    members = ChangeSet(10_000, 0.001, 100)
    kept: list[bytes] = []
    pseudonymiser = Pseudonymiser(b"h" * 32)
    return ChangeApplier(members, "content", CODEC, pseudonymiser, metrics, kept.extend, "revocations"), metrics


def ledger(key: bytes, value: bytes | None, timestamp: int = 5_000) -> Msg:
    return Msg("revocations", value, key, timestamp=timestamp)


def retraction(reason: Retraction, record_id: str | None = None, **fields: Any) -> bytes:
    return CODEC.encode(REVOCATION, {**emitter.value(reason, PSEUDONYM, 1_000, record_id=record_id), **fields})


def counted(metrics: Metrics, result: str) -> float:
    return metrics.change_records.labels(result)._value.get()


def test_a_content_retraction_in_the_ledger_stops_its_record_and_is_counted_as_such():
    a, metrics = applier()
    changes = ((Retraction.CONTENT_DELETED, "p-1"), (Retraction.MADE_NON_PUBLIC, "p-2"), (Retraction.EDITED, "p-3"))
    for reason, rid in changes:
        assert a.record(ledger(b"content/" + rid.encode(), retraction(reason, rid)), live=True)
    a.batch_done(live=True)
    assert all(a.members.stopped(rid) for rid in ("p-1", "p-2", "p-3"))
    assert not a.members.stopped("p-4")
    assert counted(metrics, "ledger_record_stopped") == 3
    assert counted(metrics, "record_stopped") == 0  # not a change record: its own result
    assert metrics.change_propagation._sum.get() == 0  # our own output: no change's propagation delay


def test_no_other_retraction_of_the_ledger_stops_a_record_id():
    a, metrics = applier()
    others = [
        (b"policy/p-1", retraction(Retraction.POLICY_CHANGED, "p-1")),  # a backfill may lift it
        (b"policy/p-2", retraction(Retraction.POLICY_CHANGED, "p-2", lifted=True)),
        (PSEUDONYM, retraction(Retraction.OPTED_OUT)),
        (b"account/" + PSEUDONYM, retraction(Retraction.ACCOUNT_DELETED)),
        (b"consent/" + PSEUDONYM, retraction(Retraction.CONSENT_WITHDRAWN)),
        (b"p-3", retraction(Retraction.CONTENT_DELETED, "p-3")),  # not keyed content/
        (b"content/p-4", retraction(Retraction.CONTENT_DELETED, "p-4", lifted=True)),
        (b"content/p-5", retraction(Retraction.CONTENT_DELETED, None)),  # AUTHOR scope
        (b"content/p-6", None),  # a tombstone
        (None, retraction(Retraction.CONTENT_DELETED, "p-7")),
    ]
    for key, value in others:
        assert a.record(ledger(key, value), live=True)  # type: ignore[arg-type]
    a.batch_done(live=True)
    assert a.members.records.entries == 0
    assert not any(a.members.stopped(f"p-{i}") for i in range(1, 8))
    assert sum(counted(metrics, r) for r in ("ledger_record_stopped", "ledger_undecodable_used_key")) == 0


def test_an_unreadable_content_retraction_stops_the_record_its_key_names():
    a, metrics = applier()
    assert a.record(ledger(b"content/p-1", b"\x00\x00\x00\x00\x0a not avro"), live=True)
    assert a.record(ledger(b"content/p-2", b"nonsense"), live=True)
    a.batch_done(live=True)
    assert a.members.stopped("p-1") and a.members.stopped("p-2")
    assert counted(metrics, "ledger_undecodable_used_key") == 2


def test_a_retraction_whose_record_id_differs_from_its_key_stops_both():
    a, _ = applier()
    a.record(ledger(b"content/p-1", retraction(Retraction.CONTENT_DELETED, "p-9")), live=True)
    assert a.members.stopped("p-1") and a.members.stopped("p-9")


def compacted_away(kafka: Any, record: Any) -> None:
    """What compaction leaves of a content change followed by a tombstone: the tombstone on the content
    topic, and the change's retraction in the ledger."""
    kafka.append("content-changes", None, record.record_id.encode(), partition=0)
    author = key_of(record.user_id).encode()
    value = emitter.value(Retraction.CONTENT_DELETED, author, 1_000, record_id=record.record_id)
    kafka.append("revocations", CODEC.encode(REVOCATION, value), b"content/" + record.record_id.encode(), 0)


def test_the_change_snapshot_names_the_revocations_topic_and_is_resumed_with_it(tmp_path: Path):
    kafka, records = with_optouts()
    late, other = eligible_posts(records)[:2]
    compacted_away(kafka, late)
    path = tmp_path / "changes.snapshot"
    s = settings(TF_CHANGES_SNAPSHOT_PATH=str(path))
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
    assert path.exists(), "a change snapshot is saved at stop"
    head = orjson.loads(path.read_bytes().split(b"\n", 1)[0])
    assert sorted(head["topic_ids"]) == ["account-changes", "content-changes", "revocations"]
    assert head["offsets"]["revocations"]
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        assert svc.metric("training_filter_optout_snapshots_total", operation="load", result="ok") >= 1
        kafka.append("content-changes", content_change(other.record_id, other.user_id), other.record_id.encode())
        feed(kafka, records)
        svc.wait(lambda: svc.metric("training_filter_records_total") == len(records), what="all decided")
    emitted = set(emitted_ids(kafka))
    assert late.record_id not in emitted and other.record_id not in emitted


def test_a_change_snapshot_of_the_change_topics_alone_is_not_resumed(tmp_path: Path):
    """A snapshot saved before the change mirror read the ledger holds no ledger offsets: it is not
    resumed, and the set is rebuilt from the topics, ledger included."""
    kafka, records = with_optouts()
    late = eligible_posts(records)[0]
    path = tmp_path / "changes.snapshot"
    s = settings(TF_CHANGES_SNAPSHOT_PATH=str(path))
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
    assert path.exists(), "a change snapshot is saved at stop"
    head_line, body = path.read_bytes().split(b"\n", 1)
    head = orjson.loads(head_line)
    for field in ("topic_ids", "offsets"):
        head[field].pop("revocations", None)
    path.write_bytes(orjson.dumps(head) + b"\n" + body)
    compacted_away(kafka, late)  # while it was down: after the snapshot's offsets
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        assert svc.log.fields("change_snapshot_not_used"), "an old snapshot is read again from the topics"
        feed(kafka, records)
        svc.wait(lambda: svc.metric("training_filter_records_total") == len(records), what="all decided")
        assert svc.metric("training_filter_change_feed_records_total", result="ledger_record_stopped") >= 1
    assert late.record_id not in set(emitted_ids(kafka))
