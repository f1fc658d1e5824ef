"""The record of recipients (issue 23, GDPR Art. 19; docs/recipients.md): the arithmetic of what a
recipient acknowledged, the scan on tests/fakes.py's Kafka, the metrics the running service exports
and the `training-filter audit recipients` command. The real broker: tests/integration/test_recipients.py."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import io
import threading
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import KafkaError, KafkaException

from consumer.audit.acknowledgements import (
    BOUND_SECONDS,
    NOTHING_THERE,
    acknowledging_group,
    assess,
    first_unacknowledged,
    pending,
    problems,
    to_read,
)
from consumer.audit.command import main_recipients
from consumer.audit.exporter import RecipientsExporter
from consumer.audit.recipients import RecipientScan, ScanError, Topics
from consumer.operations.metrics import Metrics
from consumer.operations.settings import ConfigError
from tests.fakes import FakeAdmin, FakeKafka, Group
from tests.service_fixture import InProcessService, RecordingLog, make_kafka, settings

NOW = (int(time.time()) - 7200) * 1000  # two hours ago: past the bound, whatever the day
TOPICS = Topics(training="training", revocations="revocations", own_group="training-filter")
RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "training-filter-rules.yaml"


# -- the arithmetic ------------------------------------------------------------------------------------


def test_a_recipient_that_committed_to_the_end_has_nothing_unacknowledged():
    r = assess("ml", {0: 7, 1: 3}, {0: 0, 1: 0}, {0: 7, 1: 3}, {})
    assert (r.reads_revocations, r.unacknowledged, r.oldest_timestamp_ms, r.oldest_seconds(NOW)) == (True, 0, None, 0)
    assert problems(r, BOUND_SECONDS, NOW) == []


def test_the_count_is_end_minus_committed_and_the_age_is_of_the_record_at_the_committed_offset():
    stamps = {(0, 4): NOW - 90_000, (1, 1): NOW - 30_000}
    assert to_read({0: 4, 1: 1}, {0: 0, 1: 0}, {0: 10, 1: 3}) == set(stamps)
    r = assess("ml", {0: 4, 1: 1}, {0: 0, 1: 0}, {0: 10, 1: 3}, stamps)
    assert [p.unacknowledged for p in r.partitions] == [6, 2]
    assert [p.oldest_offset for p in r.partitions] == [4, 1]
    assert r.unacknowledged == 8
    assert r.oldest_seconds(NOW) == 90.0  # the older of the two partitions'
    assert problems(r, 60, NOW) == ["has sat on a revocation for 90 s, longer than the bound of 60 s"]
    assert problems(r, 90, NOW) == []  # at the bound, not past it


def test_a_group_without_a_committed_offset_does_not_read_revocations_and_owes_them_all():
    stamps = {(0, 2): NOW - 5000, (1, 0): NOW - 1000}
    assert to_read({}, {0: 2, 1: 0}, {0: 5, 1: 1}) == set(stamps)
    r = assess("ignores", {}, {0: 2, 1: 0}, {0: 5, 1: 1}, stamps)
    assert not r.reads_revocations
    assert r.unacknowledged == 4  # from each log start
    assert r.oldest_seconds(NOW) == 5.0
    assert problems(r, BOUND_SECONDS, NOW) == ["does not read the revocations topic (no committed offset there)"]


def test_on_an_empty_revocations_topic_no_group_can_be_said_to_ignore_it():
    r = assess("new", {}, {0: 0}, {0: 0}, {})
    assert (r.reads_revocations, r.unacknowledged) == (False, 0)
    assert problems(r, BOUND_SECONDS, NOW) == []


def test_committed_before_the_log_start_counts_the_deleted_revocations_and_reads_the_oldest_left():
    assert first_unacknowledged(3, 10) == 10 and pending(3, 10, 12) == 9
    r = assess("late", {0: 3}, {0: 10}, {0: 12}, {(0, 10): NOW - 1})
    assert r.unacknowledged == 9 and r.partitions[0].oldest_timestamp_ms == NOW - 1


def test_only_transaction_markers_after_the_committed_offset_count_nothing():
    r = assess("eos", {0: 9}, {0: 0}, {0: 10}, {(0, 9): NOTHING_THERE})
    assert (r.unacknowledged, r.oldest_seconds(NOW)) == (0, 0)


def test_a_committed_offset_beyond_the_last_stable_offset_owes_nothing_and_a_clock_behind_is_no_negative_age():
    assert pending(12, 0, 10) == 0
    r = assess("ahead", {0: 1}, {0: 0}, {0: 2}, {(0, 1): NOW + 5000})
    assert r.oldest_seconds(NOW) == 0.0


def test_a_timestamp_the_scan_did_not_read_is_an_error_not_a_zero():
    with pytest.raises(KeyError):
        assess("ml", {0: 1}, {0: 0}, {0: 2}, {})


def test_a_recipients_acknowledgements_are_its_own_else_its_companions_as_the_recipes_name_them():
    assert acknowledging_group("ml", {"ml", "ml-retractions"}) == "ml"
    assert acknowledging_group("ml", {"ml-revocations", "ml-retractions"}) == "ml-retractions"
    assert acknowledging_group("ml", {"ml-revocations"}) == "ml-revocations"
    assert acknowledging_group("ml", {"ml-other", "other-retractions"}) == "ml"


def test_the_command_and_the_alert_share_one_bound():
    rules = yaml.safe_load(RULES.read_text())
    (rule,) = [
        r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "TrainingFilterRecipientSitsOnRevocations"
    ]
    assert f"> {BOUND_SECONDS}" in rule["expr"]


# -- the scan ------------------------------------------------------------------------------------------


def commit(kafka: FakeKafka, group: str, offsets: dict[tuple[str, int], int]) -> None:
    with kafka.lock:
        kafka.groups.setdefault(group, Group()).committed.update(offsets)


def broker() -> FakeKafka:
    """A training topic and a revocations topic of two partitions; revocation i written at NOW - i s."""
    kafka = FakeKafka()
    kafka.create_topic("training", 2)
    kafka.create_topic("revocations", 2)
    for i in range(6):
        kafka.append("revocations", b"v", b"k", partition=i % 2, timestamp=NOW - 1000 * (10 - i))
    for _ in range(4):
        kafka.append("training", b"t", b"k", partition=0)
    return kafka


def scanner(kafka: FakeKafka, timeout: float = 5.0) -> RecipientScan:
    return RecipientScan(kafka.clients(), {"bootstrap.servers": "fake:9092"}, TOPICS, timeout)


def test_the_scan_lists_the_groups_that_committed_on_the_training_topic_and_not_the_services_own():
    kafka = broker()
    commit(kafka, "ml-good", {("training", 0): 4, ("revocations", 0): 3, ("revocations", 1): 3})
    commit(kafka, "ml-behind", {("training", 0): 2, ("revocations", 0): 1, ("revocations", 1): 3})
    commit(kafka, "ml-ignores", {("training", 0): 4})
    commit(kafka, "reads-revocations-only", {("revocations", 0): 1})
    commit(kafka, "training-filter", {("training", 0): 4})  # the service's groups are no recipients
    commit(kafka, "training-filter-backfill-abc", {("training", 0): 4})
    commit(kafka, "training-filterish", {("training", 0): 4})  # ... but a name that only starts alike is
    found = {r.group: r for r in scanner(kafka).scan()}
    assert sorted(found) == ["ml-behind", "ml-good", "ml-ignores", "training-filterish"]
    assert found["ml-good"].unacknowledged == 0 and found["ml-good"].reads_revocations
    behind = found["ml-behind"]
    assert [p.unacknowledged for p in behind.partitions] == [2, 0]
    # Partition 0 holds revocations 0, 2, 4 at offsets 0, 1, 2: offset 1 is revocation 2, 8 s old.
    assert behind.oldest_timestamp_ms == NOW - 8000
    ignores = found["ml-ignores"]
    assert (ignores.reads_revocations, ignores.unacknowledged, ignores.oldest_timestamp_ms) == (False, 6, NOW - 10_000)


def test_a_recipient_that_reads_the_revocations_as_its_companion_group_reads_them():
    kafka = broker()
    commit(kafka, "ml-java", {("training", 0): 4})
    commit(kafka, "ml-java-retractions", {("revocations", 0): 3, ("revocations", 1): 2})  # the recipes' naming
    (found,) = scanner(kafka).scan()  # the companion reads no training data: it is no recipient of its own
    assert (found.group, found.acknowledged_by, found.reads_revocations) == ("ml-java", "ml-java-retractions", True)
    assert found.unacknowledged == 1 and found.oldest_timestamp_ms == NOW - 5000


def test_recipients_at_different_offsets_of_one_partition_each_get_their_own_oldest():
    kafka = broker()
    for group, offset in (("a", 0), ("b", 1), ("c", 2)):
        commit(kafka, group, {("training", 0): 1, ("revocations", 0): offset, ("revocations", 1): 3})
    ages = {r.group: r.oldest_timestamp_ms for r in scanner(kafka).scan()}
    assert ages == {"a": NOW - 10_000, "b": NOW - 8000, "c": NOW - 6000}


def test_reading_the_timestamps_commits_nothing_and_joins_no_group():
    kafka = broker()
    commit(kafka, "ml", {("training", 0): 1, ("revocations", 0): 1})
    before = {name: dict(g.committed) for name, g in kafka.groups.items()}
    scan = scanner(kafka)
    scan.scan()
    scan.close()
    assert {name: dict(g.committed) for name, g in kafka.groups.items()} == before


def test_a_broker_that_cannot_answer_is_a_scan_error_naming_the_request():
    kafka = broker()
    kafka.down = True
    with pytest.raises(ScanError, match="ListGroups: _TRANSPORT"):
        scanner(kafka).scan()


def test_a_service_that_may_not_describe_every_group_fails_the_scan_rather_than_list_none(monkeypatch):
    """ListGroups leaves out the groups one may not Describe without an error (KIP-231): the probe
    turns a missing GROUP "*" Describe into a failed scan, not an empty record."""
    kafka = broker()
    commit(kafka, "ml", {("training", 0): 1})
    real = FakeAdmin.list_consumer_group_offsets

    def only_own_groups(self: FakeAdmin, requests: Any, **options: Any) -> Any:
        group = requests[0].group_id
        if group.startswith("training-filter"):
            return real(self, requests, **options)
        return {group: _failed(KafkaError.GROUP_AUTHORIZATION_FAILED)}

    monkeypatch.setattr(FakeAdmin, "list_consumer_group_offsets", only_own_groups)
    with pytest.raises(ScanError, match=r'GROUP_AUTHORIZATION_FAILED: .*grant Describe on the group "\*"'):
        scanner(kafka).scan()


def _failed(code: int) -> Any:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    future.set_exception(KafkaException(KafkaError(code)))
    return future


def test_a_revocations_topic_that_cannot_be_read_is_a_scan_error_naming_it():
    kafka = broker()
    commit(kafka, "ml", {("training", 0): 1})
    scan = RecipientScan(kafka.clients(), {}, Topics("training", "no-such-topic", "training-filter"), 1.0)
    with pytest.raises(ScanError, match="the revocations topic no-such-topic"):
        scan.scan()


def test_a_timestamp_that_cannot_be_read_in_time_fails_the_scan_rather_than_report_no_wait(monkeypatch):
    kafka = broker()
    commit(kafka, "ml", {("training", 0): 1, ("revocations", 0): 1})
    monkeypatch.setattr("tests.fakes.FakeConsumer.consume", lambda self, num_messages=1, timeout=-1: [])
    with pytest.raises(ScanError, match=r"timestamps: not within 0\.5 s"):
        scanner(kafka, timeout=0.5).scan()


# -- the metrics -----------------------------------------------------------------------------------------


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


class Scripted:
    """A scanner that answers what a test tells it, or fails."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.closed = False

    def open(self) -> None:
        pass

    def scan(self) -> list[Any]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


