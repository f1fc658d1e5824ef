"""`training-filter run` against the real broker: a bad setting exits 2 with one line naming the
variable, before any connection (no record written, no group joined); good settings become ready and
exit 0 on SIGTERM. The property version draws the settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from consumer.devtools.local_kafka import free_port
from rules.policy import default_policy_path
from tests.harness import HMAC_KEY, STARTED, Topics
from tests.settings_strategies import NUMERIC, changes, names_a_variable, valid_changes

pytestmark = pytest.mark.integration
# Not the metrics port (the test probes it) nor the capacities (a valid 10^9 would allocate gigabytes
# on a shared machine; 1e14 is drawn on its own).
SUBPROCESS_NUMERIC = [s for s in NUMERIC if s.name not in ("METRICS_PORT", "OPTOUT_CAPACITY", "CONSENT_CAPACITY")]
OPT_IN_POLICY = default_policy_path().read_text().replace('version = "', 'consent_model = "opt_in"\nversion = "in-', 1)


def service_env(bootstrap: str, topics: Topics, **overrides: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    return {
        **clean,
        **topics.env(),
        "TF_BOOTSTRAP_SERVERS": bootstrap,
        "TF_GROUP_ID": f"tf-{uuid.uuid4().hex[:8]}",
        "TF_HMAC_KEY": HMAC_KEY.decode(),
        "TF_METRICS_HOST": "127.0.0.1",
        "TF_METRICS_PORT": str(free_port()),
        "TF_OPTOUT_CAPACITY": "200000",
        "TF_LOG_LEVEL": "info",
        **overrides,
    }


def end_offsets(bootstrap: str, names: list[str]) -> dict[tuple[str, int], int]:
    """Each partition's end offset (retried while a new topic's leader is being elected)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tf-offsets-reader", "log_level": 3})
    try:
        out = {}
        for name in names:
            for p in consumer.list_topics(name, timeout=10).topics[name].partitions:
                out[(name, p)] = _end_offset(consumer, TopicPartition(name, p))
        return out
    finally:
        consumer.close()


def _end_offset(consumer: Consumer, partition: TopicPartition) -> int:
    deadline = time.monotonic() + 20
    while True:
        try:
            return int(consumer.get_watermark_offsets(partition, timeout=10, cached=False)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run(env: dict[str, str], log: Path, ready_timeout: float = 60) -> tuple[int, str, bool]:
    """Start the service; (exit code, stderr, became ready). A service that becomes ready is stopped with SIGTERM."""
    with log.open("wb") as out, (log.with_suffix(".err")).open("wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "consumer.cli", "run"], env=env, stdout=out, stderr=err)
    STARTED.append(process)
    ready = False
    deadline = time.monotonic() + ready_timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{env['TF_METRICS_PORT']}/readyz"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        ready = True
                        break
            except OSError:
                pass
            time.sleep(0.2)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(40)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return code, log.with_suffix(".err").read_text(errors="replace"), ready


def assert_refused(code: int, stderr: str, var: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, f"exit {code}, expected 2:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one line:\n{stderr}"
    assert var in lines[0] and lines[0].startswith("training-filter run: invalid configuration: "), lines[0]


@pytest.mark.parametrize(
    "finding,var",
    [
        ("revocations topic is the opt-out topic", "TF_REVOCATIONS_TOPIC"),
        ("batch size above librdkafka's limit", "TF_BATCH_SIZE"),
        ("opt-out capacity of 1e14", "TF_OPTOUT_CAPACITY"),
        ("consent capacity of 1e14", "TF_CONSENT_CAPACITY"),
    ],
)
def test_each_finding_exits_2_with_one_line_and_touches_nothing(kafka, topics, tmp_path, finding, var):
    env = service_env(kafka.bootstrap, topics)
    if var == "TF_REVOCATIONS_TOPIC":
        env[var] = topics.optouts
    elif var == "TF_BATCH_SIZE":
        env[var] = "2000000"
    else:
        env[var] = "100000000000000"
        policy = tmp_path / "opt-in.toml"
        policy.write_text(OPT_IN_POLICY)
        env.update({"TF_POLICY_FILE": str(policy), "TF_CONSENT_TOPIC": topics.optouts + "-consents"})
    names = list(topics.env().values())
    before = end_offsets(kafka.bootstrap, names)
    code, stderr, ready = run(env, tmp_path / "service.log", ready_timeout=30)
    assert not ready, f"{finding}: the service became ready"
    assert_refused(code, stderr, var)
    assert end_offsets(kafka.bootstrap, names) == before, "a topic was written"


@pytest.fixture(scope="module")
def shared_topics(kafka) -> Topics:
    return Topics.unique(kafka.bootstrap, partitions=1)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(changed=st.one_of(changes([], SUBPROCESS_NUMERIC), valid_changes(SUBPROCESS_NUMERIC)))
@example(changed={"TF_BATCH_SIZE": "1000000", "TF_KAFKA_CLIENT_ID": "tf-property-test"})  # starts
@example(changed={"TF_BATCH_TIMEOUT_MS": "nan", "TF_KAFKA_NO_SUCH_PROPERTY": "1"})  # refused
def test_drawn_settings_either_start_or_exit_2_naming_a_variable(kafka, shared_topics, tmp_path_factory, changed):
    env = service_env(kafka.bootstrap, shared_topics, **changed)
    # Duplicates are drawn among the real topics of this test, so a missed one would run against them.
    for var, value in changed.items():
        if var.endswith("_TOPIC") and value == "":
            env[var] = shared_topics.optouts
    log = tmp_path_factory.mktemp("run") / "service.log"
    code, stderr, ready = run(env, log)
    event("ready, then exit 0" if ready else "refused, exit 2")
    print(f"{'ready' if ready else 'refused'} (exit {code}): {sorted(changed.items())}")
    assert "Traceback" not in stderr and "Traceback" not in log.read_text(errors="replace")
    if ready:
        assert code == 0, f"ready, then exit {code} on SIGTERM:\n{stderr}"
        budgets = [line for line in _json_lines(log) if line.get("event") == "memory_budget"]
        assert len(budgets) == 1, "the memory budget is logged once at start-up"
        assert 0 < budgets[0]["need_bytes"] <= budgets[0]["limit_bytes"] and budgets[0]["source"]
    else:
        assert code == 2, (
            f"neither ready nor refused: exit {code}:\n{stderr}\n{log.read_text(errors='replace')[-3000:]}"
        )
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines and all(names_a_variable(line, env) for line in lines), stderr


def _json_lines(log: Path) -> list[dict]:
    out = []
    for raw in log.read_bytes().splitlines():
        try:
            out.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    return out
