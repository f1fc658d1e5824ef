"""python -m consumer.devtools.docs [--check]: rewrite the generated regions of the docs and the
deployment's env files (make docs), or with --check only list the stale ones and exit 1 if there are
any."""

from __future__ import annotations

import argparse
import sys

from consumer.devtools.docs import ROOT, env_files, renderer
from consumer.devtools.docs.regions import stale, update


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumer.devtools.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a region or file is stale")
    args = parser.parse_args(argv)
    try:
        pages = stale(ROOT, renderer()) if args.check else update(ROOT, renderer())
        pages += env_files.stale(ROOT) if args.check else env_files.update(ROOT)
    except (ValueError, KeyError) as exc:  # RegionError, or declarations that disagree with the code
        print(f"docs: {exc}", file=sys.stderr)
        return 2
    for page in pages:
        print(f"{'stale' if args.check else 'rewrote'}: {page.relative_to(ROOT)}")
    if args.check and pages:
        print("docs: generated tables or env files are stale: run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
