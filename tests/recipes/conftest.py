"""Fixtures of the recipe tests: the known clean streams the real service writes (tests/recipes/stream.py),
one in registry mode and one without a registry, built once per session."""

from __future__ import annotations

import pytest

from tests.recipes import stream


@pytest.fixture(scope="session")
def registry_stream(kafka, registry, tmp_path_factory) -> stream.CleanStream:
    built = stream.build(kafka.bootstrap, registry.url, tmp_path_factory.mktemp("registry-stream"))
    print(f"\nregistry-mode stream: {built.facts}")
    return built


@pytest.fixture(scope="session")
def catalog_stream(kafka, tmp_path_factory) -> stream.CleanStream:
    built = stream.build(kafka.bootstrap, None, tmp_path_factory.mktemp("catalog-stream"), seed=12)
    print(f"\ncatalog-mode stream: {built.facts}")
    return built
