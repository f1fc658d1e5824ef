"""The in-process stand-ins of the tests: one in-memory Kafka and the consumer, producer and admin
clients the service uses of it, faithful to librdkafka where the service depends on it, and one `Msg`.

`FakeKafka` holds topics (partitions of records with offsets), consumer groups (members, committed
offsets, cooperative rebalances delivered inside `consume()`), transactions (records visible to
read_committed readers once committed, never once aborted; such a reader, like ListOffsets at
READ_COMMITTED, ends at the last stable offset, where the first open transaction begins) and faults
to inject (`down`, a topic's produce error, a partition's truncation). `FakeKafka.clients()` is what
consumer.service takes in place of consumer/operations/clients.py's `KafkaClients`. Nothing waits: a
consume() with nothing to return returns at once, so a test's loop is bounded by what the test feeds
it, not by a clock.

What it does not model is said where it matters (one broker, no leader changes, no quotas)."""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import ConsumerGroupListing, ListConsumerGroupsResult

from consumer.datapath.batch import BatchProcessor
from consumer.datapath.offsets import PendingBatch
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.wire.codec import Codec
from rules import Decider, Source, load_policy

Partition = tuple[str, int]
_GENERATIONS = itertools.count(1)


class Msg:
    """What confluent_kafka.Message offers the service: one for records, events (an `error`) and tests."""

    __slots__ = ("_error", "_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = b"k",
        partition: int = 0,
        offset: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: int = 0,
        error: KafkaError | None = None,
    ) -> None:
        self._topic, self._value, self._key, self._partition, self._offset = topic, value, key, partition, offset
        self._headers, self._timestamp, self._error = headers, timestamp, error

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)  # TIMESTAMP_CREATE_TIME


def kafka_error(code: int, reason: str = "", fatal: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, reason or "injected", fatal=fatal))


# -- the cluster -----------------------------------------------------------------------------------


@dataclass
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    timestamp: int
    transaction: int | None = None  # the producer's open transaction that wrote it
    aborted: bool = False


@dataclass
class Topic:
    name: str
    partitions: list[list[Record]]
    config: dict[str, str] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_start: list[int] = field(default_factory=list)


@dataclass
class Group:
    members: list[FakeConsumer] = field(default_factory=list)
    committed: dict[Partition, int] = field(default_factory=dict)
    generation: int = 0


