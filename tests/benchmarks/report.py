"""Markdown tables for the README from a benchmark result file.

python -m tests.benchmarks.report [tests/benchmarks/results/latest.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from tests.benchmarks.bench import DEFAULT_OUTPUT


def _range(x: dict, key: str, fmt: str) -> str:
    low, high = x.get("spread", {}).get(key, (x[key], x[key]))
    return f"{format(low, fmt)}–{format(high, fmt)}"


def markdown(r: dict) -> str:
    rows = [
        ("passthrough (ceiling)", "passthrough"),
        ("**training-filter**", "training_filter"),
        ("naive: the policy without this project", "naive"),
        ("peer: Quix Streams", "peer"),
        ("training-filter, exactly-once (1 run)", "training_filter_exactly_once"),
        ("training-filter, 2 processes (1 run)", "training_filter_two_processes"),
    ]
    out = [
        "| pipeline | records/s (spread) | CPU µs/record (spread) | peak RSS MiB | p50 ms | p99 ms (spread) | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, key in rows:
        x = r[key]
        lat = r.get("latency", {}).get(key)
        p50 = f"{lat['p50_ms']:.0f}" if lat else "–"
        p99 = f"{lat['p99_ms']:.0f} ({_range(lat, 'p99_ms', '.0f')})" if lat else "–"
        worst = f"{lat['max_ms']:.0f}" if lat else "–"
        out.append(
            f"| {label} | {x['records_per_second']:,.0f} ({_range(x, 'records_per_second', ',.0f')}) | "
            f"{x['cpu_us_per_record']:.2f} ({_range(x, 'cpu_us_per_record', '.2f')}) | {x['peak_rss_mib']:.0f} | "
            f"{p50} | {p99} | {worst} |"
        )
    q, o, s, sc = r["ratios"], r["optouts"], r["stages_us_per_record"], r["scaling"]
    lat = r["latency"]
    prop = lat["training_filter"].get("optout_propagation", {})
    tf_rss = r["training_filter"]["peak_rss_mib"]

    def yes(ok: bool) -> str:
        return "yes" if ok else "**no**"

    cpu = q["cpu_training_filter_over_passthrough"]
    tf_p99, peer_p99 = lat["training_filter"]["p99_ms"], lat["peer"]["p99_ms"]
    out += [
        "",
        "| target | measured | met |",
        "|---|---:|---|",
        f"| CPU per record ≤ 1.4× passthrough | {cpu:.2f}× | {yes(cpu <= 1.4)} |",
        f"| records/s ≥ 0.9× passthrough | {q['training_filter_over_passthrough']:.2f}× | "
        f"{yes(q['training_filter_over_passthrough'] >= 0.9)} |",
        f"| records/s ≥ 5× peer | {q['training_filter_over_peer']:.2f}× | {yes(q['training_filter_over_peer'] >= 5)} |",
        f"| CPU per record ≤ 1/5 of peer's | peer uses {q['cpu_peer_over_training_filter']:.2f}× | "
        f"{yes(q['cpu_peer_over_training_filter'] >= 5)} |",
        f"| p99 at half load ≤ peer's | {tf_p99:.0f} ms vs {peer_p99:.0f} ms | {yes(tf_p99 <= peer_p99)} |",
        f"| (against the naive baseline) | {q['training_filter_over_naive']:.2f}× the records/s, "
        f"{q['cpu_naive_over_training_filter']:.2f}× less CPU per record | – |",
        f"| opt-out propagation p99 (timestamp to applied, half load) "
        f"| {prop.get('p99_ms', float('nan')):.0f} ms "
        f"(p50 {prop.get('p50_ms', float('nan')):.0f} ms, {prop.get('optouts_applied', 0):.0f} opt-outs) | – |",
        f"| Bloom check < 0.5 µs | {s['bloom_lookup']:.3f} µs | {yes(s['bloom_lookup'] < 0.5)} |",
        f"| peak RSS < 300 MiB + filter | {tf_rss:.0f} MiB (filter {o['filter_mib']:.1f}) | "
        f"{yes(tf_rss - o['filter_mib'] < 300)} |",
        f"| 10 M opt-outs at 1e-6 < 50 MiB of filter | {o['filter_mib']:.1f} MiB | {yes(o['filter_mib'] < 50)} |",
        f"| snapshot load of 10 M < 2 s | {o['snapshot_load_seconds']:.2f} s | {yes(o['snapshot_load_seconds'] < 2)} |",
        f"| (exactly-once / at-least-once) | {q['exactly_once_over_at_least_once']:.2f} | – |",
        f"| (two processes / one, sharing the broker's core) | {q['two_processes_over_one']:.2f}× | – |",
        f"| (with a core each, predicted) | one process {sc['one_process_on_its_own_core']:,.0f} records/s, two "
        f"{sc['two_processes_on_their_own_cores']:,.0f}; the broker needs {sc['broker_cpu_us_per_record']:.2f} "
        f"CPU µs per record ({sc['broker_cores_for_two_processes']:.1f} cores for two) | – |",
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
