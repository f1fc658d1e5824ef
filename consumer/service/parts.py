"""The service's parts, as consumer/service/assemble.py built them: one frozen structure, handed to
the lifecycle, the loop and the upkeep. No part is completed after it is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumer.changes.retractions import RetractionEmitter
from consumer.datapath.batch import BatchProcessor
from consumer.datapath.delivery import Delivery
from consumer.feeds.background import BackgroundSync
from consumer.feeds.feeds import Feeds
from consumer.feeds.snapshots import Snapshots
from consumer.operations.metrics import Metrics
from consumer.operations.settings import Settings
from consumer.service.rebalances import Rebalances
from consumer.service.state import State
from consumer.wire.codec import Codec


@dataclass(frozen=True)
class Parts:
    settings: Settings
    state: State
    metrics: Metrics
    log: Any
    codec: Codec
    feeds: Feeds  # the opt-out mirror (and the consent mirror): caught up before input, synced before each batch
    syncer: BackgroundSync  # the feeds' sync thread, started when the loop starts
    consumer: Any  # the input consumer (a group on the input topics)
    producer: Any  # the output producer (training records, dead letters)
    delivery: Delivery  # when an input offset may be committed
    processor: BatchProcessor  # the hot loop
    revocations: RetractionEmitter
    snapshots: Snapshots
    rebalances: Rebalances  # the input consumer's rebalance callbacks

    @property
    def registry(self) -> bool:
        return self.codec.registry is not None
