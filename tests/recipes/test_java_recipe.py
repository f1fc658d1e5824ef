"""The Java recipe of docs/recipes/java.md (kafka-clients with read_committed, Avro's GenericDatumReader
after the 5-byte header with the registry's writer schemas), built with Maven as the page says, against
the topics the real service wrote: the table equals the oracle's set (tests/recipes/oracle.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest

from tests.recipes import readme
from tests.recipes.stream import CleanStream
from tests.recipes.test_python_recipe import check_kept

pytestmark = pytest.mark.integration


def run(cmd: list[str], cwd, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(cmd)} did not finish in {timeout} s") from exc


def test_java_recipe_keeps_exactly_the_eligible_records(kafka, registry_stream: CleanStream, tmp_path):
    project = tmp_path / "reader"
    (project / "src/main/java").mkdir(parents=True)
    (project / "pom.xml").write_text(readme.block("java-pom", "xml"))
    source = readme.block("java-reader", "java")
    assert source.startswith("// src/main/java/CleanTopicReader.java\n")
    (project / "src/main/java/CleanTopicReader.java").write_text(source)

    started = time.monotonic()
    build = run(
        ["mvn", "-q", "-B", "package", "dependency:build-classpath", "-Dmdep.outputFile=cp.txt"], project, {}, 600
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    built = time.monotonic() - started

    output = tmp_path / "clean.jsonl"
    env = {
        **registry_stream.env(),
        "KAFKA_BOOTSTRAP": kafka.bootstrap,
        "READER_GROUP": f"ml-java-{uuid.uuid4().hex[:8]}",
        "OUTPUT": str(output),
        "READ_SECONDS": "120",
    }
    classpath = f"target/classes:{(project / 'cp.txt').read_text().strip()}"
    result = run(["java", "-cp", classpath, "CleanTopicReader"], project, env, 180)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    records = [json.loads(line) for line in output.read_text().splitlines()]
    check_kept(records, registry_stream)
    assert f"{len(registry_stream.expected_ids)} records kept" in result.stdout
    print(
        f"\njava recipe (registry): {len(records)} kept; built in {built:.1f} s, ran in "
        f"{time.monotonic() - started - built:.1f} s"
    )
