"""Fault scenarios of issue 22: retractions while the service is killed, rebalanced, or cut off from
the change topics, under both guarantees; and a change that compaction removed, for a fresh replica.

Each builds a stream, publishes content and account changes during the fault (some for records
already emitted, some for records not yet read: the order race), and checks a reader's table against
the truth. The table is what a reader holds after applying the whole revocations topic as
docs/retractions.md#what-a-reader-does says (the latest retraction of a key is in force: a RECORD one
removes its record, an AUTHOR one its author's records created before `created_before`, or all). The
truth is the stream's eligible records minus the changed records and the deleted accounts' records.
A scenario passes when the table holds no record the truth no longer allows and misses none it allows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import signal
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (
    AdminClient,
)

from consumer.devtools.generator import Generated
from consumer.devtools.local_kafka import LocalKafka
from consumer.wire.codec import ACCOUNT_CHANGE, CONTENT_CHANGE, REVOCATION, TRAINING_RECORD
from tests.faults.scenarios import (
    CODEC,
    FAST_FAILOVER,
    Feeder,
    Row,
    _stream,
    _watch_outage,
    check_output,
    grant,
    revoke_topic,
    secure_env,
    wait_for_output,
)
from tests.harness import ServiceProcess, Topics, produce, pseudonym, read_all

AT = 1_790_000_000_000
KINDS = ("DELETED", "MADE_NON_PUBLIC", "EDITED")


class Changes:
    """Content changes for a share of the eligible records and account deletions for a few users."""

    def __init__(self, stream: list[Generated], rng: random.Random, share: float = 0.3, accounts: int = 4) -> None:
        eligible = [g for g in stream if g.expected == "eligible"]
        self.records = {g.record_id: g for g in rng.sample(eligible, int(len(eligible) * share))}
        authors = sorted({g.user_id for g in eligible if g.record_id not in self.records and g.user_id})
        self.users = set(rng.sample(authors, min(accounts, len(authors))))
        self.rng = rng

    def messages(self, topics: Topics) -> list[tuple[str, bytes, bytes]]:
        out = []
        for record_id, g in self.records.items():
            change = {
                "record_id": record_id,
                "user_id": g.user_id,
                "change": self.rng.choice(KINDS),
                "replaced_by": None,
                "at": AT,
                "source": "fault-scenario",
            }
            out.append((topics.content_changes, record_id.encode(), CODEC.encode(CONTENT_CHANGE, change)))
        for user in sorted(self.users):
            account = {"user_id": user, "deleted": True, "birth_date": None, "country": "DE", "at": AT, "source": "f"}
            out.append((topics.account_changes, user.encode(), CODEC.encode(ACCOUNT_CHANGE, account)))
        self.rng.shuffle(out)
        return out

    def truth(self, stream: list[Generated]) -> set[str]:
        return {
            g.record_id
            for g in stream
            if g.expected == "eligible" and g.record_id not in self.records and g.user_id not in self.users
        }

    @property
    def retraction_keys(self) -> set[bytes]:
        keys = {b"content/" + rid.encode() for rid in self.records}
        return keys | {b"deleted/" + pseudonym(u).encode() for u in self.users}


def reader_table(bootstrap: str, topics: Topics) -> tuple[set[str], int]:
    """(the record ids a reader holds after applying every retraction in force, duplicates read)."""
    emitted: dict[str, tuple[str, int]] = {}
    count = 0
    for m in read_all(bootstrap, topics.training):
        r = CODEC.decode_own(m.value(), TRAINING_RECORD)
        emitted[r["record_id"]] = (r["author_pseudonym"], _ms(r["created_at"]))
        count += 1
    in_force: dict[bytes, dict[str, Any]] = {}
    for m in read_all(bootstrap, topics.revocations):
        in_force[m.key()] = CODEC.decode_own(m.value(), REVOCATION)
    table = set(emitted)
    for r in in_force.values():
        if r["lifted"]:
            continue
        if r["scope"] == "RECORD":
            table.discard(r["record_id"])
            continue
        before = _ms(r["created_before"]) if r["created_before"] is not None else None
        table -= {
            rid
            for rid, (who, at) in emitted.items()
            if who == r["author_pseudonym"] and (before is None or at < before)
        }
    return table, count - len(emitted)


def retraction_keys(bootstrap: str, topics: Topics) -> set[bytes]:
    return {m.key() for m in read_all(bootstrap, topics.revocations)}


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if isinstance(value, dt.datetime) else int(value)


def _row(name: str, bootstrap: str, topics: Topics, stream: list[Generated], changes: Changes, dup_ok: bool) -> Row:
    truth = changes.truth(stream)
    table, duplicates = reader_table(bootstrap, topics)
    row = Row(
        name, len(stream), len(truth), len(table & truth), len(table - truth), len(truth - table), duplicates, dup_ok
    )
    missing = changes.retraction_keys - retraction_keys(bootstrap, topics)
    if missing:
        row.failures.append(f"{len(missing)} changes were never retracted")
    row.notes.append(f"{len(changes.records)} content changes, {len(changes.users)} accounts deleted")
    return row


def _wait(bootstrap: str, topics: Topics, stream: list[Generated], changes: Changes, timeout: float) -> None:
    """Until the table equals the truth and every change is retracted (or the time is up: the row says)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table, _ = reader_table(bootstrap, topics)
        if table == changes.truth(stream) and changes.retraction_keys <= retraction_keys(bootstrap, topics):
            return
        time.sleep(1)


