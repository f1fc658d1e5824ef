"""Fault scenarios of registry mode: what a registry can hold or answer must never stop the service,
stall it, or lose a record. Against the real broker, the real schema registry (Apicurio) and a proxy in
front of it (tests/registry_proxy.py) that refuses or hides single ids.

- writer schemas with a `uuid` logical type on strings (the service used to exit 1 on the first one);
- a nameless writer schema (a primitive) among ordinary records (KeyError, exit 1);
- the registry refusing one id with 403 (input paused for good, every id included);
- an id the registry does not have yet, registered later (its records were dead letters until a restart).

Each publishes a normal generated stream framed with registry ids, mixes in the scenario's records and
checks: 0 missing, 0 ineligible, the odd records in the dead-letter topic with their cause, the service
still running and never paused.
"""

from __future__ import annotations

import copy
import io
import json
import time
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from consumer.devtools.generator import Generated
from consumer.devtools.local_kafka import LocalKafka
from consumer.wire.codec import AI_INTERACTION, POST, schema_dir
from tests.faults.scenarios import CODEC, Row, _stream, check_output, wait_for_output
from tests.harness import ServiceProcess, Topics, produce, read_all
from tests.registry_proxy import RegistryProxy

POST_V1 = json.loads((schema_dir() / "post.v1.avsc").read_text())
AI_V1 = json.loads((schema_dir() / "ai_interaction.v1.avsc").read_text())


def _register(url: str, subject: str, schema: Any) -> int:
    return int(SchemaRegistryClient({"url": url}).register_schema(subject, Schema(json.dumps(schema), "AVRO")))


def _variant(schema: dict[str, Any], tag: str, **retype: Any) -> dict[str, Any]:
    """`schema` with fields retyped and an optional field of its own (a schema of its own id)."""
    out = copy.deepcopy(schema)
    for f in out["fields"]:
        if f["name"] in retype:
            f["type"] = retype[f["name"]]
    out["fields"].append({"name": f"variant_{tag}", "type": ["null", "string"], "default": None})
    return out


def _framed(schema_id: int, schema: Any, record: Any) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema, named_schemas={}), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


class Framing:
    """The stream's records re-framed with the ids the registry gave the v1 schemas of its topics."""

    def __init__(self, url: str, topics: Topics) -> None:
        self.url = url
        self.topics = topics
        self.ids = {
            POST: _register(url, f"{topics.posts}-value", POST_V1),
            AI_INTERACTION: _register(url, f"{topics.ai}-value", AI_V1),
        }

    def v1(self, g: Generated) -> Generated:
        if g.expected == "malformed":
            return g  # corrupt bytes stay corrupt whatever the id
        name = POST if g.source == "post" else AI_INTERACTION
        return Generated(**{**g.__dict__, "value": b"\x00" + self.ids[name].to_bytes(4, "big") + g.value[5:]})

    def with_schema(self, g: Generated, schema_id: int, schema: Any, expected: str | None = None) -> Generated:
        """A post of the stream written with another writer schema (its own id)."""
        _, record = CODEC.decode(g.value, POST)
        return Generated(
            **{**g.__dict__, "value": _framed(schema_id, schema, record), "expected": expected or g.expected}
        )


def _service(broker: LocalKafka, topics: Topics, workdir: Path, url: str, **env: str) -> ServiceProcess:
    return ServiceProcess(
        broker.bootstrap,
        topics,
        workdir,
        env_overrides={"TF_LOG_LEVEL": "info", "TF_SCHEMA_REGISTRY_URL": url, **env},
    )


def _finish(
    name: str,
    broker: LocalKafka,
    topics: Topics,
    stream: list[Generated],
    service: ServiceProcess,
    dead: list[Generated],
    cause: str,
) -> Row:
    """The row, with failures for a stopped or paused service and for odd records not dead-lettered
    with `cause`."""
    wait_for_output(broker.bootstrap, topics.training, stream, timeout=60)
    service.wait_settled(60)
    paused = any(line.get("event") == "input_paused" for line in service.log_lines())
    alive = service.process is not None and service.process.poll() is None
    code = service.stop()
    row = check_output(name, broker.bootstrap, topics.training, stream, duplicates_allowed=True)
    if not alive or code != 0:
        row.failures.append(f"the service did not keep running (exit status {code})")
    if paused:
        row.failures.append("input was paused")
    letters = read_all(broker.bootstrap, topics.dlq)
    causes = [dict(m.headers() or [])["tf.cause"].decode() for m in letters]
    odd = causes.count(cause)
    if odd < len(dead):
        row.failures.append(f"{len(dead)} records should be dead letters ({cause}); {odd} are")
    row.notes.append(f"{len(dead)} records of the odd schema, dead letters by cause: {sorted(set(causes))}")
    return row


