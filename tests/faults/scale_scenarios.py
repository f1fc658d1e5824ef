"""Fault scenarios of scale: an opt-out topic of many partitions behind a slow link.

The opt-out feed's sync once asked the end offset of each partition on its own, one blocking round
trip after another: with 300 partitions and 25 ms of latency each way a sync took 17 s, its budget
is 1 s, so no sync ever completed and input never flowed (not even at start-up: the service never
became ready). The scenario has a broker of its own whose extra listener is advertised at the port
of a `LatencyProxy`: the service bootstraps there, so every one of its connections is delayed, while
the test produces and reads on the broker's own listener at full speed.

It checks the stream arrives complete (opted-out users' records dropped, among them posts produced
right after a fresh opt-out was acknowledged) and, with a feed of the test's own through the same
proxy, how long a sync takes and how many ListOffsets requests it sends.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from consumer.datapath.pseudonym import Pseudonymiser
from consumer.devtools.generator import Generated
from consumer.devtools.local_kafka import LocalKafka, free_port
from consumer.devtools.topics import ensure_topics, service_topics
from consumer.feeds.mirror import TopicMirror
from consumer.operations.clients import KafkaClients
from consumer.operations.metrics import Metrics
from consumer.optouts.applier import optout_mirror
from consumer.optouts.filter import OptOutFilter
from consumer.wire.codec import Codec
from tests.faults.latency_proxy import LIST_OFFSETS, LatencyProxy
from tests.faults.optout_scenarios import _optout_value
from tests.faults.scenarios import Row, _opted_out, _records_of, _stream, check_output, wait_for_output
from tests.harness import HMAC_KEY, ServiceProcess, Topics, produce

PROXIED = "PROXIED"


def proxied_broker() -> LocalKafka:
    """A light broker (plaintext only) with a listener advertised at a port a proxy will take."""
    return LocalKafka(heap="384m", listeners={PROXIED: "PLAINTEXT"}, advertised_ports={PROXIED: free_port()})


def _topics(bootstrap: str, optout_partitions: int) -> Topics:
    tag = uuid.uuid4().hex[:10]
    names = ("posts", "ai", "optouts", "training", "revocations", "dlq", "content-changes", "account-changes")
    topics = Topics(*(f"{name}-{tag}" for name in names))
    specs = [
        dataclasses.replace(s, partitions=optout_partitions) if s.name == topics.optouts else s
        for s in service_topics(topics)
    ]
    ensure_topics(bootstrap, specs)
    _wait_for_leaders(bootstrap, topics.optouts, optout_partitions)
    return topics


def _wait_for_leaders(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = admin.list_topics(topic, timeout=10).topics[topic]
        if len(info.partitions) == partitions and all(p.leader >= 0 for p in info.partitions.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"{topic} has no leader for all {partitions} partitions after {timeout} s")


class _Quiet:
    """A structlog-shaped logger that keeps what the feed said (event names only)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.events.append(event)


@dataclasses.dataclass
class Measured:
    sync_seconds: list[float]  # of the syncs that completed
    failed: int  # syncs that did not complete within their 1 s budget
    list_offsets_per_sync: float
    snapshot_start_seconds: float  # a second feed started from the first one's offsets


def _feed(broker: LocalKafka, topics: Topics) -> TopicMirror[Any]:
    return optout_mirror(
        KafkaClients(),
        {"bootstrap.servers": broker.listener_bootstrap(PROXIED), "group.id": "measure", "log_level": 3},
        topics.optouts,
        topics.revocations,
        OptOutFilter(10_000, 0.001),
        Codec(),
        Pseudonymiser(HMAC_KEY),
        Metrics(),
        _Quiet(),
    )


def measure_syncs(broker: LocalKafka, topics: Topics, proxy: LatencyProxy, syncs: int = 5) -> Measured:
    """A feed of the test's own, through the proxy, caught up (bounded), then `syncs` syncs with the
    service's budget (1 s), each after one more opt-out (produced on the broker's own listener); then
    a start from its offsets, as from a snapshot (every partition's offset checked against its end)."""
    feed = _feed(broker, topics)
    try:
        feed.start(None)
        deadline = time.monotonic() + 15
        while not feed.sync(1.0, everything=True) and time.monotonic() < deadline:
            pass
        took: list[float] = []
        requests = proxy.count(LIST_OFFSETS)
        for i in range(syncs):
            produce(broker.bootstrap, [(topics.optouts, b"m%d" % i, _optout_value(f"measure-{i}"))])
            started = time.monotonic()
            if feed.sync(1.0):
                took.append(time.monotonic() - started)
        per_sync = (proxy.count(LIST_OFFSETS) - requests) / syncs
        resumed = _feed(broker, topics)
        try:
            started = time.monotonic()
            resumed.start(dict(feed.positions), dict(feed.topic_ids))
            snapshot_start = time.monotonic() - started
        finally:
            resumed.close()
        return Measured(took, syncs - len(took), per_sync, snapshot_start)
    finally:
        feed.close()


