"""`training-filter backfill --policy NEW.toml`: a range of the input topics decided again under a new
policy and today's feeds, and the training set made to follow the change.

Each record of the range (consumer/commands/backfill_scope.py) is decided twice by the service's own
batch processor, with today's opt-outs, changes and consents: under the active policy (TF_POLICY_FILE,
with the new one as its shadow, for the comparison table the shadow evaluation prints) and under the
new one. Their outputs are kept, not written (`Diverted`), and compared by provenance:

- admitted by the active policy, refused by the new: a `policy/<record_id>` retraction (Revocation v2,
  scope RECORD, reason `policy_changed`, consumer/changes/retractions.py);
- with `--admit`, refused by the active policy, admitted by the new: a `lifted` retraction of the same
  key (it ends one an earlier, stricter backfill wrote), then the record as the new policy builds it.
  An opted-out or non-consenting user's record is never among them: the new policy's decision saw the
  same feeds.

It runs on the same transactional pass as `dlq replay` (consumer/commands/transactional_pass.py), with a
group named after its options (`Scope.group`): killed and started again, it goes on and emits nothing
twice; `--dry-run` prints the comparison and writes nothing.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from consumer.changes import retractions
from consumer.commands.backfill_scope import Scope, input_ranges, provenance, scope_of
from consumer.commands.check import comparison_table
from consumer.commands.decide_again import DecidingParts, Diverted, assemble_deciding, cause_of
from consumer.commands.guarded import UsageError, guarded, report
from consumer.commands.transactional_pass import DryRun, TransactionalPass
from consumer.datapath.batch import BatchProcessor
from consumer.datapath.offsets import PendingBatch, Provenance
from consumer.datapath.produce import produce_when_room
from consumer.datapath.shadow import Pair, by_decisions
from consumer.operations import logs
from consumer.operations.clients import Clients, KafkaClients
from consumer.operations.settings import Settings, load_settings
from consumer.service.state import State
from consumer.wire.codec import REVOCATION, TRAINING_RECORD, Codec
from rules import Policy, PolicyError, Retraction, account_retraction, load_policy

Admitted = dict[Provenance, tuple[str, bytes, bytes]]  # provenance -> (record id, pseudonym, TrainingRecord)


@dataclass
class BackfillCounts:
    records: int = 0  # read from the range
    decided: int = 0  # of them, decided (with --from-training: those the clean topic names)
    retracted: int = 0  # newly refused: a policy/ retraction each
    admitted: int = 0  # newly eligible (written with --admit)
    held: int = 0  # newly eligible, but an account retraction of the active policy names them: not written
    undecodable: Counter[str] = field(default_factory=Counter)  # dead letters now, by cause (none written)
    pairs: Counter[Pair] = field(default_factory=Counter)  # (source, active, new) -> records

    def add(self, other: BackfillCounts) -> None:
        self.records += other.records
        self.decided += other.decided
        self.retracted += other.retracted
        self.admitted += other.admitted
        self.held += other.held
        self.undecodable.update(other.undecodable)
        self.pairs.update(other.pairs)


class Backfill:
    """The pass's batches (transactional_pass.Batches): both decisions of each record, and what differs."""

    def __init__(
        self,
        active: tuple[BatchProcessor, Diverted],
        new: tuple[BatchProcessor, Diverted],
        producer: Any | None,
        settings: Settings,
        admit: bool,
        wanted: dict[tuple[str, int], set[int]] | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        (self.active, self.kept_active), (self.new, self.kept_new) = active, new
        self.producer = producer  # None: a dry run
        self.codec: Codec = self.active.codec
        self.settings = settings
        self.admit = admit
        self.wanted = wanted
        self.clock = clock
        self.totals = BackfillCounts()

    def prepare(self, messages: list[Any]) -> tuple[list[Any], int]:
        read = len(messages)
        if self.wanted is not None:
            wanted = self.wanted
            messages = [m for m in messages if m.offset() in wanted.get((m.topic(), m.partition()), ())]
        self.active.resolve_schemas(messages)  # one codec: the second knows every id the first looked up
        self.new.resolve_schemas(messages)
        return messages, read

    def decide(self, prepared: tuple[list[Any], int], batch: PendingBatch) -> BackfillCounts:
        messages, read = prepared
        counts = BackfillCounts(records=read, decided=len(messages))
        before, shadow = self._decided(self.active, self.kept_active, messages, counts)
        now, _ = self._decided(self.new, self.kept_new, messages, None)
        counts.pairs.update(shadow)
        at_ms = int(self.clock() * 1000)
        for where in sorted(before.keys() - now.keys()):
            record_id, pseudonym, _ = before[where]
            self._retract(batch, record_id, pseudonym, at_ms, lifted=False)
            counts.retracted += 1
        for where in sorted(now.keys() - before.keys()):
            record_id, pseudonym, value = now[where]
            if self._held_by_account(pseudonym, value, at_ms):
                counts.held += 1
                continue
            counts.admitted += 1
            if self.admit:
                self._retract(batch, record_id, pseudonym, at_ms, lifted=True)
                self._produce(batch, self.settings.training_topic, value, pseudonym)
        return counts

    def _held_by_account(self, pseudonym: bytes, value: bytes, at_ms: int) -> bool:
        """Whether the `account/` retraction the service wrote for this author under the active policy
        names the record: a backfill cannot end it (it has one writer, the account changes), so a reader
        would drop the record; it stays out until the account's next change is decided anew."""
        guard = self.active.changes
        facts = guard.accounts.get(pseudonym) if guard is not None else None
        if facts is None:
            return False
        skew_ms = int(self.settings.clock_skew_seconds * 1000)
        _, before = account_retraction(self.active.decider, facts, at_ms + skew_ms)
        created = self.codec.decode_own(value, TRAINING_RECORD)["created_at"]
        return before is None or int(created.timestamp() * 1000) < before

    def committed(self, decided: BackfillCounts) -> None:
        self.totals.add(decided)

    def _decided(
        self, processor: BatchProcessor, kept: Diverted, messages: list[Any], counts: BackfillCounts | None
    ) -> tuple[Admitted, dict[Pair, int]]:
        """What one policy admits of the batch, by provenance (its dead letters counted into `counts`), and
        with a shadow the (source, active, shadow) counts of the batch."""
        kept.take()
        if processor.shadow is not None:
            processor.shadow.totals.clear()
        processor.process(messages, PendingBatch(), {})
        processor.take_counts()
        admitted: Admitted = {}
        for topic, value, key, headers in kept.take():
            if topic == self.settings.training_topic and value is not None and key is not None:
                r = self.codec.decode_own(value, TRAINING_RECORD)
                admitted[r["source_topic"], r["source_partition"], r["source_offset"]] = (r["record_id"], key, value)
            elif counts is not None:
                counts.undecodable[cause_of(headers)] += 1
        return admitted, dict(processor.shadow.totals) if processor.shadow is not None else {}

    def _retract(self, batch: PendingBatch, record_id: str, pseudonym: bytes, at_ms: int, lifted: bool) -> None:
        reason = Retraction.POLICY_CHANGED
        record = retractions.value(reason, pseudonym, at_ms, record_id=record_id, lifted=lifted)
        value = self.codec.encode(REVOCATION, record)
        self._produce(batch, self.settings.revocations_topic, value, retractions.key(reason, pseudonym, record_id))

    def _produce(self, batch: PendingBatch, topic: str, value: bytes, key: bytes) -> None:
        producer = self.producer
        if producer is None:
            return
        batch.expect()
        produce_when_room(producer, lambda: producer.poll(0.05), topic, value, key, batch.delivered)


def backfill(
    settings: Settings,
    scope: Scope,
    dry_run: bool,
    as_json: bool,
    out: IO[str],
    err: IO[str],
    clients: Clients,
    state: State,
    log: Any = None,
) -> int:
    s = dataclasses.replace(settings, shadow_policy=scope.policy)
    log = log if log is not None else logs.get("training_filter.backfill")
    opt_in = {p.consent_model == "opt_in" for p in (s.policy, scope.policy)}
    parts = assemble_deciding(s, clients, state, log, gate=True in opt_in)
    group = scope.group(s.group_id, s.policy)
    consumer = parts.pass_consumer(group)
    try:
        run, batches, not_retained = _pass(parts, scope, group, consumer, dry_run)
        finished = run.run_showing(batches, "backfill" + (" (dry run)" if dry_run else ""), err)
        summary = _summary(s, scope, group, batches.totals, run, dry_run, finished, not_retained)
        return report("backfill", summary, describe(summary), as_json, out, err)
    finally:
        consumer.close()
        parts.close()


def _pass(
    parts: DecidingParts, scope: Scope, group: str, consumer: Any, dry_run: bool
) -> tuple[TransactionalPass, Backfill, int]:
    s = parts.settings
    queries = parts.queries()
    wanted = None
    if scope.from_training:
        ranges, wanted = provenance(scope, queries, consumer, parts.codec, s.training_topic, s.input_topics)
    else:
        ranges = input_ranges(scope, queries, consumer, s.input_topics)
    producer = None if dry_run else parts.transactional_producer(group)
    active = parts.processor(kept_active := Diverted(None), gate=s.policy.consent_model == "opt_in")
    new_settings = dataclasses.replace(s, policy=scope.policy, shadow_policy=None)
    new = parts.processor(kept_new := Diverted(None), new_settings, gate=scope.policy.consent_model == "opt_in")
    delivery: Any = DryRun() if producer is None else parts.delivery(consumer, producer, new, lambda: run.rewound())
    run = TransactionalPass(
        consumer, delivery, parts.feeds, ranges.spans, parts.log, lambda: parts.state.stopping, s.batch_size
    )
    batches = Backfill((active, kept_active), (new, kept_new), producer, s, scope.admit, wanted)
    return run, batches, ranges.not_retained


def _summary(
    s: Settings,
    scope: Scope,
    group: str,
    totals: BackfillCounts,
    run: TransactionalPass,
    dry_run: bool,
    finished: bool,
    not_retained: int,
) -> dict[str, Any]:
    return {
        "command": "backfill",
        "dry_run": dry_run,
        "finished": finished,
        "group": group,
        "resumed": run.resumed,
        "active_policy": s.policy.version,
        "new_policy": scope.policy.version,
        "input_topics": s.input_topics,
        "from_training": scope.from_training,
        "records": totals.records,
        "decided": totals.decided,
        "retracted": totals.retracted,
        "admitted": totals.admitted,
        "held_by_account_retraction": totals.held,
        "admit": scope.admit,
        "undecodable": dict(sorted(totals.undecodable.items())),
        "not_retained": not_retained + run.not_retained,
        "diff": [
            {"active": str(a), "new": str(n), "records": count}
            for (a, n), count in sorted(by_decisions(totals.pairs.items()).items())
        ],
    }


def describe(d: dict[str, Any]) -> str:
    """The summary for a reader, with the comparison table of `training-filter check --compare`."""
    would = "would be " if d["dry_run"] else ""
    where = "the input records the clean topic names" if d["from_training"] else ", ".join(d["input_topics"])
    lines = [
        f"backfill{' (dry run: nothing written, nothing committed)' if d['dry_run'] else ''} of {where} under "
        f"policy {d['new_policy']} (active {d['active_policy']}), group {d['group']}"
        f"{', resumed where the last run stopped' if d['resumed'] else ''}: {d['records']:,} records read, "
        f"{d['decided']:,} decided",
        f"  newly refused: {d['retracted']:,}, {would}retracted (policy/<record_id>, reason policy_changed)",
    ]
    if d["admit"]:
        lines.append(f"  newly eligible: {d['admitted']:,}, {would}written to the training topic")
    else:
        lines.append(f"  newly eligible: {d['admitted']:,}, not written (--admit writes them)")
    if d["held_by_account_retraction"]:
        lines.append(
            f"  newly eligible but named by an account retraction of the active policy, held back: "
            f"{d['held_by_account_retraction']:,} (docs/retractions.md#a-looser-policy-and-corrected-accounts)"
        )
    undecodable = sum(d["undecodable"].values())
    lines.append(f"  undecodable now: {undecodable:,}" + (f" ({_by(d['undecodable'])})" if undecodable else ""))
    if d["not_retained"]:
        lines.append(f"  no longer retained by the input topics, not decided: {d['not_retained']:,}")
    pairs = {(row["active"], row["new"]): row["records"] for row in d["diff"]}
    table = comparison_table(pairs, d["active_policy"], d["new_policy"])
    return "\n".join(lines) + "\n" + table


def _by(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items())


def main_backfill(args: Any, out: IO[str], err: IO[str], clients: Clients | None = None) -> int:
    def body(state: State) -> int:
        scope = scope_of(args, _active_policy())
        if scope.policy.consent_model == "opt_in" and not os.environ.get("TF_CONSENT_TOPIC", "").strip():
            raise UsageError(
                f'--policy {args.policy} says consent_model = "opt_in": set TF_CONSENT_TOPIC to the compacted topic '
                "of Consent records, e.g. privacy.consents.v1, so that only consenting users' records are admitted"
            )
        # The new policy as the shadow candidate: validated as one, and the consent topic accepted when only
        # the new policy is opt-in.
        settings = load_settings({**os.environ, "TF_SHADOW_POLICY_FILE": str(args.policy)})
        logs.configure(settings.log_level, stream=getattr(err, "buffer", None))  # stdout is the summary's
        return backfill(settings, scope, args.dry_run, args.json, out, err, clients or KafkaClients(), state)

    return guarded("backfill", err, body)


def _active_policy() -> Policy | None:
    """The active policy (TF_POLICY_FILE), to compare the new one with; None when it does not load (the
    settings report that, naming the variable)."""
    try:
        return load_policy(os.environ.get("TF_POLICY_FILE") or None)
    except (PolicyError, OSError, UnicodeDecodeError):
        return None
