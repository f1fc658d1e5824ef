"""The one place that counts, logs and acts on what the loop's turns return: decisions into metrics,
input paused or resumed, the registry's state; then, every turn, the delivery and data-path counts,
readiness, the periodic summary line and the feeds' snapshots."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError

from consumer.service import lifecycle
from consumer.service.lifecycle import RegistryStatus
from consumer.service.loop import Decided, Turn
from consumer.service.parts import Parts
from consumer.service.probes import Probes
from consumer.service.state import finite


class Upkeep:
    def __init__(self, parts: Parts, probes: Probes) -> None:
        self.parts = parts
        self.probes = probes
        self.registry = RegistryStatus(parts.state, parts.metrics, parts.log)
        self.decisions: dict[str, int] = {}  # since the last summary line
        self.consumer_errors: dict[str, int] = {}
        self._last_summary = time.monotonic()

    def account(self, turn: Turn) -> None:
        p, st = self.parts, self.parts.state
        if turn.registry_error is not None:
            self.registry.down(turn.registry_error)
        elif turn.registry_ok:
            self.registry.up()
        if turn.pause is not None:
            lifecycle.pause(p, turn.pause)
        elif turn.resume and st.paused:
            lifecycle.resume(p)
        if turn.decided is not None:
            self._count(turn.decided)
        self._after_turn()

    def _count(self, decided: Decided) -> None:
        m = self.parts.metrics
        records_by = m.records_by
        for key, count in decided.tally.items():
            records_by[key].inc(count)
            reason = str(key[1])
            self.decisions[reason] = self.decisions.get(reason, 0) + count
        m.batch_seconds.observe(decided.seconds)
        m.batch_records.observe(len(decided.messages))
        m.last_processed.set(time.time())
        for msg in decided.consumer_errors:
            err = msg.error()
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            name = err.name()
            if name not in self.consumer_errors:
                self.parts.log.warning("consumer_error", error=name, topic=msg.topic(), partition=msg.partition())
            self.consumer_errors[name] = self.consumer_errors.get(name, 0) + 1
        if self.parts.settings.log_level == "debug":
            partitions: dict[str, int] = {}
            for msg in decided.messages:
                name = f"{msg.topic()}/{msg.partition()}"
                partitions[name] = partitions.get(name, 0) + 1
            self.parts.log.debug(
                "batch",
                records=len(decided.messages),
                decisions={str(k[1]): v for k, v in decided.tally.items()},
                partitions=partitions,
                seconds=round(decided.seconds, 6),
            )

    def _after_turn(self) -> None:
        p, m = self.parts, self.parts.metrics
        now = time.monotonic()
        produced, dead = p.delivery.take_counts()
        if produced:
            m.produced.labels("training").inc(produced)
        if dead:
            m.produced.labels("dlq").inc(dead)
        counts = p.processor.take_counts()
        for (source, cause), count in counts.dlq_causes.items():
            m.dlq.labels(str(source), cause).inc(count)
        if counts.undecidable:
            # A record that provoked an exception on the reference path: dead-lettered, the loop went on.
            # The exception's type only (its message could quote the record).
            p.log.warning("records_undecidable", errors=counts.undecidable)
        if counts.truncated:
            m.dlq_truncated.inc(counts.truncated)
        m.optout_ready.set(1 if p.state.feeds_behind <= p.settings.optout_max_lag_seconds else 0)
        ready, _ = self.probes.ready()
        m.ready.set(1 if ready else 0)
        if now - self._last_summary >= p.settings.log_summary_seconds:
            self._summary(now)
        p.snapshots.due(now)

    def _summary(self, now: float) -> None:
        p = self.parts
        elapsed = now - self._last_summary
        total = sum(self.decisions.values())
        p.log.info(
            "summary",
            records=total,
            records_per_second=round(total / elapsed, 1),
            decisions=dict(self.decisions),
            assigned_partitions=len(p.state.assigned),
            **p.feeds.entries(),
            optout_feed_seconds_behind=finite(p.feeds.seconds_behind()),
            paused=p.state.paused,
            consumer_errors=self.consumer_errors or None,
        )
        self.decisions = {}
        self.consumer_errors = {}
        self._last_summary = now
