"""Settings: defaults, validation messages, librdkafka pass-through."""

from __future__ import annotations

import pytest

from consumer.operations.settings import SETTINGS, ConfigError, kafka_property, load_settings

BASE = {"TF_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "TF_HMAC_KEY": "x" * 32}


def test_defaults():
    s = load_settings(BASE)
    assert s.posts_topic == "posts.v1" and s.optouts_topic == "privacy.optouts.v1"
    assert s.training_topic == "training.eligible.v1" and s.dlq_topic == "training-filter.dlq.v1"
    assert s.optout_capacity == 10_000_000 and s.optout_fp_rate == 1e-6
    assert s.optout_max_lag_seconds == 5 and s.metrics_port == 9100
    assert s.processing_guarantee == "at-least-once" and not s.exactly_once
    assert s.hmac_key == b"x" * 32
    assert s.policy.minimum_age == 18


@pytest.mark.parametrize(
    "suffix,prop",
    [
        ("SECURITY_PROTOCOL", "security.protocol"),
        ("SASL_MECHANISM", "sasl.mechanism"),
        ("SSL_CA_LOCATION", "ssl.ca.location"),
        ("SOME__UNDERSCORED_NAME", "some_underscored.name"),
    ],
)
def test_kafka_property_names(suffix, prop):
    assert kafka_property(suffix) == prop


def test_librdkafka_properties_pass_through_by_scope():
    s = load_settings(
        {
            **BASE,
            "TF_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TF_CONSUMER_KAFKA_FETCH_MIN_BYTES": "10",
            "TF_PRODUCER_KAFKA_LINGER_MS": "50",
        }
    )
    assert s.consumer_config()["security.protocol"] == "SASL_SSL"
    assert s.producer_config()["security.protocol"] == "SASL_SSL"
    assert s.consumer_config()["fetch.min.bytes"] == "10" and "fetch.min.bytes" not in s.producer_config()
    assert s.producer_config()["linger.ms"] == "50" and "linger.ms" not in s.consumer_config()


def test_all_problems_are_reported_together_and_the_key_is_never_shown():
    with pytest.raises(ConfigError) as info:
        load_settings({"TF_HMAC_KEY": "short-secret", "TF_BATCH_SIZE": "-3", "TF_METRICS_PORT": "70000"})
    text = str(info.value)
    assert "TF_BOOTSTRAP_SERVERS is required" in text
    assert "TF_BATCH_SIZE" in text and "TF_METRICS_PORT" in text


def test_a_missing_key_and_policy_are_reported_with_the_other_problems(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings({"TF_BATCH_SIZE": "0", "TF_POLICY_FILE": str(tmp_path / "none.toml")})
    text = str(info.value)
    for expected in ("TF_BOOTSTRAP_SERVERS is required", "TF_BATCH_SIZE", "no pseudonymisation key", "TF_POLICY_FILE"):
        assert expected in text


def test_short_key_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, "TF_HMAC_KEY": "tiny-secret-value"})
    assert "at least 32" in str(info.value)
    assert "tiny-secret-value" not in str(info.value)


def test_key_file_trailing_newline_is_ignored(tmp_path):
    key = tmp_path / "key"
    key.write_bytes(b"y" * 40 + b"\n")
    s = load_settings({"TF_BOOTSTRAP_SERVERS": "b:1", "TF_HMAC_KEY_FILE": str(key)})
    assert s.hmac_key == b"y" * 40


def test_both_key_sources_is_an_error(tmp_path):
    key = tmp_path / "key"
    key.write_bytes(b"y" * 40)
    with pytest.raises(ConfigError, match="only one"):
        load_settings({**BASE, "TF_HMAC_KEY_FILE": str(key)})


def test_snapshot_folder_must_exist():
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({**BASE, "TF_OPTOUT_SNAPSHOT_PATH": "/no/such/folder/snap"})


def test_schema_registry_url_is_read_without_prefix_too():
    assert load_settings({**BASE, "SCHEMA_REGISTRY_URL": "http://r:8081"}).schema_registry_url == "http://r:8081"


def test_every_setting_has_help():
    assert all(s.help and s.name.isupper() for s in SETTINGS)


def test_operator_properties_override_defaults_but_not_what_the_guarantees_rest_on():
    s = load_settings({**BASE, "TF_PRODUCER_KAFKA_LINGER_MS": "50", "TF_PRODUCER_KAFKA_COMPRESSION_TYPE": "zstd"})
    config = s.producer_config({"linger.ms": 5, "batch.size": 1000}, **{"compression.type": "lz4"})
    assert config["linger.ms"] == "50"  # the operator's setting beats our default
    assert config["batch.size"] == 1000
    assert config["compression.type"] == "lz4"  # an enforced property beats the operator's
    with pytest.raises(ConfigError, match="TF_KAFKA_ACKS cannot be set: the delivery guarantee depends on acks"):
        load_settings({**BASE, "TF_KAFKA_ACKS": "1"})
