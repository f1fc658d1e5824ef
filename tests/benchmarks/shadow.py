"""The shadow policy's cost in the hot loop: `BatchProcessor.process` over pre-built messages, without
and with a shadow policy (TF_SHADOW_POLICY_FILE), in one process, no broker.

The messages are real `confluent_kafka.Message` objects (what consume() returns) built from the
benchmark's generated stream (posts and AI interactions, every decision represented, 3% malformed);
the opt-out test is the service's (memoised HMAC, then the Bloom filter). The producer is a real
librdkafka producer with no reachable broker (`--producer librdkafka`, the default): produce() costs
what it costs in the service (the record is copied into librdkafka's queue), and the queue is purged
after each pass, outside the timing. `--producer stub` replaces it with a Python method that returns
at once: the loop without produce() cost, so the strictest ratio. Every batch is processed twice in a
row, without and with the shadow (the order flips every pass); the headline ratio is the median of
those paired batch ratios, the per-pass medians are reported beside it.

The measurement is pinned to one core (`--cpu`, the last one by default), as `make bench` pins it.

    python -m tests.benchmarks.shadow [--records N] [--repetitions N] [--producer librdkafka|stub]
                                      [--cpu N] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from consumer.datapath.batch import BatchProcessor
from consumer.datapath.offsets import PendingBatch
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.datapath.shadow import Shadow
from consumer.devtools.generator import StreamGenerator
from consumer.devtools.local_kafka import LocalKafka
from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.optouts.filter import OptOutFilter
from consumer.wire import fastpath
from consumer.wire.codec import OPTOUT, Codec
from rules import Decider, load_policy, parse_policy
from tests.harness import produce
from tests.samples import CANDIDATE_POLICY

LIMIT = 1.10  # the bound: the shadow may slow the hot loop by at most 10%
BATCH = 2000  # TF_BATCH_SIZE's default
KEY = b"s" * 32


class _StubProducer:
    def produce(
        self,
        topic: Any,
        value: Any = None,
        key: Any = None,
        partition: Any = -1,
        on_delivery: Any = None,
        headers: Any = None,
    ) -> None:
        return None

    def poll(self, timeout: float = 0) -> int:
        return 0


def _messages(records: int, bootstrap: str | None) -> tuple[list[list[Message]], OptOutFilter, tuple[str, str]]:
    """Batches of real messages of the generated stream, the opt-out filter, and the (posts, ai) topic
    names. confluent-kafka before 2.13 cannot build a Message: then the stream goes through a broker
    (`bootstrap`, or a local one started for the purpose) and comes back from consume()."""
    names = ("posts", "ai")
    try:
        Message(topic="posts", partition=0, offset=0, value=b"", key=b"")
    except TypeError:
        tag = uuid.uuid4().hex[:8]
        names = (f"shadow-posts-{tag}", f"shadow-ai-{tag}")
    generator = StreamGenerator(seed=5, users_per_pool=2000, posts_topic=names[0], ai_topic=names[1])
    stream = list(generator.stream(records))
    codec = Codec()
    pseudonym = Pseudonymiser(KEY).pseudonym
    optouts = OptOutFilter(100_000, 1e-6)
    for _, value in generator.optouts():
        optouts.add(pseudonym(codec.decode(value, OPTOUT)[1]["user_id"].encode()))
    if names[0] == "posts":
        # consume() returns a partition's records together: group by topic, then cut into batches.
        ordered = sorted(enumerate(stream), key=lambda item: (item[1].topic, item[0]))
        messages = [
            Message(topic=g.topic, partition=0, offset=i, value=g.value, key=g.key, timestamp=(1, 0))
            for i, (_, g) in enumerate(ordered)
        ]
    elif bootstrap is not None:
        messages = _through_broker(bootstrap, names, stream)
    else:
        with LocalKafka() as broker:
            messages = _through_broker(broker.bootstrap, names, stream)
    return [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)], optouts, names


def _through_broker(bootstrap: str, names: tuple[str, str], stream: list[Any]) -> list[Message]:
    ensure_topics(bootstrap, [TopicSpec(name, 1, {}) for name in names])
    produce(bootstrap, ((g.topic, g.key, g.value) for g in stream))  # every record acknowledged
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"shadow-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
    )
    consumer.assign([TopicPartition(name, 0, 0) for name in names])
    got: list[Message] = []
    deadline = time.monotonic() + 120
    while len(got) < len(stream) and time.monotonic() < deadline:
        got.extend(m for m in consumer.consume(10_000, 1.0) if m.error() is None)
    consumer.close()
    assert len(got) == len(stream), f"read back {len(got)} of {len(stream)} records"
    return sorted(got, key=lambda m: (m.topic(), m.offset()))


def _producer(kind: str) -> Any:
    if kind == "stub":
        return _StubProducer()
    return Producer(
        {
            "bootstrap.servers": "127.0.0.1:9",  # nothing listens: records stay queued until purged
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "linger.ms": 60_000,
            "compression.type": "lz4",
            "enable.idempotence": True,
            "log_level": 0,
        }
    )


def _processor(optouts: OptOutFilter, producer: Any, names: tuple[str, str]) -> BatchProcessor:
    pseudonymiser = Pseudonymiser(KEY)
    contains, pseudonym = optouts.contains, pseudonymiser.pseudonym

    def opted_out(user_id: bytes) -> bool:
        return bool(contains(pseudonym(user_id)))

    return BatchProcessor(
        decider=Decider(load_policy()),
        codec=Codec(),
        pseudonymiser=pseudonymiser,
        opted_out=opted_out,
        producer=producer,
        training_topic="training",
        dlq_topic="dlq",
        posts_topic=names[0],
        ai_interactions_topic=names[1],
        on_backpressure=lambda: None,
    )


def _pass(
    processor: BatchProcessor, shadow: Shadow, batches: list[list[Message]], flip: bool, control: bool = False
) -> list:
    """One pass over every batch, each batch processed twice in turn, without and with the shadow
    (the order flips every pass): [(CPU seconds without, CPU seconds with)] per batch. One processor,
    so one set of memos and one producer, as in the service. The thread's own CPU time, so that time
    the scheduler gives other processes on a shared machine is not counted. `control`: the shadow
    stays off in both halves (an A/A run: the method's own bias, which should be a ratio of 1)."""
    clock = time.thread_time
    out = []
    for messages in batches:
        times = {}
        for with_shadow in (True, False) if flip else (False, True):
            processor.shadow = shadow if with_shadow and not control else None
            start = clock()
            processor.process(messages, PendingBatch(), {})
            times[with_shadow] = clock() - start
        out.append((times[False], times[True]))
    producer = processor.producer
    if isinstance(producer, Producer):
        producer.purge()
        producer.poll(0)  # the purged records' delivery reports, outside the timing
    return out


def measure(
    records: int = 200_000,
    repetitions: int = 7,
    producer: str = "librdkafka",
    bootstrap: str | None = None,
    messages: tuple[list[list[Message]], OptOutFilter, tuple[str, str]] | None = None,
    control: bool = False,
) -> dict[str, Any]:
    batches, optouts, names = messages if messages is not None else _messages(records, bootstrap)
    processor = _processor(optouts, _producer(producer), names)
    shadow = Shadow(Decider(parse_policy(CANDIDATE_POLICY)), lambda pairs: None)
    _pass(processor, shadow, batches, False)  # warm-up: memos (pseudonyms, countries, birth days) filled
    count = sum(len(b) for b in batches)
    runs = [_pass(processor, shadow, batches, i % 2 == 1, control) for i in range(repetitions)]
    plain = [sum(t[0] for t in run) / count * 1e6 for run in runs]
    shadowed = [sum(t[1] for t in run) / count * 1e6 for run in runs]
    ratios = [s / p for s, p in zip(shadowed, plain, strict=True)]
    # Each batch's two runs follow each other within milliseconds, so they see the same contention
    # from other processes and the same slow drifts of a shared machine: the median of those paired
    # ratios is the headline figure, the least disturbed one. The ratio of the passes' medians is
    # reported beside it.
    batch_ratios = sorted(t[1] / t[0] for run in runs for t in run)
    paired = statistics.median(batch_ratios)
    quartiles = statistics.quantiles(batch_ratios, n=4)
    median_plain, median_shadow = statistics.median(plain), statistics.median(shadowed)
    counted = sum(shadow.totals.values())
    return {
        "records": count,
        "repetitions": repetitions,
        "fast_path": "compiled" if fastpath.COMPILED else "interpreted",
        "producer": producer,
        "us_per_record_without": median_plain,
        "us_per_record_with": median_shadow,
        "ratio": paired,
        "paired_batch_ratio": paired,
        "paired_batch_ratio_quartiles": [quartiles[0], quartiles[2]],
        "paired_batches": len(batch_ratios),
        "ratio_of_pass_medians": median_shadow / median_plain,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "without_min_max": [min(plain), max(plain)],
        "with_min_max": [min(shadowed), max(shadowed)],
        "shadow_counted": counted,
        "control": control,
        "limit": LIMIT,
    }


def line(r: dict[str, Any]) -> str:
    q1, q3 = r["paired_batch_ratio_quartiles"]
    return (
        f"shadow overhead{' (A/A control: shadow off in both halves)' if r.get('control') else ''} "
        f"(hot loop, {r['records']:,} records, CPU time, {r['repetitions']} alternating passes, "
        f"fast path {r['fast_path']}, producer {r['producer']}): ratio {r['ratio']:.3f}, the median of "
        f"{r['paired_batches']} paired batches (quartiles {q1:.3f}-{q3:.3f}; limit {r['limit']:.2f}); "
        f"per pass without {r['us_per_record_without']:.3f} µs/record "
        f"({r['without_min_max'][0]:.3f}-{r['without_min_max'][1]:.3f}), with {r['us_per_record_with']:.3f} "
        f"({r['with_min_max'][0]:.3f}-{r['with_min_max'][1]:.3f}), ratio of the medians "
        f"{r['ratio_of_pass_medians']:.3f} (per pass {r['ratio_min']:.3f}-{r['ratio_max']:.3f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument("--producer", choices=["librdkafka", "stub"], default="librdkafka")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--bootstrap", help="a broker, where confluent-kafka cannot build messages (before 2.13)")
    parser.add_argument("--control", action="store_true", help="A/A: the shadow off in both halves (expect 1.00)")
    parser.add_argument(
        "--cpu", type=int, default=max(os.sched_getaffinity(0)), help="the core the measurement is pinned to"
    )
    args = parser.parse_args(argv)
    messages = _messages(args.records, args.bootstrap)  # a local broker, if one is started, before pinning
    os.sched_setaffinity(0, {args.cpu})  # no migrations between cores in the middle of a batch pair
    result = measure(args.records, args.repetitions, args.producer, args.bootstrap, messages, args.control)
    print(line(result))
    if args.output:
        args.output.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return 0 if result["ratio"] <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
