"""The local schema registry's launcher: the build cache and its errors (the registry itself is exercised
by tests/integration/test_registry.py). Maven and java run for real where an error comes from them."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from consumer.devtools import local_registry
from consumer.devtools.local_registry import DEFAULT_PROJECT, LocalRegistry, LocalRegistryError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of deploy/schema-registry's build files."""
    copy = tmp_path / "schema-registry"
    for path in local_registry.build_inputs(DEFAULT_PROJECT):
        dest = copy / path.relative_to(DEFAULT_PROJECT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    return copy


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache_dir = tmp_path / "cache"
    monkeypatch.setattr(local_registry, "CACHE_DIR", cache_dir)
    return cache_dir


def test_the_build_inputs_are_the_project_files_but_target_and_the_shell_entry(project):
    names = {str(p.relative_to(project)) for p in local_registry.build_inputs(project)}
    assert {
        "pom.xml",
        "settings.xml",
        "config-index-deployment.pom",
        "src/main/resources/application.properties",
    } <= names
    digest = local_registry.build_digest(project)
    (project / "target").mkdir()
    (project / "target" / "anything.jar").write_text("x")
    (project / "registry.sh").write_text("#!/bin/sh\n")
    assert local_registry.build_digest(project) == digest
    (project / "pom.xml").write_text((project / "pom.xml").read_text() + "<!-- changed -->\n")
    assert local_registry.build_digest(project) != digest


def test_a_second_ensure_built_does_nothing(project, cache, monkeypatch):
    built = local_registry.app_dir(project)
    (built / "quarkus-app").mkdir(parents=True)
    (built / ".complete").write_text("ok\n")

    def no_maven(*args, **kwargs):
        raise AssertionError(f"Maven must not run for a cached build: {args}")

    monkeypatch.setattr(local_registry.subprocess, "run", no_maven)
    assert local_registry.is_built(project)
    assert local_registry.ensure_built(project) == built


def test_maven_missing_is_a_clear_error(project, cache, monkeypatch):
    monkeypatch.setattr(local_registry.shutil, "which", lambda name: None)
    with pytest.raises(LocalRegistryError, match=r"Maven \(mvn\) is not on PATH"):
        local_registry.ensure_built(project)


def test_a_failed_build_reports_the_tail_of_its_output(project, cache):
    if shutil.which("mvn") is None:
        pytest.fail("Maven (mvn) is needed: it builds the local schema registry")
    (project / "pom.xml").write_text("<project>not a pom")
    with pytest.raises(LocalRegistryError) as failed:
        local_registry.ensure_built(project, timeout=120)
    message = str(failed.value)
    assert "building the schema registry failed" in message
    assert "build log:" in message and "Non-readable POM" in message
    assert not local_registry.is_built(project)


def test_a_registry_that_exits_reports_the_tail_of_its_log(project, cache, tmp_path):
    built = local_registry.app_dir(project)
    (built / "quarkus-app").mkdir(parents=True)
    (built / "quarkus-app" / "quarkus-run.jar").write_text("not a jar")
    (built / ".complete").write_text("ok\n")
    (tmp_path / "run").mkdir()
    registry = LocalRegistry(data_dir=tmp_path / "run", project=project)
    with pytest.raises(LocalRegistryError) as failed:
        registry.start(timeout=60)
    message = str(failed.value)
    assert "the schema registry exited with" in message
    assert str(registry.log_path) in message
    assert "jarfile" in message  # java's own words, from the log


def test_the_registry_gets_none_of_the_callers_environment(monkeypatch):
    captured = {}

    class Stop(Exception):
        pass

    def fake_popen(cmd, **kwargs):
        captured.update(kwargs, cmd=cmd)
        raise Stop

    monkeypatch.setenv("HTTP_PORT", "8080")
    monkeypatch.setenv("REGISTRY_AUTH_ENABLED", "true")
    monkeypatch.setattr(local_registry, "ensure_built", lambda project: Path("/nonexistent"))
    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    registry = LocalRegistry()
    with pytest.raises(Stop):
        registry.start()
    registry.cleanup()
    assert "HTTP_PORT" not in captured["env"] and "REGISTRY_AUTH_ENABLED" not in captured["env"]
    assert "-Dquarkus.http.host=127.0.0.1" in captured["cmd"]


@pytest.fixture
def built(project, cache) -> Path:
    """A cached "build" of the project (what `ensure_built` finds), for a launch with a fake java."""
    app = local_registry.app_dir(project)
    (app / "quarkus-app").mkdir(parents=True)
    (app / ".complete").write_text("ok\n")
    return app


def test_a_registry_that_never_listens_times_out_with_its_log_and_is_stopped(built, project, fake_java, tmp_path):
    fake_java("echo 'registry: still starting'; exec sleep 30")
    (tmp_path / "run").mkdir()
    registry = LocalRegistry(data_dir=tmp_path / "run", project=project)
    try:
        with pytest.raises(LocalRegistryError) as failed:
            registry.start(timeout=1)
        message = str(failed.value)
        assert "the schema registry did not answer within 1s" in message
        assert str(registry.log_path) in message and "registry: still starting" in message
        assert registry.process is not None and registry.process.poll() is not None
    finally:
        registry.cleanup()


def test_ctrl_c_while_the_registry_starts_leaves_no_process(built, project, fake_java, tmp_path, monkeypatch):
    fake_java("exec sleep 30")
    real_sleep, sleeps = time.sleep, []

    def interrupted_once(seconds: float) -> None:
        if threading.current_thread() is not threading.main_thread():
            return real_sleep(seconds)  # another test's thread, if any: Ctrl-C reaches the main thread only
        sleeps.append(seconds)
        if len(sleeps) == 1:
            raise KeyboardInterrupt
        return real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", interrupted_once)
    (tmp_path / "run").mkdir()
    registry = LocalRegistry(data_dir=tmp_path / "run", project=project)
    try:
        with pytest.raises(KeyboardInterrupt):
            registry.start(timeout=30)
        assert registry.process is not None and registry.process.poll() is not None, "the registry was left running"
    finally:
        registry.cleanup()
