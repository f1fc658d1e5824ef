"""The JSON examples of the documentation, found for the tests that run them (tests/unit/test_docs.py
runs `check` in-process, tests/integration/test_operator_commands.py runs `produce` on the broker).

Pages: README.md and every docs/**/*.md. What counts as an example, in fenced blocks:

- a shell command `training-filter check|produce ... --source X` (or `.venv/bin/training-filter`)
  whose input is in the docs: `echo '<JSON>' |` (with or without `| tr -d '\\n'`), a here-document
  (`<<'EOF'`), `< FILE` of a file a here-document wrote above it on the page, or `< FILE` followed
  by a block of JSON records (the file's content). A command fed by another program (`tail ... |
  produce`) or shown without input shows no JSON: not an example;
- the JSON lines after a `check` command, in its block or in the next block: the decisions it
  prints (and after them, for `--compare`, the table it prints on standard error), or for change
  events (`--source content_change|account_change`) the retractions, `{"key": ..., "value": ...}`;
- a block of JSON records with no command before it, or a here-document written to a file
  (`cat > FILE <<'END'`): an example of the source whose schema fits.

Files an example names (`--policy`, `--compare`, `--optouts`, `--consents`, `--content-changes`,
`--account-changes`) are the docs block whose first line is a comment naming them
(`# candidate-policy.toml: ...`), or a here-document written to them (`cat > FILE <<'END'`), else
the repository's file. Every JSON object in a shell or data block must belong to an example:
`ExampleError` otherwise, so that an example the tests cannot run is a failure, never silently skipped.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
SHELL = {"bash", "sh", "shell", "console", "zsh"}
DATA = {"", "json", "jsonl", "ndjson", "jsonlines", "text"}
_FENCE = re.compile(r"^ {0,3}(```+|~~~+)\s*([\w+-]*)")
_NAMED_FILE = re.compile(r"^#\s*([\w./-]+\.\w+)\b")
_WRITTEN_FILE = re.compile(r"^\s*cat\s*>\s*([\w./-]+)\s*$")
# The fields that tell a record's source: its id field.
SOURCE_IDS = {
    "post_id": "post",
    "interaction_id": "ai_interaction",
    "opted_out_at": "optout",
    "granted": "consent",
    "change": "content_change",
    "deleted": "account_change",
}


class ExampleError(AssertionError):
    """A JSON example the tests cannot place or run; the message says where."""


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    info: str
    text: str

    @property
    def where(self) -> str:
        name = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path.name
        return f"{name}:{self.line}"


@dataclass
class Example:
    where: str
    command: str  # "check", "produce", or "records" (a block of records with no command)
    source: str
    args: list[str] = field(default_factory=list)  # the command's arguments after the subcommand
    lines: list[bytes] | None = None  # standard input, one JSON line each; None: a file not shown
    decisions: list[dict[str, Any]] | None = None  # check: what the docs say it prints
    stderr: str = ""  # check --compare: the table the docs show after the decisions

    def option(self, name: str) -> str | None:
        return self.args[self.args.index(name) + 1] if name in self.args else None


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening.group(1)
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)), len(lines))
        out.append(Block(path, i + 1, opening.group(2).lower(), "\n".join(lines[i + 1 : end])))
        i = end + 1
    return out


def named_files() -> dict[str, str]:
    """File name -> content, for the blocks that start with a comment naming their file and the
    here-documents written to a file (`cat > FILE <<'END'`)."""
    files: dict[str, str] = {}
    for page in pages():
        for block in blocks(page):
            match = _NAMED_FILE.match(block.text)
            if match:
                files[match.group(1)] = block.text + "\n"
            if block.info in SHELL:
                files.update(written_files(block.text))
    return files


def written_files(text: str) -> dict[str, str]:
    """File name -> content of a shell block's `cat > FILE <<'END'` here-documents."""
    out = {}
    for line, heredoc in logical_lines(text):
        match = _WRITTEN_FILE.match(line)
        if match and heredoc is not None:
            out[match.group(1)] = heredoc
    return out


