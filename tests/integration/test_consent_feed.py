"""The consent feed against the real broker, the feed classes themselves (no service process): what a
re-created consent topic leaves in the snapshots a restart loads, and in what order a user's grant
and withdrawal win when they sit in different partitions (a topic that grew maps a key elsewhere)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from consumer.consents import snapshot as consent_snapshot
from consumer.consents.applier import consent_mirror
from consumer.consents.fingerprints import ConsentSet
from consumer.consents.history import ConsentHistory
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.feeds.mirror import TopicMirror
from consumer.operations.clients import KafkaClients
from consumer.operations.metrics import Metrics
from consumer.optouts.filter import write_snapshot
from tests.harness import HMAC_KEY, pseudonym
from tests.integration.test_feed_sync import Log
from tests.integration.test_service_consents import CODEC, consent

pytestmark = pytest.mark.integration
PSEUDONYMISER = Pseudonymiser(HMAC_KEY)
COMPACTED = {"cleanup.policy": "compact", "retention.ms": "-1"}


def make_consent_feed(kafka: Any, topic: str, keep_out: Any = None) -> TopicMirror[Any]:
    return consent_mirror(
        KafkaClients(),
        {"bootstrap.servers": kafka.bootstrap, "group.id": "unused", "log_level": 3},
        topic,
        ConsentSet(10_000),
        ConsentHistory(10_000),
        CODEC,
        PSEUDONYMISER,
        Metrics(),
        Log(),
        keep_out,
    )


def caught_up(feed: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not feed.sync(1.0, everything=True):
        assert time.monotonic() < deadline, f"the feed did not catch up: {feed.last_error}"


def granted(feed: TopicMirror[Any], user: str) -> bool:
    return feed.members.contains(pseudonym(user).encode())


@pytest.fixture
def consent_topic(kafka: Any) -> Iterator[str]:
    name = f"consents-{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka.bootstrap, [TopicSpec(name, 2, COMPACTED)])
    yield name
    AdminClient({"bootstrap.servers": kafka.bootstrap}).delete_topics([name])


@pytest.fixture
def feeds() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for feed in made:
        feed.close()


def recreate(kafka: Any, topic: str, records: list[tuple[int, str, bool]]) -> None:
    """Delete the topic, create it again (2 partitions), and write (partition, user, granted) to it."""
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap, "log_level": 3})
    admin.delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, "the topic was not deleted"
        time.sleep(0.2)
    while True:
        try:
            ensure_topics(kafka.bootstrap, [TopicSpec(topic, 2, COMPACTED)])
            break
        except Exception:  # still being deleted on the broker
            assert time.monotonic() < deadline, "the topic could not be created again"
            time.sleep(0.5)
    write(kafka, topic, records)


def write(kafka: Any, topic: str, records: list[tuple[int, str, bool]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "log_level": 3})
    for partition, user, grant in records:
        producer.produce(topic, consent(user, grant), user.encode(), partition=partition)
    assert producer.flush(30) == 0


def save(feed: TopicMirror[Any], path: Path) -> None:
    """What the service's Snapshots.write saves of the consent feed (consumer/service/upkeep.py)."""
    with feed.lock:
        history = feed.applier.history
        header = consent_snapshot.header(
            feed.members, history, dict(feed.positions), feed.topic_ids, PSEUDONYMISER.key_check()
        )
        body = consent_snapshot.body(feed.members, history)
    write_snapshot(path, header, body)


def test_a_snapshot_after_a_recreation_still_tells_the_next_recreation_apart(kafka, consent_topic, feeds, tmp_path):
    """The topic is re-created while the feed runs (the feed reads it again), a snapshot is saved, and
    the topic is re-created once more while the service is down, with as many records as before. The
    restart must not resume from the snapshot: its set holds consents the topic no longer has."""
    write(kafka, consent_topic, [(p, f"first-{p}-{i}", True) for p in (0, 1) for i in range(10)])
    feed = make_consent_feed(kafka, consent_topic)
    feeds.append(feed)
    feed.start(None)
    caught_up(feed)
    first_id = feed.topic_ids[consent_topic]
    assert first_id

    recreate(kafka, consent_topic, [(0, "vera", True), (1, "walt", True)])  # fewer records: ends go back
    assert not feed.sync(1.0)  # the shrink is seen: the set is emptied and the topic read again
    caught_up(feed)
    assert granted(feed, "vera") and not granted(feed, "first-0-0")
    path = tmp_path / "consents.snapshot"
    save(feed, path)
    saved_ids = dict(feed.topic_ids)

    recreate(kafka, consent_topic, [(p, f"third-{p}-{i}", True) for p in (0, 1) for i in range(3)])
    loaded = consent_snapshot.load(path, 10_000, 10_000, [consent_topic], PSEUDONYMISER.key_check())
    restarted = consent_mirror(
        KafkaClients(),
        {"bootstrap.servers": kafka.bootstrap, "group.id": "unused", "log_level": 3},
        consent_topic,
        loaded.filter,  # type: ignore[arg-type]
        loaded.extra,
        CODEC,
        PSEUDONYMISER,
        Metrics(),
        Log(),
    )
    feeds.append(restarted)
    restarted.start(loaded.offsets, loaded.topic_ids)
    caught_up(restarted)
    assert not granted(restarted, "vera"), "a consent of a topic that no longer exists is still granted"
    assert restarted.reset_reason == f"topic {consent_topic} was re-created (its id changed)"
    assert saved_ids[consent_topic] is not None, "the snapshot lost the topic's id"
    assert granted(restarted, "third-0-0")


