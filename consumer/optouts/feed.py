"""The opt-out feed: reads the opt-out topic into the Bloom filter, and emits revocations.

`OptOutFeed` is a `TopicFeed` (consumer/optouts/topic_feed.py: every partition assigned, synced to
the high watermarks in one batched request per broker, before every batch): the service syncs it
after each consume() and before filtering, so every opt-out acknowledged before a record was fetched
is applied before that record is decided. An aborted opt-out still filters its user: uncommitted
data can only make the filter stricter.

The filter holds pseudonyms, and the feed reads a second topic into it: the service's own
revocations topic, keyed by pseudonym, one record per opt-out ever seen. So an objection is never
withdrawn, by any replica: a tombstone on the opt-out topic is counted (and alerted on) but applies
nothing, and once compaction has removed the opt-out and its tombstone, a replica that rebuilds its
filter from the topics still finds the user through the revocation. Only the opt-out topic gates
input batch by batch; the revocations topic must be read to its end at start-up.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from consumer.optouts.ends import FeedError
from consumer.optouts.topic_feed import TopicFeed
from consumer.wire.codec import OPTOUT, REVOCATION, Codec, CodecError
from consumer.wire.registry import RegistryRefused, RegistryUnavailable

__all__ = ["FeedError", "OptOutFeed", "parse_optout"]


def parse_optout(codec: Codec, msg: Any, lookup: bool = True) -> tuple[list[bytes], int, str]:
    """(user ids to treat as opted out, opted_out_at in epoch ms, result label) of an opt-out record.

    Never raises. An undecodable value, or a decoded one of an unexpected shape (e.g. a writer schema
    whose opted_out_at is a plain long, or a user id that is not a string), falls back to the key
    (the user id by contract) and the Kafka timestamp: failing closed means treating the record as
    the opt-out it most likely is. A value whose user id differs from the key opts out both.
    `lookup=False`: no registry request (the caller looked the batch's ids up, within bounds).
    """
    value = msg.value()
    key = msg.key()
    if value is None:
        return [], 0, "tombstone_ignored"  # an objection is never withdrawn by deleting it
    try:
        _, record = codec.decode(value, OPTOUT, lookup)
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


class OptOutFeed(TopicFeed):
    """The opt-out topic and the revocations topic (the ledger) into an `OptOutFilter` (`self.filter`)."""

    error_event = "optout_feed_error"
    _unexpected_logged = 0

    def _ends_plausible(self, ends: dict[tuple[str, int], int]) -> bool:
        """A partition whose end is below the feed's position was truncated, or its topic re-created,
        while the service runs: its new records sit at offsets the feed would never wait for. Those
        partitions are read again from their beginning (the filter keeps what it holds: an objection
        is never withdrawn) and this sync fails, so input pauses until they are read. The topics' ids
        are asked again, so that a snapshot saved after this pairs the new topic's id with its offsets."""
        shrunk = [tp for tp, end in ends.items() if end < self.positions.get(tp, 0)]
        if not shrunk:
            return True
        self.log.warning(
            "optout_topic_shrank_rereading", partitions=[f"{t}/{p}" for t, p in shrunk], entries=self.filter.entries
        )
        ids = self._refreshed_ids({t for t, _ in shrunk})
        with self.lock:
            for tp in shrunk:
                self.positions[tp] = 0
            start = {tp: OFFSET_BEGINNING if tp in shrunk else offset for tp, offset in self.positions.items()}
            self.consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in start.items()])
            self.topic_ids = ids
        self._failed("opt-out topic truncated or re-created: read again")
        return False

    def add_revoked(self, pseudonyms: list[bytes]) -> None:
        """Users whose revocation is on its way (consent withdrawals under an opt-in active policy,
        consumer/consents/feed.py): into the filter now, not when the revocation is read back."""
        with self.lock:
            added = sum(1 for pseudonym in pseudonyms if self.filter.add(pseudonym))
        if added:
            self.metrics.optout_entries.set(self.filter.entries)
            self.metrics.optout_fp_rate.set(self.filter.estimated_fp_rate())

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
                users, _, result = parse_optout(self.codec, msg, lookup=False)
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
            _, record = self.codec.decode(value, REVOCATION, lookup=False)
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