def file_text(name: str, where: str) -> str:
    shown = named_files()
    if name in shown:
        return shown[name]
    path = ROOT / name
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ExampleError(f"{where}: the example reads {name}, which neither the docs nor the repository hold")


# -- shell -------------------------------------------------------------------------------------------


def logical_lines(text: str) -> Iterator[tuple[str, str | None]]:
    """(command line, here-document or None): lines joined where a quote is open or a line ends in
    `|` or a backslash; a here-document's lines are taken as the command's input."""
    raw = text.splitlines()
    i = 0
    while i < len(raw):
        line = raw[i]
        i += 1
        while i < len(raw) and (_open_quote(line) or line.rstrip().endswith(("|", "\\"))):
            line = (line.rstrip()[:-1] if line.rstrip().endswith("\\") else line) + "\n" + raw[i]
            i += 1
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if heredoc and not _open_quote(line[: heredoc.start()]):
            body = []
            while i < len(raw) and raw[i].strip() != heredoc.group(1):
                body.append(raw[i])
                i += 1
            i += 1
            yield line[: heredoc.start()] + line[heredoc.end() :], "\n".join(body) + "\n"
        else:
            yield line, None


def _open_quote(text: str) -> bool:
    quote = None
    escaped = False
    for char in text:
        if quote is None and char == "#" and not escaped:
            break  # a comment: quotes inside it do not count
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
    return quote is not None


