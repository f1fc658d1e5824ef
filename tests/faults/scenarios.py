"""Fault-injection scenarios against a real local broker: each builds a known stream, breaks
something while the service processes it, lets it recover, and checks the training topic.

A scenario returns a `Row`: records in, eligible expected, eligible emitted, ineligible emitted,
missing, duplicates. It passes when nothing is missing and nothing ineligible was emitted (and, where
the guarantee promises it, nothing is duplicated). Every scenario is bounded in time.
"""

from __future__ import annotations

import datetime as dt
import random
import signal
import threading
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from consumer.devtools.generator import Generated, StreamGenerator
from consumer.devtools.local_kafka import LocalKafka
from consumer.operations.acls import Acl, required_acls
from consumer.wire.codec import TRAINING_RECORD, Codec
from tests.harness import ServiceProcess, Topics, produce, read_all

CODEC = Codec()
# A killed instance's partitions move after its session expires: 6 s (the broker's minimum) instead of
# the 45 s default keeps each scenario short. Production keeps the default (or uses static membership).
FAST_FAILOVER = {"TF_CONSUMER_KAFKA_SESSION_TIMEOUT_MS": "6000", "TF_CONSUMER_KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}
SERVICE_USER = "tf-service"
SERVICE_PASSWORD = "tf-service-test-password"
SECOND_USER = "tf-service-b"  # a second credential, so that one replica can lose a permission alone
SECOND_PASSWORD = "tf-service-b-test-password"


@dataclass
class Row:
    scenario: str
    records_in: int
    eligible_expected: int
    eligible_emitted: int
    ineligible_emitted: int
    missing: int
    duplicates: int
    duplicates_allowed: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.missing == 0
            and self.ineligible_emitted == 0
            and (self.duplicates_allowed or self.duplicates == 0)
            and not self.failures
        )

    failures: list[str] = field(default_factory=list)


def check_output(name: str, bootstrap: str, topic: str, stream: list[Generated], duplicates_allowed: bool) -> Row:
    eligible = {g.record_id for g in stream if g.expected == "eligible"}
    # decode_own: in registry mode the outputs carry the registry's ids, which mean nothing to the catalog.
    emitted = [CODEC.decode_own(m.value(), TRAINING_RECORD)["record_id"] for m in read_all(bootstrap, topic)]
    unique = set(emitted)
    return Row(
        name,
        len(stream),
        len(eligible),
        len(unique & eligible),
        len(unique - eligible),
        len(eligible - unique),
        len(emitted) - len(unique),
        duplicates_allowed,
    )


