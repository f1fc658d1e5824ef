"""The `training-filter` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer import __version__
from rules import PolicyError, load_policy

if TYPE_CHECKING:
    from consumer.wire.registry import RegistrySettings


def _run(args: argparse.Namespace) -> int:
    from consumer.operations import logs
    from consumer.operations.settings import ConfigError
    from consumer.service.preflight import validate

    try:
        settings = validate()  # every setting, before any connection
    except ConfigError as exc:
        _refuse("run", exc)
        return 2
    logs.configure(settings.log_level)
    if settings.memory_budget is not None:
        logs.get("training_filter").info("memory_budget", **settings.memory_budget.fields())
    from consumer.service.service import Service

    try:
        service = Service(settings)
    except ConfigError as exc:
        _refuse("run", exc)
        return 2
    return service.run()


def _refuse(command: str, exc: Exception) -> None:
    """One line per problem, each naming its TF_ variable (ConfigError keeps them apart)."""
    for line in getattr(exc, "problems", None) or [str(exc)]:
        print(f"training-filter {command}: invalid configuration: {line}", file=sys.stderr)


def _check(args: argparse.Namespace) -> int:
    from consumer.commands.check import main_check

    try:
        args.policy_obj = load_policy(args.policy)
    except PolicyError as exc:
        print(f"training-filter check: {exc}", file=sys.stderr)
        return 2
    args.compare_obj = None
    if args.compare is not None:
        try:
            args.compare_obj = load_policy(args.compare)
        except PolicyError as exc:
            print(f"training-filter check: --compare: {exc}", file=sys.stderr)
            return 2
    problem = _check_files(args)
    if problem is not None:
        print(f"training-filter check: {problem}", file=sys.stderr)
        return 2
    ok, args.hmac_key = _hmac_key(args)
    if not ok:
        return 2
    from consumer.commands.jsonl import JsonRecordError, epoch_ms

    try:
        now_ms = epoch_ms(args.now, "--now") if args.now is not None else int(time.time() * 1000)
    except JsonRecordError as exc:
        print(f"training-filter check: {exc}", file=sys.stderr)
        return 2
    if not 0 <= args.clock_skew_seconds <= 86_400:
        print("training-filter check: --clock-skew-seconds must be between 0 and 86400", file=sys.stderr)
        return 2
    args.latest_ms = now_ms + int(args.clock_skew_seconds * 1000)
    return main_check(args)


_RECORD_OPTIONS = ("optouts", "consents", "compare", "content_changes", "account_changes")


def _check_files(args: argparse.Namespace) -> str | None:
    """What is wrong with check's file options, or None."""
    changes = args.source in ("content_change", "account_change")
    for name in _RECORD_OPTIONS:
        path = getattr(args, name)
        option = "--" + name.replace("_", "-")
        if path is not None and changes:
            return f"{option} applies to --source post or ai_interaction, not to change events"
        if path is not None and name != "compare" and not path.is_file():
            return f"{option} {path}: no such file"
    if args.hmac_key_file is not None and not changes:
        return "--hmac-key-file applies to --source content_change or account_change"
    return None


def _hmac_key(args: argparse.Namespace) -> tuple[bool, bytes | None]:
    """(ok, the pseudonymisation key or None): --hmac-key-file, else TF_HMAC_KEY_FILE or TF_HMAC_KEY as
    the service reads them. Only change events need it; a key that is set but wrong is exit status 2."""
    from consumer.operations.settings_sources import hmac_key

    if args.source not in ("content_change", "account_change"):
        return True, None
    option = args.hmac_key_file
    path = str(option) if option is not None else os.environ.get("TF_HMAC_KEY_FILE", "")
    inline = "" if option is not None else os.environ.get("TF_HMAC_KEY", "")
    if not path and not inline:
        return True, None
    problems: list[str] = []
    key = hmac_key(path, inline, problems)
    for problem in problems:
        where = problem.replace("TF_HMAC_KEY_FILE=", "--hmac-key-file ") if option is not None else problem
        print(f"training-filter check: {where}", file=sys.stderr)
    return not problems, key if not problems else None


def _bootstrap(args: argparse.Namespace) -> str | None:
    value = args.bootstrap_servers or os.environ.get("TF_BOOTSTRAP_SERVERS")
    if not value:
        print(
            f"training-filter {args.command}: give --bootstrap-servers (or set TF_BOOTSTRAP_SERVERS)", file=sys.stderr
        )
    return value


def _kafka_extras() -> dict[str, str]:
    """The TF_KAFKA_* pass-through settings, so the operator commands reach a secured cluster too."""
    from consumer.operations.settings import kafka_property

    return {
        kafka_property(k[len("TF_KAFKA_") :]): v
        for k, v in os.environ.items()
        if k.startswith("TF_KAFKA_") and len(k) > len("TF_KAFKA_")
    }


