"""What an opt-out record does: its user's pseudonym goes into the Bloom filter, for good.

The opt-out mirror (consumer/feeds/mirror.py) reads two topics into the filter: the opt-out topic
and the service's own revocations topic, whose permanent retractions (one per opt-out ever seen, and
one per deleted account: the ledger) it adds too. So an objection is never withdrawn, by any
replica: a tombstone on the opt-out topic is counted (and alerted on) but applies nothing, and once
compaction has removed the opt-out and its tombstone, a replica that rebuilds its filter from the
topics still finds the user through the revocation. An opt-out of an aborted transaction still
filters its user: uncommitted data can only make the filter stricter. A partition that went back is
read again without emptying the filter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from consumer.datapath.pseudonym import Pseudonymiser
from consumer.feeds.mirror import TopicMirror
from consumer.feeds.records import parse_optout
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.optouts.filter import OptOutFilter
from consumer.wire.codec import REVOCATION, Codec
from rules import PERMANENT

_PERMANENT = frozenset(str(r) for r in PERMANENT)

_UNEXPECTED_LOGGED_AT_MOST = 10


class OptOutApplier:
    kind = "optout"

    def __init__(
        self,
        members: OptOutFilter,
        ledger_topic: str,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        metrics: Metrics,
        log: Any,
    ) -> None:
        self.members = members
        self.ledger_topic = ledger_topic
        self.codec = codec
        self.pseudonym = pseudonymiser.pseudonym
        self.metrics = metrics
        self.log = log
        self._results: dict[str, int] = {}
        self._delays: list[int] = []
        self._added = 0
        self._unexpected_logged = 0

    def record(self, msg: Any, live: bool) -> bool:
        if msg.topic() == self.ledger_topic:
            pseudonyms, result = self._revoked_pseudonym(msg)
        else:
            users, _, result = parse_optout(self.codec, msg, lookup=False)
            pseudonyms = [self.pseudonym(u) for u in users]
            if result == "unexpected_used_key":
                self._note_unexpected(msg)
            if live:
                self._delays.append(msg.timestamp()[1])
        self._results[result] = self._results.get(result, 0) + 1
        add = self.members.add
        for pseudonym in pseudonyms:
            if add(pseudonym):
                self._added += 1
        return True  # an opt-out is never read again: whatever it holds, its key opts out

    def add(self, pseudonyms: list[bytes]) -> None:
        """Users to keep out at once (consent withdrawals under an opt-in active policy): call under the
        mirror's lock (`revoker`)."""
        self._added += sum(1 for pseudonym in pseudonyms if self.members.add(pseudonym))
        self.batch_done(live=False)

    def batch_done(self, live: bool) -> None:
        for result, count in self._results.items():
            self.metrics.optout_records.labels(result).inc(count)
        self._results = {}
        if self._delays:
            # The record's timestamp is its producer's send time (CreateTime), a little before the
            # broker acknowledged it: the figure errs long.
            now_ms = time.time() * 1000
            observe = self.metrics.optout_propagation.observe
            for stamp in self._delays:
                if stamp > 0:
                    observe(max(0.0, now_ms - stamp) / 1000)
            self._delays = []
        if self._added:
            self._added = 0
            self.metrics.optout_entries.set(self.members.entries)
            self.metrics.optout_fp_rate.set(self.members.estimated_fp_rate())

    def went_back(self) -> bool:
        return False  # an objection is never withdrawn: only the partitions that went back are read again

    def reset(self) -> None:
        self.members = self.members.emptied()

    def _revoked_pseudonym(self, msg: Any) -> tuple[list[bytes], str]:
        """The pseudonym a retraction of the revocations topic keeps out for good: only a permanent one
        (an opt-out, a deleted account: rules.PERMANENT) of a whole author; the others (a withdrawal a
        re-grant may end, a corrected account, a record) are the change set's and the consent
        history's. A version 1 value reads as an opt-out. A value that does not decode goes by its key
        (`<pseudonym>`, `deleted/`, `account/` or `consent/<pseudonym>`: fail closed)."""
        value = msg.value()
        if value is None:
            return [], "revocation_tombstone_ignored"
        try:
            _, record = self.codec.decode(value, REVOCATION, lookup=False)
            permanent = (
                record["reason"] in _PERMANENT
                and record["scope"] == "AUTHOR"
                and record["created_before"] is None
                and not record["lifted"]
            )
            if not permanent:
                return [], "revocation_not_permanent"
            return [record["author_pseudonym"].encode("ascii")], "revocation_applied"
        except Exception:
            key = msg.key() or b""
            for prefix in (b"deleted/", b"account/", b"consent/"):
                key = key.removeprefix(prefix)
            if len(key) == 64:
                return [key], "revocation_used_key"
            return [], "undecodable_dropped"

    def _note_unexpected(self, msg: Any) -> None:
        """A decoded opt-out of a shape the contract does not describe: logged (where, never what),
        a few times, then only counted."""
        if self._unexpected_logged < _UNEXPECTED_LOGGED_AT_MOST:
            self._unexpected_logged += 1
            self.log.warning(
                "optout_record_unexpected_key_used", topic=msg.topic(), partition=msg.partition(), offset=msg.offset()
            )


def revoker(lock: Any, applier: OptOutApplier) -> Callable[[list[bytes]], None]:
    """What keeps users out at once, from another mirror's thread: into the filter under its lock."""

    def keep_out(pseudonyms: list[bytes]) -> None:
        with lock:
            applier.add(pseudonyms)

    return keep_out


def optout_mirror(
    clients: Clients,
    config: dict[str, Any],
    topic: str,
    ledger_topic: str,
    members: OptOutFilter,
    codec: Codec,
    pseudonymiser: Pseudonymiser,
    metrics: Metrics,
    log: Any,
    stopping: Callable[[], bool] = lambda: False,
) -> TopicMirror[OptOutApplier]:
    """The opt-out topic and the revocations ledger mirrored into `members` (not started)."""
    applier = OptOutApplier(members, ledger_topic, codec, pseudonymiser, metrics, log)
    return TopicMirror(clients, config, topic, ledger_topic, applier, codec, log, stopping=stopping)
