"""The benchmark's shared harness: the local broker, topic set-up, the generated input and the opt-out
snapshot every run uses, producing (in bulk, or held back until every pipeline is ready), a comparison
pipeline run as its own process pinned to a CPU, CPU and wall time and peak memory of a process, and
the medians and spread of repeated runs.

The real service as a measured process is `tests.benchmarks.service`; the scenarios (one module each)
are run in turn by `tests.benchmarks.bench`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from consumer.datapath.pseudonym import Pseudonymiser
from consumer.devtools.generator import StreamGenerator
from consumer.devtools.local_kafka import LocalKafka
from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.optouts.filter import OptOutFilter, load_snapshot, write_snapshot
from consumer.wire import fastpath
from consumer.wire.codec import OPTOUT, Codec

NO_LIMIT = 1 << 62  # no created_at is ever future_dated here (rules.Decider.decide's latest_ms)

PIPELINE_CPU = 0
HARNESS_CPU = 1
SPREAD_KEYS = ("records_per_second", "cpu_us_per_record", "p50_ms", "p99_ms", "max_ms")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- /proc readings -------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory) / 2**20, 1),
        "python": platform.python_version(),
        "fast_path": "compiled" if fastpath.COMPILED else "interpreted",
        "date": time.strftime("%Y-%m-%d"),
    }


# -- figures of runs ------------------------------------------------------------------------------------


def figures(records: int, wall: float, cpu: float, rss: int) -> dict[str, Any]:
    """One throughput run's figures, from its record count, wall and CPU seconds and peak RSS."""
    return {
        "records": records,
        "seconds": wall,
        "records_per_second": records / wall,
        "us_per_record": wall / records * 1e6,
        "cpu_seconds": cpu,
        "cpu_us_per_record": cpu / records * 1e6,
        "peak_rss_bytes": rss,
        "peak_rss_mib": rss / 2**20,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every figure over the repetitions, the spread (min, max) of the main ones, and
    the runs themselves."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(run[key] for run in runs)
        elif isinstance(value, dict):
            out[key] = summarise([run[key] for run in runs])
    out["spread"] = {k: [min(run[k] for run in runs), max(run[k] for run in runs)] for k in SPREAD_KEYS if k in out}
    out["repetitions"] = len(runs)
    out["runs"] = [{k: v for k, v in run.items() if not isinstance(v, dict)} for run in runs]
    return out


def paired_cpu_ratios(base: list[dict[str, Any]], variant: list[dict[str, Any]]) -> list[float]:
    """CPU per record of each variant run over its base run of the same repetition, sorted. The two
    follow each other: their ratio is less exposed to the slow drifts of a shared machine than the
    ratio of the medians."""
    return sorted(v["cpu_us_per_record"] / b["cpu_us_per_record"] for b, v in zip(base, variant, strict=True))


# -- the harness ----------------------------------------------------------------------------------------


class Harness:
    """What every scenario shares: the options, the broker, a work directory, the service's key, the
    generated input and the opt-out snapshot built from it, the results so far, and the processes the
    runs started (killed at the end, whatever happened)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="tf-bench-"))
        self.key = secrets.token_bytes(32)
        self.results: dict[str, Any] = {"machine": machine(), "settings": vars(args).copy()}
        self.results["settings"]["output"] = str(args.output)
        self.started: list[subprocess.Popen[bytes]] = []
        self.bootstrap = ""
        self.broker_pid = 0
        self._pending_input: Producer | None = None

    def kill_started(self) -> None:
        """Whatever the run started and did not stop (it failed, or a profiler wrapped the service)."""
        for process in self.started:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- topics and producing -------------------------------------------------------------------------

    def topic(self, name: str, partitions: int = 4, config: dict[str, str] | None = None) -> str:
        full = f"{name}-{uuid.uuid4().hex[:6]}"
        ensure_topics(self.bootstrap, [TopicSpec(full, partitions, config or {})])
        return full

    def bulk_producer(self, **extra: Any) -> Producer:
        return Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "linger.ms": 20,
                "batch.size": 1_000_000,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 1_000_000,
                "log_level": 3,
                **extra,
            }
        )

    @staticmethod
    def produce_all(producer: Producer, topic: str, items: Iterable[tuple[bytes | None, bytes]]) -> None:
        for key, value in items:
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(120) == 0

    def produce(self, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
        self.produce_all(self.bulk_producer(), topic, items)

    def publish_input(self) -> str:
        """A fresh topic holding the whole input, written first (uncommitted) and made visible to
        read_committed consumers by one transaction commit when `release()` is called. So every
        pipeline starts, joins its group and gets its partitions before any record is visible: the
        measurement is the steady state, without start-up or rebalance time."""
        topic = self.topic("bench-posts", 4)
        producer = self.bulk_producer(
            **{"transactional.id": f"bench-input-{uuid.uuid4().hex[:8]}", "transaction.timeout.ms": 300_000}
        )
        producer.init_transactions(30)
        producer.begin_transaction()
        self.produce_all(producer, topic, zip(self.keys, self.values, strict=True))
        self._pending_input = producer
        return topic

    def release(self) -> None:
        assert self._pending_input is not None, "publish_input() first"
        self._pending_input.commit_transaction(60)
        self._pending_input = None  # closes the producer before the broker goes away

    # -- set-up ---------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The input, the opt-out filter and its snapshot, and the topics every service run shares."""
        generator = self._generate_input()
        self.optouts_topic = self.topic("optouts", 1, {"cleanup.policy": "compact"})
        opted = generator.optouts()
        self.optout_records = list(opted)  # the input's objecting users, for scenarios with topics of their own
        self.produce(self.optouts_topic, self.optout_records)
        # One revocations topic for every service run: the snapshot names it (the emitters start at its end).
        self.revocations_topic = self.topic("revocations", 1, {"cleanup.policy": "compact"})
        self._build_optouts(opted)
        self.empty_topic = self.topic("bench-ai", 1)
        # Empty change topics every run shares: the change mirror gates input as in production.
        compact = {"cleanup.policy": "compact"}
        self.changes_topics = (self.topic("content-changes", 1, compact), self.topic("account-changes", 1, compact))

    def _generate_input(self) -> StreamGenerator:
        log(f"generating {self.args.records} posts")
        generator = StreamGenerator(seed=42, users_per_pool=20_000, ai_share=0.0)
        stream = list(generator.stream(self.args.records))
        self.values = [g.value for g in stream]
        self.users = {g.user_id for g in stream if g.user_id is not None}
        self.keys = [g.key for g in stream]
        self.expected_eligible = sum(g.expected == "eligible" for g in stream)
        self.expected_malformed = sum(g.expected == "malformed" for g in stream)
        self.results["input"] = {
            "records": len(stream),
            "eligible": self.expected_eligible,
            "malformed": self.expected_malformed,
            "mean_value_bytes": round(statistics.mean(len(v) for v in self.values), 1),
            "decisions": {r: sum(g.expected == r for g in stream) for r in generator.mix},
        }
        return generator

    def _build_optouts(self, opted: list[tuple[bytes, bytes]]) -> None:
        """`--optouts` pseudonyms (the input's opted-out users among them) in a filter, timed while
        built, saved as a snapshot and loaded back."""
        count = self.args.optouts
        capacity = max(count, 1_000)
        log(f"building the opt-out filter: {count} opt-outs at 1e-6")
        optouts = OptOutFilter(capacity, 1e-6)
        # The filter holds pseudonyms under the service's key (TF_HMAC_KEY is the key's hex text).
        pseudonym = Pseudonymiser(self.key.hex().encode()).pseudonym
        start = time.perf_counter()
        for i in range(count - len(opted)):
            optouts.add(pseudonym(f"bench-optout-{i:09d}".encode()))
        codec = Codec()
        for _, value in opted:
            optouts.add(pseudonym(codec.decode(value, OPTOUT)[1]["user_id"].encode()))
        build = time.perf_counter() - start
        self.snapshot = self.work / "optouts.snapshot"
        key_check = Pseudonymiser(self.key.hex().encode()).key_check()
        topics = {self.optouts_topic: None, self.revocations_topic: None}
        offsets = {(self.optouts_topic, 0): len(opted), (self.revocations_topic, 0): 0}
        start = time.perf_counter()
        write_snapshot(self.snapshot, optouts.header(offsets, topics, key_check), optouts.snapshot_bytes())
        save = time.perf_counter() - start
        start = time.perf_counter()
        loaded = load_snapshot(self.snapshot, capacity, 1e-6, list(topics), key_check)
        load = time.perf_counter() - start
        self.optouts = loaded.filter
        self.capacity = capacity
        self.results["optouts"] = {
            "entries": optouts.entries,
            "filter_bytes": optouts.size_bytes,
            "filter_mib": optouts.size_bytes / 2**20,
            "build_seconds": build,
            "build_per_second": optouts.entries / build,
            "snapshot_save_seconds": save,
            "snapshot_load_seconds": load,
            "estimated_false_positive_rate": optouts.estimated_fp_rate(),
            "library": "fastbloom-rs",
        }

    # -- the comparison pipelines (tests.benchmarks.pipelines) ---------------------------------------

    def pipeline_command(self, kind: str, source: str, sink: str, count: int) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "tests.benchmarks.pipelines",
            kind,
            self.bootstrap,
            source,
            sink,
            f"g-{uuid.uuid4().hex[:8]}",
            str(count),
        ]
        if kind in ("peer", "naive"):
            cmd += [str(self.snapshot), self.key.hex()]
        return cmd

    def run_script(self, kind: str, count: int) -> dict[str, Any]:
        """One throughput run of a comparison pipeline, pinned to PIPELINE_CPU, over the whole input:
        the figures it reports of itself (first to last record, its own CPU and peak RSS)."""
        source = self.publish_input()
        sink = self.topic(f"out-{kind}", 4)
        cmd = self.pipeline_command(kind, source, sink, count)
        process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "BENCH_CPU": str(PIPELINE_CPU)},
        )
        time.sleep(6)  # start-up and partition assignment
        self.release()
        stdout, stderr = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise RuntimeError(f"{kind} failed:\n{stderr[-3000:]}")
        report = orjson.loads(stdout.strip().splitlines()[-1])
        return figures(
            report["records"], report["last"] - report["first"], report["cpu_seconds"], report["peak_rss_bytes"]
        )


@contextlib.contextmanager
def running(args: argparse.Namespace) -> Iterator[Harness]:
    """The harness with its broker started (pinned to HARNESS_CPU, as is this process) and the input
    prepared. Every process the runs started is killed on the way out; the work directory (the
    snapshots, the service logs) is removed after a run that did not fail, kept for reading otherwise."""
    os.sched_setaffinity(0, {HARNESS_CPU})
    harness = Harness(args)
    try:
        with LocalKafka(cpus={HARNESS_CPU}, heap="1g") as broker:
            try:
                harness.bootstrap = broker.bootstrap
                assert broker.process is not None
                harness.broker_pid = broker.process.pid
                harness.prepare()
                yield harness
            finally:
                harness.kill_started()  # before the broker stops
    except BaseException:
        log(f"kept {harness.work} (the service logs)")
        raise
    shutil.rmtree(harness.work, ignore_errors=True)