def _run(
    broker: LocalKafka, workdir: Path, url: str, records: int, seed: int, odd: Any, name: str, cause: str, **env: str
) -> Row:
    """A stream of `records` with every fifth eligible post made odd by `odd(framing, g)`."""
    topics = Topics.unique(broker.bootstrap)
    generator, stream = _stream(topics, records, seed)
    framing = Framing(url, topics)
    produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
    service = _service(broker, topics, workdir, url, **env)
    service.start().wait_ready()
    out: list[Generated] = []
    dead: list[Generated] = []
    for i, g in enumerate(stream):
        changed = odd(framing, g) if g.expected == "eligible" and g.source == "post" and i % 5 == 0 else None
        if changed is None:
            out.append(framing.v1(g))
        else:
            out.append(changed)
            if changed.expected != "eligible":
                dead.append(changed)
    produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in out))
    return _finish(name, broker, topics, out, service, dead, cause)


def uuid_logical_type(broker: LocalKafka, workdir: Path, url: str, records: int, seed: int = 41) -> Row:
    """Posts whose writer schema says post_id and text are uuid strings: read as the strings they are."""
    uuid_string = {"type": "string", "logicalType": "uuid"}
    schema = _variant(POST_V1, "uuid", post_id=uuid_string, text=uuid_string)
    ids: dict[str, int] = {}

    def odd(framing: Framing, g: Generated) -> Generated:
        if "id" not in ids:
            ids["id"] = _register(framing.url, f"uuid-{framing.topics.posts}", schema)
        return framing.with_schema(g, ids["id"], schema)

    return _run(broker, workdir, url, records, seed, odd, "registry: uuid logical type", "none")


def nameless_schema(broker: LocalKafka, workdir: Path, url: str, records: int, seed: int = 42) -> Row:
    """Values framed with a primitive writer schema (a string) among the posts: dead letters."""
    ids: dict[str, int] = {}

    def odd(framing: Framing, g: Generated) -> Generated:
        if "id" not in ids:
            ids["id"] = _register(framing.url, f"nameless-{framing.topics.posts}", "string")
        return Generated(**{**g.__dict__, "value": _framed(ids["id"], "string", "a bare string"), "expected": "dead"})

    return _run(broker, workdir, url, records, seed, odd, "registry: nameless writer schema", "schema_mismatch")


def one_id_refused(broker: LocalKafka, workdir: Path, url: str, records: int, seed: int = 43) -> Row:
    """The registry refuses one id (403) and answers every other: its records are dead letters, the
    rest flows, and input never pauses."""
    with RegistryProxy(url) as proxy:
        schema = _variant(POST_V1, "refused")
        refused = _register(url, f"refused-{time.monotonic_ns()}", schema)
        proxy.refused_ids.add(refused)

        def odd(framing: Framing, g: Generated) -> Generated:
            return framing.with_schema(g, refused, schema, expected="dead")

        return _run(broker, workdir, proxy.url, records, seed, odd, "registry: one id refused (403)", "schema_refused")


def id_registered_late(broker: LocalKafka, workdir: Path, url: str, records: int, seed: int = 44) -> Row:
    """Records of an id the registry does not have yet are dead letters (unknown_schema); once it is
    registered, the id is asked again after TF_SCHEMA_REGISTRY_RETRY_SECONDS and its records flow."""
    with RegistryProxy(url) as proxy:
        topics = Topics.unique(broker.bootstrap)
        generator, stream = _stream(topics, records, seed)
        framing = Framing(url, topics)
        schema = _variant(POST_V1, "late")
        late = _register(url, f"late-{topics.posts}", schema)
        proxy.hidden_ids.add(late)  # as far as the service can tell, not registered yet
        produce(broker.bootstrap, ((topics.optouts, k, v) for k, v in generator.optouts()))
        service = _service(broker, topics, workdir, proxy.url, TF_SCHEMA_REGISTRY_RETRY_SECONDS="2")
        service.start().wait_ready()
        posts = [g for g in stream if g.expected == "eligible" and g.source == "post"]
        early_posts = posts[:20]
        early = [framing.with_schema(g, late, schema, expected="dead") for g in early_posts]
        produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in early))
        deadline = time.monotonic() + 30
        while service.metric_sum("training_filter_dlq_records_total", cause="unknown_schema") < len(early):
            if time.monotonic() > deadline:
                raise AssertionError("the records of the hidden id were not dead-lettered")
            time.sleep(0.2)
        proxy.hidden_ids.clear()  # registered now
        time.sleep(2.5)
        again = posts[20:40]
        rest = [
            framing.with_schema(g, late, schema) if g in again else framing.v1(g)
            for g in stream
            if g not in early_posts
        ]
        produce(broker.bootstrap, ((g.topic, g.key, g.value) for g in rest))
        row = _finish(
            "registry: id registered late (404, then found)",
            broker,
            topics,
            early + rest,
            service,
            early,
            "unknown_schema",
        )
        row.notes.append("20 records while the id was missing, 20 after it was registered")
        return row
