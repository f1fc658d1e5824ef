"""Issue 22 through the whole service, in-process (tests/service_fixture.py): content and account changes
stop records that arrive after them (the change set), and each change is retracted on the revocations
topic with the key and scope docs/retractions.md gives; under an opt-in policy a re-grant admits only
what was written after it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from consumer.wire.codec import ACCOUNT_CHANGE, AI_INTERACTION, CONSENT, CONTENT_CHANGE, POST, REVOCATION
from tests.harness import pseudonym
from tests.service_fixture import CODEC, HMAC_KEY, InProcessService, emitted_ids, feed, make_kafka, settings, stream

AT = 1_790_000_000_000


def content_change(record_id: str, user_id: str, change: str = "DELETED") -> bytes:
    record = {"record_id": record_id, "user_id": user_id, "change": change, "at": AT, "source": "post_service"}
    return CODEC.encode(CONTENT_CHANGE, record)


def account_change(user_id: str, deleted: bool = False, birth_date: dt.date | None = None, country: str = "DE"):
    record = {
        "user_id": user_id,
        "deleted": deleted,
        "birth_date": birth_date,
        "country": country,
        "at": AT,
        "source": "support_correction",
    }
    return CODEC.encode(ACCOUNT_CHANGE, record)


def retractions(kafka: Any) -> list[tuple[bytes, dict[str, Any]]]:
    return [(m.key(), CODEC.decode_own(m.value(), REVOCATION)) for m in kafka.records("revocations")]


def created_at(g: Any) -> dt.datetime:
    return CODEC.decode(g.value, POST if g.source == "post" else AI_INTERACTION)[1]["created_at"]


def key_of(user_id: str) -> str:
    return pseudonym(user_id, HMAC_KEY.encode())


def with_optouts(records_count: int = 300) -> tuple[Any, list[Any]]:
    """A fake Kafka with the stream's opt-outs published (its `expected` counts on them), and the stream."""
    kafka = make_kafka()
    generator, records = stream(records_count)
    for key, value in generator.optouts():
        kafka.append("optouts", value, key)
    return kafka, records


def optout_retractions(kafka: Any) -> int:
    return sum(1 for _, value in retractions(kafka) if value["reason"] == "opted_out")


def changes(kafka: Any) -> list[tuple[bytes, dict[str, Any]]]:
    return [(k, v) for k, v in retractions(kafka) if v["reason"] != "opted_out"]


def eligible_posts(records: list[Any]) -> list[Any]:
    return [g for g in records if g.expected == "eligible" and g.source == "post"]


def test_a_deletion_read_before_its_record_stops_it_and_is_retracted_by_record_id():
    kafka, records = with_optouts()
    deleted, hidden = eligible_posts(records)[:2]
    for g, change in ((deleted, "DELETED"), (hidden, "MADE_NON_PUBLIC")):
        kafka.append("content-changes", content_change(g.record_id, g.user_id, change), g.record_id.encode())
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        wanted = {g.record_id for g in records if g.expected == "eligible"} - {deleted.record_id, hidden.record_id}
        svc.wait(lambda: set(emitted_ids(kafka)) >= wanted, what="every other eligible record")
        svc.wait(lambda: svc.metric("training_filter_records_total") == len(records), what="all decided")
        svc.wait(lambda: len(changes(kafka)) == 2, what="both retracted")
    assert set(emitted_ids(kafka)) == wanted, "the changed records are not emitted, whatever the order"
    assert svc.metric("training_filter_records_total", decision="content_changed") == 2
    got = dict(changes(kafka))
    assert got[b"content/" + deleted.record_id.encode()]["scope"] == "RECORD"
    assert got[b"content/" + deleted.record_id.encode()]["reason"] == "content_deleted"
    assert got[b"content/" + deleted.record_id.encode()]["author_pseudonym"] == key_of(deleted.user_id)
    assert got[b"content/" + hidden.record_id.encode()]["reason"] == "made_non_public"
    assert got[b"content/" + hidden.record_id.encode()]["record_id"] == hidden.record_id


