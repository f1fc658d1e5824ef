"""`training-filter check` with change events answers what the service does (issue 22): the same
records and the same changes given to the in-process service (tests/service_fixture.py) and to
`check --content-changes --account-changes`, record by record, and the retractions the service wrote
against what `check --source content_change|account_change` prints for the same change lines."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import orjson
import pytest

from consumer.commands.change_lines import CHANGE_SOURCES, change_record
from consumer.commands.check import run_check
from consumer.commands.jsonl import dumps
from consumer.wire.codec import AI_INTERACTION, POST, REVOCATION, CodecError
from rules import REASONS, load_policy
from tests.service_fixture import CODEC, HMAC_KEY, InProcessService, emitted_ids, feed, make_kafka, settings, stream

POLICY = load_policy()
AT = "2026-11-02T08:00:00Z"


def content(record_id: str, user_id: str, change: str = "DELETED", **extra: Any) -> bytes:
    return orjson.dumps(
        {"record_id": record_id, "user_id": user_id, "change": change, "at": AT, "source": "post_service", **extra}
    )


def account(user_id: str, deleted: bool = False, birth_date: str | None = None, country: str = "DE") -> bytes:
    line = {"user_id": user_id, "deleted": deleted, "country": country, "at": AT, "source": "support_correction"}
    return orjson.dumps(line if birth_date is None else {**line, "birth_date": birth_date})


def users(records: list[Any], expected: str, count: int, taken: set[str]) -> list[str]:
    """`count` users with a record of `expected`, none already taken (each case its own users)."""
    out = []
    for g in records:
        if g.expected == expected and g.user_id not in taken and g.user_id not in out:
            out.append(g.user_id)
        if len(out) == count:
            break
    assert len(out) == count, f"the stream has {count} users with {expected} records"
    taken.update(out)
    return out


def the_changes(records: list[Any]) -> tuple[list[bytes], list[bytes], dict[str, str]]:
    """Content lines, account lines, and the decision each case's user or record must get."""
    taken: set[str] = set()
    deleted, hidden, edited = [g for g in records if g.expected == "eligible" and g.source == "post"][:3]
    minor_post = next(g for g in records if g.expected == "under_age")
    taken |= {deleted.user_id, hidden.user_id, edited.user_id, minor_post.user_id}
    contents = [
        content(deleted.record_id, deleted.user_id),
        content(hidden.record_id, hidden.user_id, "MADE_NON_PUBLIC"),
        content(edited.record_id, edited.user_id, "EDITED", replaced_by="p-new"),
        content(minor_post.record_id, minor_post.user_id),  # refused on its own facts first
        content("p-never-seen", "u-nobody"),
    ]
    gone, young, moved, flip = users(records, "eligible", 4, taken)
    blank = [u for u in dict.fromkeys(g.user_id for g in records if g.expected == "unknown_age") if u not in taken]
    known, erased = [u for u in blank if _no_birth_date(records, u)][:2]  # users without a birth date at all
    taken |= {known, erased}
    (objector,) = users(records, "opted_out", 1, taken)
    (minor,) = users(records, "under_age", 1, taken)
    accounts = [
        account(gone, deleted=True),
        account(young, birth_date="2016-01-01"),
        account(moved, birth_date="1980-01-01", country="US"),
        account(flip, deleted=True),
        account(flip, birth_date="1980-01-01"),  # after its deletion: still out (a deletion is final)
        account(known, birth_date="1980-01-01"),
        account(erased, deleted=True),
        account(objector, deleted=True),
        account(minor, birth_date="1970-01-01"),  # its records' own birth date still refuses them
    ]
    expect = {
        deleted.record_id: "content_changed",
        hidden.record_id: "content_changed",
        edited.record_id: "content_changed",
        minor_post.record_id: "under_age",
        gone: "account_deleted",
        young: "under_age",
        moved: "region",
        flip: "opted_out",
        known: "eligible",
        erased: "account_deleted",
        objector: "account_deleted",
        minor: "under_age",
    }
    return contents, accounts, expect


def _no_birth_date(records: list[Any], user: str) -> bool:
    return all(_decoded(g) is not None and _decoded(g)[_birth(g)] is None for g in records if g.user_id == user)


def _birth(g: Any) -> str:
    return "author_birth_date" if g.source == "post" else "user_birth_date"


def _decoded(g: Any) -> dict[str, Any] | None:
    try:
        return CODEC.decode(g.value, POST if g.source == "post" else AI_INTERACTION)[1]
    except CodecError:
        return None


