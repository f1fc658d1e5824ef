"""The deployment's settings (consumer/operations/settings_deployment.py) are held to the settings
table: each rule of `problems()` finds what it is there for, and the env files are written from the
declarations with each value under its reason."""

from __future__ import annotations

import pytest

from consumer.devtools.docs import env_files
from consumer.operations import settings_deployment
from consumer.operations.settings_deployment import BASE, ENV_FILES, EnvFile, given, pin, problems


def found(monkeypatch: pytest.MonkeyPatch, *entries, path: str = BASE) -> list[str]:
    """The problems of `entries` declared in the file `path` (beside the shipped base, for an overlay's)."""
    files = (EnvFile(BASE, "test", entries),) if path == BASE else (ENV_FILES[0], EnvFile(path, "test", entries))
    monkeypatch.setattr(settings_deployment, "ENV_FILES", files)
    return problems()


def test_the_shipped_declarations_have_no_problem():
    assert problems() == []


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (given("TF_BATCH_SIZ", "10", "a typo"), "TF_BATCH_SIZ is not a setting"),
        (given("BATCH_SIZE", "10", "no prefix"), "BATCH_SIZE is not a setting"),
        (given("TF_BATCH_SIZE", "0", "out of bounds"), "TF_BATCH_SIZE='0' is invalid: must be from 1"),
        (given("TF_LOG_LEVEL", "loud", "not a level"), "TF_LOG_LEVEL='loud' is invalid: must be one of"),
        (given("TF_BATCH_SIZE", "2000", "the default again"), "is the table's default: pin it"),
        (given("TF_HMAC_KEY", "k" * 32, "a key"), "TF_HMAC_KEY is secret"),
        (given("TF_KAFKA_SASL_PASSWORD", "pw", "a password"), "TF_KAFKA_SASL_PASSWORD is secret"),
        (given("TF_KAFKA_NO_SUCH_PROPERTY", "1", "a typo"), "librdkafka has no property no.such.property"),
        (given("TF_KAFKA_GROUP_ID", "x", "owned"), "group.id comes from TF_GROUP_ID"),
        (given("TF_BATCH_SIZE", "10", " "), "say why the deployment sets it"),
        (pin("BOOTSTRAP_SERVERS", "required"), "TF_BOOTSTRAP_SERVERS is required: it has no default to pin"),
        (pin("NO_SUCH_SETTING", "unknown"), "TF_NO_SUCH_SETTING is not a setting"),
    ],
)
def test_a_declaration_at_odds_with_the_settings_table_is_a_problem(monkeypatch, entry, problem):
    (line,) = found(monkeypatch, entry)
    assert line.startswith(f"{BASE}: ") and problem in line


def test_a_variable_given_twice_or_repeating_the_base_is_a_problem(monkeypatch):
    assert found(monkeypatch, given("TF_BATCH_SIZE", "10", "a"), given("TF_BATCH_SIZE", "20", "b")) == [
        f"{BASE}: TF_BATCH_SIZE is given twice"
    ]
    overlay = "overlays/x/training-filter.env"
    assert found(monkeypatch, pin("METRICS_PORT", "again"), path=overlay) == [
        f"{overlay}: TF_METRICS_PORT repeats the base's value: drop it"
    ]
    assert found(monkeypatch, given("TF_METRICS_PORT", "9200", "another port"), path=overlay) == []


def test_an_env_file_holds_each_value_under_its_reason_and_a_pin_holds_the_default():
    text = env_files.render(
        EnvFile("x.env", "About.", (pin("METRICS_PORT", "The probes use it."), given("TF_LOG_LEVEL", "debug", "Why.")))
    )
    assert text.splitlines()[1:] == [
        "# About.",
        "",
        "# The default, pinned. The probes use it.",
        "TF_METRICS_PORT=9100",
        "",
        "# Why.",
        "TF_LOG_LEVEL=debug",
    ]


def test_no_env_file_is_written_while_a_declaration_is_wrong(monkeypatch, tmp_path):
    found(monkeypatch, given("TF_BATCH_SIZE", "0", "out of bounds"))
    with pytest.raises(ValueError, match=r"disagree with the settings table: .*TF_BATCH_SIZE='0'"):
        env_files.update(tmp_path)
    assert list(tmp_path.iterdir()) == []
