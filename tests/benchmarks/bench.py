"""The throughput, latency and memory benchmark (`make bench`). Prints a table and writes JSON.

On the same pre-generated input (posts with 200 to 1,000 bytes of text, about half eligible, every
decision represented) and the local Kafka broker, it runs one after another, each pinned to CPU 0
while the broker and the load generator are pinned to CPU 1, `--repeat` times in turn (the medians
and the spread are reported):

1. passthrough: confluent-kafka consume and produce of the same bytes (the ceiling);
2. training-filter: the real service (`training-filter run`), at-least-once, 10 million opt-outs
   loaded from a snapshot, output minimised and pseudonymised;
3. naive: the same policy the way a team would write it without this project (fastavro, hmac.new
   and a delivery callback per record);
4. peer: the same policy written idiomatically with Quix Streams.

Then exactly-once against at-least-once and two service processes against one (one run each),
p50/p99/max end-to-end latency of each pipeline at half its own median maximum (`--repeat` runs
each), the opt-out propagation (an opt-out's timestamp to its being applied) during the service's
latency runs, snapshot load and filter build for 10 million opt-outs, and the per-stage cost of the
hot loop.

    python -m tests.benchmarks.bench [--records N] [--optouts N] [--repeat N] [--quick] [--output FILE]
"""

from __future__ import annotations

import argparse
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
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from consumer.consents import snapshot as consent_snapshot
from consumer.consents.fingerprints import ConsentSet
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.devtools.generator import StreamGenerator
from consumer.devtools.local_kafka import LocalKafka, free_port
from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.optouts.filter import OptOutFilter, load_snapshot, write_snapshot
from consumer.wire import fastpath
from consumer.wire.codec import CONSENT, OPTOUT, POST, Codec
from rules import Decider, Reason, Source, load_policy
from tests.benchmarks.consents import random_words
from tests.benchmarks.shadow import line as shadow_line
from tests.benchmarks.shadow import measure as shadow_overhead
from tests.benchmarks.stages import profile
from tests.samples import CANDIDATE_POLICY

NO_LIMIT = 1 << 62  # no created_at is ever future_dated here (rules.Decider.decide's latest_ms)

PIPELINE_CPU = 0
HARNESS_CPU = 1
DEFAULT_OUTPUT = Path(__file__).parent / "results" / "latest.json"
# (the pipeline's name in logs and commands, its key in the results), in the order they run
PIPELINES = (
    ("passthrough", "passthrough"),
    ("training-filter", "training_filter"),
    ("naive", "naive"),
    ("peer", "peer"),
)
SPREAD_KEYS = ("records_per_second", "cpu_us_per_record", "p50_ms", "p99_ms", "max_ms")


OPT_IN_POLICY = "deploy/kubernetes/components/opt-in-consent/opt-in-policy.toml"


def paired_cpu_ratios(base: list[dict[str, Any]], variant: list[dict[str, Any]]) -> list[float]:
    """CPU per record of each variant run over its base run of the same repetition, sorted. The two
    follow each other: their ratio is less exposed to the slow drifts of a shared machine than the
    ratio of the medians."""
    return sorted(v["cpu_us_per_record"] / b["cpu_us_per_record"] for b, v in zip(base, variant, strict=True))


def opt_in_line(x: dict[str, Any]) -> str:
    a, b = x["opt_out"], x["opt_in"]

    def fig(v: dict[str, Any], key: str, fmt: str) -> str:
        low, high = (
            v["spread"][key] if key in v["spread"] else (min(r[key] for r in v["runs"]), max(r[key] for r in v["runs"]))
        )
        return f"{format(v[key], fmt)} ({format(low, fmt)}-{format(high, fmt)})"

    return (
        f"opt-in consent model in the service ({x['repetitions']} alternating pairs; {x['consent_entries']:,} consents "
        f"in a set of capacity {x['consent_capacity']:,}; every input user consented): CPU µs/record opt-out "
        f"{fig(a, 'cpu_us_per_record', '.2f')}, opt-in {fig(b, 'cpu_us_per_record', '.2f')}, paired ratio "
        f"{x['cpu_ratio_paired']:.3f} ({x['cpu_ratio_paired_min_max'][0]:.3f}-{x['cpu_ratio_paired_min_max'][1]:.3f}); "
        f"records/s {fig(a, 'records_per_second', ',.0f')} against {fig(b, 'records_per_second', ',.0f')}; "
        f"peak RSS {fig(a, 'peak_rss_mib', '.0f')} MiB against {fig(b, 'peak_rss_mib', '.0f')} MiB"
    )


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