def _registry(args: argparse.Namespace) -> tuple[bool, RegistrySettings | None]:
    """(ok, the TF_SCHEMA_REGISTRY_* settings or None); a wrong setting is reported, exit status 2."""
    from consumer.operations.settings import ConfigError, load_registry_settings

    try:
        return True, load_registry_settings()
    except ConfigError as exc:
        _refuse(args.command, exc)
        return False, None


def _produce(args: argparse.Namespace) -> int:
    from consumer.commands.topic_io import produce_lines

    bootstrap = _bootstrap(args)
    ok, registry = _registry(args)
    if not bootstrap or not ok:
        return 2
    return produce_lines(
        bootstrap,
        args.topic,
        args.source,
        sys.stdin.buffer,
        sys.stderr,
        _kafka_extras(),
        registry,
    )


def _tail(args: argparse.Namespace) -> int:
    from consumer.commands.topic_io import tail

    bootstrap = _bootstrap(args)
    ok, registry = _registry(args)
    if not bootstrap or not ok:
        return 2
    return tail(bootstrap, args.topic, args.max, args.timeout, sys.stdout.buffer, _kafka_extras(), registry)


def _dlq_replay(args: argparse.Namespace) -> int:
    from consumer.commands.dlq_replay import main_replay

    return main_replay(args, sys.stdout, sys.stderr)


def _add_dlq(sub: Any) -> None:
    """`training-filter dlq replay`: the dead letters decided again (consumer/commands/dlq_replay.py)."""
    dlq = sub.add_parser("dlq", help="the dead-letter topic: `dlq replay` decides its letters again")
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    replay = actions.add_parser(
        "replay",
        help="decide the dead letters under today's policy and feeds; write the eligible ones to the training topic",
        description="Reads the DLQ with a consumer group of its own (TF_GROUP_ID plus -dlq-replay) from where the "
        "last replay stopped, decides each letter as the service would now (policy, opt-outs, changes, consents), "
        "and writes the eligible ones to the training topic with their original provenance, in transactions "
        "that commit the group's offsets: a second replay, or one started again after a kill, emits nothing "
        "twice. The rest stay in the DLQ. Progress on standard error, a summary on standard output. "
        "Configured by the service's TF_* variables (see `training-filter run --help`).",
    )
    replay.add_argument("--dry-run", action="store_true", help="decide and count only: write and commit nothing")
    replay.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    replay.set_defaults(func=_dlq_replay)


def _backfill(args: argparse.Namespace) -> int:
    from consumer.commands.backfill import main_backfill

    return main_backfill(args, sys.stdout, sys.stderr)


def _add_backfill(sub: Any) -> None:
    """`training-filter backfill`: history decided again under a new policy (consumer/commands/backfill.py)."""
    backfill = sub.add_parser(
        "backfill",
        help="decide a range of the input under a new policy; retract what it newly refuses (and --admit the rest)",
        description="Decides every record of a range of the input topics (default: all they retain; or by time, "
        "by offsets, or the input records the clean topic names) under the active policy and under --policy, with "
        "today's opt-outs, changes and consents, and writes a policy/<record_id> retraction (Revocation v2, reason "
        "policy_changed) for each record the new policy newly refuses; with --admit, also the records it newly "
        "admits, each after a lifted retraction of its key. Runs in transactions that commit its position: run "
        "the same command again after a kill and it goes on, emitting nothing twice. Progress (records, rate, "
        "ETA) on standard error; a summary and the comparison table of `check --compare` on standard output. "
        "Configured by the service's TF_* variables (see `training-filter run --help`).",
    )
    backfill.add_argument("--policy", required=True, metavar="NEW.toml", help="the new policy TOML")
    backfill.add_argument(
        "--admit", action="store_true", help="also write the records the new policy newly admits to the training topic"
    )
    backfill.add_argument(
        "--dry-run", action="store_true", help="decide and print the comparison only: write and commit nothing"
    )
    backfill.add_argument(
        "--since", metavar="TIME", help="only records from this time on (ISO-8601 with an offset, or epoch ms)"
    )
    backfill.add_argument("--until", metavar="TIME", help="only records before this time")
    backfill.add_argument(
        "--offsets",
        action="append",
        metavar="TOPIC:PARTITION:FIRST-LAST",
        help="only these offsets of an input partition (repeat for more partitions); instead of --since/--until",
    )
    backfill.add_argument(
        "--from-training",
        action="store_true",
        help="only the input records the training topic names in its provenance (--since/--until then select "
        "the training topic's records); retractions only, not with --admit",
    )
    backfill.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    backfill.set_defaults(func=_backfill)


