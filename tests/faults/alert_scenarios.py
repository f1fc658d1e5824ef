"""The alert rules proven by a real Prometheus under real faults.

One service, scraped every second by a real Prometheus server (the one `make tools` builds) that
evaluates deploy/prometheus/training-filter-rules.yaml with every `for:` shortened to 2 s (the
expressions and thresholds are the shipped ones). The run goes through phases, and each must make
its alert fire:

1. a clean stream (no malformed records): no alert fires, and every query of the Grafana dashboard
   returns data (the service runs with a shadow policy, so that the shadow panels have data too);
2. a produce failure (the training topic's max.message.bytes lowered under a running service, then a
   large record): TrainingFilterProduceErrors;
3. a DLQ flood (undecodable records): TrainingFilterDLQRateHigh;
4. the opt-out feed out for longer than the alert's 30 s (the service's READ permission revoked):
   TrainingFilterOptOutFeedStale;
5. every replica killed (kill -9, none restarted): TrainingFilterAbsent.

Alongside a phase's alert, the earlier phases' may still fire (their windows are minutes long), and
TrainingFilterNotReady may (a replica paused for its feed is rightly not ready); the clean phase
allows none.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from consumer.devtools.generator import StreamGenerator
from consumer.devtools.local_kafka import LocalKafka
from consumer.wire.codec import POST
from tests.deploy.prometheus_server import PrometheusServer
from tests.faults.scenarios import CODEC, Row, check_output, grant, revoke_optout_reads, secure_env, wait_for_output
from tests.harness import ServiceProcess, Topics, produce
from tests.samples import CANDIDATE_POLICY

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "training-filter-rules.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "training-filter.json"
NAMESPACE = "training-filter"  # the absence alert names it; Prometheus adds it to the target's series
CLEAN_MIX = {
    "eligible": 0.6,
    "not_public": 0.15,
    "region": 0.1,
    "unknown_age": 0.05,
    "under_age": 0.05,
    "opted_out": 0.05,
}
# A consequence, not a cause: a replica that pauses for its feed is (rightly) not ready.
CONSEQUENCES = {"TrainingFilterNotReady"}


@dataclass
class Phase:
    name: str
    expected: str | None
    fired: set[str] = field(default_factory=set)
    seconds: float = 0.0


def short_rules(folder: Path) -> Path:
    """The shipped rules with every `for:` at 2 s."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"
    path = folder / "rules-short-for.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


def active(prom: PrometheusServer) -> dict[str, str]:
    return {a["labels"]["alertname"]: a["state"] for a in prom.get("/api/v1/alerts")["data"]["alerts"]}


def firing(prom: PrometheusServer) -> set[str]:
    return {name for name, state in active(prom).items() if state == "firing"}


