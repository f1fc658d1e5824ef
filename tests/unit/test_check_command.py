"""`training-filter check`: JSON Lines in, one decision per line out, never a crash."""

from __future__ import annotations

import io
import subprocess
import sys

import orjson
import pytest

from consumer.commands.check import decisions, run_check
from consumer.wire.codec import SchemaCatalog
from rules import load_policy

POLICY = load_policy()
CATALOG = SchemaCatalog()

ADULT_POST = {
    "post_id": "p1",
    "author_id": "u1",
    "author_birth_date": "1990-05-01",
    "author_country": "de",
    "visibility": "PUBLIC",
    "kind": "POST",
    "surface": "facebook",
    "language": "de",
    "text": "hallo",
    "created_at": "2026-01-01T10:00:00+01:00",
}
AI = {
    "interaction_id": "i1",
    "user_id": "u7",
    "user_birth_date": "1980-01-01",
    "user_country": "SE",
    "context": "DIRECT_WITH_AI",
    "surface": "messenger",
    "prompt": "hej",
    "response": "hej hej",
    "created_at": 1_767_225_600_000,
}


def run(lines, source="post", optouts=frozenset()):
    raw = [line if isinstance(line, (str, bytes)) else orjson.dumps(line) for line in lines]
    return [(d["id"], d["decision"]) for d in decisions(raw, source, POLICY, optouts, CATALOG)]


def test_each_reason_from_json_lines():
    lines = [
        ADULT_POST,
        {**ADULT_POST, "post_id": "p2", "visibility": "FRIENDS"},
        {**ADULT_POST, "post_id": "p3", "author_country": "US"},
        {**ADULT_POST, "post_id": "p4", "author_birth_date": None},
        {**ADULT_POST, "post_id": "p5", "author_birth_date": "2010-01-01"},
        {**ADULT_POST, "post_id": "p6", "author_id": "gone"},
    ]
    assert run(lines, optouts=frozenset({"gone"})) == [
        ("p1", "eligible"),
        ("p2", "not_public"),
        ("p3", "region"),
        ("p4", "unknown_age"),
        ("p5", "under_age"),
        ("p6", "opted_out"),
    ]


def test_ai_interactions_group_chat_is_not_public():
    assert run([AI, {**AI, "interaction_id": "i2", "context": "GROUP_CHAT"}], source="ai_interaction") == [
        ("i1", "eligible"),
        ("i2", "not_public"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1, 2]",
        "42",
        '{"post_id": "m"',
        orjson.dumps({k: v for k, v in ADULT_POST.items() if k != "author_country"}),
        orjson.dumps({**ADULT_POST, "author_country": 49}),
        orjson.dumps({**ADULT_POST, "visibility": "SECRET"}),
        orjson.dumps({**ADULT_POST, "visibility": "public"}),
        orjson.dumps({**ADULT_POST, "author_birth_date": "01/05/1990"}),
        orjson.dumps({**ADULT_POST, "author_birth_date": "1990-02-30"}),
        orjson.dumps({**ADULT_POST, "created_at": "2026-01-01T10:00:00"}),
        orjson.dumps({**ADULT_POST, "created_at": True}),
        orjson.dumps({**ADULT_POST, "created_at": 1.5e12}),
        orjson.dumps(ADULT_POST).replace(b'"2026-01-01T10:00:00+01:00"', b"1180591620717411303424"),
        orjson.dumps({**ADULT_POST, "text": None}),
        orjson.dumps({**ADULT_POST, "language": 7}),
        b"\xff\xfe garbage",
    ],
)
def test_malformed_lines(line):
    ((record_id, decision),) = run([line])
    assert decision == "malformed"
    assert record_id in (None, "p1")


def test_malformed_line_keeps_its_id_when_it_has_one():
    assert run([{**ADULT_POST, "visibility": "SECRET"}]) == [("p1", "malformed")]
    assert run([{**ADULT_POST, "post_id": 5}]) == [(None, "malformed")]


def test_unknown_keys_are_ignored_and_optional_fields_may_be_absent():
    line = {k: v for k, v in ADULT_POST.items() if k != "language"} | {"extra": {"nested": [1]}}
    assert run([line]) == [("p1", "eligible")]


def test_epoch_ms_and_iso_agree():
    as_iso = {**ADULT_POST, "created_at": "2026-01-01T00:00:00Z"}
    as_ms = {**ADULT_POST, "created_at": 1_767_225_600_000}
    assert run([as_iso]) == run([as_ms]) == [("p1", "eligible")]


def test_run_check_writes_one_line_per_input_in_order(tmp_path):
    optouts = tmp_path / "optouts.txt"
    optouts.write_text("u1\n\n")
    stdin = io.BytesIO(
        b"\n".join([orjson.dumps(ADULT_POST), b"junk", orjson.dumps({**ADULT_POST, "post_id": "x", "author_id": "u9"})])
    )
    stdout = io.BytesIO()
    assert run_check("post", POLICY, optouts, stdin, stdout) == 0
    out = [orjson.loads(line) for line in stdout.getvalue().splitlines()]
    assert out == [
        {"id": "p1", "decision": "opted_out"},
        {"id": None, "decision": "malformed"},
        {"id": "x", "decision": "eligible"},
    ]


def test_console_script_end_to_end(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = "t"\nregions = ["US"]\nminimum_age = 21\nmaximum_plausible_age = 120\n'
        "[sources]\npost = true\nai_interaction = true\n"
    )
    stdin = orjson.dumps({**ADULT_POST, "author_country": "us"}) + b"\n" + orjson.dumps(ADULT_POST) + b"\n"
    result = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "check", "--source", "post", "--policy", str(policy)],
        input=stdin,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [orjson.loads(x)["decision"] for x in result.stdout.splitlines()] == ["eligible", "region"]


def test_console_script_reports_a_bad_policy(tmp_path):
    policy = tmp_path / "bad.toml"
    policy.write_text("version = ")
    result = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "check", "--source", "post", "--policy", str(policy)],
        input=b"",
        capture_output=True,
        check=False,
    )
    assert result.returncode == 2
    assert b"not valid TOML" in result.stderr


def test_deeply_nested_and_huge_lines_are_malformed_not_a_crash():
    nested = b'{"post_id": "deep", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    huge = orjson.dumps({**ADULT_POST, "post_id": "huge", "text": "w" * 2_000_000})
    unknown_nested = orjson.dumps({**ADULT_POST, "post_id": "extra", "extra": {"a": [{"b": [1, 2, {"c": None}]}]}})
    assert run([nested, huge, unknown_nested]) == [(None, "malformed"), ("huge", "eligible"), ("extra", "eligible")]
