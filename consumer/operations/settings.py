"""Settings from environment variables (prefix TF_), validated at start-up.

Every setting is declared once in SETTINGS, with its kind and bounds as data (setting_kinds.py), its
default, whether it is secret, its help and why its bounds are what they are; `training-filter run
--help` prints that table, and parsing and validation come from it. A wrong value stops the service
before it touches Kafka, with one line per problem that names the variable and says what to fix.
Settings that must agree with each other are checked in settings_checks.py; the librdkafka
pass-through (TF_KAFKA_<NAME>, TF_CONSUMER_KAFKA_<NAME>, TF_PRODUCER_KAFKA_<NAME>, where <NAME> is
the property upper-cased with dots as single underscores: `_` -> `.`, `__` -> `_`) in
kafka_settings.py; what needs the real client configurations, the memory budget and the metrics
port in consumer/service/preflight.py (`validate`, the entry point of `training-filter run`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer.operations import kafka_settings, settings_checks, settings_sources
from consumer.operations.kafka_settings import PassThrough, kafka_property
from consumer.operations.setting_kinds import (
    Boolean,
    Choice,
    Host,
    Integer,
    Kind,
    Number,
    ReadFile,
    Servers,
    Text,
    Topic,
    Url,
    Version,
    WriteFile,
)
from consumer.wire.registry import RegistrySettings
from rules import Policy

if TYPE_CHECKING:
    from consumer.operations.memory import MemoryBudget

__all__ = ["SETTINGS", "ConfigError", "Setting", "Settings", "kafka_property", "load_settings"]

PREFIX = "TF_"
MIN_HMAC_KEY_BYTES = settings_sources.MIN_HMAC_KEY_BYTES
MIB = 1 << 20


class ConfigError(ValueError):
    """Settings are missing or invalid: one problem a line, each naming its TF_ variable and what to do."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        lines = [problems] if isinstance(problems, str) else list(problems)
        # A problem quoting a multi-line message (a policy file's parser) stays one line.
        self.problems = ["; ".join(part.strip() for part in p.splitlines() if part.strip()) for p in lines]
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Setting:
    name: str  # without the prefix
    default: str | None  # None: required
    help: str
    kind: Kind = field(default_factory=Text)
    secret: bool = False
    why: str = ""  # why the bounds are what they are (numbers): shown in --help and in the error

    def parse(self, text: str) -> Any:
        return self.kind.parse(text)

    @property
    def var(self) -> str:
        return PREFIX + self.name


@dataclass(frozen=True)
class TopicNames:
    """The topics the service touches, with their default names (TF_*_TOPIC override them)."""

    posts: str = "posts.v1"
    ai: str = "ai-interactions.v1"
    optouts: str = "privacy.optouts.v1"
    training: str = "training.eligible.v1"
    revocations: str = "training.revocations.v1"
    dlq: str = "training-filter.dlq.v1"
    content_changes: str = "content.changes.v1"
    account_changes: str = "accounts.changes.v1"
    audit: str = "training-filter.audit.v1"


DEFAULT_TOPICS = TopicNames()
SECONDS = "s"

