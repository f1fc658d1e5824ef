"""The exactly-once scenario: the service with TF_PROCESSING_GUARANTEE=exactly-once over the whole
input (one run), against the at-least-once runs of the throughput scenario (`ratios`).

Result: `training_filter_exactly_once`.
"""

from __future__ import annotations

from typing import Any

from tests.benchmarks.harness import Harness, log
from tests.benchmarks.service import run_services


def run(h: Harness) -> dict[str, Any]:
    log("training-filter (exactly-once)")
    return run_services(h, "exactly-once")
