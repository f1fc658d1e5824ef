"""The recipes of docs/recipes/*.md, as code: each fenced block right after a `<!-- recipe: NAME -->`
marker, run exactly as written (the addresses come from the environment), so the pages cannot drift
from what is tested. Names are unique across the pages; tests/unit/test_recipe_blocks.py checks that
every name the recipe tests ask for is there and that every code block of the pages is a recipe."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PAGES = Path(__file__).resolve().parents[2] / "docs" / "recipes"
MARKER = re.compile(r"<!-- recipe: ([a-z0-9-]+) -->\n```(\w+)\n(.*?)\n```", re.S)
# What a recipe may import: the tools and the standard library, never this project's code.
ALLOWED_IMPORTS = {
    "confluent_kafka",
    "fastavro",
    "pyspark",
    "pyflink",
    "io",
    "json",
    "os",
    "time",
    "urllib",
    "functools",
    "tempfile",
    "pathlib",
}


def pages() -> list[Path]:
    return sorted(PAGES.glob("*.md"))


def blocks() -> dict[str, tuple[str, str]]:
    """name -> (language, code) of every marked block of every page."""
    found: dict[str, tuple[str, str]] = {}
    for page in pages():
        for name, language, code in MARKER.findall(page.read_text()):
            assert name not in found, f"two blocks of docs/recipes are marked recipe: {name}"
            found[name] = (language, code + "\n")
    return found


def block(name: str, language: str) -> str:
    """One marked block, of that language, exactly as written."""
    known = blocks()
    assert name in known, f"docs/recipes has no block marked <!-- recipe: {name} --> (it has {sorted(known)})"
    assert known[name][0] == language, f"recipe {name} is {known[name][0]}, not {language}"
    return known[name][1]


def recipe(*names: str) -> str:
    """The named blocks, in order, as one program; each must exist and import only what a reader has."""
    code = "\n".join(block(n, "python") for n in names)
    for node in ast.walk(ast.parse(code)):
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        for module in modules:
            assert module.split(".")[0] in ALLOWED_IMPORTS, f"recipe {names} imports {module}"
    return code


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float


def run(code: str, env: dict[str, str], workdir: Path, timeout: float, name: str = "recipe") -> Run:
    """Runs the code with the project's Python in a folder of its own (not the repository), with the
    given environment on top of this one's; the output (stdout and stderr) is kept in a file."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / f"{name}.py"
    script.write_text(code)
    log = workdir / f"{name}.log"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=workdir,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(10)
            raise AssertionError(f"{name} did not finish in {timeout} s:\n{_tail(log)}") from None
    return Run(returncode, log.read_text(errors="replace"), time.monotonic() - started)


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
