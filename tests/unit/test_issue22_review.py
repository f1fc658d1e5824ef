"""Defects found by a hostile review of issue 22's core (the change set, the guard, the retraction
emitter, the consent history), each shown by the smallest test that fails on the code as it was. A
test still marked xfail(strict=True) names a defect not fixed yet: its reason says what breaks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from consumer.changes import retractions as emitter
from consumer.changes.changeset import ChangeSet
from consumer.changes.guard import ChangeGuard
from consumer.consents.applier import ConsentApplier
from consumer.consents.fingerprints import ConsentSet
from consumer.consents.history import ConsentHistory
from consumer.datapath.batch import BatchProcessor
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.datapath.shadow import Shadow
from consumer.operations.metrics import Metrics
from consumer.wire.codec import ACCOUNT_CHANGE, POST, REVOCATION
from rules import (
    AccountFacts,
    Decider,
    Reason,
    Retraction,
    Source,
    account_retraction,
    load_policy,
    parse_policy,
    recheck,
)
from rules.age import MS_PER_DAY, day_from_date
from tests.fakes import Msg, RecordingProducer, run
from tests.samples import CANDIDATE_POLICY
from tests.samples import POST as SAMPLE_POST
from tests.service_fixture import CODEC, InProcessService, emitted_ids, feed, make_kafka, settings, stream
from tests.unit.test_service_changes import (
    account_change,
    consent,
    created_at,
    eligible_posts,
    key_of,
    retractions,
    with_optouts,
)


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


# -- what an account's facts retract ---------------------------------------------------------------


def test_an_account_retraction_names_every_record_its_facts_now_refuse():
    """A birth date corrected to one that makes the author older than the policy's maximum plausible
    age (a placeholder 1900-01-01) refuses every record written from that age on (`unknown_age`),
    but the retraction only names what was written before the 18th birthday: a reader keeps the rest."""
    decider = Decider(load_policy())
    facts = AccountFacts(False, day_from_date(dt.date(1900, 1, 1)), "DE")
    written = day_from_date(dt.date(2026, 1, 1)) * MS_PER_DAY
    assert recheck(decider, Source.POST, facts, written, 10**15) is Reason.UNKNOWN_AGE
    reason, before = account_retraction(decider, facts, 10**15)
    assert reason is Retraction.AGE_CORRECTED
    assert before is None or written < before, "the reader must drop what the service now refuses"


def account_change_at(user_id: str, country: str, at_ms: int, birth: dt.date | None = None) -> bytes:
    record = {"user_id": user_id, "deleted": False, "birth_date": birth, "country": country, "at": at_ms}
    return CODEC.encode(ACCOUNT_CHANGE, {**record, "source": "support_correction"})


def in_force(read: list[dict[str, Any]]) -> dict[str, Any]:
    """docs/retractions.md, rule 1: the one read last, unless a permanent one came before."""
    for retraction in read:
        if retraction["reason"] in ("opted_out", "account_deleted") and not retraction["lifted"]:
            return retraction
    return read[-1]


def test_the_retraction_in_force_for_an_account_is_the_one_of_its_current_facts():
    """Two changes of one account, in order on its partition, the later stamped earlier (a late
    correction from another service): the service decides with the last (compaction keeps it too),
    and a reader holds the last read (docs/retractions.md, rule 1), so the two agree."""
    kafka, _ = with_optouts()
    user = "u-moved"
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        kafka.append("account-changes", account_change_at(user, "US", 2_000_000), user.encode(), partition=0)
        born = dt.date(1990, 1, 1)
        kafka.append("account-changes", account_change_at(user, "DE", 1_000_000, born), user.encode(), partition=0)
        mine = b"account/" + key_of(user).encode()
        svc.wait(lambda: sum(1 for k, _ in retractions(kafka) if k == mine) == 2, what="both retracted")
    written = [v for k, v in retractions(kafka) if k == mine]
    assert [w["reason"] for w in written] == ["region_corrected", "age_corrected"], "in the changes' order"
    assert written[0]["opted_out_at"] > written[1]["opted_out_at"], "the later change is stamped earlier"
    assert in_force(written) == written[-1], "a reader holds the facts the service decides with"


# -- consents read in any order --------------------------------------------------------------------


def consent_msg(user: str, granted: bool, at_ms: int, partition: int) -> Msg:
    return Msg("consents", consent(user, granted, at_ms), user.encode(), partition, 0)


def test_a_withdrawal_read_after_a_newer_grant_of_another_partition_fails_closed_until_the_next_grant():
    """The consent topic grew (docs/retractions.md: it must not): a user's withdrawal sits in an old
    partition, their later grant in a new one. Read withdrawal first, the user is consented from the
    grant on. Read the other way round, the first grant's time is not kept (a first grant covers all),
    so the withdrawal withdraws: the user is out, never in wrongly, until their next grant."""
    pseudonymiser = Pseudonymiser(b"k" * 32)
    p = pseudonymiser.pseudonym(b"u1")
    states = []
    for order in ((1_000, 2_000), (2_000, 1_000)):
        applier = ConsentApplier(ConsentSet(1_000), ConsentHistory(100), CODEC, pseudonymiser, Metrics())
        for at in order:
            applier.record(consent_msg("u1", at == 2_000, at, partition=0 if at == 1_000 else 1), live=True)
        states.append((bool(applier.members.contains(p)), applier.history.since.get(p), applier))
    assert states[0][:2] == (True, 2_000), "withdrawal first, then the grant: eligible from the grant on"
    assert states[1][:2] == (False, None), "grant first, then the older withdrawal: out (fail closed)"
    applier = states[1][2]
    applier.record(consent_msg("u1", True, 3_000, partition=1), live=True)
    assert (bool(applier.members.contains(p)), applier.history.since.get(p)) == (True, 3_000), "the next grant counts"


def test_a_grant_of_an_aborted_transaction_admits_nobody(tmp_path):
    kafka = make_kafka()
    kafka.create_topic("consents", 1)
    _, records = stream(300)
    users = sorted({g.user_id for g in records if g.expected == "eligible"})
    never = users[0]
    for user in users[1:]:
        kafka.append("consents", consent(user, True, 0), user.encode())
    kafka.append("consents", consent(never, True, 0), never.encode(), transaction=999)
    kafka.topics["consents"].partitions[0][-1].aborted = True  # its producer aborted it
    s = settings(TF_POLICY_FILE=str(opt_in_policy(tmp_path)), TF_CONSENT_TOPIC="consents")
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        decided_all(svc, records)
    assert not {g.record_id for g in records if g.user_id == never} & set(emitted_ids(kafka))


def test_a_grant_of_an_open_transaction_admits_nobody_and_holds_no_input(tmp_path):
    """The consent mirror reads committed records only, so it ends at the last stable offset: a
    transaction left open on the consent topic neither admits its user nor stalls the mirror (waiting
    for the high watermark, past the open transaction, it would never be caught up)."""
    kafka = make_kafka()
    kafka.create_topic("consents", 1)
    _, records = stream(300)
    users = sorted({g.user_id for g in records if g.expected == "eligible"})
    hanging = users[0]
    kafka.append("consents", consent(users[1], True, 0), users[1].encode())
    kafka.open_transactions.add(999)
    kafka.append("consents", consent(hanging, True, 0), hanging.encode(), transaction=999)  # never ends
    for user in users[2:]:  # after it: not read while it is open (they stay without consent)
        kafka.append("consents", consent(user, True, 0), user.encode())
    s = settings(TF_POLICY_FILE=str(opt_in_policy(tmp_path)), TF_CONSENT_TOPIC="consents")
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        decided_all(svc, records)
    out = set(emitted_ids(kafka))
    assert {g.record_id for g in records if g.user_id == users[1] and g.expected == "eligible"} <= out
    assert {g.user_id for g in records if g.record_id in out} == {users[1]}


# -- compaction --------------------------------------------------------------------------------------


def test_a_content_change_compacted_away_still_stops_its_record():
    """A change is final, and "a tombstone changes nothing" (the schema's doc); but compaction keeps the
    tombstone alone. A replica that starts then has only the revocations ledger to learn the change from
    (its `content/` retraction), and does not read it: the record, arriving late, is emitted."""
    kafka, records = with_optouts()
    late = eligible_posts(records)[0]
    kafka.append("content-changes", None, late.record_id.encode(), partition=0)  # all compaction left
    pseudonym = key_of(late.user_id).encode()
    ledger = emitter.value(Retraction.CONTENT_DELETED, pseudonym, 1_000, record_id=late.record_id)
    kafka.append("revocations", CODEC.encode(REVOCATION, ledger), b"content/" + late.record_id.encode(), 0)
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        decided_all(svc, records)
    assert late.record_id not in emitted_ids(kafka)


def compact(kafka: Any, topic: str) -> None:
    """What log compaction leaves of `topic`: the last record of each key, in order (the offsets are
    renumbered, which a mirror that reads from the start does not see)."""
    kept = []
    for p, log in enumerate(kafka.topics[topic].partitions):
        last = {r.key: r for r in log}
        kept += [(p, r) for r in log if last[r.key] is r]
    kafka.recreate_topic(topic)
    for p, r in kept:
        kafka.append(topic, r.value, r.key, partition=p, timestamp=r.timestamp)


def test_a_deleted_account_stays_out_after_compaction_whatever_comes_after_the_deletion():
    """A deletion is for good (the schema's doc, the reader's rule 1). An AccountChange that follows it
    (deleted: false, a sync job restating the account) makes the emitter write an `age_corrected`
    retraction under the same key; compaction keeps only that one, so a replica that starts afresh
    neither finds the deletion in the ledger nor on the account topic, and emits the account's records."""
    kafka, records = with_optouts()
    gone = eligible_posts(records)[0].user_id
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        kafka.append("account-changes", account_change(gone, deleted=True), gone.encode(), partition=0)
        restated = account_change(gone, birth_date=dt.date(1990, 1, 1))
        kafka.append("account-changes", restated, gone.encode(), partition=0)
        svc.wait(lambda: len(retractions(kafka)) >= 2 + optout_count(kafka), what="both retracted")
    compact(kafka, "revocations")
    compact(kafka, "account-changes")
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        decided_all(svc, records)
    assert not {g.record_id for g in records if g.user_id == gone} & set(emitted_ids(kafka))


def optout_count(kafka: Any) -> int:
    return sum(1 for _, v in retractions(kafka) if v["reason"] == "opted_out")


# -- a shadow policy -------------------------------------------------------------------------------
def shadowed_processor(changes: ChangeSet, candidate: str) -> tuple[BatchProcessor, Shadow, RecordingProducer]:
    shadow, producer = Shadow(Decider(parse_policy(candidate))), RecordingProducer()
    proc = BatchProcessor(
        decider=Decider(load_policy()),
        codec=CODEC,
        pseudonymiser=Pseudonymiser(b"h" * 32),
        opted_out=lambda _u: False,
        producer=producer,
        training_topic="training",
        dlq_topic="dlq",
        posts_topic="posts",
        ai_interactions_topic="ai",
        on_backpressure=lambda: None,
        shadow=shadow,
        changes=ChangeGuard(changes),
    )
    return proc, shadow, producer


def test_the_shadow_counts_a_deleted_record_it_would_admit_as_content_changed():
    """The candidate admits GB, the active policy does not. A deleted post of a GB author is refused
    `region` by the active policy; the candidate would refuse it `content_changed` (the change set stops
    it whatever the policy), but the shadow counts it eligible: a candidate's would-add overstated."""
    changes = ChangeSet(1_000, 1e-6, 100)
    changes.stop("p-gone")
    proc, shadow, _ = shadowed_processor(changes, CANDIDATE_POLICY)
    value = CODEC.encode(POST, {**SAMPLE_POST, "post_id": "p-gone", "author_id": "u-gb", "author_country": "GB"})
    run(proc, [Msg("posts", value, b"u-gb")])
    assert shadow.totals == {(Source.POST, Reason.REGION, Reason.CONTENT_CHANGED): 1}


def test_a_record_admitted_with_its_accounts_birth_date_is_decided_under_a_shadow_too():
    """A post without a birth date of its own, by an author in Austria whose account has one (an
    adult): both policies admit it with the account's. With a shadow configured, the batch raised IndexError: a
    crash that repeats on every restart, since the batch is read again."""
    changes = ChangeSet(1_000, 1e-6, 100)
    author = Pseudonymiser(b"h" * 32).pseudonym(b"u-known")
    changes.correct(author, AccountFacts(False, day_from_date(dt.date(1990, 1, 1)), "AT"))
    proc, shadow, producer = shadowed_processor(changes, CANDIDATE_POLICY)
    fields = {"post_id": "p-1", "author_id": "u-known", "author_birth_date": None, "author_country": "AT"}
    value = CODEC.encode(POST, {**SAMPLE_POST, **fields})
    run(proc, [Msg("posts", value, b"u-known")])
    assert shadow.totals == {(Source.POST, Reason.ELIGIBLE, Reason.ELIGIBLE): 1}
    assert [topic for topic, *_ in producer.sent] == ["training"]


def test_a_second_grant_after_one_withdrawal_does_not_move_the_bound_of_the_first():
    """Withdrawn at 1,000, granted at 2,000, the grant sent again at 3,000 (a consent service that
    re-publishes): what was written from 2,000 on is eligible (the first grant that followed the
    withdrawal, as docs/retractions.md and the oracle say), not only from 3,000 on; and the second
    grant's retraction names the same bound, so that a reader holding the last read keeps the same."""
    history = ConsentHistory(10)
    p = b"p" * 64
    assert history.withdraw(p, 1_000)
    assert history.grant(p, 2_000) and history.since[p] == 2_000
    assert history.grant(p, 3_000) and history.since[p] == 2_000, "the repeat changes nothing"
    assert history.regrant_bound(p, 3_000) == 2_000 and history.regrant_bound(p, 2_000) == 2_000
    assert history.regrant_bound(p, 500) is None, "no withdrawal before it: a first grant"
    assert history.withdraw(p, 4_000) and history.grant(p, 5_000) and history.since[p] == 5_000, "a new withdrawal"
    history.regrant_retracted(p, 6_000)  # the ledger's retraction of a later repeat
    assert history.since[p] == 5_000
