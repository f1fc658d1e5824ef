"""`training-filter backfill --policy NEW.toml` on the in-memory Kafka (tests/fakes.py), with the service's
real parts: a stricter policy retracts exactly what it newly refuses; a looser one with --admit emits what
it newly admits, never an opted-out user's; a dry run writes nothing; run again, it emits nothing twice."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.cli import main
from consumer.commands.backfill import backfill
from consumer.commands.backfill_scope import scope_of
from consumer.commands.guarded import UsageError
from consumer.service.state import State
from consumer.wire.codec import ACCOUNT_CHANGE, OPTOUT, POST, REVOCATION, TRAINING_RECORD
from rules import load_policy
from tests.fakes import FakeKafka
from tests.harness import pseudonym
from tests.samples import POST as SAMPLE
from tests.service_fixture import CODEC, HMAC_KEY, InProcessService, RecordingLog, make_kafka, settings
from tests.unit.test_dlq_replay import FailingClients, FailingOnce

REPO = Path(__file__).resolve().parents[2]
CREATED = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
AUTHORS = {  # user -> (born, visibility)
    "u-25": (dt.date(2001, 3, 1), "PUBLIC"),  # eligible at 18, refused at 30
    "u-40": (dt.date(1986, 3, 1), "PUBLIC"),  # eligible under both
    "u-17": (dt.date(2009, 1, 10), "PUBLIC"),  # under_age at 18, eligible at 16
    "u-17-opted": (dt.date(2009, 1, 10), "PUBLIC"),  # the same, but opted out
    "u-14": (dt.date(2012, 1, 10), "PUBLIC"),  # under age under both
    "u-25-private": (dt.date(2001, 3, 1), "FRIENDS"),
}


def policy_file(tmp_path: Path, minimum_age: int, version: str) -> Path:
    text = (REPO / "rules" / "policy.toml").read_text()
    text = text.replace("minimum_age = 18", f"minimum_age = {minimum_age}")
    text = text.replace('version = "2026-11-24.1"', f'version = "{version}"')
    path = tmp_path / f"{version}.toml"
    path.write_text(text)
    return path


def with_posts(per_author: int = 2) -> FakeKafka:
    kafka = make_kafka()
    at = int(CREATED.timestamp() * 1000)
    kafka.append("optouts", CODEC.encode(OPTOUT, {"user_id": "u-17-opted", "opted_out_at": 1, "source": "f"}), b"x")
    written = 0
    for user, (born, visibility) in AUTHORS.items():
        for i in range(per_author):
            record = {
                **SAMPLE,
                "post_id": f"{user}/{i}",
                "author_id": user,
                "author_birth_date": (born - dt.date(1970, 1, 1)).days,
                "visibility": visibility,
                "created_at": at,
            }
            kafka.append("posts", CODEC.encode(POST, record), user.encode(), partition=0, timestamp=at + written)
            written += 1
    return kafka


def options(policy: Path, **given: Any) -> argparse.Namespace:
    return argparse.Namespace(
        policy=str(policy),
        admit=given.get("admit", False),
        dry_run=given.get("dry_run", False),
        since=given.get("since"),
        until=given.get("until"),
        offsets=given.get("offsets"),
        from_training=given.get("from_training", False),
        json=True,
    )


def run_backfill(kafka: FakeKafka, policy: Path, clients: Any = None, env: dict[str, str] | None = None, **given: Any):
    s = settings(TF_SHADOW_POLICY_FILE=str(policy), **(env or {}))
    scope = scope_of(options(policy, **given), s.policy)
    out, err = io.StringIO(), io.StringIO()
    code = backfill(
        s, scope, given.get("dry_run", False), True, out, err, clients or kafka.clients(), State(), RecordingLog()
    )
    assert code == 0, err.getvalue()
    return orjson.loads(out.getvalue()), err.getvalue()


def retracted(kafka: FakeKafka) -> list[tuple[bytes, dict[str, Any]]]:
    return [(m.key(), CODEC.decode_own(m.value(), REVOCATION)) for m in kafka.records("revocations")]


def emitted(kafka: FakeKafka) -> list[dict[str, Any]]:
    return [CODEC.decode_own(m.value(), TRAINING_RECORD) for m in kafka.records("training")]


def test_a_stricter_policy_retracts_exactly_the_records_it_newly_refuses(tmp_path):
    kafka = with_posts()
    summary, progress = run_backfill(kafka, policy_file(tmp_path, 30, "strict-30"))
    got = retracted(kafka)
    assert sorted(k for k, _ in got) == [b"policy/u-25/0", b"policy/u-25/1"]
    for key, value in got:
        assert (value["scope"], value["reason"], value["lifted"]) == ("RECORD", "policy_changed", False)
        assert value["record_id"] == key.decode().removeprefix("policy/")
        assert value["author_pseudonym"] == pseudonym("u-25", HMAC_KEY.encode())
    assert kafka.records("training") == [], "a stricter policy admits nothing"
    assert (summary["records"], summary["retracted"], summary["admitted"]) == (12, 2, 0)
    assert {"active": "eligible", "new": "under_age", "records": 2} in summary["diff"]
    assert "backfill: 12 of 12 records" in progress

    again, _ = run_backfill(kafka, policy_file(tmp_path, 30, "strict-30"))
    assert (again["records"], again["retracted"], again["resumed"]) == (0, 0, True)
    assert len(retracted(kafka)) == 2, "the same backfill again emits nothing"


def test_a_looser_policy_admits_with_admit_but_never_an_opted_out_users_record(tmp_path):
    kafka = with_posts()
    loose = policy_file(tmp_path, 16, "loose-16")
    summary, _ = run_backfill(kafka, loose)
    assert summary["admitted"] == 2 and kafka.records("training") == [], "without --admit: counted only"
    summary, _ = run_backfill(kafka, loose, admit=True)
    records = emitted(kafka)
    assert sorted(r["record_id"] for r in records) == ["u-17/0", "u-17/1"]
    assert {r["policy_version"] for r in records} == {"loose-16"}
    where = {
        CODEC.decode(m.value(), POST)[1]["post_id"]: (m.topic(), m.partition(), m.offset())
        for m in kafka.records("posts")
    }
    assert all((r["source_topic"], r["source_partition"], r["source_offset"]) == where[r["record_id"]] for r in records)
    lifted = retracted(kafka)
    assert sorted(k for k, _ in lifted) == [b"policy/u-17/0", b"policy/u-17/1"]
    assert all(v["lifted"] for _, v in lifted), "each admission lifts a stricter backfill's retraction"
    assert summary["admitted"] == 2 and summary["retracted"] == 0


def test_a_dry_run_prints_the_comparison_and_writes_nothing(tmp_path):
    kafka = with_posts()
    s = settings()
    out, err = io.StringIO(), io.StringIO()
    policy = policy_file(tmp_path, 30, "strict-30")
    scope = scope_of(options(policy, dry_run=True), s.policy)
    s = settings(TF_SHADOW_POLICY_FILE=str(policy))
    assert backfill(s, scope, True, False, out, err, kafka.clients(), State(), RecordingLog()) == 0
    text = out.getvalue()
    assert "newly refused: 2, would be retracted" in text
    assert "eligible        under_age              2  (changes)" in text
    assert "would add 0 (eligible under the shadow policy only), would remove 2" in text
    assert kafka.records("revocations") == [] and kafka.records("training") == []
    real, _ = run_backfill(kafka, policy)
    assert real["retracted"] == 2, "the dry run committed nothing"


def test_an_aborted_transaction_is_decided_again_and_retracts_each_record_once(tmp_path):
    kafka = with_posts(per_author=5)
    FailingOnce.failed = False
    policy = policy_file(tmp_path, 30, "strict-30")
    summary, _ = run_backfill(kafka, policy, FailingClients(kafka), env={"TF_BATCH_SIZE": "4"})
    assert FailingOnce.failed
    assert sorted(k for k, _ in retracted(kafka)) == [f"policy/u-25/{i}".encode() for i in range(5)]
    assert summary["retracted"] == 5


def test_a_range_by_time_or_offsets_decides_only_those_records(tmp_path):
    kafka = with_posts()
    policy = policy_file(tmp_path, 30, "strict-30")
    at = int(CREATED.timestamp() * 1000)
    summary, _ = run_backfill(kafka, policy, since=str(at + 1), until=str(at + 3))  # u-25/1 and u-40/0
    assert summary["records"] == 2 and [k for k, _ in retracted(kafka)] == [b"policy/u-25/1"]
    other = with_posts()
    summary, _ = run_backfill(other, policy, offsets=["posts:0:0-0"])  # u-25's first post
    assert summary["records"] == 1 and [k for k, _ in retracted(other)] == [b"policy/u-25/0"]


def test_over_the_clean_topics_provenance_only_emitted_records_are_decided(tmp_path):
    kafka = with_posts()
    with InProcessService(kafka, settings()) as svc:
        svc.wait(lambda: len(kafka.records("training")) == 4, what="the eligible posts emitted")
    summary, _ = run_backfill(kafka, policy_file(tmp_path, 30, "strict-30"), from_training=True)
    assert summary["decided"] == 4 and summary["retracted"] == 2
    assert sorted(k for k, _ in retracted(kafka) if k.startswith(b"policy/")) == [b"policy/u-25/0", b"policy/u-25/1"]


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"since": "yesterday"}, "must be ISO-8601"),
        ({"since": "2026-06-02T00:00:00Z", "until": "2026-06-01T00:00:00Z"}, "--until must be later"),
        ({"offsets": ["posts:0:9-1"]}, "need 0 <= FIRST <= LAST"),
        ({"offsets": ["posts:0"]}, "give TOPIC:PARTITION:FIRST-LAST"),
        ({"offsets": ["posts:0:1-2"], "since": "2026-06-01T00:00:00Z"}, "--offsets is a range of its own"),
        ({"from_training": True, "admit": True}, "--admit needs a range of the input topics"),
    ],
)
def test_wrong_options_say_what_to_fix(tmp_path, given, error):
    with pytest.raises(UsageError, match=error):
        scope_of(options(policy_file(tmp_path, 30, "strict-30"), **given), load_policy())


def test_the_active_policy_or_its_version_is_refused(tmp_path):
    with pytest.raises(UsageError, match="is the active policy"):
        scope_of(options(REPO / "rules" / "policy.toml"), load_policy())
    with pytest.raises(UsageError, match=re.escape("its version '2026-11-24.1' is the active policy's")):
        scope_of(options(policy_file(tmp_path, 30, "2026-11-24.1")), load_policy())


def test_the_command_line_exits_2_on_a_bad_policy_and_an_opt_in_policy_without_consents(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TF_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TF_HMAC_KEY", "k" * 32)
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n")
    assert main(["backfill", "--policy", str(bad)]) == 2
    assert f"training-filter backfill: invalid configuration: --policy {bad}:" in capsys.readouterr().err
    opt_in = tmp_path / "opt-in.toml"
    opt_in.write_text(
        policy_file(tmp_path, 18, "opt-in").read_text().replace("minimum_age", 'consent_model = "opt_in"\nminimum_age')
    )
    assert main(["backfill", "--policy", str(opt_in)]) == 2
    assert "set TF_CONSENT_TOPIC" in capsys.readouterr().err


def test_a_looser_policy_does_not_admit_what_an_account_retraction_still_names(tmp_path):
    """u-17's birth date was corrected (an account change): the service wrote `account/<pseudonym>`
    under the active policy, naming what they wrote before 18. A looser backfill cannot end that
    retraction (a reader would drop the admitted records), so it holds them back and says so."""
    kafka = with_posts()
    change = {"user_id": "u-17", "deleted": False, "birth_date": AUTHORS["u-17"][0], "country": "DE", "at": 1}
    kafka.append("account-changes", CODEC.encode(ACCOUNT_CHANGE, {**change, "source": "support"}), b"u-17")
    summary, _ = run_backfill(kafka, policy_file(tmp_path, 16, "loose-16"), admit=True)
    assert kafka.records("training") == [] and retracted(kafka) == [], "nothing a reader would drop"
    assert (summary["admitted"], summary["held_by_account_retraction"]) == (0, 2)
