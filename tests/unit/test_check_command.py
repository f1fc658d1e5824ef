"""`training-filter check`: JSON Lines in, one decision per line out, never a crash."""

from __future__ import annotations

import dataclasses
import io
import os
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


# -- change events (issue 22): records decided as the service decides them now, and the retractions --

CONTENT_CHANGE = {"record_id": "p1", "user_id": "u1", "change": "DELETED", "at": 1_772_366_400_000, "source": "ps"}
ACCOUNT_CHANGE = {"user_id": "u1", "deleted": False, "country": "DE", "at": 1_772_366_400_000, "source": "support"}


def run_with_changes(tmp_path, lines, contents=(), accounts=(), source="post", optouts_path=None, **options):
    paths = {}
    for option, items in (("content_changes", contents), ("account_changes", accounts)):
        if items:
            paths[option] = tmp_path / f"{option}.jsonl"
            paths[option].write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    stdin = io.BytesIO(b"\n".join(orjson.dumps(line) for line in lines))
    stdout, stderr = io.BytesIO(), io.StringIO()
    code = run_check(source, POLICY, optouts_path, stdin, stdout, stderr=stderr, **paths, **options)
    return code, [orjson.loads(line) for line in stdout.getvalue().splitlines()], stderr.getvalue()


def decided(tmp_path, lines, contents=(), accounts=(), source="post", **options):
    code, out, errors = run_with_changes(tmp_path, lines, contents, accounts, source, **options)
    assert code == 0, errors
    return [(d["id"], d["decision"]) for d in out]


def test_a_content_change_stops_its_record_id_and_no_other(tmp_path):
    lines = [ADULT_POST, {**ADULT_POST, "post_id": "p2"}, {**ADULT_POST, "post_id": "p3", "visibility": "FRIENDS"}]
    contents = [CONTENT_CHANGE, {**CONTENT_CHANGE, "record_id": "p3", "change": "MADE_NON_PUBLIC"}]
    assert decided(tmp_path, lines, contents) == [("p1", "content_changed"), ("p2", "eligible"), ("p3", "not_public")]
    assert decided(
        tmp_path, [AI], [{**CONTENT_CHANGE, "record_id": "i1", "user_id": "u7"}], source="ai_interaction"
    ) == [("i1", "content_changed")]


@pytest.mark.parametrize(
    "change,record,decision",
    [
        ({"deleted": True}, {}, "account_deleted"),
        ({"deleted": True}, {"author_birth_date": None}, "account_deleted"),  # no birth date of its own
        ({"deleted": True}, {"author_country": "US"}, "region"),  # its own facts refuse it first
        ({"birth_date": "2012-01-01"}, {}, "under_age"),  # corrected: 14 when it was written
        ({"birth_date": "2008-01-02"}, {}, "under_age"),  # 18 on the day after
        ({"birth_date": "2008-01-01"}, {}, "eligible"),  # 18 that day
        ({"birth_date": "1990-05-01", "country": "US"}, {}, "region"),
        ({"birth_date": "1990-05-01", "country": "el"}, {}, "eligible"),
        ({}, {}, "unknown_age"),  # the account's birth date is not known: nor is the age
        ({"birth_date": "1990-05-01"}, {"author_birth_date": None}, "eligible"),  # the account's date admits it
        ({"birth_date": "2012-01-01"}, {"author_birth_date": None}, "under_age"),
        ({}, {"author_birth_date": None}, "unknown_age"),
        ({"birth_date": "1990-05-01"}, {"author_birth_date": "2012-01-01"}, "under_age"),  # stricter only
        ({"birth_date": "1990-05-01"}, {"author_id": "u2"}, "eligible"),  # another author
    ],
)
def test_an_account_change_re_decides_its_authors_records(tmp_path, change, record, decision):
    assert decided(tmp_path, [{**ADULT_POST, **record}], accounts=[{**ACCOUNT_CHANGE, **change}]) == [("p1", decision)]


