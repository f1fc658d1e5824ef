"""Restart with SIGTERM mid-stream (nothing lost, snapshot used), poison pills, health, bad config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from consumer.devtools.generator import StreamGenerator
from consumer.wire.codec import POST, TRAINING_RECORD, Codec
from tests.harness import produce, read_all

pytestmark = pytest.mark.integration
CODEC = Codec()


def test_sigterm_mid_stream_then_restart_loses_nothing_and_uses_the_snapshot(kafka, topics, new_service, tmp_path):
    generator = StreamGenerator(seed=21, users_per_pool=300, posts_topic=topics.posts, ai_topic=topics.ai)
    produce(kafka.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    stream = list(generator.stream(8000))
    snapshot = tmp_path / "optouts.snapshot"
    service = new_service(TF_OPTOUT_SNAPSHOT_PATH=str(snapshot), TF_BATCH_SIZE="200", TF_SHUTDOWN_GRACE_SECONDS="15")
    service.start().wait_ready()
    produce(kafka.bootstrap, ((g.topic, g.key, g.value) for g in stream))
    deadline = time.monotonic() + 60
    while service.metric_sum("training_filter_records_total") < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    assert service.stop() == 0
    assert time.monotonic() - started < 15
    first_run = service.log_lines()
    assert any(line.get("event") == "optout_snapshot_saved" for line in first_run)
    assert snapshot.is_file()

    service.start().wait_ready()
    service.wait_settled()
    deadline = time.monotonic() + 60
    eligible = {g.record_id for g in stream if g.expected == "eligible"}
    ids: set[str] = set()
    while time.monotonic() < deadline:
        ids = {
            CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"] for m in read_all(kafka.bootstrap, topics.training)
        }
        if eligible <= ids:
            break
        time.sleep(0.5)
    assert eligible - ids == set(), "eligible records are missing after the restart"
    assert ids - eligible == set(), "an ineligible record reached the training topic"
    second_run = service.log_lines()
    loaded = [line for line in second_run if line.get("event") == "optout_snapshot_loaded"]
    assert loaded and loaded[0]["entries"] == len(generator.optouts())
    # The feed resumed from the snapshot's offsets: it read no opt-out again.
    assert service.metric_sum("training_filter_optout_feed_records_total") == 0
    assert service.metric_sum("training_filter_optout_filter_entries") == len(generator.optouts())


def test_poison_pills_go_to_the_dlq_with_their_reason_and_the_loop_goes_on(kafka, topics, new_service):
    generator = StreamGenerator(seed=22, users_per_pool=20, posts_topic=topics.posts, ai_topic=topics.ai)
    good = generator.record("eligible", "post")
    pills = {
        b"\x05" + good.value[1:]: "bad_framing",
        b"\x00\x00": "bad_framing",
        good.value[:20]: "bad_body",
        good.value + b"\x00\x00": "bad_body",
        b"\x00\x00\x00\x00\x63" + good.value[5:]: "unknown_schema",
        CODEC.encode(POST, {**CODEC.decode(good.value, POST)[1], "author_birth_date": None})[:5]
        + b"\xff" * 40: "bad_body",
    }
    records = []
    for i, (value, _) in enumerate(pills.items()):
        records.append((topics.posts, f"k{i}".encode(), value))
        records.append((topics.posts, good.key, generator.record("eligible", "post").value))
    records.append((topics.posts, b"null-value", None))
    service = new_service().start()
    service.wait_ready()
    produce(kafka.bootstrap, records)
    service.wait_processed(len(records))
    service.wait_settled()
    dead = read_all(kafka.bootstrap, topics.dlq)
    assert len(dead) == len(pills) + 1
    by_key = {m.key(): m for m in dead}
    for i, (value, cause) in enumerate(pills.items()):
        msg = by_key[f"k{i}".encode()]
        headers = dict(msg.headers())
        assert msg.value() == value, "the DLQ keeps the original bytes"
        assert headers["tf.reason"] == b"malformed"
        assert headers["tf.cause"] == cause.encode()
        assert headers["tf.source.topic"] == topics.posts.encode()
        assert int(headers["tf.source.offset"]) >= 0 and int(headers["tf.source.partition"]) >= 0
    assert dict(by_key[b"null-value"].headers())["tf.cause"] == b"bad_framing"
    assert len(read_all(kafka.bootstrap, topics.training)) == len(pills)
    assert service.get("/healthz")[0] == 200
    assert service.decisions()[("POST", "malformed")] == len(pills) + 1


def test_probes_and_metrics_endpoint(kafka, topics, new_service):
    service = new_service().start()
    service.wait_ready()
    status, body = service.get("/healthz")
    assert status == 200 and b'"ok"' in body
    status, body = service.get("/readyz")
    assert status == 200 and b"optout_feed_seconds_behind" in body
    assert service.get("/nope")[0] == 404
    names = set(service.metrics())
    for name in (
        "training_filter_records_total",
        "training_filter_batch_duration_seconds_bucket",
        "training_filter_produced_records_total",
        "training_filter_produce_errors_total",
        "training_filter_dlq_records_total",
        "training_filter_rebalances_total",
        "training_filter_optout_filter_entries",
        "training_filter_optout_filter_false_positive_rate",
        "training_filter_optout_feed_lag_seconds",
        "training_filter_last_processed_timestamp_seconds",
        "training_filter_build_info",
        "process_resident_memory_bytes",
    ):
        assert name in names or name.removesuffix("_total") + "_total" in names, name
    lag = service.metrics()["training_filter_optout_feed_lag_seconds"][0][1]
    assert 0 <= lag < 5


def run_with_env(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", "run"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "env,message",
    [
        ({}, "TF_BOOTSTRAP_SERVERS is required"),
        ({"TF_BOOTSTRAP_SERVERS": "x:1"}, "no pseudonymisation key"),
        ({"TF_BOOTSTRAP_SERVERS": "x:1", "TF_HMAC_KEY": "short"}, "at least 32"),
        ({"TF_BOOTSTRAP_SERVERS": "x:1", "TF_HMAC_KEY_FILE": "/nonexistent/key"}, "cannot read it"),
        ({"TF_BOOTSTRAP_SERVERS": "x:1", "TF_HMAC_KEY": "k" * 40, "TF_BATCH_SIZE": "0"}, "TF_BATCH_SIZE"),
        ({"TF_BOOTSTRAP_SERVERS": "x:1", "TF_HMAC_KEY": "k" * 40, "TF_OPTOUT_FP_RATE": "2"}, "TF_OPTOUT_FP_RATE"),
        (
            {"TF_BOOTSTRAP_SERVERS": "x:1", "TF_HMAC_KEY": "k" * 40, "TF_PROCESSING_GUARANTEE": "maybe"},
            "at-least-once, exactly-once",
        ),
        (
            {"TF_BOOTSTRAP_SERVERS": "x:1", "TF_HMAC_KEY": "k" * 40, "TF_POLICY_FILE": "/nonexistent.toml"},
            "cannot read policy file",
        ),
        (
            {
                "TF_BOOTSTRAP_SERVERS": "x:1",
                "TF_HMAC_KEY": "k" * 40,
                "TF_CONSUMER_KAFKA_ENABLE_AUTO_OFFSET_STORE": "true",
            },
            "cannot be set",
        ),
    ],
)
def test_configuration_errors_stop_start_up_with_a_message(env, message):
    result = run_with_env(env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "k" * 40 not in result.stderr, "the key must never be echoed"


def test_run_help_lists_every_setting():
    from consumer.operations.settings import SETTINGS

    result = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "run", "--help"], capture_output=True, text=True, check=True
    )
    for setting in SETTINGS:
        assert f"TF_{setting.name}" in result.stdout
    assert "TF_KAFKA_<PROPERTY>" in result.stdout


def test_sigterm_while_start_up_waits_for_the_broker_exits_at_once(tmp_path):
    """Start-up waits up to 30 s for the opt-out topic's metadata; a stop request must not."""
    from consumer.devtools.local_kafka import free_port

    env = {
        **os.environ,
        "TF_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "TF_HMAC_KEY": "k" * 40,
        "TF_METRICS_HOST": "127.0.0.1",
        "TF_METRICS_PORT": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    time.sleep(3)  # inside the metadata wait
    assert process.poll() is None
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(15)
    took = time.monotonic() - started
    assert code == 0, process.stdout.read().decode() if process.stdout else ""
    assert took < 5, f"took {took:.1f} s to stop"
