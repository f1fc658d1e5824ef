"""`training-filter dlq replay` against the real broker and schema registry: the dead letters of a registry
that answered wrongly, replayed once it is fixed, are emitted exactly once with their original provenance
(and an opted-out user's stay out); a second replay emits nothing; a replay killed with SIGKILL midway and
started again emits nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.datapath.dead_letters import dead_letter_headers
from consumer.wire.codec import OPTOUT, POST, TRAINING_RECORD, Codec
from consumer.wire.registry import Registry, RegistrySettings
from tests.harness import HMAC_KEY, Topics, produce, read_all, wait_for_progress
from tests.integration.test_registry_interop import avsc, encode, post, serializer
from tests.samples import POST as SAMPLE_POST

pytestmark = pytest.mark.integration
CODEC = Codec()


def replay_env(kafka: Any, topics: Topics, group: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **topics.env(),
        "TF_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "TF_GROUP_ID": group,
        "TF_HMAC_KEY": HMAC_KEY.decode(),
        "TF_OPTOUT_CAPACITY": "200000",
        **extra,
    }


def replay(env: dict[str, str], *args: str, timeout: float = 120) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "dlq", "replay", "--json", *args],
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    return orjson.loads(result.stdout)


def emitted(kafka: Any, topics: Topics) -> list[dict[str, Any]]:
    return [CODEC.decode_own(m.value(), TRAINING_RECORD) for m in read_all(kafka.bootstrap, topics.training)]


def test_a_registrys_dead_letters_replayed_after_the_fix_are_emitted_exactly_once(
    kafka, registry, registry_proxy, topics, new_service
):
    """The registry answered 404 for a schema it held (a lost replica, a misconfigured mirror): its records
    became dead letters (unknown_schema). Once it is fixed, the replay emits them, once, where they came
    from; an opted-out user's stay out; a second replay emits nothing."""
    proxy = registry_proxy()
    v1 = serializer(registry.url, avsc("post.v1.avsc"))
    mood = serializer(
        registry.url, avsc("post.v1.avsc", [{"name": "mood", "type": ["null", "string"], "default": None}])
    )
    optout = CODEC.encode(OPTOUT, {"user_id": "u-opted", "opted_out_at": 1, "source": "form"})
    produce(kafka.bootstrap, [(topics.optouts, b"u-opted", optout)])
    lost = encode(mood, topics.posts, post("probe", "u-b", mood="calm"))
    proxy.hidden_ids.add(int.from_bytes(lost[1:5], "big"))

    service = new_service(TF_SCHEMA_REGISTRY_URL=proxy.url).start()
    service.wait_ready(90)
    records = [(topics.posts, b"u-a", encode(v1, topics.posts, post(f"fine-{i}", "u-a"))) for i in range(4)]
    records += [
        (topics.posts, b"u-b", encode(mood, topics.posts, post(f"lost-{i}", "u-b", mood="calm"))) for i in range(6)
    ]
    records += [(topics.posts, b"u-opted", encode(mood, topics.posts, post(f"opted-{i}", "u-opted"))) for i in range(2)]
    produce(kafka.bootstrap, records)
    service.wait_processed(len(records))
    service.wait_settled()
    letters = read_all(kafka.bootstrap, topics.dlq)
    assert Counter(dict(m.headers())["tf.cause"] for m in letters) == {b"unknown_schema": 8}

    proxy.hidden_ids.clear()  # the fix
    env = replay_env(kafka, topics, service.group, TF_SCHEMA_REGISTRY_URL=proxy.url)
    summary = replay(env)
    assert (summary["letters"], summary["replayed"], summary["still_refused"]) == (8, 6, {"opted_out": 2})
    assert summary["still_undecodable"] == {} and summary["finished"]

    out = emitted(kafka, topics)
    ids = Counter(r["record_id"] for r in out)
    assert ids == Counter({f"fine-{i}": 1 for i in range(4)} | {f"lost-{i}": 1 for i in range(6)}), "each once"
    where = {
        _post_id(m, registry.url): (m.topic(), m.partition(), m.offset())
        for m in read_all(kafka.bootstrap, topics.posts)
    }
    for r in out:
        assert (r["source_topic"], r["source_partition"], r["source_offset"]) == where[r["record_id"]]
    assert len(read_all(kafka.bootstrap, topics.dlq)) == 8, "the letters stay; none is written again"

    again = replay(env)
    assert (again["letters"], again["replayed"], again["resumed"]) == (0, 0, True)
    assert len(emitted(kafka, topics)) == 10, "a second replay emits nothing"


def _post_id(msg: Any, url: str) -> str:
    codec = Codec(registry=Registry(RegistrySettings(url=url)))
    return codec.decode(msg.value(), POST)[1]["post_id"]


def test_a_replay_killed_midway_and_started_again_emits_nothing_twice(kafka, topics, tmp_path: Path):
    count = 3000
    letters = []
    for i in range(count):
        value = CODEC.encode(POST, {**SAMPLE_POST, "post_id": f"p-{i}", "author_id": f"u-{i % 50}"})
        headers = dead_letter_headers("malformed", "unknown_schema", (topics.posts, i % 4, 1000 + i), 0, None)
        letters.append((topics.dlq, f"u-{i % 50}".encode(), value, headers))
    _produce_with_headers(kafka.bootstrap, letters)
    env = replay_env(kafka, topics, "tf-kill", TF_BATCH_SIZE="5")

    errors = tmp_path / "replay.err"
    with errors.open("wb") as err:
        first = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "dlq", "replay", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        try:
            wait_for_progress(errors, first, "dlq replay", at_least=300)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
    assert first.stdout is not None and first.stdout.read() == b"", "killed before its summary"
    committed = len(emitted(kafka, topics))
    assert 0 < committed < count, committed

    summary = replay(env)
    assert summary["resumed"] and summary["finished"]
    assert summary["replayed"] == summary["letters"] < count
    ids = Counter(r["record_id"] for r in emitted(kafka, topics))
    assert len(ids) == count and set(ids.values()) == {1}, "every letter emitted, none twice"
    print(f"\nkilled after {committed} of {count} committed; the second run replayed {summary['replayed']}")


def _produce_with_headers(bootstrap: str, records: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10, "log_level": 3})
    for topic, key, value, headers in records:
        producer.produce(topic, value, key, headers=headers)
        producer.poll(0)
    assert producer.flush(60) == 0
