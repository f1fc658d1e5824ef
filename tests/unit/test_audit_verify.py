"""`training-filter audit verify` (docs/audit.md#verifying) on the in-memory Kafka: the service decides a
stream, receipts are written for it (tests/audit_fixture.py), and the verifier passes them; then one
tamper at a time, each caught with the right kind."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from consumer.audit.receipts import RECEIPT, sign
from consumer.operations.settings import load_settings
from consumer.wire.codec import OPTOUT, REVOCATION, TRAINING_RECORD
from tests.audit_fixture import CODEC, POLICY, decided, env, verify
from tests.service_fixture import make_kafka, stream


@pytest.fixture(scope="module", params=["at-least-once", "exactly-once"])
def base(request: Any) -> Any:
    """The service's run, with its receipts, in one guarantee."""
    kafka = make_kafka()
    generator, records = stream(400)
    optouts = generator.optouts()
    for key, value in optouts:
        kafka.append("optouts", value, key)
    s = load_settings(env(TF_PROCESSING_GUARANTEE=request.param, TF_BATCH_SIZE="40"))
    decided(kafka, records, s, len(optouts))
    return kafka, s, request.param


def copy(kafka: Any) -> Any:
    """A fresh fake Kafka holding the same records (a tamper changes only the copy)."""
    clone = make_kafka()
    clone.create_topic("audit", 2)
    for name, topic in kafka.topics.items():
        if name not in clone.topics:
            clone.create_topic(name, len(topic.partitions))
        for p, log in enumerate(topic.partitions):
            for r in log:
                clone.append(name, r.value, r.key, partition=p, headers=r.headers, timestamp=r.timestamp)
    return clone