SETTINGS: tuple[Setting, ...] = (
    Setting("BOOTSTRAP_SERVERS", None, "Kafka bootstrap servers, host:port[,host:port]", Servers()),
    Setting(
        "GROUP_ID",
        "training-filter",
        "consumer group of the input topics; the opt-out feed and the "
        "revocation emitter derive their groups from it (-optout-feed, -revocations)",
        Text(identifier=True, optional=False, max_length=200),
    ),
    Setting("POSTS_TOPIC", DEFAULT_TOPICS.posts, "input topic of Post records", Topic()),
    Setting("AI_INTERACTIONS_TOPIC", DEFAULT_TOPICS.ai, "input topic of AiInteraction records", Topic()),
    Setting("OPTOUTS_TOPIC", DEFAULT_TOPICS.optouts, "compacted topic of OptOut records (key = user id)", Topic()),
    Setting("TRAINING_TOPIC", DEFAULT_TOPICS.training, "output topic of TrainingRecord", Topic()),
    Setting("REVOCATIONS_TOPIC", DEFAULT_TOPICS.revocations, "output topic of Revocation", Topic()),
    Setting("DLQ_TOPIC", DEFAULT_TOPICS.dlq, "dead-letter topic for undecodable input", Topic()),
    Setting(
        "CONTENT_CHANGES_TOPIC",
        DEFAULT_TOPICS.content_changes,
        "compacted topic of ContentChange records (key = record id): deletions, visibility changes, edits",
        Topic(),
    ),
    Setting(
        "ACCOUNT_CHANGES_TOPIC",
        DEFAULT_TOPICS.account_changes,
        "compacted topic of AccountChange records (key = user id): deleted accounts, corrected facts",
        Topic(),
    ),
    Setting(
        "AUDIT_TOPIC",
        DEFAULT_TOPICS.audit,
        "topic of the decision receipts (docs/audit.md), written when an audit key is set",
        Topic(),
    ),
    Setting(
        "AUDIT_KEY_FILE",
        "",
        "file holding the audit key that signs the decision receipts (a mounted Secret, at least 32 bytes, "
        "not the pseudonymisation key); empty, with TF_AUDIT_KEY empty too: no receipts",
        ReadFile(),
    ),
    Setting("AUDIT_KEY", "", "the audit key itself (prefer TF_AUDIT_KEY_FILE); at least 32 bytes", secret=True),
    Setting(
        "HMAC_KEY_FILE",
        "",
        "file holding the pseudonymisation key (a mounted Secret); one of this or "
        "TF_HMAC_KEY is required; trailing newlines are ignored; at least 32 bytes",
        ReadFile(),
    ),
    Setting(
        "HMAC_KEY", "", "the pseudonymisation key itself (prefer TF_HMAC_KEY_FILE); at least 32 bytes", secret=True
    ),
    Setting("POLICY_FILE", "", "eligibility policy TOML (default: the packaged rules/policy.toml)", ReadFile()),
    Setting(
        "SHADOW_POLICY_FILE",
        "",
        "a candidate policy TOML decided beside the active one on every record; it only counts "
        "(training_filter_shadow_decisions_total), never emits (empty: no shadow)",
        ReadFile(),
    ),
    Setting(
        "PROCESSING_GUARANTEE",
        "at-least-once",
        "at-least-once or exactly-once (Kafka transactions)",
        Choice(("at-least-once", "exactly-once")),
    ),
    Setting(
        "TRANSACTIONAL_ID",
        "",
        "exactly-once only: the producer's transactional.id, used as given (default: the group id "
        "plus the host name, which must be stable per replica, e.g. a StatefulSet pod name)",
        Text(identifier=True, max_length=200),
    ),
    Setting(
        "TRANSACTION_INTERVAL_MS",
        "100",
        "exactly-once only: how long one transaction collects batches",
        Integer(10, 900_000, "ms"),
        why="each transaction costs the round trips of a commit, so not under 10 ms; at most 15 minutes, Kafka's "
        "default transaction.max.timeout.ms; and at most half the producer's transaction.timeout.ms (60 s unless "
        "TF_PRODUCER_KAFKA_TRANSACTION_TIMEOUT_MS says otherwise), or the broker aborts transactions",
    ),
    Setting(
        "BATCH_SIZE",
        "2000",
        "records asked of one consume() call",
        Integer(1, 1_000_000, "records"),
        why="librdkafka's consume() takes at most 1,000,000 records a call",
    ),
    Setting(
        "BATCH_TIMEOUT_MS",
        "100",
        "longest wait of one consume() call for a batch to fill (reached while the input is idle)",
        Integer(1, 10_000, "ms"),
        why="between two consume() calls the loop serves delivery reports, commits, revocations and snapshots, "
        "and a stop waits for the current call: more than 10 s holds all of them back; it must also stay "
        "below TF_HEALTH_STALL_SECONDS",
    ),
    Setting(
        "BATCH_MIN_WAIT_MS",
        "5",
        "shortest wait of one consume() call, used while records flow (low latency); it doubles up to "
        "TF_BATCH_TIMEOUT_MS while the input is idle",
        Integer(1, 10_000, "ms"),
        why="the idle wait doubles from it, so 0 would spin; at most TF_BATCH_TIMEOUT_MS",
    ),
    Setting(
        "MAX_VALUE_BYTES",
        "1048576",
        "input values larger than this go to the DLQ as oversized (the default is what a default Java "
        "producer can write); the producer allows 64 KiB more, the output topics need 128 KiB more, and "
        "a lower output topic limit lowers this one",
        Integer(1024, 64 * MIB, "bytes"),
        why="under 1 KiB nearly every real record would be dead-lettered as oversized; at most 64 MiB, so that a "
        "record with the service's 128 KiB of head-room fits the producer's queue (queue.buffering.max.kbytes, "
        "128 MiB; checked against TF_PRODUCER_KAFKA_QUEUE_BUFFERING_MAX_KBYTES) and a fetch response "
        "(receive.message.max.bytes, 100 MB)",
    ),
    Setting(
        "OPTOUT_CAPACITY",
        "10000000",
        "opt-outs the Bloom filter is sized for",
        Integer(1, 2**53, "opt-outs"),
        why="the filter takes 3.6 bytes an opt-out at 1e-6 (36 MiB for 10 million): the real bound is the memory "
        "budget that start-up checks (the container's memory limit, or the machine's memory); 2^53 keeps the "
        "size computations exact",
    ),
    Setting(
        "OPTOUT_FP_RATE",
        "1e-6",
        "the Bloom filter's false-positive rate at capacity",
        Number(1e-12, 0.01),
        why="a look-up computes -log2(rate) hash positions (20 at 1e-6, 40 at 1e-12): below 1e-12 the hot loop "
        "slows for no practical gain; above 1 % the filter wrongly drops more than one eligible record in 100",
    ),
    Setting(
        "OPTOUT_MAX_LAG_SECONDS",
        "5",
        "input pauses (and /readyz fails) when the opt-out feed has not been confirmed caught up for this long",
        Number(0.5, 3600, SECONDS),
        why="the feed confirms it is caught up about every 0.1 s, and a confirmation takes broker round trips: "
        "under 0.5 s a healthy feed would keep input paused and /readyz failing; over an hour the promise "
        "that opt-outs win fast means nothing",
    ),
    Setting(
        "OPTOUT_SNAPSHOT_PATH",
        "",
        "file for the opt-out filter snapshot (empty: no snapshots); its folder must exist and be writable",
        WriteFile(),
    ),
    Setting(
        "OPTOUT_SNAPSHOT_INTERVAL_SECONDS",
        "300",
        "how often the snapshot is written (and at shutdown)",
        Number(1, 86_400, SECONDS),
        why="each snapshot writes the whole filter (36 MiB at the default capacity): more often than every second "
        "is disk traffic only; at least daily, so that a restart does not re-read more than a day of opt-outs",
    ),
    Setting(
        "CHANGES_CAPACITY",
        "10000000",
        "record ids with a content change the change set's Bloom filter is sized for",
        Integer(1, 2**53, "records"),
        why="the filter takes 3.6 bytes a record id at 1e-6 (36 MiB for 10 million): the real bound is the memory "
        "budget that start-up checks; 2^53 keeps the size computations exact",
    ),
    Setting(
        "CHANGES_FP_RATE",
        "1e-6",
        "the change set's false-positive rate at capacity (a false positive withholds a record that never changed)",
        Number(1e-12, 0.01),
        why="as TF_OPTOUT_FP_RATE: below 1e-12 the look-up slows for no practical gain; above 1 % more than one "
        "eligible record in 100 is withheld",
    ),
    Setting(
        "ACCOUNT_CORRECTIONS_CAPACITY",
        "100000",
        "accounts with corrected facts the change set holds; a correction beyond it keeps its account out",
        Integer(1, 2**40, "accounts"),
        why="each takes about 300 bytes (a Python dict entry: 30 MB for the default): corrections are rare; the real "
        "bound is the memory budget that start-up checks",
    ),
    Setting(
        "CHANGES_SNAPSHOT_PATH",
        "",
        "file for the change set snapshot (empty: no snapshots; written with the opt-out one)",
        WriteFile(),
    ),
    Setting(
        "CONSENT_TOPIC",
        "",
        'required when the policy or the shadow policy is opt-in (consent_model = "opt_in"), else unset: '
        "compacted topic of Consent records (key = user id), e.g. privacy.consents.v1",
        Topic(optional=True),
    ),
    Setting(
        "CONSENT_CAPACITY",
        "10000000",
        "consents the consent set is sized for (8 bytes a slot, load <= 0.8)",
        Integer(1, 2**53, "consents"),
        why="the set takes 8 bytes a slot, 1.25 to 2.5 slots a consent (128 MiB for 10 million): the real bound is "
        "the memory budget that start-up checks (the container's memory limit, or the machine's memory); 2^53 "
        "keeps the size computations exact",
    ),
    Setting(
        "CONSENT_WITHDRAWALS_CAPACITY",
        "100000",
        "users who withdrew consent the consent history holds (to honour a re-grant from its time on); a "
        "withdrawal beyond it keeps its user out for good",
        Integer(1, 2**40, "users"),
        why="each takes about 250 bytes (two Python dict entries: 25 MB for the default, 250 MB for a million): "
        "the real bound is the memory budget that start-up checks",
    ),
    Setting(
        "CONSENT_SNAPSHOT_PATH",
        "",
        "file for the consent set snapshot (empty: no snapshots; written with the opt-out one)",
        WriteFile(),
    ),
    Setting(
        "REVOCATIONS_START",
        "earliest",
        "where a new revocation group starts on the opt-out topic: earliest (revoke every opt-out ever made) or latest",
        Choice(("earliest", "latest")),
    ),
    Setting(
        "METRICS_HOST",
        "0.0.0.0",
        "IPv4 address of the metrics and health HTTP server (checked at start-up: it must be able to listen there)",
        Host(),
    ),
    Setting(
        "METRICS_PORT",
        "9100",
        "port of /metrics, /healthz and /readyz (0 picks a free one)",
        Integer(0, 65_535),
        why="a TCP port; 0 picks a free one; start-up checks that it can listen there",
    ),
    Setting(
        "HEALTH_STALL_SECONDS",
        "60",
        "/healthz fails when the loop has not turned for this long",
        Number(1, 3600, SECONDS),
        why="it must exceed the longest healthy turn of the loop, TF_BATCH_TIMEOUT_MS plus TF_REVOKE_FLUSH_SECONDS "
        "(checked); beyond an hour a hung replica waits too long for its restart",
    ),
    Setting(
        "SHUTDOWN_GRACE_SECONDS",
        "20",
        "on SIGTERM: time to finish, flush and commit before exiting",
        Number(3, 3600, SECONDS),
        why="shutdown keeps 2 s to close the clients and 1 s for the revocation emitter, the rest finishes "
        "in-flight records: under 3 s nothing is left for them; keep it below the pod's "
        "terminationGracePeriodSeconds",
    ),
    Setting(
        "REVOKE_FLUSH_SECONDS",
        "10",
        "on a rebalance: bound on waiting for in-flight records before committing the revoked partitions",
        Number(0.1, 300, SECONDS),
        why="the wait runs inside the rebalance callback: it must end before max.poll.interval.ms (300 s by "
        "default; checked against TF_CONSUMER_KAFKA_MAX_POLL_INTERVAL_MS), or the consumer is put out of its group",
    ),
    Setting(
        "STATISTICS_INTERVAL_MS",
        "5000",
        "librdkafka statistics (consumer lag metrics) interval",
        Integer(100, 86_400_000, "ms"),
        why="librdkafka's statistics.interval.ms ends at 86,400,000 (a day); each statistics event is a JSON "
        "document of every partition parsed on the loop's thread, so not more often than every 100 ms",
    ),
    Setting(
        "LOG_LEVEL",
        "info",
        "debug, info, warning or error; debug adds one line per batch",
        Choice(("debug", "info", "warning", "error")),
    ),
    Setting(
        "LOG_SUMMARY_SECONDS",
        "30",
        "interval of the info-level summary line",
        Number(1, 86_400, SECONDS),
        why="more often than every second floods the log; at least daily",
    ),
    Setting(
        "SCHEMA_REGISTRY_URL",
        "",
        "schema registry URL (Confluent-compatible API); also read without the prefix. With it, schema ids come "
        "from the registry alone; empty: from avro/catalog.json",
        Url(),
    ),
    Setting("SCHEMA_REGISTRY_USER", "", "registry basic-auth user name (with TF_SCHEMA_REGISTRY_PASSWORD_FILE)"),
    Setting(
        "SCHEMA_REGISTRY_PASSWORD_FILE",
        "",
        "file holding the registry basic-auth password (a mounted Secret); trailing newlines are ignored",
        ReadFile(),
    ),
    Setting(
        "SCHEMA_REGISTRY_PASSWORD",
        "",
        "the registry password itself (prefer TF_SCHEMA_REGISTRY_PASSWORD_FILE)",
        secret=True,
    ),
    Setting(
        "SCHEMA_REGISTRY_CA_LOCATION",
        "",
        "CA certificate (PEM) the registry's TLS certificate is checked against",
        ReadFile(),
    ),
    Setting(
        "SCHEMA_REGISTRY_CERT_LOCATION",
        "",
        "client certificate (PEM) for a registry that asks for one (mTLS)",
        ReadFile(),
    ),
    Setting("SCHEMA_REGISTRY_KEY_LOCATION", "", "the client certificate's private key (PEM)", ReadFile()),
    Setting(
        "SCHEMA_REGISTRY_AUTO_REGISTER",
        "true",
        "true: register the output schemas at start-up; false: look them up (a read-only credential)",
        Boolean(),
    ),
    Setting(
        "SCHEMA_REGISTRY_SUBJECT_STRATEGY",
        "topic",
        "subject naming of the output schemas: topic (<topic>-value), record (the record's full name) or "
        "topic_record (<topic>-<record name>)",
        Choice(("topic", "record", "topic_record")),
    ),
    Setting(
        "SCHEMA_REGISTRY_OUTPUT_VERSION",
        "latest",
        "with auto-registration off: the subject version to look up, latest or a number; it must be the "
        "service's own schema",
        Version(),
    ),
    Setting(
        "SCHEMA_REGISTRY_TIMEOUT_SECONDS",
        "10",
        "timeout of one registry request",
        Number(0.1, 300, SECONDS),
        why="under 0.1 s a healthy registry times out; beyond 5 minutes a hung one holds the batch waiting for it",
    ),
    Setting(
        "SCHEMA_REGISTRY_RETRY_SECONDS",
        "60",
        "an id the registry answered without a usable schema (404, a refusal of that id, not Avro) is asked "
        "again after this long; its records are dead letters meanwhile",
        Number(1, 86_400, SECONDS),
        why="below a second every record of an unknown id costs a request; beyond a day a schema registered "
        "late stays unknown for too long",
    ),
    Setting(
        "SCHEMA_REGISTRY_LOOKUPS_PER_BATCH",
        "20",
        "unknown schema ids one batch may look up (the most frequent first); records of the others are dead "
        "letters (schema_lookup_limit): a flood of random ids cannot stall the loop",
        Integer(1, 10_000),
        why="at least one id per batch must be found; each look-up may take TF_SCHEMA_REGISTRY_TIMEOUT_SECONDS",
    ),
    Setting(
        "CLOCK_SKEW_SECONDS",
        "300",
        "how far a record's created_at may lie ahead of the service's clock; later records are refused "
        "(future_dated), because the age check runs at created_at",
        Number(0, 86_400, SECONDS),
        why="more than a day ahead is no clock skew: a child's post dated years ahead would pass the age check",
    ),
    Setting(
        "RECIPIENTS_INTERVAL_SECONDS",
        "60",
        "how often the service scans the recipients (the consumer groups that read the training topic) and "
        "what they acknowledged of the revocations topic, for the training_filter_recipient_* metrics "
        "(docs/recipients.md); 0: no scans",
        Number(0, 3600, SECONDS),
        why="a scan asks the broker for every consumer group's committed offsets: 0 disables it, else at least "
        "5 s (checked); at most an hour, so that the ages the alerts watch are never older than that",
    ),
)
BY_NAME = {s.name: s for s in SETTINGS}