class FakeKafka:
    """One in-memory broker. Thread-safe: the service's feed syncs on a thread of its own."""

    def __init__(self) -> None:
        self.topics: dict[str, Topic] = {}
        self.groups: dict[str, Group] = {}
        self.open_transactions: set[int] = set()
        self.down = False  # every request fails (a broker outage), every fetch returns nothing
        self.produce_errors: dict[str, int] = {}  # topic -> KafkaError code of every delivery report
        self.lock = threading.RLock()
        self._transactions = itertools.count(1)

    # -- topics and records ------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, **config: str) -> Topic:
        with self.lock:
            topic = Topic(name, [[] for _ in range(partitions)], dict(config), log_start=[0] * partitions)
            self.topics[name] = topic
            return topic

    def add_partitions(self, name: str, total: int) -> None:
        with self.lock:
            topic = self.topics[name]
            while len(topic.partitions) < total:
                topic.partitions.append([])
                topic.log_start.append(0)

    def append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: int = 0,
        transaction: int | None = None,
    ) -> tuple[int, int]:
        """Write one record (as a producer's acknowledged record): (partition, offset)."""
        with self.lock:
            t = self.topics[topic]
            if partition is None or partition < 0:
                partition = (hash(key) if key is not None else len(t.partitions[0])) % len(t.partitions)
            log = t.partitions[partition]
            offset = t.log_start[partition] + len(log)
            log.append(Record(offset, key, value, headers, timestamp, transaction))
            return partition, offset

    def records(self, topic: str, committed_only: bool = True) -> list[Msg]:
        """Every readable record of the topic, partition by partition (what a read_committed reader gets)."""
        with self.lock:
            return [
                self._message(topic, p, r)
                for p, log in enumerate(self.topics[topic].partitions)
                for r in log
                if self._visible(r, committed_only)
            ]

    def recreate_topic(self, name: str) -> None:
        """The topic deleted and made again: empty, a new id, offsets from 0."""
        with self.lock:
            old = self.topics[name]
            self.create_topic(name, len(old.partitions), **old.config)

    def high_watermark(self, topic: str, partition: int) -> int:
        with self.lock:
            t = self.topics[topic]
            return t.log_start[partition] + len(t.partitions[partition])

    def end_offset(self, topic: str, partition: int, committed_only: bool) -> int:
        """The high watermark, or for a read_committed reader the last stable offset: the offset of the
        partition's first record of a transaction still open (the high watermark if there is none)."""
        with self.lock:
            if committed_only and self.open_transactions:
                for record in self.topics[topic].partitions[partition]:
                    if record.transaction is not None and record.transaction in self.open_transactions:
                        return record.offset
            return self.high_watermark(topic, partition)

    def _visible(self, record: Record, committed_only: bool) -> bool:
        if not committed_only:
            return True
        return not record.aborted and record.transaction not in self.open_transactions

    @staticmethod
    def _message(topic: str, partition: int, r: Record) -> Msg:
        return Msg(topic, r.value, r.key, partition, r.offset, r.headers, r.timestamp)

    # -- groups --------------------------------------------------------------------------------------

    def rebalance(self, group_id: str) -> None:
        """Spread the subscribed topics' partitions over the group's members (cooperatively: each keeps
        what it may keep); each member hears of its changes in its next consume()."""
        with self.lock:
            group = self.groups.setdefault(group_id, Group())
            group.generation = next(_GENERATIONS)
            members = [m for m in group.members if not m.closed]
            if not members:
                return
            wanted: dict[int, set[Partition]] = {id(m): set() for m in members}
            every = sorted({(t, p) for m in members for t in m.subscription for p in self._partitions_of(t)})
            for i, tp in enumerate(every):
                wanted[id(members[i % len(members)])].add(tp)
            for member in members:
                member.plan(wanted[id(member)])

    def expire(self, consumer: FakeConsumer) -> None:
        """The member's session ran out: in its next consume() its partitions are lost (on_lost), and it
        joins the group again (a rebalance gives it partitions anew)."""
        with self.lock:
            consumer.lose_all()
            consumer.subscription_pending = True

    def _partitions_of(self, topic: str) -> range:
        t = self.topics.get(topic)
        return range(len(t.partitions)) if t is not None else range(0)

    def clients(self) -> FakeClients:
        return FakeClients(self)


@dataclass
class FakeClients:
    """The client factory of the service (consumer/operations/clients.py's shape), on a FakeKafka."""

    kafka: FakeKafka
    made: list[Any] = field(default_factory=list)  # every client made, in order (tests look them up)

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        client = FakeConsumer(self.kafka, config)
        self.made.append(client)
        return client

    def producer(self, config: dict[str, Any]) -> FakeProducer:
        client = FakeProducer(self.kafka, config)
        self.made.append(client)
        return client

    def admin(self, config: dict[str, Any]) -> FakeAdmin:
        client = FakeAdmin(self.kafka, config)
        self.made.append(client)
        return client

    def of_kind(self, kind: type) -> list[Any]:
        return [c for c in self.made if isinstance(c, kind)]


# -- metadata answers ----------------------------------------------------------------------------------


@dataclass
class _TopicMetadata:
    partitions: dict[int, Any]
    error: KafkaError | None = None


@dataclass
class _ClusterMetadata:
    topics: dict[str, _TopicMetadata]


