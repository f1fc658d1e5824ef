"""The consent feed (opt-in policies): the consent topic into the consent set, synced before every batch.

`ConsentFeed` is a `TopicFeed` (consumer/optouts/topic_feed.py, as the opt-out feed is) on one topic
and without a ledger, with the same guarantees: every partition assigned (no group, never commits;
its position lives in the snapshot), read to its end before any input is consumed, synced to the
high watermarks (one batched request per broker) before every batch, partitions the topic gains
assigned in the same sync, and a failure is a failed sync (input pauses). What differs is what a
record does, and the direction in which it fails closed:

- the topic is compacted and keyed by user id; records are applied in offset order, so the latest
  record of a user wins, as after compaction;
- `granted: true` adds the user's pseudonym to the consent set; `granted: false` and a tombstone
  remove it (deleting a consent withdraws it);
- a value that does not decode, or decodes to a shape the contract does not describe, or whose
  user id differs from the key, withdraws the key's user (and the value's): a consent is never
  inferred, a withdrawal may be;
- a value whose schema the registry cannot give now is not skipped: the partition is read again
  from that record at the next sync, and until then the sync fails (input pauses);
- a partition whose end falls below the feed's position (the topic truncated or re-created while
  the service runs) empties the set, and the topic is read again from its beginning (input pauses
  until it is): consents the topic no longer holds do not stay granted.

Withdrawals are also revoked (consumer/optouts/revocations.py reads this topic too): readers purge
what they took, and the revocation, read back into the opt-out filter, keeps that user out for good.
Under an opt-in active policy a withdrawal also goes into the opt-out filter at once, in the sync that
reads it (`withdrawals_to`): records are applied in offset order per partition only, and a user whose
grant and withdrawal sit in different partitions (the topic grew, so the key maps elsewhere) may have
the grant read last; the consent set then admits them again, until the revocation is read back (up
to the emitter's group rebalance after a restart, or never while it cannot produce). With the
withdrawal in the opt-out filter, the opt-out check turns that user away whatever the read order. When
only the shadow candidate is opt-in, nothing goes there: the active policy's output must not change.

`GatedFeeds` is the opt-out feed and the consent feed as the one feed the loop and the lifecycle
sync, probe and close.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from consumer.consents.fingerprints import ConsentSet
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations.metrics import Metrics
from consumer.optouts.background import BackgroundSync
from consumer.optouts.feed import OptOutFeed
from consumer.optouts.topic_feed import TopicFeed
from consumer.wire.codec import CONSENT, Codec, CodecError, LookupDeferredError
from consumer.wire.registry import RegistryRefused, RegistryUnavailable


def parse_consent(codec: Codec, msg: Any, lookup: bool = True) -> tuple[list[bytes], bool, int, str]:
    """(user ids, granted, when in epoch ms, result label) of a consent record.

    Raises RegistryUnavailable, RegistryRefused or LookupDeferredError when the value's schema cannot
    be looked up now (the caller reads the record again later: a withdrawal is for good, so it is never
    inferred from a look-up merely put off); otherwise never raises, and anything unexpected withdraws
    (fail closed: an undecodable record never grants). `lookup=False`: no registry request here.
    """
    value = msg.value()
    key = msg.key()
    if value is not None:
        try:
            _, record = codec.decode(value, CONSENT, lookup)
            user_id, granted, when = record["user_id"], record["granted"], record["at"]
            if not isinstance(user_id, str) or not user_id or not isinstance(granted, bool):
                raise TypeError("user_id or granted")
            millis = int(when.timestamp() * 1000) if hasattr(when, "timestamp") else int(when)
        except (RegistryUnavailable, RegistryRefused, LookupDeferredError):
            raise
        except CodecError:
            result = "undecodable_withdrawn"
        except Exception:
            result = "unexpected_withdrawn"
        else:
            users = [user_id.encode("utf-8")]
            if key and key != users[0]:
                return [*users, key], False, millis, "key_mismatch_withdrawn"
            return users, granted, millis, "granted" if granted else "withdrawn"
    else:
        result = "tombstone_withdrawn"
    if key:
        return [key], False, int(msg.timestamp()[1]), result
    return [], False, 0, "undecodable_dropped"


class ConsentFeed(TopicFeed):
    """The consent topic into a `ConsentSet` (`self.filter`)."""

    error_event = "consent_feed_error"

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        consents: ConsentSet,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        metrics: Metrics,
        log: Any,
        clock: Callable[[], float] = time.monotonic,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(config, topic, None, consents, codec, pseudonymiser, metrics, log, clock, stopping)
        # The opt-out feed whose filter takes every withdrawal at once (an opt-in active policy: GatedFeeds).
        self.withdrawals_to: OptOutFeed | None = None

    def _ends_plausible(self, ends: dict[tuple[str, int], int]) -> bool:
        """A partition whose end is below the feed's position was truncated, or the topic re-created
        while the service runs: consents it no longer holds must not stay granted. So the set is
        emptied (in place) and the topic read again from its beginning; this sync fails meanwhile.

        All under the lock, with the topic's new id: a snapshot pairs the set with the offsets and
        the id, and one taken half-way (an empty set with the old offsets), or with no id (which a
        restart cannot tell from the next re-created topic's), would be resumed wrongly."""
        shrunk = [tp for tp, end in ends.items() if end < self.positions.get(tp, 0)]
        if not shrunk:
            return True
        self.log.warning(
            "consent_topic_shrank_rereading",
            topic=self.topic,
            partitions=[p for _, p in shrunk],
            entries=self.filter.entries,
        )
        ids = self._refreshed_ids({self.topic})  # asked before the lock: a snapshot waits on it
        with self.lock:
            self.filter.clear()
            for tp in self.positions:
                self.positions[tp] = 0
            self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in self.positions])
            self.topic_ids = ids
        self.metrics.consent_entries.set(0)
        self._failed("consent topic truncated or re-created: read again")
        return False

    def _apply_locked(self, messages: list[Any], live: bool) -> bool:
        ok = True
        again: set[tuple[str, int]] = set()  # partitions to read again from a record the registry could not decode
        results: dict[str, int] = {}
        consents = self.filter
        refused = consents.refused
        withdrawn: list[bytes] = []
        for msg in messages:
            tp = (msg.topic(), msg.partition())
            if tp in again:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._failed(err.name())
                    ok = False
                elif msg.offset() > self.positions.get(tp, 0):
                    self.positions[tp] = msg.offset()
                continue
            try:
                users, granted, _, result = parse_consent(self.codec, msg, lookup=False)
            except (RegistryUnavailable, RegistryRefused, LookupDeferredError) as exc:
                again.add(tp)
                self.consumer.seek(TopicPartition(tp[0], tp[1], msg.offset()))
                self._failed(f"schema registry: {type(exc).__name__}")
                ok = False
                continue
            self.positions[tp] = msg.offset() + 1
            pseudonyms = [self.pseudonym(user_id) for user_id in users]
            if granted:
                for p in pseudonyms:
                    consents.add(p)
            else:
                for p in pseudonyms:
                    consents.remove(p)
                withdrawn += pseudonyms
            results[result] = results.get(result, 0) + 1
        if withdrawn and self.withdrawals_to is not None:
            # Before this set's lock is let go: a snapshot of the consents taken after it is matched
            # by an opt-out snapshot (taken after it, consumer/service/upkeep.py) that holds them.
            self.withdrawals_to.add_revoked(withdrawn)
        if consents.refused > refused:
            results["refused_full"] = consents.refused - refused
        m = self.metrics
        for result, count in results.items():
            m.consent_records.labels(result).inc(count)
        if results:
            m.consent_entries.set(consents.entries)
            m.consent_false_admission.set(consents.false_admission_probability())
        return ok