class OptOutOffer:
    """Opt-outs of users the input never mentions, at a steady rate, on a thread, while a latency run
    loads the service: the service's propagation histogram then describes them alone."""

    def __init__(self, bootstrap: str, topic: str, per_second: float) -> None:
        import threading

        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "log_level": 3})
        self.topic = topic
        self.interval = 1 / per_second
        self.sent = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        import datetime as dt

        codec = Codec()
        while not self.stopping.wait(self.interval):
            user = f"bench-late-{uuid.uuid4().hex}".encode()
            now = dt.datetime.now(dt.UTC)
            value = codec.encode(OPTOUT, {"user_id": user.decode(), "opted_out_at": now, "source": "settings"})
            self.producer.produce(self.topic, value, user)
            self.producer.poll(0)
            self.sent += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.producer.flush(10)


def propagation_quantiles(metrics_text: str, sent: int) -> dict[str, float]:
    """p50 and p99 of the service's opt-out propagation histogram, interpolated within buckets as
    Prometheus's histogram_quantile does."""
    buckets: list[tuple[float, float]] = []
    count = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "training_filter_optout_propagation_seconds_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == "training_filter_optout_propagation_seconds_count":
                count = sample.value
    buckets.sort()

    def quantile(q: float) -> float:
        if count == 0:
            return float("nan")
        rank = q * count
        lower, below = 0.0, 0.0
        for upper, cumulative in buckets:
            if cumulative >= rank:
                if upper == float("inf"):
                    return lower * 1000
                share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
                return (lower + (upper - lower) * share) * 1000
            lower, below = upper, cumulative
        return float("nan")

    return {"optouts_sent": sent, "optouts_applied": count, "p50_ms": quantile(0.5), "p99_ms": quantile(0.99)}


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


