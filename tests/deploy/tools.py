"""Finding the external validators the deploy checks run. A missing tool is a test failure that says
how to install it (`.ci/run` installs them all), never a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ["dev", "prod"]


def tool(name: str, hint: str, extra: list[Path] | None = None) -> str:
    env = os.environ.get(name.upper().replace("-", "_"))
    candidates = [Path(env)] if env else []
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    candidates += extra or []
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"{name} is needed for the deploy checks and was not found: {hint}", pytrace=False)


def kustomize() -> str:
    gopath = Path(os.environ.get("GOPATH", Path.home() / "go"))
    return tool(
        "kustomize",
        "go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1 (done by .ci/run)",
        [gopath / "bin" / "kustomize"],
    )


def render(overlay: str) -> list[dict]:
    result = subprocess.run(
        [kustomize(), "build", str(DEPLOY / "kubernetes" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_text(overlay: str) -> str:
    return subprocess.run(
        [kustomize(), "build", str(DEPLOY / "kubernetes" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
