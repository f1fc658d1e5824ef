"""`training-filter demo` (`make demo`): the whole pipeline on a local Kafka, start to finish."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from consumer.commands.jsonl import dumps
from consumer.datapath.produce import produce_when_room
from consumer.devtools.generator import StreamGenerator
from consumer.devtools.local_kafka import LocalKafka, LocalKafkaError, free_port
from consumer.devtools.topics import ensure_topics, service_topics
from consumer.wire.codec import TRAINING_RECORD, Codec

REASON_ORDER = ["eligible", "malformed", "not_public", "region", "unknown_age", "under_age", "opted_out"]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def decisions(port: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for (name, labels), value in scrape(port).items():
        if name == "training_filter_records_total":
            counts[dict(labels)["decision"]] += int(value)
    return counts


def read_one(bootstrap: str, topic: str) -> dict[str, Any] | None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "demo-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 4,
        }
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                record = Codec().decode(msg.value(), TRAINING_RECORD)[1]
                if isinstance(record["text"], str) and len(record["text"]) > 80:
                    record["text"] = record["text"][:80] + "..."
                return record
        return None
    finally:
        consumer.close()


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the service did not become ready")


def run_demo(records: int = 20_000, keep_running: bool = False) -> int:
    print("== starting a local Kafka broker (Apache Kafka jars from Maven Central, KRaft, 127.0.0.1)")
    try:
        broker = LocalKafka().start()
    except LocalKafkaError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="tf-demo-"))
    service: subprocess.Popen[bytes] | None = None
    try:
        print(f"   broker at {broker.bootstrap}; log {broker.log_path}")
        ensure_topics(broker.bootstrap, service_topics())
        generator = StreamGenerator(seed=2026)
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap, "linger.ms": 20, "enable.idempotence": True, "log_level": 3}
        )  # errors only: the broker's first seconds are noisy
        _publish_optouts(producer, generator)
        service, port, log_path = _start_service(broker.bootstrap, work)
        expected = _produce_stream(producer, generator, records)
        counted, produced, dead = _wait_filtered(port, records)
        ok = _report(broker.bootstrap, port, expected, counted, produced, dead, keep_running)
        if keep_running:
            print("running until Ctrl-C ...")
            try:
                while service.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        producer.flush(10)
        del producer
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"service log kept in {log_path}")
        return 0 if ok else 1
    finally:
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()
        broker.cleanup()
        print("== stopped the service and the broker")


def _publish_optouts(producer: Producer, generator: StreamGenerator) -> None:
    optouts = generator.optouts()
    for key, value in optouts:
        producer.produce("privacy.optouts.v1", value, key)
    producer.flush(30)
    print(f"== {len(optouts)} opt-outs published to privacy.optouts.v1")


def _start_service(bootstrap: str, work: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`training-filter run` in a subprocess, with a fresh key and a snapshot in `work`; once ready."""
    port = free_port()
    key_file = work / "hmac.key"
    key_file.write_text(secrets.token_hex(32))  # text: a key file's trailing newline is not the key
    audit_key = work / "audit.key"  # the demo writes decision receipts too (docs/audit.md)
    audit_key.write_text(secrets.token_hex(32))
    env = {
        **os.environ,
        "TF_BOOTSTRAP_SERVERS": bootstrap,
        "TF_HMAC_KEY_FILE": str(key_file),
        "TF_AUDIT_KEY_FILE": str(audit_key),
        "TF_METRICS_HOST": "127.0.0.1",
        "TF_METRICS_PORT": str(port),
        "TF_OPTOUT_CAPACITY": "1000000",
        "TF_OPTOUT_SNAPSHOT_PATH": str(work / "optouts.snapshot"),
        "TF_LOG_SUMMARY_SECONDS": "5",
    }
    log_path = work / "service.log"
    print(f"== starting training-filter (metrics http://127.0.0.1:{port}/metrics, log {log_path})")
    with log_path.open("wb") as log:
        service = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    wait_ready(port, service, timeout=60)
    return service, port, log_path


def _produce_stream(producer: Producer, generator: StreamGenerator, records: int) -> Counter[str]:
    """The generated stream published; what each record was built for, counted."""
    expected: Counter[str] = Counter()
    for generated in tqdm(generator.stream(records), total=records, desc="producing", unit="rec", ncols=80):
        expected[generated.expected] += 1
        produce_when_room(
            producer, lambda: producer.poll(0.1), generated.topic, generated.value, generated.key, _ignore_report
        )
        producer.poll(0)
    producer.flush(60)
    return expected


def _ignore_report(err: Any, msg: Any) -> None:
    """The demo counts what the service decided, not its own deliveries (flush() waits for them)."""


def _wait_filtered(port: int, records: int) -> tuple[Counter[str], int, int]:
    """Until every record is decided and every output acknowledged (bounded): (decisions, training
    records produced, dead letters produced)."""
    deadline = time.monotonic() + 120
    with tqdm(total=records, desc="filtered ", unit="rec", ncols=80) as bar:
        while time.monotonic() < deadline:
            done = sum(decisions(port).values())
            bar.update(done - bar.n)
            if done >= records:
                break
            time.sleep(0.3)
    counted = decisions(port)
    produced = dead = 0
    while time.monotonic() < deadline:  # until the broker acknowledged every output
        metrics = scrape(port)
        produced = int(metrics.get(("training_filter_produced_records_total", (("output", "training"),)), 0))
        dead = int(metrics.get(("training_filter_produced_records_total", (("output", "dlq"),)), 0))
        if produced >= counted["eligible"] and dead >= counted["malformed"]:
            break
        time.sleep(0.2)
    return counted, produced, dead


def _report(
    bootstrap: str,
    port: int,
    expected: Counter[str],
    counted: Counter[str],
    produced: int,
    dead: int,
    keep_running: bool,
) -> bool:
    """The decisions against what the stream was built for; True when they match."""
    print()
    print(f"{'decision':<14}{'generated':>11}{'counted':>10}")
    for reason in REASON_ORDER:
        print(f"{reason:<14}{expected[reason]:>11}{counted[reason]:>10}")
    print(f"{'total':<14}{sum(expected.values()):>11}{sum(counted.values()):>10}")
    print(f"\ntraining.eligible.v1 received {produced} records; training-filter.dlq.v1 {dead}.")
    sample = read_one(bootstrap, "training.eligible.v1")
    if sample is not None:
        print("one of them, as ML teams read it:")
        print("  " + dumps(sample).decode()[:600])
    receipts = int(scrape(port).get(("training_filter_audit_receipts_total", ()), 0))
    print(f"training-filter.audit.v1 holds {receipts} signed decision receipts (docs/audit.md).")
    print(f"metrics: http://127.0.0.1:{port}/metrics  (readiness /readyz, liveness /healthz)")
    if keep_running:  # otherwise the broker is gone when this command returns
        print(
            f"look at the output: training-filter tail --bootstrap-servers {bootstrap} "
            "--topic training.eligible.v1 --max 3"
        )
    ok = counted == expected
    print("decisions match the generated stream" if ok else "decisions DIFFER from the generated stream")
    return ok
