"""The table `make bench` prints at the end of a run (the CI's smoke run shows its pipeline rows):
the pipelines, the targets, the opt-out propagation, the scaling estimate, the opt-out filter, the hot
loop's stages and the shadow and opt-in comparisons. (docs/performance.md's tables are rendered from
the same JSON by consumer/devtools/docs/figures.py.)"""

from __future__ import annotations

from typing import Any

from tests.benchmarks import opt_in, shadow_service
from tests.benchmarks.shadow import line as shadow_line

ROWS = (
    ("passthrough", "passthrough"),
    ("training-filter", "training_filter"),
    ("naive (no batching, fastavro)", "naive"),
    ("peer (Quix Streams)", "peer"),
    ("training-filter exactly-once", "training_filter_exactly_once"),
    ("training-filter, 2 processes", "training_filter_two_processes"),
)
STAGES = (
    "decode_fast_path",
    "decode_fastavro_reference",
    "rules",
    "bloom_lookup",
    "encode_and_pseudonymise",
    "produce",
)


def table(r: dict[str, Any]) -> str:
    lines = [*_pipelines(r), "", *_targets(r), "", *_propagation_and_scaling(r), "", *_filter_and_stages(r)]
    if "shadow_service" in r:
        lines += ["", shadow_service.line(r["shadow_service"])]
    if "opt_in_service" in r:
        lines += ["", opt_in.line(r["opt_in_service"])]
    if "shadow_overhead" in r:
        lines += [shadow_line(r["shadow_overhead"])]
    return "\n".join(lines)


def _spread(x: dict[str, Any], key: str, fmt: str) -> str:
    low, high = x.get("spread", {}).get(key, (x[key], x[key]))
    return f"{format(low, fmt)}–{format(high, fmt)}"


def _pipelines(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}; "
        f"fast path {m['fast_path']}",
        f"input: {r['input']['records']:,} posts, mean {r['input']['mean_value_bytes']:.0f} bytes, "
        f"{r['input']['eligible']:,} eligible; filter: {r['optouts']['entries']:,} opt-outs",
        f"medians of {r['training_filter'].get('repetitions', 1)} runs each (spread: min–max); exactly-once and "
        "two processes: one run each",
        "",
        f"{'pipeline':<30}{'records/s':>10}{'spread':>17}{'CPU µs/rec':>11}{'spread':>15}{'RSS MiB':>8}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'p99 spread':>12}{'max ms':>8}",
    ]
    for label, key in ROWS:
        x = r[key]
        lat = r.get("latency", {}).get(key)
        p50 = f"{lat['p50_ms']:.1f}" if lat else "-"
        p99 = f"{lat['p99_ms']:.1f}" if lat else "-"
        p99s = _spread(lat, "p99_ms", ".0f") if lat else "-"
        worst = f"{lat['max_ms']:.0f}" if lat else "-"
        lines.append(
            f"{label:<30}{x['records_per_second']:>10,.0f}{_spread(x, 'records_per_second', ',.0f'):>17}"
            f"{x['cpu_us_per_record']:>11.2f}{_spread(x, 'cpu_us_per_record', '.2f'):>15}{x['peak_rss_mib']:>8.0f}"
            f"{p50:>8}{p99:>8}{p99s:>12}{worst:>8}"
        )
    return lines


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def _targets(r: dict[str, Any]) -> list[str]:
    q = r["ratios"]
    tf_p99, peer_p99 = r["latency"]["training_filter"]["p99_ms"], r["latency"]["peer"]["p99_ms"]
    cpu_ratio = q["cpu_training_filter_over_passthrough"]
    return [
        "targets (medians):",
        f"  CPU per record, training-filter / passthrough  {cpu_ratio:.2f}  (<= 1.4) {_met(cpu_ratio <= 1.4)}",
        f"  records/s, training-filter / passthrough       {q['training_filter_over_passthrough']:.2f}  (>= 0.9) "
        f"{_met(q['training_filter_over_passthrough'] >= 0.9)}",
        f"  records/s, training-filter / peer              {q['training_filter_over_peer']:.2f}  (>= 5) "
        f"{_met(q['training_filter_over_peer'] >= 5)}",
        f"  CPU per record, peer / training-filter         {q['cpu_peer_over_training_filter']:.2f}  (>= 5) "
        f"{_met(q['cpu_peer_over_training_filter'] >= 5)}",
        f"  p99 at half load, training-filter vs peer      {tf_p99:.1f} vs {peer_p99:.1f} ms  (<=) "
        f"{_met(tf_p99 <= peer_p99)}",
        f"  records/s, training-filter / naive             {q['training_filter_over_naive']:.2f}; CPU per record "
        f"naive / training-filter {q['cpu_naive_over_training_filter']:.2f}",
        f"  exactly-once / at-least-once                   {q['exactly_once_over_at_least_once']:.2f}",
        f"  two processes / one                            {q['two_processes_over_one']:.2f}  (they share the "
        "broker's core here: not a scaling figure)",
    ]


def _propagation_and_scaling(r: dict[str, Any]) -> list[str]:
    prop = r["latency"]["training_filter"].get("optout_propagation", {})
    sc = r["scaling"]
    return [
        f"opt-out propagation under half load ({prop.get('optouts_applied', 0):.0f} of {prop.get('optouts_sent', 0)} "
        f"opt-outs; timestamp to applied): p50 {prop.get('p50_ms', float('nan')):.1f} ms, "
        f"p99 {prop.get('p99_ms', float('nan')):.1f} ms",
        "",
        "on a machine with a core per process and cores for the broker:",
        f"  one process {sc['one_process_on_its_own_core']:,.0f} records/s (1e6 / its CPU µs per record), two "
        f"{sc['two_processes_on_their_own_cores']:,.0f}; the broker spends {sc['broker_cpu_us_per_record']:.2f} "
        f"CPU µs per record, {sc['broker_cores_for_two_processes']:.1f} cores for two processes",
    ]


def _filter_and_stages(r: dict[str, Any]) -> list[str]:
    o = r["optouts"]
    s = r["stages_us_per_record"]
    lines = [
        "opt-out filter:",
        f"  {o['entries']:,} entries, {o['filter_mib']:.1f} MiB (< 50), estimated FP rate "
        f"{o['estimated_false_positive_rate']:.1e}",
        f"  build {o['build_per_second']:,.0f} adds/s ({o['build_seconds']:.1f} s); snapshot save "
        f"{o['snapshot_save_seconds']:.2f} s, load {o['snapshot_load_seconds']:.2f} s (< 2)",
        f"  service peak RSS minus filter: {r['training_filter']['peak_rss_mib'] - o['filter_mib']:.0f} MiB (< 300)",
        "",
        "hot loop stages, µs per input record:",
    ]
    lines += [f"  {name:<28}{s[name]:>7.3f}" for name in STAGES]
    lines.append(
        f"  (per eligible record: encode+pseudonymise {s['encode_and_pseudonymise_per_eligible']:.3f}, "
        f"produce {s['produce_per_eligible']:.3f}; eligible share {s['eligible_share']:.2f})"
    )
    return lines
