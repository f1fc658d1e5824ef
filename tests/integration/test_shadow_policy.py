"""Shadow evaluation against the real broker: the service runs with TF_SHADOW_POLICY_FILE (a minimum
age of 21, France and Germany out, Switzerland and the United Kingdom in) on a generated stream, and
its /metrics counts by (source, active, shadow) equal both policies applied independently to the
generator's records; the training topic holds exactly what the active policy admits."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from confluent_kafka.admin import AdminClient

from consumer.devtools.generator import StreamGenerator
from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.wire.codec import TRAINING_RECORD, Codec
from rules import load_policy, parse_policy
from tests.deploy.promql import expressions_of_dashboard, metric_names
from tests.deploy.tools import DEPLOY
from tests.harness import produce, read_all
from tests.integration.test_service_consents import consent
from tests.integration.test_service_optouts import optout, post
from tests.samples import CANDIDATE_POLICY
from tests.shadow_oracle import SOURCE_LABEL, expected_pairs

pytestmark = pytest.mark.integration
CODEC = Codec()


def test_shadow_counts_on_live_traffic_equal_both_policies_applied_to_the_generator(
    kafka, topics, new_service, tmp_path
):
    candidate_file = tmp_path / "candidate.toml"
    candidate_file.write_text(CANDIDATE_POLICY)
    active, candidate = load_policy(), parse_policy(CANDIDATE_POLICY)

    generator = StreamGenerator(seed=23, users_per_pool=400, posts_topic=topics.posts, ai_topic=topics.ai)
    produce(kafka.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    opted = {u.user_id for u in generator.pools["opted"]}
    stream = list(generator.stream(6000))
    service = new_service(TF_SHADOW_POLICY_FILE=str(candidate_file)).start()
    service.wait_ready()
    produce(kafka.bootstrap, ((g.topic, g.key, g.value) for g in stream))
    service.wait_processed(len(stream))
    service.wait_settled()

    # The active side is the generator's own expectation, unchanged by the shadow.
    counted = service.decisions()
    expected_active = Counter((SOURCE_LABEL[g.source], g.expected) for g in stream)
    assert counted == dict(expected_active)
    eligible = {g.record_id for g in stream if g.expected == "eligible"}
    ids = [CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"] for m in read_all(kafka.bootstrap, topics.training)]
    assert sorted(ids) == sorted(eligible)
    assert len(read_all(kafka.bootstrap, topics.dlq)) == sum(g.expected == "malformed" for g in stream)

    # The shadow side: every (source, active, shadow) count, as both policies decide the records.
    shadow = {
        (lbl["source"], lbl["active"], lbl["shadow"]): int(v)
        for lbl, v in service.metrics()["training_filter_shadow_decisions_total"]
        if v
    }
    expected = expected_pairs(active, candidate, stream, opted)
    assert shadow == dict(expected)
    changed = {(a, b) for (_, a, b), n in expected.items() if a != b and n}
    assert {("eligible", "under_age"), ("eligible", "region"), ("region", "eligible")} <= changed
    assert all(a == b for (_, a, b) in shadow if a == "malformed")

    info = service.metrics()["training_filter_shadow_policy_info"]
    assert info == [({"version": candidate.version}, 1.0)]

    # Every metric the dashboard's shadow panels query exists in what this run exposed (the 10,000-record
    # end-to-end test runs without a shadow policy and checks the other panels).
    exposed = set(service.metrics())
    dashboard = json.loads((DEPLOY / "grafana" / "training-filter.json").read_text())
    queried: set[str] = set()
    for expr in expressions_of_dashboard(dashboard):
        queried |= metric_names(expr)
    shadow_queried = {name for name in queried if name.startswith("training_filter_shadow_")}
    assert {"training_filter_shadow_decisions_total", "training_filter_shadow_policy_info"} <= shadow_queried
    # Only the shadow panels' metrics: others (e.g. the consumer lag, from librdkafka's statistics
    # callback) appear on their own schedule and are checked by the end-to-end test.
    assert shadow_queried - exposed == set()
    assert service.stop() == 0


def test_a_bad_shadow_policy_stops_the_service_before_kafka(kafka, topics, new_service, tmp_path):
    bad = tmp_path / "candidate.toml"
    bad.write_text(CANDIDATE_POLICY.replace('"CH", "GB"', '"CH", "XYZ"'))
    service = new_service(TF_SHADOW_POLICY_FILE=str(bad)).start()
    assert service.process is not None
    assert service.process.wait(60) == 2
    log = service.log_path.read_text()
    assert "TF_SHADOW_POLICY_FILE" in log and "XYZ" in log


def test_an_opt_in_candidate_reads_the_consents_without_gating_or_revoking(kafka, topics, new_service, tmp_path):
    """The active policy is opt-out; the candidate is the same policy under opt-in. The service reads
    the consent topic for the shadow only: what it emits is unchanged, a record without consent counts
    (eligible, no_consent), a withdrawal revokes nothing, and the consent feed does not gate input."""
    consent_topic = f"consents-{topics.posts}"
    ensure_topics(kafka.bootstrap, [TopicSpec(consent_topic, 2, {"cleanup.policy": "compact"})])
    candidate_file = tmp_path / "opt-in-candidate.toml"
    text = (DEPLOY / "kubernetes" / "components" / "opt-in-consent" / "opt-in-policy.toml").read_text()
    candidate_file.write_text(text.replace('version = "2026-12-01.1-opt-in"', 'version = "candidate-opt-in"'))

    consenting = [f"yes-{i}" for i in range(40)]
    produce(kafka.bootstrap, [(consent_topic, u.encode(), consent(u)) for u in consenting])
    # frank consented, then withdrew; gina consented and opted out; hal never consented.
    produce(
        kafka.bootstrap,
        [
            (consent_topic, b"frank", consent("frank")),
            (consent_topic, b"frank", consent("frank", granted=False)),
            (consent_topic, b"gina", consent("gina")),
            (topics.optouts, b"gina", optout("gina")),
        ],
    )
    service = new_service(TF_SHADOW_POLICY_FILE=str(candidate_file), TF_CONSENT_TOPIC=consent_topic).start()
    service.wait_ready()
    posts = (
        [(topics.posts, u.encode(), post(f"p-{u}", u)) for u in consenting]
        + [(topics.posts, b"frank", post(f"frank-{i}", "frank")) for i in range(5)]
        + [(topics.posts, b"gina", post(f"gina-{i}", "gina")) for i in range(4)]
        + [(topics.posts, b"hal", post(f"hal-{i}", "hal")) for i in range(6)]
    )
    produce(kafka.bootstrap, posts)
    service.wait_processed(len(posts))
    service.wait_settled()

    # The output is the active opt-out policy's: every eligible record, consent or not.
    ids = [CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"] for m in read_all(kafka.bootstrap, topics.training)]
    assert sorted(ids) == sorted(
        [f"p-{u}" for u in consenting] + [f"frank-{i}" for i in range(5)] + [f"hal-{i}" for i in range(6)]
    )
    shadow = {
        (lbl["active"], lbl["shadow"]): int(v)
        for lbl, v in service.metrics()["training_filter_shadow_decisions_total"]
        if v and lbl["source"] == "POST"
    }
    assert shadow == {("eligible", "eligible"): 40, ("eligible", "no_consent"): 11, ("opted_out", "opted_out"): 4}
    lines = service.log_lines()
    (feed_line,) = [line for line in lines if line.get("event") in {"consent_feed_caught_up", "consent_feed_behind"}]
    assert feed_line["gates_input"] is False
    # Only gina's opt-out is revoked: frank's withdrawal admitted nothing under the active policy.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and service.metric_sum("training_filter_revocations_total") < 1:
        time.sleep(0.2)
    time.sleep(2)  # a wrong revocation of the withdrawal would come with the opt-out's
    assert service.metric_sum("training_filter_revocations_total") == 1
    assert service.stop() == 0


def test_an_opt_in_candidate_whose_consent_topic_goes_away_does_not_hold_input(kafka, topics, new_service, tmp_path):
    """The consent topic of an opt-in candidate is deleted while the service runs, so its consent feed
    cannot sync any more: input goes on and the active policy's output is complete; the consent lag
    grows, labelled as not gating. (Under an opt-in active policy the same outage pauses input:
    test_service_consents.py.) A consent topic missing at start-up stops the service with its name."""
    candidate_file = tmp_path / "opt-in-candidate.toml"
    text = (DEPLOY / "kubernetes" / "components" / "opt-in-consent" / "opt-in-policy.toml").read_text()
    candidate_file.write_text(text.replace('version = "2026-12-01.1-opt-in"', 'version = "candidate-opt-in"'))
    consent_topic = f"consents-gone-{topics.posts}"
    ensure_topics(kafka.bootstrap, [TopicSpec(consent_topic, 1, {"cleanup.policy": "compact"})])
    env = {"TF_SHADOW_POLICY_FILE": str(candidate_file), "TF_CONSENT_TOPIC": consent_topic}
    service = new_service(**env).start()
    service.wait_ready()
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.delete_topics([consent_topic])[consent_topic].result(30)
    time.sleep(3)  # the feed has failed to sync for a while
    posts = [(topics.posts, f"u{i}".encode(), post(f"p-{i}", f"u{i}")) for i in range(25)]
    produce(kafka.bootstrap, posts)
    service.wait_processed(len(posts))
    service.wait_settled()
    ids = [CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"] for m in read_all(kafka.bootstrap, topics.training)]
    assert sorted(ids) == sorted(f"p-{i}" for i in range(25))
    metrics = service.metrics()
    shadow = {
        (lbl["active"], lbl["shadow"]): int(v) for lbl, v in metrics["training_filter_shadow_decisions_total"] if v
    }
    assert shadow == {("eligible", "no_consent"): 25}
    ((labels, lag),) = metrics["training_filter_consent_feed_lag_seconds"]
    assert labels == {"gates_input": "false"} and lag > 2
    assert service.metric_sum("training_filter_input_paused") == 0
    assert service.stop() == 0

    # Missing at start-up: a configuration error to fix, reported by name (exit status 1).
    again = new_service(**env).start()
    assert again.process is not None and again.process.wait(60) == 1
    assert any(
        consent_topic in line.get("error", "") for line in again.log_lines() if line.get("event") == "feed_unavailable"
    )
