"""The generated regions of the documentation: the text between `<!-- generated: NAME -->` and
`<!-- end generated -->` belongs to the generator NAME and is rewritten by `make docs`; the rest of a
page is written by hand. A region name the generator does not know, or a marker without its end, is
an error: a silently skipped region would go stale without anyone noticing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

# Markers stand on lines of their own, so a page can quote them inside a sentence.
START = re.compile(r"^<!-- generated: ([a-z0-9-]+) -->$", re.M)
END = re.compile(r"^<!-- end generated -->$", re.M)
# The pages that may hold generated regions (and that the link check reads): the repository's own
# markdown, not what tools and packages bring into a checkout.
SKIPPED_DIRS = {".venv", ".tools", "node_modules", ".git", "build", "dist", ".pytest_cache", ".mypy_cache"}


class RegionError(ValueError):
    """A page's markers are malformed or name an unknown generator."""


def pages(root: Path) -> list[Path]:
    """Every markdown file of the repository, sorted."""
    found = []
    for path in root.rglob("*.md"):
        parts = path.relative_to(root).parts
        if not any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in parts):
            found.append(path)
    return sorted(found)


def names(text: str) -> list[str]:
    """The region names of a page, in order."""
    return START.findall(text)


def rewrite(text: str, render: Callable[[str], str], where: str = "page") -> str:
    """`text` with every region's content replaced by `render(name)` (a blank line either side)."""
    out: list[str] = []
    position = 0
    for start in START.finditer(text):
        end = END.search(text, start.end())
        nested = START.search(text, start.end(), end.start() if end else len(text))
        if end is None or nested:
            raise RegionError(f"{where}: {start.group(0)} has no <!-- end generated --> before the next region")
        out += [text[position : start.end()], "\n\n", render(start.group(1)).strip("\n"), "\n\n"]
        position = end.start()
    out.append(text[position:])
    return "".join(out)


def stale(root: Path, render: Callable[[str], str], paths: Iterable[Path] | None = None) -> list[Path]:
    """The pages whose regions differ from what the generators give now."""
    return [p for p in paths or pages(root) if rewrite(p.read_text(), render, str(p)) != p.read_text()]


def update(root: Path, render: Callable[[str], str]) -> list[Path]:
    """Rewrites the stale pages in place; returns them."""
    changed = stale(root, render)
    for path in changed:
        path.write_text(rewrite(path.read_text(), render, str(path)))
    return changed
