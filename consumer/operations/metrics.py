"""Prometheus metrics. Every label value comes from a fixed set (source, decision, topic role,
error name) or from Kafka topic/partition numbers: never a user id, a date or text."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from rules import REASONS, Reason, Source

# The *_created series double the series count and no dashboard or alert here uses them.
disable_created_metrics()

NS = "training_filter"
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
OUTPUTS = ("training", "dlq", "revocations")
# Why a record is a dead letter (the `tf.cause` header): consumer/wire/codec.py's CodecError details, the
# batch's own (invalid_fields, undecidable) and output_rejected. Kept in step by tests/unit/test_codec.py.
DLQ_CAUSES = (
    "bad_framing",
    "unknown_schema",
    "schema_refused",
    "unusable_schema",
    "schema_mismatch",
    "schema_lookup_limit",
    "bad_body",
    "oversized",
    "invalid_fields",
    "undecidable",
    "output_rejected",
)
OPTOUT_RESULTS = (
    "applied",
    "tombstone_ignored",
    "undecodable_used_key",
    "unexpected_used_key",
    "registry_unavailable_used_key",
    "undecodable_dropped",
    "revocation_applied",
    "revocation_used_key",
    "revocation_tombstone_ignored",
)
CONSENT_RESULTS = (
    "granted",
    "withdrawn",
    "tombstone_withdrawn",
    "key_mismatch_withdrawn",
    "undecodable_withdrawn",
    "unexpected_withdrawn",
    "undecodable_dropped",
    "refused_full",
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.info = Gauge(
            f"{NS}_build_info",
            "Build and policy of this process (value 1).",
            ["version", "policy_version", "processing_guarantee", "fast_path"],
            registry=r,
        )
        self.records = Counter(
            f"{NS}_records_total", "Input records by source and decision.", ["source", "decision"], registry=r
        )
        # Cached label children: the hot loop adds per batch to these, never looks labels up.
        self.records_by: dict[tuple[Source, str], Counter] = {
            (source, str(reason)): self.records.labels(str(source), str(reason))
            for source in Source
            for reason in REASONS
        }
        self.batch_seconds = Histogram(
            f"{NS}_batch_duration_seconds",
            "Time to filter one consumed batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_records = Histogram(
            f"{NS}_batch_records",
            "Records in one consumed batch.",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000),
            registry=r,
        )
        self.produced = Counter(
            f"{NS}_produced_records_total", "Records acknowledged by the broker, by output.", ["output"], registry=r
        )
        self.produce_errors = Counter(
            f"{NS}_produce_errors_total",
            "Deliveries that failed after retries (the error name is in the log).",
            ["output"],
            registry=r,
        )
        self.dlq = Counter(
            f"{NS}_dlq_records_total",
            "Input records sent to the dead-letter topic, by cause.",
            ["source", "cause"],
            registry=r,
        )
        self.dlq_truncated = Counter(
            f"{NS}_dlq_truncated_total",
            "Dead letters written with headers only: too large for the DLQ, or refused by the broker.",
            registry=r,
        )
        self.rebalances = Counter(f"{NS}_rebalances_total", "Partition assignment changes.", ["kind"], registry=r)
        self.assigned = Gauge(f"{NS}_assigned_partitions", "Input partitions currently assigned.", registry=r)
        self.consumer_lag = Gauge(
            f"{NS}_consumer_lag_records",
            "Records behind the high watermark per input partition (librdkafka statistics).",
            ["topic", "partition"],
            registry=r,
        )
        self.optout_entries = Gauge(
            f"{NS}_optout_filter_entries", "Distinct opted-out users in the filter.", registry=r
        )
        self.optout_capacity = Gauge(f"{NS}_optout_filter_capacity", "Opt-outs the filter is sized for.", registry=r)
        self.optout_bytes = Gauge(f"{NS}_optout_filter_bytes", "Memory of the filter's bit array.", registry=r)
        self.optout_fp_rate = Gauge(
            f"{NS}_optout_filter_false_positive_rate",
            "Estimated false-positive rate at the current number of entries.",
            registry=r,
        )
        self.optout_records = Counter(
            f"{NS}_optout_feed_records_total", "Opt-out topic records read, by result.", ["result"], registry=r
        )
        self.optout_ready = Gauge(
            f"{NS}_optout_feed_caught_up", "1 when the feed is confirmed caught up within the lag bound.", registry=r
        )
        self.optout_propagation = Histogram(
            f"{NS}_optout_propagation_seconds",
            "From an opt-out record's timestamp (its producer's send time) to its being applied to the "
            "filter; every record fetched after that is decided with it. Live opt-outs only, not the "
            "catch-up at start-up.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        # The consent side (opt-in policies only; at 0 otherwise).
        self.consent_entries = Gauge(f"{NS}_consent_set_entries", "Users whose consent is present.", registry=r)
        self.consent_capacity = Gauge(f"{NS}_consent_set_capacity", "Consents the set is sized for.", registry=r)
        self.consent_bytes = Gauge(f"{NS}_consent_set_bytes", "Memory of the consent set's table.", registry=r)
        self.consent_false_admission = Gauge(
            f"{NS}_consent_set_false_admission_probability",
            "Bound on a look-up of a user without consent matching, at the current number of entries.",
            registry=r,
        )
        self.consent_records = Counter(
            f"{NS}_consent_feed_records_total", "Consent topic records read, by result.", ["result"], registry=r
        )
        self.revocations = Counter(
            f"{NS}_revocations_total",
            "Revocations emitted (one per opt-out record, and under an opt-in policy one per consent withdrawal).",
            registry=r,
        )
        self.snapshots = Counter(
            f"{NS}_optout_snapshots_total",
            "Filter snapshots by operation and result.",
            ["operation", "result"],
            registry=r,
        )
        self.snapshot_seconds = Gauge(
            f"{NS}_optout_snapshot_duration_seconds",
            "Duration of the last snapshot operation.",
            ["operation"],
            registry=r,
        )
        self.last_processed = Gauge(
            f"{NS}_last_processed_timestamp_seconds",
            "Unix time at which the last input batch was filtered.",
            registry=r,
        )
        self.input_paused = Gauge(
            f"{NS}_input_paused", "1 while input fetching is paused for the opt-out feed.", registry=r
        )
        self.ready = Gauge(f"{NS}_ready", "1 when /readyz answers 200.", registry=r)
        self.registry_available = Gauge(
            f"{NS}_schema_registry_available",
            "1 when the schema registry answered the last look-up (always 1 without a registry).",
            registry=r,
        )
        self.registry_available.set(1)
        self.transactions = Counter(
            f"{NS}_transactions_total", "Kafka transactions by result (exactly-once).", ["result"], registry=r
        )
        # Shadow evaluation (TF_SHADOW_POLICY_FILE): its series exist only when a shadow policy is set.
        self.shadow_decisions = Counter(
            f"{NS}_shadow_decisions_total",
            "Input records by source, the active policy's decision and the shadow policy's.",
            ["source", "active", "shadow"],
            registry=r,
        )
        self.shadow_info = Gauge(
            f"{NS}_shadow_policy_info", "The shadow policy, when one is set (value 1).", ["version"], registry=r
        )

        # Every labelled series exists from the start at 0: dashboards and alerts never see a gap.
        for output in OUTPUTS:
            self.produced.labels(output)
            self.produce_errors.labels(output)
        for source in Source:
            for cause in DLQ_CAUSES:
                self.dlq.labels(str(source), cause)
        for kind in ("assign", "revoke", "lost"):
            self.rebalances.labels(kind)
        for result in OPTOUT_RESULTS:
            self.optout_records.labels(result)
        for result in CONSENT_RESULTS:
            self.consent_records.labels(result)
        for operation in ("load", "save"):
            for result in ("ok", "failed", "unusable"):
                self.snapshots.labels(operation, result)
            self.snapshot_seconds.labels(operation)
        for result in ("committed", "failed"):
            self.transactions.labels(result)

    def shadow_sink(self, version: str) -> Callable[[Mapping[tuple[Source, Reason, Reason], int]], None]:
        """Every (source, active, shadow) series at 0, and the function that adds one batch's counts."""
        self.shadow_info.labels(version).set(1)
        children = {
            (source, active, shadow): self.shadow_decisions.labels(str(source), str(active), str(shadow))
            for source in Source
            for active in REASONS
            for shadow in REASONS
        }

        def add(pairs: Mapping[tuple[Source, Reason, Reason], int]) -> None:
            for key, count in pairs.items():
                children[key].inc(count)

        return add

    def feed_lag(
        self, seconds_since_caught_up: Callable[[], float], feed: str = "optout", labels: dict[str, str] | None = None
    ) -> None:
        """Register a feed's lag (`optout` or `consent`): evaluated at scrape time, so it grows even if
        the loop hangs. The consent feed's carries `gates_input` ("true" under an opt-in policy, "false"
        when only the shadow candidate is opt-in), so that only a gating feed pages."""
        self.registry.register(_FeedLag(seconds_since_caught_up, feed, labels or {}))

    def set_consumer_lag(self, lags: dict[tuple[str, int], int]) -> None:
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic, str(partition)).set(lag)

    def drop_partitions(self, partitions: list[tuple[str, int]]) -> None:
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):
                self.consumer_lag.remove(topic, str(partition))


class _FeedLag:
    def __init__(self, seconds: Callable[[], float], feed: str, labels: dict[str, str]) -> None:
        self._seconds = seconds
        self._feed = feed
        self._labels = labels

    def collect(self):
        family = GaugeMetricFamily(
            f"{NS}_{self._feed}_feed_lag_seconds",
            f"Seconds since the {self._feed.replace('optout', 'opt-out')} feed was last confirmed caught up "
            "with the topic's end.",
            labels=list(self._labels),
        )
        family.add_metric(list(self._labels.values()), self._seconds())
        yield family