def test_opt_outs_and_account_changes_together(tmp_path):
    optouts = tmp_path / "optouts.txt"
    optouts.write_text("u1\nu2\n")
    lines = [ADULT_POST, {**ADULT_POST, "post_id": "p2", "author_id": "u2", "author_birth_date": None}]
    accounts = [{**ACCOUNT_CHANGE, "deleted": True}, {**ACCOUNT_CHANGE, "user_id": "u2", "birth_date": "1990-05-01"}]
    assert decided(tmp_path, lines, accounts=accounts, optouts_path=optouts) == [
        ("p1", "account_deleted"),  # deleted beats opted out: the reason the service counts
        ("p2", "opted_out"),  # admitted by the account's birth date, then its opt-out
    ]
    later = [{**ACCOUNT_CHANGE, "deleted": True}, {**ACCOUNT_CHANGE, "birth_date": "1990-05-01"}]
    assert decided(tmp_path, [ADULT_POST], accounts=later) == [("p1", "opted_out")], "a deletion stays final"


def test_the_shadow_policy_is_decided_with_the_same_changes(tmp_path):
    stricter = dataclasses.replace(POLICY, minimum_age=40, version="strict")
    accounts = [{**ACCOUNT_CHANGE, "birth_date": "1990-05-01"}]
    code, out, table = run_with_changes(
        tmp_path, [ADULT_POST, {**ADULT_POST, "post_id": "p2"}], [CONTENT_CHANGE], accounts, shadow_policy=stricter
    )
    assert code == 0
    assert out == [
        {"id": "p1", "decision": "content_changed", "shadow": "under_age"},  # the age check comes first
        {"id": "p2", "decision": "eligible", "shadow": "under_age"},
    ]
    assert "would remove 1" in table


def test_a_bad_change_file_stops_check_before_any_decision(tmp_path):
    code, out, errors = run_with_changes(
        tmp_path, [ADULT_POST], accounts=[ACCOUNT_CHANGE, {**ACCOUNT_CHANGE, "at": None}]
    )
    assert (code, out) == (2, [])
    assert "--account-changes" in errors and "line 2: field 'at'" in errors


def previews(tmp_path, source, lines, policy=POLICY, **options):
    stdin = io.BytesIO(b"\n".join(x if isinstance(x, bytes) else orjson.dumps(x) for x in lines))
    stdout, stderr = io.BytesIO(), io.StringIO()
    code = run_check(source, policy, None, stdin, stdout, stderr=stderr, **options)
    return code, [orjson.loads(line) for line in stdout.getvalue().splitlines()], stderr.getvalue()


KEY = b"k" * 16 + b"test-key-0123456"
MARCH_1 = "2026-03-01T12:00:00+00:00"


def test_each_content_change_prints_its_record_retraction(tmp_path):
    from tests.harness import pseudonym

    lines = [CONTENT_CHANGE, {**CONTENT_CHANGE, "record_id": "p2", "change": "EDITED", "replaced_by": "p3"}]
    code, out, _ = previews(tmp_path, "content_change", lines, hmac_key=KEY)
    assert code == 0
    record = {"author_pseudonym": pseudonym("u1", KEY), "opted_out_at": MARCH_1, "scope": "RECORD"}
    assert out == [
        {"key": "content/p1", "value": {**record, "reason": "content_deleted", "record_id": "p1"} | NOT_AUTHOR},
        {"key": "content/p2", "value": {**record, "reason": "edited", "record_id": "p2"} | NOT_AUTHOR},
    ]


NOT_AUTHOR = {"created_before": None, "lifted": False}


@pytest.mark.parametrize(
    "change,reason,before",
    [
        ({"deleted": True, "birth_date": "1990-05-01"}, "account_deleted", None),
        ({"birth_date": "2010-06-01"}, "age_corrected", "2028-06-01T00:00:00+00:00"),  # the 18th birthday
        ({"birth_date": "2008-02-29"}, "age_corrected", "2026-03-01T00:00:00+00:00"),  # 1 March, not a leap year
        ({"birth_date": "1990-05-01", "country": "US"}, "region_corrected", None),
        ({"birth_date": "1990-05-01", "country": "uk"}, "region_corrected", None),  # GB: not in the default regions
        ({}, "age_corrected", None),  # no birth date known: all of them
    ],
)
def test_each_account_change_prints_its_author_retraction(tmp_path, change, reason, before):
    from tests.harness import pseudonym

    code, out, errors = previews(tmp_path, "account_change", [{**ACCOUNT_CHANGE, **change}], hmac_key=KEY)
    assert code == 0 and "no HMAC key" not in errors
    author = pseudonym("u1", KEY)
    assert out == [
        {
            "key": f"{'deleted' if reason == 'account_deleted' else 'account'}/{author}",
            "value": {
                "author_pseudonym": author,
                "opted_out_at": MARCH_1,
                "scope": "AUTHOR",
                "reason": reason,
                "record_id": None,
                "created_before": before,
                "lifted": False,
            },
        }
    ]


