"""The README documents every setting and every metric the service exposes."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from consumer.operations.metrics import Metrics
from consumer.operations.settings import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme():
    missing = [f"TF_{s.name}" for s in SETTINGS if f"`TF_{s.name}`" not in README]
    assert not missing


def test_every_metric_is_in_the_readme():
    metrics = Metrics()
    metrics.feed_lag(lambda: 0.0)
    names = {
        line.split()[2]
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line.startswith("# TYPE training_filter_")
    }
    documented = {n for n in names if f"`{n}`" in README or f"`{n}_total`" in README}
    assert names - documented == set()