def wait_for_output(bootstrap: str, topic: str, stream: list[Generated], timeout: float) -> None:
    """Until every eligible record is in the training topic (or the time is up: the row shows it)."""
    eligible = {g.record_id for g in stream if g.expected == "eligible"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        emitted = {CODEC.decode_own(m.value(), TRAINING_RECORD)["record_id"] for m in read_all(bootstrap, topic)}
        if eligible <= emitted:
            return
        time.sleep(1)


def _stream(topics: Topics, records: int, seed: int) -> tuple[StreamGenerator, list[Generated]]:
    generator = StreamGenerator(seed=seed, users_per_pool=400, posts_topic=topics.posts, ai_topic=topics.ai)
    return generator, list(generator.stream(records))


class Feeder(threading.Thread):
    """Produces the stream at a steady rate in the background, so faults land mid-stream."""

    def __init__(self, bootstrap: str, stream: list[Generated], seconds: float, config: dict[str, Any] | None = None):
        super().__init__(daemon=True)
        self.bootstrap, self.stream, self.seconds, self.config = bootstrap, stream, seconds, config or {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            chunks = 20
            size = max(1, len(self.stream) // chunks)
            for i in range(0, len(self.stream), size):
                produce(self.bootstrap, ((g.topic, g.key, g.value) for g in self.stream[i : i + size]), **self.config)
                time.sleep(self.seconds / chunks)
        except BaseException as exc:  # reported by the scenario
            self.error = exc


# -- scenarios ----------------------------------------------------------------------------------------


def kill_nine(broker: LocalKafka, workdir: Path, records: int, kills: int, guarantee: str, seed: int = 5) -> Row:
    """kill -9 the service at random moments while it works, restarting it each time."""
    rng = random.Random(seed)
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    service = ServiceProcess(
        broker.bootstrap,
        topics,
        workdir,
        env_overrides={
            **FAST_FAILOVER,
            "TF_PROCESSING_GUARANTEE": guarantee,
            "TF_BATCH_SIZE": "300",
            "TF_LOG_LEVEL": "info",
            "TF_OPTOUT_SNAPSHOT_PATH": str(workdir / f"snapshot-{topics.posts}"),
            "TF_OPTOUT_SNAPSHOT_INTERVAL_SECONDS": "1",
        },
    )
    feeder = Feeder(broker.bootstrap, stream, seconds=kills * 1.5)
    service.start().wait_ready()
    feeder.start()
    killed = 0
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 2.0))
        service.stop(signal.SIGKILL)
        killed += 1
        service.start().wait_ready(90)
    feeder.join(120)
    wait_for_output(broker.bootstrap, topics.training, stream, timeout=90)
    service.wait_settled(60)
    service.stop()
    row = check_output(
        f"kill -9 x{killed} ({guarantee})",
        broker.bootstrap,
        topics.training,
        stream,
        duplicates_allowed=guarantee == "at-least-once",
    )
    if feeder.error:
        row.failures.append(f"feeder: {feeder.error}")
    return row


def broker_restart(
    broker: LocalKafka,
    workdir: Path,
    records: int,
    guarantee: str = "at-least-once",
    down_seconds: float = 5.0,
    seed: int = 6,
) -> Row:
    """Stop the broker (controlled shutdown) mid-stream and start it again on the same data."""
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    half = len(stream) // 2
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[:half]))
    service = ServiceProcess(
        broker.bootstrap,
        topics,
        workdir,
        env_overrides={
            **FAST_FAILOVER,
            "TF_PROCESSING_GUARANTEE": guarantee,
            "TF_BATCH_SIZE": "200",
            "TF_LOG_LEVEL": "info",
        },
    )
    service.start().wait_ready()
    deadline = time.monotonic() + 60
    while service.metric_sum("training_filter_records_total") < half // 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    broker.stop()
    time.sleep(down_seconds)
    ready_while_down = _probe(service, "/readyz")
    broker.start()
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[half:]))
    wait_for_output(broker.bootstrap, topics.training, stream, timeout=120)
    service.wait_settled(60)
    alive = service.process is not None and service.process.poll() is None
    service.stop()
    row = check_output(
        f"broker restart, {down_seconds:.0f} s down ({guarantee})",
        broker.bootstrap,
        topics.training,
        stream,
        duplicates_allowed=guarantee == "at-least-once",
    )
    if not alive:
        row.failures.append("the service did not ride out the restart")
    if ready_while_down == 200:
        row.failures.append("/readyz was 200 while the broker was down")
    row.notes.append(f"/readyz while down: {ready_while_down}")
    return row


def _probe(service: ServiceProcess, path: str) -> int:
    try:
        return service.get(path)[0]
    except (OSError, urllib.error.URLError):
        return 0


def grant(
    admin: AdminClient, topics: Topics, group: str, user: str = SERVICE_USER, acls: list[Acl] | None = None
) -> list[AclBinding]:
    """`acls` (by default the service's, `required_acls`) granted to `user` on the broker."""
    bindings = []
    for acl in required_acls(group, topics) if acls is None else acls:
        kind = "BROKER" if acl.resource_type == "CLUSTER" else acl.resource_type  # confluent-kafka's name for it
        bindings.append(
            AclBinding(
                ResourceType[kind],
                acl.name,
                ResourcePatternType[acl.pattern],
                f"User:{user}",
                "*",
                AclOperation[acl.operation],
                AclPermissionType.ALLOW,
            )
        )
    for future in admin.create_acls(bindings).values():
        future.result(30)
    return bindings


