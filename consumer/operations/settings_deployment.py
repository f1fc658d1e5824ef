"""The values the Kubernetes deployment (deploy/kubernetes) gives the settings, declared once: what
the base's ConfigMap "training-filter" holds, and what each overlay and component merges into it.
`make docs` writes them into the env files the kustomizations read (`ENV_FILES`); a stale one fails
the docs check and tests/deploy/test_deployment_settings.py.

Each entry says why the deployment sets it. A `pin` writes the table's default (SETTINGS), because
something else in the manifests relies on that value (the pod's memory, a port, a group name); a
`given` value differs from the default, and from what it overrides. Everything else is left to its
default. `problems()` holds the entries to the settings table: every variable is a setting or a
librdkafka pass-through (TF_KAFKA_*) that librdkafka knows, passes its setting's validation, is never
secret (a ConfigMap is not a Secret), and appears once per file.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Consumer, Producer

from consumer.operations import kafka_settings
from consumer.operations.settings import BY_NAME, PREFIX

BASE = "base/training-filter.env"


@dataclass(frozen=True)
class Entry:
    var: str
    why: str
    value: str | None  # None: the table's default, pinned

    @property
    def setting(self) -> str:
        return self.var.removeprefix(PREFIX)

    def written(self) -> str:
        """The value the env file holds."""
        if self.value is not None:
            return self.value
        default = BY_NAME[self.setting].default if self.setting in BY_NAME else None
        return default if default is not None else ""


def pin(setting: str, why: str) -> Entry:
    """The table's default, written out because the manifests rely on it (`why` says where)."""
    return Entry(PREFIX + setting, why, None)


def given(var: str, value: str, why: str) -> Entry:
    """A value of the deployment's own: a setting's (TF_ + its name) or a librdkafka pass-through."""
    return Entry(var, why, value)


@dataclass(frozen=True)
class EnvFile:
    path: str  # under deploy/kubernetes
    about: str  # the file's opening comment
    entries: tuple[Entry, ...]


