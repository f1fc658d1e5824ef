"""An opt-in policy against the real broker: a record is emitted only when its user's consent is
present and not withdrawn, an opt-out wins over a consent, a withdrawal is revoked like an opt-out,
input waits for the consent feed at start-up, a snapshot restart keeps consents and withdrawals, and
only committed consent records count (an open transaction on the consent topic holds nothing up)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.wire.codec import CONSENT, REVOCATION, TRAINING_RECORD, Codec
from rules.policy import default_policy_path
from tests.deploy.promql import expressions_of_dashboard, expressions_of_rules, metric_names
from tests.deploy.tools import DEPLOY
from tests.harness import produce, pseudonym, read_all
from tests.integration.test_service_optouts import optout, post

pytestmark = pytest.mark.integration
CODEC = Codec()


def consent(user: str, granted: bool = True) -> bytes:
    return CODEC.encode(CONSENT, {"user_id": user, "granted": granted, "at": 1_790_000_000_000, "source": "dialog"})


@pytest.fixture
def consent_topic(kafka) -> str:
    name = f"consents-{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka.bootstrap, [TopicSpec(name, 2, {"cleanup.policy": "compact", "retention.ms": "-1"})])
    return name


@pytest.fixture
def opt_in(tmp_path: Path, consent_topic: str) -> dict[str, str]:
    """The environment of an opt-in service: the packaged policy with consent_model = "opt_in"."""
    policy = tmp_path / "opt-in.toml"
    text = default_policy_path().read_text()
    policy.write_text(text.replace('version = "', 'consent_model = "opt_in"\nversion = "opt-in-', 1))
    return {"TF_POLICY_FILE": str(policy), "TF_CONSENT_TOPIC": consent_topic, "TF_CONSENT_CAPACITY": "100000"}


def wait_revocations(service, count: int, timeout: float = 30.0) -> None:
    """Revocations are emitted beside the data path: wait until the broker acknowledged `count`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and service.metric_sum("training_filter_revocations_total") < count:
        time.sleep(0.2)
    assert service.metric_sum("training_filter_revocations_total") >= count


def emitted(kafka, topic: str) -> list[str]:
    return [CODEC.decode(m.value(), TRAINING_RECORD)[1]["record_id"] for m in read_all(kafka.bootstrap, topic)]


def revoked(kafka, topic: str) -> list[str]:
    return [CODEC.decode(m.value(), REVOCATION)[1]["author_pseudonym"] for m in read_all(kafka.bootstrap, topic)]


def test_granted_absent_and_optout_over_consent_and_input_waits_for_the_consent_feed(
    kafka, topics, new_service, opt_in, consent_topic
):
    consenting = [f"yes-{i}" for i in range(3000)]
    produce(kafka.bootstrap, [(consent_topic, u.encode(), consent(u)) for u in consenting])
    # carol consented and opted out: the opt-out wins.
    produce(kafka.bootstrap, [(consent_topic, b"carol", consent("carol")), (topics.optouts, b"carol", optout("carol"))])
    # Input is already waiting before the service exists: consenting users first, then bob (no consent) and carol.
    produce(
        kafka.bootstrap,
        [(topics.posts, u.encode(), post(f"p-{u}", u)) for u in consenting[-1000:]]
        + [(topics.posts, b"bob", post(f"bob-{i}", "bob")) for i in range(30)]
        + [(topics.posts, b"carol", post(f"carol-{i}", "carol")) for i in range(20)],
    )
    service = new_service(**opt_in).start()
    service.wait_ready()
    service.wait_processed(1050)
    service.wait_settled()

    assert sorted(emitted(kafka, topics.training)) == sorted(f"p-{u}" for u in consenting[-1000:])
    assert service.decisions() == {("POST", "eligible"): 1000, ("POST", "no_consent"): 30, ("POST", "opted_out"): 20}
    assert service.metric_sum("training_filter_consent_set_entries") == 3001
    assert service.metric_sum("training_filter_consent_feed_records_total", result="granted") == 3001
    lines = service.log_lines()
    events = [line.get("event") for line in lines]
    consent_set = lines[events.index("consent_set")]
    assert consent_set["false_admission_probability_at_capacity"] == pytest.approx(100_000 / 2 ** (17 + 48))
    assert consent_set["slots"] == 1 << 17 and consent_set["bytes"] == 8 << 17
    assert lines[events.index("consent_feed_caught_up")]["entries"] == 3001
    assert events.index("consent_feed_caught_up") < events.index("partitions_assigned")
    wait_revocations(service, 1)
    assert revoked(kafka, topics.revocations) == [pseudonym("carol")]  # the opt-out's; a grant revokes nothing

    # Every consent metric the dashboard and the alert rules query exists in what this run exposed.
    queried: set[str] = set()
    dashboard = json.loads((DEPLOY / "grafana" / "training-filter.json").read_text())
    for expr in expressions_of_dashboard(dashboard) + expressions_of_rules(
        DEPLOY / "prometheus" / "training-filter-rules.yaml"
    ):
        queried |= {name for name in metric_names(expr) if name.startswith("training_filter_consent_")}
    assert len(queried) >= 4 and queried <= set(service.metrics()), queried - set(service.metrics())