def secure_env(broker: LocalKafka, user: str = SERVICE_USER, password: str = SERVICE_PASSWORD) -> dict[str, str]:
    """The documented settings, and only those, for SASL/SCRAM over TLS."""
    return {
        "TF_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TF_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "TF_KAFKA_SASL_USERNAME": user,
        "TF_KAFKA_SASL_PASSWORD": password,
        "TF_KAFKA_SSL_CA_LOCATION": str(broker.ca_path),
    }


def optout_feed_outage(
    broker: LocalKafka, workdir: Path, records: int, outage_seconds: float = 6.0, seed: int = 7
) -> Row:
    """Take the opt-out topic away from the service (its READ permission revoked) mid-stream.

    Input must pause within the lag bound, /readyz must fail, nothing may be emitted while the feed
    is out, and an opt-out published during the outage must be enforced on every record of that
    user produced after it, once the feed is back.
    """
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    group = f"tf-{topics.posts}"
    grant(admin, topics, group)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    bound = 2.0
    service = ServiceProcess(
        broker.secure_bootstrap,
        topics,
        workdir,
        group=group,
        env_overrides={**secure_env(broker), "TF_OPTOUT_MAX_LAG_SECONDS": str(bound), "TF_LOG_LEVEL": "info"},
    )
    service.start().wait_ready(90)
    half = len(stream) // 2
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[:half]))
    wait_for_output(broker.bootstrap, topics.training, stream[:half], timeout=60)

    # A user who is eligible so far, and who objects during the outage.
    victim = next(g for g in stream[:half] if g.expected == "eligible")
    revoke_optout_reads(admin, topics)
    outage_started = time.monotonic()
    produce(broker.bootstrap, [(topics.optouts, victim.key, _optout_value(victim.user_id))])
    after = [generator.record("eligible", "post") for _ in range(1)]
    victim_records = _records_of(generator, victim, topics, 50)
    produce(broker.bootstrap, [(g.topic, g.key, g.value) for g in victim_records + after])
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in stream[half:]))
    # Everything of the victim's produced from now on must be dropped, whatever it was built as.
    stream = stream[:half] + [_opted_out(g) if g.user_id == victim.user_id else g for g in stream[half:]]
    after = [_opted_out(g) if g.user_id == victim.user_id else g for g in after]

    paused_at, ready_failed_at = _watch_outage(service, outage_started, outage_seconds)
    emitted_during = len(read_all(broker.bootstrap, topics.training))
    time.sleep(1.0)
    emitted_later_in_outage = len(read_all(broker.bootstrap, topics.training))
    grant(admin, topics, group)
    full = stream + after
    wait_for_output(broker.bootstrap, topics.training, full, timeout=90)
    service.wait_settled(60)
    service.stop()

    row = check_output(
        f"opt-out feed unreadable for {outage_seconds:.0f} s",
        broker.bootstrap,
        topics.training,
        full + victim_records,
        duplicates_allowed=True,
    )
    row.records_in = len(full) + len(victim_records)
    if paused_at is None or paused_at > bound + 2:
        row.failures.append(f"input did not pause within the {bound} s bound (paused at {paused_at})")
    if ready_failed_at is None:
        row.failures.append("/readyz stayed 200 during the outage")
    if emitted_later_in_outage != emitted_during:
        row.failures.append("records were emitted while the feed was out")
    row.notes.append(
        f"paused after {paused_at:.1f} s, /readyz 503 after {ready_failed_at:.1f} s"
        if paused_at is not None and ready_failed_at is not None
        else "no pause seen"
    )
    return row


def revoke_optout_reads(admin: AdminClient, topics: Topics) -> None:
    """The service's READ (and every other) permission on the opt-out topic taken away."""
    revoke_topic(admin, topics.optouts)


def revoke_topic(admin: AdminClient, topic: str) -> None:
    """The service's every permission on `topic` taken away."""
    revoke = AclBindingFilter(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        f"User:{SERVICE_USER}",
        "*",
        AclOperation.ANY,
        AclPermissionType.ALLOW,
    )
    for future in admin.delete_acls([revoke]).values():
        future.result(30)