def _metadata(kafka: FakeKafka, topic: str | None) -> _ClusterMetadata:
    if kafka.down:
        raise kafka_error(KafkaError._TRANSPORT, "broker down")
    with kafka.lock:
        names = [topic] if topic is not None else list(kafka.topics)
        out = {}
        for name in names:
            t = kafka.topics.get(name)
            if t is None:
                out[name] = _TopicMetadata({}, KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
            else:
                out[name] = _TopicMetadata({p: object() for p in range(len(t.partitions))})
        return _ClusterMetadata(out)


def _done(value: Any = None, error: BaseException | None = None) -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
    return future


# -- the consumer --------------------------------------------------------------------------------------


class FakeConsumer:
    def __init__(self, kafka: FakeKafka, config: dict[str, Any]) -> None:
        self.kafka = kafka
        self.config = config
        self.group_id: str = config.get("group.id", "")
        self.read_committed = config.get("isolation.level", "read_committed") == "read_committed"
        self.eof = bool(config.get("enable.partition.eof", False))
        self.auto_commit = bool(config.get("enable.auto.commit", True))
        self.auto_store = bool(config.get("enable.auto.offset.store", True))
        self.reset = config.get("auto.offset.reset", "latest")
        self.positions: dict[Partition, int] = {}
        self.paused: set[Partition] = set()
        self.stored: dict[Partition, int] = {}
        self.subscription: list[str] = []
        self.callbacks: dict[str, Callable[..., None] | None] = {}
        self.closed = False
        self.subscription_pending = False
        self._planned: set[Partition] | None = None
        self._lost: list[TopicPartition] = []
        self._eof_sent: set[Partition] = set()
        self.seeks: list[tuple[str, int, int]] = []  # every seek(), as asked (tests look at rewinds)

    # -- the group -------------------------------------------------------------------------------------

    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[..., None] | None = None,
        on_revoke: Callable[..., None] | None = None,
        on_lost: Callable[..., None] | None = None,
    ) -> None:
        self.subscription = list(topics)
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        with self.kafka.lock:
            group = self.kafka.groups.setdefault(self.group_id, Group())
            if self not in group.members:
                group.members.append(self)
            self.kafka.rebalance(self.group_id)

    def plan(self, wanted: set[Partition]) -> None:
        self._planned = wanted

    def lose_all(self) -> None:
        self._lost = [TopicPartition(t, p) for t, p in sorted(self.positions)]

    def _serve_rebalance(self) -> None:
        """Rebalance callbacks run inside consume()/poll(), on the caller's thread, as librdkafka's do."""
        if self.subscription_pending:
            self.subscription_pending = False
            self.kafka.rebalance(self.group_id)
        # As confluent-kafka does: after a callback that did not (un)assign itself, the client does.
        if self._lost:
            lost, self._lost = self._lost, []
            self._call("lost", lost)
            self.incremental_unassign(lost)
        if self._planned is None:
            return
        wanted, self._planned = self._planned, None
        revoked = [TopicPartition(t, p) for t, p in sorted(set(self.positions) - wanted)]
        added = [TopicPartition(t, p) for t, p in sorted(wanted - set(self.positions))]
        if revoked:
            self._call("revoke", revoked)
            self.incremental_unassign(revoked)
        if added:
            self._call("assign", added)
            missing = [tp for tp in added if (tp.topic, tp.partition) not in self.positions]
            if missing:
                self.incremental_assign(missing)

    def _call(self, which: str, partitions: list[TopicPartition]) -> bool:
        callback = self.callbacks.get(which)
        if callback is None:
            return False
        callback(self, partitions)
        return True

    # -- assignment ------------------------------------------------------------------------------------

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {}
        self.incremental_assign(partitions)

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions[tp.topic, tp.partition] = self._start(tp)
            self._eof_sent.discard((tp.topic, tp.partition))

    def unassign(self) -> None:
        self.positions = {}
        self.paused = set()

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)
            self.paused.discard((tp.topic, tp.partition))

    def _start(self, tp: TopicPartition) -> int:
        key = (tp.topic, tp.partition)
        if tp.offset >= 0:
            return int(tp.offset)
        if tp.offset == OFFSET_BEGINNING:
            return self.kafka.topics[tp.topic].log_start[tp.partition]
        if tp.offset == OFFSET_END:
            return self.kafka.high_watermark(*key)
        committed = self.kafka.groups.get(self.group_id, Group()).committed.get(key)
        if committed is not None:
            return committed
        if self.reset == "earliest":
            return self.kafka.topics[tp.topic].log_start[tp.partition]
        return self.kafka.high_watermark(*key)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.positions)]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))
        self.positions[tp.topic, tp.partition] = self._start(tp)
        self._eof_sent.discard((tp.topic, tp.partition))

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), -1001))
            for tp in partitions
        ]

    # -- fetching --------------------------------------------------------------------------------------

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Msg]:
        if self.closed:
            raise RuntimeError("Consumer closed")
        self._serve_rebalance()
        self._auto_commit()
        out: list[Msg] = []
        if not self.kafka.down:
            with self.kafka.lock:
                for tp in sorted(self.positions):
                    if tp in self.paused:
                        continue
                    out += self._fetch(tp, num_messages - len(out))
                    if len(out) >= num_messages:
                        break
        if not out and timeout != 0:
            time.sleep(0.001)  # a moment, not the timeout: tests are bounded by what they feed, not a clock
        return out

    def _fetch(self, tp: Partition, room: int) -> list[Msg]:
        topic = self.kafka.topics.get(tp[0])
        if topic is None or room <= 0:
            return []
        start = topic.log_start[tp[1]]
        log = topic.partitions[tp[1]]
        out = []
        position = self.positions[tp]
        # A read_committed reader's end is the last stable offset (librdkafka's EOF is there too).
        end = self.kafka.end_offset(tp[0], tp[1], self.read_committed)
        while len(out) < room and position < end:
            record = log[position - start]
            position += 1
            if self.kafka._visible(record, self.read_committed):
                out.append(self.kafka._message(tp[0], tp[1], record))
        self.positions[tp] = position
        if self.auto_store and out:
            self.stored[tp] = position
        if not out and self.eof and tp not in self._eof_sent and position >= end:
            self._eof_sent.add(tp)
            return [Msg(tp[0], None, None, tp[1], position, error=KafkaError(KafkaError._PARTITION_EOF))]
        if out:
            self._eof_sent.discard(tp)
        return out

    def poll(self, timeout: float = -1) -> Msg | None:
        got = self.consume(1, timeout)
        return got[0] if got else None

    # -- offsets ---------------------------------------------------------------------------------------

    def store_offsets(self, offsets: list[TopicPartition] | None = None, message: Any = None) -> None:
        for tp in offsets or []:
            self.stored[tp.topic, tp.partition] = tp.offset

    def commit(self, message: Any = None, offsets: Any = None, asynchronous: bool = True) -> None:
        if not self.stored:
            raise kafka_error(KafkaError._NO_OFFSET, "no offset to commit")
        self._commit_stored()

    def _auto_commit(self) -> None:
        if self.auto_commit and self.stored and self.group_id:
            self._commit_stored()

    def _commit_stored(self) -> None:
        with self.kafka.lock:
            group = self.kafka.groups.setdefault(self.group_id, Group())
            group.committed.update(self.stored)
        self.stored = {}

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        committed = self.kafka.groups.get(self.group_id, Group()).committed
        return [
            TopicPartition(tp.topic, tp.partition, committed.get((tp.topic, tp.partition), OFFSET_INVALID))
            for tp in partitions
        ]

    def consumer_group_metadata(self) -> tuple[str, int]:
        return (self.group_id, self.kafka.groups.get(self.group_id, Group()).generation)

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = -1, cached: bool = False) -> tuple[int, int]:
        if self.kafka.down:
            raise kafka_error(KafkaError._TRANSPORT, "broker down")
        return self.kafka.topics[tp.topic].log_start[tp.partition], self.kafka.high_watermark(tp.topic, tp.partition)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> _ClusterMetadata:
        return _metadata(self.kafka, topic)

    def offsets_for_times(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        """The first offset whose timestamp is at or after each partition's offset field (a time), else -1."""
        out = []
        with self.kafka.lock:
            for tp in partitions:
                log = self.kafka.topics[tp.topic].partitions[tp.partition]
                found = next((r.offset for r in log if r.timestamp >= tp.offset), -1)
                out.append(TopicPartition(tp.topic, tp.partition, found))
        return out

    def close(self) -> None:
        if self.closed:
            return
        self._auto_commit()
        self.closed = True
        with self.kafka.lock:
            group = self.kafka.groups.get(self.group_id)
            if group is not None and self in group.members:
                group.members.remove(self)
                self.kafka.rebalance(self.group_id)


# -- the producer --------------------------------------------------------------------------------------


@dataclass
class _Pending:
    topic: str
    value: bytes | None
    key: bytes | None
    partition: int
    headers: list[tuple[str, bytes]] | None
    on_delivery: Callable[[Any, Any], None] | None
    transaction: int | None


class FakeProducer:
    def __init__(self, kafka: FakeKafka, config: dict[str, Any]) -> None:
        self.kafka = kafka
        self.config = config
        self.max_bytes = int(config.get("message.max.bytes", 1_000_000))
        self.max_queued = int(config.get("queue.buffering.max.messages", 100_000))
        self.queue: list[_Pending] = []
        self.transactional = "transactional.id" in config
        self.transaction: int | None = None
        self.offsets: list[tuple[str, list[TopicPartition]]] = []
        self.delivered = 0
        self.calls: list[str] = []  # the transaction calls, in order (init, begin, commit, abort)
        self.sent_offsets: list[list[tuple[str, int, int]]] = []  # each send_offsets_to_transaction, sorted
        self.fail_commit = False  # the next commits fail (retriable), as a broker timeout makes them

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: Callable[[Any, Any], None] | None = None,
        timestamp: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if self.transactional and self.transaction is None:
            raise kafka_error(KafkaError._STATE, "produce outside a transaction")
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers or [])
        if size > self.max_bytes:
            raise kafka_error(KafkaError.MSG_SIZE_TOO_LARGE, "larger than message.max.bytes")
        if len(self.queue) >= self.max_queued:
            raise BufferError("Local: Queue full")
        self.queue.append(_Pending(topic, value, key, partition, headers, on_delivery, self.transaction))

    def poll(self, timeout: float = 0) -> int:
        """Deliver what is queued (the broker acknowledges or refuses each) and run the reports."""
        if self.kafka.down:
            return 0
        pending, self.queue = self.queue, []
        for item in pending:
            self._deliver(item)
        return len(pending)

    def _deliver(self, item: _Pending) -> None:
        topic = self.kafka.topics.get(item.topic)
        limit = int(topic.config.get("max.message.bytes", 1_048_588)) if topic is not None else 0
        size = len(item.value or b"") + len(item.key or b"")
        code = self.kafka.produce_errors.get(item.topic)
        if topic is None:
            code = KafkaError.UNKNOWN_TOPIC_OR_PART
        elif code is None and size > limit:
            code = KafkaError.MSG_SIZE_TOO_LARGE
        if code is not None:
            msg = Msg(item.topic, item.value, item.key, max(item.partition, 0), -1, item.headers)
            if item.on_delivery is not None:
                item.on_delivery(KafkaError(code), msg)
            return
        partition, offset = self.kafka.append(
            item.topic, item.value, item.key, item.partition, item.headers, transaction=item.transaction
        )
        self.delivered += 1
        if item.on_delivery is not None:
            item.on_delivery(None, Msg(item.topic, item.value, item.key, partition, offset, item.headers))

    def flush(self, timeout: float = -1) -> int:
        self.poll(0)
        return len(self.queue)

    def __len__(self) -> int:
        return len(self.queue)

    # -- transactions ----------------------------------------------------------------------------------

    def init_transactions(self, timeout: float = -1) -> None:
        if self.kafka.down:
            raise kafka_error(KafkaError._TIMED_OUT, "init_transactions timed out")
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")
        self.transaction = next(self.kafka._transactions)
        self.kafka.open_transactions.add(self.transaction)
        self.offsets = []

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: tuple[str, int], timeout: float = -1
    ) -> None:
        self.offsets.append((metadata[0], list(offsets)))
        self.sent_offsets.append(sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))

    def commit_transaction(self, timeout: float = -1) -> None:
        if self.kafka.down or self.fail_commit:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True))
        self.calls.append("commit")
        self.poll(0)
        with self.kafka.lock:
            for group_id, offsets in self.offsets:
                group = self.kafka.groups.setdefault(group_id, Group())
                group.committed.update({(tp.topic, tp.partition): tp.offset for tp in offsets})
            self.kafka.open_transactions.discard(self.transaction)  # type: ignore[arg-type]
        self.transaction = None
        self.offsets = []

    def abort_transaction(self, timeout: float = -1) -> None:
        self.calls.append("abort")
        self.queue = [p for p in self.queue if p.transaction != self.transaction]
        with self.kafka.lock:
            for topic in self.kafka.topics.values():
                for log in topic.partitions:
                    for record in log:
                        if record.transaction == self.transaction:
                            record.aborted = True
            self.kafka.open_transactions.discard(self.transaction)  # type: ignore[arg-type]
        self.transaction = None
        self.offsets = []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> _ClusterMetadata:
        return _metadata(self.kafka, topic)


