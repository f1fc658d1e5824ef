"""`training-filter audit verify`: the decision receipts of a window checked against the topics, by a
process that trusts nothing but the topics and the receipts' signatures (docs/audit.md#verifying).

It reads (consumer/audit/verifier.py), decides every receipt's range again and compares
(consumer/audit/verify_pass.py), prints each discrepancy in words an auditor can act on, with progress
on standard error, and, unless `--no-record`, writes its VerificationResult, signed with the audit
key, to the audit topic (key `verification/<started_at ms>`), where the report finds it.

Exit status: 0 every check passed; 1 discrepancies (each listed) or a topic that could not be read;
2 a configuration error (TF_* variables or options), with what to fix.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from consumer import __version__
from consumer.audit.findings import Findings
from consumer.audit.receipts import MIN_AUDIT_KEY_BYTES, VERIFICATION, sign
from consumer.audit.redecide import PolicyFolderError, Redecider, kept_policies
from consumer.audit.verifier import Reading, Window
from consumer.audit.verify_pass import Pass, Totals
from consumer.commands.backfill_scope import parse_offsets, time_bounds
from consumer.commands.guarded import UsageError, guarded
from consumer.commands.progress import Progress
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations import logs
from consumer.operations.clients import Clients, KafkaClients
from consumer.operations.metrics import Metrics
from consumer.operations.settings import Settings, load_settings
from consumer.service.assemble import Builder
from consumer.service.state import State
from consumer.wire.codec import Codec
from consumer.wire.registry import Registry

SHOWN_AT_MOST = 200  # discrepancies printed as text (--json and the recorded result keep up to 1,000)


@dataclass(frozen=True)
class Audit:
    key: bytes
    topic: str


def audit_settings(settings: Settings) -> Audit:
    """The audit key and topic, as the service's settings read and checked them (TF_AUDIT_KEY_FILE or
    TF_AUDIT_KEY: at least 32 bytes, never the pseudonymisation key; TF_AUDIT_TOPIC)."""
    if settings.audit_key is None:
        raise UsageError(
            "the audit key (TF_AUDIT_KEY_FILE or TF_AUDIT_KEY) is missing: "
            f"give the key the service signs receipts with (at least {MIN_AUDIT_KEY_BYTES} bytes)"
        )
    return Audit(settings.audit_key, settings.audit_topic)


def window_of(args: Any) -> Window:
    since, until = time_bounds(args)
    offsets = parse_offsets(args.offsets or [])
    if offsets and (since is not None or until is not None):
        raise UsageError("--offsets is a window of its own: give it without --since and --until")
    return Window(since, until, offsets)


def policies_of(args: Any, env: dict[str, str], err: IO[str]) -> dict[str, Any]:
    """The kept policies by hash; each file that does not load named on `err`, with why (a receipt
    decided under it would otherwise be an unexplained `unknown_policy`)."""

    def skipped(path: Path, why: str) -> None:
        err.write(f"audit verify: --policies: {path} does not load, left out: {why}\n")

    folder = args.policies or (str(Path(env["TF_POLICY_FILE"]).parent) if env.get("TF_POLICY_FILE") else None)
    if folder is None:
        raise UsageError("give --policies DIR, the folder of every policy file deployed (or set TF_POLICY_FILE)")
    try:
        return kept_policies(Path(folder), skipped)
    except PolicyFolderError as exc:
        raise UsageError(f"--policies {exc}") from exc


def verify(
    settings: Settings, audit: Audit, window: Window, policies: dict[str, Any], clients: Clients, err: IO[str]
) -> dict[str, Any]:
    """Every check; the summary (the VerificationResult's fields, and the counts by kind)."""
    started = int(time.time() * 1000)
    s = settings
    codec = Codec(registry=Registry(s.registry) if s.registry is not None else None, max_value_bytes=s.max_value_bytes)
    pseudonymiser = Pseudonymiser(s.hmac_key)
    findings = Findings()
    reading = Reading(s, audit.key, audit.topic, clients, codec)
    try:
        read = reading.read(window, findings, err)
        limits = Builder(s, clients, codec, pseudonymiser, Metrics(), logs.get("training_filter.audit_verify"))
        redecider = Redecider(s, clients, codec, pseudonymiser, limits.output_limits())
        progress = Progress("audit verify", sum(sp.end - sp.start for sp in read.hull.values()), err)
        grace_ms = int(max(60.0, 2 * s.optout_max_lag_seconds) * 1000)
        before = min(window.until_ms or started, started - grace_ms)
        totals = Pass(s, clients, codec, pseudonymiser, redecider, policies, findings).run(
            read, reading.config(True), progress.update, before, reading.emitter_committed()
        )
        progress.finish()
    finally:
        reading.close()
    return _summary(started, window, totals, read.audit_receipts, read.emitted.records, findings)


def _summary(
    started: int, window: Window, totals: Totals, audit_receipts: int, training: int, findings: Findings
) -> dict[str, Any]:
    return {
        "started_at": started,
        "finished_at": int(time.time() * 1000),
        "window_from": window.since_ms,
        "window_until": window.until_ms,
        "offsets": sorted(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in window.offsets.items()),
        "receipts": totals.receipts,
        "receipts_read": audit_receipts,
        "records": totals.records,
        "training_records_read": training,
        "revocations_checked": totals.revocations,
        "feed_states_built": totals.feed_states,
        "passed": findings.count == 0,
        "discrepancy_count": findings.count,
        "by_kind": dict(sorted(findings.by_kind.items())),
        "discrepancies": [d.as_record() for d in findings.first()],
        "service_version": __version__,
    }


def describe(d: dict[str, Any]) -> str:
    lines = [
        f"audit verify: {d['receipts']:,} receipts checked ({d['receipts_read']:,} read), {d['records']:,} input "
        f"records re-decided, {d['training_records_read']:,} training records compared, "
        f"{d['revocations_checked']:,} retractions looked up",
    ]
    if d["passed"]:
        lines.append("PASSED: every receipt verifies, covers its input and re-decides to what was emitted")
    else:
        kinds = ", ".join(f"{k} {n:,}" for k, n in d["by_kind"].items())
        lines.append(f"FAILED: {d['discrepancy_count']:,} discrepancies ({kinds})")
        from consumer.audit.findings import Discrepancy

        for item in d["discrepancies"][:SHOWN_AT_MOST]:
            lines.append("  " + Discrepancy(**item).line())
        if d["discrepancy_count"] > SHOWN_AT_MOST:
            lines.append(f"  ... and {d['discrepancy_count'] - SHOWN_AT_MOST:,} more (--json lists up to 1,000)")
    return "\n".join(lines) + "\n"


def record(settings: Settings, audit: Audit, summary: dict[str, Any], clients: Clients) -> None:
    """The VerificationResult, signed, on the audit topic (acknowledged before the command exits)."""
    codec = Codec(registry=Registry(settings.registry) if settings.registry is not None else None)
    if settings.registry is not None:
        codec.prepare_write(VERIFICATION, f"{audit.topic}-value")
    fields = ("started_at", "finished_at", "window_from", "window_until", "receipts", "records", "passed")
    result = {k: summary[k] for k in fields}
    result.update(
        discrepancies=summary["discrepancies"],
        discrepancy_count=summary["discrepancy_count"],
        service_version=summary["service_version"],
        hmac_sha256="",
    )
    import datetime as dt

    for k in ("started_at", "finished_at", "window_from", "window_until"):
        if result[k] is not None:
            result[k] = dt.datetime.fromtimestamp(result[k] / 1000, dt.UTC)
    value = codec.encode(VERIFICATION, sign(codec, audit.key, result, VERIFICATION))
    producer = clients.producer(settings.producer_config(**{"enable.idempotence": True, "acks": "all"}))
    failed: list[str] = []
    producer.produce(
        audit.topic,
        value,
        f"verification/{summary['started_at']}".encode(),
        on_delivery=lambda e, m: failed.append(e.name()) if e is not None else None,
    )
    if producer.flush(30) > 0 or failed:
        raise UsageError(
            f"TF_AUDIT_TOPIC={audit.topic}: the result could not be written "
            f"({failed[0] if failed else 'not acknowledged'}): grant Write on it, or give --no-record"
        )


def main_audit_verify(args: Any, out: IO[str], err: IO[str], clients: Clients | None = None) -> int:
    def body(state: State) -> int:
        env = dict(os.environ)
        window = window_of(args)
        settings = load_settings(env)
        audit = audit_settings(settings)
        policies = policies_of(args, env, err)
        logs.configure(settings.log_level, stream=getattr(err, "buffer", None))  # stdout is the summary's
        kafka = clients or KafkaClients()
        summary = verify(settings, audit, window, policies, kafka, err)
        if not args.no_record:
            record(settings, audit, summary, kafka)
        out.write(orjson.dumps(summary).decode() + "\n" if args.json else describe(summary))
        out.flush()
        return 0 if summary["passed"] else 1

    return guarded("audit verify", err, body)