def test_emptying_the_set_waits_for_a_snapshot_under_way(kafka, consent_topic, feeds):
    """A snapshot holds the feed's lock while it copies the set and the offsets: the feed must not
    empty the set, or rewind the offsets, meanwhile (a snapshot would pair one with the other)."""
    write(kafka, consent_topic, [(p, f"user-{p}-{i}", True) for p in (0, 1) for i in range(10)])
    feed = make_consent_feed(kafka, consent_topic)
    feeds.append(feed)
    feed.start(None)
    caught_up(feed)
    before = dict(feed.positions)
    recreate(kafka, consent_topic, [(0, "late", True)])

    log: Log = feed.log
    with feed.lock:  # as Snapshots.write does
        syncing = threading.Thread(target=feed.sync, args=(1.0,), daemon=True)
        syncing.start()
        deadline = time.monotonic() + 10
        while not any(event == "consent_topic_shrank_rereading" for event, _ in log.events):
            assert time.monotonic() < deadline, "the feed did not see the topic shrink"
            time.sleep(0.01)
        time.sleep(0.5)  # the feed, if it did not wait, has emptied the set by now
        assert feed.members.entries == 20 and granted(feed, "user-0-0"), "the set was emptied under a snapshot"
        assert feed.positions == before, "the offsets were rewound under a snapshot"
    syncing.join(10)
    assert feed.members.entries == 0 and all(offset == 0 for offset in feed.positions.values())


# -- a grant and a withdrawal of one user in different partitions ---------------------------------------


def moved_keys(users: int) -> list[tuple[int, str, bool]]:
    """Each user's grant, then (later) their withdrawal in the other partition: the topic grew and
    the key now maps elsewhere. Half the users have the grant in partition 0, half in partition 1,
    so whichever partition the feed reads first, half the withdrawals are read before their grant."""
    grants = [(i % 2, f"moved-{i}", True) for i in range(users)]
    withdrawals = [(1 - i % 2, f"moved-{i}", False) for i in range(users)]
    return grants + withdrawals


def gated_feeds(kafka: Any, consent_topic: str, gate: bool) -> tuple[Any, Any]:
    """The feeds as the service assembles them: under an opt-in active policy (`gate`) a withdrawal
    also keeps its user out at once, through the opt-out mirror (consumer/service/assemble.py)."""
    from consumer.feeds.feeds import Feeds
    from consumer.optouts.applier import revoker
    from consumer.optouts.filter import OptOutFilter
    from tests.integration.test_feed_sync import make_feed

    tag = uuid.uuid4().hex[:10]
    optouts, ledger = f"optouts-{tag}", f"revocations-{tag}"
    ensure_topics(kafka.bootstrap, [TopicSpec(optouts, 1, COMPACTED), TopicSpec(ledger, 1, COMPACTED)])
    optout_feed = make_feed(kafka, optouts, ledger)
    assert isinstance(optout_feed.members, OptOutFilter)
    keep_out = revoker(optout_feed.lock, optout_feed.applier) if gate else None
    consent_feed = make_consent_feed(kafka, consent_topic, keep_out)
    optout_feed.start(None)
    consent_feed.start(None)
    return Feeds(optout_feed, consent_feed, gate=gate, log=Log()), (optouts, ledger)


def emitted_under_opt_in(feeds: Any, user: str) -> bool:
    """What the opt-in rules decide of an otherwise eligible record (rules/decision.py): the opt-out
    check first, then the consent."""
    key = pseudonym(user).encode()
    return not feeds.optouts.members.contains(key) and feeds.consents.members.contains(key)


def test_a_withdrawal_wins_over_an_earlier_grant_in_another_partition(kafka, consent_topic, feeds):
    """Opt-in active policy: no user who withdrew is admitted, whatever order the feed read the two
    records in (no revocation is read back here: the withdrawal itself must be enough). The consent
    history knows the withdrawal, so a grant read after it, no newer, is stale and ignored; nobody is
    put in the opt-out filter (a withdrawal is not for good: a later grant may admit again)."""
    users = 40
    write(kafka, consent_topic, moved_keys(users))
    gated, _ = gated_feeds(kafka, consent_topic, gate=True)
    feeds.append(gated)
    caught_up(gated)
    misread = [u for u in range(users) if granted(gated.consents, f"moved-{u}")]
    admitted = [u for u in range(users) if emitted_under_opt_in(gated, f"moved-{u}")]
    assert not admitted, f"{len(admitted)} users who withdrew are admitted ({len(misread)} read grant-last)"
    assert not misread, "a grant no newer than the withdrawal read before it was applied"
    assert gated.optouts.members.entries == 0
    assert len(gated.consents.applier.history) == users


def test_under_a_shadow_only_opt_in_policy_withdrawals_leave_the_optout_filter_alone(kafka, consent_topic, feeds):
    """The consents are read for the shadow candidate only: what the active (opt-out) policy emits
    must not change, so a withdrawal puts nobody into the opt-out filter."""
    write(kafka, consent_topic, moved_keys(10))
    gated, _ = gated_feeds(kafka, consent_topic, gate=False)
    feeds.append(gated)
    caught_up(gated)
    deadline = time.monotonic() + 10
    while gated.consents.caught_up_at is None:  # the consents are read without gating, in the background
        assert time.monotonic() < deadline
        gated.sync(1.0)
        time.sleep(0.1)
    assert gated.consents.positions and all(offset == 10 for offset in gated.consents.positions.values())
    assert gated.optouts.members.entries == 0
