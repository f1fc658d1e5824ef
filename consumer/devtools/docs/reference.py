"""The reference tables of docs/operating.md, from what the service itself declares: the settings from
`SETTINGS`, the metrics from their declarations (metric_table.py), checked against what a real
`Metrics()` registry exposes, the alerts from the Prometheus rule file. A column is one (header,
function) pair, so adding one (a setting's type or bounds, say) is one line."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumer.devtools.docs.markdown import cell, code_names, table
from consumer.operations.metric_table import NS, Declared, declarations
from consumer.operations.metrics import Metrics
from consumer.operations.settings import PREFIX, SETTINGS, Setting

RULES = Path("deploy") / "prometheus" / "training-filter-rules.yaml"
TABLE = "consumer/operations/metric_table.py"


def _default(s: Setting) -> str:
    if s.default is None:
        return "–"
    return f"`{s.default}`" if s.default else "(empty)"


def _kind(s: Setting) -> str:
    return ", ".join(k for k, on in (("**required**", s.default is None), ("secret: never printed", s.secret)) if on)


SETTING_COLUMNS: tuple[tuple[str, Callable[[Setting], str]], ...] = (
    ("variable", lambda s: f"`{PREFIX}{s.name}`"),
    ("default", _default),
    ("required, secret", _kind),
    ("kind and bounds", lambda s: cell(s.kind.describe())),
    ("what it does", lambda s: cell(code_names(s.help))),
    ("why these bounds", lambda s: cell(code_names(s.why))),
)


def settings_table() -> str:
    """Every setting of SETTINGS, in its order (the order of `training-filter run --help`)."""
    rows = [[column(s) for _, column in SETTING_COLUMNS] for s in SETTINGS]
    return table([h for h, _ in SETTING_COLUMNS], rows)


def _exposed_metrics() -> tuple[Metrics, Metrics]:
    """A registry as a fresh process has it, and one with every family given a series, as the running
    service gives them: the build info, a partition's lag, every feed's lag, the shadow's counts, a
    recipient's figures."""
    fresh, running = Metrics(), Metrics()
    running.feed_lag(lambda: 0.0)
    running.feed_lag(lambda: 0.0, "consent", {"gates_input": "true"})
    running.feed_lag(lambda: 0.0, "change")
    running.info.labels("0.1.0", "policy", "at-least-once", "compiled").set(1)
    running.set_consumer_lag({("posts.v1", 0): 0})
    running.shadow_sink("candidate")
    for gauge in (
        running.recipient_reads_revocations,
        running.recipient_unacknowledged,
        running.recipient_oldest_seconds,
    ):
        gauge.labels("ml-team-reader").set(0)
    return fresh, running


def _families(m: Metrics) -> dict[str, Any]:
    return {f.name: f for f in m.registry.collect() if f.name.startswith(f"{NS}_")}


def _series(family: Any) -> set[tuple[str, ...]]:
    """The label values of a family's series (a histogram's buckets are one series)."""
    return {tuple(v for k, v in sample.labels.items() if k != "le") for sample in family.samples}


def exposition_problems(fresh: Metrics, running: Metrics) -> list[str]:
    """Where the declarations and what the registries expose disagree: a family registered outside
    the table, one declared but not exposed, another type, help or label names, a label value outside
    its declared set, or a series said to exist from start-up that a fresh registry does not have."""
    declared = {d.family: d for d in declarations()}
    exposed, at_start = _families(running), _families(fresh)
    problems = [f"{name} is exposed but not declared in {TABLE}" for name in sorted(exposed.keys() - declared.keys())]
    problems += [
        f"{name} is declared but a running service does not expose it"
        for name in sorted(declared.keys() - exposed.keys())
    ]
    for name in sorted(declared.keys() & exposed.keys()):
        d, family = declared[name], exposed[name]
        names = list(dict.fromkeys(k for sample in family.samples for k in sample.labels if k != "le"))
        if (family.type, family.documentation, names) != (d.type, d.help, list(d.labels)):
            problems.append(f"{name} is exposed as {family.type} {names} {family.documentation!r}, not as declared")
        outside = {
            f"{label}={sample.labels[label]}"
            for sample in family.samples
            for label, values in d.labels.items()
            if values and sample.labels.get(label) not in values
        }
        if outside:
            problems.append(f"{name} has label values outside its declared sets: {', '.join(sorted(outside))}")
        if not d.when and name in at_start and _series(at_start[name]) != set(itertools.product(*d.labels.values())):
            problems.append(f"{name}: a fresh registry lacks series the declaration says exist from start-up")
    return problems


def _label_values(d: Declared[Any]) -> str:
    """Label names, each with its values where they are a fixed set."""
    return ", ".join(
        f"`{name}` ({', '.join(f'`{v}`' for v in values)})" if values else f"`{name}`"
        for name, values in d.labels.items()
    )


METRIC_COLUMNS: tuple[tuple[str, Callable[[Declared[Any]], str]], ...] = (
    ("metric", lambda d: f"`{d.exposed}`"),
    ("type", lambda d: d.type),
    ("labels", _label_values),
    ("help", lambda d: cell(code_names(d.help))),
    ("series", lambda d: cell(code_names(d.when)) if d.when else "from start-up"),
)


def metrics_table() -> str:
    """Every declaration of metric_table.py, in exposition order; an error if they are not what a
    real registry exposes."""
    problems = exposition_problems(*_exposed_metrics())
    if problems:
        raise ValueError("the metric declarations disagree with /metrics: " + "; ".join(problems))
    rows = [[column(d) for _, column in METRIC_COLUMNS] for d in declarations()]
    return table([h for h, _ in METRIC_COLUMNS], rows)


def alert_rules(root: Path) -> list[dict[str, Any]]:
    import yaml  # the [dev] extra, like every deploy check

    groups = yaml.safe_load((root / RULES).read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def alerts_table(root: Path) -> str:
    """Every alert with its runbook entry (an anchor of the page the table is on), severity, wait and
    summary, and the metrics its expression reads."""
    rows = []
    for rule in alert_rules(root):
        name = rule["alert"]
        read = sorted(set(re.findall(rf"\b{NS}_[a-z0-9_]+", rule["expr"])))
        rows.append(
            [
                f"[{name}](#{name.lower()})",
                rule.get("labels", {}).get("severity", ""),
                rule.get("for", "0 (at once)"),
                cell(code_names(rule["annotations"]["summary"])),
                ", ".join(f"`{m}`" for m in read),
            ]
        )
    return table(["alert", "severity", "for", "summary", "reads"], rows)
