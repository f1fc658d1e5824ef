"""The pass under the operator commands (consumer/commands/transactional_pass.py), on the in-memory Kafka: a
run stopped before its last batch is committed is not finished, whatever it fetched."""

from __future__ import annotations

from typing import Any

from consumer.commands.transactional_pass import DryRun, Span, TransactionalPass
from consumer.wire.registry import RegistryUnavailable
from tests.fakes import FakeKafka
from tests.service_fixture import RecordingLog


class InSync:
    last_error = None

    def sync(self, timeout: float, everything: bool = False) -> bool:
        return True

    def seconds_behind(self) -> float:
        return 0.0


class RegistryDownThenStop:
    """Every batch's schema look-up fails, and a stop is asked for meanwhile (SIGTERM during an outage)."""

    def __init__(self) -> None:
        self.stop = False
        self.decided: list[Any] = []

    def prepare(self, messages: list[Any]) -> Any:
        self.stop = True
        raise RegistryUnavailable("the registry does not answer")

    def decide(self, prepared: Any, batch: Any) -> Any:
        self.decided.append(prepared)

    def committed(self, decided: Any) -> None:
        pass


def test_a_run_stopped_while_its_last_batch_waits_is_not_finished():
    kafka = FakeKafka()
    kafka.create_topic("dlq", 1)
    for i in range(3):
        kafka.append("dlq", b"v%d" % i, b"k", partition=0)
    consumer = kafka.clients().consumer({"group.id": "g", "enable.partition.eof": True})
    batches = RegistryDownThenStop()
    run = TransactionalPass(
        consumer, DryRun(), InSync(), {("dlq", 0): Span(0, 3)}, RecordingLog(), lambda: batches.stop
    )
    run.begin()
    assert run.run(batches) is False, "the last batch was fetched but never decided: not finished"
    assert batches.decided == [] and run.read() == 0
