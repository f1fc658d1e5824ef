"""The comparison pipelines of the benchmark, each run as its own process pinned to one core.

    python -m tests.benchmarks.pipelines passthrough BOOTSTRAP IN OUT GROUP COUNT
    python -m tests.benchmarks.pipelines peer BOOTSTRAP IN OUT GROUP COUNT SNAPSHOT HMAC_KEY_HEX
    python -m tests.benchmarks.pipelines naive BOOTSTRAP IN OUT GROUP COUNT SNAPSHOT HMAC_KEY_HEX

Each consumes COUNT records of IN from the beginning, writes its output to OUT, waits for every
acknowledgement and prints one JSON line: first and last wall times, CPU seconds between them, and
peak RSS. `passthrough` copies bytes (the ceiling); `peer` is the same policy written idiomatically
with Quix Streams (a benchmark-only dependency); `naive` is the same policy the way a team would
write it without this project: one confluent-kafka consumer and producer, fastavro decode and encode,
the rules, `hmac.new` per record and a delivery callback per record. It shows what the compiled path
and the batching buy.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any

import orjson

NO_LIMIT = 1 << 62  # no created_at is ever future_dated here (rules.Decider.decide's latest_ms)


def _report(first: float, last: float, cpu_first: float, cpu_last: float, records: int, outputs: int) -> None:
    print(
        orjson.dumps(
            {
                "first": first,
                "last": last,
                "cpu_seconds": cpu_last - cpu_first,
                "records": records,
                "outputs": outputs,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        ).decode(),
        flush=True,
    )


def minimised(
    post: dict[str, Any], decider: Any, version: str, pseudonym: str, provenance: tuple[str, int, int]
) -> dict[str, Any]:
    """The TrainingRecord (v2) of an eligible post, as the comparison pipelines build it."""
    topic, partition, offset = provenance
    return {
        "record_id": post["post_id"],
        "source": "POST",
        "text": post["text"],
        "prompt": None,
        "response": None,
        "language": post["language"],
        "country": decider.allowed_country(post["author_country"]),
        "created_at": post["created_at"],
        "author_pseudonym": pseudonym,
        "policy_version": version,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
    }


def passthrough(bootstrap: str, source: str, sink: str, group: str, count: int) -> None:
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 4_194_304,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "enable.idempotence": True,
            "queue.buffering.max.messages": 200_000,
        }
    )
    consumer.subscribe([source])
    seen = 0
    first = cpu_first = 0.0
    produce = producer.produce
    while seen < count:
        messages = consumer.consume(num_messages=2000, timeout=0.5)
        if not messages:
            continue
        if not first:
            first, cpu_first = time.time(), time.process_time()
        for msg in messages:
            try:
                produce(sink, msg.value(), msg.key())
            except BufferError:
                producer.poll(0.05)
                produce(sink, msg.value(), msg.key())
        producer.poll(0)
        seen += len(messages)
    producer.flush(60)
    _report(first, time.time(), cpu_first, time.process_time(), seen, seen)
    consumer.close()


def peer(bootstrap: str, source: str, sink: str, group: str, count: int, snapshot: str, key_hex: str) -> None:
    """The policy as a Quix Streams application: deserialize, filter, map, serialize, to_topic."""
    import hmac
    import logging

    from quixstreams import Application
    from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer

    from consumer.wire.codec import HEADER, POST, TRAINING_RECORD, SchemaCatalog
    from rules import Decider, Reason, Source, load_policy

    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    catalog = SchemaCatalog()
    policy = load_policy()
    decider = Decider(policy)
    # The service's key is TF_HMAC_KEY's text (the hex string); the filter holds pseudonyms under it.
    key = key_hex.encode()
    optouts = _filter_of(snapshot)

    def opted_out(user_id: str) -> bool:
        return hmac.new(key, user_id.encode(), "sha256").hexdigest().encode() in optouts

    out_header = HEADER.pack(0, catalog.by_name(TRAINING_RECORD).id)

    class ConfluentAvroDeserializer(AvroDeserializer):
        def __call__(self, value: bytes, ctx: Any) -> Any:
            return super().__call__(value[5:], ctx)  # skip the Confluent magic byte and schema id

    class ConfluentAvroSerializer(AvroSerializer):
        def __call__(self, value: Any, ctx: Any) -> bytes:
            return out_header + super().__call__(value, ctx)

    def skip_undecodable(exc: Exception, message: Any, logger: Any) -> bool:
        state["seen"] += 1  # a malformed record is consumed and dropped (the peer has no DLQ)
        if state["seen"] >= count:
            app.stop()
        return True

    state = {"first": 0.0, "cpu": 0.0, "seen": 0}
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        on_consumer_error=skip_undecodable,
        processing_guarantee="at-least-once",
        use_changelog_topics=False,
        state_dir=os.environ.get("TMPDIR", "/tmp") + f"/quix-{group}",
    )
    inputs = app.topic(source, value_deserializer=ConfluentAvroDeserializer(schema=catalog.by_name(POST).parsed))
    outputs = app.topic(
        sink,
        value_serializer=ConfluentAvroSerializer(schema=catalog.by_name(TRAINING_RECORD).parsed),
        key_serializer="bytes",
    )

    def eligible(post: dict[str, Any]) -> bool:
        return decider.decide_record(Source.POST, post, NO_LIMIT, opted_out) is Reason.ELIGIBLE

    def minimise(post: dict[str, Any], _key: Any, _timestamp: int, _headers: Any) -> dict[str, Any]:
        pseudonym = hmac.new(key, post["author_id"].encode(), "sha256").hexdigest()
        return minimised(post, decider, policy.version, pseudonym, (source, 0, 0))

    def mark(post: dict[str, Any]) -> dict[str, Any]:
        if not state["first"]:
            state["first"], state["cpu"] = time.time(), time.process_time()
        state["seen"] += 1
        if state["seen"] >= count:
            app.stop()  # graceful: the application flushes its producer and commits before run() returns
        return post

    sdf = app.dataframe(inputs)
    sdf = sdf.apply(mark).filter(eligible)
    sdf = sdf.apply(minimise, metadata=True)
    sdf.to_topic(outputs, key=lambda record: record["author_pseudonym"].encode())
    app.run()
    _report(state["first"], time.time(), state["cpu"], time.process_time(), state["seen"], -1)


def _filter_of(snapshot: str) -> Any:
    from pathlib import Path

    from consumer.optouts.filter import load_snapshot

    with open(snapshot, "rb") as handle:
        header = orjson.loads(handle.readline())
    topics = list(header["topic_ids"])
    return load_snapshot(Path(snapshot), header["capacity"], header["fp_rate"], topics, header["key_check"]).filter


def naive(bootstrap: str, source: str, sink: str, group: str, count: int, snapshot: str, key_hex: str) -> None:
    """The policy without this project: decode, decide, pseudonymise, encode and produce per record."""
    import hmac
    import io

    import fastavro
    from confluent_kafka import Consumer, Producer

    from consumer.wire.codec import HEADER, POST, TRAINING_RECORD, SchemaCatalog
    from rules import Decider, Reason, Source, load_policy

    catalog = SchemaCatalog()
    policy = load_policy()
    decider = Decider(policy)
    key = key_hex.encode()  # the service's key is TF_HMAC_KEY's text; the filter holds pseudonyms under it
    optouts = _filter_of(snapshot)
    post_schema = catalog.by_name(POST).parsed
    out_schema = catalog.by_name(TRAINING_RECORD).parsed
    out_header = HEADER.pack(0, catalog.by_name(TRAINING_RECORD).id)

    def opted_out(user_id: str) -> bool:
        return hmac.new(key, user_id.encode(), "sha256").hexdigest().encode() in optouts

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    acked = [0]

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            acked[0] += 1

    consumer.subscribe([source])
    seen = outputs = 0
    first = cpu_first = 0.0
    while seen < count:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() is not None:
            continue
        if not first:
            first, cpu_first = time.time(), time.process_time()
        seen += 1
        try:
            post = fastavro.schemaless_reader(io.BytesIO(msg.value()[5:]), post_schema, None)
        except Exception:
            continue  # malformed: dropped (no DLQ here)
        if decider.decide_record(Source.POST, post, NO_LIMIT, opted_out) is not Reason.ELIGIBLE:
            continue
        pseudonym = hmac.new(key, post["author_id"].encode(), "sha256").hexdigest()
        record = minimised(post, decider, policy.version, pseudonym, (msg.topic(), msg.partition(), msg.offset()))
        out = io.BytesIO()
        out.write(out_header)
        fastavro.schemaless_writer(out, out_schema, record)
        while True:
            try:
                producer.produce(sink, out.getvalue(), pseudonym.encode(), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        outputs += 1
        producer.poll(0)
    producer.flush(60)
    _report(first, time.time(), cpu_first, time.process_time(), seen, acked[0])
    consumer.close()


def main(argv: list[str]) -> None:
    os.sched_setaffinity(0, {int(os.environ.get("BENCH_CPU", "0"))})
    kind, bootstrap, source, sink, group, count, *rest = argv
    if kind == "passthrough":
        passthrough(bootstrap, source, sink, group, int(count))
    elif kind == "peer":
        peer(bootstrap, source, sink, group, int(count), rest[0], rest[1])
    elif kind == "naive":
        naive(bootstrap, source, sink, group, int(count), rest[0], rest[1])
    else:
        raise SystemExit(f"unknown pipeline {kind}")


if __name__ == "__main__":
    main(sys.argv[1:])
