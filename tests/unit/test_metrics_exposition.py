"""What /metrics exposes is a contract of the dashboards and the alerts: the training_filter_ families
of a fresh `Metrics()`, and of one given every call the service makes on it, are byte for byte the
exposition captured in tests/unit/golden/ (from the hand-written constructor the declarations
replaced). A changed name, type, help text, label, bucket or pre-created series fails here; to change
one on purpose, rewrite the golden files (`python -m tests.unit.test_metrics_exposition`) and say why
in the commit."""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client import generate_latest

from consumer.audit.acknowledgements import assess
from consumer.audit.exporter import RecipientsExporter
from consumer.operations.metrics import Metrics
from rules import Reason, Source
from tests.service_fixture import RecordingLog

GOLDEN = Path(__file__).parent / "golden"


def ours(metrics: Metrics) -> str:
    """The exposition's training_filter_ lines (process_* and python_info vary from run to run)."""
    lines = generate_latest(metrics.registry).decode().splitlines()
    return "\n".join(line for line in lines if "training_filter_" in line) + "\n"


def fresh() -> Metrics:
    """A process at start-up, before the service has touched its metrics."""
    return Metrics()


def running() -> Metrics:
    """Every call the service makes (consumer/service/*, the feeds, the data path), once."""
    m = Metrics()
    m.info.labels("0.1.0", "policy-2025-01", "at-least-once", "compiled").set(1)
    m.feed_lag(lambda: 1.5)
    m.feed_lag(lambda: 2.25, "consent", {"gates_input": "true"})
    m.set_consumer_lag({("posts.v1", 0): 7, ("posts.v1", 1): 3, ("ai-interactions.v1", 0): 0})
    m.drop_partitions([("posts.v1", 1), ("never-assigned", 9)])
    add = m.shadow_sink("candidate-2025-02")
    add(
        {
            (Source.POST, Reason.ELIGIBLE, Reason.REGION): 2,
            (Source.AI_INTERACTION, Reason.OPTED_OUT, Reason.OPTED_OUT): 1,
        }
    )
    m.records_by[(Source.POST, str(Reason.ELIGIBLE))].inc(5)
    m.records_by[(Source.AI_INTERACTION, str(Reason.UNDER_AGE))].inc(2)
    m.batch_seconds.observe(0.003)
    m.batch_records.observe(150)
    m.produced.labels("training").inc(5)
    m.produce_errors.labels("dlq").inc()
    m.dlq.labels(str(Source.POST), "bad_framing").inc(3)
    m.dlq_truncated.inc()
    m.rebalances.labels("assign").inc()
    m.assigned.set(2)
    m.optout_entries.set(1234)
    m.optout_capacity.set(10_000_000)
    m.optout_bytes.set(35_943_936)
    m.optout_fp_rate.set(1e-9)
    m.optout_records.labels("applied").inc(4)
    m.optout_ready.set(1)
    m.optout_propagation.observe(0.2)
    m.consent_entries.set(10)
    m.consent_capacity.set(10_000_000)
    m.consent_bytes.set(134_217_728)
    m.consent_false_admission.set(1e-12)
    m.consent_records.labels("granted").inc(10)
    m.revocations.labels("opted_out").inc(4)
    m.snapshots.labels("save", "ok").inc()
    m.snapshot_seconds.labels("save").set(0.5)
    m.last_processed.set(1_700_000_000)
    m.input_paused.set(0)
    m.ready.set(1)
    m.registry_available.set(0)
    m.transactions.labels("committed").inc(3)
    exporter = RecipientsExporter(None, m, RecordingLog(), 60)  # type: ignore[arg-type]
    good = assess("ml-good", {0: 4}, {0: 0}, {0: 4}, {})
    behind = assess("ml-behind", {0: 1}, {0: 0}, {0: 4}, {(0, 1): 1_700_000_000_000})
    exporter.publish([good, behind, assess("ml-gone", {}, {0: 0}, {0: 4}, {(0, 0): 0})], 1_700_000_090_000)
    exporter.publish([good, behind], 1_700_000_120_000)
    m.recipient_scans_failed.inc()
    return m


def test_a_fresh_registry_exposes_what_it_always_did():
    assert ours(fresh()) == (GOLDEN / "metrics-fresh.prom").read_text()


def test_a_running_service_exposes_what_it_always_did():
    assert ours(running()) == (GOLDEN / "metrics-running.prom").read_text()


if __name__ == "__main__":  # rewrite the golden files from the code as it is now
    GOLDEN.mkdir(exist_ok=True)
    (GOLDEN / "metrics-fresh.prom").write_text(ours(fresh()))
    (GOLDEN / "metrics-running.prom").write_text(ours(running()))
    print(f"wrote {GOLDEN}/metrics-fresh.prom and metrics-running.prom", file=sys.stderr)
