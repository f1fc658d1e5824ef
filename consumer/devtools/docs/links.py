"""Relative links and #anchors in the repository's markdown, resolved as GitHub resolves them: a link
to a file must name a file or folder of the checkout, an anchor a heading of the page it points at
(GitHub's slugs: lower case, punctuation dropped, spaces as hyphens, repeats numbered -1, -2, ...).
Links inside code (fenced blocks, code spans) are not links; web addresses are not checked here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

_FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
# [text](target "title") and [text]: target; images too (![alt](target)).
_INLINE = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\".*\")?\s*$", re.M)
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans (kept as blanks, so nothing else moves)."""
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return _CODE_SPAN.sub(lambda m: " " * len(m.group(0)) if "\n" not in m.group(0) else m.group(0), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page offers: its headings' slugs (numbered when repeated) and <a id>s."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in _HEADING.finditer(_FENCE.sub("", text)):
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found | set(_HTML_ANCHOR.findall(text))


def targets(text: str) -> list[str]:
    """The link targets of a page, in order, without web addresses."""
    prose = _prose(text)
    found = _INLINE.findall(prose) + _REFERENCE.findall(prose)
    return [t for t in found if not _EXTERNAL.match(t)]


@dataclass(frozen=True)
class Broken:
    page: Path
    target: str
    why: str

    def __str__(self) -> str:
        return f"{self.page}: ({self.target}) {self.why}"


def check(page: Path, root: Path) -> list[Broken]:
    """The links of one page that do not resolve inside the checkout."""
    text = page.read_text()
    broken = []
    for target in targets(text):
        path_part, _, anchor = target.partition("#")
        path = (page.parent / unquote(path_part)).resolve() if path_part else page
        if path_part and not path.is_relative_to(root.resolve()):
            broken.append(Broken(page, target, "leaves the repository"))
        elif not path.exists():
            broken.append(Broken(page, target, "no such file"))
        elif anchor and path.suffix == ".md" and unquote(anchor) not in anchors(path.read_text()):
            broken.append(Broken(page, target, f"{path.name} has no heading #{anchor}"))
    return broken
