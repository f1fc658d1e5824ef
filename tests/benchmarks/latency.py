"""The latency scenario: p50, p99 and max from produce to arrival in the output of each pipeline at a
fixed offered load of half its own median maximum (from the throughput scenario), `--repeat` runs
each, `--latency-seconds` of load a run. The load is produced in 5 ms ticks, each record with a unique
id patched into its value; `tests.benchmarks.reader` (another process, on the harness's CPU) notes
when each id arrives. During the service's runs, the opt-out propagation is measured too
(`tests.benchmarks.propagation`).

Result: `latency` (a `summarise` of the runs of each pipeline, by its key).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import orjson
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from consumer.datapath.pseudonym import Pseudonymiser
from consumer.wire import fastpath
from consumer.wire.codec import POST, Codec
from rules import Decider, Reason, Source, load_policy
from tests.benchmarks.harness import HARNESS_CPU, NO_LIMIT, PIPELINE_CPU, Harness, log, summarise
from tests.benchmarks.propagation import ChangeOffer, OptOutOffer, propagation_quantiles, retraction_latency
from tests.benchmarks.service import scrape_text, start_service


def run(h: Harness, rates: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """`rates`: by result key, the pipeline's name and the records/s to offer it."""
    eligible = eligible_flags(h)
    out: dict[str, Any] = {}
    for key, (kind, rate) in rates.items():
        lat_runs = []
        for rep in range(h.args.repeat):
            log(f"latency of {kind} at {rate:,.0f} records/s, run {rep + 1} of {h.args.repeat}")
            lat_runs.append(latency(h, kind, rate, eligible))
        out[key] = summarise(lat_runs)
    return out


def latency(h: Harness, kind: str, rate: float, eligible: list[bool]) -> dict[str, Any]:
    """p50/p99 from produce to arrival in the output, at a fixed offered load of `rate` records/s."""
    seconds = h.args.latency_seconds
    total = int(rate * seconds)
    source = h.topic(f"lat-in-{kind}", 4)
    values = [h.values[i % len(h.values)] for i in range(total)]
    outputs_expected = total if kind == "passthrough" else sum(1 for i in range(total) if eligible[i % len(h.values)])
    process, port, sink = _start_pipeline(h, kind, source, total)
    arrivals_file = h.work / f"arrivals-{kind}.json"
    reader = _start_reader(h, sink, outputs_expected, seconds, arrivals_file)
    optouts = changes = None
    if kind == "training-filter":
        optouts = OptOutOffer(h.bootstrap, h.optouts_topic, per_second=20)
        changes = ChangeOffer(h.bootstrap, h.changes_topics[0], per_second=20)
        optouts.start()
        changes.start()
    sent = offer(h.bootstrap, source, values, rate)
    propagation = retracted = memory = None
    if optouts is not None and changes is not None:
        optouts.stop()
        changes.stop()
        time.sleep(1)  # the last opt-outs are applied within the feed's idle sync
        text = scrape_text(port)
        propagation = propagation_quantiles(text, optouts.sent)
        memory = change_set_memory(text)
        retracted = retraction_latency(h.bootstrap, h.revocations_topic, changes.ids)
    reader.wait(seconds + 120)
    if kind == "training-filter":
        process.send_signal(signal.SIGTERM)
    process.wait(120)
    read = orjson.loads(arrivals_file.read_bytes())
    if read["received"] < read["expected"]:
        log(f"{kind}: {read['received']} of {read['expected']} outputs arrived before the reader's deadline")
    result = quantiles(kind, sent, read["arrivals"])
    result["offered_records_per_second"] = rate
    if propagation is not None:
        result["optout_propagation"] = propagation
    if retracted is not None:
        result["change_to_retraction"] = retracted
        result["change_set"] = memory
    return result


def change_set_memory(metrics_text: str) -> dict[str, float]:
    """The change set's bytes and capacities as the service reports them (its gauges)."""
    wanted = {"training_filter_change_set_bytes", "training_filter_change_set_capacity"}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name in wanted:
                label = sample.labels.get("set")
                out[sample.name.removeprefix("training_filter_") + (f"_{label}" if label else "")] = sample.value
    return out


def _start_pipeline(h: Harness, kind: str, source: str, total: int) -> tuple[subprocess.Popen[Any], int, str]:
    """The pipeline reading `source`, started and given 3 s to join its group before the load starts:
    its process, its metrics port (the service's; 0 for the others) and its output topic."""
    if kind == "training-filter":
        service = start_service(h, source)
        time.sleep(3)  # start-up and assignment before the load starts
        return service.process, service.port, service.sink
    sink = h.topic(f"lat-out-{kind}", 4)
    process = subprocess.Popen(
        h.pipeline_command(kind, source, sink, total),
        env={**os.environ, "BENCH_CPU": str(PIPELINE_CPU)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3)
    return process, 0, sink


def _start_reader(h: Harness, sink: str, expected: int, seconds: float, arrivals_file: Any) -> subprocess.Popen[Any]:
    """The reader of `sink`, on the harness's CPU, ready (subscribed) and given a second to be assigned."""
    reader = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.benchmarks.reader",
            h.bootstrap,
            sink,
            str(expected),
            str(seconds + 60),
            str(arrivals_file),
        ],
        env={**os.environ, "BENCH_CPU": str(HARNESS_CPU)},
        stdout=subprocess.PIPE,
    )
    assert reader.stdout is not None
    reader.stdout.readline()
    time.sleep(1)
    return reader


def quantiles(kind: str, sent: dict[str, float], arrivals: dict[str, float]) -> dict[str, Any]:
    """The latencies of the ids sent after the first second (the warm-up), sorted: p50, p99, max."""
    warmup = min(sent.values()) + 1.0
    latencies = sorted((arrivals[i] - t) * 1000 for i, t in sent.items() if i in arrivals and t >= warmup)
    if not latencies:
        raise RuntimeError(f"no output arrived for the {kind} latency run")
    return {
        "samples": len(latencies),
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99)],
        "max_ms": latencies[-1],
    }


def eligible_flags(h: Harness) -> list[bool]:
    """Whether each input value is eligible, decided the way the service does: the frame's schema id
    first (a corrupt header goes to the DLQ even when the body would decode)."""
    decider = Decider(load_policy())
    header = Codec().header(POST)
    pseudonym = Pseudonymiser(h.key.hex().encode()).pseudonym  # the filter holds pseudonyms
    contains = h.optouts.contains

    def opted_out(user_id: bytes) -> bool:
        return bool(contains(pseudonym(user_id)))

    flags = []
    for value in h.values:
        try:
            if not value.startswith(header):
                raise fastpath.FastPathMiss("not the v1 frame")
            f = fastpath.decode_post(value)
        except fastpath.FastPathMiss:
            flags.append(False)
            continue
        reason = decider.decide(Source.POST, f[4], f[3], f[2], f[8], NO_LIMIT, f[1], opted_out)
        flags.append(reason is Reason.ELIGIBLE)
    return flags


def offer(bootstrap: str, topic: str, values: list[bytes], rate: float) -> dict[str, float]:
    """Produce at `rate` records/s in 5 ms ticks, each with a unique 12-byte id patched into the value:
    the time.monotonic() each id was handed to the producer."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
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
