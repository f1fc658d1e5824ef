"""The lifecycle around the loop: the waits of start-up, input paused and resumed, and shutdown.

- Start-up: the output schemas' ids are had (`prepare_writes`: a registry that cannot be reached is
  waited for, a refusal is a configuration error), then the feeds are read to the end of their topics
  (`catch_up`); until then nothing is subscribed and /readyz is 503. A stop request during either
  wait ends it at once.
- Pause and resume: the input partitions are paused while the feeds or the registry cannot be brought
  up to date (consumer/service/upkeep.py decides when, from the loop's turns), and resumed when they are.
- Shutdown: stop fetching, finish in-flight records, commit, close the clients, write the snapshots,
  within the grace period.
"""

from __future__ import annotations

import time
from typing import Any

from consumer.audit.receipts import RECEIPT, RECIPIENTS
from consumer.datapath.delivery import FatalDeliveryError
from consumer.feeds.ends import FeedError
from consumer.feeds.feeds import Feeds
from consumer.operations.metrics import Metrics
from consumer.operations.settings import ConfigError, Settings
from consumer.service.parts import Parts
from consumer.service.state import State, finite, held_records
from consumer.wire.codec import REVOCATION, TRAINING_RECORD, Codec
from consumer.wire.registry import RegistryMismatch, RegistryRefused, RegistryUnavailable, subject_name


class RegistryStatus:
    """Whether the schema registry answers: the state the probes read, a gauge, and a log line per change."""

    def __init__(self, state: State, metrics: Metrics, log: Any) -> None:
        self.state = state
        self.metrics = metrics
        self.log = log

    def down(self, error: str) -> None:
        if self.state.registry_error != error:
            self.log.warning("schema_registry_unavailable", error=error)
        self.state.registry_error = error
        self.metrics.registry_available.set(0)

    def up(self) -> None:
        if self.state.registry_error is not None:
            self.log.info("schema_registry_available")
        self.state.registry_error = None
        self.metrics.registry_available.set(1)


# -- start-up ----------------------------------------------------------------------------------------


def prepare_writes(codec: Codec, settings: Settings, state: State, metrics: Metrics, log: Any) -> None:
    """The output schemas' ids: with a registry, registered or looked up under their subjects. An
    unreachable registry is waited for (not ready meanwhile); a refusal is a configuration error."""
    s = settings
    status = RegistryStatus(state, metrics, log)
    strategy = s.registry.subject_strategy if s.registry is not None else "topic"
    subjects = {
        TRAINING_RECORD: subject_name(strategy, s.training_topic, TRAINING_RECORD),
        REVOCATION: subject_name(strategy, s.revocations_topic, REVOCATION),
    }
    if s.audit_key is not None:
        subjects[RECEIPT] = subject_name(strategy, s.audit_topic, RECEIPT)
        if s.recipients_interval_seconds > 0:  # the record of recipients, kept over time
            # Under its record name whatever the strategy: the audit topic holds several record types,
            # and one <topic>-value subject cannot hold two unrelated schemas.
            subjects[RECIPIENTS] = subject_name("record", s.audit_topic, RECIPIENTS)
    for name, subject in subjects.items():
        while True:
            try:
                schema_id = codec.prepare_write(name, subject)
                break
            except (RegistryRefused, RegistryMismatch) as exc:
                raise ConfigError(f"schema registry: {exc}") from exc
            except RegistryUnavailable as exc:
                status.down(str(exc))
                if state.stopping:
                    raise FeedError("stopped while waiting for the schema registry") from exc
                state.tick()
                time.sleep(1.0)
        status.up()
        if s.registry is not None:
            log.info("output_schema", subject=subject, schema_id=schema_id, schema=name)


def catch_up(parts: Parts) -> None:
    """Read the feeds' topics to their end before any input: readiness stays false until then."""
    catch_up_feeds(parts.feeds, parts.state, parts.metrics, parts.log)


def catch_up_feeds(feeds: Feeds, state: State, metrics: Metrics, log: Any) -> None:
    """`catch_up` of the feeds alone: also what the operator commands that decide records again wait for
    (consumer/commands/decide_again.py), so that they decide under today's opt-outs, changes and consents."""
    started = time.monotonic()
    while not state.stopping:
        state.tick()
        if feeds.sync(timeout=1.0, everything=True):
            break
    state.feeds_behind = feeds.seconds_behind()
    log.info(
        "optout_feed_caught_up",
        entries=feeds.optouts.members.entries,
        seconds=round(time.monotonic() - started, 3),
        partitions=len(feeds.optouts.positions),
    )
    if feeds.consents is not None:
        log.info(
            "consent_feed_caught_up" if feeds.consents.caught_up_at is not None else "consent_feed_behind",
            entries=feeds.consents.members.entries,
            partitions=len(feeds.consents.positions),
            gates_input=feeds.gate,  # False: only the shadow policy is opt-in
        )
    metrics.optout_ready.set(1)


def subscribe(parts: Parts) -> None:
    """Input from now on: the group's partitions come through the rebalance callbacks."""
    r = parts.rebalances
    parts.consumer.subscribe(
        parts.settings.input_topics, on_assign=r.on_assign, on_revoke=r.on_revoke, on_lost=r.on_lost
    )
    parts.revocations.start()
    parts.state.subscribed = True


# -- pause and resume ----------------------------------------------------------------------------------


def pause(parts: Parts, reason: str) -> None:
    st = parts.state
    if st.paused:
        return
    assignment = parts.consumer.assignment()
    if assignment:
        parts.consumer.pause(assignment)
    st.paused = True
    parts.metrics.input_paused.set(1)
    parts.log.warning(
        "input_paused",
        reason=reason,
        optout_feed_seconds_behind=finite(parts.feeds.seconds_behind()),
        error=st.registry_error or parts.feeds.last_error,
    )


def resume(parts: Parts) -> None:
    assignment = parts.consumer.assignment()
    if assignment:
        parts.consumer.resume(assignment)
    parts.state.paused = False
    parts.metrics.input_paused.set(0)
    parts.log.info("input_resumed")


# -- shutdown --------------------------------------------------------------------------------------------


def shutdown(parts: Parts | None, state: State, settings: Settings, log: Any) -> None:
    """Stop fetching, finish in-flight records, commit, close; within the grace period. `parts` is None
    when start-up failed before they were all built (the process exits anyway)."""
    state.stopping = True
    deadline = time.monotonic() + settings.shutdown_grace_seconds
    log.info("stopping", held_records=held_records(state.held))
    if parts is not None:
        _finish_input(parts, deadline)
        _close(log, "revocations", lambda: parts.revocations.close(max(0.1, deadline - time.monotonic() - 1)))
        parts.syncer.stop()
        parts.snapshots.final(max(0.1, deadline - time.monotonic()))
        _close(log, "feeds", parts.feeds.close)
    log.info("stopped", exit_code=state.exit_code)


def _finish_input(parts: Parts, deadline: float) -> None:
    complete = True
    try:
        complete = parts.delivery.shutdown(max(0.1, deadline - time.monotonic() - 2))
    except FatalDeliveryError as exc:
        parts.log.error("fatal_delivery_error", error=str(exc))
        parts.state.exit_code = 1
        complete = False
    if not complete:
        parts.log.warning(
            "shutdown_with_records_in_flight",
            detail="their input offsets were not committed: they will be re-processed",
        )
    _close(parts.log, "input", parts.consumer.close)


def _close(log: Any, what: str, close: Any) -> None:
    try:
        close()
    except Exception as exc:  # closing must not hide the exit code; log the type only
        log.warning("close_failed", client=what, error=type(exc).__name__)
