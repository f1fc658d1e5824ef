"""The `training-filter` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from consumer import __version__
from rules import PolicyError, load_policy


def _check(args: argparse.Namespace) -> int:
    from consumer.check import main_check

    try:
        args.policy_obj = load_policy(args.policy)
    except PolicyError as exc:
        print(f"training-filter check: {exc}", file=sys.stderr)
        return 2
    if args.optouts is not None and not args.optouts.is_file():
        print(f"training-filter check: --optouts {args.optouts}: no such file", file=sys.stderr)
        return 2
    return main_check(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="training-filter",
        description="Privacy gate for AI training data: only public, adult, in-region, not-opted-out content "
        "reaches the training topic.",
    )
    parser.add_argument("--version", action="version", version=f"training-filter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check",
        help="decide JSON Lines records from standard input with the policy (a debugger for reviewers)",
        description="Reads JSON Lines on standard input, one record a line with the Avro field names "
        "(dates YYYY-MM-DD; timestamps ISO-8601 with an offset or epoch milliseconds), and prints one "
        'JSON object {"id": ..., "decision": ...} per line, in order. Exits 0 after all input.',
    )
    check.add_argument(
        "--source", required=True, choices=["post", "ai_interaction"], help="which record type the lines hold"
    )
    check.add_argument("--optouts", type=Path, help="file with one opted-out user id a line")
    check.add_argument("--policy", type=Path, help="policy TOML file (default: the packaged rules/policy.toml)")
    check.set_defaults(func=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