def _watch_outage(service: ServiceProcess, started: float, seconds: float) -> tuple[float | None, float | None]:
    """When, after `started`, input paused and /readyz failed (None: not within `seconds`)."""
    paused_at = ready_failed_at = None
    while time.monotonic() - started < seconds:
        if paused_at is None and service.metric_sum("training_filter_input_paused") == 1:
            paused_at = time.monotonic() - started
        if ready_failed_at is None and _probe(service, "/readyz") == 503:
            ready_failed_at = time.monotonic() - started
        time.sleep(0.1)
    return paused_at, ready_failed_at


def _optout_value(user_id: str | None) -> bytes:
    from consumer.wire.codec import OPTOUT

    return CODEC.encode(OPTOUT, {"user_id": user_id, "opted_out_at": int(time.time() * 1000), "source": "test"})


def _records_of(generator: StreamGenerator, user: Generated, topics: Topics, count: int) -> list[Generated]:
    """Eligible-looking posts of `user` (who has opted out by the time they are produced)."""
    out = []
    for _ in range(count):
        g = generator.record("eligible", "post")
        value = CODEC.decode(g.value, "platform.content.v1.Post")[1]
        value["author_id"] = user.user_id
        value["author_birth_date"] = (value["author_birth_date"] - dt.date(1970, 1, 1)).days
        value["created_at"] = int(value["created_at"].timestamp() * 1000)
        out.append(
            Generated(
                topics.posts,
                user.key,
                CODEC.encode("platform.content.v1.Post", value),
                g.record_id,
                user.user_id,
                "opted_out",
                "post",
            )
        )
    return out


def _opted_out(g: Generated) -> Generated:
    return Generated(
        g.topic,
        g.key,
        g.value,
        g.record_id,
        g.user_id,
        "opted_out" if g.expected == "eligible" else g.expected,
        g.source,
    )


def rebalance(broker: LocalKafka, workdir: Path, records: int, guarantee: str = "at-least-once", seed: int = 8) -> Row:
    """A second instance joins mid-stream and leaves again (SIGTERM); cooperative rebalances both ways."""
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    group = f"tf-{topics.posts}"
    common = {**FAST_FAILOVER, "TF_PROCESSING_GUARANTEE": guarantee, "TF_BATCH_SIZE": "200", "TF_LOG_LEVEL": "info"}
    first = ServiceProcess(
        broker.bootstrap, topics, workdir, group=group, env_overrides={**common, "TF_TRANSACTIONAL_ID": f"{group}-a"}
    )
    second = ServiceProcess(
        broker.bootstrap, topics, workdir, group=group, env_overrides={**common, "TF_TRANSACTIONAL_ID": f"{group}-b"}
    )
    first.start().wait_ready()
    feeder = Feeder(broker.bootstrap, stream, seconds=8)
    feeder.start()
    time.sleep(2)
    second.start().wait_ready()
    time.sleep(3)
    shared = second.metric_sum("training_filter_records_total")
    assert second.stop() == 0
    feeder.join(120)
    wait_for_output(broker.bootstrap, topics.training, stream, timeout=90)
    first.wait_settled(60)
    rebalances = first.metric_sum("training_filter_rebalances_total", kind="revoke")
    first.stop()
    row = check_output(
        f"rebalance: instance joins and leaves ({guarantee})",
        broker.bootstrap,
        topics.training,
        stream,
        duplicates_allowed=False,
    )
    if not shared:
        row.failures.append("the second instance processed nothing: no rebalance was exercised")
    if not rebalances:
        row.failures.append("the first instance never gave partitions up")
    row.notes.append(f"second instance processed {int(shared)} records; first revoked {int(rebalances)} times")
    return row


def table(rows: list[Row]) -> str:
    head = (
        f"{'scenario':<44}{'records in':>11}{'eligible':>10}{'emitted':>9}{'ineligible':>11}{'missing':>9}"
        f"{'duplicates':>11}  result"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.scenario:<44}{r.records_in:>11}{r.eligible_expected:>10}{r.eligible_emitted:>9}"
            f"{r.ineligible_emitted:>11}{r.missing:>9}{r.duplicates:>11}  {'ok' if r.ok else 'FAILED'}"
        )
        for note in r.notes + r.failures:
            lines.append(f"    {note}")
    return "\n".join(lines)