def test_each_scan_sets_the_figures_by_group_and_a_group_gone_loses_its_series():
    good = assess("ml-good", {0: 4}, {0: 0}, {0: 4}, {})
    ignores = assess("ml-ignores", {}, {0: 0}, {0: 4}, {(0, 0): NOW - 7200_000})
    metrics = Metrics()
    exporter = RecipientsExporter(Scripted([[good, ignores], [good]]), metrics, RecordingLog(), 60, lambda: NOW / 1000)
    assert exporter.scan_once()
    assert value(metrics, "training_filter_recipients") == 2
    assert value(metrics, "training_filter_recipient_reads_revocations", group="ml-ignores") == 0
    assert value(metrics, "training_filter_recipient_reads_revocations", group="ml-good") == 1
    assert value(metrics, "training_filter_recipient_unacknowledged_revocations", group="ml-ignores") == 4
    assert value(metrics, "training_filter_recipient_oldest_unacknowledged_seconds", group="ml-ignores") == 7200
    assert value(metrics, "training_filter_recipient_oldest_unacknowledged_seconds", group="ml-good") == 0
    assert exporter.scan_once()
    assert value(metrics, "training_filter_recipients") == 1
    for name in ("reads_revocations", "unacknowledged_revocations", "oldest_unacknowledged_seconds"):
        assert value(metrics, f"training_filter_recipient_{name}", group="ml-ignores") is None
    assert value(metrics, "training_filter_recipient_reads_revocations", group="ml-good") == 1


