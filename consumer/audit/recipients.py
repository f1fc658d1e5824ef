"""The record of recipients (GDPR Art. 19), asked of the broker: every consumer group that reads the
training topic, and what it has acknowledged of the revocations topic (acknowledgements.py holds the
arithmetic; this module only asks).

One scan is: the groups (ListGroups) and a check that the service may see every one (below), each
group's committed offsets (one OffsetFetch per group, all in flight at once: librdkafka takes one
group a request), the revocations partitions and their log
start and end offsets (one ListOffsets each, at READ_COMMITTED: a revocation in an open transaction
is not visible to any recipient yet, so no recipient can be behind on it), and the timestamp of the
record at each recipient's oldest unacknowledged offset, read by a consumer assigned to that offset
which commits nothing. The broker only answers for what the service may Describe: the groups (a
GROUP "*" Describe ACL, consumer/operations/acls.py) and, within a group's offsets, the topics it
already describes; a recipient's offsets on other topics are neither asked for nor seen.

A group counts as a recipient when it has a committed offset on the training topic; its commits on
the revocations topic are its own or its companion's (`<group>-retractions`, as the recipes name it:
acknowledgements.py). A reader that commits nothing there is invisible to Kafka, which is why
docs/recipients.md asks every recipient to read with a committed group. The service's own groups
(TF_GROUP_ID and `<TF_GROUP_ID>-...`) are not recipients. Every failure is a ScanError naming the
request and the error code, never a record.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition

from consumer.audit.acknowledgements import NOTHING_THERE, Recipient, acknowledging_group, assess, to_read
from consumer.feeds.ends import BrokerQueries, FeedError
from consumer.operations.clients import Clients

# A timestamp read takes at most this many bytes a partition: a revocation is a few hundred bytes.
_READER_LIMITS = {"fetch.max.bytes": 1 << 20, "max.partition.fetch.bytes": 1 << 16, "queued.max.messages.kbytes": 1024}


class ScanError(Exception):
    """The scan could not be completed (the broker, a permission, a timeout). No personal data."""


@dataclass(frozen=True)
class Topics:
    training: str
    revocations: str
    own_group: str  # TF_GROUP_ID: it and `<it>-...` are the service's groups, not recipients

    def is_own(self, group: str) -> bool:
        return group == self.own_group or group.startswith(self.own_group + "-")


class RecipientScan:
    """Scans the recipients on demand. Holds an AdminClient and a timestamp reader (made by `open`,
    or at the first scan); `close` releases them."""

    def __init__(
        self,
        clients: Clients,
        config: dict[str, Any],
        topics: Topics,
        timeout: float = 10.0,
    ) -> None:
        self.clients = clients
        self.config = config  # bootstrap servers, the TF_KAFKA_* pass-through, a logger
        self.topics = topics
        self.timeout = timeout
        self._queries: BrokerQueries | None = None
        self._reader: Any = None

    def open(self) -> None:
        """Makes the clients (they connect when first asked). The service calls it on its main thread:
        librdkafka clients made on two threads at once over TLS crashed the process (SIGSEGV)."""
        self._admin()
        self._timestamp_reader()

    def scan(self) -> list[Recipient]:
        """Every recipient, by group name; the ages are the caller's to take (Recipient.oldest_seconds)
        at the time it reports them. Bounded by `timeout` as a whole, not per request."""
        deadline = time.monotonic() + self.timeout
        listed = self._groups(deadline)
        self._check_permission(deadline)
        groups = [g for g in listed if not self.topics.is_own(g)]
        committed = self._committed(groups, deadline)
        recipients = sorted(g for g, offsets in committed.items() if self.topics.training in offsets)
        readers = {g: o[self.topics.revocations] for g, o in committed.items() if self.topics.revocations in o}
        by = {g: acknowledging_group(g, readers) for g in recipients}
        starts, ends = self._revocation_offsets()
        wanted: set[tuple[int, int]] = set()
        for g in recipients:
            wanted |= to_read(readers.get(by[g], {}), starts, ends)
        timestamps = self._timestamps(wanted, ends, deadline)
        return [assess(g, readers.get(by[g], {}), starts, ends, timestamps, by[g]) for g in recipients]

    # -- the groups -------------------------------------------------------------------------------

    def _admin(self) -> Any:
        if self._queries is None:
            self._queries = BrokerQueries(self.clients, dict(self.config), committed=True)
        return self._queries.admin

    def _check_permission(self, deadline: float) -> None:
        """Without Describe on a group, ListGroups leaves it out in silence (KIP-231), and a record
        missing its recipients would look clean. So the scan first asks for the offsets of a group
        outside the service's own names, which only that permission answers."""
        probe = f"recipients-permission-probe.{self.topics.own_group}"
        future = self._admin().list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(probe)], request_timeout=self.timeout
        )[probe]
        try:
            _wait(future, deadline, "OffsetFetch")
        except ScanError as exc:
            if "GROUP_AUTHORIZATION_FAILED" in str(exc):
                raise ScanError(
                    f"{exc}: the service may not Describe every consumer group, so it cannot list the "
                    'recipients (grant Describe on the group "*", SECURITY.md)'
                ) from exc
            if "GROUP_ID_NOT_FOUND" not in str(exc):
                raise

    def _groups(self, deadline: float) -> list[str]:
        result = _wait(self._admin().list_consumer_groups(request_timeout=self.timeout), deadline, "ListGroups")
        if result.errors:  # a broker that did not answer: a partial list would hide recipients
            raise ScanError(f"ListGroups: {_name(result.errors[0])}")
        return sorted({listing.group_id for listing in result.valid})

    def _committed(self, groups: list[str], deadline: float) -> dict[str, dict[str, dict[int, int]]]:
        """Each group's committed offsets: {group: {topic: {partition: offset}}}."""
        admin = self._admin()
        futures = {
            group: admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout
            )[group]
            for group in groups
        }
        out: dict[str, dict[str, dict[int, int]]] = {}
        for group, future in futures.items():
            try:
                answer = _wait(future, deadline, "OffsetFetch")
            except ScanError as exc:
                if "GROUP_ID_NOT_FOUND" in str(exc):  # deleted between the two requests: gone
                    continue
                raise
            offsets: dict[str, dict[int, int]] = {}
            for tp in answer.topic_partitions or []:
                if tp.error is None and tp.offset >= 0:
                    offsets.setdefault(tp.topic, {})[tp.partition] = tp.offset
            out[group] = offsets
        return out

    def _revocation_offsets(self) -> tuple[dict[int, int], dict[int, int]]:
        self._admin()
        assert self._queries is not None
        topic = self.topics.revocations
        try:
            partitions = [(topic, p) for p in self._queries.partitions(topic, self.timeout)]
            starts = self._queries.start_offsets(partitions, self.timeout)
            ends = self._queries.end_offsets(partitions, self.timeout)
        except FeedError as exc:
            raise ScanError(f"the revocations topic {topic}: {exc}") from exc
        return {p: o for (_, p), o in starts.items()}, {p: o for (_, p), o in ends.items()}

    # -- the timestamps ---------------------------------------------------------------------------

    def _timestamps(
        self, wanted: set[tuple[int, int]], ends: dict[int, int], deadline: float
    ) -> dict[tuple[int, int], int | None]:
        """The timestamp of the first committed record at or after each (partition, offset), or
        NOTHING_THERE. Read in rounds of one offset a partition: recipients behind on the same
        partition at different offsets each need their own position."""
        by_partition: dict[int, list[int]] = {}
        for partition, offset in sorted(wanted):
            by_partition.setdefault(partition, []).append(offset)
        found: dict[tuple[int, int], int | None] = {}
        while by_partition:
            round_ = {p: offsets.pop(0) for p, offsets in by_partition.items()}
            found.update(self._read_round(round_, ends, deadline))
            by_partition = {p: offsets for p, offsets in by_partition.items() if offsets}
        return found

    def _read_round(
        self, positions: dict[int, int], ends: dict[int, int], deadline: float
    ) -> dict[tuple[int, int], int | None]:
        reader = self._timestamp_reader()
        topic = self.topics.revocations
        reader.assign([TopicPartition(topic, p, o) for p, o in positions.items()])
        found: dict[tuple[int, int], int | None] = {}
        try:
            while len(found) < len(positions):
                if time.monotonic() > deadline:
                    raise ScanError(f"reading the revocations' timestamps: not within {self.timeout} s")
                for msg in reader.consume(num_messages=100, timeout=0.2):
                    partition = msg.partition()
                    key = (partition, positions.get(partition, -1))
                    if partition not in positions or key in found:
                        continue
                    error = msg.error()
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        found[key] = NOTHING_THERE  # transaction markers only, up to the end
                    elif error is not None:
                        raise ScanError(f"reading the revocations' timestamps: {error.name()}")
                    elif msg.offset() >= ends.get(partition, 0):
                        found[key] = NOTHING_THERE  # written after the end was asked: not in this scan
                    else:
                        kind, stamp = msg.timestamp()
                        if kind == 0 or stamp < 0:  # TIMESTAMP_NOT_AVAILABLE: an age cannot be told
                            raise ScanError("a revocation without a timestamp: the age cannot be told")
                        found[key] = stamp
        finally:
            reader.unassign()
        return found

    def _timestamp_reader(self) -> Any:
        if self._reader is None:
            self._reader = self.clients.consumer(
                {
                    **self.config,
                    **_READER_LIMITS,
                    # A group is named (confluent-kafka wants one) but never joined nor committed to.
                    "group.id": f"{self.topics.own_group}-recipients",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",  # an offset retention deleted: the oldest left
                }
            )
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._queries is not None:
            self._queries.close()
            self._queries = None


def _wait(future: concurrent.futures.Future[Any], deadline: float, what: str) -> Any:
    try:
        return future.result(timeout=max(0.1, deadline - time.monotonic()))
    except concurrent.futures.TimeoutError as exc:
        raise ScanError(f"{what}: _TIMED_OUT") from exc
    except KafkaException as exc:
        raise ScanError(f"{what}: {_name(exc)}") from exc


def _name(exc: Any) -> str:
    """A Kafka error's name (GROUP_AUTHORIZATION_FAILED, ...): what the operator acts on."""
    first = exc.args[0] if isinstance(exc, Exception) and exc.args else exc
    return first.name() if isinstance(first, KafkaError) else type(exc).__name__
