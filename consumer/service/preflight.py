"""`validate`: the settings, checked completely before any connection. The entry point of
`training-filter run`: it returns the settings, with their memory budget, or raises ConfigError
(exit status 2) with one line per problem, each naming its TF_ variable.

On top of load_settings (the table, the checks between settings), with the real librdkafka
configurations of the service's clients, as consumer/service/client_configs.py builds them:

- each client kind is made, and closed, from its configuration without bootstrap.servers: librdkafka
  checks a configuration when a client is made, and one without bootstrap servers connects to
  nothing; a property it refuses is named by its variable (kafka_settings.rejection);
- the timings that must agree with librdkafka's: the revoke flush ends before max.poll.interval.ms,
  a transaction is collected in at most half of transaction.timeout.ms, and the largest value fits
  the producer's queue;
- the metrics port: the service can listen there (bound and released at once);
- the memory budget (consumer/operations/memory.py): the capacities and the fixed overheads against
  the container's memory limit.
"""

from __future__ import annotations

import dataclasses
import errno
import re
import socket
from collections.abc import Mapping
from typing import Any, NamedTuple

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from consumer.changes.retractions import REVOCATION_QUEUE_KBYTES
from consumer.datapath.output_limits import HEADROOM, OutputLimits
from consumer.operations import kafka_settings
from consumer.operations.acls import feed_group
from consumer.operations.memory import MemoryBudget, memory_limit
from consumer.operations.settings import ConfigError, Settings, load_settings
from consumer.service.client_configs import (
    OWN_PROPERTIES,
    input_consumer_config,
    producer_config,
    producer_max_for,
)


class ClientConfig(NamedTuple):
    kind: Any  # Consumer, Producer or AdminClient
    role: str  # consumer, producer or admin: which TF_*KAFKA_* scope applies
    what: str
    config: dict[str, Any]


INPUT, OUTPUT = "input consumer", "producer"
DEFAULT_MAX_POLL_INTERVAL_MS = 300_000  # librdkafka's
DEFAULT_QUEUED_KBYTES = 65_536  # librdkafka's queued.max.messages.kbytes: a consumer's pre-fetch queue


def validate(env: Mapping[str, str] | None = None, limit: tuple[int, str] | None = None) -> Settings:
    """Every setting checked; `limit` (bytes, source) stands in for the container's memory limit."""
    settings = load_settings(env)
    configs = client_configs(settings)
    problems = agreement(settings, configs)
    for c in configs.values():
        reason = kafka_settings.make(c.kind, kafka_settings.without_servers(c.config))
        if reason is not None:
            problems += kafka_settings.rejection(c.kind, c.role, c.what, reason, settings.kafka_sources, OWN_PROPERTIES)
    problems += listen(settings)
    budget = memory_budget(settings, configs, limit or memory_limit())
    problems += budget.problems()
    if problems:
        raise ConfigError(_once(problems))
    return dataclasses.replace(settings, memory_budget=budget)


def client_configs(s: Settings) -> dict[str, ClientConfig]:
    """Every client the service makes, by what it is, with the configuration it is made with."""
    quiet = {"logger": kafka_settings.silent_logger()}
    max_bytes = producer_max_for(s)
    limits = OutputLimits.compute(s.max_value_bytes, max_bytes, s.training_topic, s.dlq_topic, {})
    group = s.group_id
    configs = [
        ClientConfig(Consumer, "consumer", INPUT, input_consumer_config(s, lambda _: None, quiet)),
        ClientConfig(Producer, "producer", OUTPUT, producer_config(s, limits, max_bytes, quiet)),
        ClientConfig(
            Consumer,
            "consumer",
            "opt-out feed",
            s.consumer_config(**{"group.id": feed_group(group, "optout"), **quiet}),
        ),
        ClientConfig(
            Consumer,
            "consumer",
            "revocation emitter's consumer",
            s.consumer_config(
                **{"group.id": f"{group}-revocations", "auto.offset.reset": s.revocations_start, **quiet}
            ),
        ),
        ClientConfig(
            Producer,
            "producer",
            "revocation emitter's producer",
            s.producer_config(**{"enable.idempotence": True, "acks": "all", **quiet}),
        ),
        ClientConfig(
            AdminClient, "admin", "admin client", {"bootstrap.servers": s.bootstrap_servers, **s.kafka_common, **quiet}
        ),
    ]
    if s.consent_topic is not None:
        configs.append(
            ClientConfig(
                Consumer,
                "consumer",
                "consent feed",
                s.consumer_config(**{"group.id": feed_group(group, "consent"), **quiet}),
            )
        )
    return {c.what: c for c in configs}


