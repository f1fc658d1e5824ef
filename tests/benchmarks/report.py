"""Markdown tables for the README from a benchmark result file.

python -m tests.benchmarks.report [tests/benchmarks/results/latest.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from tests.benchmarks.bench import DEFAULT_OUTPUT


def markdown(r: dict) -> str:
    rows = [
        ("passthrough (ceiling)", "passthrough"),
        ("**training-filter**", "training_filter"),
        ("peer: Quix Streams", "peer"),
        ("training-filter, exactly-once", "training_filter_exactly_once"),
        ("training-filter, 2 processes", "training_filter_two_processes"),
    ]
    out = [
        "| pipeline | records/s | µs/record (wall) | CPU s | CPU µs/record | peak RSS MiB | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, key in rows:
        x = r[key]
        lat = r.get("latency", {}).get(key)
        p50 = f"{lat['p50_ms']:.0f}" if lat else "–"
        p99 = f"{lat['p99_ms']:.0f}" if lat else "–"
        out.append(
            f"| {label} | {x['records_per_second']:,.0f} | {x['us_per_record']:.2f} | {x['cpu_seconds']:.2f} | "
            f"{x['cpu_us_per_record']:.2f} | {x['peak_rss_mib']:.0f} | {p50} | {p99} |"
        )
    q, o, s = r["ratios"], r["optouts"], r["stages_us_per_record"]
    tf_rss = r["training_filter"]["peak_rss_mib"]
    out += [
        "",
        "| target | measured | met |",
        "|---|---:|---|",
        f"| training-filter / passthrough ≥ 0.35 | {q['training_filter_over_passthrough']:.2f} | "
        f"{'yes' if q['training_filter_over_passthrough'] >= 0.35 else 'no'} |",
        f"| training-filter / peer ≥ 5 | {q['training_filter_over_peer']:.2f} | "
        f"{'yes' if q['training_filter_over_peer'] >= 5 else 'no'} |",
        f"| Bloom check < 0.5 µs | {s['bloom_lookup']:.3f} µs | {'yes' if s['bloom_lookup'] < 0.5 else 'no'} |",
        f"| rules (without decode) < 1 µs | {s['rules']:.3f} µs | {'yes' if s['rules'] < 1 else 'no'} |",
        f"| peak RSS < 300 MiB + filter | {tf_rss:.0f} MiB (filter {o['filter_mib']:.1f}) | "
        f"{'yes' if tf_rss - o['filter_mib'] < 300 else 'no'} |",
        f"| 10 M opt-outs at 1e-6 < 50 MiB of filter | {o['filter_mib']:.1f} MiB | "
        f"{'yes' if o['filter_mib'] < 50 else 'no'} |",
        f"| snapshot load of 10 M < 2 s | {o['snapshot_load_seconds']:.2f} s | "
        f"{'yes' if o['snapshot_load_seconds'] < 2 else 'no'} |",
        f"| two processes ≥ 1.7× one | {q['two_processes_over_one']:.2f}× | "
        f"{'yes' if q['two_processes_over_one'] >= 1.7 else 'no'} |",
        f"| (exactly-once / at-least-once) | {q['exactly_once_over_at_least_once']:.2f} | – |",
        "",
        "| hot-loop stage | µs per input record |",
        "|---|---:|",
    ]
    for name, label in (
        ("decode_fast_path", "decode (fast path)"),
        ("decode_fastavro_reference", "decode (fastavro, for comparison)"),
        ("rules", "rules"),
        ("bloom_lookup", "Bloom look-up"),
        ("encode_and_pseudonymise", "pseudonymise and encode (eligible half)"),
        ("produce", "produce() call (eligible half)"),
    ):
        out.append(f"| {label} | {s[name]:.3f} |")
    return "\n".join(out)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    print(markdown(orjson.loads(path.read_bytes())))
