"""components/operations, the operator commands as Jobs, built into each overlay as an operator builds
it (tests/deploy/tools.render_operations): the objects validate (kubernetes-validate, the CR
validator), the Jobs run the workload's pod under the operations KafkaUser, their configuration is
accepted by the service's own settings loader and the commands' own argument parser, dry runs unless
the for-real component is added, and no selector of the service selects their pods. The network policy
(cyclonus) and kube-score checks of the component are in their own files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from consumer.cli import build_parser
from consumer.commands.backfill_scope import scope_of
from consumer.operations.settings import load_settings
from rules.policy import load_policy
from tests.deploy.k8s import container_environment, kinds, mounted_files, one, relocate, selects, workload
from tests.deploy.test_manifests import K8S_VERSION, KEYS, NAMESPACES, OPERATIONS_USER, key_of
from tests.deploy.tools import DEPLOY, OVERLAYS, render, render_operations, render_operations_text, tool

JOBS = {"training-filter-backfill": "backfill", "training-filter-dlq-replay": "dlq replay"}
LABEL = {"app.kubernetes.io/name": "training-filter-operations"}


def jobs(docs: list[dict]) -> list[dict]:
    found = kinds(docs, "Job")
    assert sorted(j["metadata"]["name"] for j in found) == sorted(JOBS)
    return found


def pod_of(job: dict) -> tuple[dict, dict]:
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    return pod, c


def job_settings(docs: list[dict], job: dict, root: Path):
    """The service's settings loader on what the Job's pod would have, and the pod's environment."""
    secrets = {
        (OPERATIONS_USER, "password"): "an-operations-password",
        **{(name, "key"): value for name, value in KEYS.items()},
        ("platform-kafka-cluster-ca-cert", "ca.crt"): "-----BEGIN CERTIFICATE-----",
        ("dev-kafka-cluster-ca-cert", "ca.crt"): "-----BEGIN CERTIFICATE-----",
    }
    for secret in kinds(docs, "Secret"):
        if secret["metadata"]["name"] != "training-filter-kafka-username":
            secrets[(secret["metadata"]["name"], "key")] = key_of(secret["metadata"]["name"])
    env = container_environment(docs, f"{job['metadata']['name']}-x7k2p", secrets, job)
    mounts = mounted_files(docs, root, secrets, job)
    return env, relocate(env, mounts), mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_component_adds_only_its_own_objects_and_they_validate(overlay, tmp_path):
    docs, plain = render_operations(overlay), render(overlay)
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    added = [d for d in docs if key(d) not in {key(p) for p in plain}]
    assert sorted(key(d) for d in added) == sorted(
        [("Job", n) for n in JOBS]
        + [("NetworkPolicy", "training-filter-operations")]
        + [("ConfigMap", d["metadata"]["name"]) for d in added if d["kind"] == "ConfigMap"]
    )
    assert [d for d in docs if key(d) in {key(p) for p in plain}] == plain, "the service's objects are unchanged"
    for doc in added:
        assert doc["metadata"]["namespace"] == NAMESPACES[overlay]
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "training-filter-operations"
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    node = tool("node", "Node.js is on the machine; then `npm ci` in deploy/validate")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render_operations_text(overlay))
    result = subprocess.run(
        [node, str(DEPLOY / "validate" / "validate-crs.mjs"), str(rendered)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "invalid or unknown: 0" in result.stdout, result.stderr + result.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_jobs_run_the_workloads_pod_under_the_operations_user(overlay):
    docs = render_operations(overlay)
    w = workload(docs)["spec"]["template"]["spec"]
    (service,) = w["containers"]
    user = one(docs, "KafkaUser", OPERATIONS_USER)
    for job in jobs(docs):
        spec = job["spec"]
        assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0
        assert spec["podFailurePolicy"]["rules"][0] == {
            "action": "FailJob",
            "onExitCodes": {"containerName": "training-filter", "operator": "In", "values": [2]},
        }, "a configuration error is not retried"
        pod, c = pod_of(job)
        assert pod["restartPolicy"] == "Never"
        assert pod["securityContext"] == w["securityContext"]
        assert pod["automountServiceAccountToken"] is False
        for field in ("image", "imagePullPolicy", "resources", "securityContext", "envFrom"):
            assert c[field] == service[field], field
        volumes = {v["name"]: v for v in w["volumes"]}
        for v in pod["volumes"]:
            if v["name"] in volumes and v["name"] != "policy":
                assert v == volumes[v["name"]], v["name"]
        assert (
            pod["volumes"][[v["name"] for v in pod["volumes"]].index("policy")]["configMap"]["name"]
            == (volumes["policy"]["configMap"]["name"])
        )
        env = {e["name"]: e for e in c["env"]}
        assert env["TF_KAFKA_SASL_USERNAME"]["value"] == user["metadata"]["name"]
        assert env["TF_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": user["metadata"]["name"],
            "key": "password",
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("for_real", [False, True])
def test_the_jobs_configuration_is_accepted_and_a_dry_run_unless_for_real(overlay, for_real, tmp_path):
    docs = render_operations(overlay, for_real)
    for job in jobs(docs):
        root = tmp_path / job["metadata"]["name"]
        _, relocated, mounts = job_settings(docs, job, root)
        settings = load_settings(relocated)
        assert settings.kafka_common["sasl.username"] == OPERATIONS_USER
        assert settings.kafka_common["sasl.password"] == "an-operations-password"
        assert settings.group_id == "training-filter", "the operations KafkaUser's ACLs are named after it"
        # The commands write no receipts: the audit key stays with the service and the auditors.
        assert settings.audit_key is None
        assert not [
            v
            for v in pod_of(job)[0]["volumes"]
            if v.get("secret", {}).get("secretName", "").startswith("training-filter-audit-key")
        ]
        args = build_parser().parse_args(pod_of(job)[1]["args"])
        assert (
            " ".join(pod_of(job)[1]["args"][: len(JOBS[job["metadata"]["name"]].split())])
            == JOBS[job["metadata"]["name"]]
        )
        assert args.dry_run is not for_real
        if job["metadata"]["name"] == "training-filter-backfill":
            args.policy = relocate({"p": args.policy}, mounts)["p"]
            scope = scope_of(args, load_policy(relocated["TF_POLICY_FILE"]))  # a UsageError would be exit 2
            assert scope.policy != settings.policy


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_selector_of_the_service_selects_the_jobs_pods(overlay):
    docs = render_operations(overlay)
    service_pods = workload(docs)["spec"]["template"]["metadata"]["labels"]
    selectors = [one(docs, "PodDisruptionBudget")["spec"]["selector"], one(docs, "PodMonitor")["spec"]["selector"]]
    selectors += [{"matchLabels": s["spec"]["selector"]} for s in kinds(docs, "Service")]
    selectors += [p["spec"]["podSelector"] for p in kinds(docs, "NetworkPolicy") if p["metadata"]["name"] != LABEL_NP]
    selectors.append(workload(docs)["spec"]["selector"])
    ours = one(docs, "NetworkPolicy", LABEL_NP)["spec"]["podSelector"]
    for job in jobs(docs):
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert not any(selects(s, labels) for s in selectors), job["metadata"]["name"]
        assert selects(ours, labels)
    assert not selects(ours, service_pods)


LABEL_NP = "training-filter-operations"