def test_a_withdrawal_stops_emission_and_revokes_what_was_emitted(kafka, topics, new_service, opt_in, consent_topic):
    produce(kafka.bootstrap, [(consent_topic, u, consent(u.decode())) for u in (b"alice", b"dave", b"erin")])
    service = new_service(**opt_in).start()
    service.wait_ready()
    produce(
        kafka.bootstrap,
        [(topics.posts, u.encode(), post(f"before-{u}-{i}", u)) for u in ("alice", "dave", "erin") for i in range(10)],
    )
    service.wait_processed(30)
    service.wait_settled()
    assert len(emitted(kafka, topics.training)) == 30

    # alice withdraws with a record, dave's consent is deleted (a tombstone): both take effect at once.
    produce(
        kafka.bootstrap, [(consent_topic, b"alice", consent("alice", granted=False)), (consent_topic, b"dave", None)]
    )
    produce(
        kafka.bootstrap,
        [(topics.posts, u.encode(), post(f"after-{u}-{i}", u)) for u in ("alice", "dave", "erin") for i in range(10)],
    )
    service.wait_processed(60)
    service.wait_settled()
    after = [i for i in emitted(kafka, topics.training) if i.startswith("after-")]
    assert sorted(after) == sorted(f"after-erin-{i}" for i in range(10))
    decisions = service.decisions()
    # No consent at first; once the feed has read its own revocations back, the opt-out filter holds them too.
    assert decisions[("POST", "eligible")] == 40
    assert decisions.get(("POST", "no_consent"), 0) + decisions.get(("POST", "opted_out"), 0) == 20
    wait_revocations(service, 2)
    assert sorted(revoked(kafka, topics.revocations)) == sorted([pseudonym("alice"), pseudonym("dave")])
    assert service.metric_sum("training_filter_consent_feed_records_total", result="withdrawn") == 1
    assert service.metric_sum("training_filter_consent_feed_records_total", result="tombstone_withdrawn") == 1
    assert service.metric_sum("training_filter_consent_set_entries") == 1
    assert service.metric_sum("training_filter_revocations_total") == 2