def topic_settings() -> list[Setting]:
    """The topic roles: every setting of topic kind (one added later is a role too)."""
    return [s for s in SETTINGS if isinstance(s.kind, Topic)]


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
    content_changes_topic: str
    account_changes_topic: str
    hmac_key: bytes = field(repr=False)
    policy: Policy
    audit_topic: str
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
    changes_capacity: int
    changes_fp_rate: float
    account_corrections_capacity: int
    changes_snapshot_path: Path | None
    consent_topic: str | None
    consent_capacity: int
    consent_withdrawals_capacity: int
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
    recipients_interval_seconds: float
    registry: RegistrySettings | None = None
    audit_key: bytes | None = field(default=None, repr=False)  # None: no receipts (docs/audit.md)
    policy_sha256: str = ""  # of the policy file's bytes, as receipts name it
    shadow_policy_sha256: str | None = None
    shadow_policy: Policy | None = None  # TF_SHADOW_POLICY_FILE: decided beside `policy`, counted only
    kafka_common: dict[str, str] = field(default_factory=dict)
    kafka_consumer: dict[str, str] = field(default_factory=dict)
    kafka_producer: dict[str, str] = field(default_factory=dict)
    # Which TF_*KAFKA_* variable set each pass-through property (for messages that name it).
    kafka_sources: tuple[PassThrough, ...] = ()
    memory_budget: MemoryBudget | None = None  # set by consumer.service.preflight.validate

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

    def kafka_variable(self, client: str, prop: str) -> str | None:
        """The variable that set `prop` for a `client` ("consumer" or "producer"): its own scope wins."""
        found = None
        for source in self.kafka_sources:
            if (
                source.prop == prop
                and source.scope in ("common", client)
                and (found is None or source.scope != "common")
            ):
                found = source.var
        return found


