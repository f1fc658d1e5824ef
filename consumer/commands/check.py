"""`training-filter check`: the policy debugger. JSON Lines in, one decision per line out.

With `--compare FILE` every line is decided by a second, candidate policy too (as the service's
shadow evaluation does, TF_SHADOW_POLICY_FILE): each output line gains `"shadow"`, and the table of
records by (active decision, shadow decision) is printed to standard error at the end.

With `--content-changes FILE` and `--account-changes FILE` each record is decided as the service
decides it now that it has read those changes (consumer/commands/check_changes.py). With `--source
content_change|account_change` the lines are changes, and what is printed is the retraction each one
makes the service write (consumer/commands/retraction_preview.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from consumer.commands.change_lines import CHANGE_SOURCES, ChangeFileError, KnownChanges, read_changes
from consumer.commands.check_changes import decide_now
from consumer.commands.jsonl import JsonRecordError, dumps, parse_line, to_avro
from consumer.commands.retraction_preview import previews
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.datapath.shadow import would_add, would_remove
from consumer.wire.codec import AI_INTERACTION, POST, Codec, SchemaCatalog
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
    changes: KnownChanges | None = None,
) -> Iterator[dict[str, Any]]:
    """{"id", "decision"} per non-blank line; with `shadow_policy`, also "shadow": its decision.
    `latest_ms`: the latest plausible created_at (default: now plus the service's default clock skew).
    `changes`: the change events read, applied as the service applies them."""
    if latest_ms is None:
        latest_ms = int(time.time() * 1000) + DEFAULT_CLOCK_SKEW_MS
    kind, schema_name, id_field = SOURCES[source]
    schema = catalog.by_name(schema_name).parsed
    opted_out = optouts.__contains__
    consented = consents.__contains__
    decide = _decide_record(Decider(policy), changes)
    shadow = _decide_record(Decider(shadow_policy), changes) if shadow_policy is not None else None
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
            reason = decide(kind, record, latest_ms, opted_out, consented)
        except JsonRecordError:
            reason = Reason.MALFORMED
        if shadow is None:
            yield {"id": record_id, "decision": str(reason)}
            continue
        # The same opt-out list as the active decision's, as in the service.
        other = Reason.MALFORMED if record is None else shadow(kind, record, latest_ms, opted_out, consented)
        yield {"id": record_id, "decision": str(reason), "shadow": str(other)}


def _decide_record(decider: Decider, changes: KnownChanges | None) -> Callable[..., Reason]:
    """decider.decide_record, or with changes, the decision as the service makes it now."""
    if changes is None:
        return decider.decide_record

    def decide(kind: Source, record: dict[str, Any], latest_ms: int, opted_out: Any, consented: Any) -> Reason:
        return decide_now(decider, kind, record, latest_ms, opted_out, consented, changes)

    return decide


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
    content_changes: Path | None = None,
    account_changes: Path | None = None,
    hmac_key: bytes | None = None,
) -> int:
    """0 after all input; 2 when a change file cannot be used; with a change source, 1 if a line was bad."""
    errors = stderr or sys.stderr
    if source in CHANGE_SOURCES:
        return run_previews(source, policy, stdin, stdout, errors, hmac_key)
    optouts = read_optouts(optouts_path) if optouts_path else frozenset()
    consents = read_optouts(consents_path) if consents_path else frozenset()  # the same form: one user id a line
    catalog = SchemaCatalog()
    try:
        changes = read_changes(catalog, content_changes, account_changes)
    except ChangeFileError as exc:
        print(f"training-filter check: {exc}", file=errors)
        return 2
    pairs: dict[tuple[Reason, Reason], int] = {}
    for decision in decisions(stdin, source, policy, optouts, catalog, consents, shadow_policy, latest_ms, changes):
        stdout.write(orjson.dumps(decision) + b"\n")
        if shadow_policy is not None:
            key = (Reason(decision["decision"]), Reason(decision["shadow"]))
            pairs[key] = pairs.get(key, 0) + 1
    stdout.flush()
    if shadow_policy is not None:
        errors.write(comparison_table(pairs, policy.version, shadow_policy.version))
    return 0


def run_previews(
    source: str, policy: Policy, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[str], hmac_key: bytes | None
) -> int:
    """The retraction of each change line (consumer/commands/retraction_preview.py); 1 if a line was bad."""
    if hmac_key is None:
        print(
            "training-filter check: no HMAC key (--hmac-key-file, TF_HMAC_KEY_FILE or TF_HMAC_KEY): "
            "pseudonyms, and so account keys, are printed as null",
            file=stderr,
        )
    pseudonymiser = Pseudonymiser(hmac_key) if hmac_key is not None else None
    bad = 0
    for number, shown in previews(stdin, source, Decider(policy), pseudonymiser, Codec()):
        if "error" in shown:
            bad += 1
            print(f"line {number}: {shown['error']}", file=stderr)
        stdout.write(dumps(shown) + b"\n")
    stdout.flush()
    return 1 if bad else 0


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
        content_changes=getattr(args, "content_changes", None),
        account_changes=getattr(args, "account_changes", None),
        hmac_key=getattr(args, "hmac_key", None),
    )
