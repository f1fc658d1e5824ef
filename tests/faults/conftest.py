from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumer.devtools.local_kafka import LocalKafka, LocalKafkaError
from tests.faults.run import fault_broker


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalKafka]:
    """A broker of the fault suite's own (it gets restarted), with a SASL_SSL listener and ACLs."""
    try:
        local = fault_broker().start()
    except LocalKafkaError as exc:
        pytest.fail(f"the fault suite needs its own local Kafka broker and it did not start: {exc}", pytrace=False)
    yield local
    local.cleanup()
