"""Settings from environment variables (prefix TF_), validated at start-up.

Every setting is declared once in SETTINGS; `training-filter run --help` prints that table, and a
wrong value stops the service before it touches Kafka, with a message that names the variable and
says what to fix. librdkafka properties pass through untouched: TF_KAFKA_<NAME> (all clients),
TF_CONSUMER_KAFKA_<NAME> and TF_PRODUCER_KAFKA_<NAME>, where <NAME> is the property upper-cased with
dots as single underscores (`_` -> `.`, `__` -> `_`), e.g. TF_KAFKA_SECURITY_PROTOCOL=SASL_SSL.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.wire.registry import RegistrySettings
from rules import Policy, PolicyError, load_policy

PREFIX = "TF_"
MIN_HMAC_KEY_BYTES = 32


class ConfigError(ValueError):
    """A setting is missing or invalid. The message names the variable and what to do."""


@dataclass(frozen=True)
class Setting:
    name: str  # without the prefix
    default: str | None  # None: required
    help: str
    parse: Callable[[str], Any] = str
    secret: bool = False


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be a non-negative number")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 0.5:
        raise ValueError("must be between 0 and 0.5, e.g. 1e-6")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port 0-65535 (0 picks a free one)")
    return value


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValueError("must be true or false")


def _version(text: str) -> str:
    value = text.strip().lower()
    if value != "latest" and not (value.isdigit() and int(value) > 0):
        raise ValueError("must be latest or a version number (1, 2, ...)")
    return value


def _topic(text: str) -> str:
    value = text.strip()
    if not value or len(value) > 249 or not all(c.isalnum() or c in "._-" for c in value):
        raise ValueError("must be a Kafka topic name (letters, digits, '.', '_', '-')")
    return value


@dataclass(frozen=True)
class TopicNames:
    """The six topics the service touches, with their default names (TF_*_TOPIC override them)."""

    posts: str = "posts.v1"
    ai: str = "ai-interactions.v1"
    optouts: str = "privacy.optouts.v1"
    training: str = "training.eligible.v1"
    revocations: str = "training.revocations.v1"
    dlq: str = "training-filter.dlq.v1"


DEFAULT_TOPICS = TopicNames()

SETTINGS: tuple[Setting, ...] = (
    Setting("BOOTSTRAP_SERVERS", None, "Kafka bootstrap servers, host:port[,host:port]"),
    Setting(
        "GROUP_ID",
        "training-filter",
        "consumer group of the input topics; the opt-out feed and the "
        "revocation emitter derive their groups from it (-optout-feed, -revocations)",
    ),
    Setting("POSTS_TOPIC", DEFAULT_TOPICS.posts, "input topic of Post records", _topic),
    Setting("AI_INTERACTIONS_TOPIC", DEFAULT_TOPICS.ai, "input topic of AiInteraction records", _topic),
    Setting("OPTOUTS_TOPIC", DEFAULT_TOPICS.optouts, "compacted topic of OptOut records (key = user id)", _topic),
    Setting("TRAINING_TOPIC", DEFAULT_TOPICS.training, "output topic of TrainingRecord", _topic),
    Setting("REVOCATIONS_TOPIC", DEFAULT_TOPICS.revocations, "output topic of Revocation", _topic),
    Setting("DLQ_TOPIC", DEFAULT_TOPICS.dlq, "dead-letter topic for undecodable input", _topic),
    Setting(
        "HMAC_KEY_FILE",
        "",
        "file holding the pseudonymisation key (a mounted Secret); one of this or "
        "TF_HMAC_KEY is required; trailing newlines are ignored; at least 32 bytes",
    ),
    Setting(
        "HMAC_KEY", "", "the pseudonymisation key itself (prefer TF_HMAC_KEY_FILE); at least 32 bytes", secret=True
    ),
    Setting("POLICY_FILE", "", "eligibility policy TOML (default: the packaged rules/policy.toml)"),
    Setting(
        "SHADOW_POLICY_FILE",
        "",
        "a candidate policy TOML decided beside the active one on every record; it only counts "
        "(training_filter_shadow_decisions_total), never emits (empty: no shadow)",
    ),
    Setting(
        "PROCESSING_GUARANTEE",
        "at-least-once",
        "at-least-once or exactly-once (Kafka transactions)",
        _choice("at-least-once", "exactly-once"),
    ),
    Setting(
        "TRANSACTIONAL_ID",
        "",
        "exactly-once only: the producer's transactional.id, used as given (default: the group id "
        "plus the host name, which must be stable per replica, e.g. a StatefulSet pod name)",
    ),
    Setting(
        "TRANSACTION_INTERVAL_MS", "100", "exactly-once only: how long one transaction collects batches", _positive_int
    ),
    Setting("BATCH_SIZE", "2000", "records asked of one consume() call", _positive_int),
    Setting(
        "BATCH_TIMEOUT_MS",
        "100",
        "longest wait of one consume() call for a batch to fill (reached while the input is idle)",
        _positive_int,
    ),
    Setting(
        "BATCH_MIN_WAIT_MS",
        "5",
        "shortest wait of one consume() call, used while records flow (low latency); it doubles up to "
        "TF_BATCH_TIMEOUT_MS while the input is idle",
        _positive_int,
    ),
    Setting(
        "MAX_VALUE_BYTES",
        "1048576",
        "input values larger than this go to the DLQ as oversized (the default is what a default Java "
        "producer can write); the producer allows 64 KiB more, the output topics need 128 KiB more, and "
        "a lower output topic limit lowers this one",
        _positive_int,
    ),
    Setting("OPTOUT_CAPACITY", "10000000", "opt-outs the Bloom filter is sized for", _positive_int),
    Setting("OPTOUT_FP_RATE", "1e-6", "the Bloom filter's false-positive rate at capacity", _probability),
    Setting(
        "OPTOUT_MAX_LAG_SECONDS",
        "5",
        "input pauses (and /readyz fails) when the opt-out feed has not been confirmed caught up for this long",
        _positive_float,
    ),
    Setting("OPTOUT_SNAPSHOT_PATH", "", "file for the opt-out filter snapshot (empty: no snapshots)"),
    Setting(
        "OPTOUT_SNAPSHOT_INTERVAL_SECONDS",
        "300",
        "how often the snapshot is written (and at shutdown)",
        _positive_float,
    ),
    Setting(
        "CONSENT_TOPIC",
        "",
        'required when the policy or the shadow policy is opt-in (consent_model = "opt_in"), else unset: '
        "compacted topic of Consent records (key = user id), e.g. privacy.consents.v1",
    ),
    Setting(
        "CONSENT_CAPACITY",
        "10000000",
        "consents the consent set is sized for (8 bytes a slot, load <= 0.8)",
        _positive_int,
    ),
    Setting(
        "CONSENT_SNAPSHOT_PATH",
        "",
        "file for the consent set snapshot (empty: no snapshots; written with the opt-out one)",
    ),
    Setting(
        "REVOCATIONS_START",
        "earliest",
        "where a new revocation group starts on the opt-out topic: earliest (revoke every opt-out ever made) or latest",
        _choice("earliest", "latest"),
    ),
    Setting("METRICS_HOST", "0.0.0.0", "address of the metrics and health HTTP server"),
    Setting("METRICS_PORT", "9100", "port of /metrics, /healthz and /readyz (0 picks a free one)", _port),
    Setting("HEALTH_STALL_SECONDS", "60", "/healthz fails when the loop has not turned for this long", _positive_float),
    Setting(
        "SHUTDOWN_GRACE_SECONDS", "20", "on SIGTERM: time to finish, flush and commit before exiting", _positive_float
    ),
    Setting(
        "REVOKE_FLUSH_SECONDS",
        "10",
        "on a rebalance: bound on waiting for in-flight records before committing the revoked partitions",
        _positive_float,
    ),
    Setting("STATISTICS_INTERVAL_MS", "5000", "librdkafka statistics (consumer lag metrics) interval", _positive_int),
    Setting(
        "LOG_LEVEL",
        "info",
        "debug, info, warning or error; debug adds one line per batch",
        _choice("debug", "info", "warning", "error"),
    ),
    Setting("LOG_SUMMARY_SECONDS", "30", "interval of the info-level summary line", _positive_float),
    Setting(
        "SCHEMA_REGISTRY_URL",
        "",
        "schema registry URL (Confluent-compatible API); also read without the prefix. With it, schema ids come "
        "from the registry alone; empty: from avro/catalog.json",
    ),
    Setting("SCHEMA_REGISTRY_USER", "", "registry basic-auth user name (with TF_SCHEMA_REGISTRY_PASSWORD_FILE)"),
    Setting(
        "SCHEMA_REGISTRY_PASSWORD_FILE",
        "",
        "file holding the registry basic-auth password (a mounted Secret); trailing newlines are ignored",
    ),
    Setting(
        "SCHEMA_REGISTRY_PASSWORD",
        "",
        "the registry password itself (prefer TF_SCHEMA_REGISTRY_PASSWORD_FILE)",
        secret=True,
    ),
    Setting(
        "SCHEMA_REGISTRY_CA_LOCATION", "", "CA certificate (PEM) the registry's TLS certificate is checked against"
    ),
    Setting("SCHEMA_REGISTRY_CERT_LOCATION", "", "client certificate (PEM) for a registry that asks for one (mTLS)"),
    Setting("SCHEMA_REGISTRY_KEY_LOCATION", "", "the client certificate's private key (PEM)"),
    Setting(
        "SCHEMA_REGISTRY_AUTO_REGISTER",
        "true",
        "true: register the output schemas at start-up; false: look them up (a read-only credential)",
        _boolean,
    ),
    Setting(
        "SCHEMA_REGISTRY_SUBJECT_STRATEGY",
        "topic",
        "subject naming of the output schemas: topic (<topic>-value), record (the record's full name) or "
        "topic_record (<topic>-<record name>)",
        _choice("topic", "record", "topic_record"),
    ),
    Setting(
        "SCHEMA_REGISTRY_OUTPUT_VERSION",
        "latest",
        "with auto-registration off: the subject version to look up, latest or a number; it must be the "
        "service's own schema",
        _version,
    ),
    Setting("SCHEMA_REGISTRY_TIMEOUT_SECONDS", "10", "timeout of one registry request", _positive_float),
    Setting(
        "SCHEMA_REGISTRY_RETRY_SECONDS",
        "60",
        "an id the registry answered without a usable schema (404, a refusal of that id, not Avro) is asked "
        "again after this long; its records are dead letters meanwhile (replayable)",
        _positive_float,
    ),
    Setting(
        "SCHEMA_REGISTRY_LOOKUPS_PER_BATCH",
        "20",
        "unknown schema ids one batch may look up (the most frequent first); records of the others are dead "
        "letters (schema_lookup_limit): a flood of random ids cannot stall the loop",
        _positive_int,
    ),
    Setting(
        "CLOCK_SKEW_SECONDS",
        "300",
        "how far a record's created_at may lie ahead of the service's clock; later records are refused "
        "(future_dated), because the age check runs at created_at",
        _non_negative_float,
    ),
)

_KAFKA_PREFIXES = {"KAFKA_": "common", "CONSUMER_KAFKA_": "consumer", "PRODUCER_KAFKA_": "producer"}


def kafka_property(env_suffix: str) -> str:
    """TF_KAFKA_SASL_MECHANISM -> sasl.mechanism; a double underscore is a literal underscore."""
    return env_suffix.lower().replace("__", "\0").replace("_", ".").replace("\0", "_")


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str
    group_id: str
    posts_topic: str
    ai_interactions_topic: str
    optouts_topic: str
    training_topic: str
    revocations_topic: str
    dlq_topic: str
    hmac_key: bytes = field(repr=False)
    policy: Policy
    processing_guarantee: str
    transactional_id: str
    transaction_interval_ms: int
    batch_size: int
    batch_timeout_ms: int
    batch_min_wait_ms: int
    max_value_bytes: int
    optout_capacity: int
    optout_fp_rate: float
    optout_max_lag_seconds: float
    optout_snapshot_path: Path | None
    optout_snapshot_interval_seconds: float
    consent_topic: str | None
    consent_capacity: int
    consent_snapshot_path: Path | None
    revocations_start: str
    metrics_host: str
    metrics_port: int
    health_stall_seconds: float
    shutdown_grace_seconds: float
    revoke_flush_seconds: float
    statistics_interval_ms: int
    log_level: str
    log_summary_seconds: float
    schema_registry_url: str
    schema_registry_auto_register: bool
    schema_registry_subject_strategy: str
    schema_registry_output_version: str
    schema_registry_timeout_seconds: float
    schema_registry_retry_seconds: float
    schema_registry_lookups_per_batch: int
    clock_skew_seconds: float
    registry: RegistrySettings | None = None
    shadow_policy: Policy | None = None  # TF_SHADOW_POLICY_FILE: decided beside `policy`, counted only
    kafka_common: dict[str, str] = field(default_factory=dict)
    kafka_consumer: dict[str, str] = field(default_factory=dict)
    kafka_producer: dict[str, str] = field(default_factory=dict)

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly-once"

    @property
    def input_topics(self) -> list[str]:
        return [self.posts_topic, self.ai_interactions_topic]

    def consumer_config(self, defaults: Mapping[str, Any] | None = None, /, **enforced: Any) -> dict[str, Any]:
        """librdkafka consumer properties: `defaults`, then the operator's TF_*KAFKA_*, then `enforced`."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            **(defaults or {}),
            **self.kafka_common,
            **self.kafka_consumer,
            **enforced,
        }

    def producer_config(self, defaults: Mapping[str, Any] | None = None, /, **enforced: Any) -> dict[str, Any]:
        """librdkafka producer properties: `defaults`, then the operator's TF_*KAFKA_*, then `enforced`."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            **(defaults or {}),
            **self.kafka_common,
            **self.kafka_producer,
            **enforced,
        }


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; all problems are reported together in one ConfigError."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        var = PREFIX + setting.name
        raw = env.get(var)
        if raw is None and setting.name == "SCHEMA_REGISTRY_URL":
            raw = env.get("SCHEMA_REGISTRY_URL")
        if raw is None or (raw.strip() == "" and setting.default is None):
            if setting.default is None:
                problems.append(f"{var} is required: {setting.help}")
                continue
            raw = setting.default
        try:
            values[setting.name.lower()] = setting.parse(raw)
        except ValueError as exc:
            shown = "(hidden)" if setting.secret else repr(raw)
            problems.append(f"{var}={shown} is invalid: {exc}")

    kafka: dict[str, dict[str, str]] = {"common": {}, "consumer": {}, "producer": {}}
    for var, raw in env.items():
        if not var.startswith(PREFIX):
            continue
        rest = var[len(PREFIX) :]
        for prefix, scope in _KAFKA_PREFIXES.items():
            if rest.startswith(prefix) and len(rest) > len(prefix):
                kafka[scope][kafka_property(rest[len(prefix) :])] = raw
                break

    # The key, the policy and the snapshot folder are checked even when a setting above is wrong:
    # every problem is reported in one go.
    key = _hmac_key(values.pop("hmac_key_file"), values.pop("hmac_key"), problems)
    policy_path = values.pop("policy_file") or None
    policy: Policy | None = None
    try:
        policy = load_policy(policy_path)
    except PolicyError as exc:
        problems.append(f"{PREFIX}POLICY_FILE: {exc}")
    shadow_policy = _shadow_policy(values.pop("shadow_policy_file").strip(), policy, problems)
    snapshot = values.pop("optout_snapshot_path").strip()
    snapshot_path = Path(snapshot) if snapshot else None
    if snapshot_path is not None and not snapshot_path.parent.is_dir():
        problems.append(f"{PREFIX}OPTOUT_SNAPSHOT_PATH={snapshot}: folder {snapshot_path.parent} does not exist")
    consent_topic, consent_snapshot = _consents(values, policy, policy_path, shadow_policy, problems)
    registry = _registry(values, problems)
    if problems or policy is None:
        raise ConfigError(_report(problems))
    return Settings(
        registry=registry,
        hmac_key=key,
        policy=policy,
        shadow_policy=shadow_policy,
        optout_snapshot_path=snapshot_path,
        consent_topic=consent_topic,
        consent_snapshot_path=consent_snapshot,
        kafka_common=kafka["common"],
        kafka_consumer=kafka["consumer"],
        kafka_producer=kafka["producer"],
        **values,
    )


def _consents(
    values: dict[str, Any],
    policy: Policy | None,
    policy_path: str | None,
    shadow: Policy | None,
    problems: list[str],
) -> tuple[str | None, Path | None]:
    """The consent topic (None unless the active or the shadow policy is opt-in) and snapshot path,
    checked against the policies."""
    raw_topic = values.pop("consent_topic").strip()
    raw_snapshot = values.pop("consent_snapshot_path").strip()
    where = policy_path or "the packaged rules/policy.toml"
    topic: str | None = None
    if raw_topic:
        try:
            topic = _topic(raw_topic)
        except ValueError as exc:
            problems.append(f"{PREFIX}CONSENT_TOPIC={raw_topic!r} is invalid: {exc}")
    shadow_opt_in = shadow is not None and shadow.consent_model == "opt_in"
    if policy is not None and policy.consent_model == "opt_in" and not raw_topic:
        problems.append(
            f'{PREFIX}CONSENT_TOPIC is required: the policy ({where}) says consent_model = "opt_in"; set it to '
            "the compacted topic of Consent records, e.g. privacy.consents.v1"
        )
    elif shadow_opt_in and not raw_topic:
        problems.append(
            f"{PREFIX}CONSENT_TOPIC is required: the shadow policy ({PREFIX}SHADOW_POLICY_FILE) says consent_model = "
            '"opt_in", and without the consents it would count every record as no_consent; set it to the '
            "compacted topic of Consent records, e.g. privacy.consents.v1 (read, but not gating input)"
        )
    if policy is not None and policy.consent_model == "opt_out" and not shadow_opt_in and (raw_topic or raw_snapshot):
        problems.append(
            f"{PREFIX}CONSENT_TOPIC/{PREFIX}CONSENT_SNAPSHOT_PATH are set but the policy ({where}) has consent_model "
            '= "opt_out" (or none), and so has the shadow policy if any: set consent_model = "opt_in" in the '
            "policy, or unset them"
        )
    snapshot = Path(raw_snapshot) if raw_snapshot else None
    if snapshot is not None and not snapshot.parent.is_dir():
        problems.append(f"{PREFIX}CONSENT_SNAPSHOT_PATH={raw_snapshot}: folder {snapshot.parent} does not exist")
    return topic, snapshot


def _shadow_policy(path: str, active: Policy | None, problems: list[str]) -> Policy | None:
    """The candidate policy of TF_SHADOW_POLICY_FILE, validated like the active one (None: no shadow)."""
    if not path:
        return None
    try:
        shadow = load_policy(path)
    except PolicyError as exc:
        problems.append(f"{PREFIX}SHADOW_POLICY_FILE: {exc}")
        return None
    if active is not None and shadow.version == active.version and shadow != active:
        problems.append(
            f"{PREFIX}SHADOW_POLICY_FILE={path}: its version {shadow.version!r} is the active policy's, but its "
            "rules differ: give the candidate its own version (the metrics name it)"
        )
    return shadow


def _hmac_key(path: str, inline: str, problems: list[str]) -> bytes:
    if path and inline:
        problems.append(f"set only one of {PREFIX}HMAC_KEY_FILE and {PREFIX}HMAC_KEY")
        return b""
    if path:
        try:
            key = Path(path).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            problems.append(f"{PREFIX}HMAC_KEY_FILE={path}: cannot read it ({exc.strerror or exc})")
            return b""
        where = f"{PREFIX}HMAC_KEY_FILE={path}"
    elif inline:
        key = inline.encode("utf-8")
        where = f"{PREFIX}HMAC_KEY"
    else:
        problems.append(
            f"no pseudonymisation key: set {PREFIX}HMAC_KEY_FILE to a file holding at least {MIN_HMAC_KEY_BYTES} "
            f"random bytes (e.g. a Kubernetes Secret: `head -c 32 /dev/urandom | base64`)"
        )
        return b""
    if len(key) < MIN_HMAC_KEY_BYTES:
        problems.append(f"{where}: the key is {len(key)} bytes; it must be at least {MIN_HMAC_KEY_BYTES}")
    return key


def _registry(values: dict[str, Any], problems: list[str]) -> RegistrySettings | None:
    """The registry's settings (None without a URL); its secrets and files checked like the HMAC key's."""
    user = values.pop("schema_registry_user").strip()
    password_file = values.pop("schema_registry_password_file").strip()
    inline = values.pop("schema_registry_password")
    files = {
        "CA_LOCATION": values.pop("schema_registry_ca_location").strip(),
        "CERT_LOCATION": values.pop("schema_registry_cert_location").strip(),
        "KEY_LOCATION": values.pop("schema_registry_key_location").strip(),
    }
    url = values.get("schema_registry_url", "").strip()
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        problems.append(f"{PREFIX}SCHEMA_REGISTRY_URL={url!r} is invalid: must start with http:// or https://")
    password = ""
    if password_file and inline:
        problems.append(f"set only one of {PREFIX}SCHEMA_REGISTRY_PASSWORD_FILE and {PREFIX}SCHEMA_REGISTRY_PASSWORD")
    elif password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            problems.append(
                f"{PREFIX}SCHEMA_REGISTRY_PASSWORD_FILE={password_file}: cannot read it ({exc.strerror or exc})"
            )
    else:
        password = inline
    if bool(user) != bool(password) and not (password_file and not password):
        problems.append(
            f"{PREFIX}SCHEMA_REGISTRY_USER and a password ({PREFIX}SCHEMA_REGISTRY_PASSWORD_FILE) go together: "
            "set both or neither"
        )
    for name, path in files.items():
        if path and not Path(path).is_file():
            problems.append(f"{PREFIX}SCHEMA_REGISTRY_{name}={path}: no such file")
    if bool(files["CERT_LOCATION"]) != bool(files["KEY_LOCATION"]):
        problems.append(f"{PREFIX}SCHEMA_REGISTRY_CERT_LOCATION and _KEY_LOCATION go together: set both or neither")
    return RegistrySettings(
        url=url,
        user=user,
        password=password,
        ca_location=files["CA_LOCATION"],
        certificate_location=files["CERT_LOCATION"],
        key_location=files["KEY_LOCATION"],
        auto_register=values["schema_registry_auto_register"],
        subject_strategy=values["schema_registry_subject_strategy"],
        output_version=values["schema_registry_output_version"],
        timeout_seconds=values["schema_registry_timeout_seconds"],
        retry_seconds=values["schema_registry_retry_seconds"],
        lookups_per_batch=values["schema_registry_lookups_per_batch"],
    )


def load_registry_settings(env: Mapping[str, str] | None = None) -> RegistrySettings | None:
    """Only the TF_SCHEMA_REGISTRY_* settings (for the operator commands, which need no key or
    bootstrap servers): None without a URL; a ConfigError naming every problem."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        if not setting.name.startswith("SCHEMA_REGISTRY_"):
            continue
        raw = env.get(PREFIX + setting.name)
        if raw is None and setting.name == "SCHEMA_REGISTRY_URL":
            raw = env.get("SCHEMA_REGISTRY_URL")
        try:
            values[setting.name.lower()] = setting.parse(setting.default or "" if raw is None else raw)
        except ValueError as exc:
            problems.append(f"{PREFIX}{setting.name}={'(hidden)' if setting.secret else repr(raw)} is invalid: {exc}")
    registry = None if problems else _registry(values, problems)
    if problems:
        raise ConfigError(_report(problems))
    return registry


def _report(problems: list[str]) -> str:
    return "invalid configuration:\n  - " + "\n  - ".join(problems)


def describe_settings() -> str:
    """The settings table for `training-filter run --help`."""
    lines = ["environment variables (prefix TF_):", ""]
    for s in SETTINGS:
        default = "required" if s.default is None else (f"default {s.default!r}" if s.default else "default empty")
        lines.append(f"  {PREFIX}{s.name}  ({default})")
        lines.append(f"      {s.help}")
    lines += [
        "",
        "  TF_KAFKA_<PROPERTY>, TF_CONSUMER_KAFKA_<PROPERTY>, TF_PRODUCER_KAFKA_<PROPERTY>",
        "      any librdkafka property for all clients, the consumers or the producers: upper case, '.' as '_',",
        "      '_' as '__'; e.g. TF_KAFKA_SECURITY_PROTOCOL=SASL_SSL TF_KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
        "      TF_KAFKA_SASL_USERNAME=... TF_KAFKA_SASL_PASSWORD=... TF_KAFKA_SSL_CA_LOCATION=/etc/kafka/ca.crt",
    ]
    return "\n".join(lines)