def result(kafka: Any, monkeypatch: Any, *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = verify(kafka, monkeypatch, "--json", "--no-record", *argv)
    return code, orjson.loads(out)


def kinds(summary: dict[str, Any]) -> set[str]:
    return set(summary["by_kind"])


@pytest.fixture
def receipted(base: Any) -> Any:
    kafka, s, _ = base
    return copy(kafka), s


def test_the_receipts_of_an_honest_run_verify(receipted, monkeypatch):
    kafka, s = receipted
    code, summary = result(kafka, monkeypatch)
    assert summary["discrepancies"] == [] and code == 0
    assert summary["records"] == sum(len(kafka.records(t)) for t in s.input_topics)
    assert summary["revocations_checked"] > 0


def test_a_record_injected_into_the_training_topic_is_caught(receipted, monkeypatch):
    kafka, _ = receipted
    one = kafka.records("training")[0]
    record = CODEC.decode_own(one.value(), TRAINING_RECORD)
    kafka.append("training", CODEC.encode(TRAINING_RECORD, {**record, "source_offset": 10_000}), one.key())
    kafka.append("training", CODEC.encode(TRAINING_RECORD, {**record, "text": "poisoned"}), one.key())
    code, summary = result(kafka, monkeypatch)
    assert code == 1
    assert {"injected", "emitted_not_eligible"} <= kinds(summary), summary["discrepancies"]


def test_a_deleted_receipt_is_a_gap_and_a_broken_chain(receipted, monkeypatch):
    kafka, _ = receipted
    log = kafka.topics["audit"].partitions[0]
    del log[
        log.index(_middle(kafka))
    ]  # Kafka cannot delete one record; the fake can, as a rewritten copy of the topic would
    for i, r in enumerate(log):
        r.offset = i
    code, summary = result(kafka, monkeypatch)
    assert code == 1 and {"gap", "broken_chain"} <= kinds(summary), summary["discrepancies"]


def _middle(kafka: Any) -> Any:
    """A receipt of audit partition 0 that has a successor in its chain."""
    log = kafka.topics["audit"].partitions[0]
    return next(
        r
        for i, r in enumerate(log)
        if r.key.startswith(b"receipt/") and any(later.key == r.key for later in log[i + 1 :])
    )


def _edit(kafka: Any, change: dict[str, Any], key: bytes | None) -> None:
    r = _middle(kafka)
    receipt = CODEC.decode_own(r.value, RECEIPT)
    edited = {**receipt, **change}
    r.value = CODEC.encode(RECEIPT, sign(CODEC, key, edited) if key is not None else edited)


def test_an_edited_receipt_is_a_bad_signature_and_a_broken_chain(receipted, monkeypatch):
    kafka, _ = receipted
    _edit(kafka, {"replica": "someone-else"}, None)
    code, summary = result(kafka, monkeypatch)
    assert code == 1 and {"bad_signature", "broken_chain"} <= kinds(summary), summary["discrepancies"]


@pytest.mark.parametrize("key", [b"w" * 32, env()["TF_AUDIT_KEY"].encode()], ids=["wrong key", "right key"])
def test_altered_counts_are_caught_whatever_key_signs_them(receipted, monkeypatch, key):
    kafka, _ = receipted
    r = CODEC.decode_own(_middle(kafka).value, RECEIPT)
    decisions = [{**c, "records": c["records"] + (1 if c["name"] == "eligible" else 0)} for c in r["decisions"]]
    _edit(kafka, {"decisions": decisions}, key)
    code, summary = result(kafka, monkeypatch)
    assert code == 1 and "broken_chain" in kinds(summary)
    assert ("bad_signature" if key.startswith(b"w") else "counts_differ") in kinds(summary), summary["discrepancies"]


def test_a_removed_revocation_is_caught(receipted, monkeypatch):
    kafka, _ = receipted
    optout_keys = {m.key() for m in kafka.records("optouts")}
    for log in kafka.topics["revocations"].partitions:
        for r in log:
            if r.key is not None and CODEC.decode_own(r.value, REVOCATION)["reason"] == "opted_out":
                r.key = b"moved/" + r.key  # the opt-out's retraction is no longer under its key
                break
    assert optout_keys
    code, summary = result(kafka, monkeypatch)
    assert code == 1 and kinds(summary) == {"missing_revocation"}, summary["discrepancies"]


def test_a_post_decided_without_an_old_opt_out_is_a_stale_feed(base, monkeypatch):
    kafka, _, _ = base
    clone = copy(kafka)
    # An opt-out the broker appended an hour before the service decided, which no receipt's positions
    # include: the feed was stale and the service should have paused (its author's posts were emitted).
    audit = clone.records("audit")  # receipts, and the record of recipients' snapshots
    receipts = [CODEC.decode_own(m.value(), RECEIPT) for m in audit if (m.key() or b"").startswith(b"receipt/")]
    decided_at = min(int(r["decided_at"].timestamp() * 1000) for r in receipts)
    optout = CODEC.encode(OPTOUT, {"user_id": "late-user", "opted_out_at": 0, "source": "objection_form"})
    clone.append("optouts", optout, b"late-user", partition=0, timestamp=decided_at - 3_600_000)
    code, summary = result(clone, monkeypatch)
    assert code == 1 and "stale_feed" in kinds(summary), summary["discrepancies"]
    stale = [d for d in summary["discrepancies"] if d["kind"] == "stale_feed"]
    assert len(stale) == len(receipts), "every receipt was decided without it"
    assert "late-user" not in orjson.dumps(summary).decode(), "no user id in the result"


def test_an_unknown_policy_is_named_and_a_bad_window_is_a_configuration_error(receipted, monkeypatch, tmp_path):
    kafka, _ = receipted
    code, summary = result(kafka, monkeypatch, "--policies", str(tmp_path))
    assert code == 1 and "unknown_policy" in kinds(summary)
    code, _, err = verify(kafka, monkeypatch, "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z")
    assert code == 2 and "--until must be later" in err
    code, _, err = verify(kafka, monkeypatch, TF_AUDIT_KEY="short")
    assert code == 2 and "TF_AUDIT_KEY" in err


def test_a_policy_file_that_does_not_load_is_named_on_stderr(receipted, monkeypatch, tmp_path):
    kafka, _ = receipted
    (tmp_path / "policy.toml").write_bytes(POLICY.read_bytes())  # the one deployed: it still verifies
    (tmp_path / "broken.toml").write_text("version = [\n")
    (tmp_path / "latin1.toml").write_bytes("# caf\xe9\n".encode("latin-1"))
    code, out, err = verify(kafka, monkeypatch, "--json", "--no-record", "--policies", str(tmp_path))
    assert code == 0 and orjson.loads(out)["passed"], err
    said = [line for line in err.splitlines() if "does not load" in line]
    assert len(said) == 2, err
    assert any(str(tmp_path / "broken.toml") in line for line in said)
    assert any(str(tmp_path / "latin1.toml") in line and "UTF-8" in line for line in said)


def test_the_result_is_recorded_signed_on_the_audit_topic(receipted, monkeypatch):
    kafka, _ = receipted
    code, out, err = verify(kafka, monkeypatch)
    assert code == 0, out + err
    assert "PASSED" in out and "audit verify:" in err
    from consumer.audit.receipts import VERIFICATION, signed_by

    recorded = [m for m in kafka.records("audit") if m.key().startswith(b"verification/")]
    assert len(recorded) == 1
    value = CODEC.decode_own(recorded[0].value(), VERIFICATION)
    assert value["passed"] and signed_by(CODEC, env()["TF_AUDIT_KEY"].encode(), value, VERIFICATION)