def test_a_failed_scan_is_logged_and_counted_and_the_last_figures_stay():
    good = assess("ml-good", {0: 4}, {0: 0}, {0: 4}, {})
    metrics, log = Metrics(), RecordingLog()
    secret = "u-12345 wrote this"  # an unexpected exception's message is never logged: it could quote data
    scanner_ = Scripted([[good], ScanError("ListGroups: _TRANSPORT"), ValueError(secret)])
    exporter = RecipientsExporter(scanner_, metrics, log, 60)
    assert exporter.scan_once() and not exporter.scan_once() and not exporter.scan_once()
    assert value(metrics, "training_filter_recipient_scans_failed_total") == 2
    assert value(metrics, "training_filter_recipients") == 1
    assert value(metrics, "training_filter_recipient_reads_revocations", group="ml-good") == 1
    assert log.fields("recipients_scan_failed") == [{"error": "ListGroups: _TRANSPORT"}, {"error": "ValueError"}]
    assert secret not in repr(log.lines)


def test_the_thread_scans_at_start_then_every_interval_and_stops():
    good = assess("ml-good", {0: 4}, {0: 0}, {0: 4}, {})
    scanner_ = Scripted([[good]] * 100)
    exporter = RecipientsExporter(scanner_, Metrics(), RecordingLog(), 0.05)
    exporter.start()
    deadline = time.monotonic() + 5
    while exporter.scans < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    exporter.stop()
    assert exporter.scans >= 3 and not exporter.thread.is_alive() and scanner_.closed


