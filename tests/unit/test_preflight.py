"""Preflight: the librdkafka configuration of every client kind, the metrics port and the memory budget,
checked before any connection. A rejected property names its variable."""

from __future__ import annotations

import socket

import pytest

from consumer.operations.settings import ConfigError
from consumer.service.preflight import validate

BASE = {"TF_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "TF_HMAC_KEY": "x" * 32, "TF_METRICS_PORT": "0"}


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate(env)
    lines = str(caught.value).splitlines()
    for line in lines:
        assert "TF_" in line, f"a problem line names no variable: {line!r}"
    return lines


def test_valid_settings_pass_and_carry_the_memory_budget():
    settings = validate({**BASE, "TF_OPTOUT_CAPACITY": "1000", "TF_KAFKA_CLIENT_ID": "tf-test"})
    assert settings.memory_budget is not None
    assert 0 < settings.memory_budget.need <= settings.memory_budget.limit


@pytest.mark.parametrize(
    "var,value",
    [
        ("TF_KAFKA_NO_SUCH_PROPERTY", "1"),
        ("TF_CONSUMER_KAFKA_FETCH_MIN_BYTES", "-5"),
        ("TF_CONSUMER_KAFKA_FETCH_MIN_BYTES", "lots"),
        ("TF_PRODUCER_KAFKA_LINGER_MS", "soon"),  # librdkafka names its alias queue.buffering.max.ms
        ("TF_KAFKA_SECURITY_PROTOCOL", "carrier-pigeon"),
        ("TF_PRODUCER_KAFKA_MESSAGE_MAX_BYTES", "1000000001"),
        ("TF_PRODUCER_KAFKA_MESSAGE_MAX_BYTES", "big"),
        ("TF_CONSUMER_KAFKA_FETCH_MAX_BYTES", "1000"),  # below message.max.bytes
        ("TF_KAFKA_PLUGIN_LIBRARY_PATHS", "/no/such/plugin.so"),
    ],
)
def test_a_property_librdkafka_rejects_names_its_variable(var, value):
    lines = problems({**BASE, var: value})
    assert any(var in line for line in lines), lines


def test_a_refusal_that_quotes_a_value_names_its_variable():
    """SASL_SSL alone is refused too here (no GSSAPI in this librdkafka): the reason quotes NOPE."""
    lines = problems({**BASE, "TF_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TF_KAFKA_SASL_MECHANISM": "NOPE"})
    assert len(lines) == 1 and "TF_KAFKA_SASL_MECHANISM" in lines[0] and "NOPE" in lines[0], lines


def test_a_rejected_combination_names_the_variables_involved(tmp_path):
    env = {**BASE, "TF_KAFKA_SECURITY_PROTOCOL": "SSL", "TF_KAFKA_SSL_CA_LOCATION": str(tmp_path / "none.pem")}
    lines = problems(env)
    assert any("TF_KAFKA_SSL_CA_LOCATION" in line for line in lines), lines


def test_a_refusal_naming_a_property_blames_that_variable_alone():
    """The reason names ssl.key.location (and says 'SSL routines'): not TF_KAFKA_SECURITY_PROTOCOL=SSL."""
    env = {**BASE, "TF_KAFKA_SECURITY_PROTOCOL": "SSL", "TF_KAFKA_SSL_KEY_LOCATION": "/no/such/key.pem"}
    lines = problems(env)
    assert len(lines) == 1 and "TF_KAFKA_SSL_KEY_LOCATION" in lines[0], lines
    assert "TF_KAFKA_SECURITY_PROTOCOL" not in lines[0]


def test_a_combination_with_the_services_own_properties_is_checked():
    """The input consumer sets fetch.max.bytes = 50 MiB: a larger message.max.bytes for every client fails it."""
    lines = problems({**BASE, "TF_KAFKA_MESSAGE_MAX_BYTES": "100000000"})
    assert any("TF_KAFKA_MESSAGE_MAX_BYTES" in line for line in lines), lines


def test_an_exactly_once_producer_property_is_checked():
    env = {
        **BASE,
        "TF_PROCESSING_GUARANTEE": "exactly-once",
        "TF_PRODUCER_KAFKA_TRANSACTION_TIMEOUT_MS": "forever",
    }
    assert any("TF_PRODUCER_KAFKA_TRANSACTION_TIMEOUT_MS" in line for line in problems(env))


def test_the_revoke_flush_must_end_before_the_consumer_leaves_the_group():
    env = {**BASE, "TF_REVOKE_FLUSH_SECONDS": "20", "TF_CONSUMER_KAFKA_MAX_POLL_INTERVAL_MS": "10000"}
    lines = problems(env)
    assert any("TF_REVOKE_FLUSH_SECONDS" in line and "TF_CONSUMER_KAFKA_MAX_POLL_INTERVAL_MS" in line for line in lines)


def test_a_transaction_interval_near_the_transaction_timeout_is_refused():
    env = {
        **BASE,
        "TF_PROCESSING_GUARANTEE": "exactly-once",
        "TF_TRANSACTION_INTERVAL_MS": "50000",
        "TF_PRODUCER_KAFKA_TRANSACTION_TIMEOUT_MS": "60000",
    }
    lines = problems(env)
    both = ("TF_TRANSACTION_INTERVAL_MS", "TF_PRODUCER_KAFKA_TRANSACTION_TIMEOUT_MS")
    assert any(all(var in line for var in both) for line in lines)


def test_a_value_larger_than_the_producer_queue_is_refused():
    env = {**BASE, "TF_MAX_VALUE_BYTES": "8388608", "TF_PRODUCER_KAFKA_QUEUE_BUFFERING_MAX_KBYTES": "4096"}
    lines = problems(env)
    assert any("TF_MAX_VALUE_BYTES" in line and "QUEUE_BUFFERING_MAX_KBYTES" in line for line in lines)


def test_a_metrics_port_in_use_is_refused():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines = problems({**BASE, "TF_METRICS_HOST": "127.0.0.1", "TF_METRICS_PORT": str(port)})
    assert any("TF_METRICS_PORT" in line for line in lines)


def test_a_metrics_host_it_cannot_listen_on_is_refused():
    assert any("TF_METRICS_HOST" in line for line in problems({**BASE, "TF_METRICS_HOST": "::1"}))


def test_preflight_connects_to_nothing():
    """The clients are made without bootstrap.servers: the 'broker' sees no connection."""
    with socket.socket() as broker:
        broker.bind(("127.0.0.1", 0))
        broker.listen()
        broker.settimeout(0.5)
        env = {**BASE, "TF_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker.getsockname()[1]}", "TF_OPTOUT_CAPACITY": "1000"}
        validate(env)
        with pytest.raises(TimeoutError):
            broker.accept()


def test_every_problem_is_reported_together():
    lines = problems({**BASE, "TF_BATCH_SIZE": "0", "TF_KAFKA_NO_SUCH": "1"})
    assert any("TF_BATCH_SIZE" in line for line in lines)
