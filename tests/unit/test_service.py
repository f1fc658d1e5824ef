"""The service shell in-process, on the in-memory Kafka of tests/fakes.py: start-up order, the data
path end to end under both guarantees, rebalances, a pause on a stale feed, snapshots, shutdown and
the error paths. The integration tests prove the same against the real broker; these run in seconds
and reach the shell's every branch."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from consumer.wire.codec import CONSENT, OPTOUT, REVOCATION
from tests.fakes import FakeConsumer
from tests.service_fixture import CODEC, InProcessService, emitted_ids, feed, make_kafka, revoked, settings, stream


def expected(records) -> set[str]:
    return {g.record_id for g in records if g.expected == "eligible"}


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_every_eligible_record_once_and_nothing_else_under_both_guarantees(guarantee):
    kafka = make_kafka()
    generator, records = stream(600)
    for key, value in generator.optouts():
        kafka.append("optouts", value, key)
    with InProcessService(kafka, settings(TF_PROCESSING_GUARANTEE=guarantee)) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        svc.wait(lambda: set(emitted_ids(kafka)) >= expected(records), what="every eligible record emitted")
        svc.wait(lambda: len(revoked(kafka)) == len(generator.optouts()), what="every opt-out revoked")
        malformed = sum(1 for g in records if g.expected == "malformed")
        svc.wait(lambda: len(kafka.records("dlq")) == malformed, what="the dead letters")
    assert svc.exit_code == 0
    assert set(emitted_ids(kafka)) == expected(records), "no ineligible record, no opted-out user's"
    if guarantee == "exactly-once":
        assert len(emitted_ids(kafka)) == len(expected(records)), "exactly once"
    committed = kafka.groups[svc.service.settings.group_id].committed
    assert sum(committed.get(("posts", p), 0) for p in range(4)) == sum(1 for g in records if g.topic == "posts")
    assert svc.metric("training_filter_records_total") == len(records)
    assert "optout_feed_caught_up" in svc.log.events() and "stopped" in svc.log.events()


def test_no_input_is_consumed_before_the_optout_feed_has_caught_up():
    kafka = make_kafka()
    generator, records = stream(300)
    optouts = generator.optouts()
    for key, value in optouts:
        kafka.append("optouts", value, key)
    feed(kafka, records)  # input waiting before the service starts: the opt-outs must win anyway
    with InProcessService(kafka, settings()) as svc:
        svc.wait(lambda: set(emitted_ids(kafka)) >= expected(records), what="every eligible record emitted")
    events = svc.log.events()
    assert events.index("optout_feed_caught_up") < events.index("partitions_assigned")
    opted = {key.decode() for key, _ in optouts}
    assert not {g.record_id for g in records if g.user_id in opted} & set(emitted_ids(kafka))


def test_an_optout_published_while_running_is_applied_to_the_records_fetched_after_it():
    kafka = make_kafka()
    _, records = stream(200)
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        victim = next(g for g in records if g.expected == "eligible")
        value = CODEC.encode(OPTOUT, {"user_id": victim.user_id, "opted_out_at": 0, "source": "form"})
        kafka.append("optouts", value, victim.key)
        svc.wait(lambda: svc.metric("training_filter_optout_feed_records_total", result="applied") == 1, what="applied")
        feed(kafka, records)
        svc.wait(lambda: set(emitted_ids(kafka)) >= expected(records) - _of(records, victim.user_id), what="emitted")
    assert not _of(records, victim.user_id) & set(emitted_ids(kafka))


def _of(records, user_id):
    return {g.record_id for g in records if g.user_id == user_id}


def test_input_pauses_while_the_optout_feed_cannot_sync_and_resumes_after():
    kafka = make_kafka()
    _, records = stream(200)
    with InProcessService(kafka, settings(TF_OPTOUT_MAX_LAG_SECONDS="0.5")) as svc:
        svc.wait_subscribed()
        # The revocation emitter joins its own group (on the opt-out topic too) in the loop's turns: the
        # topic is taken away only once it holds its partitions, as the test means the feed alone to fail
        # (under load the join came after, and the fake cannot assign a topic it no longer has).
        (emitter,) = [c for c in svc.clients.of_kind(FakeConsumer) if c.group_id.endswith("-revocations")]
        svc.wait(lambda: any(t == "optouts" for t, _ in list(emitter.positions)), what="the emitter assigned")
        optouts = kafka.topics.pop("optouts")  # the opt-out topic unreadable: every sync fails
        svc.wait(lambda: svc.service.state.paused, what="input paused")
        feed(kafka, records)
        ok, detail = svc.service.probes.ready()
        assert not ok and detail["input_paused"]
        kafka.topics["optouts"] = optouts
        svc.wait(lambda: not svc.service.state.paused, what="input resumed")
        svc.wait(lambda: set(emitted_ids(kafka)) >= expected(records), what="emitted after the pause")
    assert "input_paused" in svc.log.events() and "input_resumed" in svc.log.events()


def test_a_second_member_takes_partitions_and_the_first_commits_before_giving_them_up():
    kafka = make_kafka()
    _, records = stream(400)
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        feed(kafka, records[:200])
        svc.wait(lambda: set(emitted_ids(kafka)) >= expected(records[:200]), what="the first half")
        other = FakeConsumer(kafka, {"group.id": svc.service.settings.group_id, "enable.auto.commit": False})
        other.subscribe(["posts", "ai"])
        other.consume(1)  # joins: the group's partitions are spread over both members
        svc.wait(lambda: svc.metric("training_filter_rebalances_total", kind="revoke") >= 1, what="revoked")
        kept = set(svc.service.state.assigned)
        assert kept and len(kept) < 6
        committed = kafka.groups[svc.service.settings.group_id].committed
        assert all(committed.get(tp, 0) > 0 for tp in set(other.positions) if kafka.high_watermark(*tp)), (
            "what the first member processed of a partition it gave up was committed"
        )
    assert svc.exit_code == 0


def test_lost_partitions_are_dropped_and_come_back():
    kafka = make_kafka()
    _, records = stream(200)
    with InProcessService(kafka, settings(TF_PROCESSING_GUARANTEE="exactly-once")) as svc:
        svc.wait_subscribed()
        consumer = next(c for c in svc.clients.of_kind(FakeConsumer) if c.subscription == ["posts", "ai"])
        kafka.expire(consumer)
        svc.wait(lambda: svc.metric("training_filter_rebalances_total", kind="lost") >= 1, what="lost")
        feed(kafka, records)
        svc.wait(lambda: set(emitted_ids(kafka)) >= expected(records), what="emitted after the loss")
    assert "partitions_lost" in svc.log.events()


def test_snapshots_are_written_and_a_restart_resumes_from_them(tmp_path):
    kafka = make_kafka()
    generator, records = stream(100)
    for key, value in generator.optouts():
        kafka.append("optouts", value, key)
    path = tmp_path / "optouts.snapshot"
    s = settings(TF_OPTOUT_SNAPSHOT_PATH=str(path), TF_OPTOUT_SNAPSHOT_INTERVAL_SECONDS="1")
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        svc.wait(lambda: "optout_snapshot_saved" in svc.log.events(), what="a snapshot in the background")
    assert path.is_file() and svc.log.events().count("optout_snapshot_saved") >= 2  # and one at shutdown
    with InProcessService(kafka, s) as again:
        again.wait_subscribed()
        feed(kafka, records)
        again.wait(lambda: set(emitted_ids(kafka)) >= expected(records), what="emitted after the restart")
    loaded = again.log.fields("optout_snapshot_loaded")
    assert loaded and loaded[0]["entries"] == len(generator.optouts())


def test_a_missing_optout_topic_stops_the_service_with_exit_1_naming_it():
    kafka = make_kafka()
    kafka.topics.pop("optouts")
    svc = InProcessService(kafka, settings())
    with svc:
        svc.thread.join(30)
    assert svc.exit_code == 1
    (error,) = svc.log.fields("feed_unavailable")
    assert "optouts" in error["error"]


def test_a_produce_error_the_service_cannot_recover_from_stops_it_with_exit_1_committing_nothing_past_it():
    kafka = make_kafka()
    _, records = stream(100)
    kafka.produce_errors["training"] = KafkaError.TOPIC_AUTHORIZATION_FAILED
    svc = InProcessService(kafka, settings())
    with svc:
        svc.wait_subscribed()
        feed(kafka, records)
        svc.thread.join(30)
    assert svc.exit_code == 1
    assert "fatal_delivery_error" in svc.log.events()
    committed = kafka.groups[svc.service.settings.group_id].committed
    assert all(offset == 0 for offset in committed.values()) or not committed


def test_a_record_too_large_for_the_training_topic_becomes_a_headers_only_dead_letter():
    """The topic's limit lowered after start-up: the broker refuses the record in its delivery report, the
    service reads the limits again and writes a headers-only dead letter that points at the input."""
    kafka = make_kafka()
    _, records = stream(200)
    with InProcessService(kafka, settings()) as svc:
        svc.wait_subscribed()
        kafka.topics["training"].config["max.message.bytes"] = "600"
        feed(kafka, records)
        svc.wait(lambda: svc.metric("training_filter_produce_errors_total") >= 1, what="a refusal")
        svc.wait(lambda: _undeliverable(kafka), what="a headers-only dead letter")
    assert all(len(m.value()) + len(m.key()) <= 600 for m in kafka.records("training"))
    letters = _undeliverable(kafka)
    assert all(m.value() is None and m.key() is None for m in letters), "headers only: they point at the input"
    pointed = {(dict(m.headers())["tf.source.topic"], int(dict(m.headers())["tf.source.offset"])) for m in letters}
    assert pointed, "every refused record is pointed at"
    assert "output_refused" in svc.log.events()


def _undeliverable(kafka):
    return [m for m in kafka.records("dlq") if dict(m.headers() or []).get("tf.reason") == b"undeliverable"]


def _consent(user: str, granted: bool) -> bytes:
    return CODEC.encode(CONSENT, {"user_id": user, "granted": granted, "at": 0, "source": "dialog"})


def test_under_opt_in_only_consenting_users_are_emitted_and_a_withdrawal_keeps_out_and_revokes(tmp_path):
    from pathlib import Path

    policy = tmp_path / "opt-in.toml"
    text = (Path(__file__).resolve().parents[2] / "rules" / "policy.toml").read_text()
    policy.write_text(text.replace('version = "', 'consent_model = "opt_in"\nversion = "opt-in-', 1))
    kafka = make_kafka()
    kafka.create_topic("consents", 2)
    _, records = stream(300)
    users = sorted({g.user_id for g in records if g.expected == "eligible"})
    granted, withdrawn = set(users[: len(users) // 2]), users[-1]
    for user in [*granted, withdrawn]:
        kafka.append("consents", _consent(user, True), user.encode())
    s = settings(TF_POLICY_FILE=str(policy), TF_CONSENT_TOPIC="consents", TF_CONSENT_CAPACITY="10000")
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        kafka.append("consents", _consent(withdrawn, False), withdrawn.encode())
        svc.wait(lambda: len(revoked(kafka)) == 1, what="the withdrawal revoked")
        feed(kafka, records)
        wanted = {g.record_id for g in records if g.expected == "eligible" and g.user_id in granted}
        svc.wait(lambda: set(emitted_ids(kafka)) >= wanted, what="the consenting users' records")
        svc.wait(lambda: svc.metric("training_filter_records_total") == len(records), what="all decided")
    assert set(emitted_ids(kafka)) == wanted
    # The withdrawal left the consent set (and the history knows when): no_consent, not a purge for good.
    assert svc.metric("training_filter_records_total", decision="opted_out") == 0
    assert svc.metric("training_filter_records_total", decision="no_consent") >= sum(
        1 for g in records if g.user_id not in granted and g.expected == "eligible"
    )
    [retraction] = kafka.records("revocations")
    assert retraction.key().startswith(b"consent/")
    assert CODEC.decode_own(retraction.value(), REVOCATION)["reason"] == "consent_withdrawn"
    assert "consent_feed_caught_up" in svc.log.events()


def test_a_shadow_policy_is_counted_beside_the_active_one_and_never_emits(tmp_path):
    from pathlib import Path

    candidate = tmp_path / "candidate.toml"
    text = (Path(__file__).resolve().parents[2] / "rules" / "policy.toml").read_text()
    candidate.write_text(
        text.replace("minimum_age = 18", "minimum_age = 30").replace('version = "', 'version = "c-', 1)
    )
    kafka = make_kafka()
    generator, records = stream(300)
    for key, value in generator.optouts():
        kafka.append("optouts", value, key)
    with InProcessService(kafka, settings(TF_SHADOW_POLICY_FILE=str(candidate))) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        svc.wait(lambda: set(emitted_ids(kafka)) >= expected(records), what="emitted under the active policy")
        svc.wait(lambda: svc.metric("training_filter_records_total") == len(records), what="all decided")
    assert set(emitted_ids(kafka)) == expected(records)
    shadowed = svc.metric("training_filter_shadow_decisions_total")
    assert shadowed == len(records)
    assert svc.metric("training_filter_shadow_decisions_total", active="eligible", shadow="under_age") > 0
