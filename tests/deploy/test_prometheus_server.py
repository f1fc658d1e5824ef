"""The alert rules loaded and evaluated by a real Prometheus server on 127.0.0.1 (the one `make tools`
builds, and the fault suite uses to watch the running service)."""

from __future__ import annotations

import time

import yaml

from tests.deploy.prometheus_server import PrometheusServer
from tests.deploy.tools import DEPLOY

RULES = DEPLOY / "prometheus" / "training-filter-rules.yaml"


def test_prometheus_loads_and_evaluates_every_alert_rule():
    wanted = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    with PrometheusServer(rule_files=[RULES], interval="1s") as prom:
        deadline = time.monotonic() + 20
        while True:
            groups = prom.get("/api/v1/rules")["data"]["groups"]
            rules = {r["name"]: r for g in groups for r in g["rules"]}
            evaluated = [r for r in rules.values() if not r.get("lastEvaluation", "0001").startswith("0001")]
            if len(evaluated) == len(wanted) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert set(rules) == wanted
        for name, rule in rules.items():
            assert rule["health"] == "ok", (name, rule.get("lastError"), prom.log())
        # Nothing scraped: only the absence alert can be active (pending: it waits 5 minutes).
        active = {a["labels"]["alertname"]: a["state"] for a in prom.get("/api/v1/alerts")["data"]["alerts"]}
        assert active == {"TrainingFilterAbsent": "pending"}, active
