"""Shared fixtures. Integration tests use the real local Kafka broker and the real schema registry.

`.ci/run` (and `make test`) start the broker once and pass its address in TF_TEST_BOOTSTRAP; run
alone, the session starts its own through `consumer.devtools.local_kafka`. The schema registry is the session's
own (`consumer.devtools.local_registry`, built by Maven on first use) unless TF_TEST_SCHEMA_REGISTRY names the
Confluent-compatible URL of a running one. Either way a missing broker or registry is a test failure
with the reason, never a skip.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

from consumer.devtools import local_registry
from consumer.devtools.local_kafka import LocalKafka, LocalKafkaError
from consumer.devtools.local_registry import LocalRegistry, LocalRegistryError
from tests.registry_proxy import RegistryProxy, TlsFiles, make_tls_files

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


class Registry:
    """The session's schema registry. `url` is its Confluent-compatible API (SchemaRegistryClient's url)."""

    def __init__(self, url: str, local: LocalRegistry | None) -> None:
        self.url = url.rstrip("/")
        self.local = local

    @property
    def log_hint(self) -> str:
        if self.local is not None:
            return f"registry log: {self.local.log_path}"
        return f"registry log: {os.environ.get('TF_TEST_SCHEMA_REGISTRY_LOG', 'kept by whoever started the registry')}"


_REGISTRY: Registry | None = None


@pytest.fixture(scope="session")
def registry(request: pytest.FixtureRequest) -> Iterator[Registry]:
    """A real Confluent-compatible schema registry (Apicurio Registry, in memory). Subjects and ids
    persist for the session: use subjects of unique topics (`topic_name`)."""
    global _REGISTRY
    url = os.environ.get("TF_TEST_SCHEMA_REGISTRY")
    local = None
    if url:
        _assert_registry_reachable(url)
    else:
        try:
            local = LocalRegistry().start()
        except LocalRegistryError as exc:
            pytest.fail(f"integration tests need the real schema registry and it did not start: {exc}", pytrace=False)
        url = local.url
    _REGISTRY = Registry(url, local)
    yield _REGISTRY
    if local is not None:
        if request.session.testsfailed:
            local.stop()  # its folder and log stay (pytest_sessionfinish says where)
        else:
            local.cleanup()


def _assert_registry_reachable(url: str) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url.rstrip("/") + "/subjects", timeout=10) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        pytest.fail(
            f"TF_TEST_SCHEMA_REGISTRY={url} does not answer GET /subjects ({exc}); start one with "
            "`deploy/schema-registry/registry.sh start` or unset it to let the tests start one",
            pytrace=False,
        )


@pytest.fixture
def fresh_registry(request: pytest.FixtureRequest) -> Iterator[LocalRegistry]:
    """A local registry of the test's own, empty (what only an empty registry shows: its first ids).
    It costs a JVM start (a few seconds); its folder and log are kept when the test fails."""
    try:
        local = LocalRegistry().start()
    except LocalRegistryError as exc:
        pytest.fail(f"the schema registry did not start: {exc}", pytrace=False)
    request.node._tf_fresh_registry = local
    yield local
    local.cleanup()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (PEM)."""
    return make_tls_files(tmp_path_factory.mktemp("registry-tls"))


@pytest.fixture
def registry_proxy(registry: Registry) -> Iterator[Callable[..., RegistryProxy]]:
    """Starts auth/TLS proxies in front of the session's registry: `registry_proxy(users={...},
    read_only={...}, tls=tls_files, require_client_cert=False)`; each is stopped after the test."""
    started: list[RegistryProxy] = []

    def make(**options: Any) -> RegistryProxy:
        proxy = RegistryProxy(registry.url, **options).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


@pytest.fixture(autouse=True)
def _no_service_left_running() -> Iterator[None]:
    """A service process a test started and did not stop (it failed midway) is killed after it."""
    yield
    from tests.harness import kill_leftovers

    kill_leftovers()


@pytest.fixture
def topic_name() -> Iterator[str]:
    yield f"t-{uuid.uuid4().hex[:12]}"


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    # The first test to start a local registry builds it when it is not cached yet (about two minutes
    # with the downloads): give that one test the build's own time limit on top of the usual one.
    if local_registry.is_built(local_registry.default_project()):
        return
    starters = {"fresh_registry"} if os.environ.get("TF_TEST_SCHEMA_REGISTRY") else {"registry", "fresh_registry"}
    for item in items:
        if starters & set(item.fixturenames):
            item.add_marker(pytest.mark.timeout(local_registry.BUILD_TIMEOUT + 300))
            return


def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    if call.when == "call" and call.excinfo is not None:
        if _BROKER is not None and "kafka" in item.fixturenames:
            item.add_report_section("call", "broker", _BROKER.log_hint)
        if _REGISTRY is not None and "registry" in item.fixturenames:
            item.add_report_section("call", "registry", _REGISTRY.log_hint)
        fresh = getattr(item, "_tf_fresh_registry", None)
        if fresh is not None:
            fresh._owns_dir = False  # keep its log
            item.add_report_section("call", "fresh registry", f"registry log: {fresh.log_path} (kept)")


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    # Keep the logs when something failed: the session's own broker and registry folders stay in place.
    if exitstatus != 0 and _BROKER is not None and _BROKER.local is not None:
        print(f"\n{_BROKER.log_hint} (kept because the session failed)")
        _BROKER.local._owns_dir = False
    local = _REGISTRY.local if _REGISTRY is not None else None
    if exitstatus != 0 and local is not None and local.log_path.exists():
        print(f"\nregistry log: {local.log_path} (kept because the session failed)")
