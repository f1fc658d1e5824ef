"""What a change record does to the change set (consumer/changes/changeset.py), on every replica.

The change mirror (consumer/feeds/mirror.py) reads both change topics, every partition, into one
change set, synced before each batch and gating input as the opt-out mirror does: a change feed that
falls behind or fails pauses input (fail closed).

- a content change stops its record id (and its key's, if they differ), for good; one whose value
  cannot be read, or whose schema cannot be had now, stops its key all the same (never read again:
  stopping is what the change would do anyway);
- an account change records the account's facts; a deletion keeps the account out through the opt-out
  filter itself (`keep_out`, for good: the account retraction in the ledger puts it back after
  compaction), and its facts are kept too, to name the reason; a correction that does not fit the set
  keeps the account out instead (fail closed, counted); one whose value cannot be read gives unknown
  facts; one whose schema cannot be had now is read again (the sync fails meanwhile: input pauses);
- a tombstone changes nothing: a change is final.

The mirror also reads the revocations topic (the ledger): compaction keeps a content change's
tombstone alone, and then only its `content/<record_id>` retraction says the record changed. A `RECORD`
retraction of that key stops its record id, as the change did; one that cannot be read stops the id its
key names (our own output: taken for the retraction it most likely is). The other retractions are the
opt-out filter's (opt-outs, deleted accounts) and the consent history's; an account's facts as they
are now stay on its compacted topic; and `policy/` ones are not final (a backfill with `--admit`
lifts them), so they stop nothing here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from consumer.changes.changeset import ChangeSet
from consumer.changes.records import DEFERRED, parse_account_change, parse_content_change
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.feeds.mirror import TopicMirror
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.wire.codec import REVOCATION, Codec

_CONTENT = b"content/"  # the key prefix of a content change's retraction (consumer/changes/retractions.py)


class ChangeApplier:
    kind = "change"

    def __init__(
        self,
        members: ChangeSet,
        content_topic: str,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        metrics: Metrics,
        keep_out: Callable[[list[bytes]], None],
        ledger_topic: str | None = None,
    ) -> None:
        self.members = members
        self.content_topic = content_topic
        self.ledger_topic = ledger_topic
        self.codec = codec
        self.pseudonym = pseudonymiser.pseudonym
        self.metrics = metrics
        self.keep_out = keep_out
        self._results: dict[str, int] = {}
        self._kept_out: list[bytes] = []
        self._delays: list[int] = []

    def record(self, msg: Any, live: bool) -> bool:
        if msg.topic() == self.ledger_topic:
            ledger = self._ledger(msg)
            if ledger is not None:
                self._results[ledger] = self._results.get(ledger, 0) + 1
            return True  # our own output, never read again (and no propagation delay: not a change)
        if msg.topic() == self.content_topic:
            result = self._content(msg)
        else:
            try:
                result = self._account(msg)
            except DEFERRED:
                return False  # read again: an account's facts are never guessed
        self._results[result] = self._results.get(result, 0) + 1
        if live:
            self._delays.append(msg.timestamp()[1])
        return True

    def _content(self, msg: Any) -> str:
        changed = parse_content_change(self.codec, msg)
        for record_id in changed.record_ids:
            self.members.stop(record_id)
        return changed.result

    def _ledger(self, msg: Any) -> str | None:
        """A retraction of the revocations topic: only a `RECORD` one keyed `content/<record_id>` stops a
        record id (None: the retraction says nothing of the change set)."""
        key, value = msg.key(), msg.value()
        if not key or not key.startswith(_CONTENT) or value is None:
            return None
        keyed = key[len(_CONTENT) :].decode("utf-8", "replace")
        try:
            _, record = self.codec.decode(value, REVOCATION, lookup=False)
            scope, lifted, record_id = record["scope"], record["lifted"], record["record_id"]
        except Exception:  # unreadable (or its schema not to be had now): the key names the record
            self.members.stop(keyed)
            return "ledger_undecodable_used_key"
        if scope != "RECORD" or lifted:
            return None  # not what a content change writes: it stops nothing
        self.members.stop(keyed)
        if isinstance(record_id, str) and record_id and record_id != keyed:
            self.members.stop(record_id)
        return "ledger_record_stopped"

    def _account(self, msg: Any) -> str:
        changed = parse_account_change(self.codec, msg)
        result = changed.result
        for user_id, facts in changed.accounts:
            pseudonym = self.pseudonym(user_id)
            if facts.deleted:
                self._kept_out.append(pseudonym)
            if not self.members.correct(pseudonym, facts) and not facts.deleted:
                self._kept_out.append(pseudonym)
                result = "account_refused_full"
        return result

    def batch_done(self, live: bool) -> None:
        if self._kept_out:
            self.keep_out(self._kept_out)
            self._kept_out = []
        m = self.metrics
        for result, count in self._results.items():
            m.change_records.labels(result).inc(count)
        if self._results:
            m.change_entries.labels("records").set(self.members.records.entries)
            m.change_entries.labels("accounts").set(len(self.members.accounts))
            m.change_fp_rate.set(self.members.records.estimated_fp_rate())
        self._results = {}
        if self._delays:
            now_ms = time.time() * 1000
            for stamp in self._delays:
                if stamp > 0:
                    m.change_propagation.observe(max(0.0, now_ms - stamp) / 1000)
            self._delays = []

    def went_back(self) -> bool:
        return False  # a change is final: only the partitions that went back are read again

    def reset(self) -> None:
        self.members = self.members.emptied()


def change_mirror(
    clients: Clients,
    config: dict[str, Any],
    content_topic: str,
    account_topic: str,
    members: ChangeSet,
    codec: Codec,
    pseudonymiser: Pseudonymiser,
    metrics: Metrics,
    log: Any,
    keep_out: Callable[[list[bytes]], None],
    stopping: Callable[[], bool] = lambda: False,
    ledger_topic: str | None = None,
) -> TopicMirror[ChangeApplier]:
    """Both change topics mirrored into `members` (not started), both gating input, and the `content/`
    retractions of `ledger_topic` (the revocations topic: what compaction took from the content topic)."""
    applier = ChangeApplier(members, content_topic, codec, pseudonymiser, metrics, keep_out, ledger_topic)
    return TopicMirror(
        clients, config, content_topic, ledger_topic, applier, codec, log, stopping=stopping, also=(account_topic,)
    )
