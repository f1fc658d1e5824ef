"""The rendered NetworkPolicies evaluated by a real policy engine: cyclonus (`analyze --mode
query-traffic`) decides, for a model of the cluster's pods, which connections the policies allow.
Every connection the service needs must be allowed and every other one denied.

The model: the service's pods (labels from the rendered pod template), the Strimzi brokers in the
Kafka namespace, kube-dns, the kube-prometheus-stack Prometheus, and pods that must not get through.
Addresses are documentation ranges (RFC 5737): nothing is sent anywhere, cyclonus only evaluates."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass

import pytest
import yaml

from tests.deploy.k8s import kinds, workload
from tests.deploy.tools import OVERLAYS, render, render_operations, tool

INTERNET = "203.0.113.10"
CLUSTERS = {
    "dev": "dev-kafka",
    "prod": "platform-kafka",
    "prod-exactly-once": "platform-kafka",
    "prod-opt-in": "platform-kafka",
}


@dataclass(frozen=True)
class Peer:
    namespace: str | None  # None: outside the cluster
    labels: dict[str, str]
    ip: str

    def as_cyclonus(self) -> dict:
        if self.namespace is None:
            return {"IP": self.ip}
        return {
            "Internal": {
                "PodLabels": self.labels,
                "NamespaceLabels": {"kubernetes.io/metadata.name": self.namespace},
                "Namespace": self.namespace,
            },
            "IP": self.ip,
        }


@dataclass(frozen=True)
class Case:
    name: str
    source: Peer
    destination: Peer
    port: int
    protocol: str
    allowed: bool
    port_name: str = ""


def cases(overlay: str, docs: list[dict]) -> list[Case]:
    w = workload(docs)
    namespace = w["metadata"]["namespace"]
    service = Peer(namespace, w["spec"]["template"]["metadata"]["labels"], "198.51.100.10")
    replica = Peer(namespace, w["spec"]["template"]["metadata"]["labels"], "198.51.100.11")
    cluster = CLUSTERS[overlay]
    other_cluster = ({"dev-kafka", "platform-kafka"} - {cluster}).pop()

    def broker(name: str, ip: str) -> Peer:
        return Peer(
            "kafka", {"strimzi.io/cluster": name, "strimzi.io/kind": "Kafka", "strimzi.io/name": f"{name}-kafka"}, ip
        )

    brokers = broker(cluster, "198.51.100.20")
    other_brokers = broker(other_cluster, "198.51.100.21")
    kafka_ui = Peer("kafka", {"app.kubernetes.io/name": "kafka-ui"}, "198.51.100.22")
    dns = Peer("kube-system", {"k8s-app": "kube-dns"}, "198.51.100.30")
    prometheus = Peer(
        "monitoring",
        {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack-prometheus"},
        "198.51.100.40",
    )
    grafana = Peer("monitoring", {"app.kubernetes.io/name": "grafana"}, "198.51.100.41")
    impostor = Peer("default", {"app.kubernetes.io/name": "prometheus"}, "198.51.100.42")
    neighbour = Peer(namespace, {"app.kubernetes.io/name": "other-app"}, "198.51.100.50")
    internet = Peer(None, {}, INTERNET)
    api_server = Peer(None, {}, "192.0.2.1")
    return [
        Case("service -> brokers 9093/TCP", service, brokers, 9093, "TCP", True),
        Case("service -> kube-dns 53/UDP", service, dns, 53, "UDP", True),
        Case("service -> kube-dns 53/TCP", service, dns, 53, "TCP", True),
        Case("prometheus -> service 9100 (metrics)", prometheus, service, 9100, "TCP", True, "metrics"),
        Case("grafana (monitoring ns) -> service 9100", grafana, service, 9100, "TCP", False, "metrics"),
        Case("'prometheus' in another ns -> service 9100", impostor, service, 9100, "TCP", False, "metrics"),
        Case("other pod in the service ns -> service 9100", neighbour, service, 9100, "TCP", False, "metrics"),
        Case("internet -> service 9100", internet, service, 9100, "TCP", False, "metrics"),
        Case("prometheus -> service 8080", prometheus, service, 8080, "TCP", False),
        Case("service -> internet 443", service, internet, 443, "TCP", False),
        Case("service -> internet DNS 53/UDP", service, Peer(None, {}, "203.0.113.53"), 53, "UDP", False),
        Case("service -> API server 443", service, api_server, 443, "TCP", False),
        Case("service -> brokers 9092 (plaintext)", service, brokers, 9092, "TCP", False),
        Case(f"service -> {other_cluster} brokers 9093", service, other_brokers, 9093, "TCP", False),
        Case("service -> other pod in kafka ns 9093", service, kafka_ui, 9093, "TCP", False),
        Case("service -> kube-dns 9093", service, dns, 9093, "TCP", False),
        Case("service -> prometheus 9090", service, prometheus, 9090, "TCP", False),
        Case("service -> another replica 9100", service, replica, 9100, "TCP", False, "metrics"),
    ]


def operations_cases(overlay: str, docs: list[dict]) -> list[Case]:
    """The operator commands' Jobs (components/operations): out to the brokers and DNS, nothing in."""
    (job, *_) = kinds(docs, "Job")
    w = workload(docs)
    namespace = job["metadata"]["namespace"]
    pod = Peer(namespace, job["spec"]["template"]["metadata"]["labels"], "198.51.100.60")
    service = Peer(namespace, w["spec"]["template"]["metadata"]["labels"], "198.51.100.10")
    cluster = CLUSTERS[overlay]
    other = ({"dev-kafka", "platform-kafka"} - {cluster}).pop()
    brokers, other_brokers = (
        Peer("kafka", {"strimzi.io/cluster": c, "strimzi.io/kind": "Kafka", "strimzi.io/name": f"{c}-kafka"}, ip)
        for c, ip in ((cluster, "198.51.100.20"), (other, "198.51.100.21"))
    )
    dns = Peer("kube-system", {"k8s-app": "kube-dns"}, "198.51.100.30")
    prometheus = Peer(
        "monitoring",
        {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack-prometheus"},
        "198.51.100.40",
    )
    internet = Peer(None, {}, INTERNET)
    return [
        Case("job -> brokers 9093/TCP", pod, brokers, 9093, "TCP", True),
        Case("job -> kube-dns 53/UDP", pod, dns, 53, "UDP", True),
        Case("job -> kube-dns 53/TCP", pod, dns, 53, "TCP", True),
        Case("job -> brokers 9092 (plaintext)", pod, brokers, 9092, "TCP", False),
        Case(f"job -> {other} brokers 9093", pod, other_brokers, 9093, "TCP", False),
        Case("job -> internet 443", pod, internet, 443, "TCP", False),
        Case("job -> API server 443", pod, Peer(None, {}, "192.0.2.1"), 443, "TCP", False),
        Case("job -> service 9100", pod, service, 9100, "TCP", False, "metrics"),
        Case("job -> prometheus 9090", pod, prometheus, 9090, "TCP", False),
        Case("prometheus -> job 9100", prometheus, pod, 9100, "TCP", False),
        Case("service -> job 8080", service, pod, 8080, "TCP", False),
        Case("internet -> job 8080", internet, pod, 8080, "TCP", False),
    ]


def evaluate(docs: list[dict], traffic: list[Case], tmp_path) -> list[bool]:
    """Ask cyclonus whether each connection is allowed by the NetworkPolicies of `docs`."""
    cyclonus = tool("cyclonus")
    policies = tmp_path / "policies"
    policies.mkdir()
    for i, policy in enumerate(kinds(docs, "NetworkPolicy")):  # cyclonus reads one policy a file
        (policies / f"{i}.yaml").write_text(yaml.safe_dump(policy))
    traffic_file = tmp_path / "traffic.json"
    traffic_file.write_text(
        json.dumps(
            [
                {
                    "Source": c.source.as_cyclonus(),
                    "Destination": c.destination.as_cyclonus(),
                    "Protocol": c.protocol,
                    "ResolvedPort": c.port,
                    "ResolvedPortName": c.port_name,
                }
                for c in traffic
            ]
        )
    )
    result = subprocess.run(
        [
            cyclonus,
            "analyze",
            "--mode",
            "query-traffic",
            "--policy-path",
            str(policies),
            "--traffic-path",
            str(traffic_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    verdicts = re.findall(r"\|\s*IS ALLOWED\?\s*\|\s*(TRUE|FALSE)\s*\|", result.stdout)
    assert len(verdicts) == len(traffic), result.stdout
    return [v == "TRUE" for v in verdicts]


def table(overlay: str, traffic: list[Case], verdicts: list[bool]) -> str:
    width = max(len(c.name) for c in traffic)
    lines = [f"cyclonus query-traffic, overlay {overlay}", f"{'connection':<{width}}  expected  cyclonus"]
    for c, v in zip(traffic, verdicts, strict=True):
        mark = "" if c.allowed == v else "   <-- WRONG"
        lines.append(f"{c.name:<{width}}  {'allow' if c.allowed else 'deny':<8}  {'allow' if v else 'deny'}{mark}")
    return "\n".join(lines)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_allows_exactly_what_the_service_needs(overlay, tmp_path, capsys):
    docs = render(overlay)
    traffic = cases(overlay, docs)
    verdicts = evaluate(docs, traffic, tmp_path)
    report = table(overlay, traffic, verdicts)
    with capsys.disabled():
        print("\n" + report)
    assert [c.allowed for c in traffic] == verdicts, report


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_with_the_operations_jobs_allow_exactly_what_each_needs(overlay, tmp_path, capsys):
    """The overlay with components/operations: the service's connections as without it, and the Jobs'
    pods reach the brokers and DNS only."""
    docs = render_operations(overlay)
    traffic = cases(overlay, docs) + operations_cases(overlay, docs)
    verdicts = evaluate(docs, traffic, tmp_path)
    report = table(f"{overlay} + components/operations", traffic, verdicts)
    with capsys.disabled():
        print("\n" + report)
    assert [c.allowed for c in traffic] == verdicts, report


def test_the_engine_tells_a_broken_policy_apart(tmp_path):
    """The same model against the policy as kustomize rendered it with includeSelectors: true (the
    service's own labels copied into every peer selector): cyclonus must deny what the service needs."""
    docs = render("prod")
    broken = json.loads(json.dumps(docs))
    (policy,) = kinds(broken, "NetworkPolicy")
    own = workload(docs)["spec"]["template"]["metadata"]["labels"]
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            peer["podSelector"]["matchLabels"].update(own)
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            peer["podSelector"]["matchLabels"].update(own)
    traffic = [c for c in cases("prod", docs) if c.allowed]
    assert evaluate(broken, traffic, tmp_path) == [False] * len(traffic)
