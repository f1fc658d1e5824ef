"""`training-filter run`: wires the consumers, the producers, the opt-out feed, the pipeline, the
metrics server and the signals together, and turns the loop.

One loop, one thread (librdkafka's own threads aside): consume a batch; bring the opt-out feed up
to the opt-out topic's current end; filter the batch; serve delivery reports and commit what they
release; emit revocations; write snapshots and summaries when due. Rebalance callbacks run inside
consume() on this same thread, so no state is shared across threads except for the HTTP probes,
which read a few numbers.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import traceback
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumer import __version__
from consumer.datapath.batch import BatchProcessor
from consumer.datapath.dead_letters import UndeliverableError
from consumer.datapath.delivery import AtLeastOnce, ExactlyOnce, FatalDeliveryError
from consumer.datapath.output_limits import (
    OutputLimits,
    describe_topic_limits,
    producer_max_bytes,
    required_topic_bytes,
)
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations import logs
from consumer.operations.health import HealthServer
from consumer.operations.metrics import Metrics
from consumer.operations.settings import ConfigError, Settings
from consumer.optouts.feed import FeedError, OptOutFeed, RevocationEmitter
from consumer.optouts.filter import LoadedSnapshot, OptOutFilter, SnapshotError, load_snapshot, write_snapshot
from consumer.wire import fastpath
from consumer.wire.codec import REVOCATION, TRAINING_RECORD, Codec
from consumer.wire.registry import Registry, RegistryMismatch, RegistryRefused, RegistryUnavailable, subject_name
from rules import Decider

# Properties the guarantees depend on: a TF_*KAFKA_* setting may not change them.
ENFORCED_CONSUMER = {"enable.auto.offset.store", "enable.auto.commit", "isolation.level", "group.id"}
ENFORCED_PRODUCER = {"enable.idempotence", "acks", "transactional.id"}


def _check_overrides(settings: Settings) -> None:
    problems = []
    for scope, props, enforced in (
        ("CONSUMER_KAFKA", {**settings.kafka_common, **settings.kafka_consumer}, ENFORCED_CONSUMER),
        ("PRODUCER_KAFKA", {**settings.kafka_common, **settings.kafka_producer}, ENFORCED_PRODUCER),
    ):
        for prop in sorted(set(props) & enforced):
            problems.append(
                f"{prop} (TF_{scope}_/TF_KAFKA_ {prop.upper().replace('.', '_')}) cannot be set: the "
                f"delivery guarantee depends on it; use TF_PROCESSING_GUARANTEE or TF_GROUP_ID"
            )
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


class Service:
    def __init__(self, settings: Settings) -> None:
        _check_overrides(settings)
        self.settings = settings
        self.log = logs.get("training_filter")
        self.metrics = Metrics()
        self.codec = Codec(registry=self._registry(), max_value_bytes=settings.max_value_bytes)
        self.decider = Decider(settings.policy)
        self.pseudonymiser = Pseudonymiser(settings.hmac_key)
        self.stopping = False
        self.exit_code = 0
        self.paused = False
        self.registry_error: str | None = None
        self.subscribed = False
        self.last_tick = time.monotonic()
        self.assigned: set[tuple[str, int]] = set()
        self.held: list[Any] | None = None
        self._snapshot_thread: threading.Thread | None = None
        self._last_snapshot = time.monotonic()
        self._last_summary = time.monotonic()
        self._summary: dict[str, int] = {}
        self._consumer_errors: dict[str, int] = {}
        self.metrics.info.labels(
            __version__,
            settings.policy.version,
            settings.processing_guarantee,
            "compiled" if fastpath.COMPILED else "interpreted",
        ).set(1)

    def _registry(self) -> Registry | None:
        return Registry(self.settings.registry) if self.settings.registry is not None else None

    def _prepare_writes(self) -> None:
        """The output schemas' ids: with a registry, registered or looked up under their subjects.
        An unreachable registry is waited for (not ready meanwhile); a refusal is a configuration error."""
        s = self.settings
        strategy = s.registry.subject_strategy if s.registry is not None else "topic"
        subjects = {
            TRAINING_RECORD: subject_name(strategy, s.training_topic, TRAINING_RECORD),
            REVOCATION: subject_name(strategy, s.revocations_topic, REVOCATION),
        }
        for name, subject in subjects.items():
            while True:
                try:
                    schema_id = self.codec.prepare_write(name, subject)
                    break
                except (RegistryRefused, RegistryMismatch) as exc:
                    raise ConfigError(f"schema registry: {exc}") from exc
                except RegistryUnavailable as exc:
                    self._registry_down(str(exc))
                    if self.stopping:
                        raise FeedError("stopped while waiting for the schema registry") from exc
                    self.last_tick = time.monotonic()
                    time.sleep(1.0)
            self._registry_up()
            if s.registry is not None:
                self.log.info("output_schema", subject=subject, schema_id=schema_id, schema=name)

    def _registry_down(self, error: str) -> None:
        if self.registry_error != error:
            self.log.warning("schema_registry_unavailable", error=error)
        self.registry_error = error
        self.metrics.registry_available.set(0)

    def _registry_up(self) -> None:
        if self.registry_error is not None:
            self.log.info("schema_registry_available")
        self.registry_error = None
        self.metrics.registry_available.set(1)

    def _resolve_schemas(self, messages: list[Any]) -> bool:
        """Registry mode: every schema id of the batch looked up before any record is decided."""
        try:
            self.processor.resolve_schemas(messages)
        except (RegistryUnavailable, RegistryRefused) as exc:
            self._registry_down(str(exc))
            return False
        self._registry_up()
        return True

    # -- probes (called from the HTTP thread) --------------------------------------------------------

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        stalled = time.monotonic() - self.last_tick
        return stalled < self.settings.health_stall_seconds, {"loop_seconds_since_turn": round(stalled, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        behind = self.feed.seconds_behind() if hasattr(self, "feed") else float("inf")
        feed_ok = behind <= self.settings.optout_max_lag_seconds
        ok = feed_ok and self.subscribed and not self.stopping and not self.paused and self.registry_error is None
        return ok, {
            "optout_feed_seconds_behind": None if behind == float("inf") else round(behind, 3),
            "schema_registry_error": self.registry_error,
            "subscribed": self.subscribed,
            "assigned_partitions": len(self.assigned),
            "input_paused": self.paused,
            "stopping": self.stopping,
        }

    # -- start and stop ------------------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        if self.stopping:
            self.log.warning("second_stop_signal_ignored_finishing_shutdown")
        self.stopping = True

    def run(self, install_signals: bool = True) -> int:
        s = self.settings
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        self.health = HealthServer(s.metrics_host, s.metrics_port, self.metrics.registry, self.healthy, self.ready)
        self.health.start()
        self.log.info(
            "starting",
            version=__version__,
            policy_version=s.policy.version,
            guarantee=s.processing_guarantee,
            metrics_port=self.health.port,
            fast_path="compiled" if fastpath.COMPILED else "interpreted",
        )
        try:
            self._build_clients()
            self._catch_up()
            if not self.stopping:
                self._subscribe()
                self._loop()
        except ConfigError as exc:
            self.log.error("invalid_configuration", error=str(exc))
            self.exit_code = 2
        except FatalDeliveryError as exc:
            self.log.error("fatal_delivery_error", error=str(exc))
            self.exit_code = 1
        except FeedError as exc:
            if self.stopping:  # SIGTERM while start-up waited for the broker: a clean stop
                self.log.info("stopped_during_start_up", error=str(exc))
            else:
                self.log.error("optout_feed_unavailable", error=str(exc))
                self.exit_code = 1
        except Exception as exc:
            # The frames only: an exception's message could quote a value from a record.
            self.log.error("crashed", error=type(exc).__name__, frames=traceback.format_tb(exc.__traceback__))
            self.exit_code = 1
        finally:
            self._shutdown()
        return self.exit_code

    def _build_clients(self) -> None:
        s = self.settings
        self._kafka_log = {"logger": logs.kafka_logger()}
        optout_filter, snapshot = self._load_filter()
        self.feed = OptOutFeed(
            s.consumer_config(**{"group.id": f"{s.group_id}-optout-feed"}, **self._kafka_log),
            s.optouts_topic,
            s.revocations_topic,
            optout_filter,
            self.codec,
            self.pseudonymiser,
            self.metrics,
            self.log,
            stopping=lambda: self.stopping,
        )
        self.metrics.feed_lag(self.feed.seconds_behind)
        self.feed.start(*((snapshot.offsets, snapshot.topic_ids) if snapshot is not None else (None, None)))
        self.filter = self.feed.filter  # a new, empty one if the snapshot's offsets could not be used
        self.metrics.optout_capacity.set(self.filter.capacity)
        self.metrics.optout_bytes.set(self.filter.size_bytes)
        self.metrics.optout_entries.set(self.filter.entries)
        self.metrics.optout_fp_rate.set(self.filter.estimated_fp_rate())

        self._prepare_writes()
        self.limits = self._output_limits()
        producer_config = s.producer_config(
            {
                # Batching for throughput; lz4 because text compresses well and lz4 costs little CPU.
                "linger.ms": 5,
                # Never a batch the output topics refuse: the broker would fail every record in it.
                "batch.size": min(1_000_000, self.limits.training_record_max, self.limits.dlq_record_max),
                "message.max.bytes": self._producer_max,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 200_000,
                "queue.buffering.max.kbytes": 131_072,
                "message.timeout.ms": 300_000,  # retries ride out a broker restart of up to five minutes
            },
            **{"enable.idempotence": True, "acks": "all", **self._kafka_log},
        )
        if s.exactly_once:
            producer_config["transactional.id"] = s.transactional_id or f"{s.group_id}-{socket.gethostname()}"
            # librdkafka requires message.timeout.ms <= transaction.timeout.ms; a minute bounds how long an
            # abandoned transaction can hold back read_committed readers if its replica never returns.
            producer_config.setdefault("transaction.timeout.ms", 60_000)
            producer_config["message.timeout.ms"] = min(
                int(producer_config["message.timeout.ms"]), int(producer_config["transaction.timeout.ms"])
            )
        self.producer = self._client(Producer, producer_config, "producer")
        consumer_config = s.consumer_config(
            {
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "fetch.max.bytes": 52_428_800,
                "max.partition.fetch.bytes": 4_194_304,
                "statistics.interval.ms": s.statistics_interval_ms,
                "stats_cb": self._on_stats,
            },
            **{
                "group.id": s.group_id,
                "enable.auto.commit": not s.exactly_once,
                "auto.commit.interval.ms": 1000,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                **self._kafka_log,
            },
        )
        self.input = self._client(Consumer, consumer_config, "input consumer")
        if s.exactly_once:
            self.delivery: AtLeastOnce = ExactlyOnce(
                self.input, self.producer, self.metrics, self.log, s.transaction_interval_ms / 1000
            )
        else:
            self.delivery = AtLeastOnce(self.input, self.producer, self.metrics, self.log)
        self.processor = BatchProcessor(
            decider=self.decider,
            codec=self.codec,
            pseudonymiser=self.pseudonymiser,
            opted_out=_opted_out(self.filter, self.pseudonymiser),
            producer=self.producer,
            training_topic=s.training_topic,
            dlq_topic=s.dlq_topic,
            posts_topic=s.posts_topic,
            ai_interactions_topic=s.ai_interactions_topic,
            on_backpressure=self._serve_deliveries,
            limits=self.limits,
        )
        self.delivery.on_refused = self._on_refused
        self.delivery.on_rewind = self._drop_held
        revocation_group = s.consumer_config(
            **{"group.id": f"{s.group_id}-revocations", "auto.offset.reset": s.revocations_start, **self._kafka_log}
        )
        self.revocations = RevocationEmitter(
            revocation_group,
            s.producer_config(**self._kafka_log),
            s.optouts_topic,
            s.revocations_topic,
            self.codec,
            self.pseudonymiser,
            self.metrics,
            self.log,
            s.revoke_flush_seconds,
        )

    def _output_limits(self) -> OutputLimits:
        """Input and output size limits that agree with the producer and the output topics (see
        consumer/datapath/output_limits.py). Asked of the broker at start-up and after a refused record."""
        s = self.settings
        configured = {**s.kafka_common, **s.kafka_producer}.get("message.max.bytes")
        self._producer_max = int(configured) if configured else producer_max_bytes(s.max_value_bytes)
        admin = {"bootstrap.servers": s.bootstrap_servers, **s.kafka_common, **self._kafka_log}
        described = describe_topic_limits(admin, [s.training_topic, s.dlq_topic])
        limits = OutputLimits.compute(s.max_value_bytes, self._producer_max, s.training_topic, s.dlq_topic, described)
        needed = required_topic_bytes(s.max_value_bytes)
        short = {t: v for t, v in described.items() if v is None or v < needed}
        if short or limits.input_max < s.max_value_bytes:
            self.log.warning(
                "output_limits_lower_the_input_limit",
                input_max_bytes=limits.input_max,
                configured_max_value_bytes=s.max_value_bytes,
                topic_max_message_bytes=described,
                needed_max_message_bytes=needed,
                detail="larger inputs go to the DLQ as oversized; raise the topics' max.message.bytes "
                "(None: not readable, grant DESCRIBE_CONFIGS) or the producer's message.max.bytes",
            )
        else:
            self.log.info("output_limits", input_max_bytes=limits.input_max, topic_max_message_bytes=described)
        return limits

    def _on_refused(self, batch: Any) -> None:
        """The broker refused outputs of `batch` for good: read the topic limits again, then let the
        processor write them again or dead-letter them (at-least-once), or note them for the
        re-reading after the abort (exactly-once)."""
        for rejected in batch.rejected:
            self.metrics.produce_errors.labels(rejected.output).inc()
        self.log.warning("output_refused", records=len(batch.rejected), error=batch.rejected[0].error)
        self.limits = self._output_limits()
        self.processor.set_limits(self.limits)
        if self.settings.exactly_once:
            self.processor.note_refused(batch)
        else:
            self.processor.replace_refused(batch)

    def _drop_held(self) -> None:
        if self.held:
            self.log.info("held_records_dropped_after_rewind", records=len(self.held))
        self.held = None

    @staticmethod
    def _client(kind: Any, config: dict[str, Any], what: str) -> Any:
        """Create a librdkafka client; a property it rejects is a configuration error."""
        try:
            return kind(config)
        except KafkaException as exc:
            raise ConfigError(
                f"the {what}'s librdkafka configuration is invalid: {exc.args[0].str()} "
                "(check the TF_*KAFKA_* settings)"
            ) from exc

    def _serve_deliveries(self) -> None:
        self.producer.poll(0.05)

    def _load_filter(self) -> tuple[OptOutFilter, LoadedSnapshot | None]:
        s = self.settings
        if s.optout_snapshot_path is not None:
            started = time.monotonic()
            try:
                loaded = load_snapshot(
                    s.optout_snapshot_path,
                    s.optout_capacity,
                    s.optout_fp_rate,
                    [s.optouts_topic, s.revocations_topic],
                    self.pseudonymiser.key_check(),
                )
            except SnapshotError as exc:
                self.metrics.snapshots.labels("load", "unusable").inc()
                self.log.info("optout_snapshot_not_used", reason=str(exc), path=str(s.optout_snapshot_path))
            else:
                took = time.monotonic() - started
                self.metrics.snapshots.labels("load", "ok").inc()
                self.metrics.snapshot_seconds.labels("load").set(took)
                self.log.info(
                    "optout_snapshot_loaded",
                    entries=loaded.filter.entries,
                    seconds=round(took, 3),
                    age_seconds=round(time.time() - loaded.saved_at, 1),
                    partitions=len(loaded.offsets),
                )
                return loaded.filter, loaded
        return OptOutFilter(s.optout_capacity, s.optout_fp_rate), None

    def _catch_up(self) -> None:
        """Read the opt-out topic to its end before any input: readiness stays false until then."""
        started = time.monotonic()
        while not self.stopping:
            self.last_tick = time.monotonic()
            if self.feed.sync(timeout=1.0, everything=True):
                break
        self.log.info(
            "optout_feed_caught_up",
            entries=self.filter.entries,
            seconds=round(time.monotonic() - started, 3),
            partitions=len(self.feed.positions),
        )
        self.metrics.optout_ready.set(1)

    def _subscribe(self) -> None:
        s = self.settings
        self.input.subscribe(
            s.input_topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self.revocations.start()
        self.subscribed = True

    # -- rebalances (called inside consume() on the loop's thread) -----------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assign").inc()
        consumer.incremental_assign(partitions)
        # librdkafka keeps a partition's paused flag across losing and regaining it: set it explicitly.
        if self.paused:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)
        self.assigned.update((p.topic, p.partition) for p in partitions)
        self.delivery.assigned_partitions(partitions)
        self.metrics.assigned.set(len(self.assigned))
        self.log.info("partitions_assigned", partitions=[f"{p.topic}/{p.partition}" for p in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("revoke").inc()
        self.delivery.revoked(partitions, self.settings.revoke_flush_seconds)
        self._forget(partitions)
        self.log.info("partitions_revoked", partitions=[f"{p.topic}/{p.partition}" for p in partitions])

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("lost").inc()
        self.delivery.lost(partitions)
        self._forget(partitions)
        self.log.warning("partitions_lost", partitions=[f"{p.topic}/{p.partition}" for p in partitions])

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self.assigned -= gone
        self.metrics.assigned.set(len(self.assigned))
        self.metrics.drop_partitions(list(gone))
        if self.held:
            # Records of a partition that has gone belong to its new owner now; never emit them here.
            self.held = [m for m in self.held if (m.topic(), m.partition()) not in gone] or None

    def _on_stats(self, stats_json: str) -> None:
        stats = orjson.loads(stats_json)
        lags: dict[tuple[str, int], int] = {}
        for topic, info in stats.get("topics", {}).items():
            for partition, p in info.get("partitions", {}).items():
                key = (topic, int(partition))
                if key in self.assigned and p.get("consumer_lag", -1) >= 0:
                    lags[key] = p["consumer_lag"]
        self.metrics.set_consumer_lag(lags)

    # -- the loop ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        s = self.settings
        batch_size, batch_timeout = s.batch_size, s.batch_timeout_ms / 1000
        sync_timeout = min(1.0, s.optout_max_lag_seconds / 2)
        while not self.stopping:
            self.last_tick = time.monotonic()
            if self.held is None:
                messages = self.input.consume(num_messages=batch_size, timeout=batch_timeout)
                if messages:
                    self.held = messages
            elif self.paused:
                msg = self.input.poll(0.05)  # serves rebalance callbacks; paused partitions yield nothing new
                if msg is not None and msg.error() is None:
                    self.held.append(msg)
            # Every opt-out acknowledged before these records were fetched is applied before they are decided,
            # and (with a registry) every schema id they carry is looked up before any of them is.
            synced = self.feed.sync(timeout=sync_timeout)
            if synced and self.held and self.codec.registry is not None:
                synced = self._resolve_schemas(self.held)
            if synced:
                if self.paused:
                    self._resume()
                if self.held:
                    self._process(self.held)
                self.held = None
            elif self.held or self.feed.seconds_behind() > s.optout_max_lag_seconds:
                self._pause()
            self.metrics.optout_ready.set(1 if self.feed.seconds_behind() <= s.optout_max_lag_seconds else 0)
            self.delivery.tick()
            self.revocations.poll()
            self._housekeeping()

    def _note_consumer_errors(self) -> None:
        for msg in self.processor.consumer_errors:
            err = msg.error()
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            name = err.name()
            if name not in self._consumer_errors:
                self.log.warning("consumer_error", error=name, topic=msg.topic(), partition=msg.partition())
            self._consumer_errors[name] = self._consumer_errors.get(name, 0) + 1
        self.processor.consumer_errors.clear()

    def _process(self, messages: list[Any]) -> None:
        started = time.perf_counter()
        batch = self.delivery.open_batch()
        tally: dict[Any, int] = {}
        try:
            consumed = self.processor.process(messages, batch, tally)
        except KafkaException as exc:
            # produce() refused for a reason that is not the record's (offsets.PER_RECORD_ERRORS are
            # dead-lettered inside): in exactly-once, a transaction the broker made abortable (a record
            # refused in a delivery report); otherwise the producer cannot go on.
            err = exc.args[0]
            if isinstance(self.delivery, ExactlyOnce) and isinstance(err, KafkaError) and not err.fatal():
                self.delivery.abort(err.name())  # rewinds; the batch (held) is fetched again
                return
            raise FatalDeliveryError(f"{_error_name(exc)} producing an output") from exc
        except UndeliverableError as exc:
            raise FatalDeliveryError(str(exc)) from exc
        self.delivery.close_batch(batch, consumed)
        if self.processor.consumer_errors:
            self._note_consumer_errors()
        records_by = self.metrics.records_by
        for key, count in tally.items():
            records_by[key].inc(count)
            reason = key[1]
            self._summary[reason] = self._summary.get(reason, 0) + count
        elapsed = time.perf_counter() - started
        self.metrics.batch_seconds.observe(elapsed)
        self.metrics.batch_records.observe(len(messages))
        self.metrics.last_processed.set(time.time())
        if self.settings.log_level == "debug":
            partitions: dict[str, int] = {}
            for msg in messages:
                name = f"{msg.topic()}/{msg.partition()}"
                partitions[name] = partitions.get(name, 0) + 1
            self.log.debug(
                "batch",
                records=len(messages),
                decisions={str(k[1]): v for k, v in tally.items()},
                partitions=partitions,
                seconds=round(elapsed, 6),
            )

    def _pause(self) -> None:
        if self.paused:
            return
        assignment = self.input.assignment()
        if assignment:
            self.input.pause(assignment)
        self.paused = True
        self.metrics.input_paused.set(1)
        self.log.warning(
            "input_paused",
            reason="schema_registry" if self.registry_error is not None else "optout_feed",
            optout_feed_seconds_behind=_finite(self.feed.seconds_behind()),
            error=self.registry_error or self.feed.last_error,
        )

    def _resume(self) -> None:
        assignment = self.input.assignment()
        if assignment:
            self.input.resume(assignment)
        self.paused = False
        self.metrics.input_paused.set(0)
        self.log.info("input_resumed")

    def _housekeeping(self) -> None:
        now = time.monotonic()
        produced, dead = self.delivery.take_counts()
        if produced:
            self.metrics.produced.labels("training").inc(produced)
        if dead:
            self.metrics.produced.labels("dlq").inc(dead)
        if self.processor.dlq_causes:
            for (source, cause), count in self.processor.dlq_causes.items():
                self.metrics.dlq.labels(str(source), cause).inc(count)
            self.processor.dlq_causes.clear()
        if self.processor.dead_letters.truncated:
            self.metrics.dlq_truncated.inc(self.processor.dead_letters.truncated)
            self.processor.dead_letters.truncated = 0
        ready, _ = self.ready()
        self.metrics.ready.set(1 if ready else 0)
        if now - self._last_summary >= self.settings.log_summary_seconds:
            elapsed = now - self._last_summary
            total = sum(self._summary.values())
            self.log.info(
                "summary",
                records=total,
                records_per_second=round(total / elapsed, 1),
                decisions={str(k): v for k, v in self._summary.items()},
                assigned_partitions=len(self.assigned),
                optout_entries=self.filter.entries,
                optout_feed_seconds_behind=_finite(self.feed.seconds_behind()),
                paused=self.paused,
                consumer_errors=self._consumer_errors or None,
            )
            self._summary = {}
            self._consumer_errors = {}
            self._last_summary = now
        if (
            self.settings.optout_snapshot_path is not None
            and now - self._last_snapshot >= self.settings.optout_snapshot_interval_seconds
        ):
            self._snapshot(background=True)

    def _snapshot(self, background: bool) -> None:
        path = self.settings.optout_snapshot_path
        if path is None or (self._snapshot_thread is not None and self._snapshot_thread.is_alive()):
            return
        self._last_snapshot = time.monotonic()
        header = self.filter.header(dict(self.feed.positions), self.feed.topic_ids, self.pseudonymiser.key_check())
        body = self.filter.snapshot_bytes()

        def write() -> None:
            started = time.monotonic()
            try:
                write_snapshot(path, header, body)
            except OSError as exc:
                self.metrics.snapshots.labels("save", "failed").inc()
                self.log.warning("optout_snapshot_failed", error=exc.strerror or type(exc).__name__, path=str(path))
                return
            self.metrics.snapshots.labels("save", "ok").inc()
            self.metrics.snapshot_seconds.labels("save").set(time.monotonic() - started)
            self.log.info("optout_snapshot_saved", entries=header["entries"], path=str(path))

        if background:
            self._snapshot_thread = threading.Thread(target=write, name="optout-snapshot", daemon=True)
            self._snapshot_thread.start()
        else:
            write()

    def _shutdown(self) -> None:
        """Stop fetching, finish in-flight records, commit, close; within the grace period."""
        self.stopping = True
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        self.log.info("stopping", held_records=len(self.held or []))
        complete = True
        if hasattr(self, "delivery"):
            try:
                complete = self.delivery.shutdown(max(0.1, deadline - time.monotonic() - 2))
            except FatalDeliveryError as exc:
                self.log.error("fatal_delivery_error", error=str(exc))
                self.exit_code = 1
                complete = False
            if not complete:
                self.log.warning(
                    "shutdown_with_records_in_flight",
                    detail="their input offsets were not committed: they will be re-processed",
                )
            self._close("input", lambda: self.input.close())
        if hasattr(self, "revocations"):
            self._close("revocations", lambda: self.revocations.close(max(0.1, deadline - time.monotonic() - 1)))
        if hasattr(self, "feed"):
            if self.feed.caught_up_at is not None:
                if self._snapshot_thread is not None:
                    self._snapshot_thread.join(max(0.1, deadline - time.monotonic()))
                self._snapshot(background=False)
            self._close("optout_feed", self.feed.close)
        if hasattr(self, "health"):
            self.health.stop()
        self.log.info("stopped", exit_code=self.exit_code)

    def _close(self, what: str, close: Any) -> None:
        try:
            close()
        except Exception as exc:  # closing must not hide the exit code; log the type only
            self.log.warning("close_failed", client=what, error=type(exc).__name__)


def _opted_out(optout_filter: OptOutFilter, pseudonymiser: Pseudonymiser) -> Any:
    """The rules' membership test: the filter holds pseudonyms (memoised HMACs of user ids)."""
    contains = optout_filter.contains
    pseudonym = pseudonymiser.pseudonym

    def opted_out(user_id: bytes) -> bool:
        return bool(contains(pseudonym(user_id)))

    return opted_out


def _error_name(exc: KafkaException) -> str:
    err = exc.args[0]
    return err.name() if isinstance(err, KafkaError) else type(exc).__name__


def _finite(seconds: float) -> float | None:
    return None if seconds == float("inf") else round(seconds, 3)
