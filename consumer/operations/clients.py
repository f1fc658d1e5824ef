"""Where the service's Kafka clients come from. `KafkaClients` makes confluent-kafka's; the in-process
tests pass tests/fakes.py's instead (an in-memory Kafka), so that the whole service shell runs without
a broker. Every part that talks to Kafka is given its clients this way, never makes them itself."""

from __future__ import annotations

from typing import Any, Protocol

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient


class Clients(Protocol):
    def consumer(self, config: dict[str, Any]) -> Any: ...

    def producer(self, config: dict[str, Any]) -> Any: ...

    def admin(self, config: dict[str, Any]) -> Any: ...


class KafkaClients:
    """librdkafka's clients. Making one checks its configuration (a property it refuses raises
    KafkaException); consumer/service/assemble.py turns that into a ConfigError naming the variable."""

    def consumer(self, config: dict[str, Any]) -> Any:
        return Consumer(config)

    def producer(self, config: dict[str, Any]) -> Any:
        return Producer(config)

    def admin(self, config: dict[str, Any]) -> Any:
        return AdminClient(config)
