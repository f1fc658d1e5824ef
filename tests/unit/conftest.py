"""Fixtures of the unit tests that need no broker."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.devtools import local_kafka


@pytest.fixture
def fake_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """`fake_java(script)`: a `java` on PATH (and no JAVA_HOME) that runs the shell `script` instead of
    a JVM, so a launcher's supervision is tested in a second rather than a JVM start."""

    def install(script: str) -> Path:
        folder = tmp_path / "fake-java-bin"
        folder.mkdir(exist_ok=True)
        java = folder / "java"
        java.write_text(f"#!/bin/sh\n{script}\n")
        java.chmod(0o755)
        monkeypatch.delenv("JAVA_HOME", raising=False)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        # No jars either: on a fresh machine Maven would run the fake `java` and fail.
        jars = tmp_path / "fake-kafka-jars"
        jars.mkdir(exist_ok=True)
        monkeypatch.setattr(local_kafka, "ensure_jars", lambda *_: jars)
        return java

    return install
