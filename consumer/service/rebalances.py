"""The input consumer's callbacks (librdkafka calls them inside consume(), on the loop's thread):
rebalances, and the statistics that give the consumer lag.

Cooperative-sticky rebalances: before partitions go, the delivery guarantee finishes and commits them,
and the held records of those partitions are dropped (their new owner reads them again). A lost
partition (the session expired) is not committed: under exactly-once its open transaction is aborted
(consumer/datapath/delivery.py)."""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import TopicPartition

from consumer.datapath.delivery import Delivery
from consumer.operations.metrics import Metrics
from consumer.operations.settings import Settings
from consumer.service.state import State


class Stats:
    """librdkafka's statistics (every TF_STATISTICS_INTERVAL_MS): the lag of each assigned partition."""

    def __init__(self, state: State, metrics: Metrics) -> None:
        self.state = state
        self.metrics = metrics

    def on_stats(self, stats_json: str) -> None:
        stats = orjson.loads(stats_json)
        lags: dict[tuple[str, int], int] = {}
        for topic, info in stats.get("topics", {}).items():
            for partition, p in info.get("partitions", {}).items():
                key = (topic, int(partition))
                if key in self.state.assigned and p.get("consumer_lag", -1) >= 0:
                    lags[key] = p["consumer_lag"]
        self.metrics.set_consumer_lag(lags)


class Rebalances:
    def __init__(self, settings: Settings, state: State, metrics: Metrics, delivery: Delivery, log: Any) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.delivery = delivery
        self.log = log

    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assign").inc()
        consumer.incremental_assign(partitions)
        # librdkafka keeps a partition's paused flag across losing and regaining it: set it explicitly.
        if self.state.paused:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)
        self.state.assigned.update((p.topic, p.partition) for p in partitions)
        self.delivery.assigned_partitions(partitions)
        self.metrics.assigned.set(len(self.state.assigned))
        self.log.info("partitions_assigned", partitions=[f"{p.topic}/{p.partition}" for p in partitions])

    def on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("revoke").inc()
        self.delivery.revoked(partitions, self.settings.revoke_flush_seconds)
        self._forget(partitions)
        self.log.info("partitions_revoked", partitions=[f"{p.topic}/{p.partition}" for p in partitions])

    def on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("lost").inc()
        self.delivery.lost(partitions)
        self._forget(partitions)
        self.log.warning("partitions_lost", partitions=[f"{p.topic}/{p.partition}" for p in partitions])

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self.state.forget(gone)  # records of a partition that went belong to its new owner: never emitted here
        self.metrics.assigned.set(len(self.state.assigned))
        self.metrics.drop_partitions(list(gone))
