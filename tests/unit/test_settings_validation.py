"""Start-up validation of the settings: topic roles distinct, numbers bounded, paths apart, timings
that agree. Every problem is one line that names its TF_ variable."""

from __future__ import annotations

import itertools
import math
import os

import pytest

from consumer.operations.settings import SETTINGS, ConfigError, load_settings
from rules.policy import default_policy_path

BASE = {"TF_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "TF_HMAC_KEY": "x" * 32}
TOPIC_ROLES = [
    "TF_POSTS_TOPIC",
    "TF_AI_INTERACTIONS_TOPIC",
    "TF_OPTOUTS_TOPIC",
    "TF_CONSENT_TOPIC",
    "TF_TRAINING_TOPIC",
    "TF_REVOCATIONS_TOPIC",
    "TF_DLQ_TOPIC",
    "TF_CONTENT_CHANGES_TOPIC",
    "TF_ACCOUNT_CHANGES_TOPIC",
    "TF_AUDIT_TOPIC",
]
DEFAULT_POLICY = default_policy_path().read_text()
OPT_IN_POLICY = DEFAULT_POLICY.replace('version = "', 'consent_model = "opt_in"\nversion = "opt-in-', 1)


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    lines = str(caught.value).splitlines()
    for line in lines:
        assert "TF_" in line, f"a problem line names no variable: {line!r}"
    return lines


def opt_in(tmp_path) -> dict[str, str]:
    policy = tmp_path / "opt-in.toml"
    policy.write_text(OPT_IN_POLICY)
    return {**BASE, "TF_POLICY_FILE": str(policy), "TF_CONSENT_TOPIC": "privacy.consents.v1"}


# -- finding 1: the topic roles are pairwise distinct ---------------------------------------------------


def test_the_topic_roles_come_from_the_settings_table():
    """Any topic setting added later is checked too: the roles are every setting of topic type."""
    from consumer.operations.settings import topic_settings

    assert sorted(f"TF_{s.name}" for s in topic_settings()) == sorted(TOPIC_ROLES)


def test_the_revocations_topic_equal_to_the_optout_topic_is_refused():
    lines = problems({**BASE, "TF_REVOCATIONS_TOPIC": "privacy.optouts.v1"})
    assert len(lines) == 1
    assert "TF_REVOCATIONS_TOPIC" in lines[0] and "TF_OPTOUTS_TOPIC" in lines[0]
    assert "privacy.optouts.v1" in lines[0]


@pytest.mark.parametrize("first,second", list(itertools.combinations(TOPIC_ROLES, 2)))
def test_every_pair_of_topic_roles_must_differ(tmp_path, first, second):
    env = opt_in(tmp_path)
    env[first] = env[second] = "same.topic"
    lines = problems(env)
    assert any(first in line and second in line for line in lines), lines


def test_topic_names_that_kafka_treats_as_colliding_are_refused():
    """'.' and '_' are the same in Kafka's metric names: the broker refuses to have both topics."""
    lines = problems({**BASE, "TF_TRAINING_TOPIC": "privacy_optouts_v1"})
    assert any("TF_TRAINING_TOPIC" in line and "TF_OPTOUTS_TOPIC" in line and "collide" in line for line in lines)


@pytest.mark.parametrize("name", [".", "..", "a b", "x" * 250, "tópico"])
def test_topic_names_kafka_refuses_are_refused(name):
    assert any("TF_DLQ_TOPIC" in line for line in problems({**BASE, "TF_DLQ_TOPIC": name}))


# -- finding 2: numbers within what librdkafka and the machine accept -----------------------------------------


def test_batch_size_above_librdkafkas_consume_limit_is_refused():
    lines = problems({**BASE, "TF_BATCH_SIZE": "1000001"})
    assert len(lines) == 1 and "TF_BATCH_SIZE" in lines[0] and "1,000,000" in lines[0]
    assert load_settings({**BASE, "TF_BATCH_SIZE": "1000000"}).batch_size == 1_000_000


@pytest.mark.parametrize(
    "var",
    [
        "TF_OPTOUT_MAX_LAG_SECONDS",
        "TF_OPTOUT_SNAPSHOT_INTERVAL_SECONDS",
        "TF_HEALTH_STALL_SECONDS",
        "TF_SHUTDOWN_GRACE_SECONDS",
        "TF_REVOKE_FLUSH_SECONDS",
        "TF_LOG_SUMMARY_SECONDS",
        "TF_SCHEMA_REGISTRY_TIMEOUT_SECONDS",
        "TF_OPTOUT_FP_RATE",
    ],
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "", "-1", "0"])
def test_no_number_setting_takes_nan_inf_or_nothing(var, value):
    assert any(var in line for line in problems({**BASE, var: value}))


