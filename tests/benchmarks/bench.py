"""The throughput, latency and memory benchmark (`make bench`). Prints a table and writes JSON.

On the same pre-generated input (posts with 200 to 1,000 bytes of text, about half eligible, every
decision represented) and the local Kafka broker, each pipeline runs pinned to CPU 0 while the broker
and the load generator are pinned to CPU 1. The scenarios, one module each, in the order they run
(the harness they share: `tests.benchmarks.harness`, and `tests.benchmarks.service` for the real
service):

- `throughput`: passthrough (the ceiling), training-filter (the real service, at-least-once, 10
  million opt-outs loaded from a snapshot), naive (the policy without this project) and peer (Quix
  Streams), `--repeat` times in turn (the medians and the spread are reported);
- `guarantees`: exactly-once against at-least-once (one run);
- `scale_out`: two service processes against one (one run), and the scaling estimate;
- `latency`: p50/p99/max end-to-end latency of each pipeline at half its own median maximum
  (`--repeat` runs each), with `propagation`: an opt-out's timestamp to its being applied, during
  the service's latency runs;
- `stages`: the per-stage cost of the hot loop (in-process);
- `shadow_service` and `opt_in`: the service without and with a shadow policy, under the opt-out
  and the opt-in model (alternating runs);
- `shadow`: the shadow policy's cost in the hot loop alone (in-process);
- `changes_service`: the service with empty and with full change topics (the change set's cost);
- `receipts_service`: the service without and with decision receipts (their cost, issue 23).

`--only verify` (not in the full run): the service writes `--records` records (default 1,000,000) with
receipts, then `training-filter audit verify` checks them all, timed (`verify_service`).

Snapshot load and filter build for 10 million opt-outs are measured while the input is prepared.

    python -m tests.benchmarks.bench [--records N] [--optouts N] [--repeat N] [--quick] [--output FILE]
                                     [--only training-filter|shadow|opt-in|retractions|receipts|verify] [--consents]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from rules import Decider, load_policy
from tests.benchmarks import (
    changes_service,
    guarantees,
    latency,
    opt_in,
    receipts_service,
    scale_out,
    shadow_service,
    throughput,
    verify_service,
)
from tests.benchmarks.harness import HARNESS_CPU, PIPELINE_CPU, Harness, log, running
from tests.benchmarks.shadow import measure as shadow_overhead
from tests.benchmarks.stages import profile
from tests.benchmarks.table import table

DEFAULT_OUTPUT = Path(__file__).parent / "results" / "latest.json"
VERIFY_RECORDS = 1_000_000  # issue 23: "a million records in minutes"


def run_all(h: Harness) -> dict[str, Any]:
    """Every scenario in turn; the results the JSON holds."""
    r = h.results
    r.update(throughput.run(h))
    r["training_filter_exactly_once"] = guarantees.run(h)
    r["training_filter_two_processes"] = scale_out.run(h)
    r["latency"] = latency.run(h, {key: (kind, r[key]["records_per_second"] / 2) for kind, key in throughput.PIPELINES})
    log("per-stage profile")
    os.sched_setaffinity(0, {PIPELINE_CPU})
    r["stages_us_per_record"] = stages(h)
    log("training-filter without and with a shadow policy")
    r["shadow_service"] = shadow_service.run(h, h.args.shadow_repetitions)
    log("training-filter under the opt-out and the opt-in policy")
    r["opt_in_service"] = opt_in.run(h, h.args.repeat)
    log("training-filter with empty and with full change topics")
    r["changes_service"] = changes_service.run(h, h.args.shadow_repetitions)
    log("training-filter without and with decision receipts")
    r["receipts_service"] = receipts_service.run(h, h.args.shadow_repetitions)
    log("shadow policy overhead (in-process)")
    r["shadow_overhead"] = shadow_overhead(
        min(len(h.values), 200_000), 7 if not h.args.quick else 3, bootstrap=h.bootstrap
    )
    os.sched_setaffinity(0, {HARNESS_CPU})
    r["ratios"] = throughput.ratios(r)
    r["scaling"] = scale_out.scaling(r)
    return r


def stages(h: Harness) -> dict[str, float]:
    return profile(
        h.values,
        h.optouts,
        Decider(load_policy()),
        h.bootstrap,
        h.topic("out-stages", 4),
        h.key.hex().encode(),  # the service's key: TF_HMAC_KEY is the hex text
    )


def only_shadow(h: Harness) -> None:
    """The shadow policy's cost in the real service, alone."""
    h.results["shadow_service"] = shadow_service.run(h, h.args.shadow_repetitions)
    print(orjson.dumps(h.results["shadow_service"], option=orjson.OPT_INDENT_2).decode())


