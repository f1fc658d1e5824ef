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

Under an opt-in active policy a withdrawal also keeps its user out at once (`keep_out`, into the opt-out
filter, wired by consumer/service/assemble.py): records are applied in offset order per partition only,
and a user whose grant and withdrawal sit in different partitions (the topic grew, so the key maps
elsewhere) may have the grant read last. With the withdrawal in the opt-out filter the opt-out check
turns that user away whatever the read order. When only the shadow candidate is opt-in there is no
`keep_out`: the active policy's output must not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumer.consents.fingerprints import ConsentSet
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.feeds.mirror import TopicMirror
from consumer.feeds.records import parse_consent
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.wire.codec import Codec, LookupDeferredError
from consumer.wire.registry import RegistryRefused, RegistryUnavailable


class ConsentApplier:
    kind = "consent"

    def __init__(
        self,
        members: ConsentSet,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        metrics: Metrics,
        keep_out: Callable[[list[bytes]], None] | None = None,
    ) -> None:
        self.members = members
        self.codec = codec
        self.pseudonym = pseudonymiser.pseudonym
        self.metrics = metrics
        self.keep_out = keep_out
        self._results: dict[str, int] = {}
        self._withdrawn: list[bytes] = []
        self._refused_before = members.refused

    def record(self, msg: Any, live: bool) -> bool:
        try:
            users, granted, _, result = parse_consent(self.codec, msg, lookup=False)
        except (RegistryUnavailable, RegistryRefused, LookupDeferredError):
            return False  # read again: a withdrawal is for good, never inferred from a look-up put off
        pseudonyms = [self.pseudonym(user_id) for user_id in users]
        if granted:
            for p in pseudonyms:
                self.members.add(p)
        else:
            for p in pseudonyms:
                self.members.remove(p)
            self._withdrawn += pseudonyms
        self._results[result] = self._results.get(result, 0) + 1
        return True

    def batch_done(self, live: bool) -> None:
        if self._withdrawn and self.keep_out is not None:
            # Before this set's lock is let go: a snapshot of the consents taken after it is matched by
            # an opt-out snapshot (taken after it, consumer/service/upkeep.py) that holds them.
            self.keep_out(self._withdrawn)
        self._withdrawn = []
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
        self.metrics.consent_entries.set(0)
        return True  # read the whole topic again: consents it no longer holds must not stay granted

    def reset(self) -> None:
        self.members = self.members.emptied()


def consent_mirror(
    clients: Clients,
    config: dict[str, Any],
    topic: str,
    members: ConsentSet,
    codec: Codec,
    pseudonymiser: Pseudonymiser,
    metrics: Metrics,
    log: Any,
    keep_out: Callable[[list[bytes]], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> TopicMirror[ConsentApplier]:
    """The consent topic mirrored into `members` (not started); `keep_out`: see the module docstring."""
    applier = ConsentApplier(members, codec, pseudonymiser, metrics, keep_out)
    return TopicMirror(clients, config, topic, None, applier, codec, log, stopping=stopping)