def _raw(env: Mapping[str, str], setting: Setting) -> str | None:
    raw = env.get(setting.var)
    if raw is None and setting.name == "SCHEMA_REGISTRY_URL":
        raw = env.get("SCHEMA_REGISTRY_URL")
    return raw


def parse_table(env: Mapping[str, str], problems: list[str], only: str = "") -> dict[str, Any]:
    """Every setting (whose name starts with `only`) parsed by its kind; a bad one is a problem and
    absent from the result, so that the checks between settings skip what they cannot judge."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if not setting.name.startswith(only):
            continue
        raw = _raw(env, setting)
        if raw is None or (raw.strip() == "" and setting.default is None):
            if setting.default is None:
                problems.append(f"{setting.var} is required: {setting.help}")
                continue
            raw = setting.default
        try:
            values[setting.name.lower()] = setting.parse(raw)
        except ValueError as exc:
            shown = "(hidden)" if setting.secret else repr(raw)
            why = f" ({setting.why})" if setting.why else ""
            problems.append(f"{setting.var}={shown} is invalid: {exc}{why}")
    return values


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; all problems are reported together in one ConfigError.

    No client is made and nothing is connected to: consumer.service.preflight.validate adds what
    needs the real librdkafka configurations, the memory budget and the metrics port."""
    env = os.environ if env is None else env
    problems: list[str] = []
    values = parse_table(env, problems)
    passthrough = kafka_settings.read_passthrough(env, problems)
    settings_checks.unknown_variables(env, SETTINGS, problems)
    settings_checks.between(values, SETTINGS, passthrough, problems)
    # The key, the policy and the snapshot folders are checked even when a setting above is wrong:
    # every problem is reported in one go.
    key = settings_sources.hmac_key(values.pop("hmac_key_file", ""), values.pop("hmac_key", ""), problems)
    audit_key = settings_sources.audit_key(values.pop("audit_key_file", ""), values.pop("audit_key", ""), key, problems)
    policy_path = values.pop("policy_file", "") or None
    policy = settings_sources.policy(policy_path, problems)
    shadow_path = values.pop("shadow_policy_file", "")
    shadow_policy = settings_sources.shadow_policy(shadow_path, policy, problems)
    consent_topic = settings_sources.consent_topic(values, env, policy, policy_path, shadow_policy, problems)
    registry = settings_sources.registry(values, env, problems)
    snapshots = {name: Path(p) if (p := values.pop(name, "")) else None for name in _SNAPSHOTS}
    if problems or policy is None:
        raise ConfigError(problems)
    return Settings(
        registry=registry,
        hmac_key=key,
        audit_key=audit_key,
        policy=policy,
        policy_sha256=settings_sources.file_sha256(policy_path),
        shadow_policy=shadow_policy,
        shadow_policy_sha256=settings_sources.file_sha256(shadow_path) if shadow_policy is not None else None,
        optout_snapshot_path=snapshots["optout_snapshot_path"],
        changes_snapshot_path=snapshots["changes_snapshot_path"],
        consent_topic=consent_topic,
        consent_snapshot_path=snapshots["consent_snapshot_path"] if consent_topic else None,
        kafka_common=kafka_settings.scope(passthrough, "common"),
        kafka_consumer=kafka_settings.scope(passthrough, "consumer"),
        kafka_producer=kafka_settings.scope(passthrough, "producer"),
        kafka_sources=tuple(passthrough),
        **values,
    )


