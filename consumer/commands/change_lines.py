"""Change events as JSON Lines (docs/retractions.md#the-input-contract-for-changes), for `produce
--source content_change|account_change` and `check`: a line becomes the Avro record the change topics
carry, and a file of them becomes what the service's change set would know (`KnownChanges`).

The lines are read as strictly as the other sources (consumer/commands/jsonl.py), and a little more:
a change whose record id or user id is empty is refused, because the service cannot read it as what
it says (consumer/changes/records.py takes it as unreadable). An error names the field, never its value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.commands.jsonl import JsonRecordError, parse_line, to_avro
from consumer.wire.codec import ACCOUNT_CHANGE, CONTENT_CHANGE, SchemaCatalog
from rules import AccountFacts

# Source name -> (schema, the field that is the Kafka key: docs/retractions.md).
CHANGE_SOURCES = {
    "content_change": (CONTENT_CHANGE, "record_id"),
    "account_change": (ACCOUNT_CHANGE, "user_id"),
}
_IDS = {"content_change": ("record_id", "user_id"), "account_change": ("user_id",)}


class ChangeFileError(ValueError):
    """A change file that cannot be used whole: the message names the file and the line."""


def require_ids(source: str, record: dict[str, Any]) -> None:
    """JsonRecordError if a change record's ids are empty (no-op for the other sources)."""
    for name in _IDS.get(source, ()):
        if not record[name]:
            raise JsonRecordError(f"field '{name}' must not be empty")


def change_record(line: str | bytes, source: str, catalog: SchemaCatalog) -> dict[str, Any]:
    """The Avro record (raw types: int days, int ms) of one change line, or JsonRecordError."""
    name, _key = CHANGE_SOURCES[source]
    record = to_avro(parse_line(line), catalog.by_name(name).parsed)
    require_ids(source, record)
    return record


def facts_of(record: dict[str, Any]) -> AccountFacts:
    """An AccountChange record's facts, as the service's change set keeps them."""
    return AccountFacts(record["deleted"], record["birth_date"], record["country"])


@dataclass
class KnownChanges:
    """What the service's change set holds after reading these changes in order: the record ids a
    content change stopped, each account's latest facts (a change states them as a whole), and the
    accounts ever deleted (a deletion is final: the service keeps them out through the opt-out
    filter, whatever a later change says). Keyed by user id, not pseudonym: `check` has no key."""

    stopped: set[str] = field(default_factory=set)
    accounts: dict[str, AccountFacts] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)

    def add(self, source: str, record: dict[str, Any]) -> None:
        if source == "content_change":
            self.stopped.add(record["record_id"])
            return
        facts = facts_of(record)
        self.accounts[record["user_id"]] = facts
        if facts.deleted:
            self.deleted.add(record["user_id"])


def read_changes(
    catalog: SchemaCatalog, content: Path | None = None, accounts: Path | None = None
) -> KnownChanges | None:
    """The changes of the two files (None if neither is given). Any bad line refuses the whole file
    (ChangeFileError): deciding with part of the changes could admit what a change stops."""
    if content is None and accounts is None:
        return None
    known = KnownChanges()
    for source, option, path in (
        ("content_change", "--content-changes", content),
        ("account_change", "--account-changes", accounts),
    ):
        if path is None:
            continue
        try:
            with path.open("rb") as handle:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        known.add(source, _line(line, source, catalog, f"{option} {path}: line {number}"))
        except OSError as exc:
            raise ChangeFileError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from exc
    return known


def _line(line: bytes, source: str, catalog: SchemaCatalog, where: str) -> dict[str, Any]:
    try:
        return change_record(line, source, catalog)
    except JsonRecordError as exc:
        raise ChangeFileError(f"{where}: {exc}") from exc
