"""`training-filter dlq replay` on the in-memory Kafka (tests/fakes.py), with the service's real parts: dead
letters decided again under today's feeds, the eligible ones emitted with their original provenance,
once; the rest counted and left where they are."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.cli import main
from consumer.commands.dlq_replay import HEADERS_ONLY, NOT_A_LETTER, OTHER_TOPIC, letter_of, replay
from consumer.datapath.dead_letters import dead_letter_headers, truncated
from consumer.service.state import State
from consumer.wire.codec import TRAINING_RECORD
from tests.fakes import FakeClients, FakeKafka, FakeProducer, Msg
from tests.service_fixture import CODEC, RecordingLog, make_kafka, settings, stream


def letter(kafka: FakeKafka, g: Any, offset: int, cause: str = "unknown_schema", partition: int = 1) -> tuple:
    """A dead letter of `g` as the service writes one: its key and value, and where it came from."""
    provenance = (g.topic, partition, offset)
    headers = dead_letter_headers("malformed", cause, provenance, 1_700_000_000_000, [("trace", b"t-1")])
    kafka.append("dlq", g.value, g.key, headers=headers)
    return provenance


def run_replay(kafka: FakeKafka, clients: FakeClients | None = None, dry_run: bool = False, **env: str):
    out, err = io.StringIO(), io.StringIO()
    code = replay(settings(**env), dry_run, True, out, err, clients or kafka.clients(), State(), RecordingLog())
    assert code == 0, err.getvalue()
    return orjson.loads(out.getvalue()), err.getvalue()


def emitted(kafka: FakeKafka) -> list[dict[str, Any]]:
    return [CODEC.decode_own(m.value(), TRAINING_RECORD) for m in kafka.records("training")]


def letters_of(records: list[Any], expected: str, count: int) -> list[Any]:
    found = [g for g in records if g.expected == expected][:count]
    assert len(found) == count
    return found


def test_eligible_letters_are_emitted_once_with_their_original_provenance():
    kafka = make_kafka()
    _, records = stream(300)
    eligible = letters_of(records, "eligible", 5)
    provenances = {letter(kafka, g, 100 + i): g.record_id for i, g in enumerate(eligible)}
    summary, progress = run_replay(kafka)
    got = {(r["source_topic"], r["source_partition"], r["source_offset"]): r["record_id"] for r in emitted(kafka)}
    assert got == provenances
    assert summary["replayed"] == 5 and summary["letters"] == 5 and summary["finished"]
    assert "dlq replay: 5 of 5 records" in progress
    assert len(kafka.records("dlq")) == 5, "nothing is written to the DLQ again"

    again, _ = run_replay(kafka)
    assert again["letters"] == 0 and again["replayed"] == 0 and again["resumed"]
    assert len(emitted(kafka)) == 5, "a second replay emits nothing"


def test_an_opted_out_users_letter_stays_out_and_the_rest_are_counted_by_reason_and_cause():
    kafka = make_kafka()
    generator, records = stream(300)
    for key, value in generator.optouts():
        kafka.append("optouts", value, key)
    opted = letters_of(records, "opted_out", 2)
    minor = letters_of(records, "under_age", 1)
    eligible = letters_of(records, "eligible", 1)
    for i, g in enumerate([*opted, *minor, *eligible]):
        letter(kafka, g, i)
    garbage = dead_letter_headers("malformed", "unknown_schema", ("posts", 0, 9), 0, None)
    kafka.append("dlq", b"\x07not avro", b"k", headers=garbage)
    headers = dead_letter_headers("malformed", "oversized", ("posts", 0, 10), 0, None)
    kafka.append("dlq", None, None, headers=truncated(headers, b"x" * 10, b"k"))
    kafka.append(
        "dlq", eligible[0].value, b"k", headers=dead_letter_headers("malformed", "x", ("other", 0, 1), 0, None)
    )
    kafka.append("dlq", eligible[0].value, b"k", headers=[("trace", b"t")])
    summary, _ = run_replay(kafka)
    assert [r["record_id"] for r in emitted(kafka)] == [eligible[0].record_id]
    assert summary["still_refused"] == {"opted_out": 2, "under_age": 1}
    assert summary["still_undecodable"] == {"bad_framing": 1}, "counted by why it does not decode now"
    assert (summary["headers_only"], summary["other_topic"], summary["not_dead_letters"]) == (1, 1, 1)
    assert summary["letters"] == 8


def test_a_dry_run_decides_and_counts_but_writes_and_commits_nothing():
    kafka = make_kafka()
    _, records = stream(300)
    for i, g in enumerate(letters_of(records, "eligible", 3)):
        letter(kafka, g, i)
    summary, _ = run_replay(kafka, dry_run=True)
    assert summary["replayed"] == 3 and summary["dry_run"]
    assert kafka.records("training") == [] and kafka.groups.get("training-filter-dlq-replay") is None
    real, _ = run_replay(kafka)
    assert real["replayed"] == 3 and len(emitted(kafka)) == 3


class FailingOnce(FakeProducer):
    """A producer whose first transaction commit times out (the broker aborts it)."""

    failed = False

    def commit_transaction(self, timeout: float = -1) -> None:
        if not FailingOnce.failed:
            FailingOnce.failed = True
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True))
        super().commit_transaction(timeout)


class FailingClients(FakeClients):
    def producer(self, config: dict[str, Any]) -> FakeProducer:
        made = FailingOnce(self.kafka, config) if "transactional.id" in config else FakeProducer(self.kafka, config)
        self.made.append(made)
        return made


def test_an_aborted_transaction_is_read_again_and_emits_each_record_once():
    kafka = make_kafka()
    _, records = stream(300)
    eligible = letters_of(records, "eligible", 6)
    for i, g in enumerate(eligible):
        letter(kafka, g, i)
    FailingOnce.failed = False
    summary, _ = run_replay(kafka, FailingClients(kafka), TF_BATCH_SIZE="4")
    assert FailingOnce.failed
    assert sorted(r["record_id"] for r in emitted(kafka)) == sorted(g.record_id for g in eligible)
    assert summary["replayed"] == 6, "the aborted batch is counted once, when it is committed"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("tf.reason", b"malformed")], NOT_A_LETTER),
        ([("tf.source.topic", b"posts"), ("tf.source.partition", b"x"), ("tf.source.offset", b"1")], NOT_A_LETTER),
        ([*dead_letter_headers("malformed", "c", ("posts", 0, 1), 0, None), ("tf.truncated", b"key")], HEADERS_ONLY),
        (dead_letter_headers("malformed", "c", ("elsewhere", 0, 1), 0, None), OTHER_TOPIC),
    ],
)
def test_what_is_not_a_replayable_letter_says_why(headers, expected):
    assert letter_of(Msg("dlq", b"v", headers=headers), frozenset({"posts", "ai"})) == expected


def test_the_letter_is_the_input_record_with_its_own_headers_only():
    headers = dead_letter_headers("malformed", "c", ("posts", 3, 42), 1234, [("trace", b"t"), ("tf.reason", b"x")])
    got = letter_of(Msg("dlq", b"value", b"key", headers=headers), frozenset({"posts"}))
    assert not isinstance(got, str)
    assert (got.topic(), got.partition(), got.offset(), got.timestamp()) == ("posts", 3, 42, (1, 1234))
    assert (got.key(), got.value(), got.headers()) == (b"key", b"value", [("trace", b"t")])


def test_a_configuration_error_exits_2_and_names_the_variable(monkeypatch, capsys):
    monkeypatch.delenv("TF_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("TF_HMAC_KEY", "k" * 32)
    assert main(["dlq", "replay"]) == 2
    assert (
        "training-filter dlq replay: invalid configuration: TF_BOOTSTRAP_SERVERS is required" in capsys.readouterr().err
    )


def test_a_stop_asked_for_midway_commits_the_batch_in_hand_and_the_next_run_goes_on():
    kafka = make_kafka()
    _, records = stream(300)
    eligible = letters_of(records, "eligible", 6)
    for i, g in enumerate(eligible):
        letter(kafka, g, i)
    state = State()

    class StopAfterCommit(FakeProducer):
        def commit_transaction(self, timeout: float = -1) -> None:
            super().commit_transaction(timeout)
            state.request_stop()  # SIGTERM while the first batch was being committed

    class Clients(FakeClients):
        def producer(self, config: dict[str, Any]) -> FakeProducer:
            made = (StopAfterCommit if "transactional.id" in config else FakeProducer)(self.kafka, config)
            self.made.append(made)
            return made

    out, err = io.StringIO(), io.StringIO()
    code = replay(settings(TF_BATCH_SIZE="4"), False, True, out, err, Clients(kafka), state, RecordingLog())
    assert code == 1 and "stopped before the end: run the same command again to go on" in err.getvalue()
    first = orjson.loads(out.getvalue())
    assert (first["finished"], first["replayed"]) == (False, 4)
    assert len(emitted(kafka)) == 4, "the batch in hand was committed"
    summary, _ = run_replay(kafka, TF_BATCH_SIZE="4")
    assert (summary["resumed"], summary["replayed"]) == (True, 2)
    assert sorted(r["record_id"] for r in emitted(kafka)) == sorted(g.record_id for g in eligible)