# -- the bench ------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="tf-bench-"))
        self.key = secrets.token_bytes(32)
        self.results: dict[str, Any] = {"machine": machine(), "settings": vars(args).copy()}
        self.results["settings"]["output"] = str(args.output)
        self.started: list[subprocess.Popen[bytes]] = []
        self.service_env: dict[str, str] = {}  # e.g. TF_SHADOW_POLICY_FILE for the shadow comparison

    def kill_started(self) -> None:
        """Whatever the run started and did not stop (it failed, or a profiler wrapped the service)."""
        for process in self.started:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def topic(self, name: str, partitions: int = 4, config: dict[str, str] | None = None) -> str:
        full = f"{name}-{uuid.uuid4().hex[:6]}"
        ensure_topics(self.bootstrap, [TopicSpec(full, partitions, config or {})])
        return full

    def _bulk_producer(self, **extra: Any) -> Producer:
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
    def _produce_all(producer: Producer, topic: str, items: Any) -> None:
        for key, value in items:
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(120) == 0

    def produce(self, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
        self._produce_all(self._bulk_producer(), topic, items)

    def publish_input(self) -> str:
        """A fresh topic holding the whole input, written first (uncommitted) and made visible to
        read_committed consumers by one transaction commit when `release()` is called. So every
        pipeline starts, joins its group and gets its partitions before any record is visible: the
        measurement is the steady state, without start-up or rebalance time."""
        topic = self.topic("bench-posts", 4)
        producer = self._bulk_producer(
            **{"transactional.id": f"bench-input-{uuid.uuid4().hex[:8]}", "transaction.timeout.ms": 300_000}
        )
        producer.init_transactions(30)
        producer.begin_transaction()
        self._produce_all(producer, topic, zip(self.keys, self.values, strict=True))
        self._pending_input = producer
        return topic

    def release(self) -> None:
        self._pending_input.commit_transaction(60)
        self._pending_input = None  # closes the producer before the broker goes away

    # -- set-up ---------------------------------------------------------------------------------------

    def prepare(self) -> None:
        args = self.args
        log(f"generating {args.records} posts")
        generator = StreamGenerator(seed=42, users_per_pool=20_000, ai_share=0.0)
        stream = list(generator.stream(args.records))
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

        self.optouts_topic = self.topic("optouts", 1, {"cleanup.policy": "compact"})
        opted = generator.optouts()
        self.produce(self.optouts_topic, list(opted))
        # One revocations topic for every service run: the snapshot names it (the emitters start at its end).
        self.revocations_topic = self.topic("revocations", 1, {"cleanup.policy": "compact"})
        capacity = max(args.optouts, 1_000)
        log(f"building the opt-out filter: {args.optouts} opt-outs at 1e-6")
        optouts = OptOutFilter(capacity, 1e-6)
        # The filter holds pseudonyms under the service's key (TF_HMAC_KEY is the key's hex text).
        pseudonym = Pseudonymiser(self.key.hex().encode()).pseudonym
        start = time.perf_counter()
        for i in range(args.optouts - len(opted)):
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

        self.empty_topic = self.topic("bench-ai", 1)

    # -- pipelines ------------------------------------------------------------------------------------

    def _pipeline_command(self, kind: str, source: str, sink: str, count: int) -> list[str]:
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
        source = self.publish_input()
        sink = self.topic(f"out-{kind}", 4)
        cmd = self._pipeline_command(kind, source, sink, count)
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
        return self._figures(
            report["records"], report["last"] - report["first"], report["cpu_seconds"], report["peak_rss_bytes"]
        )

    @staticmethod
    def _figures(records: int, wall: float, cpu: float, rss: int) -> dict[str, Any]:
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

    def start_service(
        self,
        source: str,
        guarantee: str = "at-least-once",
        cpu: int = PIPELINE_CPU,
        group: str | None = None,
        sink: str | None = None,
    ) -> tuple[subprocess.Popen[bytes], int, str]:
        port = free_port()
        snapshot = self.work / f"snapshot-{uuid.uuid4().hex[:6]}"
        shutil.copy(self.snapshot, snapshot)
        sink = sink or self.topic("out-service", 4)
        env = {
            **os.environ,
            "TF_BOOTSTRAP_SERVERS": self.bootstrap,
            "TF_GROUP_ID": group or f"tf-{uuid.uuid4().hex[:8]}",
            "TF_POSTS_TOPIC": source,
            "TF_AI_INTERACTIONS_TOPIC": self.empty_topic,
            "TF_OPTOUTS_TOPIC": self.optouts_topic,
            "TF_TRAINING_TOPIC": sink,
            "TF_REVOCATIONS_TOPIC": self.revocations_topic,
            "TF_DLQ_TOPIC": self.topic("dlq", 1),
            "TF_HMAC_KEY": self.key.hex(),
            "TF_OPTOUT_SNAPSHOT_PATH": str(snapshot),
            "TF_OPTOUT_CAPACITY": str(self.capacity),
            "TF_METRICS_HOST": "127.0.0.1",
            "TF_METRICS_PORT": str(port),
            "TF_PROCESSING_GUARANTEE": guarantee,
            "TF_REVOCATIONS_START": "latest",
            "TF_LOG_LEVEL": "warning",
            "TF_OPTOUT_SNAPSHOT_INTERVAL_SECONDS": "3600",
            "TF_TRANSACTIONAL_ID": f"bench-{uuid.uuid4().hex[:8]}",
            **self.service_env,
        }
        self.service_log = self.work / f"service-{port}.log"
        with self.service_log.open("wb") as log_file:
            command = ["taskset", "-c", str(cpu), sys.executable, "-m", "consumer.cli", "run"]
            if os.environ.get("BENCH_PROFILE"):  # e.g. "py-spy record -o profile.svg --"
                command = [*os.environ["BENCH_PROFILE"].split(), *command]
            process = subprocess.Popen(
                command,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its whole group is killed at the end, a profiler's child too
            )
        self.started.append(process)
        return process, port, sink

    def _wait_assigned(self, ports: list[int], partitions: int) -> None:
        """Until every instance has partitions and together they hold all of them (a stable group)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                assigned = [self.scrape(port).get("assigned", 0) for port in ports]
            except OSError:
                assigned = []
            if assigned and all(assigned) and sum(assigned) == partitions:
                time.sleep(1)  # let the group settle
                return
            time.sleep(0.2)
        raise RuntimeError("the service instances did not get their partitions")

    @staticmethod
    def scrape_text(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    @classmethod
    def scrape(cls, port: int) -> dict[str, float]:
        text = cls.scrape_text(port)
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "training_filter_records_total":
                    totals["records"] = totals.get("records", 0) + sample.value
                elif sample.name == "training_filter_produced_records_total":
                    totals[sample.labels["output"]] = sample.value
                elif sample.name == "training_filter_assigned_partitions":
                    totals["assigned"] = sample.value
        return totals

    def run_services(self, guarantee: str = "at-least-once", processes: int = 1) -> dict[str, Any]:
        source = self.publish_input()
        group = f"tf-{uuid.uuid4().hex[:8]}"
        sink = self.topic("out-service", 4)
        started = [self.start_service(source, guarantee, cpu=i % 2, group=group, sink=sink) for i in range(processes)]
        self._wait_assigned([port for _, port, _ in started], partitions=4 + 1)
        self.release()
        count = len(self.values)
        first = cpu_first = broker_first = 0.0
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            for process, _, _ in started:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"the service exited with {process.returncode}:\n" + self.service_log.read_text()[-3000:]
                    )
            totals = {}
            try:
                parts = [self.scrape(port) for _, port, _ in started]
                totals = {k: sum(p.get(k, 0) for p in parts) for k in ("records", "training", "dlq")}
            except OSError:
                pass
            now = time.time()
            if not first and totals.get("records", 0) > 0:
                first, cpu_first = now - 0.005, sum(cpu_seconds(p.pid) for p, _, _ in started)
                broker_first = cpu_seconds(self.broker_pid)
            if (
                totals.get("records", 0) >= count
                and totals.get("training", 0) >= self.expected_eligible
                and totals.get("dlq", 0) >= self.expected_malformed
            ):
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("the service did not finish the input")
        wall, cpu = now - first, sum(cpu_seconds(p.pid) for p, _, _ in started) - cpu_first
        broker_cpu = cpu_seconds(self.broker_pid) - broker_first
        rss = max(peak_rss(p.pid) for p, _, _ in started)
        for process, _, _ in started:
            process.send_signal(signal.SIGTERM)
        for process, _, _ in started:
            process.wait(60)
        figures = self._figures(count, wall, cpu, rss)
        # The broker's share (it also serves the load generator's idle connections): what predicts the
        # scaling on a machine whose broker has cores of its own.
        figures["broker_cpu_us_per_record"] = broker_cpu / count * 1e6
        return figures

    def alternating_runs(
        self, label: str, variants: dict[str, dict[str, str]], repetitions: int
    ) -> dict[str, list[dict[str, Any]]]:
        """The real service under each variant's extra environment, `repetitions` times, the order of
        the two variants flipping every repetition (a slow spell of the machine hits both)."""
        first, second = variants
        runs: dict[str, list[dict[str, Any]]] = {first: [], second: []}
        for i in range(repetitions):
            for variant in (first, second) if i % 2 == 0 else (second, first):
                self.service_env = variants[variant]
                run = self.run_services()
                runs[variant].append(run)
                log(
                    f"{label} comparison {i + 1}/{repetitions}, {variant}: "
                    f"{run['cpu_us_per_record']:.2f} CPU µs/record, {run['peak_rss_mib']:.0f} MiB"
                )
        self.service_env = {}
        return runs

    def shadow_service_overhead(self, repetitions: int) -> dict[str, Any]:
        """The real service without and with TF_SHADOW_POLICY_FILE (tests.samples.CANDIDATE_POLICY), runs
        alternating, on the same input: CPU µs per record (the process's, all threads) and records/s."""
        candidate = self.work / "candidate-policy.toml"
        candidate.write_text(CANDIDATE_POLICY)
        runs = self.alternating_runs(
            "shadow", {"without": {}, "with": {"TF_SHADOW_POLICY_FILE": str(candidate)}}, repetitions
        )
        cpu = {k: [r["cpu_us_per_record"] for r in v] for k, v in runs.items()}
        rate = {k: [r["records_per_second"] for r in v] for k, v in runs.items()}
        paired = paired_cpu_ratios(runs["without"], runs["with"])
        return {
            "repetitions": repetitions,
            "cpu_us_per_record": cpu,
            "records_per_second": rate,
            "cpu_ratio_paired": statistics.median(paired),
            "cpu_ratio_paired_min_max": [paired[0], paired[-1]],
            "cpu_ratio": statistics.median(cpu["with"]) / statistics.median(cpu["without"]),
            "throughput_ratio": statistics.median(rate["without"]) / statistics.median(rate["with"]),
        }

    def opt_in_service(self, repetitions: int) -> dict[str, Any]:
        """The real service under the opt-in model (deploy/kubernetes/components/opt-in-consent's policy)
        against the same service under the packaged opt-out policy, runs alternating, on the same input.

        Every user of the input consented (so the same records are eligible and a run ends on the same
        counts, and every record that passes the other checks is looked up), and the consent set is
        sized as the component sizes it (TF_CONSENT_CAPACITY 10 million, a 128 MiB table) and holds 5
        million consents: the input's users from the consent topic, the rest random fingerprints, loaded
        from a snapshot as a restarted replica loads it."""
        policy = self.work / "opt-in-policy.toml"
        policy.write_text((Path(__file__).resolve().parents[2] / OPT_IN_POLICY).read_text())
        topic = self.topic("consents", 1, {"cleanup.policy": "compact"})
        codec = Codec()
        granted = [
            (user.encode(), codec.encode(CONSENT, {"user_id": user, "granted": True, "at": 1, "source": "bench"}))
            for user in sorted(self.users)
        ]
        self.produce(topic, granted)
        capacity, entries = 10_000_000, 5_000_000 if not self.args.quick else 200_000
        consents = ConsentSet(capacity)
        pseudonym = Pseudonymiser(self.key.hex().encode()).pseudonym
        for user in self.users:
            consents.add(pseudonym(user.encode()))
        for done in range(len(self.users), entries, 1_000_000):
            n = min(1_000_000, entries - done)
            consents.bulk_insert(random_words(n), random_words(n))
        snapshot = self.work / "consents.snapshot"
        key_check = Pseudonymiser(self.key.hex().encode()).key_check()
        header = consent_snapshot.header(consents, {(topic, 0): len(granted)}, {topic: None}, key_check)
        write_snapshot(snapshot, header, consent_snapshot.body(consents))
        del consents
        opt_in_env = {
            "TF_POLICY_FILE": str(policy),
            "TF_CONSENT_TOPIC": topic,
            "TF_CONSENT_CAPACITY": str(capacity),
            "TF_CONSENT_SNAPSHOT_PATH": str(snapshot),
        }
        runs = self.alternating_runs("opt-in", {"opt_out": {}, "opt_in": opt_in_env}, repetitions)
        paired = paired_cpu_ratios(runs["opt_out"], runs["opt_in"])
        return {
            "repetitions": repetitions,
            "consent_capacity": capacity,
            "consent_entries": entries,
            "input_users": len(self.users),
            "opt_out": summarise(runs["opt_out"]),
            "opt_in": summarise(runs["opt_in"]),
            "cpu_ratio_paired": statistics.median(paired),
            "cpu_ratio_paired_min_max": [paired[0], paired[-1]],
        }

    # -- latency --------------------------------------------------------------------------------------

    def latency(self, kind: str, rate: float) -> dict[str, Any]:
        """p50/p99 from produce to arrival in the output, at a fixed offered load of `rate` records/s."""
        seconds = self.args.latency_seconds
        total = int(rate * seconds)
        source = self.topic(f"lat-in-{kind}", 4)
        values = [self.values[i % len(self.values)] for i in range(total)]
        outputs_expected = sum(1 for i in range(total) if self._eligible_index(i % len(self.values)))
        if kind == "passthrough":
            outputs_expected = total
        port = 0
        if kind == "training-filter":
            process, port, sink = self.start_service(source)
            time.sleep(3)  # start-up and assignment before the load starts
        else:
            sink = self.topic(f"lat-out-{kind}", 4)
            cmd = self._pipeline_command(kind, source, sink, total)
            process = subprocess.Popen(
                cmd,
                env={**os.environ, "BENCH_CPU": str(PIPELINE_CPU)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(3)
        arrivals_file = self.work / f"arrivals-{kind}.json"
        reader = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.benchmarks.reader",
                self.bootstrap,
                sink,
                str(outputs_expected),
                str(seconds + 60),
                str(arrivals_file),
            ],
            env={**os.environ, "BENCH_CPU": str(HARNESS_CPU)},
            stdout=subprocess.PIPE,
        )
        assert reader.stdout is not None
        reader.stdout.readline()
        time.sleep(1)
        optouts = None
        if kind == "training-filter":
            optouts = OptOutOffer(self.bootstrap, self.optouts_topic, per_second=20)
            optouts.start()
        sent = self._offer(source, values, rate)
        propagation = None
        if optouts is not None:
            optouts.stop()
            time.sleep(1)  # the last opt-outs are applied within the feed's idle sync
            propagation = propagation_quantiles(self.scrape_text(port), optouts.sent)
        reader.wait(seconds + 120)
        if kind == "training-filter":
            process.send_signal(signal.SIGTERM)
        process.wait(120)
        read = orjson.loads(arrivals_file.read_bytes())
        arrivals = read["arrivals"]
        if read["received"] < read["expected"]:
            log(f"{kind}: {read['received']} of {read['expected']} outputs arrived before the reader's deadline")
        warmup = min(sent.values()) + 1.0
        latencies = sorted((arrivals[i] - t) * 1000 for i, t in sent.items() if i in arrivals and t >= warmup)
        if not latencies:
            raise RuntimeError(f"no output arrived for the {kind} latency run")
        result = {
            "offered_records_per_second": rate,
            "samples": len(latencies),
            "p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[int(len(latencies) * 0.99)],
            "max_ms": latencies[-1],
        }
        if propagation is not None:
            result["optout_propagation"] = propagation
        return result

    def _eligible_index(self, index: int) -> bool:
        """Whether input value `index` is eligible, decided the way the service does: the frame's
        schema id first (a corrupt header goes to the DLQ even when the body would decode)."""
        if not hasattr(self, "_eligible"):
            decider = Decider(load_policy())
            header = Codec().header(POST)
            pseudonym = Pseudonymiser(self.key.hex().encode()).pseudonym  # the filter holds pseudonyms
            contains = self.optouts.contains

            def opted_out(user_id: bytes) -> bool:
                return bool(contains(pseudonym(user_id)))

            flags = []
            for value in self.values:
                try:
                    if not value.startswith(header):
                        raise fastpath.FastPathMiss("not the v1 frame")
                    f = fastpath.decode_post(value)
                except fastpath.FastPathMiss:
                    flags.append(False)
                    continue
                reason = decider.decide(Source.POST, f[4], f[3], f[2], f[8], NO_LIMIT, f[1], opted_out)
                flags.append(reason is Reason.ELIGIBLE)
            self._eligible = flags
        return self._eligible[index]

    def _offer(self, topic: str, values: list[bytes], rate: float) -> dict[str, float]:
        """Produce at `rate` records/s in 5 ms ticks, each with a unique 12-byte id patched into the value."""
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "linger.ms": 1,
                "log_level": 3,
                "queue.buffering.max.messages": 1_000_000,
            }
        )
        sent: dict[str, float] = {}
        tick = 0.005
        per_tick = rate * tick
        start = time.monotonic()
        owed = 0.0
        index = 0
        while index < len(values):
            owed += per_tick
            while owed >= 1 and index < len(values):
                value = values[index]
                if len(value) > 18 and value[5] == 24:  # a framed post with a 12-byte id
                    rid = f"L{index:011d}"
                    value = value[:6] + rid.encode() + value[18:]
                    sent[rid] = time.monotonic()
                try:
                    producer.produce(topic, value, b"k%d" % (index % 1000))
                except BufferError:
                    producer.poll(0.01)
                    producer.produce(topic, value, b"k%d" % (index % 1000))
                index += 1
                owed -= 1
            producer.poll(0)
            next_tick = start + tick * (1 + int((time.monotonic() - start) / tick))
            time.sleep(max(0.0, next_tick - time.monotonic()))
        producer.flush(60)
        return sent

    # -- the whole run --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        os.sched_setaffinity(0, {HARNESS_CPU})
        with LocalKafka(cpus={HARNESS_CPU}, heap="1g") as broker:
            self.bootstrap = broker.bootstrap
            assert broker.process is not None
            self.broker_pid = broker.process.pid
            self.prepare()
            n = len(self.values)
            r = self.results
            if self.args.only == "shadow":  # the shadow policy's cost in the real service, alone
                r["shadow_service"] = self.shadow_service_overhead(self.args.shadow_repetitions)
                print(orjson.dumps(r["shadow_service"], option=orjson.OPT_INDENT_2).decode())
                return r
            if self.args.only == "opt-in":  # the opt-in consent model's cost in the real service, alone
                r["opt_in_service"] = self.opt_in_service(self.args.repeat)
                print(orjson.dumps(r["opt_in_service"], option=orjson.OPT_INDENT_2).decode())
                print(opt_in_line(r["opt_in_service"]))
                return r
            if self.args.only == "training-filter":  # for profiling: the service alone, then stop
                log("training-filter (at-least-once) only")
                r["training_filter"] = self.run_services()
                print(orjson.dumps(r["training_filter"], option=orjson.OPT_INDENT_2).decode())
                return r
            runs: dict[str, list[dict[str, Any]]] = {key: [] for _, key in PIPELINES}
            for rep in range(self.args.repeat):
                for kind, key in PIPELINES:  # in turn, so a slow spell of the machine hits every pipeline
                    log(f"{kind}, run {rep + 1} of {self.args.repeat}")
                    if kind == "training-filter":
                        runs[key].append(self.run_services())
                    else:
                        runs[key].append(self.run_script(kind, n))
            for _, key in PIPELINES:
                r[key] = summarise(runs[key])
            log("training-filter (exactly-once)")
            r["training_filter_exactly_once"] = self.run_services("exactly-once")
            log("training-filter, two processes")
            r["training_filter_two_processes"] = self.run_services(processes=2)
            r["latency"] = {}
            for kind, key in PIPELINES:
                rate = r[key]["records_per_second"] / 2
                lat_runs = []
                for rep in range(self.args.repeat):
                    log(f"latency of {kind} at {rate:,.0f} records/s, run {rep + 1} of {self.args.repeat}")
                    lat_runs.append(self.latency(kind, rate))
                r["latency"][key] = summarise(lat_runs)
            log("per-stage profile")
            os.sched_setaffinity(0, {PIPELINE_CPU})
            r["stages_us_per_record"] = profile(
                self.values,
                self.optouts,
                Decider(load_policy()),
                self.bootstrap,
                self.topic("out-stages", 4),
                self.key.hex().encode(),  # the service's key: TF_HMAC_KEY is the hex text
            )
            log("training-filter without and with a shadow policy")
            r["shadow_service"] = self.shadow_service_overhead(self.args.shadow_repetitions)
            log("training-filter under the opt-out and the opt-in policy")
            r["opt_in_service"] = self.opt_in_service(self.args.repeat)
            log("shadow policy overhead (in-process)")
            r["shadow_overhead"] = shadow_overhead(
                min(n, 200_000), 7 if not self.args.quick else 3, bootstrap=self.bootstrap
            )
            os.sched_setaffinity(0, {HARNESS_CPU})
            r["ratios"] = ratios(r)
            r["scaling"] = scaling(r)
        shutil.rmtree(self.work, ignore_errors=True)
        return r