# -- the admin client ----------------------------------------------------------------------------------


@dataclass
class _Offset:
    offset: int


@dataclass
class _Description:
    topic_id: str


@dataclass
class _ConfigEntry:
    value: str | None


class FakeAdmin:
    def __init__(self, kafka: FakeKafka, config: dict[str, Any]) -> None:
        self.kafka = kafka
        self.config = config
        self.requests: list[str] = []  # the kinds of requests made, in order (tests count them)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> _ClusterMetadata:
        self.requests.append("metadata")
        return _metadata(self.kafka, topic)

    def describe_topics(self, topics: Any, **_: Any) -> dict[str, concurrent.futures.Future[Any]]:
        self.requests.append("describe_topics")
        names = list(getattr(topics, "topic_names", topics))
        with self.kafka.lock:
            return {
                name: _done(_Description(self.kafka.topics[name].id))
                if name in self.kafka.topics and not self.kafka.down
                else _done(error=kafka_error(KafkaError.UNKNOWN_TOPIC_OR_PART))
                for name in names
            }

    def list_offsets(
        self, requests: dict[TopicPartition, Any], isolation_level: Any = None, **_: Any
    ) -> dict[TopicPartition, concurrent.futures.Future[Any]]:
        """One ListOffsets request for all: the high watermark (READ_UNCOMMITTED, librdkafka's default),
        the last stable offset (READ_COMMITTED) or the log start."""
        committed = isolation_level == IsolationLevel.READ_COMMITTED
        self.requests.append("list_offsets")
        out = {}
        with self.kafka.lock:
            for tp, spec in requests.items():
                if self.kafka.down or tp.topic not in self.kafka.topics:
                    out[tp] = _done(
                        error=kafka_error(
                            KafkaError._TRANSPORT if self.kafka.down else KafkaError.UNKNOWN_TOPIC_OR_PART
                        )
                    )
                elif type(spec).__name__ == "EarliestSpec":
                    out[tp] = _done(_Offset(self.kafka.topics[tp.topic].log_start[tp.partition]))
                else:
                    out[tp] = _done(_Offset(self.kafka.end_offset(tp.topic, tp.partition, committed)))
        return out

    def describe_configs(self, resources: Iterable[Any], **_: Any) -> dict[Any, concurrent.futures.Future[Any]]:
        self.requests.append("describe_configs")
        out = {}
        for resource in resources:
            topic = self.kafka.topics.get(resource.name)
            if topic is None or self.kafka.down:
                out[resource] = _done(error=kafka_error(KafkaError.UNKNOWN_TOPIC_OR_PART))
            else:
                value = topic.config.get("max.message.bytes", "1048588")
                out[resource] = _done({"max.message.bytes": _ConfigEntry(value)})
        return out

    def list_consumer_groups(self, **_: Any) -> concurrent.futures.Future[Any]:
        """Every group that has members or committed offsets (ListGroups), as ListConsumerGroupsResult."""
        self.requests.append("list_groups")
        if self.kafka.down:
            return _done(error=kafka_error(KafkaError._TRANSPORT))
        with self.kafka.lock:
            listed = [
                ConsumerGroupListing(name, is_simple_consumer_group=not group.members)
                for name, group in self.kafka.groups.items()
                if name and (group.members or group.committed)
            ]
        return _done(ListConsumerGroupsResult(valid=listed, errors=[]))

    def list_consumer_group_offsets(
        self, requests: list[ConsumerGroupTopicPartitions], **_: Any
    ) -> dict[str, concurrent.futures.Future[Any]]:
        """A group's committed offsets (OffsetFetch); one group a request, as librdkafka allows."""
        self.requests.append("offset_fetch")
        (request,) = requests
        group_id = request.group_id
        with self.kafka.lock:
            group = self.kafka.groups.get(group_id)
            if self.kafka.down:
                return {group_id: _done(error=kafka_error(KafkaError._TRANSPORT))}
            if group is None:
                return {group_id: _done(error=kafka_error(KafkaError.GROUP_ID_NOT_FOUND))}
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(group.committed.items())]
        return {group_id: _done(ConsumerGroupTopicPartitions(group_id, offsets))}


