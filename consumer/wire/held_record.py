"""A Kafka record held in memory, offering what the service's readers ask of a consumed
confluent_kafka.Message (topic, partition, offset, key, value, headers, timestamp, error): a dead
letter's original record replayed (consumer/commands/dlq_replay.py), a feed record kept for the
verifier's re-application (consumer/audit/feed_state.py)."""

from __future__ import annotations

from typing import Any


class HeldRecord:
    __slots__ = ("_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        timestamp: int,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers, self._timestamp = key, value, headers, timestamp

    @classmethod
    def of(cls, msg: Any) -> HeldRecord:
        """A consumed message kept without its headers (the appliers read none)."""
        return cls(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), None, msg.timestamp()[1])

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)  # TIMESTAMP_CREATE_TIME
