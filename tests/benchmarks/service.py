"""The real service (`training-filter run`) as a measured process of the benchmark: started pinned to a
CPU on the harness's topics and opt-out snapshot, its progress read from its metrics, and one or more
instances timed over the whole input (wall time, their CPU and the broker's, peak RSS); the same runs
under two variants of the service's environment, alternating.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from prometheus_client.parser import text_string_to_metric_families

from consumer.devtools.local_kafka import free_port
from tests.benchmarks.harness import PIPELINE_CPU, Harness, cpu_seconds, figures, log, peak_rss


class Service(NamedTuple):
    process: subprocess.Popen[bytes]
    port: int  # of its metrics
    sink: str  # its training topic
    log: Path  # its output


def service_env(h: Harness, source: str, guarantee: str, group: str, sink: str, port: int) -> dict[str, str]:
    snapshot = h.work / f"snapshot-{uuid.uuid4().hex[:6]}"
    shutil.copy(h.snapshot, snapshot)  # each run loads the same snapshot and may write its own
    return {
        **os.environ,
        "TF_BOOTSTRAP_SERVERS": h.bootstrap,
        "TF_GROUP_ID": group,
        "TF_POSTS_TOPIC": source,
        "TF_AI_INTERACTIONS_TOPIC": h.empty_topic,
        "TF_OPTOUTS_TOPIC": h.optouts_topic,
        "TF_TRAINING_TOPIC": sink,
        "TF_REVOCATIONS_TOPIC": h.revocations_topic,
        "TF_DLQ_TOPIC": h.topic("dlq", 1),
        "TF_CONTENT_CHANGES_TOPIC": h.changes_topics[0],
        "TF_ACCOUNT_CHANGES_TOPIC": h.changes_topics[1],
        "TF_HMAC_KEY": h.key.hex(),
        "TF_OPTOUT_SNAPSHOT_PATH": str(snapshot),
        "TF_OPTOUT_CAPACITY": str(h.capacity),
        "TF_METRICS_HOST": "127.0.0.1",
        "TF_METRICS_PORT": str(port),
        "TF_PROCESSING_GUARANTEE": guarantee,
        "TF_REVOCATIONS_START": "latest",
        "TF_LOG_LEVEL": "warning",
        "TF_OPTOUT_SNAPSHOT_INTERVAL_SECONDS": "3600",
        "TF_TRANSACTIONAL_ID": f"bench-{uuid.uuid4().hex[:8]}",
    }


def start_service(
    h: Harness,
    source: str,
    guarantee: str = "at-least-once",
    cpu: int = PIPELINE_CPU,
    group: str | None = None,
    sink: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Service:
    """One service process reading `source`, pinned to `cpu`, in a session of its own (the harness
    kills its whole group at the end, a profiler's child too). BENCH_PROFILE wraps the command, e.g.
    "py-spy record -o profile.svg --"."""
    port = free_port()
    sink = sink or h.topic("out-service", 4)
    env = service_env(h, source, guarantee, group or f"tf-{uuid.uuid4().hex[:8]}", sink, port)
    env.update(extra_env or {})
    log_path = h.work / f"service-{port}.log"
    with log_path.open("wb") as log_file:
        command = ["taskset", "-c", str(cpu), sys.executable, "-m", "consumer.cli", "run"]
        if os.environ.get("BENCH_PROFILE"):
            command = [*os.environ["BENCH_PROFILE"].split(), *command]
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    h.started.append(process)
    return Service(process, port, sink, log_path)


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def scrape(port: int) -> dict[str, float]:
    """The records read, the records produced by output (training, dlq) and the partitions assigned."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(scrape_text(port)):
        for sample in family.samples:
            if sample.name == "training_filter_records_total":
                totals["records"] = totals.get("records", 0) + sample.value
                if sample.labels.get("decision") == "eligible":
                    totals["eligible"] = totals.get("eligible", 0) + sample.value
            elif sample.name == "training_filter_produced_records_total":
                totals[sample.labels["output"]] = sample.value
            elif sample.name == "training_filter_assigned_partitions":
                totals["assigned"] = sample.value
    return totals


def wait_assigned(ports: list[int], partitions: int) -> None:
    """Until every instance has partitions and together they hold all of them (a stable group)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            assigned = [scrape(port).get("assigned", 0) for port in ports]
        except OSError:
            assigned = []
        if assigned and all(assigned) and sum(assigned) == partitions:
            time.sleep(1)  # let the group settle
            return
        time.sleep(0.2)
    raise RuntimeError("the service instances did not get their partitions")


def run_services(
    h: Harness, guarantee: str = "at-least-once", processes: int = 1, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One throughput run of `processes` service instances in one group (instance i on CPU i % 2) over
    the whole input: from the first record read to the last expected output, by their metrics."""
    source = h.publish_input()
    group = f"tf-{uuid.uuid4().hex[:8]}"
    sink = h.topic("out-service", 4)
    started = [
        start_service(h, source, guarantee, cpu=i % 2, group=group, sink=sink, extra_env=extra_env)
        for i in range(processes)
    ]
    wait_assigned([s.port for s in started], partitions=4 + 1)
    h.release()
    count = len(h.values)
    wall, cpu, broker_cpu = _time_to_finish(h, started, count)
    rss = max(peak_rss(s.process.pid) for s in started)
    for s in started:
        s.process.send_signal(signal.SIGTERM)
    for s in started:
        s.process.wait(60)
    result = figures(count, wall, cpu, rss)
    # The broker's share (it also serves the load generator's idle connections): what predicts the
    # scaling on a machine whose broker has cores of its own.
    result["broker_cpu_us_per_record"] = broker_cpu / count * 1e6
    return result


def _time_to_finish(h: Harness, started: list[Service], count: int) -> tuple[float, float, float]:
    """(wall seconds, the instances' CPU seconds, the broker's CPU seconds) from the first record read
    to every record read and every expected output produced, polling the metrics every 10 ms."""
    first = cpu_first = broker_first = 0.0
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        for s in started:
            if s.process.poll() is not None:
                raise RuntimeError(f"the service exited with {s.process.returncode}:\n" + s.log.read_text()[-3000:])
        totals = {}
        try:
            parts = [scrape(s.port) for s in started]
            totals = {k: sum(p.get(k, 0) for p in parts) for k in ("records", "eligible", "training", "dlq")}
        except OSError:
            pass
        now = time.time()
        if not first and totals.get("records", 0) > 0:
            first, cpu_first = now - 0.005, sum(cpu_seconds(s.process.pid) for s in started)
            broker_first = cpu_seconds(h.broker_pid)
        # Every record decided and every output of those decisions acknowledged. Not the stream's expected
        # eligible count: the opt-out filter's false positives (1e-6, under a fresh key each run) may
        # refuse one, and the run must still end.
        if (
            totals.get("records", 0) >= count
            and totals.get("training", 0) >= totals.get("eligible", 0)
            and totals.get("dlq", 0) >= h.expected_malformed
        ):
            break
        time.sleep(0.01)
    else:
        raise RuntimeError("the service did not finish the input")
    cpu = sum(cpu_seconds(s.process.pid) for s in started) - cpu_first
    return now - first, cpu, cpu_seconds(h.broker_pid) - broker_first


def alternating_runs(
    h: Harness, label: str, variants: dict[str, dict[str, str]], repetitions: int
) -> dict[str, list[dict[str, Any]]]:
    """The real service under each variant's extra environment, `repetitions` times, the order of
    the two variants flipping every repetition (a slow spell of the machine hits both)."""
    first, second = variants
    runs: dict[str, list[dict[str, Any]]] = {first: [], second: []}
    for i in range(repetitions):
        for variant in (first, second) if i % 2 == 0 else (second, first):
            run = run_services(h, extra_env=variants[variant])
            runs[variant].append(run)
            log(
                f"{label} comparison {i + 1}/{repetitions}, {variant}: "
                f"{run['cpu_us_per_record']:.2f} CPU µs/record, {run['peak_rss_mib']:.0f} MiB"
            )
    return runs