def test_a_snapshot_restart_keeps_consents_and_withdrawals(kafka, topics, new_service, opt_in, consent_topic, tmp_path):
    env = {**opt_in, "TF_CONSENT_SNAPSHOT_PATH": str(tmp_path / "consents.snapshot")}
    produce(
        kafka.bootstrap,
        [
            (consent_topic, b"u1", consent("u1")),
            (consent_topic, b"u2", consent("u2")),
            (consent_topic, b"u2", consent("u2", granted=False)),
        ],
    )
    first = new_service(**env).start()
    first.wait_ready()
    assert first.stop() == 0
    saved = [line for line in first.log_lines() if line.get("event") == "consent_snapshot_saved"]
    assert saved and saved[-1]["entries"] == 1

    # While it is down: u3 consents, u1 withdraws. The restart resumes from the snapshot's offsets.
    produce(kafka.bootstrap, [(consent_topic, b"u3", consent("u3")), (consent_topic, b"u1", consent("u1", False))])
    second = new_service(**env).start()
    second.wait_ready()
    loaded = [line for line in second.log_lines() if line.get("event") == "consent_snapshot_loaded"]
    # Three partitions: the consent topic's two and the revocations topic's one (its consent/ retractions).
    assert loaded and loaded[0]["entries"] == 1 and loaded[0]["partitions"] == 3
    produce(kafka.bootstrap, [(topics.posts, u.encode(), post(f"{u}-post", u)) for u in ("u1", "u2", "u3")])
    second.wait_processed(3)
    second.wait_settled()
    assert emitted(kafka, topics.training) == ["u3-post"]
    assert second.metric_sum("training_filter_consent_feed_records_total", result="granted") == 1  # u3's only
    assert second.metric_sum("training_filter_consent_set_entries") == 1


