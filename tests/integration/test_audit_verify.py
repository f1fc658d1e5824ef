"""`training-filter audit verify` end to end: the real service writes its receipts to the real broker,
the verifier (a process of its own) passes the run, then catches each tamper with the right kind. Kafka
cannot delete or edit one record, so a tampered topic is a copy of the original with the change, and
the verifier is pointed at the copy (TF_AUDIT_TOPIC, TF_TRAINING_TOPIC, TF_REVOCATIONS_TOPIC); the
stale-feed fault is an opt-out appended, with a broker timestamp an hour before the decisions, where no
receipt's positions include it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from consumer.audit.receipts import RECEIPT, sign
from consumer.devtools.generator import StreamGenerator
from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.wire.codec import OPTOUT, REVOCATION, TRAINING_RECORD, Codec
from tests.harness import HMAC_KEY, Topics, produce, read_all

pytestmark = pytest.mark.integration
CODEC = Codec()
AUDIT_KEY = "audit-key-for-the-verifier-tests-0123"
POLICIES = str(Path(__file__).resolve().parents[2] / "rules")


def verify(kafka: Any, topics: Topics, **env: str) -> tuple[int, dict[str, Any], str]:
    environment = {
        **os.environ,
        **topics.env(),
        "TF_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "TF_HMAC_KEY": HMAC_KEY.decode(),
        "TF_AUDIT_KEY": AUDIT_KEY,
        "TF_OPTOUT_CAPACITY": "200000",
        **env,
    }
    command = [sys.executable, "-m", "consumer.cli", "audit", "verify", "--json", "--policies", POLICIES]
    if "RECORD" not in env:
        command.append("--no-record")
    environment.pop("RECORD", None)
    result = subprocess.run(command, env=environment, capture_output=True, timeout=300, check=False)
    err = result.stderr.decode(errors="replace")
    assert result.stdout, err[-3000:]
    return result.returncode, orjson.loads(result.stdout), err


def copy_topic(kafka: Any, topic: str, change: Callable[[Any], tuple[bytes | None, bytes | None] | None]) -> str:
    """A fresh topic with `topic`'s records, partition by partition, each through `change` (None: left out)."""
    records = sorted(read_all(kafka.bootstrap, topic), key=lambda m: (m.partition(), m.offset()))
    name = f"{topic}-copy-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, [TopicSpec(name, 1 + max((m.partition() for m in records), default=0), {})])
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "log_level": 3})
    for m in records:
        changed = change(m)
        if changed is not None:
            producer.produce(name, changed[1], changed[0], partition=m.partition(), timestamp=m.timestamp()[1])
    assert producer.flush(30) == 0
    return name


def kinds(summary: dict[str, Any]) -> set[str]:
    return set(summary["by_kind"])


def test_the_verifier_passes_a_real_run_and_catches_each_tamper(kafka, topics, new_service, monkeypatch):
    generator = StreamGenerator(seed=31, users_per_pool=200, posts_topic=topics.posts, ai_topic=topics.ai)
    produce(kafka.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    stream = list(generator.stream(3000))
    service = new_service(TF_AUDIT_KEY=AUDIT_KEY, TF_BATCH_SIZE="300").start()
    service.wait_ready()
    produce(kafka.bootstrap, ((g.topic, g.key, g.value) for g in stream))
    service.wait_processed(len(stream))
    service.wait_settled()
    service.stop()
    monkeypatch.setenv("TF_GROUP_ID", service.group)  # the verifier reads the emitter group's commits (…-revocations)

    code, summary, err = verify(kafka, topics, RECORD="1")
    assert code == 0 and summary["passed"], summary["discrepancies"][:5]
    assert summary["records"] == len(stream) and "audit verify:" in err
    recorded = [m for m in read_all(kafka.bootstrap, topics.audit) if m.key().startswith(b"verification/")]
    assert len(recorded) == 1, "the result is on the audit topic"

    receipts = [m for m in read_all(kafka.bootstrap, topics.audit) if m.key().startswith(b"receipt/")]
    victim = next(m for i, m in enumerate(receipts) if any(o.key() == m.key() for o in receipts[i + 1 :]))

    def without(m: Any) -> Any:
        return None if (m.partition(), m.offset()) == (victim.partition(), victim.offset()) else (m.key(), m.value())

    code, summary, _ = verify(kafka, topics, TF_AUDIT_TOPIC=copy_topic(kafka, topics.audit, without))
    assert code == 1 and {"gap", "broken_chain"} <= kinds(summary), summary["by_kind"]

    def edited(key: bytes | None, **change: Any) -> Callable[[Any], Any]:
        def apply(m: Any) -> Any:
            if (m.partition(), m.offset()) != (victim.partition(), victim.offset()):
                return m.key(), m.value()
            r = CODEC.decode_own(m.value(), RECEIPT)
            r = {**r, **{k: v(r) if callable(v) else v for k, v in change.items()}}
            return m.key(), CODEC.encode(RECEIPT, sign(CODEC, key, r) if key else r)

        return apply

    code, summary, _ = verify(kafka, topics, TF_AUDIT_TOPIC=copy_topic(kafka, topics.audit, edited(None, replica="x")))
    assert code == 1 and {"bad_signature", "broken_chain"} <= kinds(summary), summary["by_kind"]

    def more_eligible(r: dict[str, Any]) -> list[dict[str, Any]]:
        return [{**c, "records": c["records"] + (c["name"] == "eligible")} for c in r["decisions"]]

    for key, caught in ((b"w" * 32, "bad_signature"), (AUDIT_KEY.encode(), "counts_differ")):
        audit = copy_topic(kafka, topics.audit, edited(key, decisions=more_eligible))
        code, summary, _ = verify(kafka, topics, TF_AUDIT_TOPIC=audit)
        assert code == 1 and {caught, "broken_chain"} <= kinds(summary), summary["by_kind"]

    optout_key = next(
        m.key()
        for m in read_all(kafka.bootstrap, topics.revocations)
        if CODEC.decode_own(m.value(), REVOCATION)["reason"] == "opted_out"
    )
    revocations = copy_topic(
        kafka, topics.revocations, lambda m: None if m.key() == optout_key else (m.key(), m.value())
    )
    code, summary, _ = verify(kafka, topics, TF_REVOCATIONS_TOPIC=revocations)
    assert code == 1 and kinds(summary) == {"missing_revocation"}, summary["by_kind"]

    one = read_all(kafka.bootstrap, topics.training)[0]
    record = CODEC.decode_own(one.value(), TRAINING_RECORD)
    forged = CODEC.encode(TRAINING_RECORD, {**record, "source_offset": 10_000_000})
    produce(kafka.bootstrap, [(topics.training, one.key(), forged)])
    code, summary, _ = verify(kafka, topics)
    assert code == 1 and kinds(summary) == {"injected"}, summary["by_kind"]

    decided_at = min(int(CODEC.decode_own(m.value(), RECEIPT)["decided_at"].timestamp() * 1000) for m in receipts)
    late = CODEC.encode(OPTOUT, {"user_id": "late-user", "opted_out_at": 0, "source": "objection_form"})
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "log_level": 3})
    producer.produce(topics.optouts, late, b"late-user", partition=0, timestamp=decided_at - 3_600_000)
    assert producer.flush(30) == 0
    code, summary, _ = verify(kafka, topics)
    assert code == 1 and "stale_feed" in kinds(summary), summary["by_kind"]
