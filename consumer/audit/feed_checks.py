"""Two checks of the feeds against the receipts and the revocations topic.

- **Stale feed**: the service promises that input pauses when a feed falls behind by more than
  TF_OPTOUT_MAX_LAG_SECONDS. A receipt whose positions leave out a record of a gating feed topic (the
  opt-out topic, the change topics, and the consent topic when it gates) that the broker had appended
  longer than that before `decided_at` broke the promise: `stale_feed`. A gating feed partition the
  receipt does not name at all counts as read from nothing. The record's timestamp is the broker's
  (LogAppendTime) or its producer's (CreateTime): docs/audit.md says which to configure.
- **Revocations**: every opt-out, consent withdrawal (when consents gate), content change and account
  change that the service's retraction emitter has committed past (its group `<TF_GROUP_ID>-revocations`
  commits only behind acknowledged retractions), or that was appended before the window's end less a
  grace for the emitter to catch up, must have its
  retraction on the revocations topic, under the key docs/retractions.md names (`<pseudonym>`,
  `consent/`, `content/`, `deleted/` or `account/`): else `missing_revocation`. A permanent one (an
  opt-out, a deletion) must be in force: not lifted.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from consumer.audit.feed_state import COMMITTED, FeedStore
from consumer.audit.findings import Findings
from consumer.audit.receipt_log import Receipt
from consumer.changes.records import parse_account_change, parse_content_change
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.feeds.records import parse_consent, parse_optout
from consumer.operations.settings import Settings
from consumer.wire.codec import REVOCATION, Codec


class StaleFeeds:
    """The earliest timestamp at or after each offset of the gating feed partitions (suffix minima)."""

    def __init__(self, store: FeedStore, gating: dict[str, list[str]]) -> None:
        self.store = store
        self.gating = gating  # feed -> its gating topics
        self.earliest: dict[tuple[bool, str, int], list[int]] = {}
        for feed, topics in gating.items():
            committed = COMMITTED[feed]
            for topic in topics:
                for partition in store.partitions(committed, topic):
                    key = (committed, topic, partition)
                    stamps = [m.timestamp()[1] for m in store.records[key]]
                    for i in range(len(stamps) - 2, -1, -1):
                        stamps[i] = min(stamps[i], stamps[i + 1])
                    self.earliest[key] = stamps

    def check(self, receipt: Receipt, max_lag_ms: int, findings: Findings) -> None:
        positions = {(f["feed"], f["topic"], f["partition"]): f["next_offset"] for f in receipt.record["feeds"]}
        named = {feed for feed, _, _ in positions}
        for feed, topics in self.gating.items():
            if feed == "consents" and "consents" not in named:
                continue  # consents do not gate under this receipt's policy
            committed = COMMITTED[feed]
            for topic in topics:
                for partition in self.store.partitions(committed, topic):
                    key = (committed, topic, partition)
                    next_offset = positions.get((feed, topic, partition), 0)
                    i = bisect_left(self.store.offsets[key], next_offset)
                    stamps = self.earliest[key]
                    if i < len(stamps) and stamps[i] < receipt.decided_at_ms - max_lag_ms:
                        late = (receipt.decided_at_ms - stamps[i]) / 1000
                        findings.add(
                            "stale_feed",
                            *receipt.input,
                            receipt.first,
                            f"decided (input offsets {receipt.first}-{receipt.last}, {receipt.where()}) without "
                            f"{topic} partition {partition} from offset {next_offset} on, which held a record "
                            f"appended {late:,.0f} s earlier (more than the {max_lag_ms / 1000:,.0f} s the service "
                            "promises): the feed was stale and input should have paused; what this batch emitted "
                            "may include records of users who had objected",
                        )


def expected_retractions(
    store: FeedStore,
    s: Settings,
    codec: Codec,
    pseudonymiser: Pseudonymiser,
    before_ms: int,
    consents_gate: bool,
    handled: dict[tuple[str, int], int],
) -> Iterable[tuple[bytes, bool, str, int, int, str]]:
    """(key, permanent, topic, partition, offset, what) of each retraction the feeds' records call for:
    those the emitter's group has committed past (`handled`: it commits only behind acknowledged
    retractions), and those appended before `before_ms` (it had time enough)."""
    pseudonym = pseudonymiser.pseudonym
    sources = [(s.optouts_topic, "optout"), (s.content_changes_topic, "content"), (s.account_changes_topic, "account")]
    if consents_gate and s.consent_topic is not None:
        sources.append((s.consent_topic, "consent"))
    for topic, kind in sources:
        for partition in store.partitions(True, topic):
            done = handled.get((topic, partition), 0)
            for msg in store.records[True, topic, partition]:
                if msg.offset() >= done and msg.timestamp()[1] >= before_ms:
                    continue
                for key, permanent, what in _keys(kind, msg, codec, pseudonym):
                    yield key, permanent, topic, partition, msg.offset(), what


def _keys(kind: str, msg: Any, codec: Codec, pseudonym: Any) -> list[tuple[bytes, bool, str]]:
    if kind == "optout":
        users, _, _ = parse_optout(codec, msg)
        return [(pseudonym(u), True, "an opt-out") for u in users]
    if kind == "content":
        changed = parse_content_change(codec, msg, lookup=True)
        return [(b"content/" + r.encode("utf-8"), False, "a content change") for r in changed.record_ids]
    if kind == "account":
        accounts = parse_account_change(codec, msg, lookup=True).accounts
        return [
            (b"deleted/" + pseudonym(u), True, "an account deletion")
            if f.deleted
            else (b"account/" + pseudonym(u), False, "an account correction")
            for u, f in accounts
        ]
    users, granted, _, _ = parse_consent(codec, msg)
    return [] if granted else [(b"consent/" + pseudonym(u), False, "a consent withdrawal") for u in users]


def check_revocations(
    expected: Iterable[tuple[bytes, bool, str, int, int, str]],
    in_force: dict[bytes, bytes | None],
    codec: Codec,
    revocations_topic: str,
    findings: Findings,
) -> int:
    """Each expected retraction looked up among the revocations topic's latest value per key; how many."""
    checked = 0
    for key, permanent, topic, partition, offset, what in expected:
        checked += 1
        value = in_force.get(key)
        problem = None
        if value is None:
            problem = "has no retraction" if key not in in_force else "has only a tombstone"
        elif permanent:
            try:
                record = codec.decode_own(value, REVOCATION)
                if record["lifted"] or record["created_before"] is not None:
                    problem = "has a retraction that is lifted or bounded, where it must be permanent"
            except Exception:
                problem = "has a retraction that does not decode"
        if problem is not None:
            prefix = key.split(b"/")[0].decode() + "/<...>" if b"/" in key else "<pseudonym>"
            findings.add(
                "missing_revocation",
                topic,
                partition,
                offset,
                f"{what} {problem} on {revocations_topic} (key {prefix}): readers of the training topic were not "
                "told to purge; check the service's retraction emitter (its consumer group on the feed topics), "
                "and whether the retraction was deleted",
            )
    return checked