_SNAPSHOTS = ("optout_snapshot_path", "changes_snapshot_path", "consent_snapshot_path")


def load_registry_settings(env: Mapping[str, str] | None = None) -> RegistrySettings | None:
    """Only the TF_SCHEMA_REGISTRY_* settings (for the operator commands, which need no key or
    bootstrap servers): None without a URL; a ConfigError naming every problem."""
    env = os.environ if env is None else env
    problems: list[str] = []
    values = parse_table(env, problems, only="SCHEMA_REGISTRY_")
    registry = None if problems else settings_sources.registry(values, env, problems)
    if problems:
        raise ConfigError(problems)
    return registry


def describe_settings() -> str:
    """The settings table for `training-filter run --help`: kind, bounds, default, help, why."""
    lines = ["environment variables (prefix TF_):", ""]
    for s in SETTINGS:
        default = "required" if s.default is None else (f"default {s.default!r}" if s.default else "default empty")
        secret = ", secret" if s.secret else ""
        lines.append(f"  {s.var}  ({s.kind.describe()}; {default}{secret})")
        lines.append(f"      {s.help}")
        if s.why:
            lines.append(f"      bounds: {s.why}")
    lines += [
        "",
        "  TF_KAFKA_<PROPERTY>, TF_CONSUMER_KAFKA_<PROPERTY>, TF_PRODUCER_KAFKA_<PROPERTY>",
        "      any librdkafka property for all clients, the consumers or the producers: upper case, '.' as '_',",
        "      '_' as '__'; e.g. TF_KAFKA_SECURITY_PROTOCOL=SASL_SSL TF_KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
        "      TF_KAFKA_SASL_USERNAME=... TF_KAFKA_SASL_PASSWORD=... TF_KAFKA_SSL_CA_LOCATION=/etc/kafka/ca.crt;",
        "      checked at start-up by making each client kind with them (without connecting)",
    ]
    return "\n".join(lines)
