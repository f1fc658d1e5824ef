"""A mirror of a compacted topic: every partition of it (and of an optional ledger topic) read into an
in-memory set, synced to the topics' end offsets before input is decided. What a record does to the
set is its `Applier`'s: consumer/optouts/applier.py (opt-outs into the Bloom filter, the revocations
ledger too) and consumer/consents/applier.py (grants and withdrawals into the consent set). One
mechanism, two appliers, by composition.

A feed is assigned every partition (no consumer group: each replica needs every record) and never
commits; its position lives in its set's snapshot. `sync()` asks the broker for the topic's
partitions and their current end offsets, and reads until it has reached them. What it reads, and
so which end offsets, is the mirror's isolation (`read_committed`):

- read_uncommitted (the opt-out and change mirrors): every record, aborted ones too, up to the high
  watermarks. Uncommitted records can only make the set stricter, and the last stable offset, which
  stops at the first open transaction, would leave a record acknowledged after it unwaited for.
- read_committed (the consent mirror): committed records only, up to the last stable offsets. A grant
  of a transaction that is aborted must never admit its user; the mirror is caught up at the first
  open transaction (it cannot read past it), so a hanging transaction does not stall it. A record of
  an open transaction, and any record after it in that partition, is applied once it is committed.

Partitions the topic gains are assigned in the same sync; metadata that cannot be had is a failed
sync (input pauses), never a silent skip.

A sync costs a fixed number of requests whatever the partition count (consumer/feeds/ends.py):
one metadata request, one ListOffsets per broker. Its deadline bounds the reading, not the asking:
a sync that has its end offsets always consumes at least once, and one that runs out of time keeps
them as its `pending` target. The next syncs read on towards that same target (the consumer's
position carries over) and, on reaching it, confirm the time it was asked for; so successive syncs
converge on a busy or slow topic instead of each starting again and none completing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from consumer.feeds.ends import BrokerQueries, FeedError, Partition
from consumer.operations.clients import Clients
from consumer.wire.codec import Codec
from consumer.wire.registry import RegistryUnavailable

Offsets = dict[Partition, int]

_LEDGER_METADATA_SECONDS = 30.0  # the ledger topic's partitions are checked this often
# A request of a sync may outlast the sync's own budget by this much: on a slow link, a budget
# shorter than two round trips would otherwise never get as far as the end offsets.
_REQUEST_SECONDS_AT_LEAST = 2.0
# consume() waits out its whole timeout unless 10,000 records come: short windows end a sync as soon
# as its last record is in (a 0.2 s window made every sync that read anything last 0.2 s or more).
_CONSUME_WINDOW_SECONDS = 0.02
_REACHED, _TIMEOUT, _FAILED = "reached", "timeout", "failed"


@dataclass(frozen=True)
class Target:
    """End offsets to read up to, and when the sync that asked for them started (what reaching them
    confirms: every record acknowledged before that time is applied)."""

    asked_at: float
    ends: dict[Partition, int]


class Applier(Protocol):
    """What the records of one mirror do to its set."""

    kind: str  # "optout" or "consent": the prefix of the mirror's log events
    members: Any  # the set the records go into (what a snapshot saves)

    def record(self, msg: Any, live: bool) -> bool:
        """Apply one record (under the mirror's lock); False: read it again from this record later."""
        ...

    def batch_done(self, live: bool) -> None:
        """The records of one consume() are applied: counts and gauges (still under the lock)."""
        ...

    def went_back(self) -> bool:
        """A partition's end went below the mirror's position (truncated, or the topic re-created while
        the service runs): True to read every partition again (the applier emptied its set), False
        to read again only the partitions that went back (the set keeps what it holds)."""
        ...

    def reset(self) -> None:
        """A snapshot's offsets cannot be used: start from an empty set."""
        ...


A = TypeVar("A", bound=Applier)


class TopicMirror(Generic[A]):
    """Every partition of `topic` (and `ledger_topic`) assigned, positioned and synced; `applier` says
    what each record does."""

    def __init__(
        self,
        clients: Clients,
        config: dict[str, Any],
        topic: str,
        ledger_topic: str | None,
        applier: A,
        codec: Codec,
        log: Any,
        clock: Callable[[], float] = time.monotonic,
        stopping: Callable[[], bool] = lambda: False,
        also: tuple[str, ...] = (),
        read_committed: bool = False,
    ) -> None:
        self.topic = topic
        # Topics read and waited for like `topic` (the change mirror reads two: consumer/changes/).
        self.gating = (topic, *also)
        self.ledger_topic = ledger_topic
        self.applier = applier
        self.codec = codec
        self.log = log
        self.clock = clock
        self.stopping = stopping
        self.consumer = clients.consumer(mirror_consumer_config(config, read_committed))
        # End offsets and metadata come from a second client that never fetches: on the mirror consumer's
        # own connection they would queue behind its long-polling fetch (up to fetch.wait.max.ms each).
        self.ends = BrokerQueries(clients, config, clock, stopping, committed=read_committed)
        self.positions: Offsets = {}
        # The topics read: the gating topics, then the ledger (absent for the consents of a shadow policy).
        self.topics = self.gating if ledger_topic is None else (*self.gating, ledger_topic)
        self.topic_ids: dict[str, str | None] = dict.fromkeys(self.topics)
        self.caught_up_at: float | None = None  # clock time of the end offsets last reached
        self.last_error: str | None = None
        self.reset_reason: str | None = None  # why a snapshot's offsets were not used
        self.pending: Target | None = None  # the end offsets of a sync that ran out of time
        self._ledger_checked = 0.0
        # Held while records are applied: a snapshot taken under it has offsets that match its set
        # (the sync runs on its own thread, consumer/feeds/background.py).
        self.lock = threading.Lock()

    @property
    def members(self) -> Any:
        return self.applier.members

    # -- start -----------------------------------------------------------------------------------

    def start(self, offsets: Offsets | None, topic_ids: dict[str, str | None] | None = None) -> None:
        """Assign every partition of both topics, from the snapshot's offsets or from the beginning.

        A snapshot is not used (the filter is emptied and both topics are read from the start) when a
        topic was re-created (its id changed) or the snapshot's offsets are beyond a partition's end
        (the topic was truncated or re-created): resuming would skip opt-outs.
        """
        partitions = {t: self.ends.partitions(t, timeout=30.0) for t in self.topics}
        current_ids = self.ends.topic_ids(list(self.topics))
        offsets = dict(offsets or {})
        if offsets:
            self.reset_reason = snapshot_problem(
                self.ends, self.topics, offsets, topic_ids or {}, current_ids, partitions
            )
            if self.reset_reason is not None:
                self.log.warning(f"{self.applier.kind}_snapshot_offsets_not_used", reason=self.reset_reason)
                self.applier.reset()
                offsets = {}
        self.topic_ids = {t: current_ids.get(t) for t in self.topics}
        every = [(t, p) for t, parts in partitions.items() for p in parts]
        first = self.ends.start_offsets([tp for tp in every if tp not in offsets], timeout=30.0)
        self.positions = {tp: offsets[tp] if tp in offsets else first[tp] for tp in every}
        self.consumer.assign([TopicPartition(t, p, self.positions[t, p]) for t, p in every])
        self._ledger_checked = self.clock()

    def _add_new_partitions(self, topic: str, timeout: float) -> None:
        """Partitions the topic gained since the last look are read from their beginning. Raises
        FeedError (a failed sync) when the metadata cannot be had."""
        partitions = self.ends.partitions(topic, timeout)
        new = [p for p in partitions if (topic, p) not in self.positions]
        if new:
            for p in new:
                self.positions[topic, p] = 0
            self.consumer.incremental_assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in new])
            self.log.info(f"{self.applier.kind}_partitions_added", topic=topic, partitions=new)

    # -- sync ------------------------------------------------------------------------------------

    def sync(self, timeout: float, everything: bool = False) -> bool:
        """Apply every opt-out up to the opt-out topic's current end (with `everything`, the
        revocations topic's too). True when this sync confirmed a later time than before
        (`caught_up_at`): its own start, or that of the earlier sync whose end offsets it reached.
        False if it confirmed nothing: the ends could not be had, or `timeout` ran out first."""
        started = self.clock()
        deadline = started + timeout
        fresh = self._ask_ends(started, deadline, everything)
        if fresh is None:
            return False
        carried = self.pending if self.pending is not None and still_ahead(self.pending, fresh) else None
        confirmed = False
        consumed = False
        for target in (carried, fresh):
            if target is None:
                continue
            # A target not reached is kept: the next sync reads on towards the same offsets (a fixed
            # goal that the consumer's position only approaches), so some sync reaches it.
            self.pending = target
            outcome, read = self._read_to(target, deadline, must_consume=not consumed, live=not everything)
            consumed = consumed or read
            if outcome != _REACHED:
                if outcome == _TIMEOUT and not confirmed:
                    self._failed("timeout")
                return confirmed
            confirmed = self._confirm(target.asked_at) or confirmed
        self.pending = None
        if not everything:
            # Whatever else has arrived (revocations, written by the replicas' emitters): keeps the
            # snapshot's offsets of the revocations topic current. Never waits.
            self._apply(self.consumer.consume(num_messages=10_000, timeout=0), live=True)
        return confirmed

    def _ask_ends(self, started: float, deadline: float, everything: bool) -> Target | None:
        """The partitions (new ones assigned) and their end offsets, as a target; None (the failure
        recorded) if they cannot be had or show the topic shrank."""
        gating = set(self.topics) if everything else set(self.gating)

        def budget() -> float:
            return max(_REQUEST_SECONDS_AT_LEAST, deadline - self.clock())

        try:
            for topic in self.gating:
                self._add_new_partitions(topic, budget())
            if self.ledger_topic is not None and (
                everything or started - self._ledger_checked > _LEDGER_METADATA_SECONDS
            ):
                self._ledger_checked = started
                self._add_new_partitions(self.ledger_topic, budget())
            ends = self.ends.end_offsets([tp for tp in self.positions if tp[0] in gating], budget())
        except KafkaException as exc:
            self._failed(exc.args[0].name())
            return None
        except FeedError as exc:
            self._failed(str(exc))
            return None
        shrunk = [tp for tp, end in ends.items() if end < self.positions.get(tp, 0)]
        if shrunk:
            self._read_again(shrunk)
            self.pending = None
            return None
        return Target(started, ends)

    def _read_again(self, shrunk: list[Partition]) -> None:
        """Partitions whose end went back (truncated, or the topic re-created while the service runs) hold
        new records at offsets the mirror would never wait for: they are read again from their beginning
        (all, if the applier emptied its set) and the sync fails, so input pauses meanwhile. Under the
        lock, with the topics' new ids: a snapshot taken half-way would be resumed wrongly."""
        self.log.warning(
            f"{self.applier.kind}_topic_shrank_rereading",
            topic=self.topic,
            partitions=[f"{t}/{p}" for t, p in shrunk],
            entries=self.applier.members.entries,
        )
        ids = refreshed_ids(
            self.ends, self.topic_ids, {t for t, _ in shrunk}
        )  # asked before the lock: a snapshot waits on it
        with self.lock:
            again = set(self.positions) if self.applier.went_back() else set(shrunk)
            for tp in again:
                self.positions[tp] = 0
            start = {tp: OFFSET_BEGINNING if tp in again else offset for tp, offset in self.positions.items()}
            self.consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in start.items()])
            self.topic_ids = ids
        self._failed(f"{self.applier.kind} topic truncated or re-created: read again")

    def _read_to(self, target: Target, deadline: float, must_consume: bool, live: bool) -> tuple[str, bool]:
        """Consume until every partition of `target` is at its end offset, or the deadline passes
        (after one consume at least, when `must_consume`). (outcome, whether it consumed)."""
        consumed = False
        while True:
            if all(self.positions.get(tp, 0) >= end for tp, end in target.ends.items()):
                return _REACHED, consumed
            remaining = deadline - self.clock()
            if remaining <= 0 and (consumed or not must_consume):
                return _TIMEOUT, consumed
            messages = self.consumer.consume(num_messages=10_000, timeout=_CONSUME_WINDOW_SECONDS)
            consumed = True
            if not self._apply(messages, live=live):
                return _FAILED, consumed

    def _confirm(self, asked_at: float) -> bool:
        """Every opt-out acknowledged before `asked_at` is applied; True if that is news."""
        if self.caught_up_at is not None and asked_at <= self.caught_up_at:
            return False
        self.caught_up_at = asked_at
        self.last_error = None
        return True

    def _apply(self, messages: list[Any], live: bool = False) -> bool:
        """Apply records under the lock. `live`: the catch-up at start-up is over (the opt-out feed
        observes how long each opt-out took to apply: the propagation histogram)."""
        if not messages:
            return True
        # The schema ids, within the registry's per-batch bounds, outside the lock (a snapshot never waits
        # for the registry); in an outage each feed treats the records of ids not looked up as it must.
        with contextlib.suppress(RegistryUnavailable):
            self.codec.resolve_values(m.value() for m in messages if m.error() is None)
        with self.lock:
            return self._apply_locked(messages, live)

    def _apply_locked(self, messages: list[Any], live: bool) -> bool:
        ok = True
        again: set[Partition] = set()  # partitions to read again from a record that could not be applied now
        record = self.applier.record
        positions = self.positions
        for msg in messages:
            tp = (msg.topic(), msg.partition())
            if tp in again:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._failed(err.name())
                    ok = False
                elif msg.offset() > positions.get(tp, 0):
                    positions[tp] = msg.offset()
                continue
            if not record(msg, live):
                again.add(tp)
                self.consumer.seek(TopicPartition(tp[0], tp[1], msg.offset()))
                self._failed("schema registry: a record's schema cannot be had now")
                ok = False
                continue
            positions[tp] = msg.offset() + 1
        self.applier.batch_done(live)
        return ok

    def _failed(self, error: str) -> None:
        if error != self.last_error:
            self.log.warning(f"{self.applier.kind}_feed_error", topic=self.topic, error=error)
        self.last_error = error

    def seconds_behind(self) -> float:
        """Seconds since the feed last reached the topic's end (infinite before the first time)."""
        if self.caught_up_at is None:
            return float("inf")
        return max(0.0, self.clock() - self.caught_up_at)

    def close(self) -> None:
        self.consumer.close()
        self.ends.close()