def check_lines(source: str, lines: list[bytes], **options: Any) -> tuple[int, list[dict[str, Any]], str]:
    stdout, stderr = io.BytesIO(), io.StringIO()
    code = run_check(source, POLICY, None, io.BytesIO(b"\n".join(lines)), stdout, stderr=stderr, **options)
    return code, [orjson.loads(line) for line in stdout.getvalue().splitlines()], stderr.getvalue()


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The in-process service after the changes, then the stream: what it decided and retracted."""
    kafka = make_kafka()
    generator, records = stream(800)
    optouts = [key for key, value in generator.optouts()]
    for key, value in generator.optouts():
        kafka.append("optouts", value, key)
    contents, accounts, expect = the_changes(records)
    for topic, source, lines in (
        ("content-changes", "content_change", contents),
        ("account-changes", "account_change", accounts),
    ):
        name, key_field = CHANGE_SOURCES[source]
        for line in lines:  # as `produce` publishes them
            record = change_record(line, source, CODEC.catalog)
            kafka.append(topic, CODEC.encode(name, record), record[key_field].encode())
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        written = len(contents) + len(accounts) + len(optouts)
        svc.wait(lambda: len(kafka.records("revocations")) == written, what="every change and opt-out retracted")
        feed(kafka, records)
        svc.wait(lambda: svc.metric("training_filter_records_total") == len(records), what="all decided")
        counts = {r: svc.metric("training_filter_records_total", decision=r) for r in REASONS}
    folder = tmp_path_factory.mktemp("changes")
    paths = {"optouts": folder / "optouts.txt", "content": folder / "c.jsonl", "account": folder / "a.jsonl"}
    paths["optouts"].write_bytes(b"".join(k + b"\n" for k in optouts))
    paths["content"].write_bytes(b"\n".join(contents) + b"\n")
    paths["account"].write_bytes(b"\n".join(accounts) + b"\n")
    retracted = [
        dumps({"key": m.key().decode(), "value": CODEC.decode_own(m.value(), REVOCATION)})
        for m in kafka.records("revocations")
    ]
    return {
        "records": records,
        "counts": counts,
        "emitted": set(emitted_ids(kafka)),
        "retracted": retracted,
        "paths": paths,
        "contents": contents,
        "accounts": accounts,
        "expect": expect,
    }


def decide_all(ran: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    """(record id, user id, check's decision) of every record of the stream, by source."""
    out: list[tuple[str | None, str, str]] = []
    paths = ran["paths"]
    for source in ("post", "ai_interaction"):
        mine = [g for g in ran["records"] if g.source == source]
        lines = [dumps(d) if (d := _decoded(g)) is not None else b"not avro" for g in mine]
        stdout, stderr = io.BytesIO(), io.StringIO()
        code = run_check(
            source,
            POLICY,
            paths["optouts"],
            io.BytesIO(b"\n".join(lines)),
            stdout,
            stderr=stderr,
            content_changes=paths["content"],
            account_changes=paths["account"],
        )
        assert code == 0, stderr.getvalue()
        decided = [orjson.loads(line)["decision"] for line in stdout.getvalue().splitlines()]
        assert len(decided) == len(mine)
        out += [(g.record_id, g.user_id, d) for g, d in zip(mine, decided, strict=True)]
    return out


def test_check_decides_every_record_as_the_service_did_after_the_changes(ran):
    decided = decide_all(ran)
    assert Counter(d for _, _, d in decided) == {r: n for r, n in ran["counts"].items() if n}
    assert {rid for rid, _, d in decided if d == "eligible"} == ran["emitted"]


def test_each_case_of_the_changes_got_its_decision(ran):
    """The scenario is not vacuous: every case meets records, and each is decided as docs/retractions.md says."""
    decided = decide_all(ran)
    by_record = {rid: d for rid, _, d in decided}
    for subject, wanted in ran["expect"].items():
        if subject in by_record:
            assert by_record[subject] == wanted, subject
            continue
        theirs = {d for _, user, d in decided if user == subject}
        if wanted == "eligible":  # an account's birth date admits the public records that had none
            assert "eligible" in theirs, subject
        else:
            assert theirs - {"not_public"} == {wanted}, (subject, theirs)


def test_check_prints_the_retractions_the_service_wrote_for_the_same_change_lines(ran):
    printed = []
    for source, lines in (("content_change", ran["contents"]), ("account_change", ran["accounts"])):
        code, out, _ = check_lines(source, lines, hmac_key=HMAC_KEY.encode())
        assert code == 0
        printed += [dumps(item) for item in out]
    written = [r for r in ran["retracted"] if b'"reason":"opted_out"' not in r]
    assert sorted(printed) == sorted(written)
