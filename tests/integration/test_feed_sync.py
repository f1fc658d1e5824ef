"""The opt-out feed's sync against the real broker, the feed class itself (no service process):
a sync that has its end offsets makes progress whatever its budget, an end it did not reach is read
on to by the next syncs, and a start from a snapshot asks the broker once, not once per partition.

(The request counts and the times behind a slow link are in the fault suite:
tests/faults/scale_scenarios.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.datapath.pseudonym import Pseudonymiser
from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.feeds.mirror import TopicMirror
from consumer.operations.clients import KafkaClients
from consumer.operations.metrics import Metrics
from consumer.optouts.applier import optout_mirror
from consumer.optouts.filter import OptOutFilter
from tests.harness import HMAC_KEY, produce
from tests.integration.test_service_optouts import CODEC, optout

pytestmark = pytest.mark.integration


class Log:
    """The feed's logger: keeps the events (names and fields carry no personal data)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.events.append((event, fields))


def make_feed(kafka: Any, optouts: str, ledger: str) -> TopicMirror[Any]:
    return optout_mirror(
        KafkaClients(),
        {"bootstrap.servers": kafka.bootstrap, "group.id": "unused", "log_level": 3},
        optouts,
        ledger,
        OptOutFilter(100_000, 0.001),
        CODEC,
        Pseudonymiser(HMAC_KEY),
        Metrics(),
        Log(),
    )


@pytest.fixture
def topics(kafka: Any) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    names = (f"optouts-{tag}", f"revocations-{tag}")
    ensure_topics(kafka.bootstrap, [TopicSpec(names[0], 8, {}), TopicSpec(names[1], 2, {})])
    return names


@pytest.fixture
def feeds() -> Iterator[list[TopicMirror[Any]]]:
    made: list[TopicMirror[Any]] = []
    yield made
    for feed in made:
        feed.close()


def fill(kafka: Any, topic: str, count: int, prefix: str = "user") -> None:
    produce(kafka.bootstrap, ((topic, f"{prefix}-{i}".encode(), optout(f"{prefix}-{i}")) for i in range(count)))


def test_syncs_without_any_time_left_still_make_progress_and_converge(kafka, topics, feeds):
    """A budget of 0 s: each sync still gets its end offsets and consumes once, and the positions
    carry over, so some sync completes (the old sync gave up before its first consume, every time)."""
    optouts, ledger = topics
    fill(kafka, optouts, 20_000)
    feed = make_feed(kafka, optouts, ledger)
    feeds.append(feed)
    feed.start(None)
    progress = []
    for _ in range(300):
        if feed.sync(0.0, everything=True):
            break
        progress.append(sum(feed.positions.values()))
    else:
        pytest.fail(f"300 syncs without time left did not complete; positions went {progress[:5]} ... {progress[-3:]}")
    assert feed.members.entries == 20_000
    assert progress == sorted(progress), "a sync lost ground"
    assert feed.last_error is None


def test_an_end_not_reached_stays_the_goal_until_a_sync_reaches_it(kafka, topics, feeds):
    """The first sync's end offsets are kept (the same target, not a new one each sync) while the
    topic grows, and reaching them confirms the time that first sync started."""
    optouts, ledger = topics
    fill(kafka, optouts, 30_000)
    feed = make_feed(kafka, optouts, ledger)
    feeds.append(feed)
    feed.start(None)
    assert not feed.sync(0.0, everything=True), "30,000 opt-outs in one consume: make the test's topic larger"
    first = feed.pending
    assert first is not None and first.asked_at <= feed.clock()
    assert sum(first.ends.values()) == 30_000
    fill(kafka, optouts, 500, prefix="later")  # the topic moves on: a new end each sync
    targets = []
    for _ in range(300):
        targets.append(feed.pending)
        if feed.sync(0.0, everything=True):
            break
    else:
        pytest.fail("the syncs did not reach the first end offsets")
    assert all(t is first for t in targets), "the goal moved before it was reached"
    assert feed.caught_up_at is not None and feed.caught_up_at >= first.asked_at
    assert all(feed.positions[tp] >= end for tp, end in first.ends.items())
    # The later opt-outs are read by the syncs that follow.
    for _ in range(300):
        if feed.sync(0.0, everything=True) and feed.members.entries == 30_500:
            break
    assert feed.members.entries == 30_500


def test_a_start_from_a_snapshot_checks_every_partition_and_refuses_offsets_beyond_an_end(kafka, topics, feeds):
    optouts, ledger = topics
    fill(kafka, optouts, 200)
    feed = make_feed(kafka, optouts, ledger)
    feeds.append(feed)
    feed.start(None)
    while not feed.sync(1.0, everything=True):
        pass
    saved = dict(feed.positions)

    resumed = make_feed(kafka, optouts, ledger)
    feeds.append(resumed)
    resumed.start(saved, dict(feed.topic_ids))
    assert resumed.reset_reason is None
    assert resumed.positions == saved

    partition = max((tp for tp in saved if tp[0] == optouts), key=lambda tp: saved[tp])
    ahead = {**saved, partition: saved[partition] + 1}
    refused = make_feed(kafka, optouts, ledger)
    feeds.append(refused)
    refused.start(ahead, dict(feed.topic_ids))
    assert refused.reset_reason == (
        f"the snapshot's offset of {partition[0]}/{partition[1]} is beyond its end (truncated or re-created)"
    )
    assert all(offset == 0 for offset in refused.positions.values())