def test_the_running_service_exports_the_recipients_and_a_failing_scan_never_stops_it(monkeypatch):
    kafka = make_kafka()
    kafka.append("revocations", b"v", b"k", partition=0, timestamp=int(time.time() * 1000) - 120_000)
    commit(kafka, "ml-good", {("training", 0): 0, ("revocations", 0): 1})
    commit(kafka, "ml-ignores", {("training", 0): 0})
    with InProcessService(kafka, settings(TF_RECIPIENTS_INTERVAL_SECONDS="5")) as svc:
        svc.wait(lambda: svc.metric("training_filter_recipients") == 2, what="the first scan")
        assert svc.metric("training_filter_recipient_reads_revocations", group="ml-good") == 1
        assert svc.metric("training_filter_recipient_reads_revocations", group="ml-ignores") == 0
        assert svc.metric("training_filter_recipient_unacknowledged_revocations", group="ml-ignores") == 1
        assert svc.metric("training_filter_recipient_oldest_unacknowledged_seconds", group="ml-ignores") >= 120
        assert svc.metric("training_filter_recipient_unacknowledged_revocations", group="ml-good") == 0

    def fails(self: FakeAdmin, **_: Any) -> Any:
        raise RuntimeError("the broker is gone")

    monkeypatch.setattr(FakeAdmin, "list_consumer_groups", fails)
    with InProcessService(make_kafka(), settings(TF_RECIPIENTS_INTERVAL_SECONDS="5")) as svc:
        svc.wait(lambda: svc.metric("training_filter_recipient_scans_failed_total") >= 1, what="a failed scan")
        svc.wait_subscribed()
        assert svc.thread.is_alive()
    assert svc.exit_code == 0