def _report(args: argparse.Namespace) -> int:
    from consumer.commands.report import main_report

    return main_report(args, sys.stdout, sys.stderr)


def _add_report(sub: Any) -> None:
    """`training-filter report`: the effectiveness report (consumer/commands/report.py, docs/audit.md)."""
    report = sub.add_parser(
        "report",
        help="write the effectiveness report (report.html and report.md) from the audit topic",
        description="Reads the audit topic (receipts, verification results, recipients' snapshots), the opt-out, "
        "change and consent topics and the retractions over a window, and writes DIR/report.html, one "
        "self-contained page (no script, nothing fetched) with plots of decisions by reason, dead letters, "
        "opt-out-to-effect latency, retractions and their latency, recipients' acknowledgement lag and the "
        "verifier's results, and DIR/report.md with the same sections as tables. With an audit key "
        "(TF_AUDIT_KEY_FILE) records not signed correctly are left out and counted. Configured by the "
        "service's TF_* variables (see `training-filter run --help`).",
    )
    report.add_argument("--window", default="7d", help="how far back from --until: 7d, 24h, 90m, 2w (default 7d)")
    report.add_argument(
        "--until", metavar="TIME", help="the window's end, ISO-8601 with an offset or epoch ms (default: now)"
    )
    report.add_argument("--out", default=".", metavar="DIR", help="the folder to write report.html and report.md into")
    report.set_defaults(func=_report)


def _audit_recipients(args: argparse.Namespace) -> int:
    from consumer.audit.command import main_recipients

    return main_recipients(args, sys.stdout, sys.stderr)


def _add_audit(sub: Any) -> None:
    """`training-filter audit`: accountability (consumer/audit/); `audit recipients` is the record of
    recipients (docs/recipients.md)."""
    from consumer.audit.acknowledgements import BOUND_SECONDS

    audit = sub.add_parser("audit", help="accountability: `audit recipients` lists who reads the training topic")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    recipients = actions.add_parser(
        "recipients",
        help="the record of recipients (GDPR Art. 19): every consumer group that reads the training topic, and "
        "the revocations it has not acknowledged",
        description="Lists every consumer group with a committed offset on the training topic (the service's own "
        "groups aside) and, for each, whether it reads the revocations topic, its committed offsets there, how many "
        "revocations it has not acknowledged (from its committed offset to the end) and how long the oldest has "
        "waited. Exit status 1 when a recipient does not read the revocations topic or has sat on one longer than "
        "--bound (or the scan failed), 2 on a configuration error. Reads TF_BOOTSTRAP_SERVERS, TF_TRAINING_TOPIC, "
        "TF_REVOCATIONS_TOPIC, TF_GROUP_ID and TF_KAFKA_* as the service does.",
    )
    recipients.add_argument("--json", action="store_true", help="one JSON object a recipient (JSON Lines)")
    recipients.add_argument(
        "--bound",
        type=float,
        default=float(BOUND_SECONDS),
        metavar="SECONDS",
        help=f"how long a recipient may sit on a revocation (default {BOUND_SECONDS}, the alert's bound)",
    )
    recipients.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="bound on the whole scan (default 10)"
    )
    recipients.add_argument("--bootstrap-servers", help="default: TF_BOOTSTRAP_SERVERS")
    recipients.set_defaults(func=_audit_recipients)


def _demo(args: argparse.Namespace) -> int:
    try:
        from consumer.devtools.demo import run_demo
    except ImportError as exc:  # an installed package (the image) has no development tools
        print(
            f"training-filter demo: the demo is a development tool ({exc.name} is missing): run `make demo` "
            "in a checkout of training-filter (it installs the [tools] extra)",
            file=sys.stderr,
        )
        return 2
    return run_demo(records=args.records, keep_running=args.keep_running)


