"""A real, Confluent-compatible schema registry on 127.0.0.1 for development and the tests.

Apicurio Registry 2.4.2.Final with its in-memory (H2) storage, serving the Confluent API at
`/apis/ccompat/v7`. No Docker: deploy/schema-registry/ is a small Quarkus project that Maven builds from
the jars on Maven Central, once (about a minute and 230 MB of downloads into ~/.m2 from empty); the
application is cached under ~/.cache/training-filter/ by a hash of the build files, so later runs only
start it (a few seconds, about 150 MB of memory). The process itself (its folder and log, readiness,
stopping, the state file of the commands) is `consumer.devtools.supervisor`'s; this module only knows
the build and how Apicurio starts.

    python -m consumer.devtools.local_registry start   # prints the ccompat URL, leaves the registry running
    python -m consumer.devtools.local_registry stop
    python -m consumer.devtools.local_registry run     # in the foreground until Ctrl-C
    python -m consumer.devtools.local_registry build   # only build (or find) the application

Its schema ids are content ids counted from 1, and its default compatibility is NONE (a Confluent
registry's is BACKWARD): set the compatibility a test relies on.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

from consumer.devtools.supervisor import CACHE_DIR, Supervised, SupervisedError, find_java, main_action, tail

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROJECT = REPO_ROOT / "deploy" / "schema-registry"
DEFAULT_STATE = CACHE_DIR / "local-registry.json"
CCOMPAT_PATH = "/apis/ccompat/v7"
BUILD_TIMEOUT = 1800.0  # seconds; a cold build downloads about 230 MB

_LISTENING = re.compile(r"Listening on: (https?)://([0-9.]+):([0-9]+)")
# Apicurio and Quarkus read many environment variables (HTTP_PORT, LOG_LEVEL, AUTH_ENABLED,
# KAFKA_BOOTSTRAP_SERVERS, REGISTRY_*, QUARKUS_*...): the registry gets only these, so the caller's
# environment cannot change what it does.
_ENV_KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "JAVA_HOME", "TMPDIR")
# Files of the project folder that are not build inputs (a change to them needs no rebuild).
_NOT_BUILD_INPUTS = {"registry.sh"}


class LocalRegistryError(SupervisedError):
    """The local registry could not be built or started. The message says why."""


def default_project() -> Path:
    """deploy/schema-registry of this checkout, or TF_LOCAL_REGISTRY_PROJECT."""
    return Path(os.environ.get("TF_LOCAL_REGISTRY_PROJECT") or DEFAULT_PROJECT)


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    # A loopback address: never through an HTTP proxy named in the environment.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def build_inputs(project: Path = DEFAULT_PROJECT) -> list[Path]:
    """The files the build reads: everything in the project folder but target/ and the shell entry."""
    files = []
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project)
        if not path.is_file() or rel.parts[0] == "target" or rel.name in _NOT_BUILD_INPUTS:
            continue
        files.append(path)
    return files


def build_digest(project: Path = DEFAULT_PROJECT) -> str:
    digest = hashlib.sha256()
    for path in build_inputs(project):
        digest.update(str(path.relative_to(project)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def app_dir(project: Path = DEFAULT_PROJECT) -> Path:
    """Where the built application of these build files is (or will be) cached."""
    return CACHE_DIR / f"schema-registry-{build_digest(project)}"


def is_built(project: Path = DEFAULT_PROJECT) -> bool:
    return (app_dir(project) / ".complete").is_file()


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time on this machine (two test sessions, or a session and `make registry-start`)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / "schema-registry.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_built(project: Path = DEFAULT_PROJECT, timeout: float = BUILD_TIMEOUT) -> Path:
    """The folder of the built registry (holding quarkus-app/quarkus-run.jar): built by Maven from the
    project's build files on first use, then cached. A second call with the same files does nothing."""
    if not (project / "pom.xml").is_file():
        raise LocalRegistryError(
            f"{project / 'pom.xml'} not found: run from a checkout of training-filter or set TF_LOCAL_REGISTRY_PROJECT"
        )
    target = app_dir(project)
    if (target / ".complete").is_file():
        return target
    with _build_lock():
        if (target / ".complete").is_file():  # built by another process while this one waited
            return target
        if shutil.which("mvn") is None:
            raise LocalRegistryError(
                "Maven (mvn) is not on PATH: it builds the local schema registry from Maven Central"
            )
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        work = partial / "project"
        work.mkdir(parents=True)
        for path in build_inputs(project):
            dest = work / path.relative_to(project)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        log_path = target.with_name(target.name + ".build.log")
        cmd = [
            "mvn",
            "-B",
            "-ntp",
            "-Dstyle.color=never",
            "-s",
            str(work / "settings.xml"),
            "-f",
            str(work / "pom.xml"),
            "package",
        ]
        started = time.monotonic()
        with log_path.open("w") as log:
            try:
                result = subprocess.run(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired:
                raise LocalRegistryError(
                    f"building the schema registry did not finish within {timeout:.0f}s ({' '.join(cmd)}); "
                    f"build log: {log_path}\n{tail(log_path.read_text(errors='replace'))}"
                ) from None
        built = work / "target" / "quarkus-app" / "quarkus-run.jar"
        if result.returncode != 0 or not built.is_file():
            raise LocalRegistryError(
                f"building the schema registry failed (exit {result.returncode}; {' '.join(cmd)}); "
                f"build log: {log_path}\n{tail(log_path.read_text(errors='replace'))}"
            )
        (work / "target" / "quarkus-app").rename(partial / "quarkus-app")
        shutil.rmtree(work, ignore_errors=True)
        (partial / ".complete").write_text(f"built in {time.monotonic() - started:.0f}s\n")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        return target


@dataclass
class LocalRegistry(Supervised):
    """One registry process on 127.0.0.1. Its storage is in memory: a restart starts empty."""

    what: ClassVar[str] = "the schema registry"
    log_name: ClassVar[str] = "registry.log"
    dir_prefix: ClassVar[str] = "tf-registry-"
    error: ClassVar[type[SupervisedError]] = LocalRegistryError
    stop_timeout: ClassVar[float] = 20.0  # Quarkus shuts down in well under a second
    address_key: ClassVar[str] = "url"

    port: int = 0  # 0: a free port chosen by the registry itself, read from its log
    heap: str = "192m"
    project: Path = field(default_factory=lambda: default_project())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API: the `url` of confluent-kafka's SchemaRegistryClient."""
        return self.base_url + CCOMPAT_PATH

    @property
    def address(self) -> str:
        return self.url

    def start(self, timeout: float = 120.0) -> Self:
        if self.running:
            return self
        app = ensure_built(self.project)
        folder = self._folder()
        env = {k: os.environ[k] for k in _ENV_KEPT if k in os.environ}
        cmd = [
            find_java(self.error, self.what),
            f"-Xmx{self.heap}",
            # The JIT's first tier only: half the start-up time and less memory; a test registry
            # never runs long enough for the optimising compiler to pay off.
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={folder}",
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={self.port}",
            "-jar",
            str(app / "quarkus-app" / "quarkus-run.jar"),
        ]
        # cwd: whatever the registry writes (a transaction log) stays in its folder.
        self._spawn(cmd, self._answers(), timeout, interval=0.1, cwd=folder, env=env)
        return self

    def _listening_port(self) -> int | None:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        found = _LISTENING.findall(text)
        return int(found[-1][2]) if found else None

    def _answers(self) -> Callable[[], bool]:
        """The readiness probe: the port the log names answers GET /subjects."""
        opener = _no_proxy_opener()

        def probe() -> bool:
            port = self._listening_port()
            if not port:
                return False
            self.port = port
            try:
                with opener.open(self.url + "/subjects", timeout=2) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        return probe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="local-registry", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["start", "stop", "run", "build"])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="where start records the running registry")
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            print(ensure_built(default_project()) / "quarkus-app" / "quarkus-run.jar")
            return 0
        return main_action(args.action, args.state, LocalRegistry)
    except SupervisedError as exc:
        print(f"local-registry: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
