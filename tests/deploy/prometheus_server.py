"""A real Prometheus server (built by `make tools`) on 127.0.0.1, for evaluating the alert rules.

    with PrometheusServer(rule_files=[...], targets=["127.0.0.1:9100"]) as prom:
        prom.get("/api/v1/rules")

It listens on a free loopback port, keeps its data in a temporary folder, scrapes only the given
loopback targets, and is stopped (SIGTERM, then SIGKILL) when the block ends. Built without the
web UI assets: the HTTP API works, the UI pages do not."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.deploy.tools import tool


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    def __init__(
        self,
        rule_files: list[Path],
        targets: list[str] | None = None,
        interval: str = "1s",
        target_labels: dict[str, str] | None = None,
    ) -> None:
        for target in targets or []:
            assert target.startswith(("127.", "localhost:", "[::1]:")), f"loopback targets only: {target}"
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.targets = targets or []
        self.interval = interval
        self.target_labels = target_labels or {}
        self.port = 0
        self.folder: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        self.folder = Path(tempfile.mkdtemp(prefix="tf-prometheus-"))
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [],
        }
        if self.targets:
            config["scrape_configs"].append(
                {
                    "job_name": "training-filter",
                    "static_configs": [{"targets": self.targets, "labels": self.target_labels}],
                }
            )
        (self.folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = tool("prometheus")
        for _attempt in range(3):  # the free port can be taken between choosing and binding it
            self.port = free_loopback_port()
            log = (self.folder / "prometheus.log").open("wb")
            self.process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={self.folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            if self._wait_ready():
                return self
            self._stop()
        raise AssertionError(f"prometheus did not start: {self.log()[-2000:]}")

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
            return json.loads(r.read())

    def log(self) -> str:
        assert self.folder is not None
        path = self.folder / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
