"""`training-filter dlq replay`: the dead letters decided again under today's policy, opt-outs, changes and
consents, and the eligible ones written to the training topic with their original provenance.

A dead letter (consumer/datapath/dead_letters.py) carries the input record's key, value and headers, and
`tf.*` headers naming where it came from. Each letter becomes that input record again (`Letter`: the
original topic, partition, offset and timestamp) and is decided by the service's own batch processor,
whose TrainingRecords carry that provenance. What is still refused or still does not decode stays in
the DLQ: it is counted, never written again. Headers-only letters (`tf.truncated`: the record was too
large for the DLQ, or its output was refused for good) carry nothing to decide: counted and skipped.

It reads the DLQ with a group of its own (`<TF_GROUP_ID>-dlq-replay`) in transactions that commit the
group's offsets with the outputs (consumer/commands/transactional_pass.py): a second replay reads only
letters written since, and a killed one, started again, emits nothing twice.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from consumer.commands.decide_again import DecidingParts, Diverted, assemble_deciding, cause_of
from consumer.commands.guarded import guarded, report
from consumer.commands.offset_ranges import whole
from consumer.commands.transactional_pass import DryRun, TransactionalPass
from consumer.datapath.batch import BatchProcessor
from consumer.datapath.offsets import PendingBatch
from consumer.operations import logs
from consumer.operations.acls import replay_group
from consumer.operations.clients import Clients, KafkaClients
from consumer.operations.settings import Settings, load_settings
from consumer.service.state import State
from consumer.wire.held_record import HeldRecord
from rules import Reason

HEADERS_ONLY, OTHER_TOPIC, NOT_A_LETTER = "headers_only", "other_topic", "not_a_dead_letter"


# The input record a dead letter holds, as the batch processor reads a consumed record.
Letter = HeldRecord


def letter_of(msg: Any, input_topics: frozenset[str]) -> Letter | str:
    """The input record of a dead letter, or why there is none to decide (HEADERS_ONLY, OTHER_TOPIC,
    NOT_A_LETTER). The service writes its own `tf.*` headers first and never copies a sender's."""
    own: dict[str, bytes] = {}
    original = []
    for name, raw in msg.headers() or []:
        if name.startswith("tf."):
            own.setdefault(name, raw or b"")
        else:
            original.append((name, raw))
    if "tf.truncated" in own:
        return HEADERS_ONLY
    try:
        topic = own["tf.source.topic"].decode("utf-8")
        partition, offset = int(own["tf.source.partition"]), int(own["tf.source.offset"])
        timestamp = int(own.get("tf.source.timestamp", b"-1"))
    except (KeyError, ValueError, UnicodeDecodeError):
        return NOT_A_LETTER
    if topic not in input_topics:
        return OTHER_TOPIC
    return Letter(topic, partition, offset, msg.key(), msg.value(), original or None, timestamp)


@dataclass
class ReplayCounts:
    letters: int = 0
    replayed: int = 0  # eligible now: written to the training topic
    refused: Counter[str] = field(default_factory=Counter)  # still refused, by reason
    undecodable: Counter[str] = field(default_factory=Counter)  # still dead letters, by cause
    skipped: Counter[str] = field(default_factory=Counter)  # HEADERS_ONLY, OTHER_TOPIC, NOT_A_LETTER

    def add(self, other: ReplayCounts) -> None:
        self.letters += other.letters
        self.replayed += other.replayed
        self.refused.update(other.refused)
        self.undecodable.update(other.undecodable)
        self.skipped.update(other.skipped)


class Replay:
    """The pass's batches (transactional_pass.Batches): letters in, the processor's decisions out."""

    def __init__(self, processor: BatchProcessor, diverted: Diverted, input_topics: list[str], dlq_topic: str) -> None:
        self.processor = processor
        self.dlq_topic = dlq_topic
        self.diverted = diverted
        self.input_topics = frozenset(input_topics)
        self.totals = ReplayCounts()

    def prepare(self, messages: list[Any]) -> tuple[list[Letter], ReplayCounts]:
        counts = ReplayCounts(letters=len(messages))
        letters = []
        for msg in messages:
            got = letter_of(msg, self.input_topics)
            if isinstance(got, str):
                counts.skipped[got] += 1
            else:
                letters.append(got)
        self.processor.resolve_schemas(letters)  # an outage raises: the pass waits, nothing is dead-lettered
        return letters, counts

    def decide(self, prepared: tuple[list[Letter], ReplayCounts], batch: PendingBatch) -> ReplayCounts:
        letters, counts = prepared
        self.diverted.take()  # what an aborted batch kept before
        tally: dict[Any, int] = {}
        self.processor.process(letters, batch, tally)
        self.processor.take_counts()
        for (_, reason), count in tally.items():
            if reason == Reason.ELIGIBLE:
                counts.replayed += count
            elif reason != Reason.MALFORMED:
                counts.refused[str(reason)] += count
        for topic, _value, _key, headers in self.diverted.take():
            if topic != self.dlq_topic:
                continue  # a dry run keeps the training records too: counted as replayed already
            counts.undecodable[cause_of(headers)] += 1
        return counts

    def committed(self, decided: ReplayCounts) -> None:
        self.totals.add(decided)


