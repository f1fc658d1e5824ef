"""A known clean topic for the recipes, written by the real service, and the truth it must come to.

What a reader of `training.eligible.v1` and `training.revocations.v1` meets, all of it on purpose:

1. **at-least-once output**: a first service instance (at-least-once, an opt-in policy) decides a
   generated stream of posts and AI interactions (eligible, private, minors, outside the region, unknown
   age, opted out, one user who never consented); a deletion of one record reached it before the record;
2. **the truth changes after emission** (tests/recipes/scenario.py): a deletion, a visibility change, an
   edit, an account deletion, an age correction, a consent withdrawn and granted again and two late
   opt-outs, each retracted with Revocation v2; a version 1 revocation from before v2 is on the topic too;
3. **records arriving after their retraction**: some of the retracted records are written to the clean
   topic again (what a re-delivery does);
4. **exactly-once output and repeats**: a second instance, in exactly-once mode and another consumer
   group, decides the whole input again under the changed truth, each record in a committed transaction;
5. **a policy change over history**: `training-filter backfill --policy NEW.toml --admit`, run as an
   operator runs it, under a policy without one region and with one more country: `policy/<record_id>`
   retractions of emitted records, and newly eligible records each after a `lifted` retraction;
6. **an aborted transaction** on the clean topic with records no reader may see (`aborted-*`).

A correct reader returns exactly the records eligible under the current truth, once each: the set
tests/recipes/oracle.py computes from the inputs, the changes, the consents and the policy, without
the service's code. The service is held to it too: each instance emits as many records as the oracle
finds eligible under the truth it saw, and the backfill retracts and admits what the oracle's truth
under the new policy says. In registry mode every value is framed with the id the registry
gives its subject and the service runs with TF_SCHEMA_REGISTRY_URL; without a registry, with
avro/catalog.json's ids.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from consumer.devtools.generator import StreamGenerator
from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.wire.codec import schema_dir
from rules.policy import default_policy_path
from tests.harness import HMAC_KEY, ServiceProcess, Topics, produce, pseudonym, read_all
from tests.recipes import oracle, scenario
from tests.recipes.scenario import CATALOG_IDS, Framer, Scenario

MIX = {"eligible": 0.55, "not_public": 0.15, "region": 0.08, "unknown_age": 0.07, "under_age": 0.08, "opted_out": 0.07}
RECORDS = 400
LATE_AUTHORS = 2
ABORTED = 3
TRAINING_V2 = "training_record.v2.avsc"


@dataclass
class CleanStream:
    """The topics, and what a correct reader must return from them."""

    topics: Topics
    registry_url: str | None
    expected_ids: set[str]  # eligible under the current truth (the oracle's)
    reasons: dict[str, str]  # every input record id -> the oracle's reason (to explain a mismatch)
    late_pseudonyms: set[str]
    retracted_ids: set[str]  # emitted, then retracted
    training_schema_id: int
    facts: dict[str, int] = field(default_factory=dict)  # what the raw topic holds (for the report)

    def env(self) -> dict[str, str]:
        env = {
            "TRAINING_TOPIC": self.topics.training,
            "REVOCATIONS_TOPIC": self.topics.revocations,
            "AVRO_DIR": str(schema_dir()),
        }
        if self.registry_url:
            env["SCHEMA_REGISTRY_URL"] = self.registry_url
        return env


def _register(url: str, topics: Topics, consent_topic: str) -> dict[int, int]:
    """Registers the schemas the stream writes (their .avsc text) under `<topic>-value`, the version 1
    revocation as a release before v2 did: catalog id -> registry id."""
    client = SchemaRegistryClient({"url": url})
    subjects = {
        "post.v1.avsc": topics.posts,
        "ai_interaction.v1.avsc": topics.ai,
        "optout.v1.avsc": topics.optouts,
        "revocation.v1.avsc": topics.revocations,
        "consent.v1.avsc": consent_topic,
        "content_change.v1.avsc": topics.content_changes,
        "account_change.v1.avsc": topics.account_changes,
    }
    return {
        CATALOG_IDS[file]: client.register_schema(f"{topic}-value", Schema((schema_dir() / file).read_text(), "AVRO"))
        for file, topic in subjects.items()
    }


def read_uncommitted(bootstrap: str, topic: str, timeout: float = 30.0) -> list[bytes]:
    """Every value of the topic, aborted transactions included (what read_committed must hide)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            "log_level": 3,
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        idle_since = time.monotonic()
        # Transaction markers take offsets but are never delivered: read until 2 s pass without a record.
        while ends and time.monotonic() - idle_since < 2.0 and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            idle_since = time.monotonic()
            if msg.value() is not None:
                out.append(msg.value())
        return out
    finally:
        consumer.close()


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.3)


