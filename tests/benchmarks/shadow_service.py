"""The shadow scenario in the real service: the service without and with TF_SHADOW_POLICY_FILE
(tests.samples.CANDIDATE_POLICY), `--shadow-repetitions` alternating pairs of runs on the same input:
CPU µs per record (the process's, all threads) and records/s. (`tests.benchmarks.shadow` measures
the same cost in the hot loop alone, in-process.)

Result: `shadow_service`.
"""

from __future__ import annotations

import statistics
from typing import Any

from tests.benchmarks.harness import Harness, paired_cpu_ratios
from tests.benchmarks.service import alternating_runs
from tests.samples import CANDIDATE_POLICY


def run(h: Harness, repetitions: int) -> dict[str, Any]:
    candidate = h.work / "candidate-policy.toml"
    candidate.write_text(CANDIDATE_POLICY)
    runs = alternating_runs(
        h, "shadow", {"without": {}, "with": {"TF_SHADOW_POLICY_FILE": str(candidate)}}, repetitions
    )
    cpu = {k: [r["cpu_us_per_record"] for r in v] for k, v in runs.items()}
    rate = {k: [r["records_per_second"] for r in v] for k, v in runs.items()}
    paired = paired_cpu_ratios(runs["without"], runs["with"])
    return {
        "repetitions": repetitions,
        "cpu_us_per_record": cpu,
        "records_per_second": rate,
        "cpu_ratio_paired": statistics.median(paired),
        "cpu_ratio_paired_min_max": [paired[0], paired[-1]],
        "cpu_ratio": statistics.median(cpu["with"]) / statistics.median(cpu["without"]),
        "throughput_ratio": statistics.median(rate["without"]) / statistics.median(rate["with"]),
    }


def line(x: dict[str, Any]) -> str:
    cpu = x["cpu_us_per_record"]
    return (
        f"shadow policy in the service ({x['repetitions']} alternating pairs of runs): CPU µs/record "
        f"without {statistics.median(cpu['without']):.2f} ({min(cpu['without']):.2f}-{max(cpu['without']):.2f}), "
        f"with {statistics.median(cpu['with']):.2f} ({min(cpu['with']):.2f}-{max(cpu['with']):.2f}): "
        f"ratio {x['cpu_ratio_paired']:.3f}, the median of the pairs' ratios "
        f"({x['cpu_ratio_paired_min_max'][0]:.3f}-{x['cpu_ratio_paired_min_max'][1]:.3f}); "
        f"ratio of the medians {x['cpu_ratio']:.3f}; records/s without / with {x['throughput_ratio']:.3f}"
    )
