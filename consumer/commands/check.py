"""`training-filter check`: the policy debugger. JSON Lines in, one decision per line out."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from consumer.commands.jsonl import JsonRecordError, parse_line, to_avro
from consumer.wire.codec import AI_INTERACTION, POST, SchemaCatalog
from rules import Decider, Policy, Reason, Source

SOURCES = {
    "post": (Source.POST, POST, "post_id"),
    "ai_interaction": (Source.AI_INTERACTION, AI_INTERACTION, "interaction_id"),
}


def read_optouts(path: Path) -> frozenset[str]:
    """One user id a line; blank lines are ignored; ids are taken exactly as written (no trimming
    beyond the line break), because opt-out matching is exact."""
    with path.open("r", encoding="utf-8") as handle:
        return frozenset(line.rstrip("\r\n") for line in handle if line.strip())


def decisions(
    lines: Iterable[str | bytes],
    source: str,
    policy: Policy,
    optouts: frozenset[str],
    catalog: SchemaCatalog,
    consents: frozenset[str] = frozenset(),
) -> Iterator[dict[str, Any]]:
    kind, schema_name, id_field = SOURCES[source]
    schema = catalog.by_name(schema_name).parsed
    decider = Decider(policy)
    opted_out = optouts.__contains__
    consented = consents.__contains__
    for line in lines:
        if not line.strip():
            continue
        record_id = None
        try:
            obj = parse_line(line)
            if isinstance(obj, dict) and isinstance(obj.get(id_field), str):
                record_id = obj[id_field]
            record = to_avro(obj, schema)
            reason = decider.decide_record(kind, record, opted_out, consented)
        except JsonRecordError:
            reason = Reason.MALFORMED
        yield {"id": record_id, "decision": str(reason)}


def run_check(
    source: str,
    policy: Policy,
    optouts_path: Path | None,
    stdin: IO[bytes],
    stdout: IO[bytes],
    consents_path: Path | None = None,
) -> int:
    optouts = read_optouts(optouts_path) if optouts_path else frozenset()
    consents = read_optouts(consents_path) if consents_path else frozenset()  # the same form: one user id a line
    catalog = SchemaCatalog()
    for decision in decisions(stdin, source, policy, optouts, catalog, consents):
        stdout.write(orjson.dumps(decision) + b"\n")
    stdout.flush()
    return 0


def main_check(args: Any) -> int:
    return run_check(
        args.source, args.policy_obj, args.optouts, sys.stdin.buffer, sys.stdout.buffer, getattr(args, "consents", None)
    )
