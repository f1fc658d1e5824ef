"""Runs the real service (`training-filter run` in a subprocess) against the test broker, with its
own topics, group and metrics port per test, and reads what it wrote."""

from __future__ import annotations

import hmac
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from consumer.devtools.local_kafka import free_port
from consumer.devtools.topics import ensure_topics, service_topics
from consumer.operations.settings import TopicNames

HMAC_KEY = b"k" * 16 + b"test-key-0123456"  # 32 bytes, test only
FAST_COMPACTION = {
    "min.cleanable.dirty.ratio": "0.01",
    "segment.ms": "100",
    "delete.retention.ms": "100",
    "min.compaction.lag.ms": "0",
}


def pseudonym(user_id: str, key: bytes = HMAC_KEY) -> str:
    return hmac.new(key, user_id.encode(), "sha256").hexdigest()


class Topics(TopicNames):
    """Topic names of one test, each with a unique suffix."""

    @classmethod
    def unique(
        cls,
        bootstrap: str,
        partitions: int = 4,
        compacting_optouts: bool = False,
        input_config: dict[str, str] | None = None,
        compacting_changes: bool = False,
    ) -> Topics:
        """`compacting_optouts` (the opt-out topic), `compacting_changes` (the content change topic): it
        compacts within seconds (tombstones included), on a broker whose cleaner looks often (the fault
        broker). `input_config`: for the input topics."""
        tag = uuid.uuid4().hex[:10]
        topics = cls(
            f"posts-{tag}",
            f"ai-{tag}",
            f"optouts-{tag}",
            f"training-{tag}",
            f"revocations-{tag}",
            f"dlq-{tag}",
            f"content-changes-{tag}",
            f"account-changes-{tag}",
            f"audit-{tag}",
        )
        specs = service_topics(topics, partitions=partitions)
        for spec in specs:
            if compacting_optouts and spec.name == topics.optouts:
                spec.config.update(FAST_COMPACTION)
            if compacting_changes and spec.name == topics.content_changes:
                spec.config.update(FAST_COMPACTION)
            if input_config and spec.name in (topics.posts, topics.ai):
                spec.config.update(input_config)
        ensure_topics(bootstrap, specs)
        return topics

    def env(self) -> dict[str, str]:
        return {
            "TF_POSTS_TOPIC": self.posts,
            "TF_AI_INTERACTIONS_TOPIC": self.ai,
            "TF_OPTOUTS_TOPIC": self.optouts,
            "TF_TRAINING_TOPIC": self.training,
            "TF_REVOCATIONS_TOPIC": self.revocations,
            "TF_DLQ_TOPIC": self.dlq,
            "TF_CONTENT_CHANGES_TOPIC": self.content_changes,
            "TF_ACCOUNT_CHANGES_TOPIC": self.account_changes,
            "TF_AUDIT_TOPIC": self.audit,
        }

    def input_topic(self, source: str) -> str:
        return self.posts if source == "post" else self.ai


# Every service process a test started: the session's fixture kills what a failed test left running
# (a scenario that raises midway never reaches its own stop()).
STARTED: list[subprocess.Popen[bytes]] = []


def kill_leftovers() -> int:
    killed = 0
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)
            killed += 1
    return killed


@dataclass
class ServiceProcess:
    bootstrap: str
    topics: Topics
    workdir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    group: str = field(default_factory=lambda: f"tf-{uuid.uuid4().hex[:8]}")
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    runs: int = 0

    def start(self) -> ServiceProcess:
        self.port = free_port()
        self.runs += 1
        env = {
            **os.environ,
            **self.topics.env(),
            "TF_BOOTSTRAP_SERVERS": self.bootstrap,
            "TF_GROUP_ID": self.group,
            "TF_HMAC_KEY": HMAC_KEY.decode(),
            "TF_METRICS_HOST": "127.0.0.1",
            "TF_METRICS_PORT": str(self.port),
            "TF_OPTOUT_CAPACITY": "200000",
            "TF_LOG_LEVEL": "debug",
            "TF_LOG_SUMMARY_SECONDS": "2",
            "TF_STATISTICS_INTERVAL_MS": "1000",
            **self.env_overrides,
        }
        self.log_path = self.workdir / f"service-{self.group}-{self.runs}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "consumer.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        STARTED.append(self.process)
        return self

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"service exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"service not ready after {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        status, body = self.get("/metrics")
        assert status == 200
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return out

    def metric_sum(self, name: str, **labels: str) -> float:
        return sum(v for lbl, v in self.metrics().get(name, []) if all(lbl.get(k) == x for k, x in labels.items()))

    def decisions(self) -> dict[tuple[str, str], int]:
        return {
            (lbl["source"], lbl["decision"]): int(v)
            for lbl, v in self.metrics().get("training_filter_records_total", [])
            if v
        }

    def wait_processed(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        done = 0.0
        while time.monotonic() < deadline:
            done = self.metric_sum("training_filter_records_total")
            if done >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"only {done} of {count} records processed after {timeout}s:\n{self.log_tail()}")

    def wait_settled(self, timeout: float = 60.0) -> None:
        """Until every eligible and dead-lettered record is acknowledged (counted as produced)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            d = self.decisions()
            eligible = sum(v for (_, reason), v in d.items() if reason == "eligible")
            malformed = sum(v for (_, reason), v in d.items() if reason == "malformed")
            produced = self.metric_sum("training_filter_produced_records_total", output="training")
            dead = self.metric_sum("training_filter_produced_records_total", output="dlq")
            if produced >= eligible and dead >= malformed:
                return
            time.sleep(0.2)
        raise AssertionError("outputs were not all acknowledged")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            try:
                lines.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                lines.append({"unparsed": raw.decode(errors="replace")})
        return lines

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def produce(bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes | None]], **config: Any) -> int:
    """Produce (topic, key, value) and wait until every one is acknowledged; returns the count."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 10, "enable.idempotence": True, "log_level": 3, **config}
    )
    errors: list[str] = []
    count = 0
    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=lambda e, m: errors.append(e.name()) if e else None)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    assert producer.flush(60) == 0
    assert not errors, errors
    return count


def read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every committed record of the topic, up to its end offsets at the time of the call."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "log_level": 3,
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while set(ends) - done and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == -191 and msg.offset() >= ends.get(msg.partition(), 0):  # _PARTITION_EOF
                    done.add(msg.partition())
                continue
            out.append(msg)
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                done.add(msg.partition())
        assert not (set(ends) - done), f"could not read {topic} to its end"
        return out
    finally:
        consumer.close()


def wait_for_progress(
    errors: Path, process: subprocess.Popen[bytes], command: str, at_least: int, timeout: float = 90
) -> None:
    """Until an operator command's progress line on standard error (`<command>: N of M records, ...`,
    consumer/commands/progress.py) says it has done `at_least` records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, errors.read_text(errors="replace")[-3000:]
        for line in errors.read_text(errors="replace").splitlines():
            head, _, rest = line.partition(": ")
            if head == command and " of " in rest and int(rest.split(" of ")[0].replace(",", "")) >= at_least:
                return
        time.sleep(0.05)
    raise AssertionError(f"{command} did not get to {at_least}: {errors.read_text(errors='replace')[-3000:]}")
