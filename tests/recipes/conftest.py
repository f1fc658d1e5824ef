"""Fixtures of the recipe tests: the known clean streams the real service writes (tests/recipes/stream.py),
one in registry mode and one without a registry, built once per session."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from tests.recipes import stream

TOOLS = {"pyspark": "pyspark==4.2.0", "pyflink": "apache-flink==2.2.0", "pyarrow": "pyarrow"}


def _problems() -> list[str]:
    missing = [package for module, package in TOOLS.items() if importlib.util.find_spec(module) is None]
    problems = (
        [f"{', '.join(missing)} not installed: run `make recipes-test` (it installs .[recipes])"] if missing else []
    )
    if shutil.which("java") is None:
        problems.append("java is not on PATH: Spark and Flink need Java 17 or newer")
    if shutil.which("mvn") is None:
        problems.append("mvn is not on PATH: it fetches the Flink connector jars from Maven Central")
    return problems


@pytest.fixture(autouse=True)
def _recipe_tools() -> None:
    """The recipes' tools are the [recipes] extra, not the service's dependencies: without them every
    recipe test fails, saying how to install them (never a skip)."""
    problems = _problems()
    if problems:
        pytest.fail("the recipe tests cannot run: " + "; ".join(problems), pytrace=False)


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
