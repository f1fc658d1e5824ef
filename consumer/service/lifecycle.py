"""The lifecycle around the loop: start-up gating, rebalances, pause and resume, and shutdown.

- Start-up: the output schemas' ids are had (a registry that cannot be reached is waited for), and
  the opt-out feed is read to the end of both its topics; until then nothing is subscribed and
  /readyz is 503. A stop request during either wait ends it at once.
- Rebalances (cooperative-sticky, callbacks inside consume() on the loop's thread): before
  partitions go, the delivery guarantee finishes and commits them, and the held records of those
  partitions are dropped (their new owner reads them again).
- Pause and resume: input partitions are paused while the feed or the registry cannot be brought
  up to date, and resumed when they are.
- Shutdown: stop fetching, finish in-flight records, commit, close the clients, write the snapshot,
  within the grace period.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import TopicPartition

from consumer.consents.feed import GatedFeeds
from consumer.datapath.delivery import AtLeastOnce, FatalDeliveryError
from consumer.operations.metrics import Metrics
from consumer.operations.settings import ConfigError, Settings
from consumer.optouts.background import BackgroundSync
from consumer.optouts.feed import FeedError, OptOutFeed
from consumer.service.state import State, held_records
from consumer.wire.codec import REVOCATION, TRAINING_RECORD, Codec
from consumer.wire.registry import RegistryMismatch, RegistryRefused, RegistryUnavailable, subject_name


class Lifecycle:
    def __init__(self, settings: Settings, state: State, metrics: Metrics, log: Any) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.log = log
        # Set once built (service.Service._build): the rebalance callbacks and shutdown need them.
        self.feed: OptOutFeed | GatedFeeds | None = None
        self.delivery: AtLeastOnce | None = None
        self.input: Any = None
        self.syncer: BackgroundSync | None = None  # the feed's sync thread, once the loop runs

    # -- the probes (called from the HTTP thread) ----------------------------------------------------

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        stalled = time.monotonic() - self.state.last_tick
        return stalled < self.settings.health_stall_seconds, {"loop_seconds_since_turn": round(stalled, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        st = self.state
        behind = self.feed.seconds_behind() if self.feed is not None else float("inf")
        feed_ok = behind <= self.settings.optout_max_lag_seconds
        ok = feed_ok and st.subscribed and not st.stopping and not st.paused and st.registry_error is None
        return ok, {
            "optout_feed_seconds_behind": finite(behind),
            "schema_registry_error": st.registry_error,
            "subscribed": st.subscribed,
            "assigned_partitions": len(st.assigned),
            "input_paused": st.paused,
            "stopping": st.stopping,
        }

    def request_stop(self, *_: Any) -> None:
        if self.state.stopping:
            self.log.warning("second_stop_signal_ignored_finishing_shutdown")
        self.state.stopping = True

    # -- the schema registry's state -----------------------------------------------------------------

    def registry_down(self, error: str) -> None:
        if self.state.registry_error != error:
            self.log.warning("schema_registry_unavailable", error=error)
        self.state.registry_error = error
        self.metrics.registry_available.set(0)

    def registry_up(self) -> None:
        if self.state.registry_error is not None:
            self.log.info("schema_registry_available")
        self.state.registry_error = None
        self.metrics.registry_available.set(1)

    # -- start-up ------------------------------------------------------------------------------------

    def prepare_writes(self, codec: Codec) -> None:
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
                    schema_id = codec.prepare_write(name, subject)
                    break
                except (RegistryRefused, RegistryMismatch) as exc:
                    raise ConfigError(f"schema registry: {exc}") from exc
                except RegistryUnavailable as exc:
                    self.registry_down(str(exc))
                    if self.state.stopping:
                        raise FeedError("stopped while waiting for the schema registry") from exc
                    self.state.tick()
                    time.sleep(1.0)
            self.registry_up()
            if s.registry is not None:
                self.log.info("output_schema", subject=subject, schema_id=schema_id, schema=name)

    def catch_up(self) -> None:
        """Read the opt-out topics to their end before any input: readiness stays false until then."""
        assert self.feed is not None
        started = time.monotonic()
        while not self.state.stopping:
            self.state.tick()
            if self.feed.sync(timeout=1.0, everything=True):
                break
        self.log.info(
            "optout_feed_caught_up",
            entries=self.feed.filter.entries,
            seconds=round(time.monotonic() - started, 3),
            partitions=len(self.feed.positions),
        )
        if isinstance(self.feed, GatedFeeds):
            self.log.info(
                "consent_feed_caught_up" if self.feed.consents.caught_up_at is not None else "consent_feed_behind",
                entries=self.feed.consents.filter.entries,
                partitions=len(self.feed.consents.positions),
                gates_input=self.feed.gate,  # False: only the shadow policy is opt-in
            )
        self.metrics.optout_ready.set(1)

    def subscribe(self, revocations: Any) -> None:
        self.input.subscribe(
            self.settings.input_topics, on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_lost
        )
        revocations.start()
        self.state.subscribed = True

    # -- rebalances (called inside consume() on the loop's thread) -----------------------------------

    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        assert self.delivery is not None
        self.metrics.rebalances.labels("assign").inc()
        consumer.incremental_assign(partitions)
        # librdkafka keeps a partition's paused flag across losing and regaining it: set it explicitly.
        if self.state.paused:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)
        self.state.assigned.update((p.topic, p.partition) for p in partitions)
        self.delivery.assigned_partitions(partitions)
        self.metrics.assigned.set(len(self.state.assigned))
        self.log.info("partitions_assigned", partitions=[f"{p.topic}/{p.partition}" for p in partitions])

    def on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        assert self.delivery is not None
        self.metrics.rebalances.labels("revoke").inc()
        self.delivery.revoked(partitions, self.settings.revoke_flush_seconds)
        self._forget(partitions)
        self.log.info("partitions_revoked", partitions=[f"{p.topic}/{p.partition}" for p in partitions])

    def on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        assert self.delivery is not None
        self.metrics.rebalances.labels("lost").inc()
        self.delivery.lost(partitions)
        self._forget(partitions)
        self.log.warning("partitions_lost", partitions=[f"{p.topic}/{p.partition}" for p in partitions])

    def _forget(self, partitions: list[TopicPartition]) -> None:
        st = self.state
        gone = {(p.topic, p.partition) for p in partitions}
        st.assigned -= gone
        self.metrics.assigned.set(len(st.assigned))
        self.metrics.drop_partitions(list(gone))
        # Records of a partition that has gone belong to its new owner now; never emit them here.
        for held in st.held:
            held.messages = [m for m in held.messages if (m.topic(), m.partition()) not in gone]
        st.held = [h for h in st.held if h.messages]

    def on_stats(self, stats_json: str) -> None:
        stats = orjson.loads(stats_json)
        lags: dict[tuple[str, int], int] = {}
        for topic, info in stats.get("topics", {}).items():
            for partition, p in info.get("partitions", {}).items():
                key = (topic, int(partition))
                if key in self.state.assigned and p.get("consumer_lag", -1) >= 0:
                    lags[key] = p["consumer_lag"]
        self.metrics.set_consumer_lag(lags)

    # -- pause and resume ----------------------------------------------------------------------------

    def pause(self) -> None:
        st = self.state
        if st.paused:
            return
        assignment = self.input.assignment()
        if assignment:
            self.input.pause(assignment)
        st.paused = True
        self.metrics.input_paused.set(1)
        assert self.feed is not None
        self.log.warning(
            "input_paused",
            reason="schema_registry" if st.registry_error is not None else "optout_feed",
            optout_feed_seconds_behind=finite(self.feed.seconds_behind()),
            error=st.registry_error or self.feed.last_error,
        )

    def resume(self) -> None:
        assignment = self.input.assignment()
        if assignment:
            self.input.resume(assignment)
        self.state.paused = False
        self.metrics.input_paused.set(0)
        self.log.info("input_resumed")

    def drop_held(self) -> None:
        """After the consumer rewound (an aborted transaction): the held records come again."""
        if self.state.held:
            self.log.info("held_records_dropped_after_rewind", records=held_records(self.state.held))
        self.state.held = []

    # -- shutdown ------------------------------------------------------------------------------------

    def shutdown(self, revocations: Any, snapshot: Any, health: Any) -> None:
        """Stop fetching, finish in-flight records, commit, close; within the grace period."""
        st = self.state
        st.stopping = True
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        self.log.info("stopping", held_records=held_records(st.held))
        if self.delivery is not None:
            complete = True
            try:
                complete = self.delivery.shutdown(max(0.1, deadline - time.monotonic() - 2))
            except FatalDeliveryError as exc:
                self.log.error("fatal_delivery_error", error=str(exc))
                st.exit_code = 1
                complete = False
            if not complete:
                self.log.warning(
                    "shutdown_with_records_in_flight",
                    detail="their input offsets were not committed: they will be re-processed",
                )
            self._close("input", self.input.close)
        if revocations is not None:
            self._close("revocations", lambda: revocations.close(max(0.1, deadline - time.monotonic() - 1)))
        if self.syncer is not None:
            self.syncer.stop()
        if self.feed is not None:
            if self.feed.caught_up_at is not None and snapshot is not None:
                snapshot.final(max(0.1, deadline - time.monotonic()))
            self._close("optout_feed", self.feed.close)
        if health is not None:
            health.stop()
        self.log.info("stopped", exit_code=st.exit_code)

    def _close(self, what: str, close: Any) -> None:
        try:
            close()
        except Exception as exc:  # closing must not hide the exit code; log the type only
            self.log.warning("close_failed", client=what, error=type(exc).__name__)


def finite(seconds: float) -> float | None:
    return None if seconds == float("inf") else round(seconds, 3)
