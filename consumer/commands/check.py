"""`training-filter check`: the policy debugger. JSON Lines in, one decision per line out.

With `--compare FILE` every line is decided by a second, candidate policy too (as the service's
shadow evaluation does, TF_SHADOW_POLICY_FILE): each output line gains `"shadow"`, and the table of
records by (active decision, shadow decision) is printed to standard error at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from consumer.commands.jsonl import JsonRecordError, parse_line, to_avro
from consumer.datapath.shadow import would_add, would_remove
from consumer.wire.codec import AI_INTERACTION, POST, SchemaCatalog
from rules import DEFAULT_CLOCK_SKEW_MS, REASONS, Decider, Policy, Reason, Source

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
    shadow_policy: Policy | None = None,
    latest_ms: int | None = None,
) -> Iterator[dict[str, Any]]:
    """{"id", "decision"} per non-blank line; with `shadow_policy`, also "shadow": its decision.
    `latest_ms`: the latest plausible created_at (default: now plus the service's default clock skew)."""
    if latest_ms is None:
        latest_ms = int(time.time() * 1000) + DEFAULT_CLOCK_SKEW_MS
    kind, schema_name, id_field = SOURCES[source]
    schema = catalog.by_name(schema_name).parsed
    decider = Decider(policy)
    shadow = Decider(shadow_policy) if shadow_policy is not None else None
    opted_out = optouts.__contains__
    consented = consents.__contains__
    for line in lines:
        if not line.strip():
            continue
        record_id = None
        record = None
        try:
            obj = parse_line(line)
            if isinstance(obj, dict) and isinstance(obj.get(id_field), str):
                record_id = obj[id_field]
            record = to_avro(obj, schema)
            reason = decider.decide_record(kind, record, latest_ms, opted_out, consented)
        except JsonRecordError:
            reason = Reason.MALFORMED
        if shadow is None:
            yield {"id": record_id, "decision": str(reason)}
            continue
        # The same opt-out list as the active decision's, as in the service.
        other = (
            Reason.MALFORMED if record is None else shadow.decide_record(kind, record, latest_ms, opted_out, consented)
        )
        yield {"id": record_id, "decision": str(reason), "shadow": str(other)}


def comparison_table(pairs: dict[tuple[Reason, Reason], int], active_version: str, shadow_version: str) -> str:
    """Records by (active decision, shadow decision), in the reasons' order, and what would change."""
    total = sum(pairs.values())
    lines = [
        f"active policy {active_version}, shadow policy {shadow_version}: {total} records",
        f"{'active':<16}{'shadow':<16}{'records':>8}",
    ]
    for active in REASONS:
        for shadow in REASONS:
            count = pairs.get((active, shadow), 0)
            if count:
                mark = "" if active == shadow else "  (changes)"
                lines.append(f"{active:<16}{shadow:<16}{count:>8}{mark}")
    lines.append(
        f"would add {would_add(pairs)} (eligible under the shadow policy only), "
        f"would remove {would_remove(pairs)} (eligible under the active policy only)"
    )
    return "\n".join(lines) + "\n"


def run_check(
    source: str,
    policy: Policy,
    optouts_path: Path | None,
    stdin: IO[bytes],
    stdout: IO[bytes],
    consents_path: Path | None = None,
    shadow_policy: Policy | None = None,
    stderr: IO[str] | None = None,
    latest_ms: int | None = None,
) -> int:
    optouts = read_optouts(optouts_path) if optouts_path else frozenset()
    consents = read_optouts(consents_path) if consents_path else frozenset()  # the same form: one user id a line
    catalog = SchemaCatalog()
    pairs: dict[tuple[Reason, Reason], int] = {}
    for decision in decisions(stdin, source, policy, optouts, catalog, consents, shadow_policy, latest_ms):
        stdout.write(orjson.dumps(decision) + b"\n")
        if shadow_policy is not None:
            key = (Reason(decision["decision"]), Reason(decision["shadow"]))
            pairs[key] = pairs.get(key, 0) + 1
    stdout.flush()
    if shadow_policy is not None:
        (stderr or sys.stderr).write(comparison_table(pairs, policy.version, shadow_policy.version))
    return 0


def main_check(args: Any) -> int:
    return run_check(
        args.source,
        args.policy_obj,
        args.optouts,
        sys.stdin.buffer,
        sys.stdout.buffer,
        getattr(args, "consents", None),
        getattr(args, "compare_obj", None),
        latest_ms=getattr(args, "latest_ms", None),
    )
