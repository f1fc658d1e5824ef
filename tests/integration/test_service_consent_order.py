"""An opt-in service against the real broker, where a user's grant and withdrawal sit in different
partitions of the consent topic (it grew, so the key maps elsewhere): the withdrawal wins whatever
order the feed reads them in, with no revocation to read back (TF_REVOCATIONS_START=latest: the
revocation group starts at the end, so the withdrawals written before it are never revoked), and
across a restart from the snapshots."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from consumer.devtools.topics import TopicSpec, ensure_topics
from rules.policy import default_policy_path
from tests.harness import produce
from tests.integration.test_consent_feed import COMPACTED, moved_keys, write
from tests.integration.test_service_consents import emitted
from tests.integration.test_service_optouts import post

pytestmark = pytest.mark.integration
USERS = 20


@pytest.fixture
def consent_topic(kafka: Any) -> str:
    name = f"consents-{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka.bootstrap, [TopicSpec(name, 2, COMPACTED)])
    return name


@pytest.fixture
def opt_in(tmp_path: Path, consent_topic: str) -> dict[str, str]:
    policy = tmp_path / "opt-in.toml"
    text = default_policy_path().read_text()
    policy.write_text(text.replace('version = "', 'consent_model = "opt_in"\nversion = "opt-in-', 1))
    return {
        "TF_POLICY_FILE": str(policy),
        "TF_CONSENT_TOPIC": consent_topic,
        "TF_CONSENT_CAPACITY": "100000",
        "TF_REVOCATIONS_START": "latest",
        "TF_LOG_LEVEL": "info",
    }


def posts_of_everyone(kafka: Any, topics: Any, tag: str) -> None:
    """One post of each user who withdrew, and one of `stayer`, who granted and never withdrew."""
    users = [f"moved-{i}" for i in range(USERS)] + ["stayer"]
    produce(kafka.bootstrap, [(topics.posts, u.encode(), post(f"{tag}-{u}", u)) for u in users])


def test_a_withdrawal_read_before_its_grant_still_wins(kafka, topics, new_service, opt_in, consent_topic):
    write(kafka, consent_topic, [*moved_keys(USERS), (0, "stayer", True)])
    posts_of_everyone(kafka, topics, "post")  # waiting before the service exists
    service = new_service(**opt_in).start()
    service.wait_ready()
    service.wait_processed(USERS + 1)
    service.wait_settled()
    assert emitted(kafka, topics.training) == ["post-stayer"]
    assert service.metric_sum("training_filter_revocations_total") == 0  # nothing was read back
    # The consent history holds the withdrawals: nobody is put in the opt-out filter (not for good).
    assert service.metric_sum("training_filter_optout_filter_entries") == 0


def test_a_restart_without_the_optout_snapshot_still_keeps_the_withdrawals(
    kafka, topics, new_service, opt_in, consent_topic, tmp_path
):
    """The consent snapshot's offsets are past the withdrawals (none was revoked). The consent history
    is saved in the consent snapshot with them, so it is resumed even without the opt-out snapshot,
    and the users whose grant was read last stay out."""
    env = {
        **opt_in,
        "TF_OPTOUT_SNAPSHOT_PATH": str(tmp_path / "optouts.snapshot"),
        "TF_CONSENT_SNAPSHOT_PATH": str(tmp_path / "consents.snapshot"),
    }
    write(kafka, consent_topic, [*moved_keys(USERS), (0, "stayer", True)])
    service = new_service(**env)  # one group: each run goes on where the one before stopped
    service.start().wait_ready()
    assert service.stop() == 0

    service.start().wait_ready()  # both snapshots: both resumed
    posts_of_everyone(kafka, topics, "second")
    service.wait_processed(USERS + 1)
    service.wait_settled()
    assert service.stop() == 0
    events = [line.get("event") for line in service.log_lines()]
    assert "consent_snapshot_loaded" in events and "optout_snapshot_loaded" in events
    assert emitted(kafka, topics.training) == ["second-stayer"]

    (tmp_path / "optouts.snapshot").unlink()  # lost (or unusable): the opt-out filter is rebuilt
    service.start().wait_ready()
    posts_of_everyone(kafka, topics, "third")
    service.wait_processed(USERS + 1)
    service.wait_settled()
    events = [line.get("event") for line in service.log_lines()]
    assert emitted(kafka, topics.training) == ["second-stayer", "third-stayer"]
    assert "consent_snapshot_not_used" not in events and "consent_snapshot_loaded" in events
