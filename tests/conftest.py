"""Shared fixtures. Integration tests use the real local Kafka broker.

`.ci/run` (and `make test`) start the broker once and pass its address in TF_TEST_BOOTSTRAP; run
alone, the session starts its own through `consumer.local_kafka`. Either way a missing broker is a
test failure with the reason, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings

from consumer.local_kafka import LocalKafka, LocalKafkaError

# Property tests check behaviour, not speed: on a shared 2-core machine one example can take 300 ms.
settings.register_profile("training-filter", deadline=None)
settings.load_profile("training-filter")


class Broker:
    def __init__(self, bootstrap: str, local: LocalKafka | None) -> None:
        self.bootstrap = bootstrap
        self.local = local

    @property
    def log_hint(self) -> str:
        if self.local is not None:
            return f"broker log: {self.local.log_path}"
        return f"broker log: {os.environ.get('TF_TEST_BROKER_LOG', 'kept by whoever started the broker')}"


_BROKER: Broker | None = None


@pytest.fixture(scope="session")
def kafka() -> Iterator[Broker]:
    global _BROKER
    bootstrap = os.environ.get("TF_TEST_BOOTSTRAP")
    local = None
    if bootstrap:
        _assert_reachable(bootstrap)
    else:
        try:
            local = LocalKafka().start()
        except LocalKafkaError as exc:
            pytest.fail(
                f"integration tests need the real local Kafka broker and it did not start: {exc}", pytrace=False
            )
        bootstrap = local.bootstrap
    _BROKER = Broker(bootstrap, local)
    yield _BROKER
    if local is not None:
        local.stop()


def _assert_reachable(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    except Exception as exc:
        pytest.fail(
            f"TF_TEST_BOOTSTRAP={bootstrap} does not answer ({exc}); start it with "
            "`deploy/local-kafka/kafka.sh start` or unset it to let the tests start one",
            pytrace=False,
        )


@pytest.fixture
def topic_name() -> Iterator[str]:
    yield f"t-{uuid.uuid4().hex[:12]}"


def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    if call.when == "call" and call.excinfo is not None and _BROKER is not None and "kafka" in item.fixturenames:
        item.add_report_section("call", "broker", _BROKER.log_hint)


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    # Keep the broker's log when something failed: the session's own broker folder is left in place.
    if exitstatus != 0 and _BROKER is not None and _BROKER.local is not None:
        print(f"\n{_BROKER.log_hint} (kept because the session failed)")
        _BROKER.local._owns_dir = False
