"""The benchmark harness's arithmetic, without a broker: the medians and spread of repeated runs, and
the opt-out propagation quantiles read from the service's own histogram."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tests.benchmarks.harness import paired_cpu_ratios, summarise
from tests.benchmarks.propagation import propagation_quantiles


def test_summarise_takes_medians_spreads_and_keeps_the_runs() -> None:
    runs = [
        {"records_per_second": rps, "cpu_us_per_record": cpu, "label": "x", "inner": {"p99_ms": p99}}
        for rps, cpu, p99 in ((10.0, 3.0, 9.0), (30.0, 1.0, 7.0), (20.0, 2.0, 8.0))
    ]
    out = summarise(runs)
    assert out["records_per_second"] == 20.0 and out["cpu_us_per_record"] == 2.0
    assert out["spread"] == {"records_per_second": [10.0, 30.0], "cpu_us_per_record": [1.0, 3.0]}
    assert out["inner"]["p99_ms"] == 8.0 and out["inner"]["spread"] == {"p99_ms": [7.0, 9.0]}
    assert out["repetitions"] == 3
    assert out["runs"][1] == {"records_per_second": 30.0, "cpu_us_per_record": 1.0, "label": "x"}


def test_paired_ratios_pair_runs_of_the_same_repetition() -> None:
    base = [{"cpu_us_per_record": 2.0}, {"cpu_us_per_record": 4.0}]
    variant = [{"cpu_us_per_record": 3.0}, {"cpu_us_per_record": 4.4}]
    assert paired_cpu_ratios(base, variant) == pytest.approx([1.1, 1.5])


def _metrics(observations: list[float]) -> str:
    registry = CollectorRegistry()
    histogram = Histogram(
        "training_filter_optout_propagation_seconds", "", buckets=(0.01, 0.05, 0.1, 1.0), registry=registry
    )
    for seconds in observations:
        histogram.observe(seconds)
    return generate_latest(registry).decode()


def test_propagation_quantiles_interpolate_within_buckets() -> None:
    # 5 in (0.01, 0.05], 5 in (0.05, 0.1]: p50 at the top of the second bucket, p99 98% into the third.
    text = _metrics([0.03] * 5 + [0.07] * 5)
    q = propagation_quantiles(text, sent=12)
    assert q["optouts_sent"] == 12 and q["optouts_applied"] == 10
    assert q["p50_ms"] == pytest.approx(50.0)
    assert q["p99_ms"] == pytest.approx(99.0)


def test_propagation_quantiles_of_nothing_applied_are_not_numbers() -> None:
    q = propagation_quantiles(_metrics([]), sent=3)
    assert q["optouts_applied"] == 0 and math.isnan(q["p50_ms"]) and math.isnan(q["p99_ms"])
