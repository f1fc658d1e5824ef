"""The whole service against the real broker: a 10,000-record mixed stream with known decisions."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from consumer.devtools.generator import StreamGenerator
from consumer.wire.codec import TRAINING_RECORD, Codec
from tests.deploy.promql import expressions_of_dashboard, expressions_of_rules, metric_names
from tests.deploy.tools import DEPLOY
from tests.harness import produce, pseudonym, read_all

pytestmark = pytest.mark.integration
CODEC = Codec()


def test_ten_thousand_records_exactly_the_eligible_ones_reach_training(kafka, topics, new_service):
    generator = StreamGenerator(seed=11, users_per_pool=500, posts_topic=topics.posts, ai_topic=topics.ai)
    produce(kafka.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    stream = list(generator.stream(10_000))
    service = new_service().start()
    service.wait_ready()
    produce(kafka.bootstrap, ((g.topic, g.key, g.value) for g in stream))
    service.wait_processed(len(stream))
    service.wait_settled()

    eligible = {g.record_id: g for g in stream if g.expected == "eligible"}
    assert len(eligible) > 4000
    output = read_all(kafka.bootstrap, topics.training)
    ids = [CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"] for m in output]
    assert len(ids) == len(set(ids)), "a clean run writes each record once"
    assert set(ids) == set(eligible)

    raw_ids = {g.user_id.encode() for g in stream if g.user_id}
    for msg in output:
        _, record = CODEC.decode(msg.value(), TRAINING_RECORD)
        source = eligible[record["record_id"]]
        assert set(record) == {f["name"] for f in CODEC.catalog.by_name(TRAINING_RECORD).parsed["fields"]}
        assert record["author_pseudonym"] == pseudonym(source.user_id)
        assert msg.key() == record["author_pseudonym"].encode()
        assert record["source"] == ("POST" if source.source == "post" else "AI_INTERACTION")
        assert record["source_topic"] == source.topic
        assert len(record["country"]) == 2 and record["country"].isupper()
        assert record["policy_version"]
        # no raw user id anywhere in the output's bytes or keys
        assert not any(uid in msg.value() for uid in raw_ids)
        assert msg.key() not in raw_ids

    counted = service.decisions()
    expected = Counter((g.source, g.expected) for g in stream)
    source_label = {"post": "POST", "ai_interaction": "AI_INTERACTION"}
    assert counted == {(source_label[s], r): n for (s, r), n in expected.items()}

    dead = read_all(kafka.bootstrap, topics.dlq)
    assert len(dead) == sum(1 for g in stream if g.expected == "malformed")
    assert service.metric_sum("training_filter_dlq_records_total") == len(dead)

    # Every metric the dashboard and the alert rules query exists in what this run exposed.
    exposed = set(service.metrics())
    queried: set[str] = set()
    dashboard = json.loads((DEPLOY / "grafana" / "training-filter.json").read_text())
    for expr in expressions_of_dashboard(dashboard) + expressions_of_rules(
        DEPLOY / "prometheus" / "training-filter-rules.yaml"
    ):
        queried |= metric_names(expr)
    # The shadow panels have data only with a shadow policy, which this run has not: test_shadow_policy.py
    # checks them against a run with one.
    shadow_only = {"training_filter_shadow_decisions_total", "training_filter_shadow_policy_info"}
    # Likewise the consent feed's lag, only with a consent topic: test_service_consents.py checks it.
    consents_only = {"training_filter_consent_feed_lag_seconds"}
    # And the recipients' gauges, labelled by group, only once a group reads the training topic:
    # tests/integration/test_recipients.py checks them, and their alerts on a real Prometheus.
    recipients_only = {
        "training_filter_recipient_reads_revocations",
        "training_filter_recipient_unacknowledged_revocations",
        "training_filter_recipient_oldest_unacknowledged_seconds",
    }
    missing = queried - exposed - shadow_only - consents_only - recipients_only
    assert missing == set(), "the dashboard or alerts query metrics the service does not expose"
    assert service.stop() == 0


def test_output_carries_no_birth_date(kafka, topics, new_service):
    generator = StreamGenerator(seed=12, users_per_pool=50, posts_topic=topics.posts, ai_topic=topics.ai)
    stream = [generator.record("eligible", "post") for _ in range(50)] + [
        generator.record("eligible", "ai_interaction") for _ in range(50)
    ]
    service = new_service().start()
    service.wait_ready()
    produce(kafka.bootstrap, ((g.topic, g.key, g.value) for g in stream))
    service.wait_processed(100)
    service.wait_settled()
    schema_fields = {f["name"] for f in CODEC.catalog.by_name(TRAINING_RECORD).parsed["fields"]}
    assert not any("birth" in name for name in schema_fields)
    records = [CODEC.decode(m.value(), TRAINING_RECORD)[1] for m in read_all(kafka.bootstrap, topics.training)]
    assert len(records) == 100
    assert {r["source"] for r in records} == {"POST", "AI_INTERACTION"}
    for r in records:
        if r["source"] == "AI_INTERACTION":
            assert r["text"] is None and isinstance(r["prompt"], str) and isinstance(r["response"], str)
        else:
            assert isinstance(r["text"], str) and r["prompt"] is None and r["response"] is None
