"""`make unit`'s floor: the in-process suite (pytest -m "not integration") must cover at least 80% of
consumer/service/ and 85% of consumer/datapath/ (coverage's JSON report, as `make unit` writes it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

FLOORS = {"consumer/service/": 80.0, "consumer/datapath/": 85.0}


def main(report: str = ".coverage.json") -> int:
    files = json.loads(Path(report).read_text())["files"]
    failed = False
    for prefix, floor in FLOORS.items():
        covered = sum(f["summary"]["covered_lines"] for name, f in files.items() if name.startswith(prefix))
        statements = sum(f["summary"]["num_statements"] for name, f in files.items() if name.startswith(prefix))
        share = 100.0 * covered / statements if statements else 0.0
        ok = share >= floor
        failed |= not ok
        print(f"{prefix:<22} {share:5.1f}% of {statements} statements (floor {floor:.0f}%): {'ok' if ok else 'BELOW'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
