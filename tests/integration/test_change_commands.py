"""Change events through the operator commands and the real service, on the real broker (issue 22):
`produce --source content_change|account_change` publishes them, the running service retracts them
and stops the records they concern, and `check` says beforehand exactly what it wrote and decided."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.harness import HMAC_KEY, read_all

pytestmark = pytest.mark.integration

AT = "2026-11-02T08:00:00Z"
CONTENT = [
    {"record_id": "p-del", "user_id": "u-a", "change": "DELETED", "at": AT, "source": "post_service"},
    {
        "record_id": "p-old",
        "user_id": "u-a",
        "change": "EDITED",
        "replaced_by": "p-new",
        "at": AT,
        "source": "post_service",
    },
]
ACCOUNTS = [
    {"user_id": "u-gone", "deleted": True, "country": "DE", "at": AT, "source": "account_deletion"},
    {
        "user_id": "u-young",
        "deleted": False,
        "birth_date": "2012-03-04",
        "country": "DE",
        "at": AT,
        "source": "support",
    },
]


def post(post_id: str, author: str) -> dict[str, object]:
    return {
        "post_id": post_id,
        "author_id": author,
        "author_birth_date": "1990-01-01",
        "author_country": "FR",
        "visibility": "PUBLIC",
        "kind": "POST",
        "surface": "facebook",
        "text": "bonjour",
        "created_at": "2026-10-01T10:00:00Z",
    }


POSTS = [
    post("p-del", "u-a"),
    post("p-old", "u-a"),
    post("p-new", "u-a"),
    post("p-g", "u-gone"),
    post("p-y", "u-young"),
]


def cli(*args: str, stdin: bytes = b"", key: bool = False) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    if key:
        env["TF_HMAC_KEY"] = HMAC_KEY.decode()  # the service's key, read as the service reads it
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
        env=env,
    )


def jsonl(items: list[dict[str, object]]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def wait_for(what: str, condition, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (got := condition()) is None or got is False:
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.3)
    return got


def test_produced_changes_are_retracted_and_applied_by_the_running_service_as_check_says(
    kafka, topics, new_service, tmp_path: Path
):
    service = new_service()
    service.start().wait_ready()
    for topic, source, items in (
        (topics.content_changes, "content_change", CONTENT),
        (topics.account_changes, "account_change", ACCOUNTS),
    ):
        produced = cli(
            "produce", "--bootstrap-servers", kafka.bootstrap, "--topic", topic, "--source", source, stdin=jsonl(items)
        )
        assert produced.returncode == 0, produced.stderr
        assert f"produced {len(items)} records to {topic}".encode() in produced.stderr
        keys = [m.key() for m in read_all(kafka.bootstrap, topic)]
        field = "record_id" if source == "content_change" else "user_id"
        assert sorted(keys) == sorted(str(item[field]).encode() for item in items), "keyed by the subject"

    # The retractions the service wrote, as `tail` prints them ...
    count = len(CONTENT) + len(ACCOUNTS)
    wait_for("every change retracted", lambda: len(read_all(kafka.bootstrap, topics.revocations)) >= count)
    tailed = cli("tail", "--bootstrap-servers", kafka.bootstrap, "--topic", topics.revocations, "--timeout", "3")
    assert tailed.returncode == 0, tailed.stderr
    written = sorted(
        orjson.dumps({"key": t["key"], "value": t["value"]}) for t in map(orjson.loads, tailed.stdout.splitlines())
    )
    # ... are what `check` printed for the same lines, with the service's key.
    printed = []
    for source, items in (("content_change", CONTENT), ("account_change", ACCOUNTS)):
        checked = cli("check", "--source", source, stdin=jsonl(items), key=True)
        assert checked.returncode == 0, checked.stderr
        printed += checked.stdout.splitlines()
    assert sorted(printed) == written
    reasons = sorted(orjson.loads(line)["value"]["reason"] for line in written)
    assert reasons == ["account_deleted", "age_corrected", "content_deleted", "edited"]

    # Records that reach the service after the changes are decided as `check` decides them now.
    contents, accounts = tmp_path / "content.jsonl", tmp_path / "accounts.jsonl"
    contents.write_bytes(jsonl(CONTENT))
    accounts.write_bytes(jsonl(ACCOUNTS))
    checked = cli(
        "check",
        "--source",
        "post",
        "--content-changes",
        str(contents),
        "--account-changes",
        str(accounts),
        stdin=jsonl(POSTS),
    )
    assert checked.returncode == 0, checked.stderr
    predicted = {d["id"]: d["decision"] for d in map(orjson.loads, checked.stdout.splitlines())}
    assert predicted == {
        "p-del": "content_changed",
        "p-old": "content_changed",
        "p-new": "eligible",
        "p-g": "account_deleted",
        "p-y": "under_age",
    }
    produced = cli(
        "produce",
        "--bootstrap-servers",
        kafka.bootstrap,
        "--topic",
        topics.posts,
        "--source",
        "post",
        stdin=jsonl(POSTS),
    )
    assert produced.returncode == 0, produced.stderr
    service.wait_processed(len(POSTS))
    service.wait_settled()
    counts: dict[str, int] = {}
    for decision in predicted.values():
        counts[decision] = counts.get(decision, 0) + 1
    assert {reason: n for (_, reason), n in service.decisions().items()} == counts
    emitted = read_all(kafka.bootstrap, topics.training)
    assert len(emitted) == 1 and b"p-new" in emitted[0].value()
