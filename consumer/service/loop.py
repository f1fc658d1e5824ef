"""The loop: one thread turns it (librdkafka's own threads aside).

Each turn: consume a batch (or, while paused, serve rebalances and keep what arrives) and hand its
fetch time to the opt-out feed's sync thread (consumer/optouts/background.py); decide the oldest held
batch once a sync that started after its fetch has completed and, with a registry, every schema id
it carries is known; hold it, and pause input, when that takes longer than the lag bound allows.
Records fetched before the next sync starts join one held batch; at most MAX_HELD are held. Then serve delivery
reports and commit what they release, emit revocations, and do the upkeep.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from consumer.datapath.batch import BatchProcessor
from consumer.datapath.dead_letters import UndeliverableError
from consumer.datapath.delivery import AtLeastOnce, ExactlyOnce, FatalDeliveryError
from consumer.operations.metrics import Metrics
from consumer.operations.settings import Settings
from consumer.optouts.background import BackgroundSync
from consumer.optouts.feed import OptOutFeed
from consumer.optouts.revocations import RevocationEmitter
from consumer.service.lifecycle import Lifecycle
from consumer.service.state import Held, State
from consumer.service.upkeep import Upkeep
from consumer.service.wiring import Wiring
from consumer.wire.registry import RegistryRefused, RegistryUnavailable

# Batches held for their sync at most: one is decided while the next ones' sync runs.
MAX_HELD = 4


class Loop:
    def __init__(
        self,
        settings: Settings,
        state: State,
        metrics: Metrics,
        log: Any,
        lifecycle: Lifecycle,
        wiring: Wiring,
        consumer: Any,
        feed: OptOutFeed,
        delivery: AtLeastOnce,
        processor: BatchProcessor,
        revocations: RevocationEmitter,
        upkeep: Upkeep,
    ) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.log = log
        self.lifecycle = lifecycle
        self.wiring = wiring
        self.input = consumer
        self.feed = feed
        self.delivery = delivery
        self.processor = processor
        self.revocations = revocations
        self.upkeep = upkeep
        self.registry = processor.codec.registry is not None
        delivery.on_refused = self.on_refused
        delivery.on_rewind = lifecycle.drop_held

    def run(self) -> None:
        s, st = self.settings, self.state
        batch_size = s.batch_size
        longest_wait = s.batch_timeout_ms / 1000
        shortest_wait = min(s.batch_min_wait_ms, s.batch_timeout_ms) / 1000
        max_lag = s.optout_max_lag_seconds
        sync_timeout = min(1.0, max_lag / 2)
        syncer = self.lifecycle.syncer = BackgroundSync(self.feed, sync_timeout, self.log)
        syncer.start()
        wait = shortest_wait
        while not st.stopping:
            st.tick()
            fetched = False
            if st.paused:
                msg = self.input.poll(0.05)  # serves rebalance callbacks; paused partitions yield nothing new
                if msg is not None and msg.error() is None:
                    fetched = self._hold([msg])
            elif len(st.held) < MAX_HELD:
                # With a batch held for its sync, take only what has already arrived: the held batch
                # is decided as soon as its sync is in, while the next one's sync runs.
                messages = self.input.consume(num_messages=batch_size, timeout=0 if st.held else wait)
                if messages:
                    fetched = self._hold(messages)
                    wait = shortest_wait  # records flow: short waits, low latency (a heavy input fills batches anyway)
                elif not st.held:
                    wait = min(longest_wait, wait * 2)  # idle: longer waits, no spinning
            if st.held:
                oldest = st.held[0]
                # Wait for its sync only when there is nothing else to do.
                block = len(st.held) >= MAX_HELD or st.paused or not fetched
                synced = syncer.wait(oldest.fetched_at, 0.05 if block else 0.0)
                registry_failed = False
                if synced and self.registry:
                    synced = self.resolve_schemas(oldest.messages)
                    registry_failed = not synced
                if synced:
                    st.held.pop(0)
                    if st.paused:
                        self.lifecycle.resume()
                    self.process(oldest.messages)
                elif registry_failed or time.monotonic() - oldest.fetched_at > sync_timeout:
                    self.lifecycle.pause()
            elif self.feed.seconds_behind() > max_lag:
                self.lifecycle.pause()
            elif st.paused and self.feed.seconds_behind() <= sync_timeout:
                self.lifecycle.resume()
            self.metrics.optout_ready.set(1 if self.feed.seconds_behind() <= max_lag else 0)
            self.delivery.tick()
            self.revocations.poll()
            self.upkeep.after_turn()

    def _hold(self, messages: list[Any]) -> bool:
        """Keep fetched records until a sync that started after now completes. While paused, they
        join the newest held batch, which then waits for a sync after now (later is only stricter)."""
        st = self.state
        now = time.monotonic()
        syncer = self.lifecycle.syncer
        assert syncer is not None
        last = st.held[-1] if st.held else None
        # Records fetched before the next sync starts are all covered by it: they join one batch (up
        # to TF_BATCH_SIZE), so small consumes at a light load do not each wait for a sync of their own.
        if last is not None and (
            st.paused
            or (last.fetched_at > syncer.started_at and len(last.messages) + len(messages) <= self.settings.batch_size)
        ):
            last.messages.extend(messages)
            last.fetched_at = now
        else:
            st.held.append(Held(now, messages))
        syncer.request(now)
        return True

    def resolve_schemas(self, messages: list[Any]) -> bool:
        """Registry mode: every schema id of the batch looked up before any record is decided."""
        try:
            self.processor.resolve_schemas(messages)
        except (RegistryUnavailable, RegistryRefused) as exc:
            self.lifecycle.registry_down(str(exc))
            return False
        self.lifecycle.registry_up()
        return True

    def process(self, messages: list[Any]) -> None:
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
        decisions = self.upkeep.decisions
        for key, count in tally.items():
            records_by[key].inc(count)
            reason = str(key[1])
            decisions[reason] = decisions.get(reason, 0) + count
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

    def _note_consumer_errors(self) -> None:
        errors = self.upkeep.consumer_errors
        for msg in self.processor.consumer_errors:
            err = msg.error()
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            name = err.name()
            if name not in errors:
                self.log.warning("consumer_error", error=name, topic=msg.topic(), partition=msg.partition())
            errors[name] = errors.get(name, 0) + 1
        self.processor.consumer_errors.clear()

    def on_refused(self, batch: Any) -> None:
        """The broker refused outputs of `batch` for good: read the topic limits again, then let the
        processor write them again or dead-letter them (at-least-once), or note them for the
        re-reading after the abort (exactly-once)."""
        for rejected in batch.rejected:
            self.metrics.produce_errors.labels(rejected.output).inc()
        self.log.warning("output_refused", records=len(batch.rejected), error=batch.rejected[0].error)
        self.processor.set_limits(self.wiring.output_limits())
        if self.settings.exactly_once:
            self.processor.note_refused(batch)
        else:
            self.processor.replace_refused(batch)


def _error_name(exc: KafkaException) -> str:
    err = exc.args[0]
    return err.name() if isinstance(err, KafkaError) else type(exc).__name__
