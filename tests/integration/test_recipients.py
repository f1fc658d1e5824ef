"""The record of recipients (issue 23, GDPR Art. 19) on the real broker: two recipient groups read the
training topic, one also reads the revocations topic and commits there, the other does not. The
service's metrics, the `training-filter audit recipients` command and a real Prometheus evaluating the
shipped alert rules (their `for:` shortened) show exactly that, and once the good recipient catches up
its count goes to 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from consumer.wire.codec import REVOCATION, Codec
from tests.deploy.prometheus_server import PrometheusServer
from tests.faults.alert_scenarios import short_rules
from tests.harness import pseudonym, read_all
from tests.integration.test_service_optouts import optout, post

pytestmark = pytest.mark.integration
CODEC = Codec()
SITS, IGNORES = "TrainingFilterRecipientSitsOnRevocations", "TrainingFilterRecipientIgnoresRevocations"
TWO_HOURS_MS = 7_200_000


class Recipient:
    """A reader of the training topic, as docs/recipes/ have it: a committed group, read committed."""

    def __init__(self, bootstrap: str, group: str, topics: list[str]) -> None:
        self.group = group
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "log_level": 3,
            }
        )
        self.consumer.subscribe(topics)
        self.read: dict[str, int] = {}

    def read_and_commit(self, wanted: dict[str, int], timeout: float = 60.0) -> None:
        """Reads until it has `wanted` records of each topic in all, then commits synchronously."""
        deadline = time.monotonic() + timeout
        while any(self.read.get(t, 0) < n for t, n in wanted.items()):
            assert time.monotonic() < deadline, f"{self.group} read {self.read} of {wanted}"
            msg = self.consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                self.read[msg.topic()] = self.read.get(msg.topic(), 0) + 1
        self.consumer.commit(asynchronous=False)

    def close(self) -> None:
        self.consumer.close()


def produce_all(bootstrap: str, records: list[tuple[Any, ...]]) -> None:
    """(topic, key, value, timestamp or None[, partition]) each, acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 3})
    errors: list[Any] = []
    for topic, key, value, timestamp, *partition in records:
        extra: dict[str, Any] = {"timestamp": timestamp} if timestamp is not None else {}
        extra.update({"partition": partition[0]} if partition else {})
        producer.produce(topic, value, key, on_delivery=lambda e, m: errors.append(e) if e else None, **extra)
    assert producer.flush(30) == 0 and not errors, errors


