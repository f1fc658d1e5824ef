"""`training-filter produce` and `tail` against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from consumer.commands.jsonl import dumps, parse_line, to_avro
from consumer.commands.topic_io import SOURCES
from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.wire.codec import POST, Codec
from tests import doc_examples
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


# Every type the sources' schemas use, at its edges: null and present dates and languages, enums,
# booleans, timestamps as ISO (with offsets, milliseconds, years 1 and 9999) and as epoch ms.
ROUND_TRIP = {
    "post": [
        POST_LINE,
        {
            **POST_LINE,
            "post_id": "p2",
            "author_birth_date": None,
            "visibility": "ONLY_ME",
            "kind": "CAPTION",
            "language": "sv",
            "text": "\u00e5\u00e4\u00f6 \U0001f642",
            "created_at": "9999-12-31T23:59:59.999Z",
        },
        {**POST_LINE, "post_id": "p3", "author_birth_date": "0001-01-01", "created_at": -1},
    ],
    "ai_interaction": [
        {
            "interaction_id": "i1",
            "user_id": "u2",
            "user_birth_date": "1980-02-29",
            "user_country": "se",
            "context": "GROUP_CHAT",
            "surface": "messenger",
            "language": None,
            "prompt": "hej",
            "response": "",
            "created_at": "2026-03-01T01:30:00.123+02:00",
        }
    ],
    "optout": [{"user_id": "u3", "opted_out_at": "0001-01-01T00:00:00Z", "source": "objection_form"}],
    "consent": [
        {"user_id": "u1", "granted": True, "at": "2026-12-01T09:00:00Z", "source": "consent_dialog"},
        {"user_id": "u1", "granted": False, "at": 1_796_202_000_000, "source": "settings"},
    ],
    "content_change": [
        {
            "record_id": "p1",
            "user_id": "u1",
            "change": "DELETED",
            "at": "2026-12-01T09:00:00Z",
            "source": "post_service",
        },
        {
            "record_id": "p2",
            "user_id": "u1",
            "change": "EDITED",
            "replaced_by": "p3",
            "at": 1_796_202_000_000,
            "source": "post_service",
        },
        {"record_id": "i1", "user_id": "u2", "change": "MADE_NON_PUBLIC", "at": -1, "source": "chat_history"},
    ],
    "account_change": [
        {"user_id": "u1", "deleted": True, "country": "DE", "at": "2026-12-01T09:00:00Z", "source": "account_deletion"},
        {
            "user_id": "u2",
            "deleted": False,
            "birth_date": "2008-02-29",
            "country": "el",
            "at": "2026-12-01T10:00:00.5+01:00",
            "source": "support_correction",
        },
    ],
}


def one_partition_topics(bootstrap: str, *roles: str) -> list[str]:
    names = [f"{role}-{uuid.uuid4().hex[:10]}" for role in roles]
    ensure_topics(bootstrap, [TopicSpec(name, 1, {}) for name in names])
    return names


@pytest.mark.parametrize("source", sorted(ROUND_TRIP))
def test_produce_then_tail_then_produce_gives_the_same_bytes(kafka, source):
    """What `tail` prints of a value, given back to `produce`, is the same value, byte for byte."""
    first, second = one_partition_topics(kafka.bootstrap, "first", "second")
    lines = b"\n".join(orjson.dumps(line) for line in ROUND_TRIP[source])
    result = cli("produce", "--bootstrap-servers", kafka.bootstrap, "--topic", first, "--source", source, stdin=lines)
    assert result.returncode == 0, result.stderr
    count = str(len(ROUND_TRIP[source]))
    tailed = cli("tail", "--bootstrap-servers", kafka.bootstrap, "--topic", first, "--max", count, "--timeout", "10")
    assert tailed.returncode == 0, tailed.stderr
    values = [orjson.loads(line)["value"] for line in tailed.stdout.splitlines()]
    again = cli(
        "produce",
        "--bootstrap-servers",
        kafka.bootstrap,
        "--topic",
        second,
        "--source",
        source,
        stdin=b"\n".join(orjson.dumps(v) for v in values),
    )
    assert again.returncode == 0, again.stderr
    written = [(m.key(), m.value()) for m in read_all(kafka.bootstrap, first)]
    assert len(written) == len(ROUND_TRIP[source])
    assert [(m.key(), m.value()) for m in read_all(kafka.bootstrap, second)] == written
    if source == "consent":  # printed as JSON booleans, not 0 and 1
        assert [v["granted"] for v in values] == [True, False]


# -- the docs' examples ----------------------------------------------------------------------------

PRODUCED = [e for e in doc_examples.examples() if e.command in ("produce", "records") and e.lines is not None]


def test_the_docs_hold_produce_examples():
    assert PRODUCED, "no `training-filter produce` example (or block of records) with its input in the docs"


def _example_args(example: doc_examples.Example, bootstrap: str, topic: str) -> list[str]:
    """The example's own arguments, with this broker and a topic of the test's own."""
    args = list(example.args) if example.command == "produce" else ["--source", example.source]
    for option, value in (("--bootstrap-servers", bootstrap), ("--topic", topic)):
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    return args


@pytest.mark.parametrize("example", PRODUCED, ids=[e.where for e in PRODUCED])
def test_every_produce_example_of_the_docs_publishes_what_it_shows(kafka, example):
    (topic,) = one_partition_topics(kafka.bootstrap, "example")
    lines = example.lines or []
    result = cli("produce", *_example_args(example, kafka.bootstrap, topic), stdin=b"\n".join(lines))
    assert result.returncode == 0, result.stderr
    assert f"produced {len(lines)} records to {topic}".encode() in result.stderr
    name, key_field = SOURCES[example.source]
    schema = Codec().catalog.by_name(name).parsed
    shown = [to_avro(parse_line(line), schema) for line in lines]
    records = read_all(kafka.bootstrap, topic)
    assert [m.key() for m in records] == [record[key_field].encode() for record in shown]
    # Read back: each value decodes (as the service decodes it) to exactly what the example shows.
    decoded = [Codec().decode(m.value(), name)[1] for m in records]
    assert [to_avro(parse_line(dumps(record)), schema) for record in decoded] == shown