def replay(
    settings: Settings,
    dry_run: bool,
    as_json: bool,
    out: IO[str],
    err: IO[str],
    clients: Clients,
    state: State,
    log: Any = None,
) -> int:
    s = dataclasses.replace(settings, shadow_policy=None)  # a replay emits; a shadow would only count
    log = log if log is not None else logs.get("training_filter.dlq_replay")
    parts = assemble_deciding(s, clients, state, log)
    group = replay_group(s.group_id)
    consumer = parts.pass_consumer(group)
    try:
        run, batches = _pass(parts, group, consumer, whole(parts.queries(), [s.dlq_topic]).spans, dry_run)
        finished = run.run_showing(batches, "dlq replay" + (" (dry run)" if dry_run else ""), err)
        summary = _summary(s, group, batches.totals, run, dry_run, finished)
        return report("dlq replay", summary, describe(summary), as_json, out, err)
    finally:
        consumer.close()
        parts.close()


def _pass(
    parts: DecidingParts, group: str, consumer: Any, spans: Any, dry_run: bool
) -> tuple[TransactionalPass, Replay]:
    s = parts.settings
    producer = None if dry_run else parts.transactional_producer(group)
    diverted = Diverted(producer, [s.training_topic])
    processor = parts.processor(diverted)
    delivery: Any = (
        DryRun() if producer is None else parts.delivery(consumer, producer, processor, lambda: run.rewound())
    )
    run = TransactionalPass(
        consumer, delivery, parts.feeds, spans, parts.log, lambda: parts.state.stopping, s.batch_size
    )
    return run, Replay(processor, diverted, s.input_topics, s.dlq_topic)


def _summary(
    s: Settings, group: str, totals: ReplayCounts, run: TransactionalPass, dry_run: bool, finished: bool
) -> dict[str, Any]:
    return {
        "command": "dlq replay",
        "dry_run": dry_run,
        "finished": finished,
        "dlq_topic": s.dlq_topic,
        "training_topic": s.training_topic,
        "group": group,
        "resumed": run.resumed,
        "letters": totals.letters,
        "replayed": totals.replayed,
        "still_refused": dict(sorted(totals.refused.items())),
        "still_undecodable": dict(sorted(totals.undecodable.items())),
        "headers_only": totals.skipped[HEADERS_ONLY],
        "other_topic": totals.skipped[OTHER_TOPIC],
        "not_dead_letters": totals.skipped[NOT_A_LETTER],
        "expired_before_replay": run.not_retained,
    }


def describe(summary: dict[str, Any]) -> str:
    """The summary for a reader: what was read, emitted, refused, and left."""
    d = summary
    would = "would be " if d["dry_run"] else ""
    lines = [
        f"dlq replay{' (dry run: nothing written, nothing committed)' if d['dry_run'] else ''}: "
        f"{d['letters']:,} dead letters read from {d['dlq_topic']} (group {d['group']}"
        f"{', resumed where the last run stopped' if d['resumed'] else ''})",
        f"  replayed: {d['replayed']:,} eligible now, {would}written to {d['training_topic']} with their original "
        "provenance",
        f"  still refused: {_by(d['still_refused'])}",
        f"  still undecodable: {_by(d['still_undecodable'])}",
        f"  headers-only, cannot be replayed: {d['headers_only']:,}",
    ]
    if d["other_topic"] or d["not_dead_letters"]:
        lines.append(
            f"  skipped: {d['other_topic']:,} from a topic that is not an input topic, "
            f"{d['not_dead_letters']:,} without the tf.source headers of a dead letter"
        )
    if d["expired_before_replay"]:
        lines.append(f"  removed by the DLQ's retention before they were replayed: {d['expired_before_replay']:,}")
    lines.append("  the rest stay in the DLQ; a second replay reads only letters written after this one")
    return "\n".join(lines) + "\n"


def _by(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total:,} (" + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ")"


def main_replay(args: Any, out: IO[str], err: IO[str], clients: Clients | None = None) -> int:
    def body(state: State) -> int:
        settings = load_settings()
        logs.configure(settings.log_level, stream=getattr(err, "buffer", None))  # stdout is the summary's
        return replay(settings, args.dry_run, args.json, out, err, clients or KafkaClients(), state)

    return guarded("dlq replay", err, body)
