"""A real headless browser for the tests: Debian's chromium, run once per page.

`render` loads a file, and returns the DOM as chromium built it (`--dump-dom`) and every console
message the page produced (`--enable-logging=stderr --v=0` prints each as a `CONSOLE` log line,
uncaught exceptions included). A missing chromium is a test failure saying how to install it, never
a skip: `make browser` (as root; `.ci/run` does it) or `apt-get install chromium`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    """TF_TEST_CHROMIUM, else the first of NAMES on PATH; else the test fails with what to install."""
    given = os.environ.get("TF_TEST_CHROMIUM")
    found = given or next((path for name in NAMES if (path := shutil.which(name))), None)
    if not found:
        pytest.fail(
            "the report's browser test needs a headless chromium and none is installed: run `make browser` as "
            "root (it runs `apt-get install chromium`), or set TF_TEST_CHROMIUM to a chromium binary",
            pytrace=False,
        )
    return found


@dataclass
class Rendered:
    dom: str
    console: list[str]  # the page's console messages and uncaught errors, one a line
    figures: dict[str, int] = field(default_factory=dict)  # <figure> id -> the <svg> elements in it
    scripts: int = 0


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, int] = {}
        self.scripts = 0
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "figure":
            ident = dict(attrs).get("id") or f"(figure {len(self.figures) + 1} without an id)"
            self.figures[ident] = 0
            self._open.append(ident)
        elif tag == "svg" and self._open:
            self.figures[self._open[-1]] += 1
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure" and self._open:
            self._open.pop()


def render(page: Path, timeout: float = 90.0) -> Rendered:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={page.parent / '.chromium-profile'}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-3000:]}"
    assert "<html" in result.stdout, f"chromium printed no DOM: {result.stderr[-3000:]}"
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    parser = _Figures()
    parser.feed(result.stdout)
    return Rendered(result.stdout, console, parser.figures, parser.scripts)