def _aborted_transaction(bootstrap: str, topics: Topics, sample: bytes) -> int:
    """ABORTED training records written in a transaction that is aborted: no read_committed reader may
    see them. Returns the TrainingRecord's schema id (that of `sample`, an emitted record)."""
    training_schema_id = int.from_bytes(sample[1:5], "big")
    v2 = fastavro.parse_schema(json.loads((schema_dir() / "training_record.v2.avsc").read_text()))
    template = fastavro.schemaless_reader(io.BytesIO(sample[5:]), v2, None)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"aborter-{uuid.uuid4().hex[:8]}", "log_level": 3}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(ABORTED):
        body = io.BytesIO()
        fastavro.schemaless_writer(body, v2, {**template, "record_id": f"aborted-{i}", "author_pseudonym": "f" * 64})
        producer.produce(topics.training, b"\x00" + training_schema_id.to_bytes(4, "big") + body.getvalue(), b"f" * 64)
    producer.flush(30)
    producer.abort_transaction(30)
    return training_schema_id


@dataclass
class _Setup:
    bootstrap: str
    topics: Topics
    consent_topic: str
    framer: Framer
    policy_text: str
    env: dict[str, str]  # the service's, both instances


def _setup(bootstrap: str, registry_url: str | None, workdir: Path) -> _Setup:
    topics = Topics.unique(bootstrap)
    consent_topic = f"consents-{uuid.uuid4().hex[:10]}"
    ensure_topics(bootstrap, [TopicSpec(consent_topic, 2, {"cleanup.policy": "compact", "retention.ms": "-1"})])
    text = default_policy_path().read_text()
    text = text.replace('version = "', 'consent_model = "opt_in"\nversion = "opt-in-', 1)
    policy = workdir / "opt-in.toml"
    policy.write_text(text)
    env = {"TF_POLICY_FILE": str(policy), "TF_CONSENT_TOPIC": consent_topic, "TF_CONSENT_CAPACITY": "10000"}
    if registry_url:
        env["TF_SCHEMA_REGISTRY_URL"] = registry_url
    ids = _register(registry_url, topics, consent_topic) if registry_url else {i: i for i in CATALOG_IDS.values()}
    return _Setup(bootstrap, topics, consent_topic, Framer(ids), text, env)


def record_ids(messages: list[Any]) -> list[str]:
    """The record ids of TrainingRecord values (read with the local v2 schema, whatever id frames them)."""
    v2 = fastavro.parse_schema(json.loads((schema_dir() / TRAINING_V2).read_text()))
    return [fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), v2, None)["record_id"] for m in messages]


def _eligible(service: ServiceProcess) -> int:
    return sum(v for (_s, d), v in service.decisions().items() if d == "eligible")


def _first_run(setup: _Setup, first: ServiceProcess, records: list[Any], truth: oracle.Truth) -> list[Any]:
    """The first instance decides the stream: it emits exactly what the oracle finds eligible so far."""
    first.start().wait_ready(90)
    produce(setup.bootstrap, [(r.topic, r.key, setup.framer.reframe(r.value)) for r in records])
    first.wait_processed(len(records))
    first.wait_settled()
    assert first.metric_sum("training_filter_dlq_records_total") == 0
    clean = read_all(setup.bootstrap, setup.topics.training)
    expected = oracle.eligible(truth)
    assert _eligible(first) == len(expected), (first.decisions(), len(expected))
    assert sorted(record_ids(clean)) == sorted(expected), "the first instance emitted each eligible record once"
    return clean


