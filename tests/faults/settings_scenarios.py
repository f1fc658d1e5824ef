"""Fault scenarios of the settings: a configuration that would leak is refused before anything is
touched, and the corrected one then processes the stream with nothing missing and nothing
ineligible emitted."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.devtools.local_kafka import LocalKafka
from tests.faults.scenarios import Row, _stream, check_output, wait_for_output
from tests.harness import ServiceProcess, Topics, produce


def revocations_topic_is_the_optout_topic(broker: LocalKafka, workdir: Path, records: int, seed: int = 11) -> Row:
    """Finding 1 of correctness round three: TF_REVOCATIONS_TOPIC set to the opt-out topic made the
    ledger feed raw user ids into the filter and revocations read back as opt-outs, and every post of
    an opted-out user was emitted. Now: exit 2 naming the variable, no record written to any topic and
    no group joined; then, started correctly, 0 missing and 0 ineligible."""
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream))
    names = list(topics.env().values())
    before = end_offsets(broker.bootstrap, names)
    service = ServiceProcess(
        broker.bootstrap,
        topics,
        workdir,
        env_overrides={"TF_REVOCATIONS_TOPIC": topics.optouts, "TF_LOG_LEVEL": "info"},
    )
    process = service.start().process
    assert process is not None
    try:
        code: int | None = process.wait(60)
    except subprocess.TimeoutExpired:
        code = None  # it ran on: the leak the check prevents
    finally:
        service.kill()
    refused_output = service.log_path.read_text(errors="replace")
    after = end_offsets(broker.bootstrap, names)
    joined = group_exists(broker.bootstrap, service.group)

    service.env_overrides = {"TF_LOG_LEVEL": "info"}
    service.start().wait_ready(90)
    wait_for_output(broker.bootstrap, topics.training, stream, timeout=90)
    service.wait_settled(60)
    service.stop()
    row = check_output(
        "revocations topic = opt-out topic (refused)",
        broker.bootstrap,
        topics.training,
        stream,
        duplicates_allowed=True,
    )
    lines = [line for line in refused_output.splitlines() if line.strip()]
    opted_out = sum(1 for g in stream if g.expected == "opted_out")
    if not opted_out:
        row.failures.append("the stream holds no record of an opted-out user: nothing was tested")
    if code != 2:
        row.failures.append(f"the wrong setting exited {code}, not 2")
    if len(lines) != 1 or "TF_REVOCATIONS_TOPIC" not in lines[0] or "Traceback" in refused_output:
        row.failures.append(f"not one line naming TF_REVOCATIONS_TOPIC: {refused_output[-500:]!r}")
    if after != before:
        changed = {tp: (before.get(tp), o) for tp, o in after.items() if before.get(tp) != o}
        row.failures.append(f"the refused start wrote records: {changed}")
    if joined:
        row.failures.append("the refused start joined its consumer group")
    row.notes.append(
        f"{opted_out} records of opted-out users; refused with exit {code}: {lines[0][:100] if lines else ''}"
    )
    return row


def end_offsets(bootstrap: str, names: list[str]) -> dict[tuple[str, int], int]:
    """Every partition's end offset (retried while a new topic's leader is elected)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tf-end-offsets", "log_level": 3})
    try:
        out = {}
        for name in names:
            for p in sorted(consumer.list_topics(name, timeout=10).topics[name].partitions):
                deadline = time.monotonic() + 20
                while True:
                    try:
                        high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10, cached=False)[1]
                        break
                    except KafkaException:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                out[(name, p)] = int(high)
        return out
    finally:
        consumer.close()


def group_exists(bootstrap: str, group: str) -> bool:
    """Has any of the service's groups (input, -optout-feed, -revocations) been created on the broker?"""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups(request_timeout=10).result(20)
    ids = {g.group_id for g in listed.valid}
    return any(name in ids for name in (group, f"{group}-optout-feed", f"{group}-revocations"))
