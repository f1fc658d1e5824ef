"""Finding the external tools the deploy checks run. `make tools` builds them, at pinned versions, into
the project's git-ignored `.tools/bin` (see the Makefile); that folder is searched first, then the
environment variable named after the tool (KUSTOMIZE, PROMTOOL, ...), then PATH. A missing tool is a
test failure that says to run `make tools`, never a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TOOLS_BIN = REPO / ".tools" / "bin"
OVERLAYS = ["dev", "prod", "prod-exactly-once", "prod-opt-in"]
MAKE_TOOLS = "run `make tools` (it builds every deploy-check tool into .tools/bin; `make test` does it too)"


def find_tool(name: str, extra: list[Path] | None = None) -> str | None:
    candidates = [TOOLS_BIN / name]
    env = os.environ.get(name.upper().replace("-", "_"))
    if env:
        candidates.append(Path(env))
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    candidates += extra or []
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def tool(name: str, hint: str = MAKE_TOOLS, extra: list[Path] | None = None) -> str:
    found = find_tool(name, extra)
    if found is None:
        pytest.fail(f"{name} is needed for the deploy checks and was not found: {hint}", pytrace=False)
    return found


def kustomize() -> str:
    return tool("kustomize")


@cache
def render_text(overlay: str) -> str:
    """`kustomize build` of an overlay (once per test session: the files do not change under it)."""
    result = subprocess.run(
        [kustomize(), "build", str(DEPLOY / "kubernetes" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(overlay: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render_text(overlay)) if doc]


OPERATIONS = DEPLOY / "kubernetes" / "components" / "operations"


@cache
def render_operations_text(overlay: str, for_real: bool = False) -> str:
    """An overlay built with components/operations (and its for-real component), as an operator builds
    it: a kustomization of their own, outside the repository, naming both (docs/operating.md)."""
    components = [OPERATIONS, OPERATIONS / "for-real"] if for_real else [OPERATIONS]
    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.relpath(p, folder) for p in (DEPLOY / "kubernetes" / "overlays" / overlay, *components)]
        kustomization = {"resources": paths[:1], "components": paths[1:]}
        (Path(folder) / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        result = subprocess.run([kustomize(), "build", folder], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render_operations(overlay: str, for_real: bool = False) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render_operations_text(overlay, for_real)) if doc]
