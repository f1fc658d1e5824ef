"""The documentation's tables are the code's: the generated regions of every page are what the
generator gives now (settings from SETTINGS, metrics from their declarations, checked against a real
Metrics() registry, alerts from the rule file, figures from the benchmark's JSON), and each table lists
everything it is about."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from consumer.devtools.docs import GENERATORS, ROOT, renderer
from consumer.devtools.docs.markdown import cell, code_names
from consumer.devtools.docs.regions import RegionError, names, pages, rewrite, stale, update
from consumer.operations.metrics import Metrics
from consumer.operations.settings import SETTINGS

DOCS = ROOT / "docs"
REGION = re.compile(r"<!-- generated: ([a-z0-9-]+) -->\n(.*?)<!-- end generated -->", re.S)


def region(page: str, name: str) -> str:
    found = {n: body for n, body in REGION.findall((DOCS / page).read_text())}
    assert name in found, f"docs/{page} has no generated region {name}"
    return found[name]


def test_every_generated_region_is_up_to_date():
    out_of_date = [str(p.relative_to(ROOT)) for p in stale(ROOT, renderer())]
    assert not out_of_date, f"generated tables are stale in {out_of_date}: run `make docs`"


def test_every_generator_has_its_region_and_every_region_its_generator():
    used = [n for p in pages(ROOT) for n in names(p.read_text())]
    assert set(used) == set(GENERATORS), set(used) ^ set(GENERATORS)
    for p in pages(ROOT):
        on_page = names(p.read_text())
        assert len(on_page) == len(set(on_page)), f"{p.name}: a table is generated once on a page"
    # A figure may also be shown in the guide of the reader it concerns (audit.md: receipts, verifying);
    # every other table is generated in one place only.
    again = [n for n in set(used) if used.count(n) > 1]
    assert all(n.startswith("bench-") for n in again), again
    assert {"settings", "metrics", "alerts"} <= set(names((DOCS / "operating.md").read_text()))
    assert {n for n in GENERATORS if n.startswith("bench-")} <= set(names((DOCS / "performance.md").read_text()))


def test_the_settings_table_lists_every_setting_in_order():
    rows = re.findall(r"^\| `TF_([A-Z0-9_]+)` \|", region("operating.md", "settings"), re.M)
    assert rows == [s.name for s in SETTINGS]


def test_the_metrics_table_lists_every_metric_the_service_exposes():
    metrics = Metrics()
    metrics.feed_lag(lambda: 0.0)
    metrics.feed_lag(lambda: 0.0, "consent", {"gates_input": "true"})
    exposed = {
        line.split()[2]
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line.startswith("# TYPE training_filter_")
    }
    rows = set(re.findall(r"^\| `(training_filter_[a-z0-9_]+)` \|", region("operating.md", "metrics"), re.M))
    assert exposed - rows == set()
    assert "training_filter_shadow_decisions_total" in rows  # series only once a shadow policy is set


def test_the_alerts_table_lists_every_alert_and_links_its_runbook_entry():
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "training-filter-rules.yaml").read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    rows = re.findall(r"^\| \[(\w+)\]\(#(\w+)\) \|", region("operating.md", "alerts"), re.M)
    assert rows == [(a, a.lower()) for a in alerts]


def test_a_stale_region_is_found_and_rewritten(tmp_path: Path):
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text("intro\n<!-- generated: one -->\nold\n<!-- end generated -->\nafter `<!-- generated: x -->`\n")
    tables = {"one": "| a |\n| --- |\n| 1 |"}
    assert stale(tmp_path, tables.__getitem__) == [page]
    assert update(tmp_path, tables.__getitem__) == [page]
    table = "\n\n| a |\n| --- |\n| 1 |\n\n"
    assert (
        page.read_text()
        == f"intro\n<!-- generated: one -->{table}<!-- end generated -->\nafter `<!-- generated: x -->`\n"
    )
    assert stale(tmp_path, tables.__getitem__) == []


def test_a_region_without_its_end_or_of_no_generator_is_an_error():
    with pytest.raises(RegionError, match="no <!-- end generated -->"):
        rewrite("<!-- generated: one -->\n<!-- generated: two -->\n<!-- end generated -->\n", lambda n: "")
    with pytest.raises(KeyError, match="no generator for region 'nothing'"):
        rewrite("<!-- generated: nothing -->\n<!-- end generated -->\n", renderer())


def test_cells_keep_what_markdown_would_swallow():
    assert cell(code_names("topic (<topic>-value); see TF_BATCH_SIZE")) == (
        "topic (&lt;topic&gt;-value); see `TF_BATCH_SIZE`"
    )
    assert cell(code_names("for {{ $value | humanize }}")) == r"for `{{ $value \| humanize }}`"
    assert code_names("`TF_X_Y` and training_filter_ready") == "`TF_X_Y` and `training_filter_ready`"
