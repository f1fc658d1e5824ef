"""Change events as JSON Lines (consumer/commands/change_lines.py): what `produce --source
content_change|account_change` publishes and `check --content-changes/--account-changes` reads. The
same JSON forms as the other sources, errors that name the field and the line (never the value), and
a change file used whole or not at all."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from consumer.commands.change_lines import ChangeFileError, KnownChanges, change_record, read_changes
from consumer.commands.jsonl import JsonRecordError
from consumer.commands.topic_io import SOURCES, produce_lines
from consumer.wire.codec import ACCOUNT_CHANGE, CONTENT_CHANGE, Codec, SchemaCatalog
from rules import AccountFacts

CATALOG = SchemaCatalog()
CONTENT = {
    "record_id": "p1",
    "user_id": "u1",
    "change": "DELETED",
    "at": "2026-03-01T12:00:00Z",
    "source": "post_service",
}
ACCOUNT = {
    "user_id": "u2",
    "deleted": False,
    "birth_date": "2010-06-01",
    "country": "de",
    "at": "2026-03-01T13:00:00+01:00",
    "source": "support_correction",
}
MARCH_1_NOON = 1_772_366_400_000


def test_a_content_change_line_is_the_avro_record_keyed_by_its_record_id():
    record = change_record(orjson.dumps(CONTENT), "content_change", CATALOG)
    assert record == {**CONTENT, "at": MARCH_1_NOON, "replaced_by": None}
    assert SOURCES["content_change"] == (CONTENT_CHANGE, "record_id")
    edited = change_record(
        orjson.dumps({**CONTENT, "change": "EDITED", "replaced_by": "p2"}), "content_change", CATALOG
    )
    assert edited["replaced_by"] == "p2"
    assert Codec().decode(Codec().encode(CONTENT_CHANGE, edited), CONTENT_CHANGE)[1]["replaced_by"] == "p2"


def test_an_account_change_line_is_the_avro_record_keyed_by_its_user_id():
    record = change_record(orjson.dumps(ACCOUNT), "account_change", CATALOG)
    assert record["birth_date"] == 14_761  # days since 1970-01-01: 2010-06-01
    assert record["at"] == MARCH_1_NOON, "an offset is applied: 13:00+01:00 is noon UTC"
    assert record["country"] == "de", "as given: the policy normalises it, as in the service"
    assert SOURCES["account_change"] == (ACCOUNT_CHANGE, "user_id")
    unknown = {k: v for k, v in ACCOUNT.items() if k != "birth_date"}
    assert change_record(orjson.dumps(unknown), "account_change", CATALOG)["birth_date"] is None


def test_timestamps_as_iso_or_epoch_ms_give_the_same_record():
    as_ms = change_record(orjson.dumps({**CONTENT, "at": MARCH_1_NOON}), "content_change", CATALOG)
    assert as_ms == change_record(orjson.dumps(CONTENT), "content_change", CATALOG)
    with pytest.raises(JsonRecordError, match="field 'at' must be ISO-8601 with an offset, or epoch ms"):
        change_record(orjson.dumps({**CONTENT, "at": str(MARCH_1_NOON)}), "content_change", CATALOG)


@pytest.mark.parametrize(
    "source,line,error",
    [
        ("content_change", {**CONTENT, "change": "UNDELETED"}, "field 'change' must be one of DELETED"),
        ("content_change", {**CONTENT, "change": "deleted"}, "field 'change' must be one of"),
        ("content_change", {k: v for k, v in CONTENT.items() if k != "user_id"}, "missing required field 'user_id'"),
        ("content_change", {**CONTENT, "record_id": ""}, "field 'record_id' must not be empty"),
        ("content_change", {**CONTENT, "user_id": ""}, "field 'user_id' must not be empty"),
        ("content_change", {**CONTENT, "at": "2026-03-01T12:00:00"}, "field 'at' must carry a UTC offset"),
        ("account_change", {**ACCOUNT, "deleted": 1}, "field 'deleted' must be true or false"),
        ("account_change", {**ACCOUNT, "deleted": "false"}, "field 'deleted' must be true or false"),
        ("account_change", {**ACCOUNT, "birth_date": "01/06/2010"}, "field 'birth_date' must be a date YYYY-MM-DD"),
        ("account_change", {**ACCOUNT, "birth_date": "2010-02-30"}, "field 'birth_date' is not a calendar date"),
        ("account_change", {**ACCOUNT, "user_id": ""}, "field 'user_id' must not be empty"),
        ("account_change", {**ACCOUNT, "country": None}, "field 'country' must be a string"),
        ("account_change", [ACCOUNT], "a line must hold a JSON object"),
    ],
)
def test_a_bad_change_line_names_the_field_never_the_value(source, line, error):
    with pytest.raises(JsonRecordError) as caught:
        change_record(orjson.dumps(line), source, CATALOG)
    assert error in str(caught.value)
    for value in ("UNDELETED", "2010-02-30", "01/06/2010", "u1", "u2"):
        assert value not in str(caught.value)


def write(tmp_path: Path, name: str, lines: list[object]) -> Path:
    path = tmp_path / name
    path.write_bytes(b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in lines))
    return path


def test_a_change_file_is_what_the_change_set_would_hold_after_it(tmp_path):
    contents = write(tmp_path, "c.jsonl", [CONTENT, b"", {**CONTENT, "record_id": "p9", "change": "MADE_NON_PUBLIC"}])
    accounts = write(
        tmp_path,
        "a.jsonl",
        [
            ACCOUNT,
            {**ACCOUNT, "birth_date": "1990-01-01"},  # the latest states the facts as a whole
            {**ACCOUNT, "user_id": "u3", "deleted": True},
            {**ACCOUNT, "user_id": "u3", "deleted": False},  # a deletion is final all the same
        ],
    )
    known = read_changes(CATALOG, contents, accounts)
    assert known == KnownChanges(
        stopped={"p1", "p9"},
        accounts={"u2": AccountFacts(False, 7305, "de"), "u3": AccountFacts(False, 14_761, "de")},
        deleted={"u3"},
    )
    assert read_changes(CATALOG) is None, "no change file: nothing applied"


def test_one_bad_line_refuses_the_whole_change_file_with_its_number(tmp_path):
    accounts = write(tmp_path, "a.jsonl", [ACCOUNT, b"", {**ACCOUNT, "deleted": None}])
    with pytest.raises(ChangeFileError, match=r"--account-changes .*a\.jsonl: line 3: field 'deleted' must be"):
        read_changes(CATALOG, accounts=accounts)
    contents = write(tmp_path, "c.jsonl", [b"{not json"])
    with pytest.raises(ChangeFileError, match=r"--content-changes .*c\.jsonl: line 1: not JSON"):
        read_changes(CATALOG, content=contents)
    with pytest.raises(ChangeFileError, match="cannot read it"):
        read_changes(CATALOG, content=tmp_path)  # a folder


@pytest.mark.parametrize("source", ["content_change", "account_change"])
def test_produce_reports_bad_change_lines_by_number_and_publishes_none_of_them(source):
    """No broker is reached: nothing valid is queued, so nothing is sent (the broker half is in
    tests/integration/test_change_commands.py)."""
    good = CONTENT if source == "content_change" else ACCOUNT
    lines = [orjson.dumps({**good, "user_id": ""}), b"", b"[]", orjson.dumps({**good, "at": True})]
    errors = io.StringIO()
    code = produce_lines("127.0.0.1:1", "t", source, io.BytesIO(b"\n".join(lines)), errors)
    assert code == 1
    assert errors.getvalue().splitlines() == [
        "line 1: field 'user_id' must not be empty",
        "line 3: a line must hold a JSON object",
        "line 4: field 'at' must be ISO-8601 with an offset, or epoch ms",
        "produced 0 records to t; 3 lines rejected",
    ]