def audit(kafka: Any, topics: Any, group: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    env = {**os.environ, **topics.env(), "TF_BOOTSTRAP_SERVERS": kafka.bootstrap, "TF_GROUP_ID": group}
    done = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "audit", "recipients", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = {line["group"]: line for line in map(orjson.loads, done.stdout.splitlines())}
    return done.returncode, lines, done.stderr


def firing_alerts_by_group(prom: PrometheusServer) -> set[tuple[str, str]]:
    alerts = prom.get("/api/v1/alerts")["data"]["alerts"]
    return {(a["labels"]["alertname"], a["labels"].get("group", "")) for a in alerts if a["state"] == "firing"}


def wait_for(condition: Any, what: str, service: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}\n{service.log_tail()}"
        time.sleep(0.5)


def test_recipients_their_acknowledgements_the_command_the_metrics_and_the_alerts(kafka, topics, new_service, tmp_path):
    tag = uuid.uuid4().hex[:8]
    good_group, ignoring_group = f"ml-good-{tag}", f"ml-ignores-{tag}"
    service = new_service(TF_RECIPIENTS_INTERVAL_SECONDS="5").start()
    service.wait_ready()
    produce_all(kafka.bootstrap, [(topics.posts, b"alice", post(f"p-{i}", "alice"), None) for i in range(10)])
    service.wait_processed(10)
    service.wait_settled()
    produce_all(kafka.bootstrap, [(topics.optouts, b"alice", optout("alice"), None)])
    wait_for(lambda: len(read_all(kafka.bootstrap, topics.revocations)) == 1, "alice's revocation", service)

    good = Recipient(kafka.bootstrap, good_group, [topics.training, topics.revocations])
    ignoring = Recipient(kafka.bootstrap, ignoring_group, [topics.training])
    try:
        good.read_and_commit({topics.training: 10, topics.revocations: 1})
        ignoring.read_and_commit({topics.training: 10})
        # Two revocations the good recipient has not read yet: bob's, by the service, and one written
        # two hours ago (its timestamp says so), past the documented bound of an hour.
        old = {"author_pseudonym": pseudonym("carol"), "opted_out_at": int(time.time() * 1000) - TWO_HOURS_MS}
        old |= {"scope": "AUTHOR", "reason": "opted_out", "record_id": None, "created_before": None, "lifted": False}
        stamp = int(time.time() * 1000) - TWO_HOURS_MS
        # The revocations topic has one partition: carol's follows alice's, so it is the oldest the
        # good recipient has not acknowledged, while the other owes everything from alice's on.
        produce_all(
            kafka.bootstrap,
            [(topics.revocations, pseudonym("carol").encode(), CODEC.encode(REVOCATION, old), stamp)],
        )
        produce_all(kafka.bootstrap, [(topics.optouts, b"bob", optout("bob"), None)])
        wait_for(lambda: len(read_all(kafka.bootstrap, topics.revocations)) == 3, "bob's revocation", service)

        code, lines, err = audit(kafka, topics, service.group)
        assert code == 1, err
        assert sorted(lines) == [good_group, ignoring_group]  # the service's own groups are no recipients
        assert lines[good_group]["reads_revocations"] and lines[good_group]["unacknowledged"] == 2
        assert lines[good_group]["oldest_unacknowledged_seconds"] >= TWO_HOURS_MS / 1000
        assert not lines[ignoring_group]["reads_revocations"] and lines[ignoring_group]["unacknowledged"] == 3
        assert lines[ignoring_group]["oldest_unacknowledged_seconds"] < 600  # alice's, at the log start
        assert [p[:21] for p in lines[ignoring_group]["problems"]] == ["does not read the rev"]

        def figure(name: str, group: str) -> float | None:
            found = [v for labels, v in service.metrics().get(name, []) if labels.get("group") == group]
            return found[0] if found else None

        unacknowledged = "training_filter_recipient_unacknowledged_revocations"
        wait_for(lambda: figure(unacknowledged, good_group) == 2, "the service's scan of bob's revocation", service)
        assert figure(unacknowledged, ignoring_group) == 3
        assert figure("training_filter_recipient_reads_revocations", good_group) == 1
        assert figure("training_filter_recipient_reads_revocations", ignoring_group) == 0
        oldest = figure("training_filter_recipient_oldest_unacknowledged_seconds", good_group)
        assert oldest is not None and oldest >= TWO_HOURS_MS / 1000
        assert service.metric_sum("training_filter_recipients") == 2

        with PrometheusServer(
            rule_files=[short_rules(tmp_path)],
            targets=[f"127.0.0.1:{service.port}"],
            target_labels={"namespace": "training-filter"},
        ) as prom:
            wanted = {(SITS, good_group), (IGNORES, ignoring_group)}
            wait_for(lambda: wanted <= firing_alerts_by_group(prom), "the recipients' alerts", service)
            time.sleep(3)  # past the shortened `for:` of anything pending
            assert {(name, g) for name, g in firing_alerts_by_group(prom) if name in (SITS, IGNORES)} == wanted

        good.read_and_commit({topics.training: 10, topics.revocations: 3})
        wait_for(lambda: figure(unacknowledged, good_group) == 0, "the good recipient's count at 0", service)
        assert figure("training_filter_recipient_oldest_unacknowledged_seconds", good_group) == 0
        code, lines, _ = audit(kafka, topics, service.group)
        assert code == 1  # the other recipient still ignores the revocations
        assert lines[good_group]["unacknowledged"] == 0 and lines[good_group]["problems"] == []
        assert lines[ignoring_group]["unacknowledged"] == 3
    finally:
        good.close()
        ignoring.close()
    assert service.stop() == 0
    assert not [line for line in service.log_lines() if line.get("event") == "recipients_scan_failed"]


def test_the_command_exits_0_when_every_recipient_has_acknowledged_everything(kafka, topics, new_service):
    service = new_service(TF_RECIPIENTS_INTERVAL_SECONDS="0").start()
    service.wait_ready()
    produce_all(kafka.bootstrap, [(topics.posts, b"dora", post(f"d-{i}", "dora"), None) for i in range(3)])
    produce_all(kafka.bootstrap, [(topics.optouts, b"erin", optout("erin"), None)])
    service.wait_processed(3)
    service.wait_settled()
    wait_for(lambda: len(read_all(kafka.bootstrap, topics.revocations)) == 1, "erin's revocation", service)
    group = f"ml-keeps-up-{uuid.uuid4().hex[:8]}"
    recipient = Recipient(kafka.bootstrap, group, [topics.training, topics.revocations])
    try:
        recipient.read_and_commit({topics.training: 3, topics.revocations: 1})
    finally:
        recipient.close()
    code, lines, err = audit(kafka, topics, service.group)
    assert (code, list(lines)) == (0, [group]), err
    assert lines[group]["unacknowledged"] == 0 and lines[group]["reads_revocations"]
    assert "training_filter_recipient_reads_revocations" not in {
        name for name, samples in service.metrics().items() if samples
    }  # no scans with an interval of 0
    assert service.stop() == 0