def many_partitions_behind_latency(
    workdir: Path, records: int, partitions: int = 300, delay: float = 0.025, seed: int = 21
) -> Row:
    """300 opt-out partitions, 25 ms each way between the service and the broker: input must flow."""
    broker = proxied_broker().start()
    try:
        return _run(broker, workdir, records, partitions, delay, seed)
    finally:
        broker.cleanup()


def _run(broker: LocalKafka, workdir: Path, records: int, partitions: int, delay: float, seed: int) -> Row:
    topics = _topics(broker.bootstrap, partitions)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    name = f"{partitions} opt-out partitions, {delay * 1000:.0f} ms each way"
    with LatencyProxy(broker.advertised_ports[PROXIED], broker.listener_ports[PROXIED], delay) as proxy:
        service = ServiceProcess(
            broker.listener_bootstrap(PROXIED), topics, workdir, env_overrides={"TF_LOG_LEVEL": "info"}
        )
        row = _service_run(name, broker, topics, generator, stream, service)
        if proxy.connections == 0:
            row.failures.append("no connection went through the proxy: the scenario did not slow anything")
        measured = measure_syncs(broker, topics, proxy)
    took = measured.sync_seconds
    median = f"{statistics.median(took):.2f} s" if took else "-"
    row.notes.append(
        f"a sync after one opt-out (1 s budget): median {median}, {measured.failed} of 5 failed; "
        f"ListOffsets requests per sync: {measured.list_offsets_per_sync:g}"
    )
    row.notes.append(f"a start from a snapshot's offsets: {measured.snapshot_start_seconds:.1f} s")
    if measured.failed:
        row.failures.append(f"{measured.failed} syncs of the test's own feed did not complete within 1 s")
    if measured.snapshot_start_seconds > 5:
        row.failures.append("a start from a snapshot took more than 5 s")
    return row


def _service_run(
    name: str, broker: LocalKafka, topics: Topics, generator: Any, stream: list[Generated], service: ServiceProcess
) -> Row:
    service.start()
    started = time.monotonic()
    try:
        service.wait_ready(45)
    except AssertionError:
        service.stop()
        row = check_output(name, broker.bootstrap, topics.training, stream, duplicates_allowed=True)
        row.failures.append("the service was not ready within 45 s: its opt-out syncs do not complete")
        row.notes.append(_caught_up(service))
        return row
    ready_after = time.monotonic() - started
    full = _stream_with_fresh_optouts(broker, topics, generator, stream)
    wait_for_output(broker.bootstrap, topics.training, full, timeout=60)
    service.wait_settled(60)
    alive = service.process is not None and service.process.poll() is None
    code = service.stop()
    row = check_output(name, broker.bootstrap, topics.training, full, duplicates_allowed=True)
    if not alive or code != 0:
        row.failures.append(f"the service did not keep running (exit status {code})")
    row.notes.append(f"ready after {ready_after:.1f} s; {_caught_up(service)}")
    return row


def _stream_with_fresh_optouts(
    broker: LocalKafka, topics: Topics, generator: Any, stream: list[Generated]
) -> list[Generated]:
    """Half the stream, decided; then opt-outs of users not yet opted out, each followed by posts of
    theirs (which must all be dropped); then the rest of the stream."""
    half = len(stream) // 2
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[:half]))
    # Decided before the opt-outs below: a record of a user processed after their opt-out is dropped,
    # whenever it was produced.
    wait_for_output(broker.bootstrap, topics.training, stream[:half], timeout=60)
    victims = [g for g in stream[half:] if g.expected == "eligible"][:5]
    victim_ids = {v.user_id for v in victims}
    victim_posts: list[Generated] = []
    for victim in victims:
        produce(broker.bootstrap, [(topics.optouts, victim.key, _optout_value(victim.user_id))])
        posts = _records_of(generator, victim, topics, 10)
        produce(broker.bootstrap, [(g.topic, g.key, g.value) for g in posts])
        victim_posts += posts
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[half:]))
    rest = [_opted_out(g) if g.user_id in victim_ids else g for g in stream[half:]]
    return stream[:half] + rest + victim_posts


def _caught_up(service: ServiceProcess) -> str:
    for line in service.log_lines():
        if line.get("event") == "optout_feed_caught_up":
            return f"start-up catch-up {line.get('seconds')} s over {line.get('partitions')} partitions"
    return "the start-up catch-up never completed"
