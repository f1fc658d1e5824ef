"""`training-filter audit verify` and the outputs the broker refused for good (issue 23): an eligible record
whose training record the broker refused becomes an `output_rejected` letter on the DLQ; its receipt
counts it `eligible` (or `undeliverable`, refused on an earlier attempt too) and as that dead letter. The
verifier accepts it when its letter names its provenance, and only then."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError

from consumer.audit.emitted import refused_output
from consumer.audit.receipts import RECEIPT
from consumer.operations.settings import load_settings
from tests.audit_fixture import CODEC, env, receipted, verify
from tests.service_fixture import InProcessService, feed, make_kafka, stream
from tests.unit.test_audit_verify import copy


def receipt_counts(kafka: Any) -> tuple[Counter[str], Counter[str]]:
    """The decisions and the dead letters of every receipt, summed."""
    decisions: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    for m in kafka.records("audit"):
        if (m.key() or b"").startswith(b"receipt/"):
            r = CODEC.decode_own(m.value(), RECEIPT)
            decisions.update({c["name"]: c["records"] for c in r["decisions"]})
            dead.update({c["name"]: c["records"] for c in r["dead_letters"]})
    return decisions, dead


def letters(kafka: Any) -> list[Any]:
    return [m for m in kafka.records("dlq") if refused_output(m) is not None]


@pytest.fixture(scope="module", params=["at-least-once", "exactly-once"])
def refused(request: Any) -> Any:
    """The service's run during which the broker refused every training record for a while."""
    kafka = make_kafka()
    generator, records = stream(400)
    optouts = generator.optouts()
    for key, value in optouts:
        kafka.append("optouts", value, key)
    s = load_settings(env(TF_PROCESSING_GUARANTEE=request.param, TF_BATCH_SIZE="40"))
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        feed(kafka, records[:200])
        svc.wait(lambda: receipted(kafka) >= 200, what="the first records receipted")
        kafka.produce_errors["training"] = KafkaError.MSG_SIZE_TOO_LARGE
        feed(kafka, records[200:260])
        svc.wait(lambda: receipted(kafka) >= 260, what="the refused records receipted")
        del kafka.produce_errors["training"]
        feed(kafka, records[260:])
        svc.wait(lambda: receipted(kafka) >= len(records), what="every record receipted")
        svc.wait(lambda: len(kafka.records("revocations")) >= len(optouts), what="the retractions")
    assert letters(kafka), "the broker refused no training record"
    return kafka, request.param


def copied(kafka: Any) -> Any:
    """A copy of the fake Kafka that keeps aborted records aborted (the refusals abort transactions)."""
    clone = copy(kafka)
    for name, topic in kafka.topics.items():
        for p, log in enumerate(topic.partitions):
            for mine, theirs in zip(clone.topics[name].partitions[p], log, strict=True):
                mine.aborted = theirs.aborted
    return clone


def result(kafka: Any, monkeypatch: Any) -> tuple[int, dict[str, Any]]:
    code, out, _ = verify(kafka, monkeypatch, "--json", "--no-record")
    return code, orjson.loads(out)


def test_the_receipts_count_each_refused_output_as_its_dead_letter(refused):
    kafka, guarantee = refused
    decisions, dead = receipt_counts(kafka)
    assert dead["output_rejected"] == len(letters(kafka))
    if guarantee == "exactly-once":  # refused in each aborted transaction, then given up on
        assert decisions["undeliverable"] == len(letters(kafka))


def test_an_eligible_record_refused_for_good_verifies_by_its_letter(refused, monkeypatch):
    kafka, _ = refused
    code, summary = result(copied(kafka), monkeypatch)
    assert summary["discrepancies"] == [] and code == 0


def test_a_refused_record_whose_letter_is_gone_is_not_emitted(refused, monkeypatch):
    kafka, _ = refused
    gone = letters(kafka)[0]
    tampered = copied(kafka)
    letter = next(r for r in tampered.topics["dlq"].partitions[gone.partition()] if r.offset == gone.offset())
    letter.headers = [h for h in letter.headers or [] if h[0] != "tf.cause"]  # no longer accounts for it
    code, summary = result(tampered, monkeypatch)
    assert code == 1
    assert {"not_emitted", "counts_differ"} <= set(summary["by_kind"]), summary["discrepancies"]
    named = [d for d in summary["discrepancies"] if d["kind"] == "not_emitted"]
    topic, partition, offset = refused_output(gone)  # type: ignore[misc]
    assert [(d["topic"], d["partition"], d["offset"]) for d in named] == [(topic, partition, offset)]