def _add_check(sub: Any) -> None:
    """`training-filter check`: the policy debugger's options."""
    check = sub.add_parser(
        "check",
        help="decide JSON Lines records from standard input with the policy (a debugger for reviewers)",
        description="Reads JSON Lines on standard input, one record a line with the Avro field names "
        "(dates YYYY-MM-DD; timestamps ISO-8601 with an offset or epoch milliseconds), and prints one "
        'JSON object {"id": ..., "decision": ...} per line, in order. Exits 0 after all input. With '
        "--source content_change or account_change the lines are change events, and each prints the "
        'retraction the service writes for it, {"key": ..., "value": ...} (exit status 1 if a line is not '
        "a valid change).",
    )
    check.add_argument(
        "--source",
        required=True,
        choices=["post", "ai_interaction", "content_change", "account_change"],
        help="which record type the lines hold",
    )
    check.add_argument(
        "--content-changes",
        type=Path,
        metavar="FILE",
        help="JSON Lines of ContentChange (as produce takes them): the records they name are content_changed",
    )
    check.add_argument(
        "--account-changes",
        type=Path,
        metavar="FILE",
        help="JSON Lines of AccountChange (the last line of a user wins, a deletion is final): records are "
        "decided with the accounts' facts, as the service decides them",
    )
    check.add_argument(
        "--hmac-key-file",
        type=Path,
        metavar="FILE",
        help="change events: the pseudonymisation key, to print exact retraction keys and pseudonyms "
        "(default: TF_HMAC_KEY_FILE or TF_HMAC_KEY as the service reads them; none: printed as null)",
    )
    check.add_argument("--optouts", type=Path, help="file with one opted-out user id a line")
    check.add_argument(
        "--consents", type=Path, help="opt-in policies: file with one user id a line whose consent is present"
    )
    check.add_argument("--policy", type=Path, help="policy TOML file (default: the packaged rules/policy.toml)")
    check.add_argument(
        "--compare",
        type=Path,
        metavar="FILE",
        help='a candidate policy TOML decided beside --policy: each line gains "shadow" (its decision), and the '
        "table of records by (active, shadow) decision is printed to standard error at the end",
    )
    check.add_argument(
        "--now",
        metavar="TIME",
        help="the time to decide at, ISO-8601 with an offset or epoch milliseconds (default: now); a record "
        "created later than this plus --clock-skew-seconds is future_dated, as in the service",
    )
    check.add_argument(
        "--clock-skew-seconds",
        type=float,
        default=300.0,
        metavar="N",
        help="how far created_at may lie ahead of --now (default 300, the service's TF_CLOCK_SKEW_SECONDS default)",
    )
    check.set_defaults(func=_check)


def build_parser() -> argparse.ArgumentParser:
    from consumer.operations.settings import describe_settings

    parser = argparse.ArgumentParser(
        prog="training-filter",
        description="Privacy gate for AI training data: only public, adult, in-region, not-opted-out content "
        "reaches the training topic.",
    )
    parser.add_argument("--version", action="version", version=f"training-filter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the service (configured by TF_* environment variables)",
        description="Consume the post and AI-interaction topics, filter them with the policy and the opt-out "
        "feed, and produce eligible records to the training topic. Configured entirely by environment "
        "variables; a wrong value stops it at start-up with a message saying what to fix.",
        epilog=describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.set_defaults(func=_run)

    _add_check(sub)

    produce = sub.add_parser(
        "produce",
        help="publish JSON Lines from standard input as framed Avro records",
        description="Reads JSON Lines (the same form as `check`) and publishes each as a framed Avro value, "
        "keyed by its user id (a content change: by its record id). Lines that are not valid records are "
        "reported by number on stderr and skipped (exit status 1). TF_KAFKA_* settings apply (e.g. SASL/TLS).",
    )
    produce.add_argument("--topic", required=True)
    produce.add_argument(
        "--source",
        required=True,
        choices=["post", "ai_interaction", "optout", "consent", "content_change", "account_change"],
    )
    produce.add_argument("--bootstrap-servers", help="default: TF_BOOTSTRAP_SERVERS")
    produce.set_defaults(func=_produce)

    tail = sub.add_parser(
        "tail",
        help="print a topic's records as JSON Lines (training, revocation, DLQ and input topics)",
        description="Reads the topic from the beginning (committed records only) and prints one JSON object "
        "per record: topic, partition, offset, key, headers and the decoded value (or value_base64 when it "
        "does not decode, as in the DLQ).",
    )
    tail.add_argument("--topic", required=True)
    tail.add_argument("--max", type=int, help="stop after this many records")
    tail.add_argument("--timeout", type=float, default=5.0, help="stop after this many seconds without a record")
    tail.add_argument("--bootstrap-servers", help="default: TF_BOOTSTRAP_SERVERS")
    tail.set_defaults(func=_tail)

    _add_dlq(sub)
    _add_backfill(sub)
    _add_report(sub)
    _add_audit(sub)

    demo = sub.add_parser(
        "demo",
        help="start a local Kafka, the service and a generated stream; print the decisions",
        description="Starts the local Kafka broker (Maven jars, no Docker), creates the topics, starts the "
        "service, generates a realistic stream, waits until it is processed, prints the decisions by "
        "reason, and stops everything.",
    )
    demo.add_argument("--records", type=int, default=20_000, help="how many input records to generate")
    demo.add_argument("--keep-running", action="store_true", help="leave it running until Ctrl-C at the end")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