def test_no_scan_runs_with_an_interval_of_0():
    with InProcessService(make_kafka(), settings(TF_RECIPIENTS_INTERVAL_SECONDS="0")) as svc:
        svc.wait_subscribed()
        assert "recipients" not in [t.name for t in threading.enumerate()]


@pytest.mark.parametrize("interval", ["1", "4.9", "3601", "-1"])
def test_an_interval_between_0_and_5_or_beyond_an_hour_is_refused_naming_the_variable(interval):
    with pytest.raises(ConfigError, match="TF_RECIPIENTS_INTERVAL_SECONDS"):
        settings(TF_RECIPIENTS_INTERVAL_SECONDS=interval)


# -- the command -----------------------------------------------------------------------------------------


def run_command(kafka: FakeKafka, monkeypatch: pytest.MonkeyPatch, **options: Any) -> tuple[int, str, str]:
    for var in ("TF_TRAINING_TOPIC", "TF_REVOCATIONS_TOPIC"):
        monkeypatch.setenv(var, var.split("_")[1].lower())
    monkeypatch.setenv("TF_BOOTSTRAP_SERVERS", "fake:9092")
    args = Namespace(
        **{"json": False, "bound": float(BOUND_SECONDS), "timeout": 5.0, "bootstrap_servers": None, **options}
    )
    out, err = io.StringIO(), io.StringIO()
    code = main_recipients(args, out, err, clients=kafka.clients())
    return code, out.getvalue(), err.getvalue()


def test_the_command_prints_one_json_line_a_recipient_and_exits_0_when_all_acknowledged(monkeypatch):
    kafka = broker()
    commit(kafka, "ml-good", {("training", 0): 4, ("revocations", 0): 3, ("revocations", 1): 3})
    code, out, err = run_command(kafka, monkeypatch, json=True)
    assert (code, err) == (0, "")
    (line,) = [orjson.loads(text) for text in out.splitlines()]
    assert line["group"] == "ml-good" and line["reads_revocations"] and line["unacknowledged"] == 0
    assert line["partitions"] == [
        {"partition": p, "committed": 3, "end": 3, "unacknowledged": 0, "first_unacknowledged": None,
         "oldest_unacknowledged_at": None}
        for p in (0, 1)
    ]  # fmt: skip
    assert line["problems"] == []


