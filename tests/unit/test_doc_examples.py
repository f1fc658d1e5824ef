"""Every JSON example in the docs (README.md and docs/**/*.md) does what they say (tests/doc_examples.py
finds them): `check` examples run here, in-process; `produce` examples run on the broker in
tests/integration/test_operator_commands.py."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from consumer.commands.change_lines import CHANGE_SOURCES
from consumer.commands.check import comparison_table, run_check
from consumer.commands.jsonl import parse_line, to_avro
from consumer.commands.topic_io import SOURCES
from consumer.wire.codec import SchemaCatalog
from rules import REASONS, Reason, load_policy, parse_policy
from tests import doc_examples
from tests.doc_examples import Example, ExampleError

EXAMPLES = doc_examples.examples()
CATALOG = SchemaCatalog()


# -- the JSON examples ---------------------------------------------------------------------------------

CHECKS = [e for e in EXAMPLES if e.command == "check" and e.lines is not None]
RECORDS = [e for e in EXAMPLES if e.command in ("produce", "records") and e.lines is not None]
SHOWN_WITHOUT_INPUT = [e for e in EXAMPLES if e.command == "check" and e.lines is None and e.decisions]


def test_the_docs_hold_json_examples_and_the_tests_find_them():
    """Zero examples found means the finder is broken or the docs lost them: both are failures."""
    assert CHECKS, "no `training-filter check` example with its input in the docs"
    assert RECORDS, "no `training-filter produce` example (or block of records) with its input in the docs"
    assert all(e.lines for e in CHECKS + RECORDS), "an example with an empty input"


def _policy(example: Example, option: str):
    name = example.option(option)
    if name is None:
        return load_policy() if option == "--policy" else None
    return parse_policy(doc_examples.file_text(name, example.where), name)


def run_check_example(example: Example, tmp_path: Path) -> tuple[list[dict], str]:
    files = {}
    for option in ("--optouts", "--consents", "--content-changes", "--account-changes"):
        name = example.option(option)
        if name is not None:
            files[option] = tmp_path / Path(name).name
            files[option].write_text(doc_examples.file_text(name, example.where))
    stdout, stderr = io.BytesIO(), io.StringIO()
    code = run_check(
        example.source,
        _policy(example, "--policy"),
        files.get("--optouts"),
        io.BytesIO(b"\n".join(example.lines or [])),
        stdout,
        files.get("--consents"),
        _policy(example, "--compare"),
        stderr,
        content_changes=files.get("--content-changes"),
        account_changes=files.get("--account-changes"),
    )
    assert code == 0, example.where
    return [orjson.loads(line) for line in stdout.getvalue().splitlines()], stderr.getvalue()


@pytest.mark.parametrize("example", CHECKS, ids=[e.where for e in CHECKS])
def test_every_check_example_prints_what_the_docs_show(example, tmp_path):
    decisions, table = run_check_example(example, tmp_path)
    assert len(decisions) == len(example.lines or [])
    if example.decisions is not None:
        assert decisions == example.decisions, example.where
        assert table == example.stderr or not example.stderr, example.where
    elif example.source in CHANGE_SOURCES:  # no output shown: then the example is at least a valid change
        assert not [d for d in decisions if "error" in d], example.where
    else:  # no output shown: then the example is at least a valid record
        assert Reason.MALFORMED not in {d["decision"] for d in decisions}, example.where


@pytest.mark.parametrize("example", SHOWN_WITHOUT_INPUT, ids=[e.where for e in SHOWN_WITHOUT_INPUT])
def test_decisions_shown_without_their_input_are_what_check_would_print(example):
    """The input (a file) is not in the docs; the decisions must still be real reasons, the table
    the one `check --compare` prints for exactly these decisions, under the policies the command names."""
    assert example.decisions
    pairs: dict[tuple[Reason, Reason], int] = {}
    for decision in example.decisions:
        assert set(decision) <= {"id", "decision", "shadow"}, example.where
        assert decision["decision"] in REASONS, example.where
        if "shadow" in decision:
            key = (Reason(decision["decision"]), Reason(decision["shadow"]))
            pairs[key] = pairs.get(key, 0) + 1
    shadow = _policy(example, "--compare")
    if shadow is None:
        assert not example.stderr.strip(), f"{example.where}: a table without --compare"
        return
    assert example.stderr == comparison_table(pairs, _policy(example, "--policy").version, shadow.version)


@pytest.mark.parametrize("example", RECORDS, ids=[e.where for e in RECORDS])
def test_every_record_example_is_a_valid_record_of_its_source(example):
    name, _key = SOURCES[example.source]
    for line in example.lines or []:
        to_avro(parse_line(line), CATALOG.by_name(name).parsed)


SAMPLE_PAGE = """\
# A page

