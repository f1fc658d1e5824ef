"""Decision receipts (docs/audit.md, issue 23) written by the in-process service on the in-memory Kafka:
one per input partition per batch, covering every offset once, counts that add up to what was
emitted, the outputs' whereabouts, the feeds' positions, a signature and an unbroken chain that goes
on across a restart; in both delivery guarantees. No personal data in any of it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from consumer.audit.receipts import RECEIPT, chain_hash, parse_key, receipt_key, signed_by
from consumer.operations.settings import ConfigError
from consumer.wire.codec import TRAINING_RECORD
from tests.service_fixture import AUDIT_KEY, CODEC, HMAC_KEY, InProcessService, feed, settings
from tests.unit.test_service_changes import with_optouts

GUARANTEES = ["at-least-once", "exactly-once"]


def audited(guarantee: str, **env: str) -> Any:
    return settings(TF_AUDIT_KEY=AUDIT_KEY, TF_PROCESSING_GUARANTEE=guarantee, TF_TRANSACTION_INTERVAL_MS="50", **env)


def receipts(kafka: Any) -> list[tuple[bytes, bytes, dict[str, Any]]]:
    return [
        (m.key(), m.value(), CODEC.decode_own(m.value(), RECEIPT))
        for m in kafka.records("audit")
        if parse_key(m.key()) is not None  # the audit topic holds the record of recipients too
    ]


def by_partition(kafka: Any) -> dict[tuple[str, int], list[tuple[bytes, dict[str, Any]]]]:
    out: dict[tuple[str, int], list[tuple[bytes, dict[str, Any]]]] = {}
    for key, value, r in receipts(kafka):
        named = parse_key(key)
        assert named == (r["input_topic"], r["input_partition"]), "the key names the receipt's input partition"
        out.setdefault(named, []).append((value, r))
    return out


def run_all(kafka: Any, records: list[Any], s: Any) -> None:
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        svc.wait(lambda: svc.metric("training_filter_records_total") >= len(records), what="all decided")
        svc.wait(lambda: covered(kafka) >= len(records), what="every record receipted")
        svc.wait(
            lambda: svc.metric("training_filter_audit_receipts_total") == len(receipts(kafka)),
            what="the receipts counted",
        )


def covered(kafka: Any) -> int:
    return sum(r["records"] for _, _, r in receipts(kafka))


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_every_input_offset_is_receipted_once_with_counts_that_match_the_output(guarantee):
    kafka, records = with_optouts(400)
    run_all(kafka, records, audited(guarantee))
    chains = by_partition(kafka)
    for topic in ("posts", "ai"):
        for partition in range(len(kafka.topics[topic].partitions)):
            written = len(kafka.topics[topic].partitions[partition])
            chain = [r for _, r in chains.get((topic, partition), [])]
            assert written == 0 or chain, f"{topic}/{partition} has no receipt"
            expected_first = 0
            for r in chain:  # consecutive ranges from the partition's first offset: no gap, no overlap
                assert r["first_offset"] == expected_first, (topic, partition, r["first_offset"])
                expected_first = r["last_offset"] + 1
                assert (
                    sum(c["records"] for c in r["decisions"])
                    == r["records"]
                    == r["last_offset"] - r["first_offset"] + 1
                )
            assert expected_first == written
    emitted = Counter()
    for m in kafka.records("training"):
        t = CODEC.decode_own(m.value(), TRAINING_RECORD)
        emitted[t["source_topic"], t["source_partition"]] += 1
    eligible = Counter()
    for (topic, partition), chain in chains.items():
        for _, r in chain:
            eligible[topic, partition] += sum(c["records"] for c in r["decisions"] if c["name"] == "eligible")
    assert emitted == eligible, "what the receipts call eligible is what was emitted, partition by partition"
    assert sum(eligible.values()) == sum(1 for g in records if g.expected == "eligible")


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_receipts_are_signed_chained_and_say_where_the_outputs_and_the_feeds_were(guarantee):
    kafka, records = with_optouts(300)
    run_all(kafka, records, audited(guarantee))
    where = {(m.partition(), m.offset()) for m in kafka.records("training")}
    optout_ends = {p: len(log) for p, log in enumerate(kafka.topics["optouts"].partitions)}
    for chain in by_partition(kafka).values():
        previous = None
        for value, r in chain:
            assert signed_by(CODEC, AUDIT_KEY.encode(), r), "signed with the audit key"
            assert not signed_by(CODEC, HMAC_KEY.encode(), r), "not with the pseudonymisation key"
            assert r["previous_sha256"] == previous, "each links to the one before it"
            previous = chain_hash(value)
            assert (r["guarantee"], r["policy_version"], len(r["policy_sha256"])) == (
                guarantee,
                settings().policy.version,
                64,
            )
            feeds = {(f["feed"], f["topic"], f["partition"]): f["next_offset"] for f in r["feeds"]}
            assert {p: feeds[("optouts", "optouts", p)] for p in optout_ends} == optout_ends, "every opt-out was read"
            spans = [s for s in r["outputs"] if s["topic"] == "training"]
            for s in spans:
                assert s["first_offset"] <= s["last_offset"] and (s["partition"], s["last_offset"]) in where
    batches = Counter(r["batch_id"] for chain in by_partition(kafka).values() for _, r in chain)
    assert batches, "receipts name their batch"


def test_the_chain_goes_on_across_a_restart_from_the_last_receipt_on_the_audit_topic():
    kafka, records = with_optouts(300)
    half = len(records) // 2
    run_all(kafka, records[:half], audited("at-least-once"))
    last = {named: chain[-1][0] for named, chain in by_partition(kafka).items()}
    before = {value for _, value, _ in receipts(kafka)}
    with InProcessService(kafka, audited("at-least-once")) as svc:  # a new replica: heads from the topic
        svc.wait_subscribed()
        feed(kafka, records[half:])
        svc.wait(lambda: covered(kafka) >= len(records), what="every record receipted")
    later = [(k, v, r) for k, v, r in receipts(kafka) if v not in before]  # in each partition's order
    firsts: dict[tuple[str, int], dict[str, Any]] = {}
    for key, _, r in later:
        firsts.setdefault(parse_key(key), r)  # type: ignore[arg-type]
    assert firsts
    for named, r in firsts.items():
        if named in last:
            assert r["previous_sha256"] == chain_hash(last[named]), f"{named} goes on from its last receipt"


def test_no_audit_key_no_receipts_and_the_audit_key_is_not_the_pseudonymisation_key():
    kafka, records = with_optouts(100)
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        svc.wait(lambda: svc.metric("training_filter_records_total") >= len(records), what="all decided")
    assert receipts(kafka) == [] and kafka.records("audit") == [], "nor a record of recipients"
    with pytest.raises(ConfigError, match="TF_AUDIT_KEY: the audit key is the pseudonymisation key"):
        settings(TF_AUDIT_KEY=HMAC_KEY)


def test_a_receipt_holds_no_user_id_pseudonym_or_text():
    kafka, records = with_optouts(200)
    run_all(kafka, records, audited("at-least-once"))
    text = b"".join(orjson.dumps(r, default=str) for _, _, r in receipts(kafka))
    emitted = [CODEC.decode_own(m.value(), TRAINING_RECORD) for m in kafka.records("training")]
    personal = {g.user_id for g in records} | {t["author_pseudonym"] for t in emitted}
    personal |= {t["text"] for t in emitted if t.get("text")}
    assert personal and not [p for p in personal if p and p.encode() in text]


def test_receipt_keys_place_one_input_partition_in_one_audit_partition():
    kafka, records = with_optouts(200)
    run_all(kafka, records, audited("at-least-once"))
    placed: dict[bytes, set[int]] = {}
    for m in kafka.records("audit"):
        if parse_key(m.key()) is not None:
            placed.setdefault(m.key(), set()).add(m.partition())
    assert placed and all(len(p) == 1 for p in placed.values())
    assert receipt_key("posts", 3) == b"receipt/posts/3" and parse_key(b"receipt/a/b/7") == ("a/b", 7)


def test_the_writer_encodes_once_the_bytes_that_sign_then_encode_give():
    """consumer/audit/writer.signed_value relies on hmac_sha256 being the schema's last field."""
    from consumer.audit.receipts import sign
    from consumer.audit.writer import signed_value
    from tests.samples import RECEIPT as SAMPLE

    for record in ({**SAMPLE, "hmac_sha256": ""}, {**SAMPLE, "decisions": [], "outputs": [], "hmac_sha256": ""}):
        assert signed_value(CODEC, AUDIT_KEY.encode(), record) == CODEC.encode(
            RECEIPT, sign(CODEC, AUDIT_KEY.encode(), record)
        )


def test_a_chain_head_that_cannot_be_read_back_stops_the_service_instead_of_a_silent_new_chain():
    """Without Read on the audit topic every chain would restart unseen (the verifier would call each a
    broken chain): the head's look-up names the topic and what to grant."""
    from confluent_kafka import KafkaError

    from consumer.audit.writer import AuditTopicError, ChainHeads
    from tests.fakes import Msg
    from tests.service_fixture import RecordingLog

    class Refused:
        def get_watermark_offsets(self, tp: Any, timeout: float = -1, cached: bool = False) -> tuple[int, int]:
            return 0, 10

        def assign(self, partitions: Any) -> None:
            pass

        def unassign(self) -> None:
            pass

        def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Msg]:
            error = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
            return [Msg("audit", None, None, 0, 0, error=error)]

    heads = ChainHeads(Refused(), "audit", 2, RecordingLog())
    with pytest.raises(AuditTopicError, match="TF_AUDIT_TOPIC=audit: cannot read the last receipts back"):
        heads.assigned([("posts", 0)])
