"""`training-filter produce` and `tail` against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from consumer.wire.codec import POST, Codec
from tests.harness import produce, read_all

pytestmark = pytest.mark.integration
CLI = (sys.executable, "-m", "consumer.cli")

POST_LINE = {
    "post_id": "p1",
    "author_id": "u1",
    "author_birth_date": "1990-01-01",
    "author_country": "DE",
    "visibility": "PUBLIC",
    "kind": "POST",
    "surface": "facebook",
    "text": "hallo",
    "created_at": "2026-01-01T00:00:00Z",
}


def cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def test_produce_publishes_framed_avro_keyed_by_user_and_reports_bad_lines(kafka, topics):
    lines = b"\n".join([orjson.dumps(POST_LINE), b"{not json", orjson.dumps({**POST_LINE, "post_id": "p2"})])
    result = cli(
        "produce", "--bootstrap-servers", kafka.bootstrap, "--topic", topics.posts, "--source", "post", stdin=lines
    )
    assert result.returncode == 1  # one line was rejected
    assert b"line 2: not JSON" in result.stderr
    assert b"produced 2 records" in result.stderr
    records = read_all(kafka.bootstrap, topics.posts)
    assert sorted(Codec().decode(m.value(), POST)[1]["post_id"] for m in records) == ["p1", "p2"]
    assert {m.key() for m in records} == {b"u1"}


def test_tail_prints_decoded_records_and_dead_letters(kafka, topics):
    codec = Codec()
    good = codec.encode(
        POST,
        {
            "post_id": "p9",
            "author_id": "u9",
            "author_birth_date": None,
            "author_country": "FR",
            "visibility": "PUBLIC",
            "kind": "COMMENT",
            "surface": "x",
            "language": None,
            "text": "t",
            "created_at": 0,
        },
    )
    produce(kafka.bootstrap, [(topics.dlq, b"k", b"\x07garbage"), (topics.dlq, b"k2", good)])
    result = cli("tail", "--bootstrap-servers", kafka.bootstrap, "--topic", topics.dlq, "--max", "2", "--timeout", "10")
    assert result.returncode == 0, result.stderr
    out = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == 2
    by_key = {o["key"]: o for o in out}
    assert by_key["k"]["undecodable"] == "bad_framing" and by_key["k"]["value_base64"]
    assert by_key["k2"]["value"]["post_id"] == "p9" and by_key["k2"]["schema_id"] == 1
    assert by_key["k2"]["value"]["created_at"].startswith("1970-01-01T00:00:00")


def test_tail_of_a_missing_topic_fails_clearly(kafka):
    result = cli("tail", "--bootstrap-servers", kafka.bootstrap, "--topic", "no-such-topic-here", "--timeout", "1")
    assert result.returncode == 1
    assert b"does not exist" in result.stderr


def test_produce_and_tail_with_the_schema_registry(kafka, registry, topics):
    env = {**os.environ, "TF_SCHEMA_REGISTRY_URL": registry.url}
    produced = subprocess.run(
        [*CLI, "produce", "--bootstrap-servers", kafka.bootstrap, "--topic", topics.posts, "--source", "post"],
        input=orjson.dumps(POST_LINE),
        capture_output=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert produced.returncode == 0, produced.stderr
    registered = SchemaRegistryClient({"url": registry.url}).get_latest_version(f"{topics.posts}-value")
    (record,) = read_all(kafka.bootstrap, topics.posts)
    assert int.from_bytes(record.value()[1:5], "big") == registered.schema_id, "framed with the registry's id"
    tailed = subprocess.run(
        [
            *CLI,
            "tail",
            "--bootstrap-servers",
            kafka.bootstrap,
            "--topic",
            topics.posts,
            "--max",
            "1",
            "--timeout",
            "10",
        ],
        capture_output=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert tailed.returncode == 0, tailed.stderr
    (line,) = [orjson.loads(raw) for raw in tailed.stdout.splitlines()]
    assert line["schema_id"] == registered.schema_id and line["value"]["post_id"] == "p1"


def test_a_wrong_registry_setting_stops_the_operator_commands(kafka, topics):
    env = {**os.environ, "TF_SCHEMA_REGISTRY_URL": "ftp://nowhere"}
    result = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "tail", "--bootstrap-servers", kafka.bootstrap, "--topic", topics.posts],
        capture_output=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 2 and b"TF_SCHEMA_REGISTRY_URL" in result.stderr
