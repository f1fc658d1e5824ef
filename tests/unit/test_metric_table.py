"""The metric declarations (consumer/operations/metric_table.py) are the one place metrics are
declared: `Metrics` is built from them, the docs' table is generated from them, and the docs check
fails when what a real registry exposes is not what they declare."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import Gauge

from consumer.devtools.docs import reference
from consumer.operations.metric_table import (
    DECISIONS,
    FEED_LAGS,
    MetricTable,
    attributes,
    counter,
    declarations,
    gauge,
    histogram,
)
from consumer.operations.metrics import Metrics


def test_a_declaration_that_breaks_the_rules_is_refused_at_import():
    with pytest.raises(ValueError, match="ends in _total"):
        counter("records", "no _total")
    with pytest.raises(ValueError, match="ends in _total"):
        gauge("entries_total", "a gauge named like a counter")
    with pytest.raises(ValueError, match="buckets"):
        histogram("seconds", "no buckets", ())
    with pytest.raises(ValueError, match="say `when`"):
        gauge("lag", "values of a label not known in advance, yet said to exist at start-up", {"topic": ()})
    with pytest.raises(ValueError, match="initial"):
        gauge("paused", "a labelled gauge with an initial value", {"kind": ("a",)}, initial=1)


def test_metrics_has_one_attribute_per_declaration_built_as_declared():
    m = Metrics()
    for attr, declared in attributes():
        metric = getattr(m, attr)
        assert metric._type == declared.type, attr
        assert metric._name == declared.family and metric._documentation == declared.help, attr
        assert metric._labelnames == tuple(declared.labels), attr
    assert Metrics.records is MetricTable.records  # the class keeps the declaration
    assert m.registry_available._value.get() == 1  # its declared initial value


def test_every_combination_of_known_values_exists_at_start_up():
    fresh = reference._families(Metrics())
    records = {tuple(s.labels.values()) for s in fresh["training_filter_records"].samples}
    assert len(records) == 2 * len(DECISIONS)
    assert "training_filter_shadow_decisions" in fresh and not fresh["training_filter_shadow_decisions"].samples


def test_what_a_registry_exposes_is_what_is_declared():
    assert reference.exposition_problems(*reference._exposed_metrics()) == []


def test_a_metric_registered_outside_the_table_is_found():
    fresh, running = reference._exposed_metrics()
    Gauge("training_filter_stray", "Registered by hand.", registry=running.registry).set(1)
    assert reference.exposition_problems(fresh, running) == [
        "training_filter_stray is exposed but not declared in consumer/operations/metric_table.py"
    ]


def test_a_label_value_outside_its_declared_set_is_found():
    fresh, running = reference._exposed_metrics()
    running.records.labels("POST", "a_reason_nobody_declared").inc()
    (problem,) = reference.exposition_problems(fresh, running)
    assert "decision=a_reason_nobody_declared" in problem


def test_declarations_that_disagree_with_the_registry_fail_the_docs(monkeypatch):
    changed = [dataclasses.replace(d, help=d.help + " (edited)") if d.name == "ready" else d for d in declarations()]
    monkeypatch.setattr(reference, "declarations", lambda: changed)
    with pytest.raises(ValueError, match="training_filter_ready is exposed as gauge"):
        reference.metrics_table()
    dropped = [d for d in declarations() if d.name != "ready"]
    monkeypatch.setattr(reference, "declarations", lambda: dropped)
    with pytest.raises(ValueError, match="training_filter_ready is exposed but not declared"):
        reference.metrics_table()


def test_a_feed_lag_takes_only_its_declared_labels():
    m = Metrics()
    with pytest.raises(ValueError, match="gates_input"):
        m.feed_lag(lambda: 0.0, "consent", {"gates_input": "maybe"})
    with pytest.raises(ValueError, match="takes the labels"):
        m.feed_lag(lambda: 0.0, "optout", {"user": "u1"})
    m.feed_lag(lambda: 3.0, "consent", {"gates_input": "false"})
    (family,) = [f for f in m.registry.collect() if f.name == FEED_LAGS["consent"].exposed]
    assert [(s.labels, s.value) for s in family.samples] == [({"gates_input": "false"}, 3.0)]


def test_the_docs_table_has_a_row_per_declaration_in_order():
    rows = [line.split(" | ")[0].strip("| `") for line in reference.metrics_table().splitlines()[2:]]
    assert rows == [d.exposed for d in declarations()]
