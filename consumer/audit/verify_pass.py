"""`training-filter audit verify`'s checks of what was read (consumer/audit/verifier.py): each receipt
of the window decided again, in the order the receipts were decided, and compared.

Per receipt: its policy found by hash (`unknown_policy` if not kept, or of another version); the feeds'
state at its positions (consumer/audit/feed_state.py), checked for staleness; its input records
re-decided (consumer/audit/redecide.py): `records`, the counts by decision and by dead-letter cause
must be the re-decision's (`counts_differ`), and every record it admits must be on the training topic
with that body (`not_emitted`), unless the broker refused its output for good: then its
`output_rejected` letter must be on the dead-letter topic, and it counts as the service counted it
(`eligible`, or `undeliverable` when refused on an earlier attempt too). Then, over the window:
offsets holding records that no receipt covers (`gap`), overlaps under exactly-once (`conflict`),
training records no re-decision accounts for (`emitted_not_eligible` where receipts cover their input,
`injected` where none does), and the retractions the feeds call for (`missing_revocation`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumer.audit.audited_batch import UNDELIVERABLE
from consumer.audit.coverage import Interval, merged, overlaps, uncovered
from consumer.audit.feed_checks import StaleFeeds, check_revocations, expected_retractions
from consumer.audit.feed_state import FeedPool
from consumer.audit.findings import Findings
from consumer.audit.input_buffers import InputBuffers
from consumer.audit.receipt_log import Receipt
from consumer.audit.redecide import Redecider
from consumer.audit.verifier import Read
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations.clients import Clients
from consumer.operations.settings import Settings
from consumer.wire.codec import Codec
from rules import Policy, Reason

REFUSED = "output_rejected"  # the dead-letter cause of an output the broker refused for good


@dataclass
class Totals:
    receipts: int = 0
    records: int = 0  # input records re-decided
    revocations: int = 0  # retractions looked up
    feed_states: int = 0


class Pass:
    def __init__(
        self,
        settings: Settings,
        clients: Clients,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        redecider: Redecider,
        policies: dict[str, Policy],
        findings: Findings,
    ) -> None:
        self.s = settings
        self.clients = clients
        self.codec = codec
        self.pseudonymiser = pseudonymiser
        self.redecider = redecider
        self.policies = policies
        self.findings = findings
        self.totals = Totals()
        self.skipped: dict[tuple[str, int], list[Interval]] = {}  # ranges not re-decided (already reported)

    def run(
        self,
        read: Read,
        config: dict[str, Any],
        on_read: Callable[[int], None],
        before_ms: int,
        handled: dict[tuple[str, int], int],
    ) -> Totals:
        s = self.s
        gating = {"optouts": [s.optouts_topic], "changes": [s.content_changes_topic, s.account_changes_topic]}
        if s.consent_topic is not None:
            gating["consents"] = [s.consent_topic]
        stale = StaleFeeds(read.store, gating)
        pool = FeedPool(s, self.codec, self.pseudonymiser, read.store)
        order = sorted(read.receipts, key=lambda r: (r.decided_at_ms, r.audit_partition, r.audit_offset))
        firsts: dict[tuple[str, int], list[int]] = {}
        for r in order:
            firsts.setdefault(r.input, []).append(r.first)
        buffers = InputBuffers(self.clients, config, read.hull, firsts, on_read)
        try:
            for receipt in order:
                messages = buffers.take(receipt.input, receipt.first, receipt.last)
                self._receipt(receipt, messages, read, pool, stale)
            buffers.drain()
            self._gaps(read, buffers)
        finally:
            buffers.close()
        self._overlaps(read.receipts)
        self._unmatched(read)
        opt_in = any(p.consent_model == "opt_in" for p in self.policies.values()) and s.policy.consent_model == "opt_in"
        expected = expected_retractions(read.store, s, self.codec, self.pseudonymiser, before_ms, opt_in, handled)
        self.totals.revocations = check_revocations(
            expected, read.in_force, self.codec, s.revocations_topic, self.findings
        )
        self.totals.feed_states = pool.built
        return self.totals

    def _receipt(self, r: Receipt, messages: list[Any], read: Read, pool: FeedPool, stale: StaleFeeds) -> None:
        self.totals.receipts += 1
        rec, f = r.record, self.findings
        topic, partition = r.input
        stale.check(r, int(self.s.optout_max_lag_seconds * 1000), f)
        policy = self.policies.get(rec["policy_sha256"])
        if policy is None or policy.version != rec["policy_version"]:
            found = (
                "not among the kept policy files"
                if policy is None
                else f"the kept file of that hash is {policy.version}"
            )
            f.add(
                "unknown_policy",
                topic,
                partition,
                r.first,
                f"{r.where()} was decided under policy "
                f"{rec['policy_version']} (SHA-256 {rec['policy_sha256']}), {found}: keep every policy file ever "
                "deployed in the --policies folder; its input offsets "
                f"{r.first}-{r.last} were not re-decided",
            )
            self._skip(r)
            return
        log_start = read.log_start.get(r.input, 0)
        if r.first < log_start:
            f.add(
                "not_retained",
                topic,
                partition,
                r.first,
                f"{r.where()} covers input offsets {r.first}-{r.last}, "
                f"but {topic} now starts at offset {log_start}: its retention is shorter than the audit period, "
                "and this range can no longer be re-decided",
            )
            self._skip(r)
            return
        positions = {(p["feed"], p["topic"], p["partition"]): p["next_offset"] for p in rec["feeds"]}
        opt_in = policy.consent_model == "opt_in"
        state = pool.state(rec["replica"], positions, opt_in)
        decided = self.redecider.decide(r, policy, rec["policy_sha256"], state, messages)
        self.totals.records += len(messages)
        missing = [where for where, digest in sorted(decided.eligible.items()) if not read.emitted.match(where, digest)]
        # Eligible, but the broker refused its output for good: its letter on the DLQ stands for it.
        refused = [where for where in missing if where in read.emitted.refused]
        self._counts(r, len(messages), *_as_delivered(rec, decided.decisions, decided.dead_letters, len(refused)))
        for where in missing:
            if where not in read.emitted.refused:
                f.add(
                    "not_emitted",
                    where[0],
                    where[1],
                    where[2],
                    f"re-decided eligible under {r.where()}, but "
                    f"{self.s.training_topic} holds no such record with this provenance (removed, altered, or "
                    "never written although the receipt says the batch's outputs were acknowledged)",
                )

    def _counts(self, r: Receipt, read: int, decisions: Counter[str], dead_letters: Counter[str]) -> None:
        rec = r.record
        said = Counter({c["name"]: c["records"] for c in rec["decisions"] if c["records"]})
        said_dead = Counter({c["name"]: c["records"] for c in rec["dead_letters"] if c["records"]})
        differ = []
        if rec["records"] != read:
            differ.append(f"records {rec['records']:,} said, {read:,} in the input range")
        if said != +decisions:
            differ.append(f"decisions said {_counts(said)}, re-decided {_counts(+decisions)}")
        if said_dead != +dead_letters:
            differ.append(f"dead letters said {_counts(said_dead)}, re-decided {_counts(+dead_letters)}")
        if differ:
            self.findings.add(
                "counts_differ",
                *r.input,
                r.first,
                f"{r.where()} (input offsets {r.first}-{r.last}): "
                + "; ".join(differ)
                + ": the receipt does not say what its input decides to",
            )

    def _skip(self, r: Receipt) -> None:
        self.skipped.setdefault(r.input, []).append((r.first, r.last))

    def _gaps(self, read: Read, buffers: InputBuffers) -> None:
        for tp, seen in sorted(buffers.seen.items()):
            window = read.window.get(tp)
            if window is None:
                continue
            in_window = (o for o in seen if window.start <= o < window.end)
            for first, last, count in uncovered(in_window, read.covered.get(tp, [])):
                self.findings.add(
                    "gap",
                    tp[0],
                    tp[1],
                    first,
                    f"input offsets {first}-{last} ({count:,} records) are "
                    "covered by no receipt: never decided, or their receipt was removed or is unsigned",
                )

    def _overlaps(self, receipts: list[Receipt]) -> None:
        by_partition: dict[tuple[str, int], list[Receipt]] = {}
        for r in receipts:
            by_partition.setdefault(r.input, []).append(r)
        for tp, rs in sorted(by_partition.items()):
            for i, j, (first, last) in overlaps([((r.first, r.last), k) for k, r in enumerate(rs)]):
                a, b = rs[i], rs[j]
                if "exactly-once" in (a.record["guarantee"], b.record["guarantee"]):
                    self.findings.add(
                        "conflict",
                        tp[0],
                        tp[1],
                        first,
                        f"input offsets {first}-{last} are covered "
                        f"by two receipts under exactly-once ({b.where()} and {a.where()}): a range is "
                        "decided once, in one transaction",
                    )

    def _unmatched(self, read: Read) -> None:
        topic = self.s.training_topic
        for where, records in sorted(read.emitted.by_provenance.items()):
            tp, offset = (where[0], where[1]), where[2]
            if _inside(self.skipped.get(tp, []), offset):
                continue
            covered = _inside(read.covered.get(tp, []), offset)
            for e in records:
                if e.matched:
                    continue
                if covered:
                    self.findings.add(
                        "emitted_not_eligible",
                        topic,
                        e.partition,
                        e.offset,
                        f"its input ({tp[0]} "
                        f"partition {tp[1]} offset {offset}) is covered by receipts whose re-decision "
                        "does not emit this record: refused, or emitted with other content",
                    )
                else:
                    self.findings.add(
                        "injected",
                        topic,
                        e.partition,
                        e.offset,
                        f"its provenance ({tp[0]} partition "
                        f"{tp[1]} offset {offset}) is covered by no receipt: the service did not write it",
                    )


def _as_delivered(
    rec: dict[str, Any], decisions: Counter[str], dead_letters: Counter[str], refused: int
) -> tuple[Counter[str], Counter[str]]:
    """The re-decision's counts as the service keeps them when the broker refused `refused` eligible
    records' outputs for good (consumer/datapath/refused.py): each one an `output_rejected` dead letter,
    still counted `eligible`, or `undeliverable` when it was refused on an earlier attempt too (as
    many as the receipt says, if their letters are there; more is a discrepancy)."""
    if not refused:
        return decisions, dead_letters
    decisions, dead_letters = Counter(decisions), Counter(dead_letters)
    dead_letters[REFUSED] += refused
    said = sum(c["records"] for c in rec["decisions"] if c["name"] == UNDELIVERABLE)
    if said <= refused:
        decisions[str(Reason.ELIGIBLE)] -= said
        decisions[UNDELIVERABLE] += said
    return decisions, dead_letters


def _inside(intervals: list[Interval], offset: int) -> bool:
    return any(first <= offset <= last for first, last in intervals)


def _counts(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(c.items())) or "none"


__all__ = ["Pass", "Totals", "merged"]