def _pipeline(line: str, where: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|<>;&")
    lexer.whitespace_split = True
    stages: list[list[str]] = [[]]
    for token in lexer:
        if token == "|":
            stages.append([])
        elif token in (";", "&", "&&", "||"):
            raise ExampleError(f"{where}: one command a line, please: {line.split()[0]} ...")
        else:
            stages[-1].append(token)
    return stages


@dataclass
class _Command:
    where: str
    name: str
    args: list[str]
    stdin: bytes | None  # None: read from a file
    stdin_file: str | None


def command(line: str, heredoc: str | None, where: str) -> _Command | None:
    """The `training-filter check|produce` command of a shell line, or None for any other line."""
    if "training-filter" not in line:
        return None
    stages = _pipeline(line, where)
    last = stages[-1]
    tool = next((i for i, token in enumerate(last) if token.endswith("training-filter")), None)
    if tool is None or tool + 1 >= len(last) or last[tool + 1] not in ("check", "produce"):
        return None
    args = last[tool + 2 :]
    stdin_file = None
    if "<" in args:
        at = args.index("<")
        stdin_file = args[at + 1]
        args = args[:at] + args[at + 2 :]
    data: bytes | None = heredoc.encode() if heredoc is not None else None
    if stages[:-1] and not any(stage[:1] == ["echo"] for stage in stages[:-1]):
        return None  # fed by another program (`tail ... | jq -c .value | produce`): no JSON shown
    for stage in stages[:-1]:
        if stage[:1] == ["echo"] and len(stage) == 2:
            data = stage[1].encode() + b"\n"
        elif stage == ["tr", "-d", "\\n"] and data is not None:
            data = data.replace(b"\n", b"")
        else:
            raise ExampleError(f"{where}: the tests cannot feed this pipeline: {' | '.join(s[0] for s in stages)}")
    if data is None and stdin_file is None:
        return None  # shown for its options (`check --help`), or reading a terminal: no JSON in it
    return _Command(where, last[tool + 1], args, data, stdin_file)


# -- JSON --------------------------------------------------------------------------------------------


def json_items(text: str) -> tuple[list[dict[str, Any]], str]:
    """The JSON objects a data block holds (JSON Lines, one pretty-printed object, or an array of
    them), and the text after the leading JSON lines (a table, say)."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            whole = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            pass
        else:
            items = whole if isinstance(whole, list) else [whole]
            if all(isinstance(item, dict) for item in items):
                return items, ""
    items = []
    lines = text.splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("{")):
        line = lines.pop(0)
        if line.strip():
            items.append(_object(line))
    rest = "\n".join(lines)
    return items, rest + "\n" if rest else ""


def _object(line: str) -> dict[str, Any]:
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ExampleError(f"a JSON line of the docs is not JSON ({exc.msg}): {line[:40]}") from exc
    if not isinstance(item, dict):
        raise ExampleError(f"a JSON line of the docs is not an object: {line[:40]}")
    return item


def source_of(record: dict[str, Any]) -> str | None:
    return next((source for key, source in SOURCE_IDS.items() if key in record), None)


def _is_decision(item: dict[str, Any]) -> bool:
    """What `check` prints for a line: a decision, or for a change event its retraction or error."""
    return ("decision" in item and "id" in item) or set(item) == {"key", "value"} or set(item) == {"error"}


# -- the examples ------------------------------------------------------------------------------------


def examples(paths: list[Path] | None = None) -> list[Example]:
    found: list[Example] = []
    for page in pages() if paths is None else paths:
        found += page_examples(blocks(page))
    return found


def page_examples(page: list[Block]) -> list[Example]:
    found: list[Example] = []
    pending: Example | None = None  # the last command of the previous block, if its output or input may follow
    written: dict[str, str] = {}  # the files the page's here-documents wrote so far
    for block in page:
        if block.info in SHELL:
            pending = None
            commands = 0
            for line, heredoc in logical_lines(block.text):
                if line.lstrip().startswith("{"):
                    item = _object(line)
                    if pending is None or pending.command != "check" or not _is_decision(item):
                        raise ExampleError(f"{block.where}: a JSON line that is no command's output")
                    pending.decisions = [*(pending.decisions or []), item]
                    continue
                target = _WRITTEN_FILE.match(line)
                if target and heredoc is not None:
                    written[target.group(1)] = heredoc
                    pending = None
                    if heredoc.lstrip().startswith("{"):  # a file of records: an example of their source
                        _place(block, json_items(heredoc)[0], "", None, found)
                    continue
                cmd = command(line, heredoc, f"{block.where} (command {commands + 1} of the block)")
                if cmd is not None:
                    commands += 1
                    if cmd.stdin is None and cmd.stdin_file in written:  # `< FILE` of a file written above
                        cmd.stdin = written[cmd.stdin_file].encode()
                    pending = _example(cmd)
                    found.append(pending)
        elif block.info in DATA:
            items, rest = json_items(block.text)
            if any(line.lstrip().startswith("{") for line in rest.splitlines()):
                raise ExampleError(f"{block.where}: JSON lines after other text: put them in a block of their own")
            pending = _place(block, items, rest, pending, found) if items else None
        else:
            pending = None
    return found


def _example(cmd: _Command) -> Example:
    source = cmd.args[cmd.args.index("--source") + 1] if "--source" in cmd.args else ""
    if not source:
        raise ExampleError(f"{cmd.where}: {cmd.name} without --source")
    lines = None if cmd.stdin is None else [line for line in cmd.stdin.split(b"\n") if line.strip()]
    return Example(cmd.where, cmd.name, source, cmd.args, lines)


def _place(
    block: Block, items: list[dict[str, Any]], rest: str, pending: Example | None, found: list[Example]
) -> Example | None:
    """Attach a data block to the command before it, or make it an example of its own; returns the
    example whose output may still follow (a check whose input this block was)."""
    if all(_is_decision(item) for item in items):
        if pending is None or pending.command != "check" or pending.decisions is not None:
            raise ExampleError(f"{block.where}: decisions that follow no check command")
        pending.decisions = items
        pending.stderr = rest
        return None
    if rest.strip():
        raise ExampleError(f"{block.where}: text after the JSON records")
    lines = [orjson.dumps(item) for item in items]
    if pending is not None and pending.lines is None and pending.decisions is None:  # `< FILE` before: its content
        pending.lines = lines
        return pending
    sources = {source_of(item) for item in items}
    if len(sources) != 1 or None in sources:
        raise ExampleError(f"{block.where}: JSON records of no single known source ({sorted(map(str, sources))})")
    found.append(Example(block.where, "records", sources.pop() or "", lines=lines))
    return None
