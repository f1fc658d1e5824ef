"""`training-filter backfill --policy NEW.toml` against the real broker, after the real service decided the
input: a stricter policy (minimum_age 30) retracts exactly the records it newly refuses; a looser one with
--admit emits the records it newly admits, never an opted-out user's; --dry-run writes nothing; a
backfill killed with SIGKILL midway and run again emits nothing twice."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.wire.codec import OPTOUT, POST, REVOCATION, TRAINING_RECORD, Codec
from tests.harness import HMAC_KEY, Topics, produce, pseudonym, read_all, wait_for_progress
from tests.samples import POST as SAMPLE

pytestmark = pytest.mark.integration
CODEC = Codec()
REPO = Path(__file__).resolve().parents[2]
CREATED = int(dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC).timestamp() * 1000)
BORN = {  # user -> birth date: their age on 2026-06-01
    "u-25": dt.date(2001, 3, 1),
    "u-40": dt.date(1986, 3, 1),
    "u-17": dt.date(2009, 1, 10),
    "u-17-opted": dt.date(2009, 1, 10),
    "u-14": dt.date(2012, 1, 10),
}


def policy_file(tmp_path: Path, minimum_age: int, version: str) -> Path:
    text = (REPO / "rules" / "policy.toml").read_text().replace("minimum_age = 18", f"minimum_age = {minimum_age}")
    path = tmp_path / f"{version}.toml"
    path.write_text(text.replace('version = "2026-11-24.1"', f'version = "{version}"'))
    return path


def posts(per_user: int, users: dict[str, dt.date] = BORN) -> list[tuple[str, bytes, bytes]]:
    out = []
    for user, born in users.items():
        for i in range(per_user):
            record = {
                **SAMPLE,
                "post_id": f"{user}/{i}",
                "author_id": user,
                "author_birth_date": (born - dt.date(1970, 1, 1)).days,
                "created_at": CREATED,
            }
            out.append((user, f"{user}/{i}", CODEC.encode(POST, record)))
    return out


def publish(kafka: Any, topics: Topics, records: list[tuple[str, bytes, bytes]]) -> None:
    optout = CODEC.encode(OPTOUT, {"user_id": "u-17-opted", "opted_out_at": 1, "source": "objection_form"})
    produce(kafka.bootstrap, [(topics.optouts, b"u-17-opted", optout)])
    produce(kafka.bootstrap, [(topics.posts, user.encode(), value) for user, _, value in records])


def backfill_command(kafka: Any, topics: Topics, group: str, *args: str, **env: str) -> tuple[list[str], dict]:
    command = [sys.executable, "-m", "consumer.cli", "backfill", "--json", *args]
    environment = {
        **os.environ,
        **topics.env(),
        "TF_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "TF_GROUP_ID": group,
        "TF_HMAC_KEY": HMAC_KEY.decode(),
        "TF_OPTOUT_CAPACITY": "200000",
        **env,
    }
    return command, environment


def backfill(kafka: Any, topics: Topics, group: str, *args: str, **env: str) -> dict[str, Any]:
    command, environment = backfill_command(kafka, topics, group, *args, **env)
    result = subprocess.run(command, env=environment, capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    return orjson.loads(result.stdout)


def policy_retractions(kafka: Any, topics: Topics) -> list[tuple[bytes, dict[str, Any]]]:
    out = [(m.key(), CODEC.decode_own(m.value(), REVOCATION)) for m in read_all(kafka.bootstrap, topics.revocations)]
    return [(k, v) for k, v in out if k.startswith(b"policy/")]


def emitted(kafka: Any, topics: Topics) -> list[dict[str, Any]]:
    return [CODEC.decode_own(m.value(), TRAINING_RECORD) for m in read_all(kafka.bootstrap, topics.training)]


def test_a_stricter_policy_retracts_exactly_what_it_newly_refuses_and_a_looser_admits_no_opted_out_user(
    kafka, topics, new_service, tmp_path
):
    records = posts(3)
    publish(kafka, topics, records)
    service = new_service().start()
    service.wait_ready(90)
    service.wait_processed(len(records))
    service.wait_settled()
    service.stop()
    before = emitted(kafka, topics)
    assert sorted(r["record_id"] for r in before) == sorted(f"{u}/{i}" for u in ("u-25", "u-40") for i in range(3))

    strict = policy_file(tmp_path, 30, "strict-30")
    dry = backfill(kafka, topics, service.group, "--policy", str(strict), "--dry-run")
    assert (dry["retracted"], dry["dry_run"]) == (3, True)
    assert policy_retractions(kafka, topics) == [], "a dry run writes nothing"

    summary = backfill(kafka, topics, service.group, "--policy", str(strict))
    got = policy_retractions(kafka, topics)
    newly_refused = [r for r in before if r["author_pseudonym"] == pseudonym("u-25")]
    assert sorted(k for k, _ in got) == sorted(f"policy/{r['record_id']}".encode() for r in newly_refused)
    assert all((v["reason"], v["scope"], v["lifted"]) == ("policy_changed", "RECORD", False) for _, v in got)
    assert (summary["records"], summary["retracted"], summary["admitted"]) == (15, 3, 0)

    loose = policy_file(tmp_path, 16, "loose-16")
    admitted = backfill(kafka, topics, service.group, "--policy", str(loose), "--admit")
    assert admitted["admitted"] == 3
    after = emitted(kafka, topics)
    new = [r for r in after if r["policy_version"] == "loose-16"]
    assert sorted(r["record_id"] for r in new) == ["u-17/0", "u-17/1", "u-17/2"]
    assert pseudonym("u-17-opted") not in {r["author_pseudonym"] for r in after}, "never an opted-out user's"
    lifted = [k for k, v in policy_retractions(kafka, topics) if v["lifted"]]
    assert sorted(lifted) == [b"policy/u-17/0", b"policy/u-17/1", b"policy/u-17/2"]


def test_a_backfill_killed_midway_and_run_again_emits_nothing_twice(kafka, topics, tmp_path):
    count = 3000
    records = posts(count // 3, {"u-25": BORN["u-25"], "u-26": dt.date(2000, 5, 5), "u-40": BORN["u-40"]})
    publish(kafka, topics, records)
    strict = policy_file(tmp_path, 30, "strict-30")
    command, environment = backfill_command(kafka, topics, "tf-kill", "--policy", str(strict), TF_BATCH_SIZE="5")
    errors = tmp_path / "backfill.err"
    with errors.open("wb") as err:
        first = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=err)
        try:
            wait_for_progress(errors, first, "backfill", at_least=300)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
    assert first.stdout is not None and first.stdout.read() == b"", "killed before its summary"
    committed = len(policy_retractions(kafka, topics))
    assert 0 < committed < 2000, committed

    summary = backfill(kafka, topics, "tf-kill", "--policy", str(strict))
    assert summary["resumed"] and summary["finished"] and summary["records"] < count
    keys = Counter(k for k, _ in policy_retractions(kafka, topics))
    assert len(keys) == 2000 and set(keys.values()) == {1}, "every newly refused record retracted once"
    assert {k.split(b"/")[1] for k in keys} == {b"u-25", b"u-26"}
    print(f"\nkilled after {committed} of 2000 retractions committed; the second run read {summary['records']}")