def mirror_consumer_config(config: dict[str, Any], read_committed: bool = False) -> dict[str, Any]:
    """The mirror consumer's librdkafka configuration: no group offsets (the position lives in the
    snapshot), the end of each partition marked, and uncommitted records read too unless
    `read_committed`."""
    return {
        **config,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Marks the end even when the last offsets are control records or aborted ones; under
        # read_committed the end is the last stable offset, where an open transaction begins.
        "enable.partition.eof": True,
        # Uncommitted opt-outs can only make the filter stricter, so the opt-out mirror reads what an
        # aborted transaction wrote too; a consent grant of an aborted transaction would admit a user
        # who never consented, so the consent mirror reads committed records only (a withdrawal in an
        # open transaction is applied when it commits).
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "fetch.wait.max.ms": 100,
    }


def snapshot_problem(
    ends: BrokerQueries,
    topics: tuple[str, ...],
    offsets: Offsets,
    saved_ids: dict[str, str | None],
    current_ids: dict[str, str | None],
    partitions: dict[str, list[int]],
) -> str | None:
    """Why a snapshot's offsets cannot be resumed (a topic re-created, a partition gone, an offset
    beyond its partition's end: resuming would skip records), or None."""
    for topic, saved in saved_ids.items():
        now = current_ids.get(topic)
        if saved and now and saved != now:
            return f"topic {topic} was re-created (its id changed)"
    for topic, partition in offsets:
        if partition not in partitions.get(topic, []):
            return f"partition {topic}/{partition} of the snapshot no longer exists"
    try:
        end_offsets = ends.end_offsets(list(offsets), timeout=10.0)  # one request, however many partitions
    except FeedError as exc:
        raise FeedError(f"cannot read the end offsets of {', '.join(topics)}: {exc}") from exc
    for tp, offset in sorted(offsets.items()):
        if offset > end_offsets[tp]:
            return f"the snapshot's offset of {tp[0]}/{tp[1]} is beyond its end (truncated or re-created)"
    return None


def still_ahead(pending: Target, fresh: Target) -> bool:
    """An earlier target is worth reading on to only for the same partitions, none of whose ends has
    gone back since (a re-created topic: its old offsets mean nothing)."""
    return pending.ends.keys() == fresh.ends.keys() and all(fresh.ends[tp] >= end for tp, end in pending.ends.items())


def refreshed_ids(ends: BrokerQueries, topic_ids: dict[str, str | None], topics: set[str]) -> dict[str, str | None]:
    """A feed's topic ids with those of `topics` asked again (a re-created topic has a new one). Where
    the broker does not say, the old id stays: a restart then reads the topic again rather than
    resume a snapshot it cannot tell apart from the old topic's."""
    fresh = ends.topic_ids(sorted(topics))
    return {t: fresh.get(t) or old for t, old in topic_ids.items()}
