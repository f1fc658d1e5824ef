"""How long `training-filter audit verify` takes (issue 23: "it verifies a million records in minutes"):
the real service decides the benchmark's input with an audit key, on topics of its own (input, training,
dead letters, audit, opt-outs, changes, revocations), until every input offset is committed and its
retraction emitter has caught up; then the verifier runs as its own process over all of it, pinned to
the pipeline's CPU, timed (wall and CPU seconds, peak RSS, from the kernel's accounting of the process),
and must pass (exit status 0).

Result: `verify` (the verifier's figures and summary, and the service run that wrote what it verified).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from tests.benchmarks.harness import PIPELINE_CPU, Harness, log
from tests.benchmarks.service import _time_to_finish, service_env, start_service, wait_assigned

AUDIT_KEY = "bench-audit-key-0123456789abcdef-0123"
POLICIES = str(Path(__file__).resolve().parents[2] / "rules")
PARTITIONS = 4
VERIFY_TIMEOUT_SECONDS = 3600


def run(h: Harness) -> dict[str, Any]:
    env = _own_topics(h)
    source = h.publish_input()
    group = f"tf-verify-{uuid.uuid4().hex[:8]}"
    sink = h.topic("out-verify", PARTITIONS)
    service = start_service(h, source, group=group, sink=sink, extra_env=env)
    wait_assigned([service.port], partitions=PARTITIONS + 1)
    h.release()
    count = len(h.values)
    wall, cpu, _ = _time_to_finish(h, [service], count)
    log(f"service decided {count:,} records in {wall:.1f} s; waiting for its commits")
    # The input was written in one transaction: its commit marker takes the last offset of each partition.
    _wait_committed(h.bootstrap, group, {source: PARTITIONS}, markers=1)
    _wait_committed(h.bootstrap, f"{group}-revocations", {env["TF_OPTOUTS_TOPIC"]: 1})
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(60) == 0, service.log.read_text()[-3000:]
    verifier_env = {**service_env(h, source, "at-least-once", group, sink, 0), **env}
    result = verify(h, verifier_env)
    result["service"] = {"records": count, "seconds": wall, "cpu_seconds": cpu}
    return result


def _own_topics(h: Harness) -> dict[str, str]:
    """The service's environment on fresh topics: its own opt-outs (the input's objecting users) and a
    revocations topic it retracts them on from the start, so that the verifier can check every retraction."""
    compact = {"cleanup.policy": "compact"}
    optouts = h.topic("verify-optouts", 1, compact)
    h.produce(optouts, list(h.optout_records))
    return {
        "TF_AUDIT_KEY": AUDIT_KEY,
        "TF_AUDIT_TOPIC": h.topic("verify-audit", 2),
        "TF_OPTOUTS_TOPIC": optouts,
        "TF_REVOCATIONS_TOPIC": h.topic("verify-revocations", 1, compact),
        "TF_CONTENT_CHANGES_TOPIC": h.topic("verify-content-changes", 1, compact),
        "TF_ACCOUNT_CHANGES_TOPIC": h.topic("verify-account-changes", 1, compact),
        "TF_DLQ_TOPIC": h.topic("verify-dlq", 1),
        "TF_AI_INTERACTIONS_TOPIC": h.topic("verify-ai", 1),
        "TF_OPTOUT_SNAPSHOT_PATH": str(h.work / f"verify-snapshot-{uuid.uuid4().hex[:6]}"),
        "TF_REVOCATIONS_START": "earliest",
    }


def verify(h: Harness, env: dict[str, str]) -> dict[str, Any]:
    """`training-filter audit verify` over everything, as its own process pinned to PIPELINE_CPU: its
    wall and CPU seconds and peak RSS (wait4's accounting), and its summary."""
    command = ["taskset", "-c", str(PIPELINE_CPU), sys.executable, "-m", "consumer.cli", "audit", "verify"]
    command += ["--json", "--no-record", "--policies", POLICIES]
    err_path = h.work / "verify.stderr"
    log("audit verify over every record")
    with err_path.open("wb") as err:
        start = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        h.started.append(process)
        assert process.stdout is not None
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    summary = orjson.loads(stdout) if stdout.strip() else {}
    assert process.returncode == 0 and summary.get("passed"), (
        f"audit verify exited {process.returncode}: {summary.get('by_kind')} "
        f"{summary.get('discrepancies', [])[:5]}\n{err_path.read_text()[-3000:]}"
    )
    records = summary["records"]
    cpu = usage.ru_utime + usage.ru_stime
    rss = usage.ru_maxrss * 1024  # KiB on Linux
    log(f"audit verify: {records:,} records in {wall:.1f} s ({records / wall:,.0f}/s), {cpu:.1f} CPU s")
    return {
        "records": records,
        "seconds": wall,
        "records_per_second": records / wall,
        "cpu_seconds": cpu,
        "cpu_us_per_record": cpu / records * 1e6,
        "peak_rss_bytes": rss,
        "peak_rss_mib": rss / 2**20,
        "exit_status": process.returncode,
        "summary": {k: v for k, v in summary.items() if k != "discrepancies"},
    }


def _wait_committed(
    bootstrap: str, group: str, topics: dict[str, int], markers: int = 0, timeout: float = 300.0
) -> None:
    """Until `group` has committed every partition of `topics` to its end (less `markers` transaction
    markers after the last record)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        parts = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = consumer.committed(parts, timeout=10)
            if all(tp.offset >= ends[tp.topic, tp.partition] - markers for tp in committed):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{group} did not commit {', '.join(topics)} to the end in {timeout:.0f} s")
    finally:
        consumer.close()
