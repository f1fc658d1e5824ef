"""Defects found by a hostile review of issue 22's core (the change set, the guard, the retraction
emitter, the consent history), each shown by the smallest test that fails on the code as it was. A
test still marked xfail(strict=True) names a defect not fixed yet: its reason says what breaks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.service_fixture import InProcessService, emitted_ids, feed, make_kafka, settings, stream
from tests.unit.test_service_changes import account_change, consent, created_at, eligible_posts, with_optouts


def opt_in_policy(tmp_path: Path) -> Path:
    policy = tmp_path / "opt-in.toml"
    text = (Path(__file__).resolve().parents[2] / "rules" / "policy.toml").read_text()
    policy.write_text(text.replace('version = "', 'consent_model = "opt_in"\nversion = "opt-in-', 1))
    return policy


def decided_all(svc: InProcessService, records: list[Any]) -> None:
    svc.wait(lambda: svc.metric("training_filter_records_total") == len(records), what="all decided")


# -- a snapshot resumed when it must not be ----------------------------------------------------------


def test_a_change_snapshot_is_not_resumed_without_the_opt_out_filter_that_kept_its_overflow_out(tmp_path):
    """A correction the change set had no room for keeps its account out through the opt-out filter
    only. Resuming the change snapshot (past that correction) beside an opt-out filter rebuilt from
    the topics, which never hold that keep-out, admits the account's records on their own facts."""
    kafka, records = with_optouts()
    first, moved = sorted({g.user_id for g in eligible_posts(records)})[:2]
    s = settings(TF_CHANGES_SNAPSHOT_PATH=str(tmp_path / "changes.snapshot"), TF_ACCOUNT_CORRECTIONS_CAPACITY="1")
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        kafka.append("account-changes", account_change(first, country="US"), first.encode(), partition=0)
        kafka.append("account-changes", account_change(moved, country="US"), moved.encode(), partition=0)
        svc.wait(
            lambda: svc.metric("training_filter_change_feed_records_total", result="account_refused_full") == 1,
            what="the second correction refused for want of room",
        )
    assert (tmp_path / "changes.snapshot").exists()
    with InProcessService(kafka, s) as svc:  # a restart: the opt-out filter is read again from the topics
        svc.wait_subscribed()
        feed(kafka, records)
        decided_all(svc, records)
    theirs = {g.record_id for g in records if g.user_id == moved}
    assert not theirs & set(emitted_ids(kafka)), "an account whose country is now US is refused after a restart"


def test_a_consent_snapshot_is_not_resumed_past_a_withdrawal_kept_out_by_an_older_opt_out_filter(tmp_path):
    """A withdrawal the consent history had no room for keeps its user out through the opt-out filter
    only. Resumed past it beside an opt-out filter that does not hold it (no opt-out snapshot, or an
    older one), the user's next grant counts as a first grant: what they wrote before it is emitted."""
    kafka = make_kafka()
    kafka.create_topic("consents", 1)
    _, records = stream(300)
    users = sorted({g.user_id for g in records if g.expected == "eligible"})
    for user in users:
        kafka.append("consents", consent(user, True, 0), user.encode())
    kept, overflow = users[:2]
    theirs = sorted((created_at(g), g.record_id) for g in records if g.user_id == overflow)
    grant_at = int(theirs[-1][0].timestamp() * 1000)  # re-granted at their last record: the others stay out
    s = settings(
        TF_POLICY_FILE=str(opt_in_policy(tmp_path)),
        TF_CONSENT_TOPIC="consents",
        TF_CONSENT_CAPACITY="10000",
        TF_CONSENT_WITHDRAWALS_CAPACITY="1",
        TF_OPTOUT_SNAPSHOT_PATH=str(tmp_path / "optouts.snapshot"),
        TF_CONSENT_SNAPSHOT_PATH=str(tmp_path / "consents.snapshot"),
    )
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        kafka.append("consents", consent(kept, False, 1_000), kept.encode())
        kafka.append("consents", consent(overflow, False, 1_000), overflow.encode())
        svc.wait(
            lambda: svc.metric("training_filter_consent_feed_records_total", result="history_full_kept_out") >= 1,
            what="the second withdrawal kept out for want of room",
        )
    (tmp_path / "optouts.snapshot").unlink()  # its last write failed, or its volume is new
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        kafka.append("consents", consent(overflow, True, grant_at), overflow.encode())
        feed(kafka, records)
        decided_all(svc, records)
    before = {rid for at, rid in theirs if int(at.timestamp() * 1000) < grant_at}
    assert before and not before & set(emitted_ids(kafka)), "what they wrote before the re-grant stays out"
