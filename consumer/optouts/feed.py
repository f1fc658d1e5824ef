"""The opt-out feed: reads the opt-out topic into the Bloom filter, and emits revocations.

`OptOutFeed` is assigned every partition of the opt-out topic (no consumer group: each replica
needs every opt-out) and never commits; its position lives in the filter snapshot. `sync()` asks
the broker for the topic's partitions and their current end offsets, and applies opt-outs until it
has reached them: the service calls it after each consume() and before filtering, so every opt-out
acknowledged before a record was fetched is applied before that record is decided. The end offsets
are the high watermarks (read_uncommitted): with read_committed they would be the last stable offset,
which stops at the first open transaction, so an opt-out acknowledged after it would not be waited
for. Partitions the topic gains are assigned in the same sync; metadata that cannot be had is a
failed sync (input pauses), never a silent skip.

A sync costs a fixed number of requests whatever the partition count (consumer/optouts/ends.py):
one metadata request, one ListOffsets per broker. Its deadline bounds the reading, not the asking:
a sync that has its end offsets always consumes at least once, and one that runs out of time keeps
them as its `pending` target. The next sync reads on towards that target first (the consumer's
position carries over) and, on reaching it, confirms the time it was asked for; so successive syncs
converge on a busy or slow topic instead of each starting again and none completing.

The filter holds pseudonyms, and the feed reads a second topic into it: the service's own
revocations topic, keyed by pseudonym, one record per opt-out ever seen. So an objection is never
withdrawn, by any replica: a tombstone on the opt-out topic is counted (and alerted on) but applies
nothing, and once compaction has removed the opt-out and its tombstone, a replica that rebuilds its
filter from the topics still finds the user through the revocation. Only the opt-out topic gates
input batch by batch; the revocations topic must be read to its end at start-up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations.metrics import Metrics
from consumer.optouts.ends import BrokerQueries, FeedError, Partition
from consumer.optouts.filter import Offsets
from consumer.wire.codec import OPTOUT, REVOCATION, Codec, CodecError
from consumer.wire.registry import RegistryRefused, RegistryUnavailable

__all__ = ["FeedError", "OptOutFeed", "parse_optout"]

_LEDGER_METADATA_SECONDS = 30.0  # the revocations topic's partitions are checked this often
# A request of a sync may outlast the sync's own budget by this much: on a slow link, a budget
# shorter than two round trips would otherwise never get as far as the end offsets.
_REQUEST_SECONDS_AT_LEAST = 2.0
# consume() waits out its whole timeout unless 10,000 records come: short windows end a sync as soon
# as its last opt-out is in (a 0.2 s window made every sync that read anything last 0.2 s or more).
_CONSUME_WINDOW_SECONDS = 0.02
_REACHED, _TIMEOUT, _FAILED = "reached", "timeout", "failed"


@dataclass(frozen=True)
class Target:
    """End offsets to read up to, and when the sync that asked for them started (what reaching them
    confirms: every opt-out acknowledged before that time is applied)."""

    asked_at: float
    ends: dict[Partition, int]


def parse_optout(codec: Codec, msg: Any) -> tuple[list[bytes], int, str]:
    """(user ids to treat as opted out, opted_out_at in epoch ms, result label) of an opt-out record.

    Never raises. An undecodable value, or a decoded one of an unexpected shape (e.g. a writer schema
    whose opted_out_at is a plain long, or a user id that is not a string), falls back to the key
    (the user id by contract) and the Kafka timestamp: failing closed means treating the record as
    the opt-out it most likely is. A value whose user id differs from the key opts out both.
    """
    value = msg.value()
    key = msg.key()
    if value is None:
        return [], 0, "tombstone_ignored"  # an objection is never withdrawn by deleting it
    try:
        _, record = codec.decode(value, OPTOUT)
        user_id = record["user_id"]
        when = record["opted_out_at"]
        if not isinstance(user_id, str) or not user_id:
            raise TypeError("user_id")
        if hasattr(when, "timestamp"):
            millis = int(when.timestamp() * 1000)
        elif isinstance(when, int) and not isinstance(when, bool):
            millis = when
        else:
            raise TypeError("opted_out_at")
        users = [user_id.encode("utf-8")]
        if key and key != users[0]:
            users.append(key)
        return users, millis, "applied"
    except CodecError:
        result = "undecodable_used_key"
    except (RegistryUnavailable, RegistryRefused):  # its schema cannot be looked up now: the key opts out
        result = "registry_unavailable_used_key"
    except Exception:  # a decoded record the contract does not describe: the key still opts out
        result = "unexpected_used_key"
    if key:
        return [key], int(msg.timestamp()[1]), result
    return [], 0, "undecodable_dropped"


class OptOutFeed:
    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        ledger_topic: str | None,
        optout_filter: Any,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        metrics: Metrics,
        log: Any,
        clock: Callable[[], float] = time.monotonic,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.topic = topic
        self.ledger_topic = ledger_topic
        self.filter = optout_filter
        self.codec = codec
        self.pseudonym = pseudonymiser.pseudonym
        self.metrics = metrics
        self.log = log
        self.clock = clock
        self.stopping = stopping
        self.consumer = Consumer(
            {
                **config,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,  # marks the end even when the last offsets are control records
                # An aborted opt-out still filters its user: uncommitted data can only make the filter stricter.
                "isolation.level": "read_uncommitted",
                "fetch.wait.max.ms": 100,
            }
        )
        # End offsets and metadata come from a second client that never fetches: on the feed consumer's
        # own connection they would queue behind its long-polling fetch (up to fetch.wait.max.ms each).
        self.ends = BrokerQueries(config, clock, stopping)
        self.positions: Offsets = {}
        # The topics read: the gating topic, then the ledger (absent for a feed without one, e.g. consents).
        self.topics = (topic,) if ledger_topic is None else (topic, ledger_topic)
        self.topic_ids: dict[str, str | None] = dict.fromkeys(self.topics)
        self.caught_up_at: float | None = None  # clock time of the end offsets last reached
        self.last_error: str | None = None
        self.reset_reason: str | None = None  # why a snapshot's offsets were not used
        self.pending: Target | None = None  # the end offsets of a sync that ran out of time
        self._ledger_checked = 0.0
        self._unexpected_logged = 0
        # Held while opt-outs are applied: a snapshot taken under it has offsets that match its filter
        # (the sync runs on its own thread, consumer/optouts/background.py).
        self.lock = threading.Lock()

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
            self.reset_reason = self._snapshot_problem(offsets, topic_ids or {}, current_ids, partitions)
            if self.reset_reason is not None:
                self.log.warning("optout_snapshot_offsets_not_used", reason=self.reset_reason)
                self.filter = self.filter.emptied()
                offsets = {}
        self.topic_ids = {t: current_ids.get(t) for t in self.topics}
        every = [(t, p) for t, parts in partitions.items() for p in parts]
        first = self.ends.start_offsets([tp for tp in every if tp not in offsets], timeout=30.0)
        self.positions = {tp: offsets[tp] if tp in offsets else first[tp] for tp in every}
        self.consumer.assign([TopicPartition(t, p, self.positions[t, p]) for t, p in every])
        self._ledger_checked = self.clock()

    def _snapshot_problem(
        self,
        offsets: Offsets,
        saved_ids: dict[str, str | None],
        current_ids: dict[str, str | None],
        partitions: dict[str, list[int]],
    ) -> str | None:
        for topic, saved in saved_ids.items():
            now = current_ids.get(topic)
            if saved and now and saved != now:
                return f"topic {topic} was re-created (its id changed)"
        for topic, partition in offsets:
            if partition not in partitions.get(topic, []):
                return f"partition {topic}/{partition} of the snapshot no longer exists"
        try:
            ends = self.ends.end_offsets(list(offsets), timeout=10.0)  # one request, however many partitions
        except FeedError as exc:
            raise FeedError(f"cannot read the end offsets of {', '.join(self.topics)}: {exc}") from exc
        for tp, offset in sorted(offsets.items()):
            if offset > ends[tp]:
                return f"the snapshot's offset of {tp[0]}/{tp[1]} is beyond its end (truncated or re-created)"
        return None

    def _add_new_partitions(self, topic: str, timeout: float) -> None:
        """Partitions the topic gained since the last look are read from their beginning. Raises
        FeedError (a failed sync) when the metadata cannot be had."""
        partitions = self.ends.partitions(topic, timeout)
        new = [p for p in partitions if (topic, p) not in self.positions]
        if new:
            for p in new:
                self.positions[topic, p] = 0
            self.consumer.incremental_assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in new])
            self.log.info("optout_partitions_added", topic=topic, partitions=new)

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
        carried = self.pending if self.pending is not None and self._still_ahead(self.pending, fresh) else None
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
        gating = set(self.topics) if everything else {self.topic}

        def budget() -> float:
            return max(_REQUEST_SECONDS_AT_LEAST, deadline - self.clock())

        try:
            self._add_new_partitions(self.topic, budget())
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
        if not self._ends_plausible(ends):
            self.pending = None
            return None
        return Target(started, ends)

    @staticmethod
    def _still_ahead(pending: Target, fresh: Target) -> bool:
        """An earlier target is worth reading on to only for the same partitions, none of whose ends
        has gone back since (a re-created topic: its old offsets mean nothing)."""
        return pending.ends.keys() == fresh.ends.keys() and all(
            fresh.ends[tp] >= end for tp, end in pending.ends.items()
        )

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

    def _ends_plausible(self, ends: dict[tuple[str, int], int]) -> bool:
        """A partition whose end is below the feed's position was truncated, or its topic re-created,
        while the service runs: its new records sit at offsets the feed would never wait for. Those
        partitions are read again from their beginning (the filter keeps what it holds: an objection
        is never withdrawn) and this sync fails, so input pauses until they are read."""
        shrunk = [tp for tp, end in ends.items() if end < self.positions.get(tp, 0)]
        if not shrunk:
            return True
        self.log.warning(
            "optout_topic_shrank_rereading", partitions=[f"{t}/{p}" for t, p in shrunk], entries=self.filter.entries
        )
        with self.lock:
            for tp in shrunk:
                self.positions[tp] = 0
            start = {tp: OFFSET_BEGINNING if tp in shrunk else offset for tp, offset in self.positions.items()}
            self.consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in start.items()])
        self._failed("opt-out topic truncated or re-created: read again")
        return False

    def _apply(self, messages: list[Any], live: bool = False) -> bool:
        """Apply opt-outs and revocations. `live`: the catch-up at start-up is over, so how long each
        opt-out took to apply (its timestamp to now) is observed: the propagation histogram."""
        if not messages:
            return True
        with self.lock:
            return self._apply_locked(messages, live)

    def _apply_locked(self, messages: list[Any], live: bool) -> bool:
        added = 0
        results: dict[str, int] = {}
        delays: list[float] = []
        ok = True
        add = self.filter.add
        for msg in messages:
            err = msg.error()
            tp = (msg.topic(), msg.partition())
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if msg.offset() > self.positions.get(tp, 0):
                        self.positions[tp] = msg.offset()
                    continue
                self._failed(err.name())
                ok = False
                continue
            self.positions[tp] = msg.offset() + 1
            if tp[0] == self.ledger_topic:
                pseudonyms, result = self._revoked_pseudonym(msg)
            else:
                users, _, result = parse_optout(self.codec, msg)
                pseudonyms = [self.pseudonym(u) for u in users]
                if result == "unexpected_used_key":
                    self._note_unexpected(msg)
                if live:
                    delays.append(msg.timestamp()[1])
            results[result] = results.get(result, 0) + 1
            for pseudonym in pseudonyms:
                if add(pseudonym):
                    added += 1
        for result, count in results.items():
            self.metrics.optout_records.labels(result).inc(count)
        if delays:
            # The record's timestamp is its producer's send time (CreateTime), a little before the
            # broker acknowledged it: the figure errs long.
            now_ms = time.time() * 1000
            observe = self.metrics.optout_propagation.observe
            for stamp in delays:
                if stamp > 0:
                    observe(max(0.0, now_ms - stamp) / 1000)
        if added:
            self.metrics.optout_entries.set(self.filter.entries)
            self.metrics.optout_fp_rate.set(self.filter.estimated_fp_rate())
        return ok

    def _revoked_pseudonym(self, msg: Any) -> tuple[list[bytes], str]:
        """The pseudonym of a record of the revocations topic (its key, by contract, if the value
        does not decode)."""
        value = msg.value()
        if value is None:
            return [], "revocation_tombstone_ignored"
        try:
            _, record = self.codec.decode(value, REVOCATION)
            return [record["author_pseudonym"].encode("ascii")], "revocation_applied"
        except Exception:
            key = msg.key()
            return ([key], "revocation_used_key") if key else ([], "undecodable_dropped")

    def _note_unexpected(self, msg: Any) -> None:
        """A decoded opt-out of a shape the contract does not describe: logged (where, never what),
        a few times, then only counted."""
        if self._unexpected_logged < 10:
            self._unexpected_logged += 1
            self.log.warning(
                "optout_record_unexpected_key_used", topic=msg.topic(), partition=msg.partition(), offset=msg.offset()
            )

    def _failed(self, error: str) -> None:
        if error != self.last_error:
            self.log.warning("optout_feed_error", topic=self.topic, error=error)
        self.last_error = error

    def seconds_behind(self) -> float:
        """Seconds since the feed last reached the topic's end (infinite before the first time)."""
        if self.caught_up_at is None:
            return float("inf")
        return max(0.0, self.clock() - self.caught_up_at)

    def close(self) -> None:
        self.consumer.close()
        self.ends.close()