def agreement(s: Settings, configs: dict[str, ClientConfig]) -> list[str]:
    """The settings that must agree with the librdkafka properties the clients are made with."""
    problems = []
    consumer, producer = configs[INPUT].config, configs[OUTPUT].config
    poll = int(consumer.get("max.poll.interval.ms", DEFAULT_MAX_POLL_INTERVAL_MS))
    if s.revoke_flush_seconds * 1000 >= poll:
        problems.append(
            f"TF_REVOKE_FLUSH_SECONDS={s.revoke_flush_seconds:g} is not below max.poll.interval.ms ({poll:,} ms, "
            f"{_from(s, 'consumer', 'max.poll.interval.ms', 'librdkafka default')}): the wait runs inside the "
            "rebalance callback, and the consumer would be put out of its group; lower TF_REVOKE_FLUSH_SECONDS"
        )
    if s.exactly_once:
        timeout = int(producer["transaction.timeout.ms"])
        if s.transaction_interval_ms * 2 > timeout:
            problems.append(
                f"TF_TRANSACTION_INTERVAL_MS={s.transaction_interval_ms} is more than half of transaction.timeout.ms "
                f"({timeout:,} ms, {_from(s, 'producer', 'transaction.timeout.ms', 'the service default')}): the "
                "broker would abort transactions still collecting batches; lower TF_TRANSACTION_INTERVAL_MS"
            )
    queue = int(producer["queue.buffering.max.kbytes"]) * 1024
    if s.max_value_bytes + 2 * HEADROOM > queue:
        problems.append(
            f"TF_MAX_VALUE_BYTES={s.max_value_bytes} with its 128 KiB of head-room does not fit the producer's queue "
            f"(queue.buffering.max.kbytes = {queue // 1024:,}, "
            f"{_from(s, 'producer', 'queue.buffering.max.kbytes', 'the service default')}): such a record could never "
            "be queued; lower TF_MAX_VALUE_BYTES or raise TF_PRODUCER_KAFKA_QUEUE_BUFFERING_MAX_KBYTES"
        )
    return problems


def _from(s: Settings, client: str, prop: str, default: str) -> str:
    var = s.kafka_variable(client, prop)
    return f"from {var}" if var else default


def listen(s: Settings) -> list[str]:
    """Can the metrics server listen on TF_METRICS_HOST:TF_METRICS_PORT? (IPv4, as http.server binds.)"""
    where = f"TF_METRICS_HOST={s.metrics_host!r}"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server sets it
            sock.bind((s.metrics_host, s.metrics_port))
    except socket.gaierror as exc:
        return [f"{where}: no IPv4 address to listen on ({exc.strerror}); use an IPv4 address, e.g. 0.0.0.0"]
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            return [f"{where} is not an address of this host; use 0.0.0.0 (every address) or one of its own"]
        return [
            f"TF_METRICS_PORT={s.metrics_port} (on {where}): cannot listen there ({exc.strerror or exc}); "
            "choose a free port, 0 picks one"
        ]
    return []


def memory_budget(s: Settings, configs: dict[str, ClientConfig], limit: tuple[int, str]) -> MemoryBudget:
    consumer, producer = configs[INPUT].config, configs[OUTPUT].config
    fetching = sum(1 for c in configs.values() if c.role == "consumer")  # input, the feeds, the emitter
    return MemoryBudget.compute(
        s,
        producer_queue_bytes=(int(producer["queue.buffering.max.kbytes"]) + REVOCATION_QUEUE_KBYTES) * 1024,
        consumer_queue_bytes=int(consumer.get("queued.max.messages.kbytes", DEFAULT_QUEUED_KBYTES)) * 1024,
        fetching_consumers=fetching,
        limit=limit[0],
        source=limit[1],
    )


def _once(problems: list[str]) -> list[str]:
    """One line per set of variables: a property refused by several clients is reported once."""
    seen: set[frozenset[str]] = set()
    out = []
    for line in problems:
        key = frozenset(re.findall(r"TF_[A-Za-z0-9_]+", line.split(":")[0])) or frozenset([line])
        if key not in seen:
            seen.add(key)
            out.append(line)
    return out