class GatedFeeds:
    """The opt-out feed and the consent feed, synced together before every batch: a batch is decided
    only when both have reached their topics' ends, and each keeps its own lag.

    `gate=False` is for an opt-out policy whose shadow candidate is opt-in: what the service emits does
    not depend on consents, so only the opt-out feed gates input (readiness, the sync before a batch,
    the pause when it lags). The consents are read at start-up with the opt-out catch-up (without
    waiting for them), then synced on a thread of their own every 100 ms (`BackgroundSync`, started
    by the first sync after the catch-up), so a slow consent topic neither delays a batch nor is
    starved by the batches' sync budget. While the consent feed lags, the shadow counts more
    `no_consent` than it would; its lag metric (`training_filter_consent_feed_lag_seconds{gates_input="false"}`)
    shows when."""

    def __init__(
        self,
        optouts: OptOutFeed,
        consents: ConsentFeed,
        clock: Callable[[], float] = time.monotonic,
        gate: bool = True,
        log: Any = None,
        sync_timeout: float = 1.0,
    ) -> None:
        self.optouts = optouts
        self.consents = consents
        self.clock = clock
        self.gate = gate
        self.log = log
        self.sync_timeout = sync_timeout
        self.consent_sync: BackgroundSync | None = None  # gate=False only, once caught up
        # Consents gate input: a withdrawal turns its user away at once, whatever order it was read in.
        consents.withdrawals_to = optouts if gate else None

    @property
    def filter(self) -> Any:
        return self.optouts.filter

    @property
    def positions(self) -> Any:
        return self.optouts.positions

    @property
    def topic_ids(self) -> Any:
        return self.optouts.topic_ids

    @property
    def lock(self) -> Any:
        return self.optouts.lock

    @property
    def caught_up_at(self) -> float | None:
        if not self.gate:
            return self.optouts.caught_up_at
        if self.optouts.caught_up_at is None or self.consents.caught_up_at is None:
            return None
        return min(self.optouts.caught_up_at, self.consents.caught_up_at)

    @property
    def last_error(self) -> str | None:
        if not self.gate:
            return self.optouts.last_error
        return self.optouts.last_error or self.consents.last_error

    def sync(self, timeout: float, everything: bool = False) -> bool:
        deadline = self.clock() + timeout
        optouts = self.optouts.sync(timeout, everything)
        if not self.gate:  # the batch waits for the opt-outs only
            if everything and self.consent_sync is None:  # start-up: the consents too, as time allows
                self.consents.sync(max(0.0, deadline - self.clock()), everything)
            elif self.consent_sync is None:
                self.consent_sync = BackgroundSync(self.consents, self.sync_timeout, self.log, name="consent")
                self.consent_sync.start()
            return optouts
        consents = self.consents.sync(max(0.05, deadline - self.clock()), everything)
        return optouts and consents

    def seconds_behind(self) -> float:
        if not self.gate:
            return self.optouts.seconds_behind()
        return max(self.optouts.seconds_behind(), self.consents.seconds_behind())

    def close(self) -> None:
        if self.consent_sync is not None:
            self.consent_sync.stop()
        self.optouts.close()
        self.consents.close()
