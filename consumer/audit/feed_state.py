"""The feeds' state at a receipt's recorded positions, rebuilt from the feed topics with the service's own
appliers (consumer/optouts/applier.py, consumer/changes/applier.py, consumer/consents/applier.py) into
sets of the service's sizes (TF_OPTOUT_CAPACITY and the others: a Bloom filter answers from the set of
what was added, so the same sizes give the same answers, false positives included).

`FeedStore` holds the feed topics' records, read once, as each mirror reads them (the opt-out and change
mirrors every record, aborted ones too; the consent mirror committed records only). A `FeedState` applies
them up to a receipt's positions (every record of a partition before its `next_offset`, none after),
and goes forward only: a replica's receipts come with positions that never go back, so one state per
replica is advanced from receipt to receipt. `FeedPool` keeps a few, and hands out one at or before the
positions asked for (a new, empty one when none is: what is exact, whatever the order).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from consumer.changes.applier import ChangeApplier
from consumer.changes.changeset import ChangeSet
from consumer.consents.applier import ConsentApplier
from consumer.consents.fingerprints import ConsentSet
from consumer.consents.history import ConsentHistory
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations import logs
from consumer.operations.metrics import Metrics
from consumer.operations.settings import Settings
from consumer.optouts.applier import OptOutApplier
from consumer.optouts.filter import OptOutFilter
from consumer.wire.codec import Codec
from consumer.wire.held_record import HeldRecord

Position = tuple[str, str, int]  # feed, topic, partition
COMMITTED = {"optouts": False, "changes": False, "consents": True}  # how each mirror reads its topics
FEEDS = tuple(COMMITTED)


class FeedStore:
    """The records of the feed topics, by (committed only, topic, partition), in offset order."""

    def __init__(self) -> None:
        self.records: dict[tuple[bool, str, int], list[HeldRecord]] = {}
        self.offsets: dict[tuple[bool, str, int], list[int]] = {}

    def add(self, committed: bool, messages: Iterable[Any]) -> None:
        for msg in messages:
            key = (committed, msg.topic(), msg.partition())
            self.records.setdefault(key, []).append(HeldRecord.of(msg))
        for key, records in self.records.items():
            if key[0] == committed:
                records.sort(key=lambda m: m.offset())
                self.offsets[key] = [m.offset() for m in records]

    def between(self, committed: bool, topic: str, partition: int, start: int, end: int) -> list[HeldRecord]:
        """The records of offsets [start, end)."""
        key = (committed, topic, partition)
        offsets = self.offsets.get(key)
        if not offsets:
            return []
        return self.records[key][bisect_left(offsets, start) : bisect_left(offsets, end)]

    def partitions(self, committed: bool, topic: str) -> list[int]:
        return sorted(p for c, t, p in self.records if c == committed and t == topic)


@dataclass(frozen=True)
class _Mirror:
    members: Any
    applier: Any


@dataclass(frozen=True)
class StateFeeds:
    """What the service's Builder.processor reads of its Feeds: the sets (consumer/service/assemble.py)."""

    optouts: _Mirror
    changes: _Mirror
    consents: _Mirror | None
    gate: bool


class FeedState:
    """The three mirrors' sets, advanced by applying stored records up to given positions."""

    def __init__(
        self, settings: Settings, codec: Codec, pseudonymiser: Pseudonymiser, store: FeedStore, opt_in: bool
    ) -> None:
        s = settings
        self.store = store
        self.processors: dict[str, Any] = {}  # policy hash -> the batch processor deciding with these sets
        metrics = Metrics()
        log = logs.get("training_filter.audit_verify")
        self.optouts = OptOutApplier(
            OptOutFilter(s.optout_capacity, s.optout_fp_rate), s.revocations_topic, codec, pseudonymiser, metrics, log
        )
        changes = ChangeSet(s.changes_capacity, s.changes_fp_rate, s.account_corrections_capacity)
        self.changes = ChangeApplier(
            changes, s.content_changes_topic, codec, pseudonymiser, metrics, self.optouts.add, s.revocations_topic
        )
        self.consents = ConsentApplier(
            ConsentSet(s.consent_capacity),
            ConsentHistory(s.consent_withdrawals_capacity),
            codec,
            pseudonymiser,
            metrics,
            self.optouts.add if opt_in else None,
            s.revocations_topic if opt_in else None,
        )
        self.opt_in = opt_in
        self.positions: dict[Position, int] = {}
        self.replica = ""

    def at_or_before(self, target: dict[Position, int]) -> bool:
        return all(target.get(p, 0) >= o for p, o in self.positions.items())

    def advance(self, target: dict[Position, int]) -> None:
        """Apply every stored record below the target positions not applied yet, feed by feed."""
        appliers: dict[str, Any] = {"optouts": self.optouts, "changes": self.changes, "consents": self.consents}
        for (feed, topic, partition), end in sorted(target.items(), key=lambda x: (FEEDS.index(x[0][0]), x[0][1:])):
            start = self.positions.get((feed, topic, partition), 0)
            if end <= start:
                continue
            applier = appliers[feed]
            for msg in self.store.between(COMMITTED[feed], topic, partition, start, end):
                if not applier.record(msg, False):
                    raise LookupError(f"{topic} partition {partition} offset {msg.offset()}: its schema cannot be had")
            applier.batch_done(False)
            self.positions[feed, topic, partition] = end

    def feeds(self) -> StateFeeds:
        consents = _Mirror(self.consents.members, self.consents) if self.opt_in else None
        return StateFeeds(
            _Mirror(self.optouts.members, self.optouts),
            _Mirror(self.changes.members, self.changes),
            consents,
            self.opt_in,
        )


class FeedPool:
    """A few feed states; `state` hands out one that can go forward to the positions asked for."""

    def __init__(
        self, settings: Settings, codec: Codec, pseudonymiser: Pseudonymiser, store: FeedStore, most: int = 8
    ) -> None:
        self.settings, self.codec, self.pseudonymiser, self.store, self.most = (
            settings,
            codec,
            pseudonymiser,
            store,
            most,
        )
        self.states: list[FeedState] = []
        self.built = 0  # states started from empty (more than the replicas: positions went back)

    def state(self, replica: str, target: dict[Position, int], opt_in: bool) -> FeedState:
        usable = [s for s in self.states if s.opt_in == opt_in and s.at_or_before(target)]
        same = [s for s in usable if s.replica == replica]
        if same or usable:
            chosen = (same or sorted(usable, key=lambda s: -sum(s.positions.values())))[0]
            self.states.remove(chosen)
        else:
            chosen = FeedState(self.settings, self.codec, self.pseudonymiser, self.store, opt_in)
            self.built += 1
        chosen.advance(target)
        chosen.replica = replica
        self.states.insert(0, chosen)  # most recently used first
        del self.states[self.most :]
        return chosen
