"""Markdown tables from text written for a terminal (settings' help, metrics' help, alert summaries):
names put in code spans, and what GitHub's markdown would otherwise swallow escaped."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Names a reader copies: settings and metrics. Written as code, they are also what a search finds.
_NAMES = re.compile(r"(?<![`\w])(TF_[A-Z0-9_]+[A-Z0-9]|training_filter_[a-z0-9_]+[a-z0-9]|\{\{.*?\}\})")
_CODE = re.compile(r"(`[^`]*`)")


def code_names(text: str) -> str:
    """Settings, metric names and alert templates outside code spans, put in code spans."""
    parts = _CODE.split(text)
    return "".join(p if p.startswith("`") else _NAMES.sub(r"`\1`", p) for p in parts)


def cell(text: str) -> str:
    """One table cell: a `|` would end the cell (also inside code), and outside code `<topic>` would be
    read as an HTML tag and vanish."""
    out = []
    for part in _CODE.split(" ".join(text.split())):
        if not part.startswith("`"):
            part = part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        out.append(part.replace("|", "\\|"))
    return "".join(out)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A GitHub table; `right`: the columns (by index) aligned right, for figures."""
    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)
