"""What the opt-out and consent feeds ask the broker: a topic's partitions, the topics' ids, and the
partitions' end offsets, each as one batched request, never one request per partition.

The end offsets are one AdminClient `list_offsets` (a ListOffsets request per broker, for every
partition that broker leads) with `OffsetSpec.latest()`, at the isolation level of the feed's
consumer: READ_UNCOMMITTED gives the high watermarks (the opt-out feed: an opt-out acknowledged after
an open transaction is waited for), READ_COMMITTED the last stable offsets (the consent feed, which
reads committed records only: it cannot read past the first open transaction, so waiting for the
high watermark would stall it until that transaction ends; consumer/feeds/mirror.py).
Asked one partition at a time (`get_watermark_offsets`, two requests each), a sync cost two round
trips per partition: with 300 partitions behind a 25 ms link, 17 s, and no sync ever finished
within its 1 s budget (docs/operating.md, the feeds' syncs).

One client serves every question: it never fetches, so its requests do not queue behind the feed
consumer's long-polling fetch, and its metadata cache (refreshed by the partition look-up each sync)
is what `list_offsets` finds the partitions' leaders in.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import OffsetSpec

from consumer.operations.clients import Clients

Partition = tuple[str, int]


class FeedError(Exception):
    """The opt-out topic cannot be read (missing, unauthorised, broker down). No personal data."""


class BrokerQueries:
    """The feed's client for metadata and end offsets (an AdminClient: it never fetches)."""

    def __init__(
        self,
        clients: Clients,
        config: dict[str, Any],
        clock: Callable[[], float] = time.monotonic,
        stopping: Callable[[], bool] = lambda: False,
        committed: bool = False,
    ) -> None:
        self.clock = clock
        self.stopping = stopping
        # The end offsets a feed that reads committed records only can reach: the last stable offsets.
        self.isolation = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
        self.auth_error: str | None = None
        admin_config: dict[str, Any] = {k: v for k, v in config.items() if k != "group.id"}
        admin_config["error_cb"] = self._on_error
        self.admin: Any = clients.admin(admin_config)

    def _client(self) -> Any:
        if self.admin is None:
            raise FeedError("the feed is closed")
        return self.admin

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (client-level errors, e.g. the broker refusing the credentials)."""
        if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            self.auth_error = err.name()

    def _check_credentials(self) -> None:
        self._client().poll(0)  # serves the error callback
        if self.auth_error is not None:
            raise FeedError(f"the broker rejected the credentials: {self.auth_error} (check TF_KAFKA_SASL_*)")

    def partitions(self, topic: str, timeout: float) -> list[int]:
        """The topic's partitions (one metadata request), asked in short steps so that a credential the
        broker rejects fails at once instead of after the whole timeout, and a stop is not held up."""
        deadline = self.clock() + timeout
        while True:
            self._check_credentials()
            try:
                metadata = self._client().list_topics(topic, timeout=min(1.0, max(0.1, deadline - self.clock())))
                break
            except KafkaException as exc:
                if self.clock() >= deadline or self.stopping():
                    raise FeedError(f"cannot read metadata of {topic}: {exc.args[0].name()}") from exc
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            why = info.error.name() if info is not None and info.error is not None else "no such topic"
            raise FeedError(f"topic {topic} is not readable: {why}")
        return sorted(info.partitions)

    def topic_ids(self, topics: list[str], timeout: float = 10.0) -> dict[str, str | None]:
        """The topics' ids (a re-created topic gets a new one), or none where the broker does not say."""
        out: dict[str, str | None] = {}
        try:
            futures = self._client().describe_topics(TopicCollection(list(topics)))
            for name, future in futures.items():
                out[name] = str(future.result(timeout).topic_id)
        except Exception:  # an older broker, or no DESCRIBE permission: the offsets check still applies
            pass
        return out

    def end_offsets(self, partitions: list[Partition], timeout: float) -> dict[Partition, int]:
        """The high watermarks of `partitions` (the last stable offsets, for a feed that reads committed
        records only): one ListOffsets request per broker. Raises FeedError
        (naming the error, never a record) when any of them cannot be had within `timeout`."""
        return self._offsets(partitions, OffsetSpec.latest(), timeout)

    def start_offsets(self, partitions: list[Partition], timeout: float) -> dict[Partition, int]:
        """The partitions' first offsets (the log start), in one request per broker: assigned as
        explicit offsets, the feed consumer does not look each one up on its own."""
        return self._offsets(partitions, OffsetSpec.earliest(), timeout)

    def _offsets(self, partitions: list[Partition], spec: OffsetSpec, timeout: float) -> dict[Partition, int]:
        if not partitions:
            return {}
        self._check_credentials()
        futures = self._client().list_offsets(
            {TopicPartition(t, p): spec for t, p in partitions},
            isolation_level=self.isolation,
            request_timeout=timeout,
        )
        deadline = self.clock() + timeout + 1.0  # the request's own timeout ends it first
        ends: dict[Partition, int] = {}
        for tp, future in futures.items():
            ends[tp.topic, tp.partition] = self._result(future, deadline).offset
        return ends

    def _result(self, future: concurrent.futures.Future[Any], deadline: float) -> Any:
        while True:
            try:
                return future.result(timeout=max(0.0, min(0.5, deadline - self.clock())))
            except concurrent.futures.TimeoutError as exc:
                if self.clock() >= deadline or self.stopping():
                    raise FeedError("_TIMED_OUT") from exc
            except KafkaException as exc:
                raise FeedError(exc.args[0].name()) from exc

    def close(self) -> None:
        self.admin = None  # librdkafka's handle is destroyed with its last reference