def ratios(r: dict[str, Any]) -> dict[str, float]:
    tf = r["training_filter"]
    passthrough, peer, naive = r["passthrough"], r["peer"], r["naive"]
    return {
        "training_filter_over_passthrough": tf["records_per_second"] / passthrough["records_per_second"],
        "cpu_training_filter_over_passthrough": tf["cpu_us_per_record"] / passthrough["cpu_us_per_record"],
        "training_filter_over_peer": tf["records_per_second"] / peer["records_per_second"],
        "cpu_peer_over_training_filter": peer["cpu_us_per_record"] / tf["cpu_us_per_record"],
        "training_filter_over_naive": tf["records_per_second"] / naive["records_per_second"],
        "cpu_naive_over_training_filter": naive["cpu_us_per_record"] / tf["cpu_us_per_record"],
        "exactly_once_over_at_least_once": r["training_filter_exactly_once"]["records_per_second"]
        / tf["records_per_second"],
        "two_processes_over_one": r["training_filter_two_processes"]["records_per_second"] / tf["records_per_second"],
    }


def scaling(r: dict[str, Any]) -> dict[str, float]:
    """What a machine whose processes and broker have cores of their own should show: each process
    is bound by its own CPU per record, and the broker needs its CPU per record for all of them."""
    tf = r["training_filter"]
    per_process = 1e6 / tf["cpu_us_per_record"]
    return {
        "one_process_on_its_own_core": per_process,
        "two_processes_on_their_own_cores": 2 * per_process,
        "broker_cpu_us_per_record": tf["broker_cpu_us_per_record"],
        "broker_cores_for_two_processes": 2 * per_process * tf["broker_cpu_us_per_record"] / 1e6,
    }


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