def _service(
    broker: LocalKafka, topics: Topics, workdir: Path, guarantee: str, group: str | None = None, **extra: str
) -> ServiceProcess:
    env = {**FAST_FAILOVER, "TF_PROCESSING_GUARANTEE": guarantee, "TF_BATCH_SIZE": "300", "TF_LOG_LEVEL": "info"}
    service = ServiceProcess(broker.bootstrap, topics, workdir, env_overrides={**env, **extra})
    if group is not None:
        service.group = group  # replicas of one group
    return service


# -- scenarios ----------------------------------------------------------------------------------------


def kill_nine_in_a_retraction_burst(
    broker: LocalKafka, workdir: Path, records: int, kills: int, guarantee: str, seed: int = 21
) -> Row:
    """Half the stream is emitted; then the rest and a burst of changes arrive while the service is
    killed with SIGKILL at random moments and restarted each time (its snapshots on)."""
    rng = random.Random(seed)
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    changes = Changes(stream, rng)
    service = _service(
        broker,
        topics,
        workdir,
        guarantee,
        TF_OPTOUT_SNAPSHOT_PATH=str(workdir / f"optouts-{topics.posts}"),
        TF_CHANGES_SNAPSHOT_PATH=str(workdir / f"changes-{topics.posts}"),
        TF_OPTOUT_SNAPSHOT_INTERVAL_SECONDS="1",
    )
    service.start().wait_ready()
    half = len(stream) // 2
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[:half]))
    service.wait_processed(half)
    produce(broker.bootstrap, changes.messages(topics))  # the changes first, then the rest of the stream
    burst = Feeder(broker.bootstrap, stream[half:], seconds=kills * 1.5)
    burst.start()
    killed = 0
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 2.0))
        service.stop(signal.SIGKILL)
        killed += 1
        service.start().wait_ready(90)
    burst.join(120)
    _wait(broker.bootstrap, topics, stream, changes, timeout=90)
    service.wait_settled(60)
    service.stop()
    row = _row(
        f"changes: kill -9 x{killed} in a retraction burst ({guarantee})",
        broker.bootstrap,
        topics,
        stream,
        changes,
        dup_ok=guarantee == "at-least-once",
    )
    if burst.error:
        row.failures.append(f"feeder: {burst.error}")
    return row


def rebalance_with_changes(broker: LocalKafka, workdir: Path, records: int, guarantee: str, seed: int = 22) -> Row:
    """A second replica joins while changes arrive and leaves again: each change is retracted by
    whichever replica the group gives its partition, and both stop what it concerns."""
    rng = random.Random(seed)
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    changes = Changes(stream, rng)
    group = f"tf-{topics.posts}"
    first = _service(broker, topics, workdir, guarantee, group, TF_TRANSACTIONAL_ID=f"{group}-a")
    second = _service(broker, topics, workdir, guarantee, group, TF_TRANSACTIONAL_ID=f"{group}-b")
    first.start().wait_ready()
    feeder = Feeder(broker.bootstrap, stream, seconds=8)
    feeder.start()
    time.sleep(2)
    second.start().wait_ready()
    produce(broker.bootstrap, changes.messages(topics))
    time.sleep(3)
    shared = second.metric_sum("training_filter_records_total")
    assert second.stop() == 0
    feeder.join(120)
    _wait(broker.bootstrap, topics, stream, changes, timeout=90)
    first.wait_settled(60)
    first.stop()
    row = _row(
        f"changes: a replica joins and leaves ({guarantee})", broker.bootstrap, topics, stream, changes, dup_ok=False
    )
    if not shared:
        row.failures.append("the second replica processed nothing: no rebalance was exercised")
    return row