ENV_FILES: tuple[EnvFile, ...] = (
    EnvFile(
        BASE,
        'The ConfigMap "training-filter" of every overlay: the TF_* settings the deployment gives; every '
        "other setting takes its default (`training-filter run --help`, docs/operating.md). kustomize hashes "
        "the ConfigMap's name, so a change here rolls the pods.",
        (
            given(
                "TF_BOOTSTRAP_SERVERS",
                "platform-kafka-kafka-bootstrap.kafka.svc:9093",
                "The platform's Strimzi cluster, on its TLS listener (the NetworkPolicy's egress port, the "
                "ScaledObject's bootstrapServers).",
            ),
            pin(
                "GROUP_ID",
                "The ScaledObject scales on this group's lag, and the KafkaUser's group ACL is its prefix "
                "(the opt-out feed and the revocation emitter add -optout-feed and -revocations).",
            ),
            pin(
                "PROCESSING_GUARANTEE",
                "A Deployment's pods have random names, which cannot be transactional ids: exactly-once "
                "comes with the StatefulSet of components/exactly-once.",
            ),
            given(
                "TF_HMAC_KEY_FILE",
                "/etc/training-filter/hmac/key",
                'The Secret "training-filter-hmac" is mounted there: the key is never in a ConfigMap.',
            ),
            given(
                "TF_AUDIT_KEY_FILE",
                "/etc/training-filter/audit/key",
                'The Secret "training-filter-audit-key" is mounted there: the replicas sign their decision receipts '
                "(docs/audit.md) with it, a key apart from the pseudonymisation key.",
            ),
            given(
                "TF_POLICY_FILE",
                "/etc/training-filter/policy/policy.toml",
                'The ConfigMap "training-filter-policy" (base/policy.toml, a copy of the packaged default) is '
                "mounted there, so that an overlay can replace the policy without a new image.",
            ),
            given(
                "TF_OPTOUT_SNAPSHOT_PATH",
                "/var/lib/training-filter/optouts.snapshot",
                "On the pod's emptyDir: a restarted container loads the filter instead of re-reading the whole "
                "opt-out topic.",
            ),
            given(
                "TF_CHANGES_SNAPSHOT_PATH",
                "/var/lib/training-filter/changes.snapshot",
                "Beside the opt-out snapshot, on the same emptyDir: a restarted container loads the change set "
                "instead of re-reading both change topics.",
            ),
            pin(
                "OPTOUT_CAPACITY",
                "The pod's memory (448 MiB requested, 704 MiB limit) and snapshot volume are sized for the "
                "filter at this capacity (tests/deploy/test_pod_memory_budget.py).",
            ),
            pin("OPTOUT_FP_RATE", "With TF_OPTOUT_CAPACITY, it sizes the filter (36 MiB) the pod is sized for."),
            pin(
                "OPTOUT_MAX_LAG_SECONDS",
                "Well below the 30 s of the TrainingFilterOptOutFeedStale alert: input pauses, and the replica "
                "turns unready, long before anyone is paged.",
            ),
            pin(
                "METRICS_PORT",
                "The container port, the probes, the Service, the PodMonitor and the NetworkPolicy use 9100.",
            ),
            pin(
                "SHUTDOWN_GRACE_SECONDS",
                "Below the pod's terminationGracePeriodSeconds (30), so that shutdown finishes before SIGKILL.",
            ),
            given(
                "TF_KAFKA_SECURITY_PROTOCOL",
                "SASL_SSL",
                "The Strimzi listener takes TLS and SCRAM; the KafkaUser (deploy/kubernetes/kafka) creates the "
                "password Secret, which the pod reads into TF_KAFKA_SASL_PASSWORD.",
            ),
            given("TF_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "The KafkaUser's authentication (scram-sha-512)."),
            given("TF_KAFKA_SASL_USERNAME", "training-filter", "The KafkaUser's name."),
            given(
                "TF_KAFKA_SSL_CA_LOCATION",
                "/etc/training-filter/kafka-ca/ca.crt",
                "The cluster CA Secret is mounted there.",
            ),
        ),
    ),
    EnvFile(
        "overlays/dev/training-filter.env",
        'Merged into the base\'s ConfigMap "training-filter" for the development cluster.',
        (
            given(
                "TF_BOOTSTRAP_SERVERS",
                "dev-kafka-kafka-bootstrap.kafka.svc:9093",
                "The development cluster's Strimzi cluster (dev-kafka), as in the overlay's ScaledObject patch.",
            ),
            given("TF_LOG_LEVEL", "debug", "One log line per batch, for whoever is developing against it."),
            given("TF_LOG_SUMMARY_SECONDS", "10", "A summary line every 10 s instead of 30 s, for the same reason."),
            given(
                "TF_OPTOUT_CAPACITY",
                "1000000",
                "Sized for the development cluster's synthetic users: a tenth of production's filter (3.6 MiB).",
            ),
        ),
    ),
    EnvFile(
        "components/exactly-once/training-filter.env",
        'Merged into the ConfigMap "training-filter" by the exactly-once component (its StatefulSet gives '
        "each pod TF_TRANSACTIONAL_ID, its own name, in the pod spec).",
        (given("TF_PROCESSING_GUARANTEE", "exactly-once", "Kafka transactions: the point of the component."),),
    ),
    EnvFile(
        "components/opt-in-consent/training-filter.env",
        'Merged into the ConfigMap "training-filter" by the opt-in consent component.',
        (
            given(
                "TF_POLICY_FILE",
                "/etc/training-filter/policy/opt-in-policy.toml",
                "The opt-in policy, which the component adds to the policy ConfigMap and the pod's policy volume.",
            ),
            given(
                "TF_CONSENT_TOPIC",
                "privacy.consents.v1",
                "The consent platform's compacted topic, which the component's KafkaUser patch lets the service read.",
            ),
            pin(
                "CONSENT_CAPACITY",
                "The component's memory and snapshot volume patches are sized for the consent set at this "
                "capacity (128 MiB of table).",
            ),
            given(
                "TF_CONSENT_SNAPSHOT_PATH",
                "/var/lib/training-filter/consents.snapshot",
                "Beside the opt-out snapshot, on the same emptyDir (512 MiB under the component).",
            ),
        ),
    ),
    EnvFile(
        "components/shadow-policy/training-filter.env",
        'Merged into the ConfigMap "training-filter" by the shadow-policy component.',
        (
            given(
                "TF_SHADOW_POLICY_FILE",
                "/etc/training-filter/policy/candidate-policy.toml",
                "The candidate, which the component adds to the policy ConfigMap and the pod's policy volume.",
            ),
        ),
    ),
)


def _scope(var: str) -> str | None:
    """common, consumer or producer for a librdkafka pass-through; None for anything else."""
    rest = var.removeprefix(PREFIX)
    return next((s for p, s in kafka_settings.SCOPES.items() if rest.startswith(p)), None)


def _passthrough_problems(entry: Entry) -> list[str]:
    problems: list[str] = []
    (source,) = kafka_settings.read_passthrough({entry.var: entry.written()}, problems) or (None,)
    if source is None:
        return problems
    if source.shown() == "(hidden)":
        return [f"{entry.var} is secret: give it from a Secret in the pod spec, never in a ConfigMap"]
    kinds = {"common": (Producer, Consumer), "consumer": (Consumer,), "producer": (Producer,)}[source.scope]
    for kind in kinds:
        refused = kafka_settings.make(kind, {**kafka_settings.minimal(kind), source.prop: source.value})
        if refused and "No such configuration property" in refused:
            return [f"{entry.var}: librdkafka has no property {source.prop}"]
    return []


def _entry_problems(entry: Entry) -> list[str]:
    where = entry.var
    if not entry.why.strip():
        return [f"{where}: say why the deployment sets it"]
    if _scope(entry.var) is not None:
        return _passthrough_problems(entry) + [f"{where}: a pass-through has no default to pin"] * (entry.value is None)
    setting = BY_NAME.get(entry.setting)
    if setting is None or not entry.var.startswith(PREFIX):
        return [f"{where} is not a setting (consumer/operations/settings.py) or a TF_KAFKA_* pass-through"]
    if setting.secret:
        return [f"{where} is secret: give it from a Secret in the pod spec, never in a ConfigMap"]
    if entry.value is None:
        return [f"{where} is required: it has no default to pin"] if setting.default is None else []
    if entry.value == setting.default:
        return [f"{where}={entry.value} is the table's default: pin it, saying what relies on it, or drop it"]
    try:
        setting.parse(entry.value)
    except ValueError as exc:
        return [f"{where}={entry.value!r} is invalid: {exc}"]
    return []


def problems() -> list[str]:
    """Where the deployment's values disagree with the settings table (empty: none)."""
    found: list[str] = []
    base = {e.var: e.written() for e in ENV_FILES[0].entries}
    for env_file in ENV_FILES:
        seen: set[str] = set()
        for entry in env_file.entries:
            found += [f"{env_file.path}: {p}" for p in _entry_problems(entry)]
            if entry.var in seen:
                found.append(f"{env_file.path}: {entry.var} is given twice")
            seen.add(entry.var)
            if env_file.path != BASE and base.get(entry.var) == entry.written():
                found.append(f"{env_file.path}: {entry.var} repeats the base's value: drop it")
    return found