def _spread(x: dict[str, Any], key: str, fmt: str) -> str:
    low, high = x.get("spread", {}).get(key, (x[key], x[key]))
    return f"{format(low, fmt)}–{format(high, fmt)}"


def table(r: dict[str, Any]) -> str:
    reps = r["training_filter"].get("repetitions", 1)
    lines = [
        f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, {r['machine']['memory_gib']} GiB; "
        f"Python {r['machine']['python']}; fast path {r['machine']['fast_path']}",
        f"input: {r['input']['records']:,} posts, mean {r['input']['mean_value_bytes']:.0f} bytes, "
        f"{r['input']['eligible']:,} eligible; filter: {r['optouts']['entries']:,} opt-outs",
        f"medians of {reps} runs each (spread: min–max); exactly-once and two processes: one run each",
        "",
        f"{'pipeline':<30}{'records/s':>10}{'spread':>17}{'CPU µs/rec':>11}{'spread':>15}{'RSS MiB':>8}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'p99 spread':>12}{'max ms':>8}",
    ]
    rows = [
        ("passthrough", "passthrough"),
        ("training-filter", "training_filter"),
        ("naive (no batching, fastavro)", "naive"),
        ("peer (Quix Streams)", "peer"),
        ("training-filter exactly-once", "training_filter_exactly_once"),
        ("training-filter, 2 processes", "training_filter_two_processes"),
    ]
    for label, key in rows:
        x = r[key]
        lat = r.get("latency", {}).get(key)
        p50 = f"{lat['p50_ms']:.1f}" if lat else "-"
        p99 = f"{lat['p99_ms']:.1f}" if lat else "-"
        p99s = _spread(lat, "p99_ms", ".0f") if lat else "-"
        worst = f"{lat['max_ms']:.0f}" if lat else "-"
        lines.append(
            f"{label:<30}{x['records_per_second']:>10,.0f}{_spread(x, 'records_per_second', ',.0f'):>17}"
            f"{x['cpu_us_per_record']:>11.2f}{_spread(x, 'cpu_us_per_record', '.2f'):>15}{x['peak_rss_mib']:>8.0f}"
            f"{p50:>8}{p99:>8}{p99s:>12}{worst:>8}"
        )
    q, sc = r["ratios"], r["scaling"]
    lat = r["latency"]
    prop = lat["training_filter"].get("optout_propagation", {})
    tf_p99, peer_p99 = lat["training_filter"]["p99_ms"], lat["peer"]["p99_ms"]

    def met(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    cpu_ratio = q["cpu_training_filter_over_passthrough"]
    lines += [
        "",
        "targets (medians):",
        f"  CPU per record, training-filter / passthrough  {cpu_ratio:.2f}  (<= 1.4) {met(cpu_ratio <= 1.4)}",
        f"  records/s, training-filter / passthrough       {q['training_filter_over_passthrough']:.2f}  (>= 0.9) "
        f"{met(q['training_filter_over_passthrough'] >= 0.9)}",
        f"  records/s, training-filter / peer              {q['training_filter_over_peer']:.2f}  (>= 5) "
        f"{met(q['training_filter_over_peer'] >= 5)}",
        f"  CPU per record, peer / training-filter         {q['cpu_peer_over_training_filter']:.2f}  (>= 5) "
        f"{met(q['cpu_peer_over_training_filter'] >= 5)}",
        f"  p99 at half load, training-filter vs peer      {tf_p99:.1f} vs {peer_p99:.1f} ms  (<=) "
        f"{met(tf_p99 <= peer_p99)}",
        f"  records/s, training-filter / naive             {q['training_filter_over_naive']:.2f}; CPU per record "
        f"naive / training-filter {q['cpu_naive_over_training_filter']:.2f}",
        f"  exactly-once / at-least-once                   {q['exactly_once_over_at_least_once']:.2f}",
        f"  two processes / one                            {q['two_processes_over_one']:.2f}  (they share the "
        "broker's core here: not a scaling figure)",
        "",
        f"opt-out propagation under half load ({prop.get('optouts_applied', 0):.0f} of {prop.get('optouts_sent', 0)} "
        f"opt-outs; timestamp to applied): p50 {prop.get('p50_ms', float('nan')):.1f} ms, "
        f"p99 {prop.get('p99_ms', float('nan')):.1f} ms",
        "",
        "on a machine with a core per process and cores for the broker:",
        f"  one process {sc['one_process_on_its_own_core']:,.0f} records/s (1e6 / its CPU µs per record), two "
        f"{sc['two_processes_on_their_own_cores']:,.0f}; the broker spends {sc['broker_cpu_us_per_record']:.2f} "
        f"CPU µs per record, {sc['broker_cores_for_two_processes']:.1f} cores for two processes",
    ]
    o = r["optouts"]
    s = r["stages_us_per_record"]
    lines += [
        "",
        "opt-out filter:",
        f"  {o['entries']:,} entries, {o['filter_mib']:.1f} MiB (< 50), estimated FP rate "
        f"{o['estimated_false_positive_rate']:.1e}",
        f"  build {o['build_per_second']:,.0f} adds/s ({o['build_seconds']:.1f} s); snapshot save "
        f"{o['snapshot_save_seconds']:.2f} s, load {o['snapshot_load_seconds']:.2f} s (< 2)",
        f"  service peak RSS minus filter: {r['training_filter']['peak_rss_mib'] - o['filter_mib']:.0f} MiB (< 300)",
        "",
        "hot loop stages, µs per input record:",
    ]
    for name in (
        "decode_fast_path",
        "decode_fastavro_reference",
        "rules",
        "bloom_lookup",
        "encode_and_pseudonymise",
        "produce",
    ):
        lines.append(f"  {name:<28}{s[name]:>7.3f}")
    lines.append(
        f"  (per eligible record: encode+pseudonymise {s['encode_and_pseudonymise_per_eligible']:.3f}, "
        f"produce {s['produce_per_eligible']:.3f}; eligible share {s['eligible_share']:.2f})"
    )
    if "shadow_service" in r:
        x = r["shadow_service"]
        cpu = x["cpu_us_per_record"]
        lines += [
            "",
            f"shadow policy in the service ({x['repetitions']} alternating pairs of runs): CPU µs/record "
            f"without {statistics.median(cpu['without']):.2f} ({min(cpu['without']):.2f}-{max(cpu['without']):.2f}), "
            f"with {statistics.median(cpu['with']):.2f} ({min(cpu['with']):.2f}-{max(cpu['with']):.2f}): "
            f"ratio {x['cpu_ratio_paired']:.3f}, the median of the pairs' ratios "
            f"({x['cpu_ratio_paired_min_max'][0]:.3f}-{x['cpu_ratio_paired_min_max'][1]:.3f}); "
            f"ratio of the medians {x['cpu_ratio']:.3f}; records/s without / with {x['throughput_ratio']:.3f}",
        ]
    if "opt_in_service" in r:
        lines += ["", opt_in_line(r["opt_in_service"])]
    if "shadow_overhead" in r:
        lines += [shadow_line(r["shadow_overhead"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--optouts", type=int, default=10_000_000)
    parser.add_argument("--latency-seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each pipeline (medians are reported)")
    parser.add_argument("--quick", action="store_true", help="a small run that checks the benchmark works")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--only",
        choices=["training-filter", "shadow", "opt-in"],
        help="run only this pipeline (for profiling), or the shadow comparison",
    )
    parser.add_argument(
        "--shadow-repetitions", type=int, default=5, help="runs of the service without and with a shadow"
    )
    parser.add_argument("--consents", action="store_true", help="only the consent set's memory and look-up cost")
    args = parser.parse_args(argv)
    if args.consents:
        from tests.benchmarks import consents

        return consents.main([])
    if args.quick:
        args.records, args.optouts, args.latency_seconds, args.repeat = 20_000, 200_000, 2.0, 1
        args.shadow_repetitions = 1
    if (os.cpu_count() or 1) < 2:
        print(
            "the benchmark pins the pipelines and the broker to two different CPUs; this machine has one",
            file=sys.stderr,
        )
        return 2
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        bench.kill_started()
    if args.only:
        return 0
    print()
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
