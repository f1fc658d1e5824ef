"""What a consent record does (opt-in policies): a grant adds the user's pseudonym to the consent set,
anything else removes it, and a partition that went back empties the set.

The consent mirror (consumer/feeds/mirror.py) reads the compacted consent topic, keyed by user id, in
offset order, so the latest record of a user wins, as after compaction. The direction it fails in:

- `granted: true` adds; `granted: false` and a tombstone remove (deleting a consent withdraws it);
- a value that does not decode, or decodes to a shape the contract does not describe, or whose user id
  differs from the key, withdraws the key's user (and the value's): a consent is never inferred;
- a value whose schema the registry cannot give now is not skipped: the partition is read again from
  that record at the next sync, and until then the sync fails (input pauses);
- a partition whose end falls below the position (the topic truncated or re-created while the service
  runs) empties the set and the topic is read again from its beginning: consents the topic no longer
  holds do not stay granted.

A user who withdrew and granted again is eligible only for what they wrote from the new grant on,
and a grant older than the latest withdrawal is put in its place; a withdrawal read after a newer
grant (the two in different partitions, if the topic grew) withdraws, failing closed:
consumer/consents/history.py. Under an
opt-in active policy the mirror also reads the `consent/` retractions back from the revocations topic
(the ledger), so that a withdrawal compaction removed from the consent topic is still known.
The mirror reads committed records only and is caught up at the last stable offsets: a grant written
in a transaction that is aborted admits nobody, and a record in a transaction still open (a
withdrawal too) is applied when the transaction commits, as is anything after it in its partition.
A withdrawal is not put in the opt-out filter (it would be for good, and a re-grant could not count),
except one the history has no room for (`keep_out`, counted: fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumer.consents.fingerprints import ConsentSet
from consumer.consents.history import ConsentHistory
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.feeds.mirror import TopicMirror
from consumer.feeds.records import parse_consent
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.wire.codec import REVOCATION, Codec, LookupDeferredError
from consumer.wire.registry import RegistryRefused, RegistryUnavailable


class ConsentApplier:
    kind = "consent"

    def __init__(
        self,
        members: ConsentSet,
        history: ConsentHistory,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        metrics: Metrics,
        keep_out: Callable[[list[bytes]], None] | None = None,
        ledger_topic: str | None = None,
    ) -> None:
        self.members = members
        self.history = history
        self.codec = codec
        self.pseudonym = pseudonymiser.pseudonym
        self.metrics = metrics
        self.keep_out = keep_out
        self.ledger_topic = ledger_topic
        self._results: dict[str, int] = {}
        self._kept_out: list[bytes] = []
        self._refused_before = members.refused

    def record(self, msg: Any, live: bool) -> bool:
        if msg.topic() == self.ledger_topic:
            result = self._ledger(msg)
            if result:
                self._results[result] = self._results.get(result, 0) + 1
            return True
        try:
            users, granted, at_ms, result = parse_consent(self.codec, msg, lookup=False)
        except (RegistryUnavailable, RegistryRefused, LookupDeferredError):
            return False  # read again: a withdrawal is never inferred from a look-up put off
        for pseudonym in (self.pseudonym(user_id) for user_id in users):
            if granted:
                if self.history.grant(pseudonym, at_ms):
                    self.members.add(pseudonym)
                else:
                    result = "stale_grant_ignored"
                continue
            self.members.remove(pseudonym)
            if not self.history.withdraw(pseudonym, at_ms):
                self._keep_out(pseudonym)
                result = "history_full_kept_out"
        self._results[result] = self._results.get(result, 0) + 1
        return True

    def _ledger(self, msg: Any) -> str | None:
        """A retraction on the revocations topic: only the `consent/` ones say anything of consents."""
        key = msg.key()
        if not key or not key.startswith(b"consent/") or msg.value() is None:
            return None
        pseudonym = key[len(b"consent/") :]
        try:
            _, record = self.codec.decode(msg.value(), REVOCATION, lookup=False)
            bound = record["created_before"]
            at_ms = int(record["opted_out_at"].timestamp() * 1000)
        except Exception:  # our own output, unreadable: taken for the withdrawal it most likely is
            bound, at_ms = None, int(msg.timestamp()[1])
        if bound is None:
            fits = self.history.withdrawal_retracted(pseudonym, at_ms, pseudonym in self.members)
            result = "ledger_withdrawal"
        else:
            fits = self.history.regrant_retracted(pseudonym, int(bound.timestamp() * 1000))
            result = "ledger_regrant"
        if not fits:
            self._keep_out(pseudonym)
            return "history_full_kept_out"
        return result

    def _keep_out(self, pseudonym: bytes) -> None:
        """A user the history has no room for: out through the opt-out filter (where one is given)."""
        self._kept_out.append(pseudonym)
        if self.keep_out is not None:
            self.history.kept_out += 1

    def batch_done(self, live: bool) -> None:
        if self._kept_out and self.keep_out is not None:
            self.keep_out(self._kept_out)
        self._kept_out = []
        consents = self.members
        if consents.refused > self._refused_before:
            self._results["refused_full"] = consents.refused - self._refused_before
            self._refused_before = consents.refused
        m = self.metrics
        for result, count in self._results.items():
            m.consent_records.labels(result).inc(count)
        if self._results:
            m.consent_entries.set(consents.entries)
            m.consent_false_admission.set(consents.false_admission_probability())
        self._results = {}

    def went_back(self) -> bool:
        self.members.clear()
        self.history.clear()
        self.metrics.consent_entries.set(0)
        return True  # read the whole topic again: consents it no longer holds must not stay granted

    def reset(self) -> None:
        self.members = self.members.emptied()
        self.history.clear()


def consent_mirror(
    clients: Clients,
    config: dict[str, Any],
    topic: str,
    members: ConsentSet,
    history: ConsentHistory,
    codec: Codec,
    pseudonymiser: Pseudonymiser,
    metrics: Metrics,
    log: Any,
    keep_out: Callable[[list[bytes]], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
    ledger_topic: str | None = None,
) -> TopicMirror[ConsentApplier]:
    """The consent topic (and, under an opt-in active policy, the `consent/` retractions of
    `ledger_topic`) mirrored into `members` and `history` (not started); `keep_out`: see the module
    docstring."""
    applier = ConsentApplier(members, history, codec, pseudonymiser, metrics, keep_out, ledger_topic)
    # Committed records only: a grant of an aborted transaction never admits (consumer/feeds/mirror.py).
    return TopicMirror(
        clients, config, topic, ledger_topic, applier, codec, log, stopping=stopping, read_committed=True
    )


def history_query(mirror: TopicMirror[ConsentApplier]) -> Callable[[bytes, int, str, int, int], int | None]:
    """What the retraction emitter asks of a grant it handles (consumer/changes/retractions.py): since
    when is this user eligible again, if they withdrew before `at_ms` (-1: they did not, a first grant)?
    None while the mirror has not read the topic that far (ask again)."""

    def regrant_bound(pseudonym: bytes, at_ms: int, topic: str, partition: int, offset: int) -> int | None:
        with mirror.lock:
            if mirror.positions.get((topic, partition), 0) <= offset:
                return None
            bound = mirror.applier.history.regrant_bound(pseudonym, at_ms)
            return -1 if bound is None else bound

    return regrant_bound
