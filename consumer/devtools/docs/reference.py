"""The reference tables of docs/operating.md, from what the service itself declares: the settings from
`SETTINGS`, the metrics from a real `Metrics()` registry's collection (what /metrics exposes), the
alerts from the Prometheus rule file. A column is one (header, function) pair, so adding one (a
setting's type or bounds, say) is one line."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumer.devtools.docs.markdown import cell, code_names, table
from consumer.operations.metrics import NS, Metrics
from consumer.operations.settings import PREFIX, SETTINGS, Setting

RULES = Path("deploy") / "prometheus" / "training-filter-rules.yaml"


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
    service gives them: the build info, a partition's lag, both feeds' lag, the shadow's counts."""
    fresh, running = Metrics(), Metrics()
    for m in (fresh, running):
        m.feed_lag(lambda: 0.0)
    running.feed_lag(lambda: 0.0, "consent", {"gates_input": "true"})
    running.info.labels("0.1.0", "policy", "at-least-once", "compiled").set(1)
    running.set_consumer_lag({("posts.v1", 0): 0})
    running.shadow_sink("candidate")
    return fresh, running


def _families(m: Metrics) -> dict[str, Any]:
    return {f.name: f for f in m.registry.collect() if f.name.startswith(f"{NS}_")}


def _labels(family: Any, fixed: Any) -> str:
    """Label names; with their values where a fresh process already has every series (a fixed set)."""
    names = [n for sample in family.samples for n in sample.labels if n != "le"]
    # dicts as ordered sets: the values in the order the code creates their series
    fixed_values: dict[str, dict[str, None]] = {}
    for sample in fixed.samples if fixed is not None else ():
        for name, value in sample.labels.items():
            fixed_values.setdefault(name, {})[value] = None
    return ", ".join(
        f"`{n}` ({', '.join(f'`{v}`' for v in fixed_values[n])})" if n in fixed_values else f"`{n}`"
        for n in dict.fromkeys(names)
    )


def metric_rows() -> list[tuple[str, str, str, str]]:
    """(exposed name, type, labels, help) of every training_filter_ family, in registration order."""
    fresh, running = _exposed_metrics()
    fixed = _families(fresh)
    rows = []
    for name, family in _families(running).items():
        if not family.samples:
            raise ValueError(f"{name} has no series: give it one in _exposed_metrics so its labels show")
        exposed = f"{name}_total" if family.type == "counter" else name
        rows.append((exposed, family.type, _labels(family, fixed.get(name)), family.documentation))
    return rows


def metrics_table() -> str:
    rows = [[f"`{n}`", t, labels, cell(code_names(h))] for n, t, labels, h in metric_rows()]
    return table(["metric", "type", "labels", "help"], rows)


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