def test_a_deleted_account_is_refused_for_good_and_retracted_as_an_author():
    kafka, records = with_optouts()
    gone = eligible_posts(records)[0].user_id
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        kafka.append("account-changes", account_change(gone, deleted=True), gone.encode())
        svc.wait(lambda: len(changes(kafka)) == 1, what="the deletion retracted")
        feed(kafka, records)
        svc.wait(lambda: svc.metric("training_filter_records_total") == len(records), what="all decided")
    assert not {g.record_id for g in records if g.user_id == gone} & set(emitted_ids(kafka))
    theirs = sum(1 for g in records if g.user_id == gone and g.expected == "eligible")
    assert svc.metric("training_filter_records_total", decision="account_deleted") == theirs
    [(key, value)] = changes(kafka)
    assert key == b"deleted/" + key_of(gone).encode()
    assert (value["scope"], value["reason"], value["created_before"]) == ("AUTHOR", "account_deleted", None)


def test_a_birth_date_corrected_to_under_age_refuses_what_was_written_before_18():
    kafka, records = with_optouts()
    post = eligible_posts(records)[0]
    written = created_at(post).date()
    born = written.replace(year=written.year - 16)  # 16 when the post was written
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        kafka.append("account-changes", account_change(post.user_id, birth_date=born), post.user_id.encode())
        svc.wait(lambda: len(changes(kafka)) == 1, what="the correction retracted")
        feed(kafka, records)
        svc.wait(lambda: svc.metric("training_filter_records_total") == len(records), what="all decided")
    assert post.record_id not in emitted_ids(kafka)
    [(key, value)] = changes(kafka)
    assert key == b"account/" + key_of(post.user_id).encode()
    assert value["reason"] == "age_corrected" and value["scope"] == "AUTHOR"
    eighteen = dt.datetime(born.year + 18, born.month, born.day, tzinfo=dt.UTC)
    assert value["created_before"] == eighteen, "only what was written before the 18th birthday"


def test_a_re_grant_under_opt_in_admits_only_what_was_written_after_it(tmp_path):
    policy = tmp_path / "opt-in.toml"
    text = (Path(__file__).resolve().parents[2] / "rules" / "policy.toml").read_text()
    policy.write_text(text.replace('version = "', 'consent_model = "opt_in"\nversion = "opt-in-', 1))
    kafka = make_kafka()
    kafka.create_topic("consents", 1)
    _, records = stream(300)
    users = sorted({g.user_id for g in records if g.expected == "eligible"})
    for user in users:
        kafka.append("consents", consent(user, True, 0), user.encode())
    regranted = users[0]
    theirs = sorted((created_at(g), g.record_id) for g in records if g.user_id == regranted)
    assert len(theirs) >= 2, "the stream gives the user two records or more"
    grant_at = int(theirs[-1][0].timestamp() * 1000)  # the grant: just at their last record
    s = settings(TF_POLICY_FILE=str(policy), TF_CONSENT_TOPIC="consents", TF_CONSENT_CAPACITY="10000")
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        kafka.append("consents", consent(regranted, False, 1_000), regranted.encode())
        kafka.append("consents", consent(regranted, True, grant_at), regranted.encode())
        svc.wait(lambda: len(changes(kafka)) == 2, what="the withdrawal and the re-grant retracted")
        # The grant sent again later (a consent service re-publishing): the first grant still counts.
        kafka.append("consents", consent(regranted, True, grant_at + 86_400_000), regranted.encode())
        svc.wait(lambda: len(changes(kafka)) == 3, what="the repeated grant retracted")
        feed(kafka, records)
        svc.wait(lambda: svc.metric("training_filter_records_total") == len(records), what="all decided")
    eligible_theirs = {g.record_id for g in records if g.user_id == regranted and g.expected == "eligible"}
    after = {rid for at, rid in theirs if int(at.timestamp() * 1000) >= grant_at} & eligible_theirs
    assert after and eligible_theirs - after, "the stream gives the user eligible records on both sides of the grant"
    assert set(emitted_ids(kafka)) & eligible_theirs == after, "before the re-grant: out; from it on: in"
    (k1, withdrawal), (k2, regrant), (k3, repeat) = changes(kafka)
    assert k1 == k2 == k3 == b"consent/" + key_of(regranted).encode()
    assert (withdrawal["reason"], withdrawal["created_before"]) == ("consent_withdrawn", None)
    assert regrant["created_before"] == dt.datetime.fromtimestamp(grant_at / 1000, dt.UTC)
    assert repeat["created_before"] == regrant["created_before"], "the last read names the first grant's bound"


def consent(user: str, granted: bool, at: int) -> bytes:
    return CODEC.encode(CONSENT, {"user_id": user, "granted": granted, "at": at, "source": "dialog"})
