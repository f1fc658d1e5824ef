"""kube-score on each rendered overlay: no critical finding and no warning. Each check that is turned
off is listed in IGNORED with the reason, next to the flag that turns it off."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.deploy.tools import OVERLAYS, render_operations_text, render_text, tool

GRADES = {1: "CRITICAL", 5: "WARNING", 7: "ALMOST_OK", 10: "OK"}

FLAGS = [
    "--kubernetes-version=v1.30",
    # Off-by-default checks that this deployment meets, so they stay met.
    "--enable-optional-test=container-seccomp-profile",
    "--enable-optional-test=container-ports-check",
    # No CPU limit, on purpose: throttling a replica stalls its batches and opt-out sync while the
    # node may have CPU to spare; the request reserves one core (deploy/kubernetes/base/deployment.yaml).
    "--ignore-container-cpu-limit",
    # deployment-replicas wants replicas >= 2 in the Deployment. KEDA owns the count (a replicas field
    # would reset it on every apply) and keeps at least minReplicaCount, which
    # test_the_replica_floor_is_kedas below checks instead. kube-score cannot see KEDA's HPA.
    "--ignore-test=deployment-replicas",
]
# Optional checks left off: container-{resource,cpu,memory}-requests-equal-limits and
# container-ephemeral-storage-request-equals-limit (the pod is Burstable on purpose: memory may grow
# from the request to the limit while the opt-out filter is rebuilt).


def score(overlay: str, tmp_path, text: str | None = None) -> list[dict]:
    kube_score = tool("kube-score")
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render_text(overlay) if text is None else text)
    result = subprocess.run(
        [kube_score, "score", "--output-format=json", *FLAGS, str(rendered)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: critical findings, reported below
    return json.loads(result.stdout)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kube_score_finds_nothing(overlay, tmp_path, capsys):
    objects = score(overlay, tmp_path)
    findings, ran = [], {}
    for obj in objects:
        for check in obj["checks"]:
            if check["skipped"]:
                continue
            grade = GRADES.get(check["grade"], str(check["grade"]))
            ran[(obj["type_meta"]["kind"], check["check"]["id"])] = grade
            if check["grade"] < 10:
                comments = "; ".join(c["summary"] for c in check.get("comments") or [])
                findings.append(f"{grade} {obj['object_name']}: {check['check']['id']}: {comments}")
    kinds = {kind for kind, _ in ran}
    with capsys.disabled():
        on = ", ".join(sorted(kinds))
        print(f"\nkube-score, overlay {overlay}: {len(ran)} checks on {on}; findings: {len(findings)}")
        for finding in findings:
            print("  " + finding)
    assert not findings
    workload = "StatefulSet" if overlay.endswith("exactly-once") else "Deployment"
    # The PodDisruptionBudget must select the workload's pods (kube-score matches it to the template).
    assert ran[(workload, f"{workload.lower()}-has-poddisruptionbudget")] == "OK"
    assert ran[(workload, "pod-networkpolicy")] == "OK"
    assert ran[("NetworkPolicy", "networkpolicy-targets-pod")] == "OK"
    assert ran[("Service", "service-targets-pod")] == "OK"
    if workload == "StatefulSet":
        assert ran[(workload, "statefulset-has-servicename")] == "OK"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kube_score_finds_nothing_in_the_operations_jobs(overlay, tmp_path, capsys):
    """The overlay with components/operations (the operator commands' Jobs)."""
    findings, ran = [], {}
    for obj in score(overlay, tmp_path, render_operations_text(overlay)):
        for check in obj["checks"]:
            if check["skipped"]:
                continue
            name = obj["object_name"].rsplit("/", 1)[-1]
            ran[(obj["type_meta"]["kind"], name, check["check"]["id"])] = check["grade"]
            if check["grade"] < 10:
                comments = "; ".join(c["summary"] for c in check.get("comments") or [])
                findings.append(f"{obj['object_name']}: {check['check']['id']}: {comments}")
    with capsys.disabled():
        jobs = sorted({name for kind, name, _ in ran if kind == "Job"})
        print(f"\nkube-score, overlay {overlay} + operations: Jobs {jobs}; findings: {len(findings)}")
        for finding in findings:
            print("  " + finding)
    assert not findings
    for job in ("training-filter-backfill", "training-filter-dlq-replay"):
        assert ran[("Job", job, "pod-networkpolicy")] == 10
        assert ran[("Job", job, "container-security-context-readonlyrootfilesystem")] == 10
    assert ran[("NetworkPolicy", "training-filter-operations", "networkpolicy-targets-pod")] == 10


def test_the_replica_floor_is_kedas():
    """What deployment-replicas would check, where the count really comes from."""
    floors = {}
    for overlay in OVERLAYS:
        (scaled,) = [d for d in yaml.safe_load_all(render_text(overlay)) if d and d["kind"] == "ScaledObject"]
        floors[overlay] = scaled["spec"]["minReplicaCount"]
    assert floors["prod"] >= 2 and floors["prod-exactly-once"] >= 2 and floors["prod-opt-in"] >= 2, floors
    assert floors["dev"] >= 1, floors
