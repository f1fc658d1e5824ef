"""What `training-filter audit verify` found: each discrepancy by kind, where (topic, partition, offset)
and in words an auditor can act on, never a user id, pseudonym or text (docs/audit.md#verifying).

The kinds, in the order the verifier reports them:

| kind | what it means |
|---|---|
| `bad_signature` | a receipt whose HMAC does not verify under the audit key: edited, or signed by another key |
| `broken_chain` | a receipt that does not link to the one before it: one removed, inserted or edited between |
| `unreadable` | a record of the audit or training topic that does not decode as its schema |
| `unknown_policy` | a receipt's policy hash is not among the kept policy files (or names another version) |
| `gap` | input offsets holding records that no receipt covers |
| `conflict` | receipts whose ranges overlap under exactly-once, or that re-decide differently where they do |
| `not_retained` | input a receipt covers that the input topic no longer holds: it cannot be re-decided |
| `counts_differ` | a receipt's counts (by decision, by dead-letter cause) differ from the re-decision |
| `not_emitted` | a record the re-decision admits that the training topic does not hold |
| `emitted_not_eligible` | a training record whose input the receipts cover but the re-decision refuses |
| `injected` | a training record whose provenance no receipt covers, or that is not a TrainingRecord |
| `stale_feed` | a receipt decided without a feed record appended longer ago than the promised lag |
| `missing_revocation` | an opt-out, withdrawal or change whose retraction is not on the revocations topic |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = (
    "bad_signature",
    "broken_chain",
    "unreadable",
    "unknown_policy",
    "gap",
    "conflict",
    "not_retained",
    "counts_differ",
    "not_emitted",
    "emitted_not_eligible",
    "injected",
    "stale_feed",
    "missing_revocation",
)
KEPT_AT_MOST = 1000  # the VerificationResult's limit; discrepancy_count says how many there were


@dataclass(frozen=True, order=True)
class Discrepancy:
    kind: str
    topic: str | None
    partition: int | None
    offset: int | None
    detail: str

    def as_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "detail": self.detail,
        }

    def line(self) -> str:
        where = self.topic or "-"
        if self.partition is not None:
            where += f"[{self.partition}]"
        if self.offset is not None:
            where += f"@{self.offset}"
        return f"{self.kind}: {where}: {self.detail}"


@dataclass
class Findings:
    """The discrepancies, the first KEPT_AT_MOST of each kind kept (so that one flood does not hide the
    others), all counted."""

    kept: list[Discrepancy] = field(default_factory=list)
    count: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, topic: str | None, partition: int | None, offset: int | None, detail: str) -> None:
        assert kind in KINDS, kind
        self.count += 1
        seen = self.by_kind.get(kind, 0)
        self.by_kind[kind] = seen + 1
        if seen < KEPT_AT_MOST:
            self.kept.append(Discrepancy(kind, topic, partition, offset, detail))

    def ordered(self) -> list[Discrepancy]:
        """By kind (in KINDS' order), then where."""
        rank = {k: i for i, k in enumerate(KINDS)}
        return sorted(self.kept, key=lambda d: (rank[d.kind], d.topic or "", d.partition or 0, d.offset or 0, d.detail))

    def first(self, limit: int = KEPT_AT_MOST) -> list[Discrepancy]:
        return self.ordered()[:limit]
