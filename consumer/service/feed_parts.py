"""Start-up, the feeds (step 2 of consumer/service/assemble.py): the opt-out mirror, the change mirror
and, under an opt-in policy, the consent mirror, each from its snapshot when one matches, assigned
every partition (their catch-up comes later, lifecycle.py), and their gauges set.

The opt-out mirror comes first: the others keep users out through it (a deleted account, and a
withdrawal or a correction the history or the change set has no room for: `revoker`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumer.changes import changeset
from consumer.changes.applier import ChangeApplier, change_mirror
from consumer.changes.changeset import ACCOUNT_BYTES, ChangeSet
from consumer.consents import fingerprints
from consumer.consents import snapshot as consent_snapshot
from consumer.consents.applier import consent_mirror
from consumer.consents.fingerprints import ConsentSet
from consumer.consents.history import ConsentHistory
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.feeds.feeds import Feeds
from consumer.feeds.mirror import TopicMirror
from consumer.operations.acls import feed_group
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.operations.settings import Settings
from consumer.optouts.applier import OptOutApplier, optout_mirror, revoker
from consumer.optouts.filter import LoadedSnapshot, OptOutFilter, SnapshotError, load_snapshot
from consumer.wire.codec import Codec

KeepOut = Callable[[list[bytes]], None]


class FeedBuilder:
    def __init__(
        self,
        settings: Settings,
        clients: Clients,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        metrics: Metrics,
        log: Any,
        kafka_log: dict[str, Any],
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.codec = codec
        self.pseudonymiser = pseudonymiser
        self.metrics = metrics
        self.log = log
        self.kafka_log = kafka_log
        self.stopping = stopping
        self.optout_restored_at: float | None = None  # saved_at of the opt-out snapshot resumed, if any

    def feeds(self, consents_gate: bool | None = None) -> Feeds:
        """The opt-out and change mirrors (both gate input), and the consent mirror under an opt-in policy
        (active: it gates too; only the shadow's: read, but neither gating nor keeping anyone out).
        `consents_gate`: whether the consents gate, when not the active policy's model says so (a backfill
        deciding under a new opt-in policy needs them as current as the opt-outs)."""
        s = self.settings
        optouts, applier = self.optout_mirror()
        keep_out = revoker(optouts.lock, applier)
        changes = self.change_mirror(keep_out)
        consents = None
        opt_in = s.policy.consent_model == "opt_in" if consents_gate is None else consents_gate
        if s.consent_topic is not None:
            consents = self.consent_mirror(s.consent_topic, keep_out if opt_in else None, opt_in)
        sync_timeout = min(1.0, s.optout_max_lag_seconds / 2)
        return Feeds(optouts, consents, gate=opt_in, log=self.log, sync_timeout=sync_timeout, changes=changes)

    def _config(self, feed: str) -> dict[str, Any]:
        s = self.settings
        return s.consumer_config(**{"group.id": feed_group(s.group_id, feed)}, **self.kafka_log)

    # -- opt-outs -----------------------------------------------------------------------------------

    def optout_mirror(self) -> tuple[TopicMirror[OptOutApplier], OptOutApplier]:
        s = self.settings
        members, snapshot = self._load("optout", s.optout_snapshot_path, self._read_optouts)
        mirror = optout_mirror(
            self.clients,
            self._config("optout"),
            s.optouts_topic,
            s.revocations_topic,
            members,
            self.codec,
            self.pseudonymiser,
            self.metrics,
            self.log,
            self.stopping,
        )
        self.metrics.feed_lag(mirror.seconds_behind)
        _start(mirror, snapshot)
        if snapshot is not None and mirror.reset_reason is None:
            self.optout_restored_at = snapshot.saved_at
        f = mirror.applier.members  # a new, empty one if the snapshot's offsets could not be used
        self.metrics.optout_capacity.set(f.capacity)
        self.metrics.optout_bytes.set(f.size_bytes)
        self.metrics.optout_entries.set(f.entries)
        self.metrics.optout_fp_rate.set(f.estimated_fp_rate())
        return mirror, mirror.applier

    def _read_optouts(self, path: Path) -> LoadedSnapshot:
        s = self.settings
        topics = [s.optouts_topic, s.revocations_topic]
        return load_snapshot(path, s.optout_capacity, s.optout_fp_rate, topics, self.pseudonymiser.key_check())

    # -- changes ------------------------------------------------------------------------------------

    def change_mirror(self, keep_out: KeepOut) -> TopicMirror[ChangeApplier]:
        s = self.settings
        members, snapshot = self._load("change", s.changes_snapshot_path, self._read_changes)
        if members is None:
            members = ChangeSet(s.changes_capacity, s.changes_fp_rate, s.account_corrections_capacity)
        mirror = change_mirror(
            self.clients,
            self._config("change"),
            s.content_changes_topic,
            s.account_changes_topic,
            members,
            self.codec,
            self.pseudonymiser,
            self.metrics,
            self.log,
            keep_out,
            self.stopping,
            # The `content/` retractions say what compaction took from the content topic.
            ledger_topic=s.revocations_topic,
        )
        self.metrics.feed_lag(mirror.seconds_behind, "change")
        _start(mirror, snapshot)
        c = mirror.members
        self.metrics.change_capacity.labels("records").set(c.records.capacity)
        self.metrics.change_capacity.labels("accounts").set(c.account_capacity)
        self.metrics.change_bytes.set(c.records.size_bytes + len(c.accounts) * ACCOUNT_BYTES)
        self.metrics.change_entries.labels("records").set(c.records.entries)
        self.metrics.change_entries.labels("accounts").set(len(c.accounts))
        return mirror

    def _read_changes(self, path: Path) -> LoadedSnapshot:
        """The change set's snapshot, resumed only with an opt-out filter restored from a snapshot saved
        after it when opt-out snapshots are kept (a deletion within its offsets is in that filter only),
        and whether they are or not once the set kept a correction out for want of room: a filter read
        again from the topics never holds that (its `account/` retraction is not permanent)."""
        s = self.settings
        loaded = changeset.load(
            path,
            s.changes_capacity,
            s.changes_fp_rate,
            s.account_corrections_capacity,
            [s.content_changes_topic, s.account_changes_topic, s.revocations_topic],
            self.pseudonymiser.key_check(),
        )
        changes = loaded.filter
        assert isinstance(changes, ChangeSet)
        if s.optout_snapshot_path is not None or changes.refused:
            self._after_optouts(loaded, "changes")
        return loaded

    def _after_optouts(self, loaded: LoadedSnapshot, what: str) -> None:
        """SnapshotError unless the opt-out filter was restored from a snapshot saved after `loaded`:
        what `loaded`'s set kept out through the filter is then in it."""
        if self.optout_restored_at is None:
            raise SnapshotError(f"the opt-out filter was not restored from a snapshot: the {what} are read again")
        if loaded.saved_at > self.optout_restored_at:
            raise SnapshotError(f"it is newer than the opt-out snapshot: the {what} are read again")

    # -- consents -----------------------------------------------------------------------------------

    def consent_mirror(self, topic: str, keep_out: KeepOut | None, opt_in: bool) -> TopicMirror[Any]:
        s = self.settings
        history = ConsentHistory(s.consent_withdrawals_capacity)
        members, snapshot = self._load("consent", s.consent_snapshot_path, self._read_consents)
        if members is None:
            members = ConsentSet(s.consent_capacity)
        elif snapshot is not None:
            history = snapshot.extra
        mirror = consent_mirror(
            self.clients,
            self._config("consent"),
            topic,
            members,
            history,
            self.codec,
            self.pseudonymiser,
            self.metrics,
            self.log,
            keep_out,
            self.stopping,
            # Under an opt-in active policy the `consent/` retractions say what compaction took.
            ledger_topic=s.revocations_topic if opt_in else None,
        )
        self.metrics.feed_lag(mirror.seconds_behind, "consent", {"gates_input": "true" if opt_in else "false"})
        _start(mirror, snapshot)
        self._consent_gauges(mirror.members)
        return mirror

    def _read_consents(self, path: Path) -> LoadedSnapshot:
        """The consent set's snapshot. Once its history kept a withdrawal out through the opt-out filter
        (no room for it), resumed only with an opt-out filter restored from a snapshot saved after it: a
        filter read again from the topics never holds that (its `consent/` retraction is not permanent),
        and the user's next grant would count as a first grant."""
        s = self.settings
        topics = [s.consent_topic or ""]
        if s.policy.consent_model == "opt_in":
            topics.append(s.revocations_topic)
        loaded = consent_snapshot.load(
            path, s.consent_capacity, s.consent_withdrawals_capacity, topics, self.pseudonymiser.key_check()
        )
        if loaded.extra.kept_out:
            self._after_optouts(loaded, "consents")
        return loaded

    def _consent_gauges(self, c: ConsentSet) -> None:
        self.metrics.consent_capacity.set(c.capacity)
        self.metrics.consent_bytes.set(c.size_bytes)
        self.metrics.consent_entries.set(c.entries)
        self.metrics.consent_false_admission.set(c.false_admission_probability())
        # The figure the opt-in promise rests on: the chance that a user who never consented is admitted.
        self.log.info(
            "consent_set",
            capacity=c.capacity,
            slots=c.slots,
            bytes=c.size_bytes,
            entries=c.entries,
            fingerprint_bits=c.slots.bit_length() - 1 + 48,
            false_admission_probability_at_capacity=c.false_admission_probability(c.capacity),
            compiled=fingerprints.COMPILED,
        )

    # -- snapshots ----------------------------------------------------------------------------------

    def _load(
        self, kind: str, path: Path | None, read: Callable[[Path], LoadedSnapshot]
    ) -> tuple[Any, LoadedSnapshot | None]:
        """(the set, the snapshot) from `path` when it can be used, else (a new opt-out filter, or None
        for the others: their builder makes theirs, None)."""
        if path is not None:
            started = time.monotonic()
            try:
                loaded = read(path)
            except SnapshotError as exc:
                self.metrics.snapshots.labels("load", "unusable").inc()
                self.log.info(f"{kind}_snapshot_not_used", reason=str(exc), path=str(path))
            else:
                took = time.monotonic() - started
                self.metrics.snapshots.labels("load", "ok").inc()
                self.metrics.snapshot_seconds.labels("load").set(took)
                self.log.info(
                    f"{kind}_snapshot_loaded",
                    entries=loaded.filter.entries,
                    seconds=round(took, 3),
                    age_seconds=round(time.time() - loaded.saved_at, 1),
                    partitions=len(loaded.offsets),
                )
                return loaded.filter, loaded
        if kind == "optout":
            s = self.settings
            return OptOutFilter(s.optout_capacity, s.optout_fp_rate), None
        return None, None


def _start(mirror: TopicMirror[Any], snapshot: LoadedSnapshot | None) -> None:
    mirror.start(*((snapshot.offsets, snapshot.topic_ids) if snapshot is not None else (None, None)))