def _late_changes(setup: _Setup, first: ServiceProcess, s: Scenario, retracted: int, decided: int) -> Any:
    """The truth changes after emission; the first instance retracts each change once."""
    events, messages = scenario.late_events(s, setup.framer, setup.topics, setup.consent_topic)
    produce(setup.bootstrap, messages)
    wanted = retracted + scenario.late_retractions(s)

    def retractions() -> float:
        return first.metric_sum("training_filter_revocations_total")

    _wait(lambda: retractions() >= wanted, 60, "the late retractions")
    first.wait_processed(decided + len(events.records))
    first.wait_settled()
    assert retractions() == wanted, first.metrics().get("training_filter_revocations_total")
    return events


def _redeliver(setup: _Setup, s: Scenario, clean: list[Any]) -> set[str]:
    """Records retracted by now written to the clean topic again, after their retractions."""
    ids = scenario.redelivered(s)
    by_id = dict(zip(record_ids(clean), clean, strict=True))
    produce(setup.bootstrap, [(setup.topics.training, by_id[i].key(), by_id[i].value()) for i in sorted(ids)])
    return ids


def _second_run(second: ServiceProcess, decided: int, truth: oracle.Truth) -> int:
    """Exactly-once, another group: everything again, under the changed truth."""
    second.start().wait_ready(90)
    second.wait_processed(decided)
    second.wait_settled()
    eligible = _eligible(second)
    assert eligible == len(oracle.eligible(truth)), (second.decisions(), len(oracle.eligible(truth)))
    assert second.stop() == 0
    return eligible


def _backfill(setup: _Setup, change: scenario.PolicyChange, workdir: Path, truth: oracle.Truth) -> dict[str, Any]:
    """`training-filter backfill --policy NEW.toml --admit`, run once as an operator runs it, with the
    service's settings: it retracts exactly the records the new policy newly refuses and emits the ones
    it newly admits (the oracle's, under the same truth). From then on the truth is decided under the
    new policy. Returns the command's summary."""
    decided = oracle.decide(truth)
    truth.policy = oracle.Policy.parse(change.text)
    now = oracle.decide(truth)
    refused = sum(decided[i] == oracle.ELIGIBLE != now[i] for i in now)
    admitted = sum(decided[i] != oracle.ELIGIBLE == now[i] for i in now)
    assert refused and admitted, f"the new policy changes nothing the recipes would see: {change}"
    policy = workdir / "backfill.toml"
    policy.write_text(change.text)
    env = {
        **os.environ,
        **setup.topics.env(),
        "TF_BOOTSTRAP_SERVERS": setup.bootstrap,
        "TF_GROUP_ID": f"tf-backfill-{uuid.uuid4().hex[:8]}",
        "TF_HMAC_KEY": HMAC_KEY.decode(),
        "TF_OPTOUT_CAPACITY": "200000",
        **setup.env,
    }
    command = [sys.executable, "-m", "consumer.cli", "backfill", "--policy", str(policy), "--admit", "--json"]
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    summary: dict[str, Any] = json.loads(result.stdout)
    summary["seconds"] = round(time.monotonic() - started, 1)
    got = (summary["finished"], summary["records"], summary["retracted"], summary["admitted"], summary["undecodable"])
    assert got == (True, len(now), refused, admitted, {}), summary
    v2 = fastavro.parse_schema(json.loads((schema_dir() / "revocation.v2.avsc").read_text()))
    written: list[Any] = [
        fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), v2, None)
        for m in read_all(setup.bootstrap, setup.topics.revocations)
        if m.key().startswith(b"policy/")
    ]
    lifted = sum(r["lifted"] for r in written)
    assert (len(written) - lifted, lifted) == (refused, admitted), "a policy/ retraction per record, lifted if admitted"
    return summary


