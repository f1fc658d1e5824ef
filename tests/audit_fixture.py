"""Decision receipts for the verifier's unit tests, on tests/fakes.py's in-memory Kafka: the in-process
service decides a stream and writes the training topic; `write_receipts` then writes the receipts a
service would have written for it (with consumer/audit/receipts.py: key, signature, chain), one per
`chunk` offsets of each input partition, decided with the feeds at their ends. `verify` runs
`training-filter audit verify` on the same Kafka."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consumer.audit.feed_state import FeedState, FeedStore
from consumer.audit.receipt_log import Receipt
from consumer.audit.receipts import RECEIPT, chain_hash, file_sha256, receipt_key, sign
from consumer.audit.redecide import Redecider
from consumer.commands.audit_verify import main_audit_verify
from consumer.datapath.output_limits import DEFAULT_MAX_VALUE_BYTES, OutputLimits, producer_max_bytes
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations.settings import Settings
from consumer.wire.codec import Codec
from rules import load_policy
from tests.fakes import FakeKafka
from tests.service_fixture import HMAC_KEY, TOPICS, InProcessService, feed

AUDIT_KEY = "a" * 16 + "audit-key-012345"
POLICY = Path(__file__).resolve().parents[1] / "rules" / "policy.toml"
CODEC = Codec()


def env(**extra: str) -> dict[str, str]:
    return {
        **{var: name for var, (name, _) in TOPICS.items()},
        "TF_BOOTSTRAP_SERVERS": "fake-kafka:9092",
        "TF_HMAC_KEY": HMAC_KEY,
        "TF_METRICS_HOST": "127.0.0.1",
        "TF_METRICS_PORT": "0",
        "TF_OPTOUT_CAPACITY": "100000",
        "TF_BATCH_TIMEOUT_MS": "20",
        "TF_BATCH_MIN_WAIT_MS": "1",
        "TF_AUDIT_KEY": AUDIT_KEY,
        "TF_AUDIT_TOPIC": "audit",
        **extra,
    }


def decided(kafka: FakeKafka, records: list[Any], s: Settings, retractions: int) -> None:
    """The service decides `records` and writes every retraction the feeds call for (at least `retractions`)."""
    if "audit" not in kafka.topics:
        kafka.create_topic("audit", 2)
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        svc.wait(lambda: svc.metric("training_filter_records_total") >= len(records), what="all decided")
        svc.wait(lambda: len(kafka.records("revocations")) >= retractions, what="the retractions")


def feed_ends(kafka: FakeKafka, s: Settings) -> list[dict[str, Any]]:
    """Every feed partition's end: what a receipt's `feeds` says once the mirrors are caught up."""
    out = []
    for feed_name, topics in (
        ("optouts", [s.optouts_topic, s.revocations_topic]),
        ("changes", [s.content_changes_topic, s.account_changes_topic, s.revocations_topic]),
    ):
        for topic in topics:
            for p in range(len(kafka.topics[topic].partitions)):
                end = kafka.high_watermark(topic, p)
                out.append({"feed": feed_name, "topic": topic, "partition": p, "next_offset": end})
    return out


def write_receipts(kafka: FakeKafka, s: Settings, chunk: int = 40, key: str = AUDIT_KEY, **fields: Any) -> int:
    """A receipt per `chunk` offsets of every input partition, in order, chained; how many."""
    store = FeedStore()
    positions = feed_ends(kafka, s)
    for committed in (False, True):
        store.add(committed, [m for t in {p["topic"] for p in positions} for m in kafka.records(t, committed)])
    pseudonymiser = Pseudonymiser(s.hmac_key)
    state = FeedState(s, CODEC, pseudonymiser, store, opt_in=False)
    state.advance({(p["feed"], p["topic"], p["partition"]): p["next_offset"] for p in positions})
    max_value = DEFAULT_MAX_VALUE_BYTES
    limits = OutputLimits.compute(max_value, producer_max_bytes(max_value), s.training_topic, s.dlq_topic, {})
    redecider = Redecider(s, kafka.clients(), CODEC, pseudonymiser, limits)
    sha, policy = file_sha256(POLICY.read_bytes()), load_policy(POLICY)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    written = 0
    for topic in s.input_topics:
        for partition in range(len(kafka.topics[topic].partitions)):
            previous = None
            for messages in _chunks(kafka.records(topic), partition, chunk):
                first, last = messages[0].offset(), messages[-1].offset()
                record = _receipt(topic, partition, first, last, positions, sha, policy.version, now, s, previous)
                out = redecider.decide(Receipt(0, 0, record), policy, sha, state, messages)
                record["records"] = len(messages)
                record["decisions"] = [{"name": k, "records": v} for k, v in sorted(out.decisions.items())]
                record["dead_letters"] = [{"name": k, "records": v} for k, v in sorted(out.dead_letters.items())]
                record.update(fields)
                value = CODEC.encode(RECEIPT, sign(CODEC, key.encode(), record))
                k = receipt_key(topic, partition)
                kafka.append("audit", value, k, partition=zlib.crc32(k) % len(kafka.topics["audit"].partitions))
                previous = chain_hash(value)
                written += 1
    return written


def _chunks(messages: list[Any], partition: int, size: int) -> Iterator[list[Any]]:
    mine = [m for m in messages if m.partition() == partition]
    for i in range(0, len(mine), size):
        yield mine[i : i + size]


def _receipt(
    topic: str,
    partition: int,
    first: int,
    last: int,
    feeds: list[dict[str, Any]],
    sha: str,
    version: str,
    now: dt.datetime,
    s: Settings,
    previous: str | None,
) -> dict[str, Any]:
    return {
        "input_topic": topic,
        "input_partition": partition,
        "first_offset": first,
        "last_offset": last,
        "records": 0,
        "decisions": [],
        "dead_letters": [],
        "guarantee": "at-least-once",
        "batch_id": f"b-{topic}-{partition}-{first}",
        "outputs": [],
        "feeds": feeds,
        "policy_version": version,
        "policy_sha256": sha,
        "shadow_policy_version": None,
        "shadow_policy_sha256": None,
        "decided_at": now,
        "clock_skew_ms": int(s.clock_skew_seconds * 1000),
        "service_version": "test",
        "replica": "replica-0",
        "written_at": now,
        "previous_sha256": previous,
        "hmac_sha256": "",
    }


def verify(kafka: FakeKafka, monkeypatch: Any, *argv: str, **extra: str) -> tuple[int, str, str]:
    """`training-filter audit verify ARGV` with the test's settings; (exit status, stdout, stderr)."""
    for k, v in env(**extra).items():
        monkeypatch.setenv(k, v)
    parser = argparse.ArgumentParser()
    parser.add_argument("--since")
    parser.add_argument("--until")
    parser.add_argument("--offsets", action="append")
    parser.add_argument("--policies", default=str(POLICY.parent))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    out, err = io.StringIO(), io.StringIO()
    code = main_audit_verify(parser.parse_args(list(argv)), out, err, kafka.clients())
    return code, out.getvalue(), err.getvalue()
