"""The metrics, declared once: name, type, labels (with their values where they are a fixed set),
help, histogram buckets, and when the series exist. `Metrics` (metrics.py) builds its registry from
these declarations and creates every series known in advance at 0; the metrics table of
docs/operating.md is generated from them (`make docs`), which also checks that they are what a real
registry exposes (consumer/devtools/docs/reference.py).

A declaration is a class attribute of `MetricTable`, whose name is the attribute of `Metrics` the code
uses (`metrics.records`), in the order of the exposition. Every label value comes from a fixed set
(source, decision, topic role, cause, result) or from Kafka topic names and partition numbers: never
a user id, a date or text (the recipients' metrics are labelled by consumer group name, a reader's
deployment). Adding a metric: docs/development.md, "How to add a metric or an alert".
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, cast, overload

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rules import REASONS, Retraction, Source

NS = "training_filter"
M = TypeVar("M", Counter, Gauge, Histogram)
Type = Literal["counter", "gauge", "histogram"]
_CLASSES: dict[str, Any] = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}

SOURCES = tuple(str(s) for s in Source)
DECISIONS = tuple(str(r) for r in REASONS)
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
    "revocation_not_permanent",
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
    "stale_grant_ignored",
    "history_full_kept_out",
    "ledger_withdrawal",
    "ledger_regrant",
)
CHANGE_RESULTS = (
    "record_stopped",
    "record_key_mismatch",
    "record_undecodable_used_key",
    "record_deferred_used_key",
    "record_undecodable_dropped",
    "record_tombstone_ignored",
    "ledger_record_stopped",
    "ledger_undecodable_used_key",
    "account_corrected",
    "account_deleted",
    "account_refused_full",
    "account_undecodable",
    "account_key_mismatch",
    "account_undecodable_dropped",
    "account_tombstone_ignored",
)
RETRACTIONS = tuple(str(r) for r in Retraction)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
SHADOW = "with TF_SHADOW_POLICY_FILE only"
RECIPIENTS = "one per recipient at the last scan (TF_RECIPIENTS_INTERVAL_SECONDS), removed when the group is gone"


@dataclass(frozen=True, eq=False)
class Declared(Generic[M]):
    """One metric. `labels`: each label name with its values, () where they are not known in advance
    (a topic, a partition). Without `when`, every series exists from start-up: each combination of
    the label values is created at 0, so dashboards and alerts never see a gap. With `when` (which
    the docs show), the code that sets a series creates it."""

    type: Type
    name: str  # as exposed, without the training_filter_ prefix; a counter's ends in _total
    help: str
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    buckets: tuple[float, ...] = ()
    when: str = ""
    initial: float | None = None  # an unlabelled gauge's value at start-up (0 otherwise)

    def __post_init__(self) -> None:
        problems = []
        if (self.type == "counter") != self.name.endswith("_total"):
            problems.append("a counter's name, and only a counter's, ends in _total")
        if (self.type == "histogram") != bool(self.buckets):
            problems.append("a histogram has buckets, and nothing else has")
        if not self.when and not all(self.labels.values()):
            problems.append("a label's values are not known in advance: say `when` its series exist")
        if self.initial is not None and (self.type != "gauge" or self.labels):
            problems.append("only an unlabelled gauge has an initial value")
        if problems:
            raise ValueError(f"metric {self.name}: " + "; ".join(problems))

    @property
    def exposed(self) -> str:
        """The name in /metrics, in dashboards and in alerts."""
        return f"{NS}_{self.name}"

    @property
    def family(self) -> str:
        """The family's name (a counter's without _total: prometheus_client adds it to the samples)."""
        return self.exposed.removesuffix("_total") if self.type == "counter" else self.exposed

    def build(self, registry: CollectorRegistry) -> M:
        """The metric, registered, with its series known in advance created at 0."""
        extra = {"buckets": self.buckets} if self.buckets else {}
        metric = _CLASSES[self.type](self.family, self.help, list(self.labels), registry=registry, **extra)
        if self.labels and not self.when:
            for values in itertools.product(*self.labels.values()):
                metric.labels(*values)
        if self.initial is not None:
            metric.set(self.initial)
        return cast(M, metric)

    @overload
    def __get__(self, obj: None, owner: builtins.type) -> Declared[M]: ...
    @overload
    def __get__(self, obj: object, owner: builtins.type) -> M: ...
    def __get__(self, obj: object | None, owner: builtins.type) -> Declared[M] | M:
        # Metrics.__init__ puts the built metric into the instance's __dict__, which a descriptor
        # without __set__ gives way to: the hot loop reads a plain attribute. Only the class reaches here.
        if obj is None:
            return self
        raise AttributeError(f"{type(obj).__name__} has not built this metric: {self.exposed}")


def counter(
    name: str, help: str, labels: Mapping[str, tuple[str, ...]] | None = None, when: str = ""
) -> Declared[Counter]:
    return Declared("counter", name, help, labels or {}, when=when)


def gauge(
    name: str,
    help: str,
    labels: Mapping[str, tuple[str, ...]] | None = None,
    when: str = "",
    initial: float | None = None,
) -> Declared[Gauge]:
    return Declared("gauge", name, help, labels or {}, when=when, initial=initial)


def histogram(name: str, help: str, buckets: tuple[float, ...]) -> Declared[Histogram]:
    return Declared("histogram", name, help, buckets=buckets)


class MetricTable:
    """Every metric `Metrics` registers, in the order of the exposition."""

    info = gauge(
        "build_info",
        "Build and policy of this process (value 1).",
        {"version": (), "policy_version": (), "processing_guarantee": (), "fast_path": ()},
        when="one series, set when the service starts",
    )
    records = counter(
        "records_total", "Input records by source and decision.", {"source": SOURCES, "decision": DECISIONS}
    )
    batch_seconds = histogram("batch_duration_seconds", "Time to filter one consumed batch.", BATCH_BUCKETS)
    batch_records = histogram(
        "batch_records", "Records in one consumed batch.", (1, 10, 100, 500, 1000, 2000, 5000, 10000)
    )
    produced = counter("produced_records_total", "Records acknowledged by the broker, by output.", {"output": OUTPUTS})
    audit_receipts = counter(
        "audit_receipts_total",
        "Decision receipts written to the audit topic (docs/audit.md): one per input partition of a batch.",
        when="with an audit key (TF_AUDIT_KEY_FILE)",
    )
    produce_errors = counter(
        "produce_errors_total",
        "Deliveries that failed after retries (the error name is in the log).",
        {"output": OUTPUTS},
    )
    dlq = counter(
        "dlq_records_total",
        "Input records sent to the dead-letter topic, by cause.",
        {"source": SOURCES, "cause": DLQ_CAUSES},
    )
    dlq_truncated = counter(
        "dlq_truncated_total",
        "Dead letters written with headers only: too large for the DLQ, or refused by the broker.",
    )
    rebalances = counter("rebalances_total", "Partition assignment changes.", {"kind": ("assign", "revoke", "lost")})
    assigned = gauge("assigned_partitions", "Input partitions currently assigned.")
    consumer_lag = gauge(
        "consumer_lag_records",
        "Records behind the high watermark per input partition (librdkafka statistics).",
        {"topic": (), "partition": ()},
        when="one per assigned input partition, removed when it is revoked",
    )
    optout_entries = gauge("optout_filter_entries", "Distinct opted-out users in the filter.")
    optout_capacity = gauge("optout_filter_capacity", "Opt-outs the filter is sized for.")
    optout_bytes = gauge("optout_filter_bytes", "Memory of the filter's bit array.")
    optout_fp_rate = gauge(
        "optout_filter_false_positive_rate", "Estimated false-positive rate at the current number of entries."
    )
    optout_records = counter(
        "optout_feed_records_total", "Opt-out topic records read, by result.", {"result": OPTOUT_RESULTS}
    )
    optout_ready = gauge("optout_feed_caught_up", "1 when the feed is confirmed caught up within the lag bound.")
    optout_propagation = histogram(
        "optout_propagation_seconds",
        "From an opt-out record's timestamp (its producer's send time) to its being applied to the "
        "filter; every record fetched after that is decided with it. Live opt-outs only, not the "
        "catch-up at start-up.",
        (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    )
    # The consent side (opt-in policies only; at 0 otherwise).
    consent_entries = gauge("consent_set_entries", "Users whose consent is present.")
    consent_capacity = gauge("consent_set_capacity", "Consents the set is sized for.")
    consent_bytes = gauge("consent_set_bytes", "Memory of the consent set's table.")
    consent_false_admission = gauge(
        "consent_set_false_admission_probability",
        "Bound on a look-up of a user without consent matching, at the current number of entries.",
    )
    consent_records = counter(
        "consent_feed_records_total", "Consent topic records read, by result.", {"result": CONSENT_RESULTS}
    )
    # The change side (docs/retractions.md): every replica's change set, mirrored from the change topics.
    change_records = counter(
        "change_feed_records_total",
        "Change topic records read, and the content/ retractions read back from the revocations topic "
        "(ledger_*), by result.",
        {"result": CHANGE_RESULTS},
    )
    change_entries = gauge(
        "change_set_entries",
        "Record ids stopped by a content change, and accounts with corrected facts, in the change set.",
        {"set": ("records", "accounts")},
    )
    change_capacity = gauge(
        "change_set_capacity", "What the change set is sized for.", {"set": ("records", "accounts")}
    )
    change_bytes = gauge("change_set_bytes", "Memory of the change set (the Bloom filter, and the accounts estimated).")
    change_fp_rate = gauge(
        "change_set_false_positive_rate",
        "Estimated false-positive rate of the stopped records at the current number of entries.",
    )
    change_propagation = histogram(
        "change_propagation_seconds",
        "From a change record's timestamp (its producer's send time) to its being applied to the change set; "
        "every record fetched after that is decided with it. Live changes only.",
        (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    )
    revocations = counter(
        "revocations_total",
        "Retractions emitted (Revocation v2 on the revocations topic), by reason: docs/retractions.md.",
        {"reason": RETRACTIONS},
    )
    snapshots = counter(
        "optout_snapshots_total",
        "Filter snapshots by operation and result.",
        {"operation": ("load", "save"), "result": ("ok", "failed", "unusable")},
    )
    snapshot_seconds = gauge(
        "optout_snapshot_duration_seconds", "Duration of the last snapshot operation.", {"operation": ("load", "save")}
    )
    last_processed = gauge("last_processed_timestamp_seconds", "Unix time at which the last input batch was filtered.")
    input_paused = gauge("input_paused", "1 while input fetching is paused for the opt-out feed.")
    ready = gauge("ready", "1 when /readyz answers 200.")
    registry_available = gauge(
        "schema_registry_available",
        "1 when the schema registry answered the last look-up (always 1 without a registry).",
        initial=1,
    )
    transactions = counter(
        "transactions_total", "Kafka transactions by result (exactly-once).", {"result": ("committed", "failed")}
    )
    # Shadow evaluation (TF_SHADOW_POLICY_FILE): Metrics.shadow_sink creates every combination at 0.
    shadow_decisions = counter(
        "shadow_decisions_total",
        "Input records by source, the active policy's decision and the shadow policy's.",
        {"source": SOURCES, "active": DECISIONS, "shadow": DECISIONS},
        when=SHADOW + ", every combination at 0",
    )
    shadow_info = gauge(
        "shadow_policy_info", "The shadow policy, when one is set (value 1).", {"version": ()}, when=SHADOW
    )
    # The record of recipients (docs/recipients.md, GDPR Art. 19): the consumer groups with a committed
    # offset on the training topic, scanned every TF_RECIPIENTS_INTERVAL_SECONDS. A group name is the
    # only label: it names a reader's deployment, not a person.
    recipients = gauge("recipients", "Consumer groups with a committed offset on the training topic, at the last scan.")
    recipient_reads_revocations = gauge(
        "recipient_reads_revocations",
        "1 when the recipient has a committed offset on the revocations topic, 0 when it has none.",
        {"group": ()},
        when=RECIPIENTS,
    )
    recipient_unacknowledged = gauge(
        "recipient_unacknowledged_revocations",
        "Revocations offsets from the recipient's committed offset (the log start without one) to the end.",
        {"group": ()},
        when=RECIPIENTS,
    )
    recipient_oldest_seconds = gauge(
        "recipient_oldest_unacknowledged_seconds",
        "Age of the oldest revocation the recipient has not acknowledged (its timestamp to the scan; 0: none).",
        {"group": ()},
        when=RECIPIENTS,
    )
    recipient_scans_failed = counter(
        "recipient_scans_failed_total",
        "Scans of the recipients that failed (the error is in the log); the figures of the last scan stay.",
    )


# Computed at scrape time (Metrics.feed_lag registers one per feed read), so they grow even if the
# loop hangs; not attributes of Metrics.
FEED_LAGS: dict[str, Declared[Gauge]] = {
    "optout": gauge(
        "optout_feed_lag_seconds",
        "Seconds since the opt-out feed was last confirmed caught up with the topic's end.",
        when="computed at each scrape",
    ),
    "consent": gauge(
        "consent_feed_lag_seconds",
        "Seconds since the consent feed was last confirmed caught up with the topic's end.",
        {"gates_input": ("true", "false")},
        when="where a consent topic is read; computed at each scrape",
    ),
    "change": gauge(
        "change_feed_lag_seconds",
        "Seconds since the change feed was last confirmed caught up with both change topics' ends.",
        when="computed at each scrape",
    ),
}


def attributes() -> Iterator[tuple[str, Declared[Any]]]:
    """(attribute of Metrics, declaration) in the order of the exposition."""
    for attr, value in vars(MetricTable).items():
        if isinstance(value, Declared):
            yield attr, value


def declarations() -> list[Declared[Any]]:
    """Every metric the service can expose, in the order a running service exposes them."""
    return [d for _, d in attributes()] + list(FEED_LAGS.values())