def test_the_command_exits_1_naming_a_recipient_that_ignores_revocations_or_sits_on_one(monkeypatch):
    kafka = broker()
    commit(kafka, "ml-good", {("training", 0): 4, ("revocations", 0): 3, ("revocations", 1): 3})
    commit(kafka, "ml-ignores", {("training", 0): 4})
    commit(kafka, "ml-behind", {("training", 0): 4, ("revocations", 0): 1, ("revocations", 1): 3})
    commit(kafka, "ml-java", {("training", 0): 4})
    commit(kafka, "ml-java-retractions", {("revocations", 0): 3, ("revocations", 1): 3})
    code, out, _ = run_command(kafka, monkeypatch, json=True)
    lines = {line["group"]: line for line in map(orjson.loads, out.splitlines())}
    assert code == 1
    assert lines["ml-ignores"]["problems"][0].startswith("does not read the revocations topic")
    behind = lines["ml-behind"]
    assert behind["unacknowledged"] == 2 and behind["partitions"][0]["first_unacknowledged"] == 1
    assert behind["oldest_unacknowledged_at"] == dt.datetime.fromtimestamp(NOW / 1000 - 8, dt.UTC).isoformat(
        timespec="milliseconds"
    )
    assert len(behind["problems"]) == 1 and "longer than the bound of 3600 s" in behind["problems"][0]
    assert lines["ml-good"]["problems"] == [] and lines["ml-good"]["revocations_group"] == "ml-good"
    assert lines["ml-java"]["problems"] == [] and lines["ml-java"]["revocations_group"] == "ml-java-retractions"
    code, out, _ = run_command(kafka, monkeypatch, bound=3e7)  # the table, with a bound nobody passes
    assert code == 1  # ml-ignores still does not read the revocations topic
    rows = out.splitlines()
    assert rows[0].split("  ")[0] == "group"
    assert [row.split()[:2] for row in rows[1:5]] == [["ml-behind", "yes"], ["ml-good", "yes"], ["ml-ignores", "NO"],
                                                       ["ml-java", "yes"]]  # fmt: skip
    assert "yes (as ml-java-retractions)" in rows[4]
    assert "4 recipient(s) of training; revocations topic revocations; bound 3e+07 s: 1 fall(s) short" in out
    assert "  ml-ignores: does not read the revocations topic" in out


def test_the_command_exits_1_when_the_scan_fails_and_2_on_a_configuration_error(monkeypatch):
    kafka = broker()
    kafka.down = True
    code, out, err = run_command(kafka, monkeypatch)
    assert (code, out) == (1, "") and "the scan failed: ListGroups: _TRANSPORT" in err
    monkeypatch.setenv("TF_GROUP_ID", "two words")
    code, _, err = run_command(broker(), monkeypatch)
    assert code == 2 and "invalid configuration: TF_GROUP_ID='two words' is invalid" in err
    monkeypatch.delenv("TF_GROUP_ID")
    monkeypatch.setenv("TF_KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092")
    code, _, err = run_command(broker(), monkeypatch)
    assert code == 2 and "TF_KAFKA_BOOTSTRAP_SERVERS" in err
    monkeypatch.delenv("TF_KAFKA_BOOTSTRAP_SERVERS")
    code, _, err = run_command(broker(), monkeypatch, timeout=0.0)
    assert code == 2 and "--timeout" in err


def test_with_an_audit_key_each_scan_is_kept_signed_on_the_audit_topic():
    """The effectiveness report plots the lag over time from these (consumer/audit/recipients_record.py)."""
    from consumer.audit.receipts import RECIPIENTS, signed_by
    from consumer.audit.recipients_record import RecipientsRecorder
    from tests.fakes import FakeKafka
    from tests.service_fixture import CODEC

    kafka = FakeKafka()
    kafka.create_topic("audit", 2)
    key = b"a" * 32
    recorder = RecipientsRecorder(kafka.clients().producer({}), CODEC, key, "audit", replica="pod-1")
    good = assess("ml-good", {0: 4}, {0: 0}, {0: 4}, {})
    ignores = assess("ml-ignores", {}, {0: 0}, {0: 4}, {(0, 0): NOW - 7200_000})
    exporter = RecipientsExporter(
        Scripted([[good, ignores]]), Metrics(), RecordingLog(), 60, lambda: NOW / 1000, recorder=recorder
    )
    assert exporter.scan_once()
    exporter.stop()
    [msg] = kafka.records("audit")
    snapshot = CODEC.decode_own(msg.value(), RECIPIENTS)
    assert msg.key() == b"recipients/pod-1" and signed_by(CODEC, key, snapshot, RECIPIENTS)
    by_group = {r["group"]: r for r in snapshot["recipients"]}
    assert by_group["ml-ignores"] == {
        "group": "ml-ignores",
        "reads_revocations": False,
        "unacknowledged": 4,
        "oldest_unacknowledged_seconds": 7200.0,
    }
    assert by_group["ml-good"]["oldest_unacknowledged_seconds"] is None
