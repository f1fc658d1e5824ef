"""The throughput scenario: each pipeline over the whole input, `--repeat` times, the pipelines in turn
(so a slow spell of the machine hits every one of them), medians and spread of each.

1. passthrough: confluent-kafka consume and produce of the same bytes (the ceiling);
2. training-filter: the real service (`training-filter run`), at-least-once, the opt-outs loaded
   from a snapshot, output minimised and pseudonymised;
3. naive: the same policy the way a team would write it without this project (fastavro, hmac.new
   and a delivery callback per record);
4. peer: the same policy written idiomatically with Quix Streams.

Results: `passthrough`, `training_filter`, `naive`, `peer` (each a `summarise` of its runs).
"""

from __future__ import annotations

from typing import Any

from tests.benchmarks.harness import Harness, log, summarise
from tests.benchmarks.service import run_services

# (the pipeline's name in logs and commands, its key in the results), in the order they run
PIPELINES = (
    ("passthrough", "passthrough"),
    ("training-filter", "training_filter"),
    ("naive", "naive"),
    ("peer", "peer"),
)


def run_once(h: Harness, kind: str) -> dict[str, Any]:
    if kind == "training-filter":
        return run_services(h)
    return h.run_script(kind, len(h.values))


def run(h: Harness) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {key: [] for _, key in PIPELINES}
    for rep in range(h.args.repeat):
        for kind, key in PIPELINES:
            log(f"{kind}, run {rep + 1} of {h.args.repeat}")
            runs[key].append(run_once(h, kind))
    return {key: summarise(runs[key]) for _, key in PIPELINES}


def ratios(r: dict[str, Any]) -> dict[str, float]:
    """The service's throughput and CPU per record against the other pipelines' and its own variants'."""
    tf = r["training_filter"]
    passthrough, peer, naive = r["passthrough"], r["peer"], r["naive"]
    return {
        "training_filter_over_passthrough": tf["records_per_second"] / passthrough["records_per_second"],
        "cpu_training_filter_over_passthrough": tf["cpu_us_per_record"] / passthrough["cpu_us_per_record"],
        "training_filter_over_peer": tf["records_per_second"] / peer["records_per_second"],
        "cpu_peer_over_training_filter": peer["cpu_us_per_record"] / tf["cpu_us_per_record"],
        "training_filter_over_naive": tf["records_per_second"] / naive["records_per_second"],
        "cpu_naive_over_training_filter": naive["cpu_us_per_record"] / tf["cpu_us_per_record"],
        "exactly_once_over_at_least_once": r["training_filter_exactly_once"]["records_per_second"]
        / tf["records_per_second"],
        "two_processes_over_one": r["training_filter_two_processes"]["records_per_second"] / tf["records_per_second"],
    }
