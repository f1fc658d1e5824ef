"""PromQL helpers for the deploy checks: extract expressions, parse them with a real PromQL parser
(promql-parser, the Rust parser's Python binding) and list the metric names they use."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import yaml

# Grafana variables are not PromQL: substitute plausible values before parsing.
_GRAFANA = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$namespace": ".*"}


def expressions_of_dashboard(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def expressions_of_rules(path: Path) -> list[str]:
    rules = yaml.safe_load(path.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def parse(expr: str) -> Any:
    for variable, value in _GRAFANA.items():
        expr = expr.replace(variable, value)
    if "$" in re.sub(r"\{\{.*?\}\}", "", expr):
        raise ValueError(f"unknown Grafana variable in {expr}")
    return promql_parser.parse(expr)


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(parse(expr), visit)
    return names
