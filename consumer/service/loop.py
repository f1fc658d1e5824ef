"""The loop: one thread turns it (librdkafka's own threads and the feeds' sync thread aside). A turn
does the data's work and returns what happened (`Turn`); consumer/service/upkeep.py is the one place
that counts it, logs it and acts on it (pausing input, the registry's state).

Each turn: consume a batch (or, while paused, serve rebalances and keep what arrives) and hand its
fetch time to the feeds' sync thread (consumer/feeds/background.py); decide the oldest held batch
once a sync that started after its fetch has completed and, with a registry, every schema id it
carries is known; ask for a pause when that takes longer than the lag bound allows. Records fetched
before the next sync starts join one held batch; at most MAX_HELD are held. Then serve delivery
reports (which commit what they release) and emit revocations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from consumer.audit.audited_batch import AuditedBatch
from consumer.datapath.dead_letters import UndeliverableError
from consumer.datapath.delivery import FatalDeliveryError
from consumer.service.parts import Parts
from consumer.service.state import Held
from consumer.wire.registry import RegistryRefused, RegistryUnavailable
from rules import Source

# Batches held for their sync at most: one is decided while the next ones' sync runs.
MAX_HELD = 4
OPTOUT_FEED, SCHEMA_REGISTRY = "optout_feed", "schema_registry"  # why input pauses


@dataclass(frozen=True, slots=True)
class Decided:
    """A batch decided: its records, decisions by (source, reason), and how long it took."""

    messages: list[Any]
    tally: dict[tuple[Source, str], int]
    seconds: float
    consumer_errors: list[Any] = field(default_factory=list)  # events among the records (not records)


@dataclass(frozen=True, slots=True)
class Turn:
    decided: Decided | None = None
    pause: str | None = None  # input must pause, and why (OPTOUT_FEED, SCHEMA_REGISTRY)
    resume: bool = False  # the feeds are current again: input may resume
    registry_error: str | None = None  # a look-up of the batch's schema ids failed: the registry is down
    registry_ok: bool = False  # the batch's schema ids were looked up


class Loop:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        s = parts.settings
        self.batch_size = s.batch_size
        self.longest_wait = s.batch_timeout_ms / 1000
        self.shortest_wait = min(s.batch_min_wait_ms, s.batch_timeout_ms) / 1000
        self.max_lag = s.optout_max_lag_seconds
        self.sync_timeout = min(1.0, self.max_lag / 2)
        self.wait = self.shortest_wait

    def turn(self) -> Turn:
        p, st = self.parts, self.parts.state
        st.tick()
        fetched = self._fetch()
        turn = self._decide_oldest(fetched) if st.held else self._idle()
        st.feeds_behind = p.feeds.seconds_behind()
        p.delivery.tick()
        p.revocations.poll()
        return turn

    def _fetch(self) -> bool:
        """Consume what has arrived (while paused: serve rebalances only); True if anything was held."""
        p, st = self.parts, self.parts.state
        if st.paused:
            msg = p.consumer.poll(0.05)  # serves rebalance callbacks; paused partitions yield nothing new
            if msg is not None and msg.error() is None:
                return self._hold([msg])
            return False
        if len(st.held) >= MAX_HELD:
            return False
        # With a batch held for its sync, take only what has already arrived: the held batch is
        # decided as soon as its sync is in, while the next one's sync runs.
        messages = p.consumer.consume(num_messages=self.batch_size, timeout=0 if st.held else self.wait)
        if messages:
            self.wait = (
                self.shortest_wait
            )  # records flow: short waits, low latency (a heavy input fills batches anyway)
            return self._hold(messages)
        if not st.held:
            self.wait = min(self.longest_wait, self.wait * 2)  # idle: longer waits, no spinning
        return False

    def _hold(self, messages: list[Any]) -> bool:
        """Keep fetched records until a sync that started after now completes. While paused, they
        join the newest held batch, which then waits for a sync after now (later is only stricter)."""
        st, syncer = self.parts.state, self.parts.syncer
        now = time.monotonic()
        last = st.held[-1] if st.held else None
        # Records fetched before the next sync starts are all covered by it: they join one batch (up
        # to TF_BATCH_SIZE), so small consumes at a light load do not each wait for a sync of their own.
        if last is not None and (
            st.paused or (last.fetched_at > syncer.started_at and len(last.messages) + len(messages) <= self.batch_size)
        ):
            last.messages.extend(messages)
            last.fetched_at = now
        else:
            st.held.append(Held(now, messages))
        syncer.request(now)
        return True

    def _decide_oldest(self, fetched: bool) -> Turn:
        p, st = self.parts, self.parts.state
        oldest = st.held[0]
        # Wait for its sync only when there is nothing else to do.
        block = len(st.held) >= MAX_HELD or st.paused or not fetched
        if not p.syncer.wait(oldest.fetched_at, 0.05 if block else 0.0):
            late = time.monotonic() - oldest.fetched_at > self.sync_timeout
            return Turn(pause=OPTOUT_FEED if late else None)
        registry_ok = False
        if p.registry:
            try:
                p.processor.resolve_schemas(oldest.messages)  # every schema id before any record is decided
            except (RegistryUnavailable, RegistryRefused) as exc:
                return Turn(pause=SCHEMA_REGISTRY, registry_error=str(exc))
            registry_ok = True
        st.held.pop(0)
        return Turn(decided=self._process(oldest.messages), resume=st.paused, registry_ok=registry_ok)

    def _idle(self) -> Turn:
        """Nothing held: pause when the feeds fall behind, resume once they are current again."""
        behind = self.parts.feeds.seconds_behind()
        if behind > self.max_lag:
            return Turn(pause=OPTOUT_FEED)
        return Turn(resume=self.parts.state.paused and behind <= self.sync_timeout)

    def _process(self, messages: list[Any]) -> Decided | None:
        p = self.parts
        started = time.perf_counter()
        batch = p.delivery.open_batch()
        tally: dict[Any, int] = {}
        try:
            if isinstance(batch, AuditedBatch):  # receipts: the feeds held still, their positions noted
                with p.feeds.held_still() as batch.feeds:
                    consumed = p.processor.process(messages, batch, tally)
                batch.decided_at_ms = p.processor.latest_ms - p.processor.clock_skew_ms
            else:
                consumed = p.processor.process(messages, batch, tally)
        except KafkaException as exc:
            # produce() refused for a reason that is not the record's (offsets.PER_RECORD_ERRORS are
            # dead-lettered inside): in exactly-once, a transaction the broker made abortable; the
            # batch is fetched again after the rewind. Otherwise the producer cannot go on.
            if p.delivery.recover(exc):
                return None
            raise FatalDeliveryError(f"{_error_name(exc)} producing an output") from exc
        except UndeliverableError as exc:
            raise FatalDeliveryError(str(exc)) from exc
        p.delivery.close_batch(batch, consumed)
        errors, p.processor.consumer_errors = p.processor.consumer_errors, []
        return Decided(messages, tally, time.perf_counter() - started, errors)


def _error_name(exc: KafkaException) -> str:
    err = exc.args[0]
    return err.name() if isinstance(err, KafkaError) else type(exc).__name__
