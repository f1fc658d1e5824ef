from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import ServiceProcess, Topics


@pytest.fixture
def topics(kafka) -> Topics:
    return Topics.unique(kafka.bootstrap)


@pytest.fixture
def services(kafka, topics, tmp_path) -> Iterator[list[ServiceProcess]]:
    """Service processes a test starts; all are stopped (or killed) at the end."""
    started: list[ServiceProcess] = []
    yield started
    for service in started:
        try:
            service.stop(timeout=30)
        except Exception:
            service.kill()


@pytest.fixture
def new_service(kafka, topics, tmp_path, services):
    def make(**env: str) -> ServiceProcess:
        service = ServiceProcess(kafka.bootstrap, topics, tmp_path, env_overrides=env)
        services.append(service)
        return service

    return make
