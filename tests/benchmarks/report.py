"""The main Markdown tables of a benchmark result file (pipelines, targets, hot-loop stages), as
docs/performance.md shows them: the same functions render them there (`make docs`,
consumer/devtools/docs/figures.py), so this prints what the page would hold for another result file.

python -m tests.benchmarks.report [tests/benchmarks/results/latest.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from consumer.devtools.docs.figures import pipelines, stages, targets

DEFAULT_INPUT = Path(__file__).parent / "results" / "latest.json"


def markdown(r: dict) -> str:
    return "\n\n".join([pipelines(r), targets(r), stages(r)])


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_INPUT
    print(markdown(orjson.loads(path.read_bytes())))