def test_an_account_retraction_follows_the_policy_given(tmp_path):
    older = dataclasses.replace(POLICY, minimum_age=21, version="21")
    _, out, _ = previews(tmp_path, "account_change", [{**ACCOUNT_CHANGE, "birth_date": "2010-06-01"}], older)
    assert out[0]["value"]["created_before"] == "2031-06-01T00:00:00+00:00"


def test_without_a_key_pseudonyms_and_account_keys_are_null_and_the_rest_exact(tmp_path):
    code, out, errors = previews(tmp_path, "account_change", [ACCOUNT_CHANGE])
    assert code == 0 and "no HMAC key" in errors
    assert out[0]["key"] is None and out[0]["value"]["author_pseudonym"] is None
    assert out[0]["value"]["reason"] == "age_corrected"
    _, out, _ = previews(tmp_path, "content_change", [CONTENT_CHANGE])
    assert out[0]["key"] == "content/p1" and out[0]["value"]["author_pseudonym"] is None


def test_a_bad_change_line_prints_its_error_in_its_place_and_exits_1(tmp_path):
    lines = [CONTENT_CHANGE, b"", {**CONTENT_CHANGE, "change": "GONE"}, b"junk", CONTENT_CHANGE]
    code, out, errors = previews(tmp_path, "content_change", lines, hmac_key=KEY)
    assert code == 1
    assert [o.get("error") for o in out] == [
        None,
        "field 'change' must be one of DELETED, MADE_NON_PUBLIC, EDITED",
        "not JSON: unexpected character, expected a JSON value",
        None,
    ]
    assert "line 3: field 'change'" in errors and "line 4: not JSON" in errors


def cli(*args, stdin=b"", env=None):
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", "check", *args],
        input=stdin,
        capture_output=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("TF_")} | (env or {}),
    )


def test_the_command_reads_the_key_as_the_service_does(tmp_path):
    from tests.harness import pseudonym

    stdin = orjson.dumps({**ACCOUNT_CHANGE, "deleted": True})
    inline = cli("--source", "account_change", stdin=stdin, env={"TF_HMAC_KEY": KEY.decode()})
    assert inline.returncode == 0, inline.stderr
    assert orjson.loads(inline.stdout)["key"] == f"deleted/{pseudonym('u1', KEY)}"
    key_file = tmp_path / "hmac-key"
    key_file.write_bytes(KEY + b"\n")  # trailing newlines ignored, as in the service
    for options, env in ((["--hmac-key-file", str(key_file)], {}), ([], {"TF_HMAC_KEY_FILE": str(key_file)})):
        result = cli("--source", "account_change", *options, stdin=stdin, env=env)
        assert result.stdout == inline.stdout, result.stderr


@pytest.mark.parametrize(
    "args,env,message",
    [
        (
            ["--source", "account_change", "--hmac-key-file", "/no/such/key"],
            {},
            b"--hmac-key-file /no/such/key: cannot read",
        ),
        (["--source", "account_change"], {"TF_HMAC_KEY": "short"}, b"TF_HMAC_KEY: the key is 5 bytes"),
        (["--source", "account_change"], {"TF_HMAC_KEY": "k" * 32, "TF_HMAC_KEY_FILE": "/x"}, b"set only one of"),
        (["--source", "post", "--hmac-key-file", "/x"], {}, b"--hmac-key-file applies to --source content_change"),
        (["--source", "content_change", "--account-changes", "/x"], {}, b"--account-changes applies to --source post"),
        (["--source", "post", "--content-changes", "/no/such/file"], {}, b"--content-changes /no/such/file: no such"),
    ],
)
def test_wrong_change_options_exit_2_saying_what_to_fix(args, env, message):
    result = cli(*args, stdin=orjson.dumps(ADULT_POST), env=env)
    assert result.returncode == 2
    assert message in result.stderr and result.stdout == b""
