"""The scale-out scenario: two service processes in one group over the whole input (one run, one on
each CPU, so sharing the broker's: not a scaling figure here), and what a machine with cores of its
own for each process and for the broker should show, from the one-process runs.

Results: `training_filter_two_processes`; `scaling` (from `training_filter`).
"""

from __future__ import annotations

from typing import Any

from tests.benchmarks.harness import Harness, log
from tests.benchmarks.service import run_services


def run(h: Harness) -> dict[str, Any]:
    log("training-filter, two processes")
    return run_services(h, processes=2)


def scaling(r: dict[str, Any]) -> dict[str, float]:
    """What a machine whose processes and broker have cores of their own should show: each process
    is bound by its own CPU per record, and the broker needs its CPU per record for all of them."""
    tf = r["training_filter"]
    per_process = 1e6 / tf["cpu_us_per_record"]
    return {
        "one_process_on_its_own_core": per_process,
        "two_processes_on_their_own_cores": 2 * per_process,
        "broker_cpu_us_per_record": tf["broker_cpu_us_per_record"],
        "broker_cores_for_two_processes": 2 * per_process * tf["broker_cpu_us_per_record"] / 1e6,
    }
