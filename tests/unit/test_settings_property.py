"""Property: whatever the settings, the validation entry point the CLI uses returns settings or raises
the configuration error, every line of which names a TF_ variable. Never another exception."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.operations.settings import ConfigError
from consumer.service.preflight import validate
from tests.settings_strategies import changes, file_changes, make_files, names_a_variable

BASE = {
    "TF_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "TF_HMAC_KEY": "x" * 32,
    "TF_METRICS_HOST": "127.0.0.1",
    "TF_METRICS_PORT": "0",
    "TF_OPTOUT_CAPACITY": "100000",
}
TOPIC_NAMES = ["posts.v1", "ai-interactions.v1", "privacy.optouts.v1", "training.eligible.v1"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    return make_files(tmp_path_factory.mktemp("files"))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(changes(TOPIC_NAMES), st.booleans(), st.data())
def test_settings_are_accepted_or_refused_naming_a_variable(paths, changed, exactly_once, data):
    env = {**BASE, **changed, **data.draw(file_changes(paths))}
    if exactly_once:
        env["TF_PROCESSING_GUARANTEE"] = "exactly-once"
    try:
        result = validate(env)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        assert lines, "a configuration error without a problem"
        for line in lines:
            assert names_a_variable(line, env), f"names no variable: {line!r}"
    else:
        assert result.memory_budget is not None
        assert result.memory_budget.need <= result.memory_budget.limit
        assert 1 <= result.batch_size <= 1_000_000
        roles = [result.posts_topic, result.ai_interactions_topic, result.optouts_topic, result.training_topic]
        roles += [result.revocations_topic, result.dlq_topic]
        assert len(set(roles)) == len(roles)