```bash
echo '{"post_id":"p1","author_id":"u1",
  "author_country":"SE"}' | tr -d '\\n' | training-filter check --source post   # a comment
{"id":"p1","decision":"malformed"}
training-filter produce --topic t --source optout <<'END'
{"user_id":"u1","opted_out_at":0,"source":"form"}
{"user_id":"u2","opted_out_at":1,"source":"form"}
END
training-filter check --source ai_interaction < interactions.jsonl
training-filter tail --topic t | jq -c .value | training-filter produce --topic u --source post
training-filter check --help
make demo
```

Where interactions.jsonl holds:

```json
{"interaction_id":"i1","user_id":"u"}
```
```
{"id":"i1","decision":"malformed"}
```

A record on its own:

```json
{
  "user_id": "u9",
  "granted": true,
  "at": "2026-01-01T00:00:00Z",
  "source": "settings"
}
```

```python
print({"not": "an example"})
```
"""


def test_the_finder_reads_every_form_an_example_takes(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(SAMPLE_PAGE)
    found = doc_examples.examples([page])
    assert [(e.command, e.source, len(e.lines or []), e.decisions) for e in found] == [
        ("check", "post", 1, [{"id": "p1", "decision": "malformed"}]),
        ("produce", "optout", 2, None),
        ("check", "ai_interaction", 1, [{"id": "i1", "decision": "malformed"}]),
        ("records", "consent", 1, None),
    ]
    assert found[0].lines == [b'{"post_id":"p1","author_id":"u1",  "author_country":"SE"}']
    assert orjson.loads(found[3].lines[0])["granted"] is True


CHANGES_PAGE = """\
```bash
cat > content-changes.jsonl <<'END'
{"record_id":"p1","user_id":"u1","change":"DELETED","at":0,"source":"s"}
END
cat > notes.txt <<'END'
not JSON, not an example
END
training-filter check --source post --content-changes content-changes.jsonl < posts.jsonl
training-filter check --source account_change <<'END'
{"user_id":"u1","deleted":true,"country":"DE","at":0,"source":"s"}
END
{"key":null,"value":{"reason":"account_deleted"}}
{"error":"missing required field 'at'"}
training-filter check --source content_change < content-changes.jsonl
```
"""


def test_the_finder_reads_change_files_and_the_retractions_check_prints(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(CHANGES_PAGE)
    found = doc_examples.examples([page])
    assert [(e.command, e.source, len(e.lines or []), e.decisions) for e in found] == [
        ("records", "content_change", 1, None),  # the file's records: valid, and produced on the broker
        ("check", "post", 0, None),
        (
            "check",
            "account_change",
            1,
            [{"key": None, "value": {"reason": "account_deleted"}}, {"error": "missing required field 'at'"}],
        ),
        ("check", "content_change", 1, None),  # its input: the file written above
    ]
    assert found[1].option("--content-changes") == "content-changes.jsonl"
    written = doc_examples.written_files(doc_examples.blocks(page)[0].text)
    assert written["content-changes.jsonl"].startswith('{"record_id":"p1"')
    assert set(written) == {"content-changes.jsonl", "notes.txt"}


@pytest.mark.parametrize(
    "text,error",
    [
        ('```\n{"id":"p1","decision":"eligible"}\n```\n', "follow no check command"),
        ('```json\n{"surname":"x"}\n```\n', "no single known source"),
        ("```bash\necho '{}' | jq . | training-filter check --source post\n```\n", "cannot feed this pipeline"),
        ('```bash\n{"id":"p1","decision":"eligible"}\n```\n', "no command's output"),
        ('```\nsome text\n{"post_id":"p"}\n```\n', "JSON lines after other text"),
        ('```json\n{"post_id": \n```\n', "not JSON"),
    ],
)
def test_an_example_the_tests_cannot_run_is_a_failure(tmp_path, text, error):
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(ExampleError, match=error):
        doc_examples.examples([page])