@pytest.mark.parametrize(
    "var,too_big",
    [
        ("TF_BATCH_TIMEOUT_MS", "3600000"),
        ("TF_BATCH_MIN_WAIT_MS", "3600000"),
        ("TF_TRANSACTION_INTERVAL_MS", "86400000"),
        ("TF_STATISTICS_INTERVAL_MS", "86400001"),  # librdkafka's statistics.interval.ms ends at 86,400,000
        ("TF_MAX_VALUE_BYTES", str(2**31)),
        ("TF_OPTOUT_MAX_LAG_SECONDS", "1e9"),
        ("TF_HEALTH_STALL_SECONDS", "1e9"),
        ("TF_SHUTDOWN_GRACE_SECONDS", "1e9"),
        ("TF_OPTOUT_SNAPSHOT_INTERVAL_SECONDS", "1e12"),
        ("TF_METRICS_PORT", "65536"),
        ("TF_OPTOUT_FP_RATE", "0.5"),
        ("TF_OPTOUT_CAPACITY", "1" + "0" * 40),
        ("TF_CONSENT_CAPACITY", "9" * 5000),  # past Python's int() digit limit: still a clean message
    ],
)
def test_every_number_has_an_upper_bound(var, too_big):
    assert any(var in line for line in problems({**BASE, var: too_big}))


def test_an_optout_lag_bound_so_small_that_input_could_never_run_is_refused():
    assert any("TF_OPTOUT_MAX_LAG_SECONDS" in line for line in problems({**BASE, "TF_OPTOUT_MAX_LAG_SECONDS": "0.01"}))


def test_every_number_setting_declares_its_bounds_and_why():
    from consumer.operations.setting_kinds import Integer, Number

    numeric = [s for s in SETTINGS if isinstance(s.kind, (Integer, Number))]
    assert len(numeric) >= 17
    for s in numeric:
        assert math.isfinite(s.kind.low) and math.isfinite(s.kind.high) and s.kind.low <= s.kind.high, s.name
        assert s.why, f"TF_{s.name} does not say why its bounds are what they are"
        assert s.kind.low <= s.kind.parse(s.default) <= s.kind.high, s.name  # the default is inside


def test_bounds_are_shown_in_the_help_table():
    from consumer.operations.settings import describe_settings

    text = describe_settings()
    assert "1 to 1,000,000" in text  # TF_BATCH_SIZE


# -- siblings: settings that collide or contradict each other ---------------------------------------------------


def test_the_two_snapshot_paths_must_differ(tmp_path):
    env = {
        **opt_in(tmp_path),
        "TF_OPTOUT_SNAPSHOT_PATH": str(tmp_path / "snap"),
        "TF_CONSENT_SNAPSHOT_PATH": str(tmp_path / "." / "snap"),
    }
    lines = problems(env)
    assert any("TF_OPTOUT_SNAPSHOT_PATH" in line and "TF_CONSENT_SNAPSHOT_PATH" in line for line in lines)


@pytest.mark.parametrize("reader", ["TF_HMAC_KEY_FILE", "TF_POLICY_FILE", "TF_KAFKA_SSL_CA_LOCATION"])
def test_a_snapshot_must_not_overwrite_a_file_the_service_reads(tmp_path, reader):
    target = tmp_path / "file"
    if reader == "TF_POLICY_FILE":
        target.write_text(DEFAULT_POLICY)
    else:
        target.write_bytes(b"k" * 40)
    env = {k: v for k, v in BASE.items() if not (reader == "TF_HMAC_KEY_FILE" and k == "TF_HMAC_KEY")}
    env.update({reader: str(target), "TF_OPTOUT_SNAPSHOT_PATH": str(target)})
    lines = problems(env)
    assert any("TF_OPTOUT_SNAPSHOT_PATH" in line and reader in line for line in lines), lines


def test_the_key_file_must_not_be_another_settings_file(tmp_path):
    """A policy file as the key would pseudonymise with a key anyone can read."""
    policy = tmp_path / "policy.toml"
    policy.write_text(DEFAULT_POLICY)
    env = {"TF_BOOTSTRAP_SERVERS": "b:1", "TF_HMAC_KEY_FILE": str(policy), "TF_POLICY_FILE": str(policy)}
    assert any("TF_HMAC_KEY_FILE" in line and "TF_POLICY_FILE" in line for line in problems(env))


def test_a_snapshot_path_that_is_a_folder_or_unwritable_is_refused(tmp_path):
    lines = problems({**BASE, "TF_OPTOUT_SNAPSHOT_PATH": str(tmp_path)})
    assert any("TF_OPTOUT_SNAPSHOT_PATH" in line for line in lines)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        env = {**BASE, "TF_OPTOUT_SNAPSHOT_PATH": str(locked / "snap")}
        assert any("TF_OPTOUT_SNAPSHOT_PATH" in line for line in problems(env))


