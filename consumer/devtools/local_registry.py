"""A real, Confluent-compatible schema registry on 127.0.0.1 for development and the tests.

Apicurio Registry 2.4.2.Final with its in-memory (H2) storage, serving the Confluent API at
`/apis/ccompat/v7`. No Docker: deploy/schema-registry/ is a small Quarkus project that Maven builds from
the jars on Maven Central, once (about a minute and 230 MB of downloads into ~/.m2 from empty); the
application is cached under ~/.cache/training-filter/ by a hash of the build files, so later runs only
start it (a few seconds, about 150 MB of memory).

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
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from consumer.devtools.local_kafka import CACHE_DIR, _pid_alive

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


class LocalRegistryError(RuntimeError):
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


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


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
                    f"build log: {log_path}\n{_tail(log_path.read_text(errors='replace'))}"
                ) from None
        built = work / "target" / "quarkus-app" / "quarkus-run.jar"
        if result.returncode != 0 or not built.is_file():
            raise LocalRegistryError(
                f"building the schema registry failed (exit {result.returncode}; {' '.join(cmd)}); "
                f"build log: {log_path}\n{_tail(log_path.read_text(errors='replace'))}"
            )
        (work / "target" / "quarkus-app").rename(partial / "quarkus-app")
        shutil.rmtree(work, ignore_errors=True)
        (partial / ".complete").write_text(f"built in {time.monotonic() - started:.0f}s\n")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        return target


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java:
        raise LocalRegistryError("java is not on PATH (Java 17 or newer is needed to run the schema registry)")
    return java


@dataclass
class LocalRegistry:
    """One registry process on 127.0.0.1. Its storage is in memory: a restart starts empty."""

    data_dir: Path | None = None
    port: int = 0  # 0: a free port chosen by the registry itself, read from its log
    heap: str = "192m"
    project: Path = field(default_factory=lambda: default_project())
    process: subprocess.Popen[bytes] | None = None
    _owns_dir: bool = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API: the `url` of confluent-kafka's SchemaRegistryClient."""
        return self.base_url + CCOMPAT_PATH

    @property
    def log_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "registry.log"

    def start(self, timeout: float = 120.0) -> LocalRegistry:
        if self.process is not None and self.process.poll() is None:
            return self
        app = ensure_built(self.project)
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="tf-registry-"))
            self._owns_dir = True
        env = {k: os.environ[k] for k in _ENV_KEPT if k in os.environ}
        cmd = [
            _java(),
            f"-Xmx{self.heap}",
            # The JIT's first tier only: half the start-up time and less memory; a test registry
            # never runs long enough for the optimising compiler to pay off.
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={self.data_dir}",
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={self.port}",
            "-jar",
            str(app / "quarkus-app" / "quarkus-run.jar"),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,  # whatever the registry writes (a transaction log) stays in its folder
                env=env,
                start_new_session=True,
            )
        self._wait_ready(timeout)
        return self

    def _listening_port(self) -> int | None:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        found = _LISTENING.findall(text)
        return int(found[-1][2]) if found else None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        opener = _no_proxy_opener()
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise LocalRegistryError(
                    f"the schema registry exited with {self.process.returncode}; log: {self.log_path}\n"
                    f"{self.log_tail()}"
                )
            port = self._listening_port()
            if port:
                self.port = port
                try:
                    with opener.open(self.url + "/subjects", timeout=2) as response:
                        if response.status == 200:
                            return
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.1)
        self.stop()
        raise LocalRegistryError(
            f"the schema registry did not answer within {timeout:.0f}s; log: {self.log_path}\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return "(no registry log)"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Quarkus shuts down in well under a second), then SIGKILL after `timeout`."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


# -- command line: a registry that outlives the command, tracked by a state file ------------------------


def cmd_start(state: Path) -> int:
    if state.is_file():
        info = json.loads(state.read_text())
        if _pid_alive(info["pid"]):
            print(info["url"])
            return 0
    registry = LocalRegistry().start()
    assert registry.process is not None
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(
        json.dumps(
            {
                "pid": registry.process.pid,
                "url": registry.url,
                "data_dir": str(registry.data_dir),
                "log": str(registry.log_path),
            }
        )
    )
    print(registry.url)
    print(f"registry log: {registry.log_path}", file=sys.stderr)
    return 0


def cmd_stop(state: Path, timeout: float = 20.0) -> int:
    if not state.is_file():
        print("no local schema registry is recorded as running", file=sys.stderr)
        return 0
    info = json.loads(state.read_text())
    pid = int(info["pid"])
    if _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(info["data_dir"], ignore_errors=True)
    state.unlink()
    print("stopped")
    return 0


def cmd_run() -> int:
    with LocalRegistry() as registry:
        print(registry.url, flush=True)
        print(f"registry log: {registry.log_path} (Ctrl-C stops it)", file=sys.stderr, flush=True)
        try:
            while registry.process is not None and registry.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


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
        if args.action == "start":
            return cmd_start(args.state)
        if args.action == "stop":
            return cmd_stop(args.state)
        return cmd_run()
    except LocalRegistryError as exc:
        print(f"local-registry: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
