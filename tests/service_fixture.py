"""The whole service, in-process, on tests/fakes.py's in-memory Kafka: `InProcessService` runs
`Service.run()` on a thread of its own, with the real parts (feeds, loop, delivery, processor,
emitter, snapshots), and a test feeds it records and reads what it wrote."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from consumer.devtools.generator import Generated, StreamGenerator
from consumer.operations.settings import Settings, load_settings
from consumer.service.service import Service
from consumer.wire.codec import REVOCATION, TRAINING_RECORD, Codec
from tests.fakes import FakeKafka

CODEC = Codec()
HMAC_KEY = "k" * 16 + "test-key-0123456"
TOPICS = {
    "TF_POSTS_TOPIC": ("posts", 4),
    "TF_AI_INTERACTIONS_TOPIC": ("ai", 2),
    "TF_OPTOUTS_TOPIC": ("optouts", 2),
    "TF_TRAINING_TOPIC": ("training", 2),
    "TF_REVOCATIONS_TOPIC": ("revocations", 2),
    "TF_DLQ_TOPIC": ("dlq", 1),
    "TF_CONTENT_CHANGES_TOPIC": ("content-changes", 2),
    "TF_ACCOUNT_CHANGES_TOPIC": ("account-changes", 2),
    "TF_AUDIT_TOPIC": ("audit", 2),  # receipts only with an audit key (AUDIT_KEY)
}
AUDIT_KEY = "a" * 16 + "audit-key-012345"


class RecordingLog:
    """A structlog-like logger that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __getattr__(self, level: str) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            with self.lock:
                self.lines.append((level, event, fields))

        return log

    def events(self) -> list[str]:
        with self.lock:
            return [event for _, event, _ in self.lines]

    def fields(self, event: str) -> list[dict[str, Any]]:
        with self.lock:
            return [fields for _, e, fields in self.lines if e == event]


def make_kafka(**partitions: int) -> FakeKafka:
    kafka = FakeKafka()
    for _, (name, count) in TOPICS.items():
        kafka.create_topic(name, partitions.get(name, count))
    return kafka


def settings(**env: str) -> Settings:
    base = {var: name for var, (name, _) in TOPICS.items()}
    return load_settings(
        {
            **base,
            "TF_BOOTSTRAP_SERVERS": "fake-kafka:9092",
            "TF_HMAC_KEY": HMAC_KEY,
            "TF_METRICS_HOST": "127.0.0.1",
            "TF_METRICS_PORT": "0",
            "TF_OPTOUT_CAPACITY": "100000",
            "TF_BATCH_TIMEOUT_MS": "20",
            "TF_BATCH_MIN_WAIT_MS": "1",
            "TF_LOG_SUMMARY_SECONDS": "1",
            **env,
        }
    )


def stream(count: int, seed: int = 5) -> tuple[StreamGenerator, list[Generated]]:
    generator = StreamGenerator(seed=seed, users_per_pool=50, posts_topic="posts", ai_topic="ai")
    return generator, list(generator.stream(count))


def feed(kafka: FakeKafka, records: list[Generated]) -> None:
    for g in records:
        kafka.append(g.topic, g.value, g.key)


def emitted_ids(kafka: FakeKafka, topic: str = "training") -> list[str]:
    return [CODEC.decode_own(m.value(), TRAINING_RECORD)["record_id"] for m in kafka.records(topic)]


def revoked(kafka: FakeKafka) -> list[str]:
    return [CODEC.decode_own(m.value(), REVOCATION)["author_pseudonym"] for m in kafka.records("revocations")]


class InProcessService:
    def __init__(self, kafka: FakeKafka, s: Settings) -> None:
        self.kafka = kafka
        self.clients = kafka.clients()
        self.log = RecordingLog()
        self.service = Service(s, clients=self.clients, log=self.log)
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, name="service", daemon=True)

    def _run(self) -> None:
        self.exit_code = self.service.run(install_signals=False)

    def __enter__(self) -> InProcessService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 30.0) -> int | None:
        self.service.state.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the service did not stop"
        return self.exit_code

    def wait(self, condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.thread.is_alive():
                raise AssertionError(f"the service exited ({self.exit_code}) before {what}: {self.log.events()[-12:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what}; last events {self.log.events()[-12:]}")
            time.sleep(0.01)

    def wait_subscribed(self) -> None:
        self.wait(lambda: self.service.state.subscribed and bool(self.service.state.assigned), what="subscribed")

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for family in self.service.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total
