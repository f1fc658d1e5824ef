"""The size rules of CONTRIBUTING.md, checked: no class over 250 lines and no function over 80, in the
service, the rules, the tests and the tools. A part that grows past them is split before it lands."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("consumer", "rules", "tests", "deploy/image")
MAX_CLASS = 250
MAX_FUNCTION = 80


def oversized() -> list[str]:
    found = []
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            if any(part in {".venv", "node_modules", "build"} for part in path.parts):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    limit = MAX_CLASS
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    limit = MAX_FUNCTION
                else:
                    continue
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines (at most {limit})")
    return found


def test_no_class_over_250_lines_and_no_function_over_80():
    assert oversized() == []


def test_the_check_finds_an_oversized_function(tmp_path, monkeypatch):
    # The check itself can fail: a generated 81-line function in a folder it walks is reported.
    package = tmp_path / "consumer"
    package.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(80))
    (package / "big.py").write_text(f"def big():\n{body}")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "FOLDERS", ("consumer",))
    assert oversized() == ["consumer/big.py:1 big: 81 lines (at most 80)"]