def test_input_pauses_without_the_consent_topic_and_a_recreated_one_is_read_again(
    kafka, topics, new_service, opt_in, consent_topic
):
    from confluent_kafka.admin import AdminClient

    fillers = [f"filler-{i}" for i in range(20)]
    produce(kafka.bootstrap, [(consent_topic, u.encode(), consent(u)) for u in ["alice", "bob", *fillers]])
    service = new_service(**opt_in, TF_OPTOUT_MAX_LAG_SECONDS="2").start()
    service.wait_ready()
    produce(kafka.bootstrap, [(topics.posts, b"alice", post("alice-1", "alice"))])
    service.wait_processed(1)
    assert service.decisions() == {("POST", "eligible"): 1}

    # The consent topic goes away: nothing more is decided, input pauses and the service is not ready.
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.delete_topics([consent_topic])[consent_topic].result(30)
    produce(
        kafka.bootstrap,
        [(topics.posts, b"alice", post("alice-2", "alice")), (topics.posts, b"bob", post("bob-2", "bob"))],
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and service.metric_sum("training_filter_input_paused") != 1:
        time.sleep(0.2)
    assert service.metric_sum("training_filter_input_paused") == 1
    assert service.get("/readyz")[0] == 503
    time.sleep(2)
    assert service.metric_sum("training_filter_records_total") == 1

    # Re-created with bob's consent only: the old consents do not stay granted. (The held batch may be
    # decided before bob's new grant arrives: it was fetched before the grant was acknowledged.)
    ensure_topics(kafka.bootstrap, [TopicSpec(consent_topic, 2, {"cleanup.policy": "compact", "retention.ms": "-1"})])
    produce(kafka.bootstrap, [(consent_topic, b"bob", consent("bob"))])
    produce(
        kafka.bootstrap,
        [(topics.posts, b"alice", post("alice-3", "alice")), (topics.posts, b"bob", post("bob-3", "bob"))],
    )
    service.wait_processed(5, timeout=60)
    service.wait_settled()
    out = sorted(emitted(kafka, topics.training))
    assert out in (["alice-1", "bob-3"], ["alice-1", "bob-2", "bob-3"])
    decisions = service.decisions()
    assert decisions[("POST", "eligible")] == len(out) and decisions[("POST", "no_consent")] == 5 - len(out)
    assert any(line.get("event") == "consent_topic_shrank_rereading" for line in service.log_lines())
    assert service.metric_sum("training_filter_consent_set_entries") == 1
    assert service.get("/readyz")[0] == 200


def transaction(kafka, name: str, timeout_ms: int = 60_000) -> Producer:
    """A transactional producer with its transaction begun."""
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "transactional.id": f"{name}-{uuid.uuid4().hex[:8]}",
            "transaction.timeout.ms": timeout_ms,
            "log_level": 3,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    return producer


# How long input may wait while a transaction hangs open on the consent topic: no longer than any
# sync (docs/operating.md, "Consent records are read committed"); the transaction's own timeout is 300 s.
HELD_AT_MOST_SECONDS = 20.0


def test_only_committed_grants_admit_and_an_open_transaction_does_not_hold_input(
    kafka, topics, new_service, opt_in, consent_topic
):
    """A grant whose transaction aborted admits nobody, a committed one does; a transaction left open
    (its grant not read) neither stalls the feed nor holds input, and a withdrawal written after it in
    its partition is applied once it ends."""
    aborted = transaction(kafka, "aborted")
    aborted.produce(consent_topic, consent("ghost"), b"ghost", partition=0)
    aborted.flush(30)
    aborted.abort_transaction(30)
    committed = transaction(kafka, "committed")
    committed.produce(consent_topic, consent("kept"), b"kept", partition=0)
    committed.commit_transaction(30)
    hanging = transaction(kafka, "hanging", timeout_ms=300_000)
    try:
        hanging.produce(consent_topic, consent("hanger"), b"hanger", partition=0)
        hanging.flush(30)  # written, never committed: the last stable offset stays before it
        started = time.monotonic()
        service = new_service(**opt_in).start()
        service.wait_ready(timeout=HELD_AT_MOST_SECONDS)
        users = ("ghost", "kept", "hanger")
        produce(kafka.bootstrap, [(topics.posts, u.encode(), post(f"{u}-{i}", u)) for u in users for i in range(10)])
        service.wait_processed(30, timeout=HELD_AT_MOST_SECONDS)
        held = time.monotonic() - started
        service.wait_settled()
        assert sorted(emitted(kafka, topics.training)) == sorted(f"kept-{i}" for i in range(10))
        assert service.decisions() == {("POST", "eligible"): 10, ("POST", "no_consent"): 20}
        assert service.metric_sum("training_filter_consent_feed_records_total", result="granted") == 1
        for _ in range(10):  # the feed stays caught up at the last stable offset: ready, never paused
            assert service.get("/readyz")[0] == 200
            assert service.metric_sum("training_filter_consent_feed_lag_seconds") < 5.0  # TF_OPTOUT_MAX_LAG_SECONDS
            assert service.metric_sum("training_filter_input_paused") == 0
            time.sleep(0.3)

        # kept withdraws behind the open transaction: read once that transaction ends (here: aborted).
        plain = Producer({"bootstrap.servers": kafka.bootstrap, "log_level": 3})
        plain.produce(consent_topic, consent("kept", granted=False), b"kept", partition=0)
        assert plain.flush(30) == 0
        time.sleep(1.0)
        assert service.metric_sum("training_filter_consent_feed_records_total", result="withdrawn") == 0
    finally:
        hanging.abort_transaction(30)
    deadline = time.monotonic() + HELD_AT_MOST_SECONDS
    while service.metric_sum("training_filter_consent_feed_records_total", result="withdrawn") < 1:
        assert time.monotonic() < deadline, "the withdrawal after the aborted transaction was never read"
        time.sleep(0.2)
    produce(kafka.bootstrap, [(topics.posts, b"kept", post(f"kept-after-{i}", "kept")) for i in range(5)])
    service.wait_processed(35)
    service.wait_settled()
    assert not [i for i in emitted(kafka, topics.training) if i.startswith("kept-after-")]
    assert service.metric_sum("training_filter_consent_feed_records_total", result="granted") == 1  # never hanger's
    print(f"ready and 30 posts decided {held:.1f} s after start, a transaction open on the consent topic")