def only_opt_in(h: Harness) -> None:
    """The opt-in consent model's cost in the real service, alone."""
    h.results["opt_in_service"] = opt_in.run(h, h.args.repeat)
    print(orjson.dumps(h.results["opt_in_service"], option=orjson.OPT_INDENT_2).decode())
    print(opt_in.line(h.results["opt_in_service"]))


def only_training_filter(h: Harness) -> None:
    """For profiling (BENCH_PROFILE): the service alone, one run, then stop."""
    log("training-filter (at-least-once) only")
    h.results["training_filter"] = throughput.run_once(h, "training-filter")
    print(orjson.dumps(h.results["training_filter"], option=orjson.OPT_INDENT_2).decode())


def only_retractions(h: Harness) -> None:
    """Issue 22: the service's maximum (one run), then `--repeat` latency runs at half of it with content
    changes offered (change to retraction p50/p99, the change set's memory), then the service with empty
    and with full change topics, alternating (`--shadow-repetitions` pairs: the CPU cost). Written to
    results/retractions.json (`--output` to change), which docs/performance.md reads beside latest.json."""
    log("training-filter (at-least-once) maximum, one run")
    rate = throughput.run_once(h, "training-filter")["records_per_second"] / 2
    h.results["latency"] = latency.run(h, {"training_filter": ("training-filter", rate)})
    print(orjson.dumps(h.results["latency"]["training_filter"], option=orjson.OPT_INDENT_2).decode())
    log("training-filter with empty and with full change topics")
    h.results["changes_service"] = changes_service.run(h, h.args.shadow_repetitions)
    print(orjson.dumps(h.results["changes_service"]["cpu_ratio_paired"]).decode())
    output = h.args.output if h.args.output != DEFAULT_OUTPUT else DEFAULT_OUTPUT.with_name("retractions.json")
    output.write_bytes(orjson.dumps(h.results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    print(f"\nwritten to {output}")


def only_receipts(h: Harness) -> None:
    """Issue 23: the service without and with decision receipts, alternating (`--shadow-repetitions`
    pairs: the CPU cost). Written to results/receipts.json (`--output` to change)."""
    log("training-filter without and with decision receipts")
    h.results["receipts_service"] = receipts_service.run(h, h.args.shadow_repetitions)
    print(orjson.dumps(h.results["receipts_service"], option=orjson.OPT_INDENT_2).decode())
    output = h.args.output if h.args.output != DEFAULT_OUTPUT else DEFAULT_OUTPUT.with_name("receipts.json")
    output.write_bytes(orjson.dumps(h.results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    print(f"\nwritten to {output}")


def only_verify(h: Harness) -> None:
    """Issue 23: how long the verifier takes over `--records` records the real service decided with
    receipts. Written to results/verify.json (`--output` to change)."""
    log(f"training-filter with receipts, then audit verify over {len(h.values):,} records")
    h.results["verify"] = verify_service.run(h)
    print(orjson.dumps(h.results["verify"], option=orjson.OPT_INDENT_2).decode())
    output = h.args.output if h.args.output != DEFAULT_OUTPUT else DEFAULT_OUTPUT.with_name("verify.json")
    output.write_bytes(orjson.dumps(h.results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    print(f"\nwritten to {output}")


ONLY: dict[str, Callable[[Harness], None]] = {
    "receipts": only_receipts,
    "verify": only_verify,
    "retractions": only_retractions,
    "training-filter": only_training_filter,
    "shadow": only_shadow,
    "opt-in": only_opt_in,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, help="input records (default 400,000; 1,000,000 for --only verify)")
    parser.add_argument("--optouts", type=int, default=10_000_000)
    parser.add_argument("--latency-seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each pipeline (medians are reported)")
    parser.add_argument("--quick", action="store_true", help="a small run that checks the benchmark works")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--only", choices=list(ONLY), help="run only this pipeline (for profiling), or the shadow comparison"
    )
    parser.add_argument(
        "--shadow-repetitions", type=int, default=5, help="runs of the service without and with a shadow"
    )
    parser.add_argument("--consents", action="store_true", help="only the consent set's memory and look-up cost")
    args = parser.parse_args(argv)
    if args.records is None:
        args.records = VERIFY_RECORDS if args.only == "verify" else 400_000
    if args.quick:
        args.records, args.optouts, args.latency_seconds, args.repeat = 20_000, 200_000, 2.0, 1
        args.shadow_repetitions = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.consents:
        from tests.benchmarks import consents

        return consents.main([])
    if (os.cpu_count() or 1) < 2:
        print(
            "the benchmark pins the pipelines and the broker to two different CPUs; this machine has one",
            file=sys.stderr,
        )
        return 2
    with running(args) as harness:
        if args.only:
            ONLY[args.only](harness)
            return 0
        results = run_all(harness)
    print()
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