def test_the_shortest_wait_may_not_exceed_the_longest():
    lines = problems({**BASE, "TF_BATCH_MIN_WAIT_MS": "500", "TF_BATCH_TIMEOUT_MS": "100"})
    assert any("TF_BATCH_MIN_WAIT_MS" in line and "TF_BATCH_TIMEOUT_MS" in line for line in lines)


def test_the_stall_bound_must_exceed_the_longest_healthy_turn():
    lines = problems({**BASE, "TF_HEALTH_STALL_SECONDS": "5", "TF_REVOKE_FLUSH_SECONDS": "10"})
    assert any("TF_HEALTH_STALL_SECONDS" in line and "TF_REVOKE_FLUSH_SECONDS" in line for line in lines)


@pytest.mark.parametrize(
    "var,instead",
    [
        ("TF_KAFKA_BOOTSTRAP_SERVERS", "TF_BOOTSTRAP_SERVERS"),
        ("TF_CONSUMER_KAFKA_STATISTICS_INTERVAL_MS", "TF_STATISTICS_INTERVAL_MS"),
        ("TF_KAFKA_GROUP_ID", "TF_GROUP_ID"),
        ("TF_PRODUCER_KAFKA_TRANSACTIONAL_ID", "TF_TRANSACTIONAL_ID"),
    ],
)
def test_a_passthrough_property_that_a_setting_owns_is_refused(var, instead):
    lines = problems({**BASE, var: "1000"})
    assert any(var in line and instead in line for line in lines), lines


@pytest.mark.parametrize("var", ["TF_KAFKA_ERROR_CB", "TF_PRODUCER_KAFKA_ON_DELIVERY", "TF_KAFKA_LOGGER"])
def test_callbacks_cannot_be_set_from_the_environment(var):
    assert any(var in line for line in problems({**BASE, var: "x"}))


def test_two_variables_for_one_property_with_different_values_are_refused():
    env = {**BASE, "TF_KAFKA_SASL_USERNAME": "a", "TF_KAFKA_sasl_username": "b"}
    lines = problems(env)
    assert any("TF_KAFKA_SASL_USERNAME" in line and "TF_KAFKA_sasl_username" in line for line in lines)


def test_registry_settings_without_a_registry_url_are_refused():
    lines = problems({**BASE, "TF_SCHEMA_REGISTRY_USER": "svc"})
    assert any("TF_SCHEMA_REGISTRY_USER" in line and "TF_SCHEMA_REGISTRY_URL" in line for line in lines)


def test_a_pinned_output_version_needs_auto_registration_off():
    env = {**BASE, "TF_SCHEMA_REGISTRY_URL": "http://r:8081", "TF_SCHEMA_REGISTRY_OUTPUT_VERSION": "3"}
    lines = problems(env)
    assert any("TF_SCHEMA_REGISTRY_OUTPUT_VERSION" in line and "AUTO_REGISTER" in line for line in lines)


def test_a_misspelt_setting_is_refused_with_the_right_name():
    lines = problems({**BASE, "TF_BATCH_SZE": "100"})
    assert any("TF_BATCH_SZE" in line and "TF_BATCH_SIZE" in line for line in lines)


@pytest.mark.parametrize("servers", ["", " ", "a:1,,b:2", "host:0", "host:99999", "host:port", "a b:1"])
def test_bootstrap_servers_must_be_host_port_pairs(servers):
    assert any("TF_BOOTSTRAP_SERVERS" in line for line in problems({**BASE, "TF_BOOTSTRAP_SERVERS": servers}))


@pytest.mark.parametrize("servers", ["k1:9092,k2:9092", "SASL_SSL://k:9093", "[::1]:9092", "kafka"])
def test_bootstrap_servers_librdkafka_accepts_are_accepted(servers):
    assert load_settings({**BASE, "TF_BOOTSTRAP_SERVERS": servers}).bootstrap_servers == servers


def test_a_multi_line_policy_error_stays_one_line_per_problem(tmp_path):
    policy = tmp_path / "bad.toml"
    policy.write_text("version = \n[[[")
    for line in problems({**BASE, "TF_POLICY_FILE": str(policy)}):
        assert line.startswith("TF_") or "TF_" in line


@pytest.mark.parametrize("var", ["TF_POLICY_FILE", "TF_SHADOW_POLICY_FILE"])
def test_a_binary_policy_file_is_refused_not_a_crash(tmp_path, var):
    binary = tmp_path / "policy.toml"
    binary.write_bytes(bytes(range(256)))
    assert any(var in line and "UTF-8" in line for line in problems({**BASE, var: str(binary)}))