def wait_firing(prom: PrometheusServer, alert: str, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if alert in firing(prom):
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def dashboard_queries_without_data(prom: PrometheusServer) -> list[str]:
    empty = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            if "training_filter_consent_feed_lag_seconds" in target["expr"]:
                continue  # exported only with a consent topic (tests/integration/test_service_consents.py)
            expr = target["expr"].replace("$__rate_interval", "30s").replace("$namespace", NAMESPACE)
            result = prom.get("/api/v1/query?" + urlencode({"query": expr}))["data"]["result"]
            if not result:
                empty.append(f"{panel['title']}: {expr}")
    return empty


def _candidate_policy(folder: Path) -> Path:
    path = folder / "candidate-policy.toml"
    path.write_text(CANDIDATE_POLICY)
    return path


def _random_post(generator: StreamGenerator, topics: Topics, text_bytes: int) -> tuple[str, bytes, bytes]:
    g = generator.record("eligible", "post")
    record = CODEC.decode(g.value, POST)[1]
    record["author_birth_date"] = (record["author_birth_date"] - dt.date(1970, 1, 1)).days
    record["created_at"] = int(record["created_at"].timestamp() * 1000)
    record["text"] = base64.b64encode(os.urandom(text_bytes))[:text_bytes].decode()  # lz4 cannot shrink it
    return topics.posts, g.key, CODEC.encode(POST, record)


def _set_max_message_bytes(admin: AdminClient, topic: str, value: str) -> None:
    entry = ConfigEntry("max.message.bytes", value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def alerts_under_faults(broker: LocalKafka, workdir: Path, records: int, seed: int = 31) -> tuple[Row, list[Phase]]:
    topics = Topics.unique(broker.bootstrap)
    generator = StreamGenerator(
        seed=seed, users_per_pool=400, posts_topic=topics.posts, ai_topic=topics.ai, mix=CLEAN_MIX
    )
    stream = list(generator.stream(records))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 3})
    group = f"tf-{topics.posts}"
    grant(admin, topics, group)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    service = ServiceProcess(
        broker.secure_bootstrap,
        topics,
        workdir,
        group=group,
        env_overrides={
            **secure_env(broker),
            "TF_LOG_LEVEL": "info",
            "TF_OPTOUT_MAX_LAG_SECONDS": "2",
            # The dashboard's shadow panels have data only with a shadow policy: this replica has one.
            "TF_SHADOW_POLICY_FILE": str(_candidate_policy(workdir)),
        },
    )
    service.start().wait_ready(90)
    phases: list[Phase] = []
    row_failures: list[str] = []
    with PrometheusServer(
        rule_files=[short_rules(workdir)],
        targets=[f"127.0.0.1:{service.port}"],
        interval="1s",
        target_labels={"namespace": NAMESPACE, "pod": "training-filter-0"},
    ) as prom:
        phases.append(_clean_phase(prom, broker, topics, stream, service, row_failures))

        # 2. A produce failure: the broker refuses a record (a topic limit lowered under the service).
        phase = Phase("produce failure (topic limit lowered)", "TrainingFilterProduceErrors")
        started = time.monotonic()
        _set_max_message_bytes(admin, topics.training, "100000")
        produce(broker.bootstrap, [_random_post(generator, topics, 200_000)])
        phases.append(_expect(prom, phase, started, 60))
        _set_max_message_bytes(admin, topics.training, "1179648")

        # 3. A DLQ flood.
        phase = Phase("DLQ flood (500 undecodable records)", "TrainingFilterDLQRateHigh")
        started = time.monotonic()
        produce(broker.bootstrap, [(topics.posts, b"k", b"not avro %d" % i) for i in range(500)])
        phases.append(_expect(prom, phase, started, 60))

        # 4. The opt-out feed out for longer than the alert's 30 s threshold.
        phase = Phase("opt-out feed unreadable for 40 s", "TrainingFilterOptOutFeedStale")
        started = time.monotonic()
        revoke_optout_reads(admin, topics)
        phases.append(_expect(prom, phase, started, 60))
        grant(admin, topics, group)
        service.wait_ready(60)

        # 5. Every replica gone.
        phase = Phase("every replica killed (kill -9)", "TrainingFilterAbsent")
        started = time.monotonic()
        service.stop(signal.SIGKILL)
        phases.append(_expect(prom, phase, started, 60))

    return _row(broker, topics, stream, phases, row_failures), phases


def _clean_phase(
    prom: PrometheusServer,
    broker: LocalKafka,
    topics: Topics,
    stream: list[Any],
    service: ServiceProcess,
    row_failures: list[str],
) -> Phase:
    """1. Clean: the stream, then a quiet while for rates to have samples; nothing fires, and every
    dashboard query has data."""
    phase = Phase("clean stream", None)
    started = time.monotonic()
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream))
    wait_for_output(broker.bootstrap, topics.training, stream, timeout=90)
    service.wait_settled(60)
    time.sleep(12)
    phase.fired = firing(prom) | {name for name, state in active(prom).items() if state == "pending"}
    empty = dashboard_queries_without_data(prom)
    if phase.fired:
        row_failures.append(f"alerts in the clean run: {sorted(phase.fired)}")
    if empty:
        row_failures.append(f"dashboard queries without data: {empty}")
    phase.seconds = time.monotonic() - started
    return phase


def _row(broker: LocalKafka, topics: Topics, stream: list[Any], phases: list[Phase], row_failures: list[str]) -> Row:
    """The output checked, and each phase's alerts: its own fired, no other but its consequences."""
    row = check_output("alerts under faults (real Prometheus)", broker.bootstrap, topics.training, stream, True)
    row.failures += row_failures
    earlier: set[str] = set()
    for phase in phases[1:]:
        if phase.expected not in phase.fired:
            row.failures.append(f"{phase.name}: {phase.expected} did not fire")
        unexpected = phase.fired - {phase.expected} - CONSEQUENCES - earlier
        earlier.add(phase.expected or "")
        if unexpected:
            row.failures.append(f"{phase.name}: unexpected alerts {sorted(unexpected)}")
    for phase in phases:
        row.notes.append(f"{phase.name}: {', '.join(sorted(phase.fired)) or 'no alert'} ({phase.seconds:.0f} s)")
    return row


def _expect(prom: PrometheusServer, phase: Phase, started: float, timeout: float) -> Phase:
    assert phase.expected is not None
    wait_firing(prom, phase.expected, timeout)
    phase.fired = firing(prom)
    phase.seconds = time.monotonic() - started
    return phase


def table(phases: list[Phase]) -> str:
    lines = [f"{'phase':<44}{'expected alert':<36}fired"]
    for p in phases:
        lines.append(f"{p.name:<44}{p.expected or '(none)':<36}{', '.join(sorted(p.fired)) or '-'}")
    return "\n".join(lines)