def change_feed_outage(
    broker: LocalKafka, workdir: Path, records: int, outage_seconds: float = 6.0, seed: int = 23
) -> Row:
    """The content change topic's READ permission is revoked mid-stream: input pauses (fail closed,
    as for the opt-out feed), nothing is emitted while it is out, and once it is back every change
    published during the outage stops its records and is retracted."""
    rng = random.Random(seed)
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    group = f"tf-{topics.posts}"
    grant(admin, topics, group)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    changes = Changes(stream, rng)
    bound = 2.0
    service = ServiceProcess(
        broker.secure_bootstrap,
        topics,
        workdir,
        group=group,
        env_overrides={**secure_env(broker), "TF_OPTOUT_MAX_LAG_SECONDS": str(bound), "TF_LOG_LEVEL": "info"},
    )
    service.start().wait_ready(90)
    half = len(stream) // 2
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[:half]))
    service.wait_processed(half)
    revoke_topic(admin, topics.content_changes)
    started = time.monotonic()
    produce(broker.bootstrap, changes.messages(topics))
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[half:]))
    paused_at, ready_failed_at = _watch_outage(service, started, outage_seconds)
    during = len(read_all(broker.bootstrap, topics.training))
    time.sleep(1.0)
    later = len(read_all(broker.bootstrap, topics.training))
    grant(admin, topics, group)
    _wait(broker.bootstrap, topics, stream, changes, timeout=90)
    service.wait_settled(60)
    service.stop()
    row = _row(
        f"changes: change topic unreadable for {outage_seconds:.0f} s",
        broker.bootstrap,
        topics,
        stream,
        changes,
        dup_ok=True,
    )
    if paused_at is None or paused_at > bound + 2:
        row.failures.append(f"input did not pause within the {bound} s bound (paused at {paused_at})")
    if ready_failed_at is None:
        row.failures.append("/readyz stayed 200 during the outage")
    if later != during:
        row.failures.append("records were emitted while the change feed was out")
    return row


def change_compacted_away_then_fresh_replica(broker: LocalKafka, workdir: Path, records: int, seed: int = 24) -> Row:
    """Content changes, then a tombstone of each one's key; compaction leaves the tombstones alone on the
    content topic (a fast-compacting one). A fresh replica (no snapshot: it rebuilds its change set from
    the topics) must still stop the changed records, which arrive only now: their `content/` retractions
    in the revocations topic (the ledger) are all that remembers the changes. A reader's table would
    hide an emitted one (its retraction drops it): what is checked is that none is emitted."""
    rng = random.Random(seed)
    topics = Topics.unique(broker.bootstrap, compacting_changes=True)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    changes = Changes(stream, rng, share=0.05, accounts=0)
    group = f"tf-{topics.posts}"
    first = _service(broker, topics, workdir, "at-least-once", group)
    first.start().wait_ready()
    produce(broker.bootstrap, changes.messages(topics))
    deadline = time.monotonic() + 60
    while not changes.retraction_keys <= retraction_keys(broker.bootstrap, topics):
        if time.monotonic() > deadline:
            raise AssertionError("the content changes were not retracted within 60 s")
        time.sleep(0.5)
    produce(broker.bootstrap, [(topics.content_changes, rid.encode(), None) for rid in changes.records])
    assert first.stop() == 0
    kept = _compact_away(broker, topics, set(changes.records))

    second = _service(broker, topics, workdir, "at-least-once", group)  # no snapshot: rebuilt from the topics
    second.start().wait_ready()
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream))
    changed = dataclasses.replace
    marked = [changed(g, expected="content_changed") if g.record_id in changes.records else g for g in stream]
    wait_for_output(broker.bootstrap, topics.training, marked, timeout=60)
    second.wait_settled(60)
    from_ledger = second.metric_sum("training_filter_change_feed_records_total", result="ledger_record_stopped")
    refused = second.metric_sum("training_filter_records_total", decision="content_changed")
    code = second.stop()
    row = check_output("changes: compacted away, then a fresh replica", broker.bootstrap, topics.training, marked, True)
    if code != 0:
        row.failures.append(f"the fresh replica did not stop cleanly (exit status {code})")
    if from_ledger < len(changes.records):
        row.failures.append(f"the fresh replica read {int(from_ledger)} content retractions from the ledger")
    if refused < len(changes.records):
        row.failures.append(f"the fresh replica refused {int(refused)} records content_changed")
    row.notes.append(
        f"{len(changes.records)} changes compacted away ({kept} tombstones left); the fresh replica read "
        f"{int(from_ledger)} from the ledger and refused {int(refused)} records content_changed"
    )
    return row


def _compact_away(broker: LocalKafka, topics: Topics, record_ids: set[str], timeout: float = 90.0) -> int:
    """Until compaction has removed every change of `record_ids` from the content topic (their tombstones
    may remain); the number of tombstones left. The cleaner takes closed segments only: fillers roll them
    (segment.ms is 100 ms on this topic)."""
    keys = {rid.encode() for rid in record_ids}
    filler = {"record_id": "filler", "user_id": "filler", "change": "DELETED", "replaced_by": None, "at": AT}
    filler_value = CODEC.encode(CONTENT_CHANGE, {**filler, "source": "fault-scenario"})
    deadline = time.monotonic() + timeout
    while True:
        produce(broker.bootstrap, [(topics.content_changes, b"filler", filler_value)])
        left = [m for m in read_all(broker.bootstrap, topics.content_changes) if m.key() in keys]
        if all(m.value() is None for m in left):
            return len(left)
        if time.monotonic() > deadline:
            raise AssertionError(f"compaction did not remove the content changes in {timeout:.0f} s")
        time.sleep(1.0)