# -- the simplest producer: what the batch processor's tests use ----------------------------------------


class RecordingProducer:
    """Acknowledges every record at once and keeps (topic, value, key, headers) in `sent`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, Any]] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: Any = None,
        headers: Any = None,
    ) -> None:
        self.sent.append((topic, value, key, headers))
        on_delivery(None, None)

    def poll(self, timeout: float = 0) -> int:
        return 0


# -- the batch processor on a recording producer ----------------------------------------------------------

DEFAULT_POLICY = load_policy()


def processor(
    codec: Codec | None = None, opted_out: Any = lambda _u: False
) -> tuple[BatchProcessor, RecordingProducer]:
    producer = RecordingProducer()
    proc = BatchProcessor(
        decider=Decider(DEFAULT_POLICY),
        codec=codec if codec is not None else Codec(),
        pseudonymiser=Pseudonymiser(b"h" * 32),
        opted_out=opted_out,
        producer=producer,
        training_topic="training",
        dlq_topic="dlq",
        posts_topic="posts",
        ai_interactions_topic="ai",
        on_backpressure=lambda: None,
    )
    return proc, producer


def run(proc: BatchProcessor, messages: list[Msg]) -> dict[tuple[Source, str], int]:
    tally: dict[tuple[Source, str], int] = {}
    proc.process(messages, PendingBatch(), tally)
    return tally
