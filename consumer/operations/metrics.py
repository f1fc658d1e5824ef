"""Prometheus metrics: one process's registry, built from the declarations of metric_table.py (name,
type, labels, help, buckets). Every label value comes from a fixed set (source, decision, topic role,
error name) or from Kafka topic/partition numbers and consumer group names: never a user id, a date or
text."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from consumer.operations.metric_table import (
    BATCH_BUCKETS,
    CONSENT_RESULTS,
    DLQ_CAUSES,
    FEED_LAGS,
    NS,
    OPTOUT_RESULTS,
    OUTPUTS,
    Declared,
    MetricTable,
    attributes,
)
from rules import REASONS, Reason, Source

__all__ = ["BATCH_BUCKETS", "CONSENT_RESULTS", "DLQ_CAUSES", "NS", "OPTOUT_RESULTS", "OUTPUTS", "Metrics"]

# The *_created series double the series count and no dashboard or alert here uses them.
disable_created_metrics()


class Metrics(MetricTable):
    """Every metric of MetricTable, registered on `registry` (a new one by default) after the
    process and platform collectors, as the attribute of its declaration: `metrics.records`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        for attr, declared in attributes():
            self.__dict__[attr] = declared.build(self.registry)
        # Cached label children: the hot loop adds per batch to these, never looks labels up.
        self.records_by: dict[tuple[Source, str], Counter] = {
            (source, str(reason)): self.records.labels(str(source), str(reason))
            for source in Source
            for reason in REASONS
        }

    def shadow_sink(self, version: str) -> Callable[[Mapping[tuple[Source, Reason, Reason], int]], None]:
        """Every (source, active, shadow) series at 0, and the function that adds one batch's counts."""
        self.shadow_info.labels(version).set(1)
        children = {
            (source, active, shadow): self.shadow_decisions.labels(str(source), str(active), str(shadow))
            for source in Source
            for active in REASONS
            for shadow in REASONS
        }

        def add(pairs: Mapping[tuple[Source, Reason, Reason], int]) -> None:
            for key, count in pairs.items():
                children[key].inc(count)

        return add

    def feed_lag(
        self, seconds_since_caught_up: Callable[[], float], feed: str = "optout", labels: dict[str, str] | None = None
    ) -> None:
        """Register a feed's lag (`optout` or `consent`): evaluated at scrape time, so it grows even if
        the loop hangs. The consent feed's carries `gates_input` ("true" under an opt-in policy, "false"
        when only the shadow candidate is opt-in), so that only a gating feed pages."""
        self.registry.register(_FeedLag(FEED_LAGS[feed], seconds_since_caught_up, labels or {}))

    def set_consumer_lag(self, lags: dict[tuple[str, int], int]) -> None:
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic, str(partition)).set(lag)

    def drop_partitions(self, partitions: list[tuple[str, int]]) -> None:
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):
                self.consumer_lag.remove(topic, str(partition))


class _FeedLag:
    """A feed's lag, as its declaration in FEED_LAGS says: its labels, with values of the declared set."""

    def __init__(self, declared: Declared, seconds: Callable[[], float], labels: dict[str, str]) -> None:
        allowed = declared.labels
        if list(labels) != list(allowed) or any(v not in allowed[k] for k, v in labels.items()):
            raise ValueError(f"{declared.exposed} takes the labels {dict(allowed)}, not {labels}")
        self._declared = declared
        self._seconds = seconds
        self._labels = labels

    def collect(self):
        family = GaugeMetricFamily(self._declared.exposed, self._declared.help, labels=list(self._labels))
        family.add_metric(list(self._labels.values()), self._seconds())
        yield family