def build(bootstrap: str, registry_url: str | None, workdir: Path, seed: int = 11) -> CleanStream:
    setup = _setup(bootstrap, registry_url, workdir)
    topics, framer = setup.topics, setup.framer
    generator = StreamGenerator(
        seed=seed, users_per_pool=25, posts_topic=topics.posts, ai_topic=topics.ai, mix=MIX, text_bytes=(40, 200)
    )
    records = list(generator.stream(RECORDS))
    values = scenario.decode_inputs(framer, records)
    s = scenario.pick(records, values, LATE_AUTHORS)
    optouts = generator.optouts()
    opted = {framer.decode(v, "optout.v1.avsc")["user_id"] for _, v in optouts}
    users = {g.user_id for g in records if g.user_id}
    early, messages = scenario.early_events(s, framer, topics, setup.consent_topic, users)
    # Before the service starts: its start-up reads them before any input.
    produce(bootstrap, [(topics.optouts, k, framer.reframe(v)) for k, v in optouts] + messages)
    before = scenario.truth(setup.policy_text, values.values(), opted, early)

    first = ServiceProcess(bootstrap, topics, workdir, env_overrides=setup.env)
    second = ServiceProcess(
        bootstrap, topics, workdir, env_overrides={**setup.env, "TF_PROCESSING_GUARANTEE": "exactly-once"}
    )
    try:
        clean = _first_run(setup, first, records, before)
        late = _late_changes(setup, first, s, len(optouts) + len(early.content), len(records))
        redelivered = _redeliver(setup, s, clean)
        assert first.stop() == 0
        now = scenario.truth(setup.policy_text, values.values(), opted, early, late)
        again = _second_run(second, len(records) + len(late.records), now)
    finally:
        first.kill()
        second.kill()
    change = scenario.policy_change(s, setup.policy_text, oracle.decide(now))
    backfilled = _backfill(setup, change, workdir, now)
    training_schema_id = _aborted_transaction(bootstrap, topics, clean[0].value())
    emitted = len(clean) + len(late.records) + len(redelivered) + again + backfilled["admitted"]
    return _described(setup, s, before, now, emitted, training_schema_id, backfilled)


def _described(
    setup: _Setup,
    s: Scenario,
    before: oracle.Truth,
    now: oracle.Truth,
    committed_count: int,
    training_schema_id: int,
    backfilled: dict[str, Any],
) -> CleanStream:
    """The stream is what the module docstring says, or the recipes prove nothing."""
    reasons_before, reasons = oracle.decide(before), oracle.decide(now)
    scenario.check(s, reasons_before, reasons)
    committed = read_all(setup.bootstrap, setup.topics.training)
    raw = read_uncommitted(setup.bootstrap, setup.topics.training)
    late_pseudonyms = {pseudonym(u) for u in s.late}
    facts = {
        "input records": len(reasons),
        "eligible now": sum(r == oracle.ELIGIBLE for r in reasons.values()),
        "clean topic, committed": len(committed),
        "clean topic, with the aborted transaction": len(raw),
        "retractions": len(read_all(setup.bootstrap, setup.topics.revocations)),
        "records of late authors on the clean topic": sum(m.key().decode() in late_pseudonyms for m in committed),
        "backfill: retracted": backfilled["retracted"],
        "backfill: admitted": backfilled["admitted"],
        "backfill: seconds": round(backfilled["seconds"]),
    }
    assert len(committed) == committed_count, facts
    assert len(raw) >= len(committed) + ABORTED, facts
    eligible_before = {i for i, r in reasons_before.items() if r == oracle.ELIGIBLE}
    expected = {i for i, r in reasons.items() if r == oracle.ELIGIBLE}
    return CleanStream(
        topics=setup.topics,
        registry_url=setup.env.get("TF_SCHEMA_REGISTRY_URL"),
        expected_ids=expected,
        reasons=reasons,
        late_pseudonyms=late_pseudonyms,
        retracted_ids=eligible_before - expected,
        training_schema_id=training_schema_id,
        facts=facts,
    )
